//! The plugin sockets, served by hyper on a small tokio runtime: HTTP is
//! hyper's, netshim only answers. Every connection is bounded — a cap on
//! how many are open, a deadline for each request's headers (which also
//! closes idle keep-alive connections), a deadline and a size limit for its
//! body — and the CNM work runs on tokio's bounded blocking pool, so idle
//! or hostile clients cost file descriptors and a few kilobytes each, never
//! a thread. A panic while answering becomes a 500 for that request only.
//! SIGTERM or SIGINT stops accepting, lets requests in flight finish (up to
//! a grace period) and removes the sockets.

use std::convert::Infallible;
use std::net::SocketAddr;
use std::os::unix::fs::{FileTypeExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use http_body_util::{BodyExt, Full, Limited};
use hyper::body::{Bytes, Incoming};
use hyper::header::{HeaderValue, CONTENT_TYPE};
use hyper::server::conn::http1;
use hyper::service::service_fn;
use hyper::{Method, Request, Response, StatusCode};
use hyper_util::rt::{TokioIo, TokioTimer};
use hyper_util::server::graceful::{GracefulConnection, GracefulShutdown};
use tokio::io::{AsyncRead, AsyncWrite};
use tokio::net::{TcpListener, UnixListener, UnixStream};
use tokio::signal::unix::{signal, SignalKind};
use tokio::sync::{mpsc, Semaphore};

use super::{api, DockerError};
use crate::cnm::Core;

/// What one daemon allows its clients.
#[derive(Debug, Clone, Copy)]
pub struct Limits {
    /// Open connections, all sockets together; more are closed at once.
    pub connections: usize,
    /// For a request's headers to arrive, counted from when the connection
    /// is ready for one: an idle keep-alive connection is closed after it.
    pub header_timeout: Duration,
    /// For a request's body to arrive.
    pub body_timeout: Duration,
    /// Bytes of a request body (Docker's are small JSON documents).
    pub body_bytes: usize,
    /// How long requests in flight may take to finish after SIGTERM.
    pub shutdown_grace: Duration,
}

impl Default for Limits {
    fn default() -> Limits {
        Limits {
            connections: 8192,
            header_timeout: Duration::from_secs(30),
            body_timeout: Duration::from_secs(30),
            body_bytes: 4 << 20,
            shutdown_grace: Duration::from_secs(30),
        }
    }
}

/// CNM requests at once; more wait for a free thread.
const BLOCKING_THREADS: usize = 16;
/// Buffer for one connection's request head.
const HEAD_BYTES: usize = 64 << 10;

fn socket_error(path: &Path) -> impl Fn(std::io::Error) -> DockerError + '_ {
    move |source| DockerError::Socket {
        path: path.into(),
        source,
    }
}

/// Serve every driver until SIGTERM/SIGINT.
pub fn serve(
    core: Arc<Core>,
    plugin_dir: &Path,
    prefix: &str,
    limits: Limits,
    metrics_addr: Option<SocketAddr>,
) -> Result<(), DockerError> {
    raise_fd_limit();
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .max_blocking_threads(BLOCKING_THREADS)
        .thread_name("netshim-daemon")
        .enable_all()
        .build()
        .map_err(socket_error(plugin_dir))?;
    rt.block_on(async {
        if let Some(addr) = metrics_addr {
            let listener = TcpListener::bind(addr)
                .await
                .map_err(|source| DockerError::Metrics { addr, source })?;
            tracing::info!(%addr, "serving metrics at /metrics");
            tokio::spawn(serve_metrics(listener, core.clone(), limits));
        }
        run(core, plugin_dir, prefix, limits).await
    })
}

/// Each connection is a descriptor: let the daemon use what the hard limit
/// allows, not the default soft 1,024.
fn raise_fd_limit() {
    use nix::sys::resource::{getrlimit, setrlimit, Resource};
    if let Ok((soft, hard)) = getrlimit(Resource::RLIMIT_NOFILE) {
        if soft < hard {
            if let Err(e) = setrlimit(Resource::RLIMIT_NOFILE, hard, hard) {
                tracing::debug!(error = %e, "file descriptor limit stays {soft}");
            }
        }
    }
}

