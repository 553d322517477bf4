//! Pools: what a requested pool may be, which pool to pick when none is
//! asked for, and a held pool's record in the store.

use std::net::Ipv4Addr;

use ipnet::Ipv4Net;
use serde::{Deserialize, Serialize};

use crate::addr::{self, overlaps};
use crate::Error;

/// Shortest and longest pool prefixes accepted: what the host accepts.
pub const MIN_PREFIX: u8 = 8;
pub const MAX_PREFIX: u8 = 30;

/// The network of a requested pool (`10.77.0.5/24` -> `10.77.0.0/24`),
/// checking its size.
pub fn normalise_pool(p: Ipv4Net) -> Result<Ipv4Net, Error> {
    if !(MIN_PREFIX..=MAX_PREFIX).contains(&p.prefix_len()) {
        return Err(Error::Invalid(format!(
            "pool {p}: the prefix length must be from /{MIN_PREFIX} to /{MAX_PREFIX}"
        )));
    }
    Ok(p.trunc())
}

/// The network of a requested sub-pool, which must lie inside `pool`.
pub fn normalise_sub_pool(pool: Ipv4Net, sub: Ipv4Net) -> Result<Ipv4Net, Error> {
    let sub = sub.trunc();
    if !pool.contains(&sub) {
        return Err(Error::Invalid(format!(
            "sub-pool {sub} is not inside pool {pool}"
        )));
    }
    Ok(sub)
}

/// Docker's default local address pools, in the order they are tried:
/// 172.17.0.0/16 … 172.31.0.0/16, then 192.168.0.0/20 … 192.168.240.0/20.
pub fn default_candidates() -> impl Iterator<Item = Ipv4Net> {
    let net = |a, len| Ipv4Net::new(a, len).expect("a literal prefix length is at most 32");
    let a = (17u8..=31).map(move |b| net(Ipv4Addr::new(172, b, 0, 0), 16));
    let b = (0u8..16).map(move |i| net(Ipv4Addr::new(192, 168, i * 16, 0), 20));
    a.chain(b)
}

/// The first default candidate that overlaps no held pool and no node
/// route. Default routes (/0) do not count: every node has one.
pub fn pick_default(held: &[Ipv4Net], routes: &[Ipv4Net]) -> Option<Ipv4Net> {
    default_candidates().find(|c| {
        !held.iter().any(|h| overlaps(h, c))
            && !routes
                .iter()
                .filter(|r| r.prefix_len() > 0)
                .any(|r| overlaps(r, c))
    })
}

/// A pool as stored under `ipam/pools/<id>`:
/// `{"pool": "10.77.0.0/24", "sub-pool": null, "refcount": 1}`.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, Eq)]
pub struct PoolRecord {
    pub pool: String,
    #[serde(rename = "sub-pool", default)]
    pub sub_pool: Option<String>,
    pub refcount: u32,
}

impl PoolRecord {
    pub fn to_json(&self) -> Vec<u8> {
        serde_json::to_vec(self).expect("a record of strings and a number always serialises")
    }

    /// The record stored under `key`; bad bytes are a corrupt store
    /// (`failed`, naming the key), never a panic.
    pub fn from_json(key: &str, bytes: &[u8]) -> Result<PoolRecord, Error> {
        serde_json::from_slice(bytes)
            .map_err(|e| Error::Failed(format!("store key {key}: corrupt pool record: {e}")))
    }

    /// The pool and sub-pool it describes, checked like a request: the
    /// allocation arithmetic relies on a pool from /8 to /30 and a
    /// sub-pool inside it, whatever the store holds.
    pub fn nets(&self, key: &str) -> Result<(Ipv4Net, Option<Ipv4Net>), Error> {
        let bad = |m: String| Error::Failed(format!("store key {key}: corrupt pool record: {m}"));
        let unfit = |e: Error| bad(crate::log::show_error(&e));
        let pool = addr::parse_v4(&self.pool).map_err(bad)?;
        let pool = normalise_pool(pool).map_err(unfit)?;
        let sub = match &self.sub_pool {
            Some(s) => {
                let sub = addr::parse_v4(s).map_err(bad)?;
                Some(normalise_sub_pool(pool, sub).map_err(unfit)?)
            }
            None => None,
        };
        Ok((pool, sub))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn n(s: &str) -> Ipv4Net {
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
        // Written before "sub-pool" existed: absent means none.
        let old = PoolRecord::from_json("k", br#"{"pool":"10.77.0.0/24","refcount":1}"#).unwrap();
        assert_eq!(old.sub_pool, None);
        assert!(
            matches!(PoolRecord::from_json("k", b"{"), Err(Error::Failed(m)) if m.contains("k"))
        );
    }

    #[test]
    fn hostile_records_are_errors_not_panics() {
        let rec = |pool: &str, sub: Option<&str>| PoolRecord {
            pool: pool.into(),
            sub_pool: sub.map(Into::into),
            refcount: 1,
        };
        for (pool, sub) in [
            ("1.2.3.4/32", None),
            ("0.0.0.0/0", None),
            ("10.0.0.0/31", None),
            ("10.0.0.0/40", None),
            ("nonsense", None),
            ("10.0.0.0/24", Some("10.1.0.0/25")),
            ("10.0.0.0/24", Some("x")),
        ] {
            let e = rec(pool, sub).nets("ipam/pools/p").unwrap_err();
            assert!(
                matches!(&e, Error::Failed(m) if m.starts_with("store key ipam/pools/p: corrupt pool record")),
                "{pool} {sub:?}: {e:?}"
            );
        }
        for bytes in [&b""[..], b"null", b"[]", b"{\"pool\":1}", &[0xff, 0xfe]] {
            assert!(PoolRecord::from_json("k", bytes).is_err());
        }
    }
}
