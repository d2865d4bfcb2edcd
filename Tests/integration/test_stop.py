"""Graceful stop and drain (issue 12, items 10, 25, 26, 27): a stop refuses new connections at once
and answers everything already sent; whatever a dying worker takes down with it is counted; a
worker at http.maxConnections does not keep connections handed over to it."""
import contextlib
import os
import signal
import socket
import threading
import time

from conftest import children, connections, keepalive_request, kept_alive, scale_down_to_one, status, statuses, wait_ready, wait_until

# MasterCore.Settings.stopAcceptGrace: listeners close this long after a graceful stop began.
ACCEPT_GRACE = 0.5
# The master loop's longest wait between ticks (epoll timeout in Master.run).
MASTER_TICK = 0.1


class Responses:
    """Whole responses, one after another, from a socket (pipelined ones included)."""

    def __init__(self, s):
        self.s = s
        self.data = b""

    def fill(self):
        b = self.s.recv(65536)
        if not b:
            raise EOFError(f"closed after {len(self.data)} byte(s) of a response")
        self.data += b

    def next(self):
        """(head, body) of the next response; EOFError when the server closed before its end."""
        while b"\r\n\r\n" not in self.data:
            self.fill()
        head, _, rest = self.data.partition(b"\r\n\r\n")
        length = 0
        for line in head.split(b"\r\n")[1:]:
            name, _, value = line.partition(b":")
            if name.strip().lower() == b"content-length":
                length = int(value)
        self.data = rest
        while len(self.data) < length:
            self.fill()
        body, self.data = self.data[:length], self.data[length:]
        return head, body


def read_response(s):
    return Responses(s).next()


class Load:
    """Keep-alive clients and new-connection clients against `port`, recording every request sent
    without a whole response (`lost`) and every connection attempt (start time, duration, outcome)."""

    def __init__(self, port, keepalive=20, fresh=4):
        self.port = port
        self.stop = threading.Event()
        self.lock = threading.Lock()
        self.lost = []
        self.answered = 0
        self.attempts = []  # (started, seconds, "connected" | "refused" | other)
        self.threads = [threading.Thread(target=self.keepalive_client, daemon=True) for _ in range(keepalive)]
        self.threads += [threading.Thread(target=self.fresh_client, daemon=True) for _ in range(fresh)]

    def connect(self):
        started = time.time()
        s = socket.socket()
        s.settimeout(5)
        try:
            s.connect(("127.0.0.1", self.port))
            outcome = "connected"
        except ConnectionRefusedError:
            outcome = "refused"
        except OSError as e:
            outcome = repr(e)
        with self.lock:
            self.attempts.append((started, time.time() - started, outcome))
        if outcome != "connected":
            s.close()
            time.sleep(0.02)
            return None
        return s

    def exchange(self, s, request):
        """Sends a request and reads its response; a request sent and not answered is lost."""
        try:
            s.sendall(request)
        except OSError:
            return None  # never reached the server: not a request the server had
        try:
            head, _ = read_response(s)
        except (OSError, EOFError) as e:
            with self.lock:
                self.lost.append(repr(e))
            return None
        with self.lock:
            self.answered += 1
        return head

    def keepalive_client(self):
        s = None
        while not self.stop.is_set():
            if s is None:
                s = self.connect()
                continue
            head = self.exchange(s, b"GET / HTTP/1.1\r\nHost: t\r\n\r\n")
            if head is None or b"Connection: close" in head:
                s.close()
                s = None
        if s is not None:
            s.close()

    def fresh_client(self):
        while not self.stop.is_set():
            s = self.connect()
            if s is not None:
                self.exchange(s, b"GET / HTTP/1.1\r\nHost: t\r\nConnection: close\r\n\r\n")
                s.close()

    def __enter__(self):
        for t in self.threads:
            t.start()
        return self

    def __exit__(self, *exc):
        self.stop.set()
        for t in self.threads:
            t.join(timeout=15)


