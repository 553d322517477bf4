//! The multi-node harness: a "fabric" namespace holding the underlay bridge,
//! and namespaces hanging off it by a veth each (etcd's, every node's), with
//! addresses in 192.0.2.0/24. etcd (Debian's `etcd-server`) runs in a
//! namespace of its own, started and stopped by the test, its data in a
//! temporary directory. Nothing here touches the machine's own namespace.

use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use crate::{Daemon, Ns, TempDir};

pub const UNDERLAY: &str = "192.0.2";
/// The second underlay segment ([`Fabric::second_segment`]).
pub const SECOND: &str = "198.51.100";

/// The underlay bridge, in a namespace of its own.
pub struct Fabric {
    pub ns: Ns,
}

impl Fabric {
    pub fn new(tag: &str) -> Fabric {
        let ns = Ns::new(&format!("{tag}-fab"));
        ns.ip(&["link", "add", "fab0", "type", "bridge"]);
        ns.ip(&["link", "set", "fab0", "up"]);
        Fabric { ns }
    }

    /// A second underlay segment, 198.51.100.0/24 on bridge `fab1`, joined
    /// to the first by a router namespace (192.0.2.1 and 198.51.100.1):
    /// nodes on different subnets, as CrossSubnet modes need.
    pub fn second_segment(&self, tag: &str) -> Ns {
        self.ns.ip(&["link", "add", "fab1", "type", "bridge"]);
        self.ns.ip(&["link", "set", "fab1", "up"]);
        let router = Ns::new(&format!("{tag}-rtr"));
        self.plug_into(&router, "fab1", "r1", "eth1", &format!("{SECOND}.1/24"));
        self.plug_into(&router, "fab0", "r0", "eth0", &format!("{UNDERLAY}.1/24"));
        router.exec(&["sysctl", "-qw", "net.ipv4.ip_forward=1"]);
        router
    }

    /// A veth from `bridge` (port `port`) to `ns` (`ifname`, `cidr`).
    pub fn plug_into(&self, ns: &Ns, bridge: &str, port: &str, ifname: &str, cidr: &str) {
        self.ns.ip(&[
            "link", "add", port, "type", "veth", "peer", "name", ifname, "netns", &ns.name,
        ]);
        self.ns.ip(&["link", "set", port, "master", bridge, "up"]);
        ns.ip(&["addr", "add", cidr, "dev", ifname]);
        ns.ip(&["link", "set", ifname, "up"]);
    }

    /// Hang `ns` off the fabric: its `eth0` gets 192.0.2.`host`/24.
    /// Returns the address.
    pub fn plug(&self, ns: &Ns, host: u8) -> String {
        let port = format!("p{host}");
        self.ns.ip(&[
            "link", "add", &port, "type", "veth", "peer", "name", "eth0", "netns", &ns.name,
        ]);
        self.ns.ip(&["link", "set", &port, "master", "fab0", "up"]);
        let addr = format!("{UNDERLAY}.{host}");
        ns.ip(&["addr", "add", &format!("{addr}/24"), "dev", "eth0"]);
        ns.ip(&["link", "set", "eth0", "up"]);
        addr
    }
}

/// One etcd member in its own namespace on the fabric (192.0.2.10).
pub struct Etcd {
    pub ns: Ns,
    pub url: String,
    data: TempDir,
    daemon: Option<Daemon>,
}

impl Etcd {
    pub fn start(fabric: &Fabric, tag: &str) -> Etcd {
        let ns = Ns::new(&format!("{tag}-etcd"));
        let addr = fabric.plug(&ns, 10);
        let mut etcd = Etcd {
            ns,
            url: format!("etcd://{addr}:2379"),
            data: TempDir::new(&format!("{tag}-etcd")),
            daemon: None,
        };
        etcd.resume();
        etcd
    }

    fn addr(&self) -> &str {
        self.url.trim_start_matches("etcd://")
    }

