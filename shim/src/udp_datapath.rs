//! The host-native data path of UDP tunnels (WIT 0.2 `udp-tunnel`, what
//! flannel's `udp` backend does in its C proxy): per tunnel one thread
//! moves IP packets read from the TUN device into UDP datagrams to the
//! node that owns their destination, another writes datagrams from known
//! nodes back into the device. The payload is the packet itself, with its
//! TTL decremented on each hop, as flannel does. The table comes from the
//! driver's last `configure`, which the node agent follows.
//!
//! Everything read from the wire is hostile: a datagram from an address
//! that is no peer of the tunnel is dropped, as is anything that is not a
//! well-formed IPv4 packet; no packet is ever parsed past its header.

use std::collections::{BTreeMap, HashMap};
use std::io::{Read, Write};
use std::net::{Ipv4Addr, SocketAddr, SocketAddrV4, UdpSocket};
use std::os::fd::AsFd;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, RwLock};
use std::thread::JoinHandle;
use std::time::Duration;

use ipnet::Ipv4Net;
use netshim_host_api::host::udp_tunnel::UdpTunnel;
use netshim_host_api::kernel::{Kernel, KernelError, LinkRef, NsId};

/// How long a thread waits for a packet before it looks at its stop flag.
const TICK: Duration = Duration::from_millis(300);
/// Larger than any IPv4 packet.
const BUF: usize = 65_536;

/// Where packets go, and what is accepted from whom.
#[derive(Debug, Default)]
struct Table {
    /// Longest prefix first.
    routes: Vec<(Ipv4Net, SocketAddrV4)>,
    /// Each peer and the prefixes it owns: a packet from it must come from
    /// one of them.
    senders: HashMap<Ipv4Addr, Vec<Ipv4Net>>,
    /// The tunnel's port: datagrams from any other source port are not
    /// from a peer's tunnel.
    port: u16,
    /// What the network may route; what arrives must be for a part of it
    /// that no peer owns (this node's).
    grant: Vec<Ipv4Net>,
}

impl Table {
    fn new(rec: &UdpTunnel) -> Table {
        let port = rec.local.port();
        let mut routes: Vec<_> = rec
            .peers
            .iter()
            .map(|(p, a)| (*p, SocketAddrV4::new(*a, port)))
            .collect();
        routes.sort_by_key(|r| std::cmp::Reverse(r.0.prefix_len()));
        let mut senders: HashMap<Ipv4Addr, Vec<Ipv4Net>> = HashMap::new();
        for (p, a) in &rec.peers {
            senders.entry(*a).or_default().push(*p);
        }
        Table {
            senders,
            routes,
            port,
            grant: rec.grant.clone(),
        }
    }

    /// Whether a packet (`src` → `dst`) that came from `from` may enter.
    fn admits(&self, from: SocketAddrV4, src: Ipv4Addr, dst: Ipv4Addr) -> bool {
        from.port() == self.port
            && self
                .senders
                .get(from.ip())
                .is_some_and(|owned| owned.iter().any(|p| p.contains(&src)))
            && self.grant.iter().any(|g| g.contains(&dst))
            && !self.routes.iter().any(|(p, _)| p.contains(&dst))
    }

    fn lookup(&self, dst: Ipv4Addr) -> Option<SocketAddrV4> {
        self.routes
            .iter()
            .find(|(p, _)| p.contains(&dst))
            .map(|(_, to)| *to)
    }
}

/// Packets moved and dropped, for the log.
#[derive(Default)]
struct Counters {
    sent: AtomicU64,
    received: AtomicU64,
    dropped: AtomicU64,
}

struct Running {
    record: UdpTunnel,
    table: Arc<RwLock<Table>>,
    stop: Arc<AtomicBool>,
    threads: Vec<JoinHandle<()>>,
    counters: Arc<Counters>,
}

impl Running {
    fn stop(mut self) {
        self.stop.store(true, Ordering::Relaxed);
        for t in self.threads.drain(..) {
            let _ = t.join();
        }
        tracing::info!(
            device = self.record.device,
            sent = self.counters.sent.load(Ordering::Relaxed),
            received = self.counters.received.load(Ordering::Relaxed),
            dropped = self.counters.dropped.load(Ordering::Relaxed),
            "udp tunnel stopped"
        );
    }
}

