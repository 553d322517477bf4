//! `netshim node status`: this node's BGP speaker and each peer's session,
//! as `calicoctl node status` shows them, read from the speaker record
//! and BIRD's control socket (`show protocols all`).

use serde::Serialize;

use netshim_host_api::host::bgp::BgpSpeaker;

use super::{control, Files};
use crate::cnm::{CnmResult, Core};

#[derive(Debug, Clone, Serialize)]
pub struct NodeStatus {
    pub node: String,
    /// The network whose driver speaks BGP on this node.
    pub network: Option<String>,
    pub router_id: Option<String>,
    pub as_number: Option<u32>,
    pub route_reflector_cluster_id: Option<String>,
    pub bird: Option<Bird>,
    pub peers: Vec<PeerStatus>,
    /// What kept the status from being read.
    pub problem: Option<String>,
}

#[derive(Debug, Clone, Serialize)]
pub struct Bird {
    pub pid: i32,
    pub version: String,
    pub control_socket: String,
}

#[derive(Debug, Clone, Serialize)]
pub struct PeerStatus {
    pub address: String,
    pub as_number: u32,
    /// node-to-node mesh, route reflector, route reflector client, global.
    #[serde(rename = "type")]
    pub kind: String,
    /// BIRD's protocol state (up, start, down).
    pub state: String,
    pub since: String,
    /// The BGP state (Established, Active, Connect ...) and BIRD's last
    /// error, if any.
    pub info: String,
    pub established: bool,
    pub routes_imported: Option<u32>,
    pub routes_exported: Option<u32>,
}

pub fn collect(core: &Core) -> CnmResult<NodeStatus> {
    let speakers = core.bgp_speakers()?;
    let mut status = NodeStatus {
        node: core.node_name(),
        network: None,
        router_id: None,
        as_number: None,
        route_reflector_cluster_id: None,
        bird: None,
        peers: Vec::new(),
        problem: None,
    };
    let Some((id, sp)) = speakers.into_iter().next() else {
        status.problem = Some("no network on this node speaks BGP".into());
        return Ok(status);
    };
    status.network = Some(
        core.inspect(&id)
            .map(|(n, _)| n.name)
            .unwrap_or_else(|_| id.clone()),
    );
    status.router_id = Some(sp.router_id.to_string());
    status.as_number = Some(sp.as_number);
    status.route_reflector_cluster_id = sp.rr_cluster_id.map(|a| a.to_string());
    let files = Files::new(core.state_dir());
    let sessions = match files.running_pid() {
        None => {
            status.problem =
                Some("BIRD is not running (the node agent, `netshim daemon`, starts it)".into());
            None
        }
        Some(pid) => {
            status.bird = Some(Bird {
                pid,
                version: control::version(&files.ctl).unwrap_or_default(),
                control_socket: files.ctl.display().to_string(),
            });
            match control::protocols(&files.ctl) {
                Ok(p) => Some(p),
                Err(e) => {
                    status.problem = Some(e.to_string());
                    None
                }
            }
        }
    };
    status.peers = peers(&sp, sessions.as_deref());
    Ok(status)
}

fn peers(
    sp: &BgpSpeaker,
    sessions: Option<&[birdc::ShowProtocolDetailsMessage]>,
) -> Vec<PeerStatus> {
    sp.peers
        .iter()
        .map(|p| {
            let name = p.protocol();
            let found = sessions
                .unwrap_or_default()
                .iter()
                .find(|m| m.protocol.name == name);
            let stats = found
                .and_then(|m| m.detail.as_ref())
                .and_then(|d| d.channels.first())
                .and_then(|c| c.route_stats.as_ref());
            let info = found
                .and_then(|m| m.protocol.info.clone())
                .unwrap_or_default();
            PeerStatus {
                address: p.address.to_string(),
                as_number: p.as_number,
                kind: p.kind.describe().into(),
                state: found
                    .map(|m| m.protocol.state.clone())
                    .unwrap_or_else(|| "unknown".into()),
                since: found.map(|m| m.protocol.since.clone()).unwrap_or_default(),
                established: info.starts_with("Established"),
                info,
                routes_imported: stats.map(|s| s.imported),
                routes_exported: stats.map(|s| s.exported),
            }
        })
        .collect()
}
