//! Hostile guests against the real kernel: each is stopped, capped, rolled
//! back or denied, and the same host process keeps serving afterwards.

use std::sync::Arc;
use std::time::{Duration, Instant};

use netshim::cnm::{CnmError, Core, CreateNetwork};
use netshim::runtime::{Limits, Runtime};
use netshim_host_api::kernel::netlink::Netlink;
use netshim_tests::{cache_dir, can_run, hostile_wasm, unknown_import_wat, Node, TempDir};

struct Host {
    node: Node,
    core: Core,
    _guests: TempDir,
}

fn host(tag: &str) -> Host {
    let node = Node::new(tag);
    let guests = TempDir::new(&format!("{tag}-guests"));
    std::fs::copy(hostile_wasm(), guests.0.join("hostile.wasm")).unwrap();
    let limits = Limits {
        deadline: Duration::from_millis(500),
        memory_bytes: 32 << 20,
        ..Limits::default()
    };
    let runtime = Runtime::new(limits, Some(cache_dir())).unwrap();
    let kernel = Arc::new(Netlink::new(Some(&node.node.path)).unwrap());
    let core = Core::new(runtime, kernel, &node.state.0, vec![guests.0.clone()]).unwrap();
    Host {
        node,
        core,
        _guests: guests,
    }
}

fn create(h: &Host, name: &str, mode: &str) -> Result<(), CnmError> {
    create_with(h, name, mode, &[])
}

fn create_with(h: &Host, name: &str, mode: &str, extra: &[(&str, &str)]) -> Result<(), CnmError> {
    h.core
        .network_create(CreateNetwork {
            name: name.into(),
            driver: "hostile".into(),
            subnet: Some("10.99.0.0/24".parse().unwrap()),
            gateway: None,
            internal: false,
            options: [("hostile", mode), ("target", "uplink")]
                .iter()
                .chain(extra)
                .map(|(k, v)| (k.to_string(), v.to_string()))
                .collect(),
        })
        .map(|_| ())
}

/// The host still works: a well-behaved call succeeds and is cleaned up.
fn still_serving(h: &Host) {
    create(h, "fine", "ok").expect("a well-behaved call after a hostile one");
    assert!(h.node.node.links().contains(&"hostile0".to_string()));
    h.core
        .network_rm("fine")
        .expect("remove the well-behaved network");
}

