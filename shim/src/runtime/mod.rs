//! The guest runtime: wasmtime with the component model, components compiled
//! once and cached precompiled, `InstancePre` + pooling allocator, and for
//! every call a fresh `Store` with an epoch deadline and a memory cap.
//! A guest sees the netshim host API and a deny-all WASI (no files,
//! sockets, environment or arguments), nothing else.

mod cache;

use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::thread;
use std::time::{Duration, Instant};

use netshim_host_api::bindings::{Plugin, PluginPre};
use netshim_host_api::host::{ClusterAccess, HostState, SandboxHandle};
use netshim_host_api::journal::Journal;
use netshim_host_api::store::Store as KvStore;
use wasmtime::component::{HasSelf, Linker, Resource, ResourceTable};
use wasmtime::{Config, Engine, InstanceAllocationStrategy, PoolingAllocationConfig, Store};
use wasmtime_wasi::{WasiCtx, WasiCtxBuilder, WasiCtxView, WasiView};

/// Interval of the epoch ticker: the granularity of call deadlines.
const EPOCH_TICK: Duration = Duration::from_millis(5);

/// The WIT versions the host links, oldest first. A guest's version is the
/// newest whose own interfaces it imports.
pub const WIT_PACKAGES: [&str; 2] = ["netshim:plugin@0.1.0", "netshim:plugin@0.2.0"];

/// The WIT package a guest targets, from the interfaces it imports.
pub fn wit_package(imports: &[String]) -> &'static str {
    if imports
        .iter()
        .any(|i| i.starts_with("netshim:plugin/") && i.ends_with("@0.2.0"))
    {
        WIT_PACKAGES[1]
    } else {
        WIT_PACKAGES[0]
    }
}

#[derive(Debug, thiserror::Error)]
pub enum RuntimeError {
    #[error("wasm engine: {0:#}")]
    Engine(wasmtime::Error),
    #[error("guest {guest}: not a valid component: {message}")]
    Invalid { guest: String, message: String },
    #[error("guest {guest} is refused: {message}")]
    Refused { guest: String, message: String },
    #[error("guest {guest} {call}: {message}")]
    Trap {
        guest: String,
        call: String,
        reason: TrapReason,
        message: String,
    },
}

/// Why a guest call was stopped, for decisions and metrics (the message
/// says it to people).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TrapReason {
    Deadline,
    Memory,
    /// The guest panicked (`unreachable`).
    Panic,
    /// Any other trap, or the host stopping the call (a host invariant).
    Trap,
}

impl TrapReason {
    pub fn as_str(self) -> &'static str {
        match self {
            TrapReason::Deadline => "deadline",
            TrapReason::Memory => "memory",
            TrapReason::Panic => "panic",
            TrapReason::Trap => "trap",
        }
    }
}

#[derive(Debug, Clone)]
pub struct Limits {
    /// Wall-clock budget of one guest call.
    pub deadline: Duration,
    /// Linear memory one guest call may grow to.
    pub memory_bytes: usize,
    /// Instances from a pool set up once (the daemon, the benchmark), or
    /// allocated per call (a CLI or hook process makes three calls and
    /// exits: setting up and tearing down a pool would cost it more).
    pub pooled: bool,
}

impl Default for Limits {
    fn default() -> Limits {
        Limits {
            deadline: Duration::from_secs(2),
            memory_bytes: 64 << 20,
            pooled: true,
        }
    }
}

/// What a store carries for one call.
pub struct CallData {
    pub host: HostState,
    wasi: WasiCtx,
    wasi_table: ResourceTable,
    cap: MemoryCap,
}

/// Enforces the memory cap per call and remembers that a guest hit it, so
/// the error can say so instead of "unreachable".
struct MemoryCap {
    bytes: usize,
    hit: bool,
}

impl wasmtime::ResourceLimiter for MemoryCap {
    fn memory_growing(
        &mut self,
        _current: usize,
        desired: usize,
        _maximum: Option<usize>,
    ) -> wasmtime::Result<bool> {
        if desired > self.bytes {
            self.hit = true;
            return Ok(false);
        }
        Ok(true)
    }

    fn table_growing(
        &mut self,
        _current: usize,
        desired: usize,
        _maximum: Option<usize>,
    ) -> wasmtime::Result<bool> {
        Ok(desired <= 1 << 16)
    }
}

impl WasiView for CallData {
    fn ctx(&mut self) -> WasiCtxView<'_> {
        WasiCtxView {
            ctx: &mut self.wasi,
            table: &mut self.wasi_table,
        }
    }
}

/// A loaded, linked guest, ready to instantiate in microseconds.
#[derive(Clone)]
pub struct Guest {
    pub name: String,
    pub digest: String,
    /// Interfaces the component imports and exports, as it declares them.
    pub imports: Vec<String>,
    pub exports: Vec<String>,
    pre: PluginPre<CallData>,
}

pub struct Runtime {
    engine: Engine,
    linker: Linker<CallData>,
    limits: Limits,
    cache_dir: Option<PathBuf>,
    stop: Arc<AtomicBool>,
}

