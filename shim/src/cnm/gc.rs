//! `netshim gc`: what processes that died halfway left behind. Every
//! multi-step operation commits a record of what it is about to do before
//! its kernel work (an attach intent, a [`Pending`] record) and deletes it
//! in the commit that ends the work, so a record found here names a dead
//! process: the store's lock, held by every operation from its first read
//! to its commit, is held here too. Creates are undone (nothing of them
//! was committed), removals finished (the records say what to remove), and
//! then every kernel object that carries netshim's mark or device group
//! but belongs to no network is removed.

use std::collections::BTreeSet;

use netshim_host_api::kernel::{NsId, LINK_GROUP};
use netshim_host_api::model::nft::Op;
use netshim_host_api::store::{Condition, Recovered, Store, StoreError};

use super::model::{self, Network, Pending, PENDING_PREFIX, SPACE};
use super::{get_json, release_netfilter, CnmError, CnmResult, Core, DetachTarget};

/// Which kernel objects without a record gc removes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Orphans {
    /// Only links that prove they are a dead netshim process's: no alias,
    /// born in netshim's device group (killed between creating a link and
    /// marking it). What the daemon runs at start.
    HalfMade,
    /// Also links whose mark names no network this store knows, and
    /// driver tables of drivers with no network. Only on request (`gc
    /// --orphans`) and after a recovery: a store that does not know a
    /// network (an empty or wrong state directory) would take it for dead.
    Unowned,
}

/// What a gc run did, for the CLI and the daemon's log.
#[derive(Debug, Default, serde::Serialize)]
pub struct GcReport {
    /// Unfinished work settled: "undid …" or "finished …".
    pub settled: Vec<String>,
    /// Links removed: marked (or born in netshim's group) but no network's.
    pub links: Vec<String>,
    /// Driver tables removed: no network of the driver is left.
    pub tables: Vec<String>,
    /// What could not be done; the records stay for the next run.
    pub errors: Vec<String>,
}

impl GcReport {
    pub fn is_empty(&self) -> bool {
        self.settled.is_empty()
            && self.links.is_empty()
            && self.tables.is_empty()
            && self.errors.is_empty()
    }
}

impl Core {
    pub fn gc(&self, orphans: Orphans) -> CnmResult<GcReport> {
        let mut report = GcReport::default();
        let (pending, intents) = {
            let mut s = self.store.session()?;
            let pending = s.list(SPACE, PENDING_PREFIX)?;
            let intents = s.list(SPACE, model::INTENT_PREFIX)?;
            (pending, intents)
        };
        for entry in pending {
            match serde_json::from_slice::<Pending>(&entry.value) {
                Ok(p) => match self.settle(&p) {
                    Ok(done) => report.settled.push(done),
                    Err(e) => report.errors.push(format!("{}: {e}", entry.key)),
                },
                Err(e) => report
                    .errors
                    .push(format!("{}: unreadable record: {e}", entry.key)),
            }
        }
        for entry in intents {
            let (network, netns) = model::intent_parts(&entry.key);
            match self.consume_intent(&entry.key) {
                Ok(Some(i)) => report.settled.push(format!(
                    "undid the attach of {netns} to network {network} (endpoint {})",
                    i.endpoint_id
                )),
                Ok(None) => {}
                Err(e) => report.errors.push(format!("{}: {e}", entry.key)),
            }
        }
        self.remove_orphans(orphans, &mut report)?;
        for line in &report.settled {
            tracing::info!(what = %line, "gc");
        }
        for line in &report.errors {
            tracing::warn!(error = %line, "gc");
        }
        Ok(report)
    }

