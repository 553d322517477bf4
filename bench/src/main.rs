//! `netshim-bench`: latency of attach and detach, measured side by side
//! with the reference CNI bridge plugin and netavark invoked the way their
//! callers invoke them (one process per operation, in the same node
//! namespace). Everything happens in namespaces the benchmark makes and
//! removes; peers that are not installed are reported as missing. A tool
//! of its own, so the `netshim` binary carries no benchmark code.

use std::fs::File;
use std::io::Write;
use std::os::fd::AsFd;
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::Arc;
use std::time::{Duration, Instant};

mod cluster;

use clap::{Args, Parser, Subcommand};
use netshim::cli::{CliError, Global};
use netshim::cnm::{Attach, Core, CreateNetwork, DetachTarget};
use netshim_host_api::kernel::netlink::Netlink;
use netshim_host_api::kernel::Kernel;
use netshim_netns as netns;
use serde_json::json;

#[derive(Debug, Parser)]
#[command(
    name = "netshim-bench",
    about = "Attach/detach latency of netshim against the CNI bridge plugin and netavark"
)]
struct Cli {
    #[command(flatten)]
    global: Global,
    /// The netshim binary timed per process (default: beside this one).
    #[arg(long, global = true)]
    netshim: Option<PathBuf>,
    #[command(subcommand)]
    command: BenchCmd,
}

fn main() -> std::process::ExitCode {
    let cli = Cli::parse();
    tracing_subscriber::fmt()
        .with_writer(std::io::stderr)
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_env("NETSHIM_LOG")
                .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("warn")),
        )
        .init();
    let exe = cli.netshim.clone().or_else(|| {
        std::env::current_exe()
            .ok()
            .and_then(|p| Some(p.parent()?.join("netshim")))
    });
    let Some(exe) = exe.filter(|p| p.exists()) else {
        eprintln!("netshim-bench: error: no netshim binary beside this one; build it (cargo build --release -p netshim) or pass --netshim PATH");
        return std::process::ExitCode::FAILURE;
    };
    match run(&cli.global, &exe, cli.command) {
        Ok(()) => std::process::ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("netshim-bench: error: {e}");
            std::process::ExitCode::FAILURE
        }
    }
}

#[derive(Debug, Subcommand)]
enum BenchCmd {
    /// Attach/detach latency in-process and per process, attaches per
    /// second, share of time in wasm, against the CNI bridge plugin.
    Attach(BenchAttach),
    /// The OCI hook's own time per container (createRuntime, poststop)
    /// against the CNI bridge plugin and netavark, one process each.
    Hook(BenchHook),
    /// Calico (BGP) across nodes in namespaces: convergence from a node
    /// joining until every node routes its block, attach latency against
    /// the bridge driver, sessions and routes per node.
    Cluster(cluster::BenchCluster),
}

#[derive(Debug, Args)]
struct BenchAttach {
    /// Namespaces attached and detached in-process.
    #[arg(long, default_value_t = 100)]
    pub count: usize,
    /// Operations measured as separate processes (netshim and peers).
    #[arg(long, default_value_t = 30)]
    pub process_count: usize,
    /// With `--count` above 10: rounds of 10 attaches and 10 detaches
    /// run first on the same network, the baseline the growth to `count`
    /// endpoints is measured against.
    #[arg(long, default_value_t = 10)]
    pub baseline_rounds: usize,
    /// An option of the benchmark's network, KEY=VALUE (repeatable), e.g.
    /// `mcast_snooping=1`.
    #[arg(long = "option", short = 'o', value_parser = key_value)]
    pub options: Vec<(String, String)>,
    #[command(flatten)]
    pub peers: Peers,
}

fn key_value(s: &str) -> Result<(String, String), String> {
    s.split_once('=')
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .ok_or_else(|| format!("{s:?} is not KEY=VALUE"))
}

#[derive(Debug, Args)]
struct BenchHook {
    /// Containers (namespaces) per tool.
    #[arg(long, default_value_t = 30)]
    pub count: usize,
    #[command(flatten)]
    pub peers: Peers,
}

#[derive(Debug, Args)]
struct Peers {
    /// Where the reference CNI plugins live.
    #[arg(long, default_value = "/usr/lib/cni")]
    pub cni_path: PathBuf,
    /// The netavark binary.
    #[arg(long, default_value = "/usr/lib/podman/netavark")]
    pub netavark: PathBuf,
}

struct Stats {
    p50: Duration,
    p99: Duration,
    per_sec: f64,
}

