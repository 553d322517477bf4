//! `netshim daemon`: Docker's remote network and IPAM driver protocols on a
//! unix socket per driver guest, `<plugin-dir>/<prefix><driver>.sock`
//! (`netshim-bridge.sock` → `docker network create -d netshim-bridge
//! --ipam-driver netshim-bridge`). State is the same store the CLI uses, so
//! networks and endpoints survive a restart of the daemon: Docker never
//! replays them.

mod api;
mod server;

use std::path::PathBuf;

pub use api::METHODS;
pub use server::{connection, serve, Limits};

pub const DEFAULT_PLUGIN_DIR: &str = "/run/docker/plugins";

#[derive(Debug, thiserror::Error)]
pub enum DockerError {
    #[error("plugin socket {path}: {source}")]
    Socket {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("metrics address {addr}: {source}")]
    Metrics {
        addr: std::net::SocketAddr,
        source: std::io::Error,
    },
}
