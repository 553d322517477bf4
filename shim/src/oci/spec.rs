//! The parts of the OCI runtime spec a network hook reads: the state on
//! stdin, and from `<bundle>/config.json` the annotations and the network
//! namespace.

use std::collections::BTreeMap;
use std::net::IpAddr;
use std::path::{Path, PathBuf};

use serde::Deserialize;

use super::OciError;
use crate::cnm::PortMapping;

/// Annotations that ask for networks, in `config.json`.
pub const NETWORKS: &str = "netshim.networks";
pub const IP_PREFIX: &str = "netshim.ip.";
pub const PORTS: &str = "netshim.ports";
pub const IFNAME: &str = "netshim.ifname";
/// The network a container gets when it names none.
pub const DEFAULT_NETWORK: &str = "netshim";

#[derive(Debug, Deserialize)]
pub struct State {
    pub id: String,
    #[serde(default)]
    pub status: String,
    #[serde(default)]
    pub pid: Option<i64>,
    #[serde(default)]
    pub bundle: Option<PathBuf>,
    #[serde(default)]
    pub annotations: BTreeMap<String, String>,
}

#[derive(Debug, Default, Deserialize)]
struct Config {
    #[serde(default)]
    annotations: BTreeMap<String, String>,
    #[serde(default)]
    linux: Option<Linux>,
}

#[derive(Debug, Default, Deserialize)]
struct Linux {
    #[serde(default)]
    namespaces: Vec<Namespace>,
}

#[derive(Debug, Deserialize)]
struct Namespace {
    #[serde(rename = "type")]
    kind: String,
    #[serde(default)]
    path: Option<PathBuf>,
}

/// What a container asks of netshim.
#[derive(Debug, Clone, PartialEq)]
pub struct Request {
    /// Networks in order: the first gets `eth0` (or `netshim.ifname`).
    pub networks: Vec<String>,
    pub ips: BTreeMap<String, IpAddr>,
    /// Published ports, on the first network.
    pub ports: Vec<PortMapping>,
    pub ifname: String,
    /// True when no network was named and the default is used.
    pub default: bool,
}

pub fn parse_state(text: &str) -> Result<State, OciError> {
    let state: State = serde_json::from_str(text)
        .map_err(|e| OciError::Input(format!("the OCI state on stdin is not valid JSON: {e}")))?;
    if state.id.is_empty() {
        return Err(OciError::Input(
            "the OCI state on stdin has no container id".into(),
        ));
    }
    Ok(state)
}

pub struct Bundle {
    config: Config,
}

impl Bundle {
    pub fn load(dir: &Path) -> Result<Bundle, OciError> {
        let path = dir.join("config.json");
        let text = std::fs::read_to_string(&path)
            .map_err(|e| OciError::Input(format!("cannot read {}: {e}", path.display())))?;
        let config = serde_json::from_str(&text)
            .map_err(|e| OciError::Input(format!("{} is not valid JSON: {e}", path.display())))?;
        Ok(Bundle { config })
    }

    /// Annotations of config.json, overridden by those in the state.
    pub fn annotations(&self, state: &State) -> BTreeMap<String, String> {
        let mut a = self.config.annotations.clone();
        a.extend(state.annotations.clone());
        a
    }

    /// No network namespace of its own: the container uses the runtime's.
    pub fn shares_host_network(&self) -> bool {
        !self
            .config
            .linux
            .as_ref()
            .is_some_and(|l| l.namespaces.iter().any(|n| n.kind == "network"))
    }

    /// The container's network namespace: a path the container joins, or
    /// the new one of its init process. None: it shares the runtime's.
    pub fn netns(&self, state: &State) -> Result<PathBuf, OciError> {
        let ns = self
            .config
            .linux
            .as_ref()
            .and_then(|l| l.namespaces.iter().find(|n| n.kind == "network"));
        match ns {
            None => Err(OciError::Input(
                "the container has no network namespace of its own (linux.namespaces has no \"network\" entry); netshim will not configure the runtime's namespace".into(),
            )),
            Some(Namespace { path: Some(p), .. }) => Ok(p.clone()),
            Some(_) => match state.pid {
                Some(pid) if pid > 0 => Ok(PathBuf::from(format!("/proc/{pid}/ns/net"))),
                _ => Err(OciError::Input("the OCI state has no pid, so the container's network namespace cannot be found".into())),
            },
        }
    }
}

