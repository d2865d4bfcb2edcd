#!/usr/bin/env python3
"""`make bench`, part two (issue 16): clusterd as an application server.

1. The todo API on PostgreSQL (Examples/todo): clusterd-todo against hummingbird-todo, the same API
   on Hummingbird 2 with the same JSON and SQL code (TodoCore), on one database started here
   (Tests/integration/postgres.py, 1,000 rows). GET /todos/:id with random ids, and a mix of 90%
   GETs and 10% POST /todos. One clusterd worker vs one Hummingbird event loop thread, both pinned
   to BENCH_SERVER_CPU (PostgreSQL and wrk share BENCH_CLIENT_CPU); then 2 workers vs 2 threads,
   nothing pinned. Alternating runs, medians: requests/s and the server's CPU per request.
2. Async against sync on hello world (clusterd-example, one pinned worker): GET /api/hello (answered
   in handle) against GET /api/hello-async (the same answer from a respondLater task that awaits
   nothing) and GET /api/sleep?ms=0 (a task that awaits Task.sleep: a real suspension, resumed from
   another thread); GET / (a config route) for reference.
3. 1,000 concurrent GET /api/sleep?ms=200 on one worker: wall time until all are answered, and the
   latency of GET / asked meanwhile.

    python3 scripts/bench_todo.py        (TODO_BENCH_ROUNDS=3, BENCH_DURATION=5s)
Results: stdout and bench-results/todo.json.
"""
import asyncio
import importlib.util
import json
import os
import resource
import shutil
import signal
import statistics
import subprocess
import sys
import tempfile
import time

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, os.path.join(ROOT, "Tests/integration"))
from postgres import running_postgres  # noqa: E402


def load_bench():
    spec = importlib.util.spec_from_file_location("bench", os.path.join(ROOT, "scripts/bench.py"))
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


bench = load_bench()
TODO_BIN = os.environ.get("TODO_BIN", os.path.join(ROOT, "Examples/todo/.build/release"))
EXAMPLE = os.path.join(ROOT, ".build/release/clusterd-example")
ROUNDS = int(os.environ.get("TODO_BENCH_ROUNDS", "3"))
ROWS = 1000
POOL = 4

GET_LUA = f"""
math.randomseed(os.time())
request = function() return wrk.format("GET", "/todos/" .. math.random(1, {ROWS})) end
"""
MIX_LUA = f"""
local post
init = function(args)
  math.randomseed(os.time())
  post = wrk.format("POST", "/todos", {{["Content-Type"] = "application/json"}}, '{{"title":"bench"}}')
end
request = function()
  if math.random(1, 10) == 1 then return post end
  return wrk.format("GET", "/todos/" .. math.random(1, {ROWS}))
end
"""


class ClusterdTodo(bench.Server):
    def __init__(self, name, tmp, database_url, workers=1, pinned=True):
        super().__init__(name, tmp)
        self.workers_n, self.pinned, self.database_url = workers, pinned, database_url

    def start(self):
        os.makedirs(self.tmp, exist_ok=True)
        cfg = os.path.join(self.tmp, "clusterd.json")
        with open(cfg, "w") as f:
            json.dump({"workers": self.workers_n, "listen": [f"127.0.0.1:{self.port}"], "controlSocket": os.path.join(self.tmp, "c.sock"),
                       "http": {"maxConnections": 30000}, "app": {"databaseURL": self.database_url, "poolSize": POOL}}, f)
        self.launch([os.path.join(TODO_BIN, "clusterd-todo"), "--config", cfg])

    def workers(self):
        return bench.children(self.proc.pid) or [self.proc.pid]


class HummingbirdTodo(bench.Server):
    def __init__(self, name, tmp, database_url, threads=1, pinned=True):
        super().__init__(name, tmp)
        self.workers_n, self.pinned, self.threads, self.database_url = 0, pinned, threads, database_url

    def start(self):
        os.environ["DATABASE_URL"] = self.database_url
        self.launch([os.path.join(TODO_BIN, "hummingbird-todo"), "--port", str(self.port), "--threads", str(self.threads), "--pool-size", str(POOL)])

    def workers(self):
        return [self.proc.pid]


class Example(bench.Clusterd):
    def start(self):
        os.makedirs(self.tmp, exist_ok=True)
        cfg = os.path.join(self.tmp, "clusterd.json")
        with open(cfg, "w") as f:
            json.dump({"workers": self.workers_n, "listen": [f"127.0.0.1:{self.port}"], "controlSocket": os.path.join(self.tmp, "c.sock"),
                       "http": {"maxConnections": 30000}, "routes": [{"path": "/", "body": bench.BODY}]}, f)
        self.launch([EXAMPLE, "--config", cfg])


