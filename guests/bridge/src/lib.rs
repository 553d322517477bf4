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
//! - [`nft`]: the chains and set the driver's networks share.
//!
//! IPAM is the SDK's (`netshim_guest_sdk::ipam`), whose store layout is the
//! one this driver has always used.

pub mod endpoint;
pub mod network;
pub mod nft;
pub mod ports;

use netshim_guest_sdk::guest::driver::{
    Capabilities, EndpointInfo, EndpointRequest, Guest as Driver, JoinInfo, Network, Scope,
};
use netshim_guest_sdk::guest::ipam::{Guest as Ipam, Pool, PoolRequest};
use netshim_guest_sdk::guest::reconcile::{Event, Guest as Reconcile};
use netshim_guest_sdk::host::link::Sandbox;
use netshim_guest_sdk::log::debug;
use netshim_guest_sdk::{Error, IpAddress, IpPrefix};

/// The messages of the IPAM say "the bridge IPAM".
const IPAM: netshim_guest_sdk::ipam::Ipam = netshim_guest_sdk::ipam::Ipam::new("bridge");

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
        IPAM.request_pool(&req)
    }

    fn release_pool(pool_id: String) -> Result<(), Error> {
        IPAM.release_pool(&pool_id)
    }

    fn request_address(
        pool_id: String,
        address: Option<IpAddress>,
        gateway: bool,
        options: Vec<(String, String)>,
    ) -> Result<IpPrefix, Error> {
        IPAM.request_address(&pool_id, address, gateway, &options)
    }

    fn release_address(pool_id: String, address: IpAddress) -> Result<(), Error> {
        IPAM.release_address(&pool_id, address)
    }
}

impl Reconcile for Bridge {
    fn handle(net: Network, _ev: Event) -> Result<Option<u32>, Error> {
        debug(&format!("reconcile {}: nothing to follow", net.name));
        Ok(None)
    }
}

netshim_guest_sdk::export!(Bridge);
