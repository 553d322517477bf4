//! `netshim topology`: a picture of the node. Networks with their driver,
//! pools and gateway; the links each one owns in the node (found by
//! netshim's ownership mark, with their addresses, bridge ports and the
//! node's routes through them); endpoints with their container, sandbox,
//! address and published ports. Written as Graphviz DOT, or as SVG laid out
//! and drawn by netshim itself (layout-rs): no graphviz needed.

use std::fmt::Write as _;

use ipnet::IpNet;
use netshim_host_api::host::ownership_mark;
use netshim_host_api::kernel::{Kernel, LinkInfo, NsId, Route};

use crate::cnm::{CnmResult, Core, Endpoint, Network};

#[derive(Debug, thiserror::Error)]
pub enum TopologyError {
    #[error("laying out the picture: {0}")]
    Layout(String),
}

/// What the picture shows, gathered once.
pub struct Picture {
    pub node: String,
    pub uplink: Option<LinkView>,
    pub networks: Vec<NetworkView>,
}

pub struct NetworkView {
    pub net: Network,
    pub links: Vec<LinkView>,
    pub endpoints: Vec<Endpoint>,
    /// A cluster network's other nodes, as `cluster status` shows them.
    pub cluster: Vec<crate::cnm::NodeStatus>,
}

/// Remote nodes drawn per network at most; the rest are counted.
const CLUSTER_NODES_DRAWN: usize = 32;

pub struct LinkView {
    pub name: String,
    pub kind: String,
    pub addresses: Vec<IpNet>,
    /// Links enslaved to this one (a bridge's ports).
    pub ports: usize,
    /// The node's routes through this link, shown as `ip route` would.
    pub routes: Vec<String>,
}

fn view(kernel: &dyn Kernel, link: &LinkInfo, all: &[LinkInfo], routes: &[Route]) -> LinkView {
    let routes = routes
        .iter()
        .filter(|r| r.oif == Some(link.index))
        .map(|r| match r.gateway {
            Some(g) => format!("{} via {g}", r.destination),
            None => r.destination.to_string(),
        })
        .collect();
    LinkView {
        name: link.name.clone(),
        kind: if link.kind.is_empty() {
            "device".into()
        } else {
            link.kind.clone()
        },
        addresses: kernel.addresses(link.link_ref()).unwrap_or_default(),
        ports: all.iter().filter(|l| l.master == Some(link.index)).count(),
        routes,
    }
}

/// Read the records and the node's kernel objects.
pub fn gather(core: &Core) -> CnmResult<Picture> {
    let kernel = core.kernel().as_ref();
    let links = kernel.links(NsId::NODE)?;
    // The main table, read once for every link drawn.
    let routes = kernel.routes(NsId::NODE, 254)?;
    let uplink = netshim_host_api::kernel::default_route_link(kernel)
        .and_then(|r| links.iter().find(|l| l.index == r.index))
        .map(|l| view(kernel, l, &links, &routes));
    // The cluster view, when the node has a cluster store that answers.
    let cluster = if core.cluster_store().is_some() {
        core.cluster_status().unwrap_or_default()
    } else {
        Vec::new()
    };
    let mut networks = Vec::new();
    for (net, _) in core.networks()? {
        let peers = cluster
            .iter()
            .find(|c| c.network == net.name)
            .map(|c| c.nodes.iter().filter(|n| !n.local).cloned().collect())
            .unwrap_or_default();
        let (_, endpoints) = core.inspect(&net.id)?;
        let mark = ownership_mark(&net.id);
        // A bridge's ports are counted on it, not drawn one by one: a node
        // with a thousand endpoints stays a readable picture.
        let owned: Vec<&LinkInfo> = links
            .iter()
            .filter(|l| l.alias.as_deref() == Some(mark.as_str()))
            .filter(|l| {
                l.master
                    .is_none_or(|m| !links.iter().any(|b| b.index == m && b.alias == l.alias))
            })
            .collect();
        networks.push(NetworkView {
            links: owned
                .iter()
                .map(|l| view(kernel, l, &links, &routes))
                .collect(),
            net,
            endpoints,
            cluster: peers,
        });
    }
    Ok(Picture {
        node: core.node_name(),
        uplink,
        networks,
    })
}

/// Text inside a DOT string literal: quotes and backslashes escaped,
/// control characters dropped (names can come from annotations).
fn escaped(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for c in s.chars() {
        match c {
            '"' => out.push_str("\\\""),
            '\\' => out.push_str("\\\\"),
            c if c.is_control() => {}
            c => out.push(c),
        }
    }
    out
}

/// Lines of a label, joined the way DOT breaks lines.
fn label(lines: &[String]) -> String {
    let inner: Vec<String> = lines.iter().map(|l| escaped(l)).collect();
    format!("\"{}\"", inner.join("\\n"))
}

fn short(id: &str) -> &str {
    &id[..id.len().min(12)]
}

fn link_lines(l: &LinkView) -> Vec<String> {
    let mut lines = vec![format!("{} ({})", l.name, l.kind)];
    lines.extend(l.addresses.iter().map(IpNet::to_string));
    if l.ports > 0 {
        lines.push(format!("{} port(s)", l.ports));
    }
    lines.extend(l.routes.iter().map(|r| format!("route {r}")));
    lines
}