#[test]
fn infinite_loop_is_stopped_at_the_deadline() {
    if !can_run() {
        return;
    }
    let h = host("loop");
    let t = Instant::now();
    let err = create(&h, "spin", "loop").unwrap_err().to_string();
    let took = t.elapsed();
    assert!(err.contains("deadline"), "{err}");
    assert!(took < Duration::from_secs(5), "the loop ran {took:?}");
    let metrics = h.core.metrics().render(0);
    assert!(
        metrics.contains(r#"netshim_guest_stopped_total{driver="hostile",reason="deadline"} 1"#),
        "{metrics}"
    );
    still_serving(&h);
}

#[test]
fn memory_bomb_is_capped() {
    if !can_run() {
        return;
    }
    let h = host("bomb");
    let rss_before = rss_kib();
    let err = create(&h, "bomb", "membomb").unwrap_err().to_string();
    assert!(err.contains("memory cap of 32 MiB"), "{err}");
    assert!(h
        .core
        .metrics()
        .render(0)
        .contains(r#"netshim_guest_stopped_total{driver="hostile",reason="memory"} 1"#));
    let grown = rss_kib().saturating_sub(rss_before);
    assert!(grown < 256 * 1024, "the host grew by {grown} KiB");
    still_serving(&h);
}

#[test]
fn panic_after_creating_a_link_is_rolled_back() {
    if !can_run() {
        return;
    }
    let h = host("panic");
    let (links, addrs, routes) = h.node.baseline();
    for mode in ["panic-after-link", "error-after-link"] {
        let err = create(&h, "half", mode).unwrap_err().to_string();
        let why = if mode == "panic-after-link" {
            "panic"
        } else {
            "hostile: error after creating a link"
        };
        assert!(err.contains(why), "{mode}: {err}");
        assert_eq!(
            h.node.node.links(),
            links,
            "{mode}: the bridge it made is still there"
        );
        assert_eq!(
            h.node.node.addresses(),
            addrs,
            "{mode}: its address is still there"
        );
        assert_eq!(
            h.node.node.routes(),
            routes,
            "{mode}: its route is still there"
        );
    }
    let state = h.node.state_json();
    assert!(
        state["spaces"].as_object().is_none_or(|m| m.is_empty()),
        "state kept from a failed call: {state}"
    );
    // The panic is counted as one; the error is no stop of the sandbox.
    let metrics = h.core.metrics().render(0);
    assert!(
        metrics.contains(r#"netshim_guest_stopped_total{driver="hostile",reason="panic"} 1"#),
        "{metrics}"
    );
    assert!(!metrics.contains(r#"reason="trap""#), "{metrics}");
    still_serving(&h);
}

#[test]
fn links_it_does_not_own_are_denied() {
    if !can_run() {
        return;
    }
    let h = host("deny");
    let addrs = h.node.node.addresses();
    for mode in ["steal-uplink", "delete-underlay", "readdress-uplink"] {
        let err = create(&h, "thief", mode).unwrap_err().to_string();
        assert!(
            err.contains("denied") && err.contains("uplink"),
            "{mode}: {err}"
        );
        assert!(
            h.node.node.links().contains(&"uplink".to_string()),
            "{mode}: the uplink is gone"
        );
        assert_eq!(
            h.node.node.addresses(),
            addrs,
            "{mode}: the uplink was re-addressed"
        );
    }
    still_serving(&h);
}

#[test]
fn routes_outside_the_grant_are_denied() {
    if !can_run() {
        return;
    }
    let h = host("route");
    let (links, _, routes) = h.node.baseline();
    let err = create(&h, "wide", "route-outside").unwrap_err().to_string();
    assert!(
        err.contains("denied") && err.contains("192.0.2.0/24"),
        "{err}"
    );
    assert_eq!(h.node.node.routes(), routes);
    assert_eq!(
        h.node.node.links(),
        links,
        "the bridge made before the denied route was not rolled back"
    );
    still_serving(&h);
}

/// Cluster prefixes come only from the operator, through the network's
/// `netshim.route-prefixes` option; even then never the node's way out.
#[test]
fn operator_granted_cluster_prefixes_extend_the_grant() {
    if !can_run() {
        return;
    }
    let h = host("cluster-prefix");
    let (links, _, routes) = h.node.baseline();
    let grant = [("netshim.route-prefixes", "192.0.2.0/24")];
    create_with(&h, "granted", "route-outside", &grant)
        .expect("a route inside the operator's grant");
    assert!(
        h.node
            .node
            .routes()
            .iter()
            .any(|r| r.starts_with("192.0.2.0/24")),
        "the granted route is missing: {:?}",
        h.node.node.routes()
    );
    h.core.network_rm("granted").unwrap();
    assert_eq!(h.node.node.routes(), routes);
    for bad in ["0.0.0.0/1", "127.0.0.0/8", "10.0.0.0/4"] {
        let err = create_with(
            &h,
            "wide",
            "route-outside",
            &[("netshim.route-prefixes", bad)],
        )
        .unwrap_err()
        .to_string();
        assert!(err.contains("netshim.route-prefixes"), "{bad}: {err}");
        assert_eq!(h.node.node.links(), links, "{bad}: left a link");
    }
    assert_eq!(h.node.node.routes(), routes);
    still_serving(&h);
}

#[test]
fn unknown_import_is_refused_at_load() {
    let rt = Runtime::new(Limits::default(), None).unwrap();
    let err = match rt.load_file(&unknown_import_wat()) {
        Ok(_) => panic!("a guest importing an unknown interface was accepted"),
        Err(e) => e.to_string(),
    };
    assert!(
        err.contains("evil:net/raw-socket"),
        "the error must name the import: {err}"
    );
    // The same runtime still loads a good guest.
    let good = rt
        .load_file(&hostile_wasm())
        .expect("a valid guest after a refused one");
    assert!(
        good.exports
            .contains(&"netshim:plugin/driver@0.1.0".to_string()),
        "{:?}",
        good.exports
    );
    let allowed = |i: &String| {
        i.starts_with("netshim:plugin/") || i.starts_with("wasi:io/") || i.starts_with("wasi:cli/")
    };
    assert!(good.imports.iter().all(allowed), "{:?}", good.imports);
}

fn rss_kib() -> u64 {
    let status = std::fs::read_to_string("/proc/self/status").unwrap_or_default();
    status
        .lines()
        .find(|l| l.starts_with("VmRSS:"))
        .and_then(|l| l.split_whitespace().nth(1))
        .and_then(|v| v.parse().ok())
        .unwrap_or(0)
}