fn bind(path: &Path) -> Result<UnixListener, DockerError> {
    let err = socket_error(path);
    // A socket left by an earlier run (killed, or crashed) is replaced; any
    // other file by that name is not ours to remove.
    if let Ok(meta) = std::fs::symlink_metadata(path) {
        if meta.file_type().is_socket() {
            std::fs::remove_file(path).map_err(&err)?;
        }
    }
    let listener = UnixListener::bind(path).map_err(&err)?;
    std::fs::set_permissions(path, std::fs::Permissions::from_mode(0o660)).map_err(&err)?;
    Ok(listener)
}

async fn run(
    core: Arc<Core>,
    plugin_dir: &Path,
    prefix: &str,
    limits: Limits,
) -> Result<(), DockerError> {
    std::fs::create_dir_all(plugin_dir).map_err(socket_error(plugin_dir))?;
    let mut term = signal(SignalKind::terminate()).map_err(socket_error(plugin_dir))?;
    let mut int = signal(SignalKind::interrupt()).map_err(socket_error(plugin_dir))?;
    // Accepted connections of every socket reach one loop, which owns the
    // connection cap and the graceful shutdown.
    let (tx, mut rx) = mpsc::channel::<(UnixStream, Arc<str>)>(64);
    let mut sockets: Vec<PathBuf> = Vec::new();
    let mut acceptors = Vec::new();
    for driver in core.drivers().keys() {
        // Load (and if needed compile) now, not on Docker's first request.
        if let Err(e) = core.guest(driver) {
            tracing::error!(driver, error = %e, "driver not served");
            continue;
        }
        let path = plugin_dir.join(format!("{prefix}{driver}.sock"));
        let listener = bind(&path)?;
        tracing::info!(socket = %path.display(), plugin = %format!("{prefix}{driver}"), "serving Docker NetworkDriver and IpamDriver");
        sockets.push(path);
        let tx = tx.clone();
        let driver: Arc<str> = driver.as_str().into();
        acceptors.push(tokio::spawn(async move {
            loop {
                match listener.accept().await {
                    Ok((stream, _)) => {
                        if tx.send((stream, driver.clone())).await.is_err() {
                            return;
                        }
                    }
                    Err(e) => {
                        // Out of descriptors, most likely: wait, do not spin.
                        tracing::warn!(error = %e, "accept");
                        tokio::time::sleep(Duration::from_millis(100)).await;
                    }
                }
            }
        }));
    }
    drop(tx);

    let graceful = GracefulShutdown::new();
    let open = Arc::new(Semaphore::new(limits.connections));
    loop {
        tokio::select! {
            accepted = rx.recv() => {
                let Some((stream, driver)) = accepted else { break };
                let Ok(permit) = open.clone().try_acquire_owned() else {
                    tracing::warn!(limit = limits.connections, "connection cap reached; closing a new connection");
                    continue;
                };
                let conn = graceful.watch(connection(stream, core.clone(), driver, limits));
                tokio::spawn(async move {
                    if let Err(e) = conn.await {
                        tracing::debug!(error = %e, "connection ended");
                    }
                    drop(permit);
                });
            }
            _ = term.recv() => { tracing::info!("SIGTERM: stopping"); break }
            _ = int.recv() => { tracing::info!("SIGINT: stopping"); break }
        }
    }
    for a in &acceptors {
        a.abort();
    }
    for s in &sockets {
        let _ = std::fs::remove_file(s);
    }
    tokio::select! {
        _ = graceful.shutdown() => tracing::info!("every request in flight finished"),
        _ = tokio::time::sleep(limits.shutdown_grace) => {
            tracing::warn!(grace = ?limits.shutdown_grace, "requests still running at the end of the grace period");
        }
    }
    Ok(())
}

/// One client connection: HTTP/1.1 by hyper, answered by the driver's
/// plugin API. Any byte stream will do (the fuzzer's is in memory).
pub fn connection<IO>(
    io: IO,
    core: Arc<Core>,
    driver: Arc<str>,
    limits: Limits,
) -> impl GracefulConnection<Error = hyper::Error> + Send
where
    IO: AsyncRead + AsyncWrite + Unpin + Send + 'static,
{
    let service = service_fn(move |req| {
        let (core, driver) = (core.clone(), driver.clone());
        async move { Ok::<_, Infallible>(answer(core, driver, limits, req).await) }
    });
    http1::Builder::new()
        .timer(TokioTimer::new())
        .header_read_timeout(limits.header_timeout)
        .max_buf_size(HEAD_BYTES)
        // A client may close its side once the request is sent.
        .half_close(true)
        .serve_connection(TokioIo::new(io), service)
}

