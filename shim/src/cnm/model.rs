//! The CNM objects as netshim persists them (space "cnm" of the store).

use std::net::IpAddr;

use ipnet::IpNet;
use serde::{Deserialize, Serialize};

#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct Pool {
    /// The IPAM's id for the pool (as the driver returned it).
    pub id: String,
    pub subnet: IpNet,
    /// Gateway with the pool's prefix length.
    pub gateway: Option<IpNet>,
}

#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct Network {
    pub id: String,
    pub name: String,
    pub driver: String,
    pub internal: bool,
    pub options: Vec<(String, String)>,
    pub ipv4: Vec<Pool>,
    /// Seconds since the epoch.
    pub created: u64,
}

#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct Endpoint {
    pub id: String,
    pub network_id: String,
    /// The sandbox: a network namespace path.
    pub netns: String,
    pub ifname: String,
    pub ipv4: Option<IpNet>,
    pub mac: Option<String>,
    pub gateway: Option<IpAddr>,
    pub created: u64,
    /// The container this endpoint belongs to (OCI hooks, Docker), so it
    /// can be found when its namespace is already gone.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub container: Option<String>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub ports: Vec<PortMapping>,
}

/// A published port: traffic to the node's `host_port` goes to the
/// endpoint's `container_port`.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
pub struct PortMapping {
    /// "tcp", "udp" or "sctp".
    pub protocol: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub host_ip: Option<IpAddr>,
    pub host_port: u16,
    pub container_port: u16,
}

impl std::str::FromStr for PortMapping {
    type Err = String;

    /// `[HOST_IP:]HOST_PORT:CONTAINER_PORT[/PROTO]`, as `docker run -p`.
    fn from_str(s: &str) -> Result<PortMapping, String> {
        let bad = || {
            format!(
                "port mapping {s:?}: expected [HOST_IP:]HOST_PORT:CONTAINER_PORT[/tcp|udp|sctp]"
            )
        };
        let (spec, protocol) = match s.rsplit_once('/') {
            Some((spec, p)) if ["tcp", "udp", "sctp"].contains(&p) => (spec, p.to_string()),
            Some(_) => return Err(bad()),
            None => (s, "tcp".to_string()),
        };
        let parts: Vec<&str> = spec.rsplitn(3, ':').collect();
        let port = |p: &str| p.parse::<u16>().ok().filter(|p| *p != 0).ok_or_else(bad);
        let (container_port, host_port, host_ip) = match parts.as_slice() {
            [c, h] => (port(c)?, port(h)?, None),
            [c, h, ip] => (
                port(c)?,
                port(h)?,
                Some(ip.trim_matches(['[', ']']).parse().map_err(|_| bad())?),
            ),
            _ => return Err(bad()),
        };
        Ok(PortMapping {
            protocol,
            host_ip,
            host_port,
            container_port,
        })
    }
}

pub const SPACE: &str = "cnm";

pub fn network_key(id: &str) -> String {
    format!("networks/{id}")
}

pub fn name_key(name: &str) -> String {
    format!("names/{name}")
}

/// A pool IPAM handed out and no one has released yet.
pub fn pool_key(driver: &str, pool_id: &str) -> String {
    format!("pools/{driver}/{pool_id}")
}

/// Route prefixes a driver claimed with a pool (Docker asks for pools
/// before networks), until a network takes them or the pool is released.
pub fn claims_key(driver: &str, pool_id: &str) -> String {
    format!("pool-claims/{driver}/{pool_id}")
}

/// The cluster-store subtree (`etcd-prefix`) a pool was asked for under,
/// so that Docker's ReleasePool, which carries no options, reaches the
/// same one.
pub fn pool_prefix_key(driver: &str, pool_id: &str) -> String {
    format!("pool-prefix/{driver}/{pool_id}")
}

pub fn endpoint_key(id: &str) -> String {
    format!("endpoints/{id}")
}

/// Index: which endpoint a network has in a sandbox.
pub fn sandbox_key(network_id: &str, netns: &str) -> String {
    format!("sandboxes/{network_id}{netns}")
}

/// Index: a container's endpoint on a network.
pub fn container_key(container: &str, network_id: &str) -> String {
    format!("containers/{container}/{network_id}")
}

/// An attach in progress, committed before any kernel work.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct Intent {
    pub endpoint_id: String,
    pub ifname: String,
    /// The container being attached, so its poststop finds the intent
    /// when the attach died before any endpoint was recorded.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub container: Option<String>,
}

/// Index: an attach in progress of a sandbox to a network.
pub fn intent_key(network_id: &str, netns: &str) -> String {
    format!("{INTENT_PREFIX}{network_id}{netns}")
}

pub const INTENT_PREFIX: &str = "intents/";

/// The network id and sandbox path an intent key names (the path starts
/// with the first '/' after the prefix: ids have none).
pub fn intent_parts(key: &str) -> (&str, &str) {
    let rest = key.strip_prefix(INTENT_PREFIX).unwrap_or(key);
    match rest.find('/') {
        Some(i) => rest.split_at(i),
        None => (rest, ""),
    }
}

/// Work other than an attach, committed before its kernel work begins and
/// deleted in the transaction that commits the work. One that is left
/// behind names a process that died in between: `netshim gc` undoes a
/// create (nothing of it was committed) and finishes a removal (the
/// records say what to remove).
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[serde(tag = "op", rename_all = "kebab-case")]
pub enum Pending {
    /// A network being made, by the CLI or Docker's CreateNetwork. Its pools
    /// are not known yet: IPAM's answer is committed with the network.
    CreateNetwork { network: Network },
    /// Docker's CreateEndpoint: the interface is made on the node.
    CreateEndpoint {
        network_id: String,
        endpoint_id: String,
    },
    /// A network being removed; `ipam` when netshim released its pools
    /// (the CLI), not when Docker does (DeleteNetwork).
    RemoveNetwork { network_id: String, ipam: bool },
    /// An endpoint being removed; `ipam` as above (detach releases the
    /// address, Docker's DeleteEndpoint does not).
    RemoveEndpoint { endpoint_id: String, ipam: bool },
}

impl Pending {
    pub fn key(&self) -> String {
        match self {
            Pending::CreateNetwork { network } => format!("pending/network/{}", network.id),
            Pending::RemoveNetwork { network_id, .. } => format!("pending/network/{network_id}"),
            Pending::CreateEndpoint { endpoint_id, .. }
            | Pending::RemoveEndpoint { endpoint_id, .. } => {
                format!("pending/endpoint/{endpoint_id}")
            }
        }
    }
}

pub const PENDING_PREFIX: &str = "pending/";
