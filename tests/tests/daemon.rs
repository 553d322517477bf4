//! `netshim daemon` against clients dockerd never is: hostile HTTP, 5,000
//! idle connections, SIGTERM with a request in flight. The daemon stays
//! bounded (threads, memory), answers every malformed request with an
//! error, and keeps serving.

use std::io::{Read, Write};
use std::os::unix::fs::OpenOptionsExt;
use std::os::unix::net::UnixStream;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::Duration;

use netshim_tests::{can_run, netshim_bin, wait_for, Daemon, Node, TempDir};

struct Served {
    daemon: Daemon,
    sock: PathBuf,
    _plugins: TempDir,
}

fn start(node: &Node, tag: &str, extra: &[&str]) -> Served {
    let plugins = TempDir::new(tag);
    let child = Command::new(netshim_bin())
        .env("NETSHIM_STATE_DIR", &node.state.0)
        .env("NETSHIM_NODE_NETNS", &node.node.path)
        .env("NETSHIM_CACHE_DIR", netshim_tests::cache_dir())
        .args(["daemon", "--plugin-dir"])
        .arg(&plugins.0)
        .args(extra)
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let sock = plugins.0.join("netshim-bridge.sock");
    let daemon = Daemon {
        child,
        name: "netshim",
    };
    wait_for(&sock, "netshim's plugin socket");
    Served {
        daemon,
        sock,
        _plugins: plugins,
    }
}

/// Raw bytes to the socket; what came back (up to a few seconds).
fn raw(sock: &Path, bytes: &[u8]) -> String {
    let mut s = UnixStream::connect(sock).unwrap();
    s.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
    let _ = s.write_all(bytes);
    let _ = s.shutdown(std::net::Shutdown::Write);
    let mut out = Vec::new();
    let _ = s.read_to_end(&mut out);
    String::from_utf8_lossy(&out).into_owned()
}

fn post(sock: &Path, path: &str, body: &str) -> String {
    raw(
        sock,
        format!(
            "POST {path} HTTP/1.1\r\nHost: plugin\r\nContent-Length: {}\r\n\r\n{body}",
            body.len()
        )
        .as_bytes(),
    )
}

fn activates(sock: &Path) -> bool {
    let r = post(sock, "/Plugin.Activate", "{}");
    r.starts_with("HTTP/1.1 200") && r.contains("NetworkDriver")
}

fn proc_status(pid: u32, field: &str) -> u64 {
    let s = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap();
    s.lines()
        .find_map(|l| l.strip_prefix(&format!("{field}:")))
        .and_then(|v| v.split_whitespace().next())
        .and_then(|v| v.parse().ok())
        .unwrap_or(0)
}

fn open_fds(pid: u32) -> usize {
    std::fs::read_dir(format!("/proc/{pid}/fd"))
        .unwrap()
        .count()
}

#[test]
fn hostile_http_gets_errors_and_the_daemon_keeps_serving() {
    if !can_run() {
        return;
    }
    let node = Node::new("dhttp");
    let d = start(&node, "dhttp-plugins", &[]);
    let cases: Vec<(&str, Vec<u8>, &str)> = vec![
        // The chunk size that panicked the hand-written parser.
        (
            "huge chunk size",
            b"POST /Plugin.Activate HTTP/1.1\r\nTransfer-Encoding: chunked\r\n\r\nffffffffffffffff\r\nx\r\n0\r\n\r\n".to_vec(),
            "HTTP/1.1 4",
        ),
        (
            "body over the limit",
            format!(
                "POST /NetworkDriver.CreateNetwork HTTP/1.1\r\nContent-Length: {}\r\n\r\n{}",
                5 << 20,
                "x".repeat(5 << 20)
            )
            .into_bytes(),
            "HTTP/1.1 413",
        ),
        (
            "headers over the limit",
            format!(
                "POST /Plugin.Activate HTTP/1.1\r\nX-Big: {}\r\n\r\n",
                "a".repeat(200 << 10)
            )
            .into_bytes(),
            "HTTP/1.1 431",
        ),
        (
            "not HTTP",
            b"\x16\x03\x01\x02\x00\x01\x00\x01\xfc\x03\x03garbage\r\n\r\n".to_vec(),
            "HTTP/1.1 400",
        ),
        ("GET", b"GET / HTTP/1.1\r\n\r\n".to_vec(), "HTTP/1.1 404"),
        (
            "JSON that is not an object",
            b"POST /IpamDriver.RequestPool HTTP/1.1\r\nContent-Length: 5\r\n\r\n[1,2]".to_vec(),
            "HTTP/1.1 500",
        ),
    ];
    for (what, bytes, want) in &cases {
        let got = raw(&d.sock, bytes);
        assert!(got.starts_with(want), "{what}: {got:.200}");
        assert!(activates(&d.sock), "{what}: the daemon stopped serving");
    }
    let pid = d.daemon.child.id();
    assert!(
        std::path::Path::new(&format!("/proc/{pid}")).exists(),
        "the daemon died"
    );
}