fn json(status: StatusCode, body: &serde_json::Value) -> Response<Full<Bytes>> {
    let mut r = Response::new(Full::new(Bytes::from(body.to_string())));
    *r.status_mut() = status;
    r.headers_mut().insert(
        CONTENT_TYPE,
        HeaderValue::from_static("application/vnd.docker.plugins.v1+json"),
    );
    r
}

fn refuse(status: StatusCode, message: String) -> Response<Full<Bytes>> {
    json(status, &serde_json::json!({ "Err": message }))
}

async fn answer(
    core: Arc<Core>,
    driver: Arc<str>,
    limits: Limits,
    req: Request<Incoming>,
) -> Response<Full<Bytes>> {
    let started = std::time::Instant::now();
    let kind = api::known_method(req.uri().path()).unwrap_or("other");
    let r = respond(core.clone(), driver, limits, req).await;
    core.metrics()
        .operation(kind, r.status().as_u16(), started.elapsed());
    r
}

async fn respond(
    core: Arc<Core>,
    driver: Arc<str>,
    limits: Limits,
    req: Request<Incoming>,
) -> Response<Full<Bytes>> {
    let path = req.uri().path().to_string();
    if req.method() != Method::POST {
        return refuse(
            StatusCode::NOT_FOUND,
            format!("{} {path}: the plugin API takes POST", req.method()),
        );
    }
    let body = Limited::new(req.into_body(), limits.body_bytes).collect();
    let body = match tokio::time::timeout(limits.body_timeout, body).await {
        Err(_) => {
            return refuse(
                StatusCode::REQUEST_TIMEOUT,
                format!(
                    "{path}: the request body did not arrive within {:?}",
                    limits.body_timeout
                ),
            )
        }
        Ok(Err(e)) if e.is::<http_body_util::LengthLimitError>() => {
            return refuse(
                StatusCode::PAYLOAD_TOO_LARGE,
                format!(
                    "{path}: request body larger than {} bytes",
                    limits.body_bytes
                ),
            )
        }
        Ok(Err(e)) => {
            return refuse(
                StatusCode::BAD_REQUEST,
                format!("{path}: reading the request body: {e}"),
            )
        }
        Ok(Ok(b)) => b.to_bytes(),
    };
    let handled = tokio::task::spawn_blocking({
        let path = path.clone();
        move || api::handle(&core, &driver, &path, &body)
    })
    .await;
    match handled {
        Ok(reply) => {
            tracing::debug!(path = %path, status = reply.status, "docker request");
            let status =
                StatusCode::from_u16(reply.status).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR);
            json(status, &reply.body)
        }
        Err(e) => {
            tracing::error!(path = %path, error = %e, "answering a request failed");
            refuse(
                StatusCode::INTERNAL_SERVER_ERROR,
                format!("{path}: netshim failed while answering; see its log"),
            )
        }
    }
}

/// `GET /metrics` in Prometheus' text format; nothing else.
async fn serve_metrics(listener: TcpListener, core: Arc<Core>, limits: Limits) {
    let open = Arc::new(Semaphore::new(64));
    loop {
        let stream = match listener.accept().await {
            Ok((s, _)) => s,
            Err(e) => {
                tracing::warn!(error = %e, "metrics accept");
                tokio::time::sleep(Duration::from_millis(100)).await;
                continue;
            }
        };
        let Ok(permit) = open.clone().try_acquire_owned() else {
            continue;
        };
        let core = core.clone();
        let service = service_fn(move |req: Request<Incoming>| {
            let core = core.clone();
            async move {
                let r = if req.method() == Method::GET && req.uri().path() == "/metrics" {
                    let mut r = Response::new(Full::new(Bytes::from(
                        core.metrics().render(core.store_bytes()),
                    )));
                    r.headers_mut().insert(
                        CONTENT_TYPE,
                        HeaderValue::from_static("text/plain; version=0.0.4; charset=utf-8"),
                    );
                    r
                } else {
                    let mut r = Response::new(Full::new(Bytes::from_static(b"see /metrics\n")));
                    *r.status_mut() = StatusCode::NOT_FOUND;
                    r
                };
                Ok::<_, Infallible>(r)
            }
        });
        let conn = http1::Builder::new()
            .timer(TokioTimer::new())
            .header_read_timeout(limits.header_timeout)
            .max_buf_size(HEAD_BYTES)
            .serve_connection(TokioIo::new(stream), service);
        tokio::spawn(async move {
            let _ = conn.await;
            drop(permit);
        });
    }
}
