//! Remote nodes in the kernel, one set of objects per remote lease, as
//! flannel makes them:
//! - vxlan: neighbour `<subnet>.0 lladdr <VtepMAC>`, FDB `<VtepMAC> dst
//!   <PublicIP>`, route `<subnet> via <subnet>.0 dev flannel.<VNI> onlink`,
//!   in that order (the kernel never has to ask for the gateway); with
//!   `DirectRouting`, a peer on the underlay's own subnet gets `<subnet>
//!   via <PublicIP>` on the underlay instead.
//! - host-gw: route `<subnet> via <PublicIP> dev <underlay>`.
//!
//! What is programmed is recorded in the driver's node-local store, so a
//! pass changes only what differs (a restart of the agent touches
//! nothing) and a peer that left is removed exactly.

use std::collections::BTreeMap;

use netshim_guest_sdk::host::link::Link;
use netshim_guest_sdk::host::route::{self, Route, RouteKind, RouteScope};
use netshim_guest_sdk::host::store::{self, Condition};
use netshim_guest_sdk::host::udp_tunnel;
use netshim_guest_sdk::log::{info, warn};
use netshim_guest_sdk::{addr, Error, Ipv4Net};
use serde::{Deserialize, Serialize};

use crate::config::{parse_lease, Backend, Peer, Settings, SUBNETS};

/// How a peer is reached.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Programmed {
    pub peer: Peer,
    /// Routed straight over the underlay (host-gw, DirectRouting).
    pub direct: bool,
}

fn records_prefix(own: &Ipv4Net) -> String {
    format!("peers/{}-{}/", own.network(), own.prefix_len())
}

fn record_key(own: &Ipv4Net, peer: &Ipv4Net) -> String {
    format!(
        "{}{}-{}",
        records_prefix(own),
        peer.network(),
        peer.prefix_len()
    )
}

/// What the last pass programmed.
pub fn programmed(own: &Ipv4Net) -> Result<BTreeMap<Ipv4Net, Programmed>, Error> {
    let mut out = BTreeMap::new();
    for e in store::list_prefix(&records_prefix(own))? {
        if let Ok(p) = serde_json::from_slice::<Programmed>(&e.value) {
            out.insert(p.peer.subnet, p);
        }
    }
    Ok(out)
}

/// The peers the cluster's leases describe (this node's own left out);
/// leases that do not parse are logged and skipped.
pub fn wanted(s: &Settings, own: &Ipv4Net, leases: &[(String, Vec<u8>)]) -> Vec<Peer> {
    let mut out = Vec::new();
    for (key, value) in leases {
        match parse_lease(s, key, value) {
            Ok(p) if addr::overlaps(&p.subnet, own) || p.public_ip == s.public_ip => {}
            Ok(p) => out.push(p),
            Err(why) => warn(&format!("lease ignored: {why}")),
        }
    }
    out
}

pub struct Dataplane<'a> {
    pub settings: &'a Settings,
    pub own: Ipv4Net,
    pub vxlan: Option<&'a Link>,
    /// udp: the TUN device whose tunnel the host runs.
    pub tun: Option<&'a Link>,
    pub underlay: &'a Link,
    /// The underlay's own prefix, to tell which peers are on-link.
    pub underlay_net: Option<Ipv4Net>,
}

