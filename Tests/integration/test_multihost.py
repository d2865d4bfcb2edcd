"""Issue 15, across machines: three clusterd hosts, each in its own network namespace, behind HAProxy
in a fourth, run with the shipped `deploy/haproxy/haproxy.cfg` (only its addresses and the stats
socket's path replaced). `scripts/chaos.py`'s clients (keep-alive GET/POST with echoed bodies, a
connection per request, pipelining; every answer checked byte for byte) load HAProxy from the root
namespace while the hosts are restarted one at a time: TERM to the master, HAProxy's health check
sees /healthz answer 503 during `shutdownDelay` and takes the host out before it stops listening,
the master exits, is started again, and the next host follows once HAProxy shows this one UP.
No client request may fail, and each host's access log must name the client's address for every
request of the load (PROXY protocol v2 from HAProxy), never HAProxy's.

Topology: a bridge in the root namespace holds the client's address (.1); HAProxy's namespace .2;
the hosts .11, .12, .13, in the first 10.213.X.0/24 not in use on this machine. The bridge is kept
out of the host's firewall (nf_call_iptables 0), so no rule of the machine's affects the test."""
import asyncio
import csv
import io
import json
import os
import random
import re
import shutil
import signal
import socket
import subprocess
import tempfile
import time
import types

import pytest

from conftest import BIN, load_chaos

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
HAPROXY_CFG = os.path.join(ROOT, "deploy/haproxy/haproxy.cfg")

# PROXY protocol v2 between HAProxy and the hosts, as shipped (`send-proxy-v2`, listeners with
# "proxyProtocol": true, HAProxy in "trustedProxies"). CLUSTERD_MULTIHOST_PROXY=0 runs the shipped
# file without `send-proxy-v2` in front of plain listeners instead, and checks that the access logs
# show HAProxy's address (what a host without PROXY protocol sees).
PROXY_PROTOCOL = os.environ.get("CLUSTERD_MULTIHOST_PROXY", "1") != "0"

PORT = 8080
HOSTS = 3
SHUTDOWN_DELAY = 2  # seconds; the shipped file's checks take a host out within ~1 s
DRAIN_TIMEOUT = 10
BODY = "multihost " + "m" * 40


def ip(*args, check=True):
    r = subprocess.run(["ip", *args], capture_output=True, text=True, timeout=30)
    if check and r.returncode != 0:
        raise RuntimeError(f"ip {' '.join(args)}: {r.stderr.strip()}")
    return r


def free_subnet():
    """The first 10.213.X.0/24 that no address or route of this machine's root namespace uses."""
    used = ip("-o", "-4", "addr").stdout + ip("-4", "route").stdout
    for x in range(7, 250):
        if f"10.213.{x}." not in used:
            return f"10.213.{x}"
    raise RuntimeError("no free 10.213.X.0/24")


class Network:
    """The bridge (client side, root namespace) and one namespace per role, each joined to the bridge
    by a veth pair. Names carry this process's PID, so runs side by side do not collide."""

    def __init__(self):
        self.tag = str(os.getpid() % 100000)
        self.bridge = f"cdmh{self.tag}br"
        self.subnet = free_subnet()
        self.client = f"{self.subnet}.1"
        self.namespaces = []
        self.links = []

    def up(self):
        # Bridged frames skip iptables here (br_netfilter may be loaded with a FORWARD policy of DROP).
        if ip("link", "add", self.bridge, "type", "bridge", "nf_call_iptables", "0", "nf_call_ip6tables", "0",
              "nf_call_arptables", "0", check=False).returncode != 0:
            ip("link", "add", self.bridge, "type", "bridge")
        self.links.append(self.bridge)
        ip("addr", "add", f"{self.client}/24", "dev", self.bridge)
        ip("link", "set", self.bridge, "up")

    def namespace(self, role, host_octet):
        ns = f"cdmh{self.tag}-{role}"
        ip("netns", "add", ns)
        self.namespaces.append(ns)
        veth = f"cdmh{self.tag}{role}"
        ip("link", "add", veth, "type", "veth", "peer", "name", veth + "p")
        self.links.append(veth)
        ip("link", "set", veth + "p", "netns", ns)
        ip("link", "set", veth, "master", self.bridge)
        ip("link", "set", veth, "up")
        ip("-n", ns, "link", "set", veth + "p", "name", "eth0")
        addr = f"{self.subnet}.{host_octet}"
        ip("-n", ns, "addr", "add", f"{addr}/24", "dev", "eth0")
        ip("-n", ns, "link", "set", "eth0", "up")
        ip("-n", ns, "link", "set", "lo", "up")
        return ns, addr

    def close(self):
        for ns in self.namespaces:
            ip("netns", "del", ns, check=False)
        for link in reversed(self.links):  # the veths went with their namespaces' ends; the bridge is left
            if ip("link", "show", link, check=False).returncode == 0:
                ip("link", "del", link, check=False)


