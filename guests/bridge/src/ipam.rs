//! IPAM of the bridge driver: IPv4 pools and addresses, kept in the store.
//!
//! Store layout (all under `ipam/`):
//! - `ipam/pools/<pool id>`: JSON `{"pool": "10.77.0.0/24", "sub-pool": null, "refcount": 1}`;
//!   the pool id is the pool's CIDR.
//! - `ipam/alloc/<pool id>`: allocation bitmap; bit `i` (LSB first) of byte
//!   `i / 8` is the address at offset `i` from the network address. Trailing
//!   zero bytes are not stored, so a sparse /8 stays small.
//!
//! Every write is a compare-and-swap (`absent` or `revision(n)`), retried
//! after a re-read when it loses a race.

use std::net::Ipv4Addr;

use serde::{Deserialize, Serialize};

use crate::addr::{self, Net4};
use crate::exports::netshim::plugin0_1_0::ipam::{Pool, PoolRequest};
use crate::netshim::plugin0_1_0::route;
use crate::netshim::plugin0_1_0::store::{self, Condition};
use crate::netshim::plugin0_1_0::types::{Error, IpAddress, IpPrefix};

/// Shortest and longest pool prefixes accepted.
pub const MIN_PREFIX: u8 = 8;
pub const MAX_PREFIX: u8 = 30;
/// Attempts of a compare-and-swap loop before giving up.
const CAS_ATTEMPTS: usize = 16;
/// Docker's `RequestAddressType` option and its gateway value.
const OPT_REQUEST_TYPE: &str = "RequestAddressType";
const REQUEST_TYPE_GATEWAY: &str = "com.docker.network.gateway";

// ---------------------------------------------------------------------------
// Pure logic

/// The network of a requested pool (`10.77.0.5/24` -> `10.77.0.0/24`),
/// checking its size.
pub fn normalise_pool(p: Net4) -> Result<Net4, Error> {
    if !(MIN_PREFIX..=MAX_PREFIX).contains(&p.len) {
        return Err(Error::Invalid(format!(
            "pool {p}: the prefix length must be from /{MIN_PREFIX} to /{MAX_PREFIX}"
        )));
    }
    Ok(p.network())
}

/// The network of a requested sub-pool, which must lie inside `pool`.
pub fn normalise_sub_pool(pool: Net4, sub: Net4) -> Result<Net4, Error> {
    let sub = sub.network();
    if !pool.contains(&sub) {
        return Err(Error::Invalid(format!(
            "sub-pool {sub} is not inside pool {pool}"
        )));
    }
    Ok(sub)
}

/// Docker's default local address pools, in the order they are tried:
/// 172.17.0.0/16 … 172.31.0.0/16, then 192.168.0.0/20 … 192.168.240.0/20.
pub fn default_candidates() -> impl Iterator<Item = Net4> {
    let a = (17u8..=31).map(|b| Net4 {
        addr: Ipv4Addr::new(172, b, 0, 0),
        len: 16,
    });
    let b = (0u16..16).map(|i| Net4 {
        addr: Ipv4Addr::new(192, 168, (i * 16) as u8, 0),
        len: 20,
    });
    a.chain(b)
}

/// The first default candidate that overlaps no held pool and no node
/// route. Default routes (/0) do not count.
pub fn pick_default(held: &[Net4], routes: &[Net4]) -> Option<Net4> {
    default_candidates().find(|c| {
        !held.iter().any(|h| h.overlaps(c))
            && !routes.iter().filter(|r| r.len > 0).any(|r| r.overlaps(c))
    })
}

/// A pool as stored under `ipam/pools/<id>`.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, Eq)]
pub struct PoolRecord {
    pub pool: String,
    #[serde(rename = "sub-pool", default)]
    pub sub_pool: Option<String>,
    pub refcount: u32,
}

impl PoolRecord {
    pub fn to_json(&self) -> Vec<u8> {
        serde_json::to_vec(self).expect("a pool record always serialises")
    }

    pub fn from_json(key: &str, bytes: &[u8]) -> Result<PoolRecord, Error> {
        serde_json::from_slice(bytes)
            .map_err(|e| Error::Failed(format!("store key {key}: corrupt pool record: {e}")))
    }

