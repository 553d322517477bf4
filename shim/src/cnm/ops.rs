//! The CNM operations: network create/rm, attach, detach.

use std::path::Path;

use netshim_host_api::bindings::exports::netshim::plugin::driver as wit;
use netshim_host_api::bindings::exports::netshim::plugin::ipam;
use netshim_host_api::host::{from_ip, from_prefix, ownership_mark, to_ip, to_prefix};
use netshim_host_api::kernel::NsId;
use netshim_host_api::store::{Condition, Store};
use wasmtime::component::Resource;

use super::calls::{is_not_found, wit_endpoint, wit_network, wit_port, Calls};
use super::ipam_check;
use super::model::{self, Endpoint, Network, Pool, SPACE};
use super::{
    check_name, get_json, now, put_json, random_id, release_netfilter, Attach, CnmError, CnmResult,
    Core, CreateNetwork, DetachTarget,
};
use crate::sandbox;

/// A namespace opened for one operation, closed again whatever happens.
struct OpenNs<'a> {
    core: &'a Core,
    ns: NsId,
}

impl Drop for OpenNs<'_> {
    fn drop(&mut self) {
        self.core.kernel.close_ns(self.ns);
    }
}

fn to_cnm(e: impl std::fmt::Display) -> CnmError {
    CnmError::Invalid(e.to_string())
}

impl Core {
    pub fn network_create(&self, req: CreateNetwork) -> CnmResult<Network> {
        check_name(&req.name)?;
        if let (Some(gw), Some(subnet)) = (req.gateway, req.subnet) {
            if !subnet.contains(&gw) {
                return Err(CnmError::Invalid(format!(
                    "gateway {gw} is not inside subnet {subnet}"
                )));
            }
        }
        if req.gateway.is_some() && req.subnet.is_none() {
            return Err(CnmError::Invalid("--gateway needs --subnet".into()));
        }
        let mut s = self.store.session()?;
        if s.get(SPACE, &model::name_key(&req.name))?.is_some() {
            return Err(CnmError::Exists(format!(
                "network {:?} already exists",
                req.name
            )));
        }
        let mut calls = Calls::new(self, &req.driver, Box::new(s))?;
        match self.create_steps(&mut calls, &req) {
            Ok(net) => {
                calls.commit()?;
                Ok(net)
            }
            Err(e) => {
                for r in calls.abort() {
                    tracing::error!(error = %r, "rollback of network create is incomplete");
                }
                Err(e)
            }
        }
    }

    fn create_steps(&self, calls: &mut Calls, req: &CreateNetwork) -> CnmResult<Network> {
        let driver = req.driver.clone();
        let pool_req = ipam::PoolRequest {
            address_space: "local".into(),
            pool: req.subnet.map(from_prefix),
            sub_pool: None,
            options: Vec::new(),
            v6: false,
        };
        let pool = calls.call(
            Core::ipam_grant(&driver),
            "request-pool",
            &[],
            |p, st, _| p.netshim_plugin_ipam().call_request_pool(st, &pool_req),
        )?;
        let subnet = to_prefix(&pool.pool).map_err(|_| CnmError::Driver {
            driver: driver.clone(),
            kind: super::DriverErrorKind::Refused,
            message: "request-pool returned a bad prefix".into(),
        })?;
        let node = ipam_check::NodeFacts::read(self.kernel.as_ref())?;
        let taken = ipam_check::taken_pools(calls.store())?;
        ipam_check::check_pool(&driver, req.subnet, subnet, &node, &taken)?;
        let gw_req = req.gateway.map(from_ip);
        let gateway = match pool.gateway {
            Some(g) => g,
            None => calls.call(
                Core::ipam_grant(&driver),
                "request-address",
                &[],
                |p, st, _| {
                    p.netshim_plugin_ipam().call_request_address(
                        st,
                        &pool.id,
                        gw_req,
                        true,
                        &Vec::new(),
                    )
                },
            )?,
        };
        let gateway = to_prefix(&gateway).map_err(to_cnm)?;
        ipam_check::check_address(&driver, subnet, req.gateway, gateway)?;
        let net = Network {
            id: random_id(),
            name: req.name.clone(),
            driver: driver.clone(),
            internal: req.internal,
            options: req.options.clone(),
            ipv4: vec![Pool {
                id: pool.id.clone(),
                subnet,
                gateway: Some(gateway),
            }],
            created: now(),
        };
        self.create_network_call(calls, &net)?;
        Ok(net)
    }

