//! Hostile guest: a test fixture for the netshim host. Its `create-network`
//! misbehaves in the way the network option `hostile` names:
//!
//! | mode               | what it does                                                         |
//! |--------------------|----------------------------------------------------------------------|
//! | `loop`             | spins forever (the host's epoch deadline must stop it)               |
//! | `membomb`          | allocates and fills 1 MiB chunks forever (the memory limit must stop it) |
//! | `panic-after-link` | creates a bridge with an address, then panics (trap: rollback)      |
//! | `error-after-link` | creates a bridge with an address, then returns `failed` (rollback)  |
//! | `steal-uplink`     | `open-owned(target)` (default "uplink") and deletes it; returns the error (expect `denied`) |
//! | `delete-underlay`  | deletes the underlay link; returns the error                        |
//! | `readdress-uplink` | adds 198.51.100.99/24 to the underlay link; returns the error       |
//! | `route-outside`    | creates its bridge (up), then adds a route to 192.0.2.0/24 via it: outside its grant unless the operator granted that prefix |
//! | `ok`               | creates its bridge with an address and succeeds                      |
//! | `nft-input-drop`   | bridge, then an `input` base chain, policy drop, priority -300       |
//! | `nft-forward-drop` | bridge, then a `forward` base chain with policy drop                 |
//! | `nft-input-drop-rule` | bridge, an `input` chain (policy accept) holding one match-less `drop` rule: allowed, but the host scopes it to the network |
//! | `nft-forward-drop-rule` | the same at `forward`                                         |
//! | `nft-dnat-ssh`     | bridge, a nat `prerouting` chain DNATting the node's tcp/22 to 203.0.113.1 |
//! | `nft-masq-all`     | bridge, a nat `postrouting` chain with a match-less masquerade       |
//! | `nft-wide-rule`    | bridge, a rule with 5,000 `iifname-not` matches                      |
//! | `route-halves`     | bridge, then routes 0.0.0.0/1 and 128.0.0.0/1 via it                 |
//! | `own-route`        | bridge, then a route 10.99.0.64/26 via it (the network's own)        |
//! | `route-localnet`   | bridge, then route_localnet=1 on it                                  |
//! | `vxlan-port-22`    | a VXLAN on UDP port 22                                               |
//! | `vxlan-local-foreign` | a VXLAN with local address 192.0.2.77 (not the node's)            |
//! | `links-flood`      | creates bridges hostile0..hostile99                                   |
//! | `log-flood`        | logs 10,000 lines, then succeeds                                     |
//! | `error-long`       | returns an error message of 1 MiB                                     |
//! | `store-flood`      | writes 4 × 1 MiB values under keys named by option `bridge`          |
//!
//! Option `on-attach` picks what `create-endpoint` does: `replace-foreign`
//! (replace 10.99.0.128/25, a route it did not make, via its bridge),
//! `replace-then-fail` (replace its own 10.99.0.64/26 with a blackhole, then
//! fail: the undo must restore the route). Option `on-publish` picks what
//! `program-external-connectivity` does: `dnat-ssh` (DNAT the node's tcp/22
//! to 203.0.113.1), `dnat-loopback` (the published port to 127.0.0.1),
//! `dnat-ok` (the published port to the endpoint). Option `on-join`:
//! `srcname-uplink` names the node's `uplink` as the interface to move.
//!
//! IPAM: a request for 10.123.0.0/16 is answered with 0.0.0.0/0, and
//! addresses are 10.99.0.x/24 as asked (10.99.0.1 by default).
//!
//! The bridge is named by option `bridge` (default "hostile0") and gets
//! 10.99.0.1/24. Without a `hostile` option `create-network` does nothing.
//! Every other export behaves minimally and succeeds; `delete-network`
//! removes the bridge if it is there.

wit_bindgen::generate!({
    path: "../../../wit/v0.1.0",
    world: "plugin",
});

