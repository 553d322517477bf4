//! netshim bridge driver: Docker's `bridge` driver (docker0 semantics) and
//! its IPAM, as a WebAssembly component for the `netshim:plugin@0.2.0`
//! world (0.2's scoped `netfilter`; every other interface is 0.1's).
//!
//! The host gives every call a fresh instance, so nothing is kept in memory
//! between calls: everything a call needs comes from its arguments (the
//! `network` record), from names derived from ids, from the kernel objects
//! the network owns, or from the driver's store (IPAM).
//!
//! - [`network`]: one bridge per network, gateway address, masquerade and
//!   isolation rules.
//! - [`endpoint`]: one veth pair per endpoint, node end on the bridge.
//! - [`ports`]: published ports as DNAT rules.
//! - [`ipam`]: pools and addresses in the store.
//! - [`names`], [`addr`]: pure helpers.

wit_bindgen::generate!({
    path: "../../wit/v0.2.0",
    world: "netshim:plugin/plugin@0.2.0",
    // The 0.1 interfaces 0.2 imports live in its deps/: generate them too.
    generate_all,
});

pub mod addr;
pub mod endpoint;
pub mod ipam;
pub mod names;
pub mod network;
pub mod nft;
pub mod ports;

use exports::netshim::plugin0_1_0::driver::{
    Capabilities, EndpointInfo, EndpointRequest, Guest as Driver, JoinInfo, Network, Scope,
};
use exports::netshim::plugin0_1_0::ipam::{Guest as Ipam, Pool, PoolRequest};
use exports::netshim::plugin0_1_0::reconcile::{Event, Guest as Reconcile};
use netshim::plugin0_1_0::link::Sandbox;
use netshim::plugin0_1_0::types::{Error, IpAddress, IpPrefix};

/// A debug line in the host's log. On a native target (unit tests) there is
/// no host: the line is dropped.
pub(crate) fn debug(msg: &str) {
    #[cfg(target_family = "wasm")]
    netshim::plugin0_1_0::log::log(netshim::plugin0_1_0::log::Level::Debug, msg);
    #[cfg(not(target_family = "wasm"))]
    let _ = msg;
}

/// "kind: message", for errors folded into another error's message.
pub(crate) fn show_error(e: &Error) -> String {
    let (kind, m) = match e {
        Error::Exists(m) => ("exists", m),
        Error::NotFound(m) => ("not-found", m),
        Error::Denied(m) => ("denied", m),
        Error::Invalid(m) => ("invalid", m),
        Error::Unsupported(m) => ("unsupported", m),
        Error::Conflict(m) => ("conflict", m),
        Error::Failed(m) => ("failed", m),
    };
    format!("{kind}: {m}")
}

struct Bridge;

impl Driver for Bridge {
    fn get_capabilities() -> Capabilities {
        Capabilities {
            scope: Scope::Local,
            connectivity_scope: Scope::Local,
        }
    }

    fn create_network(net: Network) -> Result<(), Error> {
        network::create(&net)
    }

    fn delete_network(net: Network) -> Result<(), Error> {
        network::delete(&net)
    }

    fn create_endpoint(
        net: Network,
        ep: EndpointRequest,
        sb: Option<&Sandbox>,
    ) -> Result<EndpointInfo, Error> {
        endpoint::create(&net, &ep, sb)
    }

    fn delete_endpoint(net: Network, endpoint_id: String) -> Result<(), Error> {
        endpoint::delete(&net, &endpoint_id)
    }

    fn join(net: Network, ep: EndpointRequest, sb: Option<&Sandbox>) -> Result<JoinInfo, Error> {
        endpoint::join(&net, &ep, sb)
    }

    fn leave(net: Network, endpoint_id: String) -> Result<(), Error> {
        debug(&format!("leave {} endpoint {endpoint_id}", net.name));
        Ok(())
    }

    fn endpoint_oper_info(
        net: Network,
        endpoint_id: String,
    ) -> Result<Vec<(String, String)>, Error> {
        debug(&format!(
            "endpoint-oper-info {} endpoint {endpoint_id}",
            net.name
        ));
        Ok(Vec::new())
    }

    fn program_external_connectivity(net: Network, ep: EndpointRequest) -> Result<(), Error> {
        ports::program(&net, &ep)
    }

    fn revoke_external_connectivity(net: Network, ep: EndpointRequest) -> Result<(), Error> {
        debug(&format!(
            "revoke-external-connectivity {} endpoint {}",
            net.name, ep.id
        ));
        ports::revoke(&ep.id)
    }
}

impl Ipam for Bridge {
    fn request_pool(req: PoolRequest) -> Result<Pool, Error> {
        ipam::request_pool(&req)
    }

    fn release_pool(pool_id: String) -> Result<(), Error> {
        ipam::release_pool(&pool_id)
    }

    fn request_address(
        pool_id: String,
        address: Option<IpAddress>,
        gateway: bool,
        options: Vec<(String, String)>,
    ) -> Result<IpPrefix, Error> {
        ipam::request_address(&pool_id, address, gateway, &options)
    }

    fn release_address(pool_id: String, address: IpAddress) -> Result<(), Error> {
        ipam::release_address(&pool_id, address)
    }
}

impl Reconcile for Bridge {
    fn handle(net: Network, _ev: Event) -> Result<Option<u32>, Error> {
        debug(&format!("reconcile {}: nothing to follow", net.name));
        Ok(None)
    }
}

export!(Bridge);
