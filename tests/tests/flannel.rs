//! The flannel driver across nodes, on the real kernel: a fabric namespace
//! with an underlay bridge, etcd (Debian's etcd-server) in a namespace of
//! its own, node namespaces with their own state and node agent, and an
//! outside host on the fabric. For each backend (vxlan, host-gw, udp):
//! - containers on three nodes reach each other (ping, and TCP with their
//!   own source address: pod traffic is not masqueraded) and the outside
//!   host, which sees the node's address;
//! - the lease keys in etcd hold flannel's JSON; each node's kernel holds
//!   exactly flannel's objects for every other node;
//! - an agent restart changes no kernel object;
//! - a lease written by hand with etcdctl is honoured like any node's;
//! - a fourth node joins and is reachable; stopped, its lease ends and its
//!   routes are gone from every other node;
//! - with etcd stopped, traffic keeps flowing and a new container attaches
//!   (no new lease needed); after etcd is back a node joins again;
//! - `network rm` leaves no link, route or table and gives the lease back.

use std::collections::BTreeMap;

use netshim_tests::cluster::{eventually, ClusterNode, Site, FLANNEL_PREFIX as PREFIX, OUTSIDE};
use netshim_tests::{can_run, Ns};

/// Short leases, so a node that stops is gone within seconds.
const TTL: &str = "6";

struct Cluster {
    site: Site,
    tag: &'static str,
}

