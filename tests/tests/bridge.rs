//! The bridge driver on the real kernel: traffic between sandboxes, out
//! through NAT, isolation, internal networks, teardown, concurrency and
//! restarts. Every test builds its own node; nothing touches the host.

use netshim_tests::{can_run, Node, Ns, NODE_ADDR, OUTSIDE_ADDR};

fn attach(node: &Node, net: &str, sb: &Ns) -> serde_json::Value {
    node.json(&[
        "attach",
        "--network",
        net,
        "--netns",
        sb.path.to_str().unwrap(),
    ])
}

fn ipv4_of(ep: &serde_json::Value) -> String {
    ep["ipv4"]
        .as_str()
        .unwrap()
        .split('/')
        .next()
        .unwrap()
        .to_string()
}

#[test]
fn two_sandboxes_ping_and_talk_tcp() {
    if !can_run() {
        return;
    }
    let node = Node::new("pair");
    node.ok(&["network", "create", "net1", "--subnet", "10.77.0.0/24"]);
    let (c1, c2) = (Ns::new("pair-c1"), Ns::new("pair-c2"));
    let e1 = attach(&node, "net1", &c1);
    let e2 = attach(&node, "net1", &c2);
    assert_eq!(ipv4_of(&e1), "10.77.0.2");
    assert_eq!(ipv4_of(&e2), "10.77.0.3");
    assert!(c1.ping("10.77.0.3"), "c1 cannot ping c2");
    assert!(c2.ping("10.77.0.2"), "c2 cannot ping c1");
    assert!(c1.ping("10.77.0.1"), "c1 cannot ping its gateway");
    let listener = c2.accept_one("10.77.0.3:7000");
    c1.connect("10.77.0.3:7000").expect("TCP c1 -> c2");
    let peer = listener.join().unwrap();
    assert_eq!(
        peer.ip().to_string(),
        "10.77.0.2",
        "c2 saw the connection from {peer}"
    );
    // Docker's MAC derivation: 02:42 + the IPv4 address.
    assert!(c1
        .ip(&["link", "show", "eth0"])
        .contains("02:42:0a:4d:00:02"));
    // An IPv4-only network: no IPv6 address on the container's interface
    // (as Docker since 26.1), none on the bridge ports, while lo keeps ::1.
    assert_eq!(c1.ip(&["-6", "addr", "show", "dev", "eth0"]).trim(), "");
    assert!(c1.ip(&["-6", "addr", "show", "dev", "lo"]).contains("::1"));
    assert!(c1
        .ip(&["-d", "link", "show", "eth0"])
        .contains("addrgenmode none"));
    for port in node
        .node
        .ip(&["-o", "link", "show", "type", "veth"])
        .lines()
    {
        let name = port.split(':').nth(1).unwrap().trim();
        let name = name.split('@').next().unwrap();
        if name.starts_with("veth") {
            assert_eq!(
                node.node.ip(&["-6", "addr", "show", "dev", name]).trim(),
                "",
                "bridge port {name} has an IPv6 address"
            );
        }
    }
    node.ok(&[
        "detach",
        "--network",
        "net1",
        "--netns",
        c1.path.to_str().unwrap(),
    ]);
    node.ok(&[
        "detach",
        "--network",
        "net1",
        "--netns",
        c2.path.to_str().unwrap(),
    ]);
    node.ok(&["network", "rm", "net1"]);
}

#[test]
fn masquerade_to_outside_and_internal_has_no_way_out() {
    if !can_run() {
        return;
    }
    let node = Node::new("nat");
    node.ok(&["network", "create", "pub", "--subnet", "10.78.0.0/24"]);
    node.ok(&[
        "network",
        "create",
        "priv",
        "--subnet",
        "10.79.0.0/24",
        "--internal",
    ]);
    let (c1, c2) = (Ns::new("nat-c1"), Ns::new("nat-c2"));
    attach(&node, "pub", &c1);
    let internal = attach(&node, "priv", &c2);
    assert!(
        internal["gateway"].is_null(),
        "an internal network gives no default gateway: {internal}"
    );
    assert_eq!(node.node.sysctl("net/ipv4/ip_forward"), "1");

    assert!(
        c1.ping(OUTSIDE_ADDR),
        "container cannot reach the outside host"
    );
    let listener = node.outside.accept_one(&format!("{OUTSIDE_ADDR}:8080"));
    c1.connect(&format!("{OUTSIDE_ADDR}:8080"))
        .expect("TCP to the outside host");
    let peer = listener.join().unwrap();
    assert_eq!(
        peer.ip().to_string(),
        NODE_ADDR,
        "the outside host must see the node's address (masquerade)"
    );

    assert!(
        !c2.ping(OUTSIDE_ADDR),
        "an internal network reached the outside"
    );
    assert!(
        c2.connect(&format!("{OUTSIDE_ADDR}:8080")).is_err(),
        "an internal network opened a TCP connection out"
    );
    node.ok(&[
        "detach",
        "--network",
        "pub",
        "--netns",
        c1.path.to_str().unwrap(),
    ]);
    node.ok(&[
        "detach",
        "--network",
        "priv",
        "--netns",
        c2.path.to_str().unwrap(),
    ]);
    node.ok(&["network", "rm", "pub", "priv"]);
}

