//! `netfilter` imports: one atomic batch at a time into the driver's own
//! `inet` table; the journal keeps the inverse batch.

use super::{HostError, HostResult, HostState};
use crate::bindings::netshim::plugin::netfilter::{Host, Op as WitOp};
use crate::model::nft::Op;
use crate::journal::Undo;
use crate::kernel::NsId;

const MAX_NAME: usize = 64;

fn check_name(kind: &str, name: &str) -> HostResult<()> {
    if name.is_empty() || name.len() > MAX_NAME || name.chars().any(|c| c.is_control()) {
        return Err(HostError::invalid(format!(
            "{kind} name {name:?} must be 1 to {MAX_NAME} printable characters"
        )));
    }
    Ok(())
}

fn validate(op: &Op) -> HostResult<()> {
    match op {
        Op::AddChain { name: c, .. } | Op::DeleteChain(c) | Op::FlushChain(c) => {
            check_name("chain", c)
        }
        Op::AddRule { chain, rule } => {
            check_name("chain", chain)?;
            check_name("rule id", &rule.id)
        }
        Op::DeleteRule { chain, id } => {
            check_name("chain", chain)?;
            check_name("rule id", id)
        }
        Op::AddSet { name, .. } | Op::DeleteSet(name) => check_name("set", name),
        Op::AddElement { set, .. } | Op::DeleteElement { set, .. } => check_name("set", set),
        Op::DeleteTable => Ok(()),
    }
}

impl Host for HostState {
    fn apply(&mut self, batch: Vec<WitOp>) -> HostResult<()> {
        self.network("netfilter apply")?;
        let batch: Vec<Op> = batch.iter().map(super::nft_v01::op).collect::<HostResult<_>>()?;
        for op in &batch {
            validate(op)?;
        }
        if batch.is_empty() {
            return Ok(());
        }
        let table = self.grant.nft_table();
        let existed = self.kernel.nft_tables(NsId::NODE)?.contains(&table);
        let chains_before = if existed {
            self.kernel.nft_chains(NsId::NODE, &table)?
        } else {
            Vec::new()
        };
        self.kernel.nft_apply(NsId::NODE, &table, &batch)?;
        if !existed {
            self.journal.record(Undo::Nft {
                ns: NsId::NODE,
                table,
                ops: vec![Op::DeleteTable],
            });
            return Ok(());
        }
        let mut inverse = Vec::new();
        for op in batch.iter().rev() {
            match op {
                Op::AddChain { name, .. } if !chains_before.contains(name) => {
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

    fn list_rules(&mut self, chain: String) -> HostResult<Vec<String>> {
        check_name("chain", &chain)?;
        let table = self.grant.nft_table();
        Ok(self.kernel.nft_rules(NsId::NODE, &table, &chain)?)
    }
}
