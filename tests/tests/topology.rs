//! `netshim topology` on the real kernel: the picture names every object
//! of the node's networks (network, pool and gateway, the bridge with its
//! address, ports and route, each endpoint's address and published port,
//! the uplink, the container of an endpoint the OCI hook made), and its
//! SVG is well-formed XML drawn without graphviz, with the same text.

use netshim_tests::{can_run, Node, Ns, TempDir, NODE_ADDR};
use serde_json::json;

#[test]
fn the_picture_lists_every_object_and_its_svg_parses() {
    if !can_run() {
        return;
    }
    let node = Node::new("topo");
    let (c1, c2) = (Ns::new("topo-c1"), Ns::new("topo-c2"));
    let net = node.json(&["network", "create", "topo", "--subnet", "10.95.0.0/24"]);
    let bridge = format!("br-{}", &net["id"].as_str().unwrap()[..12]);
    node.ok(&[
        "attach",
        "--network",
        "topo",
        "--netns",
        c1.path.to_str().unwrap(),
    ]);
    node.ok(&[
        "attach",
        "--network",
        "topo",
        "--netns",
        c2.path.to_str().unwrap(),
        "-p",
        "8080:80",
    ]);

    // A container started by a runtime: its endpoint carries its name.
    let c3 = Ns::new("topo-c3");
    let bundle = TempDir::new("topo-bundle");
    let config = json!({
        "annotations": {"netshim.networks": "topo"},
        "linux": {"namespaces": [{"type": "network", "path": c3.path}]}
    });
    std::fs::write(bundle.0.join("config.json"), config.to_string()).unwrap();
    let state = |status: &str| {
        json!({"ociVersion": "1.0.2", "id": "web-1", "status": status, "bundle": bundle.0})
            .to_string()
    };
    node.hook("createRuntime", &state("creating"));

    let dot = node.ok(&["topology"]);
    let wanted = [
        "network topo (bridge)".to_string(),
        "10.95.0.0/24 gateway 10.95.0.1".to_string(),
        format!("{bridge} (bridge)"),
        "10.95.0.1/24".to_string(),
        "route 10.95.0.0/24".to_string(),
        "eth0 10.95.0.2/24".to_string(),
        "eth0 10.95.0.3/24".to_string(),
        "publish 8080/tcp -> 80".to_string(),
        format!("uplink uplink {NODE_ADDR}/24"),
        format!("sandbox {}", c1.path.display()),
        "container web-1".to_string(),
        "eth0 10.95.0.4/24".to_string(),
        "3 port(s)".to_string(),
    ];
    for want in &wanted {
        assert!(dot.contains(want), "{want:?} missing from:\n{dot}");
    }
    assert!(dot.starts_with("digraph netshim {") && dot.trim_end().ends_with('}'));

    let svg = node.ok(&["topology", "--format", "svg"]);
    let doc = roxmltree::Document::parse(&svg).unwrap_or_else(|e| panic!("{e}: {svg:.300}"));
    assert_eq!(doc.root_element().tag_name().name(), "svg");
    let text: String = doc
        .descendants()
        .filter(|n| n.is_text())
        .filter_map(|n| n.text())
        .collect::<Vec<_>>()
        .join("\n");
    for want in &wanted {
        assert!(
            text.contains(want.as_str()),
            "{want:?} missing from the SVG's text:\n{text}"
        );
    }
    node.hook("poststop", &state("stopped"));

    node.ok(&[
        "detach",
        "--network",
        "topo",
        "--netns",
        c1.path.to_str().unwrap(),
    ]);
    node.ok(&[
        "detach",
        "--network",
        "topo",
        "--netns",
        c2.path.to_str().unwrap(),
    ]);
    node.ok(&["network", "rm", "topo"]);
    let empty = node.ok(&["topology"]);
    assert!(!empty.contains("network topo"), "{empty}");
}
