//! `cluster` imports (WIT 0.2): the driver's subtree of the cluster store.
//! Writes go into the operation's etcd session (buffered, committed with
//! the operation), so a failed call or operation writes nothing; the CNM
//! core takes the session back after each call.

use ipnet::IpNet;

use super::{to_prefix, HostError, HostResult, HostState};
use crate::bindings::netshim::plugin::store::{Condition as WitCondition, Entry as WitEntry};
use crate::bindings::netshim::plugin::types::IpPrefix;
use crate::bindings::v0_2::netshim::plugin0_2_0::cluster::Host;
use crate::store::{Condition, EtcdSession, Store};

const MAX_KEY: usize = 1024;
/// Below etcd's default request limit (1.5 MiB).
const MAX_VALUE: usize = 1 << 20;
/// Route prefixes one call may claim.
const MAX_CLAIMS: usize = 16;

/// What the call may do with the cluster store.
#[derive(Default)]
pub enum ClusterAccess {
    /// The node runs without a cluster store.
    #[default]
    Absent,
    /// The node has one, but this call may not use it.
    Denied,
    Granted {
        session: Box<EtcdSession>,
        /// The driver's subtree, e.g. "/coreos.com/network".
        root: String,
        /// Whether `claim-route-prefix` is allowed (request-pool of a
        /// network with no operator grant).
        may_claim: bool,
    },
}

impl ClusterAccess {
    /// The session, for the caller to commit or keep using.
    pub fn into_session(self) -> Option<Box<EtcdSession>> {
        match self {
            ClusterAccess::Granted { session, .. } => Some(session),
            _ => None,
        }
    }
}

fn check_key(key: &str) -> HostResult<()> {
    if key.is_empty() || key.len() > MAX_KEY || key.contains('\0') {
        return Err(HostError::invalid(format!(
            "cluster key must be 1 to {MAX_KEY} bytes without NUL (got {} bytes)",
            key.len()
        )));
    }
    Ok(())
}

fn condition(c: WitCondition) -> Condition {
    match c {
        WitCondition::None => Condition::None,
        WitCondition::Absent => Condition::Absent,
        WitCondition::Revision(r) => Condition::Revision(r),
    }
}

impl HostState {
    fn cluster(&mut self, what: &str) -> HostResult<(&mut EtcdSession, String)> {
        match &mut self.cluster {
            ClusterAccess::Absent => Err(HostError::Guest(
                crate::bindings::netshim::plugin::types::Error::Unsupported(format!(
                    "{what}: this node runs without a cluster store (start netshim with --store etcd://HOST:PORT)"
                )),
            )),
            ClusterAccess::Denied => Err(HostError::denied(format!(
                "{what}: call {} may not use the cluster store (only create-network, delete-network, reconcile, request-pool and release-pool may)",
                self.call
            ))),
            ClusterAccess::Granted { session, root, .. } => Ok((session.as_mut(), root.clone())),
        }
    }
}

impl Host for HostState {
    fn get(&mut self, key: String) -> HostResult<Option<WitEntry>> {
        check_key(&key)?;
        let (s, root) = self.cluster("cluster get")?;
        Ok(s.get(&root, &key)?.map(|e| WitEntry {
            key: e.key,
            value: e.value,
            revision: e.revision,
        }))
    }

    fn put(
        &mut self,
        key: String,
        value: Vec<u8>,
        cond: WitCondition,
        ttl_seconds: Option<u32>,
    ) -> HostResult<u64> {
        check_key(&key)?;
        if value.len() > MAX_VALUE {
            return Err(HostError::invalid(format!(
                "cluster value for {key:?} is {} bytes; the limit is {MAX_VALUE}",
                value.len()
            )));
        }
        if ttl_seconds == Some(0) {
            return Err(HostError::invalid(format!(
                "cluster put of {key:?}: a lease of 0 seconds"
            )));
        }
        let cost = key.len() + value.len();
        if cost > self.store_budget {
            return Err(HostError::invalid(format!(
                "cluster write of {key:?} exceeds what one call may write ({} bytes)",
                crate::guard::limits::STORE_BYTES_PER_CALL
            )));
        }
        self.store_budget -= cost;
        let (s, root) = self.cluster("cluster put")?;
        Ok(s.put(&root, &key, &value, condition(cond), ttl_seconds)?)
    }

    fn delete(&mut self, key: String, cond: WitCondition) -> HostResult<()> {
        check_key(&key)?;
        let (s, root) = self.cluster("cluster delete")?;
        s.delete(&root, &key, condition(cond))?;
        Ok(())
    }

    fn list_prefix(&mut self, prefix: String) -> HostResult<Vec<WitEntry>> {
        if prefix.len() > MAX_KEY {
            return Err(HostError::invalid("cluster prefix longer than 1 KiB"));
        }
        let (s, root) = self.cluster("cluster list-prefix")?;
        Ok(s.list(&root, &prefix)?
            .into_iter()
            .map(|e| WitEntry {
                key: e.key,
                value: e.value,
                revision: e.revision,
            })
            .collect())
    }

    fn expires_in(&mut self, key: String) -> HostResult<Option<u32>> {
        check_key(&key)?;
        let (s, root) = self.cluster("cluster expires-in")?;
        Ok(s.expires_in(&root, &key)?)
    }

    fn claim_route_prefix(&mut self, prefix: IpPrefix) -> HostResult<()> {
        let may_claim = matches!(
            self.cluster,
            ClusterAccess::Granted {
                may_claim: true,
                ..
            }
        );
        self.cluster("cluster claim-route-prefix")?;
        if !may_claim {
            return Err(HostError::denied(
                "claim-route-prefix: only request-pool of a network whose operator granted no route prefixes may claim one",
            ));
        }
        let p: IpNet = to_prefix(&prefix)?;
        if self.claims.len() >= MAX_CLAIMS {
            return Err(HostError::invalid(format!(
                "claim-route-prefix: at most {MAX_CLAIMS} prefixes"
            )));
        }
        // Checked against the node by the CNM core, which knows its routes
        // and the other networks; here only kept.
        self.claims.push(p.trunc());
        Ok(())
    }
}
