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
//! | `route-outside`    | creates its bridge, then adds a route to 192.0.2.0/24 (outside its grant) via it; returns the error |
//! | `ok`               | creates its bridge with an address and succeeds                      |
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
use netshim::plugin::route::{self, Route, RouteKind, RouteScope};
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
    br.add_address(prefix(10, 99, 0, 1, 24))?;
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
            other => Err(Error::Invalid(format!(
                "hostile: unknown mode {other:?}; modes: loop, membomb, panic-after-link, \
                 error-after-link, steal-uplink, delete-underlay, readdress-uplink, route-outside, ok"
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
        _net: Network,
        _ep: EndpointRequest,
        _sb: Option<&Sandbox>,
    ) -> Result<EndpointInfo, Error> {
        Ok(EndpointInfo {
            ipv4: None,
            ipv6: None,
            mac: None,
        })
    }

    fn delete_endpoint(_net: Network, _endpoint_id: String) -> Result<(), Error> {
        Ok(())
    }

    fn join(_net: Network, ep: EndpointRequest, sb: Option<&Sandbox>) -> Result<JoinInfo, Error> {
        Ok(JoinInfo {
            src_name: ep.ifname,
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

    fn program_external_connectivity(_net: Network, _ep: EndpointRequest) -> Result<(), Error> {
        Ok(())
    }

    fn revoke_external_connectivity(_net: Network, _ep: EndpointRequest) -> Result<(), Error> {
        Ok(())
    }
}

impl Ipam for Hostile {
    fn request_pool(req: PoolRequest) -> Result<Pool, Error> {
        let pool = req.pool.unwrap_or(prefix(10, 99, 0, 0, 24));
        Ok(Pool {
            id: "p".into(),
            pool,
            gateway: None,
        })
    }

    fn release_pool(_pool_id: String) -> Result<(), Error> {
        Ok(())
    }

    fn request_address(
        _pool_id: String,
        address: Option<IpAddress>,
        _gateway: bool,
        _options: Vec<(String, String)>,
    ) -> Result<IpPrefix, Error> {
        Ok(match address {
            Some(address) => IpPrefix {
                address,
                prefix_len: 24,
            },
            None => prefix(10, 99, 0, 1, 24),
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
