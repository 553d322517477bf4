//! Helpers for netshim's integration tests: throwaway namespaces (a node,
//! containers, an "outside" host on 203.0.113.0/24), the netshim binary, and
//! listings of what is left in a namespace. Nothing here touches the
//! machine's own namespace; every namespace is removed on drop, also when a
//! test fails.

pub mod cluster;
pub mod docker;
#[path = "../../shim/guest_build.rs"]
pub mod guest_build;
pub mod http_gen;
pub mod nft_gen;

use std::net::{SocketAddr, TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

pub use netshim_netns as netns;

static SEQ: AtomicUsize = AtomicUsize::new(0);

/// True when the tests may change networking (root, with netns support).
pub fn can_run() -> bool {
    let root = unsafe { libc::geteuid() } == 0;
    if !root {
        eprintln!("SKIPPED: integration tests need root (network namespaces)");
    }
    root
}

/// Run `f` on a thread of its own inside the namespace at `path`: sockets
/// it opens (and threads it starts) are that namespace's.
pub fn spawn_in<T: Send + 'static>(
    path: PathBuf,
    f: impl FnOnce() -> T + Send + 'static,
) -> std::thread::JoinHandle<T> {
    std::thread::spawn(move || {
        let file = std::fs::File::open(&path).expect("open namespace");
        nix::sched::setns(&file, nix::sched::CloneFlags::CLONE_NEWNET).expect("setns");
        f()
    })
}

/// A named network namespace, removed on drop.
pub struct Ns {
    pub name: String,
    pub path: PathBuf,
}

impl Ns {
    pub fn new(tag: &str) -> Ns {
        let name = format!(
            "nst{}-{}-{tag}",
            std::process::id(),
            SEQ.fetch_add(1, Ordering::Relaxed)
        );
        let path =
            netns::create(&name).unwrap_or_else(|e| panic!("creating namespace {name}: {e}"));
        let ns = Ns { name, path };
        ns.ip(&["link", "set", "lo", "up"]);
        ns
    }

    /// `ip -n NAME args…`; panics with ip's message on failure.
    pub fn ip(&self, args: &[&str]) -> String {
        let out = Command::new("ip")
            .arg("-n")
            .arg(&self.name)
            .args(args)
            .output()
            .expect("run ip");
        assert!(
            out.status.success(),
            "ip -n {} {}: {}",
            self.name,
            args.join(" "),
            String::from_utf8_lossy(&out.stderr)
        );
        String::from_utf8_lossy(&out.stdout).into_owned()
    }

    /// Run a command inside the namespace.
    pub fn exec(&self, args: &[&str]) -> Output {
        Command::new("ip")
            .args(["netns", "exec", &self.name])
            .args(args)
            .output()
            .expect("run ip netns exec")
    }

    pub fn ping(&self, addr: &str) -> bool {
        self.exec(&["ping", "-c", "1", "-W", "2", addr])
            .status
            .success()
    }

    /// Link names, sorted.
    pub fn links(&self) -> Vec<String> {
        let out = self.ip(&["-o", "link", "show"]);
        let mut v: Vec<String> = out
            .lines()
            .filter_map(|l| l.split(": ").nth(1))
            .map(|n| n.split('@').next().unwrap_or(n).to_string())
            .collect();
        v.sort();
        v
    }

    /// IPv4 addresses as "dev addr/len", sorted.
    pub fn addresses(&self) -> Vec<String> {
        let out = self.ip(&["-o", "-4", "addr", "show"]);
        let mut v: Vec<String> = out
            .lines()
            .filter_map(|l| {
                let f: Vec<&str> = l.split_whitespace().collect();
                Some(format!("{} {}", f.get(1)?, f.get(3)?))
            })
            .collect();
        v.sort();
        v
    }

    pub fn routes(&self) -> Vec<String> {
        let mut v: Vec<String> = self
            .ip(&["-4", "route", "show", "table", "all"])
            .lines()
            .filter(|l| !l.starts_with("local ") && !l.starts_with("broadcast "))
            .map(str::to_string)
            .collect();
        v.sort();
        v
    }

    pub fn nft_ruleset(&self) -> String {
        let out = self.exec(&["nft", "list", "ruleset"]);
        assert!(
            out.status.success(),
            "nft list ruleset: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        String::from_utf8_lossy(&out.stdout).into_owned()
    }

    pub fn sysctl(&self, path: &str) -> String {
        let out = self.exec(&["cat", &format!("/proc/sys/{path}")]);
        String::from_utf8_lossy(&out.stdout).trim().to_string()
    }

    /// Run `f` on a thread of its own inside this namespace.
    pub fn spawn_inside<T: Send + 'static>(
        &self,
        f: impl FnOnce() -> T + Send + 'static,
    ) -> std::thread::JoinHandle<T> {
        spawn_in(self.path.clone(), f)
    }

