//! A complete IPv4 IPAM kept in the driver's store: Docker's behaviour
//! (the pool asked for, or the first of Docker's default pools that
//! clashes with no held pool and no node route; the gateway first, then
//! the lowest free address; a sub-pool to allocate from), safe under
//! concurrent calls. A driver's `ipam::Guest` calls [`Ipam`]'s methods.
//!
//! Store layout, shared by every driver that uses it (the bridge's state
//! is in this form):
//! - `ipam/pools/<pool id>`: a [`PoolRecord`] as JSON; the pool id is the
//!   pool's CIDR. Identical requests share it by reference count.
//! - `ipam/alloc/<pool id>`: the [`Bitmap`] of taken addresses.
//!
//! Every write is a compare-and-swap, retried after a re-read when it
//! loses a race ([`crate::store_cas`]).

pub mod bitmap;
pub mod pool;

use ipnet::Ipv4Net;

pub use bitmap::{address_at, pick_offset, Bitmap, Want};
pub use pool::{
    default_candidates, normalise_pool, normalise_sub_pool, pick_default, PoolRecord, MAX_PREFIX,
    MIN_PREFIX,
};

use crate::addr::{self, overlaps};
use crate::guest::ipam::{Pool, PoolRequest};
use crate::host::route;
use crate::host::store::{self, Condition};
use crate::log::debug;
use crate::store_cas::{self, won, Write};
use crate::{Error, IpAddress, IpPrefix};

/// Docker's `RequestAddressType` option and its gateway value: how dockerd
/// asks for a network's gateway address.
pub const OPT_REQUEST_TYPE: &str = "RequestAddressType";
pub const REQUEST_TYPE_GATEWAY: &str = "com.docker.network.gateway";

pub const POOLS_PREFIX: &str = "ipam/pools/";

pub fn pool_key(id: &str) -> String {
    format!("{POOLS_PREFIX}{id}")
}

pub fn alloc_key(id: &str) -> String {
    format!("ipam/alloc/{id}")
}

/// The IPAM of driver `name` (the name only appears in messages, e.g.
/// "pool 10.1.0.0/24 is not held by the bridge IPAM").
#[derive(Clone, Copy, Debug)]
pub struct Ipam {
    name: &'static str,
}

/// A pool held in the store, as read back.
struct Held {
    key: String,
    revision: u64,
    record: PoolRecord,
    pool: Ipv4Net,
    sub: Option<Ipv4Net>,
}

fn held_pools() -> Result<Vec<Held>, Error> {
    store::list_prefix(POOLS_PREFIX)?
        .into_iter()
        .map(|e| {
            let record = PoolRecord::from_json(&e.key, &e.value)?;
            let (pool, sub) = record.nets(&e.key)?;
            Ok(Held {
                key: e.key,
                revision: e.revision,
                record,
                pool,
                sub,
            })
        })
        .collect()
}

fn pool_result(pool: Ipv4Net) -> Pool {
    Pool {
        id: pool.to_string(),
        pool: addr::wit_prefix(pool),
        gateway: None,
    }
}

fn overlap_error(pool: Ipv4Net, sub: Option<Ipv4Net>, h: &Held) -> Error {
    let show = |s: Option<Ipv4Net>| s.map_or("none".to_string(), |s| s.to_string());
    if h.pool == pool {
        Error::Exists(format!(
            "pool {pool} is already in use with a different sub-pool ({} instead of {})",
            show(h.sub),
            show(sub),
        ))
    } else {
        Error::Exists(format!(
            "pool {pool} overlaps pool {} already in use",
            h.pool
        ))
    }
}

/// The pool and sub-pool a request names (`None`: pick a default pool).
fn wanted_pool(req: &PoolRequest) -> Result<Option<(Ipv4Net, Option<Ipv4Net>)>, Error> {
    match &req.pool {
        Some(p) => {
            let pool = normalise_pool(addr::v4_prefix(p, "pool")?)?;
            let sub = match &req.sub_pool {
                Some(s) => Some(normalise_sub_pool(pool, addr::v4_prefix(s, "sub-pool")?)?),
                None => None,
            };
            Ok(Some((pool, sub)))
        }
        None if req.sub_pool.is_some() => Err(Error::Invalid(
            "a sub-pool (--ip-range) needs a pool (--subnet)".into(),
        )),
        None => Ok(None),
    }
}

