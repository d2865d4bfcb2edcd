#!/usr/bin/env python3
"""Many connections: clusterd and nginx with 10,000 and 50,000 concurrent keep-alive connections,
every one of them sending requests (wrk with that many -c), one after the other, the same counts.

Both servers listen with a backlog of 4096 (clusterd's fixed value; nginx's default is 511).

  10k: one server worker (pinned to CPU 0), one wrk -t1 -c10000 (pinned to CPU 1).
  50k: four server workers, four wrk processes of 12,500 connections each, each aimed at its own
       address, 127.0.0.1 to 127.0.0.4 (all loopback; the server listens on all four), nothing pinned.

Why those shapes (this machine's limits, printed at the start): RLIMIT_NOFILE's hard limit is 20,000
and cannot be raised here, so one process holds at most ~19,990 sockets: one worker cannot take
50,000, nor one wrk open them (each worker and each wrk stays at 12,500); the ephemeral port range
gives ~28,000 source ports per destination address, so 50,000 connections need two destination
addresses; and since this kernel gives connect() the even ports of the range first and scans all
of them before it takes an odd one, more than ~14,100 connections to one address:port make every
further connect() scan the whole even half: the first try here, two addresses of 25,000 each, spent
over 10 s in wrk's connect loop (0 requests done in the 10 s run). Four addresses of 12,500 each stay
within the even half.

Per run: requests/s (all wrk processes together), p99 latency (the worst wrk's), errors, and memory
per connection: the workers' PSS and anonymous memory (smaps_rollup) and the kernel's TCP buffer
memory (/proc/net/sockstat `TCP: mem`, pages, both ends of each loopback connection) and slab
(/proc/meminfo `Slab`, system-wide, both ends), each sampled before the load and in the middle of
it (all connections open), the difference divided by the connections open then (sockstat `inuse`).
Durations are bounded: CONNS_DURATION (default 10s) per run, wrk --timeout 10s.
"""
import json
import os
import re
import resource
import shutil
import signal
import subprocess
import sys
import tempfile
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import bench  # noqa: E402

DURATION = int(os.environ.get("CONNS_DURATION", "10s").rstrip("s"))
ADDRS = ["127.0.0.1", "127.0.0.2", "127.0.0.3", "127.0.0.4"]


def raise_nofile():
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))


def read(path):
    try:
        with open(path) as f:
            return f.read().strip()
    except OSError:
        return "?"


def limits():
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    lo, hi = map(int, read("/proc/sys/net/ipv4/ip_local_port_range").split())
    try:  # can the hard limit go up? (it cannot here, even as root: the container caps it)
        resource.setrlimit(resource.RLIMIT_NOFILE, (hard + 1, hard + 1))
        raisable = "yes"
        resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))
    except (ValueError, OSError) as e:
        raisable = f"no ({e})"
    return {"nofile_soft": soft, "nofile_hard": hard, "nofile_hard_raisable": raisable,
            "ephemeral_ports": hi - lo + 1, "port_range": f"{lo}-{hi}",
            "somaxconn": read("/proc/sys/net/core/somaxconn"), "tcp_max_syn_backlog": read("/proc/sys/net/ipv4/tcp_max_syn_backlog"),
            "tcp_mem_pages": read("/proc/sys/net/ipv4/tcp_mem"), "file_max": read("/proc/sys/fs/file-max"),
            "cgroup_memory_max": read("/sys/fs/cgroup/memory.max"), "uid": os.getuid()}


def sockstat():
    text = read("/proc/net/sockstat")
    m = re.search(r"TCP: inuse (\d+) orphan \d+ tw (\d+) alloc (\d+) mem (\d+)", text)
    return {"inuse": int(m.group(1)), "tw": int(m.group(2)), "alloc": int(m.group(3)), "mem_pages": int(m.group(4))}


def meminfo_kb(key):
    m = re.search(rf"^{key}:\s+(\d+) kB", read("/proc/meminfo"), re.M)
    return int(m.group(1)) if m else 0


def rollup(pid, key):
    m = re.search(rf"^{key}:\s+(\d+) kB", read(f"/proc/{pid}/smaps_rollup"), re.M)
    return int(m.group(1)) if m else 0


def sample(server):
    pids = server.workers()
    return {"pss_kb": sum(rollup(p, "Pss") for p in pids), "anon_kb": sum(rollup(p, "Anonymous") for p in pids),
            "slab_kb": meminfo_kb("Slab"), **sockstat()}


