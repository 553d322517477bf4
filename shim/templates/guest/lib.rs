//! {{NAME}}: a netshim network driver, a WebAssembly component for the
//! `netshim:plugin@0.2.0` world (see wit/ beside this crate, and netshim's
//! wit/README.md for what each call is for and what the host allows).
//!
//! As generated it is a working driver with nothing in the kernel: its
//! networks exist in netshim's records only, its IPAM hands out addresses
//! of the subnet it is given, and attaching is refused until you write it.
//! Every call runs in a fresh instance: keep state in `store`, not memory.

wit_bindgen::generate!({
    path: "wit/v0.2.0",
    world: "netshim:plugin/plugin@0.2.0",
    // The 0.1 interfaces 0.2 imports live in its deps/: generate them too.
    generate_all,
});

use exports::netshim::plugin0_1_0::driver::{
    Capabilities, EndpointInfo, EndpointRequest, Guest as Driver, JoinInfo, Network, Scope,
};
use exports::netshim::plugin0_1_0::ipam::{Guest as Ipam, Pool, PoolRequest};
use exports::netshim::plugin0_1_0::reconcile::{Event, Guest as Reconcile};
use netshim::plugin0_1_0::link::Sandbox;
use netshim::plugin0_1_0::log::{log, Level};
use netshim::plugin0_1_0::store::{self, Condition};
use netshim::plugin0_1_0::types::{Error, IpAddress, IpPrefix};

struct Component;
export!(Component);

impl Driver for Component {
    fn get_capabilities() -> Capabilities {
        Capabilities {
            scope: Scope::Local,
            connectivity_scope: Scope::Local,
        }
    }

    fn create_network(net: Network) -> Result<(), Error> {
        // Here: make the network's kernel objects (link::create_bridge, …)
        // and its rules (netfilter::apply with chains attached for it).
        let node = netshim::plugin0_2_0::node::identity();
        log(Level::Info, &format!("create-network {} ({}) on node {}", net.name, net.id, node.name));
        Ok(())
    }

    fn delete_network(net: Network) -> Result<(), Error> {
        log(Level::Info, &format!("delete-network {}", net.name));
        Ok(())
    }

    fn create_endpoint(
        _net: Network,
        ep: EndpointRequest,
        _sb: Option<&Sandbox>,
    ) -> Result<EndpointInfo, Error> {
        // Here: link::create_veth with `peer-sandbox` set, so the container
        // end is born inside the sandbox.
        Err(Error::Unsupported(format!(
            "{{NAME}} does not make endpoints yet (endpoint {})",
            ep.id
        )))
    }

    fn delete_endpoint(_net: Network, _endpoint_id: String) -> Result<(), Error> {
        Ok(())
    }

    fn join(_net: Network, _ep: EndpointRequest, _sb: Option<&Sandbox>) -> Result<JoinInfo, Error> {
        Err(Error::Unsupported("{{NAME}} does not join sandboxes yet".into()))
    }

    fn leave(_net: Network, _endpoint_id: String) -> Result<(), Error> {
        Ok(())
    }

    fn endpoint_oper_info(_net: Network, _endpoint_id: String) -> Result<Vec<(String, String)>, Error> {
        Ok(Vec::new())
    }

    fn program_external_connectivity(_net: Network, _ep: EndpointRequest) -> Result<(), Error> {
        Ok(())
    }

    fn revoke_external_connectivity(_net: Network, _ep: EndpointRequest) -> Result<(), Error> {
        Ok(())
    }
}

/// An IPv4 pool as its id: "a.b.c.d/len".
fn pool_id(p: &IpPrefix) -> Result<String, Error> {
    match p.address {
        IpAddress::Ipv4((a, b, c, d)) if (8..=30).contains(&p.prefix_len) => {
            Ok(format!("{a}.{b}.{c}.{d}/{}", p.prefix_len))
        }
        _ => Err(Error::Invalid("{{NAME}} takes an IPv4 subnet from /8 to /30".into())),
    }
}

fn parse_pool(id: &str) -> Result<(u32, u8), Error> {
    let bad = || Error::Invalid(format!("unknown pool {id:?}"));
    let (addr, len) = id.split_once('/').ok_or_else(bad)?;
    let octets: Vec<u8> = addr.split('.').map(|o| o.parse().map_err(|_| bad())).collect::<Result<_, _>>()?;
    let [a, b, c, d] = octets[..] else { return Err(bad()) };
    Ok((u32::from_be_bytes([a, b, c, d]), len.parse().map_err(|_| bad())?))
}

fn prefix(addr: u32, len: u8) -> IpPrefix {
    let [a, b, c, d] = addr.to_be_bytes();
    IpPrefix { address: IpAddress::Ipv4((a, b, c, d)), prefix_len: len }
}

impl Ipam for Component {
    fn request_pool(req: PoolRequest) -> Result<Pool, Error> {
        let pool = req.pool.ok_or_else(|| Error::Invalid("{{NAME}} needs a subnet (--subnet)".into()))?;
        Ok(Pool { id: pool_id(&pool)?, pool, gateway: None })
    }

    fn release_pool(pool_id: String) -> Result<(), Error> {
        match store::delete(&format!("next/{pool_id}"), Condition::None) {
            Ok(()) | Err(Error::NotFound(_)) => Ok(()),
            Err(e) => Err(e),
        }
    }

    /// The gateway is the first address; others count up from the second,
    /// one compare-and-swap per address, so concurrent calls never collide.
    fn request_address(
        pool_id: String,
        address: Option<IpAddress>,
        gateway: bool,
        _options: Vec<(String, String)>,
    ) -> Result<IpPrefix, Error> {
        let (net, len) = parse_pool(&pool_id)?;
        if let Some(a) = address {
            return Ok(IpPrefix { address: a, prefix_len: len });
        }
        if gateway {
            return Ok(prefix(net + 1, len));
        }
        let key = format!("next/{pool_id}");
        loop {
            let current = store::get(&key)?;
            let next = current
                .as_ref()
                .and_then(|e| std::str::from_utf8(&e.value).ok()?.parse::<u32>().ok())
                .unwrap_or(2);
            if next >= (1u32 << (32 - len)) - 1 {
                return Err(Error::Failed(format!("pool {pool_id} is full")));
            }
            let cond = match &current {
                Some(e) => Condition::Revision(e.revision),
                None => Condition::Absent,
            };
            match store::put(&key, (next + 1).to_string().as_bytes(), cond, None) {
                Ok(_) => return Ok(prefix(net + next, len)),
                Err(Error::Conflict(_)) => continue,
                Err(e) => return Err(e),
            }
        }
    }

    fn release_address(_pool_id: String, _address: IpAddress) -> Result<(), Error> {
        Ok(())
    }
}

impl Reconcile for Component {
    fn handle(_net: Network, _ev: Event) -> Result<Option<u32>, Error> {
        Ok(None)
    }
}