    /// The driver's create-network, then the network's records.
    pub(super) fn create_network_call(&self, calls: &mut Calls, net: &Network) -> CnmResult<()> {
        if net
            .options
            .iter()
            .any(|(k, _)| k == ipam_check::ROUTE_PREFIXES_OPTION)
        {
            let node = ipam_check::NodeFacts::read(self.kernel.as_ref())?;
            ipam_check::route_prefixes(&net.options, Some(&node))?;
        }
        let wnet = wit_network(net);
        calls.call(self.grant(net, true), "create-network", &[], |p, st, _| {
            p.netshim_plugin_driver().call_create_network(st, &wnet)
        })?;
        let s = calls.store();
        put_json(s, &model::network_key(&net.id), net)?;
        s.put(
            SPACE,
            &model::name_key(&net.name),
            net.id.as_bytes(),
            Condition::Absent,
            None,
        )?;
        Ok(())
    }

    /// Remove a network's records; true when other networks of its driver
    /// remain (so the driver's nftables table must stay).
    pub(super) fn forget_network(s: &mut dyn Store, net: &Network) -> CnmResult<bool> {
        s.delete(SPACE, &model::network_key(&net.id), Condition::None)?;
        s.delete(SPACE, &model::name_key(&net.name), Condition::None)?;
        Ok(s.list(SPACE, "networks/")?
            .into_iter()
            .filter_map(|e| serde_json::from_slice::<Network>(&e.value).ok())
            .any(|n| n.driver == net.driver))
    }

    /// Remove a network that has no endpoints. Keeps going past driver
    /// errors and reports them all; the network is gone afterwards.
    pub fn network_rm(&self, name_or_id: &str) -> CnmResult<Network> {
        let mut s = self.store.session()?;
        let net = self.find_network(&mut s, name_or_id)?;
        let eps = self.endpoints_of(&mut s, &net.id)?;
        if !eps.is_empty() {
            return Err(CnmError::Invalid(format!(
                "network {} has {} endpoint(s) attached; detach them first (`netshim detach --network {} --netns PATH`)",
                net.name,
                eps.len(),
                net.name
            )));
        }
        let mut calls = Calls::new(self, &net.driver, Box::new(s))?;
        calls.teardown(true);
        let mut errors = Vec::new();
        let wnet = wit_network(&net);
        if let Err(e) = calls.call(self.grant(&net, true), "delete-network", &[], |p, st, _| {
            p.netshim_plugin_driver().call_delete_network(st, &wnet)
        }) {
            errors.push(e.to_string());
        }
        for pool in &net.ipv4 {
            if let Some(gw) = pool.gateway {
                if let Err(e) = calls.release_address(&net.driver, &pool.id, gw.addr()) {
                    errors.push(e.to_string());
                }
            }
            if let Err(e) = calls.call(
                Core::ipam_grant(&net.driver),
                "release-pool",
                &[],
                |p, st, _| p.netshim_plugin_ipam().call_release_pool(st, &pool.id),
            ) {
                errors.push(e.to_string());
            }
        }
        let others = Core::forget_network(calls.store(), &net)?;
        calls.commit()?;
        errors.extend(release_netfilter(self.kernel.as_ref(), &net, others));
        if errors.is_empty() {
            Ok(net)
        } else {
            Err(CnmError::Teardown(errors))
        }
    }

