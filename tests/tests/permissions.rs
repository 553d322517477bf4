//! What netshim keeps on disk is netshim's alone: the state directory
//! (0700) with its files (0600), a lock no other user can take, a
//! compiled-guest cache used only when nobody else could have written it,
//! and a plugin socket dockerd's group may use (0660).

use std::fs;
use std::os::unix::fs::{MetadataExt, PermissionsExt};
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};

use netshim_tests::{can_run, netshim_bin, wait_for, Daemon, Node, TempDir};

/// The unprivileged user other users are played by.
const NOBODY: u32 = 65534;

fn mode(p: &Path) -> u32 {
    fs::symlink_metadata(p).unwrap().mode() & 0o7777
}

fn owner(p: &Path) -> u32 {
    fs::symlink_metadata(p).unwrap().uid()
}

fn chmod(p: &Path, m: u32) {
    fs::set_permissions(p, fs::Permissions::from_mode(m)).unwrap();
}

fn cwasm(dir: &Path) -> Vec<PathBuf> {
    fs::read_dir(dir)
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| p.extension().is_some_and(|e| e == "cwasm"))
        .collect()
}

/// netshim on this node with its own cache directory; stderr at warn.
fn run(node: &Node, cache: &Path, args: &[&str]) -> (bool, String) {
    let out = Command::new(netshim_bin())
        .env("NETSHIM_STATE_DIR", &node.state.0)
        .env("NETSHIM_NODE_NETNS", &node.node.path)
        .env("NETSHIM_LOG", "warn")
        .arg("--cache-dir")
        .arg(cache)
        .args(args)
        .output()
        .unwrap();
    (
        out.status.success(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

#[test]
fn state_and_cache_are_private_and_a_tampered_cache_is_not_used() {
    if !can_run() {
        return;
    }
    let node = Node::new("perm");
    // A state directory an earlier version made with the default mode.
    chmod(&node.state.0, 0o755);
    let cache_root = TempDir::new("perm-cache");
    let cache = cache_root.0.join("cache");

    let (ok, err) = run(
        &node,
        &cache,
        &["network", "create", "n1", "--subnet", "10.91.0.0/24"],
    );
    assert!(ok, "{err}");
    let state = &node.state.0;
    assert_eq!(mode(state), 0o700, "state directory adopted and tightened");
    assert!(state.join("state.db").exists() && state.join("lock").exists());
    // The database, its WAL and shared-memory files (while they exist), the lock.
    for f in fs::read_dir(state).unwrap() {
        let f = f.unwrap().path();
        assert_eq!(mode(&f), 0o600, "{}", f.display());
        assert_eq!(owner(&f), 0, "{}", f.display());
    }
    assert_eq!(mode(&cache), 0o700);
    let entries = cwasm(&cache);
    assert_eq!(entries.len(), 1, "{entries:?}");
    assert_eq!(mode(&entries[0]), 0o600);

    // Another user cannot reach the lock, so cannot hang netshim with it.
    let flock = Command::new("flock")
        .args(["-n", "-E", "75"])
        .arg(state.join("lock"))
        .arg("true")
        .uid(NOBODY)
        .gid(NOBODY)
        .stderr(Stdio::piped())
        .output()
        .unwrap();
    assert!(!flock.status.success(), "nobody took netshim's lock");
    assert!(
        String::from_utf8_lossy(&flock.stderr).contains("Permission denied"),
        "{}",
        String::from_utf8_lossy(&flock.stderr)
    );

    // A cache entry someone else owns is machine code nobody vouches for:
    // it is not loaded, the guest is compiled again and the entry replaced.
    nix::unistd::chown(&entries[0], Some(nix::unistd::Uid::from_raw(NOBODY)), None).unwrap();
    let (ok, err) = run(
        &node,
        &cache,
        &["network", "create", "n2", "--subnet", "10.92.0.0/24"],
    );
    assert!(ok, "{err}");
    assert!(
        err.contains("refusing a compiled-guest cache entry") && err.contains("uid 65534"),
        "{err}"
    );
    assert_eq!(owner(&entries[0]), 0, "the entry was compiled again");

    // A cache directory others may write to is not used at all.
    chmod(&cache, 0o777);
    let (ok, err) = run(&node, &cache, &["network", "rm", "n2"]);
    assert!(ok, "{err}");
    assert!(
        err.contains("not using the compiled-guest cache") && err.contains("mode 0777"),
        "{err}"
    );
    chmod(&cache, 0o700);

    // A state directory others may write to is refused, naming why.
    chmod(state, 0o777);
    let (ok, err) = run(&node, &cache, &["network", "ls"]);
    assert!(!ok, "a world-writable state directory was used");
    assert!(
        err.contains("mode 0777") && err.contains("other users"),
        "{err}"
    );
    chmod(state, 0o700);
    let (ok, err) = run(&node, &cache, &["network", "rm", "n1"]);
    assert!(ok, "{err}");
}

#[test]
fn the_plugin_socket_is_for_root_and_its_group() {
    if !can_run() {
        return;
    }
    let node = Node::new("permsock");
    let plugins = TempDir::new("permsock-plugins");
    let child = Command::new(netshim_bin())
        .env("NETSHIM_STATE_DIR", &node.state.0)
        .env("NETSHIM_NODE_NETNS", &node.node.path)
        .args(["daemon", "--plugin-dir"])
        .arg(&plugins.0)
        .stdout(Stdio::null())
        .stderr(Stdio::inherit())
        .spawn()
        .unwrap();
    let mut daemon = Daemon {
        child,
        name: "netshim",
    };
    let sock = plugins.0.join("netshim-bridge.sock");
    wait_for(&sock, "netshim's plugin socket");
    assert_eq!(mode(&sock), 0o660);
    daemon.stop();
}