impl Drop for Runtime {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
    }
}

/// The outcome of one guest call.
pub struct CallOutcome<R> {
    /// The guest's answer, or why there is none (trap, deadline, memory).
    pub result: Result<R, RuntimeError>,
    /// The store session, handed back for the caller's next step.
    pub store: Box<dyn KvStore + Send>,
    /// What the call changed; the caller rolls it back on failure.
    pub journal: Journal,
    /// The cluster session, handed back like the store's.
    pub cluster: ClusterAccess,
    /// Route prefixes the driver claimed.
    pub claims: Vec<ipnet::IpNet>,
    /// Time spent in wasm: instantiation plus the call (host calls included).
    pub wasm_time: Duration,
    pub instantiate_time: Duration,
}

impl Runtime {
    pub fn new(limits: Limits, cache_dir: Option<PathBuf>) -> Result<Runtime, RuntimeError> {
        let mut pool = PoolingAllocationConfig::new();
        pool.total_component_instances(16)
            .total_core_instances(64)
            .total_memories(16)
            .total_tables(64)
            .total_stacks(16)
            .max_memory_size(limits.memory_bytes)
            // A driver call touches well under a few MiB: resetting that much
            // with memset is cheaper than madvise + page faults next call.
            .linear_memory_keep_resident(1 << 20)
            .table_keep_resident(64 << 10);
        let mut config = Config::new();
        config
            .wasm_component_model(true)
            .epoch_interruption(true)
            .memory_reservation(limits.memory_bytes as u64)
            .memory_guard_size(64 << 10)
            .memory_reservation_for_growth(0)
            .allocation_strategy(if limits.pooled {
                InstanceAllocationStrategy::Pooling(pool)
            } else {
                InstanceAllocationStrategy::OnDemand
            });
        let engine = Engine::new(&config).map_err(RuntimeError::Engine)?;
        tracing::debug!("engine ready");
        let mut linker = Linker::new(&engine);
        // Every released WIT version: 0.1's world, then what 0.2 adds (its
        // other interfaces are 0.1's, linked once).
        Plugin::add_to_linker::<CallData, HasSelf<HostState>>(&mut linker, |d| &mut d.host)
            .map_err(RuntimeError::Engine)?;
        {
            use netshim_host_api::bindings::v0_2::netshim::plugin0_2_0::{
                bgp, bridge, cluster, netfilter, node, udp_tunnel,
            };
            netfilter::add_to_linker::<CallData, HasSelf<HostState>>(&mut linker, |d| &mut d.host)
                .map_err(RuntimeError::Engine)?;
            node::add_to_linker::<CallData, HasSelf<HostState>>(&mut linker, |d| &mut d.host)
                .map_err(RuntimeError::Engine)?;
            cluster::add_to_linker::<CallData, HasSelf<HostState>>(&mut linker, |d| &mut d.host)
                .map_err(RuntimeError::Engine)?;
            bridge::add_to_linker::<CallData, HasSelf<HostState>>(&mut linker, |d| &mut d.host)
                .map_err(RuntimeError::Engine)?;
            udp_tunnel::add_to_linker::<CallData, HasSelf<HostState>>(&mut linker, |d| &mut d.host)
                .map_err(RuntimeError::Engine)?;
            bgp::add_to_linker::<CallData, HasSelf<HostState>>(&mut linker, |d| &mut d.host)
                .map_err(RuntimeError::Engine)?;
        }
        wasmtime_wasi::p2::add_to_linker_sync(&mut linker).map_err(RuntimeError::Engine)?;

        let stop = Arc::new(AtomicBool::new(false));
        let ticker_engine = engine.clone();
        let ticker_stop = stop.clone();
        thread::Builder::new()
            .name("netshim-epoch".into())
            .spawn(move || {
                while !ticker_stop.load(Ordering::Relaxed) {
                    thread::sleep(EPOCH_TICK);
                    ticker_engine.increment_epoch();
                }
            })
            .map_err(|e| RuntimeError::Engine(wasmtime::Error::new(e)))?;
        Ok(Runtime {
            engine,
            linker,
            limits,
            cache_dir,
            stop,
        })
    }

    pub fn limits(&self) -> &Limits {
        &self.limits
    }

    /// Compile (or load from the cache) and link a guest. Refuses, naming
    /// the import, a guest that needs anything the host does not provide.
    pub fn load(&self, name: &str, wasm: &[u8]) -> Result<Guest, RuntimeError> {
        let (component, digest) =
            cache::component(&self.engine, self.cache_dir.as_deref(), name, wasm)?;
        let ty = component.component_type();
        let imports = ty
            .imports(&self.engine)
            .map(|(n, _)| n.to_string())
            .collect();
        let exports = ty
            .exports(&self.engine)
            .map(|(n, _)| n.to_string())
            .collect();
        let refused = |message: String| RuntimeError::Refused {
            guest: name.into(),
            message,
        };
        let pre = self
            .linker
            .instantiate_pre(&component)
            .map_err(|e| refused(format!("{e:#}")))?;
        let pre = PluginPre::new(pre).map_err(|e| {
            refused(format!(
                "it does not export the netshim driver interfaces (driver, ipam, reconcile @0.1.0): {e:#}"
            ))
        })?;
        Ok(Guest {
            name: name.into(),
            digest,
            imports,
            exports,
            pre,
        })
    }

