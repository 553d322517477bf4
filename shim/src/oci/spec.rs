//! The parts of the OCI runtime spec a network hook reads: the state on
//! stdin, and from `<bundle>/config.json` the annotations and the network
//! namespace, in the `oci-spec` crate's types (as youki reads them). Both
//! are read bounded and parsed from the bytes, so that an error names the
//! input, the field and the position.

use std::collections::{BTreeMap, HashMap};
use std::io::Read;
use std::net::IpAddr;
use std::path::{Path, PathBuf};

use oci_spec::runtime::{ContainerState, LinuxNamespace, LinuxNamespaceType};
use serde::de::{DeserializeOwned, IgnoredAny};
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

/// Read at most this much state JSON: a hook's stdin is small.
pub const MAX_STATE: usize = 1 << 20;
/// Read at most this much config.json: big seccomp profiles and annotations
/// fit many times over, and a hook's memory stays bounded.
pub const MAX_CONFIG: usize = 16 << 20;

const STDIN: &str = "the OCI state on stdin";

/// All of `input` up to `limit` bytes; more is an error that names the limit
/// (a JSON cut short at the limit would only say "EOF while parsing").
pub(super) fn read_bounded(
    input: impl Read,
    limit: usize,
    what: &str,
) -> Result<Vec<u8>, OciError> {
    let mut bytes = Vec::new();
    input
        .take(limit as u64 + 1)
        .read_to_end(&mut bytes)
        .map_err(|e| OciError::Input(format!("reading {what}: {e}")))?;
    if bytes.len() > limit {
        return Err(OciError::Input(format!(
            "{what} is larger than netshim's limit of {} MiB ({limit} bytes)",
            limit >> 20
        )));
    }
    Ok(bytes)
}

/// A file read as by [`read_bounded`].
pub(super) fn read_file(path: &Path, limit: usize) -> Result<Vec<u8>, OciError> {
    let file = std::fs::File::open(path)
        .map_err(|e| OciError::Input(format!("cannot read {}: {e}", path.display())))?;
    read_bounded(file, limit, &path.display().to_string())
}

/// Deserialize JSON bytes; an error names `what`, the field's path (e.g.
/// `linux.namespaces[2].type`) and serde_json's line and column.
pub(super) fn from_json<T: DeserializeOwned>(bytes: &[u8], what: &str) -> Result<T, OciError> {
    if bytes.trim_ascii().is_empty() {
        return Err(OciError::Input(format!("{what} is empty")));
    }
    let fail = |path: String, e: serde_json::Error| {
        let path = if path.is_empty() {
            path
        } else {
            format!("{path}: ")
        };
        match e.classify() {
            serde_json::error::Category::Data => OciError::Input(format!("{what}: {path}{e}")),
            _ => OciError::Input(format!("{what} is not valid JSON: {path}{e}")),
        }
    };
    let mut de = serde_json::Deserializer::from_slice(bytes);
    let value = serde_path_to_error::deserialize(&mut de)
        .map_err(|e| fail(field_path(e.path()), e.into_inner()))?;
    // Nothing but whitespace after the value, as serde_json::from_slice.
    de.end().map_err(|e| fail(String::new(), e))?;
    Ok(value)
}

/// `linux.namespaces[2].type`: the known part of the path (a key that did
/// not parse is unknown), keys quoted when they hold spaces or controls.
fn field_path(path: &serde_path_to_error::Path) -> String {
    use serde_path_to_error::Segment;
    let mut out = String::new();
    for segment in path.iter() {
        match segment {
            Segment::Seq { index } => out.push_str(&format!("[{index}]")),
            Segment::Map { key } | Segment::Enum { variant: key } => {
                if !out.is_empty() {
                    out.push('.');
                }
                if key.is_empty() || key.chars().any(|c| c.is_control() || c.is_whitespace()) {
                    out.push_str(&format!("{key:?}"));
                } else {
                    out.push_str(key);
                }
            }
            Segment::Unknown => break,
        }
    }
    out
}

/// The state a runtime gives a hook on stdin.
#[derive(Debug)]
pub struct State {
    /// As the runtime sent it.
    pub oci: oci_spec::runtime::State,
    /// The status, if the state has one: oci-spec reads a missing status as
    /// `stopped`, which must not make a hook without a stage detach.
    pub status: Option<ContainerState>,
}

