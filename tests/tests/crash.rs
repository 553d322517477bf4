//! SIGKILL in the middle of every kind of operation, at many points, and
//! then only what a real system runs next: poststop after a killed
//! createRuntime hook (runc never reruns it), `netshim gc` after a killed
//! CLI command, a restarted daemon (which runs gc) after a killed plugin.
//! Afterwards nothing is left: no link, no nftables table or rule, no
//! record, no held address, and no published port reaches a new container.

use std::collections::BTreeSet;
use std::io::{Read, Write};
use std::os::unix::net::UnixStream;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use netshim_tests::{can_run, netshim_bin, wait_for, Daemon, Node, Ns, TempDir, NODE_ADDR};
use serde_json::{json, Value};

fn spawn(node: &Node, args: &[&str], stdin: Option<&str>) -> Child {
    let mut child = node
        .command(args)
        .stdin(if stdin.is_some() {
            Stdio::piped()
        } else {
            Stdio::null()
        })
        .stdout(Stdio::null())
        // Read by `wait_with_output`; a killed child writes too little to
        // fill the pipe.
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    if let Some(input) = stdin {
        let _ = child.stdin.take().unwrap().write_all(input.as_bytes());
    }
    child
}

/// Start `args` and SIGKILL it after `delay`; true if the kill came first.
fn kill_after(node: &Node, args: &[&str], stdin: Option<&str>, delay: Duration) -> bool {
    let mut child = spawn(node, args, stdin);
    std::thread::sleep(delay);
    let finished = matches!(child.try_wait(), Ok(Some(_)));
    let _ = child.kill();
    let _ = child.wait();
    !finished
}

/// How long one run of `args` takes, so the kills spread over all of it.
fn duration_of(node: &Node, args: &[&str], stdin: Option<&str>) -> Duration {
    let t = Instant::now();
    let out = spawn(node, args, stdin).wait_with_output().unwrap();
    assert!(out.status.success(), "netshim {args:?}");
    t.elapsed()
}

/// `count` delays spread evenly over 0..`span` (and a little past it).
fn delays(span: Duration, count: u32) -> Vec<Duration> {
    (0..count).map(|i| span * 11 / 10 * i / count).collect()
}

fn gc(node: &Node) -> Value {
    node.json(&["gc"])
}

/// Records of work in progress, and endpoints.
fn leftover_records(node: &Node) -> Vec<String> {
    let state = node.state_json();
    state["spaces"]["cnm"]
        .as_object()
        .map(|m| {
            m.keys()
                .filter(|k| {
                    k.starts_with("pending/")
                        || k.starts_with("intents/")
                        || k.starts_with("endpoints/")
                })
                .cloned()
                .collect()
        })
        .unwrap_or_default()
}

/// An attach died between its intent and its commit.
fn has_intent(node: &Node) -> bool {
    leftover_records(node)
        .iter()
        .any(|k| k.starts_with("intents/"))
}

fn netshim_tables(ns: &Ns) -> Vec<String> {
    let out = ns.exec(&["nft", "list", "tables"]);
    String::from_utf8_lossy(&out.stdout)
        .lines()
        .filter(|l| l.contains("netshim-"))
        .map(str::to_string)
        .collect()
}

fn assert_clean(node: &Node, base: &[String], when: &str) {
    assert_eq!(node.node.links(), base, "links {when}");
    assert_eq!(netshim_tables(&node.node), Vec::<String>::new(), "{when}");
    assert_eq!(leftover_records(node), Vec::<String>::new(), "{when}");
    let state = node.state_json().to_string();
    assert!(
        !state.contains("pools/"),
        "a pool is still held {when}: {state}"
    );
}

fn settled(report: &Value) -> usize {
    ["settled", "links", "tables"]
        .iter()
        .map(|k| report[k].as_array().map_or(0, Vec::len))
        .sum()
}