def test_graceful_stop_refuses_new_connections_and_answers_everything_sent(daemon_factory):
    d = daemon_factory({"workers": 2, "drainTimeout": 5})
    wait_ready(d, 2)
    # A request in flight keeps the drain (and the master) going for 2.5 s after TERM.
    busy = socket.create_connection(("127.0.0.1", d.port), timeout=10)
    busy.sendall(b"POST / HTTP/1.1\r\nHost: t\r\nContent-Length: 10\r\n\r\nhello")
    with Load(d.port) as load:
        time.sleep(1.0)
        assert load.answered > 50, "the load is running"
        stop_at = time.time()
        d.signal(signal.SIGTERM)
        time.sleep(2.5)
        busy.sendall(b"world")
        final = busy.recv(4096)
        assert d.proc.wait(timeout=10) == 0
        exited_at = time.time()
    assert statuses(final) == [405] and b"Connection: close" in final
    # Every request the server received was answered (none reset, none left without an answer).
    assert load.lost == []
    assert exited_at - stop_at < 5, "the master exits within drainTimeout"
    during = [a for a in load.attempts if stop_at <= a[0] and a[0] + a[1] < exited_at - 0.05]
    # Past the accept grace, every attempt is refused at once (no hang, no connection nobody serves).
    # The master closes the listeners on its first tick after the grace (ticks are up to 100 ms
    # apart) and may itself be scheduled late on a loaded machine: an attempt whose SYN is dropped
    # just before that is refused at its retransmission (1 s), so "late" leaves a margin for both.
    late = [a for a in during if a[0] > stop_at + ACCEPT_GRACE + MASTER_TICK + 0.4]
    assert len(late) > 20, late
    assert all(outcome == "refused" and seconds < 0.3 for _, seconds, outcome in late), late
    # Attempts within the grace either connect and are served (handshake already under way) or are
    # refused at their SYN retransmission (1 s): never a hang.
    assert all(outcome in ("refused", "connected") and seconds < 1.6 for _, seconds, outcome in during), during


def test_stop_answers_pipelined_requests_and_requests_on_idle_connections(daemon_factory):
    d = daemon_factory({"workers": 1, "drainTimeout": 10})
    wait_ready(d, 1)
    with connections(d.port, 3) as (idle, piped, busy):
        assert keepalive_request(idle)[0] == 200
        assert keepalive_request(piped)[0] == 200
        busy.sendall(b"POST / HTTP/1.1\r\nHost: t\r\nContent-Length: 10\r\n\r\nhello")
        time.sleep(0.2)
        d.signal(signal.SIGTERM)
        time.sleep(ACCEPT_GRACE + MASTER_TICK + 0.3)  # the worker drains now (the first tick after the grace)
        # Five requests pipelined on a keep-alive connection: all answered, the last closes.
        piped.sendall(b"GET / HTTP/1.1\r\nHost: t\r\n\r\n" * 5)
        heads = []
        responses = Responses(piped)
        for _ in range(5):
            head, body = responses.next()
            assert body == b"Hello world!"
            heads.append(head)
        assert [b"Connection: close" in h for h in heads] == [False] * 4 + [True]
        assert responses.data == b"" and piped.recv(4096) == b""
        # A request on an idle keep-alive connection during the drain is answered, then it closes.
        idle.sendall(b"GET / HTTP/1.1\r\nHost: t\r\n\r\n")
        head, body = read_response(idle)
        assert statuses(head) == [200] and b"Connection: close" in head
        assert idle.recv(4096) == b""
        busy.sendall(b"world")
        assert statuses(busy.recv(4096)) == [405]
    assert d.proc.wait(timeout=10) == 0


def test_idle_connection_is_closed_gracefully_on_stop(daemon_factory):
    """An idle keep-alive connection that sends nothing gets a FIN after the idle grace, and a
    request crossing that FIN is read and discarded, not answered with a reset."""
    d = daemon_factory({"workers": 1, "drainTimeout": 10})
    wait_ready(d, 1)
    with connections(d.port, 1) as (idle,):
        assert keepalive_request(idle)[0] == 200
        d.signal(signal.SIGTERM)
        start = time.time()
        assert idle.recv(4096) == b""  # FIN, no response bytes
        assert ACCEPT_GRACE + 0.8 < time.time() - start < ACCEPT_GRACE + 2.5
        idle.sendall(b"GET / HTTP/1.1\r\nHost: t\r\n\r\n")  # crossed the FIN: discarded
        time.sleep(0.2)
        idle.sendall(b"GET / HTTP/1.1\r\nHost: t\r\n\r\n")  # a reset would fail this send
    assert d.proc.wait(timeout=10) == 0