    /// The pool and sub-pool it describes.
    pub fn nets(&self, key: &str) -> Result<(Net4, Option<Net4>), Error> {
        let bad = |m: String| Error::Failed(format!("store key {key}: corrupt pool record: {m}"));
        let pool: Net4 = self.pool.parse().map_err(bad)?;
        let sub = match &self.sub_pool {
            Some(s) => Some(s.parse::<Net4>().map_err(bad)?),
            None => None,
        };
        Ok((pool, sub))
    }
}

/// Allocation bitmap of a pool.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Bitmap(Vec<u8>);

impl Bitmap {
    pub fn decode(bytes: &[u8]) -> Bitmap {
        Bitmap(bytes.to_vec())
    }

    /// Stored form: trailing zero bytes dropped.
    pub fn encode(&self) -> Vec<u8> {
        let end = self.0.iter().rposition(|&b| b != 0).map_or(0, |i| i + 1);
        self.0[..end].to_vec()
    }

    pub fn is_set(&self, i: u32) -> bool {
        self.0
            .get((i / 8) as usize)
            .is_some_and(|b| b & (1 << (i % 8)) != 0)
    }

    pub fn set(&mut self, i: u32) {
        let byte = (i / 8) as usize;
        if self.0.len() <= byte {
            self.0.resize(byte + 1, 0);
        }
        self.0[byte] |= 1 << (i % 8);
    }

    pub fn clear(&mut self, i: u32) {
        if let Some(b) = self.0.get_mut((i / 8) as usize) {
            *b &= !(1 << (i % 8));
        }
    }

    /// Lowest clear bit in `from..=to`.
    pub fn lowest_free(&self, from: u32, to: u32) -> Option<u32> {
        let mut i = from;
        while i <= to {
            let byte = (i / 8) as usize;
            match self.0.get(byte) {
                None => return Some(i),
                Some(0xff) => i = (byte as u32 + 1) * 8,
                Some(_) if !self.is_set(i) => return Some(i),
                Some(_) => i += 1,
            }
        }
        None
    }
}

/// What a `request-address` asks for.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Want {
    /// The next free address (within the sub-pool if there is one).
    Any,
    /// The gateway: the first usable address if free, else like `Any`.
    Gateway,
    /// This address.
    Addr(Ipv4Addr),
}

/// The offset (from the network address) to allocate in `pool`.
pub fn pick_offset(bm: &Bitmap, pool: Net4, sub: Option<Net4>, want: Want) -> Result<u32, Error> {
    let last_usable = (pool.size() - 2) as u32;
    match want {
        Want::Addr(a) => {
            if !pool.contains_addr(a) {
                return Err(Error::Invalid(format!("address {a} is not in pool {pool}")));
            }
            let off = u32::from(a) - pool.first();
            if off == 0 {
                return Err(Error::Invalid(format!(
                    "address {a} is the network address of pool {pool}"
                )));
            }
            if off > last_usable {
                return Err(Error::Invalid(format!(
                    "address {a} is the broadcast address of pool {pool}"
                )));
            }
            if bm.is_set(off) {
                return Err(Error::Exists(format!(
                    "address {a} is already in use in pool {pool}"
                )));
            }
            Ok(off)
        }
        Want::Gateway if !bm.is_set(1) => Ok(1),
        Want::Gateway | Want::Any => {
            let (from, to) = match sub {
                Some(s) => (
                    (s.first() - pool.first()).max(1),
                    (s.last() - pool.first()).min(last_usable),
                ),
                None => (1, last_usable),
            };
            bm.lowest_free(from, to).ok_or_else(|| match sub {
                Some(s) => Error::Failed(format!(
                    "pool {pool} has no free addresses in its sub-pool {s}"
                )),
                None => Error::Failed(format!("pool {pool} has no free addresses")),
            })
        }
    }
}

// ---------------------------------------------------------------------------
// Store-backed exports

fn pool_key(id: &str) -> String {
    format!("ipam/pools/{id}")
}

fn alloc_key(id: &str) -> String {
    format!("ipam/alloc/{id}")
}

const POOLS_PREFIX: &str = "ipam/pools/";

