//! `log` import: guest lines go to tracing (stderr), tagged with the call.

use super::HostState;
use crate::bindings::netshim::plugin::log::{Host, Level};

impl Host for HostState {
    fn log(&mut self, level: Level, message: String) -> wasmtime::Result<()> {
        // A guest cannot flood the host's log: lines are cut, and past the
        // quota only counted (one line says how many were dropped).
        self.log_lines += 1;
        if self.log_lines > crate::guard::limits::LOG_LINES_PER_CALL {
            return Ok(());
        }
        let msg = crate::guard::limits::truncate(&message, crate::guard::limits::LOG_LINE_BYTES);
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