    /// Load a guest from a file.
    pub fn load_file(&self, path: &Path) -> Result<Guest, RuntimeError> {
        let name = path
            .file_stem()
            .map(|s| s.to_string_lossy().into_owned())
            .unwrap_or_else(|| "guest".into());
        let wasm = std::fs::read(path).map_err(|e| RuntimeError::Invalid {
            guest: path.display().to_string(),
            message: e.to_string(),
        })?;
        self.load(&name, &wasm)
    }

    /// One guest call in a fresh store. `sandboxes` are lent to the call and
    /// handed to `f` as resources.
    pub fn call<R>(
        &self,
        guest: &Guest,
        mut host: HostState,
        call: &str,
        sandboxes: &[(netshim_host_api::kernel::NsId, &Path)],
        f: impl FnOnce(&Plugin, &mut Store<CallData>, &[Resource<SandboxHandle>]) -> wasmtime::Result<R>,
    ) -> CallOutcome<R> {
        let started = Instant::now();
        let mut handles = Vec::with_capacity(sandboxes.len());
        for (ns, path) in sandboxes {
            match host.grant_sandbox(*ns, path) {
                Ok(h) => handles.push(h),
                Err(e) => return self.failed(host, guest, call, e, started),
            }
        }
        let cap = MemoryCap {
            bytes: self.limits.memory_bytes,
            hit: false,
        };
        let data = CallData {
            host,
            wasi: deny_all_wasi(),
            wasi_table: ResourceTable::new(),
            cap,
        };
        let mut store = Store::new(&self.engine, data);
        store.limiter(|d| &mut d.cap);
        let ticks = (self.limits.deadline.as_micros() / EPOCH_TICK.as_micros()).max(1) as u64;
        store.set_epoch_deadline(ticks);
        let instance = guest.pre.instantiate(&mut store);
        let instantiate_time = started.elapsed();
        let result = instance.and_then(|plugin| f(&plugin, &mut store, &handles));
        let wasm_time = started.elapsed();
        let CallData { host, cap, .. } = store.into_data();
        let done = host.finish();
        let result = result.map_err(|e| self.explain(guest, call, e, wasm_time, cap.hit));
        CallOutcome {
            result,
            store: done.store,
            journal: done.journal,
            cluster: done.cluster,
            claims: done.claims,
            wasm_time,
            instantiate_time,
        }
    }

    fn failed<R>(
        &self,
        host: HostState,
        guest: &Guest,
        call: &str,
        e: wasmtime::Error,
        started: Instant,
    ) -> CallOutcome<R> {
        let done = host.finish();
        CallOutcome {
            result: Err(RuntimeError::Trap {
                guest: guest.name.clone(),
                call: call.into(),
                reason: TrapReason::Trap,
                message: format!("{e:#}"),
            }),
            store: done.store,
            journal: done.journal,
            cluster: done.cluster,
            claims: done.claims,
            wasm_time: started.elapsed(),
            instantiate_time: Duration::ZERO,
        }
    }

    /// Turn a trap into a message that says what the guest did.
    fn explain(
        &self,
        guest: &Guest,
        call: &str,
        e: wasmtime::Error,
        elapsed: Duration,
        memory_cap_hit: bool,
    ) -> RuntimeError {
        let (reason, message) = match e.downcast_ref::<wasmtime::Trap>() {
            _ if memory_cap_hit => (
                TrapReason::Memory,
                format!(
                    "exceeded its memory cap of {} MiB and was stopped",
                    self.limits.memory_bytes >> 20
                ),
            ),
            Some(wasmtime::Trap::Interrupt) => (
                TrapReason::Deadline,
                format!(
                    "stopped at its deadline of {} ms (after {} ms)",
                    self.limits.deadline.as_millis(),
                    elapsed.as_millis()
                ),
            ),
            Some(wasmtime::Trap::UnreachableCodeReached) => (
                TrapReason::Panic,
                format!("aborted (a panic in the guest): {e:#}"),
            ),
            Some(trap) => (TrapReason::Trap, format!("trapped: {trap}: {e:#}")),
            None => (TrapReason::Trap, format!("failed: {e:#}")),
        };
        RuntimeError::Trap {
            guest: guest.name.clone(),
            call: call.into(),
            reason,
            message,
        }
    }
}

/// WASI as the Rust std of a wasm32-wasip2 guest expects it, with nothing
/// behind it: no preopened directories, no environment, no arguments, no
/// network, stdio going nowhere. Guests log through the `log` import.
fn deny_all_wasi() -> WasiCtx {
    WasiCtxBuilder::new()
        .allow_tcp(false)
        .allow_udp(false)
        .allow_ip_name_lookup(false)
        .build()
}
