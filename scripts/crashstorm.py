#!/usr/bin/env python3
"""A crashing URL, simulated: every 0.2 s a random ready worker is killed (as a request that crashes
it would), while / is requested every 0.1 s with a 2 s timeout. Loopback only, stops by itself.

    python3 scripts/crashstorm.py [--workers 2] [--duration 14] [--bin .build/release]

Prints how many requests to / were answered and how many failed (timed out, or reset because they
were in flight on a killed worker), with latency percentiles.
"""
import argparse
import os
import random
import signal
import subprocess
import sys
import tempfile
import threading
import time

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--workers", type=int, default=2)
    ap.add_argument("--duration", type=float, default=14)
    ap.add_argument("--bin", default=os.path.join(ROOT, ".build/release"))
    args = ap.parse_args()
    os.environ["CLUSTERD_BIN"] = os.path.abspath(args.bin)
    sys.path.insert(0, os.path.join(ROOT, "Tests/integration"))
    from conftest import Daemon, get, status, wait_ready

    tmp = tempfile.mkdtemp(prefix="cd-", dir="/tmp")
    d = Daemon(tmp, {"workers": args.workers})
    stop = threading.Event()
    kills = 0

    def killer():
        nonlocal kills
        while not stop.is_set():
            ready = [w["pid"] for w in (status(d) or {}).get("workerList", []) if w["state"] == "ready"]
            if ready:
                try:
                    os.kill(random.choice(ready), signal.SIGKILL)
                    kills += 1
                except ProcessLookupError:
                    pass
            stop.wait(0.2)

    try:
        d.start()
        wait_ready(d, args.workers)
        t = threading.Thread(target=killer, daemon=True)
        t.start()
        ok = failed = 0
        times = []
        end = time.time() + args.duration
        while time.time() < end:
            t0 = time.time()
            try:
                code, _ = get(d.port, timeout=2.0)
            except OSError:
                code = None
            ok, failed = (ok + 1, failed) if code == 200 else (ok, failed + 1)
            times.append(time.time() - t0)
            time.sleep(0.1)
        stop.set()
        t.join(timeout=5)
        times.sort()
        print(f"workers={args.workers} kills={kills} ok={ok} failed={failed} "
              f"p50={times[len(times) // 2]:.3f}s p90={times[int(len(times) * 0.9)]:.3f}s max={times[-1]:.2f}s")
    finally:
        stop.set()
        d.stop()
        subprocess.run(["rm", "-rf", tmp])


if __name__ == "__main__":
    main()