def stop_process(proc, sig=signal.SIGTERM, timeout=10):
    """TERM (or `sig`) by PID, then SIGKILL to what is left of its process group."""
    if proc is None:
        return
    if proc.poll() is None:
        proc.send_signal(sig)
        try:
            proc.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            pass
    try:
        os.killpg(proc.pid, signal.SIGKILL)
    except (ProcessLookupError, PermissionError):
        pass
    try:
        proc.wait(timeout=5)
    except subprocess.TimeoutExpired:
        pass


class Host:
    """One clusterd master in its own namespace; its config, logs and control socket in `dir`."""

    def __init__(self, net, index, tmp, lb_addr):
        self.name = "abc"[index]
        self.ns, self.addr = net.namespace(f"h{index + 1}", 11 + index)
        self.dir = os.path.join(tmp, f"h{index + 1}")
        os.makedirs(self.dir)
        self.sock = os.path.join(self.dir, "c.sock")
        self.config_path = os.path.join(self.dir, "clusterd.json")
        self.log_path = os.path.join(self.dir, "clusterd.log")
        self.access_log = os.path.join(self.dir, "access.log")
        listen = f"{self.addr}:{PORT}"
        config = {"workers": 2, "listen": [{"address": listen, "proxyProtocol": True} if PROXY_PROTOCOL else listen],
                  "controlSocket": self.sock, "shutdownDelay": SHUTDOWN_DELAY, "drainTimeout": DRAIN_TIMEOUT,
                  "accessLog": {"path": self.access_log, "format": "json"},
                  "routes": [{"path": "/", "body": BODY}]}
        if PROXY_PROTOCOL:
            config["trustedProxies"] = [lb_addr]
        with open(self.config_path, "w") as f:
            json.dump(config, f)
        self.proc = None
        self.procs = []

    def ctl_status(self):
        r = subprocess.run([os.path.join(BIN, "clusterctl"), "--socket", self.sock, "status", "--json"],
                           capture_output=True, text=True, timeout=10)
        return json.loads(r.stdout) if r.returncode == 0 else None

    def start(self, timeout=20):
        with open(self.log_path, "ab") as log:
            # `ip netns exec` enters the namespace and execs: the PID is the master's.
            self.proc = subprocess.Popen(["ip", "netns", "exec", self.ns, os.path.join(BIN, "clusterd-example"),
                                          "--config", self.config_path],
                                         stdout=log, stderr=subprocess.STDOUT, start_new_session=True)
        self.procs.append(self.proc)
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError(f"host {self.name} exited with {self.proc.returncode}: {self.log_text()[-2000:]}")
            s = self.ctl_status()
            if s and s["state"] == "running" and s["ready"] == 2 and s["draining"] == 0:
                return
            time.sleep(0.05)
        raise TimeoutError(f"host {self.name}: no 2 ready workers in {timeout} s: {self.log_text()[-2000:]}")

    def log_text(self):
        try:
            with open(self.log_path, errors="replace") as f:
                return f.read()
        except OSError:
            return ""

    def access_lines(self):
        with open(self.access_log) as f:
            return [json.loads(line) for line in f if line.strip()]

    def close(self):
        for p in self.procs:
            stop_process(p)


def haproxy_config(text, bind, servers, stats_socket, proxy):
    """The shipped file with the test's addresses: its one `bind` and `stats socket` take ours, its
    `server` lines are replaced by ours (the options stay on `default-server`); without PROXY
    protocol, `send-proxy-v2` is dropped from `default-server`. Anything else stays as shipped; a
    shipped file these substitutions no longer fit fails here rather than testing something else."""
    assert len(re.findall(r"(?m)^\s*bind\s", text)) == 1, "the shipped haproxy.cfg has one bind line"
    assert len(re.findall(r"(?m)^\s*stats socket\s", text)) == 1, "the shipped haproxy.cfg has one stats socket"
    assert len(re.findall(r"(?m)^\s*default-server .*\bsend-proxy-v2\b", text)) == 1, "default-server sends PROXY v2"
    text = re.sub(r"(?m)^(\s*bind\s+)\S+", lambda m: m.group(1) + bind, text)
    text = re.sub(r"(?m)^(\s*stats socket\s+)\S+", lambda m: m.group(1) + stats_socket, text)
    lines = text.splitlines()
    at = [i for i, line in enumerate(lines) if re.match(r"\s*server\s", line)]
    assert at, "the shipped haproxy.cfg has server lines"
    indent = re.match(r"\s*", lines[at[0]]).group(0)
    ours = [f"{indent}server {name} {addr}" for name, addr in servers]
    lines = lines[:at[0]] + ours + [line for i, line in enumerate(lines) if i > at[0] and i not in at]
    text = "\n".join(lines) + "\n"
    if not proxy:
        text = re.sub(r"(?m)^(\s*default-server .*?) send-proxy-v2\b", r"\1", text)
    return text