struct Held {
    key: String,
    revision: u64,
    record: PoolRecord,
    pool: Net4,
    sub: Option<Net4>,
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

fn conflict_exhausted(what: &str) -> Error {
    Error::Failed(format!(
        "{what}: gave up after {CAS_ATTEMPTS} concurrent updates of the store; try again"
    ))
}

fn pool_result(pool: Net4) -> Pool {
    Pool {
        id: pool.to_string(),
        pool: addr::wit_prefix(pool),
        gateway: None,
    }
}

pub fn request_pool(req: &PoolRequest) -> Result<Pool, Error> {
    crate::debug(&format!(
        "request-pool space {:?} pool {:?} sub-pool {:?} v6 {}",
        req.address_space,
        req.pool.as_ref().map(addr::show_prefix),
        req.sub_pool.as_ref().map(addr::show_prefix),
        req.v6
    ));
    if req.v6 {
        return Err(Error::Unsupported(
            "the bridge IPAM does not support IPv6 pools yet".into(),
        ));
    }
    let wanted = match &req.pool {
        Some(p) => {
            let pool = normalise_pool(addr::v4_prefix(p, "pool")?)?;
            let sub = match &req.sub_pool {
                Some(s) => Some(normalise_sub_pool(pool, addr::v4_prefix(s, "sub-pool")?)?),
                None => None,
            };
            Some((pool, sub))
        }
        None if req.sub_pool.is_some() => {
            return Err(Error::Invalid(
                "a sub-pool (--ip-range) needs a pool (--subnet)".into(),
            ))
        }
        None => None,
    };

    for _ in 0..CAS_ATTEMPTS {
        let held = held_pools()?;
        let (pool, sub) = match wanted {
            Some((pool, sub)) => {
                if let Some(h) = held.iter().find(|h| h.pool == pool && h.sub == sub) {
                    // Identical request: same answer, one more reference.
                    let rec = PoolRecord {
                        refcount: h.record.refcount.saturating_add(1),
                        ..h.record.clone()
                    };
                    match store::put(
                        &h.key,
                        &rec.to_json(),
                        Condition::Revision(h.revision),
                        None,
                    ) {
                        Ok(_) => return Ok(pool_result(pool)),
                        Err(Error::Conflict(_)) => continue,
                        Err(e) => return Err(e),
                    }
                }
                if let Some(h) = held.iter().find(|h| h.pool.overlaps(&pool)) {
                    return Err(overlap_error(pool, sub, h));
                }
                (pool, sub)
            }
            None => {
                let routes: Vec<Net4> = route::node_destinations()?
                    .iter()
                    .filter_map(|p| addr::v4_prefix(p, "route").ok())
                    .collect();
                let held_nets: Vec<Net4> = held.iter().map(|h| h.pool).collect();
                match pick_default(&held_nets, &routes) {
                    Some(p) => (p, None),
                    None => {
                        return Err(Error::Failed(
                            "no free default pool: all of 172.17.0.0/16-172.31.0.0/16 and \
                             192.168.0.0/20-192.168.240.0/20 are in use by other pools or node routes; \
                             pass --subnet"
                                .into(),
                        ))
                    }
                }
            }
        };

        let id = pool.to_string();
        let key = pool_key(&id);
        let rec = PoolRecord {
            pool: id.clone(),
            sub_pool: sub.map(|s| s.to_string()),
            refcount: 1,
        };
        let my_rev = match store::put(&key, &rec.to_json(), Condition::Absent, None) {
            Ok(r) => r,
            Err(Error::Conflict(_)) => continue,
            Err(e) => return Err(e),
        };
        // Keys are per pool, so two overlapping pools can be written at the
        // same time; the older record wins and the newer one backs off.
        let again = held_pools()?;
        if let Some(h) = again
            .iter()
            .find(|h| h.key != key && h.pool.overlaps(&pool) && h.revision < my_rev)
        {
            store::delete(&key, Condition::Revision(my_rev))?;
            if wanted.is_some() {
                return Err(overlap_error(pool, sub, h));
            }
            continue;
        }
        crate::debug(&format!("request-pool: allocated {id}"));
        return Ok(pool_result(pool));
    }
    Err(conflict_exhausted("request-pool"))
}

fn overlap_error(pool: Net4, sub: Option<Net4>, h: &Held) -> Error {
    if h.pool == pool {
        Error::Exists(format!(
            "pool {pool} is already in use with a different sub-pool ({} instead of {})",
            h.sub.map_or("none".to_string(), |s| s.to_string()),
            sub.map_or("none".to_string(), |s| s.to_string()),
        ))
    } else {
        Error::Exists(format!(
            "pool {pool} overlaps pool {} already in use",
            h.pool
        ))
    }
}

pub fn release_pool(pool_id: &str) -> Result<(), Error> {
    crate::debug(&format!("release-pool {pool_id}"));
    let key = pool_key(pool_id);
    for _ in 0..CAS_ATTEMPTS {
        let Some(entry) = store::get(&key)? else {
            return Err(Error::NotFound(format!(
                "pool {pool_id} is not held by the bridge IPAM"
            )));
        };
        let rec = PoolRecord::from_json(&key, &entry.value)?;
        let res = if rec.refcount > 1 {
            let rec = PoolRecord {
                refcount: rec.refcount - 1,
                ..rec
            };
            store::put(
                &key,
                &rec.to_json(),
                Condition::Revision(entry.revision),
                None,
            )
            .map(|_| ())
        } else {
            store::delete(&key, Condition::Revision(entry.revision)).and_then(|()| {
                match store::delete(&alloc_key(pool_id), Condition::None) {
                    Ok(()) | Err(Error::NotFound(_)) => Ok(()),
                    Err(e) => Err(e),
                }
            })
        };
        match res {
            Err(Error::Conflict(_)) => continue,
            r => return r,
        }
    }
    Err(conflict_exhausted("release-pool"))
}

fn load_pool(pool_id: &str) -> Result<(Net4, Option<Net4>), Error> {
    let key = pool_key(pool_id);
    let Some(entry) = store::get(&key)? else {
        return Err(Error::NotFound(format!(
            "pool {pool_id} is not held by the bridge IPAM"
        )));
    };
    PoolRecord::from_json(&key, &entry.value)?.nets(&key)
}

fn load_bitmap(key: &str) -> Result<(Bitmap, Condition), Error> {
    Ok(match store::get(key)? {
        Some(e) => (Bitmap::decode(&e.value), Condition::Revision(e.revision)),
        None => (Bitmap::default(), Condition::Absent),
    })
}

pub fn request_address(
    pool_id: &str,
    address: Option<IpAddress>,
    gateway: bool,
    options: &[(String, String)],
) -> Result<IpPrefix, Error> {
    let gateway = gateway
        || options
            .iter()
            .any(|(k, v)| k == OPT_REQUEST_TYPE && v == REQUEST_TYPE_GATEWAY);
    crate::debug(&format!(
        "request-address pool {pool_id} address {:?} gateway {gateway}",
        address.as_ref().map(addr::show_addr)
    ));
    let (pool, sub) = load_pool(pool_id)?;
    let want = match &address {
        Some(a) => Want::Addr(addr::v4_addr(a, "address")?),
        None if gateway => Want::Gateway,
        None => Want::Any,
    };
    let key = alloc_key(pool_id);
    for _ in 0..CAS_ATTEMPTS {
        let (mut bm, cond) = load_bitmap(&key)?;
        let off = pick_offset(&bm, pool, sub, want)?;
        bm.set(off);
        match store::put(&key, &bm.encode(), cond, None) {
            Ok(_) => {
                let a = Net4 {
                    addr: Ipv4Addr::from(pool.first() + off),
                    len: pool.len,
                };
                crate::debug(&format!("request-address pool {pool_id}: {a}"));
                return Ok(addr::wit_prefix(a));
            }
            Err(Error::Conflict(_)) => continue,
            Err(e) => return Err(e),
        }
    }
    Err(conflict_exhausted("request-address"))
}

pub fn release_address(pool_id: &str, address: IpAddress) -> Result<(), Error> {
    crate::debug(&format!(
        "release-address pool {pool_id} address {}",
        addr::show_addr(&address)
    ));
    let (pool, _) = load_pool(pool_id)?;
    let a = addr::v4_addr(&address, "address")?;
    if !pool.contains_addr(a) {
        return Err(Error::Invalid(format!("address {a} is not in pool {pool}")));
    }
    let off = u32::from(a) - pool.first();
    let key = alloc_key(pool_id);
    for _ in 0..CAS_ATTEMPTS {
        let (mut bm, cond) = load_bitmap(&key)?;
        if !bm.is_set(off) {
            return Ok(());
        }
        bm.clear(off);
        let bytes = bm.encode();
        let res = if bytes.is_empty() {
            let Condition::Revision(rev) = cond else {
                unreachable!("a set bit implies a stored bitmap")
            };
            store::delete(&key, Condition::Revision(rev))
        } else {
            store::put(&key, &bytes, cond, None).map(|_| ())
        };
        match res {
            Err(Error::Conflict(_)) => continue,
            r => return r,
        }
    }
    Err(conflict_exhausted("release-address"))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn n(s: &str) -> Net4 {
        s.parse().unwrap()
    }

    #[test]
    fn pool_normalisation() {
        assert_eq!(
            normalise_pool(n("10.77.0.5/24")).unwrap(),
            n("10.77.0.0/24")
        );
        assert_eq!(normalise_pool(n("10.0.0.0/8")).unwrap(), n("10.0.0.0/8"));
        assert_eq!(normalise_pool(n("10.0.0.7/30")).unwrap(), n("10.0.0.4/30"));
        for bad in ["10.0.0.0/7", "10.0.0.0/31", "10.0.0.1/32", "0.0.0.0/0"] {
            assert!(
                matches!(normalise_pool(n(bad)), Err(Error::Invalid(_))),
                "{bad}"
            );
        }
        assert_eq!(
            normalise_sub_pool(n("10.77.0.0/16"), n("10.77.5.9/24")).unwrap(),
            n("10.77.5.0/24")
        );
        assert!(matches!(
            normalise_sub_pool(n("10.77.0.0/24"), n("10.77.0.0/16")),
            Err(Error::Invalid(_))
        ));
        assert!(matches!(
            normalise_sub_pool(n("10.77.0.0/24"), n("10.78.0.0/25")),
            Err(Error::Invalid(_))
        ));
    }

    #[test]
    fn candidates_in_docker_order() {
        let c: Vec<String> = default_candidates().map(|c| c.to_string()).collect();
        assert_eq!(c.len(), 15 + 16);
        assert_eq!(c[0], "172.17.0.0/16");
        assert_eq!(c[14], "172.31.0.0/16");
        assert_eq!(c[15], "192.168.0.0/20");
        assert_eq!(c[16], "192.168.16.0/20");
        assert_eq!(c[30], "192.168.240.0/20");
    }

    #[test]
    fn default_pool_selection() {
        assert_eq!(pick_default(&[], &[]), Some(n("172.17.0.0/16")));
        // The default route does not count, other routes and held pools do.
        let routes = [n("0.0.0.0/0"), n("172.17.0.0/16"), n("172.18.3.0/24")];
        assert_eq!(
            pick_default(&[n("172.19.0.0/16")], &routes),
            Some(n("172.20.0.0/16"))
        );
        // A host route inside a candidate blocks it too.
        assert_eq!(
            pick_default(&[], &[n("172.17.0.1/32")]),
            Some(n("172.18.0.0/16"))
        );
        // A wide route blocks every candidate inside it.
        assert_eq!(
            pick_default(&[], &[n("172.16.0.0/12")]),
            Some(n("192.168.0.0/20"))
        );
        assert_eq!(
            pick_default(&[], &[n("172.16.0.0/12"), n("192.168.0.0/16")]),
            None
        );
    }

    #[test]
    fn pool_record_json() {
        let r = PoolRecord {
            pool: "10.77.0.0/24".into(),
            sub_pool: Some("10.77.0.128/25".into()),
            refcount: 2,
        };
        let j = r.to_json();
        assert_eq!(
            std::str::from_utf8(&j).unwrap(),
            r#"{"pool":"10.77.0.0/24","sub-pool":"10.77.0.128/25","refcount":2}"#
        );
        assert_eq!(PoolRecord::from_json("k", &j).unwrap(), r);
        assert_eq!(
            r.nets("k").unwrap(),
            (n("10.77.0.0/24"), Some(n("10.77.0.128/25")))
        );
        assert!(
            matches!(PoolRecord::from_json("k", b"{"), Err(Error::Failed(m)) if m.contains("k"))
        );
    }

    #[test]
    fn bitmap_basics() {
        let mut b = Bitmap::default();
        assert!(!b.is_set(100));
        b.set(9);
        b.set(1);
        assert!(b.is_set(9) && b.is_set(1) && !b.is_set(2));
        assert_eq!(b.encode(), vec![0b10, 0b10]);
        b.clear(9);
        assert_eq!(b.encode(), vec![0b10]);
        b.clear(1);
        assert!(b.encode().is_empty());
        b.clear(5000); // beyond the end: no-op
        assert_eq!(Bitmap::decode(&[0xff, 0x01]).lowest_free(0, 100), Some(9));
        assert_eq!(Bitmap::decode(&[0xff, 0xff]).lowest_free(3, 15), None);
        assert_eq!(Bitmap::decode(&[0xff, 0xff]).lowest_free(3, 16), Some(16));
    }

    #[test]
    fn allocation() {
        let pool = n("10.77.0.0/24");
        let mut bm = Bitmap::default();
        // Gateway first, then the next free ones.
        assert_eq!(pick_offset(&bm, pool, None, Want::Gateway).unwrap(), 1);
        bm.set(1);
        assert_eq!(pick_offset(&bm, pool, None, Want::Any).unwrap(), 2);
        // A gateway request when .1 is taken falls back to the next free.
        assert_eq!(pick_offset(&bm, pool, None, Want::Gateway).unwrap(), 2);
        // Specific addresses.
        let a = |s: &str| Want::Addr(s.parse().unwrap());
        assert_eq!(pick_offset(&bm, pool, None, a("10.77.0.5")).unwrap(), 5);
        let e = pick_offset(&bm, pool, None, a("10.77.0.1")).unwrap_err();
        assert_eq!(
            crate::show_error(&e),
            "exists: address 10.77.0.1 is already in use in pool 10.77.0.0/24"
        );
        for bad in ["10.77.0.0", "10.77.0.255", "10.78.0.1"] {
            let e = pick_offset(&bm, pool, None, a(bad)).unwrap_err();
            assert!(
                matches!(&e, Error::Invalid(m) if m.contains(bad) && m.contains("10.77.0.0/24")),
                "{e:?}"
            );
        }
        // Released addresses are reused lowest first.
        bm.set(2);
        bm.set(3);
        bm.clear(2);
        assert_eq!(pick_offset(&bm, pool, None, Want::Any).unwrap(), 2);
    }

    #[test]
    fn allocation_in_sub_pool_and_full_pool() {
        let pool = n("10.77.0.0/24");
        let sub = Some(n("10.77.0.128/30"));
        let mut bm = Bitmap::default();
        bm.set(1);
        assert_eq!(pick_offset(&bm, pool, sub, Want::Any).unwrap(), 128);
        for i in 128..=131 {
            bm.set(i);
        }
        assert!(matches!(
            pick_offset(&bm, pool, sub, Want::Any),
            Err(Error::Failed(_))
        ));
        // A specific address outside the sub-pool but inside the pool is fine.
        assert_eq!(
            pick_offset(&bm, pool, sub, Want::Addr("10.77.0.9".parse().unwrap())).unwrap(),
            9
        );
        // A sub-pool at the end of the pool never yields the broadcast.
        let sub = Some(n("10.77.0.252/30"));
        let mut bm = Bitmap::default();
        for _ in 0..3 {
            let o = pick_offset(&bm, pool, sub, Want::Any);
            match o {
                Ok(o) => {
                    assert!(o == 252 || o == 253 || o == 254);
                    bm.set(o)
                }
                Err(_) => break,
            }
        }
        assert!(matches!(
            pick_offset(&bm, pool, sub, Want::Any),
            Err(Error::Failed(_))
        ));

        // A /30 has exactly two usable addresses.
        let small = n("10.0.0.4/30");
        let mut bm = Bitmap::default();
        assert_eq!(pick_offset(&bm, small, None, Want::Gateway).unwrap(), 1);
        bm.set(1);
        assert_eq!(pick_offset(&bm, small, None, Want::Any).unwrap(), 2);
        bm.set(2);
        let e = pick_offset(&bm, small, None, Want::Any).unwrap_err();
        assert_eq!(
            crate::show_error(&e),
            "failed: pool 10.0.0.4/30 has no free addresses"
        );
    }

    #[test]
    fn big_pool_stays_small_when_sparse() {
        let pool = n("10.0.0.0/8");
        let mut bm = Bitmap::default();
        for _ in 0..20 {
            let o = pick_offset(&bm, pool, None, Want::Any).unwrap();
            bm.set(o);
        }
        assert_eq!(bm.encode().len(), 3);
        let last = Want::Addr("10.255.255.254".parse().unwrap());
        assert_eq!(pick_offset(&bm, pool, None, last).unwrap(), (1 << 24) - 2);
    }
}
