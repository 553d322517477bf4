//! `netfilter` imports: one atomic batch at a time into the driver's own
//! `inet` table, scoped by the guard to the driver's networks' traffic;
//! the journal keeps the inverse batch.

use super::{HostError, HostResult, HostState};
use crate::bindings::netshim::plugin::netfilter::{Host, Op as WitOp};
use crate::bindings::v0_2::netshim::plugin0_2_0::netfilter as v0_2;
use crate::guard::netfilter::{self as guard, Refusal, Scope, TableView};
use crate::journal::Undo;
use crate::kernel::NsId;
use crate::model::nft::{Element, Op};

impl From<Refusal> for HostError {
    fn from(r: Refusal) -> HostError {
        match r {
            Refusal::Denied(m) => HostError::denied(m),
            Refusal::Invalid(m) => HostError::invalid(m),
        }
    }
}

impl HostState {
    /// The driver's table as it is now; rule counts only when `count_rules`.
    fn table_view(&self, count_rules: bool) -> HostResult<TableView> {
        let table = self.grant.nft_table();
        let mut view = TableView {
            exists: self.kernel.nft_tables(NsId::NODE)?.contains(&table),
            ..TableView::default()
        };
        if !view.exists {
            return Ok(view);
        }
        view.chains = self.kernel.nft_chains(NsId::NODE, &table)?;
        for c in &view.chains {
            let host = c.starts_with(guard::RESERVED_PREFIX);
            if !host && !count_rules {
                continue;
            }
            let ids = self.kernel.nft_rules(NsId::NODE, &table, c)?;
            view.rules += ids.len();
            if host {
                view.dispatch.insert(c.clone(), ids);
            }
        }
        Ok(view)
    }

    /// Apply host-checked ops and journal their inverse.
    fn nft_journaled(&mut self, ops: Vec<Op>, view: &TableView) -> HostResult<()> {
        let table = self.grant.nft_table();
        self.kernel.nft_apply(NsId::NODE, &table, &ops)?;
        if !view.exists {
            self.journal.record(Undo::Nft {
                ns: NsId::NODE,
                table,
                ops: vec![Op::DeleteTable],
            });
            return Ok(());
        }
        let mut inverse = Vec::new();
        for op in ops.iter().rev() {
            match op {
                Op::AddChain { name, .. } if !view.chains.contains(name) => {
                    inverse.push(Op::DeleteChain(name.clone()))
                }
                Op::AddRule { chain, rule } => inverse.push(Op::DeleteRule {
                    chain: chain.clone(),
                    id: rule.id.clone(),
                }),
                Op::AddElement { set, elem } => inverse.push(Op::DeleteElement {
                    set: set.clone(),
                    elem: elem.clone(),
                }),
                Op::DeleteElement { set, elem } => inverse.push(Op::AddElement {
                    set: set.clone(),
                    elem: elem.clone(),
                }),
                // An empty set or an existing chain left in place is harmless.
                Op::AddChain { .. } | Op::AddSet { .. } => {}
                other => self
                    .journal
                    .irreversible(format!("nftables {other:?} in table {table}")),
            }
        }
        if !inverse.is_empty() {
            self.journal.record(Undo::Nft {
                ns: NsId::NODE,
                table,
                ops: inverse,
            });
        }
        Ok(())
    }

    /// Put a node-side link the network just created in the scope of the
    /// driver's rules (the dispatch set).
    pub(crate) fn admit_link(&mut self, index: u32) -> HostResult<()> {
        let network = self.network("create a link")?.to_string();
        // On the attach path: one dump (does the table exist?) and one batch;
        // the inverse needs nothing more.
        let table = self.grant.nft_table();
        let exists = self.kernel.nft_tables(NsId::NODE)?.contains(&table);
        self.kernel
            .nft_apply(NsId::NODE, &table, &guard::admit_link(index, &network))?;
        self.journal.record(Undo::Nft {
            ns: NsId::NODE,
            table,
            ops: if exists {
                guard::dispatch_sets(Some(&network))
                    .into_iter()
                    .map(|set| Op::DeleteElement {
                        set,
                        elem: Element::Ifindex(index),
                    })
                    .collect()
            } else {
                vec![Op::DeleteTable]
            },
        });
        Ok(())
    }

