//! `netshim-bench cluster`: a cluster in namespaces (the tests' harness: a
//! fabric bridge, etcd in its own namespace, one namespace per node with
//! its own state and `netshim daemon`), Calico in BGP mode with one BIRD
//! per node. It measures
//! - convergence: from a node joining (its agent starting, its network
//!   created and its first block claimed) until every node already in
//!   the cluster has a route to that block from BIRD, p50/p99 over the
//!   joins;
//! - attach latency on the Calico network against a bridge network on the
//!   same node, in the same run, in-process as the daemon attaches;
//! - BGP sessions and BIRD routes per node once all have joined.
//!   Everything is removed at the end, also when a step fails.

use std::net::Ipv4Addr;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::{Duration, Instant};

use clap::Args;
use ipnet::{IpNet, Ipv4Net};
use netshim::bird::{control, Files};
use netshim::cli::{CliError, Global};
use netshim::cnm::{Attach, Core, CreateNetwork, DetachTarget};
use netshim_host_api::kernel::netlink::Netlink;
use netshim_host_api::kernel::{Kernel, NsId, MAIN_TABLE};
use netshim_host_api::store::EtcdStore;
use netshim_tests::cluster::{
    calico_blocks, have_bird, inside, ClusterNode, Site, CALICO_BGP_CREATE,
};
use netshim_tests::Ns;

use super::{line, other, ratio, stats};

/// BIRD's routes carry this protocol number (RTPROT_BIRD).
const PROTO_BIRD: u8 = 12;
const CLUSTER_ID: &str = "244.0.0.1";

#[derive(Debug, Args)]
pub struct BenchCluster {
    /// The driver: calico (BGP mode, BIRD on every node).
    #[arg(long, default_value = "calico")]
    pub driver: String,
    /// Nodes in the cluster (2 to 150).
    #[arg(long, default_value_t = 10)]
    pub nodes: usize,
    /// The first R nodes are route reflectors; 0 is a full mesh.
    #[arg(long, default_value_t = 0)]
    pub reflectors: usize,
    /// Attaches timed on the first node, per driver.
    #[arg(long, default_value_t = 40)]
    pub attaches: usize,
    /// Give up on one join after this many seconds.
    #[arg(long, default_value_t = 30)]
    pub timeout_s: u64,
}

fn check(args: &BenchCluster) -> Result<(), CliError> {
    if args.driver != "calico" {
        return Err(CliError::Usage(format!(
            "--driver {}: the cluster benchmark runs calico (BGP) only",
            args.driver
        )));
    }
    if !(2..=150).contains(&args.nodes) || args.reflectors >= args.nodes {
        return Err(CliError::Usage(
            "--nodes must be 2 to 150 and --reflectors fewer than the nodes".into(),
        ));
    }
    if !have_bird() {
        return Err(CliError::Usage(
            "BIRD 2 is not installed (Debian: apt-get install bird2)".into(),
        ));
    }
    Ok(())
}

/// A joined node: the harness's node, its first workload, its block, and
/// a netlink handle on its namespace to watch its routing table.
struct Joined {
    node: ClusterNode,
    _workload: Ns,
    block: Ipv4Net,
    kernel: Netlink,
}

fn block_of(site: &Site, node: &str) -> Result<Ipv4Net, CliError> {
    calico_blocks(&site.etcd, node)
        .first()
        .and_then(|b| b.parse().ok())
        .ok_or_else(|| CliError::Other(format!("{node} claimed no block")))
}

/// Whether `k`'s main table routes `block` via `via`, from BIRD.
fn has_route(k: &Netlink, block: Ipv4Net, via: Ipv4Addr) -> bool {
    k.routes(NsId::NODE, MAIN_TABLE).is_ok_and(|rs| {
        rs.iter().any(|r| {
            r.destination == IpNet::V4(block)
                && r.protocol == PROTO_BIRD
                && r.gateway == Some(via.into())
        })
    })
}

