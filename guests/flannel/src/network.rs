//! A flannel network on this node: the lease's subnet on a bridge (the
//! first address is the gateway, like flannel's CNI `cni0`), the backend's
//! device, masquerade of traffic that leaves the cluster network
//! (flannel's `--ip-masq`), and the remote nodes.

use std::net::Ipv4Addr;

use netshim_guest_sdk::guest::driver::Network;
use netshim_guest_sdk::host::link::{self, BridgeSpec, Link, TunSpec, VxlanSpec};
use netshim_guest_sdk::host::netfilter::{self, Action, AttachPoint, Match, Op};
use netshim_guest_sdk::host::node;
use netshim_guest_sdk::host::route::{self, Route, RouteKind, RouteScope};
use netshim_guest_sdk::host::store::{self, Condition};
use netshim_guest_sdk::host::sysctl::{self, LinkKey};
use netshim_guest_sdk::log::debug;
use netshim_guest_sdk::rules::{add_chain, add_rule, attach, delete_rule, detach, rule, rule_ids};
use netshim_guest_sdk::teardown::Teardown;
use netshim_guest_sdk::{addr, links, names, Error, IpPrefix, Ipv4Net};

use crate::config::{Backend, Settings};
use crate::lease;
use crate::peers::{self, Dataplane};

pub const POSTROUTING: &str = "postrouting";
pub const DEFAULT_BRIDGE: &str = "cni0";
/// flannel's udp device (`flannel%d`, the first one).
pub const TUN: &str = "flannel0";

pub fn settings_key(subnet: &Ipv4Net) -> String {
    format!("settings/{}-{}", subnet.network(), subnet.prefix_len())
}

/// The settings decided at request-pool, kept on the node (a network
/// works on while the cluster store is away).
pub fn load_settings(subnet: &Ipv4Net) -> Result<Settings, Error> {
    let e = store::get(&settings_key(subnet))?.ok_or_else(|| {
        Error::NotFound(format!(
            "no flannel settings for subnet {subnet} on this node"
        ))
    })?;
    serde_json::from_slice(&e.value)
        .map_err(|e| Error::Failed(format!("flannel settings for {subnet}: {e}")))
}

pub fn save_settings(subnet: &Ipv4Net, s: &Settings) -> Result<(), Error> {
    let v = serde_json::to_vec(s).map_err(|e| Error::Failed(e.to_string()))?;
    store::put(&settings_key(subnet), &v, Condition::None, None)?;
    Ok(())
}

/// The network's own copy of its settings: Docker releases the pool (and
/// with it the pool's settings) in an order of its choosing, and the
/// network's teardown still needs to know its devices.
fn network_settings_key(net: &Network) -> String {
    format!("network-settings/{}", net.id)
}

fn settings_of(net: &Network, own: &Ipv4Net) -> Result<Settings, Error> {
    if let Some(e) = store::get(&network_settings_key(net))? {
        if let Ok(s) = serde_json::from_slice(&e.value) {
            return Ok(s);
        }
    }
    load_settings(own)
}

/// The network's subnet and gateway (one IPv4 pool with a gateway).
pub fn subnet_of(net: &Network) -> Result<(Ipv4Net, IpPrefix), Error> {
    let [pd] = net.ipv4.as_slice() else {
        return Err(Error::Invalid(
            "a flannel network has exactly one IPv4 pool".into(),
        ));
    };
    let pool = addr::v4_prefix(&pd.pool, "pool")?.trunc();
    let gw = pd
        .gateway
        .ok_or_else(|| Error::Invalid("a flannel network needs a gateway".into()))?;
    Ok((
        pool,
        IpPrefix {
            address: gw.address,
            prefix_len: pool.prefix_len(),
        },
    ))
}

pub fn bridge_name(net: &Network) -> Result<String, Error> {
    let name = netshim_guest_sdk::options::get(&net.options, "bridge")
        .unwrap_or(DEFAULT_BRIDGE)
        .to_string();
    if !names::valid_ifname(&name) {
        return Err(Error::Invalid(format!(
            "option bridge: {name:?} is not an interface name"
        )));
    }
    Ok(name)
}

pub fn vxlan_name(s: &Settings) -> String {
    format!("flannel.{}", s.vni)
}