pub fn to_dot(p: &Picture) -> String {
    let mut out = String::from("digraph netshim {\n  node [shape=box];\n");
    let mut node = vec![format!("node {}", p.node)];
    if let Some(u) = &p.uplink {
        node.push(format!(
            "uplink {} {}",
            u.name,
            u.addresses
                .iter()
                .map(IpNet::to_string)
                .collect::<Vec<_>>()
                .join(" ")
        ));
    }
    let _ = writeln!(out, "  node0 [label={}];", label(&node));
    for (i, nv) in p.networks.iter().enumerate() {
        let n = &nv.net;
        let mut lines = vec![format!("network {} ({})", n.name, n.driver)];
        for pool in &n.ipv4 {
            lines.push(match pool.gateway {
                Some(g) => format!("{} gateway {}", pool.subnet, g.addr()),
                None => pool.subnet.to_string(),
            });
        }
        if n.internal {
            lines.push("internal".into());
        }
        let net_id = format!("net{i}");
        let _ = writeln!(out, "  {net_id} [label={}];", label(&lines));
        let _ = writeln!(out, "  node0 -> {net_id};");
        // Endpoints hang off the network's bridge (else its first link), or
        // off the network when it owns none.
        let hub = nv
            .links
            .iter()
            .position(|l| l.kind == "bridge")
            .or(if nv.links.is_empty() { None } else { Some(0) });
        let mut parent = net_id.clone();
        for (j, l) in nv.links.iter().enumerate() {
            let link_id = format!("net{i}link{j}");
            let _ = writeln!(out, "  {link_id} [label={}];", label(&link_lines(l)));
            let _ = writeln!(out, "  {net_id} -> {link_id};");
            if Some(j) == hub {
                parent = link_id;
            }
        }
        for (j, ep) in nv.endpoints.iter().enumerate() {
            let mut lines = vec![format!("endpoint {}", short(&ep.id))];
            if let Some(c) = &ep.container {
                lines.push(format!("container {c}"));
            }
            if !ep.netns.is_empty() {
                lines.push(format!("sandbox {}", ep.netns));
            }
            let addr = ep.ipv4.map(|a| a.to_string()).unwrap_or_default();
            lines.push(format!("{} {addr}", ep.ifname).trim().to_string());
            for port in &ep.ports {
                let host = port.host_ip.map(|h| format!("{h}:")).unwrap_or_default();
                lines.push(format!(
                    "publish {host}{}/{} -> {}",
                    port.host_port, port.protocol, port.container_port
                ));
            }
            let ep_id = format!("net{i}ep{j}");
            let _ = writeln!(out, "  {ep_id} [label={}];", label(&lines));
            let _ = writeln!(out, "  {parent} -> {ep_id};");
        }
        for (j, peer) in nv.cluster.iter().take(CLUSTER_NODES_DRAWN).enumerate() {
            let mut lines = vec![format!("cluster node {}", peer.name)];
            lines.extend(peer.prefixes.iter().cloned());
            lines.push(format!("{} lease {}", peer.kind, peer.lease));
            if !peer.programmed {
                lines.push(format!(
                    "NOT programmed: {}",
                    peer.problem.as_deref().unwrap_or("-")
                ));
            }
            let peer_id = format!("net{i}peer{j}");
            let _ = writeln!(out, "  {peer_id} [label={}];", label(&lines));
            let _ = writeln!(out, "  {net_id} -> {peer_id} [style=dashed];");
        }
        if nv.cluster.len() > CLUSTER_NODES_DRAWN {
            let more = nv.cluster.len() - CLUSTER_NODES_DRAWN;
            let _ = writeln!(
                out,
                "  net{i}more [label={}];",
                label(&[format!("and {more} more cluster node(s)")])
            );
            let _ = writeln!(out, "  {net_id} -> net{i}more [style=dashed];");
        }
    }
    out.push_str("}\n");
    out
}

/// Lay out and draw a DOT graph as SVG.
pub fn to_svg(dot: &str) -> Result<String, TopologyError> {
    use layout::backends::svg::SVGWriter;
    use layout::gv::{DotParser, GraphBuilder};

    let mut parser = DotParser::new(dot);
    let ast = parser.process().map_err(TopologyError::Layout)?;
    let mut builder = GraphBuilder::new();
    builder.visit_graph(&ast);
    let mut graph = builder.get();
    let mut svg = SVGWriter::new();
    graph.do_it(false, false, false, &mut svg);
    Ok(svg.finalize())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn labels_cannot_break_out_of_their_quotes() {
        assert_eq!(escaped(r#"a"b\c"#), r#"a\"b\\c"#);
        assert_eq!(escaped("x\ny\u{7}"), "xy");
        assert_eq!(label(&["one".into(), "t\"wo".into()]), r#""one\nt\"wo""#);
    }

    #[test]
    fn a_picture_becomes_svg() {
        let dot = "digraph netshim {\n  node [shape=box];\n  node0 [label=\"node n1\"];\n  net0 [label=\"network a (bridge)\\n10.77.0.0/24\"];\n  node0 -> net0;\n}\n";
        let svg = to_svg(dot).unwrap();
        assert!(
            svg.contains("<svg") && svg.contains("network a (bridge)"),
            "{svg}"
        );
    }
}
