//! Flannel across nodes with real container runtimes: dockerd on one node
//! (netshim as its network and IPAM plugin), runc with netshim's OCI hook
//! on another, the CLI on a third. Every container reaches every other
//! across nodes, and the outside host through masquerade; after the
//! containers and networks are gone, nothing is left on any node and the
//! leases are given back.

use std::time::Duration;

use netshim_tests::cluster::{
    addr_of, eventually, runc_bundle, runc_ok, runc_pings, runc_remove, ClusterNode, Site,
    FLANNEL_PREFIX as PREFIX, OUTSIDE,
};
use netshim_tests::docker::Docker;
use netshim_tests::{can_run, Ns, Runtime, TempDir};

#[test]
fn docker_runc_and_cli_containers_across_nodes() {
    if !can_run() {
        return;
    }
    let tag = "flrt";
    let Site {
        fabric,
        etcd,
        outside,
    } = Site::flannel(tag, r#"{"Type": "vxlan"}"#);
    let baseline = ClusterNode::join(&fabric, tag, 99, &etcd.url).ns.links();

    // Node A: dockerd, with netshim's daemon as its plugin.
    let mut a = ClusterNode::join(&fabric, tag, 11, &etcd.url);
    let prefix = format!("nst{}fl-", std::process::id());
    a.start_agent_serving(std::path::Path::new("/run/docker/plugins"), &prefix);
    let docker = Docker::start(&a.ns, tag);
    let drv = format!("{prefix}flannel");
    docker.ok(&[
        "network",
        "create",
        "-d",
        &drv,
        "--ipam-driver",
        &drv,
        "pods",
    ]);
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

    // Node B: runc, attached by netshim's OCI hook.
    let mut b = ClusterNode::join(&fabric, tag, 12, &etcd.url);
    b.ok(&["network", "create", "pods", "--driver", "flannel"]);
    b.start_agent();
    let runc_root = TempDir::new(&format!("{tag}-runc"));
    let bundle_b = runc_bundle(&b, &format!("{tag}-r1"), "pods");
    let id = Runtime::id("flr1");
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

    // Node C: the CLI.
    let mut c = ClusterNode::join(&fabric, tag, 13, &etcd.url);
    c.ok(&["network", "create", "pods", "--driver", "flannel"]);
    c.start_agent();
    let cli = Ns::new(&format!("{tag}-c1"));
    c.ok(&[
        "attach",
        "--network",
        "pods",
        "--netns",
        cli.path.to_str().unwrap(),
    ]);
    let c1 = addr_of(&cli.ip(&["-o", "-4", "addr", "show", "eth0"]));

    // Three nodes, three subnets.
    let subnet = |a: &str| a.rsplit_once('.').unwrap().0.to_string();
    assert!(
        d1.starts_with("10.244.") && r1.starts_with("10.244.") && c1.starts_with("10.244."),
        "{d1} {r1} {c1}"
    );
    assert!(subnet(&d1) != subnet(&r1) && subnet(&r1) != subnet(&c1) && subnet(&d1) != subnet(&c1));

    let docker_pings = |to: &str| docker.pings("d1", to);
    let runc_pings = |to: &str| runc_pings(&b, &runc_root, &id, to);
    assert!(
        eventually(15, || docker_pings(&r1)),
        "docker on A cannot reach runc on B"
    );
    // Each agent learns the nodes that joined after it within a pass.
    assert!(
        eventually(10, || docker_pings(&c1)),
        "docker on A cannot reach the CLI's container on C"
    );
    assert!(runc_pings(&d1), "runc on B cannot reach docker on A");
    assert!(
        eventually(10, || runc_pings(&c1)),
        "runc on B cannot reach C"
    );
    assert!(cli.ping(&d1) && cli.ping(&r1), "C cannot reach A or B");
    // Masquerade to the outside host, from the docker container.
    let listener = outside.accept_one(&format!("{OUTSIDE}:8080"));
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
    c.ok(&[
        "detach",
        "--network",
        "pods",
        "--netns",
        cli.path.to_str().unwrap(),
    ]);
    for n in [&b, &c] {
        n.ok(&["network", "rm", "pods"]);
    }
    std::thread::sleep(Duration::from_millis(200));
    for n in [&mut a, &mut b, &mut c] {
        n.stop_agent();
        n.assert_left_nothing(&baseline, "10.244.");
    }
    let leases = etcd.etcdctl(&["get", "--prefix", &format!("{PREFIX}/subnets/")]);
    assert!(leases.trim().is_empty(), "leases stayed: {leases}");
    drop(docker);
}
