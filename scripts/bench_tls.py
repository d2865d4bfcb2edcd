#!/usr/bin/env python3
"""`make bench-tls` (and part of `make bench`): HTTPS, clusterd vs nginx with the same ECDSA P-256
certificate, one worker each pinned to CPU 0, the load generator pinned to CPU 1, alternating
rounds, medians and ratios:

  keepalive-tls   wrk -t1 -c64 over HTTPS keep-alive: requests/s and server CPU per request
  full-handshake  wrk -t1 -c16 with `Connection: close`: every request a new TLS connection and a
                  full handshake (wrk keeps no session): handshakes/s and server CPU per handshake
  resumed         `openssl s_time -reuse`: one session resumed on every new connection (a ticket
                  under TLS 1.3), one connection at a time: handshakes/s and server CPU per
                  handshake (flagged when fewer than 90% resumed)
  idle memory     2,000 idle TLS connections (handshake and one request done): worker anonymous
                  memory per connection

nginx is configured as an operator would for this: `ssl_session_cache shared:SSL:10m`, tickets on
(its default), TLS 1.2 and 1.3. Every load run is bounded (-d / -time). Prints a table; writes
bench-results/tls.json.
"""
import importlib.util
import json
import os
import re
import resource
import shutil
import socket
import ssl
import statistics
import subprocess
import sys
import tempfile
import time

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
spec = importlib.util.spec_from_file_location("bench", os.path.join(ROOT, "scripts/bench.py"))
bench = importlib.util.module_from_spec(spec)
spec.loader.exec_module(bench)

ROUNDS = bench.ROUNDS
DURATION = bench.DURATION
IDLE_CONNECTIONS = int(os.environ.get("BENCH_TLS_IDLE", "2000"))


# bench.py's servers in its HTTPS mode (BENCH_TLS=1): the certificate in bench.CERT, `tls` on
# clusterd's listener, `listen … ssl` with a session cache on nginx's, wrk on https:// URLs.
bench.TLS = True


def wrk_https(srv, extra, connections):
    pids = srv.workers()
    t0 = bench.cpu_ticks(pids)
    res = bench.wrk(srv.port, extra, connections=connections)
    t1 = bench.cpu_ticks(pids)
    requests = res["rps"] * float(DURATION.rstrip("s"))
    errors = res["socket_errors"] + (f" non2xx {res['non2xx']}" if res["non2xx"] else "")
    return {"rps": res["rps"], "cpu_us_per_req": (t1 - t0) / os.sysconf("SC_CLK_TCK") * 1e6 / max(1, requests), "errors": errors}


def s_time_resumed(srv):
    seconds = int(float(DURATION.rstrip("s")))
    args = ["taskset", "-c", bench.CLIENT_CPU, "openssl", "s_time", "-connect", f"127.0.0.1:{srv.port}", "-reuse",
            "-time", str(seconds), "-www", "/"]
    pids = srv.workers()
    t0, w0 = bench.cpu_ticks(pids), time.monotonic()
    out = subprocess.run(args, capture_output=True, text=True, timeout=seconds + 60).stdout
    t1, wall = bench.cpu_ticks(pids), time.monotonic() - w0
    # "NNN connections in X.XXs; ..." for the -reuse part
    m = re.findall(r"(\d+) connections in ([\d.]+)s", out)
    count = int(m[-1][0]) if m else 0
    # s_time prints one character per connection: `r` resumed, `*` a new session.
    marks = "".join(line for line in out.splitlines() if line and set(line) <= {"r", "*"})
    resumed = marks.count("r") / max(1, len(marks))
    errors = "" if count else "s_time made no connection:\n" + out[-400:]
    if count and resumed < 0.9:
        errors += f" only {resumed:.0%} resumed"
    return {"rps": count / max(wall, 1e-9), "cpu_us_per_req": (t1 - t0) / os.sysconf("SC_CLK_TCK") * 1e6 / max(1, count),
            "resumed_fraction": resumed, "errors": errors}


