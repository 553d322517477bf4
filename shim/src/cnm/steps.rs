//! The CNM lifecycle one step at a time, for a front-end that drives the
//! steps itself (Docker's remote driver protocol: IPAM, CreateNetwork,
//! CreateEndpoint, Join, … arrive as separate requests). Each step is one
//! transaction of the lifecycle: it commits, or leaves nothing.

use std::net::IpAddr;

use ipnet::IpNet;
use netshim_host_api::guard::limits::truncate;
use netshim_host_api::host::ownership_mark;
use netshim_host_api::kernel::NsId;
use netshim_host_api::store::{Condition, Store};

use super::calls::{is_not_found, Calls};
use super::driver::{EndpointSpec, Join, Mac, PoolAsk, Scope};
use super::lifecycle::{forget_endpoint, save_endpoint, spec_of, PoolGrant};
use super::model::{self, Endpoint, Network, Pending, PortMapping, SPACE};
use super::ops::retry_raced;
use super::{get_json, ipam_check, now, release_netfilter, CnmError, CnmResult, Core};

/// Entries of a driver's endpoint-oper-info that reach dockerd.
const OPER_INFO_ENTRIES: usize = 64;

impl Core {
    fn network_by_id(&self, s: &mut dyn Store, id: &str) -> CnmResult<Network> {
        get_json(s, &model::network_key(id))?
            .ok_or_else(|| CnmError::NotFound(format!("network {id} not found")))
    }

    fn endpoint_by_id(&self, s: &mut dyn Store, id: &str) -> CnmResult<Endpoint> {
        get_json(s, &model::endpoint_key(id))?
            .ok_or_else(|| CnmError::NotFound(format!("endpoint {id} not found")))
    }

    pub fn ipam_request_pool(
        &self,
        driver: &str,
        pool: Option<IpNet>,
        sub_pool: Option<IpNet>,
        options: Vec<(String, String)>,
        v6: bool,
    ) -> CnmResult<PoolGrant> {
        let ask = PoolAsk {
            pool,
            sub_pool,
            options,
            v6,
        };
        retry_raced("RequestPool", || self.request_pool_once(driver, &ask))
    }

    fn request_pool_once(&self, driver: &str, ask: &PoolAsk) -> CnmResult<PoolGrant> {
        self.transaction(driver, "RequestPool", |c| {
            let grant = self.take_pool(c, ask)?;
            if let Some((_, prefix)) = ask
                .options
                .iter()
                .rev()
                .find(|(k, _)| k == super::ETCD_PREFIX_OPTION)
            {
                c.store().put(
                    SPACE,
                    &model::pool_prefix_key(driver, &grant.id),
                    prefix.as_bytes(),
                    Condition::None,
                    None,
                )?;
            }
            // Kept with the pool until CreateNetwork names it.
            if let Some(list) = self.checked_claims(c, grant.pool)? {
                c.store().put(
                    SPACE,
                    &model::claims_key(driver, &grant.id),
                    list.as_bytes(),
                    Condition::None,
                    None,
                )?;
            }
            Ok(grant)
        })
    }

    pub fn ipam_release_pool(&self, driver: &str, pool_id: &str) -> CnmResult<()> {
        retry_raced(pool_id, || self.release_pool_once(driver, pool_id))
    }

    fn release_pool_once(&self, driver: &str, pool_id: &str) -> CnmResult<()> {
        self.transaction(driver, "ReleasePool", |c| {
            let options: Vec<(String, String)> = c
                .store()
                .get(SPACE, &model::pool_prefix_key(driver, pool_id))?
                .map(|e| {
                    vec![(
                        super::ETCD_PREFIX_OPTION.to_string(),
                        String::from_utf8_lossy(&e.value).into_owned(),
                    )]
                })
                .unwrap_or_default();
            self.give_back_pool(c, pool_id, &options)
        })
    }

    pub fn ipam_request_address(
        &self,
        driver: &str,
        pool_id: &str,
        address: Option<IpAddr>,
        gateway: bool,
        options: Vec<(String, String)>,
    ) -> CnmResult<Option<IpNet>> {
        retry_raced(pool_id, || {
            self.request_address_once(driver, pool_id, address, gateway, &options)
        })
    }