    /// Start (again) on the same data.
    pub fn resume(&mut self) {
        let client = format!("http://{}", self.addr());
        let child = Command::new("ip")
            .args(["netns", "exec", &self.ns.name, "etcd"])
            .args(["--name", "t", "--data-dir"])
            .arg(self.data.0.join("data"))
            .args(["--listen-client-urls", &client])
            .args(["--advertise-client-urls", &client])
            .args(["--listen-peer-urls", "http://127.0.0.1:2380"])
            .args(["--initial-advertise-peer-urls", "http://127.0.0.1:2380"])
            .args(["--initial-cluster", "t=http://127.0.0.1:2380"])
            .stdout(Stdio::null())
            .stderr(std::fs::File::create(self.data.0.join("etcd.log")).expect("etcd log file"))
            .spawn()
            .expect("start etcd (Debian's etcd-server; scripts/deps.sh test installs it)");
        self.daemon = Some(Daemon {
            child,
            name: "etcd",
        });
        let deadline = Instant::now() + Duration::from_secs(20);
        while self.ns.connect(self.addr()).is_err() {
            assert!(
                Instant::now() < deadline,
                "etcd did not answer on {}: {}",
                self.addr(),
                std::fs::read_to_string(self.data.0.join("etcd.log")).unwrap_or_default()
            );
            std::thread::sleep(Duration::from_millis(100));
        }
    }

    /// `etcdctl` against this member (as an operator would use it).
    pub fn etcdctl(&self, args: &[&str]) -> String {
        let endpoint = format!("http://{}", self.addr());
        let out = self
            .ns
            .exec(&[&["etcdctl", "--endpoints", &endpoint][..], args].concat());
        assert!(
            out.status.success(),
            "etcdctl {}: {}",
            args.join(" "),
            String::from_utf8_lossy(&out.stderr)
        );
        String::from_utf8_lossy(&out.stdout).into_owned()
    }

    /// Stop it (SIGTERM, then SIGKILL); its data stays for `resume`.
    pub fn pause(&mut self) {
        if let Some(mut d) = self.daemon.take() {
            d.stop();
        }
    }
}

impl Drop for Etcd {
    fn drop(&mut self) {
        self.pause();
    }
}

/// Run `f` on a thread inside `ns`: sockets it opens (and threads it
/// starts) are that namespace's.
pub fn inside<T: Send + 'static>(ns: &Ns, f: impl FnOnce() -> T + Send + 'static) -> T {
    inside_path(ns.path.clone(), f)
}

/// [`inside`], by the namespace's path (for use from another such thread).
pub fn inside_path<T: Send + 'static>(
    path: std::path::PathBuf,
    f: impl FnOnce() -> T + Send + 'static,
) -> T {
    crate::spawn_in(path, f)
        .join()
        .unwrap_or_else(|p| std::panic::resume_unwind(p))
}

/// A node of a cluster: a namespace on the fabric at 192.0.2.`host`, whose
/// default route leads to the fabric's outside host (192.0.2.200, if the
/// test made one), with its own state directory and plugin socket
/// directory, and its node agent (`netshim daemon`) started and stopped by
/// the test. Its netshim commands run inside its namespace, as on a real
/// node.
pub struct ClusterNode {
    pub ns: Ns,
    pub addr: String,
    pub state: TempDir,
    pub store: String,
    daemon: Option<Daemon>,
    log: std::path::PathBuf,
    /// Extra environment of its netshim commands and agent
    /// (`NETSHIM_ROUTE_REFLECTOR_CLUSTER_ID`, …).
    pub env: Vec<(String, String)>,
}

/// The outside host's address on the fabric.
pub const OUTSIDE: &str = "192.0.2.200";

impl ClusterNode {
    pub fn join(fabric: &Fabric, tag: &str, host: u8, store: &str) -> ClusterNode {
        let ns = Ns::new(&format!("{tag}-n{host}"));
        let addr = fabric.plug(&ns, host);
        ns.ip(&["route", "add", "default", "via", OUTSIDE]);
        ClusterNode::with(ns, addr, &format!("{tag}-n{host}"), store)
    }

    fn with(ns: Ns, addr: String, tag: &str, store: &str) -> ClusterNode {
        let state = TempDir::new(tag);
        let log = state.0.with_extension("daemon.log");
        ClusterNode {
            ns,
            addr,
            state,
            store: store.to_string(),
            daemon: None,
            log,
            env: Vec::new(),
        }
    }

    /// A node on the second segment (198.51.100.`host`), routed to the
    /// first through the router.
    pub fn join_second(fabric: &Fabric, tag: &str, host: u8, store: &str) -> ClusterNode {
        let ns = Ns::new(&format!("{tag}-m{host}"));
        let addr = format!("{SECOND}.{host}");
        fabric.plug_into(
            &ns,
            "fab1",
            &format!("q{host}"),
            "eth0",
            &format!("{addr}/24"),
        );
        ns.ip(&["route", "add", "default", "via", &format!("{SECOND}.1")]);
        ClusterNode::with(ns, addr, &format!("{tag}-m{host}"), store)
    }