use exports::netshim::plugin::driver::{
    Capabilities, EndpointInfo, EndpointRequest, Guest as Driver, JoinInfo, Network, Scope,
};
use exports::netshim::plugin::ipam::{Guest as Ipam, Pool, PoolRequest};
use exports::netshim::plugin::reconcile::{Event, Guest as Reconcile};
use netshim::plugin::link::{self, BridgeSpec, Link, Sandbox};
use netshim::plugin::log::{log, Level};
use netshim::plugin::netfilter::{
    self, Action, BaseChain, ChainType, Hook, Match, Op, Protocol, Rule,
};
use netshim::plugin::route::{self, Route, RouteKind, RouteScope};
use netshim::plugin::sysctl::{self, LinkKey};
use netshim::plugin::types::{Error, IpAddress, IpPrefix};

const DEFAULT_BRIDGE: &str = "hostile0";

fn option<'a>(net: &'a Network, key: &str) -> Option<&'a str> {
    net.options
        .iter()
        .rev()
        .find(|(k, _)| k == key)
        .map(|(_, v)| v.as_str())
}

fn prefix(a: u8, b: u8, c: u8, d: u8, len: u8) -> IpPrefix {
    IpPrefix {
        address: IpAddress::Ipv4((a, b, c, d)),
        prefix_len: len,
    }
}

/// The fixture's bridge, with 10.99.0.1/24 on it.
fn make_bridge(net: &Network) -> Result<Link, Error> {
    let name = option(net, "bridge").unwrap_or(DEFAULT_BRIDGE).to_string();
    let br = link::create_bridge(&BridgeSpec {
        name,
        mtu: None,
        mac: None,
    })?;
    let gateway = net
        .ipv4
        .first()
        .and_then(|p| p.gateway)
        .unwrap_or(prefix(10, 99, 0, 1, 24));
    br.add_address(gateway)?;
    // Up, so that the routes some modes add through it are taken.
    br.set_up(true)?;
    Ok(br)
}

/// Spin forever. `black_box` keeps the optimiser from proving the loop
/// useless; a Rust `loop` without exit is never removed anyway.
fn spin() -> ! {
    let mut n: u64 = 0;
    loop {
        n = std::hint::black_box(n.wrapping_add(1));
    }
}

/// Allocate 1 MiB chunks filled with a byte (so every page is touched) and
/// keep them all, forever.
fn membomb() -> ! {
    let mut hoard: Vec<Vec<u8>> = Vec::new();
    loop {
        let mut chunk = vec![0u8; 1 << 20];
        chunk.fill(0xa5);
        hoard.push(std::hint::black_box(chunk));
        std::hint::black_box(&hoard);
    }
}

fn base(hook: Hook, chain_type: ChainType, priority: i32, policy_drop: bool) -> Option<BaseChain> {
    Some(BaseChain {
        hook,
        chain_type,
        priority,
        policy_drop,
    })
}

fn rule(id: &str, matches: Vec<Match>, action: Action) -> Rule {
    Rule {
        id: id.into(),
        matches,
        counter: false,
        action,
    }
}

/// A chain at `hook` with one rule in it, in one batch.
fn hooked(chain: &str, hook: Hook, t: ChainType, policy_drop: bool, r: Rule) -> Result<(), Error> {
    netfilter::apply(&[
        Op::AddChain((chain.into(), base(hook, t, -300, policy_drop))),
        Op::AddRule((chain.into(), r)),
    ])
}

fn via(dst: IpPrefix, dev: &Link, kind: RouteKind) -> Route<'_> {
    Route {
        destination: dst,
        gateway: None,
        device: if matches!(kind, RouteKind::Unicast) {
            Some(dev)
        } else {
            None
        },
        scope: if matches!(kind, RouteKind::Unicast) {
            RouteScope::Link
        } else {
            RouteScope::Universe
        },
        kind,
        onlink: false,
        table: None,
        metric: None,
        source: None,
    }
}

fn vxlan(port: Option<u16>, local: Option<IpAddress>) -> Result<(), Error> {
    let underlay = link::underlay();
    link::create_vxlan(&link::VxlanSpec {
        name: "hostile-vx".into(),
        vni: 77,
        local,
        port,
        underlay: underlay.as_ref(),
        learning: false,
        mtu: None,
        mac: None,
    })
    .map(|_| ())
}

