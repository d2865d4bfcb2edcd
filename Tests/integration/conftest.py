"""Fixtures that run the real clusterd/clusterctl binaries on loopback and always clean up."""
import contextlib
import importlib.util
import json
import re
import os
import signal
import socket
import subprocess
import tempfile
import time

import pytest

BIN = os.environ.get("CLUSTERD_BIN", os.path.join(os.path.dirname(__file__), "../../.build/release"))
CLUSTERD = os.path.join(BIN, "clusterd")
CLUSTERCTL = os.path.join(BIN, "clusterctl")


def load_chaos():
    """scripts/chaos.py as a module: its clients and report, for runs that drive their own events."""
    root = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
    spec = importlib.util.spec_from_file_location("chaos", os.path.join(root, "scripts/chaos.py"))
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def free_port():
    """A port that is free on both 127.0.0.1 and ::1 right now."""
    for _ in range(50):
        with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
            s.bind(("127.0.0.1", 0))
            port = s.getsockname()[1]
        try:
            with socket.socket(socket.AF_INET6, socket.SOCK_STREAM) as s6:
                s6.bind(("::1", port))
        except OSError:
            continue
        return port
    raise RuntimeError("no free port")


def wait_for_port(port, host="127.0.0.1", timeout=15.0, proc=None):
    deadline = time.time() + timeout
    while time.time() < deadline:
        if proc is not None and proc.poll() is not None:
            raise RuntimeError(f"clusterd exited with {proc.returncode}: {proc.stderr_text()}")
        try:
            with socket.create_connection((host, port), timeout=0.5):
                return
        except OSError:
            time.sleep(0.05)
    raise TimeoutError(f"nothing listening on {host}:{port}")


class Daemon:
    """One clusterd master (or single process) started by a test, stopped by PID at teardown."""

    def __init__(self, tmp, config_overrides=None, env=None, prefix=None):
        self.tmp = tmp
        self.prefix = prefix or []  # e.g. ["taskset", "-c", "1"]
        self.port = free_port()
        self.socket_path = os.path.join(tmp, "control.sock")
        self.config_path = os.path.join(tmp, "clusterd.json")
        self.log_path = os.path.join(tmp, "clusterd.log")
        self.config = {
            "workers": 1,
            "listen": [f"127.0.0.1:{self.port}", f"[::1]:{self.port}"],
            "controlSocket": self.socket_path,
            "drainTimeout": 5,
            "routes": [{"path": "/", "body": "Hello world!"}],
        }
        for k, v in (config_overrides or {}).items():
            self.config[k] = v
        self.env = dict(os.environ, **(env or {}))
        self.proc = None

    def write_config(self, config=None):
        with open(self.config_path, "w") as f:
            json.dump(config if config is not None else self.config, f)

    def start(self, wait=True):
        self.write_config()
        self.log = open(self.log_path, "ab")
        self.proc = subprocess.Popen(
            self.prefix + [CLUSTERD, "--config", self.config_path],
            stdout=self.log, stderr=subprocess.STDOUT, env=self.env, start_new_session=True)
        self.proc.stderr_text = self.log_text
        if wait:
            wait_for_port(self.port, proc=self.proc)
        return self

    def log_text(self):
        try:
            with open(self.log_path, "rb") as f:
                return f.read().decode(errors="replace")
        except OSError:
            return ""

    def signal(self, sig):
        self.proc.send_signal(sig)

    def stop(self):
        if self.proc is None:
            return
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(timeout=10)
            except subprocess.TimeoutExpired:
                pass
        # Whatever is left of the process group we started (workers included) goes by SIGKILL.
        try:
            os.killpg(self.proc.pid, signal.SIGKILL)
        except (ProcessLookupError, PermissionError):
            pass
        try:
            self.proc.wait(timeout=5)
        except subprocess.TimeoutExpired:
            pass
        self.log.close()

    def ctl(self, *args, check=False, timeout=30):
        r = subprocess.run([CLUSTERCTL, "--socket", self.socket_path, *args],
                           capture_output=True, text=True, timeout=timeout)
        if check and r.returncode != 0:
            raise AssertionError(f"clusterctl {' '.join(args)} failed ({r.returncode}): {r.stdout}{r.stderr}")
        return r