fn stats(mut samples: Vec<Duration>) -> Stats {
    samples.sort();
    let total: Duration = samples.iter().sum();
    let per_sec = if total.is_zero() {
        0.0
    } else {
        samples.len() as f64 / total.as_secs_f64()
    };
    let at = |p: f64| {
        samples
            .get(((samples.len().max(1) - 1) as f64 * p).round() as usize)
            .copied()
            .unwrap_or_default()
    };
    Stats {
        p50: at(0.5),
        p99: at(0.99),
        per_sec,
    }
}

fn line(label: &str, n: usize, s: &Stats) {
    let ms = |d: Duration| format!("{:.2} ms", d.as_secs_f64() * 1000.0);
    println!(
        "{label:<30} n={n:<5} p50={:>9}  p99={:>9}  ops/s={:>7.0}",
        ms(s.p50),
        ms(s.p99),
        s.per_sec
    );
}

fn ratio(label: &str, ours: &Stats, theirs: &Stats) {
    println!(
        "{label:<30} p50 ratio {:.2} (netshim {:.2} ms / peer {:.2} ms)",
        ours.p50.as_secs_f64() / theirs.p50.as_secs_f64(),
        ours.p50.as_secs_f64() * 1e3,
        theirs.p50.as_secs_f64() * 1e3
    );
}

fn other(e: impl std::fmt::Display) -> CliError {
    CliError::Other(e.to_string())
}

/// A node namespace with one bridge network ("bench", with NAT) and `n`
/// empty container namespaces; all removed on drop.
struct Bench {
    names: Vec<String>,
    tmp: PathBuf,
    node: PathBuf,
    state_dir: PathBuf,
    core: Core,
    sandboxes: Vec<PathBuf>,
    exe: PathBuf,
}

impl Drop for Bench {
    fn drop(&mut self) {
        for n in self.names.iter().rev() {
            let _ = netns::delete(n);
        }
        let _ = std::fs::remove_dir_all(&self.tmp);
    }
}

impl Bench {
    fn new(
        g: &Global,
        exe: &Path,
        sandboxes: usize,
        options: Vec<(String, String)>,
    ) -> Result<Bench, CliError> {
        let pid = std::process::id();
        let tmp = std::env::temp_dir().join(format!("netshim-bench-{pid}"));
        std::fs::create_dir_all(&tmp).map_err(other)?;
        let node_name = format!("nsbench-{pid}-node");
        let node = netns::create(&node_name).map_err(other)?;
        let state_dir = tmp.join("state");
        let kernel: Arc<dyn Kernel> = Arc::new(Netlink::new(Some(&node)).map_err(other)?);
        // The compiled-guest cache is the normal one: steady state, not Cranelift.
        let runtime = g.runtime(true)?;
        let core = Core::new(runtime, kernel, &state_dir, Vec::new())?;
        // In-process is the daemon's way: configured as the daemon is.
        core.serve_many()?;
        let mut bench = Bench {
            names: vec![node_name],
            tmp,
            node,
            state_dir,
            core,
            sandboxes: Vec::new(),
            exe: exe.to_path_buf(),
        };
        for i in 0..sandboxes {
            let name = format!("nsbench-{pid}-c{i}");
            bench.sandboxes.push(netns::create(&name).map_err(other)?);
            bench.names.push(name);
        }
        bench.core.network_create(CreateNetwork {
            name: "bench".into(),
            driver: "bridge".into(),
            subnet: Some("10.200.0.0/16".parse().unwrap()),
            gateway: None,
            internal: false,
            options: options.clone(),
        })?;
        let shown: Vec<String> = options.iter().map(|(k, v)| format!(" {k}={v}")).collect();
        println!(
            "kernel {}, {} namespaces, bridge network with NAT{}",
            kernel_release(),
            sandboxes,
            shown.concat()
        );
        Ok(bench)
    }

    /// netshim as a separate process, with this state. It runs inside the
    /// node's namespace ([`Bench::node_file`] given to `time_process`), as
    /// a hook or CLI does on a real node and as the CNI peer is run here:
    /// no `--node-netns`, whose thread entering the namespace a real node
    /// does not pay.
    fn netshim(&self, g: &Global) -> Result<Command, CliError> {
        let mut c = Command::new(&self.exe);
        c.arg("--state-dir")
            .arg(&self.state_dir)
            .arg("--cache-dir")
            .arg(g.cache_dir());
        Ok(c)
    }

    fn node_file(&self) -> Result<File, CliError> {
        File::open(&self.node).map_err(other)
    }
}

