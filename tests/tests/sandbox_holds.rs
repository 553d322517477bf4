//! "The sandbox holds", on the real kernel: each thing a hostile driver
//! tried is refused with an error that names it, or scoped by the host to
//! the driver's own networks, and afterwards the outside host still
//! reaches the node, the node's routes and the operator's own nftables
//! table are as they were, and the same host process serves a good call.

use std::process::{Command, Output};
use std::sync::Arc;
use std::time::Duration;

use netshim::cnm::model::{Network, Pool};
use netshim::cnm::{Attach, CnmError, Core, CreateNetwork, DetachTarget, PortMapping};
use netshim::runtime::{Limits, Runtime};
use netshim_host_api::kernel::netlink::Netlink;
use netshim_tests::{
    cache_dir, can_run, hostile_wasm, netshim_bin, Node, Ns, TempDir, NODE_ADDR, OUTSIDE_ADDR,
};

/// The operator's own table in the node: netshim must never touch it.
const OPERATOR_TABLE: &str = "table inet operator {
    chain input {
        type filter hook input priority 10; policy accept;
        ip saddr 192.0.2.0/24 counter accept
    }
}
";

struct Host {
    node: Node,
    core: Core,
    guests: TempDir,
}

fn host(tag: &str) -> Host {
    let node = Node::new(tag);
    let guests = TempDir::new(&format!("{tag}-guests"));
    std::fs::copy(hostile_wasm(), guests.0.join("hostile.wasm")).unwrap();
    let limits = Limits {
        deadline: Duration::from_millis(2000),
        memory_bytes: 64 << 20,
        ..Limits::default()
    };
    let runtime = Runtime::new(limits, Some(cache_dir())).unwrap();
    let kernel = Arc::new(Netlink::new(Some(&node.node.path)).unwrap());
    let core = Core::new(runtime, kernel, &node.state.0, vec![guests.0.clone()]).unwrap();
    let table = guests.0.join("operator.nft");
    std::fs::write(&table, OPERATOR_TABLE).unwrap();
    let out = node.node.exec(&["nft", "-f", table.to_str().unwrap()]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    Host { node, core, guests }
}

impl Host {
    fn create(&self, name: &str, subnet: &str, opts: &[(&str, &str)]) -> Result<Network, CnmError> {
        self.core.network_create(CreateNetwork {
            name: name.into(),
            driver: "hostile".into(),
            subnet: Some(subnet.parse().unwrap()),
            gateway: None,
            internal: false,
            options: opts
                .iter()
                .map(|(k, v)| (k.to_string(), v.to_string()))
                .collect(),
        })
    }

    fn operator_table(&self) -> String {
        let out = self
            .node
            .node
            .exec(&["nft", "list", "table", "inet", "operator"]);
        String::from_utf8_lossy(&out.stdout).into_owned()
    }

    /// The node is as it was: reachable, routes and operator rules intact,
    /// no netshim table left, and the process serves a good call.
    fn intact(&self, what: &str, routes: &[String], operator: &str) {
        assert!(
            self.node.outside.ping(NODE_ADDR),
            "{what}: the outside host lost the node"
        );
        assert_eq!(
            self.node.node.routes(),
            routes,
            "{what}: the node's routes changed"
        );
        assert_eq!(
            self.operator_table(),
            operator,
            "{what}: the operator's table changed"
        );
        let rules = self.node.node.nft_ruleset();
        assert!(
            !rules.contains("netshim-hostile"),
            "{what}: a netshim table is left:\n{rules}"
        );
        self.create("fine", "10.99.0.0/24", &[("hostile", "ok")])
            .unwrap_or_else(|e| panic!("{what}: a good call afterwards failed: {e}"));
        self.core.network_rm("fine").unwrap();
    }

    fn netshim(&self, args: &[&str]) -> Output {
        Command::new(netshim_bin())
            .env("NETSHIM_STATE_DIR", &self.node.state.0)
            .env("NETSHIM_NODE_NETNS", &self.node.node.path)
            .env("NETSHIM_CACHE_DIR", cache_dir())
            .env("NETSHIM_GUEST_DIR", &self.guests.0)
            .env("NETSHIM_LOG", "warn")
            .args(args)
            .output()
            .expect("run netshim")
    }
}

fn refused(r: Result<Network, CnmError>, what: &str, words: &[&str]) {
    let err = match r {
        Ok(n) => panic!("{what}: accepted (network {})", n.name),
        Err(e) => e.to_string(),
    };
    for w in words {
        assert!(err.contains(w), "{what}: error does not say {w:?}: {err}");
    }
}

#[test]
fn netfilter_that_would_cut_the_node_off_is_refused() {
    if !can_run() {
        return;
    }
    let h = host("nft-refused");
    let routes = h.node.node.routes();
    let operator = h.operator_table();
    assert!(h.node.outside.ping(NODE_ADDR));
    for (mode, words) in [
        ("nft-input-drop", &["denied", "drop policy"][..]),
        ("nft-forward-drop", &["denied", "drop policy"]),
        ("nft-dnat-ssh", &["denied", "DNAT"]),
        ("nft-masq-all", &["denied", "masquerade", "10.99.0.0/24"]),
        ("nft-wide-rule", &["invalid", "5000 matches"]),
    ] {
        refused(
            h.create("evil", "10.99.0.0/24", &[("hostile", mode)]),
            mode,
            words,
        );
        assert_eq!(
            h.node.node.links(),
            vec!["lo", "uplink"],
            "{mode}: the bridge was not rolled back"
        );
        h.intact(mode, &routes, &operator);
    }
}

#[test]
fn a_drivers_rules_see_only_its_own_networks_traffic() {
    if !can_run() {
        return;
    }
    let h = host("nft-scoped");
    let routes = h.node.node.routes();
    let operator = h.operator_table();
    // A bridge network with a container that reaches the outside host.
    h.core
        .network_create(CreateNetwork {
            name: "web".into(),
            driver: "bridge".into(),
            subnet: Some("10.66.0.0/24".parse().unwrap()),
            gateway: None,
            internal: false,
            options: Vec::new(),
        })
        .unwrap();
    let c = Ns::new("nft-scoped-c");
    h.core.attach(Attach::new("web", &c.path)).unwrap();
    assert!(
        c.ping(OUTSIDE_ADDR),
        "the container cannot reach the outside host to begin with"
    );
    // Match-less drop rules at input and forward: allowed, because the host
    // runs them only for the hostile driver's own interfaces.
    h.create(
        "evil-in",
        "10.99.0.0/24",
        &[("hostile", "nft-input-drop-rule"), ("bridge", "hostile0")],
    )
    .expect("a drop rule the host scopes is allowed");
    h.create(
        "evil-fwd",
        "10.98.0.0/24",
        &[("hostile", "nft-forward-drop-rule"), ("bridge", "hostile1")],
    )
    .expect("a drop rule the host scopes is allowed");
    let ruleset = h.node.node.nft_ruleset();
    assert!(ruleset.contains("netshim-filter-input"), "{ruleset}");
    assert!(
        h.node.outside.ping(NODE_ADDR),
        "the input drop rule cut the node off:\n{ruleset}"
    );
    assert!(
        c.ping(OUTSIDE_ADDR),
        "the forward drop rule cut another network off:\n{ruleset}"
    );
    h.core.network_rm("evil-in").unwrap();
    h.core.network_rm("evil-fwd").unwrap();
    h.core
        .detach(DetachTarget::Sandbox {
            network: "web".into(),
            netns: c.path.clone(),
        })
        .unwrap();
    h.core.network_rm("web").unwrap();
    h.intact("scoped drop rules", &routes, &operator);
}

#[test]
fn ipam_and_routes_that_would_take_the_default_route_are_refused() {
    if !can_run() {
        return;
    }
    let h = host("wide");
    let routes = h.node.node.routes();
    let operator = h.operator_table();
    refused(
        h.create("wide", "10.123.0.0/16", &[("hostile", "ok")]),
        "IPAM answering 0.0.0.0/0",
        &["request-pool returned 0.0.0.0/0"],
    );
    refused(
        h.create("halves", "10.99.0.0/24", &[("hostile", "route-halves")]),
        "routes 0.0.0.0/1 and 128.0.0.0/1",
        &["denied", "0.0.0.0/1", "10.99.0.0/24"],
    );
    assert_eq!(h.node.node.links(), vec!["lo", "uplink"]);
    h.intact("wide pools and routes", &routes, &operator);
}

#[test]
fn routes_it_did_not_make_stay_and_undo_restores_its_own() {
    if !can_run() {
        return;
    }
    let h = host("replace");
    h.create(
        "own",
        "10.99.0.0/24",
        &[("hostile", "own-route"), ("on-attach", "replace-foreign")],
    )
    .unwrap();
    // The operator routes part of that pool elsewhere after the fact.
    h.node
        .node
        .ip(&["route", "add", "10.99.0.128/25", "via", OUTSIDE_ADDR]);
    let routes = h.node.node.routes();
    let c = Ns::new("replace-c");
    let err = h
        .core
        .attach(Attach::new("own", &c.path))
        .unwrap_err()
        .to_string();
    assert!(
        err.contains("denied") && err.contains("10.99.0.128/25"),
        "{err}"
    );
    assert_eq!(
        h.node.node.routes(),
        routes,
        "a route the network does not own was replaced"
    );
    h.core.network_rm("own").unwrap();
    h.node.node.ip(&["route", "del", "10.99.0.128/25"]);

    h.create(
        "undo",
        "10.99.0.0/24",
        &[("hostile", "own-route"), ("on-attach", "replace-then-fail")],
    )
    .unwrap();
    let routes = h.node.node.routes();
    assert!(
        routes
            .iter()
            .any(|r| r.starts_with("10.99.0.64/26 dev hostile0")),
        "{routes:?}"
    );
    let err = h
        .core
        .attach(Attach::new("undo", &c.path))
        .unwrap_err()
        .to_string();
    assert!(err.contains("failing after replacing"), "{err}");
    assert_eq!(
        h.node.node.routes(),
        routes,
        "the undo of a replace did not restore the route"
    );
    h.core.network_rm("undo").unwrap();
}

#[test]
fn what_a_guest_hands_back_is_checked() {
    if !can_run() {
        return;
    }
    let h = host("handback");
    let routes = h.node.node.routes();
    let operator = h.operator_table();
    // The sandbox is never the node.
    h.create("n", "10.99.0.0/24", &[("hostile", "ok")]).unwrap();
    let err = h
        .core
        .attach(Attach::new("n", &h.node.node.path))
        .unwrap_err()
        .to_string();
    assert!(err.contains("node's own network namespace"), "{err}");
    assert_eq!(
        h.node.node.links(),
        vec!["hostile0", "lo", "uplink"],
        "the attach left a link"
    );
    h.core.network_rm("n").unwrap();
    // DNAT to anything but the endpoint being published, route_localnet.
    let c = Ns::new("handback-c");
    for (mode, words) in [
        ("dnat-ssh", &["denied", "port 22"][..]),
        ("dnat-loopback", &["denied", "127.0.0.1"]),
    ] {
        h.create(
            "pub",
            "10.99.0.0/24",
            &[("hostile", "ok"), ("on-publish", mode)],
        )
        .unwrap();
        let mut a = Attach::new("pub", &c.path);
        a.ports = vec!["8080:80".parse::<PortMapping>().unwrap()];
        let err = h.core.attach(a).unwrap_err().to_string();
        for w in words {
            assert!(err.contains(w), "{mode}: {err}");
        }
        assert_eq!(
            c.links(),
            vec!["lo"],
            "{mode}: the endpoint was not rolled back"
        );
        h.core.network_rm("pub").unwrap();
    }
    h.create(
        "pub",
        "10.99.0.0/24",
        &[("hostile", "ok"), ("on-publish", "dnat-ok")],
    )
    .unwrap();
    let mut a = Attach::new("pub", &c.path);
    a.ports = vec!["8080:80".parse::<PortMapping>().unwrap()];
    h.core
        .attach(a)
        .expect("DNAT of the published port to the endpoint");
    let rules = h.node.node.nft_ruleset();
    assert!(rules.contains("dnat") && rules.contains("8080"), "{rules}");
    h.core
        .detach(DetachTarget::Sandbox {
            network: "pub".into(),
            netns: c.path.clone(),
        })
        .unwrap();
    h.core.network_rm("pub").unwrap();
    for (mode, words) in [
        ("route-localnet", &["denied", "route_localnet"][..]),
        ("vxlan-port-22", &["denied", "port 22"]),
        ("vxlan-local-foreign", &["denied", "192.0.2.77"]),
    ] {
        refused(
            h.create("x", "10.99.0.0/24", &[("hostile", mode)]),
            mode,
            words,
        );
        assert_eq!(
            h.node.node.links(),
            vec!["lo", "uplink"],
            "{mode}: left a link"
        );
    }
    // Docker's Join: SrcName names the node's uplink for dockerd to move.
    let net = h
        .core
        .network_register(Network {
            id: "d0cker0000000000000000000000000000000000000000000000000000000000".into(),
            name: "dk".into(),
            driver: "hostile".into(),
            internal: false,
            options: vec![("on-join".into(), "srcname-uplink".into())],
            ipv4: vec![Pool {
                id: "p".into(),
                subnet: "10.99.0.0/24".parse().unwrap(),
                gateway: Some("10.99.0.1/24".parse().unwrap()),
            }],
            created: 0,
        })
        .unwrap();
    let ep = "e0000000000000000000000000000000000000000000000000000000000000ep";
    h.core
        .endpoint_create(&net.id, ep, Some("10.99.0.2/24".parse().unwrap()), None)
        .unwrap();
    let err = h
        .core
        .endpoint_join(&net.id, ep, "/var/run/docker/netns/x")
        .unwrap_err()
        .to_string();
    assert!(
        err.contains("\"uplink\"") && err.contains("not a link network dk created"),
        "{err}"
    );
    h.core.endpoint_delete(&net.id, ep).unwrap();
    h.core.network_unregister(&net.id).unwrap();
    h.intact("handed-back values", &routes, &operator);
}

#[test]
fn quotas_hold() {
    if !can_run() {
        return;
    }
    let h = host("quota");
    let routes = h.node.node.routes();
    let operator = h.operator_table();
    refused(
        h.create("flood", "10.99.0.0/24", &[("hostile", "links-flood")]),
        "100 bridges",
        &["denied", "at most 16 links"],
    );
    assert_eq!(h.node.node.links(), vec!["lo", "uplink"]);
    // Store bytes: 4 MiB per call, 16 MiB per driver.
    for i in 0..4 {
        let subnet = format!("10.{}.0.0/24", 90 + i);
        h.create(
            &format!("s{i}"),
            &subnet,
            &[("hostile", "store-flood"), ("bridge", &format!("s{i}"))],
        )
        .unwrap_or_else(|e| panic!("store write {i} within the quota: {e}"));
    }
    refused(
        h.create(
            "s4",
            "10.94.0.0/24",
            &[("hostile", "store-flood"), ("bridge", "s4")],
        ),
        "a fifth 4 MiB",
        &["denied", "quota"],
    );
    for i in 0..4 {
        h.core.network_rm(&format!("s{i}")).unwrap();
    }
    // Log lines and error messages, as a CLI user sees them.
    let out = h.netshim(&[
        "network",
        "create",
        "loud",
        "--driver",
        "hostile",
        "--subnet",
        "10.99.0.0/24",
        "-o",
        "hostile=log-flood",
    ]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let log = String::from_utf8_lossy(&out.stderr);
    // The mode line and 10,000 flood lines: 200 kept, 9,801 dropped.
    assert!(
        log.contains("9801 lines dropped"),
        "{}",
        &log[log.len().saturating_sub(2000)..]
    );
    assert!(
        log.lines().count() < 300,
        "{} log lines",
        log.lines().count()
    );
    h.netshim(&["network", "rm", "loud"]);
    let out = h.netshim(&[
        "network",
        "create",
        "long",
        "--driver",
        "hostile",
        "--subnet",
        "10.99.0.0/24",
        "-o",
        "hostile=error-long",
    ]);
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.len() < 4096 && err.contains("bytes cut"),
        "{} bytes: {}",
        err.len(),
        &err[..err.len().min(300)]
    );
    h.intact("quotas", &routes, &operator);
}
