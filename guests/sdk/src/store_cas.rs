//! Compare-and-swap on the driver's store. Calls run concurrently (two
//! `attach`es of one network, two `network create`s), each in its own
//! instance, so every read-modify-write of a key must be conditional on
//! the revision it read, and retried from a fresh read when another call
//! wrote first. The loop is bounded: a call has a deadline, and losing
//! that many races in a row means something is wrong.

use crate::host::store::{self, Condition};
use crate::Error;

/// Attempts before giving up.
pub const ATTEMPTS: usize = 16;

/// What [`update`] does with the key after looking at its value.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Write {
    /// Store this value (creating the key if it was absent).
    Put(Vec<u8>),
    /// Remove the key (nothing to do if it was absent).
    Delete,
    /// Leave the key as it is.
    Keep,
}

/// The result of one store write, with a lost race as `None` (read again
/// and retry) instead of an error.
pub fn won<T>(r: Result<T, Error>) -> Result<Option<T>, Error> {
    match r {
        Ok(v) => Ok(Some(v)),
        Err(Error::Conflict(_)) => Ok(None),
        Err(e) => Err(e),
    }
}

/// The error after [`ATTEMPTS`] lost races. `failed`, not `conflict`:
/// `conflict` tells the caller to retry at once, and this caller already
/// did, many times.
pub fn exhausted(what: &str) -> Error {
    Error::Failed(format!(
        "{what}: gave up after {ATTEMPTS} concurrent updates of the store; try again"
    ))
}

/// Run `attempt` until it returns `Some` (done) or an error, at most
/// [`ATTEMPTS`] times; `None` means it lost a race and starts over. For
/// updates that span several keys; [`update`] covers one key.
pub fn retry<T>(
    what: &str,
    mut attempt: impl FnMut() -> Result<Option<T>, Error>,
) -> Result<T, Error> {
    for _ in 0..ATTEMPTS {
        if let Some(v) = attempt()? {
            return Ok(v);
        }
    }
    Err(exhausted(what))
}

/// Read `key`, let `f` decide from its value (`None`: absent) what to
/// write and what to return, and write it only if nobody wrote the key in
/// between; otherwise read again and let `f` decide again. `f` may run
/// several times, so it must not have effects of its own. `what` names the
/// operation in the error after too many lost races.
pub fn update<T>(
    key: &str,
    what: &str,
    mut f: impl FnMut(Option<&[u8]>) -> Result<(Write, T), Error>,
) -> Result<T, Error> {
    retry(what, || {
        let current = store::get(key)?;
        let (write, out) = f(current.as_ref().map(|e| e.value.as_slice()))?;
        let cond = match &current {
            Some(e) => Condition::Revision(e.revision),
            None => Condition::Absent,
        };
        let written = match (write, cond) {
            (Write::Keep, _) | (Write::Delete, Condition::Absent) => Some(()),
            (Write::Put(v), cond) => won(store::put(key, &v, cond, None))?.map(|_| ()),
            (Write::Delete, cond) => won(store::delete(key, cond))?,
        };
        Ok(written.map(|()| out))
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn retry_is_bounded_and_stops_at_errors() {
        let mut n = 0;
        let e = retry::<()>("request-address", || {
            n += 1;
            Ok(None)
        })
        .unwrap_err();
        assert_eq!(n, ATTEMPTS);
        assert!(matches!(
            &e,
            Error::Failed(m) if m == "request-address: gave up after 16 concurrent updates of the store; try again"
        ));

        let mut n = 0;
        assert_eq!(
            retry("x", || {
                n += 1;
                Ok((n == 3).then_some(n))
            })
            .unwrap(),
            3
        );
        let mut n = 0;
        assert!(matches!(
            retry::<()>("x", || {
                n += 1;
                Err(Error::Denied("no".into()))
            }),
            Err(Error::Denied(_))
        ));
        assert_eq!(n, 1);
    }

    #[test]
    fn only_conflicts_are_lost_races() {
        assert_eq!(won(Ok::<_, Error>(4)).unwrap(), Some(4));
        assert_eq!(won::<u8>(Err(Error::Conflict("c".into()))).unwrap(), None);
        assert!(won::<u8>(Err(Error::Failed("f".into()))).is_err());
    }
}