#[test]
fn two_bridge_networks_cannot_reach_each_other() {
    if !can_run() {
        return;
    }
    let node = Node::new("iso");
    node.ok(&["network", "create", "a", "--subnet", "10.80.0.0/24"]);
    node.ok(&["network", "create", "b", "--subnet", "10.81.0.0/24"]);
    let (ca, cb, ca2) = (Ns::new("iso-a"), Ns::new("iso-b"), Ns::new("iso-a2"));
    attach(&node, "a", &ca);
    attach(&node, "a", &ca2);
    let eb = attach(&node, "b", &cb);
    assert!(ca.ping("10.80.0.3"), "same-network traffic must flow");
    assert!(
        ca.ping(OUTSIDE_ADDR),
        "network a must still reach the outside"
    );
    assert!(!ca.ping(&ipv4_of(&eb)), "network a reached network b");
    assert!(!cb.ping("10.80.0.2"), "network b reached network a");
    for (net, sb) in [("a", &ca), ("a", &ca2), ("b", &cb)] {
        node.ok(&[
            "detach",
            "--network",
            net,
            "--netns",
            sb.path.to_str().unwrap(),
        ]);
    }
    node.ok(&["network", "rm", "a", "b"]);
}

#[test]
fn detach_and_rm_leave_nothing_behind() {
    if !can_run() {
        return;
    }
    let node = Node::new("clean");
    let (links, addrs, routes) = node.baseline();
    node.ok(&[
        "network",
        "create",
        "net1",
        "--subnet",
        "10.82.0.0/24",
        "-o",
        "mtu=1400",
    ]);
    let c1 = Ns::new("clean-c1");
    let c1_links = c1.links();
    attach(&node, "net1", &c1);
    assert_eq!(
        c1.ip(&["-o", "link", "show", "eth0"]).contains("mtu 1400"),
        true,
        "MTU option must reach the veth"
    );
    assert!(node.node.links().len() > links.len());
    assert!(node.node.nft_ruleset().contains("masquerade"));

    node.ok(&[
        "detach",
        "--network",
        "net1",
        "--netns",
        c1.path.to_str().unwrap(),
    ]);
    assert_eq!(
        c1.links(),
        c1_links,
        "the sandbox keeps an interface after detach"
    );
    // The bridge stays while the network exists; the veth is gone.
    assert!(
        !node.node.links().iter().any(|l| l.starts_with("veth")),
        "a veth is left: {:?}",
        node.node.links()
    );
    node.ok(&["network", "rm", "net1"]);

    assert_eq!(node.node.links(), links, "links left behind");
    assert_eq!(node.node.addresses(), addrs, "addresses left behind");
    assert_eq!(node.node.routes(), routes, "routes left behind");
    assert_eq!(
        node.node.nft_ruleset().trim(),
        "",
        "nftables objects left behind"
    );
    let state = node.state_json();
    assert!(
        state["spaces"].as_object().is_none_or(|m| m.is_empty()),
        "state or IP allocations left behind: {state}"
    );
}

#[test]
fn thirty_two_concurrent_attaches_get_distinct_addresses() {
    if !can_run() {
        return;
    }
    let node = Node::new("burst");
    node.ok(&["network", "create", "net1", "--subnet", "10.83.0.0/24"]);
    let sandboxes: Vec<Ns> = (0..32).map(|i| Ns::new(&format!("burst-{i}"))).collect();
    let results: Vec<serde_json::Value> = std::thread::scope(|s| {
        let handles: Vec<_> = sandboxes
            .iter()
            .map(|sb| s.spawn(|| attach(&node, "net1", sb)))
            .collect();
        handles.into_iter().map(|h| h.join().unwrap()).collect()
    });
    let mut addrs: Vec<String> = results.iter().map(ipv4_of).collect();
    addrs.sort();
    addrs.dedup();
    assert_eq!(addrs.len(), 32, "addresses were given twice: {addrs:?}");
    for sb in &sandboxes {
        let ip = sb.ip(&["-o", "-4", "addr", "show", "eth0"]);
        assert!(
            ip.contains("10.83.0."),
            "sandbox {} has no address: {ip}",
            sb.name
        );
    }
    assert!(sandboxes[0].ping(&addrs[31]) && sandboxes[31].ping(&addrs[0]));
    let inspect = node.json(&["network", "inspect", "net1"]);
    assert_eq!(inspect["endpoints"].as_array().unwrap().len(), 32);
    std::thread::scope(|s| {
        for sb in &sandboxes {
            s.spawn(|| {
                node.ok(&[
                    "detach",
                    "--network",
                    "net1",
                    "--netns",
                    sb.path.to_str().unwrap(),
                ])
            });
        }
    });
    node.ok(&["network", "rm", "net1"]);
    assert!(!node
        .node
        .links()
        .iter()
        .any(|l| l.starts_with("veth") || l.starts_with("br-")));
}

