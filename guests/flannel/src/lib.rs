//! netshim flannel driver: flannel's network model as a WebAssembly
//! component for the `netshim:plugin@0.2.0` world. Each node of a cluster
//! leases a subnet of the cluster network in the cluster store (flannel's
//! keys and JSON under `/coreos.com/network/`), puts it on a bridge, and
//! reaches the other nodes' subnets through the backend: `vxlan` or
//! `host-gw`. The node agent calls `reconcile` to keep the lease alive
//! and follow the other nodes.
//!
//! - [`config`]: flannel's configuration and lease JSON, checked.
//! - [`lease`]: this node's subnet: claim, keep, give back.
//! - [`peers`]: the kernel objects of each remote node.
//! - [`network`], [`endpoint`]: the node's side.
//!
//! Container addresses come from the SDK's IPAM in the node-local store:
//! an attach never needs the cluster store.

pub mod config;
pub mod endpoint;
pub mod lease;
pub mod network;
pub mod peers;

use netshim_guest_sdk::guest::driver::{
    Capabilities, EndpointInfo, EndpointRequest, Guest as Driver, JoinInfo, Network, Scope,
};
use netshim_guest_sdk::guest::ipam::{Guest as Ipam, Pool, PoolRequest};
use netshim_guest_sdk::guest::reconcile::{Event, Guest as Reconcile};
use netshim_guest_sdk::host::link::Sandbox;
use netshim_guest_sdk::host::store::{self, Condition};
use netshim_guest_sdk::host::{cluster, node};
use netshim_guest_sdk::{addr, Error, IpAddress, IpPrefix, Ipv4Net};

const IPAM: netshim_guest_sdk::ipam::Ipam = netshim_guest_sdk::ipam::Ipam::new("flannel");

/// Pool id → this node's subnet, to give the lease back on release-pool.
fn pool_subnet_key(pool_id: &str) -> String {
    format!("pool-subnet/{pool_id}")
}

struct Flannel;

impl Driver for Flannel {
    /// Each node holds its own network record (local data scope) and the
    /// network reaches across the cluster (global connectivity): as Docker
    /// sees it, a network created on every node, like an overlay without
    /// a cluster store of Docker's own.
    fn get_capabilities() -> Capabilities {
        Capabilities {
            scope: Scope::Local,
            connectivity_scope: Scope::Global,
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

    fn delete_endpoint(_net: Network, endpoint_id: String) -> Result<(), Error> {
        endpoint::delete(&endpoint_id)
    }

    fn join(net: Network, ep: EndpointRequest, sb: Option<&Sandbox>) -> Result<JoinInfo, Error> {
        endpoint::join(&net, &ep, sb)
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

    fn program_external_connectivity(_net: Network, ep: EndpointRequest) -> Result<(), Error> {
        if ep.ports.is_empty() {
            Ok(())
        } else {
            Err(Error::Unsupported(
                "published ports on flannel networks are not supported yet".into(),
            ))
        }
    }

    fn revoke_external_connectivity(_net: Network, _ep: EndpointRequest) -> Result<(), Error> {
        Ok(())
    }
}

impl Ipam for Flannel {
    /// The node's subnet: leased in the cluster store, then held by the
    /// node-local IPAM that hands out container addresses.
    fn request_pool(req: PoolRequest) -> Result<Pool, Error> {
        if req.v6 {
            return Err(Error::Unsupported(
                "flannel networks are IPv4 only here".into(),
            ));
        }
        let root = netshim_guest_sdk::options::get(&req.options, "etcd-prefix")
            .map(|v| v.trim_end_matches('/').to_string())
            .unwrap_or_else(|| "/coreos.com/network".into());
        let config = cluster::get(config::CONFIG_KEY)?.map(|e| e.value);
        let public_ip = node::identity()
            .underlay_address
            .and_then(|p| addr::v4_prefix(&p, "underlay").ok())
            .map(|n| n.addr());
        let s = config::settings(config.as_deref(), &req.options, &root, public_ip)?;
        if let Some(asked) = &req.pool {
            let asked = addr::v4_prefix(asked, "subnet")?;
            if asked.trunc() != s.network {
                return Err(Error::Invalid(format!(
                    "--subnet {asked} is not the cluster network {}: leave --subnet out (each node leases a subnet of it)",
                    s.network
                )));
            }
        }
        let subnet = lease::acquire(&s)?;
        network::save_settings(&subnet, &s)?;
        cluster::claim_route_prefix(addr::wit_prefix(s.network))?;
        let pool = IPAM.request_pool(&PoolRequest {
            pool: Some(addr::wit_prefix(subnet)),
            sub_pool: None,
            ..req
        })?;
        store::put(
            &pool_subnet_key(&pool.id),
            subnet.to_string().as_bytes(),
            Condition::None,
            None,
        )?;
        Ok(pool)
    }

    fn release_pool(pool_id: String) -> Result<(), Error> {
        let subnet = store::get(&pool_subnet_key(&pool_id))?
            .and_then(|e| String::from_utf8(e.value).ok())
            .and_then(|t| t.parse::<Ipv4Net>().ok());
        if let Some(subnet) = subnet {
            if let Ok(s) = network::load_settings(&subnet) {
                lease::release(&s, subnet)?;
            }
            store::delete(&network::settings_key(&subnet), Condition::None)?;
            store::delete(&pool_subnet_key(&pool_id), Condition::None)?;
        }
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

impl Reconcile for Flannel {
    fn handle(net: Network, _ev: Event) -> Result<Option<u32>, Error> {
        network::reconcile(&net)
    }
}

netshim_guest_sdk::export!(Flannel);