#[test]
fn network_create_and_rm_killed_anywhere_then_gc_leaves_nothing() {
    if !can_run() {
        return;
    }
    let node = Node::new("crashnet");
    let base = node.node.links();
    // The narrowest window: killed between the RTM_NEWLINK and the
    // RTM_SETLINK that writes the mark. The link is in netshim's device
    // group from its first message; the operator's are not.
    node.node
        .ip(&["link", "add", "half0", "group", "28275", "type", "bridge"]);
    node.node.ip(&["link", "add", "mine0", "type", "bridge"]);
    let report = gc(&node);
    assert_eq!(report["links"], json!(["half0 (unmarked, group 28275)"]));
    let links = node.node.links();
    assert!(links.contains(&"mine0".to_string()) && !links.contains(&"half0".to_string()));
    node.node.ip(&["link", "del", "mine0"]);
    let create = ["network", "create", "n", "--subnet", "10.97.0.0/24"];
    let span = duration_of(&node, &create, None);
    node.ok(&["network", "rm", "n"]);
    let mut collected = 0;
    for delay in delays(span, 40) {
        let killed = kill_after(&node, &create, None, delay);
        let report = gc(&node);
        assert!(report["errors"].as_array().unwrap().is_empty(), "{report}");
        collected += settled(&report);
        // Killed after its commit, the network simply exists: the user
        // removes it (and a second create says it exists).
        if node.netshim(&["network", "inspect", "n"]).status.success() {
            node.ok(&["network", "rm", "n"]);
        }
        assert_clean(
            &node,
            &base,
            &format!("after a create killed at {delay:?} ({killed})"),
        );
    }
    assert!(collected > 0, "no kill landed inside the kernel work");

    // network rm: the user (or gc) finishes what the killed one began.
    node.ok(&create);
    let span = duration_of(&node, &["network", "rm", "n"], None);
    collected = 0;
    for delay in delays(span, 30) {
        node.ok(&create);
        kill_after(&node, &["network", "rm", "n"], None, delay);
        let report = gc(&node);
        assert!(report["errors"].as_array().unwrap().is_empty(), "{report}");
        collected += settled(&report);
        if node.netshim(&["network", "inspect", "n"]).status.success() {
            node.ok(&["network", "rm", "n"]);
        }
        assert_clean(&node, &base, &format!("after an rm killed at {delay:?}"));
    }
    assert!(collected > 0, "no kill landed inside the removal");
}

#[test]
fn attach_and_detach_killed_anywhere_then_detach_or_gc_leaves_nothing() {
    if !can_run() {
        return;
    }
    let node = Node::new("crashatt");
    node.ok(&["network", "create", "n", "--subnet", "10.98.0.0/24"]);
    let base = node.node.links();
    let sandbox = Ns::new("crashatt-c");
    let sb = sandbox.path.to_str().unwrap().to_string();
    let attach = ["attach", "--network", "n", "--netns", &sb, "-p", "8080:80"];
    let detach = ["detach", "--network", "n", "--netns", &sb];
    let span = duration_of(&node, &attach, None);
    node.ok(&detach);
    let mut addresses = BTreeSet::new();
    let mut halfway = 0;
    for delay in delays(span, 30) {
        kill_after(&node, &attach, None, delay);
        halfway += usize::from(has_intent(&node));
        // What a user does next: detach (which undoes a half-made attach).
        let _ = node.netshim(&detach);
        assert_eq!(
            node.node.links(),
            base,
            "after an attach killed at {delay:?}"
        );
        assert_eq!(sandbox.links(), vec!["lo".to_string()], "{delay:?}");
        assert!(!node.node.nft_ruleset().contains("dnat"), "{delay:?}");
        assert_eq!(leftover_records(&node), Vec::<String>::new(), "{delay:?}");
        // The address came back: the next attach gets the first one again.
        let ep = node.json(&["attach", "--network", "n", "--netns", &sb]);
        addresses.insert(ep["ipv4"].as_str().unwrap().to_string());
        node.ok(&detach);
    }
    assert_eq!(addresses.len(), 1, "{addresses:?}");
    assert!(halfway > 0, "no kill landed inside an attach");

    node.ok(&attach);
    let span = duration_of(&node, &detach, None);
    let mut collected = 0;
    for delay in delays(span, 30) {
        node.ok(&attach);
        kill_after(&node, &detach, None, delay);
        // Nobody reruns a killed poststop: gc (the daemon at its start)
        // finishes the removal.
        let report = gc(&node);
        assert!(report["errors"].as_array().unwrap().is_empty(), "{report}");
        collected += settled(&report);
        let _ = node.netshim(&detach);
        assert_eq!(
            node.node.links(),
            base,
            "after a detach killed at {delay:?}"
        );
        assert!(!node.node.nft_ruleset().contains("dnat"), "{delay:?}");
        assert_eq!(leftover_records(&node), Vec::<String>::new(), "{delay:?}");
    }
    assert!(collected > 0, "no kill landed inside a detach");
    let ep = node.json(&["attach", "--network", "n", "--netns", &sb]);
    assert_eq!(
        ep["ipv4"].as_str().unwrap(),
        addresses.first().unwrap(),
        "an address was lost"
    );
    node.ok(&detach);
    node.ok(&["network", "rm", "n"]);
}

