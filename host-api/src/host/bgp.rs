//! `bgp` imports (WIT 0.2): what this node's BGP speaker is. The call only
//! records the speaker, checked, in the host's own space of the
//! node-local store (journalled like any store write); the node agent
//! renders BIRD's configuration from that record and runs BIRD. Every
//! field is typed (addresses, numbers, prefixes), so nothing a driver
//! sends can become configuration text.

use std::collections::BTreeSet;
use std::net::{IpAddr, Ipv4Addr};

use ipnet::{IpNet, Ipv4Net};
use serde::{Deserialize, Serialize};

use super::{from_ip, to_ip, to_prefix, HostError, HostResult, HostState};
use crate::bindings::netshim::plugin::types::IpAddress;
use crate::bindings::v0_2::netshim::plugin0_2_0::bgp::{Host, PeerKind, Speaker};
use crate::kernel::{KResult, Kernel, LinkRef};

/// The host's space for speakers, one per network (key: its id).
pub const SPACE: &str = "host/bgp";
pub const MAX_PEERS: usize = 1024;
pub const MAX_EXPORT: usize = 4096;
pub const MAX_IMPORT: usize = 64;
/// Calls that decide cluster state; an attach never changes BGP.
const CALLS: [&str; 3] = ["create-network", "delete-network", "reconcile"];

#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum Kind {
    Mesh,
    Reflector,
    ReflectorClient,
    Global,
}

impl Kind {
    /// BIRD protocol names start with Calico's words for the peer type
    /// (`Mesh_`, `Node_`, `Global_`), which `calicoctl node status` reads.
    pub fn protocol_prefix(self) -> &'static str {
        match self {
            Kind::Mesh => "Mesh",
            Kind::Reflector | Kind::ReflectorClient => "Node",
            Kind::Global => "Global",
        }
    }

    pub fn describe(self) -> &'static str {
        match self {
            Kind::Mesh => "node-to-node mesh",
            Kind::Reflector => "route reflector",
            Kind::ReflectorClient => "route reflector client",
            Kind::Global => "global",
        }
    }
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Peer {
    pub address: Ipv4Addr,
    pub as_number: u32,
    pub kind: Kind,
}

impl Peer {
    /// The BIRD protocol this peer gets (`Mesh_192_0_2_12`).
    pub fn protocol(&self) -> String {
        format!(
            "{}_{}",
            self.kind.protocol_prefix(),
            self.address.to_string().replace('.', "_")
        )
    }
}

/// A speaker as BIRD's configuration needs it, checked.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct BgpSpeaker {
    /// The network's id.
    pub network: String,
    pub router_id: Ipv4Addr,
    pub as_number: u32,
    pub rr_cluster_id: Option<Ipv4Addr>,
    pub peers: Vec<Peer>,
    pub export: Vec<Ipv4Net>,
    /// (prefix, min length, max length)
    pub import: Vec<(Ipv4Net, u8, u8)>,
    /// The underlay's subnets when the speaker was set: a learned route's
    /// next hop must lie in one (a peer cannot point this node's traffic
    /// at another of its links), and a speaker whose underlay changed
    /// since is not run.
    #[serde(default)]
    pub next_hops: Vec<Ipv4Net>,
}

fn v4(a: &IpAddress, what: &str) -> HostResult<Ipv4Addr> {
    match to_ip(a) {
        IpAddr::V4(a) => Ok(a),
        IpAddr::V6(a) => Err(HostError::invalid(format!(
            "bgp: {what} {a}: BGP for IPv6 is not here yet"
        ))),
    }
}

fn v4_net(
    p: &crate::bindings::netshim::plugin::types::IpPrefix,
    what: &str,
) -> HostResult<Ipv4Net> {
    match to_prefix(p)? {
        IpNet::V4(n) => Ok(n),
        IpNet::V6(n) => Err(HostError::invalid(format!(
            "bgp: {what} {n}: BGP for IPv6 is not here yet"
        ))),
    }
}

/// AS numbers a speaker may use: not 0, not AS_TRANS (23456), not the
/// reserved 65535 and 4294967295.
fn check_as(n: u32, what: &str) -> HostResult<()> {
    if matches!(n, 0 | 23456 | 65535 | u32::MAX) {
        return Err(HostError::invalid(format!(
            "bgp: {what} AS {n} is reserved"
        )));
    }
    Ok(())
}