@pytest.fixture
def tmpdir_short():
    # Unix socket paths are limited to 108 bytes: keep the directory short.
    d = tempfile.mkdtemp(prefix="cd-", dir="/tmp")
    yield d
    subprocess.run(["rm", "-rf", d])


@pytest.fixture
def daemon_factory(tmpdir_short):
    started = []

    def make(config_overrides=None, env=None, start=True, wait=True, prefix=None):
        d = Daemon(tmpdir_short, config_overrides, env, prefix)
        started.append(d)
        if start:
            d.start(wait=wait)
        return d

    yield make
    for d in started:
        d.stop()


@pytest.fixture
def daemon(daemon_factory):
    return daemon_factory()


def read_to_eof(s):
    """Everything a connected socket receives until the server closes it (the socket's timeout
    bounds the wait)."""
    chunks = []
    while chunk := s.recv(65536):
        chunks.append(chunk)
    return b"".join(chunks)


def raw_exchange(port, data, host="127.0.0.1", read_timeout=3.0, shutdown_write=False, family=socket.AF_INET):
    """Send bytes, read until the server closes or goes quiet."""
    with socket.socket(family, socket.SOCK_STREAM) as s:
        s.settimeout(read_timeout)
        s.connect((host, port))
        s.sendall(data)
        if shutdown_write:
            s.shutdown(socket.SHUT_WR)
        chunks = []
        try:
            while True:
                b = s.recv(65536)
                if not b:
                    break
                chunks.append(b)
        except socket.timeout:
            pass
        return b"".join(chunks)


def statuses(raw):
    """Status codes of the responses in a byte stream (bodies here never contain a status line)."""
    return [int(m) for m in re.findall(rb"HTTP/1\.1 (\d{3}) ", raw)]


def status(d):
    r = d.ctl("status", "--json")
    if r.returncode != 0:
        return None
    return json.loads(r.stdout)


def wait_until(predicate, timeout=15.0, interval=0.05, what="condition"):
    deadline = time.time() + timeout
    last = None
    while time.time() < deadline:
        last = predicate()
        if last:
            return last
        time.sleep(interval)
    raise TimeoutError(f"timed out waiting for {what} (last: {last!r})")


def wait_ready(d, workers=None, generation=None, timeout=20.0):
    """Until the master says `workers` ready workers of `generation` and none draining."""
    def check():
        s = status(d)
        if not s or s["state"] != "running":
            return None
        if workers is not None and (s["workers"] != workers or s["ready"] != workers):
            return None
        if generation is not None and s["generation"] != generation:
            return None
        if s["draining"] != 0:
            return None
        return s
    return wait_until(check, timeout, what=f"{workers} ready workers")


def children(pid):
    try:
        with open(f"/proc/{pid}/task/{pid}/children") as f:
            return sorted(int(x) for x in f.read().split())
    except OSError:
        return []


def listener_count(port):
    """TCP listening sockets on `port` (IPv4 and IPv6), from `ss`."""
    out = subprocess.run(["ss", "-Hltn", f"sport = :{port}"], capture_output=True, text=True, timeout=10).stdout
    return len([l for l in out.splitlines() if l.strip()])


def get(port, path="/", host="127.0.0.1", timeout=5.0):
    """One request on a new connection; returns (status, body)."""
    raw = raw_exchange(port, b"GET %s HTTP/1.1\r\nHost: t\r\nConnection: close\r\n\r\n" % path.encode(), host=host,
                       read_timeout=timeout, family=socket.AF_INET6 if ":" in host else socket.AF_INET)
    head, _, body = raw.partition(b"\r\n\r\n")
    codes = statuses(head)
    return (codes[0] if codes else None), body


