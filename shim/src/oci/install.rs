//! Putting netshim into a bundle's config.json (`netshim oci install-hook`)
//! and into a CRI-O/Podman hooks.d file (`netshim oci hooks-d`), so nobody
//! edits hook JSON by hand.

use std::path::{Path, PathBuf};

use serde_json::{json, Map, Value};

use super::spec::{from_json, read_file, IFNAME, IP_PREFIX, MAX_CONFIG, NETWORKS, PORTS};
use super::OciError;
use crate::cnm::PortMapping;

/// Runtimes may run hooks with an empty or foreign environment (youki clears
/// it); netshim needs none, but a PATH keeps the hook sane if it ever execs.
const HOOK_PATH: &str = "PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin";
pub const HOOK_TIMEOUT_SECONDS: u64 = 10;

#[derive(Debug, Default)]
pub struct Install {
    pub networks: Vec<String>,
    /// NETWORK=IP
    pub ips: Vec<(String, String)>,
    pub ports: Vec<PortMapping>,
    pub ifname: Option<String>,
}

/// The hook command: this binary, with the global options that must hold
/// inside the hook (state directory, cache, node), then `oci-hook STAGE`.
pub fn hook_entry(exe: &Path, global: &[String], stage: Option<&str>) -> Value {
    let mut args = vec!["netshim".to_string()];
    args.extend(global.iter().cloned());
    args.push("oci-hook".into());
    args.extend(stage.map(String::from));
    json!({ "path": exe, "args": args, "env": [HOOK_PATH], "timeout": HOOK_TIMEOUT_SECONDS })
}

fn is_ours(hook: &Value, exe: &Path) -> bool {
    hook.get("path").and_then(Value::as_str) == exe.to_str()
        && hook
            .get("args")
            .and_then(Value::as_array)
            .is_some_and(|a| a.iter().any(|x| x == "oci-hook"))
}

fn object<'a>(v: &'a mut Value, key: &str) -> Result<&'a mut Map<String, Value>, OciError> {
    let parent = v
        .as_object_mut()
        .ok_or_else(|| OciError::Input("config.json is not a JSON object".into()))?;
    parent
        .entry(key)
        .or_insert_with(|| json!({}))
        .as_object_mut()
        .ok_or_else(|| OciError::Input(format!("config.json: {key:?} is not an object")))
}

/// Add (or replace) netshim's createRuntime and poststop hooks and the
/// network annotations in `<bundle>/config.json`.
pub fn install(
    bundle: &Path,
    exe: &Path,
    global: &[String],
    want: &Install,
) -> Result<PathBuf, OciError> {
    let path = bundle.join("config.json");
    // A JSON value, not oci-spec's types: every field of config.json, known
    // or not, is written back as it was.
    let bytes = read_file(&path, MAX_CONFIG)?;
    let mut config: Value = from_json(&bytes, &path.display().to_string())?;

    let hooks = object(&mut config, "hooks")?;
    for (stage, arg) in [("createRuntime", "createRuntime"), ("poststop", "poststop")] {
        let list = hooks.entry(stage).or_insert_with(|| json!([]));
        let arr = list
            .as_array_mut()
            .ok_or_else(|| OciError::Input(format!("config.json: hooks.{stage} is not a list")))?;
        arr.retain(|h| !is_ours(h, exe));
        arr.push(hook_entry(exe, global, Some(arg)));
    }

    let annotations = object(&mut config, "annotations")?;
    annotations
        .retain(|k, _| !(k == NETWORKS || k == PORTS || k == IFNAME || k.starts_with(IP_PREFIX)));
    if !want.networks.is_empty() {
        annotations.insert(NETWORKS.into(), json!(want.networks.join(",")));
    }
    for (net, ip) in &want.ips {
        if !want.networks.is_empty() && !want.networks.contains(net) {
            return Err(OciError::Input(format!(
                "--ip {net}={ip}: network {net} is not among --network"
            )));
        }
        annotations.insert(format!("{IP_PREFIX}{net}"), json!(ip));
    }
    if !want.ports.is_empty() {
        let ports: Vec<String> = want
            .ports
            .iter()
            .map(|p| match p.host_ip {
                Some(ip) => format!("{ip}:{}:{}/{}", p.host_port, p.container_port, p.protocol),
                None => format!("{}:{}/{}", p.host_port, p.container_port, p.protocol),
            })
            .collect();
        annotations.insert(PORTS.into(), json!(ports.join(",")));
    }
    if let Some(ifname) = &want.ifname {
        annotations.insert(IFNAME.into(), json!(ifname));
    }

    // The container needs a network namespace of its own to be attached.
    let linux = object(&mut config, "linux")?;
    let namespaces = linux.entry("namespaces").or_insert_with(|| json!([]));
    if let Some(arr) = namespaces.as_array_mut() {
        if !arr
            .iter()
            .any(|n| n.get("type").and_then(Value::as_str) == Some("network"))
        {
            arr.push(json!({"type": "network"}));
        }
    }

    let out = serde_json::to_string_pretty(&config).map_err(|e| OciError::Input(e.to_string()))?;
    let tmp = bundle.join(".config.json.netshim");
    std::fs::write(&tmp, out)
        .and_then(|_| std::fs::rename(&tmp, &path))
        .map_err(|e| OciError::Input(format!("writing {}: {e}", path.display())))?;
    Ok(path)
}