    fn request_address_once(
        &self,
        driver: &str,
        pool_id: &str,
        address: Option<IpAddr>,
        gateway: bool,
        options: &[(String, String)],
    ) -> CnmResult<Option<IpNet>> {
        self.transaction(driver, "RequestAddress", |c| {
            let pool = ipam_check::recorded_pool(c.store(), driver, pool_id)?.ok_or_else(|| {
                CnmError::NotFound(format!(
                    "pool {pool_id} of driver {driver} not found: netshim handed out no such pool"
                ))
            })?;
            self.place_pool_subtree(c, driver, pool_id)?;
            if gateway {
                self.take_gateway(c, pool_id, pool, address, options)
            } else {
                self.take_address(c, pool_id, pool, address, false, options)
                    .map(Some)
            }
        })
    }

    pub fn ipam_release_address(
        &self,
        driver: &str,
        pool_id: &str,
        address: IpAddr,
    ) -> CnmResult<()> {
        retry_raced(pool_id, || {
            self.transaction(driver, "ReleaseAddress", |c| {
                self.place_pool_subtree(c, driver, pool_id)?;
                c.release_address(pool_id, address)
            })
        })
    }

    /// Docker's address calls name only the pool: reach the subtree the
    /// pool was asked for under.
    fn place_pool_subtree(&self, c: &mut Calls, driver: &str, pool_id: &str) -> CnmResult<()> {
        if let Some(e) = c
            .store()
            .get(SPACE, &model::pool_prefix_key(driver, pool_id))?
        {
            let prefix = String::from_utf8_lossy(&e.value).into_owned();
            c.place_subtree(&[(super::ETCD_PREFIX_OPTION.to_string(), prefix)]);
        }
        Ok(())
    }

    /// A network whose IPAM the caller already did (Docker's CreateNetwork).
    /// Creating the same id again is a no-op. Like every Docker step that
    /// decides cluster state, it is tried again (up to 8 times) when another
    /// node's write raced it, after a complete undo.
    pub fn network_register(&self, net: Network) -> CnmResult<Network> {
        retry_raced(&net.id, || self.network_register_once(net.clone()))
    }

    fn network_register_once(&self, mut net: Network) -> CnmResult<Network> {
        let mut s = self.store.session()?;
        if let Some(existing) = get_json::<Network>(&mut s, &model::network_key(&net.id))? {
            return Ok(existing);
        }
        let granted = net
            .options
            .iter()
            .any(|(k, _)| k == super::ipam_check::ROUTE_PREFIXES_OPTION);
        if !granted {
            for p in net.ipv4.clone() {
                if let Some(e) = s.get(SPACE, &model::claims_key(&net.driver, &p.id))? {
                    let list = String::from_utf8_lossy(&e.value).into_owned();
                    net.options
                        .push((super::ipam_check::ROUTE_PREFIXES_OPTION.to_string(), list));
                }
            }
        }
        if s.get(SPACE, &model::name_key(&net.name))?.is_some() {
            return Err(CnmError::Exists(format!(
                "network {:?} already exists",
                net.name
            )));
        }
        self.guest(&net.driver)?;
        let pending = Pending::CreateNetwork {
            network: net.clone(),
        };
        self.transaction_pending(
            Box::new(s),
            &pending,
            &net.driver.clone(),
            "CreateNetwork",
            |c| {
                self.create_network_step(c, &net)?;
                Ok(net)
            },
        )
    }

    /// Forget a network without touching IPAM (Docker released it already).
    /// Unknown ids are fine: deletes are idempotent.
    pub fn network_unregister(&self, id: &str) -> CnmResult<()> {
        retry_raced(id, || self.network_unregister_once(id))
    }

    fn network_unregister_once(&self, id: &str) -> CnmResult<()> {
        let mut s = self.store.session()?;
        let Some(net) = get_json::<Network>(&mut s, &model::network_key(id))? else {
            return Ok(());
        };
        let mut errors = Vec::new();
        let pending = Pending::RemoveNetwork {
            network_id: net.id.clone(),
            ipam: false,
        };
        self.transaction_pending(Box::new(s), &pending, &net.driver, "DeleteNetwork", |c| {
            let others = self.delete_network_step(c, &net, &mut errors)?;
            if let Some(e) = release_netfilter(self.kernel.as_ref(), &net, others) {
                tracing::warn!(error = %e, "driver table");
            }
            Ok(())
        })?;
        if errors.is_empty() {
            Ok(())
        } else {
            Err(CnmError::Teardown(errors))
        }
    }