/// The first default pool clear of `held` and of the node's routes.
fn default_pool(held: &[Held]) -> Result<Ipv4Net, Error> {
    // A route the node has that is not IPv4 (or not valid) cannot clash.
    let routes: Vec<Ipv4Net> = route::node_destinations()?
        .iter()
        .filter_map(|p| addr::v4_prefix(p, "route").ok())
        .collect();
    let held: Vec<Ipv4Net> = held.iter().map(|h| h.pool).collect();
    pick_default(&held, &routes).ok_or_else(|| {
        Error::Failed(
            "no free default pool: all of 172.17.0.0/16-172.31.0.0/16 and \
             192.168.0.0/20-192.168.240.0/20 are in use by other pools or node routes; \
             pass --subnet"
                .into(),
        )
    })
}

impl Ipam {
    pub const fn new(name: &'static str) -> Ipam {
        Ipam { name }
    }

    fn not_held(&self, pool_id: &str) -> Error {
        Error::NotFound(format!(
            "pool {pool_id} is not held by the {} IPAM",
            self.name
        ))
    }

    /// The pool and sub-pool of a held pool.
    fn load_pool(&self, pool_id: &str) -> Result<(Ipv4Net, Option<Ipv4Net>), Error> {
        let key = pool_key(pool_id);
        let Some(entry) = store::get(&key)? else {
            return Err(self.not_held(pool_id));
        };
        PoolRecord::from_json(&key, &entry.value)?.nets(&key)
    }

    /// `ipam.request-pool`: the pool asked for (an identical request shares
    /// it), or a default one; `exists` when it overlaps a held pool.
    pub fn request_pool(&self, req: &PoolRequest) -> Result<Pool, Error> {
        debug(&format!(
            "request-pool space {:?} pool {:?} sub-pool {:?} v6 {}",
            req.address_space,
            req.pool.as_ref().map(addr::show_prefix),
            req.sub_pool.as_ref().map(addr::show_prefix),
            req.v6
        ));
        if req.v6 {
            return Err(Error::Unsupported(format!(
                "the {} IPAM does not support IPv6 pools yet",
                self.name
            )));
        }
        let wanted = wanted_pool(req)?;
        store_cas::retry("request-pool", || {
            let held = held_pools()?;
            let (pool, sub) = match wanted {
                Some((pool, sub)) => {
                    if let Some(h) = held.iter().find(|h| h.pool == pool && h.sub == sub) {
                        // Identical request: same answer, one more reference.
                        let rec = PoolRecord {
                            refcount: h.record.refcount.saturating_add(1),
                            ..h.record.clone()
                        };
                        let cond = Condition::Revision(h.revision);
                        let put = won(store::put(&h.key, &rec.to_json(), cond, None))?;
                        return Ok(put.map(|_| pool_result(pool)));
                    }
                    if let Some(h) = held.iter().find(|h| overlaps(&h.pool, &pool)) {
                        return Err(overlap_error(pool, sub, h));
                    }
                    (pool, sub)
                }
                None => (default_pool(&held)?, None),
            };

            let id = pool.to_string();
            let key = pool_key(&id);
            let rec = PoolRecord {
                pool: id.clone(),
                sub_pool: sub.map(|s| s.to_string()),
                refcount: 1,
            };
            let Some(my_rev) = won(store::put(&key, &rec.to_json(), Condition::Absent, None))?
            else {
                return Ok(None);
            };
            // Keys are per pool, so two overlapping pools can be written at
            // the same time; the older record wins and the newer one backs off.
            let again = held_pools()?;
            if let Some(h) = again
                .iter()
                .find(|h| h.key != key && overlaps(&h.pool, &pool) && h.revision < my_rev)
            {
                store::delete(&key, Condition::Revision(my_rev))?;
                if wanted.is_some() {
                    return Err(overlap_error(pool, sub, h));
                }
                return Ok(None);
            }
            debug(&format!("request-pool: allocated {id}"));
            Ok(Some(pool_result(pool)))
        })
    }

    /// `ipam.release-pool`: one reference less; the last one removes the
    /// pool and its allocations.
    pub fn release_pool(&self, pool_id: &str) -> Result<(), Error> {
        debug(&format!("release-pool {pool_id}"));
        let key = pool_key(pool_id);
        let last = store_cas::update(&key, "release-pool", |current| {
            let Some(bytes) = current else {
                return Err(self.not_held(pool_id));
            };
            let rec = PoolRecord::from_json(&key, bytes)?;
            Ok(if rec.refcount > 1 {
                let rec = PoolRecord {
                    refcount: rec.refcount - 1,
                    ..rec
                };
                (Write::Put(rec.to_json()), false)
            } else {
                (Write::Delete, true)
            })
        })?;
        if last {
            match store::delete(&alloc_key(pool_id), Condition::None) {
                Ok(()) | Err(Error::NotFound(_)) => {}
                Err(e) => return Err(e),
            }
        }
        Ok(())
    }