fn kernel_release() -> String {
    std::fs::read_to_string("/proc/sys/kernel/osrelease")
        .map(|s| s.trim().to_string())
        .unwrap_or_default()
}

/// Time one process from spawn to exit, feeding `stdin`. With `netns`, the
/// child enters that namespace itself before exec (no `ip netns exec`
/// cost is added to a peer).
fn time_process(
    cmd: &mut Command,
    stdin: &[u8],
    netns: Option<&File>,
) -> Result<Duration, CliError> {
    if let Some(f) = netns {
        let fd = f.as_fd().try_clone_to_owned().map_err(other)?;
        // SAFETY: setns is async-signal-safe; the fd stays open until exec.
        unsafe {
            cmd.pre_exec(move || {
                nix::sched::setns(&fd, nix::sched::CloneFlags::CLONE_NEWNET)
                    .map_err(std::io::Error::from)
            });
        }
    }
    let t = Instant::now();
    let mut child = cmd
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .map_err(other)?;
    if let Some(mut s) = child.stdin.take() {
        let _ = s.write_all(stdin);
    }
    let out = child.wait_with_output().map_err(other)?;
    let d = t.elapsed();
    if !out.status.success() {
        return Err(CliError::Other(format!(
            "benchmark step {:?} failed: {}{}",
            cmd.get_program(),
            String::from_utf8_lossy(&out.stdout).trim(),
            String::from_utf8_lossy(&out.stderr).trim()
        )));
    }
    Ok(d)
}

fn run(g: &Global, exe: &Path, cmd: BenchCmd) -> Result<(), CliError> {
    match cmd {
        BenchCmd::Attach(a) => attach(g, exe, a),
        BenchCmd::Hook(h) => hook(g, exe, h),
        BenchCmd::Cluster(c) => cluster::run(g, c),
    }
}

fn attach(g: &Global, exe: &Path, args: BenchAttach) -> Result<(), CliError> {
    let b = Bench::new(
        g,
        exe,
        args.count + 2 * args.process_count,
        args.options.clone(),
    )?;
    // The same network and namespaces with at most 10 endpoints on it.
    let mut small = Vec::new();
    if args.count > 10 {
        for _ in 0..args.baseline_rounds {
            for sb in &b.sandboxes[..10] {
                let t = Instant::now();
                b.core.attach(Attach::new("bench", sb.clone()))?;
                small.push(t.elapsed());
            }
            for sb in &b.sandboxes[..10] {
                b.core.detach(DetachTarget::Sandbox {
                    network: "bench".into(),
                    netns: sb.clone(),
                })?;
            }
        }
    }
    let (mut attach, mut detach, mut inst) = (Vec::new(), Vec::new(), Vec::new());
    let mut timings = Vec::new();
    for sb in &b.sandboxes[..args.count] {
        let t = Instant::now();
        b.core.attach(Attach::new("bench", sb.clone()))?;
        attach.push(t.elapsed());
        let timing = b.core.last_timing();
        inst.push(timing.instantiate);
        timings.push(timing);
    }
    // Per process, while the in-process endpoints are all still attached:
    // the cost of one attach on a node that holds `count` of them.
    let procs = &b.sandboxes[args.count..args.count + args.process_count];
    let (mut pa, mut pd) = (Vec::new(), Vec::new());
    let node = b.node_file()?;
    for sb in procs {
        let ns = sb.to_str().unwrap_or_default();
        pa.push(time_process(
            b.netshim(g)?
                .args(["attach", "--network", "bench", "--netns", ns]),
            b"",
            Some(&node),
        )?);
        pd.push(time_process(
            b.netshim(g)?
                .args(["detach", "--network", "bench", "--netns", ns]),
            b"",
            Some(&node),
        )?);
    }
    for sb in &b.sandboxes[..args.count] {
        let t = Instant::now();
        b.core.detach(DetachTarget::Sandbox {
            network: "bench".into(),
            netns: sb.clone(),
        })?;
        detach.push(t.elapsed());
    }
    let tenth = (args.count / 10).max(1);
    let a = stats(attach.clone());
    if !small.is_empty() {
        line(
            "attach with ≤ 10 endpoints",
            small.len(),
            &stats(small.clone()),
        );
    }
    line("attach (in-process)", args.count, &a);
    line("  first tenth", tenth, &stats(attach[..tenth].to_vec()));
    line(
        "  last tenth",
        tenth,
        &stats(attach[attach.len() - tenth..].to_vec()),
    );
    if !small.is_empty() {
        let base = stats(small).p50.as_secs_f64();
        println!(
            "growth to {} endpoints            p50 {:.2}× and p99 {:.2}× the p50 with ≤ 10",
            args.count,
            a.p50.as_secs_f64() / base,
            a.p99.as_secs_f64() / base
        );
    }
    line("detach (in-process)", args.count, &stats(detach));
    // Shares, and the mean time per attach of each part: what grows with
    // the node is told apart from what netshim adds.
    let share = |ts: &[netshim::cnm::Timing]| {
        let total = ts.iter().map(|t| t.total).sum::<Duration>().as_secs_f64();
        let part = |f: fn(&netshim::cnm::Timing) -> Duration| {
            ts.iter().map(f).sum::<Duration>().as_secs_f64()
        };
        let (k, w) = (part(|t| t.kernel), part(|t| t.wasm));
        let each = |s: f64| s * 1e3 / ts.len().max(1) as f64;
        let pct = |s: f64| 100.0 * s / total.max(1e-9);
        format!(
            "kernel {:.2} ms ({:.0} %), wasm {:.2} ms ({:.0} %), the rest (store, netshim) {:.2} ms ({:.0} %)",
            each(k),
            pct(k),
            each(w),
            pct(w),
            each(total - k - w),
            pct(total - k - w)
        )
    };
    println!(
        "where attach time goes (mean per attach): first tenth {}; last tenth {}",
        share(&timings[..tenth]),
        share(&timings[timings.len() - tenth..])
    );
    println!(
        "wasm share of attach: {:.1} % (instantiation + guest code, kernel calls excluded; instantiation p50 {:.0} µs per attach, 3 guest calls)",
        100.0 * timings.iter().map(|t| t.wasm).sum::<Duration>().as_secs_f64()
            / timings.iter().map(|t| t.total).sum::<Duration>().as_secs_f64().max(1e-9),
        stats(inst).p50.as_secs_f64() * 1e6
    );

    let (pa, pd) = (stats(pa), stats(pd));
    line("attach (netshim process)", procs.len(), &pa);
    line("detach (netshim process)", procs.len(), &pd);

    let peer_sbs = &b.sandboxes[args.count + args.process_count..];
    if let Some((ca, cd)) = cni(&args.peers, &b, peer_sbs)? {
        ratio("attach in-process vs cni ADD", &a, &ca);
        ratio("attach process vs cni ADD", &pa, &ca);
        ratio("detach process vs cni DEL", &pd, &cd);
    }
    b.core.network_rm("bench")?;
    Ok(())
}