@contextlib.contextmanager
def draining_with_bodies_pending(d, count):
    """`count` connections to a one-worker daemon, each in the middle of a request body, then
    `reload --wait`: yields the old worker's PID, draining with them (its drain timeout runs)."""
    wait_ready(d, 1)
    (old,) = children(d.proc.pid)
    with connections(d.port, count) as socks:
        for s in socks:
            s.sendall(b"POST / HTTP/1.1\r\nHost: t\r\nContent-Length: 10\r\n\r\nhel")
        time.sleep(0.3)
        d.ctl("reload", "--wait", check=True)
        yield old


def test_worker_killed_while_draining_is_counted(daemon_factory):
    d = daemon_factory({"workers": 1, "drainTimeout": 30})
    with draining_with_bodies_pending(d, 3) as old:
        wait_until(lambda: status(d)["draining"] == 1, what="the old worker to drain")
        os.kill(old, signal.SIGKILL)
        wait_until(lambda: status(d)["draining"] == 0, what="the old worker to be reaped")
        assert status(d)["lostWithCrashedWorkers"] == 3
    assert f"worker {old} (slot 0, generation 1, draining) died with 3 open connection(s) (killed by SIGKILL); they are lost" in d.log_text()


def test_stuck_worker_killed_at_the_drain_deadline_is_counted(daemon_factory):
    d = daemon_factory({"workers": 1, "drainTimeout": 1})
    with draining_with_bodies_pending(d, 2) as old:
        os.kill(old, signal.SIGSTOP)  # ignores the fast stop: killed 3 s after the deadline
        try:
            wait_until(lambda: status(d)["draining"] == 0, timeout=10, what="the stuck worker to be killed")
        finally:
            try:
                os.kill(old, signal.SIGCONT)
            except ProcessLookupError:
                pass
        assert status(d)["closedOnDrainTimeout"] == 2
        assert "at its drain deadline: 2 open connection(s) closed" in d.log_text()


def test_handover_beyond_max_connections_is_closed_gracefully(daemon_factory):
    d = daemon_factory({"workers": 2, "http": {"maxConnections": 25}})
    wait_ready(d, 2)
    with kept_alive(d.port, 30) as socks:
        scale_down_to_one(d)
        wait_until(lambda: status(d)["handoffsClosedAtCap"] == 5, what="5 hand-overs closed at the cap")
        served, closed = 0, 0
        for s in socks:
            s.settimeout(5)
            try:
                assert keepalive_request(s)[0] == 200
                served += 1
            except AssertionError:
                closed += 1  # a clean end of the connection (FIN), never a reset
        assert (served, closed) == (25, 5)
        wait_until(lambda: status(d)["connections"] <= 25, what="the worker back under its cap")


def test_connections_in_a_dead_workers_channel_are_counted(daemon_factory):
    """Connections the master passed to a worker that died before taking them from its channel
    are counted with the ones it had open."""
    d = daemon_factory({"workers": 2})
    wait_ready(d, 2)
    with connections(d.port, 16) as socks:
        for s in socks:
            assert keepalive_request(s)[0] == 200
        by_slot = {w["slot"]: w for w in status(d)["workerList"]}
        assert by_slot[0]["connections"] + by_slot[1]["connections"] == 16
        assert by_slot[1]["connections"] > 0
        target = by_slot[0]["pid"]
        os.kill(target, signal.SIGSTOP)  # alive, but reads nothing
        try:
            d.ctl("scale", "1", check=True)
            # Slot 1 retires and hands its idle connections over, into the stopped worker's channel.
            wait_until(lambda: status(d)["handedOff"] == by_slot[1]["connections"], what="the hand-over")
            os.kill(target, signal.SIGKILL)
        finally:
            try:
                os.kill(target, signal.SIGCONT)
            except ProcessLookupError:
                pass
        wait_ready(d, 1)
        assert status(d)["lostWithCrashedWorkers"] == 16
    log = d.log_text()
    assert f"{by_slot[1]['connections']} handed-over connection(s) still in its channel; they are lost" in log
    assert f"died with {by_slot[0]['connections']} open connection(s) (killed by SIGKILL); they are lost" in log


