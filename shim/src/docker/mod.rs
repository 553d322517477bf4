//! `netshim daemon`: Docker's remote network and IPAM driver protocols on a
//! unix socket per driver guest, `<plugin-dir>/<prefix><driver>.sock`
//! (`netshim-bridge.sock` → `docker network create -d netshim-bridge
//! --ipam-driver netshim-bridge`). State is the same store the CLI uses, so
//! networks and endpoints survive a restart of the daemon: Docker never
//! replays them.

mod api;
mod http;

use std::io::BufReader;
use std::os::unix::fs::{FileTypeExt, PermissionsExt};
use std::os::unix::net::{UnixListener, UnixStream};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::thread;

use nix::sys::signal::{SigSet, Signal};

use crate::cnm::Core;

pub const DEFAULT_PLUGIN_DIR: &str = "/run/docker/plugins";

#[derive(Debug, thiserror::Error)]
pub enum DockerError {
    #[error("plugin socket {path}: {source}")]
    Socket {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("{0}")]
    Signal(#[from] nix::Error),
}

/// Handles SIGINT/SIGTERM on the waiting thread only: blocked here, before
/// any other thread exists, so every thread inherits the mask.
pub fn block_signals() -> Result<SigSet, DockerError> {
    let mut set = SigSet::empty();
    set.add(Signal::SIGTERM);
    set.add(Signal::SIGINT);
    set.thread_block()?;
    Ok(set)
}

/// Serve until SIGTERM/SIGINT; removes its sockets on the way out.
pub fn serve(
    core: Arc<Core>,
    plugin_dir: &Path,
    prefix: &str,
    signals: SigSet,
) -> Result<(), DockerError> {
    std::fs::create_dir_all(plugin_dir).map_err(|source| DockerError::Socket {
        path: plugin_dir.into(),
        source,
    })?;
    let mut sockets = Vec::new();
    for driver in core.drivers().keys() {
        // Load (and if needed compile) now, not on Docker's first request.
        if let Err(e) = core.guest(driver) {
            tracing::error!(driver, error = %e, "driver not served");
            continue;
        }
        let path = plugin_dir.join(format!("{prefix}{driver}.sock"));
        let listener = bind(&path)?;
        tracing::info!(socket = %path.display(), plugin = %format!("{prefix}{driver}"), "serving Docker NetworkDriver and IpamDriver");
        sockets.push(path);
        let core = core.clone();
        let driver = driver.clone();
        thread::Builder::new()
            .name(format!("accept-{driver}"))
            .spawn(move || accept(listener, core, driver))
            .map_err(|source| DockerError::Socket {
                path: plugin_dir.into(),
                source,
            })?;
    }
    let sig = signals.wait()?;
    tracing::info!(signal = ?sig, "stopping");
    for s in sockets {
        let _ = std::fs::remove_file(s);
    }
    Ok(())
}

fn bind(path: &Path) -> Result<UnixListener, DockerError> {
    let err = |source| DockerError::Socket {
        path: path.into(),
        source,
    };
    // A socket left by an earlier run (killed, or crashed) is replaced; any
    // other file by that name is not ours to remove.
    if let Ok(meta) = std::fs::symlink_metadata(path) {
        if meta.file_type().is_socket() {
            std::fs::remove_file(path).map_err(err)?;
        }
    }
    let listener = UnixListener::bind(path).map_err(err)?;
    std::fs::set_permissions(path, std::fs::Permissions::from_mode(0o660)).map_err(err)?;
    Ok(listener)
}

fn accept(listener: UnixListener, core: Arc<Core>, driver: String) {
    for conn in listener.incoming() {
        match conn {
            Ok(stream) => {
                let core = core.clone();
                let driver = driver.clone();
                // dockerd calls for many containers at once; the CNM core
                // serializes what must be serialized.
                if let Err(e) = thread::Builder::new()
                    .name("docker-conn".into())
                    .spawn(move || connection(stream, &core, &driver))
                {
                    tracing::error!(error = %e, "cannot serve a connection");
                }
            }
            Err(e) => tracing::warn!(error = %e, "accept"),
        }
    }
}

fn connection(stream: UnixStream, core: &Core, driver: &str) {
    let Ok(mut writer) = stream.try_clone() else {
        return;
    };
    let mut reader = BufReader::new(stream);
    loop {
        let req = match http::read_request(&mut reader) {
            Ok(r) => r,
            Err(http::HttpError::Closed) => return,
            Err(e) => {
                let body = serde_json::json!({ "Err": e.to_string() }).to_string();
                let _ = http::write_response(&mut writer, 400, body.as_bytes());
                return;
            }
        };
        let reply = if req.method != "POST" {
            api::Reply {
                status: 404,
                body: serde_json::json!({ "Err": format!("{} {}: the plugin API takes POST", req.method, req.path) }),
            }
        } else {
            api::handle(core, driver, &req.path, &req.body)
        };
        tracing::debug!(path = %req.path, status = reply.status, "docker request");
        if http::write_response(&mut writer, reply.status, reply.body.to_string().as_bytes())
            .is_err()
        {
            return;
        }
    }
}
