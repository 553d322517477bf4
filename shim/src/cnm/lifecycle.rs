//! The CNM lifecycle, once, for every front-end. An operation is a
//! transaction: a store session and the guest calls made in it, committed
//! together or undone together, newest first ([`Core::transaction`]). The
//! steps below are what an operation is made of; the CLI and the OCI hook
//! run several in one transaction (`ops`), Docker sends each as a request
//! of its own and gets one transaction per step (`steps`).

use std::net::IpAddr;

use ipnet::IpNet;
use netshim_host_api::store::{Condition, Store};

use super::calls::{is_not_found, Calls};
use super::driver::{EndpointSpec, PoolAsk};
use super::ipam_check;
use super::model::{self, Endpoint, Network, Pending, SPACE};
use super::{put_json, CnmError, CnmResult, Core};

/// A failed operation's error as its caller may act on it: a lost race
/// is retried only when everything it did was undone, so one whose undo
/// was incomplete says so and is not run again over what it left.
fn settled(e: CnmError, undone: bool) -> CnmError {
    match e {
        CnmError::Store(netshim_host_api::store::StoreError::Raced(why)) if !undone => {
            CnmError::Teardown(vec![
                why,
                "undoing what the operation did was incomplete: its record stays for `netshim gc`"
                    .into(),
            ])
        }
        e => e,
    }
}

/// A pool that IPAM handed out and the host checked.
pub struct PoolGrant {
    pub id: String,
    pub pool: IpNet,
    /// The gateway IPAM reserved with the pool, if it did.
    pub gateway: Option<IpNet>,
}

impl Core {
    /// Run `f` in a new store session and commit what it did, or undo
    /// every guest call it made and drop the session.
    pub(super) fn transaction<R>(
        &self,
        driver: &str,
        what: &str,
        f: impl FnOnce(&mut Calls) -> CnmResult<R>,
    ) -> CnmResult<R> {
        let s = self.store.session()?;
        self.transaction_in(Box::new(s), driver, what, f)
    }

    /// [`Core::transaction`] in a session the caller already holds.
    pub(super) fn transaction_in<R>(
        &self,
        session: Box<dyn Store + Send>,
        driver: &str,
        what: &str,
        f: impl FnOnce(&mut Calls) -> CnmResult<R>,
    ) -> CnmResult<R> {
        self.run_transaction(session, driver, what, f)
            .map_err(|(e, undone)| settled(e, undone))
    }

    /// A transaction whose kernel work takes several steps: `pending` is
    /// committed before the work starts and deleted in the commit that
    /// ends it, so a process that dies in between leaves a record of what
    /// it was doing ([`model::Pending`]). A failed transaction has undone
    /// its work and its record goes too, unless the undo was incomplete:
    /// then the record stays for `netshim gc`.
    pub(super) fn transaction_pending<R>(
        &self,
        mut session: Box<dyn Store + Send>,
        pending: &Pending,
        driver: &str,
        what: &str,
        f: impl FnOnce(&mut Calls) -> CnmResult<R>,
    ) -> CnmResult<R> {
        let key = pending.key();
        put_json(session.as_mut(), &key, pending)?;
        session.checkpoint()?;
        let outcome = self.run_transaction(session, driver, what, |c| {
            let r = f(c)?;
            c.store().delete(SPACE, &key, Condition::None)?;
            Ok(r)
        });
        match outcome {
            Ok(r) => Ok(r),
            Err((e, undone)) => {
                if undone {
                    self.drop_own_record(&key, pending)?;
                }
                Err(settled(e, undone))
            }
        }
    }

    /// Delete a record this operation wrote, in a session of its own after
    /// the operation's: only if it still holds what was written, since
    /// another operation may have written the key in between.
    pub(super) fn drop_own_record<T: serde::Serialize>(
        &self,
        key: &str,
        wrote: &T,
    ) -> CnmResult<()> {
        let bytes = serde_json::to_vec(wrote).map_err(|e| CnmError::Invalid(e.to_string()))?;
        let mut s = self.store.session()?;
        if let Some(now) = s.get(SPACE, key)? {
            if now.value == bytes {
                s.delete(SPACE, key, Condition::Revision(now.revision))?;
                s.commit()?;
            }
        }
        Ok(())
    }

    /// Run `f`; commit, or undo its calls. The error says whether the undo
    /// was complete.
    pub(super) fn run_transaction<R>(
        &self,
        session: Box<dyn Store + Send>,
        driver: &str,
        what: &str,
        f: impl FnOnce(&mut Calls) -> CnmResult<R>,
    ) -> Result<R, (CnmError, bool)> {
        let mut calls = Calls::new(self, driver, session).map_err(|e| (e, true))?;
        match f(&mut calls) {
            Ok(r) => {
                calls.commit()?;
                Ok(r)
            }
            Err(e) => {
                let incomplete = calls.abort();
                for r in &incomplete {
                    tracing::error!(operation = what, error = %r, "rollback is incomplete");
                }
                Err((e, incomplete.is_empty()))
            }
        }
    }

