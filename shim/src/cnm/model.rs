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
}

pub const SPACE: &str = "cnm";

pub fn network_key(id: &str) -> String {
    format!("networks/{id}")
}

pub fn name_key(name: &str) -> String {
    format!("names/{name}")
}

pub fn endpoint_key(id: &str) -> String {
    format!("endpoints/{id}")
}

/// Index: which endpoint a network has in a sandbox.
pub fn sandbox_key(network_id: &str, netns: &str) -> String {
    format!("sandboxes/{network_id}{netns}")
}
