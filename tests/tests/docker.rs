//! netshim as Docker's network and IPAM driver, with a real dockerd (Debian's
//! docker.io) started by the test in its own node namespace, with its own
//! data root and socket, and an image imported from a busybox rootfs.

use std::io::{Read, Write};
use std::os::unix::net::UnixStream;
use std::path::PathBuf;
use std::process::{Command, Stdio};

use netshim_tests::docker::Docker;
use netshim_tests::{
    cache_dir, can_run, netshim_bin, wait_for, Daemon, Node, NODE_ADDR, OUTSIDE_ADDR,
};

/// netshim's plugin socket for this test: a unique plugin name, since
/// dockerd only looks in /run/docker/plugins.
fn plugin_name(tag: &str) -> String {
    format!("nst{}{tag}-bridge", std::process::id())
}

fn start_netshim(node: &Node, tag: &str) -> Daemon {
    let prefix = format!("nst{}{tag}-", std::process::id());
    let sock = PathBuf::from(format!("/run/docker/plugins/{prefix}bridge.sock"));
    let _ = std::fs::remove_file(&sock);
    let child = Command::new(netshim_bin())
        .args([
            "--state-dir",
            node.state.0.to_str().unwrap(),
            "--node-netns",
            node.node.path.to_str().unwrap(),
        ])
        .args([
            "--cache-dir",
            cache_dir().to_str().unwrap(),
            "daemon",
            "--plugin-prefix",
            &prefix,
        ])
        .stdout(Stdio::null())
        .stderr(Stdio::inherit())
        .spawn()
        .unwrap();
    let d = Daemon {
        child,
        name: "netshim",
    };
    wait_for(&sock, "netshim's plugin socket");
    d
}