    /// Attach a sandbox to a network. Idempotent: attaching a sandbox that
    /// is already attached returns the existing endpoint.
    pub fn attach(&self, req: Attach) -> CnmResult<Endpoint> {
        let netns = req
            .netns
            .to_str()
            .ok_or_else(|| CnmError::Invalid(format!("netns path {:?} is not UTF-8", req.netns)))?
            .to_string();
        if !req.netns.exists() {
            return Err(CnmError::NotFound(format!(
                "network namespace {netns} does not exist"
            )));
        }
        let mut s = self.store.session()?;
        let net = self.find_network(&mut s, &req.network)?;
        // Attaching what is already attached returns it (idempotent). An
        // endpoint of the same sandbox path for another container, or of the
        // same container in another sandbox, is stale: a runtime died before
        // poststop and a path (/proc/PID/ns/net) or an id was reused.
        let mut stale = Vec::new();
        let mut keys = vec![model::sandbox_key(&net.id, &netns)];
        keys.extend(
            req.container
                .iter()
                .map(|c| model::container_key(c, &net.id)),
        );
        for key in keys {
            if let Some(ep) = self.endpoint_at(&mut s, &key)? {
                // A /proc/PID path names a process: another container there
                // means the PID was reused. A named namespace may be shared
                // (a pod): its endpoint serves every container in it.
                let reused_pid = netns.starts_with("/proc/")
                    && ep.container.is_some()
                    && ep.container != req.container;
                if ep.netns == netns && !reused_pid {
                    return Ok(ep);
                }
                stale.push(ep.id);
            }
        }
        if !stale.is_empty() {
            drop(s);
            for id in stale {
                tracing::info!(endpoint = %id, "removing a stale endpoint before attaching");
                if let Err(e) = self.detach(DetachTarget::Endpoint(id)) {
                    tracing::warn!(error = %e, "stale endpoint teardown was incomplete");
                }
            }
            s = self.store.session()?;
        }
        // Intent first: if this process dies halfway (a runtime's
        // hook timeout, SIGKILL), the next attach of this sandbox knows which
        // endpoint it was making and removes what was made of it. Kernel
        // objects may lack their ownership mark then (the kernel takes a
        // link's alias only after creating it).
        // What can fail before any kernel work fails before the intent.
        self.guest(&net.driver)?;
        let ns = OpenNs {
            core: self,
            ns: self.kernel.open_ns(&req.netns)?,
        };
        if self.kernel.ns_identity(ns.ns)? == self.kernel.ns_identity(NsId::NODE)? {
            return Err(CnmError::Invalid(format!(
                "{} is the node's own network namespace; a sandbox must be a container's namespace (the driver would be handed the node)",
                req.netns.display()
            )));
        }
        let intent_key = model::intent_key(&net.id, &netns);
        let unfinished: Option<model::Intent> = get_json(&mut s, &intent_key)?;
        let intent = model::Intent {
            endpoint_id: random_id(),
            ifname: req.ifname.clone(),
        };
        put_json(&mut s, &intent_key, &intent)?;
        s.checkpoint()?;

        let mut calls = Calls::new(self, &net.driver, Box::new(s))?;
        let result = match &unfinished {
            Some(old) => self.finish_unfinished(&mut calls, &net, old, ns.ns),
            None => sandbox::clear_stale(
                self.kernel.as_ref(),
                ns.ns,
                &req.ifname,
                &ownership_mark(&net.id),
            )
            .map_err(CnmError::from),
        }
        .and_then(|_| {
            self.attach_steps(&mut calls, &net, &req, &netns, ns.ns, &intent.endpoint_id)
        });
        match result {
            Ok(ep) => {
                calls.store().delete(SPACE, &intent_key, Condition::None)?;
                calls.commit()?;
                Ok(ep)
            }
            Err(e) => {
                for r in calls.abort() {
                    tracing::error!(error = %r, "rollback of attach is incomplete");
                }
                let mut s = self.store.session()?;
                s.delete(SPACE, &intent_key, Condition::None)?;
                s.commit()?;
                Err(e)
            }
        }
    }

    /// Remove what an interrupted attach made: the driver's endpoint (its
    /// veth, its port rules) and the interface it was putting into the
    /// sandbox, marked or not. Nothing of it was committed, so IPAM is clean.
    fn finish_unfinished(
        &self,
        calls: &mut Calls,
        net: &Network,
        old: &model::Intent,
        ns: NsId,
    ) -> CnmResult<()> {
        tracing::info!(endpoint = %old.endpoint_id, "cleaning up an attach that was interrupted");
        let wnet = wit_network(net);
        calls.teardown(true);
        let cleanup = calls.call(
            self.grant(net, false),
            "delete-endpoint",
            &[],
            |p, st, _| {
                p.netshim_plugin_driver()
                    .call_delete_endpoint(st, &wnet, &old.endpoint_id)
            },
        );
        calls.teardown(false);
        if let Err(e) = cleanup {
            // An unmarked veth is not the driver's to delete; the sandbox
            // end below takes it with it.
            tracing::debug!(error = %e, "driver cleanup of the interrupted endpoint");
        }
        sandbox::remove(
            self.kernel.as_ref(),
            ns,
            &old.ifname,
            &ownership_mark(&net.id),
        )?;
        Ok(())
    }

