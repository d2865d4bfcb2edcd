#!/usr/bin/env python3
"""A/B two clusterd binaries (and nginx, with NGINX=1) on one pinned worker, alternating rounds.

    scripts/ab.py OLD_BINARY NEW_BINARY

For each server and round: requests/s, server CPU per request (utime+stime of the worker), client
CPU per request (wrk's own rusage: on loopback the kernel's receive work, including waking the
server, is billed to the sender, so this is where packets and wake-ups show up) and TCP segments
sent per request (/proc/net/snmp OutSegs, both directions: loopback counts each segment once).
Medians at the end. Environment: R rounds (default 4), D seconds per run (default 4),
MODE close|keepalive (default close), C connections (default 64), NGINX=1 to add nginx as a third
server, CONFIG_A / CONFIG_B: JSON merged into that server's config (e.g. CONFIG_A='{"busyPoll": 0}'
to compare a setting with one binary).
The server runs on CPU 0, wrk on CPU 1, as in scripts/bench.py.
"""
import json
import os
import re
import shutil
import signal
import statistics
import subprocess
import sys
import tempfile
import time

from bench import BODY, children, cpu_ticks, free_port, out_segments, wait_port


def start(command, port):
    proc = subprocess.Popen(["taskset", "-c", "0"] + command, stdout=subprocess.DEVNULL,
                            stderr=subprocess.DEVNULL, start_new_session=True)
    wait_port(port)
    time.sleep(0.5)
    return proc


def main():
    if len(sys.argv) != 3:
        sys.exit(__doc__)
    rounds, duration = int(os.environ.get("R", "4")), os.environ.get("D", "4")
    mode = os.environ.get("MODE", "close")
    connections = int(os.environ.get("C", "64"))
    tmp = tempfile.mkdtemp(prefix="clusterd-ab-")
    servers = {}
    try:
        for name, binary in (("A", sys.argv[1]), ("B", sys.argv[2])):
            port = free_port()
            config = os.path.join(tmp, f"{name}.json")
            with open(config, "w") as f:
                settings = {"workers": 1, "listen": [f"127.0.0.1:{port}"],
                            "controlSocket": os.path.join(tmp, f"{name}.sock"),
                            "http": {"maxConnections": 30000}, "routes": [{"path": "/", "body": BODY}]}
                settings.update(json.loads(os.environ.get(f"CONFIG_{name}", "{}")))
                json.dump(settings, f)
            servers[name] = (start([binary, "--config", config], port), port)
        if os.environ.get("NGINX"):
            port = free_port()
            conf = os.path.join(tmp, "nginx.conf")
            with open(conf, "w") as f:
                f.write(f"worker_processes 1; pid {tmp}/nginx.pid; error_log {tmp}/error.log warn;"
                        " worker_rlimit_nofile 40000; events { worker_connections 30000; }"
                        " http { access_log off; keepalive_requests 1000000; default_type text/plain;"
                        f" server {{ listen 127.0.0.1:{port} reuseport; location / {{ return 200 \"{BODY}\"; }} }} }}")
            servers["nginx"] = (start(["nginx", "-c", conf, "-p", tmp, "-g", "daemon off;"], port), port)

        extra = ["-H", "Connection: close"] if mode == "close" else []
        results = {name: [] for name in servers}
        for _ in range(rounds):
            for name, (proc, port) in servers.items():  # A B (nginx) A B ...
                workers = children(proc.pid) or [proc.pid]
                t0, s0 = cpu_ticks(workers), out_segments()
                wrk = subprocess.Popen(["taskset", "-c", "1", "wrk", "-t1", f"-c{connections}", "-d", duration + "s"] + extra
                                       + [f"http://127.0.0.1:{port}/"], stdout=subprocess.PIPE, text=True)
                _, _, usage = os.wait4(wrk.pid, 0)
                out = wrk.stdout.read()
                t1, s1 = cpu_ticks(workers), out_segments()
                rps = float(re.search(r"Requests/sec:\s+([\d.]+)", out).group(1))
                requests = rps * float(duration)
                row = {"rps": rps, "server_us": (t1 - t0) / os.sysconf("SC_CLK_TCK") * 1e6 / requests,
                       "client_us": (usage.ru_utime + usage.ru_stime) * 1e6 / requests,
                       "segments": (s1 - s0) / requests}
                results[name].append(row)
                print(name, {k: round(v, 2) for k, v in row.items()}, flush=True)
        print("medians:")
        for name, rows in results.items():
            print(f"  {name:6}", {k: round(statistics.median(r[k] for r in rows), 2) for k in rows[0]})
    finally:
        for proc, _ in servers.values():
            if proc.poll() is None:
                os.killpg(proc.pid, signal.SIGTERM)
                proc.wait(timeout=10)
        shutil.rmtree(tmp, ignore_errors=True)


if __name__ == "__main__":
    main()