    /// Undo a create, finish a removal.
    fn settle(&self, p: &Pending) -> CnmResult<String> {
        match p {
            Pending::CreateNetwork { network } => {
                self.undo_create_network(network, &p.key())?;
                Ok(format!(
                    "undid the creation of network {} ({})",
                    network.name, network.id
                ))
            }
            Pending::CreateEndpoint {
                network_id,
                endpoint_id,
            } => {
                self.undo_create_endpoint(network_id, endpoint_id, &p.key())?;
                Ok(format!("undid the creation of endpoint {endpoint_id}"))
            }
            Pending::RemoveNetwork { network_id, ipam } => {
                let exists = {
                    let mut s = self.store.session()?;
                    get_json::<Network>(&mut s, &model::network_key(network_id))?.is_some()
                };
                if exists {
                    let done = if *ipam {
                        self.network_rm(network_id).map(drop)
                    } else {
                        self.network_unregister(network_id)
                    };
                    tolerate_teardown(done)?;
                }
                self.drop_record(&p.key())?;
                Ok(format!("finished removing network {network_id}"))
            }
            Pending::RemoveEndpoint { endpoint_id, ipam } => {
                let network = {
                    let mut s = self.store.session()?;
                    get_json::<model::Endpoint>(&mut s, &model::endpoint_key(endpoint_id))?
                        .map(|ep| ep.network_id)
                };
                if let Some(network_id) = network {
                    let done = if *ipam {
                        self.detach(DetachTarget::Endpoint(endpoint_id.clone()))
                            .map(drop)
                    } else {
                        self.endpoint_delete(&network_id, endpoint_id)
                    };
                    tolerate_teardown(done)?;
                }
                self.drop_record(&p.key())?;
                Ok(format!("finished removing endpoint {endpoint_id}"))
            }
        }
    }

    /// The driver tears down what it made of a network that was never
    /// committed; its table goes if no network of the driver is left.
    fn undo_create_network(&self, network: &Network, key: &str) -> CnmResult<()> {
        let mut s = self.store.session()?;
        if get_json::<Network>(&mut s, &model::network_key(&network.id))?.is_some() {
            // Committed after all (the record is deleted in that commit, so
            // this is a record written by hand): nothing to undo.
            s.delete(SPACE, key, Condition::None)?;
            s.commit()?;
            return Ok(());
        }
        let mut errors = Vec::new();
        self.transaction_in(
            Box::new(s),
            &network.driver,
            "gc: undo network create",
            |c| {
                c.teardown(true);
                if let Err(e) = c.delete_network(network) {
                    errors.push(e.to_string());
                }
                let others = c
                    .store()
                    .list(SPACE, "networks/")?
                    .into_iter()
                    .filter_map(|e| serde_json::from_slice::<Network>(&e.value).ok())
                    .any(|n| n.driver == network.driver);
                errors.extend(release_netfilter(self.kernel.as_ref(), network, others));
                c.store().delete(SPACE, key, Condition::None)?;
                Ok(())
            },
        )?;
        for e in errors {
            // What is left carries the network's mark: the orphan pass
            // below removes links; the record is gone either way.
            tracing::debug!(error = %e, "driver teardown of an uncommitted network");
        }
        Ok(())
    }

    fn undo_create_endpoint(
        &self,
        network_id: &str,
        endpoint_id: &str,
        key: &str,
    ) -> CnmResult<()> {
        let mut s = self.store.session()?;
        let committed = get_json::<model::Endpoint>(&mut s, &model::endpoint_key(endpoint_id))?;
        let net = get_json::<Network>(&mut s, &model::network_key(network_id))?;
        let (None, Some(net)) = (committed, net) else {
            s.delete(SPACE, key, Condition::None)?;
            s.commit()?;
            return Ok(());
        };
        self.transaction_in(Box::new(s), &net.driver, "gc: undo endpoint create", |c| {
            c.teardown(true);
            if let Err(e) = c.delete_endpoint(&net, endpoint_id) {
                tracing::debug!(error = %e, "driver teardown of an uncommitted endpoint");
            }
            c.store().delete(SPACE, key, Condition::None)?;
            Ok(())
        })
    }

    fn drop_record(&self, key: &str) -> CnmResult<()> {
        let mut s = self.store.session()?;
        s.delete(SPACE, key, Condition::None)?;
        s.commit()?;
        Ok(())
    }