impl Cluster {
    fn new(tag: &'static str, backend: &str) -> Cluster {
        Cluster {
            site: Site::flannel(tag, &format!(r#"{{"Type": "{backend}"}}"#)),
            tag,
        }
    }

    /// A node that joins: network created, agent running.
    fn node(&self, host: u8) -> ClusterNode {
        let mut n = ClusterNode::join(&self.site.fabric, self.tag, host, &self.site.etcd.url);
        n.ok(&[
            "network",
            "create",
            "pods",
            "--driver",
            "flannel",
            "-o",
            &format!("lease-ttl={TTL}"),
        ]);
        n.start_agent();
        n
    }

    /// PublicIP → (subnet, lease JSON), as etcd holds them.
    fn leases(&self) -> BTreeMap<String, (String, serde_json::Value)> {
        let out = self
            .site
            .etcd
            .etcdctl(&["get", "--prefix", &format!("{PREFIX}/subnets/")]);
        let lines: Vec<&str> = out.lines().collect();
        let mut m = BTreeMap::new();
        for pair in lines.chunks(2) {
            let [key, value] = pair else { continue };
            let v: serde_json::Value = serde_json::from_str(value).expect("lease JSON");
            let subnet = key.rsplit('/').next().unwrap().replace('-', "/");
            m.insert(v["PublicIP"].as_str().unwrap().to_string(), (subnet, v));
        }
        m
    }
}

/// A container on `node`, attached through the CLI; its address.
fn container(node: &ClusterNode, tag: &str) -> (Ns, String) {
    let c = Ns::new(tag);
    node.ok(&[
        "attach",
        "--network",
        "pods",
        "--netns",
        c.path.to_str().unwrap(),
    ]);
    let out = c.ip(&["-4", "-o", "addr", "show", "dev", "eth0"]);
    let addr = out
        .split_whitespace()
        .nth(3)
        .and_then(|a| a.split('/').next())
        .expect("eth0 has an address")
        .to_string();
    (c, addr)
}

/// What a reconcile could change on a node: links (with their index and
/// the VXLAN device's settings), IPv4 addresses and routes, neighbours and
/// FDB entries of the flannel device. (Bridge timers and IPv6 duplicate
/// address detection change by themselves and are left out.)
fn kernel_objects(n: &ClusterNode) -> String {
    let mut s = n.ns.ip(&["-o", "link", "show"]);
    if s.contains("flannel.1") {
        s += &n.ns.ip(&["-d", "link", "show", "flannel.1"]);
        s += &n.ns.ip(&["neigh", "show", "dev", "flannel.1"]);
        let fdb = n.ns.exec(&["bridge", "fdb", "show", "dev", "flannel.1"]);
        s += &String::from_utf8_lossy(&fdb.stdout);
    }
    s += &n.ns.ip(&["-4", "-o", "addr", "show"]);
    s += &n.ns.ip(&["-4", "route", "show", "table", "all"]);
    s
}

fn network_of(subnet: &str) -> String {
    subnet.split('/').next().unwrap().to_string()
}

/// Flannel's objects on `n` for a remote node: the route, and for vxlan
/// its neighbour and FDB entry (in the shapes of flannel's reference).
fn has_peer(
    n: &ClusterNode,
    backend: &str,
    subnet: &str,
    public_ip: &str,
    mac: Option<&str>,
) -> bool {
    let routes = n.ns.ip(&["route", "show", subnet]);
    match backend {
        "vxlan" => {
            let gw = network_of(subnet);
            let mac = mac.unwrap();
            let neigh = n.ns.ip(&["neigh", "show", "dev", "flannel.1"]);
            let fdb = String::from_utf8_lossy(
                &n.ns
                    .exec(&["bridge", "fdb", "show", "dev", "flannel.1"])
                    .stdout,
            )
            .into_owned();
            routes.contains(&format!("{subnet} via {gw} dev flannel.1"))
                && routes.contains("onlink")
                && neigh.contains(&format!("{gw} lladdr {mac} PERMANENT"))
                && fdb.contains(&format!("{mac} dst {public_ip} self permanent"))
        }
        "udp" => {
            n.ns.ip(&["route", "show", "10.244.0.0/16"])
                .contains("dev flannel0")
                && programmed(n, subnet, public_ip)
        }
        _ => routes.contains(&format!("{subnet} via {public_ip} dev eth0")),
    }
}

/// The node's agent says it programmed `subnet` at `public_ip`.
fn programmed(n: &ClusterNode, subnet: &str, public_ip: &str) -> bool {
    let status = cluster_status(n);
    status["networks"][0]["nodes"]
        .as_array()
        .is_some_and(|nodes| {
            nodes.iter().any(|x| {
                x["prefixes"][0] == subnet && x["address"] == public_ip && x["programmed"] == true
            })
        })
}

/// The node reaches `subnet`: a route to it, or (udp) its entry in the
/// tunnel's table.
fn reaches(n: &ClusterNode, backend: &str, subnet: &str) -> bool {
    if backend == "udp" {
        let status = cluster_status(n);
        return status["networks"][0]["nodes"]
            .as_array()
            .is_some_and(|nodes| nodes.iter().any(|x| x["prefixes"][0] == subnet));
    }
    has_route_to(n, subnet)
}

fn cluster_status(n: &ClusterNode) -> serde_json::Value {
    serde_json::from_str(&n.ok(&["--output", "json", "cluster", "status"]))
        .expect("cluster status JSON")
}

fn has_route_to(n: &ClusterNode, subnet: &str) -> bool {
    !n.ns.ip(&["route", "show", subnet]).trim().is_empty()
}

fn scenario(tag: &'static str, backend: &str) {
    let mut c = Cluster::new(tag, backend);
    let baseline_links = {
        let probe = ClusterNode::join(&c.site.fabric, tag, 99, &c.site.etcd.url);
        probe.ns.links()
    };
    let mut nodes: Vec<ClusterNode> = (11..=13).map(|h| c.node(h)).collect();

    // Leases: flannel's JSON, one subnet per node.
    let leases = c.leases();
    assert_eq!(leases.len(), 3, "{leases:?}");
    for n in &nodes {
        let (subnet, v) = &leases[&n.addr];
        if backend != "udp" {
            assert_eq!(v["BackendType"], backend, "{v}");
        }
        assert!(
            subnet.starts_with("10.244.") && subnet.ends_with("/24"),
            "{subnet}"
        );
        if backend == "vxlan" {
            assert_eq!(v["BackendData"]["VNI"], 1, "{v}");
            let mac = v["BackendData"]["VtepMAC"].as_str().unwrap();
            let dev = n.ns.ip(&["-d", "link", "show", "flannel.1"]);
            assert!(
                dev.contains(mac)
                    && dev.contains("vxlan id 1")
                    && dev.contains("dstport 8472")
                    && dev.contains("nolearning"),
                "{dev}"
            );
            assert!(
                dev.contains("mtu 1450"),
                "MTU is the underlay's minus 50: {dev}"
            );
            let addrs = n.ns.ip(&["-4", "addr", "show", "flannel.1"]);
            assert!(
                addrs.contains(&format!("{}/32", network_of(subnet))),
                "{addrs}"
            );
        }
        // The bridge holds the subnet's first address.
        let gw = subnet.replace(".0/24", ".1/24");
        assert!(n.ns.ip(&["-4", "addr", "show", "cni0"]).contains(&gw));
    }

    // Every node has every other node, as flannel programs it.
    for n in &nodes {
        for (ip, (subnet, v)) in &leases {
            if *ip == n.addr {
                continue;
            }
            let mac = v["BackendData"]["VtepMAC"].as_str();
            assert!(
                eventually(10, || has_peer(n, backend, subnet, ip, mac)),
                "node {} lacks peer {ip} ({subnet}): {}",
                n.addr,
                kernel_objects(n)
            );
        }
    }

    // The etcd lease behind node 1's key, to see it kept alive (not
    // replaced) later.
    let lease_id = |c: &Cluster, subnet: &str| -> serde_json::Value {
        let key = format!("{PREFIX}/subnets/{}", subnet.replace('/', "-"));
        let v: serde_json::Value =
            serde_json::from_str(&c.site.etcd.etcdctl(&["get", &key, "-w", "json"])).unwrap();
        v["kvs"][0]["lease"].clone()
    };
    let first_lease = lease_id(&c, &leases[&nodes[0].addr].0);
    assert!(
        first_lease.as_i64().is_some_and(|l| l != 0),
        "{first_lease}"
    );

    // `cluster status`: every node, its subnet and lease, all programmed.
    let status = cluster_status(&nodes[0]);
    let shown: Vec<&serde_json::Value> = status["networks"][0]["nodes"]
        .as_array()
        .unwrap()
        .iter()
        .collect();
    assert_eq!(shown.len(), 3, "{status}");
    for n in &shown {
        let (subnet, _) = &leases[n["address"].as_str().unwrap()];
        assert_eq!(n["prefixes"][0], subnet.as_str(), "{status}");
        assert_eq!(n["kind"], backend, "{status}");
        assert_eq!(n["programmed"], true, "{status}");
        assert_eq!(n["lease"]["state"], "expires-in", "{status}");
        assert!(n["lease"]["seconds"].as_u64().unwrap() <= 6, "{status}");
    }
    assert_eq!(shown.iter().filter(|n| n["local"] == true).count(), 1);

    // `topology` draws the cluster view: every other node of the network.
    let dot = nodes[0].ok(&["topology"]);
    for n in &nodes[1..] {
        assert!(dot.contains(&format!("cluster node {}", n.addr)), "{dot}");
    }
    let svg = nodes[0].ok(&["topology", "--format", "svg"]);
    assert!(svg.contains("<svg") && svg.contains(&format!("cluster node {}", nodes[1].addr)));

    // Containers on three nodes reach each other, with their own address.
    let ctrs: Vec<(Ns, String)> = nodes
        .iter()
        .enumerate()
        .map(|(i, n)| container(n, &format!("{tag}-c{i}")))
        .collect();
    for (i, (a, _)) in ctrs.iter().enumerate() {
        for (j, (_, b_addr)) in ctrs.iter().enumerate() {
            if i != j {
                assert!(
                    a.ping(b_addr),
                    "container on node {i} cannot ping {b_addr} on node {j}"
                );
            }
        }
    }
    let listener = ctrs[1].0.accept_one(&format!("{}:8080", ctrs[1].1));
    ctrs[0]
        .0
        .connect(&format!("{}:8080", ctrs[1].1))
        .expect("TCP across nodes");
    assert_eq!(
        listener.join().unwrap().ip().to_string(),
        ctrs[0].1,
        "pod-to-pod traffic is not masqueraded"
    );
    // The outside host sees the node's address.
    let listener = c.site.outside.accept_one(&format!("{OUTSIDE}:8080"));
    ctrs[0]
        .0
        .connect(&format!("{OUTSIDE}:8080"))
        .expect("TCP to the outside host");
    assert_eq!(
        listener.join().unwrap().ip().to_string(),
        nodes[0].addr,
        "masqueraded to the node's address"
    );

    // An agent restart changes nothing in the kernel.
    std::thread::sleep(std::time::Duration::from_secs(1));
    let before = kernel_objects(&nodes[0]);
    let passes = |n: &ClusterNode| n.agent_log().matches("first pass done").count();
    let passed_before = passes(&nodes[0]);
    nodes[0].stop_agent();
    nodes[0].start_agent();
    // The restarted agent did reconcile (else nothing could have changed).
    assert!(
        eventually(10, || passes(&nodes[0]) > passed_before),
        "the restarted agent made no pass: {}",
        nodes[0].agent_log()
    );
    std::thread::sleep(std::time::Duration::from_secs(1));
    assert_eq!(
        before,
        kernel_objects(&nodes[0]),
        "an agent restart changed kernel objects"
    );

    // Beyond its TTL (6 s; about 5 s went by above), node 1's lease is the
    // same etcd lease, kept alive.
    std::thread::sleep(std::time::Duration::from_secs(3));
    assert_eq!(
        lease_id(&c, &leases[&nodes[0].addr].0),
        first_lease,
        "the lease was replaced, not kept alive"
    );

    // A lease written by hand, in flannel's format, is honoured.
    let hand_subnet = "10.244.250.0/24";
    let hand_key = format!("{PREFIX}/subnets/10.244.250.0-24");
    let hand = match backend {
        "vxlan" => {
            r#"{"PublicIP":"192.0.2.77","PublicIPv6":null,"BackendType":"vxlan","BackendData":{"VNI":1,"VtepMAC":"0e:aa:bb:cc:dd:ee"}}"#
        }
        "udp" => r#"{"PublicIP":"192.0.2.77","PublicIPv6":null,"BackendData":null}"#,
        _ => {
            r#"{"PublicIP":"192.0.2.77","PublicIPv6":null,"BackendType":"host-gw","BackendData":null}"#
        }
    };
    c.site.etcd.etcdctl(&["put", &hand_key, hand]);
    for n in &nodes {
        assert!(
            eventually(10, || has_peer(
                n,
                backend,
                hand_subnet,
                "192.0.2.77",
                Some("0e:aa:bb:cc:dd:ee")
            )),
            "node {} ignored a hand-written lease: {}\n{}\n{}",
            n.addr,
            kernel_objects(n),
            cluster_status(n),
            n.agent_log()
        );
    }
    c.site.etcd.etcdctl(&["del", &hand_key]);
    for n in &nodes {
        assert!(
            eventually(10, || !reaches(n, backend, hand_subnet)),
            "node {} kept a deleted lease's route",
            n.addr
        );
    }
    if backend == "host-gw" {
        // A node that is not directly reachable: a clear error, no route.
        let far = format!("{PREFIX}/subnets/10.244.251.0-24");
        c.site.etcd.etcdctl(&[
            "put",
            &far,
            r#"{"PublicIP":"198.51.100.7","BackendType":"host-gw"}"#,
        ]);
        assert!(
            eventually(10, || nodes[0]
                .agent_log()
                .contains("198.51.100.7 is not directly reachable")),
            "no error for an unreachable host-gw peer: {}",
            nodes[0].agent_log()
        );
        assert!(!has_route_to(&nodes[0], "10.244.251.0/24"));
        let status = cluster_status(&nodes[0]);
        let far_node = status["networks"][0]["nodes"]
            .as_array()
            .unwrap()
            .iter()
            .find(|n| n["address"] == "198.51.100.7")
            .cloned()
            .unwrap_or_else(|| panic!("cluster status lacks the unreachable node: {status}"));
        assert_eq!(far_node["programmed"], false, "{status}");
        assert!(
            far_node["problem"]
                .as_str()
                .unwrap()
                .contains("not directly reachable"),
            "{status}"
        );
        assert_eq!(
            far_node["lease"]["state"], "permanent",
            "a key without a lease: {status}"
        );
        c.site.etcd.etcdctl(&["del", &far]);
    }

    // A fourth node joins and is reachable from the others.
    let n4 = c.node(14);
    let (c4, c4_addr) = container(&n4, &format!("{tag}-c3"));
    let subnet4 = c.leases()[&n4.addr].0.clone();
    for (i, n) in nodes.iter().enumerate() {
        assert!(
            eventually(10, || reaches(n, backend, &subnet4)),
            "node {} has no route to the new node ({subnet4}): {}",
            n.addr,
            cluster_status(n)
        );
        assert!(
            ctrs[i].0.ping(&c4_addr),
            "container on node {i} cannot reach the new node's"
        );
    }
    drop(c4);
    nodes.push(n4);

    // It stops (its agent and with it the lease renewals): once its lease
    // ends, its routes are gone from every other node.
    let mut gone = nodes.pop().unwrap();
    gone.stop_agent();
    for n in &nodes {
        assert!(
            eventually(20, || !reaches(n, backend, &subnet4)),
            "node {} still routes to a node whose lease ended",
            n.addr
        );
    }
    assert!(!c.leases().contains_key(&gone.addr));

    // etcd stops: traffic keeps flowing, a container attaches.
    c.site.etcd.pause();
    std::thread::sleep(std::time::Duration::from_secs(2));
    assert!(ctrs[0].0.ping(&ctrs[1].1), "traffic stopped with etcd");
    let (late, late_addr) = container(&nodes[1], &format!("{tag}-late"));
    assert!(
        ctrs[0].0.ping(&late_addr),
        "a container attached while etcd was down is unreachable"
    );
    assert!(late.ping(&ctrs[2].1));
    c.site.etcd.resume();
    // The stopped node comes back after etcd did: same subnet, reachable.
    gone.start_agent();
    let (back, back_addr) = container(&gone, &format!("{tag}-back"));
    assert!(
        eventually(10, || c.leases().contains_key(&gone.addr)),
        "the returning node did not lease again: {}",
        gone.agent_log()
    );
    assert_eq!(
        c.leases()[&gone.addr].0,
        subnet4,
        "a returning node keeps its subnet"
    );
    assert!(
        eventually(10, || ctrs[0].0.ping(&back_addr)),
        "the returning node is unreachable"
    );
    drop(back);
    drop(late);
    nodes.push(gone);

    // Teardown: nothing is left, leases are given back.
    drop(ctrs);
    for n in &mut nodes {
        n.stop_agent();
        let inspect: serde_json::Value =
            serde_json::from_str(&n.ok(&["--output", "json", "network", "inspect", "pods"]))
                .unwrap();
        for ep in inspect["endpoints"].as_array().cloned().unwrap_or_default() {
            n.ok(&["detach", "--endpoint", ep["id"].as_str().unwrap()]);
        }
        n.ok(&["network", "rm", "pods"]);
        n.assert_left_nothing(&baseline_links, "10.244.");
    }
    assert!(c.leases().is_empty(), "leases stayed: {:?}", c.leases());
}

#[test]
fn vxlan_across_nodes() {
    if !can_run() {
        return;
    }
    scenario("flvx", "vxlan");
}

#[test]
fn udp_across_nodes() {
    if !can_run() {
        return;
    }
    scenario("flud", "udp");
}

#[test]
fn host_gw_across_nodes() {
    if !can_run() {
        return;
    }
    scenario("flhg", "host-gw");
}

/// vxlan with `DirectRouting`: nodes on the same underlay subnet route to
/// each other's subnets straight over the underlay (flannel's shape:
/// `<subnet> via <PublicIP> dev eth0`), with no VXLAN neighbour for them,
/// and their containers still reach each other.
#[test]
fn vxlan_direct_routing_on_one_segment() {
    if !can_run() {
        return;
    }
    let tag = "fldr";
    let Site { fabric, etcd, .. } =
        Site::flannel(tag, r#"{"Type": "vxlan", "DirectRouting": true}"#);
    let nodes: Vec<ClusterNode> = (11..=12)
        .map(|h| {
            let mut n = ClusterNode::join(&fabric, tag, h, &etcd.url);
            n.ok(&["network", "create", "pods", "--driver", "flannel"]);
            n.start_agent();
            n
        })
        .collect();
    let leases = {
        let out = etcd.etcdctl(&["get", "--prefix", &format!("{PREFIX}/subnets/")]);
        out.lines()
            .collect::<Vec<_>>()
            .chunks(2)
            .map(|p| {
                let v: serde_json::Value = serde_json::from_str(p[1]).unwrap();
                (
                    v["PublicIP"].as_str().unwrap().to_string(),
                    p[0].rsplit('/').next().unwrap().replace('-', "/"),
                )
            })
            .collect::<BTreeMap<_, _>>()
    };
    let (a, b) = (&nodes[0], &nodes[1]);
    let b_subnet = &leases[&b.addr];
    assert!(
        eventually(10, || a
            .ns
            .ip(&["route", "show", b_subnet])
            .contains(&format!("via {} dev eth0", b.addr))),
        "no direct route: {}",
        a.ns.ip(&["route"])
    );
    assert!(
        a.ns.ip(&["neigh", "show", "dev", "flannel.1"])
            .trim()
            .is_empty(),
        "a direct peer needs no VXLAN neighbour"
    );
    let (ca, _) = container(a, &format!("{tag}-a"));
    let (_cb, cb_addr) = container(b, &format!("{tag}-b"));
    assert!(
        ca.ping(&cb_addr),
        "containers cannot reach each other over direct routes"
    );
    let status = cluster_status(a);
    assert!(
        status.to_string().contains("\"kind\":\"direct\""),
        "{status}"
    );
}
