//! Calico (BGP mode, BIRD on each node) with real container runtimes:
//! dockerd on one node (netshim as its network and IPAM plugin), runc with
//! netshim's OCI hook on another. Docker gets the answers Calico's
//! libnetwork plugin gave it: no gateway allocated in the pool (0.0.0.0),
//! a /32 address, 169.254.1.1 as the gateway with a connected route to
//! it. The containers reach each other across the nodes by BGP routes,
//! and the outside host sees the node; afterwards nothing is left.

use std::time::Duration;

use netshim_tests::cluster::{
    addr_of, eventually, have_bird, runc_bundle, runc_ok, runc_pings, runc_remove, ClusterNode,
    Site, CALICO_BGP_CREATE, OUTSIDE,
};
use netshim_tests::docker::Docker;
use netshim_tests::{can_run, Runtime, TempDir};

#[test]
fn docker_and_runc_containers_on_a_calico_network() {
    if !can_run() {
        return;
    }
    if !have_bird() {
        eprintln!("SKIPPED: BIRD 2 is not installed (Debian: apt-get install bird2)");
        return;
    }
    let tag = "clrt";
    let site = Site::new(tag);
    let baseline = ClusterNode::join(&site.fabric, tag, 99, &site.etcd.url)
        .ns
        .links();

    // Node A: dockerd, with netshim's daemon as its plugin.
    let mut a = ClusterNode::join(&site.fabric, tag, 11, &site.etcd.url);
    let prefix = format!("nst{}cl-", std::process::id());
    a.start_agent_serving(std::path::Path::new("/run/docker/plugins"), &prefix);
    let docker = Docker::start(&a.ns, tag);
    let drv = format!("{prefix}calico");
    docker.ok(&[
        "network",
        "create",
        "-d",
        &drv,
        "--ipam-driver",
        &drv,
        "--ipam-opt",
        "vxlan-mode=Never",
        "pods",
    ]);
    let inspect = docker.ok(&[
        "network",
        "inspect",
        "-f",
        "{{range .IPAM.Config}}{{.Subnet}} {{.Gateway}}{{end}}",
        "pods",
    ]);
    assert_eq!(
        inspect.trim(),
        "192.168.0.0/16 0.0.0.0",
        "Docker allocated no gateway in the pool"
    );
    docker.ok(&[
        "run",
        "-d",
        "--name",
        "d1",
        "--network",
        "pods",
        "nstbusybox",
        "sleep",
        "1000",
    ]);
    let d1 = docker.ip_of("d1", "pods");
    let exec = |args: &[&str]| {
        let mut v = vec!["exec", "d1"];
        v.extend_from_slice(args);
        docker.ok(&v)
    };
    let addr = exec(&["ip", "-o", "-4", "addr", "show", "eth0"]);
    assert!(addr.contains(&format!("{d1}/32")), "{addr}");
    let routes = exec(&["ip", "route"]);
    assert!(
        routes.contains("default via 169.254.1.1 dev eth0")
            && routes.contains("169.254.1.1 dev eth0 scope link"),
        "{routes}"
    );

    // Node B: runc, attached by netshim's OCI hook.
    let mut b = ClusterNode::join(&site.fabric, tag, 12, &site.etcd.url);
    b.ok(&CALICO_BGP_CREATE);
    b.start_agent();
    let runc_root = TempDir::new(&format!("{tag}-runc"));
    let bundle_b = runc_bundle(&b, &format!("{tag}-r1"), "pods");
    let id = Runtime::id("clr1");
    runc_ok(
        &b,
        &runc_root,
        &["run", "-d", "--bundle", bundle_b.0.to_str().unwrap(), &id],
    );
    let r1 = addr_of(&runc_ok(
        &b,
        &runc_root,
        &["exec", &id, "ip", "-o", "-4", "addr", "show", "eth0"],
    ));
    assert!(
        d1.starts_with("192.168.") && r1.starts_with("192.168."),
        "{d1} {r1}"
    );

    // Both nodes speak BGP with each other.
    for n in [&a, &b] {
        assert!(
            eventually(20, || n.node_status()["peers"]
                .as_array()
                .is_some_and(|p| p.len() == 1 && p[0]["established"] == true)),
            "node {}: {:#}",
            n.addr,
            n.node_status()
        );
    }
    let docker_pings = |to: &str| docker.pings("d1", to);
    let runc_pings = |to: &str| runc_pings(&b, &runc_root, &id, to);
    assert!(
        eventually(15, || docker_pings(&r1)),
        "docker on A cannot reach runc on B: {}",
        a.ns.ip(&["route"])
    );
    assert!(
        eventually(10, || runc_pings(&d1)),
        "runc on B cannot reach docker on A"
    );
    let listener = site.outside.accept_one(&format!("{OUTSIDE}:8080"));
    assert!(docker
        .docker(&[
            "exec",
            "d1",
            "sh",
            "-c",
            &format!("echo hi | nc {OUTSIDE} 8080")
        ])
        .status
        .success());
    assert_eq!(listener.join().unwrap().ip().to_string(), a.addr);

    // Teardown through each front-end.
    docker.ok(&["rm", "-f", "d1"]);
    docker.ok(&["network", "rm", "pods"]);
    runc_remove(&b, &runc_root, &id);
    b.ok(&["network", "rm", "pods"]);
    std::thread::sleep(Duration::from_millis(200));
    for n in [&mut a, &mut b] {
        n.stop_agent();
        n.assert_left_nothing(&baseline, "192.168.");
    }
    let left = site
        .etcd
        .etcdctl(&["get", "--prefix", "--keys-only", "/calico/ipam/v2/host/"]);
    assert!(
        left.trim().is_empty(),
        "affinities left: {left}\n{}",
        a.agent_log()
    );
    drop(docker);
}
