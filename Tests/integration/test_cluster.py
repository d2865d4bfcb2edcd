"""The master and its workers as real processes: scale, reload, crash, drain, signals, control socket."""
import json
import os
import signal
import socket
import subprocess
import threading
import time

from conftest import (children, control_line, connections, get, get_hello, keepalive_request, kept_alive, listener_count,
                      read_to_eof, scale_down_to_one, sending_connections, status, statuses, wait_ready, wait_until)


def test_starts_n_workers_each_with_its_own_listeners(daemon_factory):
    d = daemon_factory({"workers": 3})
    s = wait_ready(d, 3)
    assert len(children(d.proc.pid)) == 3
    # One SO_REUSEPORT listener per slot and address: 3 on 127.0.0.1 and 3 on ::1.
    assert listener_count(d.port) == 6
    assert s["listeners"] == 6
    assert get(d.port) == (200, b"Hello world!")
    assert get(d.port, host="::1") == (200, b"Hello world!")


def test_scale_up_and_down(daemon_factory):
    d = daemon_factory({"workers": 2})
    wait_ready(d, 2)
    r = d.ctl("scale", "4", check=True)
    assert "scaled to 4 workers" in r.stdout
    wait_ready(d, 4)
    assert len(children(d.proc.pid)) == 4
    assert listener_count(d.port) == 8
    d.ctl("scale", "-3", check=True)
    wait_ready(d, 1)
    wait_until(lambda: len(children(d.proc.pid)) == 1, what="retired workers to exit")
    wait_until(lambda: listener_count(d.port) == 2, what="retired listeners to close")
    d.ctl("scale", "+1", check=True)
    wait_ready(d, 2)
    assert listener_count(d.port) == 4
    for _ in range(20):
        assert get(d.port) == (200, b"Hello world!")


def test_scale_bounds_and_usage(daemon_factory):
    d = daemon_factory({"workers": 1, "maxWorkers": 4})
    wait_ready(d, 1)
    r = d.ctl("scale", "5")
    assert r.returncode == 1
    assert "scale: workers must be 1...4 (maxWorkers), got 5" in r.stderr
    r = d.ctl("scale", "-1")
    assert r.returncode == 1
    assert "got 0" in r.stderr
    r = d.ctl("scale", "many")
    assert r.returncode == 64
    assert status(d)["workers"] == 1


def test_ttin_ttou(daemon_factory):
    d = daemon_factory({"workers": 1})
    wait_ready(d, 1)
    d.signal(signal.SIGTTIN)
    wait_ready(d, 2)
    d.signal(signal.SIGTTOU)
    wait_ready(d, 1)
    wait_until(lambda: len(children(d.proc.pid)) == 1, what="worker to retire")


def test_reload_changes_the_response(daemon_factory):
    d = daemon_factory({"workers": 2})
    wait_ready(d, 2, generation=1)
    old = set(children(d.proc.pid))
    d.config["routes"] = [{"path": "/", "body": "Second generation"}]
    d.write_config()
    r = d.ctl("reload", "--wait", check=True)
    assert "generation 2" in r.stdout
    assert get(d.port) == (200, b"Second generation")
    wait_ready(d, 2, generation=2)
    wait_until(lambda: not (set(children(d.proc.pid)) & old), what="old generation to exit")
    assert listener_count(d.port) == 4  # the same listeners, taken over


def test_reload_keeps_runtime_scale_unless_config_changes_workers(daemon_factory):
    d = daemon_factory({"workers": 1})
    wait_ready(d, 1)
    d.ctl("scale", "3", check=True)
    wait_ready(d, 3)
    d.ctl("reload", "--wait", check=True)
    wait_ready(d, 3, generation=2)
    d.config["workers"] = 2
    d.write_config()
    d.ctl("reload", "--wait", check=True)
    wait_ready(d, 2, generation=3)


def test_reload_with_bad_config_keeps_serving(daemon_factory):
    d = daemon_factory({"workers": 1})
    wait_ready(d, 1)
    pids = children(d.proc.pid)
    with open(d.config_path, "w") as f:
        json.dump(dict(d.config, http={"maxHeaderBytes": 12}), f)
    r = d.ctl("reload", "--wait")
    assert r.returncode == 1
    assert "http.maxHeaderBytes: must be 1024...1048576, got 12" in r.stderr
    assert get(d.port) == (200, b"Hello world!")
    s = status(d)
    assert s["generation"] == 1
    assert "maxHeaderBytes" in s["lastReloadError"]
    assert children(d.proc.pid) == pids
    assert "reload failed" in d.log_text()