fn hook(g: &Global, exe: &Path, args: BenchHook) -> Result<(), CliError> {
    let n = args.count;
    let b = Bench::new(g, exe, 3 * n, Vec::new())?;
    // One bundle per container: the network by annotation, the namespace by path.
    let mut bundles = Vec::new();
    for (i, sb) in b.sandboxes[..n].iter().enumerate() {
        let dir = b.tmp.join(format!("bundle{i}"));
        std::fs::create_dir_all(&dir).map_err(other)?;
        let config = json!({"annotations": {"netshim.networks": "bench"}, "linux": {"namespaces": [{"type": "network", "path": sb}]}});
        std::fs::write(dir.join("config.json"), config.to_string()).map_err(other)?;
        bundles.push(dir);
    }
    let state = |i: usize, status: &str, bundle: &Path| {
        json!({"ociVersion": "1.0.2", "id": format!("bench{i}"), "status": status, "pid": 0, "bundle": bundle}).to_string()
    };
    let (mut ha, mut hd) = (Vec::new(), Vec::new());
    let node = b.node_file()?;
    for (i, bundle) in bundles.iter().enumerate() {
        ha.push(time_process(
            b.netshim(g)?
                .args(["oci-hook", "createRuntime"])
                .env_clear(),
            state(i, "creating", bundle).as_bytes(),
            Some(&node),
        )?);
    }
    for (i, bundle) in bundles.iter().enumerate() {
        hd.push(time_process(
            b.netshim(g)?.args(["oci-hook", "poststop"]).env_clear(),
            state(i, "stopped", bundle).as_bytes(),
            Some(&node),
        )?);
    }
    let (ha, hd) = (stats(ha), stats(hd));
    line("netshim oci-hook createRuntime", n, &ha);
    line("netshim oci-hook poststop", n, &hd);
    if let Some((ca, cd)) = cni(&args.peers, &b, &b.sandboxes[n..2 * n])? {
        ratio("hook createRuntime vs cni ADD", &ha, &ca);
        ratio("hook poststop vs cni DEL", &hd, &cd);
    }
    if let Some((na, nd)) = netavark(&args.peers, &b, &b.sandboxes[2 * n..])? {
        ratio("hook createRuntime vs netavark", &ha, &na);
        ratio("hook poststop vs netavark", &hd, &nd);
    }
    b.core.network_rm("bench")?;
    Ok(())
}

