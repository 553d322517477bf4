//! {{NAME}}: a netshim network driver, a WebAssembly component for the
//! `netshim:plugin@0.2.0` world. It depends on the guest SDK alone
//! (netshim-guest-sdk: the bindings, IPAM, names, link and rule helpers;
//! see its README.md), and netshim's wit/README.md says what each call is
//! for and what the host allows.
//!
//! As generated it is a working driver with nothing in the kernel: its
//! networks exist in netshim's records only, its IPAM is the SDK's (the
//! subnet asked for, or a free one of Docker's defaults; the gateway, then
//! the lowest free address), and attaching is refused until you write it.
//! Every call runs in a fresh instance: keep state in `store`, not memory.

use netshim_guest_sdk::guest::driver::{
    Capabilities, EndpointInfo, EndpointRequest, Guest as Driver, JoinInfo, Network, Scope,
};
use netshim_guest_sdk::guest::ipam::{Guest as Ipam, Pool, PoolRequest};
use netshim_guest_sdk::guest::reconcile::{Event, Guest as Reconcile};
use netshim_guest_sdk::host::link::Sandbox;
use netshim_guest_sdk::host::node;
use netshim_guest_sdk::log::info;
use netshim_guest_sdk::{Error, IpAddress, IpPrefix};

/// Pools and addresses in the driver's store; "{{NAME}}" names it in errors.
const IPAM: netshim_guest_sdk::ipam::Ipam = netshim_guest_sdk::ipam::Ipam::new("{{NAME}}");

struct Component;
netshim_guest_sdk::export!(Component);

impl Driver for Component {
    fn get_capabilities() -> Capabilities {
        Capabilities {
            scope: Scope::Local,
            connectivity_scope: Scope::Local,
        }
    }

    fn create_network(net: Network) -> Result<(), Error> {
        // Here: make the network's kernel objects (links::bridge_up, …) and
        // its rules (host::netfilter::apply of rules::attach, add_rule, …).
        let node = node::identity();
        info(&format!(
            "create-network {} ({}) on node {}",
            net.name, net.id, node.name
        ));
        Ok(())
    }

    fn delete_network(net: Network) -> Result<(), Error> {
        // Here: undo create-network, best effort (teardown::Teardown).
        info(&format!("delete-network {}", net.name));
        Ok(())
    }

    fn create_endpoint(
        _net: Network,
        ep: EndpointRequest,
        _sb: Option<&Sandbox>,
    ) -> Result<EndpointInfo, Error> {
        // Here: links::veth_on_bridge with `peer_sandbox` set, so the
        // container end is born inside the sandbox (names::host_veth and
        // names::sandbox_ifname name the two ends).
        Err(Error::Unsupported(format!(
            "{{NAME}} does not make endpoints yet (endpoint {})",
            ep.id
        )))
    }

    fn delete_endpoint(_net: Network, _endpoint_id: String) -> Result<(), Error> {
        Ok(())
    }

    fn join(_net: Network, _ep: EndpointRequest, _sb: Option<&Sandbox>) -> Result<JoinInfo, Error> {
        Err(Error::Unsupported(
            "{{NAME}} does not join sandboxes yet".into(),
        ))
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

impl Ipam for Component {
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

impl Reconcile for Component {
    fn handle(_net: Network, _ev: Event) -> Result<Option<u32>, Error> {
        Ok(None)
    }
}
