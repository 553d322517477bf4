//! The CNM operations as the CLI and the OCI hook run them: each one
//! transaction made of the lifecycle's steps.

use netshim_host_api::host::ownership_mark;
use netshim_host_api::kernel::NsId;
use netshim_host_api::store::{Condition, Store, StoreError};

use super::calls::Calls;
use super::driver::{EndpointSpec, PoolAsk};
use super::ipam_check;
use super::lifecycle::{network_of, save_endpoint};
use super::model::{self, Endpoint, Network, Pending, Pool, SPACE};
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

impl Core {
    pub fn network_create(&self, req: CreateNetwork) -> CnmResult<Network> {
        retry_raced(&req.name, || self.network_create_once(&req))
    }

    fn network_create_once(&self, req: &CreateNetwork) -> CnmResult<Network> {
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
        // Recorded before the driver makes anything: a process that dies
        // halfway leaves this record, and `netshim gc` removes what the
        // driver made of it (its pools are not committed until the network is).
        let mut net = Network {
            id: random_id(),
            name: req.name.clone(),
            driver: req.driver.clone(),
            internal: req.internal,
            options: req.options.clone(),
            ipv4: Vec::new(),
            created: now(),
        };
        self.guest(&net.driver)?;
        let pending = Pending::CreateNetwork {
            network: net.clone(),
        };
        self.transaction_pending(Box::new(s), &pending, &req.driver, "network create", |c| {
            c.place_subtree(&req.options);
            let pool = self.take_pool(
                c,
                &PoolAsk {
                    pool: req.subnet,
                    options: req.options.clone(),
                    ..PoolAsk::default()
                },
            )?;
            self.grant_claims(c, &mut net, pool.pool)?;
            let gateway = match pool.gateway {
                Some(g) => {
                    ipam_check::check_address(&req.driver, pool.pool, req.gateway, g)?;
                    Some(g)
                }
                None => self.take_gateway(c, &pool.id, pool.pool, req.gateway, &[])?,
            };
            net.ipv4 = vec![Pool {
                id: pool.id,
                subnet: pool.pool,
                gateway,
            }];
            self.create_network_step(c, &net)?;
            Ok(net)
        })
    }

    /// Remove a network that has no endpoints. Keeps going past driver
    /// errors and reports them all; the network is gone afterwards.
    pub fn network_rm(&self, name_or_id: &str) -> CnmResult<Network> {
        retry_raced(name_or_id, || self.network_rm_once(name_or_id))
    }

    fn network_rm_once(&self, name_or_id: &str) -> CnmResult<Network> {
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
        let mut errors = Vec::new();
        let pending = Pending::RemoveNetwork {
            network_id: net.id.clone(),
            ipam: true,
        };
        self.transaction_pending(Box::new(s), &pending, &net.driver, "network rm", |c| {
            c.place_subtree(&net.options);
            let others = self.delete_network_step(c, &net, &mut errors)?;
            for pool in &net.ipv4 {
                if let Some(gw) = pool.gateway {
                    if let Err(e) = c.release_address(&pool.id, gw.addr()) {
                        errors.push(e.to_string());
                    }
                }
                if let Err(e) = self.give_back_pool(c, &pool.id, &net.options) {
                    errors.push(e.to_string());
                }
            }
            // Before the commit: a process that dies after it must not
            // leave the driver's table to no one.
            errors.extend(release_netfilter(self.kernel.as_ref(), &net, others));
            Ok(())
        })?;
        if errors.is_empty() {
            Ok(net)
        } else {
            Err(CnmError::Teardown(errors))
        }
    }

    /// Attach a sandbox to a network. Idempotent: attaching a sandbox that
    /// is already attached returns the existing endpoint.
    pub fn attach(&self, req: Attach) -> CnmResult<Endpoint> {
        // A driver whose IPAM lives in the cluster store (Calico's blocks)
        // can lose a race to another node; the attempt was undone whole.
        retry_raced(&req.network, || self.attach_once(&req))
    }

    fn attach_once(&self, req: &Attach) -> CnmResult<Endpoint> {
        let netns = req
            .netns
            .to_str()
            .ok_or_else(|| CnmError::Invalid(format!("netns path {:?} is not UTF-8", req.netns)))?
            .to_string();
        // Intents and indexes are keyed by the path: it must name the same
        // namespace whatever the working directory.
        if !req.netns.is_absolute() {
            return Err(CnmError::Invalid(format!(
                "netns path {netns} is relative; give an absolute path (/run/netns/NAME, /proc/PID/ns/net)"
            )));
        }
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
            container: req.container.clone(),
        };
        put_json(&mut s, &intent_key, &intent)?;
        s.checkpoint()?;