    /// IPAM's pool, checked against the node and every other pool, and
    /// recorded as held so later address answers can be checked against it.
    pub(super) fn take_pool(&self, c: &mut Calls, ask: &PoolAsk) -> CnmResult<PoolGrant> {
        let driver = c.guest.name.clone();
        let got = c.request_pool(ask)?;
        let node = ipam_check::NodeFacts::read(self.kernel.as_ref())?;
        let taken = ipam_check::taken_pools(c.store())?;
        ipam_check::check_pool(&driver, ask.pool, got.pool, &node, &taken)?;
        ipam_check::record_pool(c.store(), &driver, &got.id, got.pool)?;
        Ok(PoolGrant {
            id: got.id,
            pool: got.pool,
            gateway: got.gateway,
        })
    }

    /// Route prefixes the driver claimed in request-pool (a cluster
    /// network's whole range, with no operator grant), checked: the value
    /// of the network option that grants them, if there were any.
    pub(super) fn checked_claims(&self, c: &mut Calls, pool: IpNet) -> CnmResult<Option<String>> {
        let claims = c.take_claims();
        if claims.is_empty() {
            return Ok(None);
        }
        let node = ipam_check::NodeFacts::read(self.kernel.as_ref())?;
        let taken = ipam_check::taken_pools(c.store())?;
        let others: Vec<_> = taken.into_iter().filter(|(_, p)| *p != pool).collect();
        ipam_check::check_claims(&c.guest.name, &claims, pool, &node, &others)?;
        Ok(Some(
            claims
                .iter()
                .map(IpNet::to_string)
                .collect::<Vec<_>>()
                .join(","),
        ))
    }

    /// [`Core::checked_claims`], kept in the network's options as if the
    /// operator had granted them.
    pub(super) fn grant_claims(
        &self,
        c: &mut Calls,
        net: &mut Network,
        pool: IpNet,
    ) -> CnmResult<()> {
        if let Some(list) = self.checked_claims(c, pool)? {
            net.options
                .push((ipam_check::ROUTE_PREFIXES_OPTION.to_string(), list));
        }
        Ok(())
    }

    /// IPAM's release-pool; the record goes either way (in a teardown the
    /// session commits past the error).
    pub(super) fn give_back_pool(
        &self,
        c: &mut Calls,
        pool_id: &str,
        options: &[(String, String)],
    ) -> CnmResult<()> {
        let driver = c.guest.name.clone();
        let released = c.release_pool(pool_id, options);
        ipam_check::forget_pool(c.store(), &driver, pool_id)?;
        released
    }

    /// An address of `pool` from IPAM, checked to be a usable address of it
    /// (and the one asked for, if one was).
    pub(super) fn take_address(
        &self,
        c: &mut Calls,
        pool_id: &str,
        pool: IpNet,
        want: Option<IpAddr>,
        gateway: bool,
        options: &[(String, String)],
    ) -> CnmResult<IpNet> {
        let got = c.request_address(pool_id, want, gateway, options)?;
        ipam_check::check_address(&c.guest.name, pool, want, got)?;
        Ok(got)
    }

    /// The pool's gateway: the one asked for, or the driver's pick; `None`
    /// when the driver routes without a gateway in the pool (Calico:
    /// 169.254.1.1 on-link) and none was asked for.
    pub(super) fn take_gateway(
        &self,
        c: &mut Calls,
        pool_id: &str,
        pool: IpNet,
        want: Option<IpAddr>,
        options: &[(String, String)],
    ) -> CnmResult<Option<IpNet>> {
        match self.take_address(c, pool_id, pool, want, true, options) {
            Ok(g) => Ok(Some(g)),
            Err(CnmError::Driver {
                kind: super::DriverErrorKind::Unsupported,
                ..
            }) if want.is_none() => Ok(None),
            Err(e) => Err(e),
        }
    }

