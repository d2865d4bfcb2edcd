#!/usr/bin/env python3
"""`make bench`: clusterd vs nginx side by side on this machine, alternating runs, medians and ratios.

Each server runs one worker pinned to CPU 0 (`taskset`), wrk runs pinned to CPU 1. Scenarios:
keep-alive (wrk -t1 -c64) and pipelined depth 16 (a wrk Lua script). Every load run is bounded by
wrk's -d. Results go to stdout and bench-results/latest.json; Docs/benchmarks.md records them.
"""
import json
import os
import re
import shutil
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import time

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
CLUSTERD = os.path.join(ROOT, ".build/release/clusterd")
BODY = "Hello world!"
ROUNDS = int(os.environ.get("BENCH_ROUNDS", "3"))
DURATION = os.environ.get("BENCH_DURATION", "5s")
SERVER_CPU = os.environ.get("BENCH_SERVER_CPU", "0")
CLIENT_CPU = os.environ.get("BENCH_CLIENT_CPU", "1")

PIPELINE_LUA = """
init = function(args)
  local r = {}
  for i = 1, 16 do r[i] = wrk.format(nil, "/") end
  req = table.concat(r)
end
request = function() return req end
"""


def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def wait_port(port, timeout=10):
    end = time.time() + timeout
    while time.time() < end:
        try:
            socket.create_connection(("127.0.0.1", port), timeout=0.2).close()
            return
        except OSError:
            time.sleep(0.05)
    raise RuntimeError(f"port {port} never opened")


def children(pid):
    try:
        with open(f"/proc/{pid}/task/{pid}/children") as f:
            return [int(x) for x in f.read().split()]
    except OSError:
        return []


def pss_kb(pid):
    try:
        with open(f"/proc/{pid}/smaps_rollup") as f:
            for line in f:
                if line.startswith("Pss:"):
                    return int(line.split()[1])
    except OSError:
        pass
    return None


def cpu_ticks(pids):
    total = 0
    for pid in pids:
        try:
            with open(f"/proc/{pid}/stat") as f:
                fields = f.read().rsplit(")", 1)[1].split()
            total += int(fields[11]) + int(fields[12])  # utime + stime
        except OSError:
            pass
    return total


class Server:
    def __init__(self, name, tmp):
        self.name = name
        self.tmp = tmp
        self.port = free_port()
        self.proc = None

    def stop(self):
        if self.proc and self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(timeout=10)
            except subprocess.TimeoutExpired:
                os.killpg(self.proc.pid, signal.SIGKILL)
                self.proc.wait()


class Clusterd(Server):
    def start(self):
        cfg = os.path.join(self.tmp, "clusterd.json")
        with open(cfg, "w") as f:
            json.dump({"workers": 1, "listen": [f"127.0.0.1:{self.port}"],
                       "controlSocket": os.path.join(self.tmp, "c.sock"),
                       "routes": [{"path": "/", "body": BODY}]}, f)
        self.proc = subprocess.Popen(["taskset", "-c", SERVER_CPU, CLUSTERD, "--config", cfg],
                                     stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True)
        wait_port(self.port)
        time.sleep(0.3)

    def workers(self):
        kids = children(self.proc.pid)
        return kids if kids else [self.proc.pid]


class Nginx(Server):
    def start(self):
        conf = os.path.join(self.tmp, "nginx.conf")
        with open(conf, "w") as f:
            f.write(f"""
worker_processes 1;
pid {self.tmp}/nginx.pid;
error_log {self.tmp}/error.log warn;
events {{ worker_connections 4096; }}
http {{
  access_log off;
  keepalive_requests 1000000;
  default_type text/plain;
  server {{
    listen 127.0.0.1:{self.port} reuseport;
    location / {{ return 200 "{BODY}"; }}
  }}
}}
""")
        self.proc = subprocess.Popen(["taskset", "-c", SERVER_CPU, "nginx", "-c", conf, "-p", self.tmp, "-g", "daemon off;"],
                                     stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True)
        wait_port(self.port)
        time.sleep(0.3)

    def workers(self):
        return children(self.proc.pid)


def wrk(port, extra, lua=None, tmp=None):
    args = ["taskset", "-c", CLIENT_CPU, "wrk", "-t1", "-c64", "-d", DURATION, "--latency"]
    if lua:
        script = os.path.join(tmp, "pipeline.lua")
        with open(script, "w") as f:
            f.write(lua)
        args += ["-s", script]
    args += extra + [f"http://127.0.0.1:{port}/"]
    out = subprocess.run(args, capture_output=True, text=True, timeout=120).stdout
    rps = float(re.search(r"Requests/sec:\s+([\d.]+)", out).group(1))
    lat = {}
    for q in ("50", "99"):
        m = re.search(rf"\s{q}%\s+([\d.]+)(us|ms|s)", out)
        if m:
            v = float(m.group(1)) * {"us": 1, "ms": 1000, "s": 1_000_000}[m.group(2)]
            lat[q] = v
    errors = re.search(r"Non-2xx or 3xx responses: (\d+)", out)
    socket_errors = re.search(r"Socket errors: (.*)", out)
    return {"rps": rps, "p50_us": lat.get("50"), "p99_us": lat.get("99"),
            "non2xx": int(errors.group(1)) if errors else 0,
            "socket_errors": socket_errors.group(1) if socket_errors else ""}