    /// Take a deleted link out of the dispatch set (best effort: the table
    /// may be gone already).
    pub(crate) fn forget_link(&mut self, index: u32) {
        let table = self.grant.nft_table();
        let ops: Vec<Op> = guard::dispatch_sets(self.grant.network_id.as_deref())
            .into_iter()
            .map(|set| Op::DeleteElement {
                set,
                elem: Element::Ifindex(index),
            })
            .collect();
        // One batch (one commit for the kernel to clean up after); one op
        // at a time if that fails, e.g. for a link an older netshim put in
        // the driver-wide set only.
        if self.kernel.nft_apply(NsId::NODE, &table, &ops).is_err() {
            for op in ops {
                if let Err(e) = self
                    .kernel
                    .nft_apply(NsId::NODE, &table, std::slice::from_ref(&op))
                {
                    tracing::debug!(table, index, error = %e, "link not in a dispatch set");
                }
            }
        }
    }
}

impl HostState {
    /// A driver's batch, converted from its WIT version: checked and scoped
    /// by the guard, applied atomically, journaled.
    fn apply_batch(&mut self, batch: Vec<Op>) -> HostResult<()> {
        self.network("netfilter apply")?;
        if batch.is_empty() {
            return Ok(());
        }
        let adds_rules = batch.iter().any(|o| matches!(o, Op::AddRule { .. }));
        let view = self.table_view(adds_rules)?;
        let scope = Scope {
            pools: &self.grant.pools,
            published: &self.grant.published,
            network: self.grant.network_id.as_deref(),
        };
        let ops = guard::scope_batch(batch, &view, &scope)?;
        self.nft_journaled(ops, &view)
    }

    fn chain_rules(&mut self, chain: String) -> HostResult<Vec<String>> {
        if chain.is_empty() || chain.len() > crate::guard::limits::NFT_NAME_BYTES {
            return Err(HostError::invalid(format!(
                "chain name must be 1 to {} bytes",
                crate::guard::limits::NFT_NAME_BYTES
            )));
        }
        let table = self.grant.nft_table();
        Ok(self.kernel.nft_rules(NsId::NODE, &table, &chain)?)
    }
}

/// Remove what the host kept in a driver's table for one network (its
/// dispatch set and the jumps tagged with it) once the network is gone.
/// Best effort and idempotent: the table may be gone with the network.
pub fn release_network(
    kernel: &dyn crate::kernel::Kernel,
    driver: &str,
    network_id: &str,
) -> crate::kernel::KResult<()> {
    let table = super::nft_table(driver);
    if !kernel.nft_tables(NsId::NODE)?.contains(&table) {
        return Ok(());
    }
    let mut ops = Vec::new();
    for chain in kernel.nft_chains(NsId::NODE, &table)? {
        if !chain.starts_with(guard::RESERVED_PREFIX) {
            continue;
        }
        for id in kernel.nft_rules(NsId::NODE, &table, &chain)? {
            if guard::is_network_jump(&id, network_id) {
                ops.push(Op::DeleteRule {
                    chain: chain.clone(),
                    id,
                });
            }
        }
    }
    ops.push(Op::DeleteSet(guard::network_set(network_id)));
    match kernel.nft_apply(NsId::NODE, &table, &ops) {
        Ok(()) | Err(crate::kernel::KernelError::NotFound(_)) => Ok(()),
        Err(e) => Err(e),
    }
}

impl Host for HostState {
    fn apply(&mut self, batch: Vec<WitOp>) -> HostResult<()> {
        guard::check_batch_len(batch.len())?;
        let batch = batch
            .iter()
            .map(super::nft_v01::op)
            .collect::<HostResult<_>>()?;
        self.apply_batch(batch)
    }

    fn list_rules(&mut self, chain: String) -> HostResult<Vec<String>> {
        self.chain_rules(chain)
    }
}

impl v0_2::Host for HostState {
    fn apply(&mut self, batch: Vec<v0_2::Op>) -> HostResult<()> {
        guard::check_batch_len(batch.len())?;
        let batch = batch
            .iter()
            .map(super::nft_v02::op)
            .collect::<HostResult<_>>()?;
        self.apply_batch(batch)
    }

    fn list_rules(&mut self, chain: String) -> HostResult<Vec<String>> {
        self.chain_rules(chain)
    }
}