    fn command(&self) -> Command {
        let mut c = Command::new("ip");
        c.args(["netns", "exec", &self.ns.name])
            .arg(crate::netshim_bin())
            .env("NETSHIM_STATE_DIR", &self.state.0)
            .env("NETSHIM_STORE", &self.store)
            .env("NETSHIM_CACHE_DIR", crate::cache_dir())
            .env("NETSHIM_NODE_NAME", format!("node-{}", self.addr))
            .envs(self.env.iter().map(|(k, v)| (k, v)));
        c
    }

    /// After teardown: the node's links are `baseline` again, no netshim
    /// table, no route into `pool` (a prefix such as "192.168.") in any
    /// table, and no BIRD.
    pub fn assert_left_nothing(&self, baseline: &[String], pool: &str) {
        assert!(self.bird_pid().is_none(), "node {} kept BIRD", self.addr);
        assert_eq!(self.ns.links(), baseline, "node {} kept links", self.addr);
        assert!(
            !self.ns.nft_ruleset().contains("netshim"),
            "node {} kept a table",
            self.addr
        );
        let routes = self.ns.ip(&["route", "show", "table", "all"]);
        assert!(
            !routes.contains(pool),
            "node {} kept routes: {routes}",
            self.addr
        );
    }

    /// The node's name as its commands give it.
    pub fn name(&self) -> String {
        format!("node-{}", self.addr)
    }

    /// `netshim node status --output json`.
    pub fn node_status(&self) -> serde_json::Value {
        serde_json::from_str(&self.ok(&["--output", "json", "node", "status"]))
            .expect("node status is JSON")
    }

    /// The pid of the BIRD the node agent runs, from its pid file.
    pub fn bird_pid(&self) -> Option<i32> {
        let pid: i32 = std::fs::read_to_string(self.state.0.join("bird/bird.pid"))
            .ok()?
            .trim()
            .parse()
            .ok()?;
        std::path::Path::new(&format!("/proc/{pid}"))
            .exists()
            .then_some(pid)
    }

    pub fn netshim(&self, args: &[&str]) -> std::process::Output {
        self.command().args(args).output().expect("run netshim")
    }

    /// Like `netshim`, but panics with netshim's stderr on failure.
    pub fn ok(&self, args: &[&str]) -> String {
        let out = self.netshim(args);
        assert!(
            out.status.success(),
            "node {}: netshim {} failed: {}",
            self.addr,
            args.join(" "),
            String::from_utf8_lossy(&out.stderr)
        );
        String::from_utf8_lossy(&out.stdout).into_owned()
    }

    /// Start the node agent (the daemon); its log goes to a file.
    pub fn start_agent(&mut self) {
        let plugins = self.state.0.join("plugins");
        self.start_agent_serving(&plugins, "netshim-");
    }

    /// Start the node agent, serving Docker at `plugins/<prefix>flannel.sock`.
    pub fn start_agent_serving(&mut self, plugins: &std::path::Path, prefix: &str) {
        std::fs::create_dir_all(plugins).expect("plugin dir");
        let sock = plugins.join(format!("{prefix}flannel.sock"));
        let _ = std::fs::remove_file(&sock);
        let log = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(&self.log)
            .expect("daemon log");
        let child = self
            .command()
            .env(
                "NETSHIM_LOG",
                std::env::var("NETSHIM_TEST_AGENT_LOG").unwrap_or("info".into()),
            )
            .args(["daemon", "--plugin-prefix", prefix, "--plugin-dir"])
            .arg(plugins)
            .stdout(Stdio::null())
            .stderr(log)
            .spawn()
            .expect("start netshim daemon");
        self.daemon = Some(Daemon {
            child,
            name: "netshim daemon",
        });
        crate::wait_for(&sock, "the daemon's socket");
    }

    /// Stop the agent (SIGTERM; it finishes what it is doing).
    pub fn stop_agent(&mut self) {
        if let Some(mut d) = self.daemon.take() {
            d.stop();
        }
    }

    /// Kill the agent with SIGKILL (no cleanup of its own).
    pub fn kill_agent(&mut self) {
        if let Some(mut d) = self.daemon.take() {
            let _ = d.child.kill();
            let _ = d.child.wait();
        }
    }