fn on_attach(net: &Network) -> Result<(), Error> {
    let Some(mode) = option(net, "on-attach") else {
        return Ok(());
    };
    let br = link::open_owned(option(net, "bridge").unwrap_or(DEFAULT_BRIDGE))?;
    match mode {
        "replace-foreign" => {
            route::replace(&via(prefix(10, 99, 0, 128, 25), &br, RouteKind::Unicast))
        }
        "replace-then-fail" => {
            route::replace(&via(prefix(10, 99, 0, 64, 26), &br, RouteKind::Blackhole))?;
            Err(Error::Failed(
                "hostile: failing after replacing its route".into(),
            ))
        }
        other => Err(Error::Invalid(format!(
            "hostile: unknown on-attach mode {other:?}"
        ))),
    }
}

fn on_publish(net: &Network, ep: &EndpointRequest) -> Result<(), Error> {
    let Some(mode) = option(net, "on-publish") else {
        return Ok(());
    };
    let chain = "pre";
    netfilter::apply(&[Op::AddChain((
        chain.into(),
        base(Hook::Prerouting, ChainType::Nat, -100, false),
    ))])?;
    let p = ep.ports.first();
    let (host_port, container_port) = p
        .map(|p| (p.host_port, p.container_port))
        .unwrap_or((8080, 80));
    let target = ep
        .ipv4
        .map(|a| a.address)
        .unwrap_or(IpAddress::Ipv4((10, 99, 0, 2)));
    let (port, to, to_port) = match mode {
        "dnat-ssh" => (22, IpAddress::Ipv4((203, 0, 113, 1)), 22),
        "dnat-loopback" => (host_port, IpAddress::Ipv4((127, 0, 0, 1)), container_port),
        "dnat-ok" => (host_port, target, container_port),
        other => {
            return Err(Error::Invalid(format!(
                "hostile: unknown on-publish mode {other:?}"
            )))
        }
    };
    netfilter::apply(&[Op::AddRule((
        chain.into(),
        rule(
            &format!("pub-{port}"),
            vec![
                Match::Protocol(Protocol::Tcp),
                Match::Dport(port),
                Match::DaddrLocal,
            ],
            Action::Dnat((to, Some(to_port))),
        ),
    ))])
}

/// Every endpoint is a veth: `hv<id>` on the node, the peer in the sandbox
/// under the requested name (or `hp<id>` on the node, for dockerd to move).
fn host_end(id: &str) -> String {
    format!("hv{}", &id[..id.len().min(10)])
}

fn peer_name(ep: &EndpointRequest, in_sandbox: bool) -> String {
    if in_sandbox {
        ep.ifname.clone()
    } else {
        format!("hp{}", &ep.id[..ep.id.len().min(10)])
    }
}

struct Hostile;

impl Driver for Hostile {
    fn get_capabilities() -> Capabilities {
        Capabilities {
            scope: Scope::Local,
            connectivity_scope: Scope::Local,
        }
    }