impl HostState {
    fn bgp_network(&self, what: &str) -> HostResult<String> {
        let network = self.network(what)?.to_string();
        if !CALLS.contains(&self.call.as_str()) {
            return Err(HostError::denied(format!(
                "{what}: call {} may not change BGP (only create-network, delete-network and reconcile may)",
                self.call
            )));
        }
        Ok(network)
    }
}

/// The IPv4 addresses (with their prefix) of the underlay link, if any.
pub fn underlay_v4(kernel: &dyn Kernel, underlay: Option<LinkRef>) -> KResult<Vec<Ipv4Net>> {
    let Some(u) = underlay else {
        return Ok(Vec::new());
    };
    Ok(kernel
        .addresses(u)?
        .into_iter()
        .filter_map(|a| match a {
            IpNet::V4(n) => Some(n),
            IpNet::V6(_) => None,
        })
        .collect())
}

/// The subnets a learned route's next hop may be on: those of the
/// underlay's addresses, in one order, so a record made by a call compares
/// equal to what the agent reads from the underlay later.
pub fn next_hops(addresses: &[Ipv4Net]) -> Vec<Ipv4Net> {
    let mut n: Vec<Ipv4Net> = addresses.iter().map(|a| a.trunc()).collect();
    n.sort();
    n.dedup();
    n
}

impl Host for HostState {
    fn configure(&mut self, sp: Speaker) -> HostResult<()> {
        let network = self.bgp_network("bgp configure")?;
        let router_id = v4(&sp.router_id, "router id")?;
        let subnets = underlay_v4(self.kernel.as_ref(), self.underlay())?;
        if !subnets.iter().any(|n| n.addr() == router_id) {
            return Err(HostError::denied(format!(
                "bgp: router id {router_id} is not an address of the node's underlay link"
            )));
        }
        check_as(sp.as_number, "local")?;
        let rr = match &sp.route_reflector_cluster_id {
            None => None,
            Some(a) => {
                let id = v4(a, "route reflector cluster id")?;
                if self.grant.route_reflector != Some(id) {
                    return Err(HostError::denied(format!(
                        "bgp: this node is no route reflector with cluster id {id} (its operator gives that with --route-reflector-cluster-id)"
                    )));
                }
                Some(id)
            }
        };
        if sp.peers.len() > MAX_PEERS {
            return Err(HostError::invalid(format!(
                "bgp: {} peers; at most {MAX_PEERS}",
                sp.peers.len()
            )));
        }
        let mut peers = Vec::with_capacity(sp.peers.len());
        let mut seen = BTreeSet::new();
        for p in &sp.peers {
            let a = v4(&p.address, "peer address")?;
            if a == router_id || !seen.insert(a) {
                return Err(HostError::invalid(format!(
                    "bgp: peer {a} is this node or named twice"
                )));
            }
            if !subnets.iter().any(|n| {
                n.prefix_len() < 31
                    && n.trunc().contains(&a)
                    && a != n.network()
                    && a != n.broadcast()
            }) {
                return Err(HostError::denied(format!(
                    "bgp: peer {a} is not a host on the underlay link's subnet (sessions are single-hop)"
                )));
            }
            check_as(p.as_number, &format!("peer {a}'s"))?;
            // Nodes of the cluster share its AS: a node "peer" in another AS
            // would turn every session into eBGP and the node into a transit.
            if !matches!(p.kind, PeerKind::Global) && p.as_number != sp.as_number {
                return Err(HostError::invalid(format!(
                    "bgp: peer {a} is a node of the cluster but in AS {}, not {}",
                    p.as_number, sp.as_number
                )));
            }
            let kind = match p.kind {
                PeerKind::Mesh => Kind::Mesh,
                PeerKind::Reflector => Kind::Reflector,
                PeerKind::Global => Kind::Global,
                PeerKind::ReflectorClient => {
                    if rr.is_none() {
                        return Err(HostError::denied(format!(
                            "bgp: peer {a} as a route reflector client, but this node is no route reflector"
                        )));
                    }
                    Kind::ReflectorClient
                }
            };
            peers.push(Peer {
                address: a,
                as_number: p.as_number,
                kind,
            });
        }
        let grant: Vec<Ipv4Net> = self
            .grant
            .route_prefixes
            .iter()
            .filter_map(|g| match g {
                IpNet::V4(n) => Some(n.trunc()),
                IpNet::V6(_) => None,
            })
            .collect();
        let granted = |n: &Ipv4Net| grant.iter().any(|g| g.contains(n));
        if sp.announce.len() > MAX_EXPORT {
            return Err(HostError::invalid(format!(
                "bgp: {} exported prefixes; at most {MAX_EXPORT}",
                sp.announce.len()
            )));
        }
        let mut export = BTreeSet::new();
        for p in &sp.announce {
            let n = v4_net(p, "export")?.trunc();
            if !granted(&n) {
                return Err(HostError::denied(format!(
                    "bgp: export {n} is outside what network {network} may route"
                )));
            }
            export.insert(n);
        }
        if sp.accept.len() > MAX_IMPORT {
            return Err(HostError::invalid(format!(
                "bgp: {} import ranges; at most {MAX_IMPORT}",
                sp.accept.len()
            )));
        }
        let mut import = Vec::with_capacity(sp.accept.len());
        for r in &sp.accept {
            let n = v4_net(&r.prefix, "import")?.trunc();
            if !granted(&n) {
                return Err(HostError::denied(format!(
                    "bgp: import {n} is outside what network {network} may route"
                )));
            }
            if r.min_length < n.prefix_len() || r.min_length > r.max_length || r.max_length > 32 {
                return Err(HostError::invalid(format!(
                    "bgp: import {n}{{{},{}}}: lengths must run from /{} to /32, shortest first",
                    r.min_length,
                    r.max_length,
                    n.prefix_len()
                )));
            }
            import.push((n, r.min_length, r.max_length));
        }
        for e in self.store.list(SPACE, "")? {
            if e.key != network {
                return Err(HostError::denied(format!(
                    "bgp: network {} already runs this node's BGP speaker",
                    serde_json::from_slice::<BgpSpeaker>(&e.value)
                        .map(|s| s.network)
                        .unwrap_or(e.key)
                )));
            }
        }
        let record = BgpSpeaker {
            network: network.clone(),
            router_id,
            as_number: sp.as_number,
            rr_cluster_id: rr,
            peers,
            export: export.into_iter().collect(),
            import,
            next_hops: next_hops(&subnets),
        };
        let value =
            serde_json::to_vec(&record).map_err(|e| HostError::Trap(wasmtime::Error::new(e)))?;
        self.put_host_record(SPACE, network, Some(value))
    }