    /// What the daemon logged so far.
    pub fn agent_log(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }
}

impl Drop for ClusterNode {
    fn drop(&mut self) {
        self.stop_agent();
        let _ = std::fs::remove_file(&self.log);
    }
}

/// Wait up to `secs` for `f` to hold; false if it never did.
pub fn eventually(secs: u64, mut f: impl FnMut() -> bool) -> bool {
    let deadline = Instant::now() + Duration::from_secs(secs);
    loop {
        if f() {
            return true;
        }
        if Instant::now() >= deadline {
            return false;
        }
        std::thread::sleep(Duration::from_millis(200));
    }
}

/// A site for cluster tests: a fabric, etcd on it (192.0.2.10) and an
/// outside host (192.0.2.200).
pub struct Site {
    pub fabric: Fabric,
    pub etcd: Etcd,
    pub outside: Ns,
}

impl Site {
    pub fn new(tag: &str) -> Site {
        let fabric = Fabric::new(tag);
        let etcd = Etcd::start(&fabric, tag);
        let outside = Ns::new(&format!("{tag}-out"));
        fabric.plug(
            &outside,
            OUTSIDE.rsplit('.').next().unwrap().parse().unwrap(),
        );
        Site {
            fabric,
            etcd,
            outside,
        }
    }
}

/// flannel's default key prefix.
pub const FLANNEL_PREFIX: &str = "/coreos.com/network";

impl Site {
    /// A site with flannel's configuration written with `etcdctl`, as
    /// flannel users do. `backend_json`: the value of `Backend`, e.g.
    /// `{"Type": "vxlan"}`.
    pub fn flannel(tag: &str, backend_json: &str) -> Site {
        let site = Site::new(tag);
        site.etcd.etcdctl(&[
            "put",
            &format!("{FLANNEL_PREFIX}/config"),
            &format!(r#"{{"Network": "10.244.0.0/16", "Backend": {backend_json}}}"#),
        ]);
        site
    }
}

/// A plain BIRD 2 the test configures itself (a top-of-rack router, not
/// managed by netshim), in its own namespace, stopped on drop.
pub struct Router {
    pub dir: TempDir,
    /// Stopped on drop.
    _daemon: Daemon,
}

impl Router {
    pub fn start(ns: &Ns, tag: &str, conf: &str) -> Router {
        let dir = TempDir::new(tag);
        let c = dir.0.join("bird.conf");
        std::fs::write(&c, conf).expect("write bird.conf");
        let child = Command::new("ip")
            .args(["netns", "exec", &ns.name, "bird", "-f", "-c"])
            .arg(&c)
            .arg("-s")
            .arg(dir.0.join("bird.ctl"))
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("start bird");
        let daemon = Daemon {
            child,
            name: "bird (router)",
        };
        crate::wait_for(&dir.0.join("bird.ctl"), "the router's BIRD socket");
        Router {
            dir,
            _daemon: daemon,
        }
    }

