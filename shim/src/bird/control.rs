//! Requests over BIRD's control socket (through the `birdc` crate), each
//! bounded in time: a BIRD that stops answering cannot hold the node
//! agent. The request runs on its own thread; when the deadline passes
//! the thread is left to end when BIRD closes the socket.

use std::path::Path;
use std::sync::mpsc;
use std::time::Duration;

use birdc::{Client, Message, ShowProtocolDetailsMessage};

use super::BirdError;

/// How long one request may take.
pub const DEADLINE: Duration = Duration::from_secs(2);

fn bounded<T: Send + 'static>(
    ctl: &Path,
    f: impl FnOnce(&mut birdc::SyncConnection) -> Result<T, birdc::Error> + Send + 'static,
) -> Result<T, BirdError> {
    let path = ctl.display().to_string();
    let client = Client::for_unix_socket(ctl);
    let (tx, rx) = mpsc::channel();
    std::thread::Builder::new()
        .name("netshim-birdc".into())
        .spawn(move || {
            let r = client.connect_sync().and_then(|mut c| f(&mut c));
            let _ = tx.send(r);
        })
        .map_err(|e| BirdError::Control {
            path: path.clone(),
            message: e.to_string(),
        })?;
    match rx.recv_timeout(DEADLINE) {
        Ok(Ok(v)) => Ok(v),
        Ok(Err(e)) => Err(BirdError::Control {
            path,
            message: e.to_string(),
        }),
        Err(_) => Err(BirdError::Control {
            path,
            message: format!("no answer within {} s", DEADLINE.as_secs()),
        }),
    }
}

/// Whether a reply line is one of BIRD's errors (8xxx run-time, 9xxx parse).
fn is_error(m: &Message) -> bool {
    m.code() >= 8000
}

fn text(m: &Message) -> String {
    format!("{m:?}")
}

/// `configure "<conf>"`: BIRD reads the file again and applies the
/// difference (sessions of unchanged peers stay up).
pub fn configure(ctl: &Path, conf: &Path) -> Result<(), BirdError> {
    let conf = super::config::quoted(conf)?;
    let replies = bounded(ctl, move |c| c.send_request(&format!("configure {conf}")))?;
    match replies.iter().find(|m| is_error(m)) {
        Some(m) => Err(BirdError::Refused(text(m))),
        None => Ok(()),
    }
}

/// `show protocols all`: every protocol with its details.
pub fn protocols(ctl: &Path) -> Result<Vec<ShowProtocolDetailsMessage>, BirdError> {
    bounded(ctl, |c| c.show_protocols_details(None))
}

/// The version BIRD greets with (`BIRD 2.0.12`), from `show status`.
pub fn version(ctl: &Path) -> Result<String, BirdError> {
    let replies = bounded(ctl, |c| c.send_request("show status"))?;
    Ok(replies
        .iter()
        .find_map(|m| match m {
            Message::BirdVersion(v) => Some(v.trim().to_string()),
            _ => None,
        })
        .unwrap_or_default())
}