def measure(servers, runs, tmp, results):
    """runs: (label, wrk kwargs); for each, ROUNDS rounds alternating the servers."""
    secs = float(bench.DURATION.rstrip("s"))
    for label, kwargs in runs:
        for r in range(ROUNDS):
            for name, srv in servers.items():
                pids = srv.workers()
                t0 = bench.cpu_ticks(pids)
                res = bench.wrk(srv.port, [], tmp=tmp, **kwargs)
                res["cpu_us_per_req"] = (bench.cpu_ticks(pids) - t0) / os.sysconf("SC_CLK_TCK") * 1e6 / max(1, res["rps"] * secs)
                results.setdefault(label, {}).setdefault(name, []).append(res)
                bad = f"  non-2xx {res['non2xx']} {res['socket_errors']}" if res["non2xx"] or res["socket_errors"] else ""
                print(f"{label:22s} round {r + 1} {name:18s} {res['rps']:>10,.0f} req/s  cpu/req {res['cpu_us_per_req']:6.1f} us  p99 {res['p99_us'] or 0:>8.0f} us{bad}", flush=True)


def medians(results):
    return {label: {name: {"rps": statistics.median(x["rps"] for x in runs), "cpu_us_per_req": statistics.median(x["cpu_us_per_req"] for x in runs),
                           "p50_us": statistics.median(x["p50_us"] or 0 for x in runs), "p99_us": statistics.median(x["p99_us"] or 0 for x in runs),
                           "non2xx": sum(x["non2xx"] for x in runs)}
                    for name, runs in by_server.items()}
            for label, by_server in results.items()}


def run_servers(servers, runs, tmp, results):
    try:
        for srv in servers.values():
            srv.start()
        measure(servers, runs, tmp, results)
    finally:
        for srv in servers.values():
            srv.stop()


async def fetch(port, path, timeout=30):
    reader, writer = await asyncio.wait_for(asyncio.open_connection("127.0.0.1", port), timeout)
    writer.write(f"GET {path} HTTP/1.1\r\nHost: b\r\nConnection: close\r\n\r\n".encode())
    data = await asyncio.wait_for(reader.read(), timeout)
    writer.close()
    return data


def concurrent_sleeps(tmp, count=1000, ms=200):
    srv = Example("example", os.path.join(tmp, "sleep"), workers=1, pinned=True)
    srv.start()
    try:
        async def run():
            connected = []
            # Open every connection first, then send all requests at once: wall time is the
            # server's, not the client's connect rate.
            for _ in range(count):
                connected.append(await asyncio.open_connection("127.0.0.1", srv.port))

            async def one(conn):
                reader, writer = conn
                writer.write(f"GET /api/sleep?ms={ms} HTTP/1.1\r\nHost: b\r\nConnection: close\r\n\r\n".encode())
                data = await asyncio.wait_for(reader.read(), 30)
                writer.close()
                return data

            start = time.monotonic()
            tasks = [asyncio.create_task(one(c)) for c in connected]
            root = []
            while not all(t.done() for t in tasks):
                t = time.monotonic()
                answer = await fetch(srv.port, "/")
                root.append((time.monotonic() - t, answer.endswith(bench.BODY.encode())))
                await asyncio.sleep(0.02)
            answers = await asyncio.gather(*tasks)
            return time.monotonic() - start, answers, root
        wall, answers, root = asyncio.run(run())
        ok = sum(1 for a in answers if a.startswith(b"HTTP/1.1 200") and a.endswith(b'{"slept":%d}' % ms))
        lat = sorted(x for x, _ in root)
        return {"count": count, "ms": ms, "wall_s": round(wall, 3), "answered_200": ok,
                "root_requests": len(root), "root_ok": sum(1 for _, good in root if good),
                "root_median_ms": round(statistics.median(lat) * 1000, 2) if lat else None,
                "root_max_ms": round(lat[-1] * 1000, 2) if lat else None}
    finally:
        srv.stop()