/// Every tunnel of the node, by network id.
pub struct Datapaths {
    kernel: Arc<dyn Kernel>,
    running: BTreeMap<String, Running>,
}

impl Datapaths {
    pub fn new(kernel: Arc<dyn Kernel>) -> Datapaths {
        Datapaths {
            kernel,
            running: BTreeMap::new(),
        }
    }

    /// Run exactly the tunnels in `records`: new ones start, gone ones
    /// stop, a changed table is swapped in without a pause, a changed
    /// device or address restarts the tunnel.
    pub fn sync(&mut self, records: BTreeMap<String, UdpTunnel>) {
        let stale: Vec<String> = self
            .running
            .iter()
            .filter(|(id, r)| match records.get(*id) {
                None => true,
                Some(rec) => {
                    rec.device != r.record.device
                        || rec.ifindex != r.record.ifindex
                        || rec.local != r.record.local
                        || r.threads.iter().any(JoinHandle::is_finished)
                }
            })
            .map(|(id, _)| id.clone())
            .collect();
        for id in stale {
            if let Some(r) = self.running.remove(&id) {
                r.stop();
            }
        }
        for (id, rec) in records {
            if let Some(r) = self.running.get_mut(&id) {
                if r.record != rec {
                    *r.table.write().unwrap_or_else(|p| p.into_inner()) = Table::new(&rec);
                    r.record = rec;
                }
                continue;
            }
            match start(self.kernel.as_ref(), rec.clone()) {
                Ok(r) => {
                    tracing::info!(device = rec.device, local = %rec.local, peers = rec.peers.len(), "udp tunnel running");
                    self.running.insert(id, r);
                }
                Err(e) => {
                    tracing::warn!(device = rec.device, error = %e, "udp tunnel cannot start")
                }
            }
        }
    }

    pub fn stop_all(&mut self) {
        for (_, r) in std::mem::take(&mut self.running) {
            r.stop();
        }
    }
}

fn start(kernel: &dyn Kernel, record: UdpTunnel) -> Result<Running, KernelError> {
    let link = LinkRef {
        ns: NsId::NODE,
        index: record.ifindex,
    };
    let info = kernel
        .link_by_index(link)?
        .ok_or_else(|| KernelError::NotFound(format!("TUN device {} is gone", record.device)))?;
    if info.alias.as_deref() != Some(record.mark.as_str()) {
        return Err(KernelError::Permission(format!(
            "{} does not carry the mark of the network that configured the tunnel",
            record.device
        )));
    }
    let (device, socket) = kernel.open_tunnel(link, &record.device, record.local)?;
    let io =
        |e: std::io::Error| KernelError::Other(format!("udp tunnel on {}: {e}", record.device));
    socket.set_read_timeout(Some(TICK)).map_err(io)?;
    let device_out = device.try_clone().map_err(io)?;
    let socket_in = socket.try_clone().map_err(io)?;
    let table = Arc::new(RwLock::new(Table::new(&record)));
    let stop = Arc::new(AtomicBool::new(false));
    let counters = Arc::new(Counters::default());
    let spawn = |name: &str, f: Box<dyn FnOnce() + Send>| {
        std::thread::Builder::new()
            .name(name.into())
            .spawn(f)
            .map_err(|e| KernelError::Other(format!("starting the udp tunnel: {e}")))
    };
    let out = {
        let (table, stop, counters) = (table.clone(), stop.clone(), counters.clone());
        spawn(
            "netshim-tun-out",
            Box::new(move || to_peers(device, socket, &table, &stop, &counters)),
        )?
    };
    let inbound = {
        let (table, stop2, counters) = (table.clone(), stop.clone(), counters.clone());
        match spawn(
            "netshim-tun-in",
            Box::new(move || from_peers(socket_in, device_out, &table, &stop2, &counters)),
        ) {
            Ok(t) => t,
            Err(e) => {
                stop.store(true, Ordering::Relaxed);
                let _ = out.join();
                return Err(e);
            }
        }
    };
    Ok(Running {
        record,
        table,
        stop,
        threads: vec![out, inbound],
        counters,
    })
}

