//! netshim calico driver: Calico's network model as a WebAssembly
//! component for the `netshim:plugin@0.2.0` world. Routed /32 endpoints
//! with no bridge (proxy ARP for 169.254.1.1), IPAM blocks with node
//! affinity in the cluster store in Calico's own key layout and JSON, and
//! routes between nodes through VXLAN (`vxlan.calico`, VNI 4096, port
//! 4789) as Felix programs them, or by BGP through the node's BIRD (a
//! pool with encapsulation Never).
//!
//! - [`pool`]: the IP pool resource and its checks.
//! - [`block`], [`keys`], [`ipam`]: blocks, affinities, handles, borrowing.
//! - [`node`]: this node's record (address, VTEP, reflector cluster id).
//! - [`bgp`]: this node's BGP speaker (peers, what it announces).
//! - [`network`], [`endpoint`]: the node's side.

pub mod bgp;
pub mod block;
pub mod endpoint;
pub mod ipam;
pub mod keys;
pub mod network;
pub mod node;
pub mod pool;

use netshim_guest_sdk::guest::driver::{
    Capabilities, EndpointInfo, EndpointRequest, Guest as Driver, JoinInfo, Network, Scope,
};
use netshim_guest_sdk::guest::ipam::{Guest as Ipam, Pool, PoolRequest};
use netshim_guest_sdk::guest::reconcile::{Event, Guest as Reconcile};
use netshim_guest_sdk::host::link::Sandbox;
use netshim_guest_sdk::host::store::Condition;
use netshim_guest_sdk::host::{cluster, node as node_api};
use netshim_guest_sdk::{addr, Error, IpAddress, IpPrefix, Ipv4Net};

struct Calico;

fn pool_id(cidr: &Ipv4Net) -> String {
    format!("calico-{}", keys::dashed(cidr))
}

fn pool_of_id(id: &str) -> Result<Ipv4Net, Error> {
    id.strip_prefix("calico-")
        .and_then(keys::undashed)
        .ok_or_else(|| Error::NotFound(format!("pool {id:?} is not a calico pool")))
}

impl Driver for Calico {
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

    fn join(_net: Network, ep: EndpointRequest, sb: Option<&Sandbox>) -> Result<JoinInfo, Error> {
        endpoint::join(&ep, sb)
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
                "published ports on calico networks are not supported yet".into(),
            ))
        }
    }

    fn revoke_external_connectivity(_net: Network, _ep: EndpointRequest) -> Result<(), Error> {
        Ok(())
    }
}

impl Ipam for Calico {
    /// The IP pool: the cluster's if one exists, else the one the options
    /// describe, written for the other nodes.
    fn request_pool(req: PoolRequest) -> Result<Pool, Error> {
        if req.v6 {
            return Err(Error::Unsupported(
                "calico networks are IPv4 only here".into(),
            ));
        }
        let asked = req
            .pool
            .as_ref()
            .map(|p| addr::v4_prefix(p, "subnet"))
            .transpose()?;
        let mine = pool::from_options(&req.options, asked)?;
        let key = pool::key(pool::DEFAULT_NAME);
        let spec = match cluster::get(&key)? {
            Some(e) => {
                let theirs: pool::IpPool = serde_json::from_slice(&e.value).map_err(|e| {
                    Error::Invalid(format!(
                        "{key} (under the calico root) is not an IPPool: {e}"
                    ))
                })?;
                pool::check(&theirs.spec)?;
                let asked_for_other = theirs.spec.cidr != mine.cidr
                    || theirs.spec.block_size != mine.block_size
                    || theirs.spec.vxlan_mode != mine.vxlan_mode;
                let gave_pool_options = asked.is_some()
                    || req
                        .options
                        .iter()
                        .any(|(k, _)| ["pool", "block-size", "vxlan-mode"].contains(&k.as_str()));
                if asked_for_other && gave_pool_options {
                    return Err(Error::Invalid(format!(
                        "the cluster's pool is {} (/{} blocks, vxlan-mode {:?}), not what the options ask for; leave them out to join it",
                        theirs.spec.cidr, theirs.spec.block_size, theirs.spec.vxlan_mode
                    )));
                }
                theirs.spec
            }
            None => {
                let v = serde_json::to_vec(&pool::resource(&mine))
                    .map_err(|e| Error::Failed(e.to_string()))?;
                cluster::put(&key, &v, Condition::Absent, None)?;
                mine
            }
        };
        let node = node_api::identity().name;
        if !keys::valid_node(&node) {
            return Err(Error::Invalid(format!(
                "node name {node:?} cannot stand in Calico's keys; give --node-name"
            )));
        }
        let max_blocks = netshim_guest_sdk::options::get(&req.options, "max-blocks-per-host")
            .map(|v| {
                v.parse::<usize>()
                    .map_err(|_| Error::Invalid(format!("max-blocks-per-host: {v:?}")))
            })
            .transpose()?
            .unwrap_or(ipam::DEFAULT_MAX_BLOCKS);
        network::save_settings(&network::Settings {
            spec: spec.clone(),
            node,
            max_blocks,
            released: false,
        })?;
        cluster::claim_route_prefix(addr::wit_prefix(spec.cidr))?;
        Ok(Pool {
            id: pool_id(&spec.cidr),
            pool: addr::wit_prefix(spec.cidr),
            gateway: None,
        })
    }

    fn release_pool(pool_id: String) -> Result<(), Error> {
        network::release_settings(&pool_of_id(&pool_id)?)
    }

    fn request_address(
        pool_id: String,
        address: Option<IpAddress>,
        gateway: bool,
        _options: Vec<(String, String)>,
    ) -> Result<IpPrefix, Error> {
        if gateway {
            return Err(Error::Unsupported(
                "a calico network has no gateway address: workloads route via 169.254.1.1 on-link"
                    .into(),
            ));
        }
        let s = network::load_settings(&pool_of_id(&pool_id)?)?;
        let want = address.map(|a| addr::v4_addr(&a, "address")).transpose()?;
        let handle = format!("netshim.{}", s.node);
        let a = ipam::assign(&s.spec, &s.node, &handle, want, s.max_blocks)?;
        Ok(addr::host_prefix(a))
    }

    fn release_address(pool_id: String, address: IpAddress) -> Result<(), Error> {
        let s = network::load_settings(&pool_of_id(&pool_id)?)?;
        ipam::release(&s.spec, addr::v4_addr(&address, "address")?)
    }
}

impl Reconcile for Calico {
    fn handle(net: Network, _ev: Event) -> Result<Option<u32>, Error> {
        network::reconcile(&net)
    }
}

netshim_guest_sdk::export!(Calico);