def test_reload_to_unbindable_address_fails_cleanly(daemon_factory):
    from conftest import free_port
    d = daemon_factory({"workers": 1})
    wait_ready(d, 1)
    blocker = socket.socket()
    blocker.bind(("127.0.0.1", 0))
    blocker.listen()
    taken = blocker.getsockname()[1]
    fresh = free_port()
    try:
        d.config["listen"] = [f"127.0.0.1:{fresh}", f"127.0.0.1:{taken}"]
        d.write_config()
        r = d.ctl("reload", "--wait")
        assert r.returncode == 1
        assert f"cannot listen on 127.0.0.1:{taken}" in r.stderr
        assert get(d.port) == (200, b"Hello world!")
        # The listener opened for the other new address before the failure is closed again.
        assert listener_count(fresh) == 0
        assert status(d)["listeners"] == 2
    finally:
        blocker.close()


def test_reload_to_new_port(daemon_factory):
    from conftest import free_port
    d = daemon_factory({"workers": 1})
    wait_ready(d, 1)
    new_port = free_port()
    d.config["listen"] = [f"127.0.0.1:{new_port}"]
    d.write_config()
    d.ctl("reload", "--wait", check=True)
    assert get(new_port) == (200, b"Hello world!")
    wait_until(lambda: listener_count(d.port) == 0, what="old port to close")


def test_kill9_worker_under_traffic_is_replaced(daemon_factory):
    d = daemon_factory({"workers": 2})
    wait_ready(d, 2)
    results = {"ok": 0, "failed": 0}
    stop = threading.Event()

    def load():
        end = time.time() + 20
        while not stop.is_set() and time.time() < end:
            try:
                code, body = get(d.port)
                results["ok" if code == 200 else "failed"] += 1
            except OSError:
                results["failed"] += 1

    t = threading.Thread(target=load)
    t.start()
    try:
        time.sleep(0.5)
        victim = children(d.proc.pid)[0]
        os.kill(victim, signal.SIGKILL)
        wait_until(lambda: victim not in children(d.proc.pid) and len(children(d.proc.pid)) == 2, what="replacement")
        wait_ready(d, 2)
        time.sleep(0.5)
    finally:
        stop.set()
        t.join()
    assert status(d)["restarts"] == 1
    assert results["ok"] > 50
    # Only a request in flight on the killed worker may fail.
    assert results["failed"] <= 1, results


def test_backlog_survives_a_dead_worker(daemon_factory):
    """Connections that queue while the only worker is dead are served by its replacement."""
    d = daemon_factory({"workers": 1})
    wait_ready(d, 1)
    victim = children(d.proc.pid)[0]
    os.kill(victim, signal.SIGKILL)
    socks = sending_connections(d.port, 20, b"GET / HTTP/1.1\r\nHost: t\r\nConnection: close\r\n\r\n")
    for s in socks:
        data = read_to_eof(s)
        s.close()
        assert statuses(data) == [200]


def test_term_drains_in_flight_request(daemon_factory):
    d = daemon_factory({"workers": 1, "drainTimeout": 10})
    wait_ready(d, 1)
    with socket.create_connection(("127.0.0.1", d.port), timeout=10) as s:
        s.sendall(b"POST / HTTP/1.1\r\nHost: t\r\nContent-Length: 10\r\n\r\nhello")
        time.sleep(0.3)
        d.signal(signal.SIGTERM)
        time.sleep(1.0)  # past the stop's 0.5 s accept grace: the worker drains now
        assert d.proc.poll() is None, "must wait for the in-flight request"
        # A new connection is refused once the master is stopping... but this one finishes.
        s.sendall(b"world")
        data = read_to_eof(s)
    assert statuses(data) == [405]
    assert b"Connection: close" in data
    assert d.proc.wait(timeout=10) == 0


def test_drain_timeout_escalates(daemon_factory):
    d = daemon_factory({"workers": 1, "drainTimeout": 1})
    wait_ready(d, 1)
    s = socket.create_connection(("127.0.0.1", d.port), timeout=10)
    s.sendall(b"POST / HTTP/1.1\r\nHost: t\r\nContent-Length: 10\r\n\r\nhel")
    time.sleep(0.3)
    start = time.time()
    d.signal(signal.SIGTERM)
    assert d.proc.wait(timeout=10) == 0
    assert 0.8 < time.time() - start < 6
    s.close()