def show_stat(path):
    """HAProxy's `show stat` for the clusterd backend: {server name or BACKEND: row}."""
    with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as s:
        s.settimeout(5)
        s.connect(path)
        s.sendall(b"show stat\n")
        data = b""
        while chunk := s.recv(65536):
            data += chunk
    text = data.decode().lstrip("# ")
    return {row["svname"]: row for row in csv.DictReader(io.StringIO(text)) if row["pxname"] == "clusterd"}


def wait_server(sock, name, status, timeout, proc=None):
    """Until HAProxy's status of server `name` is exactly `status` (UP or DOWN, not in transition);
    returns the time it was seen, or None (also at once if HAProxy, `proc`, has exited)."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline and (proc is None or proc.poll() is None):
        try:
            if show_stat(sock)[name]["status"] == status:
                return time.monotonic()
        except (OSError, KeyError):
            pass
        time.sleep(0.05)
    return None


@pytest.fixture
def multihost():
    if os.geteuid() != 0:
        pytest.skip("needs root: it creates network namespaces, veth pairs and a bridge")
    if shutil.which("ip") is None:
        pytest.skip("`ip netns` is not available (no iproute2)")
    probe = f"cdmh{os.getpid() % 100000}-probe"
    r = subprocess.run(["ip", "netns", "add", probe], capture_output=True, text=True, timeout=10)
    if r.returncode != 0:
        pytest.skip(f"`ip netns` is not available here: `ip netns add` failed: {r.stderr.strip()}")
    subprocess.run(["ip", "netns", "del", probe], capture_output=True, timeout=10)
    assert shutil.which("haproxy"), "haproxy is not installed: `scripts/deps.sh test` (make test) installs it"
    tmp = tempfile.mkdtemp(prefix="cd-mh-", dir="/tmp")
    net = None
    hosts = []
    env = types.SimpleNamespace(haproxy=None)
    try:
        net = Network()
        net.up()
        lb_ns, lb_addr = net.namespace("lb", 2)
        for i in range(HOSTS):
            hosts.append(Host(net, i, tmp, lb_addr))
        for h in hosts:
            h.start()
        env.net, env.hosts, env.tmp, env.lb_addr = net, hosts, tmp, lb_addr
        env.stats_sock = os.path.join(tmp, "haproxy.sock")
        with open(HAPROXY_CFG) as f:
            cfg = haproxy_config(f.read(), f"{lb_addr}:{PORT}", [(h.name, f"{h.addr}:{PORT}") for h in hosts],
                                 env.stats_sock, PROXY_PROTOCOL)
        env.haproxy_cfg = os.path.join(tmp, "haproxy.cfg")
        with open(env.haproxy_cfg, "w") as f:
            f.write(cfg)
        env.haproxy_log = os.path.join(tmp, "haproxy.log")
        with open(env.haproxy_log, "wb") as log:
            # -db: in the foreground, one process; stopped by PID below.
            env.haproxy = subprocess.Popen(["ip", "netns", "exec", lb_ns, "haproxy", "-db", "-f", env.haproxy_cfg],
                                           stdout=log, stderr=subprocess.STDOUT, start_new_session=True)
        for h in hosts:
            if wait_server(env.stats_sock, h.name, "UP", 15, env.haproxy) is None:
                raise AssertionError(f"HAProxy never saw host {h.name} UP: {open(env.haproxy_log).read()[-3000:]}")
        yield env
    finally:
        stop_process(env.haproxy)
        for h in hosts:
            h.close()
        if net is not None:
            net.close()
        shutil.rmtree(tmp, ignore_errors=True)


def test_rolling_restart_behind_haproxy_loses_no_request(multihost):
    env = multihost
    chaos = load_chaos()

    class RollingChaos(chaos.Chaos):
        def __init__(self):
            self.args = type("Args", (), {"pause": 0.5, "bin": BIN})()
            self.bodies = {BODY.encode()}
            self.stats = chaos.Stats()
            self.events, self.kills, self.restarts = [], [], []
            self.stop = False

        async def connect(self):
            try:
                return await asyncio.open_connection(env.lb_addr, PORT)
            except OSError:
                self.stats.fail("connect-refused", time.monotonic())
                await asyncio.sleep(0.05)
                return None

        def restart(self, host):
            """TERM, HAProxy marks the host DOWN while it still serves, the master exits, a new one
            starts, HAProxy marks it UP."""
            sent = time.monotonic()
            host.proc.send_signal(signal.SIGTERM)
            down = wait_server(env.stats_sock, host.name, "DOWN", SHUTDOWN_DELAY + 5)
            try:
                rc = host.proc.wait(timeout=SHUTDOWN_DELAY + DRAIN_TIMEOUT + 10)
            except subprocess.TimeoutExpired:
                rc = None
            exited = time.monotonic()
            host.start()
            started = time.monotonic()
            up = wait_server(env.stats_sock, host.name, "UP", 15)
            host.lines_at_up = len(host.access_lines())
            figures = {"host": host.name, "exit": rc, "down_after_s": None if down is None else round(down - sent, 2),
                       "exited_after_s": round(exited - sent, 2), "ready_after_s": round(started - sent, 2),
                       "up_after_s": None if up is None else round(up - sent, 2)}
            self.restarts.append(figures)
            # Out of rotation before the host stopped accepting (the end of shutdownDelay).
            return rc == 0 and down is not None and down - sent < SHUTDOWN_DELAY and up is not None

        async def run(self):
            rng = random.Random(15)
            tasks = [asyncio.create_task(self.persistent_client(random.Random(rng.random()), self.keepalive_batch)) for _ in range(8)]
            tasks += [asyncio.create_task(self.close_client(random.Random(rng.random()))) for _ in range(4)]
            tasks += [asyncio.create_task(self.persistent_client(random.Random(rng.random()), self.pipeline_batch)) for _ in range(2)]
            try:
                await asyncio.sleep(2)
                for h in env.hosts:
                    await self.event(f"restart {h.name}", lambda h=h: self.restart(h))
                await asyncio.sleep(2)
            finally:
                # Also when an event raised: the clients stop, so the test fails instead of hanging.
                self.stop = True
                await asyncio.wait_for(asyncio.gather(*tasks, return_exceptions=True), 60)

    run = RollingChaos()
    began = time.monotonic()
    asyncio.run(run.run())
    load_s = round(time.monotonic() - began, 1)
    stat = show_stat(env.stats_sock)
    expected = env.net.client if PROXY_PROTOCOL else env.lb_addr
    access, checks, served_after_restart = {}, {}, {}
    for h in env.hosts:
        lines = h.access_lines()
        remotes, check_remotes = {}, {}
        for l in lines:
            # HAProxy's own checks come from HAProxy (a PROXY v2 LOCAL header names no client).
            into = check_remotes if l.get("target") == "/healthz" else remotes
            into[l.get("remote")] = into.get(l.get("remote"), 0) + 1
        access[h.name], checks[h.name] = remotes, check_remotes
        served_after_restart[h.name] = sum(1 for l in lines[getattr(h, "lines_at_up", len(lines)):] if l.get("target") != "/healthz")
    report = {"proxyProtocol": PROXY_PROTOCOL, "load_s": load_s, "sent": run.stats.sent, "verified": run.stats.answered,
              "failures": run.stats.failures, "events": [(e[2], e[3]) for e in run.events], "restarts": run.restarts,
              "haproxy": {name: {k: row[k] for k in ("status", "stot", "wretr", "wredis", "eresp", "econ", "hrsp_5xx")}
                          for name, row in stat.items()},
              "access_log_remotes": access, "health_check_remotes": checks, "served_after_restart": served_after_restart, "client": env.net.client, "haproxy_addr": env.lb_addr}
    print(json.dumps(report))
    logs = {h.name: h.log_text()[-1500:] for h in env.hosts}
    assert all(ok for _, ok in report["events"]), (report, logs)
    assert run.stats.failures == {}, (report, open(env.haproxy_log, errors="replace").read()[-4000:], logs)
    assert run.stats.answered > 1000, report
    assert all(n > 0 for n in served_after_restart.values()), ("every restarted host took load again", report)
    for name, remotes in access.items():
        # Every request of the load, on every host, before and after its restart, names the client.
        assert remotes and set(remotes) == {expected}, (name, remotes, report)
        assert set(checks[name]) == {env.lb_addr}, (name, checks[name], report)