    /// `ipam.request-address`: `address` if given, else the gateway (asked
    /// for by `gateway` or Docker's `RequestAddressType` option), else the
    /// lowest free address. Returned with the pool's prefix length.
    pub fn request_address(
        &self,
        pool_id: &str,
        address: Option<IpAddress>,
        gateway: bool,
        options: &[(String, String)],
    ) -> Result<IpPrefix, Error> {
        let gateway = gateway
            || options
                .iter()
                .any(|(k, v)| k == OPT_REQUEST_TYPE && v == REQUEST_TYPE_GATEWAY);
        debug(&format!(
            "request-address pool {pool_id} address {:?} gateway {gateway}",
            address.as_ref().map(addr::show_addr)
        ));
        let (pool, sub) = self.load_pool(pool_id)?;
        let want = match &address {
            Some(a) => Want::Addr(addr::v4_addr(a, "address")?),
            None if gateway => Want::Gateway,
            None => Want::Any,
        };
        let off = store_cas::update(&alloc_key(pool_id), "request-address", |current| {
            let mut bm = Bitmap::decode(current.unwrap_or_default());
            let off = pick_offset(&bm, pool, sub, want)?;
            bm.set(off);
            Ok((Write::Put(bm.encode()), off))
        })?;
        let a = address_at(pool, off);
        debug(&format!("request-address pool {pool_id}: {a}"));
        Ok(addr::wit_prefix(a))
    }

    /// `ipam.release-address`: releasing a free address is not an error.
    pub fn release_address(&self, pool_id: &str, address: IpAddress) -> Result<(), Error> {
        debug(&format!(
            "release-address pool {pool_id} address {}",
            addr::show_addr(&address)
        ));
        let (pool, _) = self.load_pool(pool_id)?;
        let a = addr::v4_addr(&address, "address")?;
        if !pool.contains(&a) {
            return Err(Error::Invalid(format!("address {a} is not in pool {pool}")));
        }
        let off = u32::from(a) - u32::from(pool.network());
        store_cas::update(&alloc_key(pool_id), "release-address", |current| {
            let mut bm = Bitmap::decode(current.unwrap_or_default());
            if !bm.is_set(off) {
                return Ok((Write::Keep, ()));
            }
            bm.clear(off);
            let bytes = bm.encode();
            Ok((
                if bytes.is_empty() {
                    Write::Delete
                } else {
                    Write::Put(bytes)
                },
                (),
            ))
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn n(s: &str) -> Ipv4Net {
        s.parse().unwrap()
    }

    fn req(pool: Option<&str>, sub: Option<&str>, v6: bool) -> PoolRequest {
        PoolRequest {
            address_space: "local".into(),
            pool: pool.map(|p| addr::wit_prefix(n(p))),
            sub_pool: sub.map(|p| addr::wit_prefix(n(p))),
            options: vec![],
            v6,
        }
    }

    #[test]
    fn store_keys() {
        assert_eq!(pool_key("10.1.0.0/24"), "ipam/pools/10.1.0.0/24");
        assert_eq!(alloc_key("10.1.0.0/24"), "ipam/alloc/10.1.0.0/24");
        assert!(pool_key("x").starts_with(POOLS_PREFIX));
    }

    #[test]
    fn requests_are_checked_before_the_store() {
        assert_eq!(wanted_pool(&req(None, None, false)).unwrap(), None);
        assert_eq!(
            wanted_pool(&req(Some("10.1.0.9/24"), Some("10.1.0.130/25"), false)).unwrap(),
            Some((n("10.1.0.0/24"), Some(n("10.1.0.128/25"))))
        );
        assert!(matches!(
            wanted_pool(&req(None, Some("10.1.0.0/25"), false)),
            Err(Error::Invalid(m)) if m.contains("--subnet")
        ));
        assert!(matches!(
            wanted_pool(&req(Some("10.1.0.0/31"), None, false)),
            Err(Error::Invalid(_))
        ));
        let e = Ipam::new("demo")
            .request_pool(&req(None, None, true))
            .unwrap_err();
        assert!(
            matches!(&e, Error::Unsupported(m) if m == "the demo IPAM does not support IPv6 pools yet")
        );
        assert!(
            matches!(Ipam::new("bridge").not_held("p"), Error::NotFound(m) if m == "pool p is not held by the bridge IPAM")
        );
    }
}