#[test]
fn state_survives_a_restart() {
    if !can_run() {
        return;
    }
    let node = Node::new("restart");
    node.ok(&["network", "create", "net1", "--subnet", "10.84.0.0/24"]);
    let c1 = Ns::new("restart-c1");
    let ep = attach(&node, "net1", &c1);
    // Every netshim call is a new process: this one knows only the state dir.
    let inspect = node.json(&["network", "inspect", "net1"]);
    let eps = inspect["endpoints"].as_array().unwrap();
    assert_eq!(eps.len(), 1);
    assert_eq!(eps[0]["id"], ep["id"]);
    assert_eq!(eps[0]["netns"], c1.path.to_str().unwrap());
    // Attaching again is idempotent: same endpoint, no second interface.
    let again = attach(&node, "net1", &c1);
    assert_eq!(again["id"], ep["id"]);
    node.ok(&["detach", "--endpoint", ep["id"].as_str().unwrap()]);
    assert!(c1.ip(&["-o", "link"]).lines().all(|l| !l.contains("eth0")));
    node.ok(&["network", "rm", "net1"]);
}

#[test]
fn detach_works_when_the_sandbox_is_gone() {
    if !can_run() {
        return;
    }
    let node = Node::new("gone");
    let (links, _, _) = node.baseline();
    node.ok(&["network", "create", "net1", "--subnet", "10.85.0.0/24"]);
    let c1 = Ns::new("gone-c1");
    let path = c1.path.to_str().unwrap().to_string();
    attach(&node, "net1", &c1);
    drop(c1);
    node.ok(&["detach", "--network", "net1", "--netns", &path]);
    // The address is free again: the next attach gets .2 back.
    let c2 = Ns::new("gone-c2");
    assert_eq!(ipv4_of(&attach(&node, "net1", &c2)), "10.85.0.2");
    node.ok(&[
        "detach",
        "--network",
        "net1",
        "--netns",
        c2.path.to_str().unwrap(),
    ]);
    node.ok(&["network", "rm", "net1"]);
    assert_eq!(node.node.links(), links);
}

