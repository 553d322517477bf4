//! Rendering results: aligned tables for people, JSON for scripts.

use std::collections::BTreeMap;
use std::path::Path;

use serde_json::json;

use super::Format;
use crate::cnm::{Endpoint, Network};
use crate::guests::Source;
use crate::runtime::Guest;

pub struct Output {
    format: Format,
}

fn table(headers: &[&str], rows: &[Vec<String>]) -> String {
    let mut widths: Vec<usize> = headers.iter().map(|h| h.len()).collect();
    for r in rows {
        for (i, c) in r.iter().enumerate() {
            widths[i] = widths[i].max(c.len());
        }
    }
    let line = |cells: Vec<&str>| {
        let mut s = String::new();
        for (i, c) in cells.iter().enumerate() {
            if i + 1 == cells.len() {
                s.push_str(c);
            } else {
                s.push_str(&format!("{c:<w$}   ", w = widths[i]));
            }
        }
        s.trim_end().to_string()
    };
    let mut out = line(headers.to_vec());
    for r in rows {
        out.push('\n');
        out.push_str(&line(r.iter().map(String::as_str).collect()));
    }
    out
}

fn network_json(n: &Network) -> serde_json::Value {
    json!({
        "id": n.id, "name": n.name, "driver": n.driver, "internal": n.internal,
        "options": n.options.iter().map(|(k, v)| (k.clone(), v.clone())).collect::<BTreeMap<_, _>>(),
        "ipv4": n.ipv4.iter().map(|p| json!({"subnet": p.subnet.to_string(), "gateway": p.gateway.map(|g| g.addr().to_string()), "pool_id": p.id})).collect::<Vec<_>>(),
        "created": n.created,
    })
}

fn endpoint_json(e: &Endpoint) -> serde_json::Value {
    json!({
        "id": e.id, "network_id": e.network_id, "netns": e.netns, "ifname": e.ifname,
        "ipv4": e.ipv4.map(|a| a.to_string()), "mac": e.mac, "gateway": e.gateway.map(|g| g.to_string()),
    })
}

fn short(id: &str) -> String {
    id.chars().take(12).collect()
}

impl Output {
    pub fn new(format: Format) -> Output {
        Output { format }
    }

    fn emit(&self, value: serde_json::Value, text: String) {
        match self.format {
            Format::Json => println!(
                "{}",
                serde_json::to_string_pretty(&value).unwrap_or_default()
            ),
            Format::Table => println!("{text}"),
        }
    }

    pub fn network_created(&self, n: &Network) {
        self.emit(network_json(n), n.id.clone());
    }

    pub fn networks(&self, nets: &[(Network, usize)]) {
        let rows: Vec<Vec<String>> = nets
            .iter()
            .map(|(n, count)| {
                vec![
                    short(&n.id),
                    n.name.clone(),
                    n.driver.clone(),
                    n.ipv4
                        .iter()
                        .map(|p| p.subnet.to_string())
                        .collect::<Vec<_>>()
                        .join(","),
                    if n.internal {
                        "yes".into()
                    } else {
                        "no".into()
                    },
                    count.to_string(),
                ]
            })
            .collect();
        let value = json!(nets
            .iter()
            .map(|(n, c)| {
                let mut v = network_json(n);
                v["endpoints"] = json!(c);
                v
            })
            .collect::<Vec<_>>());
        self.emit(
            value,
            table(
                &[
                    "NETWORK ID",
                    "NAME",
                    "DRIVER",
                    "SUBNET",
                    "INTERNAL",
                    "ENDPOINTS",
                ],
                &rows,
            ),
        );
    }