    fn attach_steps(
        &self,
        calls: &mut Calls,
        net: &Network,
        req: &Attach,
        netns: &str,
        ns: NsId,
        endpoint_id: &str,
    ) -> CnmResult<Endpoint> {
        let pool = net
            .ipv4
            .first()
            .ok_or_else(|| CnmError::Invalid(format!("network {} has no IPv4 pool", net.name)))?;
        let want = req.ip.map(from_ip);
        let address = calls.call(
            Core::ipam_grant(&net.driver),
            "request-address",
            &[],
            |p, st, _| {
                p.netshim_plugin_ipam()
                    .call_request_address(st, &pool.id, want, false, &Vec::new())
            },
        )?;
        let ipv4 = to_prefix(&address).map_err(to_cnm)?;
        ipam_check::check_address(&net.driver, pool.subnet, req.ip, ipv4)?;
        let ep_req = wit::EndpointRequest {
            id: endpoint_id.to_string(),
            ipv4: Some(address),
            ipv6: None,
            mac: None,
            ifname: req.ifname.clone(),
            options: Vec::new(),
            ports: req.ports.iter().map(wit_port).collect(),
        };
        let wnet = wit_network(net);
        let sb: [(NsId, &Path); 1] = [(ns, req.netns.as_path())];
        let info = calls.call(
            self.grant(net, false),
            "create-endpoint",
            &sb,
            |p, st, h| {
                p.netshim_plugin_driver().call_create_endpoint(
                    st,
                    &wnet,
                    &ep_req,
                    Some(Resource::new_borrow(h[0].rep())),
                )
            },
        )?;
        let join = calls.call(self.grant(net, false), "join", &sb, |p, st, h| {
            p.netshim_plugin_driver().call_join(
                st,
                &wnet,
                &ep_req,
                Some(Resource::new_borrow(h[0].rep())),
            )
        })?;
        let gateway = join.gateway.as_ref().map(to_ip);
        sandbox::check_static_routes(&join, &self.grant(net, false).route_prefixes)?;
        sandbox::configure(
            self.kernel.as_ref(),
            ns,
            &ownership_mark(&net.id),
            &join,
            &req.ifname,
            Some(ipv4),
        )?;
        let mac = info.mac.map(|m| {
            format!(
                "{:02x}:{:02x}:{:02x}:{:02x}:{:02x}:{:02x}",
                m.0, m.1, m.2, m.3, m.4, m.5
            )
        });
        let ep = Endpoint {
            id: ep_req.id.clone(),
            network_id: net.id.clone(),
            netns: netns.to_string(),
            ifname: req.ifname.clone(),
            ipv4: Some(ipv4),
            mac,
            gateway,
            created: now(),
            container: req.container.clone(),
            ports: req.ports.clone(),
        };
        if !req.ports.is_empty() {
            calls.ports(net, &ep_req, true)?;
        }
        let s = calls.store();
        if let Some(cid) = &ep.container {
            s.put(
                SPACE,
                &model::container_key(cid, &net.id),
                ep.id.as_bytes(),
                Condition::None,
                None,
            )?;
        }
        put_json(s, &model::endpoint_key(&ep.id), &ep)?;
        s.put(
            SPACE,
            &model::sandbox_key(&net.id, netns),
            ep.id.as_bytes(),
            Condition::None,
            None,
        )?;
        Ok(ep)
    }

    /// The endpoint an index key points at, if both exist.
    fn endpoint_at(&self, s: &mut dyn Store, index: &str) -> CnmResult<Option<Endpoint>> {
        match s.get(SPACE, index)? {
            None => Ok(None),
            Some(id) => {
                get_json::<Endpoint>(s, &model::endpoint_key(&String::from_utf8_lossy(&id.value)))
            }
        }
    }