/// Read the network request from annotations.
pub fn request(annotations: &BTreeMap<String, String>) -> Result<Request, OciError> {
    let named: Vec<String> = annotations
        .get(NETWORKS)
        .map(|v| {
            v.split(',')
                .map(str::trim)
                .filter(|s| !s.is_empty())
                .map(String::from)
                .collect()
        })
        .unwrap_or_default();
    let default = named.is_empty();
    let networks = if default {
        vec![DEFAULT_NETWORK.to_string()]
    } else {
        named
    };
    let mut ips = BTreeMap::new();
    for (k, v) in annotations {
        if let Some(net) = k.strip_prefix(IP_PREFIX) {
            let ip: IpAddr = v.trim().parse().map_err(|_| {
                OciError::Input(format!("annotation {k}: {v:?} is not an IP address"))
            })?;
            if !networks.iter().any(|n| n == net) {
                return Err(OciError::Input(format!(
                    "annotation {k} names network {net:?}, which is not in {NETWORKS}"
                )));
            }
            ips.insert(net.to_string(), ip);
        }
    }
    let ports = match annotations.get(PORTS) {
        None => Vec::new(),
        Some(v) => v
            .split(',')
            .map(str::trim)
            .filter(|s| !s.is_empty())
            .map(|p| {
                p.parse::<PortMapping>()
                    .map_err(|e| OciError::Input(format!("annotation {PORTS}: {e}")))
            })
            .collect::<Result<_, _>>()?,
    };
    let ifname = annotations
        .get(IFNAME)
        .cloned()
        .unwrap_or_else(|| "eth0".into());
    Ok(Request {
        networks,
        ips,
        ports,
        ifname,
        default,
    })
}

/// Interface names: the first network gets `ifname`, the others eth1, eth2…
/// (or `<prefix>1`… when ifname ends in a digit).
pub fn ifnames(first: &str, count: usize) -> Vec<String> {
    let prefix = first.trim_end_matches(|c: char| c.is_ascii_digit());
    let start: usize = first[prefix.len()..].parse().unwrap_or(0);
    (0..count)
        .map(|i| {
            if i == 0 {
                first.to_string()
            } else {
                format!("{prefix}{}", start + i)
            }
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ann(pairs: &[(&str, &str)]) -> BTreeMap<String, String> {
        pairs
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect()
    }

    #[test]
    fn default_network_when_none_is_named() {
        let r = request(&ann(&[])).unwrap();
        assert_eq!(r.networks, [DEFAULT_NETWORK]);
        assert!(r.default);
    }

    #[test]
    fn networks_ips_and_ports() {
        let r = request(&ann(&[
            ("netshim.networks", "front, back"),
            ("netshim.ip.back", "10.1.0.9"),
            ("netshim.ports", "8080:80,127.0.0.1:5353:53/udp"),
        ]))
        .unwrap();
        assert_eq!(r.networks, ["front", "back"]);
        assert_eq!(r.ips["back"].to_string(), "10.1.0.9");
        assert_eq!(r.ports.len(), 2);
        assert_eq!(r.ports[1].protocol, "udp");
        assert_eq!(r.ports[1].host_ip.unwrap().to_string(), "127.0.0.1");
        assert_eq!(ifnames("eth0", 3), ["eth0", "eth1", "eth2"]);
    }

    #[test]
    fn bad_annotations_name_the_problem() {
        let e = request(&ann(&[
            ("netshim.networks", "a"),
            ("netshim.ip.b", "10.0.0.1"),
        ]))
        .unwrap_err()
        .to_string();
        assert!(e.contains("netshim.ip.b"), "{e}");
        let e = request(&ann(&[("netshim.ports", "80")]))
            .unwrap_err()
            .to_string();
        assert!(e.contains("HOST_PORT:CONTAINER_PORT"), "{e}");
        let e = request(&ann(&[("netshim.ip.netshim", "nope")]))
            .unwrap_err()
            .to_string();
        assert!(e.contains("not an IP"), "{e}");
    }

    #[test]
    fn state_and_netns() {
        let s = parse_state(
            r#"{"ociVersion":"1.0.2","id":"c1","status":"creating","pid":42,"bundle":"/b"}"#,
        )
        .unwrap();
        let b = Bundle {
            config: serde_json::from_str(r#"{"linux":{"namespaces":[{"type":"network"}]}}"#)
                .unwrap(),
        };
        assert_eq!(b.netns(&s).unwrap(), PathBuf::from("/proc/42/ns/net"));
        let b = Bundle {
            config: serde_json::from_str(
                r#"{"linux":{"namespaces":[{"type":"network","path":"/run/netns/x"}]}}"#,
            )
            .unwrap(),
        };
        assert_eq!(b.netns(&s).unwrap(), PathBuf::from("/run/netns/x"));
        let b = Bundle {
            config: serde_json::from_str(r#"{"linux":{"namespaces":[{"type":"pid"}]}}"#).unwrap(),
        };
        assert!(b
            .netns(&s)
            .unwrap_err()
            .to_string()
            .contains("no network namespace"));
        assert!(parse_state("{").is_err());
    }
}