    /// Docker's CreateEndpoint: the interface is made in the node namespace
    /// (dockerd moves it). Returns the MAC when the caller gave none.
    pub fn endpoint_create(
        &self,
        network_id: &str,
        endpoint_id: &str,
        ipv4: Option<IpNet>,
        mac: Option<&str>,
    ) -> CnmResult<Option<String>> {
        let mac = mac
            .filter(|m| !m.is_empty())
            .map(str::parse::<Mac>)
            .transpose()?;
        let mut s = self.store.session()?;
        let net = self.network_by_id(&mut s, network_id)?;
        // dockerd resends a request after a transport error: a second
        // CreateEndpoint of the same endpoint answers like the first.
        if let Some(ep) = get_json::<Endpoint>(&mut s, &model::endpoint_key(endpoint_id))? {
            if ep.network_id != net.id {
                return Err(CnmError::Exists(format!(
                    "endpoint {endpoint_id} exists on another network"
                )));
            }
            return Ok(if mac.is_none() { ep.mac } else { None });
        }
        let spec = EndpointSpec {
            id: endpoint_id.into(),
            ipv4,
            mac,
            ifname: "eth0".into(),
            ports: Vec::new(),
        };
        self.guest(&net.driver)?;
        let pending = Pending::CreateEndpoint {
            network_id: net.id.clone(),
            endpoint_id: endpoint_id.into(),
        };
        self.transaction_pending(Box::new(s), &pending, &net.driver, "CreateEndpoint", |c| {
            let chosen = c.create_endpoint(&net, &spec, None)?;
            let ep = Endpoint {
                id: endpoint_id.into(),
                network_id: net.id.clone(),
                netns: String::new(),
                ifname: spec.ifname.clone(),
                ipv4,
                mac: chosen.or(mac).map(|m| m.to_string()),
                gateway: None,
                created: now(),
                container: None,
                ports: Vec::new(),
            };
            save_endpoint(c.store(), &ep)?;
            Ok(chosen.map(|m| m.to_string()))
        })
    }

    /// Docker's Join: what dockerd should move into the sandbox.
    pub fn endpoint_join(
        &self,
        network_id: &str,
        endpoint_id: &str,
        sandbox_key: &str,
    ) -> CnmResult<Join> {
        let mut s = self.store.session()?;
        let net = self.network_by_id(&mut s, network_id)?;
        let mut ep = self.endpoint_by_id(&mut s, endpoint_id)?;
        self.transaction_in(Box::new(s), &net.driver, "Join", |c| {
            let join = c.join(&net, &spec_of(&ep, &[]), None)?;
            // dockerd moves whatever SrcName names into the container: only a
            // link this network made may be named.
            let mark = ownership_mark(&net.id);
            match self.kernel.link_by_name(NsId::NODE, &join.src_name) {
                Ok(Some(l)) if l.alias.as_deref() == Some(mark.as_str()) => {}
                _ => {
                    return Err(CnmError::Driver {
                        driver: net.driver.clone(),
                        kind: super::DriverErrorKind::Refused,
                        message: format!(
                            "join named interface {:?} for dockerd to move into the container, which is not a link network {} created in the node namespace",
                            truncate(&join.src_name, 32),
                            net.name
                        ),
                    })
                }
            }
            // dockerd installs these in the container: they stay inside what
            // the network may route, as the CLI's do.
            crate::sandbox::check_static_routes(&join, &self.grant(&net, false).route_prefixes)?;
            ep.netns = sandbox_key.into();
            ep.gateway = join.gateway;
            save_endpoint(c.store(), &ep)?;
            Ok(join)
        })
    }

    pub fn endpoint_leave(&self, network_id: &str, endpoint_id: &str) -> CnmResult<()> {
        let mut s = self.store.session()?;
        let net = self.network_by_id(&mut s, network_id)?;
        self.transaction_in(Box::new(s), &net.driver, "Leave", |c| {
            c.leave(&net, endpoint_id)
        })
    }

    /// Docker's DeleteEndpoint; unknown endpoints are fine (idempotent).
    /// Docker only logs a failed DeleteEndpoint and never asks again: the
    /// record goes either way, the error is reported.
    pub fn endpoint_delete(&self, network_id: &str, endpoint_id: &str) -> CnmResult<()> {
        let mut s = self.store.session()?;
        let Some(net) = get_json::<Network>(&mut s, &model::network_key(network_id))? else {
            return Ok(());
        };
        let Some(ep) = get_json::<Endpoint>(&mut s, &model::endpoint_key(endpoint_id))? else {
            return Ok(());
        };
        let pending = Pending::RemoveEndpoint {
            endpoint_id: endpoint_id.into(),
            ipam: false,
        };
        let deleted =
            self.transaction_pending(Box::new(s), &pending, &net.driver, "DeleteEndpoint", |c| {
                c.teardown(true);
                let deleted = c.delete_endpoint(&net, endpoint_id);
                forget_endpoint(c.store(), &ep)?;
                Ok(deleted)
            })?;
        match deleted {
            Err(e) if is_not_found(&e) => Ok(()),
            other => other,
        }
    }

