"""Issue 12: listeners and supervision. A second daemon on a held port, a slot in its crash backoff,
a scale the descriptor limit cannot hold, a config path that would block the master."""
import contextlib
import grp
import os
import signal
import socket
import stat
import subprocess
import tempfile
import time

from conftest import CLUSTERD, Daemon, children, get, sending_connections, status, unix_get, wait_ready, wait_until


@contextlib.contextmanager
def other_daemon(config_overrides=None, port=None, prefix=None):
    """A second clusterd in its own directory (its own control socket and config)."""
    tmp = tempfile.mkdtemp(prefix="cd-", dir="/tmp")
    d = Daemon(tmp, config_overrides, prefix=prefix)
    if port is not None:
        d.port = port
    try:
        yield d
    finally:
        d.stop()
        subprocess.run(["rm", "-rf", tmp])


def all_served(port, count=100):
    codes = [get(port, timeout=3)[0] for _ in range(count)]
    return codes.count(200) == count


def test_second_daemon_on_a_held_port_is_refused(daemon_factory):
    a = daemon_factory({"workers": 2})
    wait_ready(a, 2)
    with other_daemon({"workers": 1, "listen": [f"127.0.0.1:{a.port}"]}, port=a.port) as b:
        b.start(wait=False)
        rc = b.proc.wait(timeout=20)
        assert rc != 0
        log = b.log_text()
        assert f"cannot listen on 127.0.0.1:{a.port}: address already in use" in log, log
        assert f"port {a.port}" in log
        # It never joined the first daemon's reuseport group: every request is answered by A.
        assert all_served(a.port)
        assert status(a)["listeners"] == 4


def test_reload_onto_another_daemons_port_fails_and_keeps_serving(daemon_factory):
    a = daemon_factory({"workers": 1, "routes": [{"path": "/", "body": "A"}]})
    wait_ready(a, 1)
    with other_daemon({"workers": 2, "routes": [{"path": "/", "body": "B"}]}) as b:
        b.start()
        wait_ready(b, 2)
        old = b.config["listen"]
        b.config["listen"] = [f"127.0.0.1:{a.port}"]
        b.write_config()
        r = b.ctl("reload", "--wait", timeout=20)
        assert r.returncode == 1
        assert f"cannot listen on 127.0.0.1:{a.port}: address already in use" in r.stderr, r.stderr
        s = status(b)
        assert s["generation"] == 1 and s["listeners"] == 2 * len(old)
        assert get(b.port) == (200, b"B")
        assert [get(a.port)[1] for _ in range(100)] == [b"A"] * 100
        # The refusal does not stick: a reload onto a free port still works.
        b.write_config(dict(b.config, listen=old))
        b.ctl("reload", "--wait", check=True)
        assert get(b.port) == (200, b"B")


def slot_pid(d, slot):
    s = status(d)
    for w in (s or {}).get("workerList", []):
        if w["slot"] == slot:
            return w["pid"]
    return None


def crash_loop(d, slot, times):
    """Kills `slot`'s worker `times` times, each as soon as its replacement shows up, so that the
    slot's restart backoff doubles each time (0, 0.2, 0.4, 0.8, 1.6, 3.2 s). Returns the last pid."""
    victim = slot_pid(d, slot)
    for _ in range(times):
        os.kill(victim, signal.SIGKILL)
        killed = victim
        victim = wait_until(lambda: (p := slot_pid(d, slot)) not in (None, killed) and p, timeout=10,
                            what=f"slot {slot} respawned")
    return victim


def test_a_slot_in_crash_backoff_takes_no_new_connections(daemon_factory):
    """Slot 1's worker crashes as soon as it comes back, until its restart backoff is seconds long;
    meanwhile every request to / is served promptly by slot 0."""
    d = daemon_factory({"workers": 2})
    wait_ready(d, 2)
    victim = crash_loop(d, 1, 5)
    os.kill(victim, signal.SIGKILL)  # the 6th crash in a row: 3.2 s before the next start
    wait_until(lambda: victim not in children(d.proc.pid), what="slot 1 gone")
    started = time.time()
    slow = []
    for _ in range(40):
        t = time.time()
        code, _ = get(d.port, timeout=1.0)
        if code != 200 or time.time() - t > 0.8:
            slow.append((code, round(time.time() - t, 2)))
    assert slow == []
    assert time.time() - started < 3.0, "past the backoff: the test proves nothing"
    assert slot_pid(d, 1) is None, "slot 1 is still in its backoff"
    # It comes back and serves again.
    wait_ready(d, 2, timeout=20)
    assert all_served(d.port, 20)