    /// Links and driver tables netshim made that no network owns. The
    /// session is held throughout: no operation is halfway while it is.
    fn remove_orphans(&self, orphans: Orphans, report: &mut GcReport) -> CnmResult<()> {
        let mut s = self.store.session()?;
        let mut owners = BTreeSet::new();
        let mut drivers = BTreeSet::new();
        let mut unreadable = Vec::new();
        for e in s.list(SPACE, "networks/")? {
            // The id from the key: a record that does not parse still
            // names a network that exists.
            owners.insert(e.key.trim_start_matches("networks/").to_string());
            match serde_json::from_slice::<Network>(&e.value) {
                Ok(n) => {
                    drivers.insert(n.driver);
                }
                Err(_) => unreadable.push(e.key),
            }
        }
        // A create whose undo failed keeps its record (and its objects,
        // for the next run's undo).
        for e in s.list(SPACE, PENDING_PREFIX)? {
            match serde_json::from_slice(&e.value) {
                Ok(Pending::CreateNetwork { network }) => {
                    owners.insert(network.id);
                    drivers.insert(network.driver);
                }
                Ok(_) => {}
                Err(_) => unreadable.push(e.key),
            }
        }
        let by_absence = orphans == Orphans::Unowned && unreadable.is_empty();
        if orphans == Orphans::Unowned && !unreadable.is_empty() {
            report.errors.push(format!(
                "records {} are unreadable: nothing is removed for lacking a record until they are fixed or removed",
                unreadable.join(", ")
            ));
        }
        let kernel = self.kernel.as_ref();
        for link in kernel.links(NsId::NODE)? {
            let orphan = match link.alias.as_deref() {
                Some(alias) => {
                    by_absence
                        && alias
                            .strip_prefix("netshim:")
                            .is_some_and(|id| !owners.contains(id))
                }
                None => link.group == LINK_GROUP,
            };
            if !orphan {
                continue;
            }
            let name = match &link.alias {
                Some(a) => format!("{} ({a})", link.name),
                None => format!("{} (unmarked, group {LINK_GROUP})", link.name),
            };
            match kernel.delete_link(link.link_ref()) {
                Ok(()) | Err(netshim_host_api::kernel::KernelError::NotFound(_)) => {
                    report.links.push(name)
                }
                Err(e) => report.errors.push(format!("removing link {name}: {e}")),
            }
        }
        for table in kernel.nft_tables(NsId::NODE)? {
            if !by_absence {
                break;
            }
            let Some(driver) = table.strip_prefix("netshim-") else {
                continue;
            };
            if drivers.contains(driver) {
                continue;
            }
            match kernel.nft_apply(NsId::NODE, &table, &[Op::DeleteTable]) {
                Ok(()) => report.tables.push(format!("inet {table}")),
                Err(e) => report
                    .errors
                    .push(format!("removing nftables table inet {table}: {e}")),
            }
        }
        drop(s);
        Ok(())
    }
}

impl Core {
    /// Recover a damaged state database (see `LocalStore::recover`) and,
    /// if it was damaged, remove what no surviving record owns.
    pub fn recover_store(&self) -> CnmResult<Option<(Recovered, GcReport)>> {
        match self.store.recover()? {
            None => Ok(None),
            Some(r) => Ok(Some((r, self.gc(Orphans::Unowned)?))),
        }
    }

    /// A teardown (detach, poststop) that a damaged store would strand:
    /// the store is recovered (the damaged file kept) and it runs again.
    /// If what it was to tear down is then not found, that is said with
    /// the damage: its record may have been lost with it, and whether the
    /// recovery's gc removed its objects depends on what else was lost.
    pub fn teardown_despite_damage<T>(&self, f: impl Fn() -> CnmResult<T>) -> CnmResult<T> {
        match f() {
            Err(CnmError::Store(StoreError::Corrupt { path, message })) => {
                tracing::error!(file = %path.display(), error = %message, "the state database is damaged: recovering it so this teardown can run");
                let recovered = self.recover_store()?;
                match (f(), recovered) {
                    (Err(CnmError::NotFound(what)), Some((r, gc))) => {
                        Err(CnmError::LostWithDamage {
                            what,
                            damaged: r.moved_to,
                            kept: r.kept,
                            links: gc.links.len(),
                            tables: gc.tables.len(),
                        })
                    }
                    (other, _) => other,
                }
            }
            other => other,
        }
    }
}

/// A removal that reported teardown errors has still removed its records.
fn tolerate_teardown(done: CnmResult<()>) -> CnmResult<()> {
    match done {
        Ok(()) => Ok(()),
        Err(CnmError::Teardown(errors)) => {
            for e in errors {
                tracing::warn!(error = %e, "gc: teardown");
            }
            Ok(())
        }
        Err(e) => Err(e),
    }
}