    /// Publish (or, with an empty list, withdraw) an endpoint's ports.
    pub fn endpoint_ports(
        &self,
        network_id: &str,
        endpoint_id: &str,
        ports: Vec<PortMapping>,
    ) -> CnmResult<()> {
        let mut s = self.store.session()?;
        // Withdrawing from what does not exist is done already.
        let net = match get_json::<Network>(&mut s, &model::network_key(network_id))? {
            Some(n) => n,
            None if ports.is_empty() => return Ok(()),
            None => {
                return Err(CnmError::NotFound(format!(
                    "network {network_id} not found"
                )))
            }
        };
        let Some(mut ep) = get_json::<Endpoint>(&mut s, &model::endpoint_key(endpoint_id))? else {
            return if ports.is_empty() {
                Ok(())
            } else {
                Err(CnmError::NotFound(format!(
                    "endpoint {endpoint_id} not found"
                )))
            };
        };
        if ports.is_empty() && ep.ports.is_empty() {
            return Ok(());
        }
        let publish = !ports.is_empty();
        let spec = spec_of(&ep, if publish { &ports } else { &ep.ports });
        if publish {
            // Recorded before any rule exists: a process that dies while
            // programming leaves an endpoint whose record names these ports,
            // so DeleteEndpoint (or a detach) withdraws them.
            let mut pending = ep.clone();
            pending.ports.extend(ports.iter().cloned());
            super::put_json(&mut s, &model::endpoint_key(&ep.id), &pending)?;
            s.checkpoint()?;
        }
        let before = ep.clone();
        let ports_asked = ports.clone();
        let outcome = self.run_transaction(Box::new(s), &net.driver, "ExternalConnectivity", |c| {
            c.ports(&net, &spec, publish)?;
            ep.ports = ports;
            save_endpoint(c.store(), &ep)
        });
        match outcome {
            Ok(()) => Ok(()),
            Err((e, undone)) => {
                if publish && undone {
                    // No rule of this request is left: the record says so,
                    // unless another request changed (or removed) the
                    // endpoint in between.
                    let mut s = self.store.session()?;
                    let now: Option<Endpoint> = get_json(&mut s, &model::endpoint_key(&before.id))?;
                    let mut pending = before.clone();
                    pending.ports.extend(ports_asked.iter().cloned());
                    if now.as_ref() == Some(&pending) {
                        save_endpoint(&mut s, &before)?;
                        s.commit()?;
                    }
                }
                Err(e)
            }
        }
    }

    /// The driver's own word on where its networks live (Docker's
    /// GetCapabilities): (scope, connectivity scope).
    pub fn driver_capabilities(&self, driver: &str) -> CnmResult<(Scope, Scope)> {
        let known = self
            .capabilities
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .get(driver)
            .copied();
        if let Some(caps) = known {
            return Ok(caps);
        }
        let caps = self.transaction(driver, "GetCapabilities", |c| c.capabilities())?;
        self.capabilities
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .insert(driver.to_string(), caps);
        Ok(caps)
    }

    /// Operational data the driver reports for an endpoint (Docker's
    /// EndpointOperInfo), bounded: it ends up in `docker inspect`.
    pub fn endpoint_oper_info(
        &self,
        network_id: &str,
        endpoint_id: &str,
    ) -> CnmResult<Vec<(String, String)>> {
        let mut s = self.store.session()?;
        // dockerd asks for endpoints it is removing: unknown ones have none.
        let Some(net) = get_json::<Network>(&mut s, &model::network_key(network_id))? else {
            return Ok(Vec::new());
        };
        let info = self.transaction_in(Box::new(s), &net.driver, "EndpointOperInfo", |c| {
            c.oper_info(&net, endpoint_id)
        })?;
        Ok(info
            .into_iter()
            .take(OPER_INFO_ENTRIES)
            .map(|(k, v)| (truncate(&k, 128), truncate(&v, 1024)))
            .collect())
    }
}