def unix_get(path, request_path="/", timeout=5.0):
    """One request over the Unix socket at `path` on a new connection; returns (status, body)."""
    with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as s:
        s.settimeout(timeout)
        s.connect(path)
        s.sendall(b"GET %s HTTP/1.1\r\nHost: t\r\nConnection: close\r\n\r\n" % request_path.encode())
        head, _, body = read_to_eof(s).partition(b"\r\n\r\n")
    codes = statuses(head)
    return (codes[0] if codes else None), body


@contextlib.contextmanager
def connections(port, count, host="127.0.0.1"):
    """`count` open client sockets, closed however the block ends."""
    socks = []
    try:
        for _ in range(count):
            socks.append(socket.create_connection((host, port), timeout=10))
        yield socks
    finally:
        for s in socks:
            s.close()


def sending_connections(port, count, data, timeout=10.0, into=None):
    """`count` new connections to `port` (127.0.0.1), each having sent `data`; appended to `into`
    (for the caller to close) as each is made, and returned."""
    socks = [] if into is None else into
    for _ in range(count):
        s = socket.create_connection(("127.0.0.1", port), timeout=timeout)
        s.sendall(data)
        socks.append(s)
    return socks


def keepalive_request(s, path="/"):
    """A GET on a kept-alive connection: (status, body). AssertionError if the server closed it or
    said it would (`Connection: close`)."""
    s.sendall(b"GET %s HTTP/1.1\r\nHost: t\r\n\r\n" % path.encode())
    data = b""
    while b"\r\n\r\n" not in data:
        b = s.recv(65536)
        assert b, "server closed a keep-alive connection"
        data += b
    head, _, body = data.partition(b"\r\n\r\n")
    length = int(re.search(rb"(?i)\r\ncontent-length: *(\d+)", head).group(1))
    while len(body) < length:
        b = s.recv(65536)
        assert b, "server closed mid-response"
        body += b
    assert b"Connection: close" not in head
    return statuses(head + b" ")[0], body


def get_hello(s):
    """A GET / on a kept-alive connection, read up to the default route's body (`Hello world!`)."""
    s.sendall(b"GET / HTTP/1.1\r\nHost: t\r\n\r\n")
    data = b""
    while not data.endswith(b"Hello world!"):
        chunk = s.recv(4096)
        assert chunk
        data += chunk


@contextlib.contextmanager
def kept_alive(port, count):
    """`count` open connections to `port`, each answered 200 once and kept alive; closed however
    the block ends."""
    with connections(port, count) as socks:
        for s in socks:
            assert keepalive_request(s)[0] == 200
        yield socks


def scale_down_to_one(d):
    """`clusterctl scale 1`, until the one worker is ready and the retired ones have exited."""
    d.ctl("scale", "1", check=True)
    wait_ready(d, 1)
    wait_until(lambda: len(children(d.proc.pid)) == 1, what="the retired workers to exit")


def control_line(path, data, read=True, timeout=5):
    """Sends `data` on a new control connection and returns the decoded reply line. A request the
    master refuses (too long) is answered and the connection closed while the rest is still being
    sent: the send then fails with EPIPE, and the answer is still there to read."""
    with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as s:
        s.settimeout(timeout)
        s.connect(path)
        try:
            s.sendall(data)
        except (BrokenPipeError, ConnectionResetError):
            pass
        if not read:
            return None
        out = b""
        while not out.endswith(b"\n"):
            b = s.recv(65536)
            if not b:
                break
            out += b
        return json.loads(out)


def rss_kib(pid):
    """Resident set size of a process, KiB (VmRSS)."""
    with open(f"/proc/{pid}/status") as f:
        for line in f:
            if line.startswith("VmRSS:"):
                return int(line.split()[1])
    return 0


def cpu_seconds(pid):
    """User plus system CPU time a process has used, seconds."""
    with open(f"/proc/{pid}/stat") as f:
        fields = f.read().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


@pytest.fixture(scope="module")
def postgres():
    """A private PostgreSQL (postgres.py) for the module's tests, always stopped and removed."""
    from postgres import running_postgres
    with running_postgres() as pg:
        yield pg
