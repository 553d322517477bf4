//! Calico's IPAM on the cluster store: a node hands out addresses from
//! the blocks it holds (affinity), claims a free block of the pool when
//! they are full (up to `max-blocks-per-host`, Calico's 20 by default),
//! and then borrows a free address from another node's block. Every
//! change is a compare-and-swap on the block (the operation's
//! transaction): two nodes never hand out one address.

use std::collections::BTreeMap;
use std::net::Ipv4Addr;

use ipnet::Ipv4Net;
use netshim_guest_sdk::host::cluster;
use netshim_guest_sdk::host::store::Condition;
use netshim_guest_sdk::log::warn;
use netshim_guest_sdk::Error;

use crate::block::{free_block, Block, BlockError};
use crate::keys;
use crate::pool::PoolSpec;

pub const DEFAULT_MAX_BLOCKS: usize = 20;

fn secondary(node: &str) -> BTreeMap<String, String> {
    [("node".to_string(), node.to_string())]
        .into_iter()
        .collect()
}

/// A block as read, with the revision to write it back under.
struct Held {
    block: Block,
    revision: u64,
}

fn read(cidr: &Ipv4Net) -> Result<Option<Held>, Error> {
    let Some(e) = cluster::get(&keys::block(cidr))? else {
        return Ok(None);
    };
    match Block::parse(&e.value) {
        Ok(block) if block.cidr == *cidr => Ok(Some(Held {
            block,
            revision: e.revision,
        })),
        Ok(_) => Err(Error::Failed(format!(
            "block {cidr}: the record names another CIDR"
        ))),
        Err(why) => Err(Error::Failed(format!("block {cidr} is unreadable: {why}"))),
    }
}

fn write(h: &Held) -> Result<(), Error> {
    cluster::put(
        &keys::block(&h.block.cidr),
        &h.block.to_json(),
        Condition::Revision(h.revision),
        None,
    )?;
    Ok(())
}

/// Whether `c` is a block of this pool (inside it, of its block size):
/// keys of any other shape are someone else's, or hostile, and ignored.
fn is_block_of(pool: &PoolSpec, c: &Ipv4Net) -> bool {
    pool.cidr.contains(c) && c.prefix_len() == pool.block_size
}

/// The blocks `node` holds in `pool`.
pub fn blocks_of(node: &str, pool: &PoolSpec) -> Result<Vec<Ipv4Net>, Error> {
    Ok(cluster::list_prefix(&keys::affinities(node))?
        .iter()
        .filter_map(|e| e.key.rsplit('/').next().and_then(keys::undashed))
        .filter(|c| is_block_of(pool, c))
        .collect())
}

/// Every block of `pool` in the cluster.
pub fn all_blocks(pool: &PoolSpec) -> Result<Vec<Ipv4Net>, Error> {
    Ok(cluster::list_prefix(keys::BLOCKS)?
        .iter()
        .filter_map(|e| e.key.rsplit('/').next().and_then(keys::undashed))
        .filter(|c| is_block_of(pool, c))
        .collect())
}

fn note_handle(handle: &str, cidr: &Ipv4Net, delta: i64) -> Result<(), Error> {
    let key = keys::handle(handle);
    let cur = cluster::get(&key)?;
    let mut counts: BTreeMap<String, i64> = cur
        .as_ref()
        .and_then(|e| serde_json::from_slice::<serde_json::Value>(&e.value).ok())
        .and_then(|v| serde_json::from_value(v["block"].clone()).ok())
        .unwrap_or_default();
    let n = counts.entry(cidr.to_string()).or_insert(0);
    *n = (*n + delta).max(0);
    counts.retain(|_, n| *n > 0);
    let cond = match &cur {
        Some(e) => Condition::Revision(e.revision),
        None => Condition::Absent,
    };
    if counts.is_empty() {
        if cur.is_some() {
            cluster::delete(&key, cond)?;
        }
        return Ok(());
    }
    let value = serde_json::json!({ "block": counts, "deleted": false });
    cluster::put(&key, value.to_string().as_bytes(), cond, None)?;
    Ok(())
}