    pub fn inspect(&self, n: &Network, eps: &[Endpoint]) {
        let mut value = network_json(n);
        value["endpoints"] = json!(eps.iter().map(endpoint_json).collect::<Vec<_>>());
        let mut text = format!(
            "Name:     {}\nID:       {}\nDriver:   {}\nInternal: {}\n",
            n.name, n.id, n.driver, n.internal
        );
        for p in &n.ipv4 {
            text.push_str(&format!(
                "Subnet:   {}\nGateway:  {}\n",
                p.subnet,
                p.gateway.map(|g| g.addr().to_string()).unwrap_or_default()
            ));
        }
        for (k, v) in &n.options {
            text.push_str(&format!("Option:   {k}={v}\n"));
        }
        text.push_str("Endpoints:\n");
        let rows: Vec<Vec<String>> = eps
            .iter()
            .map(|e| {
                vec![
                    short(&e.id),
                    e.netns.clone(),
                    e.ifname.clone(),
                    e.ipv4.map(|a| a.to_string()).unwrap_or_default(),
                    e.mac.clone().unwrap_or_default(),
                ]
            })
            .collect();
        text.push_str(&table(
            &["ENDPOINT ID", "NETNS", "IFNAME", "IPV4", "MAC"],
            &rows,
        ));
        self.emit(value, text);
    }

    pub fn installed(&self, config: &Path) {
        self.emit(
            json!({"installed": config.display().to_string()}),
            format!("netshim hooks installed in {}", config.display()),
        );
    }

    pub fn removed(&self, name: &str) {
        self.emit(json!({"removed": name}), name.to_string());
    }

    pub fn endpoint(&self, e: &Endpoint) {
        let text = format!(
            "{}  {} {} {}",
            short(&e.id),
            e.ifname,
            e.ipv4.map(|a| a.to_string()).unwrap_or_default(),
            e.gateway.map(|g| format!("via {g}")).unwrap_or_default()
        );
        self.emit(endpoint_json(e), text.trim_end().to_string());
    }

    pub fn guest_created(&self, root: &Path, name: &str) {
        let krate = name.replace('-', "_");
        let manifest = root.join("Cargo.toml");
        let wasm = root.join(format!("target/wasm32-wasip2/release/{krate}.wasm"));
        let text = format!(
            "{}\nbuild:   cargo build --release --target wasm32-wasip2 --manifest-path {}\ncheck:   netshim guest check {}\ninstall: cp {} <guest-dir>/{name}.wasm",
            root.display(),
            manifest.display(),
            wasm.display(),
            wasm.display()
        );
        self.emit(json!({"dir": root.display().to_string(), "manifest": manifest.display().to_string(), "wasm": wasm.display().to_string()}), text);
    }

    pub fn gc(&self, r: &crate::cnm::GcReport) {
        let mut lines = Vec::new();
        lines.extend(r.settled.iter().cloned());
        lines.extend(r.links.iter().map(|l| format!("removed link {l}")));
        lines.extend(r.tables.iter().map(|t| format!("removed table {t}")));
        lines.extend(r.errors.iter().map(|e| format!("error: {e}")));
        if lines.is_empty() {
            lines.push("nothing to collect".into());
        }
        self.emit(
            serde_json::to_value(r).unwrap_or_default(),
            lines.join("\n"),
        );
    }

    pub fn cluster_status(&self, nets: &[crate::cnm::NetworkStatus]) {
        let mut rows = Vec::new();
        let mut notes = Vec::new();
        for n in nets {
            for node in &n.nodes {
                rows.push(vec![
                    n.network.clone(),
                    if node.local {
                        format!("{} (this node)", node.name)
                    } else {
                        node.name.clone()
                    },
                    node.prefixes.join(","),
                    node.kind.clone(),
                    node.lease.to_string(),
                    if node.programmed { "yes" } else { "NO" }.into(),
                    node.problem.clone().unwrap_or_else(|| "-".into()),
                ]);
            }
            if let Some(e) = &n.error {
                notes.push(format!("{}: {e}", n.network));
            }
        }
        let mut text = if nets.is_empty() {
            "no cluster network on this node".to_string()
        } else {
            table(
                &[
                    "NETWORK",
                    "NODE",
                    "SUBNET",
                    "BACKEND",
                    "LEASE",
                    "PROGRAMMED",
                    "PROBLEM",
                ],
                &rows,
            )
        };
        for n in notes {
            text.push('\n');
            text.push_str(&n);
        }
        self.emit(json!({ "networks": nets }), text);
    }

