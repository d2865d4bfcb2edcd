"""Workers that hang (SIGSTOP stands in for an infinite loop): the heartbeat check and the drain
timeout escalate on the clock, and systemd's watchdog is not fed while nothing healthy serves."""
import os
import signal
import socket
import time

from conftest import children, get, status, wait_ready, wait_until
from test_notify import NotifyRecorder


def test_stuck_worker_is_killed_and_replaced(daemon_factory):
    d = daemon_factory({"workers": 1, "heartbeatTimeout": 1})
    wait_ready(d, 1)
    victim = children(d.proc.pid)[0]
    os.kill(victim, signal.SIGSTOP)
    start = time.time()
    wait_until(lambda: victim not in children(d.proc.pid) and len(children(d.proc.pid)) == 1, timeout=10,
               what="the stuck worker to be replaced")
    assert 0.9 < time.time() - start < 5
    wait_ready(d, 1)
    assert get(d.port) == (200, b"Hello world!")
    assert "missed its heartbeat" in d.log_text()
    assert status(d)["restarts"] == 1


def test_hung_draining_worker_escalates_to_kill(daemon_factory):
    d = daemon_factory({"workers": 2, "drainTimeout": 1, "heartbeatTimeout": 60})
    wait_ready(d, 2)
    victim = max(children(d.proc.pid))  # slot 1 was started last
    os.kill(victim, signal.SIGSTOP)
    start = time.time()
    d.ctl("scale", "1", check=True)
    wait_until(lambda: victim not in children(d.proc.pid), timeout=15, what="the hung retiring worker to be killed")
    elapsed = time.time() - start
    # drainTimeout (1 s) → INT, then 3 s → KILL.
    assert 3.5 < elapsed < 8, elapsed
    log = d.log_text()
    assert "still draining after 1000 ms" in log and "ignored the fast stop; killing it" in log
    assert get(d.port) == (200, b"Hello world!")


def test_watchdog_stops_while_unhealthy(daemon_factory, tmpdir_short):
    rec = NotifyRecorder(os.path.join(tmpdir_short, "notify.sock"))
    try:
        d = daemon_factory({"workers": 1, "heartbeatTimeout": 3},
                           env={"NOTIFY_SOCKET": rec.path, "WATCHDOG_USEC": "200000"})
        wait_ready(d, 1)
        victim = children(d.proc.pid)[0]
        time.sleep(0.5)
        stopped_at = time.monotonic()
        os.kill(victim, signal.SIGSTOP)
        time.sleep(1.5)
        wait_until(lambda: victim not in children(d.proc.pid), timeout=10, what="replacement")
        wait_ready(d, 1)
        time.sleep(0.5)
        pings = [t for t, f in rec.timed if f.get("WATCHDOG") == "1"]
        assert any(t > stopped_at + 3 for t in pings), "pings resume after the replacement"
        # No ping from when the only worker had been stuck 2 s until its replacement (at 3 s) was up.
        after = [t for t in pings if t > stopped_at]
        gaps = [b - a for a, b in zip(after, after[1:])]
        assert max(gaps) > 0.7, gaps
    finally:
        rec.close()