/// An oci-hooks(5) file for CRI-O and Podman: one hook for both stages
/// (netshim tells them apart by the container's status), for containers
/// that carry the `netshim.networks` annotation, or for all with `always`.
pub fn hooks_d(exe: &Path, global: &[String], always: bool) -> Value {
    let when = if always {
        json!({"always": true})
    } else {
        json!({"annotations": {"^netshim\\.networks$": ".*"}})
    };
    json!({
        "version": "1.0.0",
        "hook": hook_entry(exe, global, None),
        "when": when,
        "stages": ["createRuntime", "poststop"],
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn install_is_idempotent_and_keeps_other_hooks() {
        let dir = std::env::temp_dir().join(format!("netshim-install-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        std::fs::write(
            dir.join("config.json"),
            r#"{"ociVersion":"1.0.2","process":{"args":["sh"]},"hooks":{"poststop":[{"path":"/bin/other"}]},"linux":{"namespaces":[{"type":"pid"}]}}"#,
        )
        .unwrap();
        let exe = Path::new("/usr/bin/netshim");
        let want = Install {
            networks: vec!["a".into(), "b".into()],
            ips: vec![("b".into(), "10.0.0.9".into())],
            ports: vec!["8080:80".parse().unwrap()],
            ifname: None,
        };
        let g = vec!["--state-dir".to_string(), "/s".to_string()];
        install(&dir, exe, &g, &want).unwrap();
        install(&dir, exe, &g, &want).unwrap();
        let c: Value =
            serde_json::from_str(&std::fs::read_to_string(dir.join("config.json")).unwrap())
                .unwrap();
        assert_eq!(c["hooks"]["createRuntime"].as_array().unwrap().len(), 1);
        assert_eq!(
            c["hooks"]["poststop"].as_array().unwrap().len(),
            2,
            "the other poststop hook stays"
        );
        assert_eq!(
            c["hooks"]["createRuntime"][0]["args"],
            json!(["netshim", "--state-dir", "/s", "oci-hook", "createRuntime"])
        );
        assert!(c["hooks"]["createRuntime"][0]["env"][0]
            .as_str()
            .unwrap()
            .starts_with("PATH="));
        assert_eq!(c["annotations"]["netshim.networks"], "a,b");
        assert_eq!(c["annotations"]["netshim.ip.b"], "10.0.0.9");
        assert_eq!(c["annotations"]["netshim.ports"], "8080:80/tcp");
        assert!(c["linux"]["namespaces"]
            .as_array()
            .unwrap()
            .iter()
            .any(|n| n["type"] == "network"));
        assert_eq!(
            c["process"]["args"],
            json!(["sh"]),
            "the rest of config.json is kept"
        );
        std::fs::remove_dir_all(&dir).unwrap();
    }

    #[test]
    fn install_names_a_bad_config_and_keeps_unknown_fields() {
        let dir = std::env::temp_dir().join(format!("netshim-install-bad-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let exe = Path::new("/usr/bin/netshim");
        std::fs::write(dir.join("config.json"), "{\n  \"hooks\": [\n").unwrap();
        let e = install(&dir, exe, &[], &Install::default())
            .unwrap_err()
            .to_string();
        let file = dir.join("config.json").display().to_string();
        assert!(
            e.starts_with(&format!(
                "{file} is not valid JSON: hooks: EOF while parsing a list"
            )),
            "{e}"
        );
        assert!(e.contains("line 3 column 0"), "{e}");
        // Fields oci-spec does not know, or would refuse, stay as they were.
        std::fs::write(
            dir.join("config.json"),
            r#"{"process":{"capabilities":{"bounding":["CAP_UNKNOWN"]}},"vendorField":{"z":[1,{"y":null}]}}"#,
        )
        .unwrap();
        install(&dir, exe, &[], &Install::default()).unwrap();
        let c: Value =
            serde_json::from_str(&std::fs::read_to_string(dir.join("config.json")).unwrap())
                .unwrap();
        assert_eq!(c["vendorField"], json!({"z": [1, {"y": null}]}));
        assert_eq!(
            c["process"]["capabilities"]["bounding"],
            json!(["CAP_UNKNOWN"])
        );
        std::fs::remove_dir_all(&dir).unwrap();
    }

    #[test]
    fn hooks_d_file_matches_the_annotation() {
        let v = hooks_d(Path::new("/usr/bin/netshim"), &[], false);
        assert_eq!(v["stages"], json!(["createRuntime", "poststop"]));
        assert_eq!(v["when"]["annotations"]["^netshim\\.networks$"], ".*");
        assert_eq!(v["hook"]["args"], json!(["netshim", "oci-hook"]));
    }
}