fn underlay() -> Result<(Link, Option<Ipv4Net>), Error> {
    let l = link::underlay().ok_or_else(|| {
        Error::Invalid(
            "this node has no underlay link (no default route); flannel needs one".into(),
        )
    })?;
    let net = node::identity()
        .underlay_address
        .and_then(|p| addr::v4_prefix(&p, "underlay").ok())
        .map(|n| n.trunc());
    Ok((l, net))
}

fn masq_ids(bridge: &str) -> (String, String) {
    (format!("ret-{bridge}"), format!("masq-{bridge}"))
}

/// flannel's FLANNEL-POSTRTG, for this node's subnet: traffic inside the
/// cluster network keeps its source, traffic leaving it is masqueraded.
fn nat_ops(bridge: &str, own: Ipv4Net, s: &Settings) -> Vec<Op> {
    let (ret, masq) = masq_ids(bridge);
    vec![
        add_chain(POSTROUTING),
        attach(POSTROUTING, AttachPoint::NatLeavingNetwork),
        add_rule(
            POSTROUTING,
            rule(
                ret,
                vec![
                    Match::Saddr(addr::wit_prefix(own)),
                    Match::Daddr(addr::wit_prefix(s.network)),
                ],
                Action::ReturnChain,
            ),
        ),
        add_rule(
            POSTROUTING,
            rule(
                masq,
                vec![
                    Match::Saddr(addr::wit_prefix(own)),
                    Match::DaddrNot(addr::wit_prefix(
                        Ipv4Net::new(Ipv4Addr::new(224, 0, 0, 0), 4).expect("literal"),
                    )),
                ],
                Action::Masquerade,
            ),
        ),
    ]
}

pub fn create(net: &Network) -> Result<(), Error> {
    let (own, gateway) = subnet_of(net)?;
    let s = load_settings(&own)?;
    let v = serde_json::to_vec(&s).map_err(|e| Error::Failed(e.to_string()))?;
    store::put(&network_settings_key(net), &v, Condition::None, None)?;
    let bridge = bridge_name(net)?;
    let (ul, _) = underlay()?;
    let mtu = ul.state()?.mtu.saturating_sub(s.backend.overhead());
    debug(&format!(
        "create-network {}: subnet {own} of {}, backend {}, bridge {bridge}, mtu {mtu}",
        net.name,
        s.network,
        s.backend.as_str()
    ));
    let vx = match s.backend {
        Backend::Vxlan => {
            let [a, b, c, d, e, f] = lease::vtep_mac(&s);
            let vx = link::create_vxlan(&VxlanSpec {
                name: vxlan_name(&s),
                vni: s.vni,
                local: Some(addr::wit_addr(s.public_ip)),
                port: s.port,
                underlay: Some(&ul),
                learning: false,
                mtu: Some(mtu),
                mac: Some((a, b, c, d, e, f)),
            })?;
            // The subnet's network address, as a /32: the source of the
            // node's own traffic to other nodes' pods, no broadcast route.
            vx.add_address(addr::host_prefix(own.network()))?;
            let _ = sysctl::set_link(&vx, LinkKey::AcceptRa, 0);
            vx.set_up(true)?;
            Some(vx)
        }
        Backend::HostGw | Backend::Udp => None,
    };
    let tun = match s.backend {
        Backend::Udp => {
            let tun = link::create_tun(&TunSpec {
                name: TUN.into(),
                tap: false,
                mtu: Some(mtu),
            })?;
            tun.add_address(addr::host_prefix(own.network()))?;
            tun.set_up(true)?;
            // The whole network through the tunnel (flannel adds it
            // explicitly: another route to it may be there already).
            route::add(&Route {
                destination: addr::wit_prefix(s.network),
                gateway: None,
                device: Some(&tun),
                kind: RouteKind::Unicast,
                scope: RouteScope::Link,
                onlink: false,
                table: None,
                metric: None,
                source: None,
            })?;
            Some(tun)
        }
        _ => None,
    };
    let spec = BridgeSpec {
        name: bridge.clone(),
        mtu: Some(mtu),
        mac: Some(names::bridge_mac(&net.id)),
    };
    // The kernel's default multicast snooping, as flannel's CNI bridge
    // plugin leaves it.
    links::bridge_up(&spec, Some(gateway), None)?;
    sysctl::enable_ipv4_forwarding()?;
    netfilter::apply(&nat_ops(&bridge, own, &s))?;
    follow_peers(net, &s, own, vx.as_ref(), tun.as_ref())?;
    Ok(())
}

