//! `netshim bench attach`: attach and detach N fresh namespaces on one
//! bridge network, in-process and as one `netshim` process per operation,
//! and the reference CNI bridge plugin the same way when it is installed.
//! Everything happens in namespaces the benchmark makes and removes.

use std::os::fd::AsFd;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::Arc;
use std::time::{Duration, Instant};

use clap::{Args, Subcommand};
use netshim_host_api::kernel::netlink::Netlink;
use netshim_host_api::kernel::Kernel;

use super::{CliError, Global};
use crate::cnm::{Attach, Core, CreateNetwork, DetachTarget};
use crate::netns;

#[derive(Debug, Subcommand)]
pub enum BenchCmd {
    /// Attach/detach latency, attaches per second, share of time in wasm.
    Attach(BenchAttach),
}

#[derive(Debug, Args)]
pub struct BenchAttach {
    /// Namespaces to attach and detach.
    #[arg(long, default_value_t = 100)]
    pub count: usize,
    /// Operations measured as separate processes (netshim and peers).
    #[arg(long, default_value_t = 30)]
    pub process_count: usize,
    /// Where the reference CNI plugins live.
    #[arg(long, default_value = "/usr/lib/cni")]
    pub cni_path: PathBuf,
}

struct Cleanup {
    names: Vec<String>,
    dirs: Vec<PathBuf>,
}

impl Drop for Cleanup {
    fn drop(&mut self) {
        for n in self.names.iter().rev() {
            let _ = netns::delete(n);
        }
        for d in &self.dirs {
            let _ = std::fs::remove_dir_all(d);
        }
    }
}

fn percentile(sorted: &[Duration], p: f64) -> Duration {
    if sorted.is_empty() {
        return Duration::ZERO;
    }
    let i = ((sorted.len() as f64 - 1.0) * p).round() as usize;
    sorted[i]
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
    Stats {
        p50: percentile(&samples, 0.5),
        p99: percentile(&samples, 0.99),
        per_sec,
    }
}

fn ms(d: Duration) -> String {
    format!("{:.2} ms", d.as_secs_f64() * 1000.0)
}

fn line(label: &str, n: usize, s: &Stats) {
    println!(
        "{label:<28} n={n:<5} p50={:>9}  p99={:>9}  ops/s={:>7.0}",
        ms(s.p50),
        ms(s.p99),
        s.per_sec
    );
}

pub fn run(g: &Global, cmd: BenchCmd) -> Result<(), CliError> {
    let BenchCmd::Attach(args) = cmd;
    let pid = std::process::id();
    let tmp = std::env::temp_dir().join(format!("netshim-bench-{pid}"));
    let mut cleanup = Cleanup {
        names: Vec::new(),
        dirs: vec![tmp.clone()],
    };
    let fail = |e: netns::NetnsError| CliError::Other(e.to_string());

    let node_name = format!("nsbench-{pid}-node");
    let node = netns::create(&node_name).map_err(fail)?;
    cleanup.names.push(node_name);
    let state_dir = tmp.join("state");
    let kernel: Arc<dyn Kernel> =
        Arc::new(Netlink::new(Some(&node)).map_err(|e| CliError::Other(e.to_string()))?);
    // The compiled-guest cache is shared with the normal state directory so
    // the benchmark measures steady state, not Cranelift.
    let runtime = crate::runtime::Runtime::new(g.limits(), Some(g.cache_dir()))?;
    let core = Core::new(runtime, kernel, &state_dir, Vec::new())?;
    core.network_create(CreateNetwork {
        name: "bench".into(),
        driver: "bridge".into(),
        subnet: Some("10.200.0.0/16".parse().unwrap()),
        gateway: None,
        internal: false,
        options: Vec::new(),
    })?;

    let total = args.count + args.process_count;
    let mut sandboxes = Vec::with_capacity(total);
    for i in 0..total {
        let name = format!("nsbench-{pid}-c{i}");
        sandboxes.push(netns::create(&name).map_err(fail)?);
        cleanup.names.push(name);
    }
    println!(
        "netshim bench attach: {} in-process, {} per process; kernel {}",
        args.count,
        args.process_count,
        kernel_release()
    );

    let (mut attach, mut wasm, mut inst) = (Vec::new(), Duration::ZERO, Vec::new());
    let mut attach_total = Duration::ZERO;
    for sb in &sandboxes[..args.count] {
        let t = Instant::now();
        core.attach(Attach::new("bench", sb.clone()))?;
        let d = t.elapsed();
        let timing = core.last_timing();
        attach.push(d);
        attach_total += d;
        wasm += timing.wasm;
        inst.push(timing.instantiate);
    }
    let mut detach = Vec::new();
    for sb in &sandboxes[..args.count] {
        let t = Instant::now();
        core.detach(DetachTarget::Sandbox {
            network: "bench".into(),
            netns: sb.clone(),
        })?;
        detach.push(t.elapsed());
    }
    let a = stats(attach);
    line("attach (in-process)", args.count, &a);
    line("detach (in-process)", args.count, &stats(detach));
    let inst = stats(inst);
    println!(
        "wasm share of attach: {:.1} % (instantiation + guest code, kernel calls excluded; instantiation p50 {:.0} µs per attach, 3 guest calls)",
        100.0 * wasm.as_secs_f64() / attach_total.as_secs_f64().max(1e-9),
        inst.p50.as_secs_f64() * 1e6
    );

    let procs = &sandboxes[args.count..];
    let mut p_attach = Vec::new();
    let mut p_detach = Vec::new();
    let exe = std::env::current_exe().map_err(|e| CliError::Other(e.to_string()))?;
    for sb in procs {
        let netns_arg = sb.display().to_string();
        let cache = g.cache_dir();
        let base = [
            "--state-dir",
            state_dir.to_str().unwrap_or_default(),
            "--node-netns",
            node.to_str().unwrap_or_default(),
            "--cache-dir",
            cache.to_str().unwrap_or_default(),
        ];
        p_attach.push(time_process(Command::new(&exe).args(base).args([
            "attach",
            "--network",
            "bench",
            "--netns",
            &netns_arg,
        ]))?);
        p_detach.push(time_process(Command::new(&exe).args(base).args([
            "detach",
            "--network",
            "bench",
            "--netns",
            &netns_arg,
        ]))?);
    }
    let pa = stats(p_attach);
    let pd = stats(p_detach);
    line("attach (netshim process)", procs.len(), &pa);
    line("detach (netshim process)", procs.len(), &pd);

    let bridge = args.cni_path.join("bridge");
    if bridge.exists() {
        let (ca, cd) = cni_peer(&args.cni_path, &node, procs, &tmp)?;
        line("cni bridge ADD (process)", procs.len(), &ca);
        line("cni bridge DEL (process)", procs.len(), &cd);
        println!(
            "ratio attach p50 netshim/cni: in-process {:.2}, process {:.2}; detach p50 process {:.2}",
            a.p50.as_secs_f64() / ca.p50.as_secs_f64(),
            pa.p50.as_secs_f64() / ca.p50.as_secs_f64(),
            pd.p50.as_secs_f64() / cd.p50.as_secs_f64()
        );
    } else {
        println!("cni bridge: not installed at {} (apt-get install containernetworking-plugins); no peer ratio", bridge.display());
    }
    core.network_rm("bench")?;
    drop(cleanup);
    Ok(())
}

