//! The `netshim` command line: people get tables, scripts `--output json`.
//! stdout carries only results; logs and errors go to stderr.

mod output;

use std::net::IpAddr;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use clap::{Args, Parser, Subcommand, ValueEnum};
use ipnet::IpNet;
use netshim_host_api::kernel::netlink::Netlink;
use netshim_host_api::kernel::Kernel;

use crate::cnm::{Attach, CnmError, Core, CreateNetwork, DetachTarget, PortMapping};
use crate::oci;
use crate::runtime::{Limits, Runtime, RuntimeError};
use output::Output;

#[derive(Debug, Parser)]
#[command(
    name = "netshim",
    version,
    about = "Container networks whose drivers are sandboxed WebAssembly components"
)]
pub struct Cli {
    #[command(flatten)]
    pub global: Global,
    #[command(subcommand)]
    pub command: Command,
}

#[derive(Debug, Args, Clone)]
pub struct Global {
    /// Where netshim keeps its state (networks, endpoints, IPAM, compiled guests).
    #[arg(
        long,
        global = true,
        env = "NETSHIM_STATE_DIR",
        default_value = "/var/lib/netshim"
    )]
    pub state_dir: PathBuf,
    /// The cluster store for what the nodes of a cluster share
    /// (etcd://HOST:PORT[,HOST:PORT...]); node-local state stays in the
    /// state directory. Default: none (one node).
    #[arg(long, global = true, env = "NETSHIM_STORE")]
    pub store: Option<String>,
    /// Where compiled guests are cached (default: <state-dir>/cache).
    #[arg(long, global = true, env = "NETSHIM_CACHE_DIR")]
    pub cache_dir: Option<PathBuf>,
    /// Act on this network namespace as the node (default: netshim's own).
    #[arg(long, global = true, env = "NETSHIM_NODE_NETNS")]
    pub node_netns: Option<PathBuf>,
    /// The node's name as drivers see it (default: the host name).
    #[arg(long, global = true, env = "NETSHIM_NODE_NAME")]
    pub node_name: Option<String>,
    /// The node's underlay link: where tunnels start and cluster traffic
    /// leaves (default: the link of the default route).
    #[arg(long, global = true, env = "NETSHIM_UNDERLAY")]
    pub underlay: Option<String>,
    /// Make this node a BGP route reflector with this cluster id (an
    /// IPv4-formatted number, as Calico's `routeReflectorClusterID`):
    /// drivers that speak BGP then peer the other nodes with it.
    #[arg(long, global = true, env = "NETSHIM_ROUTE_REFLECTOR_CLUSTER_ID")]
    pub route_reflector_cluster_id: Option<std::net::Ipv4Addr>,
    /// Extra directories with driver guests (<name>.wasm).
    #[arg(long = "guest-dir", global = true, env = "NETSHIM_GUEST_DIR")]
    pub guest_dirs: Vec<PathBuf>,
    /// Wall-clock budget of one guest call, in milliseconds.
    #[arg(
        long,
        global = true,
        env = "NETSHIM_GUEST_DEADLINE_MS",
        default_value_t = 2000
    )]
    pub guest_deadline_ms: u64,
    /// Memory cap of one guest call, in MiB.
    #[arg(
        long,
        global = true,
        env = "NETSHIM_GUEST_MEMORY_MB",
        default_value_t = 64
    )]
    pub guest_memory_mb: usize,
    /// Output format.
    #[arg(long, short = 'O', global = true, value_enum, default_value_t = Format::Table)]
    pub output: Format,
    /// Log format on stderr: text for people, json (one object per line)
    /// for log collectors.
    #[arg(long, global = true, env = "NETSHIM_LOG_FORMAT", value_enum, default_value_t = LogFormat::Text)]
    pub log_format: LogFormat,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum PictureFormat {
    Dot,
    Svg,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum LogFormat {
    Text,
    Json,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum Format {
    Table,
    Json,
}

#[derive(Debug, Subcommand)]
pub enum Command {
    /// Create, list, inspect and remove networks.
    #[command(subcommand)]
    Network(NetworkCmd),
    /// Attach a network namespace to a network.
    Attach(AttachArgs),
    /// Detach a network namespace (or an endpoint) from a network.
    Detach(DetachArgs),
    /// List driver guests, or check a guest file.
    #[command(subcommand)]
    Guest(GuestCmd),
    /// OCI runtime hook: reads the container state on stdin; createRuntime
    /// attaches, poststop detaches (the stage defaults from the status).
    OciHook {
        /// createRuntime (or prestart) | poststop
        stage: Option<String>,
    },
    /// Serve Docker's remote network and IPAM driver protocols.
    Daemon {
        /// Where dockerd looks for plugin sockets.
        #[arg(long, default_value = crate::docker::DEFAULT_PLUGIN_DIR)]
        plugin_dir: PathBuf,
        /// Plugin names are PREFIX + driver (netshim-bridge).
        #[arg(long, default_value = "netshim-")]
        plugin_prefix: String,
        /// Open connections at most; more are closed at once.
        #[arg(long, default_value_t = 8192)]
        max_connections: usize,
        /// A connection that sends no request headers for this long is
        /// closed (idle keep-alive ones included).
        #[arg(long, default_value_t = 30_000)]
        idle_timeout_ms: u64,
        /// A request whose body has not all arrived this long after its
        /// headers is answered 408 and its connection closed.
        #[arg(long, default_value_t = 30_000)]
        body_timeout_ms: u64,
        /// Serve Prometheus metrics at http://ADDR/metrics (off unless given).
        #[arg(long)]
        metrics_addr: Option<std::net::SocketAddr>,
    },
    /// A picture of the node: networks, their links and routes, endpoints,
    /// addresses and published ports.
    Topology {
        /// dot (Graphviz) or svg (drawn by netshim itself).
        #[arg(long, value_enum, default_value_t = PictureFormat::Dot)]
        format: PictureFormat,
    },
    /// Set up OCI hooks: in a bundle's config.json, or as a hooks.d file.
    #[command(subcommand)]
    Oci(OciCmd),
    /// The cluster as this node sees it (needs --store etcd://...).
    #[command(subcommand)]
    Cluster(ClusterCmd),
    /// This node's routing daemons.
    #[command(subcommand)]
    Node(NodeCmd),
    /// Finish or undo what interrupted operations left (their records say
    /// which) and remove links a killed netshim left unmarked. The daemon
    /// runs it at start.
    Gc {
        /// Also remove links whose netshim mark names no network of this
        /// store, and driver tables of drivers with no network. Only for the
        /// state directory that made them: to any other store (an empty
        /// one, a test's) every network of the node looks dead.
        #[arg(long)]
        orphans: bool,
    },
    /// The state database.
    #[command(subcommand)]
    Store(StoreCmd),
}

#[derive(Debug, Subcommand)]
pub enum ClusterCmd {
    /// The nodes each cluster network of this node knows: their subnets
    /// and backend, their leases, and what this node programmed for each
    /// (and what it could not).
    Status,
}

#[derive(Debug, Subcommand)]
pub enum NodeCmd {
    /// This node's BGP speaker (BIRD) and each peer's session: address,
    /// type (node-to-node mesh, route reflector, global), state, since,
    /// info, like `calicoctl node status`.
    Status,
}

#[derive(Debug, Subcommand)]
pub enum StoreCmd {
    /// Recover a damaged state database: keep every record that can still
    /// be read (the damaged file stays beside it as state.db.corrupt-TIME),
    /// then collect what no surviving record owns (as `netshim gc`).
    Recover,
}

#[derive(Debug, Subcommand)]
pub enum OciCmd {
    /// Add netshim's createRuntime and poststop hooks (and the network
    /// annotations) to BUNDLE/config.json.
    InstallHook {
        bundle: PathBuf,
        /// Network to attach to (repeat for more; default: the "netshim" network).
        #[arg(long = "network")]
        networks: Vec<String>,
        /// Static address on a network: NETWORK=IP.
        #[arg(long = "ip", value_parser = parse_kv)]
        ips: Vec<(String, String)>,
        /// Publish a port on the first network: [HOST_IP:]HOST_PORT:CONTAINER_PORT[/proto].
        #[arg(long, short = 'p')]
        publish: Vec<PortMapping>,
        /// Name of the first interface (default eth0).
        #[arg(long)]
        ifname: Option<String>,
    },
    /// Print an oci-hooks(5) JSON file for CRI-O and Podman (hooks.d).
    HooksD {
        /// Attach every container, not only those with a netshim.networks annotation.
        #[arg(long)]
        always: bool,
    },
}

#[derive(Debug, Subcommand)]
pub enum NetworkCmd {
    /// Create a network.
    Create {
        name: String,
        #[arg(long, short = 'd', default_value = "bridge")]
        driver: String,
        /// IPv4 subnet in CIDR form; a free private one is picked when absent.
        #[arg(long)]
        subnet: Option<IpNet>,
        /// Gateway address (default: the subnet's first address).
        #[arg(long)]
        gateway: Option<IpAddr>,
        /// No route out of the network: no NAT, no forwarding.
        #[arg(long)]
        internal: bool,
        /// Driver option key=value (e.g. -o mtu=1400, -o com.docker.network.bridge.name=br0).
        #[arg(long = "opt", short = 'o', value_parser = parse_kv)]
        options: Vec<(String, String)>,
    },
    /// List networks.
    Ls,
    /// Show a network and its endpoints.
    Inspect { name: String },
    /// Remove networks.
    Rm {
        #[arg(required = true)]
        names: Vec<String>,
    },
}

#[derive(Debug, Args)]
pub struct AttachArgs {
    #[arg(long)]
    pub network: String,
    /// Path of the network namespace (/run/netns/NAME, /proc/PID/ns/net).
    #[arg(long)]
    pub netns: PathBuf,
    /// Ask for this address instead of the next free one.
    #[arg(long)]
    pub ip: Option<IpAddr>,
    /// Interface name inside the namespace.
    #[arg(long, default_value = "eth0")]
    pub ifname: String,
    /// Publish a port: [HOST_IP:]HOST_PORT:CONTAINER_PORT[/tcp|udp|sctp].
    #[arg(long, short = 'p')]
    pub publish: Vec<PortMapping>,
}

#[derive(Debug, Args)]
pub struct DetachArgs {
    #[arg(long, requires = "netns", conflicts_with = "endpoint")]
    pub network: Option<String>,
    #[arg(long, requires = "network")]
    pub netns: Option<PathBuf>,
    /// Detach by endpoint id instead.
    #[arg(long)]
    pub endpoint: Option<String>,
}

#[derive(Debug, Subcommand)]
pub enum GuestCmd {
    /// List the installed driver guests.
    Ls,
    /// Load a guest file and report its interface, or why it is refused.
    Check { file: PathBuf },
    /// Write a new driver crate (WIT 0.2) from a template, ready to build.
    New {
        name: String,
        /// Where to create the crate's directory.
        #[arg(long, default_value = ".")]
        dir: PathBuf,
        /// Depend on this guest SDK checkout (guests/sdk of netshim's
        /// sources) instead of writing the SDK netshim carries into the crate.
        #[arg(long)]
        sdk: Option<PathBuf>,
    },
}

fn parse_kv(s: &str) -> Result<(String, String), String> {
    match s.split_once('=') {
        Some((k, v)) if !k.is_empty() => Ok((k.to_string(), v.to_string())),
        _ => Err(format!("{s:?} is not key=value")),
    }
}

#[derive(Debug, thiserror::Error)]
pub enum CliError {
    #[error(transparent)]
    Cnm(#[from] CnmError),
    #[error(transparent)]
    Runtime(#[from] RuntimeError),
    #[error(transparent)]
    Oci(#[from] oci::OciError),
    #[error("{0}")]
    Usage(String),
    #[error("{0}")]
    Other(String),
}

impl Global {
    /// The global options a hook must repeat, as absolute paths: a runtime
    /// runs hooks in the bundle with an environment of its choosing.
    pub fn hook_args(&self) -> Result<Vec<String>, CliError> {
        let abs = |p: &PathBuf| {
            std::path::absolute(p)
                .map(|p| p.display().to_string())
                .map_err(|e| CliError::Other(format!("{}: {e}", p.display())))
        };
        let mut args = vec!["--state-dir".to_string(), abs(&self.state_dir)?];
        if let Some(c) = &self.cache_dir {
            args.extend(["--cache-dir".to_string(), abs(c)?]);
        }
        if let Some(n) = &self.node_netns {
            args.extend(["--node-netns".to_string(), abs(n)?]);
        }
        for d in &self.guest_dirs {
            args.extend(["--guest-dir".to_string(), abs(d)?]);
        }
        if let Some(s) = &self.store {
            args.extend(["--store".to_string(), s.clone()]);
        }
        if let Some(n) = &self.node_name {
            args.extend(["--node-name".to_string(), n.clone()]);
        }
        if let Some(u) = &self.underlay {
            args.extend(["--underlay".to_string(), u.clone()]);
        }
        if let Some(r) = &self.route_reflector_cluster_id {
            args.extend(["--route-reflector-cluster-id".to_string(), r.to_string()]);
        }
        Ok(args)
    }

    /// A process that runs one operation allocates guest instances per
    /// call; one that serves many (`pooled`) sets up a pool once.
    pub fn limits(&self, pooled: bool) -> Limits {
        Limits {
            deadline: Duration::from_millis(self.guest_deadline_ms),
            memory_bytes: self.guest_memory_mb << 20,
            pooled,
        }
    }

    pub fn runtime(&self, pooled: bool) -> Result<Runtime, CliError> {
        Ok(Runtime::new(self.limits(pooled), Some(self.cache_dir()))?)
    }

    pub fn cache_dir(&self) -> PathBuf {
        self.cache_dir
            .clone()
            .unwrap_or_else(|| self.state_dir.join("cache"))
    }

    pub fn kernel(&self) -> Result<Arc<dyn Kernel>, CliError> {
        let k = Netlink::new(self.node_netns.as_deref())
            .map_err(|e| CliError::Other(format!("opening netlink: {e}")))?;
        Ok(Arc::new(k))
    }

    /// The core for one operation.
    pub fn core(&self) -> Result<Core, CliError> {
        self.core_for(false)
    }

    /// The core for a process that serves many operations (the daemon).
    pub fn core_for(&self, long_lived: bool) -> Result<Core, CliError> {
        let mut dirs = self.guest_dirs.clone();
        dirs.extend(crate::guests::default_dirs());
        let runtime = self.runtime(long_lived)?;
        tracing::debug!("wasm runtime ready");
        let kernel = self.kernel()?;
        tracing::debug!("netlink ready");
        let cluster = match &self.store {
            None => None,
            Some(url) => Some(
                netshim_host_api::store::EtcdStore::connect(url, "", None)
                    .map_err(crate::cnm::CnmError::Store)?,
            ),
        };
        Ok(Core::new(runtime, kernel, &self.state_dir, dirs)?
            .with_node_name(self.node_name.clone())
            .with_route_reflector(self.route_reflector_cluster_id)
            .with_underlay(self.underlay.as_deref())?
            .with_cluster(cluster))
    }
}

pub fn run(cli: Cli) -> Result<(), CliError> {
    let out = Output::new(cli.global.output);
    match cli.command {
        Command::Network(cmd) => network(&cli.global, &out, cmd),
        Command::Attach(a) => {
            let core = cli.global.core()?;
            let ep = core.attach(Attach {
                ip: a.ip,
                ifname: a.ifname,
                ports: a.publish,
                ..Attach::new(a.network, a.netns)
            })?;
            out.endpoint(&ep);
            core.close_for_exit();
            Ok(())
        }
        Command::Detach(d) => {
            let core = cli.global.core()?;
            let target = match (d.endpoint, d.network, d.netns) {
                (Some(id), _, _) => DetachTarget::Endpoint(id),
                (None, Some(network), Some(netns)) => DetachTarget::Sandbox { network, netns },
                _ => {
                    return Err(CliError::Usage(
                        "give --network and --netns, or --endpoint".into(),
                    ))
                }
            };
            let ep = core.teardown_despite_damage(|| core.detach(target.clone()))?;
            out.detached(&ep);
            core.close_for_exit();
            Ok(())
        }
        Command::Guest(GuestCmd::Ls) => {
            let mut dirs = cli.global.guest_dirs.clone();
            dirs.extend(crate::guests::default_dirs());
            out.guests(&crate::guests::discover(&dirs));
            Ok(())
        }
        Command::Guest(GuestCmd::Check { file }) => {
            let rt = Runtime::new(cli.global.limits(false), None)?;
            let guest = rt.load_file(&file)?;
            out.guest_check(&file, &guest);
            Ok(())
        }
        Command::Guest(GuestCmd::New { name, dir, sdk }) => {
            let root = crate::scaffold::new_guest(&name, &dir, sdk.as_deref())
                .map_err(|e| CliError::Other(e.to_string()))?;
            out.guest_created(&root, &name);
            Ok(())
        }
        Command::Daemon {
            plugin_dir,
            plugin_prefix,
            max_connections,
            idle_timeout_ms,
            body_timeout_ms,
            metrics_addr,
        } => {
            let core = std::sync::Arc::new(cli.global.core_for(true)?);
            core.serve_many()?;
            // What a previous daemon (or a CLI, or a hook) left halfway is
            // settled before Docker's first request.
            match core.gc(crate::cnm::Orphans::HalfMade) {
                Ok(r) if !r.is_empty() => tracing::info!(
                    settled = r.settled.len(),
                    links = r.links.len(),
                    tables = r.tables.len(),
                    errors = r.errors.len(),
                    "gc at start"
                ),
                Ok(_) => {}
                Err(e) => tracing::warn!(error = %e, "gc at start failed"),
            }
            let limits = crate::docker::Limits {
                connections: max_connections,
                header_timeout: std::time::Duration::from_millis(idle_timeout_ms),
                body_timeout: std::time::Duration::from_millis(body_timeout_ms),
                ..crate::docker::Limits::default()
            };
            let agent = crate::agent::Agent::start(core.clone());
            let served =
                crate::docker::serve(core, &plugin_dir, &plugin_prefix, limits, metrics_addr)
                    .map_err(|e| CliError::Other(e.to_string()));
            if let Some(a) = agent {
                a.stop();
            }
            served
        }
        Command::Cluster(ClusterCmd::Status) => {
            if cli.global.store.is_none() {
                return Err(CliError::Usage(
                    "cluster status needs the cluster store: --store etcd://HOST:PORT (or NETSHIM_STORE)".into(),
                ));
            }
            let core = cli.global.core()?;
            out.cluster_status(&core.cluster_status()?);
            Ok(())
        }
        Command::Node(NodeCmd::Status) => {
            let core = cli.global.core()?;
            out.node_status(&crate::bird::status::collect(&core)?);
            Ok(())
        }
        Command::Store(StoreCmd::Recover) => {
            let core = cli.global.core()?;
            out.recovered(core.recover_store()?.as_ref());
            Ok(())
        }
        Command::Gc { orphans } => {
            let core = cli.global.core()?;
            let report = core.gc(if orphans {
                crate::cnm::Orphans::Unowned
            } else {
                crate::cnm::Orphans::HalfMade
            })?;
            out.gc(&report);
            if report.errors.is_empty() {
                Ok(())
            } else {
                Err(CliError::Other(format!(
                    "gc left {} problem(s); their records stay for the next run",
                    report.errors.len()
                )))
            }
        }
        Command::Topology { format } => {
            let core = cli.global.core()?;
            let dot = crate::topology::to_dot(&crate::topology::gather(&core)?);
            match format {
                PictureFormat::Dot => print!("{dot}"),
                PictureFormat::Svg => print!(
                    "{}",
                    crate::topology::to_svg(&dot).map_err(|e| CliError::Other(e.to_string()))?
                ),
            }
            Ok(())
        }
        Command::OciHook { stage } => {
            let state = oci::read_state(std::io::stdin().lock())?;
            let core = cli.global.core()?;
            match oci::run(&core, stage.as_deref(), state)? {
                oci::Outcome::Attached(eps) => {
                    for ep in eps {
                        tracing::info!(endpoint = %ep.id, ifname = %ep.ifname, ipv4 = ?ep.ipv4, "attached");
                    }
                }
                oci::Outcome::Detached(eps) => tracing::info!(endpoints = eps.len(), "detached"),
            }
            core.close_for_exit();
            Ok(())
        }
        Command::Oci(OciCmd::InstallHook {
            bundle,
            networks,
            ips,
            publish,
            ifname,
        }) => {
            let exe = std::env::current_exe()
                .map_err(|e| CliError::Other(format!("cannot find the netshim binary: {e}")))?;
            let want = oci::install::Install {
                networks,
                ips,
                ports: publish,
                ifname,
            };
            let path = oci::install::install(&bundle, &exe, &cli.global.hook_args()?, &want)?;
            out.installed(&path);
            Ok(())
        }
        Command::Oci(OciCmd::HooksD { always }) => {
            let exe = std::env::current_exe()
                .map_err(|e| CliError::Other(format!("cannot find the netshim binary: {e}")))?;
            println!(
                "{}",
                serde_json::to_string_pretty(&oci::install::hooks_d(
                    &exe,
                    &cli.global.hook_args()?,
                    always
                ))
                .unwrap_or_default()
            );
            Ok(())
        }
    }
}

fn network(g: &Global, out: &Output, cmd: NetworkCmd) -> Result<(), CliError> {
    let core = g.core()?;
    match cmd {
        NetworkCmd::Create {
            name,
            driver,
            subnet,
            gateway,
            internal,
            options,
        } => {
            let net = core.network_create(CreateNetwork {
                name,
                driver,
                subnet,
                gateway,
                internal,
                options,
            })?;
            out.network_created(&net);
        }
        NetworkCmd::Ls => out.networks(&core.networks()?),
        NetworkCmd::Inspect { name } => {
            let (net, eps) = core.inspect(&name)?;
            out.inspect(&net, &eps);
        }
        NetworkCmd::Rm { names } => {
            let mut failed = Vec::new();
            for n in names {
                match core.network_rm(&n) {
                    Ok(net) => out.removed(&net.name),
                    Err(e) => failed.push(format!("{n}: {e}")),
                }
            }
            if !failed.is_empty() {
                return Err(CliError::Other(failed.join("\n")));
            }
        }
    }
    Ok(())
}

/// What to tell the user to do, by error.
pub fn hint(e: &CliError) -> Option<&'static str> {
    let text = e.to_string();
    if text.contains("permission denied") || text.contains("Operation not permitted") {
        Some("netshim changes the kernel's network configuration: run it as root (CAP_NET_ADMIN, CAP_SYS_ADMIN)")
    } else if text.contains("state directory") {
        Some("set --state-dir or NETSHIM_STATE_DIR to a writable directory")
    } else {
        None
    }
}