/// Bring the kernel in line with the other nodes' leases and record the
/// status; the problems of this pass (peers not programmed).
fn follow_peers(
    net: &Network,
    s: &Settings,
    own: Ipv4Net,
    vxlan: Option<&Link>,
    tun: Option<&Link>,
) -> Result<usize, Error> {
    let (ul, ul_net) = underlay()?;
    let dp = Dataplane {
        settings: s,
        own,
        vxlan,
        tun,
        underlay: &ul,
        underlay_net: ul_net,
    };
    let leases = peers::leases()?;
    let wanted = peers::wanted(s, &own, &leases);
    let problems = dp.sync(wanted.clone())?;
    peers::write_status(&net.id, s, &own, &wanted, &problems)?;
    Ok(problems.len())
}

/// A pass of the node agent: keep the lease, follow the other nodes.
/// Returns the seconds until the next pass is due.
pub fn reconcile(net: &Network) -> Result<Option<u32>, Error> {
    let (own, _) = subnet_of(net)?;
    if store::get(&settings_key(&own))?.is_none() {
        // The pool was released (Docker releases it apart from the
        // network): the lease is given back, not to be taken again.
        return Ok(None);
    }
    let s = settings_of(net, &own)?;
    let until_renewal = lease::keep(&s, own)?;
    let vx = match s.backend {
        Backend::Vxlan => Some(link::open_owned(&vxlan_name(&s))?),
        _ => None,
    };
    let tun = match s.backend {
        Backend::Udp => Some(link::open_owned(TUN)?),
        _ => None,
    };
    let problems = follow_peers(net, &s, own, vx.as_ref(), tun.as_ref())?;
    // Like flannel's host-gw route check: look again within 10 s, sooner
    // when something could not be programmed.
    let every = if problems == 0 { 10 } else { 3 };
    Ok(Some(until_renewal.clamp(1, every)))
}

pub fn delete(net: &Network) -> Result<(), Error> {
    let (own, _) = subnet_of(net)?;
    let bridge = bridge_name(net)?;
    let mut td = Teardown::new(format!("delete-network {}", net.name));
    let s = td.check("reading the network's settings", settings_of(net, &own));
    // Routes over the underlay do not go with a device: remove them.
    if let (Some(s), Ok((ul, ul_net))) = (&s, underlay()) {
        let dp = Dataplane {
            settings: s,
            own,
            vxlan: None,
            tun: None,
            underlay: &ul,
            underlay_net: ul_net,
        };
        if let Some(done) = td.check("reading programmed peers", peers::programmed(&own)) {
            for p in done.values().filter(|p| p.direct) {
                dp.remove(p);
            }
        }
    }
    td.check("forgetting peers", peers::forget(&own));
    td.check(
        "removing the status record",
        store::delete(&format!("status/{}", net.id), Condition::None),
    );
    td.check(
        "removing the network's settings",
        store::delete(&network_settings_key(net), Condition::None),
    );
    let (ret, masq) = masq_ids(&bridge);
    if let Some(ids) = td.check("listing nat rules", rule_ids(POSTROUTING)) {
        let mut ops = vec![detach(POSTROUTING, AttachPoint::NatLeavingNetwork)];
        for id in [&ret, &masq] {
            if ids.contains(id) {
                ops.push(delete_rule(POSTROUTING, id.clone()));
            }
        }
        if ids.iter().all(|i| *i == ret || *i == masq) {
            ops.push(Op::DeleteTable);
        }
        td.check("removing nat rules", netfilter::apply(&ops));
    }
    if let Some(s) = &s {
        let device = match s.backend {
            Backend::Vxlan => Some(vxlan_name(s)),
            Backend::Udp => Some(TUN.to_string()),
            Backend::HostGw => None,
        };
        if let Some(name) = device {
            links::delete_owned(&name, &name, &mut td);
        }
    }
    links::delete_owned(&bridge, &format!("bridge {bridge}"), &mut td);
    td.finish()
}