    fn clear(&mut self) -> HostResult<()> {
        let network = self.bgp_network("bgp clear")?;
        self.put_host_record(SPACE, network, None)
    }

    fn route_reflector_cluster_id(&mut self) -> wasmtime::Result<Option<IpAddress>> {
        Ok(self.grant.route_reflector.map(|a| from_ip(IpAddr::V4(a))))
    }
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;

    use super::*;
    use crate::bindings::netshim::plugin::types::Error as WitError;
    use crate::bindings::v0_2::netshim::plugin0_2_0::bgp::{Peer as WitPeer, PrefixRange};
    use crate::host::test_support::{self, Scratch};
    use crate::host::{from_ip, from_prefix, Grant};
    use crate::kernel::fake::FakeKernel;
    use crate::kernel::{Kernel, LinkKind};

    struct Case {
        host: HostState,
        _dir: Scratch,
    }

    fn case(tag: &str, call: &str, network: &str, rr: Option<&str>) -> Case {
        let kernel = Arc::new(FakeKernel::new());
        let eth0 = test_support::link(&kernel, "eth0", LinkKind::Bridge, None);
        kernel
            .add_address(eth0.link_ref(), "192.0.2.11/24".parse().unwrap())
            .unwrap();
        let dir = Scratch::new(&format!("bgp-{tag}"));
        let grant = Grant {
            driver: "calico".into(),
            network_id: Some(network.into()),
            route_prefixes: vec!["192.168.0.0/16".parse().unwrap()],
            underlay: Some(eth0.link_ref()),
            route_reflector: rr.map(|r| r.parse().unwrap()),
            ..Grant::default()
        };
        Case {
            host: test_support::host(kernel, &dir, grant, call),
            _dir: dir,
        }
    }

    fn ip(a: &str) -> IpAddress {
        from_ip(a.parse().unwrap())
    }

    fn speaker() -> Speaker {
        Speaker {
            router_id: ip("192.0.2.11"),
            as_number: 64512,
            route_reflector_cluster_id: None,
            peers: vec![WitPeer {
                address: ip("192.0.2.12"),
                as_number: 64512,
                kind: PeerKind::Mesh,
            }],
            announce: vec![from_prefix("192.168.1.0/26".parse().unwrap())],
            accept: vec![PrefixRange {
                prefix: from_prefix("192.168.0.0/16".parse().unwrap()),
                min_length: 26,
                max_length: 32,
            }],
        }
    }

