"""The control plane under hostile and careless use (issue 12): overflowing commands, a control
socket path that is not a socket, clients that never read, descriptor exhaustion, credentials and
supplementary groups, and what clusterctl says when it cannot get through."""
import json
import os
import socket
import subprocess
import time

from conftest import CLUSTERCTL, CLUSTERD, control_line, cpu_seconds, get, rss_kib, status, wait_ready, wait_until


# Item 2 -------------------------------------------------------------------------------------------

def test_scale_by_an_overflowing_delta_is_refused_and_the_master_lives(daemon_factory):
    d = daemon_factory({"workers": 2, "maxWorkers": 8})
    wait_ready(d, 2)
    r = d.ctl("scale", "+9223372036854775806")
    assert r.returncode == 1, r.stdout + r.stderr
    assert "scale: workers must be 1...8 (maxWorkers), got 2 + 9223372036854775806" in r.stderr
    for line in [b'{"v":1,"cmd":"scale","delta":9223372036854775807}\n',
                 b'{"v":1,"cmd":"scale","delta":-9223372036854775808}\n',
                 b'{"v":1,"cmd":"scale","workers":-9223372036854775808}\n',
                 b'{"v":1,"cmd":"scale","delta":1e300}\n']:
        answer = control_line(d.socket_path, line)
        assert answer["ok"] is False, (line, answer)
    assert d.proc.poll() is None, "the master died"
    s = status(d)
    assert s["workers"] == 2 and s["ready"] == 2
    assert get(d.port) == (200, b"Hello world!")


# Item 5 -------------------------------------------------------------------------------------------

def test_control_socket_path_that_is_not_a_socket_is_refused_and_kept(daemon_factory, tmpdir_short):
    d = daemon_factory({"workers": 1}, start=False)
    precious = os.path.join(tmpdir_short, "precious.txt")
    with open(precious, "w") as f:
        f.write("operator data\n")
    d.config["controlSocket"] = precious
    d.write_config()
    r = subprocess.run([CLUSTERD, "--check-config", "--config", d.config_path], capture_output=True, text=True, timeout=20)
    assert r.returncode == 78, r.stdout + r.stderr
    assert f"controlSocket: {precious} exists and is a regular file, not a socket" in r.stderr
    r = subprocess.run([CLUSTERD, "--config", d.config_path], capture_output=True, text=True, timeout=20)
    assert r.returncode == 78, r.stdout + r.stderr
    assert "not a socket" in r.stderr
    assert open(precious).read() == "operator data\n", "the file was deleted or changed"
    # A directory and a symlink are not replaced either.
    os.mkdir(os.path.join(tmpdir_short, "dir.sock"))
    d.config["controlSocket"] = os.path.join(tmpdir_short, "dir.sock")
    d.write_config()
    r = subprocess.run([CLUSTERD, "--check-config", "--config", d.config_path], capture_output=True, text=True, timeout=20)
    assert r.returncode == 78 and "is a directory, not a socket" in r.stderr


def test_reload_refuses_a_control_socket_replaced_by_a_file(daemon_factory):
    d = daemon_factory({"workers": 1})
    wait_ready(d, 1)
    moved = d.socket_path + ".live"
    os.rename(d.socket_path, moved)
    with open(d.socket_path, "w") as f:
        f.write("not a socket\n")
    r = subprocess.run([CLUSTERCTL, "--socket", moved, "reload", "--wait"], capture_output=True, text=True, timeout=30)
    assert r.returncode == 1
    assert "not a socket" in r.stderr
    assert open(d.socket_path).read() == "not a socket\n"
    os.unlink(d.socket_path)
    os.rename(moved, d.socket_path)


# Item 6 -------------------------------------------------------------------------------------------

def test_a_control_client_that_never_reads_cannot_grow_the_master(daemon_factory):
    d = daemon_factory({"workers": 2})
    wait_ready(d, 2)
    master = d.proc.pid
    before = rss_kib(master)
    hog = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    hog.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
    hog.connect(d.socket_path)
    hog.setblocking(False)
    request = b'{"v":1,"cmd":"status"}\n' * 400
    sent = 0
    stalled_since = None
    deadline = time.time() + 20
    # Send status requests without reading a byte: ~26x their size in replies. Stop when the master
    # stops taking them for a second (back-pressure), after 8 MB of requests, or after 20 s.
    while sent < 8_000_000 and time.time() < deadline:
        try:
            sent += hog.send(request)
            stalled_since = None
        except BlockingIOError:
            stalled_since = stalled_since or time.time()
            if time.time() - stalled_since > 1.0:
                break
            time.sleep(0.01)
    try:
        grown = rss_kib(master) - before
        # Without back-pressure: replies for every request pile up (hundreds of MB for 8 MB sent).
        assert sent < 2_000_000, f"the master kept reading: {sent} bytes of requests taken"
        assert grown < 20_000, f"master RSS grew by {grown} KiB"
        # Others are still answered, and serving goes on.
        r = d.ctl("status", "--json", check=True)
        assert json.loads(r.stdout)["ready"] == 2
        assert get(d.port) == (200, b"Hello world!")
        # The stuck client is dropped once its replies make no progress (10 s).
        def dropped():
            try:
                while hog.recv(1 << 20):
                    pass
                return True  # EOF: closed by the master
            except BlockingIOError:
                return False
            except ConnectionResetError:
                return True
        # Its queued replies are still readable; reading them all ends in EOF only if it was closed.
        time.sleep(11)
        assert wait_until(dropped, timeout=10, what="the stalled client to be dropped")
        assert "made no progress reading" in d.log_text()
    finally:
        hog.close()


