//! `netshim cluster status`: what each cluster network of this node knows
//! of the other nodes, as its driver recorded it in its last pass (the
//! status record, `status/<network-id>` in the driver's node-local store:
//! see wit/README.md), with each node's lease as the cluster store holds
//! it now. The record is the driver's word: it is bounded and checked
//! here before it is shown.

use serde::{Deserialize, Serialize};

use super::{CnmResult, Core};
use netshim_host_api::store::Store;

/// Nodes shown per network at most.
const MAX_NODES: usize = 10_000;
/// Text fields are cut to this many bytes.
const MAX_TEXT: usize = 256;
/// Leases looked up in etcd per network at most (each is two requests).
const MAX_LEASE_LOOKUPS: usize = 256;

/// One node as the driver reported it.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct NodeStatus {
    pub name: String,
    pub address: String,
    #[serde(default)]
    pub prefixes: Vec<String>,
    pub kind: String,
    /// The node's key in the driver's subtree of the cluster store.
    #[serde(rename = "cluster-key", default)]
    pub cluster_key: String,
    #[serde(default)]
    pub local: bool,
    /// This node's kernel holds what reaches it.
    #[serde(default)]
    pub programmed: bool,
    #[serde(default)]
    pub problem: Option<String>,
    /// Filled by the host: the lease as the cluster store holds it now.
    #[serde(default)]
    pub lease: Lease,
}

#[derive(Debug, Clone, Default, Serialize, Deserialize, PartialEq, Eq)]
#[serde(rename_all = "kebab-case", tag = "state", content = "seconds")]
pub enum Lease {
    /// Ends in this many seconds unless renewed.
    ExpiresIn(u32),
    /// A key without a lease (a reservation): it never ends.
    Permanent,
    /// No such key any more.
    Gone,
    /// The cluster store could not be asked.
    #[default]
    Unknown,
}

impl std::fmt::Display for Lease {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Lease::ExpiresIn(s) => write!(f, "{s}s"),
            Lease::Permanent => f.write_str("permanent"),
            Lease::Gone => f.write_str("gone"),
            Lease::Unknown => f.write_str("unknown"),
        }
    }
}

#[derive(Debug, Clone, Serialize)]
pub struct NetworkStatus {
    pub network: String,
    pub driver: String,
    /// The driver's subtree of the cluster store.
    pub root: String,
    pub nodes: Vec<NodeStatus>,
    /// Why the record or the leases could not be read, if so.
    pub error: Option<String>,
}

#[derive(Deserialize)]
struct Record {
    nodes: Vec<NodeStatus>,
}

/// Control characters dropped (the text reaches terminals), then cut.
fn cut(s: &mut String) {
    s.retain(|c| !c.is_control());
    if s.len() > MAX_TEXT {
        let mut end = MAX_TEXT;
        while !s.is_char_boundary(end) {
            end -= 1;
        }
        s.truncate(end);
    }
}

fn checked(mut n: NodeStatus) -> NodeStatus {
    for s in [&mut n.name, &mut n.address, &mut n.kind, &mut n.cluster_key] {
        cut(s);
    }
    n.prefixes.truncate(16);
    n.prefixes.iter_mut().for_each(cut);
    if let Some(p) = n.problem.as_mut() {
        cut(p);
    }
    n.lease = Lease::Unknown;
    n
}

impl Core {
    pub fn cluster_status(&self) -> CnmResult<Vec<NetworkStatus>> {
        let mut out = Vec::new();
        for net in self.cluster_networks()? {
            let mut status = NetworkStatus {
                network: net.name.clone(),
                driver: net.driver.clone(),
                root: net.root.clone(),
                nodes: Vec::new(),
                error: None,
            };
            let record = {
                let mut s = self.store.session()?;
                s.get(
                    &format!("driver/{}", net.driver),
                    &format!("status/{}", net.id),
                )?
            };
            match record.map(|e| serde_json::from_slice::<Record>(&e.value)) {
                None => status.error = Some("the driver has recorded no status yet".into()),
                Some(Err(e)) => {
                    status.error = Some(format!("the driver's status record is unreadable: {e}"))
                }
                Some(Ok(r)) => {
                    status.nodes = r.nodes.into_iter().take(MAX_NODES).map(checked).collect();
                }
            }
            if let Some(store) = &self.cluster {
                let mut session = store.session_unlocked();
                for n in status
                    .nodes
                    .iter_mut()
                    .filter(|n| !n.cluster_key.is_empty())
                    .take(MAX_LEASE_LOOKUPS)
                {
                    n.lease = match lease_of(&mut session, &net.root, &n.cluster_key) {
                        Ok(l) => l,
                        Err(e) => {
                            status
                                .error
                                .get_or_insert_with(|| format!("cluster store: {e}"));
                            break;
                        }
                    };
                }
            }
            out.push(status);
        }
        Ok(out)
    }
}

fn lease_of(
    s: &mut netshim_host_api::store::EtcdSession,
    root: &str,
    key: &str,
) -> Result<Lease, netshim_host_api::store::StoreError> {
    if s.get(root, key)?.is_none() {
        return Ok(Lease::Gone);
    }
    Ok(match s.expires_in(root, key)? {
        Some(t) => Lease::ExpiresIn(t),
        None => Lease::Permanent,
    })
}