class RaisedLaunch:
    def launch(self, command):
        """bench.Server.launch, with the soft nofile limit raised to the hard one in the server."""
        pin = ["taskset", "-c", bench.SERVER_CPU] if self.pinned else []
        self.proc = subprocess.Popen(pin + command, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
                                     start_new_session=True, preexec_fn=raise_nofile)
        bench.wait_port(self.port)
        end = time.time() + 10
        while len(bench.children(self.proc.pid)) < self.workers_n and time.time() < end:
            time.sleep(0.05)
        time.sleep(0.3)


class Clusterd(RaisedLaunch, bench.Clusterd):
    def start(self):
        os.makedirs(self.tmp, exist_ok=True)
        cfg = os.path.join(self.tmp, "clusterd.json")
        with open(cfg, "w") as f:
            json.dump({"workers": self.workers_n, "listen": [f"{a}:{self.port}" for a in ADDRS],
                       "controlSocket": os.path.join(self.tmp, "c.sock"),
                       "http": {"maxConnections": 19000},
                       "routes": [{"path": "/", "body": bench.BODY}]}, f)
        self.launch([bench.CLUSTERD, "--config", cfg])


class Nginx(RaisedLaunch, bench.Nginx):
    def start(self):
        os.makedirs(self.tmp, exist_ok=True)
        conf = os.path.join(self.tmp, "nginx.conf")
        listens = "\n".join(f"    listen {a}:{self.port} reuseport backlog=4096;" for a in ADDRS)
        with open(conf, "w") as f:
            f.write(f"""
worker_processes {self.workers_n};
worker_rlimit_nofile 19000;
pid {self.tmp}/nginx.pid;
error_log {self.tmp}/error.log warn;
events {{ worker_connections 19000; }}
http {{
  access_log off;
  keepalive_requests 1000000;
  default_type text/plain;
  server {{
{listens}
    location / {{ return 200 "{bench.BODY}"; }}
  }}
}}
""")
        self.launch(["nginx", "-c", conf, "-p", self.tmp, "-g", "daemon off;"])


def parse(out):
    rps = re.search(r"Requests/sec:\s+([\d.]+)", out)
    m = re.search(r"\s99%\s+([\d.]+)(us|ms|s)\b", out)
    p99 = float(m.group(1)) * {"us": 1, "ms": 1000, "s": 1_000_000}[m.group(2)] if m else None
    errors = re.search(r"Socket errors: (.*)", out)
    non2xx = re.search(r"Non-2xx or 3xx responses: (\d+)", out)
    reqs = re.search(r"(\d+) requests in", out)
    return {"rps": float(rps.group(1)) if rps else 0.0, "p99_us": p99, "requests": int(reqs.group(1)) if reqs else 0,
            "socket_errors": errors.group(1) if errors else "", "non2xx": int(non2xx.group(1)) if non2xx else 0}


def run(server, total, clients, pinned):
    """`clients` wrk processes of total/clients connections each, spread over ADDRS."""
    per = total // clients
    before = sample(server)
    procs = []
    for i in range(clients):
        addr = ADDRS[i % len(ADDRS)]
        args = (["taskset", "-c", bench.CLIENT_CPU] if pinned else []) + [
            "wrk", "-t1", f"-c{per}", f"-d{DURATION}s", "--timeout", "10s", "--latency", f"http://{addr}:{server.port}/"]
        procs.append(subprocess.Popen(args, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
                                      preexec_fn=raise_nofile, start_new_session=True))
    # the middle of the run: every connection open (wrk opens them all at its start)
    peak = None
    end = time.time() + DURATION * 0.8
    while time.time() < end:
        time.sleep(0.5)
        s = sample(server)
        if peak is None or s["inuse"] >= peak["inuse"]:
            peak = s
        if time.time() > end - DURATION * 0.3 and peak["inuse"] - before["inuse"] >= 2 * total * 0.99:
            break
    outs = []
    for p in procs:
        try:
            outs.append(p.communicate(timeout=DURATION + 60)[0])
        except subprocess.TimeoutExpired:
            os.killpg(p.pid, signal.SIGKILL)
            outs.append(p.communicate()[0])
    parsed = [parse(o) for o in outs]
    opened = (peak["inuse"] - before["inuse"]) // 2  # both ends of each loopback connection are counted
    res = {"connections": total, "clients": clients, "open_at_peak": opened,
           "rps": sum(p["rps"] for p in parsed), "p99_us": max((p["p99_us"] or 0) for p in parsed),
           "socket_errors": [p["socket_errors"] for p in parsed if p["socket_errors"]],
           "non2xx": sum(p["non2xx"] for p in parsed), "before": before, "peak": peak}
    n = max(1, opened)
    res["pss_bytes_per_conn"] = (peak["pss_kb"] - before["pss_kb"]) * 1024 / n
    res["anon_bytes_per_conn"] = (peak["anon_kb"] - before["anon_kb"]) * 1024 / n
    res["tcp_mem_bytes_per_conn"] = (peak["mem_pages"] - before["mem_pages"]) * 4096 / n
    res["slab_bytes_per_conn"] = (peak["slab_kb"] - before["slab_kb"]) * 1024 / n
    if not any(p["rps"] for p in parsed):
        res["wrk_output"] = outs
    return res


