//! The driver's nftables layout (chains and set shared by all its networks)
//! and small helpers over the `netfilter` import.

use crate::netshim::plugin::netfilter::{self, BaseChain, ChainType, Hook, Op, SetType};
use crate::netshim::plugin::types::Error;

/// NAT postrouting: masquerade of each non-internal network.
pub const POSTROUTING: &str = "postrouting";
/// Filter forward: isolation between bridges, internal networks.
pub const FORWARD: &str = "forward";
/// NAT prerouting: DNAT of published ports (traffic from outside).
pub const PREROUTING: &str = "prerouting";
/// NAT output: DNAT of published ports (traffic from the node itself).
pub const OUTPUT: &str = "output";
/// Set of the bridge names of every network of this driver.
pub const BRIDGES_SET: &str = "bridges";

fn base(hook: Hook, chain_type: ChainType, priority: i32) -> Option<BaseChain> {
    Some(BaseChain {
        hook,
        chain_type,
        priority,
        policy_drop: false,
    })
}

pub fn add_postrouting() -> Op {
    Op::AddChain((
        POSTROUTING.into(),
        base(Hook::Postrouting, ChainType::Nat, 100),
    ))
}

pub fn add_forward() -> Op {
    Op::AddChain((FORWARD.into(), base(Hook::Forward, ChainType::Filter, 0)))
}

pub fn add_prerouting() -> Op {
    Op::AddChain((
        PREROUTING.into(),
        base(Hook::Prerouting, ChainType::Nat, -100),
    ))
}

pub fn add_output() -> Op {
    Op::AddChain((OUTPUT.into(), base(Hook::Output, ChainType::Nat, -100)))
}

pub fn add_bridges_set() -> Op {
    Op::AddSet((BRIDGES_SET.into(), SetType::Ifname))
}

/// Ids of the rules in `chain`; a chain that does not exist yet has none.
pub fn rule_ids(chain: &str) -> Result<Vec<String>, Error> {
    match netfilter::list_rules(chain) {
        Ok(ids) => Ok(ids),
        Err(Error::NotFound(_)) => Ok(Vec::new()),
        Err(e) => Err(e),
    }
}

/// Apply a batch that sets up shared objects (chains, sets) along with
/// per-network ones. `add-chain` is idempotent by contract; if the host
/// reports `exists` (e.g. for a set that is already there) the batch is
/// retried once without the shared `add-set` ops, which are already present.
pub fn apply_setup(batch: Vec<Op>) -> Result<(), Error> {
    match netfilter::apply(&batch) {
        Err(Error::Exists(_)) if batch.iter().any(|op| matches!(op, Op::AddSet(_))) => {
            let rest: Vec<Op> = batch
                .into_iter()
                .filter(|op| !matches!(op, Op::AddSet(_)))
                .collect();
            netfilter::apply(&rest)
        }
        r => r,
    }
}
