//! Which subtree of the cluster store a driver's networks see: the host's
//! decision, never the guest's. The bundled cluster drivers keep the
//! layout their originals use, so the tools and habits of flannel and
//! Calico users carry over; an operator moves a network's subtree with
//! the option `etcd-prefix` (flannel's `--etcd-prefix`).

use super::{CnmError, CnmResult};

/// The network option that moves the subtree.
pub const ETCD_PREFIX_OPTION: &str = "etcd-prefix";

const MAX_ROOT: usize = 256;

/// The subtree, without a trailing slash (keys are `<root>/<key>`).
pub fn root(driver: &str, options: &[(String, String)]) -> CnmResult<String> {
    let given = options
        .iter()
        .rev()
        .find(|(k, _)| k == ETCD_PREFIX_OPTION)
        .map(|(_, v)| v.trim_end_matches('/').to_string());
    let root = match given {
        Some(r) => r,
        None => match driver {
            "flannel" => "/coreos.com/network".to_string(),
            "calico" => "/calico".to_string(),
            other => format!("/netshim/cluster/{other}"),
        },
    };
    check(driver, &root)?;
    Ok(root)
}

fn check(driver: &str, root: &str) -> CnmResult<()> {
    let bad = |why: &str| {
        CnmError::Invalid(format!(
            "option {ETCD_PREFIX_OPTION}={root:?}: {why}; e.g. -o {ETCD_PREFIX_OPTION}=/coreos.com/network"
        ))
    };
    if !root.starts_with('/') || root.len() < 2 {
        return Err(bad(
            "it must be an absolute key prefix such as /coreos.com/network",
        ));
    }
    if root.len() > MAX_ROOT {
        return Err(bad("longer than 256 bytes"));
    }
    if !root
        .bytes()
        .all(|b| b.is_ascii_alphanumeric() || b"/._-".contains(&b))
    {
        return Err(bad(
            "only letters, digits, '/', '.', '_' and '-' may appear",
        ));
    }
    if root.contains("//") || root.split('/').any(|seg| seg == "." || seg == "..") {
        return Err(bad("empty, '.' or '..' segments"));
    }
    // netshim's own keys: a driver gets only its own corner of them.
    let own = format!("/netshim/cluster/{driver}");
    if (root == "/netshim" || root.starts_with("/netshim/")) && root != own {
        return Err(bad(&format!(
            "under /netshim only {own} belongs to driver {driver}"
        )));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn opt(v: &str) -> Vec<(String, String)> {
        vec![(ETCD_PREFIX_OPTION.to_string(), v.to_string())]
    }

    #[test]
    fn defaults_follow_the_originals() {
        assert_eq!(root("flannel", &[]).unwrap(), "/coreos.com/network");
        assert_eq!(root("calico", &[]).unwrap(), "/calico");
        assert_eq!(root("mine", &[]).unwrap(), "/netshim/cluster/mine");
        assert_eq!(
            root("flannel", &opt("/coreos.com/other/")).unwrap(),
            "/coreos.com/other"
        );
    }

    #[test]
    fn hostile_prefixes_are_refused() {
        for bad in [
            "relative",
            "/",
            "/a//b",
            "/a/../b",
            "/netshim",
            "/netshim/cluster/other",
            "/netshim/cnm",
            "/a b",
            "/a\0b",
        ] {
            let e = root("mine", &opt(bad)).unwrap_err().to_string();
            assert!(e.contains(ETCD_PREFIX_OPTION), "{bad}: {e}");
        }
        assert!(root("mine", &opt(&format!("/{}", "a".repeat(300)))).is_err());
        assert!(root("mine", &opt("/netshim/cluster/mine")).is_ok());
    }
}
