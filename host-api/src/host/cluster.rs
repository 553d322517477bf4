//! `cluster` imports (WIT 0.2): the driver's subtree of the cluster store.
//! Writes go into the operation's etcd session (buffered, committed with
//! the operation), so a failed call or operation writes nothing; the CNM
//! core takes the session back after each call.

use ipnet::IpNet;

use super::kv::{condition, wit_entry};
use super::{to_prefix, HostError, HostResult, HostState};
use crate::bindings::netshim::plugin::store::{Condition as WitCondition, Entry as WitEntry};
use crate::bindings::netshim::plugin::types::IpPrefix;
use crate::bindings::v0_2::netshim::plugin0_2_0::cluster::Host;
use crate::store::{EtcdSession, Store};

const MAX_KEY: usize = 1024;
/// Route prefixes one call may claim.
const MAX_CLAIMS: usize = 16;
/// Bytes (keys and values) one operation may write to the cluster store.
pub const CLUSTER_BYTES_PER_OPERATION: usize = 256 << 10;

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

impl HostState {
    fn cluster(&mut self, what: &str) -> HostResult<(&mut EtcdSession, String)> {
        match &mut self.cluster {
            ClusterAccess::Absent => Err(HostError::Guest(
                crate::bindings::netshim::plugin::types::Error::Unsupported(format!(
                    "{what}: this node runs without a cluster store (start netshim with --store etcd://HOST:PORT)"
                )),
            )),
            ClusterAccess::Denied => Err(HostError::denied(format!(
                "{what}: call {} may not use the cluster store (only create-network, delete-network, reconcile and IPAM's request/release-pool and request/release-address may)",
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
        Ok(s.get(&root, &key)?.map(wit_entry))
    }

    fn put(
        &mut self,
        key: String,
        value: Vec<u8>,
        cond: WitCondition,
        ttl_seconds: Option<u32>,
    ) -> HostResult<u64> {
        check_key(&key)?;
        if let Some(t) = ttl_seconds {
            if t == 0 || t > crate::store::etcd::MAX_TTL {
                return Err(HostError::invalid(format!(
                    "cluster put of {key:?}: a lease of {t} seconds; leases are 1 to {} seconds (7 days)",
                    crate::store::etcd::MAX_TTL
                )));
            }
        }
        let cost = key.len() + value.len();
        let (s, root) = self.cluster("cluster put")?;
        // Every node shares etcd: what one operation may add to it is
        // bounded (counted over the whole operation, every call of it).
        if s.buffered_bytes() + cost > CLUSTER_BYTES_PER_OPERATION {
            return Err(HostError::invalid(format!(
                "cluster write of {key:?}: one operation may write at most {CLUSTER_BYTES_PER_OPERATION} bytes to the cluster store"
            )));
        }
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
        Ok(s.list(&root, &prefix)?.into_iter().map(wit_entry).collect())
    }

    fn expires_in(&mut self, key: String) -> HostResult<Option<u32>> {
        check_key(&key)?;
        let (s, root) = self.cluster("cluster expires-in")?;
        Ok(s.expires_in(&root, &key)?)
    }

    fn keep_alive(&mut self, key: String) -> HostResult<Option<u32>> {
        check_key(&key)?;
        let (s, root) = self.cluster("cluster keep-alive")?;
        Ok(s.keep_alive(&root, &key)?)
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

#[cfg(test)]
mod tests {
    use std::sync::Arc;

    use super::*;
    use crate::bindings::netshim::plugin::types::Error as WitError;
    use crate::host::{from_prefix, Grant};
    use crate::kernel::fake::FakeKernel;
    use crate::store::LocalStore;

    fn host(tag: &str, access: ClusterAccess) -> (HostState, std::path::PathBuf) {
        let dir = std::env::temp_dir().join(format!("netshim-cl-{tag}-{}", std::process::id()));
        let store = LocalStore::open(&dir).unwrap();
        let h = HostState::new(
            Arc::new(FakeKernel::new()),
            Box::new(store.session().unwrap()),
            Grant::default(),
            "join",
        )
        .with_cluster(access);
        (h, dir)
    }

    #[test]
    fn without_a_cluster_store_or_grant_nothing_is_reached() {
        let (mut h, dir) = host("absent", ClusterAccess::Absent);
        match h.get("config".into()) {
            Err(HostError::Guest(WitError::Unsupported(m))) => {
                assert!(m.contains("--store etcd://"), "{m}")
            }
            other => panic!("{other:?}"),
        }
        let (mut h2, dir2) = host("denied", ClusterAccess::Denied);
        match h2.put("k".into(), b"v".to_vec(), WitCondition::None, None) {
            Err(HostError::Guest(WitError::Denied(m))) => assert!(m.contains("join"), "{m}"),
            other => panic!("{other:?}"),
        }
        match h2.claim_route_prefix(from_prefix("10.244.0.0/16".parse().unwrap())) {
            Err(HostError::Guest(WitError::Denied(_))) => {}
            other => panic!("{other:?}"),
        }
        assert!(h2.claims.is_empty());
        // Bad keys are refused before any store is asked.
        for bad in ["", "a\0b"] {
            assert!(matches!(
                check_key(bad),
                Err(HostError::Guest(WitError::Invalid(_)))
            ));
        }
        assert!(check_key(&"k".repeat(MAX_KEY + 1)).is_err());
        let _ = std::fs::remove_dir_all(dir);
        let _ = std::fs::remove_dir_all(dir2);
    }
}