def main():
    for tool in ("wrk", "nginx", "taskset"):
        if not shutil.which(tool):
            sys.exit(f"bench: {tool} is missing (make bench installs it)")
    tmp = tempfile.mkdtemp(prefix="cd-bench-")
    results = {"clusterd": {}, "nginx": {}}
    servers = {"clusterd": Clusterd("clusterd", tmp), "nginx": Nginx("nginx", os.path.join(tmp, "ngx"))}
    os.makedirs(servers["nginx"].tmp, exist_ok=True)
    scenarios = [("keepalive", [], None), ("pipelined16", [], PIPELINE_LUA)]
    try:
        for s in servers.values():
            s.start()
        idle = {name: [pss_kb(p) for p in s.workers()] for name, s in servers.items()}
        masters = {name: pss_kb(s.proc.pid) for name, s in servers.items()}
        for scenario, extra, lua in scenarios:
            for r in range(ROUNDS):
                for name in ("clusterd", "nginx"):  # A B A B ...
                    s = servers[name]
                    pids = s.workers()
                    t0 = cpu_ticks(pids)
                    res = wrk(s.port, extra, lua, tmp)
                    t1 = cpu_ticks(pids)
                    secs = float(DURATION.rstrip("s"))
                    res["cpu_us_per_req"] = (t1 - t0) / os.sysconf("SC_CLK_TCK") * 1e6 / max(1, res["rps"] * secs)
                    results[name].setdefault(scenario, []).append(res)
                    print(f"{scenario:12s} round {r + 1} {name:8s} {res['rps']:>12,.0f} req/s  p99 {res['p99_us'] or 0:>8.0f} us", flush=True)
        busy = {name: [pss_kb(p) for p in s.workers()] for name, s in servers.items()}
    finally:
        for s in servers.values():
            s.stop()

    print()
    print(f"{'scenario':14s} {'clusterd req/s':>15s} {'nginx req/s':>13s} {'ratio':>7s} {'cd p99 us':>10s} {'ngx p99 us':>11s} {'cd cpu/req':>11s} {'ngx cpu/req':>12s}")
    summary = {}
    for scenario, _, _ in scenarios:
        c = results["clusterd"][scenario]
        n = results["nginx"][scenario]
        cm = statistics.median(x["rps"] for x in c)
        nm = statistics.median(x["rps"] for x in n)
        cp = statistics.median(x["p99_us"] or 0 for x in c)
        np_ = statistics.median(x["p99_us"] or 0 for x in n)
        cc = statistics.median(x["cpu_us_per_req"] for x in c)
        nc = statistics.median(x["cpu_us_per_req"] for x in n)
        summary[scenario] = {"clusterd_rps": cm, "nginx_rps": nm, "ratio": cm / nm, "clusterd_p99_us": cp, "nginx_p99_us": np_,
                             "clusterd_cpu_us_per_req": cc, "nginx_cpu_us_per_req": nc}
        def lat(v):
            # wrk cannot time pipelined requests one by one: its percentiles there are not usable.
            return f"{v:>10.0f}" if v and "pipelined" not in scenario else f"{'n/a':>10s}"
        print(f"{scenario:14s} {cm:>15,.0f} {nm:>13,.0f} {cm / nm:>7.2f} {lat(cp)} {lat(np_)} {cc:>11.2f} {nc:>12.2f}")
    print()
    print(f"worker PSS idle (KiB): clusterd {idle['clusterd']}  nginx {idle['nginx']}")
    print(f"worker PSS after load (KiB): clusterd {busy['clusterd']}  nginx {busy['nginx']}")
    print(f"master PSS idle (KiB): clusterd {masters['clusterd']}  nginx {masters['nginx']}")
    os.makedirs(os.path.join(ROOT, "bench-results"), exist_ok=True)
    with open(os.path.join(ROOT, "bench-results/latest.json"), "w") as f:
        json.dump({"summary": summary, "runs": results, "pss_idle_kb": idle, "pss_busy_kb": busy, "pss_master_kb": masters,
                   "rounds": ROUNDS, "duration": DURATION}, f, indent=1)
    shutil.rmtree(tmp, ignore_errors=True)


if __name__ == "__main__":
    main()
