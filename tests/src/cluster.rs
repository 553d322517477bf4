//! The multi-node harness: a "fabric" namespace holding the underlay bridge,
//! and namespaces hanging off it by a veth each (etcd's, every node's), with
//! addresses in 192.0.2.0/24. etcd (Debian's `etcd-server`) runs in a
//! namespace of its own, started and stopped by the test, its data in a
//! temporary directory. Nothing here touches the machine's own namespace.

use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use crate::{Daemon, Ns, TempDir};

pub const UNDERLAY: &str = "192.0.2";

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
    std::thread::spawn(move || {
        let file = std::fs::File::open(&path).expect("open namespace");
        nix::sched::setns(&file, nix::sched::CloneFlags::CLONE_NEWNET).expect("setns");
        f()
    })
    .join()
    .unwrap_or_else(|p| std::panic::resume_unwind(p))
}