def test_connections_queued_on_a_dead_slot_go_to_a_live_worker(daemon_factory):
    """Connections already queued on slot 1's listener when its worker dies into a long backoff are
    handed to slot 0 by the master instead of waiting for slot 1's restart."""
    d = daemon_factory({"workers": 2})
    wait_ready(d, 2)
    victim = crash_loop(d, 1, 5)
    wait_ready(d, 2)  # slot 1 is steered to again
    os.kill(victim, signal.SIGSTOP)  # it accepts nothing: about half of what follows queues on it
    socks = []
    try:
        sending_connections(d.port, 20, b"GET / HTTP/1.1\r\nHost: t\r\nConnection: close\r\n\r\n", timeout=5, into=socks)
        os.kill(victim, signal.SIGKILL)  # the 6th crash in a row: 3.2 s before the next start
        t = time.time()
        for c in socks:
            c.settimeout(2.0)
            data = b""
            while chunk := c.recv(65536):
                data += chunk
            assert data.startswith(b"HTTP/1.1 200"), data
        assert time.time() - t < 1.5
        assert slot_pid(d, 1) is None, "served before slot 1 came back"
    finally:
        for c in socks:
            c.close()


def fd_count(pid):
    return len(os.listdir(f"/proc/{pid}/fd"))


def settled_fd_count(pid):
    """The master's descriptors with no control client in between (a clusterctl that just left
    may still have its connection counted for a moment)."""
    samples = []
    for _ in range(5):
        samples.append(fd_count(pid))
        time.sleep(0.1)
    return min(samples)


def test_scale_beyond_the_descriptor_limit_is_refused_and_leaks_nothing(daemon_factory):
    from conftest import free_port
    port = free_port()
    listen = [f"127.0.0.{i}:{port}" for i in range(1, 17)]
    d = daemon_factory({"workers": 1, "listen": listen}, prefix=["prlimit", "--nofile=256:256", "--"], wait=False)
    d.port = port
    wait_ready(d, 1)
    master = d.proc.pid
    assert status(d)["listeners"] == 16
    before = settled_fd_count(master)
    r = d.ctl("scale", "20", timeout=10)
    assert r.returncode != 0
    assert "cannot scale to 20 workers: not enough file descriptors" in r.stderr, r.stderr
    assert "limit 256" in r.stderr
    wait_until(lambda: fd_count(master) == before, timeout=3, what="no descriptor kept by the refused scale")
    s = status(d)
    assert s["listeners"] == 16 and s["workers"] == 1
    # Within the budget everything still works: scale, reload, a crash restart, the control socket.
    d.ctl("scale", "4", check=True)
    wait_ready(d, 4)
    assert status(d)["listeners"] == 64
    assert all(get(port, host=f"127.0.0.{i}")[0] == 200 for i in range(1, 17))
    d.ctl("reload", "--wait", check=True, timeout=20)
    wait_ready(d, 4, generation=2)
    victim = children(master)[0]
    os.kill(victim, signal.SIGKILL)
    wait_until(lambda: victim not in children(master) and len(children(master)) == 4, what="respawn")
    wait_ready(d, 4)
    assert all_served(port, 20)
    d.ctl("scale", "1", check=True)
    wait_ready(d, 1)
    wait_until(lambda: status(d)["listeners"] == 16, what="listeners trimmed")
    wait_until(lambda: fd_count(master) == before, what="descriptors back to the start")


def make_fifo(path):
    os.unlink(path)
    os.mkfifo(path)


def test_config_path_that_is_a_fifo_fails_a_reload_at_once(daemon_factory):
    d = daemon_factory({"workers": 1})
    wait_ready(d, 1)
    make_fifo(d.config_path)
    t = time.time()
    r = d.ctl("reload", "--wait", timeout=10)
    assert time.time() - t < 5
    assert r.returncode == 1
    assert "not a regular file (a FIFO)" in r.stderr, r.stderr
    d.signal(signal.SIGHUP)
    wait_until(lambda: d.log_text().count("not a regular file (a FIFO)") >= 2, timeout=5, what="HUP refused")
    s = status(d)
    assert s["state"] == "running" and s["generation"] == 1
    assert all_served(d.port, 20)
    # At start, too: a FIFO is a config error, not a hang.
    r = subprocess.run([CLUSTERD, "--check-config", "--config", d.config_path], capture_output=True, text=True, timeout=10)
    assert r.returncode != 0
    assert "not a regular file (a FIFO)" in r.stdout + r.stderr


