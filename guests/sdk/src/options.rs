//! A network's `-o key=value` options: the last value of a key wins, and
//! a key the driver does not know is an error that lists the ones it does
//! (Docker's own `com.docker.*` and netshim's `netshim.*` pass).

use crate::Error;

/// The value of `key`, the last one given.
pub fn get<'a>(options: &'a [(String, String)], key: &str) -> Option<&'a str> {
    options
        .iter()
        .rev()
        .find(|(k, _)| k == key)
        .map(|(_, v)| v.as_str())
}

/// Refuse any key outside `known` (and the Docker and netshim prefixes),
/// naming the driver and what it accepts.
pub fn check_known(
    options: &[(String, String)],
    known: &[&str],
    driver: &str,
) -> Result<(), Error> {
    for (k, _) in options {
        let ok = known.contains(&k.as_str())
            || k.starts_with("com.docker.")
            || k.starts_with("netshim.");
        if !ok {
            return Err(Error::Invalid(format!(
                "unknown option {k:?} for a {driver} network; valid options: {}",
                known.join(", ")
            )));
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn last_wins_and_unknown_keys_are_named() {
        let o = vec![
            ("a".to_string(), "1".to_string()),
            ("a".to_string(), "2".to_string()),
        ];
        assert_eq!(get(&o, "a"), Some("2"));
        assert_eq!(get(&o, "b"), None);
        check_known(&o, &["a"], "x").unwrap();
        let bad = vec![
            ("colour".to_string(), "blue".to_string()),
            ("com.docker.x".to_string(), String::new()),
        ];
        let e = format!("{:?}", check_known(&bad, &["a", "b"], "x").unwrap_err());
        assert!(
            e.contains("colour") && e.contains("a, b") && e.contains("x network"),
            "{e}"
        );
    }
}