    /// Accept one TCP connection on `addr` inside this namespace and return
    /// the peer's address as the listener saw it.
    pub fn accept_one(&self, addr: &str) -> std::thread::JoinHandle<SocketAddr> {
        let sock: SocketAddr = addr.parse().unwrap();
        let (tx, rx) = std::sync::mpsc::channel();
        let h = self.spawn_inside(move || {
            let l = TcpListener::bind(sock).unwrap();
            tx.send(()).unwrap();
            let (_s, peer) = l.accept().unwrap();
            peer
        });
        rx.recv_timeout(Duration::from_secs(5))
            .expect("listener up");
        h
    }

    /// `GET path` over HTTP/1.1 from inside this namespace; the body.
    pub fn http_get(&self, addr: &str, path: &str) -> String {
        use std::io::{Read, Write};
        let sock: SocketAddr = addr.parse().unwrap();
        let path = path.to_string();
        self.spawn_inside(move || {
            let mut s = TcpStream::connect_timeout(&sock, Duration::from_secs(5)).unwrap();
            s.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
            write!(
                s,
                "GET {path} HTTP/1.1\r\nHost: test\r\nConnection: close\r\n\r\n"
            )
            .unwrap();
            let mut out = String::new();
            let _ = s.read_to_string(&mut out);
            out.split_once("\r\n\r\n")
                .map(|(_, b)| b.to_string())
                .unwrap_or(out)
        })
        .join()
        .unwrap()
    }

    /// Connect from inside this namespace.
    pub fn connect(&self, addr: &str) -> std::io::Result<()> {
        let sock: SocketAddr = addr.parse().unwrap();
        self.spawn_inside(move || {
            TcpStream::connect_timeout(&sock, Duration::from_secs(2)).map(|_| ())
        })
        .join()
        .unwrap()
    }
}

impl Drop for Ns {
    fn drop(&mut self) {
        if let Err(e) = netns::delete(&self.name) {
            eprintln!("cleanup: {e}");
        }
    }
}

/// A node with an uplink to an outside host: node `uplink` 203.0.113.2/24
/// <-> outside `eth0` 203.0.113.1/24, default route of the node via the
/// outside host. The outside host knows no route to container subnets, so
/// a container reaches it only through masquerade.
pub struct Node {
    pub node: Ns,
    pub outside: Ns,
    pub state: TempDir,
}

pub const NODE_ADDR: &str = "203.0.113.2";
pub const OUTSIDE_ADDR: &str = "203.0.113.1";

impl Node {
    pub fn new(tag: &str) -> Node {
        let node = Ns::new(&format!("{tag}-node"));
        let outside = Ns::new(&format!("{tag}-out"));
        node.ip(&[
            "link",
            "add",
            "uplink",
            "type",
            "veth",
            "peer",
            "name",
            "eth0",
            "netns",
            &outside.name,
        ]);
        node.ip(&["addr", "add", &format!("{NODE_ADDR}/24"), "dev", "uplink"]);
        node.ip(&["link", "set", "uplink", "up"]);
        outside.ip(&["addr", "add", &format!("{OUTSIDE_ADDR}/24"), "dev", "eth0"]);
        outside.ip(&["link", "set", "eth0", "up"]);
        node.ip(&["route", "add", "default", "via", OUTSIDE_ADDR]);
        Node {
            node,
            outside,
            state: TempDir::new(tag),
        }
    }

    /// `netshim ARGS` acting on this node, not started yet.
    pub fn command(&self, args: &[&str]) -> Command {
        let mut c = Command::new(netshim_bin());
        c.env("NETSHIM_STATE_DIR", &self.state.0)
            .env("NETSHIM_NODE_NETNS", &self.node.path)
            .env("NETSHIM_CACHE_DIR", cache_dir())
            .args(args);
        c
    }

    /// The netshim binary acting on this node.
    pub fn netshim(&self, args: &[&str]) -> Output {
        self.command(args).output().expect("run netshim")
    }