impl Dataplane<'_> {
    /// Bring the kernel in line with `peers`. A peer that cannot be
    /// programmed (host-gw to a node that is not directly reachable) is
    /// reported in the log and left out, not fatal: the others still work.
    /// Returns the problems.
    pub fn sync(&self, peers: Vec<Peer>) -> Result<Vec<(Ipv4Net, String)>, Error> {
        let before = programmed(&self.own)?;
        let mut problems = Vec::new();
        let wanted: BTreeMap<Ipv4Net, Peer> = peers.into_iter().map(|p| (p.subnet, p)).collect();
        for (subnet, old) in &before {
            if wanted.get(subnet) != Some(&old.peer) {
                self.remove(old);
                store::delete(&record_key(&self.own, subnet), Condition::None)?;
                info(&format!("peer {subnet} ({}) removed", old.peer.public_ip));
            }
        }
        if let (Backend::Udp, Some(tun)) = (self.settings.backend, self.tun) {
            // The whole table at once; the host keeps it if it is unchanged.
            let table: Vec<udp_tunnel::Peer> = wanted
                .values()
                .map(|p| udp_tunnel::Peer {
                    prefix: addr::wit_prefix(p.subnet),
                    address: addr::wit_addr(p.public_ip),
                })
                .collect();
            let port = self.settings.port.unwrap_or(8285);
            udp_tunnel::configure(tun, addr::wit_addr(self.settings.public_ip), port, &table)?;
        }
        for (subnet, peer) in wanted {
            if before.get(&subnet).is_some_and(|old| old.peer == peer) {
                continue;
            }
            match self.add(&peer) {
                Ok(p) => {
                    let value = serde_json::to_vec(&p).unwrap_or_default();
                    store::put(
                        &record_key(&self.own, &subnet),
                        &value,
                        Condition::None,
                        None,
                    )?;
                    info(&format!(
                        "peer {subnet} via {}{}",
                        peer.public_ip,
                        if p.direct { " (direct)" } else { "" }
                    ));
                }
                Err(e) => {
                    let why = netshim_guest_sdk::log::show_error(&e);
                    warn(&format!(
                        "peer {subnet} at {} not programmed: {why}",
                        peer.public_ip
                    ));
                    problems.push((subnet, why));
                }
            }
        }
        Ok(problems)
    }

    fn direct(&self, peer: &Peer) -> bool {
        match self.settings.backend {
            Backend::HostGw => true,
            Backend::Udp => false,
            Backend::Vxlan => {
                self.settings.direct_routing
                    && self
                        .underlay_net
                        .is_some_and(|n| n.contains(&peer.public_ip))
            }
        }
    }

    fn add(&self, peer: &Peer) -> Result<Programmed, Error> {
        let direct = self.direct(peer);
        if self.settings.backend == Backend::Udp {
            // Nothing per peer in the kernel: the tunnel's table has it.
            return Ok(Programmed {
                peer: peer.clone(),
                direct,
            });
        }
        if direct {
            route::replace(&Route {
                gateway: Some(addr::wit_addr(peer.public_ip)),
                device: Some(self.underlay),
                ..self.route_to(peer)
            })
            .map_err(|e| match (self.settings.backend, e) {
                (Backend::HostGw, Error::Invalid(m) | Error::Failed(m)) => Error::Failed(format!(
                    "{} is not directly reachable (host-gw needs every node on one layer-2 segment): {m}",
                    peer.public_ip
                )),
                (_, e) => e,
            })?;
            return Ok(Programmed {
                peer: peer.clone(),
                direct,
            });
        }
        let (Some(vx), Some(mac)) = (self.vxlan, peer.vtep_mac) else {
            return Err(Error::Invalid(
                "a vxlan peer without a VXLAN device or VtepMAC".into(),
            ));
        };
        let [a, b, c, d, e, f] = mac;
        let mac = (a, b, c, d, e, f);
        let gw = addr::wit_addr(peer.subnet.network());
        ok_if_exists(route::add_neighbour(vx, gw, mac))?;
        if let Err(err) = ok_if_exists(route::add_fdb(
            vx,
            mac,
            Some(addr::wit_addr(peer.public_ip)),
        )) {
            let _ = route::del_neighbour(vx, gw);
            return Err(err);
        }
        if let Err(err) = route::replace(&Route {
            gateway: Some(gw),
            device: Some(vx),
            onlink: true,
            ..self.route_to(peer)
        }) {
            let _ = route::del_fdb(vx, mac, Some(addr::wit_addr(peer.public_ip)));
            let _ = route::del_neighbour(vx, gw);
            return Err(err);
        }
        Ok(Programmed {
            peer: peer.clone(),
            direct,
        })
    }

    /// Best effort: what is already gone is fine.
    pub fn remove(&self, p: &Programmed) {
        let peer = &p.peer;
        if p.direct {
            let _ = route::del(&Route {
                gateway: Some(addr::wit_addr(peer.public_ip)),
                device: Some(self.underlay),
                ..self.route_to(peer)
            });
            return;
        }
        let Some(vx) = self.vxlan else { return };
        let gw = addr::wit_addr(peer.subnet.network());
        let _ = route::del(&Route {
            gateway: Some(gw),
            device: Some(vx),
            onlink: true,
            ..self.route_to(peer)
        });
        if let Some([a, b, c, d, e, f]) = peer.vtep_mac {
            let _ = route::del_fdb(vx, (a, b, c, d, e, f), Some(addr::wit_addr(peer.public_ip)));
        }
        let _ = route::del_neighbour(vx, gw);
    }

    fn route_to(&self, peer: &Peer) -> Route<'_> {
        Route {
            destination: addr::wit_prefix(peer.subnet),
            gateway: None,
            device: None,
            kind: RouteKind::Unicast,
            scope: RouteScope::Universe,
            onlink: false,
            table: None,
            metric: None,
            source: None,
        }
    }
}

