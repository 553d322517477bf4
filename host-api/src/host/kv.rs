//! `store` imports: the driver's own key space; every write journalled so a
//! failed call leaves the store as it found it.

use super::{HostError, HostResult, HostState};
use crate::bindings::netshim::plugin::store::{Condition as WitCondition, Entry as WitEntry, Host};
use crate::journal::Undo;
use crate::store::{Condition, Entry};

const MAX_KEY: usize = 1024;
const MAX_VALUE: usize = 1 << 20;

pub(super) fn condition(c: WitCondition) -> Condition {
    match c {
        WitCondition::None => Condition::None,
        WitCondition::Absent => Condition::Absent,
        WitCondition::Revision(r) => Condition::Revision(r),
    }
}

pub(super) fn wit_entry(e: Entry) -> WitEntry {
    WitEntry {
        key: e.key,
        value: e.value,
        revision: e.revision,
    }
}

fn check_key(key: &str) -> HostResult<()> {
    if key.is_empty() || key.len() > MAX_KEY {
        return Err(HostError::invalid(format!(
            "store key must be 1 to {MAX_KEY} bytes (got {})",
            key.len()
        )));
    }
    Ok(())
}

impl Host for HostState {
    fn get(&mut self, key: String) -> HostResult<Option<WitEntry>> {
        check_key(&key)?;
        let space = self.grant.store_space();
        Ok(self.store.get(&space, &key)?.map(wit_entry))
    }

    fn put(
        &mut self,
        key: String,
        value: Vec<u8>,
        cond: WitCondition,
        ttl_seconds: Option<u32>,
    ) -> HostResult<u64> {
        check_key(&key)?;
        let cost = key.len() + value.len();
        if cost > self.store_budget {
            return Err(HostError::invalid(format!(
                "store write of {key:?} exceeds what one call may write ({} bytes)",
                crate::guard::limits::STORE_BYTES_PER_CALL
            )));
        }
        self.store_budget -= cost;
        if value.len() > MAX_VALUE {
            return Err(HostError::invalid(format!(
                "store value for {key:?} is {} bytes; the limit is {MAX_VALUE}",
                value.len()
            )));
        }
        let space = self.grant.store_space();
        let old = self.store.get(&space, &key)?;
        let freed = old.as_ref().map_or(0, |e| e.key.len() + e.value.len());
        let total = self.store.space_bytes(&space)?.saturating_sub(freed) + cost;
        if total > crate::guard::limits::STORE_BYTES_PER_DRIVER {
            return Err(HostError::denied(format!(
                "store write of {key:?} would make driver {} hold {total} bytes, more than its quota of {}",
                self.grant.driver,
                crate::guard::limits::STORE_BYTES_PER_DRIVER
            )));
        }
        let rev = self
            .store
            .put(&space, &key, &value, condition(cond), ttl_seconds)?;
        self.journal.record(Undo::Kv { space, key, old });
        Ok(rev)
    }

    fn delete(&mut self, key: String, cond: WitCondition) -> HostResult<()> {
        check_key(&key)?;
        let space = self.grant.store_space();
        let old = self.store.delete(&space, &key, condition(cond))?;
        if old.is_some() {
            self.journal.record(Undo::Kv { space, key, old });
        }
        Ok(())
    }

    fn list_prefix(&mut self, prefix: String) -> HostResult<Vec<WitEntry>> {
        let space = self.grant.store_space();
        Ok(self
            .store
            .list(&space, &prefix)?
            .into_iter()
            .map(wit_entry)
            .collect())
    }
}
