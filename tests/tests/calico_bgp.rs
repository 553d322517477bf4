//! The calico driver's BGP mode (encapsulation Never) on the real kernel
//! with Debian's BIRD 2: nodes in namespaces off a fabric, etcd in its own,
//! each node's agent (`netshim daemon`) running one BIRD in the node's
//! namespace from the speaker the driver stated.
//! - Three nodes in a full mesh: sessions Established (`node status`),
//!   every node's table holds the others' blocks from BIRD, pods talk
//!   across nodes with their own address, the outside host sees the node.
//! - A plain BIRD configured by the test (a top-of-rack router, a global
//!   BGPPeer) learns exactly the pool's blocks, and what it announces
//!   (0.0.0.0/0, a foreign /16, the pool's aggregate) reaches no node.
//! - BIRD killed: the agent restarts it and the sessions come back.
//! - A node stops: its blocks' routes are withdrawn everywhere.
//! - Five nodes, one route reflector: the clients peer with it only, and
//!   everyone still reaches everyone.
//! - Teardown stops BIRD and leaves no route, link or table.

use std::collections::BTreeSet;

use netshim_tests::cluster::{
    calico_blocks, calico_workload, eventually, have_bird, tcp_source, ClusterNode, Router, Site,
    CALICO_BGP_CREATE, OUTSIDE,
};
use netshim_tests::{can_run, Ns};

const TOR: &str = "192.0.2.250";

fn runnable() -> bool {
    if !can_run() {
        return false;
    }
    if !have_bird() {
        eprintln!("SKIPPED: BIRD 2 is not installed (Debian: apt-get install bird2)");
        return false;
    }
    true
}

fn bgp_node(site: &Site, tag: &str, host: u8, env: &[(&str, &str)]) -> ClusterNode {
    let mut n = ClusterNode::join(&site.fabric, tag, host, &site.etcd.url);
    n.env = env
        .iter()
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect();
    n.ok(&CALICO_BGP_CREATE);
    n.start_agent();
    n
}

/// Peers of a node's `node status` as (address, type, established).
fn peers(n: &ClusterNode) -> Vec<(String, String, bool)> {
    n.node_status()["peers"]
        .as_array()
        .cloned()
        .unwrap_or_default()
        .iter()
        .map(|p| {
            (
                p["address"].as_str().unwrap_or_default().to_string(),
                p["type"].as_str().unwrap_or_default().to_string(),
                p["established"] == true,
            )
        })
        .collect()
}

fn all_established(n: &ClusterNode, count: usize) -> bool {
    let p = peers(n);
    p.len() == count && p.iter().all(|(_, _, up)| *up)
}

/// `n` routes `block` via `via`, as BIRD wrote it.
fn bird_route(n: &ClusterNode, block: &str, via: &str) -> bool {
    let r = n.ns.ip(&["route", "show", block]);
    r.contains(&format!("via {via}")) && r.contains("proto bird")
}

/// The top-of-rack router's configuration: eBGP (AS 64513) with each
/// node, import all, and it announces routes no node may take.
fn tor_conf(nodes: &[&ClusterNode]) -> String {
    let mut c = format!(
        "router id {TOR};\nprotocol device {{ }}\n\
         protocol static hostile {{ ipv4; route 0.0.0.0/0 blackhole; route 10.99.0.0/16 blackhole; route 192.168.0.0/16 blackhole; }}\n"
    );
    for n in nodes {
        c.push_str(&format!(
            "protocol bgp node_{h} {{ local {TOR} as 64513; neighbor {a} as 64512; direct; connect retry time 1; ipv4 {{ import all; export all; }}; }}\n",
            h = n.addr.rsplit('.').next().unwrap(),
            a = n.addr
        ));
    }
    c
}