/// An address for `handle` on `node`: `want` itself, or the next free one.
pub fn assign(
    pool: &PoolSpec,
    node: &str,
    handle: &str,
    want: Option<Ipv4Addr>,
    max_blocks: usize,
) -> Result<Ipv4Addr, Error> {
    if !keys::valid_node(node) {
        return Err(Error::Invalid(format!(
            "node name {node:?} cannot stand in Calico's keys"
        )));
    }
    let sec = secondary(node);
    if let Some(a) = want {
        if !pool.cidr.contains(&a) {
            return Err(Error::Invalid(format!(
                "{a} is outside the pool {}",
                pool.cidr
            )));
        }
        let cidr = Ipv4Net::new(a, pool.block_size)
            .expect("valid length")
            .trunc();
        let mut h = match read(&cidr)? {
            Some(h) => h,
            None => {
                // The block is claimed by whoever needs it first.
                let b = Block::new(cidr, node);
                cluster::put(
                    &keys::affinity(node, &cidr),
                    keys::AFFINITY_CONFIRMED.as_bytes(),
                    Condition::Absent,
                    None,
                )?;
                Held {
                    block: b,
                    revision: 0,
                }
            }
        };
        h.block
            .assign_address(a, handle, &sec)
            .map_err(|e| match e {
                BlockError::Taken(a) => Error::Exists(format!("{a} is in use")),
                _ => Error::Invalid(format!("{a} cannot be assigned")),
            })?;
        if h.revision == 0 {
            cluster::put(
                &keys::block(&cidr),
                &h.block.to_json(),
                Condition::Absent,
                None,
            )?;
        } else {
            write(&h)?;
        }
        note_handle(handle, &cidr, 1)?;
        return Ok(a);
    }
    let mine = blocks_of(node, pool)?;
    for cidr in &mine {
        let Some(mut h) = read(cidr)? else { continue };
        if let Ok(a) = h.block.assign(handle, &sec) {
            write(&h)?;
            note_handle(handle, cidr, 1)?;
            return Ok(a);
        }
    }
    let all = all_blocks(pool)?;
    if mine.len() < max_blocks {
        if let Some(cidr) = free_block(&pool.cidr, pool.block_size, &all, node) {
            let mut b = Block::new(cidr, node);
            let a = b
                .assign(handle, &sec)
                .map_err(|_| Error::Failed(format!("new block {cidr} is full")))?;
            cluster::put(&keys::block(&cidr), &b.to_json(), Condition::Absent, None)?;
            cluster::put(
                &keys::affinity(node, &cidr),
                keys::AFFINITY_CONFIRMED.as_bytes(),
                Condition::Absent,
                None,
            )?;
            note_handle(handle, &cidr, 1)?;
            return Ok(a);
        }
    }
    // Borrow from another node's block (Calico without strict affinity).
    for cidr in all.iter().filter(|c| !mine.contains(c)) {
        let Some(mut h) = read(cidr)? else { continue };
        // A block of no node is reached by no route: nothing to borrow.
        if h.block.strict_affinity || h.block.node().is_none() {
            continue;
        }
        if let Ok(a) = h.block.assign(handle, &sec) {
            write(&h)?;
            note_handle(handle, cidr, 1)?;
            warn(&format!(
                "{node} borrowed {a} from block {cidr} of {:?}",
                h.block.node()
            ));
            return Ok(a);
        }
    }
    Err(Error::Failed(format!(
        "pool {} has no free address: {} block(s) of /{} all full ({} held by {node}, at most {max_blocks})",
        pool.cidr,
        all.len(),
        pool.block_size,
        mine.len()
    )))
}

/// Give `a` back to its block.
pub fn release(pool: &PoolSpec, a: Ipv4Addr) -> Result<(), Error> {
    if !pool.cidr.contains(&a) {
        return Ok(());
    }
    let cidr = Ipv4Net::new(a, pool.block_size)
        .expect("valid length")
        .trunc();
    let Some(mut h) = read(&cidr)? else {
        return Ok(());
    };
    match h.block.release(a) {
        Ok(handle) => {
            write(&h)?;
            if let Some(handle) = handle {
                note_handle(&handle, &cidr, -1)?;
            }
            Ok(())
        }
        // Releasing a free address is not an error.
        Err(_) => Ok(()),
    }
}

/// Drop the node's empty blocks and their affinities (its network is
/// going); blocks still in use (borrowed from) stay.
pub fn release_empty_blocks(pool: &PoolSpec, node: &str) -> Result<(), Error> {
    for cidr in blocks_of(node, pool)? {
        match read(&cidr)? {
            Some(h) if h.block.is_empty() && h.block.node() == Some(node) => {
                cluster::delete(&keys::block(&cidr), Condition::Revision(h.revision))?;
                cluster::delete(&keys::affinity(node, &cidr), Condition::None)?;
            }
            Some(_) => {}
            None => {
                cluster::delete(&keys::affinity(node, &cidr), Condition::None)?;
            }
        }
    }
    Ok(())
}

/// Every block of the pool, with the node each of its addresses is on
/// (the block's node, or the borrower's), for the routes.
pub fn placement(pool: &PoolSpec) -> Result<Vec<(Ipv4Net, String)>, Error> {
    let mut out = Vec::new();
    for e in cluster::list_prefix(keys::BLOCKS)? {
        let Ok(b) = Block::parse(&e.value) else {
            warn(&format!("{}: unreadable block skipped", e.key));
            continue;
        };
        // The record must be the block its key names, of this pool.
        let keyed = e.key.rsplit('/').next().and_then(keys::undashed);
        if keyed != Some(b.cidr) || !is_block_of(pool, &b.cidr) {
            warn(&format!(
                "{}: not a block of pool {} (skipped)",
                e.key, pool.cidr
            ));
            continue;
        }
        let Some(owner) = b.node().filter(|n| keys::valid_node(n)).map(str::to_string) else {
            continue;
        };
        for (ordinal, attr) in b.allocations.iter().enumerate() {
            let Some(node) = attr
                .and_then(|i| b.attributes.get(i))
                .and_then(|a| a.secondary.get("node"))
            else {
                continue;
            };
            if *node != owner && keys::valid_node(node) {
                let a = Ipv4Addr::from(u32::from(b.cidr.network()) + ordinal as u32);
                out.push((Ipv4Net::new(a, 32).expect("/32"), node.clone()));
            }
        }
        out.push((b.cidr, owner));
    }
    Ok(out)
}