#[test]
fn bad_input_is_refused_and_leaves_nothing() {
    if !can_run() {
        return;
    }
    let node = Node::new("bad");
    let (links, addrs, routes) = node.baseline();
    let err = |args: &[&str]| {
        let out = node.netshim(args);
        assert!(
            !out.status.success(),
            "netshim {} should fail",
            args.join(" ")
        );
        String::from_utf8_lossy(&out.stderr).into_owned()
    };
    assert!(err(&["network", "create", "bad name"]).contains("invalid network name"));
    assert!(err(&["network", "create", "x", "--driver", "nope"]).contains("unknown driver"));
    assert!(err(&[
        "network",
        "create",
        "x",
        "--subnet",
        "10.86.0.0/24",
        "-o",
        "mtu=9"
    ])
    .contains("mtu"));
    assert!(err(&[
        "network",
        "create",
        "x",
        "--subnet",
        "10.86.0.0/24",
        "-o",
        "colour=blue"
    ])
    .contains("colour"));
    assert!(err(&[
        "network",
        "create",
        "x",
        "--subnet",
        "10.86.0.0/24",
        "--gateway",
        "10.1.1.1"
    ])
    .contains("not inside subnet"));
    assert_eq!(node.node.links(), links, "a refused create left a link");
    assert_eq!(node.node.nft_ruleset().trim(), "");

    node.ok(&["network", "create", "net1", "--subnet", "10.86.0.0/24"]);
    assert!(err(&["network", "create", "net1"]).contains("already exists"));
    assert!(
        err(&["network", "create", "net2", "--subnet", "10.86.0.0/25"]).contains("10.86.0.0/24"),
        "overlapping pool must be refused"
    );
    let c1 = Ns::new("bad-c1");
    let c2 = Ns::new("bad-c2");
    node.ok(&[
        "attach",
        "--network",
        "net1",
        "--netns",
        c1.path.to_str().unwrap(),
        "--ip",
        "10.86.0.9",
    ]);
    let before = node.node.links();
    let msg = err(&[
        "attach",
        "--network",
        "net1",
        "--netns",
        c2.path.to_str().unwrap(),
        "--ip",
        "10.86.0.9",
    ]);
    assert!(msg.contains("already in use"), "{msg}");
    assert!(err(&[
        "attach",
        "--network",
        "net1",
        "--netns",
        c2.path.to_str().unwrap(),
        "--ip",
        "10.99.0.9"
    ])
    .contains("10.86.0.0/24"));
    assert!(err(&[
        "attach",
        "--network",
        "nope",
        "--netns",
        c2.path.to_str().unwrap()
    ])
    .contains("not found"));
    assert!(err(&[
        "attach",
        "--network",
        "net1",
        "--netns",
        "/run/netns/does-not-exist"
    ])
    .contains("does not exist"));
    assert_eq!(node.node.links(), before, "a refused attach left a link");
    assert_eq!(
        c2.links(),
        vec!["lo".to_string()],
        "a refused attach left an interface in the sandbox"
    );
    assert!(err(&["network", "rm", "net1"]).contains("detach them first"));
    node.ok(&[
        "detach",
        "--network",
        "net1",
        "--netns",
        c1.path.to_str().unwrap(),
    ]);
    // The refused attempts reserved nothing: the next address is .2.
    assert_eq!(ipv4_of(&attach(&node, "net1", &c2)), "10.86.0.2");
    node.ok(&[
        "detach",
        "--network",
        "net1",
        "--netns",
        c2.path.to_str().unwrap(),
    ]);
    node.ok(&["network", "rm", "net1"]);
    assert_eq!(
        (node.node.links(), node.node.addresses(), node.node.routes()),
        (links, addrs, routes)
    );
}

