"""The HTTP engine over real sockets, against the real binary."""
import os
import socket
import subprocess
import time

import pytest

from conftest import raw_exchange, read_to_eof, status, statuses, wait_ready, wait_until


def test_curl_get_ipv4_and_ipv6(daemon):
    for url in (f"http://127.0.0.1:{daemon.port}/", f"http://[::1]:{daemon.port}/"):
        r = subprocess.run(["curl", "-sS", "-i", url], capture_output=True, text=True, timeout=10)
        assert r.returncode == 0, r.stderr
        assert r.stdout.startswith("HTTP/1.1 200 OK")
        assert r.stdout.endswith("Hello world!")
        assert "Date: " in r.stdout


def test_healthz_and_404(daemon):
    r = subprocess.run(["curl", "-sS", "-o", "/dev/null", "-w", "%{http_code}", f"http://127.0.0.1:{daemon.port}/healthz"],
                       capture_output=True, text=True, timeout=10)
    assert r.stdout == "200"
    r = subprocess.run(["curl", "-sS", "-o", "/dev/null", "-w", "%{http_code}", f"http://127.0.0.1:{daemon.port}/missing"],
                       capture_output=True, text=True, timeout=10)
    assert r.stdout == "404"


def test_keepalive_reuses_connection(daemon):
    r = subprocess.run(["curl", "-sS", "-v", f"http://127.0.0.1:{daemon.port}/", f"http://127.0.0.1:{daemon.port}/healthz"],
                       capture_output=True, text=True, timeout=10)
    assert "Re-using existing connection" in r.stderr or "Reusing existing connection" in r.stderr


def test_pipelining_answers_all_in_order_in_one_write(daemon):
    reqs = b"".join(b"GET /%s HTTP/1.1\r\nHost: x\r\n\r\n" % p for p in (b"", b"healthz", b"nope", b""))
    reqs += b"GET / HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n"
    with socket.create_connection(("127.0.0.1", daemon.port), timeout=5) as s:
        s.sendall(reqs)
        time.sleep(0.2)
        first = s.recv(65536)  # one write for the batch: all five arrive together
        rest = read_to_eof(s)
    assert statuses(first + rest) == [200, 200, 404, 200, 200]
    assert statuses(first) == [200, 200, 404, 200, 200]