/// Whether the state names a status at all.
#[derive(Deserialize)]
struct StatusGiven {
    #[serde(default)]
    status: Option<IgnoredAny>,
}

impl State {
    pub fn id(&self) -> &str {
        self.oci.id()
    }

    /// runc and youki run hooks in the bundle; crun passes it in the state.
    pub fn bundle(&self) -> PathBuf {
        match self.oci.bundle() {
            b if b.as_os_str().is_empty() => PathBuf::from("."),
            b => b.clone(),
        }
    }

    fn annotations(&self) -> impl Iterator<Item = (&String, &String)> {
        self.oci.annotations().iter().flatten()
    }
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

/// The state JSON a runtime writes on a hook's stdin.
pub fn parse_state(bytes: &[u8]) -> Result<State, OciError> {
    let oci: oci_spec::runtime::State = from_json(bytes, STDIN)?;
    let given: StatusGiven = from_json(bytes, STDIN)?;
    if oci.id().is_empty() {
        return Err(OciError::Input(format!("{STDIN} has no container id")));
    }
    Ok(State {
        status: given.status.map(|_| *oci.status()),
        oci,
    })
}

/// Read the state from stdin, at most [`MAX_STATE`] bytes of it.
pub fn read_state(input: impl Read) -> Result<State, OciError> {
    parse_state(&read_bounded(input, MAX_STATE, STDIN)?)
}

/// The fields of config.json a network hook reads, in oci-spec's types.
/// Not the whole `oci_spec::runtime::Spec`: it rejects values that runtimes
/// accept in fields netshim never reads (runc runs a container whose
/// capabilities name one it does not know, oci-spec refuses the config), and
/// the hook must not fail a container the runtime is starting over those.
#[derive(Debug, Default, Deserialize)]
struct Config {
    #[serde(default)]
    annotations: Option<HashMap<String, String>>,
    #[serde(default)]
    linux: Option<Linux>,
}

#[derive(Debug, Default, Deserialize)]
struct Linux {
    #[serde(default)]
    namespaces: Option<Vec<LinuxNamespace>>,
}

pub struct Bundle {
    config: Config,
}

impl Bundle {
    /// `<dir>/config.json`, at most [`MAX_CONFIG`] bytes of it.
    pub fn load(dir: &Path) -> Result<Bundle, OciError> {
        let path = dir.join("config.json");
        let bytes = read_file(&path, MAX_CONFIG)?;
        Ok(Bundle {
            config: from_json(&bytes, &path.display().to_string())?,
        })
    }

    /// Annotations of config.json, overridden by those in the state.
    pub fn annotations(&self, state: &State) -> BTreeMap<String, String> {
        let mut a: BTreeMap<String, String> = self
            .config
            .annotations
            .iter()
            .flatten()
            .map(|(k, v)| (k.clone(), v.clone()))
            .collect();
        a.extend(state.annotations().map(|(k, v)| (k.clone(), v.clone())));
        a
    }

    fn network_namespace(&self) -> Option<&LinuxNamespace> {
        self.config
            .linux
            .as_ref()?
            .namespaces
            .as_ref()?
            .iter()
            .find(|n| n.typ() == LinuxNamespaceType::Network)
    }

    /// No network namespace of its own: the container uses the runtime's.
    pub fn shares_host_network(&self) -> bool {
        self.network_namespace().is_none()
    }