#[test]
fn full_mesh_a_tor_router_restarts_and_a_node_leaving() {
    if !runnable() {
        return;
    }
    let tag = "cbgp";
    let site = Site::new(tag);
    let tor_ns = Ns::new(&format!("{tag}-tor"));
    site.fabric.plug(&tor_ns, 250);
    // The router as a global BGPPeer, the way calicoctl writes one.
    site.etcd.etcdctl(&[
        "put",
        "/calico/resources/v3/projectcalico.org/bgppeers/tor",
        &format!(
            r#"{{"apiVersion":"projectcalico.org/v3","kind":"BGPPeer","metadata":{{"name":"tor"}},"spec":{{"peerIP":"{TOR}","asNumber":64513}}}}"#
        ),
    ]);
    let baseline = ClusterNode::join(&site.fabric, tag, 99, &site.etcd.url)
        .ns
        .links();
    let mut nodes: Vec<ClusterNode> = (11..=13).map(|h| bgp_node(&site, tag, h, &[])).collect();
    let defaults: Vec<String> = nodes
        .iter()
        .map(|n| n.ns.ip(&["route", "show", "default"]))
        .collect();
    let tor = Router::start(
        &tor_ns,
        &format!("{tag}-tor"),
        &tor_conf(&nodes.iter().collect::<Vec<_>>()),
    );

    // Sessions: two mesh peers and the router, all Established.
    for n in &nodes {
        assert!(
            eventually(20, || all_established(n, 3)),
            "node {}: {:#}\n{}",
            n.addr,
            n.node_status(),
            n.agent_log()
        );
        let kinds: BTreeSet<String> = peers(n).into_iter().map(|(_, k, _)| k).collect();
        assert_eq!(
            kinds,
            ["global", "node-to-node mesh"]
                .into_iter()
                .map(String::from)
                .collect()
        );
    }
    let status = nodes[0].ok(&["node", "status"]);
    assert!(
        status.contains("BIRD is running")
            && status.contains("node-to-node mesh")
            && status.contains("Established"),
        "{status}"
    );

    // A node claims its first block with its first workload (no tunnel
    // address in BGP mode).
    let ctrs: Vec<(Ns, String)> = nodes
        .iter()
        .enumerate()
        .map(|(i, n)| calico_workload(n, &format!("{tag}-c{i}")))
        .collect();

    // Every node routes every other node's block through it, by BIRD.
    let blocks: Vec<String> = nodes
        .iter()
        .map(|n| {
            let b = calico_blocks(&site.etcd, &n.name());
            assert_eq!(b.len(), 1, "{}: {b:?}", n.name());
            b[0].clone()
        })
        .collect();
    for n in &nodes {
        for (other, block) in nodes.iter().zip(&blocks) {
            if other.addr == n.addr {
                assert!(n
                    .ns
                    .ip(&["route", "show", "type", "blackhole"])
                    .contains(block.as_str()));
                continue;
            }
            assert!(
                eventually(10, || bird_route(n, block, &other.addr)),
                "{} has no BIRD route to {}'s block {block}: {}",
                n.addr,
                other.addr,
                n.ns.ip(&["route"])
            );
        }
    }

    // The router learned exactly the pool's blocks...
    assert!(
        eventually(10, || {
            let learned: BTreeSet<String> = tor
                .birdc("show route where source = RTS_BGP")
                .lines()
                .filter_map(|l| l.split_whitespace().next())
                .filter(|w| w.contains('/'))
                .map(String::from)
                .collect();
            learned == blocks.iter().cloned().collect()
        }),
        "the router learned: {}",
        tor.birdc("show route where source = RTS_BGP")
    );
    // ... and what it announces changed no node.
    for (n, before) in nodes.iter().zip(&defaults) {
        assert_eq!(
            &n.ns.ip(&["route", "show", "default"]),
            before,
            "{}",
            n.addr
        );
        let routes = n.ns.ip(&["route"]);
        assert!(
            !routes.contains("10.99.") && !routes.contains("192.168.0.0/16"),
            "node {} took a route the router announced: {routes}",
            n.addr
        );
    }

    // Pods talk across nodes with their own addresses; the outside host
    // sees the node (natOutgoing).
    for (i, (a, _)) in ctrs.iter().enumerate() {
        for (j, (_, b)) in ctrs.iter().enumerate() {
            if i != j {
                assert!(eventually(10, || a.ping(b)), "pod {i} cannot reach {b}");
            }
        }
    }
    assert_eq!(
        tcp_source(&ctrs[0].0, &ctrs[2].0, &ctrs[2].1),
        ctrs[0].1,
        "pod to pod is not NATed"
    );
    assert_eq!(
        tcp_source(&ctrs[1].0, &site.outside, OUTSIDE),
        nodes[1].addr,
        "natOutgoing: the outside host sees the node"
    );

    // BIRD dies: the agent starts a new one and the sessions come back.
    let old = nodes[0].bird_pid().expect("BIRD runs on node 1");
    nix::sys::signal::kill(
        nix::unistd::Pid::from_raw(old),
        nix::sys::signal::Signal::SIGKILL,
    )
    .unwrap();
    assert!(
        eventually(20, || nodes[0].bird_pid().is_some_and(|p| p != old)
            && all_established(&nodes[0], 3)),
        "BIRD was not restarted: {:#}\n{}",
        nodes[0].node_status(),
        nodes[0].agent_log()
    );
    assert!(nodes[0].agent_log().contains("BIRD died; restarting it"));
    assert!(eventually(10, || bird_route(
        &nodes[0],
        &blocks[1],
        &nodes[1].addr
    )));

    // The agent SIGKILLed and started again: it adopts the running BIRD,
    // and no route of the node changes.
    let bird = nodes[1].bird_pid().expect("BIRD runs on node 2");
    let learned = nodes[1].ns.ip(&["route", "show", "proto", "bird"]);
    nodes[1].kill_agent();
    nodes[1].start_agent();
    assert!(
        eventually(10, || nodes[1]
            .agent_log()
            .matches("first pass done")
            .count()
            == 2),
        "{}",
        nodes[1].agent_log()
    );
    assert!(nodes[1]
        .agent_log()
        .contains("adopting the BIRD a previous daemon started"));
    assert_eq!(
        nodes[1].bird_pid(),
        Some(bird),
        "BIRD was replaced: {}",
        nodes[1].agent_log()
    );
    assert_eq!(nodes[1].ns.ip(&["route", "show", "proto", "bird"]), learned);
    assert!(all_established(&nodes[1], 3));

    // Node 3 stops: its BIRD goes with its agent, and its block's route
    // goes from every other node.
    let leaving_pid = nodes[2].bird_pid().expect("BIRD runs on node 3");
    nodes[2].stop_agent();
    assert!(
        !std::path::Path::new(&format!("/proc/{leaving_pid}")).exists(),
        "the stopped agent left its BIRD running"
    );
    for n in &nodes[..2] {
        assert!(
            eventually(10, || n
                .ns
                .ip(&["route", "show", &blocks[2]])
                .trim()
                .is_empty()),
            "{} still routes to the stopped node's block: {}",
            n.addr,
            n.ns.ip(&["route"])
        );
    }
    assert!(
        ctrs[0].0.ping(&ctrs[1].1),
        "the remaining nodes still reach each other"
    );

    // Teardown: BIRD stops with the last network; nothing is left.
    drop(tor);
    for (i, n) in nodes.iter_mut().enumerate() {
        n.ok(&[
            "detach",
            "--network",
            "pods",
            "--netns",
            ctrs[i].0.path.to_str().unwrap(),
        ]);
        n.ok(&["network", "rm", "pods"]);
        if i < 2 {
            assert!(
                eventually(10, || n.bird_pid().is_none()),
                "BIRD outlived its network on {}",
                n.addr
            );
        }
        n.stop_agent();
        n.assert_left_nothing(&baseline, "192.168.");
    }
}