def main():
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    resource.setrlimit(resource.RLIMIT_NOFILE, (min(hard, 40000), hard))
    for path in (os.path.join(TODO_BIN, "clusterd-todo"), os.path.join(TODO_BIN, "hummingbird-todo"), EXAMPLE):
        if not os.path.exists(path):
            sys.exit(f"bench_todo: {path} is missing (make bench builds it)")
    tmp = tempfile.mkdtemp(prefix="cd-bench-todo-")
    report = {"rounds": ROUNDS, "duration": bench.DURATION, "date": time.strftime("%Y-%m-%d"), "pool_per_worker_or_thread": POOL}
    results = {}
    try:
        with running_postgres() as pg:
            pg.psql(f"INSERT INTO todos (title) SELECT 'todo ' || g FROM generate_series(1, {ROWS}) g")
            # PostgreSQL shares the client's CPU: the pinned server CPU is the server's alone.
            with open(os.path.join(pg.data, "postmaster.pid")) as f:
                postmaster = int(f.readline())
            for pid in [postmaster] + bench.children(postmaster):
                subprocess.run(["taskset", "-a", "-p", "-c", bench.CLIENT_CPU, str(pid)], capture_output=True)
            url = pg.socket_url
            one = {"clusterd-todo": ClusterdTodo("clusterd-todo", os.path.join(tmp, "cd1"), url),
                   "hummingbird-todo": HummingbirdTodo("hummingbird-todo", os.path.join(tmp, "hb1"), url)}
            run_servers(one, [("get 1 worker/thread", {"lua": GET_LUA, "connections": 32}),
                              ("mix 1 worker/thread", {"lua": MIX_LUA, "connections": 32})], tmp, results)
            two = {"clusterd-todo": ClusterdTodo("clusterd-todo", os.path.join(tmp, "cd2"), url, workers=2, pinned=False),
                   "hummingbird-todo": HummingbirdTodo("hummingbird-todo", os.path.join(tmp, "hb2"), url, threads=2, pinned=False)}
            run_servers(two, [("get 2 workers/threads", {"lua": GET_LUA, "connections": 64, "threads": 2, "pinned": False})], tmp, results)
            report["rows_after"] = int(pg.psql("SELECT count(*) FROM todos")[0][0])
        # Async against sync: the same worker, alternating paths.
        example = Example("example", os.path.join(tmp, "ex"))
        example.start()
        try:
            paths = {"GET / (config route)": "/", "GET /api/hello (sync)": "/api/hello?name=b",
                     "GET /api/hello-async (async)": "/api/hello-async?name=b", "GET /api/sleep?ms=0 (async)": "/api/sleep?ms=0"}
            for r in range(ROUNDS):
                for label, path in paths.items():
                    pids = example.workers()
                    t0 = bench.cpu_ticks(pids)
                    res = bench.wrk(example.port, [], tmp=tmp, path=path)
                    res["cpu_us_per_req"] = (bench.cpu_ticks(pids) - t0) / os.sysconf("SC_CLK_TCK") * 1e6 / max(1, res["rps"] * float(bench.DURATION.rstrip("s")))
                    results.setdefault("hello async vs sync", {}).setdefault(label, []).append(res)
                    print(f"{label:28s} round {r + 1} {res['rps']:>10,.0f} req/s  cpu/req {res['cpu_us_per_req']:6.2f} us", flush=True)
        finally:
            example.stop()
        report["sleeps"] = concurrent_sleeps(tmp)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    summary = medians(results)
    report["summary"], report["runs"] = summary, results
    print()
    for label, by_server in summary.items():
        print(label)
        for name, v in by_server.items():
            print(f"  {name:28s} {v['rps']:>10,.0f} req/s  cpu/req {v['cpu_us_per_req']:7.2f} us  p50 {v['p50_us']:>7.0f} us  p99 {v['p99_us']:>7.0f} us  non-2xx {v['non2xx']}")
    hello = summary["hello async vs sync"]
    sync_cpu = hello["GET /api/hello (sync)"]["cpu_us_per_req"]
    later_cpu = hello["GET /api/hello-async (async)"]["cpu_us_per_req"]
    sleep_cpu = hello["GET /api/sleep?ms=0 (async)"]["cpu_us_per_req"]
    report["async_cpu_over_sync"] = later_cpu / sync_cpu - 1
    report["sleep0_cpu_over_sync"] = sleep_cpu / sync_cpu - 1
    print(f"async path (respondLater, nothing awaited) CPU per request against the same answer in handle: {report['async_cpu_over_sync'] * 100:+.1f}%")
    print(f"/api/sleep?ms=0 (respondLater + Task.sleep: the global executor's timer, then an eventfd wake-up) against it: {report['sleep0_cpu_over_sync'] * 100:+.1f}%")
    s = report["sleeps"]
    print(f"{s['count']} concurrent /api/sleep?ms={s['ms']} on one worker: all answered in {s['wall_s']} s ({s['answered_200']} x 200); "
          f"GET / meanwhile: {s['root_requests']} asked, {s['root_ok']} ok, median {s['root_median_ms']} ms, max {s['root_max_ms']} ms")
    os.makedirs(os.path.join(ROOT, "bench-results"), exist_ok=True)
    with open(os.path.join(ROOT, "bench-results/todo.json"), "w") as f:
        json.dump(report, f, indent=1)


if __name__ == "__main__":
    main()