def test_fast_stop(daemon_factory):
    d = daemon_factory({"workers": 2})
    wait_ready(d, 2)
    d.signal(signal.SIGINT)
    assert d.proc.wait(timeout=10) == 0


def test_workers_exit_when_master_dies(daemon_factory):
    d = daemon_factory({"workers": 2})
    wait_ready(d, 2)
    kids = children(d.proc.pid)
    os.kill(d.proc.pid, signal.SIGKILL)
    d.proc.wait(timeout=5)

    def gone():
        return all(not os.path.exists(f"/proc/{k}") or open(f"/proc/{k}/stat").read().split(")")[1].split()[0] == "Z" for k in kids)
    wait_until(gone, timeout=15, what="workers to exit after the master died")


def test_stop_command(daemon_factory):
    d = daemon_factory({"workers": 1})
    wait_ready(d, 1)
    r = d.ctl("stop", check=True)
    assert "stopping" in r.stdout
    assert d.proc.wait(timeout=10) == 0
    assert not os.path.exists(d.socket_path)


def test_status_table_and_json(daemon_factory):
    d = daemon_factory({"workers": 2})
    wait_ready(d, 2)
    for _ in range(10):
        get(d.port)
    r = d.ctl("status", check=True)
    assert "running, generation 1, 2 workers (2 ready, 0 draining)" in r.stdout
    assert "SLOT  PID" in r.stdout
    s = status(d)
    assert s["requests"] >= 10
    assert len(s["workerList"]) == 2
    w = json.loads(d.ctl("workers", "--json", check=True).stdout)["workers"]
    assert sorted(x["slot"] for x in w) == [0, 1]
    assert sum(x["requests"] for x in w) >= 10




def test_control_protocol_errors(daemon_factory):
    d = daemon_factory({"workers": 1})
    wait_ready(d, 1)
    p = d.socket_path
    assert control_line(p, b'{"v":1,"cmd":"status"}\n')["ok"] is True
    assert control_line(p, b"not json\n") == {"ok": False, "error": control_line(p, b"not json\n")["error"]}
    assert "malformed request" in control_line(p, b"not json\n")["error"]
    assert "unknown command" in control_line(p, b'{"v":1,"cmd":"explode"}\n')["error"]
    assert "unsupported protocol version 7" in control_line(p, b'{"v":7,"cmd":"status"}\n')["error"]
    assert "missing protocol version" in control_line(p, b'{"cmd":"status"}\n')["error"]
    assert "exactly one of" in control_line(p, b'{"v":1,"cmd":"scale"}\n')["error"]
    assert "too long" in control_line(p, b"x" * 100000)["error"]
    # A half-written line and a flood of idle connections do not stall the master.
    idle = []
    for _ in range(40):
        s = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        s.connect(p)
        s.sendall(b'{"v":1,"cmd":"sta')
        idle.append(s)
    try:
        assert get(d.port) == (200, b"Hello world!")
        for s in idle[:10]:
            s.close()
        time.sleep(0.3)
        assert control_line(p, b'{"v":1,"cmd":"status"}\n')["ok"] is True
    finally:
        for s in idle:
            s.close()


def test_control_socket_is_owner_only(daemon_factory):
    d = daemon_factory({"workers": 1})
    wait_ready(d, 1)
    assert oct(os.stat(d.socket_path).st_mode & 0o777) == "0o600"
    os.chmod(os.path.dirname(d.socket_path), 0o755)
    # Another user (nobody) cannot talk to it.
    r = subprocess.run(["setpriv", "--reuid=65534", "--regid=65534", "--clear-groups",
                        "python3", "-c", f"import socket; s=socket.socket(socket.AF_UNIX); s.connect({d.socket_path!r})"],
                       capture_output=True, text=True, timeout=10)
    assert r.returncode != 0
    assert "Permission denied" in r.stderr


def test_control_group_may_use_it(daemon_factory):
    d = daemon_factory({"workers": 1, "controlGroup": 65534})
    wait_ready(d, 1)
    st = os.stat(d.socket_path)
    assert oct(st.st_mode & 0o777) == "0o660" and st.st_gid == 65534
    os.chmod(os.path.dirname(d.socket_path), 0o755)
    script = ("import socket,json; s=socket.socket(socket.AF_UNIX); s.connect(%r); "
              "s.sendall(b'{\"v\":1,\"cmd\":\"status\"}\\n'); print(s.recv(65536).decode())") % d.socket_path
    r = subprocess.run(["setpriv", "--reuid=65534", "--regid=65534", "--clear-groups", "python3", "-c", script],
                       capture_output=True, text=True, timeout=10)
    assert r.returncode == 0, r.stderr
    assert json.loads(r.stdout)["ok"] is True