def test_head_has_length_but_no_body(daemon):
    raw = raw_exchange(daemon.port, b"HEAD / HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
    assert raw.startswith(b"HTTP/1.1 200 OK\r\n")
    assert b"Content-Length: 12\r\n" in raw
    assert raw.endswith(b"\r\n\r\n")


def test_chunked_body_then_next_request(daemon):
    raw = raw_exchange(daemon.port,
                       b"POST /nope HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\n"
                       b"5\r\nhello\r\n0\r\n\r\n"
                       b"GET / HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
    assert statuses(raw) == [404, 200]


def test_expect_100_continue(daemon):
    with socket.create_connection(("127.0.0.1", daemon.port), timeout=5) as s:
        s.sendall(b"POST /x HTTP/1.1\r\nHost: x\r\nContent-Length: 5\r\nExpect: 100-continue\r\n\r\n")
        interim = s.recv(4096)
        assert interim == b"HTTP/1.1 100 Continue\r\n\r\n"
        s.sendall(b"hello")
        final = s.recv(4096)
        assert final.startswith(b"HTTP/1.1 404")
    r = subprocess.run(["curl", "-sS", "-o", "/dev/null", "-w", "%{http_code}", "-H", "Expect: 100-continue",
                        "--data-binary", "x" * 2000, f"http://127.0.0.1:{daemon.port}/healthz"],
                       capture_output=True, text=True, timeout=10)
    assert r.stdout == "405"


def test_oversized_header_431(daemon):
    raw = raw_exchange(daemon.port, b"GET / HTTP/1.1\r\nHost: x\r\nX-Big: " + b"a" * 20000 + b"\r\n\r\n")
    assert statuses(raw) == [431]
    assert b"Connection: close" in raw


def test_smuggling_shape_rejected(daemon):
    raw = raw_exchange(daemon.port, b"POST / HTTP/1.1\r\nHost: x\r\nContent-Length: 4\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n\r\n")
    assert statuses(raw) == [400]


def test_connection_close_closes(daemon):
    raw = raw_exchange(daemon.port, b"GET / HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n", read_timeout=5)
    assert raw.endswith(b"Hello world!")  # and recv saw EOF before the timeout


def test_http10(daemon):
    raw = raw_exchange(daemon.port, b"GET / HTTP/1.0\r\n\r\n", read_timeout=5)
    assert raw.startswith(b"HTTP/1.1 200 OK")
    assert b"Connection: close" in raw


def test_slow_header_times_out_with_408(daemon_factory):
    d = daemon_factory({"http": {"headerTimeout": 1}})
    with socket.create_connection(("127.0.0.1", d.port), timeout=5) as s:
        s.sendall(b"GET / HTTP/1.1\r\nHo")
        start = time.time()
        data = read_to_eof(s)
        elapsed = time.time() - start
    assert statuses(data) == [408]
    assert 0.5 < elapsed < 4


def test_idle_keepalive_timeout_closes(daemon_factory):
    d = daemon_factory({"http": {"keepAliveTimeout": 1}})
    with socket.create_connection(("127.0.0.1", d.port), timeout=5) as s:
        s.sendall(b"GET / HTTP/1.1\r\nHost: x\r\n\r\n")
        first = s.recv(4096)
        assert first.startswith(b"HTTP/1.1 200")
        start = time.time()
        assert s.recv(4096) == b""
        assert time.time() - start < 4


def test_body_too_large_413(daemon_factory):
    d = daemon_factory({"http": {"maxBodyBytes": 10}})
    raw = raw_exchange(d.port, b"POST / HTTP/1.1\r\nHost: x\r\nContent-Length: 11\r\n\r\nhello world")
    assert statuses(raw) == [413]


def test_many_connections_then_more(daemon):
    socks = []
    try:
        for _ in range(200):
            s = socket.create_connection(("127.0.0.1", daemon.port), timeout=5)
            socks.append(s)
        for s in socks:
            s.sendall(b"GET / HTTP/1.1\r\nHost: x\r\n\r\n")
        for s in socks:
            assert s.recv(4096).startswith(b"HTTP/1.1 200")
    finally:
        for s in socks:
            s.close()


def test_date_header_is_current_imf_fixdate(daemon):
    import email.utils
    raw = raw_exchange(daemon.port, b"GET / HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
    date = [l for l in raw.split(b"\r\n") if l.startswith(b"Date: ")][0][6:].decode()
    assert len(date) == 29 and date.endswith(" GMT")
    assert abs(email.utils.parsedate_to_datetime(date).timestamp() - time.time()) < 3


def test_slow_body_times_out_with_408(daemon_factory):
    d = daemon_factory({"http": {"bodyTimeout": 1, "headerTimeout": 30}})
    with socket.create_connection(("127.0.0.1", d.port), timeout=5) as s:
        s.sendall(b"POST / HTTP/1.1\r\nHost: x\r\nContent-Length: 100\r\n\r\nsome")
        start = time.time()
        data = read_to_eof(s)
    assert statuses(data) == [408] and b"request body timeout" in data
    assert 0.5 < time.time() - start < 4


@pytest.mark.parametrize("defer", [False, True])
def test_defer_accept(daemon_factory, defer):
    """With deferAccept a connection that has sent nothing is not accepted yet (TCP_DEFER_ACCEPT);
    either way the request it then sends is served."""
    d = daemon_factory({"deferAccept": defer})
    wait_ready(d, 1)
    time.sleep(0.6)
    before = status(d)["accepted"]
    with socket.create_connection(("127.0.0.1", d.port), timeout=5) as s:
        time.sleep(0.6)
        assert status(d)["accepted"] - before == (0 if defer else 1)
        s.sendall(b"GET / HTTP/1.1\r\nHost: t\r\nConnection: close\r\n\r\n")
        data = read_to_eof(s)
    assert data.startswith(b"HTTP/1.1 200 ") and data.endswith(b"Hello world!")
    assert wait_until(lambda: status(d)["accepted"] - before == 1, timeout=3, what="one accepted connection")


def test_last_response_is_not_held_back(daemon):
    """A response after which the connection closes is sent with MSG_MORE so the FIN rides along;
    it must still arrive at once (a response left corked would wait 200 ms), on every close path:
    Connection: close, HTTP/1.0, an error that closes, and a refusal with unread input (lingering)."""
    cases = [b"GET / HTTP/1.1\r\nHost: t\r\nConnection: close\r\n\r\n",
             b"GET /nope HTTP/1.1\r\nHost: t\r\nConnection: close\r\n\r\n",
             b"GET / HTTP/1.0\r\n\r\n",
             b"GET / HTTP/1.1\r\n\r\n",  # no Host: 400, then close
             b"GET / HTTP/1.1\r\nHost: t\r\nConnection: close\r\n\r\nGET / HTTP/1.1\r\nHost: t\r\n\r\n"]
    for raw in cases:
        start = time.monotonic()
        for _ in range(10):
            with socket.create_connection(("127.0.0.1", daemon.port), timeout=5) as s:
                s.sendall(raw)
                data = read_to_eof(s)
                assert statuses(data), (raw, data)
        # Ten exchanges; one corked response alone would take 200 ms.
        assert time.monotonic() - start < 1.0, raw


def capture_loopback(port, exchange):
    """Runs `exchange()` while capturing the TCP segments to and from `port` on lo (AF_PACKET,
    needs CAP_NET_RAW). Returns [(direction, flags, payload length)], direction "srv" or "cli"."""
    import struct
    import threading
    raw = socket.socket(socket.AF_PACKET, socket.SOCK_RAW, socket.ntohs(0x0800))
    raw.bind(("lo", 0))
    raw.settimeout(0.05)
    seen, done = [], threading.Event()

    def sniff():
        while not done.is_set():
            try:
                frame, address = raw.recvfrom(65535)
            except socket.timeout:
                continue
            if address[2] == socket.PACKET_OUTGOING:
                continue  # lo shows each segment twice: going out and coming in
            ip = frame[14:]
            if ip[9] != socket.IPPROTO_TCP:
                continue
            tcp = ip[(ip[0] & 15) * 4:]
            source, destination = struct.unpack("!HH", tcp[:4])
            if port not in (source, destination):
                continue
            total = struct.unpack("!H", ip[2:4])[0]
            payload = total - (ip[0] & 15) * 4 - (tcp[12] >> 4) * 4
            flags = "".join(n for bit, n in ((2, "S"), (16, "A"), (8, "P"), (1, "F"), (4, "R")) if tcp[13] & bit)
            seen.append(("srv" if source == port else "cli", flags, payload))

    thread = threading.Thread(target=sniff)
    thread.start()
    try:
        time.sleep(0.1)
        exchange()
        time.sleep(0.3)
    finally:
        done.set()
        thread.join()
        raw.close()
    return seen


@pytest.mark.skipif(os.geteuid() != 0, reason="capturing on lo needs CAP_NET_RAW")
def test_request_ack_rides_on_the_answer(daemon):
    """A new connection's request is not acknowledged by a bare ACK of its own: the worker turns
    quick-ACK off at accept, so the ACK goes with the answer (7 segments for a Connection: close
    exchange instead of 8), as HAProxy's tcp-smart-accept does."""
    def exchange():
        with socket.create_connection(("127.0.0.1", daemon.port), timeout=5) as s:
            time.sleep(0.05)  # accepted (and found empty) before the request comes
            s.sendall(b"GET / HTTP/1.1\r\nHost: t\r\nConnection: close\r\n\r\n")
            assert read_to_eof(s).endswith(b"Hello world!")

    segments = capture_loopback(daemon.port, exchange)
    request = next(i for i, (side, _, size) in enumerate(segments) if side == "cli" and size > 0)
    answer = next(i for i, (side, _, size) in enumerate(segments) if side == "srv" and size > 0)
    assert segments[request + 1:answer] == [], segments
    assert "F" in segments[answer][1], segments  # and the FIN rides along too (MSG_MORE)


def test_request_in_pieces_is_acknowledged_at_once(daemon):
    """With quick-ACK off, a request that arrives in pieces must still be acknowledged at once: a
    client with Nagle's algorithm on sends its second piece only after the first is acknowledged,
    and a delayed ACK would hold each such request 40 ms or more."""
    took = 0.0
    for _ in range(20):
        with socket.create_connection(("127.0.0.1", daemon.port), timeout=5) as s:
            s.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 0)
            time.sleep(0.02)  # accepted (and found empty) before the request comes
            start = time.monotonic()
            s.sendall(b"POST / HTTP/1.1\r\nHost: t\r\nContent-Length: 5\r\n")
            s.sendall(b"Connection: close\r\n\r\n")  # held by Nagle until the first is acknowledged
            s.sendall(b"hello")
            assert statuses(read_to_eof(s))
            took += time.monotonic() - start
    # Twenty requests: a held ACK (40 ms each here) alone would take 0.8 s.
    assert took < 0.4


CHUNKED_POST = b"POST / HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\n"


@pytest.mark.parametrize("chunks,code", [
    (b"5;\r\nhello\r\n0\r\n\r\n", 400),                      # `;` without a name
    (b"5 \r\nhello\r\n0\r\n\r\n", 400),                      # whitespace, no extension
    (b"5;a=b c\r\nhello\r\n0\r\n\r\n", 400),                 # a second word after a value
    (b'3;a="x\\"y"\r\nabc\r\n0\r\n\r\n', 405),               # quoted-string with a quoted-pair: read
    (b"0000000000000000000003\r\nabc\r\n0\r\n\r\n", 405),    # leading zeros are not size digits
])
def test_chunk_line_grammar_on_the_wire(daemon, chunks, code):
    # RFC 9112 §7.1.1 (issue 12). 405: the body was read in full and the request reached the
    # route (which answers GET only); 400: the engine refused the chunk line.
    raw = raw_exchange(daemon.port, CHUNKED_POST + chunks)
    assert statuses(raw) == [code], raw[:200]
    if code == 400:
        assert b"malformed chunked body" in raw and b"Connection: close\r\n" in raw


def test_absolute_form_with_empty_path_is_root(daemon):
    # Issue 12: served as `/`, not redirected or 404.
    raw = raw_exchange(daemon.port, b"GET http://example.com HTTP/1.1\r\nHost: example.com\r\nConnection: close\r\n\r\n")
    assert statuses(raw) == [200]
    assert raw.endswith(b"Hello world!")


def test_options_asterisk_is_answered_by_the_server(daemon_factory, tmpdir_short):
    # Issue 12: whatever the routes and static roots would say, `OPTIONS *` gets 200 with Allow.
    root = os.path.join(tmpdir_short, "www")
    os.makedirs(root)
    d = daemon_factory({"static": [{"prefix": "/", "root": root}]})
    wait_ready(d, 1)
    raw = raw_exchange(d.port, b"OPTIONS * HTTP/1.1\r\nHost: x\r\n\r\nOPTIONS / HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
    first, _, rest = raw.partition(b"\r\n\r\n")
    assert first.startswith(b"HTTP/1.1 200 OK\r\n")
    assert b"\r\nAllow: GET, HEAD, OPTIONS\r\n" in first and b"\r\nContent-Length: 0\r\n" in first
    assert statuses(rest) == [405]  # OPTIONS on a resource is the application's answer


def test_empty_host_is_refused_in_http11(daemon):
    raw = raw_exchange(daemon.port, b"GET / HTTP/1.1\r\nHost:\r\n\r\n")
    assert statuses(raw) == [400] and b"empty Host header" in raw
    raw = raw_exchange(daemon.port, b"GET / HTTP/1.0\r\nHost:\r\n\r\n")
    assert raw.startswith(b"HTTP/1.1 200 OK\r\n")


def test_if_range_date_must_match_exactly(daemon_factory, tmpdir_short):
    # Issue 12: a date later than Last-Modified used to count as a match; the obsolete date forms
    # were ignored. The file's time is an hour in the past, so its date is a strong validator.
    root = os.path.join(tmpdir_short, "www")
    os.makedirs(root)
    path = os.path.join(root, "f.txt")
    with open(path, "w") as f:
        f.write("0123456789")
    mtime = int(time.time()) - 3600
    os.utime(path, (mtime, mtime))
    d = daemon_factory({"static": [{"prefix": "/s/", "root": root}]})
    wait_ready(d, 1)
    imf = time.strftime("%a, %d %b %Y %H:%M:%S GMT", time.gmtime(mtime))
    rfc850 = time.strftime("%A, %d-%b-%y %H:%M:%S GMT", time.gmtime(mtime))
    asctime = time.strftime("%a %b ", time.gmtime(mtime)) + f"{time.gmtime(mtime).tm_mday:2d}" + time.strftime(" %H:%M:%S %Y", time.gmtime(mtime))
    later = time.strftime("%a, %d %b %Y %H:%M:%S GMT", time.gmtime(mtime + 60))

    def ranged(if_range):
        raw = raw_exchange(d.port, b"GET /s/f.txt HTTP/1.1\r\nHost: x\r\nConnection: close\r\nRange: bytes=2-4\r\nIf-Range: "
                           + if_range.encode() + b"\r\n\r\n")
        return statuses(raw)[0], raw.partition(b"\r\n\r\n")[2]

    assert ranged(imf) == (206, b"234")
    assert ranged(rfc850) == (206, b"234")
    assert ranged(asctime) == (206, b"234")
    assert ranged(later) == (200, b"0123456789")
    # The obsolete forms in the other conditional headers too.
    def conditional(field, date):
        raw = raw_exchange(d.port, b"GET /s/f.txt HTTP/1.1\r\nHost: x\r\nConnection: close\r\n" + field + b": "
                           + date.encode() + b"\r\n\r\n")
        return statuses(raw)[0]

    earlier = time.strftime("%A, %d-%b-%y %H:%M:%S GMT", time.gmtime(mtime - 60))
    for date in (rfc850, asctime):
        assert conditional(b"If-Modified-Since", date) == 304, date
        assert conditional(b"If-Unmodified-Since", date) == 200, date
    assert conditional(b"If-Modified-Since", earlier) == 200
    assert conditional(b"If-Unmodified-Since", earlier) == 412