# Item 7 -------------------------------------------------------------------------------------------

def test_out_of_descriptors_on_the_control_socket_backs_off_and_recovers(daemon_factory):
    d = daemon_factory({"workers": 1})
    wait_ready(d, 1)
    master = d.proc.pid
    # Start-up keeps a reserve of descriptors for control clients and respawns, and at most 32
    # control clients are served: so lower the running master's limit to what it holds now plus a
    # few, as another consumer of descriptors would.
    held_now = len(os.listdir(f"/proc/{master}/fd"))
    subprocess.run(["prlimit", f"--pid={master}", f"--nofile={held_now + 4}:{held_now + 4}"], check=True)
    held = []
    try:
        # Control connections until the master cannot accept: they wait in the listen queue then.
        for _ in range(20):
            s = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
            s.settimeout(5)
            s.connect(d.socket_path)
            held.append(s)
        time.sleep(0.5)
        assert "pausing accept" in d.log_text(), d.log_text()[-2000:]
        lines_before = d.log_text().count("control socket:")
        before = cpu_seconds(master)
        time.sleep(2)
        spent = cpu_seconds(master) - before
        lines = d.log_text().count("control socket:") - lines_before
        assert spent < 0.3, f"the master spins on EMFILE ({spent:.2f} s of CPU in 2 s)"
        assert lines <= 2, f"{lines} log lines in 2 s"
        assert get(d.port) == (200, b"Hello world!")
    finally:
        for s in held:
            s.close()
    # Once clients go, new ones are served again.
    assert wait_until(lambda: status(d), timeout=10, what="the control socket to answer again")["ready"] == 1


# Item 11 ------------------------------------------------------------------------------------------

def run_as(uid, gid, groups, script):
    def drop():
        os.setgroups(groups)
        os.setgid(gid)
        os.setuid(uid)
    return subprocess.run(["python3", "-c", script], capture_output=True, text=True, timeout=10, preexec_fn=drop)


def test_control_group_through_a_supplementary_group(daemon_factory):
    group = 47321
    d = daemon_factory({"workers": 1, "controlGroup": group})
    wait_ready(d, 1)
    os.chmod(os.path.dirname(d.socket_path), 0o755)
    script = ("import socket; s=socket.socket(socket.AF_UNIX); s.connect(%r); "
              "s.sendall(b'{\"v\":1,\"cmd\":\"status\"}\\n'); print(s.recv(65536).decode())") % d.socket_path
    # Primary group something else, controlGroup only among the supplementary groups.
    member = run_as(47000, 47000, [47001, group], script)
    assert member.returncode == 0, member.stderr
    assert json.loads(member.stdout)["ok"] is True, member.stdout
    # Without the group: the socket's mode already stops it (0660, group controlGroup).
    stranger = run_as(47002, 47002, [47001], script)
    assert stranger.returncode != 0 or json.loads(stranger.stdout)["ok"] is False
    assert "refused uid 47000" not in d.log_text()


# Item 21 ------------------------------------------------------------------------------------------

def test_clusterctl_finds_the_socket_through_the_config(daemon_factory):
    d = daemon_factory({"workers": 1})
    wait_ready(d, 1)
    env = dict(os.environ)
    env.pop("CLUSTERD_SOCKET", None)
    r = subprocess.run([CLUSTERCTL, "--config", d.config_path, "status"], capture_output=True, text=True, timeout=30, env=env)
    assert r.returncode == 0, r.stderr
    assert "running, generation 1" in r.stdout
    r = subprocess.run([CLUSTERCTL, "status", "--config", d.config_path, "--json"], capture_output=True, text=True, timeout=30, env=env)
    assert json.loads(r.stdout)["ready"] == 1
    r = subprocess.run([CLUSTERCTL, "--config", d.config_path + ".missing", "status"], capture_output=True, text=True, timeout=30, env=env)
    assert r.returncode == 64
    assert "clusterd.json.missing: cannot read: no such file" in r.stderr