    /// The driver's create-network, then the network's records.
    pub(super) fn create_network_step(&self, c: &mut Calls, net: &Network) -> CnmResult<()> {
        if net
            .options
            .iter()
            .any(|(k, _)| k == ipam_check::ROUTE_PREFIXES_OPTION)
        {
            let node = ipam_check::NodeFacts::read(self.kernel.as_ref())?;
            ipam_check::route_prefixes(&net.options, Some(&node))?;
        }
        c.create_network(net)?;
        let s = c.store();
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

    /// The driver's delete-network (teardown: its error is collected, not
    /// returned), then the network's records. True when other networks of
    /// its driver remain, so the driver's nftables table must stay.
    pub(super) fn delete_network_step(
        &self,
        c: &mut Calls,
        net: &Network,
        errors: &mut Vec<String>,
    ) -> CnmResult<bool> {
        c.teardown(true);
        c.place_subtree(&net.options);
        if let Err(e) = c.delete_network(net) {
            errors.push(e.to_string());
        }
        let s = c.store();
        s.delete(SPACE, &model::network_key(&net.id), Condition::None)?;
        s.delete(SPACE, &model::name_key(&net.name), Condition::None)?;
        // A tunnel or BGP speaker the driver configured goes with its network.
        for space in [
            netshim_host_api::host::udp_tunnel::SPACE,
            netshim_host_api::host::bgp::SPACE,
        ] {
            s.delete(space, &net.id, Condition::None)?;
        }
        Ok(s.list(SPACE, "networks/")?
            .into_iter()
            .filter_map(|e| serde_json::from_slice::<Network>(&e.value).ok())
            .any(|n| n.driver == net.driver))
    }

    /// Withdraw an endpoint's ports, leave, delete it, release its address
    /// and forget it: teardown goes on past errors and returns them. A
    /// driver's "not found" is no error here: the sandbox may be gone and
    /// have taken its end of the pair with it.
    pub(super) fn remove_endpoint_step(
        &self,
        c: &mut Calls,
        net: &Network,
        ep: &Endpoint,
    ) -> CnmResult<Vec<String>> {
        c.teardown(true);
        c.place_subtree(&net.options);
        let spec = spec_of(ep, &ep.ports);
        let revoke = if ep.ports.is_empty() {
            Ok(())
        } else {
            c.ports(net, &spec, false)
        };
        let leave = c.leave(net, &ep.id);
        let delete = c.delete_endpoint(net, &ep.id);
        let mut errors: Vec<String> = [revoke.err(), leave.err(), delete.err()]
            .into_iter()
            .flatten()
            .filter(|e| !is_not_found(e))
            .map(|e| e.to_string())
            .collect();
        if let (Some(addr), Some(pool)) = (ep.ipv4, net.ipv4.first()) {
            if let Err(e) = c.release_address(&pool.id, addr.addr()) {
                errors.push(e.to_string());
            }
        }
        forget_endpoint(c.store(), ep)?;
        Ok(errors)
    }
}

/// What the driver is told of a stored endpoint, with these ports.
pub(super) fn spec_of(ep: &Endpoint, ports: &[model::PortMapping]) -> EndpointSpec {
    EndpointSpec {
        id: ep.id.clone(),
        ipv4: ep.ipv4,
        mac: None,
        ifname: ep.ifname.clone(),
        ports: ports.to_vec(),
    }
}

/// An endpoint's record and the indexes that find it (by sandbox, by
/// container).
pub(super) fn save_endpoint(s: &mut dyn Store, ep: &Endpoint) -> CnmResult<()> {
    put_json(s, &model::endpoint_key(&ep.id), ep)?;
    if let Some(cid) = &ep.container {
        s.put(
            SPACE,
            &model::container_key(cid, &ep.network_id),
            ep.id.as_bytes(),
            Condition::None,
            None,
        )?;
    }
    if !ep.netns.is_empty() {
        s.put(
            SPACE,
            &model::sandbox_key(&ep.network_id, &ep.netns),
            ep.id.as_bytes(),
            Condition::None,
            None,
        )?;
    }
    Ok(())
}

pub(super) fn forget_endpoint(s: &mut dyn Store, ep: &Endpoint) -> CnmResult<()> {
    s.delete(SPACE, &model::endpoint_key(&ep.id), Condition::None)?;
    if let Some(cid) = &ep.container {
        s.delete(
            SPACE,
            &model::container_key(cid, &ep.network_id),
            Condition::None,
        )?;
    }
    if !ep.netns.is_empty() {
        s.delete(
            SPACE,
            &model::sandbox_key(&ep.network_id, &ep.netns),
            Condition::None,
        )?;
    }
    Ok(())
}

/// The network an endpoint belongs to.
pub(super) fn network_of(s: &mut dyn Store, ep: &Endpoint) -> CnmResult<Network> {
    super::get_json(s, &model::network_key(&ep.network_id))?.ok_or_else(|| {
        CnmError::NotFound(format!(
            "network {} of endpoint {} not found",
            ep.network_id, ep.id
        ))
    })
}
