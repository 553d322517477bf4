//! Generators of what a client could send the plugin socket: HTTP framed
//! right or wrong (lengths that lie, chunk sizes of any size, pipelining,
//! plain bytes) around JSON bodies built from Docker's own field names with
//! values of every type. Shared by tests/http_props.rs and the fuzz-http
//! command, which drive them through `netshim::docker::connection` in
//! memory against a core on the recording fake.

use std::sync::Arc;

use netshim::cnm::Core;
use netshim::docker::{connection, Limits, METHODS};
use netshim::runtime::{Limits as GuestLimits, Runtime};
use netshim_host_api::kernel::fake::FakeKernel;
use proptest::prelude::*;
use serde_json::Value;
use tokio::io::{AsyncReadExt, AsyncWriteExt};

const FIELDS: &[&str] = &[
    "NetworkID",
    "EndpointID",
    "SandboxKey",
    "Options",
    "IPv4Data",
    "IPv6Data",
    "Interface",
    "Address",
    "AddressIPv6",
    "MacAddress",
    "Pool",
    "SubPool",
    "PoolID",
    "AddressSpace",
    "V6",
    "Gateway",
    "AuxAddresses",
    "com.docker.network.portmap",
    "com.docker.network.generic",
    "com.docker.network.enable_ipv6",
    "Proto",
    "Port",
    "HostIP",
    "HostPort",
    "HostPortEnd",
    "RequestAddressType",
    "mtu",
];

/// A JSON string that is often almost right: a CIDR, an address, a MAC,
/// an id, or anything.
fn text() -> impl Strategy<Value = String> {
    prop_oneof![
        (0u16..300, 0u16..300, 0u16..300, 0u16..300, 0u8..40)
            .prop_map(|(a, b, c, d, l)| format!("{a}.{b}.{c}.{d}/{l}")),
        (0u16..300, 0u16..300).prop_map(|(c, d)| format!("10.77.{c}.{d}")),
        "[0-9a-f]{2}(:[0-9a-f]{1,3}){0,6}",
        "[0-9a-f]{0,70}",
        Just("com.docker.network.gateway".to_string()),
        Just("10.77.0.0/24".to_string()),
        ".{0,40}",
    ]
}

fn leaf() -> impl Strategy<Value = Value> {
    prop_oneof![
        3 => text().prop_map(Value::String),
        1 => any::<i64>().prop_map(Value::from),
        1 => any::<u64>().prop_map(Value::from),
        1 => any::<f64>().prop_map(|f| serde_json::Number::from_f64(f).map(Value::Number).unwrap_or(Value::Null)),
        1 => any::<bool>().prop_map(Value::Bool),
        1 => Just(Value::Null),
    ]
}

/// A JSON value shaped like Docker's requests: objects keyed by its field
/// names, nested a few levels, arrays of the same.
pub fn body() -> impl Strategy<Value = Value> {
    leaf().prop_recursive(4, 48, 8, |inner| {
        prop_oneof![
            3 => prop::collection::vec((prop::sample::select(FIELDS), inner.clone()), 0..8)
                .prop_map(|kv| Value::Object(kv.into_iter().map(|(k, v)| (k.to_string(), v)).collect())),
            1 => prop::collection::vec(inner, 0..6).prop_map(Value::Array),
        ]
    })
}

/// How the body is framed.
#[derive(Debug, Clone)]
enum Framing {
    Length,
    WrongLength(u64),
    Chunked(Vec<usize>),
    BadChunk(String),
    None,
}

fn framing() -> impl Strategy<Value = Framing> {
    prop_oneof![
        6 => Just(Framing::Length),
        1 => any::<u64>().prop_map(Framing::WrongLength),
        2 => prop::collection::vec(1usize..64, 0..6).prop_map(Framing::Chunked),
        1 => prop_oneof![
            Just("ffffffffffffffff".to_string()),
            Just("-1".to_string()),
            "[0-9a-zA-Z;= ]{0,20}",
        ].prop_map(Framing::BadChunk),
        1 => Just(Framing::None),
    ]
}

