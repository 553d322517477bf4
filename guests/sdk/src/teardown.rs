//! Best-effort undo. Teardown runs when part of what it removes may
//! already be gone (the sandbox took the veth along, an earlier attempt
//! got halfway): it keeps going past errors and reports all of them at
//! the end, in one `failed` naming each step that went wrong.

use std::fmt::Display;

use crate::log::show_error;
use crate::Error;

/// The errors of one teardown, e.g. `Teardown::new("delete-network n1")`.
#[derive(Debug)]
pub struct Teardown {
    what: String,
    errors: Vec<String>,
}

impl Teardown {
    pub fn new(what: impl Into<String>) -> Teardown {
        Teardown {
            what: what.into(),
            errors: Vec::new(),
        }
    }

    /// Record that `step` failed with `e`.
    pub fn failed(&mut self, step: impl Display, e: &Error) {
        self.errors.push(format!("{step}: {}", show_error(e)));
    }

    /// Record a failure already put in words.
    pub fn note(&mut self, message: impl Into<String>) {
        self.errors.push(message.into());
    }

    /// The value of `r`, or `None` with its error recorded under `step`.
    pub fn check<T>(&mut self, step: impl Display, r: Result<T, Error>) -> Option<T> {
        r.map_err(|e| self.failed(step, &e)).ok()
    }

    /// Like [`check`](Self::check), but `not-found` counts as done.
    pub fn gone_ok(&mut self, step: impl Display, r: Result<(), Error>) {
        match r {
            Ok(()) | Err(Error::NotFound(_)) => {}
            Err(e) => self.failed(step, &e),
        }
    }

    pub fn is_clean(&self) -> bool {
        self.errors.is_empty()
    }

    /// `Ok` if every step went well, else one `failed` listing them all.
    pub fn finish(self) -> Result<(), Error> {
        if self.errors.is_empty() {
            Ok(())
        } else {
            Err(Error::Failed(format!(
                "{}: {}",
                self.what,
                self.errors.join("; ")
            )))
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn collects_every_error_and_skips_not_found() {
        let mut t = Teardown::new("delete-endpoint e1");
        assert!(t.is_clean());
        t.gone_ok("deleting veth1", Err(Error::NotFound("gone".into())));
        assert_eq!(t.check("listing", Ok::<_, Error>(3)), Some(3));
        assert!(t.is_clean());
        assert_eq!(
            t.check::<()>("opening veth1", Err(Error::Denied("no".into()))),
            None
        );
        t.note("something else");
        let e = t.finish().unwrap_err();
        assert!(matches!(
            &e,
            Error::Failed(m) if m == "delete-endpoint e1: opening veth1: denied: no; something else"
        ));
        assert!(Teardown::new("x").finish().is_ok());
    }
}
