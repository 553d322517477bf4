#!/usr/bin/env python3
"""Container start-to-network-ready time through dockerd: netshim's driver
(as a remote NetworkDriver + IpamDriver) against Docker's own bridge driver,
in the same run, on the same dockerd. `docker run -d` returns once the
container is started, which is after its network is configured.

Runs as root, inside a node network namespace it creates and removes; the
dockerd and netshim it starts are stopped at the end, also on failure.
Usage: scripts/bench-docker.py [COUNT]   (build first: cargo build --release -p netshim)
"""
import json, os, shutil, signal, statistics, subprocess, sys, tempfile, time

COUNT = int(sys.argv[1]) if len(sys.argv) > 1 else 20
ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
NETSHIM = os.path.join(ROOT, "target/release/netshim")
NODE = f"nsdbench{os.getpid()}"
PREFIX = f"nsdbench{os.getpid()}-"
TMP = tempfile.mkdtemp(prefix="nsd", dir="/tmp")
SOCK = os.path.join(TMP, "d.sock")
procs = []


def sh(*args, **kw):
    return subprocess.run(args, check=True, capture_output=True, text=True, **kw).stdout.strip()


def docker(*args):
    return sh("/usr/bin/docker", *args, env={**os.environ, "DOCKER_HOST": f"unix://{SOCK}"})


def wait_for(path):
    for _ in range(300):
        if os.path.exists(path):
            return
        time.sleep(0.05)
    raise SystemExit(f"{path} did not appear")


def main():
    sh("ip", "netns", "add", NODE)
    sh("ip", "-n", NODE, "link", "set", "lo", "up")
    ns = f"/run/netns/{NODE}"
    procs.append(subprocess.Popen([NETSHIM, "--state-dir", f"{TMP}/state", "--node-netns", ns, "daemon", "--plugin-prefix", PREFIX],
                                  stdout=subprocess.DEVNULL, stderr=open(f"{TMP}/netshim.log", "w")))
    wait_for(f"/run/docker/plugins/{PREFIX}bridge.sock")
    procs.append(subprocess.Popen(["nsenter", f"--net={ns}", "dockerd", "--bridge=none", "--iptables=false", "--ip6tables=false",
                                   "--data-root", f"{TMP}/data", "--exec-root", f"{TMP}/x", "--pidfile", f"{TMP}/d.pid", "-H", f"unix://{SOCK}"],
                                  stdout=subprocess.DEVNULL, stderr=open(f"{TMP}/dockerd.log", "w")))
    wait_for(SOCK)
    for _ in range(100):
        try:
            docker("version")
            break
        except subprocess.CalledProcessError:
            time.sleep(0.1)
    rootfs = os.path.join(TMP, "rootfs")
    os.makedirs(f"{rootfs}/bin")
    shutil.copy("/bin/busybox", f"{rootfs}/bin/busybox")
    os.symlink("busybox", f"{rootfs}/bin/sleep")
    sh("tar", "-C", rootfs, "-cf", f"{TMP}/rootfs.tar", ".")
    docker("import", f"{TMP}/rootfs.tar", "benchimg")
    drv = f"{PREFIX}bridge"
    docker("network", "create", "-d", "bridge", "--subnet", "10.210.0.0/16", "dockerbridge")
    docker("network", "create", "-d", drv, "--ipam-driver", drv, "--subnet", "10.211.0.0/16", "netshim")
    times = {"dockerbridge": [], "netshim": []}
    for i in range(COUNT):
        for net in times:  # interleaved, so drift hits both alike
            t = time.perf_counter()
            docker("run", "-d", "--name", f"{net}{i}", "--network", net, "benchimg", "sleep", "1000")
            times[net].append((time.perf_counter() - t) * 1000)
    print(f"docker run -d to network-ready, dockerd {docker('version', '-f', '{{.Server.Version}}')}, n={COUNT} each")
    for net, xs in times.items():
        xs.sort()
        p99 = xs[min(len(xs) - 1, round(0.99 * (len(xs) - 1)))]
        print(f"  {'Docker bridge driver' if net == 'dockerbridge' else 'netshim-bridge (remote)':<26} p50={statistics.median(xs):7.1f} ms  p99={p99:7.1f} ms")
    ratio = statistics.median(times["netshim"]) / statistics.median(times["dockerbridge"])
    print(f"  ratio netshim/docker bridge (p50): {ratio:.2f}")
    ids = docker("ps", "-aq").split()
    if ids:
        docker("rm", "-f", *ids)
    docker("network", "rm", "dockerbridge", "netshim")


try:
    main()
finally:
    for p in reversed(procs):
        p.send_signal(signal.SIGTERM)
        try:
            p.wait(timeout=20)
        except subprocess.TimeoutExpired:
            p.kill()
    subprocess.run(["ip", "netns", "del", NODE], capture_output=True)
    shutil.rmtree(TMP, ignore_errors=True)