/// Decrement the TTL of the IPv4 packet in `p` and fix its header
/// checksum. False when `p` is not a well-formed IPv4 packet or its TTL
/// is spent (the packet is dropped).
fn forward(p: &mut [u8]) -> bool {
    if p.len() < 20 || p[0] >> 4 != 4 {
        return false;
    }
    let ihl = usize::from(p[0] & 0x0f) * 4;
    let total = usize::from(u16::from_be_bytes([p[2], p[3]]));
    if ihl < 20 || p.len() < ihl || total != p.len() {
        return false;
    }
    if p[8] <= 1 {
        return false;
    }
    p[8] -= 1;
    p[10] = 0;
    p[11] = 0;
    let mut sum: u32 = 0;
    for w in p[..ihl].chunks(2) {
        sum += u32::from(u16::from_be_bytes([w[0], w[1]]));
    }
    while sum > 0xffff {
        sum = (sum & 0xffff) + (sum >> 16);
    }
    let checksum = !(sum as u16);
    p[10..12].copy_from_slice(&checksum.to_be_bytes());
    true
}

fn destination(p: &[u8]) -> Ipv4Addr {
    Ipv4Addr::new(p[16], p[17], p[18], p[19])
}

fn source(p: &[u8]) -> Ipv4Addr {
    Ipv4Addr::new(p[12], p[13], p[14], p[15])
}

fn to_peers(
    mut device: std::fs::File,
    socket: UdpSocket,
    table: &RwLock<Table>,
    stop: &AtomicBool,
    counters: &Counters,
) {
    let mut buf = vec![0u8; BUF];
    while !stop.load(Ordering::Relaxed) {
        let mut fds = [nix::poll::PollFd::new(
            device.as_fd(),
            nix::poll::PollFlags::POLLIN,
        )];
        match nix::poll::poll(
            &mut fds,
            nix::poll::PollTimeout::from(TICK.as_millis() as u16),
        ) {
            Ok(0) => continue,
            Ok(_) => {}
            Err(nix::errno::Errno::EINTR) => continue,
            Err(e) => {
                tracing::warn!(error = %e, "udp tunnel: polling the device failed");
                return;
            }
        }
        let n = match device.read(&mut buf) {
            Ok(n) => n,
            Err(e) if e.kind() == std::io::ErrorKind::Interrupted => continue,
            Err(e) => {
                tracing::warn!(error = %e, "udp tunnel: the device is gone");
                return;
            }
        };
        let packet = &mut buf[..n];
        if !forward(packet) {
            counters.dropped.fetch_add(1, Ordering::Relaxed);
            continue;
        }
        let to = table
            .read()
            .unwrap_or_else(|p| p.into_inner())
            .lookup(destination(packet));
        match to {
            Some(to) if socket.send_to(packet, to).is_ok() => {
                counters.sent.fetch_add(1, Ordering::Relaxed);
            }
            _ => {
                counters.dropped.fetch_add(1, Ordering::Relaxed);
            }
        }
    }
}