        let outcome = self.run_transaction(Box::new(s), &net.driver, "attach", |c| {
            c.kernel_state_only();
            match &unfinished {
                Some(old) => self.undo_attach(c, &net, old, Some(ns.ns))?,
                None => sandbox::clear_stale(
                    self.kernel.as_ref(),
                    ns.ns,
                    &req.ifname,
                    &ownership_mark(&net.id),
                )?,
            }
            let ep = self.attach_steps(c, &net, req, &netns, ns.ns, &intent.endpoint_id)?;
            c.store().delete(SPACE, &intent_key, Condition::None)?;
            Ok(ep)
        });
        match outcome {
            Ok(ep) => Ok(ep),
            Err((e, undone)) => {
                // Everything the attach made is undone: so is its intent
                // (kept for the next attach or gc when the undo was not).
                if undone {
                    self.drop_own_record(&intent_key, &intent)?;
                }
                Err(e)
            }
        }
    }

    /// Remove what an interrupted attach made: its published ports, the
    /// driver's endpoint (its veth) and, when the sandbox is still there,
    /// the interface it was putting into it (marked, or born in netshim's
    /// device group). Nothing of it was committed, so IPAM is clean.
    pub(super) fn undo_attach(
        &self,
        c: &mut Calls,
        net: &Network,
        old: &model::Intent,
        ns: Option<NsId>,
    ) -> CnmResult<()> {
        tracing::info!(endpoint = %old.endpoint_id, network = %net.name, "undoing an attach that was interrupted");
        let spec = EndpointSpec {
            id: old.endpoint_id.clone(),
            ipv4: None,
            mac: None,
            ifname: old.ifname.clone(),
            ports: Vec::new(),
        };
        c.teardown(true);
        let revoke = c.ports(net, &spec, false);
        let cleanup = c.delete_endpoint(net, &old.endpoint_id);
        c.teardown(false);
        for e in [revoke.err(), cleanup.err()].into_iter().flatten() {
            // An unmarked veth is not the driver's to delete (its teardown
            // reports that as a failure); the sandbox end below, or the
            // sandbox's end of life, takes it with it.
            tracing::debug!(error = %e, "driver cleanup of the interrupted endpoint");
        }
        if let Some(ns) = ns {
            sandbox::remove(
                self.kernel.as_ref(),
                ns,
                &old.ifname,
                &ownership_mark(&net.id),
            )?;
        }
        Ok(())
    }

    /// Undo the attach an intent left behind (its process died) and drop
    /// the intent. The sandbox is entered only if it still exists and is
    /// not the node's own namespace.
    pub(super) fn consume_intent(&self, key: &str) -> CnmResult<Option<model::Intent>> {
        let mut s = self.store.session()?;
        let Some(intent) = get_json::<model::Intent>(&mut s, key)? else {
            return Ok(None);
        };
        let (network_id, netns) = model::intent_parts(key);
        let Some(net) = get_json::<Network>(&mut s, &model::network_key(network_id))? else {
            // Its network is gone, and with it whatever the driver made.
            s.delete(SPACE, key, Condition::None)?;
            s.commit()?;
            return Ok(Some(intent));
        };
        let ns = match self.open_sandbox(std::path::Path::new(netns)) {
            Ok(ns) => ns,
            Err(e) => {
                tracing::debug!(netns, error = %e, "the interrupted attach's sandbox is gone");
                None
            }
        };
        self.transaction_in(Box::new(s), &net.driver, "undo attach", |c| {
            self.undo_attach(c, &net, &intent, ns.as_ref().map(|o| o.ns))?;
            c.store().delete(SPACE, key, Condition::None)?;
            Ok(())
        })?;
        Ok(Some(intent))
    }

    /// A sandbox's namespace, if it exists and is not the node's.
    fn open_sandbox(&self, path: &std::path::Path) -> CnmResult<Option<OpenNs<'_>>> {
        if !path.exists() {
            return Ok(None);
        }
        let ns = OpenNs {
            core: self,
            ns: self.kernel.open_ns(path)?,
        };
        if self.kernel.ns_identity(ns.ns)? == self.kernel.ns_identity(NsId::NODE)? {
            return Ok(None);
        }
        Ok(Some(ns))
    }

    /// Attach intents of a container (its attach died before it recorded
    /// an endpoint).
    fn container_intents(&self, container: &str) -> CnmResult<Vec<String>> {
        let mut s = self.store.session()?;
        Ok(s.list(SPACE, model::INTENT_PREFIX)?
            .into_iter()
            .filter(|e| {
                serde_json::from_slice::<model::Intent>(&e.value)
                    .is_ok_and(|i| i.container.as_deref() == Some(container))
            })
            .map(|e| e.key)
            .collect())
    }

    fn attach_steps(
        &self,
        c: &mut Calls,
        net: &Network,
        req: &Attach,
        netns: &str,
        ns: NsId,
        endpoint_id: &str,
    ) -> CnmResult<Endpoint> {
        c.place_subtree(&net.options);
        let pool = net
            .ipv4
            .first()
            .ok_or_else(|| CnmError::Invalid(format!("network {} has no IPv4 pool", net.name)))?;
        let ipv4 = self.take_address(c, &pool.id, pool.subnet, req.ip, false, &[])?;
        let spec = EndpointSpec {
            id: endpoint_id.to_string(),
            ipv4: Some(ipv4),
            mac: None,
            ifname: req.ifname.clone(),
            ports: req.ports.clone(),
        };
        let sb = Some((ns, req.netns.as_path()));
        let mac = c.create_endpoint(net, &spec, sb)?;
        let join = c.join(net, &spec, sb)?;
        sandbox::check_static_routes(&join, &self.grant(net, false).route_prefixes)?;
        sandbox::configure(
            self.kernel.as_ref(),
            ns,
            &ownership_mark(&net.id),
            &join,
            &req.ifname,
            Some(ipv4),
        )?;
        if !req.ports.is_empty() {
            c.ports(net, &spec, true)?;
        }
        let ep = Endpoint {
            id: spec.id,
            network_id: net.id.clone(),
            netns: netns.to_string(),
            ifname: req.ifname.clone(),
            ipv4: Some(ipv4),
            mac: mac.map(|m| m.to_string()),
            gateway: join.gateway,
            created: now(),
            container: req.container.clone(),
            ports: req.ports.clone(),
        };
        save_endpoint(c.store(), &ep)?;
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
        // An attach of this container that died (a createRuntime hook
        // killed at its timeout, before poststop): undone here, since
        // poststop is all a runtime runs next.
        for key in self.container_intents(container)? {
            if let Err(e) = self.consume_intent(&key) {
                errors.push(e.to_string());
            }
        }
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
        let what = match &target {
            DetachTarget::Endpoint(id) => id.clone(),
            DetachTarget::Sandbox { network, .. } => network.clone(),
        };
        retry_raced(&what, || self.detach_once(&target))
    }

    fn detach_once(&self, target: &DetachTarget) -> CnmResult<Endpoint> {
        let mut s = self.store.session()?;
        let ep = match &target {
            DetachTarget::Endpoint(id) => {
                get_json::<Endpoint>(&mut s, &model::endpoint_key(id))?
                    .ok_or_else(|| CnmError::NotFound(format!("endpoint {id} not found")))?
            }
            DetachTarget::Sandbox { network, netns } => {
                let net = self.find_network(&mut s, network)?;
                let path = netns.to_string_lossy();
                let Some(id) = s.get(SPACE, &model::sandbox_key(&net.id, &path))? else {
                    // An attach of this sandbox that died halfway is
                    // detached by undoing it.
                    let key = model::intent_key(&net.id, &path);
                    drop(s);
                    return match self.consume_intent(&key)? {
                        Some(intent) => Ok(Endpoint {
                            id: intent.endpoint_id,
                            network_id: net.id,
                            netns: path.into_owned(),
                            ifname: intent.ifname,
                            ipv4: None,
                            mac: None,
                            gateway: None,
                            created: now(),
                            container: intent.container,
                            ports: Vec::new(),
                        }),
                        None => Err(CnmError::NotFound(format!(
                            "{path} is not attached to network {}",
                            net.name
                        ))),
                    };
                };
                let id = String::from_utf8_lossy(&id.value).into_owned();
                get_json::<Endpoint>(&mut s, &model::endpoint_key(&id))?
                    .ok_or_else(|| CnmError::NotFound(format!("endpoint {id} not found")))?
            }
        };
        let net = network_of(&mut s, &ep)?;
        let pending = Pending::RemoveEndpoint {
            endpoint_id: ep.id.clone(),
            ipam: true,
        };
        let errors =
            self.transaction_pending(Box::new(s), &pending, &net.driver, "detach", |c| {
                c.kernel_state_only();
                self.remove_endpoint_step(c, &net, &ep)
            })?;
        if errors.is_empty() {
            Ok(ep)
        } else {
            Err(CnmError::Teardown(errors))
        }
    }
}

/// Run `once` again when another node's write came between its reads and
/// its commit (two nodes leasing or claiming at once): the attempt was
/// undone entirely, so the next one starts from what the cluster holds now.
pub(super) fn retry_raced<T>(what: &str, mut once: impl FnMut() -> CnmResult<T>) -> CnmResult<T> {
    let mut attempt = 0;
    loop {
        match once() {
            Err(CnmError::Store(StoreError::Raced(why))) if attempt < 8 => {
                attempt += 1;
                tracing::info!(what, attempt, why, "cluster store conflict; retrying");
                std::thread::sleep(std::time::Duration::from_millis(20 * attempt));
            }
            other => return other,
        }
    }
}
