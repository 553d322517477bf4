//! The CNM lifecycle one step at a time, for a front-end that drives the
//! steps itself (Docker's remote driver protocol: IPAM, CreateNetwork,
//! CreateEndpoint, Join, … arrive as separate requests). Each step is one
//! guest call in its own state session: it commits, or leaves nothing.

use std::net::IpAddr;

use ipnet::IpNet;
use netshim_host_api::bindings::exports::netshim::plugin::driver as wit;
use netshim_host_api::bindings::exports::netshim::plugin::ipam;
use netshim_host_api::bindings::netshim::plugin::types::MacAddress;
use netshim_host_api::host::{from_ip, from_prefix, to_prefix};
use netshim_host_api::kernel::NsId;
use netshim_host_api::store::{Condition, Store};

use super::calls::{wit_endpoint, wit_network, Calls};
use super::ipam_check;
use super::model::{self, Endpoint, Network, PortMapping, SPACE};
use super::{get_json, now, put_json, release_netfilter, CnmError, CnmResult, Core};

/// An IPAM pool as IPAM answered.
pub struct PoolGrant {
    pub id: String,
    pub pool: IpNet,
}

fn mac_text(m: MacAddress) -> String {
    format!(
        "{:02x}:{:02x}:{:02x}:{:02x}:{:02x}:{:02x}",
        m.0, m.1, m.2, m.3, m.4, m.5
    )
}

fn parse_mac(s: &str) -> CnmResult<MacAddress> {
    let b: Vec<u8> = s
        .split(':')
        .map(|x| u8::from_str_radix(x, 16))
        .collect::<Result<_, _>>()
        .map_err(|_| CnmError::Invalid(format!("bad MAC address {s:?}")))?;
    match b.as_slice() {
        [a, b, c, d, e, f] => Ok((*a, *b, *c, *d, *e, *f)),
        _ => Err(CnmError::Invalid(format!("bad MAC address {s:?}"))),
    }
}