    fn create_network(net: Network) -> Result<(), Error> {
        let Some(mode) = option(&net, "hostile") else {
            return Ok(());
        };
        log(
            Level::Warn,
            &format!("hostile guest: create-network in mode {mode:?}"),
        );
        match mode {
            "loop" => spin(),
            "membomb" => membomb(),
            "panic-after-link" => {
                make_bridge(&net)?;
                panic!("hostile: panic after creating a link");
            }
            "error-after-link" => {
                make_bridge(&net)?;
                Err(Error::Failed("hostile: error after creating a link".into()))
            }
            "steal-uplink" => {
                let target = option(&net, "target").unwrap_or("uplink");
                let l = link::open_owned(target)?;
                link::delete(l)
            }
            "delete-underlay" => match link::underlay() {
                Some(l) => link::delete(l),
                None => Err(Error::NotFound("hostile: the host granted no underlay link".into())),
            },
            "readdress-uplink" => match link::underlay() {
                Some(l) => l.add_address(prefix(198, 51, 100, 99, 24)),
                None => Err(Error::NotFound("hostile: the host granted no underlay link".into())),
            },
            "route-outside" => {
                let br = make_bridge(&net)?;
                route::add(&Route {
                    destination: prefix(192, 0, 2, 0, 24),
                    gateway: None,
                    device: Some(&br),
                    kind: RouteKind::Unicast,
                    scope: RouteScope::Link,
                    onlink: false,
                    table: None,
                    metric: None,
                    source: None,
                })
            }
            "ok" => make_bridge(&net).map(|_| ()),
            "nft-input-drop" => {
                make_bridge(&net)?;
                hooked("in", Hook::Input, ChainType::Filter, true, rule("all", vec![], Action::Accept))
            }
            "nft-forward-drop" => {
                make_bridge(&net)?;
                hooked("fwd", Hook::Forward, ChainType::Filter, true, rule("all", vec![], Action::Accept))
            }
            "nft-input-drop-rule" => {
                make_bridge(&net)?;
                hooked("in", Hook::Input, ChainType::Filter, false, rule("all", vec![], Action::Drop))
            }
            "nft-forward-drop-rule" => {
                make_bridge(&net)?;
                hooked("fwd", Hook::Forward, ChainType::Filter, false, rule("all", vec![], Action::Drop))
            }
            "nft-dnat-ssh" => {
                make_bridge(&net)?;
                hooked(
                    "pre",
                    Hook::Prerouting,
                    ChainType::Nat,
                    false,
                    rule(
                        "ssh",
                        vec![Match::Protocol(Protocol::Tcp), Match::Dport(22)],
                        Action::Dnat((IpAddress::Ipv4((203, 0, 113, 1)), Some(22))),
                    ),
                )
            }
            "nft-masq-all" => {
                make_bridge(&net)?;
                hooked("post", Hook::Postrouting, ChainType::Nat, false, rule("all", vec![], Action::Masquerade))
            }
            "nft-wide-rule" => {
                make_bridge(&net)?;
                let matches = (0..5000).map(|i| Match::IifnameNot(format!("x{i}"))).collect();
                netfilter::apply(&[
                    Op::AddChain(("wide".into(), None)),
                    Op::AddRule(("wide".into(), rule("wide", matches, Action::Accept))),
                ])
            }
            "route-halves" => {
                let br = make_bridge(&net)?;
                route::add(&via(prefix(0, 0, 0, 0, 1), &br, RouteKind::Unicast))?;
                route::add(&via(prefix(128, 0, 0, 0, 1), &br, RouteKind::Unicast))
            }
            "own-route" => {
                let br = make_bridge(&net)?;
                route::add(&via(prefix(10, 99, 0, 64, 26), &br, RouteKind::Unicast))
            }
            "route-localnet" => {
                let br = make_bridge(&net)?;
                sysctl::set_link(&br, LinkKey::RouteLocalnet, 1)
            }
            "vxlan-port-22" => vxlan(Some(22), None),
            "vxlan-local-foreign" => vxlan(None, Some(IpAddress::Ipv4((192, 0, 2, 77)))),
            "links-flood" => {
                for i in 0..100 {
                    link::create_bridge(&BridgeSpec { name: format!("hostile{i}"), mtu: None, mac: None })?;
                }
                Ok(())
            }
            "log-flood" => {
                for i in 0..10_000 {
                    log(Level::Warn, &format!("hostile: flood line {i}"));
                }
                make_bridge(&net).map(|_| ())
            }
            "error-long" => Err(Error::Failed("x".repeat(1 << 20))),
            "store-flood" => {
                let tag = option(&net, "bridge").unwrap_or(DEFAULT_BRIDGE);
                for i in 0..4 {
                    netshim::plugin::store::put(
                        &format!("flood/{tag}/{i}"),
                        &vec![0x5a; (1 << 20) - 64],
                        netshim::plugin::store::Condition::None,
                        None,
                    )?;
                }
                Ok(())
            }
            other => Err(Error::Invalid(format!(
                "hostile: unknown mode {other:?}; the modes are listed at the top of tests/guests/hostile/src/lib.rs"
            ))),
        }
    }