    /// Every endpoint of a container, on any network.
    pub fn container_endpoints(&self, container: &str) -> CnmResult<Vec<Endpoint>> {
        let mut s = self.store.session()?;
        let mut eps = Vec::new();
        for e in s.list(SPACE, &format!("containers/{container}/"))? {
            if let Some(ep) = get_json::<Endpoint>(
                &mut s,
                &model::endpoint_key(&String::from_utf8_lossy(&e.value)),
            )? {
                eps.push(ep);
            }
        }
        Ok(eps)
    }

    /// Detach a container from every network it is on, newest first;
    /// keeps going past errors and reports them all.
    pub fn detach_container(&self, container: &str) -> CnmResult<Vec<Endpoint>> {
        let mut eps = self.container_endpoints(container)?;
        eps.sort_by_key(|e| std::cmp::Reverse(e.created));
        let mut done = Vec::new();
        let mut errors = Vec::new();
        for ep in eps {
            match self.detach(DetachTarget::Endpoint(ep.id.clone())) {
                Ok(ep) => done.push(ep),
                Err(CnmError::Teardown(e)) => errors.extend(e),
                Err(e) => errors.push(e.to_string()),
            }
        }
        if errors.is_empty() {
            Ok(done)
        } else {
            Err(CnmError::Teardown(errors))
        }
    }

    /// Detach: best effort and complete. Works when the sandbox is already
    /// gone; keeps going past errors and reports all of them.
    pub fn detach(&self, target: DetachTarget) -> CnmResult<Endpoint> {
        let mut s = self.store.session()?;
        let ep = match &target {
            DetachTarget::Endpoint(id) => {
                get_json::<Endpoint>(&mut s, &model::endpoint_key(id))?
                    .ok_or_else(|| CnmError::NotFound(format!("endpoint {id} not found")))?
            }
            DetachTarget::Sandbox { network, netns } => {
                let net = self.find_network(&mut s, network)?;
                let path = netns.to_string_lossy();
                let id = s
                    .get(SPACE, &model::sandbox_key(&net.id, &path))?
                    .ok_or_else(|| {
                        CnmError::NotFound(format!(
                            "{path} is not attached to network {}",
                            net.name
                        ))
                    })?;
                let id = String::from_utf8_lossy(&id.value).into_owned();
                get_json::<Endpoint>(&mut s, &model::endpoint_key(&id))?
                    .ok_or_else(|| CnmError::NotFound(format!("endpoint {id} not found")))?
            }
        };
        let net: Network =
            get_json(&mut s, &model::network_key(&ep.network_id))?.ok_or_else(|| {
                CnmError::NotFound(format!(
                    "network {} of endpoint {} not found",
                    ep.network_id, ep.id
                ))
            })?;

        let mut calls = Calls::new(self, &net.driver, Box::new(s))?;
        calls.teardown(true);
        let mut errors = Vec::new();
        let wnet = wit_network(&net);
        let grant = self.grant(&net, false);
        let revoke = if ep.ports.is_empty() {
            Ok(())
        } else {
            calls.ports(&net, &wit_endpoint(&ep, &ep.ports), false)
        };
        let leave = calls.call(grant.clone(), "leave", &[], |p, st, _| {
            p.netshim_plugin_driver().call_leave(st, &wnet, &ep.id)
        });
        let delete = calls.call(grant, "delete-endpoint", &[], |p, st, _| {
            p.netshim_plugin_driver()
                .call_delete_endpoint(st, &wnet, &ep.id)
        });
        for e in [revoke.err(), leave.err(), delete.err()]
            .into_iter()
            .flatten()
        {
            // The sandbox may be gone and taken its end of the pair with it.
            if !is_not_found(&e) {
                errors.push(e.to_string());
            }
        }
        if let (Some(addr), Some(pool)) = (ep.ipv4, net.ipv4.first()) {
            if let Err(e) = calls.release_address(&net.driver, &pool.id, addr.addr()) {
                errors.push(e.to_string());
            }
        }
        let s = calls.store();
        s.delete(SPACE, &model::endpoint_key(&ep.id), Condition::None)?;
        if let Some(cid) = &ep.container {
            s.delete(SPACE, &model::container_key(cid, &net.id), Condition::None)?;
        }
        s.delete(
            SPACE,
            &model::sandbox_key(&net.id, &ep.netns),
            Condition::None,
        )?;
        calls.commit()?;
        if errors.is_empty() {
            Ok(ep)
        } else {
            Err(CnmError::Teardown(errors))
        }
    }
}
