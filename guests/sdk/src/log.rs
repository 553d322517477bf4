//! Lines in the host's log, tagged by the host with the driver and the
//! call. A driver has no stdout or stderr: this is where its words go.
//!
//! On a native target (unit tests) there is no host, and the line is
//! dropped, so code that logs can be tested without a component.

use crate::Error;

#[cfg(target_family = "wasm")]
fn line(level: crate::host::log::Level, msg: &str) {
    crate::host::log::log(level, msg);
}

#[cfg(not(target_family = "wasm"))]
fn line(_level: crate::host::log::Level, _msg: &str) {}

pub fn debug(msg: &str) {
    line(crate::host::log::Level::Debug, msg);
}

pub fn info(msg: &str) {
    line(crate::host::log::Level::Info, msg);
}

pub fn warn(msg: &str) {
    line(crate::host::log::Level::Warn, msg);
}

pub fn error(msg: &str) {
    line(crate::host::log::Level::Error, msg);
}

/// "kind: message", for an error folded into another error's message (the
/// kind would otherwise be lost).
pub fn show_error(e: &Error) -> String {
    let (kind, m) = match e {
        Error::Exists(m) => ("exists", m),
        Error::NotFound(m) => ("not-found", m),
        Error::Denied(m) => ("denied", m),
        Error::Invalid(m) => ("invalid", m),
        Error::Unsupported(m) => ("unsupported", m),
        Error::Conflict(m) => ("conflict", m),
        Error::Failed(m) => ("failed", m),
    };
    format!("{kind}: {m}")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn lines_are_dropped_natively_and_errors_keep_their_kind() {
        debug("d");
        info("i");
        warn("w");
        error("e");
        assert_eq!(show_error(&Error::NotFound("x".into())), "not-found: x");
        assert_eq!(show_error(&Error::Conflict("y".into())), "conflict: y");
    }
}