fn kernel_release() -> String {
    std::fs::read_to_string("/proc/sys/kernel/osrelease")
        .map(|s| s.trim().to_string())
        .unwrap_or_default()
}

fn time_process(cmd: &mut Command) -> Result<Duration, CliError> {
    let t = Instant::now();
    let out = cmd
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .output()
        .map_err(|e| CliError::Other(e.to_string()))?;
    let d = t.elapsed();
    if !out.status.success() {
        return Err(CliError::Other(format!(
            "benchmark step failed: {}",
            String::from_utf8_lossy(&out.stderr).trim()
        )));
    }
    Ok(d)
}

/// The reference CNI bridge plugin, one process per ADD/DEL as a runtime
/// runs it, inside the benchmark's node namespace (entered by the child
/// itself before exec, so no `ip netns exec` cost is added).
fn cni_peer(
    cni_path: &Path,
    node: &Path,
    sandboxes: &[PathBuf],
    tmp: &Path,
) -> Result<(Stats, Stats), CliError> {
    use std::io::Write;
    use std::os::unix::process::CommandExt;
    let masq = Path::new("/usr/sbin/iptables").exists();
    let conf = serde_json::json!({
        "cniVersion": "1.0.0", "name": "benchcni", "type": "bridge", "bridge": "cnibench0",
        "isGateway": true, "ipMasq": masq,
        "ipam": {"type": "host-local", "subnet": "10.201.0.0/16", "dataDir": tmp.join("cni-ipam")}
    })
    .to_string();
    let node_file = std::fs::File::open(node).map_err(|e| CliError::Other(e.to_string()))?;
    let mut add = Vec::new();
    let mut del = Vec::new();
    for (i, sb) in sandboxes.iter().enumerate() {
        for (op, samples) in [("ADD", &mut add), ("DEL", &mut del)] {
            let fd = node_file
                .as_fd()
                .try_clone_to_owned()
                .map_err(|e| CliError::Other(e.to_string()))?;
            let mut cmd = Command::new(cni_path.join("bridge"));
            cmd.env_clear()
                .env("CNI_COMMAND", op)
                .env("CNI_CONTAINERID", format!("bench{i}"))
                .env("CNI_NETNS", sb)
                .env("CNI_IFNAME", "eth0")
                .env("CNI_PATH", cni_path)
                .env("PATH", "/usr/sbin:/usr/bin:/sbin:/bin")
                .stdin(Stdio::piped())
                .stdout(Stdio::piped())
                .stderr(Stdio::piped());
            // SAFETY: setns is async-signal-safe; the fd stays open until exec.
            unsafe {
                cmd.pre_exec(move || {
                    nix::sched::setns(&fd, nix::sched::CloneFlags::CLONE_NEWNET)
                        .map_err(std::io::Error::from)
                });
            }
            let t = Instant::now();
            let mut child = cmd
                .spawn()
                .map_err(|e| CliError::Other(format!("cni bridge: {e}")))?;
            if let Some(mut stdin) = child.stdin.take() {
                let _ = stdin.write_all(conf.as_bytes());
            }
            let out = child
                .wait_with_output()
                .map_err(|e| CliError::Other(e.to_string()))?;
            samples.push(t.elapsed());
            if !out.status.success() {
                return Err(CliError::Other(format!(
                    "cni bridge {op} failed: {}",
                    String::from_utf8_lossy(&out.stdout).trim()
                )));
            }
        }
    }
    Ok((stats(add), stats(del)))
}