pub fn run(g: &Global, args: BenchCluster) -> Result<(), CliError> {
    check(&args)?;
    let site = Site::new("bench");
    let mut joined: Vec<Joined> = Vec::new();
    let (mut converge, mut ready) = (Vec::new(), Vec::new());
    for i in 0..args.nodes {
        let host = u8::try_from(11 + i).map_err(other)?;
        let mut node = ClusterNode::join(&site.fabric, "bench", host, &site.etcd.url);
        if i < args.reflectors {
            node.env.push((
                "NETSHIM_ROUTE_REFLECTOR_CLUSTER_ID".into(),
                CLUSTER_ID.into(),
            ));
        }
        // The join: the network, the first workload (its block), the agent.
        let t0 = Instant::now();
        node.ok(&CALICO_BGP_CREATE);
        let workload = Ns::new(&format!("bench-w{i}"));
        node.ok(&[
            "attach",
            "--network",
            "pods",
            "--netns",
            workload.path.to_str().unwrap_or_default(),
        ]);
        node.start_agent();
        let block = block_of(&site, &node.name())?;
        let via: Ipv4Addr = node.addr.parse().map_err(other)?;
        let deadline = t0 + Duration::from_secs(args.timeout_s);
        // netshim's part: every node that peers with the new one has the
        // session in its BIRD, and the new node's BIRD runs.
        let suffix = format!("_{}", node.addr.replace('.', "_"));
        let peers: Vec<&Joined> = joined
            .iter()
            .enumerate()
            .filter(|(k, _)| args.reflectors == 0 || i < args.reflectors || *k < args.reflectors)
            .map(|(_, j)| j)
            .collect();
        let own_ctl = Files::new(&node.state.0).ctl;
        while !(control::protocols(&own_ctl).is_ok()
            && peers.iter().all(|j| has_session(j, &suffix)))
        {
            if Instant::now() > deadline {
                return Err(CliError::Other(format!(
                    "node {} joined, but after {} s not every peer's BIRD has it",
                    node.addr, args.timeout_s
                )));
            }
            std::thread::sleep(Duration::from_millis(2));
        }
        let configured = t0.elapsed();
        while !joined.iter().all(|j| has_route(&j.kernel, block, via)) {
            if Instant::now() > deadline {
                let missing: Vec<&str> = joined
                    .iter()
                    .filter(|j| !has_route(&j.kernel, block, via))
                    .map(|j| j.node.addr.as_str())
                    .collect();
                return Err(CliError::Other(format!(
                    "node {} joined, but after {} s {missing:?} have no route to its block {block}",
                    node.addr, args.timeout_s
                )));
            }
            std::thread::sleep(Duration::from_millis(5));
        }
        if !joined.is_empty() {
            converge.push(t0.elapsed());
            ready.push(configured);
        }
        let kernel = Netlink::new(Some(node.ns.path.as_path())).map_err(other)?;
        joined.push(Joined {
            node,
            _workload: workload,
            block,
            kernel,
        });
    }
    let topology = if args.reflectors == 0 {
        "full mesh".to_string()
    } else {
        format!("{} route reflector(s)", args.reflectors)
    };
    println!(
        "calico BGP, {} nodes, {topology}; {}",
        args.nodes,
        control::version(&Files::new(&joined[0].node.state.0).ctl).unwrap_or_default()
    );
    line(
        "convergence: join to route on every node",
        converge.len(),
        &stats(converge),
    );
    line(
        "  of which netshim: join to BIRDs configured",
        ready.len(),
        &stats(ready),
    );

    // Sessions and routes per node, once everyone is in.
    let expected_routes = args.nodes - 1;
    let settle = Instant::now() + Duration::from_secs(args.timeout_s);
    let (mut sessions, mut routes) = (Vec::new(), Vec::new());
    for j in &joined {
        let mut bird = 0;
        while Instant::now() < settle {
            bird = bird_routes(&j.kernel);
            if bird >= expected_routes {
                break;
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        routes.push(bird);
        let st = j.node.node_status();
        sessions.push(
            st["peers"]
                .as_array()
                .map(|p| p.iter().filter(|p| p["established"] == true).count())
                .unwrap_or(0),
        );
        if bird < expected_routes {
            eprintln!(
                "node {}: {bird} BIRD routes, {expected_routes} expected",
                j.node.addr
            );
        }
    }
    let range = |v: &[usize]| {
        format!(
            "{}–{}",
            v.iter().min().unwrap_or(&0),
            v.iter().max().unwrap_or(&0)
        )
    };
    println!(
        "per node: BGP sessions established {}, routes from BIRD {} (other nodes' blocks: {expected_routes})",
        range(&sessions),
        range(&routes)
    );
    let blocks: std::collections::BTreeSet<Ipv4Net> = joined.iter().map(|j| j.block).collect();
    if blocks.len() != joined.len() {
        return Err(CliError::Other("two nodes share a block".into()));
    }

    attach_vs_bridge(g, &site, &joined[0].node, args.attaches)
}

/// Whether the node's BIRD has a BGP session (in any state) with the
/// peer whose protocol names end in `suffix`.
fn has_session(j: &Joined, suffix: &str) -> bool {
    control::protocols(&Files::new(&j.node.state.0).ctl)
        .is_ok_and(|ps| ps.iter().any(|p| p.protocol.name.ends_with(suffix)))
}

fn bird_routes(k: &Netlink) -> usize {
    k.routes(NsId::NODE, MAIN_TABLE)
        .map(|rs| rs.iter().filter(|r| r.protocol == PROTO_BIRD).count())
        .unwrap_or(0)
}

/// Attach and detach on the first node in-process (as its daemon does),
/// alternating a Calico and a bridge network, so both see the same node.
fn attach_vs_bridge(g: &Global, site: &Site, node: &ClusterNode, n: usize) -> Result<(), CliError> {
    let sandboxes: Vec<Ns> = (0..2 * n)
        .map(|i| Ns::new(&format!("bench-a{i}")))
        .collect();
    let paths: Vec<PathBuf> = sandboxes.iter().map(|s| s.path.clone()).collect();
    let runtime = g.runtime(true)?;
    let state = node.state.0.clone();
    let name = node.name();
    let url = site.etcd.url.clone();
    let timed = inside(&node.ns, move || -> Result<_, CliError> {
        let kernel: Arc<dyn Kernel> = Arc::new(Netlink::new(None).map_err(other)?);
        let etcd = EtcdStore::connect(&url, "", None).map_err(other)?;
        // What one etcd round trip costs here (a one-key read).
        let rtt: Vec<Duration> = (0..50)
            .map(|_| {
                let t = Instant::now();
                etcd.reachable(Duration::from_secs(2));
                t.elapsed()
            })
            .collect();
        let core = Core::new(runtime, kernel, &state, Vec::new())?
            .with_node_name(Some(name))
            .with_cluster(Some(etcd));
        core.serve_many()?;
        core.network_create(CreateNetwork {
            name: "bench-bridge".into(),
            driver: "bridge".into(),
            subnet: Some("10.201.0.0/16".parse().map_err(other)?),
            gateway: None,
            internal: false,
            options: Vec::new(),
        })?;
        let (mut ca, mut ba, mut cd, mut bd) = (vec![], vec![], vec![], vec![]);
        for pair in paths.chunks(2) {
            for (net, sb, a) in [
                ("pods", &pair[0], &mut ca),
                ("bench-bridge", &pair[1], &mut ba),
            ] {
                let t = Instant::now();
                core.attach(Attach::new(net, sb.clone()))?;
                a.push(t.elapsed());
            }
        }
        for pair in paths.chunks(2) {
            for (net, sb, d) in [
                ("pods", &pair[0], &mut cd),
                ("bench-bridge", &pair[1], &mut bd),
            ] {
                let t = Instant::now();
                core.detach(DetachTarget::Sandbox {
                    network: net.into(),
                    netns: sb.clone(),
                })?;
                d.push(t.elapsed());
            }
        }
        core.network_rm("bench-bridge")?;
        Ok((ca, ba, cd, bd, rtt))
    })?;
    let (ca, ba, cd, bd) = (
        stats(timed.0),
        stats(timed.1),
        stats(timed.2),
        stats(timed.3),
    );
    line("attach calico (in-process)", n, &ca);
    line("attach bridge (in-process)", n, &ba);
    line("detach calico (in-process)", n, &cd);
    line("detach bridge (in-process)", n, &bd);
    ratio("attach calico vs bridge", &ca, &ba);
    ratio("detach calico vs bridge", &cd, &bd);
    line("etcd round trip (one-key read)", 50, &stats(timed.4));
    drop(sandboxes);
    Ok(())
}