    fn refused(r: HostResult<()>) -> String {
        match r {
            Err(HostError::Guest(WitError::Denied(m) | WitError::Invalid(m))) => m,
            other => panic!("expected a refusal, got {other:?}"),
        }
    }

    #[test]
    fn the_speaker_is_recorded_and_undone_with_the_call() {
        let mut c = case("ok", "reconcile", "n1", None);
        c.host.configure(speaker()).unwrap();
        let rec: BgpSpeaker =
            serde_json::from_slice(&c.host.store.get(SPACE, "n1").unwrap().unwrap().value).unwrap();
        assert_eq!(rec.router_id, "192.0.2.11".parse::<Ipv4Addr>().unwrap());
        assert_eq!(rec.peers[0].protocol(), "Mesh_192_0_2_12");
        assert_eq!(
            rec.import,
            vec![("192.168.0.0/16".parse().unwrap(), 26, 32)]
        );
        let done = c.host.finish();
        let mut store = done.store;
        done.journal.rollback(&FakeKernel::new(), store.as_mut());
        assert!(store.get(SPACE, "n1").unwrap().is_none(), "rolled back");
    }

    #[test]
    fn hostile_speakers_are_refused() {
        let mut c = case("bad", "reconcile", "n1", None);
        let mut bad = |f: &dyn Fn(&mut Speaker)| {
            let mut s = speaker();
            f(&mut s);
            refused(c.host.configure(s))
        };
        let e = bad(&|s| s.router_id = ip("203.0.113.1"));
        assert!(e.contains("not an address of the node's underlay"), "{e}");
        let e = bad(&|s| s.announce = vec![from_prefix("0.0.0.0/0".parse().unwrap())]);
        assert!(e.contains("outside what network n1 may route"), "{e}");
        let e = bad(&|s| s.accept[0].prefix = from_prefix("0.0.0.0/0".parse().unwrap()));
        assert!(e.contains("outside what network n1 may route"), "{e}");
        let e = bad(&|s| s.accept[0].min_length = 8);
        assert!(e.contains("lengths must run"), "{e}");
        let e = bad(&|s| s.peers[0].address = ip("198.51.100.7"));
        assert!(e.contains("single-hop"), "{e}");
        let e = bad(&|s| s.peers[0].address = ip("192.0.2.11"));
        assert!(e.contains("this node or named twice"), "{e}");
        let e = bad(&|s| s.peers[0].kind = PeerKind::ReflectorClient);
        assert!(e.contains("no route reflector"), "{e}");
        let e = bad(&|s| s.route_reflector_cluster_id = Some(ip("244.0.0.1")));
        assert!(e.contains("no route reflector"), "{e}");
        let e = bad(&|s| s.peers[0].as_number = 64513);
        assert!(e.contains("in AS 64513"), "{e}");
        let e = bad(&|s| s.as_number = 0);
        assert!(e.contains("reserved"), "{e}");
        let e = bad(&|s| {
            s.peers = (0..=MAX_PEERS)
                .map(|i| WitPeer {
                    address: ip(&format!("192.0.2.{}", 12 + i % 200)),
                    as_number: 64512,
                    kind: PeerKind::Mesh,
                })
                .collect()
        });
        assert!(e.contains("at most"), "{e}");
        assert!(c.host.store.get(SPACE, "n1").unwrap().is_none());
    }

    #[test]
    fn only_the_operator_makes_a_reflector_and_only_cluster_calls_speak() {
        let mut c = case("rr", "reconcile", "n1", Some("244.0.0.1"));
        let mut s = speaker();
        s.route_reflector_cluster_id = Some(ip("244.0.0.1"));
        s.peers[0].kind = PeerKind::ReflectorClient;
        c.host.configure(s).unwrap();
        let e = refused({
            let mut s = speaker();
            s.route_reflector_cluster_id = Some(ip("244.0.0.2"));
            c.host.configure(s)
        });
        assert!(e.contains("244.0.0.2"), "{e}");
        let mut c = case("attach", "create-endpoint", "n1", None);
        let e = refused(c.host.configure(speaker()));
        assert!(e.contains("may not change BGP"), "{e}");
    }
}