    fn delete_network(net: Network) -> Result<(), Error> {
        let name = option(&net, "bridge").unwrap_or(DEFAULT_BRIDGE);
        if let Ok(l) = link::open_owned(name) {
            let _ = link::delete(l);
        }
        Ok(())
    }

    fn create_endpoint(
        net: Network,
        ep: EndpointRequest,
        sb: Option<&Sandbox>,
    ) -> Result<EndpointInfo, Error> {
        on_attach(&net)?;
        link::create_veth(&link::VethSpec {
            name: host_end(&ep.id),
            peer_name: peer_name(&ep, sb.is_some()),
            mtu: None,
            mac: None,
            peer_mac: None,
            peer_sandbox: sb,
        })?;
        Ok(EndpointInfo {
            ipv4: None,
            ipv6: None,
            mac: None,
        })
    }

    fn delete_endpoint(_net: Network, endpoint_id: String) -> Result<(), Error> {
        if let Ok(l) = link::open_owned(&host_end(&endpoint_id)) {
            let _ = link::delete(l);
        }
        Ok(())
    }

    fn join(net: Network, ep: EndpointRequest, sb: Option<&Sandbox>) -> Result<JoinInfo, Error> {
        let src_name = match option(&net, "on-join") {
            Some("srcname-uplink") => "uplink".to_string(),
            _ => peer_name(&ep, sb.is_some()),
        };
        Ok(JoinInfo {
            src_name,
            in_sandbox: sb.is_some(),
            dst_prefix: "eth".into(),
            gateway: None,
            gateway_ipv6: None,
            static_routes: Vec::new(),
            disable_gateway_service: true,
        })
    }

    fn leave(_net: Network, _endpoint_id: String) -> Result<(), Error> {
        Ok(())
    }

    fn endpoint_oper_info(
        _net: Network,
        _endpoint_id: String,
    ) -> Result<Vec<(String, String)>, Error> {
        Ok(Vec::new())
    }

    fn program_external_connectivity(net: Network, ep: EndpointRequest) -> Result<(), Error> {
        on_publish(&net, &ep)
    }

    fn revoke_external_connectivity(_net: Network, _ep: EndpointRequest) -> Result<(), Error> {
        Ok(())
    }
}

impl Ipam for Hostile {
    fn request_pool(req: PoolRequest) -> Result<Pool, Error> {
        let mut pool = req.pool.unwrap_or(prefix(10, 99, 0, 0, 24));
        if matches!(pool.address, IpAddress::Ipv4((10, 123, 0, 0))) && pool.prefix_len == 16 {
            pool = prefix(0, 0, 0, 0, 0);
        }
        // The id carries the pool, so request-address needs no store.
        let id = match pool.address {
            IpAddress::Ipv4((a, b, c, d)) => format!("{a}.{b}.{c}.{d}/{}", pool.prefix_len),
            IpAddress::Ipv6(_) => "v6".into(),
        };
        Ok(Pool {
            id,
            pool,
            gateway: None,
        })
    }

    fn release_pool(_pool_id: String) -> Result<(), Error> {
        Ok(())
    }

    fn request_address(
        pool_id: String,
        address: Option<IpAddress>,
        gateway: bool,
        _options: Vec<(String, String)>,
    ) -> Result<IpPrefix, Error> {
        // The pool's first address for the gateway, its second otherwise.
        let octets: Vec<u8> = pool_id
            .split(['.', '/'])
            .filter_map(|x| x.parse().ok())
            .collect();
        let (a, b, c, len) = match octets[..] {
            [a, b, c, _, len] => (a, b, c, len),
            _ => (10, 99, 0, 24),
        };
        Ok(match address {
            Some(address) => IpPrefix {
                address,
                prefix_len: len,
            },
            None => prefix(a, b, c, if gateway { 1 } else { 2 }, len),
        })
    }

    fn release_address(_pool_id: String, _address: IpAddress) -> Result<(), Error> {
        Ok(())
    }
}

impl Reconcile for Hostile {
    fn handle(_net: Network, _ev: Event) -> Result<Option<u32>, Error> {
        Ok(None)
    }
}

export!(Hostile);