impl Core {
    /// Run one step: a session, the guest call(s) in `f`, a commit.
    fn step<R>(&self, driver: &str, f: impl FnOnce(&mut Calls) -> CnmResult<R>) -> CnmResult<R> {
        let s = self.store.session()?;
        let mut calls = Calls::new(self, driver, Box::new(s))?;
        match f(&mut calls) {
            Ok(r) => {
                calls.commit()?;
                Ok(r)
            }
            Err(e) => {
                for r in calls.abort() {
                    tracing::error!(error = %r, "rollback is incomplete");
                }
                Err(e)
            }
        }
    }

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
        let req = ipam::PoolRequest {
            address_space: "local".into(),
            pool: pool.map(from_prefix),
            sub_pool: sub_pool.map(from_prefix),
            options,
            v6,
        };
        self.step(driver, |c| {
            let p = c.call(Core::ipam_grant(driver), "request-pool", &[], |p, st, _| {
                p.netshim_plugin_ipam().call_request_pool(st, &req)
            })?;
            let got = to_prefix(&p.pool).map_err(|e| CnmError::Invalid(e.to_string()))?;
            let node = ipam_check::NodeFacts::read(self.kernel.as_ref())?;
            let taken = ipam_check::taken_pools(c.store())?;
            ipam_check::check_pool(driver, pool, got, &node, &taken)?;
            ipam_check::record_pool(c.store(), driver, &p.id, got)?;
            Ok(PoolGrant {
                id: p.id,
                pool: got,
            })
        })
    }

    pub fn ipam_release_pool(&self, driver: &str, pool_id: &str) -> CnmResult<()> {
        self.step(driver, |c| {
            c.call(Core::ipam_grant(driver), "release-pool", &[], |p, st, _| {
                p.netshim_plugin_ipam().call_release_pool(st, pool_id)
            })?;
            ipam_check::forget_pool(c.store(), driver, pool_id)
        })
    }

    pub fn ipam_request_address(
        &self,
        driver: &str,
        pool_id: &str,
        address: Option<IpAddr>,
        gateway: bool,
        options: Vec<(String, String)>,
    ) -> CnmResult<IpNet> {
        let want = address.map(from_ip);
        self.step(driver, |c| {
            let a = c.call(
                Core::ipam_grant(driver),
                "request-address",
                &[],
                |p, st, _| {
                    p.netshim_plugin_ipam()
                        .call_request_address(st, pool_id, want, gateway, &options)
                },
            )?;
            let got = to_prefix(&a).map_err(|e| CnmError::Invalid(e.to_string()))?;
            let pool = ipam_check::recorded_pool(c.store(), driver, pool_id)?.ok_or_else(|| {
                CnmError::NotFound(format!(
                    "pool {pool_id} of driver {driver} not found: netshim handed out no such pool"
                ))
            })?;
            ipam_check::check_address(driver, pool, address, got)?;
            Ok(got)
        })
    }

    pub fn ipam_release_address(
        &self,
        driver: &str,
        pool_id: &str,
        address: IpAddr,
    ) -> CnmResult<()> {
        self.step(driver, |c| c.release_address(driver, pool_id, address))
    }

    /// A network whose IPAM the caller already did (Docker's CreateNetwork).
    /// Creating the same id again is a no-op.
    pub fn network_register(&self, net: Network) -> CnmResult<Network> {
        {
            let mut s = self.store.session()?;
            if let Some(existing) = get_json::<Network>(&mut s, &model::network_key(&net.id))? {
                return Ok(existing);
            }
            if s.get(SPACE, &model::name_key(&net.name))?.is_some() {
                return Err(CnmError::Exists(format!(
                    "network {:?} already exists",
                    net.name
                )));
            }
        }
        let driver = net.driver.clone();
        self.step(&driver, |c| {
            self.create_network_call(c, &net)?;
            Ok(net)
        })
    }

    /// Forget a network without touching IPAM (Docker released it already).
    /// Unknown ids are fine: deletes are idempotent.
    pub fn network_unregister(&self, id: &str) -> CnmResult<()> {
        let net = {
            let mut s = self.store.session()?;
            match get_json::<Network>(&mut s, &model::network_key(id))? {
                Some(n) => n,
                None => return Ok(()),
            }
        };
        let wnet = wit_network(&net);
        let result = self.step(&net.driver, |c| {
            c.teardown(true);
            let r = c.call(self.grant(&net, true), "delete-network", &[], |p, st, _| {
                p.netshim_plugin_driver().call_delete_network(st, &wnet)
            });
            let others = Core::forget_network(c.store(), &net)?;
            Ok((r, others))
        });
        let (r, others) = result?;
        if let Some(e) = release_netfilter(self.kernel.as_ref(), &net, others) {
            tracing::warn!(error = %e, "driver table");
        }
        r
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
        let mac = mac.filter(|m| !m.is_empty()).map(parse_mac).transpose()?;
        let net = self.network_by_id(&mut self.store.session()?, network_id)?;
        let req = wit::EndpointRequest {
            id: endpoint_id.into(),
            ipv4: ipv4.map(from_prefix),
            ipv6: None,
            mac,
            ifname: "eth0".into(),
            options: Vec::new(),
            ports: Vec::new(),
        };
        let wnet = wit_network(&net);
        self.step(&net.driver, |c| {
            // dockerd resends a request after a transport error: a second
            // CreateEndpoint of the same endpoint answers like the first.
            if let Some(ep) = get_json::<Endpoint>(c.store(), &model::endpoint_key(endpoint_id))? {
                if ep.network_id != net.id {
                    return Err(CnmError::Exists(format!(
                        "endpoint {endpoint_id} exists on another network"
                    )));
                }
                return Ok(if mac.is_none() { ep.mac } else { None });
            }
            let info = c.call(
                self.grant(&net, false),
                "create-endpoint",
                &[],
                |p, st, _| {
                    p.netshim_plugin_driver()
                        .call_create_endpoint(st, &wnet, &req, None)
                },
            )?;
            let ep = Endpoint {
                id: endpoint_id.into(),
                network_id: net.id.clone(),
                netns: String::new(),
                ifname: "eth0".into(),
                ipv4,
                mac: info.mac.or(mac).map(mac_text),
                gateway: None,
                created: now(),
                container: None,
                ports: Vec::new(),
            };
            put_json(c.store(), &model::endpoint_key(&ep.id), &ep)?;
            Ok(info.mac.map(mac_text))
        })
    }

    /// Docker's Join: what dockerd should move into the sandbox.
    pub fn endpoint_join(
        &self,
        network_id: &str,
        endpoint_id: &str,
        sandbox_key: &str,
    ) -> CnmResult<wit::JoinInfo> {
        let mut s = self.store.session()?;
        let net = self.network_by_id(&mut s, network_id)?;
        let ep = self.endpoint_by_id(&mut s, endpoint_id)?;
        drop(s);
        let req = wit_endpoint(&ep, &[]);
        let wnet = wit_network(&net);
        self.step(&net.driver, |c| {
            let join = c.call(self.grant(&net, false), "join", &[], |p, st, _| {
                p.netshim_plugin_driver().call_join(st, &wnet, &req, None)
            })?;
            // dockerd moves whatever SrcName names into the container: only a
            // link this network made may be named.
            let mark = netshim_host_api::host::ownership_mark(&net.id);
            match self.kernel.link_by_name(NsId::NODE, &join.src_name) {
                Ok(Some(l)) if l.alias.as_deref() == Some(mark.as_str()) => {}
                _ => {
                    return Err(CnmError::Driver {
                        driver: net.driver.clone(),
                        kind: super::DriverErrorKind::Refused,
                        message: format!(
                            "join named interface {:?} for dockerd to move into the container, which is not a link network {} created in the node namespace",
                            netshim_host_api::guard::limits::truncate(&join.src_name, 32),
                            net.name
                        ),
                    })
                }
            }
            let mut ep = ep.clone();
            ep.netns = sandbox_key.into();
            ep.gateway = join.gateway.as_ref().map(netshim_host_api::host::to_ip);
            put_json(c.store(), &model::endpoint_key(&ep.id), &ep)?;
            Ok(join)
        })
    }

    pub fn endpoint_leave(&self, network_id: &str, endpoint_id: &str) -> CnmResult<()> {
        let net = self.network_by_id(&mut self.store.session()?, network_id)?;
        let wnet = wit_network(&net);
        self.step(&net.driver, |c| {
            c.call(self.grant(&net, false), "leave", &[], |p, st, _| {
                p.netshim_plugin_driver().call_leave(st, &wnet, endpoint_id)
            })
        })
    }

    /// Docker's DeleteEndpoint; unknown endpoints are fine (idempotent).
    pub fn endpoint_delete(&self, network_id: &str, endpoint_id: &str) -> CnmResult<()> {
        let mut s = self.store.session()?;
        let Some(net) = get_json::<Network>(&mut s, &model::network_key(network_id))? else {
            return Ok(());
        };
        if get_json::<Endpoint>(&mut s, &model::endpoint_key(endpoint_id))?.is_none() {
            return Ok(());
        }
        drop(s);
        let wnet = wit_network(&net);
        // Docker only logs a failed DeleteEndpoint and never asks again:
        // the record goes either way, the error is reported.
        let r = self.step(&net.driver, |c| {
            c.teardown(true);
            let r = c.call(
                self.grant(&net, false),
                "delete-endpoint",
                &[],
                |p, st, _| {
                    p.netshim_plugin_driver()
                        .call_delete_endpoint(st, &wnet, endpoint_id)
                },
            );
            c.store()
                .delete(SPACE, &model::endpoint_key(endpoint_id), Condition::None)?;
            Ok(r)
        })?;
        match r {
            Err(e) if super::calls::is_not_found(&e) => Ok(()),
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
        drop(s);
        if ports.is_empty() && ep.ports.is_empty() {
            return Ok(());
        }
        let revoke = ports.is_empty();
        let list = if revoke {
            ep.ports.clone()
        } else {
            ports.clone()
        };
        let req = wit_endpoint(&ep, &list);
        self.step(&net.driver, |c| {
            c.ports(&net, &req, !revoke)?;
            ep.ports = ports;
            put_json(c.store(), &model::endpoint_key(&ep.id), &ep)?;
            Ok(())
        })
    }

    /// The driver's own word on where its networks live (Docker's
    /// GetCapabilities): (scope, connectivity scope), "local" or "global".
    pub fn driver_capabilities(&self, driver: &str) -> CnmResult<(&'static str, &'static str)> {
        let caps = self.step(driver, |c| {
            c.call(
                Core::ipam_grant(driver),
                "get-capabilities",
                &[],
                |p, st, _| p.netshim_plugin_driver().call_get_capabilities(st).map(Ok),
            )
        })?;
        let name = |s: wit::Scope| match s {
            wit::Scope::Local => "local",
            wit::Scope::Global => "global",
        };
        Ok((name(caps.scope), name(caps.connectivity_scope)))
    }

    /// Operational data the driver reports for an endpoint (Docker's
    /// EndpointOperInfo), bounded: it ends up in `docker inspect`.
    pub fn endpoint_oper_info(
        &self,
        network_id: &str,
        endpoint_id: &str,
    ) -> CnmResult<Vec<(String, String)>> {
        use netshim_host_api::guard::limits::truncate;
        // dockerd asks for endpoints it is removing: unknown ones have none.
        let Some(net) =
            get_json::<Network>(&mut self.store.session()?, &model::network_key(network_id))?
        else {
            return Ok(Vec::new());
        };
        let wnet = wit_network(&net);
        let info = self.step(&net.driver, |c| {
            c.call(
                self.grant(&net, false),
                "endpoint-oper-info",
                &[],
                |p, st, _| {
                    p.netshim_plugin_driver()
                        .call_endpoint_oper_info(st, &wnet, endpoint_id)
                },
            )
        })?;
        Ok(info
            .into_iter()
            .take(OPER_INFO_ENTRIES)
            .map(|(k, v)| (truncate(&k, 128), truncate(&v, 1024)))
            .collect())
    }
}

/// Entries of a driver's endpoint-oper-info that reach dockerd.
const OPER_INFO_ENTRIES: usize = 64;