    /// `netshim node status`: as `calicoctl node status` shows it.
    pub fn node_status(&self, st: &crate::bird::status::NodeStatus) {
        let mut text = match (&st.network, &st.bird) {
            (None, _) => format!("node {}: no BGP speaker", st.node),
            (Some(net), Some(b)) => {
                format!(
                "BIRD is running (pid {}, {}) for network {net} on node {}\nrouter id {}, AS {}{}",
                b.pid,
                if b.version.is_empty() { "BIRD" } else { &b.version },
                st.node,
                st.router_id.as_deref().unwrap_or("-"),
                st.as_number.map(|a| a.to_string()).unwrap_or_default(),
                st.route_reflector_cluster_id
                    .as_ref()
                    .map(|c| format!(", route reflector (cluster id {c})"))
                    .unwrap_or_default(),
            )
            }
            (Some(net), None) => format!("network {net} on node {}: BIRD is not running", st.node),
        };
        if !st.peers.is_empty() {
            let rows: Vec<Vec<String>> = st
                .peers
                .iter()
                .map(|p| {
                    vec![
                        p.address.clone(),
                        p.kind.clone(),
                        p.state.clone(),
                        p.since.clone(),
                        if p.info.is_empty() {
                            "-".into()
                        } else {
                            p.info.clone()
                        },
                    ]
                })
                .collect();
            text.push_str("\n\nIPv4 BGP status\n");
            text.push_str(&table(
                &["PEER ADDRESS", "PEER TYPE", "STATE", "SINCE", "INFO"],
                &rows,
            ));
        }
        if let Some(p) = &st.problem {
            text.push('\n');
            text.push_str(p);
        }
        self.emit(json!(st), text);
    }

    pub fn recovered(
        &self,
        r: Option<&(netshim_host_api::store::Recovered, crate::cnm::GcReport)>,
    ) {
        match r {
            None => self.emit(
                json!({"recovered": false}),
                "the state database is healthy: nothing to recover".into(),
            ),
            Some((r, gc)) => {
                let text = format!(
                    "kept {} record(s); the damaged database is {}",
                    r.kept,
                    r.moved_to.display()
                );
                self.emit(
                    json!({"recovered": true, "kept": r.kept, "damaged": r.moved_to.display().to_string(), "gc": gc}),
                    text,
                );
            }
        }
    }

    pub fn detached(&self, e: &Endpoint) {
        self.emit(json!({"detached": e.id}), short(&e.id));
    }

    pub fn guests(&self, all: &BTreeMap<String, Source>) {
        let rows: Vec<Vec<String>> = all
            .iter()
            .map(|(n, s)| vec![n.clone(), s.describe()])
            .collect();
        let value = json!(all
            .iter()
            .map(|(n, s)| json!({"name": n, "source": s.describe()}))
            .collect::<Vec<_>>());
        self.emit(value, table(&["DRIVER", "SOURCE"], &rows));
    }

    pub fn guest_check(&self, file: &Path, g: &Guest) {
        // 0.2 keeps 0.1's exports: the version is what the guest imports.
        let wit = crate::runtime::wit_package(&g.imports);
        let value = json!({"file": file.display().to_string(), "ok": true, "wit": wit, "exports": g.exports, "imports": g.imports, "sha256": g.digest});
        let text = format!(
            "{}: ok\nWIT:      {wit}\nexports:  {}\nimports:  {}\nsha256:   {}",
            file.display(),
            g.exports.join(", "),
            g.imports.join(", "),
            g.digest
        );
        self.emit(value, text);
    }
}