#[test]
fn a_killed_create_runtime_hook_then_poststop_leaves_no_port_to_the_next_container() {
    if !can_run() {
        return;
    }
    let node = Node::new("crashoci");
    node.ok(&["network", "create", "n", "--subnet", "10.99.0.0/24"]);
    let base = node.node.links();
    let sandbox = Ns::new("crashoci-c");
    let bundle = TempDir::new("crashoci-b");
    let config = json!({
        "annotations": {"netshim.networks": "n", "netshim.ports": "8080:80/tcp"},
        "linux": {"namespaces": [{"type": "network", "path": sandbox.path}]}
    });
    std::fs::write(bundle.0.join("config.json"), config.to_string()).unwrap();
    let state = |status: &str| {
        json!({"ociVersion": "1.0.2", "id": "c1", "status": status, "bundle": bundle.0}).to_string()
    };
    let create_state = state("creating");
    let stop_state = state("stopped");
    let create = ["oci-hook", "createRuntime"];
    let poststop = ["oci-hook", "poststop"];
    let span = duration_of(&node, &create, Some(&create_state));
    assert!(node.node.nft_ruleset().contains("dnat"));
    node.hook("poststop", &stop_state);
    let mut halfway = 0;
    for delay in delays(span, 30) {
        kill_after(&node, &create, Some(&create_state), delay);
        halfway += usize::from(has_intent(&node));
        let out = spawn(&node, &poststop, Some(&stop_state))
            .wait_with_output()
            .unwrap();
        assert!(out.status.success(), "poststop after a kill at {delay:?}");
        assert_eq!(node.node.links(), base, "after a kill at {delay:?}");
        assert_eq!(sandbox.links(), vec!["lo".to_string()], "{delay:?}");
        assert!(
            !node.node.nft_ruleset().contains("dnat"),
            "a port rule outlived a killed hook ({delay:?})"
        );
        assert_eq!(leftover_records(&node), Vec::<String>::new(), "{delay:?}");
    }
    assert!(halfway > 0, "no kill landed inside the hook's attach");
    // A new container on the same address publishes nothing: the outside
    // host cannot reach its port 80 through the node's 8080.
    let next = Ns::new("crashoci-d");
    let ep = node.json(&[
        "attach",
        "--network",
        "n",
        "--netns",
        next.path.to_str().unwrap(),
    ]);
    assert_eq!(ep["ipv4"].as_str().unwrap(), "10.99.0.2/24");
    let listener = next.accept_one("0.0.0.0:80");
    assert!(
        node.outside.connect(&format!("{NODE_ADDR}:8080")).is_err(),
        "a published port of a killed container reached the next one"
    );
    // Unblock the listener.
    let _ = node.node.connect("10.99.0.2:80");
    let _ = listener.join();
    node.ok(&[
        "detach",
        "--network",
        "n",
        "--netns",
        next.path.to_str().unwrap(),
    ]);
    node.ok(&["network", "rm", "n"]);
}