def idle_tls_memory(srv, count):
    worker = srv.workers()[0]

    def anon_kb():
        with open(f"/proc/{worker}/smaps_rollup") as f:
            for line in f:
                if line.startswith("Anonymous:"):
                    return int(line.split()[1])
        return 0
    ctx = ssl.create_default_context()
    ctx.check_hostname = False
    ctx.verify_mode = ssl.CERT_NONE
    before = anon_kb()
    socks = []
    try:
        for _ in range(count):
            s = ctx.wrap_socket(socket.create_connection(("127.0.0.1", srv.port), timeout=10))
            s.sendall(b"GET / HTTP/1.1\r\nHost: b\r\n\r\n")
            data = b""
            while not data.endswith(bench.BODY.encode()):
                chunk = s.recv(4096)
                if not chunk:
                    break
                data += chunk
            socks.append(s)
        time.sleep(0.5)
        after = anon_kb()
    finally:
        for s in socks:
            s.close()
    return {"connections": count, "bytes_per_connection": (after - before) * 1024 / count}


def main():
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    resource.setrlimit(resource.RLIMIT_NOFILE, (min(hard, 40000), hard))
    for tool in ("wrk", "nginx", "taskset", "openssl"):
        if not shutil.which(tool):
            sys.exit(f"bench-tls: {tool} is missing (make bench installs it)")
    tmp = tempfile.mkdtemp(prefix="cd-bench-tls-")
    bench.make_certificate(tmp)
    servers = {"clusterd": bench.Clusterd("clusterd", os.path.join(tmp, "cd")),
               "nginx": bench.Nginx("nginx", os.path.join(tmp, "ngx"))}
    runs = {}
    memory = {}
    try:
        for srv in servers.values():
            srv.start()
        scenarios = [("keepalive-tls", lambda s: wrk_https(s, [], 64)),
                     ("full-handshake", lambda s: wrk_https(s, ["-H", "Connection: close"], 16)),
                     ("resumed", s_time_resumed)]
        for name, run in scenarios:
            for r in range(ROUNDS):
                for who, srv in servers.items():  # A B A B ...
                    res = run(srv)
                    runs.setdefault(name, {}).setdefault(who, []).append(res)
                    print(f"{name:15s} round {r + 1} {who:9s} {res['rps']:>10,.0f}/s  cpu {res['cpu_us_per_req']:7.1f} us {res['errors']}", flush=True)
        for who, srv in servers.items():
            memory[who] = idle_tls_memory(srv, IDLE_CONNECTIONS)
    finally:
        for srv in servers.values():
            srv.stop()
        shutil.rmtree(tmp, ignore_errors=True)
    med = statistics.median
    summary = {}
    print()
    print(f"{'scenario':15s} {'clusterd /s':>12s} {'nginx /s':>10s} {'ratio':>6s} {'cd cpu us':>10s} {'ngx cpu us':>11s}")
    for name, by in runs.items():
        c, n = by["clusterd"], by["nginx"]
        v = {"clusterd_rps": med(x["rps"] for x in c), "nginx_rps": med(x["rps"] for x in n),
             "clusterd_cpu_us_per_req": med(x["cpu_us_per_req"] for x in c), "nginx_cpu_us_per_req": med(x["cpu_us_per_req"] for x in n)}
        v["ratio"] = v["clusterd_rps"] / max(v["nginx_rps"], 1e-9)
        summary[name] = v
        print(f"{name:15s} {v['clusterd_rps']:>12,.0f} {v['nginx_rps']:>10,.0f} {v['ratio']:>6.2f} {v['clusterd_cpu_us_per_req']:>10.1f} {v['nginx_cpu_us_per_req']:>11.1f}")
    for who, m in memory.items():
        print(f"{who}: {m['connections']} idle TLS connections cost {m['bytes_per_connection']:.0f} bytes each of worker anonymous memory")
    os.makedirs(os.path.join(ROOT, "bench-results"), exist_ok=True)
    with open(os.path.join(ROOT, "bench-results/tls.json"), "w") as f:
        json.dump({"date": time.strftime("%Y-%m-%d"), "rounds": ROUNDS, "duration": DURATION, "summary": summary,
                   "idle_memory": memory, "runs": runs}, f, indent=1)


if __name__ == "__main__":
    main()
