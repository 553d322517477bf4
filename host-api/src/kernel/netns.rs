//! The one way netshim runs code inside another network namespace: on a
//! short-lived thread that enters it and dies, so no thread that goes on
//! working ever changes namespace. Sockets opened there stay bound to it.

use std::io;
use std::os::fd::BorrowedFd;

use nix::sched::{setns, CloneFlags};

/// Run `f` on a fresh thread inside the namespace `fd` refers to.
pub fn in_namespace<T: Send>(
    fd: BorrowedFd<'_>,
    f: impl FnOnce() -> io::Result<T> + Send,
) -> io::Result<T> {
    std::thread::scope(|scope| {
        scope
            .spawn(move || {
                setns(fd, CloneFlags::CLONE_NEWNET).map_err(io::Error::from)?;
                f()
            })
            .join()
            .unwrap_or_else(|_| Err(io::Error::other("namespace worker thread panicked")))
    })
}