def main():
    raise_nofile()
    for tool in ("wrk", "nginx", "taskset"):
        if not shutil.which(tool):
            sys.exit(f"bench_conns: {tool} is missing")
    for path in (os.environ.get("CLUSTERD"), os.path.join(bench.ROOT, ".build/release/clusterd"), "/work/main/.build/release/clusterd"):
        if path and os.access(path, os.X_OK):
            bench.CLUSTERD = path
            break
    lim = limits()
    print("limits:", json.dumps(lim), flush=True)
    most = lim["nofile_hard"] - 10
    print(f"=> one process holds at most ~{most:,} sockets (RLIMIT_NOFILE hard {lim['nofile_hard']:,}, raisable: {lim['nofile_hard_raisable']});"
          f" one destination address:port gives at most {lim['ephemeral_ports']:,} connections ({lim['port_range']}),"
          f" cheaply only {lim['ephemeral_ports'] // 2:,} (connect() scans the even ports first);"
          f" so 10k = 1 worker + 1 wrk, 50k = 4 workers + 4 wrk x 12,500 over 4 addresses", flush=True)
    tmp = tempfile.mkdtemp(prefix="cd-conns-")
    shapes = [(10000, 1, 1, True), (50000, 4, 4, False)]
    if os.environ.get("CONNS_ONLY"):
        shapes = [sh for sh in shapes if str(sh[0]) == os.environ["CONNS_ONLY"]]
    results = []
    try:
        for total, workers, clients, pinned in shapes:
            for name, cls in (("clusterd", Clusterd), ("nginx", Nginx)):
                srv = cls(name, os.path.join(tmp, f"{name}-{total}"), workers=workers, pinned=pinned)
                try:
                    srv.start()
                    time.sleep(1)
                    r = run(srv, total, clients, pinned)
                finally:
                    srv.stop()
                r.update(server=name, workers=workers)
                results.append(r)
                print(f"{total:>6,} conns {name:8s} {workers}w: {r['rps']:>10,.0f} req/s p99 {r['p99_us'] or 0:>9,.0f} us;"
                      f" open at peak {r['open_at_peak']:,}; per conn: PSS {r['pss_bytes_per_conn']:,.0f} B, anon {r['anon_bytes_per_conn']:,.0f} B,"
                      f" TCP mem {r['tcp_mem_bytes_per_conn']:,.0f} B, slab {r['slab_bytes_per_conn']:,.0f} B;"
                      f" errors {r['socket_errors'] or 'none'} non2xx {r['non2xx']}", flush=True)
                time.sleep(2)  # let the closed connections' state go before the next server
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    print()
    print(f"{'conns':>6s} {'server':8s} {'wkrs':>4s} {'req/s':>10s} {'p99 ms':>8s} {'open':>7s} {'PSS KiB before>peak':>20s} {'PSS B/conn':>11s} {'anon B/conn':>12s} {'TCP mem B/conn':>15s} {'slab B/conn':>12s}  errors")
    for r in results:
        pss = f"{r['before']['pss_kb']:,}>{r['peak']['pss_kb']:,}"
        print(f"{r['connections']:>6,} {r['server']:8s} {r['workers']:>4d} {r['rps']:>10,.0f} {(r['p99_us'] or 0) / 1000:>8.1f} {r['open_at_peak']:>7,} {pss:>20s}"
              f" {r['pss_bytes_per_conn']:>11,.0f} {r['anon_bytes_per_conn']:>12,.0f} {r['tcp_mem_bytes_per_conn']:>15,.0f} {r['slab_bytes_per_conn']:>12,.0f}"
              f"  {'; '.join(r['socket_errors']) or 'none'}")
    print("(PSS: all workers together; B/conn = (peak - before) / open. nginx allocates its whole connection table"
          " (worker_connections 19000) at start, so it is in its 'before'. TCP mem and slab: both ends of each loopback"
          " connection, wrk's included; slab is system-wide)")
    os.makedirs(os.path.join(bench.ROOT, "bench-results"), exist_ok=True)
    with open(os.path.join(bench.ROOT, "bench-results/conns.json"), "w") as f:
        json.dump({"limits": lim, "duration_s": DURATION, "results": results}, f, indent=1)


if __name__ == "__main__":
    main()