struct Plugin {
    daemon: Daemon,
    sock: PathBuf,
    log: PathBuf,
    _dir: TempDir,
}

impl Plugin {
    /// The daemon found something halfway at its start and settled it.
    fn collected_at_start(&self) -> bool {
        std::fs::read_to_string(&self.log).is_ok_and(|l| l.contains("gc at start"))
    }
}

fn start_daemon(node: &Node, tag: &str) -> Plugin {
    let dir = TempDir::new(tag);
    let log = dir.0.join("daemon.log");
    let child = Command::new(netshim_bin())
        .env("NETSHIM_STATE_DIR", &node.state.0)
        .env("NETSHIM_NODE_NETNS", &node.node.path)
        .env("NETSHIM_CACHE_DIR", netshim_tests::cache_dir())
        .env("NETSHIM_LOG", "info")
        .args(["daemon", "--plugin-dir"])
        .arg(&dir.0)
        .stdout(Stdio::null())
        .stderr(std::fs::File::create(&log).unwrap())
        .spawn()
        .unwrap();
    let sock = dir.0.join("netshim-bridge.sock");
    let daemon = Daemon {
        child,
        name: "netshim",
    };
    wait_for(&sock, "netshim's plugin socket");
    Plugin {
        daemon,
        sock,
        log,
        _dir: dir,
    }
}

fn send(sock: &Path, method: &str, body: &Value) -> UnixStream {
    let body = body.to_string();
    let mut s = UnixStream::connect(sock).unwrap();
    s.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
    write!(
        s,
        "POST /{method} HTTP/1.1\r\nHost: plugin\r\nContent-Length: {}\r\n\r\n{body}",
        body.len()
    )
    .unwrap();
    s
}

fn call(sock: &Path, method: &str, body: &Value) -> String {
    let mut s = send(sock, method, body);
    let _ = s.shutdown(std::net::Shutdown::Write);
    let mut out = String::new();
    let _ = s.read_to_string(&mut out);
    assert!(out.starts_with("HTTP/1.1 200"), "{method}: {out}");
    out
}

