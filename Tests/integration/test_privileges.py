"""Issue 15 item 4 (outside systemd): `user`/`group` make the workers give up root after they
inherit the listeners, before they read a byte from a client; the master keeps its user. A user
that does not exist, or a switch the master could not make, is refused before anything starts."""
import json
import os
import subprocess

import pytest

from conftest import BIN, children, get, wait_ready, wait_until

pytestmark = pytest.mark.skipif(os.geteuid() != 0, reason="switching users needs root")


def ids(pid):
    with open(f"/proc/{pid}/status") as f:
        fields = dict(line.split(":", 1) for line in f.read().splitlines() if ":" in line)
    uid = [int(x) for x in fields["Uid"].split()]
    gid = [int(x) for x in fields["Gid"].split()]
    groups = [int(x) for x in fields["Groups"].split()]
    return uid, gid, groups


def test_workers_run_as_the_configured_user_and_the_master_stays_root(daemon_factory, tmpdir_short):
    os.chmod(tmpdir_short, 0o755)  # the access log's directory: written by the workers' opened fd only
    log = os.path.join(tmpdir_short, "access.log")
    d = daemon_factory({"workers": 2, "user": "nobody", "group": "nogroup", "accessLog": {"path": log}})
    wait_ready(d, 2)
    assert get(d.port) == (200, b"Hello world!")
    master_uid, _, _ = ids(d.proc.pid)
    assert master_uid == [0, 0, 0, 0]
    workers = children(d.proc.pid)
    assert len(workers) == 2
    for pid in workers:
        uid, gid, groups = ids(pid)
        assert uid == [65534] * 4 and gid == [65534] * 4 and groups == [], (uid, gid, groups)
    # The access log was opened before the switch and is still written.
    wait_until(lambda: '"GET / HTTP/1.1" 200' in open(log).read(), what="the access log line")


@pytest.mark.parametrize("setting, message", [
    ({"user": "no-such-user-clusterd"}, 'user: no user "no-such-user-clusterd"'),
    ({"user": "nobody", "group": "no-such-group-clusterd"}, 'group: no group "no-such-group-clusterd"'),
    ({"group": "nogroup"}, "group: needs user"),
])
def test_a_user_that_cannot_be_used_is_refused(tmpdir_short, setting, message):
    path = os.path.join(tmpdir_short, "c.json")
    with open(path, "w") as f:
        json.dump({"listen": ["127.0.0.1:1"], "controlSocket": os.path.join(tmpdir_short, "c.sock"), **setting}, f)
    r = subprocess.run([os.path.join(BIN, "clusterd"), "--check-config", "--config", path], capture_output=True, text=True, timeout=30)
    assert r.returncode == 78 and message in r.stderr, r.stderr


def test_without_cap_setuid_the_switch_is_refused_up_front(tmpdir_short):
    """A root master whose bounding set lacks CAP_SETUID (the shipped unit's) cannot switch: said
    before anything starts, naming the fix."""
    if not os.path.exists("/usr/sbin/capsh") and not os.path.exists("/sbin/capsh"):
        pytest.skip("capsh (libcap2-bin) not installed")
    path = os.path.join(tmpdir_short, "c.json")
    with open(path, "w") as f:
        json.dump({"listen": ["127.0.0.1:1"], "controlSocket": os.path.join(tmpdir_short, "c.sock"), "user": "nobody"}, f)
    r = subprocess.run(["capsh", "--drop=cap_setuid,cap_setgid", "--", "-c",
                        f"exec {os.path.join(BIN, 'clusterd')} --check-config --config {path}"],
                       capture_output=True, text=True, timeout=30)
    assert r.returncode == 78 and "needs the master to run as root with CAP_SETUID" in r.stderr, r.stderr


def test_an_unprivileged_master_refuses_a_group_it_cannot_take(tmpdir_short):
    """A master that is already `user` but not root cannot give its workers another group: the config
    is refused (it was: the group was silently ignored)."""
    os.chmod(tmpdir_short, 0o755)
    path = os.path.join(tmpdir_short, "c.json")
    base = {"listen": ["127.0.0.1:18099"], "controlSocket": os.path.join(tmpdir_short, "c.sock"), "user": "nobody"}
    for group, ok in (("nogroup", True), ("root", False)):
        with open(path, "w") as f:
            json.dump(dict(base, group=group), f)
        os.chmod(path, 0o644)
        r = subprocess.run(["setpriv", "--reuid=nobody", "--regid=nogroup", "--clear-groups", os.path.join(BIN, "clusterd"),
                            "--check-config", "--config", path], capture_output=True, text=True, timeout=30)
        if ok:
            assert r.returncode == 0, r.stderr
        else:
            assert r.returncode == 78 and "group: switching the workers to gid 0 needs" in r.stderr, r.stderr