    /// `netshim oci-hook STAGE` as a runtime runs it, the container's
    /// state on stdin; panics, with netshim's stderr, on failure.
    pub fn hook(&self, stage: &str, state: &str) -> Output {
        use std::io::Write as _;
        let mut child = self
            .command(&["oci-hook", stage])
            .stdin(Stdio::piped())
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()
            .expect("run netshim oci-hook");
        let _ = child.stdin.take().unwrap().write_all(state.as_bytes());
        let out = child.wait_with_output().unwrap();
        assert!(
            out.status.success(),
            "oci-hook {stage}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        out
    }

    /// Like `netshim` but panics, with netshim's stderr, on failure.
    pub fn ok(&self, args: &[&str]) -> String {
        let out = self.netshim(args);
        assert!(
            out.status.success(),
            "netshim {} failed: {}",
            args.join(" "),
            String::from_utf8_lossy(&out.stderr)
        );
        String::from_utf8_lossy(&out.stdout).into_owned()
    }

    pub fn json(&self, args: &[&str]) -> serde_json::Value {
        let mut a = vec!["--output", "json"];
        a.extend_from_slice(args);
        serde_json::from_str(&self.ok(&a)).expect("netshim printed JSON")
    }

    /// netshim's state as JSON, `{"spaces": {SPACE: {KEY: VALUE}}}` (values
    /// as text), read from the store as netshim left it.
    pub fn state_json(&self) -> serde_json::Value {
        let store = netshim_host_api::store::LocalStore::open(&self.state.0).unwrap();
        let mut spaces = serde_json::Map::new();
        for (space, e) in store.snapshot().unwrap() {
            let m = spaces.entry(space).or_insert_with(|| serde_json::json!({}));
            m[e.key] = serde_json::Value::String(String::from_utf8_lossy(&e.value).into_owned());
        }
        serde_json::json!({ "spaces": spaces })
    }

    /// Links, addresses and routes of a fresh node, for "nothing left" checks.
    pub fn baseline(&self) -> (Vec<String>, Vec<String>, Vec<String>) {
        (self.node.links(), self.node.addresses(), self.node.routes())
    }
}

pub struct TempDir(pub PathBuf);

impl TempDir {
    pub fn new(tag: &str) -> TempDir {
        let p = std::env::temp_dir().join(format!(
            "netshim-test-{}-{}-{tag}",
            std::process::id(),
            SEQ.fetch_add(1, Ordering::Relaxed)
        ));
        let _ = std::fs::remove_dir_all(&p);
        std::fs::create_dir_all(&p).unwrap();
        TempDir(p)
    }
}

impl Drop for TempDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

/// target/<profile>/netshim: next to the test binary's deps directory, or
/// beside the running binary (netshim-bench uses this harness too).
pub fn netshim_bin() -> PathBuf {
    let exe = std::env::current_exe().unwrap();
    let beside = exe.with_file_name("netshim");
    if beside.is_file() {
        return beside;
    }
    let dir = exe.parent().and_then(Path::parent).unwrap();
    let bin = dir.join("netshim");
    assert!(
        bin.exists(),
        "{} is missing: build it with `cargo build --release -p netshim` (the test command does)",
        bin.display()
    );
    bin
}

/// Compiled guests shared by all tests of a run, so Cranelift runs once.
pub fn cache_dir() -> PathBuf {
    let exe = std::env::current_exe().unwrap();
    exe.parent()
        .and_then(Path::parent)
        .unwrap()
        .join("netshim-test-cache")
}

pub fn hostile_wasm() -> PathBuf {
    PathBuf::from(env!("HOSTILE_WASM"))
}

pub fn unknown_import_wat() -> PathBuf {
    PathBuf::from(env!("UNKNOWN_IMPORT_WAT"))
}

/// An OCI runtime from the machine, run inside a node namespace (its netns
/// only: `ip netns exec` would remount /sys and hide the cgroup mounts).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Runtime {
    Runc,
    Crun,
    Youki,
}

impl Runtime {
    pub fn binary(self) -> PathBuf {
        let name = match self {
            Runtime::Runc => "runc",
            Runtime::Crun => "crun",
            Runtime::Youki => "youki",
        };
        let home = std::env::var("HOME").unwrap_or_else(|_| "/root".into());
        let candidates = [
            format!("/usr/sbin/{name}"),
            format!("/usr/bin/{name}"),
            format!("{home}/.cargo/bin/{name}"),
            format!("/usr/local/bin/{name}"),
        ];
        candidates
            .iter()
            .map(PathBuf::from)
            .find(|p| p.exists())
            .unwrap_or_else(|| panic!("{name} is not installed: run `bash scripts/deps.sh test`"))
    }