#[test]
fn docker_networks_through_netshim() {
    if !can_run() {
        return;
    }
    let node = Node::new("dock");
    let (links, _, routes) = node.baseline();
    let mut netshim = start_netshim(&node, "a");
    let docker = Docker::start(&node.node, "a");
    let drv = plugin_name("a");

    docker.ok(&[
        "network",
        "create",
        "-d",
        &drv,
        "--ipam-driver",
        &drv,
        "--subnet",
        "10.77.0.0/24",
        "--gateway",
        "10.77.0.1",
        "net1",
    ]);
    let inspect = docker.ok(&[
        "network",
        "inspect",
        "-f",
        "{{range .IPAM.Config}}{{.Subnet}} {{.Gateway}}{{end}} {{.Driver}}",
        "net1",
    ]);
    assert_eq!(inspect, format!("10.77.0.0/24 10.77.0.1 {drv}"));

    // netshim restarts between network create and docker run: its state is its own.
    netshim.stop();
    netshim = start_netshim(&node, "a");

    docker.ok(&[
        "run",
        "-d",
        "--name",
        "c1",
        "--network",
        "net1",
        "nstbusybox",
        "sleep",
        "1000",
    ]);
    docker.ok(&[
        "run",
        "-d",
        "--name",
        "c2",
        "--network",
        "net1",
        "nstbusybox",
        "sleep",
        "1000",
    ]);
    let (a1, a2) = (docker.ip_of("c1", "net1"), docker.ip_of("c2", "net1"));
    assert!(
        a1.starts_with("10.77.0.") && a2.starts_with("10.77.0.") && a1 != a2,
        "{a1} {a2}"
    );
    assert!(docker.pings("c1", &a2), "c1 cannot ping c2");
    let routes_c1 = docker.ok(&["exec", "c1", "ip", "route"]);
    assert!(routes_c1.contains("default via 10.77.0.1"), "{routes_c1}");
    let links_c1 = docker.ok(&["exec", "c1", "ip", "link"]);
    assert!(
        !links_c1.contains("eth1"),
        "docker_gwbridge must not be attached: {links_c1}"
    );
    // Out through NAT: the outside host sees the node.
    let listener = node.outside.accept_one(&format!("{OUTSIDE_ADDR}:8080"));
    assert!(docker
        .docker(&[
            "exec",
            "c1",
            "sh",
            "-c",
            &format!("echo hi | nc {OUTSIDE_ADDR} 8080")
        ])
        .status
        .success());
    assert_eq!(listener.join().unwrap().ip().to_string(), NODE_ADDR);

    // -p 8080:80: from the outside host to the node's address, and from the node itself.
    docker.ok(&[
        "run",
        "-d",
        "--name",
        "web",
        "--network",
        "net1",
        "-p",
        "8080:80",
        "nstbusybox",
        "sh",
        "-c",
        "mkdir -p /tmp/w && echo hello-from-docker > /tmp/w/index.html && httpd -f -p 80 -h /tmp/w",
    ]);
    let fetch = |ns: &netshim_tests::Ns, host: &str| {
        let out = ns.exec(&["python3", "-c", &format!("import urllib.request;print(urllib.request.urlopen('http://{host}:8080/',timeout=3).read().decode().strip())")]);
        String::from_utf8_lossy(&out.stdout).trim().to_string()
    };
    let mut got = String::new();
    for _ in 0..20 {
        got = fetch(&node.outside, NODE_ADDR);
        if !got.is_empty() {
            break;
        }
        std::thread::sleep(std::time::Duration::from_millis(100));
    }
    assert_eq!(
        got, "hello-from-docker",
        "published port from the outside host"
    );
    assert_eq!(
        fetch(&node.node, NODE_ADDR),
        "hello-from-docker",
        "published port from the node itself"
    );

    // connect / disconnect a running container to a second netshim network.
    docker.ok(&[
        "network",
        "create",
        "-d",
        &drv,
        "--ipam-driver",
        &drv,
        "--subnet",
        "10.78.0.0/24",
        "-o",
        "mtu=1400",
        "net2",
    ]);
    docker.ok(&[
        "run",
        "-d",
        "--name",
        "c3",
        "--network",
        "net2",
        "nstbusybox",
        "sleep",
        "1000",
    ]);
    docker.ok(&["network", "connect", "net2", "c1"]);
    let a1_2 = docker.ip_of("c1", "net2");
    assert!(a1_2.starts_with("10.78.0."), "{a1_2}");
    assert!(
        docker
            .ok(&["exec", "c1", "ip", "link"])
            .contains("mtu 1400"),
        "-o mtu must reach the interface"
    );
    assert!(docker.pings("c3", &a1_2), "c3 cannot reach c1 over net2");
    docker.ok(&["network", "disconnect", "net2", "c1"]);
    assert!(
        !docker
            .ok(&["exec", "c1", "ip", "addr"])
            .contains("10.78.0."),
        "disconnect left the address"
    );
    assert!(!docker
        .docker(&["exec", "c3", "ping", "-c1", "-W1", &a1_2])
        .status
        .success());

    // Many containers at once: dockerd's requests arrive concurrently.
    std::thread::scope(|s| {
        for i in 0..8 {
            let docker = &docker;
            s.spawn(move || {
                docker.ok(&[
                    "run",
                    "-d",
                    "--name",
                    &format!("p{i}"),
                    "--network",
                    "net1",
                    "nstbusybox",
                    "sleep",
                    "1000",
                ])
            });
        }
    });
    let mut addrs: Vec<String> = (0..8)
        .map(|i| docker.ip_of(&format!("p{i}"), "net1"))
        .collect();
    addrs.sort();
    addrs.dedup();
    assert_eq!(addrs.len(), 8, "{addrs:?}");

    // Restart netshim again before removing everything.
    netshim.stop();
    let _netshim = start_netshim(&node, "a");
    let all: Vec<String> = ["c1", "c2", "c3", "web"]
        .iter()
        .map(|s| s.to_string())
        .chain((0..8).map(|i| format!("p{i}")))
        .collect();
    for c in &all {
        docker.ok(&["rm", "-f", c]);
    }
    docker.ok(&["network", "rm", "net1", "net2"]);
    assert_eq!(node.node.links(), links, "links left behind");
    assert_eq!(node.node.routes(), routes, "routes left behind");
    assert_eq!(
        node.node.nft_ruleset().trim(),
        "",
        "nftables objects left behind"
    );
    let state = node.state_json();
    assert!(
        state["spaces"].as_object().is_none_or(|m| m.is_empty()),
        "state or allocations left: {state}"
    );
}

/// One raw HTTP request to the plugin socket.
fn post(sock: &std::path::Path, path: &str, body: &[u8]) -> (u16, serde_json::Value) {
    let mut s = UnixStream::connect(sock).unwrap();
    write!(
        s,
        "POST {path} HTTP/1.1\r\nHost: plugin\r\nContent-Length: {}\r\n\r\n",
        body.len()
    )
    .unwrap();
    s.write_all(body).unwrap();
    s.shutdown(std::net::Shutdown::Write).unwrap();
    let mut text = String::new();
    s.read_to_string(&mut text).unwrap();
    let status = text
        .split_whitespace()
        .nth(1)
        .unwrap_or("0")
        .parse()
        .unwrap_or(0);
    let json = text
        .split("\r\n\r\n")
        .nth(1)
        .and_then(|b| serde_json::from_str(b).ok())
        .unwrap_or(serde_json::Value::Null);
    (status, json)
}