def test_reload_hands_idle_keepalive_connections_over(daemon_factory):
    d = daemon_factory({"workers": 2})
    wait_ready(d, 2)
    with connections(d.port, 20) as socks:
        for s in socks:
            assert keepalive_request(s) == (200, b"Hello world!")
        d.config["routes"] = [{"path": "/", "body": "after reload"}]
        d.write_config()
        d.ctl("reload", "--wait", check=True)
        wait_ready(d, 2, generation=2)
        # The same connections, now served by the new generation: none was closed.
        for s in socks:
            assert keepalive_request(s) == (200, b"after reload")
        assert status(d)["handedOff"] == 20


def test_scale_down_hands_connections_over(daemon_factory):
    d = daemon_factory({"workers": 4})
    wait_ready(d, 4)
    with kept_alive(d.port, 40) as socks:
        scale_down_to_one(d)
        for s in socks:
            assert keepalive_request(s)[0] == 200
        assert listener_count(d.port) == 2


def test_request_racing_the_handoff_is_served(daemon_factory):
    """A request sent right as its connection moves is read by the new worker (bytes stay in the socket)."""
    d = daemon_factory({"workers": 1})
    wait_ready(d, 1)
    with connections(d.port, 30) as socks:
        for s in socks:
            keepalive_request(s)
        reload = {}
        t = threading.Thread(target=lambda: reload.update(r=d.ctl("reload", "--wait")))
        t.start()
        for _ in range(5):
            for s in socks:
                assert keepalive_request(s)[0] == 200
            time.sleep(0.05)
        t.join(timeout=30)
        assert reload["r"].returncode == 0, reload["r"].stderr
        wait_ready(d, 1, generation=2)
        # Every connection survived the move and is now on the new generation's worker.
        for s in socks:
            assert keepalive_request(s)[0] == 200
        assert status(d)["handedOff"] == 30


def test_busy_connection_at_drain_timeout_is_closed_and_counted(daemon_factory):
    d = daemon_factory({"workers": 1, "drainTimeout": 1})
    wait_ready(d, 1)
    with connections(d.port, 1) as (busy,):
        busy.sendall(b"POST / HTTP/1.1\r\nHost: t\r\nContent-Length: 10\r\n\r\nhel")  # never finished
        time.sleep(0.2)
        d.ctl("reload", "--wait", check=True)
        wait_ready(d, 1, generation=2)
        assert busy.recv(4096) == b""  # closed once the old worker's drain timed out
        assert status(d)["closedOnDrainTimeout"] == 1
        assert "still open; they are closed" in d.log_text()


def cpus_allowed(pid):
    return [l.split(":")[1].strip() for l in open(f"/proc/{pid}/status") if l.startswith("Cpus_allowed_list")][0]


def test_cpu_affinity(daemon_factory):
    ncpu = os.cpu_count()
    d = daemon_factory({"workers": 2, "cpuAffinity": "auto", "reusePortSteering": "cpu"})
    wait_ready(d, 2)
    slots = {w["slot"]: w["pid"] for w in json.loads(d.ctl("workers", "--json").stdout)["workers"]}
    assert cpus_allowed(slots[0]) == "0"
    assert cpus_allowed(slots[1]) == str(1 % ncpu)
    for _ in range(20):
        assert get(d.port) == (200, b"Hello world!")
    d.config["cpuAffinity"] = [0]
    d.write_config()
    d.ctl("reload", "--wait", check=True)
    wait_ready(d, 2, generation=2)
    assert {cpus_allowed(w["pid"]) for w in json.loads(d.ctl("workers", "--json").stdout)["workers"]} == {"0"}


def test_auto_follows_the_affinity_mask(daemon_factory):
    """In a cpuset (taskset here; a container's cpuset alike) `workers: auto` counts the CPUs the
    daemon may use, and `cpuAffinity: auto` pins to those, not to CPU 0..n-1 of the machine."""
    last = max(os.sched_getaffinity(0))
    d = daemon_factory({"workers": "auto", "cpuAffinity": "auto"}, prefix=["taskset", "-c", str(last)])
    wait_ready(d, 1)
    workers = json.loads(d.ctl("workers", "--json").stdout)["workers"]
    assert len(workers) == 1
    assert cpus_allowed(workers[0]["pid"]) == str(last)
    assert get(d.port) == (200, b"Hello world!")