fn ok_if_exists(r: Result<(), Error>) -> Result<(), Error> {
    match r {
        Err(Error::Exists(_)) => Ok(()),
        other => other,
    }
}

/// One node as `netshim cluster status` shows it (the host's status
/// record format, see wit/README.md).
#[derive(Debug, Serialize, PartialEq)]
struct NodeStatus {
    name: String,
    address: String,
    prefixes: Vec<String>,
    kind: String,
    #[serde(rename = "cluster-key")]
    cluster_key: String,
    local: bool,
    programmed: bool,
    problem: Option<String>,
}

/// Write the status record of network `net_id` (only when it changed).
pub fn write_status(
    net_id: &str,
    s: &Settings,
    own: &Ipv4Net,
    peers: &[Peer],
    problems: &[(Ipv4Net, String)],
) -> Result<(), Error> {
    let done = programmed(own)?;
    let mut nodes = vec![NodeStatus {
        name: s.public_ip.to_string(),
        address: s.public_ip.to_string(),
        prefixes: vec![own.to_string()],
        kind: s.backend.as_str().into(),
        cluster_key: crate::config::subnet_key(own),
        local: true,
        programmed: true,
        problem: None,
    }];
    for p in peers {
        nodes.push(NodeStatus {
            name: p.public_ip.to_string(),
            address: p.public_ip.to_string(),
            prefixes: vec![p.subnet.to_string()],
            kind: match done.get(&p.subnet) {
                Some(d) if d.direct && s.backend == Backend::Vxlan => "direct".into(),
                _ => s.backend.as_str().into(),
            },
            cluster_key: crate::config::subnet_key(&p.subnet),
            local: false,
            programmed: done.get(&p.subnet).is_some_and(|d| d.peer == *p),
            problem: problems
                .iter()
                .find(|(n, _)| n == &p.subnet)
                .map(|(_, w)| w.clone()),
        });
    }
    let value = serde_json::to_vec(&serde_json::json!({ "nodes": nodes }))
        .map_err(|e| Error::Failed(e.to_string()))?;
    let key = format!("status/{net_id}");
    if store::get(&key)?.map(|e| e.value) != Some(value.clone()) {
        store::put(&key, &value, Condition::None, None)?;
    }
    Ok(())
}

/// Forget every record of a network's peers (its devices are going).
pub fn forget(own: &Ipv4Net) -> Result<(), Error> {
    for e in store::list_prefix(&records_prefix(own))? {
        store::delete(&e.key, Condition::None)?;
    }
    Ok(())
}

/// The leases in the cluster store, as (key, value).
pub fn leases() -> Result<Vec<(String, Vec<u8>)>, Error> {
    Ok(netshim_guest_sdk::host::cluster::list_prefix(SUBNETS)?
        .into_iter()
        .map(|e| (e.key, e.value))
        .collect())
}