/// The reference CNI bridge plugin (with host-local IPAM and, when
/// iptables is installed, ipMasq), one process per ADD and DEL.
fn cni(
    peers: &Peers,
    b: &Bench,
    sandboxes: &[PathBuf],
) -> Result<Option<(Stats, Stats)>, CliError> {
    let bridge = peers.cni_path.join("bridge");
    if !bridge.exists() {
        println!("cni bridge: not installed at {} (NETSHIM_BENCH_PEERS=1 bash scripts/deps.sh); no ratio", bridge.display());
        return Ok(None);
    }
    let conf = json!({
        "cniVersion": "1.0.0", "name": "benchcni", "type": "bridge", "bridge": "cnibench0",
        "isGateway": true, "ipMasq": Path::new("/usr/sbin/iptables").exists(),
        "ipam": {"type": "host-local", "subnet": "10.201.0.0/16", "dataDir": b.tmp.join("cni-ipam")}
    })
    .to_string();
    let node = File::open(&b.node).map_err(other)?;
    let (mut add, mut del) = (Vec::new(), Vec::new());
    for (i, sb) in sandboxes.iter().enumerate() {
        for (op, samples) in [("ADD", &mut add), ("DEL", &mut del)] {
            let mut cmd = Command::new(&bridge);
            cmd.env_clear()
                .env("CNI_COMMAND", op)
                .env("CNI_CONTAINERID", format!("bench{i}"))
                .env("CNI_NETNS", sb)
                .env("CNI_IFNAME", "eth0")
                .env("CNI_PATH", &peers.cni_path)
                .env("PATH", "/usr/sbin:/usr/bin:/sbin:/bin");
            samples.push(time_process(&mut cmd, conf.as_bytes(), Some(&node))?);
        }
    }
    let (a, d) = (stats(add), stats(del));
    line("cni bridge ADD (process)", sandboxes.len(), &a);
    line("cni bridge DEL (process)", sandboxes.len(), &d);
    Ok(Some((a, d)))
}

/// netavark (Podman's network stack) with a bridge network and NAT, one
/// process per setup and teardown; it takes static addresses from its
/// caller, so the benchmark hands them out.
fn netavark(
    peers: &Peers,
    b: &Bench,
    sandboxes: &[PathBuf],
) -> Result<Option<(Stats, Stats)>, CliError> {
    if !peers.netavark.exists() {
        println!(
            "netavark: not installed at {} (apt-get install netavark); no ratio",
            peers.netavark.display()
        );
        return Ok(None);
    }
    let node = File::open(&b.node).map_err(other)?;
    let config = b.tmp.join("netavark");
    let (mut setup, mut teardown) = (Vec::new(), Vec::new());
    for (i, sb) in sandboxes.iter().enumerate() {
        let opts = json!({
            "container_id": format!("{:064x}", i + 1), "container_name": format!("bench{i}"),
            "networks": {"benchnv": {"static_ips": [format!("10.202.{}.{}", (i + 2) / 250, (i + 2) % 250 + 2)], "interface_name": "eth0"}},
            "network_info": {"benchnv": {
                "name": "benchnv", "id": format!("{:064x}", 0xbe),
                "driver": "bridge", "network_interface": "nvbench0",
                "subnets": [{"subnet": "10.202.0.0/16", "gateway": "10.202.0.1"}],
                "ipv6_enabled": false, "internal": false, "dns_enabled": false, "ipam_options": {"driver": "host-local"}
            }}
        })
        .to_string();
        for (op, samples) in [("setup", &mut setup), ("teardown", &mut teardown)] {
            let mut cmd = Command::new(&peers.netavark);
            cmd.env_clear()
                .env("PATH", "/usr/sbin:/usr/bin:/sbin:/bin")
                .arg("--config")
                .arg(&config)
                .arg(op)
                .arg(sb);
            samples.push(time_process(&mut cmd, opts.as_bytes(), Some(&node))?);
        }
    }
    let (s, t) = (stats(setup), stats(teardown));
    line("netavark setup (process)", sandboxes.len(), &s);
    line("netavark teardown (process)", sandboxes.len(), &t);
    Ok(Some((s, t)))
}