    /// `<runtime> --root ROOT args…` in the node's network namespace.
    pub fn cmd(self, node: &Ns, root: &Path, args: &[&str]) -> Output {
        let bin = self.binary();
        // A runtime that hangs must fail the test, not the whole run.
        let mut c = Command::new("timeout");
        c.args(["-k", "5", "60"]);
        if self == Runtime::Crun {
            // crun refuses this machine's hybrid cgroup layout unless the
            // unified hierarchy is out of sight: a private mount namespace.
            c.args([
                "unshare",
                "-m",
                "sh",
                "-c",
                "umount /sys/fs/cgroup/unified 2>/dev/null; exec \"$@\"",
                "sh",
            ]);
        }
        c.arg("nsenter");
        c.arg(format!("--net={}", node.path.display()))
            .arg(bin)
            .arg("--root")
            .arg(root)
            .args(args);
        // Files, not pipes: a detached container inherits the runtime's
        // stdio and would hold a pipe open for as long as it runs.
        let n = SEQ.fetch_add(1, Ordering::Relaxed);
        let out_path = root.join(format!(".out{n}"));
        let err_path = root.join(format!(".err{n}"));
        let status = c
            .stdin(std::process::Stdio::null())
            .stdout(std::fs::File::create(&out_path).unwrap())
            .stderr(std::fs::File::create(&err_path).unwrap())
            .status()
            .expect("run the OCI runtime");
        let stdout = std::fs::read(&out_path).unwrap_or_default();
        let stderr = std::fs::read(&err_path).unwrap_or_default();
        let _ = std::fs::remove_file(&out_path);
        let _ = std::fs::remove_file(&err_path);
        Output {
            status,
            stdout,
            stderr,
        }
    }

    /// A container id unique to this test run.
    pub fn id(tag: &str) -> String {
        format!("nst{}-{tag}", std::process::id())
    }
}

/// A busybox-static root filesystem, made once per test binary.
pub fn busybox_rootfs() -> PathBuf {
    static ROOTFS: std::sync::OnceLock<PathBuf> = std::sync::OnceLock::new();
    ROOTFS
        .get_or_init(|| {
            let dir = std::env::temp_dir().join(format!("netshim-rootfs-{}", std::process::id()));
            let bin = dir.join("bin");
            std::fs::create_dir_all(&bin).unwrap();
            for d in ["proc", "sys", "dev", "tmp", "etc"] {
                std::fs::create_dir_all(dir.join(d)).unwrap();
            }
            std::fs::copy("/bin/busybox", bin.join("busybox"))
                .expect("busybox-static is installed (scripts/deps.sh test)");
            for tool in [
                "sh", "sleep", "ping", "ip", "nc", "cat", "echo", "httpd", "wget",
            ] {
                std::os::unix::fs::symlink("busybox", bin.join(tool)).unwrap();
            }
            dir
        })
        .clone()
}

/// A process started by a test, stopped (SIGTERM, then SIGKILL) on drop.
pub struct Daemon {
    pub child: std::process::Child,
    pub name: &'static str,
}

impl Daemon {
    pub fn stop(&mut self) {
        // Reaped already (a test waited for it): its pid may be another's now.
        if let Ok(Some(_)) = self.child.try_wait() {
            return;
        }
        let pid = nix::unistd::Pid::from_raw(self.child.id() as i32);
        let _ = nix::sys::signal::kill(pid, nix::sys::signal::Signal::SIGTERM);
        for _ in 0..200 {
            if let Ok(Some(_)) = self.child.try_wait() {
                return;
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl Drop for Daemon {
    fn drop(&mut self) {
        self.stop();
    }
}

/// Wait for a path (a socket) to appear.
pub fn wait_for(path: &Path, what: &str) {
    for _ in 0..300 {
        if path.exists() {
            return;
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    panic!("{what} did not appear at {}", path.display());
}

/// A fuzz command's `[CASES] [SEED]` (1,000,000 and a fixed seed by
/// default), and a generator runner seeded with SEED so a run repeats.
pub fn fuzz_args() -> (u64, u64, proptest::test_runner::TestRunner) {
    use proptest::test_runner::{Config, RngAlgorithm, TestRng, TestRunner};
    let args: Vec<String> = std::env::args().collect();
    let cases = args
        .get(1)
        .and_then(|a| a.parse().ok())
        .unwrap_or(1_000_000);
    let seed: u64 = args.get(2).and_then(|a| a.parse().ok()).unwrap_or(0x5eed);
    let mut key = [0u8; 32];
    key[..8].copy_from_slice(&seed.to_le_bytes());
    let rng = TestRng::from_seed(RngAlgorithm::ChaCha, &key);
    (
        cases,
        seed,
        TestRunner::new_with_rng(Config::default(), rng),
    )
}