def test_scale_down_with_defer_accept_keeps_silent_connections(daemon_factory):
    """With deferAccept, a client that connected but has not sent anything yet is in no accept queue.
    Scaling down must not reset it: the retired listener stays open until the kernel has turned such
    connections into accepted ones (its SYN-ACK retransmit, ~1 s), and the master hands them on."""
    d = daemon_factory({"workers": 4, "deferAccept": True})
    wait_ready(d, 4)
    with connections(d.port, 40) as socks:
        time.sleep(0.2)
        scale_down_to_one(d)
        wait_until(lambda: listener_count(d.port) == 2, timeout=10, what="retired listeners to close")
        for s in socks:
            assert keepalive_request(s)[0] == 200


def test_defer_accept_listener_set_aside_is_taken_back(daemon_factory):
    """Scaling back up while retired listeners wait to close reuses them (their place in the
    reuseport group is the next slot's), instead of opening new ones behind them."""
    d = daemon_factory({"workers": 3, "deferAccept": True})
    wait_ready(d, 3)
    d.ctl("scale", "1", check=True)
    wait_ready(d, 1)
    d.ctl("scale", "3", check=True)
    wait_ready(d, 3)
    assert listener_count(d.port) == 6  # 3 slots × (127.0.0.1, ::1)
    time.sleep(3)  # past the set-aside listeners' close time
    assert listener_count(d.port) == 6
    for _ in range(60):
        assert get(d.port) == (200, b"Hello world!")
    per_worker = [w["accepted"] for w in json.loads(d.ctl("workers", "--json").stdout)["workers"]]
    assert len(per_worker) == 3 and all(n > 0 for n in per_worker), per_worker


def test_failed_reload_keeps_the_old_drain_timeout(daemon_factory):
    """A reload that fails before any worker starts changes nothing, timeouts included: a graceful
    stop afterwards still gives a busy connection the old drainTimeout (30 s), not the failed file's."""
    d = daemon_factory({"workers": 1, "drainTimeout": 30})
    wait_ready(d, 1)
    blocker = socket.socket()
    blocker.bind(("127.0.0.1", 0))
    blocker.listen()
    try:
        d.config["drainTimeout"] = 1
        d.config["listen"] = d.config["listen"] + [f"127.0.0.1:{blocker.getsockname()[1]}"]
        d.write_config()
        assert d.ctl("reload", "--wait").returncode == 1
        with socket.create_connection(("127.0.0.1", d.port), timeout=10) as busy:
            busy.sendall(b"GET / HTTP/1.1\r\nHost: t\r\n")  # mid-request: the worker must wait for it
            time.sleep(0.3)
            d.signal(signal.SIGTERM)
            time.sleep(2.5)  # past the failed file's 1 s drain (and nowhere near the old 30 s)
            assert d.proc.poll() is None, "the master applied the failed reload's drainTimeout"
            busy.sendall(b"\r\n")
            assert busy.recv(4096).startswith(b"HTTP/1.1 200 ")
        d.proc.wait(timeout=10)
    finally:
        blocker.close()


def test_what_a_killed_worker_loses(daemon_factory):
    """Issue 12 item 23, what README and zero-downtime.md state: a worker killed with SIGKILL loses
    the connections it had accepted (idle keep-alive, a request half sent, one that sent nothing),
    and the master counts and logs exactly those; connections queued on its listener meanwhile are
    served by the replacement."""
    d = daemon_factory({"workers": 1})
    wait_ready(d, 1)
    victim = children(d.proc.pid)[0]
    with connections(d.port, 6) as held:
        for s in held[:4]:
            get_hello(s)
        held[4].sendall(b"GET / HTTP/1.1\r\nHost: t\r\n")
        wait_until(lambda: (status(d) or {}).get("connections") == 6, what="6 open connections published")
        os.kill(victim, signal.SIGKILL)

        def dead():
            try:
                with open(f"/proc/{victim}/stat") as f:
                    return f.read().split(")")[-1].split()[0] == "Z"
            except OSError:
                return True
        wait_until(dead, what="the worker gone")
        queued = sending_connections(d.port, 10, b"GET / HTTP/1.1\r\nHost: t\r\nConnection: close\r\n\r\n")
        for s in held:
            s.settimeout(5)
            try:
                assert s.recv(4096) == b""
            except ConnectionResetError:
                pass
        for q in queued:
            assert statuses(read_to_eof(q)) == [200]
            q.close()
    wait_until(lambda: (status(d) or {}).get("lostWithCrashedWorkers") == 6, what="6 lost connections counted")
    assert "died with 6 open connection(s)" in d.log_text()