fn one_request() -> impl Strategy<Value = Vec<u8>> {
    let method =
        prop_oneof![8 => Just("POST".to_string()), 1 => Just("GET".to_string()), 1 => "[A-Z]{0,8}"];
    let path = prop_oneof![8 => prop::sample::select(METHODS).prop_map(|m| format!("/{m}")), 1 => "/[!-~]{0,40}"];
    let headers = prop::collection::vec(("[A-Za-z-]{1,20}", "[ -~]{0,60}"), 0..4);
    let raw_body = prop_oneof![
        8 => body().prop_map(|v| v.to_string().into_bytes()),
        1 => prop::collection::vec(any::<u8>(), 0..256),
    ];
    (method, path, headers, raw_body, framing()).prop_map(|(m, p, hs, b, f)| {
        let mut out = format!("{m} {p} HTTP/1.1\r\nHost: plugin\r\n").into_bytes();
        for (k, v) in hs {
            out.extend(format!("{k}: {v}\r\n").as_bytes());
        }
        match f {
            Framing::Length => {
                out.extend(format!("Content-Length: {}\r\n\r\n", b.len()).as_bytes());
                out.extend(&b);
            }
            Framing::WrongLength(n) => {
                out.extend(format!("Content-Length: {n}\r\n\r\n").as_bytes());
                out.extend(&b);
            }
            Framing::Chunked(sizes) => {
                out.extend(b"Transfer-Encoding: chunked\r\n\r\n");
                let mut rest: &[u8] = &b;
                for s in sizes {
                    let (c, r) = rest.split_at(s.min(rest.len()));
                    out.extend(format!("{:x}\r\n", c.len()).as_bytes());
                    out.extend(c);
                    out.extend(b"\r\n");
                    rest = r;
                }
                if !rest.is_empty() {
                    out.extend(format!("{:x}\r\n", rest.len()).as_bytes());
                    out.extend(rest);
                    out.extend(b"\r\n");
                }
                out.extend(b"0\r\n\r\n");
            }
            Framing::BadChunk(size) => {
                out.extend(b"Transfer-Encoding: chunked\r\n\r\n");
                out.extend(format!("{size}\r\n").as_bytes());
                out.extend(&b);
                out.extend(b"\r\n0\r\n\r\n");
            }
            Framing::None => {
                out.extend(b"\r\n");
                out.extend(&b);
            }
        }
        out
    })
}

/// What one client sends on one connection: one or more requests, or
/// bytes that are not HTTP at all.
pub fn client() -> impl Strategy<Value = Vec<u8>> {
    prop_oneof![
        8 => prop::collection::vec(one_request(), 1..3).prop_map(|rs| rs.concat()),
        1 => prop::collection::vec(any::<u8>(), 0..512),
    ]
}

/// A daemon's core on the recording fake, and a runtime to serve it on.
pub struct FakeDaemon {
    core: Arc<Core>,
    rt: tokio::runtime::Runtime,
    limits: Limits,
}

impl FakeDaemon {
    pub fn new(state_dir: &std::path::Path) -> FakeDaemon {
        let cache = std::env::temp_dir().join("netshim-http-fuzz-cache");
        let runtime = Runtime::new(GuestLimits::default(), Some(cache)).unwrap();
        let core = Core::new(
            runtime,
            Arc::new(FakeKernel::new()),
            &state_dir.join("state"),
            Vec::new(),
        )
        .unwrap();
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .unwrap();
        let limits = Limits {
            header_timeout: std::time::Duration::from_millis(500),
            body_timeout: std::time::Duration::from_millis(500),
            ..Limits::default()
        };
        FakeDaemon {
            core: Arc::new(core),
            rt,
            limits,
        }
    }

    /// Send `bytes` on one connection, close the sending side, read what
    /// comes back. Err when the connection itself failed in a way no client
    /// can cause: a panic in hyper's task, a panic while answering (the
    /// plugin API runs on a blocking thread, whose panic the daemon turns
    /// into a 500 saying it failed), a response that is not HTTP.
    pub fn exchange(&self, bytes: &[u8]) -> Result<Vec<u8>, String> {
        let (mut client, server) = tokio::io::duplex(64 << 10);
        let conn = connection(server, self.core.clone(), "bridge".into(), self.limits);
        self.rt
            .block_on(async {
                let served = tokio::spawn(conn);
                let write = async {
                    let _ = client.write_all(bytes).await;
                    let _ = client.shutdown().await;
                    let mut out = Vec::new();
                    let _ = client.read_to_end(&mut out).await;
                    out
                };
                let out = write.await;
                match served.await {
                    Err(e) if e.is_panic() => Err("the connection task panicked".to_string()),
                    _ => Ok(out),
                }
            })
            .and_then(|out| {
                if contains(&out, PANICKED) {
                    Err(format!(
                        "answering panicked: {:?}",
                        String::from_utf8_lossy(&out[..out.len().min(200)])
                    ))
                } else if out.is_empty() || out.starts_with(b"HTTP/1.1 ") {
                    Ok(out)
                } else {
                    Err(format!(
                        "an answer that is not HTTP: {:?}",
                        String::from_utf8_lossy(&out[..out.len().min(80)])
                    ))
                }
            })
    }

    /// The daemon still answers a good request.
    pub fn serves(&self) -> bool {
        self.exchange(b"POST /Plugin.Activate HTTP/1.1\r\nContent-Length: 2\r\n\r\n{}")
            .map(|o| o.starts_with(b"HTTP/1.1 200"))
            .unwrap_or(false)
    }
}

/// What the daemon answers when answering a request panicked
/// (`shim/src/docker/server.rs`).
const PANICKED: &[u8] = b"netshim failed while answering";

fn contains(haystack: &[u8], needle: &[u8]) -> bool {
    haystack.windows(needle.len()).any(|w| w == needle)
}
