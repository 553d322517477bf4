//! Named network namespaces (the `ip netns` convention: a bind mount under
//! /run/netns), made and removed without exec, for the tests and the
//! benchmark, which must never touch the machine's own namespace. Not part
//! of the `netshim` binary.

use std::fs::{self, File};
use std::path::{Path, PathBuf};
use std::thread;

use nix::mount::{mount, umount2, MntFlags, MsFlags};
use nix::sched::{unshare, CloneFlags};

pub const NETNS_DIR: &str = "/run/netns";

#[derive(Debug, thiserror::Error)]
#[error("network namespace {name}: {what}: {source}")]
pub struct NetnsError {
    name: String,
    what: &'static str,
    source: std::io::Error,
}

fn err<'a>(name: &'a str, what: &'static str) -> impl FnOnce(std::io::Error) -> NetnsError + 'a {
    move |source| NetnsError {
        name: name.into(),
        what,
        source,
    }
}

fn nix_err<'a>(name: &'a str, what: &'static str) -> impl FnOnce(nix::Error) -> NetnsError + 'a {
    move |e| NetnsError {
        name: name.into(),
        what,
        source: std::io::Error::from(e),
    }
}

pub fn path(name: &str) -> PathBuf {
    Path::new(NETNS_DIR).join(name)
}

/// Create /run/netns/<name> holding a fresh, empty network namespace.
pub fn create(name: &str) -> Result<PathBuf, NetnsError> {
    fs::create_dir_all(NETNS_DIR).map_err(err(name, "creating /run/netns"))?;
    let target = path(name);
    File::options()
        .write(true)
        .create_new(true)
        .open(&target)
        .map_err(err(name, "creating the mount point"))?;
    let t = target.clone();
    let n = name.to_string();
    // unshare() changes the calling thread: do it on a thread that dies.
    let result = thread::spawn(move || -> Result<(), NetnsError> {
        unshare(CloneFlags::CLONE_NEWNET).map_err(nix_err(&n, "unshare"))?;
        mount(
            Some("/proc/thread-self/ns/net"),
            &t,
            None::<&str>,
            MsFlags::MS_BIND,
            None::<&str>,
        )
        .map_err(nix_err(&n, "bind mount"))?;
        Ok(())
    })
    .join()
    .unwrap_or_else(|_| {
        Err(NetnsError {
            name: name.into(),
            what: "thread",
            source: std::io::Error::other("panicked"),
        })
    });
    if let Err(e) = result {
        let _ = fs::remove_file(&target);
        return Err(e);
    }
    Ok(target)
}

/// Remove /run/netns/<name>; the namespace dies with its last user.
pub fn delete(name: &str) -> Result<(), NetnsError> {
    let target = path(name);
    let _ = umount2(&target, MntFlags::MNT_DETACH);
    fs::remove_file(&target).map_err(err(name, "removing the mount point"))
}
