#!/usr/bin/env python3
"""The floor: clusterd and nginx against two minimal C servers (Bench/floor/epoll.c, uring.c).

Builds both C servers with gcc into .build/floor/, then runs the four side by side the way
scripts/bench.py does: one worker each pinned to CPU 0, wrk pinned to CPU 1, rounds alternated
(epoll, io_uring, clusterd, nginx, epoll, …; BENCH_ROUNDS, default 5, of BENCH_DURATION, default 5s),
medians. Scenarios: keep-alive (wrk -t1 -c64) and pipelined depth 16 (bench.py's Lua script).
Server CPU per request = the worker's utime+stime (/proc/PID/stat) over the run divided by requests.
The question it answers: does io_uring cost less CPU per request than epoll on this kernel, and by
how much (at 10% or more, clusterd would get an io_uring loop)?

clusterd is $CLUSTERD, else .build/release/clusterd here, else /work/main's release build.
"""
import json
import os
import shutil
import statistics
import subprocess
import sys
import tempfile

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import bench  # noqa: E402  (its helpers: servers, wrk, alternating rounds)

ROOT = bench.ROOT
FLOOR = os.path.join(ROOT, ".build/floor")


def find_clusterd():
    for path in (os.environ.get("CLUSTERD"), os.path.join(ROOT, ".build/release/clusterd"),
                 "/work/main/.build/release/clusterd"):
        if path and os.access(path, os.X_OK):
            return path
    sys.exit("bench_floor: no clusterd release binary (set CLUSTERD=)")


def build():
    os.makedirs(FLOOR, exist_ok=True)
    for name in ("epoll", "uring"):
        src = os.path.join(ROOT, f"Bench/floor/{name}.c")
        subprocess.run(["gcc", "-O2", "-Wall", "-o", os.path.join(FLOOR, name), src], check=True)


class Floor(bench.Server):
    def __init__(self, name, tmp, binary):
        super().__init__(name, tmp)
        self.binary, self.workers_n, self.pinned = binary, 1, True

    def start(self):
        self.launch([os.path.join(FLOOR, self.binary), str(self.port), "1"])
        if self.proc.poll() is not None:
            raise RuntimeError(f"{self.name} exited with {self.proc.returncode}")

    def workers(self):
        return bench.children(self.proc.pid)


def exec_ns(pids):
    """CPU time on the scheduler's own clock (sum_exec_runtime, /proc/PID/task/*/schedstat), every
    thread of the workers (io_uring's io-wq threads included): exact, where utime+stime is sampled
    at the tick (CONFIG_TICK_CPU_ACCOUNTING, 250 Hz here)."""
    total = 0
    for pid in pids:
        try:
            for tid in os.listdir(f"/proc/{pid}/task"):
                with open(f"/proc/{pid}/task/{tid}/schedstat") as f:
                    total += int(f.read().split()[0])
        except OSError:
            pass
    return total


def switches(pids):
    """Context switches (voluntary + involuntary) of every thread of the workers: one per sleep."""
    total = 0
    for pid in pids:
        try:
            for tid in os.listdir(f"/proc/{pid}/task"):
                with open(f"/proc/{pid}/task/{tid}/status") as f:
                    total += sum(int(line.split()[1]) for line in f if line.endswith("ctxt_switches\n") or "ctxt_switches:" in line)
        except OSError:
            pass
    return total


def run_rounds(servers, scenarios, results, tmp):
    """bench.run_pairs, measuring the workers' CPU both ways (ticks as bench.py, and exec_ns)."""
    for scenario, kwargs, lua in scenarios:
        for r in range(bench.ROUNDS):
            for name, srv in servers.items():
                pids = srv.workers()
                t0, n0, c0 = bench.cpu_ticks(pids), exec_ns(pids), switches(pids)
                res = bench.wrk(srv.port, kwargs.get("extra", []), lua, tmp)
                t1, n1, c1 = bench.cpu_ticks(pids), exec_ns(pids), switches(pids)
                requests = max(1, res["rps"] * float(bench.DURATION.rstrip("s")))
                res["cpu_us_per_req"] = (t1 - t0) / os.sysconf("SC_CLK_TCK") * 1e6 / requests
                res["exec_us_per_req"] = (n1 - n0) / 1000 / requests
                res["switches_per_req"] = (c1 - c0) / requests
                res["threads"] = sum(len(os.listdir(f"/proc/{p}/task")) for p in pids if os.path.isdir(f"/proc/{p}"))
                results.setdefault(name, {}).setdefault(scenario, []).append(res)
                print(f"{scenario:12s} round {r + 1} {name:11s} {res['rps']:>11,.0f} req/s  cpu/req {res['cpu_us_per_req']:6.2f} us (ticks)"
                      f" {res['exec_us_per_req']:6.2f} us (schedstat)  ctx switches/req {res['switches_per_req']:.3f} threads {res['threads']}", flush=True)