#[test]
fn malformed_requests_get_clear_errors_and_the_daemon_keeps_serving() {
    if !can_run() {
        return;
    }
    let node = Node::new("dockbad");
    let _netshim = start_netshim(&node, "b");
    let sock = PathBuf::from(format!("/run/docker/plugins/{}.sock", plugin_name("b")));
    let (status, body) = post(&sock, "/Plugin.Activate", b"");
    assert_eq!(status, 200);
    assert_eq!(
        body["Implements"],
        serde_json::json!(["NetworkDriver", "IpamDriver"])
    );
    let methods = [
        "IpamDriver.RequestPool",
        "IpamDriver.ReleasePool",
        "IpamDriver.RequestAddress",
        "IpamDriver.ReleaseAddress",
        "NetworkDriver.CreateNetwork",
        "NetworkDriver.DeleteNetwork",
        "NetworkDriver.CreateEndpoint",
        "NetworkDriver.DeleteEndpoint",
        "NetworkDriver.EndpointOperInfo",
        "NetworkDriver.Join",
        "NetworkDriver.Leave",
        "NetworkDriver.ProgramExternalConnectivity",
        "NetworkDriver.RevokeExternalConnectivity",
    ];
    for m in methods {
        for bad in [
            &b"{"[..],
            b"[1,2]",
            br#"{"NetworkID": 5, "EndpointID": 6, "PoolID": 7, "Pool": 9, "Address": 3}"#,
            b"\x00\xff",
        ] {
            let (status, body) = post(&sock, &format!("/{m}"), bad);
            assert_eq!(status, 500, "{m} with {bad:?}: {body}");
            let err = body["Err"].as_str().unwrap_or_default();
            assert!(
                err.contains("malformed request body") && err.contains(m),
                "{m}: {err}"
            );
        }
    }
    // Unknown ids: errors that say what is unknown; deletes are idempotent.
    let unknown = br#"{"NetworkID":"feedfeed","EndpointID":"beefbeef","PoolID":"10.1.2.0/24","Address":"10.1.2.3","Interface":{"Address":"10.1.2.3/24"}}"#;
    for m in [
        "NetworkDriver.CreateEndpoint",
        "NetworkDriver.Join",
        "NetworkDriver.Leave",
        "IpamDriver.RequestAddress",
        "IpamDriver.ReleasePool",
    ] {
        let (status, body) = post(&sock, &format!("/{m}"), unknown);
        assert_eq!(status, 500, "{m}: {body}");
        assert!(
            body["Err"]
                .as_str()
                .unwrap_or_default()
                .contains("not found"),
            "{m}: {body}"
        );
    }
    for m in [
        "NetworkDriver.DeleteEndpoint",
        "NetworkDriver.DeleteNetwork",
        "NetworkDriver.EndpointOperInfo",
        "NetworkDriver.RevokeExternalConnectivity",
    ] {
        let (status, body) = post(&sock, &format!("/{m}"), unknown);
        assert_eq!(status, 200, "{m}: {body}");
    }
    let (status, body) = post(&sock, "/NetworkDriver.Frobnicate", b"{}");
    assert_eq!(status, 404);
    assert!(body["Err"].as_str().unwrap().contains("Frobnicate"));
    // Garbage that is not HTTP at all.
    let mut s = UnixStream::connect(&sock).unwrap();
    s.write_all(b"\x16\x03\x01 hello\r\n\r\n").unwrap();
    let mut buf = String::new();
    let _ = s.read_to_string(&mut buf);
    assert!(buf.starts_with("HTTP/1.1 400"), "{buf}");
    // Still serving, and a real request works end to end.
    let (status, pool) = post(
        &sock,
        "/IpamDriver.RequestPool",
        br#"{"AddressSpace":"local","Pool":"10.55.0.0/24","V6":false}"#,
    );
    assert_eq!(status, 200, "{pool}");
    assert_eq!(pool["Pool"], "10.55.0.0/24");
    let (status, addr) = post(&sock, "/IpamDriver.RequestAddress", br#"{"PoolID":"10.55.0.0/24","Address":"","Options":{"RequestAddressType":"com.docker.network.gateway"}}"#);
    assert_eq!(
        (status, addr["Address"].as_str().unwrap()),
        (200, "10.55.0.1/24")
    );
    let (status, _) = post(
        &sock,
        "/IpamDriver.ReleaseAddress",
        br#"{"PoolID":"10.55.0.0/24","Address":"10.55.0.1"}"#,
    );
    assert_eq!(status, 200);
    let (status, _) = post(
        &sock,
        "/IpamDriver.ReleasePool",
        br#"{"PoolID":"10.55.0.0/24"}"#,
    );
    assert_eq!(status, 200);
}