#[test]
fn attach_and_detach_start_no_process() {
    if !can_run() {
        return;
    }
    let node = Node::new("noexec");
    node.ok(&["network", "create", "net1", "--subnet", "10.87.0.0/24"]);
    let c1 = Ns::new("noexec-c1");
    let netns = c1.path.to_str().unwrap();
    for verb in ["attach", "detach"] {
        let log = node.state.0.join(format!("{verb}.strace"));
        let out = std::process::Command::new("strace")
            .args(["-f", "-qq", "-e", "trace=execve,execveat,vfork", "-o"])
            .arg(&log)
            .arg(netshim_tests::netshim_bin())
            .args([
                "--state-dir",
                node.state.0.to_str().unwrap(),
                "--node-netns",
                node.node.path.to_str().unwrap(),
            ])
            .args(["--cache-dir", netshim_tests::cache_dir().to_str().unwrap()])
            .args([verb, "--network", "net1", "--netns", netns])
            .output()
            .expect("strace is installed by scripts/deps.sh");
        assert!(
            out.status.success(),
            "{verb}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        let trace = std::fs::read_to_string(&log).unwrap();
        let execs: Vec<&str> = trace
            .lines()
            .filter(|l| l.contains("execve") || l.contains("vfork"))
            .collect();
        assert_eq!(
            execs.len(),
            1,
            "{verb} must exec nothing but netshim itself: {execs:#?}"
        );
        assert!(execs[0].contains("netshim"), "{execs:?}");
    }
    node.ok(&["network", "rm", "net1"]);
}

#[test]
fn one_sandbox_on_two_networks() {
    if !can_run() {
        return;
    }
    let node = Node::new("two");
    node.ok(&["network", "create", "a", "--subnet", "10.88.1.0/24"]);
    node.ok(&["network", "create", "b", "--subnet", "10.88.2.0/24"]);
    let (c1, c2) = (Ns::new("two-c1"), Ns::new("two-c2"));
    attach(&node, "a", &c1);
    node.json(&[
        "attach",
        "--network",
        "b",
        "--netns",
        c1.path.to_str().unwrap(),
        "--ifname",
        "eth1",
    ]);
    attach(&node, "b", &c2);
    let routes = c1.ip(&["route"]);
    assert_eq!(routes.matches("default").count(), 1, "{routes}");
    assert!(
        routes.contains("default via 10.88.1.1 dev eth0"),
        "the first network gives the default route: {routes}"
    );
    assert!(
        c1.ping("10.88.2.3"),
        "c1 reaches c2 over its second interface"
    );
    assert!(c1.ping(OUTSIDE_ADDR));
    node.ok(&[
        "detach",
        "--network",
        "b",
        "--netns",
        c1.path.to_str().unwrap(),
    ]);
    assert!(!c1.links().contains(&"eth1".to_string()));
    assert!(c1.ping("10.88.1.1"), "eth0 still works");
    node.ok(&[
        "detach",
        "--network",
        "a",
        "--netns",
        c1.path.to_str().unwrap(),
    ]);
    node.ok(&[
        "detach",
        "--network",
        "b",
        "--netns",
        c2.path.to_str().unwrap(),
    ]);
    node.ok(&["network", "rm", "a", "b"]);
}

/// `mcast_snooping N` of the node's bridge named in `ip -d link` of `dev`.
fn mcast_snooping(node: &Node, dev: &str) -> String {
    let d = node.node.ip(&["-d", "link", "show", "dev", dev]);
    let at = d.find("mcast_snooping ").expect("mcast_snooping shown") + 15;
    d[at..].split_whitespace().next().unwrap().to_string()
}

/// Whether a datagram `from` sends to 239.1.2.3:7400 reaches `to`, which
/// joined the group on its address `to_addr`.
fn multicast_arrives(from: &Ns, to: &Ns, to_addr: &str) -> bool {
    use std::net::{Ipv4Addr, UdpSocket};
    use std::time::Duration;
    let group: Ipv4Addr = "239.1.2.3".parse().unwrap();
    let iface: Ipv4Addr = to_addr.parse().unwrap();
    let (ready_tx, ready_rx) = std::sync::mpsc::channel();
    let receiver = to.spawn_inside(move || {
        let s = UdpSocket::bind("0.0.0.0:7400").unwrap();
        s.join_multicast_v4(&group, &iface).unwrap();
        s.set_read_timeout(Some(Duration::from_secs(4))).unwrap();
        ready_tx.send(()).unwrap();
        let mut buf = [0u8; 64];
        matches!(s.recv_from(&mut buf), Ok((n, _)) if &buf[..n] == b"netshim")
    });
    ready_rx.recv().unwrap();
    from.spawn_inside(move || {
        let s = UdpSocket::bind("0.0.0.0:0").unwrap();
        // A few tries: the receiver's membership report goes out first.
        for _ in 0..10 {
            let _ = s.send_to(b"netshim", (group, 7400));
            std::thread::sleep(Duration::from_millis(200));
        }
    });
    receiver.join().unwrap()
}

#[test]
fn multicast_reaches_containers_with_or_without_snooping() {
    if !can_run() {
        return;
    }
    let node = Node::new("mcast");
    // Off by default: with it on, every new port costs the kernel a walk
    // of every port (README, "A thousand endpoints").
    node.ok(&[
        "network",
        "create",
        "quiet",
        "--subnet",
        "10.89.1.0/24",
        "-o",
        "bridge.name=br-quiet",
    ]);
    node.ok(&[
        "network",
        "create",
        "snoop",
        "--subnet",
        "10.89.2.0/24",
        "-o",
        "bridge.name=br-snoop",
        "-o",
        "mcast_snooping=true",
    ]);
    assert_eq!(mcast_snooping(&node, "br-quiet"), "0");
    assert_eq!(mcast_snooping(&node, "br-snoop"), "1");
    // A bad value names the option and leaves no bridge behind.
    let bad = node.netshim(&[
        "network",
        "create",
        "bad",
        "--subnet",
        "10.89.3.0/24",
        "-o",
        "bridge.name=br-bad",
        "-o",
        "mcast_snooping=maybe",
    ]);
    assert!(!bad.status.success());
    let err = String::from_utf8_lossy(&bad.stderr);
    assert!(err.contains("mcast_snooping"), "{err}");
    assert!(!node.node.links().contains(&"br-bad".to_string()));

    for (net, subnet) in [("quiet", "10.89.1"), ("snoop", "10.89.2")] {
        let (c1, c2) = (Ns::new("mcast-c1"), Ns::new("mcast-c2"));
        attach(&node, net, &c1);
        let e2 = attach(&node, net, &c2);
        let to = ipv4_of(&e2);
        assert_eq!(to, format!("{subnet}.3"));
        assert!(
            multicast_arrives(&c1, &c2, &to),
            "multicast from c1 did not reach c2 on network {net}"
        );
        for c in [&c1, &c2] {
            node.ok(&[
                "detach",
                "--network",
                net,
                "--netns",
                c.path.to_str().unwrap(),
            ]);
        }
    }
    node.ok(&["network", "rm", "quiet", "snoop"]);
}