def main():
    soft, hard = bench.resource.getrlimit(bench.resource.RLIMIT_NOFILE)
    bench.resource.setrlimit(bench.resource.RLIMIT_NOFILE, (hard, hard))
    for tool in ("wrk", "nginx", "taskset", "gcc"):
        if not shutil.which(tool):
            sys.exit(f"bench_floor: {tool} is missing")
    bench.CLUSTERD = find_clusterd()
    build()
    probe = subprocess.run([os.path.join(FLOOR, "uring"), "0", "0"], capture_output=True, text=True)
    names = ["C epoll", "C io_uring", "clusterd", "nginx"]
    if probe.returncode == 2:
        print(probe.stderr.strip(), "- the io_uring floor is left out")
        names.remove("C io_uring")
    only = os.environ.get("BENCH_SERVERS")  # e.g. "C epoll,C io_uring"
    if only:
        names = [n for n in names if n in only.split(",")]
    tmp = tempfile.mkdtemp(prefix="cd-floor-")
    make = {"C epoll": lambda: Floor("C epoll", os.path.join(tmp, "ep"), "epoll"),
            "C io_uring": lambda: Floor("C io_uring", os.path.join(tmp, "ur"), "uring"),
            "clusterd": lambda: bench.Clusterd("clusterd", os.path.join(tmp, "cd")),
            "nginx": lambda: bench.Nginx("nginx", os.path.join(tmp, "ngx"))}
    servers = {name: make[name]() for name in names}
    scenarios = [("keepalive", {}, None), ("pipelined16", {}, bench.PIPELINE_LUA)]
    results = {}
    print(f"clusterd: {bench.CLUSTERD}; {bench.ROUNDS} rounds of {bench.DURATION}; kernel {os.uname().release}", flush=True)
    try:
        for srv in servers.values():
            srv.start()
        run_rounds(servers, scenarios, results, tmp)
    finally:
        for srv in servers.values():
            srv.stop()
        shutil.rmtree(tmp, ignore_errors=True)

    med = statistics.median
    summary = {}
    print()
    print("cpu = the worker's CPU per request in us: ticks = utime+stime as bench.py (sampled at the tick),"
          " exec = schedstat (exact); x epoll = ratio to the C epoll floor")
    print(f"{'scenario':12s} {'server':11s} {'req/s':>11s} {'x epoll':>8s} {'cpu ticks':>10s} {'x epoll':>8s} {'cpu exec':>9s} {'x epoll':>8s} {'wrk us/req':>11s}  per-round exec us/req")
    for scenario, _, _ in scenarios:
        base = results["C epoll"][scenario]
        base_rps, base_cpu = med(x["rps"] for x in base), med(x["cpu_us_per_req"] for x in base)
        base_exec = med(x["exec_us_per_req"] for x in base)
        for name in names:
            runs = results[name][scenario]
            rps, cpu = med(x["rps"] for x in runs), med(x["cpu_us_per_req"] for x in runs)
            exe = med(x["exec_us_per_req"] for x in runs)
            p99 = med(x["p99_us"] or 0 for x in runs)
            client = med(x["client_cpu_us_per_req"] for x in runs)
            summary.setdefault(scenario, {})[name] = {"rps": rps, "cpu_us_per_req": cpu, "exec_us_per_req": exe, "p99_us": p99,
                                                     "client_cpu_us_per_req": client,
                                                     "exec_rounds": [x["exec_us_per_req"] for x in runs]}
            rounds = " ".join(f"{x['exec_us_per_req']:.2f}" for x in runs)
            print(f"{scenario:12s} {name:11s} {rps:>11,.0f} {rps / base_rps:>8.2f} {cpu:>10.2f} {cpu / base_cpu:>8.2f} {exe:>9.2f} {exe / base_exec:>8.2f} {client:>11.2f}  {rounds}")
    if "C io_uring" in names:
        print()
        for scenario in summary:
            for key, what in (("exec_us_per_req", "schedstat"), ("cpu_us_per_req", "ticks")):
                e, u = summary[scenario]["C epoll"][key], summary[scenario]["C io_uring"][key]
                saving = (e - u) / e
                verdict = "YES (10% or more)" if saving >= 0.10 else "no (under 10%)"
                print(f"{scenario}: io_uring CPU/req ({what}) {u:.2f} us vs epoll {e:.2f} us: {saving:+.1%} saved -> {verdict}")
            # paired per round (the same minute of this noisy machine): the spread of the saving
            pairs = [(a["exec_us_per_req"] - b["exec_us_per_req"]) / a["exec_us_per_req"]
                     for a, b in zip(results["C epoll"][scenario], results["C io_uring"][scenario])]
            print(f"{scenario}: saving per round (schedstat): " + " ".join(f"{x:+.0%}" for x in pairs))
    os.makedirs(os.path.join(ROOT, "bench-results"), exist_ok=True)
    with open(os.path.join(ROOT, "bench-results/floor.json"), "w") as f:
        json.dump({"rounds": bench.ROUNDS, "duration": bench.DURATION, "summary": summary, "runs": results}, f, indent=1)


if __name__ == "__main__":
    main()
