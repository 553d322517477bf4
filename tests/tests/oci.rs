//! OCI runtime hooks with real runc, crun and youki containers (busybox
//! rootfs) inside throwaway node namespaces.

use std::path::Path;
use std::process::Output;
use std::time::Duration;

use netshim_tests::{
    busybox_rootfs, can_run, netshim_bin, Node, Ns, Runtime, TempDir, NODE_ADDR, OUTSIDE_ADDR,
};
use serde_json::{json, Value};

/// A bundle for one container: config.json pointing at the shared rootfs,
/// with netshim's hooks installed by `netshim oci install-hook`.
struct Bundle {
    dir: TempDir,
}

impl Bundle {
    fn new(node: &Node, tag: &str, install: &[&str]) -> Bundle {
        let dir = TempDir::new(tag);
        let config = json!({
            "ociVersion": "1.0.2",
            "process": {
                "terminal": false, "user": {"uid": 0, "gid": 0}, "cwd": "/",
                "args": ["sleep", "1000"],
                "env": ["PATH=/bin"],
                "capabilities": {
                    "bounding": ["CAP_NET_RAW", "CAP_NET_BIND_SERVICE", "CAP_KILL"], "effective": ["CAP_NET_RAW", "CAP_NET_BIND_SERVICE", "CAP_KILL"],
                    "permitted": ["CAP_NET_RAW", "CAP_NET_BIND_SERVICE", "CAP_KILL"]
                },
                "noNewPrivileges": true
            },
            "root": {"path": busybox_rootfs(), "readonly": true},
            "hostname": tag,
            "mounts": [
                {"destination": "/proc", "type": "proc", "source": "proc"},
                {"destination": "/dev", "type": "tmpfs", "source": "tmpfs", "options": ["nosuid", "strictatime", "mode=755", "size=65536k"]},
                {"destination": "/tmp", "type": "tmpfs", "source": "tmpfs", "options": ["nosuid", "nodev"]}
            ],
            "linux": {
                "namespaces": [{"type": "pid"}, {"type": "ipc"}, {"type": "uts"}, {"type": "mount"}, {"type": "network"}]
            }
        });
        std::fs::write(
            dir.0.join("config.json"),
            serde_json::to_vec_pretty(&config).unwrap(),
        )
        .unwrap();
        let mut args = vec!["oci", "install-hook", dir.0.to_str().unwrap()];
        args.extend_from_slice(install);
        node.ok(&args);
        Bundle { dir }
    }

    fn config(&self) -> Value {
        serde_json::from_slice(&std::fs::read(self.dir.0.join("config.json")).unwrap()).unwrap()
    }
}

/// Containers of one runtime on one node, force-deleted on drop.
struct Containers<'a> {
    rt: Runtime,
    node: &'a Node,
    root: TempDir,
    ids: std::sync::Mutex<Vec<String>>,
}

