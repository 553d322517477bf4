//! This node's lease: a subnet of the cluster network claimed in the
//! cluster store by compare-and-swap, kept alive with etcd's keep-alive
//! before it ends (written again, with a new lease, only when what the node
//! announces changed), and given back on `network rm`. The same subnet
//! comes back across restarts: the node's own lease (same PublicIP) is
//! reused, else the subnet it held last.

use netshim_guest_sdk::host::cluster;
use netshim_guest_sdk::host::store::{self, Condition};
use netshim_guest_sdk::log::info;
use netshim_guest_sdk::{addr, names, Error, Ipv4Net};

use crate::config::{lease_value, parse_subnet_key, subnet_key, LeaseAttrs, Settings};

/// Node-local record of the subnet this node held last (flannel's
/// `subnet.env`).
const LAST_SUBNET: &str = "last-subnet";

/// Among the first this many free subnets one is chosen, by the node's
/// address, so nodes joining together rarely race for the same one.
const CANDIDATES: usize = 100;

/// The VXLAN MAC this node announces: derived from its address and the
/// VNI, so it is the same after every restart (flannel generated one at
/// random and lost it; systemd renaming it broke clusters).
pub fn vtep_mac(s: &Settings) -> [u8; 6] {
    let (a, b, c, d, e, f) = names::mac_from_id(&format!("flannel-vtep-{}-{}", s.public_ip, s.vni));
    [a, b, c, d, e, f]
}

fn announce(s: &Settings) -> Vec<u8> {
    let mac = match s.backend {
        crate::config::Backend::Vxlan => Some(vtep_mac(s)),
        crate::config::Backend::HostGw | crate::config::Backend::Udp => None,
    };
    lease_value(s, mac)
}

/// Claim a subnet for this node (or keep the one it has).
pub fn acquire(s: &Settings) -> Result<Ipv4Net, Error> {
    let leases = cluster::list_prefix(crate::config::SUBNETS)?;
    let value = announce(s);
    let me = s.public_ip.to_string();
    let mut taken = Vec::new();
    for e in &leases {
        let Some(subnet) = parse_subnet_key(&e.key) else {
            continue;
        };
        let mine = serde_json::from_slice::<LeaseAttrs>(&e.value)
            .map(|a| a.public_ip == me)
            .unwrap_or(false);
        if !mine {
            taken.push(subnet);
            continue;
        }
        if s.fits(&subnet) {
            // A key without a lease is a reservation: it stays one.
            let ttl = cluster::expires_in(&e.key)?.map(|_| s.ttl);
            cluster::put(&e.key, &value, Condition::Revision(e.revision), ttl)?;
            remember(subnet)?;
            info(&format!("keeping lease {subnet} for {me}"));
            return Ok(subnet);
        }
        // The configuration changed under it: flannel drops such a lease.
        cluster::delete(&e.key, Condition::Revision(e.revision))?;
    }
    let free = |n: &Ipv4Net| s.fits(n) && !taken.iter().any(|t| addr::overlaps(t, n));
    let last = store::get(LAST_SUBNET)?
        .and_then(|e| String::from_utf8(e.value).ok())
        .and_then(|t| t.parse::<Ipv4Net>().ok())
        .filter(|n| free(n));
    let subnet = match last {
        Some(n) => n,
        None => {
            let candidates: Vec<Ipv4Net> =
                s.subnets().filter(|n| free(n)).take(CANDIDATES).collect();
            if candidates.is_empty() {
                return Err(Error::Failed(format!(
                    "out of subnets: every /{} of {} between {} and {} is leased",
                    s.subnet_len, s.network, s.subnet_min, s.subnet_max
                )));
            }
            let pick = names::fnv1a32(&me) as usize % candidates.len();
            candidates[pick]
        }
    };
    cluster::put(&subnet_key(&subnet), &value, Condition::Absent, Some(s.ttl))?;
    remember(subnet)?;
    info(&format!("leased {subnet} for {me} ({} s)", s.ttl));
    Ok(subnet)
}

fn remember(subnet: Ipv4Net) -> Result<(), Error> {
    store::put(
        LAST_SUBNET,
        subnet.to_string().as_bytes(),
        Condition::None,
        None,
    )?;
    Ok(())
}

/// Keep this node's lease alive; the seconds until it next needs
/// attention. A lease that is gone (it ran out while the cluster store was
/// away, or someone deleted it) is taken again if the subnet is still
/// free: the node's containers already use it.
pub fn keep(s: &Settings, subnet: Ipv4Net) -> Result<u32, Error> {
    let key = subnet_key(&subnet);
    let value = announce(s);
    let renewed = s.ttl - s.renew_margin();
    match cluster::get(&key)? {
        Some(e) => {
            let holder = serde_json::from_slice::<LeaseAttrs>(&e.value)
                .map(|a| a.public_ip)
                .unwrap_or_default();
            if holder != s.public_ip.to_string() {
                return Err(Error::Conflict(format!(
                    "lease {key} now names {holder:?}, not this node ({}): remove the network and create it again to get a new subnet",
                    s.public_ip
                )));
            }
            if e.value != value {
                // What this node announces changed: a new value, a new lease.
                cluster::put(&key, &value, Condition::Revision(e.revision), Some(s.ttl))?;
                return Ok(renewed);
            }
            match cluster::expires_in(&key)? {
                None => Ok(u32::MAX),
                Some(left) if left <= s.renew_margin() => match cluster::keep_alive(&key)? {
                    Some(ttl) => Ok(ttl.saturating_sub(s.renew_margin())),
                    // It ended in between: take it again with a new lease.
                    None => {
                        cluster::put(&key, &value, Condition::Absent, Some(s.ttl))?;
                        Ok(renewed)
                    }
                },
                Some(left) => Ok(left - s.renew_margin()),
            }
        }
        None => {
            cluster::put(&key, &value, Condition::Absent, Some(s.ttl))?;
            info(&format!("lease {subnet} had ended; taken again"));
            Ok(renewed)
        }
    }
}

/// Give the lease back, if it is still this node's.
pub fn release(s: &Settings, subnet: Ipv4Net) -> Result<(), Error> {
    let key = subnet_key(&subnet);
    if let Some(e) = cluster::get(&key)? {
        let mine = serde_json::from_slice::<LeaseAttrs>(&e.value)
            .map(|a| a.public_ip == s.public_ip.to_string())
            .unwrap_or(false);
        if mine {
            cluster::delete(&key, Condition::Revision(e.revision))?;
        }
    }
    Ok(())
}
