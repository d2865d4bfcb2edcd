"""Supervision of workers that cannot run with the config (issue 13 item 1): a worker that exits
78 (fatal config error) is not respawned, since a new one would fail the same way; when no worker
is left to serve, the master stops and exits 78 itself (systemd's RestartPreventExitStatus=78)."""
import os
import signal
import time

from conftest import children, get, status, wait_ready, wait_until


def test_worker_exiting_78_is_not_respawned_and_the_last_one_stops_the_master(daemon_factory, tmpdir_short):
    www = os.path.join(tmpdir_short, "www")
    os.mkdir(www)
    d = daemon_factory({"workers": 2, "static": [{"prefix": "/assets/", "root": www}]})
    wait_ready(d, 2)
    # From now on a new worker cannot build its handler (its static root is gone): it exits 78.
    os.rmdir(www)
    first = children(d.proc.pid)[0]
    os.kill(first, signal.SIGKILL)
    wait_until(lambda: "exited with code 78: it cannot run with this config; the slot is not restarted" in d.log_text(),
               what="the replacement's fatal exit")
    time.sleep(1.5)  # a crash would have been restarted within 200 ms
    assert len(children(d.proc.pid)) == 1
    s = status(d)
    assert s["restarts"] == 1, s  # the kill -9; the fatal exit is not restarted
    assert s["ready"] == 1 and s["state"] == "running", s
    assert get(d.port)[0] == 200
    # The last worker goes the same way: nothing is left to serve, and the master says so with 78.
    os.kill(children(d.proc.pid)[0], signal.SIGKILL)
    assert d.proc.wait(timeout=20) == 78
    assert "no worker is left to serve: stopping" in d.log_text()