#[test]
fn five_nodes_with_one_route_reflector() {
    if !runnable() {
        return;
    }
    let tag = "cbrr";
    let site = Site::new(tag);
    let rr = bgp_node(
        &site,
        tag,
        11,
        &[("NETSHIM_ROUTE_REFLECTOR_CLUSTER_ID", "244.0.0.1")],
    );
    let clients: Vec<ClusterNode> = (12..=15).map(|h| bgp_node(&site, tag, h, &[])).collect();
    let all: Vec<&ClusterNode> = std::iter::once(&rr).chain(clients.iter()).collect();

    // The clients peer with the reflector only; it peers with all four.
    for c in &clients {
        assert!(
            eventually(20, || all_established(c, 1)),
            "client {}: {:#}\n{}",
            c.addr,
            c.node_status(),
            c.agent_log()
        );
        assert_eq!(
            peers(c),
            vec![(rr.addr.clone(), "route reflector".to_string(), true)]
        );
    }
    assert!(
        eventually(20, || all_established(&rr, 4)),
        "{:#}",
        rr.node_status()
    );
    assert!(peers(&rr)
        .iter()
        .all(|(_, k, _)| k == "route reflector client"));
    assert_eq!(rr.node_status()["route_reflector_cluster_id"], "244.0.0.1");

    // One workload per node: each claims a block.
    let ctrs: Vec<(Ns, String)> = all
        .iter()
        .enumerate()
        .map(|(i, n)| calico_workload(n, &format!("{tag}-c{i}")))
        .collect();
    // Every node has every other node's block, next hop the owner itself
    // (the reflector passes routes on unchanged).
    let blocks: Vec<String> = all
        .iter()
        .map(|n| calico_blocks(&site.etcd, &n.name())[0].clone())
        .collect();
    for n in &all {
        for (other, block) in all.iter().zip(&blocks) {
            if other.addr != n.addr {
                assert!(
                    eventually(10, || bird_route(n, block, &other.addr)),
                    "{} has no route to {}'s block {block}: {}",
                    n.addr,
                    other.addr,
                    n.ns.ip(&["route"])
                );
            }
        }
    }
    // Client to client, through reflected routes.
    for (i, (a, _)) in ctrs.iter().enumerate() {
        for (j, (_, b)) in ctrs.iter().enumerate() {
            if i != j {
                assert!(eventually(10, || a.ping(b)), "pod {i} cannot reach {b}");
            }
        }
    }
    assert_eq!(
        tcp_source(&ctrs[1].0, &ctrs[4].0, &ctrs[4].1),
        ctrs[1].1,
        "pod to pod is not NATed"
    );
    assert_eq!(
        tcp_source(&ctrs[2].0, &site.outside, OUTSIDE),
        all[2].addr,
        "natOutgoing: the outside host sees the node"
    );
}