def test_connections_queued_at_the_stop_are_answered(daemon_factory):
    """Connections waiting in a listener's queue when the stop begins (here: the worker is at
    http.maxConnections and leaves them there) are taken by the master when it closes the
    listeners, and answered."""
    d = daemon_factory({"workers": 1, "drainTimeout": 10, "http": {"maxConnections": 4}})
    wait_ready(d, 1)
    with connections(d.port, 4) as held, connections(d.port, 3) as queued:
        for s in held:
            assert keepalive_request(s)[0] == 200
        for s in queued:
            s.sendall(b"GET / HTTP/1.1\r\nHost: t\r\n\r\n")
        time.sleep(0.3)
        assert status(d)["connections"] == 4, "the other three wait in the queue"
        d.signal(signal.SIGTERM)
        for s in queued:
            s.settimeout(5)
            head, body = read_response(s)
            assert statuses(head) == [200] and body == b"Hello world!" and b"Connection: close" in head
            assert s.recv(4096) == b""
    assert d.proc.wait(timeout=10) == 0
    assert "3 queued connection(s) passed to workers" in d.log_text()


def test_stop_with_defer_accept_keeps_silent_connections(daemon_factory):
    """With deferAccept, a client that connected but has not sent yet is in no accept queue until
    the kernel's SYN-ACK retransmit (~1 s): the stop keeps the listeners open 2.5 s (new SYNs
    already dropped), so such a client is still served, not reset."""
    d = daemon_factory({"workers": 2, "deferAccept": True, "drainTimeout": 10})
    wait_ready(d, 2)
    with connections(d.port, 10) as socks:
        time.sleep(0.1)
        d.signal(signal.SIGTERM)
        time.sleep(1.5)
        for s in socks:
            s.sendall(b"GET / HTTP/1.1\r\nHost: t\r\n\r\n")
        for s in socks:
            s.settimeout(5)
            head, body = read_response(s)
            assert statuses(head) == [200] and body == b"Hello world!"
    assert d.proc.wait(timeout=10) == 0


def test_idle_connection_handed_to_a_draining_worker_gets_the_idle_grace(daemon_factory):
    """A connection queued at the worker's cap when the process group gets TERM, which the worker
    takes once room frees (it keeps serving until its master says drain) and on which nothing
    arrives, is closed gracefully after the idle grace like the worker's own idle connections, not
    kept until keepAliveTimeout, holding the stop until drainTimeout."""
    d = daemon_factory({"workers": 1, "drainTimeout": 10, "http": {"maxConnections": 2}})
    wait_ready(d, 1)
    with connections(d.port, 2) as (a1, a2), connections(d.port, 1) as (queued,):
        assert keepalive_request(a1)[0] == 200
        assert keepalive_request(a2)[0] == 200
        time.sleep(0.3)
        assert status(d)["connections"] == 2, "at its cap, the worker leaves the third one queued"
        os.killpg(d.proc.pid, signal.SIGTERM)
        a1.close()  # room under the cap: the queued connection is taken, not closed at the cap
        start = time.time()
        queued.settimeout(6)
        assert queued.recv(4096) == b""  # FIN after the idle grace, no response bytes
        assert time.time() - start < ACCEPT_GRACE + MASTER_TICK + 3
    assert d.proc.wait(timeout=10) == 0
    assert "still open; they are closed" not in d.log_text()


def test_term_to_the_process_group_answers_what_is_queued(daemon_factory):
    """TERM sent to the whole process group (`kill -TERM -PGID`, a shell or supervisor that signals
    the group): the worker got TERM too. It does not drain on its own and exit once its last
    connection closed, before the master's accept grace ends (the master, with no worker left,
    would then exit and the connection queued on the listener be reset); it keeps serving until
    its master says drain, so the queued connection is answered."""
    d = daemon_factory({"workers": 1, "drainTimeout": 10, "http": {"maxConnections": 2}})
    wait_ready(d, 1)
    with connections(d.port, 2) as (a1, a2), connections(d.port, 1) as (queued,):
        assert keepalive_request(a1)[0] == 200
        assert keepalive_request(a2)[0] == 200
        queued.sendall(b"GET / HTTP/1.1\r\nHost: t\r\nConnection: close\r\n\r\n")
        time.sleep(0.3)
        assert status(d)["connections"] == 2, "at its cap, the worker leaves the third one queued"
        os.killpg(d.proc.pid, signal.SIGTERM)
        time.sleep(0.05)
        a1.close()  # the idle keep-alive clients go away: the worker has no connection left
        a2.close()
        queued.settimeout(5)
        try:
            head, body = read_response(queued)
        except (ConnectionResetError, EOFError) as e:
            raise AssertionError(f"the queued connection was not answered: {e!r}") from None
        assert statuses(head) == [200] and body == b"Hello world!"
    assert d.proc.wait(timeout=10) == 0
    assert "the master (pid" in d.log_text()