    /// The container's network namespace: a path the container joins, or
    /// the new one of its init process. None: it shares the runtime's.
    pub fn netns(&self, state: &State) -> Result<PathBuf, OciError> {
        match self.network_namespace() {
            None => Err(OciError::Input(
                "the container has no network namespace of its own (linux.namespaces has no \"network\" entry); netshim will not configure the runtime's namespace".into(),
            )),
            Some(ns) => match (ns.path(), *state.oci.pid()) {
                (Some(p), _) => Ok(p.clone()),
                (None, Some(pid)) if pid > 0 => Ok(PathBuf::from(format!("/proc/{pid}/ns/net"))),
                (None, _) => Err(OciError::Input("the OCI state has no pid, so the container's network namespace cannot be found".into())),
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

    fn bundle(config: &str) -> Bundle {
        Bundle {
            config: from_json(config.as_bytes(), "config.json").unwrap(),
        }
    }

    /// A bundle directory of its own, removed on drop.
    struct Dir(PathBuf);
    impl Dir {
        fn new(tag: &str, config: &[u8]) -> Dir {
            let d = std::env::temp_dir().join(format!("netshim-spec-{tag}-{}", std::process::id()));
            std::fs::create_dir_all(&d).unwrap();
            std::fs::write(d.join("config.json"), config).unwrap();
            Dir(d)
        }
    }
    impl Drop for Dir {
        fn drop(&mut self) {
            let _ = std::fs::remove_dir_all(&self.0);
        }
    }

    #[test]
    fn state_and_netns() {
        let s = parse_state(
            br#"{"ociVersion":"1.0.2","id":"c1","status":"creating","pid":42,"bundle":"/b"}"#,
        )
        .unwrap();
        let b = bundle(r#"{"linux":{"namespaces":[{"type":"network"}]}}"#);
        assert_eq!(b.netns(&s).unwrap(), PathBuf::from("/proc/42/ns/net"));
        let b = bundle(r#"{"linux":{"namespaces":[{"type":"network","path":"/run/netns/x"}]}}"#);
        assert_eq!(b.netns(&s).unwrap(), PathBuf::from("/run/netns/x"));
        let b = bundle(r#"{"linux":{"namespaces":[{"type":"pid"}]}}"#);
        assert!(b.shares_host_network());
        assert!(b
            .netns(&s)
            .unwrap_err()
            .to_string()
            .contains("no network namespace"));
        assert!(bundle("{}").shares_host_network());
        assert!(parse_state(b"{").is_err());
    }

    #[test]
    fn minimal_runc_state() {
        // What runc 1.1 writes on a createRuntime hook's stdin.
        let s = parse_state(
            br#"{"ociVersion":"1.0.2-dev","id":"web1","status":"creating","pid":31337,"bundle":"/run/bundles/web1"}"#,
        )
        .unwrap();
        assert_eq!(s.id(), "web1");
        assert_eq!(s.status, Some(ContainerState::Creating));
        assert_eq!(*s.oci.pid(), Some(31337));
        assert_eq!(s.bundle(), PathBuf::from("/run/bundles/web1"));
        // The hand-made states of the bench and the tests: pid 0, no pid.
        let s = parse_state(
            br#"{"ociVersion":"1.0.2","id":"b0","status":"stopped","pid":0,"bundle":"/b"}"#,
        )
        .unwrap();
        assert_eq!(s.status, Some(ContainerState::Stopped));
        let b = bundle(r#"{"linux":{"namespaces":[{"type":"network"}]}}"#);
        assert!(b.netns(&s).unwrap_err().to_string().contains("no pid"));
        let s = parse_state(br#"{"ociVersion":"1.0.2","id":"t","status":"created","bundle":"/b"}"#)
            .unwrap();
        assert_eq!(*s.oci.pid(), None);
        // No bundle: the hook runs in it (runc, youki).
        let s = parse_state(br#"{"id":"t","status":"creating"}"#).unwrap();
        assert_eq!(s.bundle(), PathBuf::from("."));
    }

    #[test]
    fn state_with_unknown_fields_and_annotations() {
        let s = parse_state(
            br#"{"ociVersion":"1.2.0","id":"c","status":"created","pid":7,"bundle":"/b",
                "rootless":false,"created":"2024-01-01T00:00:00Z","owner":"",
                "future":{"nested":[1,2,3]},
                "annotations":{"netshim.networks":"front","io.k8s.x":"y"}}"#,
        )
        .unwrap();
        let b = bundle(
            r#"{"annotations":{"netshim.networks":"back","netshim.ifname":"net0"},
                "linux":{"namespaces":[{"type":"network"}]}}"#,
        );
        let a = b.annotations(&s);
        assert_eq!(a[NETWORKS], "front", "the state's annotations win");
        assert_eq!(a[IFNAME], "net0", "config.json's stay");
        assert_eq!(a["io.k8s.x"], "y");
    }

    #[test]
    fn status_decides_the_stage_only_when_given() {
        use super::super::Stage;
        let s = parse_state(br#"{"id":"c","status":"stopped"}"#).unwrap();
        assert_eq!(Stage::parse(None, s.status).unwrap(), Stage::Poststop);
        let s = parse_state(br#"{"id":"c","status":"creating"}"#).unwrap();
        assert_eq!(Stage::parse(None, s.status).unwrap(), Stage::Create);
        // oci-spec reads a missing status as "stopped": that must not detach.
        let s = parse_state(br#"{"id":"c"}"#).unwrap();
        assert_eq!(s.status, None);
        let e = Stage::parse(None, s.status).unwrap_err().to_string();
        assert!(e.contains("no status"), "{e}");
        assert_eq!(
            Stage::parse(Some("createRuntime"), s.status).unwrap(),
            Stage::Create
        );
        let s = parse_state(br#"{"id":"c","status":"running"}"#).unwrap();
        let e = Stage::parse(None, s.status).unwrap_err().to_string();
        assert!(e.contains("\"running\" does not tell"), "{e}");
        // Not an OCI status: named, with the ones it may be.
        let e = parse_state(br#"{"id":"c","status":"paused"}"#)
            .unwrap_err()
            .to_string();
        assert!(
            e.starts_with("the OCI state on stdin: status: unknown variant"),
            "{e}"
        );
        assert!(e.contains("creating"), "{e}");
        let e = parse_state(br#"{"status":"creating"}"#)
            .unwrap_err()
            .to_string();
        assert!(e.contains("no container id"), "{e}");
    }

    #[test]
    fn config_from_a_bundle_with_and_without_a_netns_path() {
        let s = parse_state(br#"{"id":"c","status":"creating","pid":99}"#).unwrap();
        // What `runc spec` writes, trimmed, plus netshim's annotation.
        let d = Dir::new(
            "plain",
            br#"{
  "ociVersion": "1.0.2-dev",
  "process": {"terminal": true, "user": {"uid": 0, "gid": 0}, "args": ["sh"],
    "capabilities": {"bounding": ["CAP_AUDIT_WRITE", "CAP_KILL", "CAP_NET_BIND_SERVICE"]},
    "rlimits": [{"type": "RLIMIT_NOFILE", "hard": 1024, "soft": 1024}]},
  "root": {"path": "rootfs", "readonly": true},
  "annotations": {"netshim.networks": "web"},
  "linux": {
    "namespaces": [{"type": "pid"}, {"type": "network"}, {"type": "ipc"}, {"type": "uts"}, {"type": "mount"}],
    "maskedPaths": ["/proc/kcore"]
  }
}"#,
        );
        let b = Bundle::load(&d.0).unwrap();
        assert_eq!(b.netns(&s).unwrap(), PathBuf::from("/proc/99/ns/net"));
        assert_eq!(request(&b.annotations(&s)).unwrap().networks, ["web"]);
        // A namespace to join, and fields netshim does not read that the
        // whole oci_spec Spec would refuse (runc ignores an unknown
        // capability) or does not know yet.
        let d = Dir::new(
            "path",
            br#"{"process": {"capabilities": {"bounding": ["CAP_UNKNOWN"]}},
                "linux": {"namespaces": [{"type": "network", "path": "/run/netns/pod"}],
                          "someFutureField": {"x": 1}}}"#,
        );
        let b = Bundle::load(&d.0).unwrap();
        assert_eq!(b.netns(&s).unwrap(), PathBuf::from("/run/netns/pod"));
        assert!(!b.shares_host_network());
    }

    #[test]
    fn bad_json_names_the_file_the_field_and_the_position() {
        let d = Dir::new("syntax", b"{\n  \"linux\": {\n    \"namespaces\": [\n      {\"type\": \"network\", \"path\": }\n");
        let e = Bundle::load(&d.0).err().unwrap().to_string();
        let file = d.0.join("config.json").display().to_string();
        assert!(e.starts_with(&format!("{file} is not valid JSON: ")), "{e}");
        assert!(e.contains("linux.namespaces[0].path"), "{e}");
        assert!(e.contains("line 4 column"), "{e}");

        let d = Dir::new(
            "type",
            br#"{"linux": {"namespaces": [{"type": "pid"}, {"type": "ipc"}, {"type": "net"}]}}"#,
        );
        let e = Bundle::load(&d.0).err().unwrap().to_string();
        assert!(
            e.starts_with(&format!(
                "{file}: linux.namespaces[2].type: unknown variant `net`",
                file = d.0.join("config.json").display()
            )),
            "{e}"
        );
        assert!(e.contains("line 1 column"), "{e}");

        let d = Dir::new("ann", br#"{"annotations": {"netshim.networks": ["a"]}}"#);
        let e = Bundle::load(&d.0).err().unwrap().to_string();
        assert!(
            e.contains(": annotations.netshim.networks: invalid type: sequence"),
            "{e}"
        );

        let d = Dir::new("trailing", b"{} x");
        let e = Bundle::load(&d.0).err().unwrap().to_string();
        assert!(e.contains("trailing characters at line 1 column 4"), "{e}");

        let e = Bundle::load(Path::new("/nonexistent-netshim-bundle"))
            .err()
            .unwrap()
            .to_string();
        assert!(
            e.starts_with("cannot read /nonexistent-netshim-bundle/config.json: "),
            "{e}"
        );

        let e = parse_state(br#"{"id":"c","status":"creating","pid":"42"}"#)
            .unwrap_err()
            .to_string();
        assert!(
            e.starts_with("the OCI state on stdin: pid: invalid type: string"),
            "{e}"
        );
        let e = parse_state(b"").unwrap_err().to_string();
        assert_eq!(e, "the OCI state on stdin is empty");
        let e = parse_state(br#"{"id":"c1""#).unwrap_err().to_string();
        assert_eq!(
            e,
            "the OCI state on stdin is not valid JSON: EOF while parsing an object at line 1 column 10"
        );
        let e = parse_state(b"{\"annotations\":{\"a\\nb\":1}}")
            .unwrap_err()
            .to_string();
        assert!(
            e.starts_with("the OCI state on stdin: annotations.\"a\\nb\": invalid type"),
            "{e}"
        );
    }

    #[test]
    fn oversize_input_names_the_limit() {
        let big = vec![b' '; MAX_STATE + 1];
        let e = read_state(&big[..]).unwrap_err().to_string();
        assert_eq!(
            e,
            "the OCI state on stdin is larger than netshim's limit of 1 MiB (1048576 bytes)"
        );
        // Exactly at the limit is read (and then parsed).
        let mut ok = br#"{"id":"c","status":"creating"}"#.to_vec();
        ok.resize(MAX_STATE, b' ');
        assert_eq!(read_state(&ok[..]).unwrap().id(), "c");

        let d = Dir::new("big", b"");
        let f = std::fs::File::create(d.0.join("config.json")).unwrap();
        f.set_len(MAX_CONFIG as u64 + 1).unwrap();
        let e = Bundle::load(&d.0).err().unwrap().to_string();
        assert!(
            e.ends_with("config.json is larger than netshim's limit of 16 MiB (16777216 bytes)"),
            "{e}"
        );
    }

    #[test]
    fn hostile_state_gives_an_error_not_a_panic() {
        let deep = "[".repeat(100_000);
        let inputs: Vec<&[u8]> = vec![
            b"\xff\xfe\x00",
            b"null",
            b"[]",
            b"\"x\"",
            b"42",
            b"{\"id\":\"\xff\"}",
            br#"{"id":"c","pid":99999999999999}"#,
            br#"{"id":"c","pid":-1,"status":"creating"}"#,
            br#"{"id":"c","bundle":7}"#,
            br#"{"id":"c","annotations":{"a":1}}"#,
            br#"{"id":"c","id":"d"}"#,
            deep.as_bytes(),
        ];
        for input in inputs {
            match parse_state(input) {
                Ok(s) => assert!(!s.id().is_empty()),
                Err(e) => assert!(e.to_string().starts_with("the OCI state on stdin"), "{e}"),
            }
        }
        let e = parse_state(br#"{"id":"c","pid":99999999999999}"#)
            .unwrap_err()
            .to_string();
        assert!(e.contains("pid: invalid value"), "{e}");
        let s = parse_state(br#"{"id":"c","pid":-1,"status":"creating"}"#).unwrap();
        let b = bundle(r#"{"linux":{"namespaces":[{"type":"network"}]}}"#);
        assert!(b.netns(&s).is_err(), "a negative pid is no namespace");
    }
}
