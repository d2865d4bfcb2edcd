"""The client's real address behind a balancer: PROXY protocol v1/v2 on a `proxyProtocol` listener,
from `trustedProxies` only, kept for the whole keep-alive connection and across a reload's hand-off;
`X-Forwarded-For` believed from trusted peers only. What the access log and `metrics.allow` see."""
import json
import os
import socket
import struct

from conftest import free_port, get_hello, status, wait_ready, wait_until


def v1(client, port=5555):
    family = "TCP6" if ":" in client else "TCP4"
    dest = "::1" if ":" in client else "127.0.0.1"
    return f"PROXY {family} {client} {dest} {port} 80\r\n".encode()


def v2(client, port=5555):
    sig = b"\r\n\r\n\x00\r\nQUIT\n"
    if ":" in client:
        addr = socket.inet_pton(socket.AF_INET6, client) + socket.inet_pton(socket.AF_INET6, "::1")
        return sig + bytes([0x21, 0x21]) + struct.pack("!H", 36) + addr + struct.pack("!HH", port, 80)
    addr = socket.inet_aton(client) + socket.inet_aton("127.0.0.1")
    return sig + bytes([0x21, 0x11]) + struct.pack("!H", 12) + addr + struct.pack("!HH", port, 80)


def proxied_daemon(daemon_factory, tmpdir_short, trusted=("127.0.0.1",), **overrides):
    log = os.path.join(tmpdir_short, "access.log")
    pport = free_port()
    config = {"accessLog": {"path": log, "format": "json"}, "trustedProxies": list(trusted)}
    config.update(overrides)
    d = daemon_factory(config, start=False)
    d.config["listen"] = d.config["listen"] + [{"address": f"127.0.0.1:{pport}", "proxyProtocol": True}]
    d.start()
    return d, pport, log


def log_lines(log):
    try:
        with open(log) as f:
            return [json.loads(line) for line in f if line.strip()]
    except FileNotFoundError:
        return []


def clients_logged(log, count):
    wait_until(lambda: len(log_lines(log)) >= count, what=f"{count} access log lines")
    return [line["remote"] for line in log_lines(log)]


def closed_unanswered(s):
    s.settimeout(5)
    try:
        return s.recv(100) == b""
    except ConnectionResetError:
        return True


def test_proxy_header_names_the_client_for_the_whole_connection(daemon_factory, tmpdir_short):
    d, pport, log = proxied_daemon(daemon_factory, tmpdir_short,
                                   metrics={"allow": ["203.0.113.0/24"]})
    with socket.create_connection(("127.0.0.1", pport)) as s:
        s.sendall(v1("203.0.113.7"))
        for _ in range(3):
            get_hello(s)
        s.sendall(b"GET /metrics HTTP/1.1\r\nHost: t\r\n\r\n")
        assert s.recv(65536).startswith(b"HTTP/1.1 200")
    with socket.create_connection(("127.0.0.1", pport)) as s:
        s.sendall(v2("2001:db8::42") + b"GET / HTTP/1.1\r\nHost: t\r\n\r\n")
        assert s.recv(65536).startswith(b"HTTP/1.1 200")
        # metrics.allow is matched against the client the header named, not the balancer.
        s.sendall(b"GET /metrics HTTP/1.1\r\nHost: t\r\n\r\n")
        assert s.recv(65536).startswith(b"HTTP/1.1 403")
    clients = clients_logged(log, 6)
    assert clients == ["203.0.113.7"] * 4 + ["2001:db8::42"] * 2, clients


def test_untrusted_peer_and_missing_header_are_closed_and_counted(daemon_factory, tmpdir_short):
    d, pport, log = proxied_daemon(daemon_factory, tmpdir_short, trusted=("10.0.0.0/8",))
    with socket.create_connection(("127.0.0.1", pport)) as s:
        s.sendall(v1("203.0.113.7") + b"GET / HTTP/1.1\r\nHost: t\r\n\r\n")
        assert closed_unanswered(s)
    wait_until(lambda: status(d)["proxyUntrusted"] == 1, what="proxyUntrusted counted")
    assert status(d)["requests"] == 0