#[test]
fn the_plugin_killed_in_any_docker_step_is_settled_by_its_restart() {
    if !can_run() {
        return;
    }
    let node = Node::new("crashdock");
    let base = node.node.links();
    let network_id = "e".repeat(64);
    let endpoint_id = "f".repeat(64);
    let create_network = json!({
        "NetworkID": network_id, "Options": {},
        "IPv4Data": [{"AddressSpace": "", "Pool": "10.100.0.0/24", "Gateway": "10.100.0.1/24"}],
        "IPv6Data": []
    });
    let create_endpoint = json!({
        "NetworkID": network_id, "EndpointID": endpoint_id,
        "Interface": {"Address": "10.100.0.2/24", "MacAddress": ""}, "Options": {}
    });
    let delete_endpoint = json!({"NetworkID": network_id, "EndpointID": endpoint_id});
    let delete_network = json!({"NetworkID": network_id});
    // `-p 8080:80`, as dockerd asks for it.
    let program = json!({
        "NetworkID": network_id, "EndpointID": endpoint_id,
        "Options": {"com.docker.network.portmap": [
            {"Proto": 6, "IP": "", "Port": 80, "HostIP": "", "HostPort": 8080, "HostPortEnd": 8080}
        ]}
    });
    let revoke = json!({"NetworkID": network_id, "EndpointID": endpoint_id});
    let mut plugin = start_daemon(&node, "crashdock-p");
    // Each step is sent and the daemon killed after a delay that walks
    // across the step; the restarted daemon settles what was halfway, or
    // what dockerd sends next does (after a failed Program- or
    // RevokeExternalConnectivity: DeleteEndpoint, which withdraws the
    // ports the endpoint's record names).
    let steps: [(&str, &Value, &[(&str, &Value)]); 6] = [
        ("NetworkDriver.CreateNetwork", &create_network, &[]),
        (
            "NetworkDriver.CreateEndpoint",
            &create_endpoint,
            &[("NetworkDriver.CreateNetwork", &create_network)],
        ),
        (
            "NetworkDriver.DeleteEndpoint",
            &delete_endpoint,
            &[
                ("NetworkDriver.CreateNetwork", &create_network),
                ("NetworkDriver.CreateEndpoint", &create_endpoint),
            ],
        ),
        (
            "NetworkDriver.DeleteNetwork",
            &delete_network,
            &[("NetworkDriver.CreateNetwork", &create_network)],
        ),
        (
            "NetworkDriver.ProgramExternalConnectivity",
            &program,
            &[
                ("NetworkDriver.CreateNetwork", &create_network),
                ("NetworkDriver.CreateEndpoint", &create_endpoint),
            ],
        ),
        (
            "NetworkDriver.RevokeExternalConnectivity",
            &revoke,
            &[
                ("NetworkDriver.CreateNetwork", &create_network),
                ("NetworkDriver.CreateEndpoint", &create_endpoint),
                ("NetworkDriver.ProgramExternalConnectivity", &program),
            ],
        ),
    ];
    let ports_recorded = |node: &Node| {
        node.state_json()["spaces"]["cnm"]
            .as_object()
            .is_some_and(|m| {
                m.iter()
                    .any(|(k, v)| k.starts_with("endpoints/") && v.to_string().contains("8080"))
            })
    };
    for (method, body, before) in steps {
        let mut collected = 0;
        for delay_us in (0..3000).step_by(150) {
            for (m, b) in before {
                call(&plugin.sock, m, b);
            }
            let mut conn = send(&plugin.sock, method, body);
            std::thread::sleep(Duration::from_micros(delay_us));
            let _ = plugin.daemon.child.kill();
            let _ = plugin.daemon.child.wait();
            let mut answer = String::new();
            let _ = conn.read_to_string(&mut answer);
            drop(conn);
            // dockerd saw the request fail; it removes what it had asked
            // for before (a failed CreateEndpoint: nothing of the plugin's).
            plugin = start_daemon(&node, "crashdock-p");
            // Killed inside the step: no answer came, and its work had begun
            // (the ports recorded before any rule; the rule withdrawn). A
            // kill inside the other steps leaves a record gc settles at start.
            let inside = match method {
                "NetworkDriver.ProgramExternalConnectivity" => {
                    answer.is_empty() && ports_recorded(&node)
                }
                "NetworkDriver.RevokeExternalConnectivity" => {
                    answer.is_empty() && !node.node.nft_ruleset().contains("dnat")
                }
                _ => plugin.collected_at_start(),
            };
            collected += usize::from(inside);
            call(
                &plugin.sock,
                "NetworkDriver.DeleteEndpoint",
                &delete_endpoint,
            );
            call(&plugin.sock, "NetworkDriver.DeleteNetwork", &delete_network);
            let when = format!("after {method} killed at {delay_us} µs");
            assert_eq!(node.node.links(), base, "{when}");
            assert_eq!(netshim_tables(&node.node), Vec::<String>::new(), "{when}");
            assert_eq!(leftover_records(&node), Vec::<String>::new(), "{when}");
        }
        assert!(collected > 0, "no kill landed inside {method}");
    }
    plugin.daemon.stop();
}