def test_clusterctl_refuses_a_config_that_is_a_fifo_at_once(tmpdir_short):
    """--config naming a FIFO with no writer: refused as not a regular file (non-blocking open, as
    the master reads its config), not a clusterctl hung in open(2) until someone writes to it."""
    fifo = os.path.join(tmpdir_short, "clusterd.json")
    os.mkfifo(fifo)
    env = dict(os.environ)
    env.pop("CLUSTERD_SOCKET", None)
    started = time.monotonic()
    try:
        r = subprocess.run([CLUSTERCTL, "--config", fifo, "status"], capture_output=True, text=True, timeout=10, env=env)
    except subprocess.TimeoutExpired:
        raise AssertionError("clusterctl hung on a FIFO as --config")
    assert time.monotonic() - started < 5
    assert r.returncode == 64, (r.returncode, r.stderr)
    assert "not a regular file (a FIFO)" in r.stderr, r.stderr


def test_clusterctl_says_what_to_check_when_it_cannot_get_through(daemon_factory, tmpdir_short):
    missing = os.path.join(tmpdir_short, "nothing.sock")
    r = subprocess.run([CLUSTERCTL, "--socket", missing, "status"], capture_output=True, text=True, timeout=30)
    assert r.returncode == 3
    assert f"no control socket at {missing} (--socket)" in r.stderr
    assert "Is clusterd running?" in r.stderr and "--config FILE" in r.stderr
    # A stale socket file that nobody listens on.
    stale = os.path.join(tmpdir_short, "stale.sock")
    s = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    s.bind(stale)
    s.close()
    r = subprocess.run([CLUSTERCTL, "--socket", stale, "status"], capture_output=True, text=True, timeout=30)
    assert r.returncode == 3 and "left over from a clusterd that is not running" in r.stderr
    # Another user: permission denied says whose socket it is and who may use it.
    d = daemon_factory({"workers": 1})
    wait_ready(d, 1)
    os.chmod(os.path.dirname(d.socket_path), 0o755)
    def drop():
        os.setgroups([])
        os.setgid(65534)
        os.setuid(65534)
    r = subprocess.run([CLUSTERCTL, "--socket", d.socket_path, "status"], capture_output=True, text=True, timeout=30, preexec_fn=drop)
    assert r.returncode == 3
    assert "permission denied on the control socket" in r.stderr
    assert "belongs to uid 0, group 0, mode 0600" in r.stderr
    assert "controlGroup" in r.stderr and "you are uid 65534" in r.stderr


def test_clusterctl_gives_up_on_a_daemon_that_does_not_answer(tmpdir_short):
    """The blocking client (SO_RCVTIMEO through ClusterSystem): a peer that accepts and says
    nothing is given up on after --timeout, and one that hangs up is reported, both exit 4."""
    path = os.path.join(tmpdir_short, "silent.sock")
    server = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    server.bind(path)
    server.listen(4)
    try:
        started = time.monotonic()
        r = subprocess.run([CLUSTERCTL, "--socket", path, "--timeout", "1", "status"], capture_output=True, text=True, timeout=30)
        took = time.monotonic() - started
        assert r.returncode == 4, r.stderr
        assert "no answer from the daemon within 1 s" in r.stderr
        assert 0.9 <= took < 10
        conn, _ = server.accept()
        assert json.loads(conn.recv(4096).decode())["cmd"] == "status"
        conn.close()
        # One that reads the request and hangs up without a word.
        proc = subprocess.Popen([CLUSTERCTL, "--socket", path, "--timeout", "20", "status"], stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
        conn, _ = server.accept()
        conn.recv(4096)
        conn.close()
        out, err = proc.communicate(timeout=30)
        assert proc.returncode == 4, err
        assert "connection closed without an answer" in err
    finally:
        server.close()


def test_scale_wait_answers_when_the_new_workers_are_ready(daemon_factory):
    d = daemon_factory({"workers": 1})
    wait_ready(d, 1)
    r = d.ctl("scale", "3", "--wait", check=True)
    assert "scaled to 3 workers (3 ready)" in r.stdout
    s = status(d)
    assert s["workers"] == 3 and s["ready"] == 3, s
    r = d.ctl("scale", "-2", "--wait", check=True)
    assert "scaled to 1 workers" in r.stdout


def test_status_counts_reload_attempts_unambiguously(daemon_factory):
    d = daemon_factory({"workers": 1})
    wait_ready(d, 1)
    d.ctl("reload", "--wait", check=True)
    good = dict(d.config)
    d.write_config(dict(good, workers="lots"))
    assert d.ctl("reload", "--wait").returncode == 1
    d.write_config(good)
    r = d.ctl("status", check=True)
    assert "2 reloads (1 succeeded, 1 failed)" in r.stdout, r.stdout
