//! Which addresses of a pool are taken: one bit per address, stored under
//! `ipam/alloc/<pool id>`. Bit `i` (LSB first) of byte `i / 8` is the
//! address at offset `i` from the network address. Trailing zero bytes are
//! not stored, so a sparse /8 stays a few bytes.

use std::net::Ipv4Addr;

use ipnet::Ipv4Net;

use crate::Error;

/// Allocation bitmap of a pool. Any bytes decode (a bitmap has no invalid
/// form); bits beyond the pool are never looked at.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Bitmap(Vec<u8>);

impl Bitmap {
    pub fn decode(bytes: &[u8]) -> Bitmap {
        Bitmap(bytes.to_vec())
    }

    /// Stored form: trailing zero bytes dropped (empty when no bit is set,
    /// and then the key is deleted instead).
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

    /// Lowest clear bit in `from..=to`; skips full bytes, so a crowded /8
    /// costs a pass over its bytes, not its bits.
    pub fn lowest_free(&self, from: u32, to: u32) -> Option<u32> {
        // u64: stepping past `to` must not wrap when `to` is u32::MAX.
        let mut i = u64::from(from);
        while i <= u64::from(to) {
            let byte = (i / 8) as usize;
            match self.0.get(byte) {
                None => return u32::try_from(i).ok(),
                Some(0xff) => i = (i / 8 + 1) * 8,
                Some(&b) if b & (1 << (i % 8)) == 0 => return u32::try_from(i).ok(),
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

/// First address of `pool`, as a number.
fn first(pool: Ipv4Net) -> u32 {
    u32::from(pool.network())
}

/// The offset (from the network address) to allocate in `pool`, which is
/// a normalised pool from /8 to /30 (see [`super::pool::normalise_pool`]),
/// and `sub` a sub-pool inside it.
pub fn pick_offset(
    bm: &Bitmap,
    pool: Ipv4Net,
    sub: Option<Ipv4Net>,
    want: Want,
) -> Result<u32, Error> {
    // Offsets 0 and the last one are the network and broadcast addresses.
    let last_usable = u32::from(pool.broadcast())
        .saturating_sub(first(pool))
        .saturating_sub(1);
    match want {
        Want::Addr(a) => {
            if !pool.contains(&a) {
                return Err(Error::Invalid(format!("address {a} is not in pool {pool}")));
            }
            let off = u32::from(a) - first(pool);
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
        Want::Gateway if last_usable >= 1 && !bm.is_set(1) => Ok(1),
        Want::Gateway | Want::Any => {
            let (from, to) = match sub {
                Some(s) => (
                    first(s).saturating_sub(first(pool)).max(1),
                    u32::from(s.broadcast())
                        .saturating_sub(first(pool))
                        .min(last_usable),
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

/// The address at `offset` in `pool`, with the pool's prefix length (an
/// interface address).
pub fn address_at(pool: Ipv4Net, offset: u32) -> Ipv4Net {
    let a = Ipv4Addr::from(first(pool).saturating_add(offset));
    Ipv4Net::new(a, pool.prefix_len()).expect("the length of an existing prefix")
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::log::show_error;

    fn n(s: &str) -> Ipv4Net {
        s.parse().unwrap()
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
        assert_eq!(Bitmap::decode(&[0xff, 0x7f]).lowest_free(3, 16), Some(15));
        assert_eq!(Bitmap::decode(&[0xff, 0xff]).lowest_free(9, 8), None);
        assert_eq!(
            Bitmap::decode(&[0xff]).lowest_free(u32::MAX, u32::MAX),
            Some(u32::MAX)
        );
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
            show_error(&e),
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
        assert_eq!(address_at(pool, 2), n("10.77.0.2/24"));
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
            show_error(&e),
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

    #[test]
    fn degenerate_pools_do_not_panic() {
        // The callers only pass /8-/30 pools; anything else must still be
        // an error rather than an overflow.
        let bm = Bitmap::decode(&[0xff; 4]);
        for p in ["10.0.0.1/32", "10.0.0.0/31", "0.0.0.0/0"] {
            let _ = pick_offset(&bm, n(p), None, Want::Any);
            let _ = pick_offset(&bm, n(p), None, Want::Gateway);
            let _ = pick_offset(&bm, n(p), Some(n("10.0.0.0/24")), Want::Any);
        }
        assert!(pick_offset(&Bitmap::default(), n("10.0.0.1/32"), None, Want::Gateway).is_err());
    }
}