#[test]
fn a_damaged_store_is_named_and_poststop_still_removes_the_containers_objects() {
    if !can_run() {
        return;
    }
    let node = Node::new("crashdb");
    let base = node.node.links();
    let healthy = node.ok(&["store", "recover"]);
    assert!(healthy.contains("healthy"), "{healthy}");
    node.ok(&["network", "create", "n", "--subnet", "10.101.0.0/24"]);
    let sandbox = Ns::new("crashdb-c");
    let bundle = TempDir::new("crashdb-b");
    let config = json!({
        "annotations": {"netshim.networks": "n", "netshim.ports": "8081:80/tcp"},
        "linux": {"namespaces": [{"type": "network", "path": sandbox.path}]}
    });
    std::fs::write(bundle.0.join("config.json"), config.to_string()).unwrap();
    let state = |status: &str| {
        json!({"ociVersion": "1.0.2", "id": "c1", "status": status, "bundle": bundle.0}).to_string()
    };
    node.hook("createRuntime", &state("creating"));
    assert!(node.node.nft_ruleset().contains("dnat"));

    // A stray write over the database's first page.
    let db = node.state.0.join("state.db");
    let mut bytes = std::fs::read(&db).unwrap();
    bytes[..512].fill(0x5a);
    std::fs::write(&db, &bytes).unwrap();
    let out = node.netshim(&["network", "ls"]);
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains(db.to_str().unwrap()) && err.contains("netshim store recover"),
        "{err}"
    );

    // poststop recovers the store (keeping the damaged file) and removes
    // what no surviving record owns: here, everything of the network.
    let out = node.hook("poststop", &state("stopped"));
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("damaged"),
        "poststop said nothing of the recovery"
    );
    assert_eq!(node.node.links(), base);
    assert_eq!(sandbox.links(), vec!["lo".to_string()]);
    assert_eq!(netshim_tables(&node.node), Vec::<String>::new());
    let kept: Vec<_> = std::fs::read_dir(&node.state.0)
        .unwrap()
        .filter_map(|e| e.ok())
        .map(|e| e.file_name().to_string_lossy().into_owned())
        .filter(|n| n.starts_with("state.db.corrupt-"))
        .collect();
    assert!(!kept.is_empty(), "the damaged database was not kept");
    // The store works again.
    node.ok(&["network", "create", "n", "--subnet", "10.101.0.0/24"]);

    // A database cut to nothing is damage too (this directory had one).
    // `detach` recovers it; the endpoint's record went with the damage,
    // which it says (naming the damaged file kept), and the recovery's gc
    // removed the container's objects, its published port included, since
    // the network's record went too.
    let c2 = Ns::new("crashdb-d");
    node.ok(&[
        "attach",
        "--network",
        "n",
        "--netns",
        c2.path.to_str().unwrap(),
        "-p",
        "8082:80",
    ]);
    assert!(node.node.nft_ruleset().contains("dnat"));
    std::fs::OpenOptions::new()
        .write(true)
        .open(&db)
        .unwrap()
        .set_len(0)
        .unwrap();
    let out = node.netshim(&["network", "ls"]);
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        !out.status.success()
            && err.contains(db.to_str().unwrap())
            && err.contains("truncated, deleted or replaced")
            && err.contains("netshim store recover"),
        "{err}"
    );
    let out = node.netshim(&[
        "detach",
        "--network",
        "n",
        "--netns",
        c2.path.to_str().unwrap(),
    ]);
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        !out.status.success()
            && err.contains("its record was lost with the damaged state database")
            && err.contains("state.db.corrupt-")
            && err.contains("removed 2 link(s) and 1 table(s)"),
        "{err}"
    );
    assert_eq!(node.node.links(), base);
    assert_eq!(c2.links(), vec!["lo".to_string()]);
    assert!(!node.node.nft_ruleset().contains("dnat"));
    assert_eq!(netshim_tables(&node.node), Vec::<String>::new());
    node.ok(&["network", "create", "n", "--subnet", "10.101.0.0/24"]);
    node.ok(&["network", "rm", "n"]);
}