impl<'a> Containers<'a> {
    fn new(rt: Runtime, node: &'a Node) -> Containers<'a> {
        Containers {
            rt,
            node,
            root: TempDir::new("rtroot"),
            ids: Default::default(),
        }
    }

    fn cmd(&self, args: &[&str]) -> Output {
        self.rt.cmd(&self.node.node, &self.root.0, args)
    }

    /// `run -d`; returns the runtime's output (the caller checks success).
    fn run(&self, id: &str, bundle: &Bundle) -> Output {
        let id = &Runtime::id(id);
        self.ids.lock().unwrap().push(id.to_string());
        self.cmd(&["run", "-d", "--bundle", bundle.dir.0.to_str().unwrap(), id])
    }

    fn run_ok(&self, id: &str, bundle: &Bundle) {
        let out = self.run(id, bundle);
        assert!(
            out.status.success(),
            "{:?} run {id}: {}{}",
            self.rt,
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
    }

    fn exec(&self, id: &str, args: &[&str]) -> Output {
        let id = &Runtime::id(id);
        let mut a = vec!["exec", id];
        a.extend_from_slice(args);
        self.cmd(&a)
    }

    fn ping(&self, id: &str, addr: &str) -> bool {
        self.exec(id, &["ping", "-c", "1", "-W", "2", addr])
            .status
            .success()
    }

    fn ipv4(&self, id: &str) -> String {
        let out = self.exec(id, &["ip", "-o", "-4", "addr", "show", "eth0"]);
        let text = String::from_utf8_lossy(&out.stdout);
        text.split_whitespace()
            .skip_while(|w| *w != "inet")
            .nth(1)
            .and_then(|a| a.split('/').next())
            .unwrap_or_default()
            .to_string()
    }

    /// kill + delete, as a user (or an engine) stops a container.
    fn stop(&self, id: &str) {
        let id = &Runtime::id(id);
        let _ = self.cmd(&["kill", id, "KILL"]);
        for _ in 0..50 {
            let out = self.cmd(&["delete", id]);
            if out.status.success() {
                self.ids.lock().unwrap().retain(|i| i != id);
                return;
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        let out = self.cmd(&["delete", "-f", id]);
        assert!(
            out.status.success(),
            "delete {id}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        self.ids.lock().unwrap().retain(|i| i != id);
    }
}

impl Drop for Containers<'_> {
    fn drop(&mut self) {
        for id in self.ids.lock().unwrap().clone() {
            let _ = self.cmd(&["delete", "-f", &id]);
        }
    }
}

fn endpoints(node: &Node, net: &str) -> usize {
    node.json(&["network", "inspect", net])["endpoints"]
        .as_array()
        .unwrap()
        .len()
}

/// Two containers of `rt` on one network: they ping each other, reach the
/// outside host through NAT (which sees the node's address), and stopping
/// them leaves nothing.
fn two_containers(rt: Runtime, tag: &str, subnet: &str) {
    let node = Node::new(tag);
    let (links, _, routes) = node.baseline();
    node.ok(&["network", "create", "web", "--subnet", subnet]);
    let b1 = Bundle::new(&node, &format!("{tag}-b1"), &["--network", "web"]);
    let b2 = Bundle::new(&node, &format!("{tag}-b2"), &["--network", "web"]);
    let cs = Containers::new(rt, &node);
    let (c1, c2) = (format!("{tag}-c1"), format!("{tag}-c2"));
    cs.run_ok(&c1, &b1);
    cs.run_ok(&c2, &b2);
    let (a1, a2) = (cs.ipv4(&c1), cs.ipv4(&c2));
    assert!(
        a1.starts_with(&subnet[..subnet.len() - 4]) && a2.starts_with(&subnet[..subnet.len() - 4]),
        "{a1} {a2}"
    );
    assert_ne!(a1, a2);
    assert!(cs.ping(&c1, &a2), "{rt:?}: c1 cannot ping c2");
    assert!(cs.ping(&c2, &a1), "{rt:?}: c2 cannot ping c1");
    assert!(
        cs.ping(&c1, OUTSIDE_ADDR),
        "{rt:?}: c1 cannot reach the outside host"
    );
    let listener = node.outside.accept_one(&format!("{OUTSIDE_ADDR}:8080"));
    let out = cs.exec(
        &c2,
        &["sh", "-c", &format!("echo hi | nc {OUTSIDE_ADDR} 8080")],
    );
    assert!(
        out.status.success(),
        "nc: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert_eq!(
        listener.join().unwrap().ip().to_string(),
        NODE_ADDR,
        "the outside host must see the node's address"
    );
    assert_eq!(endpoints(&node, "web"), 2);

    cs.stop(&c1);
    cs.stop(&c2);
    assert_eq!(endpoints(&node, "web"), 0, "poststop left endpoints");
    assert!(
        !node.node.links().iter().any(|l| l.starts_with("veth")),
        "poststop left a veth: {:?}",
        node.node.links()
    );
    node.ok(&["network", "rm", "web"]);
    assert_eq!(node.node.links(), links);
    assert_eq!(node.node.routes(), routes);
    assert_eq!(node.node.nft_ruleset().trim(), "");
}

#[test]
fn runc_containers_ping_each_other_and_the_outside() {
    if can_run() {
        two_containers(Runtime::Runc, "runc", "10.91.0.0/24");
    }
}

#[test]
fn crun_containers_ping_each_other_and_the_outside() {
    if can_run() {
        two_containers(Runtime::Crun, "crun", "10.92.0.0/24");
    }
}

#[test]
fn youki_containers_ping_each_other_and_the_outside() {
    if can_run() {
        two_containers(Runtime::Youki, "youki", "10.93.0.0/24");
    }
}

#[test]
fn default_network_static_ip_and_published_port() {
    if !can_run() {
        return;
    }
    let node = Node::new("ocidef");
    // No network named: the "netshim" network is made on first use.
    let b1 = Bundle::new(&node, "ocidef-b1", &[]);
    let cfg = b1.config();
    assert!(cfg["annotations"].get("netshim.networks").is_none());
    assert_eq!(
        cfg["hooks"]["createRuntime"][0]["path"],
        json!(netshim_bin())
    );
    let cs = Containers::new(Runtime::Runc, &node);
    cs.run_ok("ocidef-c1", &b1);
    let net = node.json(&["network", "inspect", "netshim"]);
    let subnet = net["ipv4"][0]["subnet"].as_str().unwrap().to_string();
    assert!(
        subnet.starts_with("172.") || subnet.starts_with("192.168."),
        "{subnet}"
    );

    node.ok(&["network", "create", "svc", "--subnet", "10.94.0.0/24"]);
    let b2 = Bundle::new(
        &node,
        "ocidef-b2",
        &[
            "--network",
            "svc",
            "--ip",
            "svc=10.94.0.50",
            "-p",
            "8080:80",
        ],
    );
    let server = "ocidef-web";
    cs.run_ok(server, &b2);
    assert_eq!(cs.ipv4(server), "10.94.0.50");
    let out = cs.exec(server, &["sh", "-c", "mkdir -p /tmp/www && echo served-by-container > /tmp/www/index.html && httpd -p 80 -h /tmp/www"]);
    assert!(
        out.status.success(),
        "httpd: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    // From the outside host, to the node's address: DNAT to the container.
    let got = node.outside.exec(&["python3", "-c", &format!(
        "import urllib.request;print(urllib.request.urlopen('http://{NODE_ADDR}:8080/', timeout=3).read().decode().strip())"
    )]);
    assert_eq!(
        String::from_utf8_lossy(&got.stdout).trim(),
        "served-by-container",
        "{}",
        String::from_utf8_lossy(&got.stderr)
    );
    assert!(node.node.nft_ruleset().contains("dnat ip to 10.94.0.50:80"));
    cs.stop(server);
    assert!(
        !node.node.nft_ruleset().contains("dnat"),
        "the port mapping outlived its container"
    );
    cs.stop("ocidef-c1");
    node.ok(&["network", "rm", "svc", "netshim"]);
}

#[test]
fn unknown_network_fails_the_start_and_leaves_nothing() {
    if !can_run() {
        return;
    }
    let node = Node::new("ocibad");
    node.ok(&["network", "create", "good", "--subnet", "10.95.0.0/24"]);
    let links = node.node.links();
    let b = Bundle::new(
        &node,
        "ocibad-b",
        &["--network", "good", "--network", "nope"],
    );
    let cs = Containers::new(Runtime::Runc, &node);
    let out = cs.run("ocibad-c", &b);
    assert!(
        !out.status.success(),
        "the container started on an unknown network"
    );
    let msg = String::from_utf8_lossy(&out.stderr);
    assert!(
        msg.contains("netshim: error") && msg.contains("nope") && msg.contains("not found"),
        "runc's output: {msg}"
    );
    assert_eq!(
        node.node.links(),
        links,
        "a failed start left links (the 'good' attach must be undone)"
    );
    assert_eq!(endpoints(&node, "good"), 0);
    let state = node.state_json();
    assert!(
        !state.to_string().contains("containers/"),
        "state kept an endpoint: {state}"
    );
    node.ok(&["network", "rm", "good"]);
}

/// The hook run by hand with a state on stdin, as a runtime runs it.
fn hook(node: &Node, bundle: &Path, id: &str, stage: &str) -> std::process::Child {
    use std::io::Write;
    let mut child = std::process::Command::new(netshim_bin())
        .args([
            "--state-dir",
            node.state.0.to_str().unwrap(),
            "--node-netns",
            node.node.path.to_str().unwrap(),
        ])
        .args([
            "--cache-dir",
            netshim_tests::cache_dir().to_str().unwrap(),
            "oci-hook",
            stage,
        ])
        .env_clear()
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    let status = if stage == "poststop" {
        "stopped"
    } else {
        "creating"
    };
    let state = json!({"ociVersion": "1.0.2", "id": id, "status": status, "bundle": bundle});
    child
        .stdin
        .take()
        .unwrap()
        .write_all(state.to_string().as_bytes())
        .unwrap();
    child
}

#[test]
fn sigkill_in_the_middle_of_attach_then_rerun_converges() {
    if !can_run() {
        return;
    }
    let node = Node::new("ocikill");
    node.ok(&["network", "create", "net", "--subnet", "10.96.0.0/24"]);
    let sandbox = Ns::new("ocikill-c");
    let bundle = TempDir::new("ocikill-b");
    let config = json!({"annotations": {"netshim.networks": "net"}, "linux": {"namespaces": [{"type": "network", "path": sandbox.path}]}});
    std::fs::write(bundle.0.join("config.json"), config.to_string()).unwrap();
    let links = node.node.links();
    for delay_us in [
        0u64, 300, 700, 1200, 2000, 2600, 3200, 3800, 4500, 5200, 6000, 7000, 8500, 11000, 15000,
    ] {
        let mut child = hook(&node, &bundle.0, "kill-me", "createRuntime");
        std::thread::sleep(Duration::from_micros(delay_us));
        let _ = child.kill();
        let _ = child.wait();
        // Whatever the kill interrupted, running the hook again converges.
        let out = hook(&node, &bundle.0, "kill-me", "createRuntime")
            .wait_with_output()
            .unwrap();
        assert!(
            out.status.success(),
            "rerun after a kill at {delay_us} µs: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        let again = hook(&node, &bundle.0, "kill-me", "createRuntime")
            .wait_with_output()
            .unwrap();
        assert!(again.status.success(), "the hook is not idempotent");
        assert_eq!(endpoints(&node, "net"), 1, "after a kill at {delay_us} µs");
        assert_eq!(sandbox.links(), vec!["eth0".to_string(), "lo".to_string()]);
        assert_eq!(
            node.node
                .links()
                .iter()
                .filter(|l| l.starts_with("veth"))
                .count(),
            1,
            "{:?}",
            node.node.links()
        );
        let out = hook(&node, &bundle.0, "kill-me", "poststop")
            .wait_with_output()
            .unwrap();
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
        assert_eq!(
            node.node.links(),
            links,
            "after poststop (kill at {delay_us} µs)"
        );
        assert_eq!(sandbox.links(), vec!["lo".to_string()]);
    }
    // poststop twice, and without any namespace: still fine.
    let out = hook(&node, &bundle.0, "kill-me", "poststop")
        .wait_with_output()
        .unwrap();
    assert!(out.status.success());
    let state = node.state_json();
    assert!(!state.to_string().contains("containers/"), "{state}");
    node.ok(&["network", "rm", "net"]);
}

#[test]
fn twenty_containers_started_at_once_get_distinct_addresses() {
    if !can_run() {
        return;
    }
    let node = Node::new("oci20");
    node.ok(&["network", "create", "net", "--subnet", "10.97.0.0/24"]);
    let cs = Containers::new(Runtime::Runc, &node);
    let bundles: Vec<Bundle> = (0..20)
        .map(|i| Bundle::new(&node, &format!("oci20-b{i}"), &["--network", "net"]))
        .collect();
    std::thread::scope(|s| {
        for (i, b) in bundles.iter().enumerate() {
            let cs = &cs;
            s.spawn(move || cs.run_ok(&format!("oci20-c{i}"), b));
        }
    });
    let mut addrs: Vec<String> = (0..20).map(|i| cs.ipv4(&format!("oci20-c{i}"))).collect();
    assert!(addrs.iter().all(|a| a.starts_with("10.97.0.")), "{addrs:?}");
    addrs.sort();
    addrs.dedup();
    assert_eq!(addrs.len(), 20, "addresses given twice: {addrs:?}");
    assert!(cs.ping("oci20-c0", &addrs[19]));
    std::thread::scope(|s| {
        for i in 0..20 {
            let cs = &cs;
            s.spawn(move || cs.stop(&format!("oci20-c{i}")));
        }
    });
    assert_eq!(endpoints(&node, "net"), 0);
    assert!(!node.node.links().iter().any(|l| l.starts_with("veth")));
    node.ok(&["network", "rm", "net"]);
}