def test_missing_or_malformed_header_is_closed_and_counted(daemon_factory, tmpdir_short):
    d2, pport2, log2 = proxied_daemon(daemon_factory, tmpdir_short, trusted=("127.0.0.1",))
    before = status(d2)["proxyInvalid"]
    with socket.create_connection(("127.0.0.1", pport2)) as s:
        s.sendall(b"GET / HTTP/1.1\r\nHost: t\r\n\r\n")
        assert closed_unanswered(s)
    with socket.create_connection(("127.0.0.1", pport2)) as s:
        s.sendall(b"PROXY TCP4 1.2.3.4 5.6.7.8 1 2\n")  # a bare LF: not a v1 header
        assert closed_unanswered(s)
    wait_until(lambda: status(d2)["proxyInvalid"] == before + 2, what="proxyInvalid counted")
    assert status(d2)["requests"] == 0
    assert log_lines(log2) == []
    text = get_metrics(d2.port)
    assert 'clusterd_proxy_protocol_refused_total{reason="invalid"}' in text


def get_metrics(port):
    with socket.create_connection(("127.0.0.1", port)) as s:
        s.sendall(b"GET /metrics HTTP/1.1\r\nHost: t\r\nConnection: close\r\n\r\n")
        data = b""
        while chunk := s.recv(65536):
            data += chunk
    return data.decode()


def test_the_client_survives_a_reload_hand_off(daemon_factory, tmpdir_short):
    d, pport, log = proxied_daemon(daemon_factory, tmpdir_short, workers=2)
    wait_ready(d, workers=2)
    with socket.create_connection(("127.0.0.1", pport)) as s:
        s.sendall(v2("198.51.100.23"))
        get_hello(s)
        generation = status(d)["generation"]
        d.ctl("reload", check=True)
        wait_ready(d, workers=2, generation=generation + 1)
        wait_until(lambda: status(d)["handedOff"] >= 1, what="the idle connection handed to the new generation")
        get_hello(s)
    assert clients_logged(log, 2) == ["198.51.100.23"] * 2


def test_x_forwarded_for_only_from_trusted_peers(daemon_factory, tmpdir_short):
    log = os.path.join(tmpdir_short, "access.log")
    d = daemon_factory({"accessLog": {"path": log, "format": "json"}, "trustedProxies": ["127.0.0.1", "10.0.0.0/8"]})
    request = b"GET / HTTP/1.1\r\nHost: t\r\nX-Forwarded-For: 192.0.2.1, 198.51.100.9, 10.1.1.1\r\n\r\n"
    with socket.create_connection(("127.0.0.1", d.port)) as s:
        s.sendall(request)
        assert s.recv(65536).startswith(b"HTTP/1.1 200")
        s.sendall(b"GET / HTTP/1.1\r\nHost: t\r\nForwarded: for=\"[2001:db8::5]:80\"\r\n\r\n")
        assert s.recv(65536).startswith(b"HTTP/1.1 200")
    # From ::1, which is not trusted here, the header is ignored.
    with socket.create_connection(("::1", d.port)) as s:
        s.sendall(request)
        assert s.recv(65536).startswith(b"HTTP/1.1 200")
    assert clients_logged(log, 3) == ["198.51.100.9", "2001:db8::5", "::1"]


def test_a_unix_socket_listener_takes_proxy_headers_without_trusted_proxies(daemon_factory, tmpdir_short):
    """Issue 15: nginx on the same host (`proxy_protocol on;` to `unix:`): a Unix socket's peer has no
    address to trust, and who may connect is the file's mode and group, so its header is believed
    with no trustedProxies at all."""
    log = os.path.join(tmpdir_short, "access.log")
    path = os.path.join(tmpdir_short, "http.sock")
    d = daemon_factory({"accessLog": {"path": log, "format": "json"}}, start=False)
    d.config["listen"] = d.config["listen"] + [{"address": f"unix:{path}", "proxyProtocol": True, "mode": "0600"}]
    d.start()
    with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as s:
        s.connect(path)
        s.sendall(v1("203.0.113.9"))
        get_hello(s)
    with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as s:
        s.connect(path)
        s.sendall(b"GET / HTTP/1.1\r\nHost: t\r\n\r\n")  # no header: closed unanswered
        assert closed_unanswered(s)
    assert clients_logged(log, 1) == ["203.0.113.9"]
    wait_until(lambda: status(d)["proxyInvalid"] == 1, what="the headerless connection counted")
