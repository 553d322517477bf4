//! `log` import: guest lines go to tracing (stderr), tagged with the call.

use super::HostState;
use crate::bindings::netshim::plugin::log::{Host, Level};

/// Long lines are cut so a guest cannot flood the host's log.
const MAX_LINE: usize = 4096;

impl Host for HostState {
    fn log(&mut self, level: Level, message: String) -> wasmtime::Result<()> {
        let mut msg = message;
        if msg.len() > MAX_LINE {
            let mut cut = MAX_LINE;
            while !msg.is_char_boundary(cut) {
                cut -= 1;
            }
            msg.truncate(cut);
        }
        let driver = self.grant.driver.as_str();
        let call = self.call.as_str();
        match level {
            Level::Trace => tracing::trace!(target: "guest", driver, call, "{msg}"),
            Level::Debug => tracing::debug!(target: "guest", driver, call, "{msg}"),
            Level::Info => tracing::info!(target: "guest", driver, call, "{msg}"),
            Level::Warn => tracing::warn!(target: "guest", driver, call, "{msg}"),
            Level::Error => tracing::error!(target: "guest", driver, call, "{msg}"),
        }
        Ok(())
    }
}