def test_shutdown_delay_serves_with_healthz_draining_then_refuses(daemon_factory):
    """Issue 15 item 2: with `shutdownDelay`, TERM first turns /healthz to 503 and every response to
    `Connection: close` while new connections are still accepted and served; only after the delay
    does the stop refuse new connections (then drains as without it)."""
    d = daemon_factory({"workers": 2, "drainTimeout": 5, "shutdownDelay": 1.5})
    wait_ready(d, 2)

    def exchange(path):
        with socket.create_connection(("127.0.0.1", d.port), timeout=5) as s:
            s.sendall(f"GET {path} HTTP/1.1\r\nHost: t\r\n\r\n".encode())
            return Responses(s).next()

    head, body = exchange("/healthz")
    assert head.startswith(b"HTTP/1.1 200") and body == b"ok\n" and b"Connection: close" not in head
    wait_until(lambda: exchange("/readyz")[1] == b"ready\n", what="/readyz ready")
    stop_at = time.time()
    d.signal(signal.SIGTERM)
    # Both workers have heard `stopping` after a master tick.
    time.sleep(MASTER_TICK * 3)
    answers = [exchange("/healthz") for _ in range(3)] + [exchange("/readyz") for _ in range(3)]
    assert all(h.startswith(b"HTTP/1.1 503") and b == b"draining\n" and b"Connection: close" in h for h, b in answers), answers
    served = 0
    while time.time() < stop_at + 1.2:
        head, body = exchange("/")
        assert head.startswith(b"HTTP/1.1 200") and b"Connection: close" in head
        served += 1
    assert served > 10 and d.proc.poll() is None
    # After the delay and the accept grace, connection attempts are refused.
    wait_until(lambda: _refused(d.port), timeout=1.5 + ACCEPT_GRACE + 2, what="connections refused after shutdownDelay")
    assert time.time() - stop_at >= 1.5
    assert d.proc.wait(timeout=10) == 0


def _refused(port):
    try:
        socket.create_connection(("127.0.0.1", port), timeout=0.3).close()
        return False
    except OSError:
        return True


def exec_done(pid):
    """Whether a child of the master has exec'd its worker image (its environment is the worker's)."""
    try:
        with open(f"/proc/{pid}/environ", "rb") as f:
            return b"CLUSTERD_WORKER_SLOT=" in f.read()
    except OSError:
        return False


def test_readyz_is_not_ready_while_a_reload_has_no_ready_worker(daemon_factory):
    """`/readyz` (Kubernetes' readinessProbe) answers 503 `not ready` while a reload's new generation
    has no ready worker yet, though the old generation goes on serving. The new worker is held back
    with SIGSTOP as soon as it appears; if it said ready first (a race with its start), the reload
    has completed and the test tries again."""
    d = daemon_factory({"workers": 1})
    wait_ready(d, 1)

    def readyz():
        with socket.create_connection(("127.0.0.1", d.port), timeout=5) as s:
            s.sendall(b"GET /readyz HTTP/1.1\r\nHost: t\r\n\r\n")
            head, body = Responses(s).next()
            return int(head.split()[1]), body

    wait_until(lambda: readyz() == (200, b"ready\n"), what="/readyz ready")
    for attempt in range(5):
        generation = status(d)["generation"]
        old = set(children(d.proc.pid))
        d.ctl("reload")
        stopped = []
        try:
            deadline = time.time() + 5
            while not stopped and time.time() < deadline:
                for pid in set(children(d.proc.pid)) - old:
                    # Only once it runs its own image: a child stopped between the master's
                    # vfork-style spawn and its exec would hold the master (and `status`) too.
                    if not exec_done(pid):
                        continue
                    os.kill(pid, signal.SIGSTOP)
                    stopped.append(pid)
            assert stopped, "no new worker appeared"
            time.sleep(0.3)
            if status(d)["generation"] != generation:
                continue  # it said ready before it was stopped
            assert readyz() == (503, b"not ready\n")
            with socket.create_connection(("127.0.0.1", d.port), timeout=5) as s:
                s.sendall(b"GET / HTTP/1.1\r\nHost: t\r\n\r\n")
                assert Responses(s).next()[0].startswith(b"HTTP/1.1 200"), "the old generation still serves"
            break
        finally:
            for pid in stopped:
                os.kill(pid, signal.SIGCONT)
            wait_until(lambda: readyz() == (200, b"ready\n"), what="/readyz ready once the new generation is")
    else:
        raise AssertionError("never caught a new worker before it said ready")