#[test]
fn five_thousand_idle_connections_cost_no_threads() {
    if !can_run() {
        return;
    }
    use nix::sys::resource::{getrlimit, setrlimit, Resource};
    let (_, hard) = getrlimit(Resource::RLIMIT_NOFILE).unwrap();
    if hard < 6_000 {
        eprintln!("skipped: RLIMIT_NOFILE hard limit {hard} is below 6,000");
        return;
    }
    setrlimit(Resource::RLIMIT_NOFILE, hard, hard).unwrap();
    let node = Node::new("didle");
    let d = start(&node, "didle-plugins", &["--idle-timeout-ms", "4000"]);
    let pid = d.daemon.child.id();
    assert!(activates(&d.sock));
    let threads_before = proc_status(pid, "Threads");
    let idle: Vec<UnixStream> = (0..5000)
        .map(|_| UnixStream::connect(&d.sock).unwrap())
        .collect();
    // Every connection accepted (its descriptor is open in the daemon).
    let mut fds = 0;
    for _ in 0..100 {
        fds = open_fds(pid);
        if fds >= 5000 {
            break;
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    assert!(fds >= 5000, "the daemon holds {fds} descriptors");
    let threads = proc_status(pid, "Threads");
    let rss_kb = proc_status(pid, "VmRSS");
    eprintln!(
        "5,000 idle connections: {threads} threads (before: {threads_before}), RSS {} MiB, {fds} descriptors",
        rss_kb / 1024
    );
    assert!(threads <= 32, "{threads} threads");
    assert!(rss_kb < 256 * 1024, "RSS {rss_kb} KiB");
    // Docker is still served, by a connection of its own.
    assert!(
        activates(&d.sock),
        "not served with 5,000 idle connections open"
    );
    let caps = post(&d.sock, "/NetworkDriver.GetCapabilities", "{}");
    assert!(caps.contains("\"Scope\":\"local\""), "{caps}");
    // The idle ones are closed after the idle timeout.
    std::thread::sleep(Duration::from_secs(6));
    let mut closed = 0;
    for mut c in idle {
        c.set_read_timeout(Some(Duration::from_millis(100)))
            .unwrap();
        let mut b = [0u8; 1];
        if matches!(c.read(&mut b), Ok(0)) {
            closed += 1;
        }
    }
    assert_eq!(closed, 5000, "idle connections left open");
    assert!(open_fds(pid) < 100, "{} descriptors left", open_fds(pid));
}

#[test]
fn connections_over_the_cap_are_closed_and_a_freed_place_serves_again() {
    if !can_run() {
        return;
    }
    let node = Node::new("dcap");
    let d = start(&node, "dcap-plugins", &["--max-connections", "4"]);
    let pid = d.daemon.child.id();
    let fds_before = open_fds(pid);
    let mut held: Vec<UnixStream> = (0..4)
        .map(|_| UnixStream::connect(&d.sock).unwrap())
        .collect();
    let mut accepted = false;
    for _ in 0..100 {
        if open_fds(pid) >= fds_before + 4 {
            accepted = true;
            break;
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    assert!(accepted, "the four connections were not accepted");
    // The fifth is accepted and closed at once: the end of the stream,
    // not a silence the read times out on.
    let mut over = UnixStream::connect(&d.sock).unwrap();
    over.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
    let _ = over.write_all(
        b"POST /Plugin.Activate HTTP/1.1\r\nHost: plugin\r\nContent-Length: 2\r\n\r\n{}",
    );
    let mut b = [0u8; 16];
    match over.read(&mut b) {
        Ok(0) => {}
        Err(e) if e.kind() == std::io::ErrorKind::ConnectionReset => {}
        other => panic!("a connection over the cap was not closed at once: {other:?}"),
    }
    // The four held ones are still served.
    let mut first = held.remove(0);
    first
        .write_all(b"POST /Plugin.Activate HTTP/1.1\r\nHost: plugin\r\nContent-Length: 2\r\n\r\n{}")
        .unwrap();
    first
        .set_read_timeout(Some(Duration::from_secs(5)))
        .unwrap();
    let mut b = [0u8; 12];
    first.read_exact(&mut b).unwrap();
    assert_eq!(&b, b"HTTP/1.1 200");
    // Closing one frees its place for a new client.
    drop(first);
    let mut served = false;
    for _ in 0..50 {
        if activates(&d.sock) {
            served = true;
            break;
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    assert!(served, "a freed place was not given to a new client");
}

#[test]
fn a_body_that_stops_arriving_gets_408() {
    if !can_run() {
        return;
    }
    let node = Node::new("dslow");
    let d = start(&node, "dslow-plugins", &["--body-timeout-ms", "300"]);
    let mut s = UnixStream::connect(&d.sock).unwrap();
    // Ten of the hundred bytes announced, then nothing (the connection
    // stays open, so only the timeout can end the wait).
    s.write_all(
        b"POST /NetworkDriver.CreateNetwork HTTP/1.1\r\nHost: plugin\r\nContent-Length: 100\r\n\r\n{\"Network",
    )
    .unwrap();
    // Well past the body timeout, well short of the default one.
    s.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
    let mut out = vec![0u8; 512];
    let n = s.read(&mut out).expect("no answer to a stalled body");
    let out = String::from_utf8_lossy(&out[..n]).into_owned();
    assert!(out.starts_with("HTTP/1.1 408"), "{out}");
    assert!(out.contains("did not arrive within 300ms"), "{out}");
    assert!(activates(&d.sock), "not served after a stalled body");
}

#[test]
fn sigterm_lets_the_request_in_flight_finish() {
    if !can_run() {
        return;
    }
    let node = Node::new("dterm");
    let mut d = start(&node, "dterm-plugins", &[]);
    // The test holds the state lock, so the request below is certainly in
    // flight — read by the daemon and waiting for the store — when SIGTERM
    // comes, not still queued in the socket.
    let lock_file = std::fs::OpenOptions::new()
        .create(true)
        .truncate(false)
        .write(true)
        .mode(0o600)
        .open(node.state.0.join("lock"))
        .unwrap();
    let lock = nix::fcntl::Flock::lock(lock_file, nix::fcntl::FlockArg::LockExclusive)
        .map_err(|(_, e)| e)
        .unwrap();
    let mut s = UnixStream::connect(&d.sock).unwrap();
    let body =
        r#"{"AddressSpace":"local","Pool":"10.93.0.0/24","SubPool":"","Options":{},"V6":false}"#;
    write!(
        s,
        "POST /IpamDriver.RequestPool HTTP/1.1\r\nHost: plugin\r\nContent-Length: {}\r\n\r\n{body}",
        body.len()
    )
    .unwrap();
    std::thread::sleep(Duration::from_millis(500));
    let pid = nix::unistd::Pid::from_raw(d.daemon.child.id() as i32);
    nix::sys::signal::kill(pid, nix::sys::signal::Signal::SIGTERM).unwrap();
    std::thread::sleep(Duration::from_millis(200));
    drop(lock);
    s.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
    let mut reply = Vec::new();
    let _ = s.read_to_end(&mut reply);
    let reply = String::from_utf8_lossy(&reply);
    assert!(
        reply.starts_with("HTTP/1.1 200") && reply.contains("10.93.0.0/24"),
        "{reply}"
    );
    let status = d.daemon.child.wait().unwrap();
    assert!(status.success(), "{status:?}");
    assert!(!d.sock.exists(), "the socket was left behind");
    // What was answered was committed.
    let state = node.state_json().to_string();
    assert!(state.contains("10.93.0.0/24"), "{state}");
}

/// Inodes of the TCP sockets `pid` listens on (IPv4 and IPv6).
fn tcp_listeners(pid: u32) -> Vec<String> {
    let mut inodes = Vec::new();
    for table in ["tcp", "tcp6"] {
        let text = std::fs::read_to_string(format!("/proc/{pid}/net/{table}")).unwrap_or_default();
        for line in text.lines().skip(1) {
            let f: Vec<&str> = line.split_whitespace().collect();
            // st 0A is LISTEN; the inode is the tenth field.
            if f.len() > 9 && f[3] == "0A" {
                inodes.push(f[9].to_string());
            }
        }
    }
    let own: Vec<String> = std::fs::read_dir(format!("/proc/{pid}/fd"))
        .unwrap()
        .filter_map(|e| std::fs::read_link(e.ok()?.path()).ok())
        .filter_map(|l| {
            let l = l.to_string_lossy().into_owned();
            Some(l.strip_prefix("socket:[")?.strip_suffix(']')?.to_string())
        })
        .collect();
    inodes.retain(|i| own.contains(i));
    inodes
}

#[test]
fn metrics_are_off_unless_asked_for() {
    if !can_run() {
        return;
    }
    let node = Node::new("dnometrics");
    let d = start(&node, "dnometrics-plugins", &[]);
    assert!(activates(&d.sock));
    let pid = d.daemon.child.id();
    assert_eq!(
        tcp_listeners(pid),
        Vec::<String>::new(),
        "a TCP listener without --metrics-addr"
    );
}

#[test]
fn metrics_count_requests_by_kind_and_result() {
    if !can_run() {
        return;
    }
    let node = Node::new("dmetrics");
    node.node.ip(&["link", "set", "lo", "up"]);
    let plugins = TempDir::new("dmetrics-plugins");
    // The daemon in the node's namespace, so its metrics port is there too.
    let child = Command::new("ip")
        .args(["netns", "exec", &node.node.name])
        .arg(netshim_bin())
        .env("NETSHIM_STATE_DIR", &node.state.0)
        .env("NETSHIM_CACHE_DIR", netshim_tests::cache_dir())
        .args(["daemon", "--metrics-addr", "127.0.0.1:9469", "--plugin-dir"])
        .arg(&plugins.0)
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let _daemon = Daemon {
        child,
        name: "netshim",
    };
    let sock = plugins.0.join("netshim-bridge.sock");
    wait_for(&sock, "netshim's plugin socket");
    assert!(activates(&sock));
    let pool =
        r#"{"AddressSpace":"local","Pool":"10.94.0.0/24","SubPool":"","Options":{},"V6":false}"#;
    assert!(post(&sock, "/IpamDriver.RequestPool", pool).starts_with("HTTP/1.1 200"));
    assert!(post(&sock, "/IpamDriver.RequestPool", "{").starts_with("HTTP/1.1 500"));
    assert!(post(&sock, "/No.Such", "{}").starts_with("HTTP/1.1 404"));
    let text = node.node.http_get("127.0.0.1:9469", "/metrics");
    // With --metrics-addr, exactly that one listener (what the test without
    // it counts is seen).
    assert_eq!(tcp_listeners(_daemon.child.id()).len(), 1);
    for line in [
        r#"netshim_operations_total{kind="Plugin.Activate",result="2xx"} 1"#,
        r#"netshim_operations_total{kind="IpamDriver.RequestPool",result="2xx"} 1"#,
        r#"netshim_operations_total{kind="IpamDriver.RequestPool",result="5xx"} 1"#,
        r#"netshim_operations_total{kind="other",result="4xx"} 1"#,
        r#"netshim_operation_duration_seconds_count{kind="IpamDriver.RequestPool"} 2"#,
    ] {
        assert!(text.contains(line), "{line} missing from:\n{text}");
    }
    let store: u64 = text
        .lines()
        .find_map(|l| l.strip_prefix("netshim_store_bytes "))
        .and_then(|v| v.trim().parse().ok())
        .unwrap_or(0);
    assert!(store > 0, "{text}");
}