fn from_peers(
    socket: UdpSocket,
    mut device: std::fs::File,
    table: &RwLock<Table>,
    stop: &AtomicBool,
    counters: &Counters,
) {
    let mut buf = vec![0u8; BUF];
    while !stop.load(Ordering::Relaxed) {
        let (n, from) = match socket.recv_from(&mut buf) {
            Ok(r) => r,
            Err(e)
                if matches!(
                    e.kind(),
                    std::io::ErrorKind::WouldBlock
                        | std::io::ErrorKind::TimedOut
                        | std::io::ErrorKind::Interrupted
                ) =>
            {
                continue
            }
            Err(e) => {
                tracing::warn!(error = %e, "udp tunnel: the socket failed");
                return;
            }
        };
        let packet = &mut buf[..n];
        // Checked (and the TTL spent) before anything else reads it.
        if !forward(packet) {
            counters.dropped.fetch_add(1, Ordering::Relaxed);
            continue;
        }
        let admitted = match from {
            SocketAddr::V4(a) => table.read().unwrap_or_else(|p| p.into_inner()).admits(
                a,
                source(packet),
                destination(packet),
            ),
            SocketAddr::V6(_) => false,
        };
        if !admitted {
            counters.dropped.fetch_add(1, Ordering::Relaxed);
            continue;
        }
        if device.write_all(packet).is_ok() {
            counters.received.fetch_add(1, Ordering::Relaxed);
        } else {
            counters.dropped.fetch_add(1, Ordering::Relaxed);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn packet(ttl: u8, dst: [u8; 4]) -> Vec<u8> {
        let mut p = vec![0x45, 0, 0, 28, 0, 1, 0, 0, ttl, 1, 0, 0, 10, 244, 1, 2];
        p.extend_from_slice(&dst);
        p.extend_from_slice(&[8, 0, 0, 0, 0, 0, 0, 0]);
        p
    }

    fn checksum_ok(p: &[u8]) -> bool {
        let mut sum: u32 = 0;
        for w in p[..20].chunks(2) {
            sum += u32::from(u16::from_be_bytes([w[0], w[1]]));
        }
        while sum > 0xffff {
            sum = (sum & 0xffff) + (sum >> 16);
        }
        sum == 0xffff
    }

    #[test]
    fn ttl_goes_down_and_the_checksum_stays_right() {
        let mut p = packet(64, [10, 244, 2, 3]);
        assert!(forward(&mut p));
        assert_eq!(p[8], 63);
        assert!(checksum_ok(&p));
        assert_eq!(destination(&p), Ipv4Addr::new(10, 244, 2, 3));
        assert!(
            !forward(&mut packet(1, [10, 244, 2, 3])),
            "a spent TTL is dropped"
        );
    }

    #[test]
    fn malformed_packets_are_dropped_not_parsed() {
        for bad in [
            vec![],
            vec![0x45; 19],
            {
                let mut p = packet(64, [1, 2, 3, 4]);
                p[0] = 0x65;
                p
            },
            {
                let mut p = packet(64, [1, 2, 3, 4]);
                p[0] = 0x4f;
                p
            },
            {
                let mut p = packet(64, [1, 2, 3, 4]);
                p[3] = 200;
                p
            },
            {
                let mut p = packet(64, [1, 2, 3, 4]);
                p.truncate(24);
                p
            },
        ] {
            let mut b = bad.clone();
            assert!(!forward(&mut b), "{bad:?}");
        }
    }

    #[test]
    fn longest_prefix_wins_and_only_peers_may_send() {
        let rec = UdpTunnel {
            device: "flannel0".into(),
            ifindex: 3,
            mark: "netshim:x".into(),
            local: "192.0.2.11:8285".parse().unwrap(),
            peers: vec![
                (
                    "10.244.0.0/17".parse().unwrap(),
                    Ipv4Addr::new(192, 0, 2, 12),
                ),
                (
                    "10.244.7.0/24".parse().unwrap(),
                    Ipv4Addr::new(192, 0, 2, 13),
                ),
            ],
            grant: vec!["10.244.0.0/16".parse().unwrap()],
        };
        let t = Table::new(&rec);
        let at = |s: &str| Some(s.parse::<SocketAddrV4>().unwrap());
        assert_eq!(
            t.lookup(Ipv4Addr::new(10, 244, 7, 9)),
            at("192.0.2.13:8285")
        );
        assert_eq!(
            t.lookup(Ipv4Addr::new(10, 244, 8, 9)),
            at("192.0.2.12:8285")
        );
        assert_eq!(t.lookup(Ipv4Addr::new(10, 245, 0, 1)), None);
        let here = Ipv4Addr::new(10, 244, 200, 2);
        let from = |s: &str| s.parse::<SocketAddrV4>().unwrap();
        assert!(t.admits(from("192.0.2.13:8285"), Ipv4Addr::new(10, 244, 7, 5), here));
        for (who, src, dst, why) in [
            ("192.0.2.99:8285", "10.244.7.5", here, "not a peer"),
            (
                "192.0.2.13:9999",
                "10.244.7.5",
                here,
                "not the tunnel's port",
            ),
            (
                "192.0.2.13:8285",
                "10.244.9.5",
                here,
                "a source the peer does not own",
            ),
            (
                "192.0.2.13:8285",
                "10.244.7.5",
                Ipv4Addr::new(192, 0, 2, 1),
                "outside the network",
            ),
            (
                "192.0.2.13:8285",
                "10.244.7.5",
                Ipv4Addr::new(10, 244, 1, 1),
                "for another peer",
            ),
        ] {
            assert!(!t.admits(from(who), src.parse().unwrap(), dst), "{why}");
        }
    }
}
