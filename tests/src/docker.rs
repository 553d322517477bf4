//! dockerd, started by a test inside a node namespace with its own data
//! root, exec root and socket, and a busybox image imported from the
//! shared rootfs; its containers are removed and it is stopped on drop.

use std::path::PathBuf;
use std::process::{Command, Output, Stdio};

use crate::{busybox_rootfs, wait_for, Daemon, Ns};

pub struct Docker {
    sock: PathBuf,
    root: PathBuf,
    daemon: Option<Daemon>,
}

impl Docker {
    /// dockerd in the node's network namespace: no default bridge, no
    /// iptables, its own data root, exec root and socket.
    pub fn start(node: &Ns, tag: &str) -> Docker {
        // Short paths: containerd's socket lives under the exec root.
        let root = PathBuf::from(format!("/tmp/nsd{}{tag}", std::process::id()));
        let _ = std::fs::remove_dir_all(&root);
        std::fs::create_dir_all(&root).unwrap();
        let sock = root.join("d.sock");
        let log = std::fs::File::create(root.join("dockerd.log")).unwrap();
        let child = Command::new("nsenter")
            .arg(format!("--net={}", node.path.display()))
            .args([
                "dockerd",
                "--bridge=none",
                "--iptables=false",
                "--ip6tables=false",
            ])
            .arg("--data-root")
            .arg(root.join("data"))
            .arg("--exec-root")
            .arg(root.join("x"))
            .arg("--pidfile")
            .arg(root.join("d.pid"))
            .arg("-H")
            .arg(format!("unix://{}", sock.display()))
            .stdout(log.try_clone().unwrap())
            .stderr(log)
            .spawn()
            .unwrap();
        let d = Docker {
            sock: sock.clone(),
            root: root.clone(),
            daemon: Some(Daemon {
                child,
                name: "dockerd",
            }),
        };
        wait_for(&sock, "dockerd's socket");
        for _ in 0..100 {
            if d.docker(&["version"]).status.success() {
                break;
            }
            std::thread::sleep(std::time::Duration::from_millis(100));
        }
        let tar = root.join("rootfs.tar");
        let ok = Command::new("tar")
            .arg("-C")
            .arg(busybox_rootfs())
            .arg("-cf")
            .arg(&tar)
            .arg(".")
            .status()
            .unwrap();
        assert!(ok.success());
        d.ok(&["import", tar.to_str().unwrap(), "nstbusybox"]);
        d
    }

    pub fn docker(&self, args: &[&str]) -> Output {
        Command::new("/usr/bin/docker")
            .env("DOCKER_HOST", format!("unix://{}", self.sock.display()))
            .args(args)
            .stdin(Stdio::null())
            .output()
            .unwrap()
    }

    pub fn ok(&self, args: &[&str]) -> String {
        let out = self.docker(args);
        assert!(
            out.status.success(),
            "docker {}: {}",
            args.join(" "),
            String::from_utf8_lossy(&out.stderr)
        );
        String::from_utf8_lossy(&out.stdout).trim().to_string()
    }

    /// Whether container `c` gets an answer from `to` (one ping, 2 s).
    pub fn pings(&self, c: &str, to: &str) -> bool {
        self.docker(&["exec", c, "ping", "-c1", "-W2", to])
            .status
            .success()
    }

    pub fn ip_of(&self, c: &str, net: &str) -> String {
        self.ok(&[
            "inspect",
            "-f",
            &format!("{{{{(index .NetworkSettings.Networks \"{net}\").IPAddress}}}}"),
            c,
        ])
    }
}

impl Drop for Docker {
    fn drop(&mut self) {
        let ids = self.docker(&["ps", "-aq"]);
        for id in String::from_utf8_lossy(&ids.stdout).split_whitespace() {
            let _ = self.docker(&["rm", "-f", id]);
        }
        drop(self.daemon.take());
        let _ = std::fs::remove_dir_all(&self.root);
    }
}
