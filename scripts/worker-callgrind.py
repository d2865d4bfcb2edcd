#!/usr/bin/env python3
"""Instructions per request of a clusterd worker, counted by callgrind (repeatable on a noisy
machine): one worker under valgrind, N GETs one at a time, keep-alive on one connection (or, with
CLOSE=1, a new connection per request); run for two N and divide the difference of the worker's
instruction counts. Compare two binaries (e.g. main's and a branch's release builds).
usage: scripts/worker-callgrind.py BINARY N1 N2     e.g. .build/release/clusterd 1000 6000"""
import glob, json, os, re, shutil, signal, socket, subprocess, sys, tempfile, time

def run(binary, n):
    tmp = tempfile.mkdtemp(prefix="worker-callgrind-")
    s = socket.socket(); s.bind(("127.0.0.1", 0)); port = s.getsockname()[1]; s.close()
    cfg = {"workers": 1, "listen": [f"127.0.0.1:{port}"], "controlSocket": f"{tmp}/c.sock",
           "heartbeatTimeout": 3600, "drainTimeout": 30, "busyPoll": 0, "releaseMemoryAfterIdle": 0,
           "routes": [{"path": "/", "body": "Hello world!"}]}
    open(f"{tmp}/c.json", "w").write(json.dumps(cfg))
    log = open(f"{tmp}/log", "wb")
    p = subprocess.Popen(["valgrind", "--tool=callgrind", "--trace-children=yes",
                          f"--callgrind-out-file={tmp}/cg.%p", binary, "--config", f"{tmp}/c.json"],
                         stdout=log, stderr=subprocess.STDOUT, start_new_session=True)
    deadline = time.time() + 120
    while True:
        try:
            c = socket.create_connection(("127.0.0.1", port), timeout=30)
            c.sendall(b"GET / HTTP/1.1\r\nHost: x\r\n\r\n")
            if c.recv(4096).startswith(b"HTTP/1.1 200"): break
        except OSError:
            pass
        if time.time() > deadline: sys.exit("no answer")
        time.sleep(0.5)
    req = b"GET / HTTP/1.1\r\nHost: 127.0.0.1:8080\r\n\r\n"
    if os.environ.get("CLOSE"):
        c.close()
        for _ in range(n):
            k = socket.create_connection(("127.0.0.1", port), timeout=30)
            k.sendall(b"GET / HTTP/1.1\r\nHost: 127.0.0.1:8080\r\nConnection: close\r\n\r\n")
            got = b""
            while True:
                d = k.recv(4096)
                if not d: break
                got += d
            k.close()
        n = 0
    for _ in range(n):
        c.sendall(req)
        got = b""
        while not got.endswith(b"Hello world!"):
            got += c.recv(4096)
    c.close()
    os.kill(p.pid, signal.SIGTERM)
    p.wait(timeout=120)
    counts = {}
    for f in glob.glob(f"{tmp}/cg.*"):
        text = open(f, errors="replace").read()
        cmd = re.search(r"^cmd: (.*)$", text, re.M).group(1)
        total = int(re.search(r"^summary: (\d+)", text, re.M).group(1)) if re.search(r"^summary: (\d+)", text, re.M) else int(re.search(r"^totals: (\d+)", text, re.M).group(1))
        counts[f] = (cmd, total)
    shutil.rmtree(tmp, ignore_errors=True)
    return counts

binary, n1, n2 = sys.argv[1], int(sys.argv[2]), int(sys.argv[3])
a = run(binary, n1); b = run(binary, n2)
def worker(c):
    # The worker is the process that counted most instructions.
    return max(v[1] for v in c.values())
wa, wb = worker(a), worker(b)
print(f"{binary}: worker {wa} ({n1} req), {wb} ({n2} req): {(wb - wa) / (n2 - n1):.0f} instructions per request")