# Issue 15: Unix-socket listeners (behind nginx or a sidecar on the same host).

def another_group():
    """A group the test may give a file: any but our own when root, our own otherwise."""
    if os.geteuid() != 0:
        return os.getgid()
    return next((g.gr_gid for g in grp.getgrall() if g.gr_gid != os.getgid()), os.getgid())


def test_unix_socket_listener_serves_reloads_scales_and_is_removed_at_stop(daemon_factory, tmpdir_short):
    path = os.path.join(tmpdir_short, "http.sock")
    gid = another_group()
    unix = {"address": f"unix:{path}", "mode": "0660", "group": gid}
    log = os.path.join(tmpdir_short, "access.log")
    d = daemon_factory({"workers": 2, "accessLog": {"path": log}})
    tcp = d.config["listen"]
    d.config["listen"] = tcp + [unix]
    d.write_config()
    d.ctl("reload", "--wait", check=True)
    wait_ready(d, 2)
    st = os.lstat(path)
    assert stat.S_ISSOCK(st.st_mode) and stat.S_IMODE(st.st_mode) == 0o660 and st.st_gid == gid
    assert [unix_get(path) for _ in range(20)] == [(200, b"Hello world!")] * 20
    s = status(d)
    assert f"unix:{path}" in s["listen"]
    assert s["listeners"] == 2 * 2 + 1, "one Unix listener shared by both workers"
    assert f"unix:{path}" in d.ctl("status").stdout
    # /metrics allows networks: a Unix peer has no address.
    assert unix_get(path, "/metrics")[0] == 403
    wait_until(lambda: os.path.exists(log) and "GET / HTTP/1.1" in open(log).read(), what="access log")
    assert all(line.startswith("- ") for line in open(log).read().splitlines() if "GET / " in line)

    d.ctl("scale", "3", check=True)
    wait_ready(d, 3)
    assert status(d)["listeners"] == 3 * 2 + 1
    assert [unix_get(path)[0] for _ in range(30)] == [200] * 30

    # A reload that drops it: the file goes; one that brings it back with another mode.
    d.write_config(dict(d.config, listen=tcp))
    d.ctl("reload", "--wait", check=True)
    wait_until(lambda: not os.path.exists(path), what="the dropped socket's file removed")
    assert get(d.port) == (200, b"Hello world!")
    d.write_config(dict(d.config, listen=tcp + [dict(unix, mode="0600")]))
    d.ctl("reload", "--wait", check=True)
    assert stat.S_IMODE(os.lstat(path).st_mode) == 0o600
    assert unix_get(path) == (200, b"Hello world!")
    # A reload that changes only the mode applies it to the file in place.
    d.write_config(dict(d.config, listen=tcp + [dict(unix, mode="0640")]))
    d.ctl("reload", "--wait", check=True)
    assert stat.S_IMODE(os.lstat(path).st_mode) == 0o640
    assert unix_get(path) == (200, b"Hello world!")
    assert "ERROR" not in d.log_text().upper().replace("ERRORS", ""), d.log_text()

    d.signal(signal.SIGTERM)
    assert d.proc.wait(timeout=20) == 0
    assert not os.path.exists(path), "a stop removes the socket file"


def test_unix_socket_with_a_live_server_is_refused_a_stale_one_replaced(daemon_factory, tmpdir_short):
    path = os.path.join(tmpdir_short, "http.sock")
    live = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    live.bind(path)
    live.listen(8)
    d = daemon_factory({"workers": 1}, start=False)
    d.config["listen"] = d.config["listen"] + [f"unix:{path}"]
    d.start(wait=False)
    rc = d.proc.wait(timeout=20)
    assert rc != 0
    assert f"cannot listen on unix:{path}: address already in use: another server is listening there" in d.log_text(), d.log_text()
    assert os.path.exists(path), "the other server's file stays"
    # The other server is gone but left its file (a crash): replaced.
    live.close()
    assert os.path.exists(path)
    d.start()
    wait_ready(d, 1)
    assert unix_get(path) == (200, b"Hello world!")
    # Anything but a socket is never replaced.
    regular = os.path.join(tmpdir_short, "data")
    open(regular, "w").close()
    with other_daemon({"workers": 1, "listen": [f"unix:{regular}"]}) as b:
        b.start(wait=False)
        assert b.proc.wait(timeout=20) != 0
        assert "is a regular file, not a socket" in b.log_text(), b.log_text()
    assert os.path.isfile(regular)
