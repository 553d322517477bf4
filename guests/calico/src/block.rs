//! An IPAM allocation block as Calico keeps it (libcalico-go's
//! `AllocationBlock`): a CIDR (a /26 by default) with node affinity, an
//! ordinal per address pointing at its attributes (handle and secondary
//! data) or empty, and the free ordinals in a FIFO queue so the address
//! free longest is handed out first. The JSON is Calico's, so blocks
//! written by Calico's tools read here and the other way round.
//!
//! A block read from the cluster store is hostile until [`Block::parse`]
//! checked it: sizes, indices and the free queue must agree.

use std::collections::BTreeMap;
use std::net::Ipv4Addr;

use ipnet::Ipv4Net;
use serde::{Deserialize, Serialize};

/// The longest block Calico allows (a /20): 4,096 ordinals.
const MIN_BLOCK_PREFIX: u8 = 20;
/// Attributes one block may carry (one per handle, at most one per address).
const MAX_ATTRIBUTES: usize = 4096;

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Attribute {
    #[serde(rename = "handle_id", default, skip_serializing_if = "Option::is_none")]
    pub handle_id: Option<String>,
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub secondary: BTreeMap<String, String>,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Block {
    pub cidr: Ipv4Net,
    /// `host:<node>` (or `virtual:<name>`), or none for an orphan block.
    pub affinity: Option<String>,
    #[serde(default)]
    pub strict_affinity: bool,
    /// Ordinal → index into `attributes`, or free.
    pub allocations: Vec<Option<usize>>,
    /// Free ordinals, the one free longest first.
    pub unallocated: Vec<usize>,
    pub attributes: Vec<Attribute>,
    #[serde(default)]
    pub deleted: bool,
    #[serde(default)]
    pub sequence_number: u64,
    #[serde(default)]
    pub sequence_number_for_allocation: BTreeMap<String, u64>,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum BlockError {
    /// No free address left.
    Full,
    /// The address is not in this block, or not free / not allocated.
    NotHere(Ipv4Addr),
    Taken(Ipv4Addr),
}

impl Block {
    /// A new, empty block with affinity to `node`.
    pub fn new(cidr: Ipv4Net, node: &str) -> Block {
        let n = size(&cidr);
        Block {
            cidr: cidr.trunc(),
            affinity: Some(format!("host:{node}")),
            strict_affinity: false,
            allocations: vec![None; n],
            unallocated: (0..n).collect(),
            attributes: Vec::new(),
            deleted: false,
            sequence_number: 0,
            sequence_number_for_allocation: BTreeMap::new(),
        }
    }

    /// Read and check a block from the cluster store.
    pub fn parse(bytes: &[u8]) -> Result<Block, String> {
        let b: Block =
            serde_json::from_slice(bytes).map_err(|e| format!("not Calico's block JSON: {e}"))?;
        if b.cidr != b.cidr.trunc() || b.cidr.prefix_len() < MIN_BLOCK_PREFIX {
            return Err(format!(
                "block CIDR {} is not a /{MIN_BLOCK_PREFIX} to /32 network",
                b.cidr
            ));
        }
        let n = size(&b.cidr);
        if b.allocations.len() != n {
            return Err(format!(
                "{} allocations for a block of {n} addresses",
                b.allocations.len()
            ));
        }
        if b.attributes.len() > MAX_ATTRIBUTES {
            return Err(format!(
                "{} attributes (at most {MAX_ATTRIBUTES})",
                b.attributes.len()
            ));
        }
        if let Some(bad) = b
            .allocations
            .iter()
            .flatten()
            .find(|i| **i >= b.attributes.len())
        {
            return Err(format!(
                "an allocation points at attribute {bad}, which does not exist"
            ));
        }
        let mut seen = vec![false; n];
        for &o in &b.unallocated {
            if o >= n || seen[o] || b.allocations[o].is_some() {
                return Err(format!(
                    "free ordinal {o} is out of range, repeated or allocated"
                ));
            }
            seen[o] = true;
        }
        let free = b.allocations.iter().filter(|a| a.is_none()).count();
        if free != b.unallocated.len() {
            return Err(format!(
                "{free} free addresses but {} in the free queue",
                b.unallocated.len()
            ));
        }
        Ok(b)
    }

    pub fn to_json(&self) -> Vec<u8> {
        serde_json::to_vec(self).unwrap_or_default()
    }

    /// The node the block is affine to.
    pub fn node(&self) -> Option<&str> {
        self.affinity
            .as_deref()
            .and_then(|a| a.strip_prefix("host:"))
    }

    pub fn in_use(&self) -> usize {
        self.allocations.len() - self.unallocated.len()
    }

    pub fn is_empty(&self) -> bool {
        self.unallocated.len() == self.allocations.len()
    }

    fn ordinal(&self, a: Ipv4Addr) -> Option<usize> {
        self.cidr
            .contains(&a)
            .then(|| (u32::from(a) - u32::from(self.cidr.network())) as usize)
    }

    fn address(&self, ordinal: usize) -> Ipv4Addr {
        Ipv4Addr::from(u32::from(self.cidr.network()) + ordinal as u32)
    }

    fn attribute(&mut self, handle: &str, secondary: &BTreeMap<String, String>) -> usize {
        let want = Attribute {
            handle_id: Some(handle.to_string()),
            secondary: secondary.clone(),
        };
        match self.attributes.iter().position(|a| *a == want) {
            Some(i) => i,
            None => {
                self.attributes.push(want);
                self.attributes.len() - 1
            }
        }
    }

    fn mark(&mut self, ordinal: usize, attr: usize) {
        self.allocations[ordinal] = Some(attr);
        self.sequence_number += 1;
        self.sequence_number_for_allocation
            .insert(ordinal.to_string(), self.sequence_number);
    }

    /// Hand out the address free longest.
    pub fn assign(
        &mut self,
        handle: &str,
        secondary: &BTreeMap<String, String>,
    ) -> Result<Ipv4Addr, BlockError> {
        if self.unallocated.is_empty() {
            return Err(BlockError::Full);
        }
        let ordinal = self.unallocated.remove(0);
        let attr = self.attribute(handle, secondary);
        self.mark(ordinal, attr);
        Ok(self.address(ordinal))
    }

    /// Hand out `a` itself.
    pub fn assign_address(
        &mut self,
        a: Ipv4Addr,
        handle: &str,
        secondary: &BTreeMap<String, String>,
    ) -> Result<(), BlockError> {
        let ordinal = self.ordinal(a).ok_or(BlockError::NotHere(a))?;
        let pos = self
            .unallocated
            .iter()
            .position(|o| *o == ordinal)
            .ok_or(BlockError::Taken(a))?;
        self.unallocated.remove(pos);
        let attr = self.attribute(handle, secondary);
        self.mark(ordinal, attr);
        Ok(())
    }

    /// Give `a` back (to the end of the free queue); its handle.
    pub fn release(&mut self, a: Ipv4Addr) -> Result<Option<String>, BlockError> {
        let ordinal = self.ordinal(a).ok_or(BlockError::NotHere(a))?;
        let attr = self.allocations[ordinal].ok_or(BlockError::NotHere(a))?;
        let handle = self.attributes.get(attr).and_then(|x| x.handle_id.clone());
        self.allocations[ordinal] = None;
        self.unallocated.push(ordinal);
        self.sequence_number += 1;
        self.sequence_number_for_allocation
            .remove(&ordinal.to_string());
        self.drop_unused_attributes();
        Ok(handle)
    }

    /// Give back every address of `handle`; the addresses.
    pub fn release_handle(&mut self, handle: &str) -> Vec<Ipv4Addr> {
        let addrs: Vec<Ipv4Addr> = self
            .allocations
            .iter()
            .enumerate()
            .filter(|(_, a)| {
                a.and_then(|i| self.attributes.get(i))
                    .is_some_and(|x| x.handle_id.as_deref() == Some(handle))
            })
            .map(|(o, _)| self.address(o))
            .collect();
        for a in &addrs {
            let _ = self.release(*a);
        }
        addrs
    }

    /// Attributes no allocation points at go, and indices are renumbered.
    fn drop_unused_attributes(&mut self) {
        let mut used = vec![false; self.attributes.len()];
        for i in self.allocations.iter().flatten() {
            used[*i] = true;
        }
        let mut new_index = vec![0; self.attributes.len()];
        let mut kept = Vec::new();
        for (i, a) in self.attributes.drain(..).enumerate() {
            if used[i] {
                new_index[i] = kept.len();
                kept.push(a);
            }
        }
        self.attributes = kept;
        for a in self.allocations.iter_mut().flatten() {
            *a = new_index[*a];
        }
    }
}

fn size(cidr: &Ipv4Net) -> usize {
    1usize << (32 - cidr.prefix_len())
}

/// A free block of `pool` (blocks of `block_len`) that overlaps none of
/// `taken`: among the first 100 free, one chosen by `seed` (the node's
/// name), so nodes claiming at once rarely want the same one.
pub fn free_block(pool: &Ipv4Net, block_len: u8, taken: &[Ipv4Net], seed: &str) -> Option<Ipv4Net> {
    if block_len < pool.prefix_len() || block_len > 32 {
        return None;
    }
    let step = 1u64 << (32 - block_len);
    let count = (1u64 << (block_len - pool.prefix_len())).min(1 << 16);
    let base = u64::from(u32::from(pool.network()));
    let free: Vec<Ipv4Net> = (0..count)
        .filter_map(|i| Ipv4Net::new(Ipv4Addr::from((base + i * step) as u32), block_len).ok())
        .filter(|b| {
            !taken
                .iter()
                .any(|t| netshim_guest_sdk::addr::overlaps(t, b))
        })
        .take(100)
        .collect();
    if free.is_empty() {
        return None;
    }
    let h = netshim_guest_sdk::names::fnv1a32(seed);
    Some(free[h as usize % free.len()])
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sec() -> BTreeMap<String, String> {
        [("node".to_string(), "n1".to_string())]
            .into_iter()
            .collect()
    }

    #[test]
    fn addresses_come_out_in_order_and_the_longest_free_goes_first() {
        let mut b = Block::new("10.244.120.64/26".parse().unwrap(), "n1");
        assert_eq!(b.node(), Some("n1"));
        let a0 = b.assign("h0", &sec()).unwrap();
        let a1 = b.assign("h1", &sec()).unwrap();
        assert_eq!(
            (a0, a1),
            (
                "10.244.120.64".parse().unwrap(),
                "10.244.120.65".parse().unwrap()
            )
        );
        assert_eq!(b.release(a0).unwrap(), Some("h0".to_string()));
        // a0 is now at the end of the queue: the next one is .66.
        assert_eq!(
            b.assign("h2", &sec()).unwrap(),
            "10.244.120.66".parse::<Ipv4Addr>().unwrap()
        );
        assert_eq!(b.in_use(), 2);
        assert_eq!(
            b.attributes.len(),
            2,
            "h0's attribute went with its last address"
        );
        let parsed = Block::parse(&b.to_json()).unwrap();
        assert_eq!(parsed, b);
    }

    #[test]
    fn a_block_fills_up_and_handles_release_everything_they_hold() {
        let mut b = Block::new("10.0.0.0/30".parse().unwrap(), "n1");
        for i in 0..4 {
            b.assign(if i % 2 == 0 { "even" } else { "odd" }, &sec())
                .unwrap();
        }
        assert_eq!(b.assign("x", &sec()), Err(BlockError::Full));
        let released = b.release_handle("even");
        assert_eq!(released.len(), 2);
        assert_eq!(b.in_use(), 2);
        assert!(b
            .attributes
            .iter()
            .all(|a| a.handle_id.as_deref() == Some("odd")));
        b.release_handle("odd");
        assert!(b.is_empty() && b.attributes.is_empty());
        let a: Ipv4Addr = "10.0.0.2".parse().unwrap();
        b.assign_address(a, "s", &sec()).unwrap();
        assert_eq!(b.assign_address(a, "s", &sec()), Err(BlockError::Taken(a)));
        let outside: Ipv4Addr = "10.0.0.9".parse().unwrap();
        assert_eq!(
            b.assign_address(outside, "s", &sec()),
            Err(BlockError::NotHere(outside))
        );
    }

    #[test]
    fn calicos_own_json_reads_and_hostile_blocks_are_refused() {
        // The shape of a block Calico wrote (libcalico-go field names).
        let theirs = br#"{"cidr":"10.244.2.0/30","affinity":"host:node-2","strictAffinity":false,
            "allocations":[0,null,null,null],"unallocated":[1,2,3],
            "attributes":[{"handle_id":"k8s-pod-network.abc","secondary":{"namespace":"default","node":"node-2","pod":"p"}}],
            "deleted":false,"sequenceNumber":1,"sequenceNumberForAllocation":{"0":1}}"#;
        let b = Block::parse(theirs).unwrap();
        assert_eq!(b.node(), Some("node-2"));
        assert_eq!(b.in_use(), 1);
        for (bad, why) in [
            (&br#"{"cidr":"10.244.2.1/30","affinity":null,"allocations":[null,null,null,null],"unallocated":[0,1,2,3],"attributes":[]}"#[..], "network"),
            (br#"{"cidr":"10.0.0.0/8","affinity":null,"allocations":[],"unallocated":[],"attributes":[]}"#, "network"),
            (br#"{"cidr":"10.244.2.0/30","affinity":null,"allocations":[null],"unallocated":[0],"attributes":[]}"#, "allocations"),
            (br#"{"cidr":"10.244.2.0/30","affinity":null,"allocations":[5,null,null,null],"unallocated":[1,2,3],"attributes":[]}"#, "attribute 5"),
            (br#"{"cidr":"10.244.2.0/30","affinity":null,"allocations":[null,null,null,null],"unallocated":[0,0,1,2],"attributes":[]}"#, "repeated"),
            (br#"{"cidr":"10.244.2.0/30","affinity":null,"allocations":[null,null,null,null],"unallocated":[0,1],"attributes":[]}"#, "free queue"),
            (br#"not json"#, "JSON"),
        ] {
            let e = Block::parse(bad).unwrap_err();
            assert!(e.contains(why), "{why}: {e}");
        }
    }

    #[test]
    fn free_blocks_avoid_what_is_claimed() {
        let pool: Ipv4Net = "192.168.0.0/24".parse().unwrap();
        let taken: Vec<Ipv4Net> = vec![
            "192.168.0.0/26".parse().unwrap(),
            "192.168.0.128/26".parse().unwrap(),
        ];
        for seed in ["a", "b", "node-3"] {
            let got = free_block(&pool, 26, &taken, seed).unwrap();
            assert!(
                ["192.168.0.64/26", "192.168.0.192/26"].contains(&got.to_string().as_str()),
                "{got}"
            );
        }
        let all: Vec<Ipv4Net> = vec![pool];
        assert_eq!(free_block(&pool, 26, &all, "a"), None);
        assert_eq!(
            free_block(&pool, 16, &[], "a"),
            None,
            "a block longer than the pool"
        );
    }
}