    /// `birdc` on the router's control socket.
    pub fn birdc(&self, cmd: &str) -> String {
        let out = Command::new("birdc")
            .arg("-s")
            .arg(self.dir.0.join("bird.ctl"))
            .args(cmd.split(' '))
            .output()
            .expect("birdc");
        String::from_utf8_lossy(&out.stdout).into_owned()
    }
}

/// Whether BIRD 2 is installed (Debian `bird2`).
pub fn have_bird() -> bool {
    ["/usr/sbin/bird", "/usr/bin/bird"]
        .iter()
        .any(|p| std::path::Path::new(p).exists())
}

/// A runc bundle on `node` whose createRuntime and poststop hooks attach
/// it to `network` and detach it (installed by `netshim oci install-hook`).
pub fn runc_bundle(node: &ClusterNode, tag: &str, network: &str) -> TempDir {
    let dir = TempDir::new(tag);
    let config = serde_json::json!({
        "ociVersion": "1.0.2",
        "process": {
            "terminal": false, "user": {"uid": 0, "gid": 0}, "cwd": "/",
            "args": ["sleep", "1000"], "env": ["PATH=/bin"],
            "capabilities": {"bounding": ["CAP_NET_RAW"], "effective": ["CAP_NET_RAW"], "permitted": ["CAP_NET_RAW"]},
            "noNewPrivileges": true
        },
        "root": {"path": crate::busybox_rootfs(), "readonly": true},
        "hostname": tag,
        "mounts": [
            {"destination": "/proc", "type": "proc", "source": "proc"},
            {"destination": "/dev", "type": "tmpfs", "source": "tmpfs", "options": ["nosuid", "mode=755"]}
        ],
        "linux": {"namespaces": [{"type": "pid"}, {"type": "ipc"}, {"type": "uts"}, {"type": "mount"}, {"type": "network"}]}
    });
    std::fs::write(
        dir.0.join("config.json"),
        serde_json::to_vec(&config).unwrap(),
    )
    .unwrap();
    node.ok(&[
        "oci",
        "install-hook",
        dir.0.to_str().unwrap(),
        "--network",
        network,
    ]);
    dir
}

/// A runc command on `node` that must succeed; its stdout.
pub fn runc_ok(node: &ClusterNode, root: &TempDir, args: &[&str]) -> String {
    let out = crate::Runtime::Runc.cmd(&node.ns, &root.0, args);
    assert!(
        out.status.success(),
        "runc {}: {}{}",
        args.join(" "),
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}

/// The first IPv4 address in `ip addr` output.
pub fn addr_of(ip_output: &str) -> String {
    ip_output
        .split_whitespace()
        .skip_while(|w| *w != "inet")
        .nth(1)
        .and_then(|a| a.split('/').next())
        .unwrap_or_default()
        .to_string()
}

/// A new namespace attached to `network` on `node`; its IPv4 address on
/// eth0, with the prefix length.
pub fn attach_new(node: &ClusterNode, tag: &str, network: &str) -> (Ns, String) {
    let c = Ns::new(tag);
    node.ok(&[
        "attach",
        "--network",
        network,
        "--netns",
        c.path.to_str().unwrap(),
    ]);
    let a = c
        .ip(&["-4", "-o", "addr", "show", "dev", "eth0"])
        .split_whitespace()
        .nth(3)
        .unwrap_or_default()
        .to_string();
    (c, a)
}

/// The IPAM blocks (CIDR) Calico's affinities in etcd give `node`.
pub fn calico_blocks(etcd: &Etcd, node: &str) -> Vec<String> {
    etcd.etcdctl(&[
        "get",
        "--prefix",
        "--keys-only",
        &format!("/calico/ipam/v2/host/{node}/ipv4/block/"),
    ])
    .lines()
    .filter(|l| !l.is_empty())
    .map(|k| k.rsplit('/').next().unwrap_or_default().replace('-', "/"))
    .collect()
}

/// Whether runc container `id` on `node` gets an answer from `to`.
pub fn runc_pings(node: &ClusterNode, root: &TempDir, id: &str, to: &str) -> bool {
    crate::Runtime::Runc
        .cmd(&node.ns, &root.0, &["exec", id, "ping", "-c1", "-W2", to])
        .status
        .success()
}

/// `netshim network create` of the Calico network "pods" in BGP mode.
pub const CALICO_BGP_CREATE: [&str; 7] = [
    "network",
    "create",
    "pods",
    "--driver",
    "calico",
    "-o",
    "vxlan-mode=Never",
];

/// Stop and delete runc container `id` on `node` (poststop runs).
pub fn runc_remove(node: &ClusterNode, root: &TempDir, id: &str) {
    runc_ok(node, root, &["kill", id, "KILL"]);
    assert!(
        crate::cluster::eventually(10, || crate::Runtime::Runc
            .cmd(&node.ns, &root.0, &["delete", id])
            .status
            .success()),
        "runc delete {id}"
    );
}

/// A TCP connection from `from` to `to_addr:8080`, accepted in `to`: the
/// source address `to` saw.
pub fn tcp_source(from: &Ns, to: &Ns, to_addr: &str) -> String {
    let listener = to.accept_one(&format!("{to_addr}:8080"));
    from.connect(&format!("{to_addr}:8080"))
        .unwrap_or_else(|e| panic!("TCP from {} to {to_addr}: {e}", from.name));
    listener.join().unwrap().ip().to_string()
}

/// A Calico workload on `node`'s network "pods": its namespace and its
/// address, which is a /32.
pub fn calico_workload(node: &ClusterNode, tag: &str) -> (Ns, String) {
    let (c, a) = attach_new(node, tag, "pods");
    assert!(a.ends_with("/32"), "a Calico workload holds a /32: {a}");
    (c, a.trim_end_matches("/32").to_string())
}
