"""HTTPS in the workers (issue 18): handshakes, keep-alive, SNI, ALPN, versions, resumption across
workers, certificate renewal by reload with no failed request, broken certificates refused, and the
header timeout over a slow handshake. Certificates are made with the openssl CLI (ECDSA P-256)."""
import json
import os
import re
import shutil
import signal
import socket
import ssl
import subprocess
import threading
import time

import pytest

from conftest import BIN, CLUSTERD, free_port, wait_for_port, wait_ready, wait_until


def openssl(*args, cwd=None):
    subprocess.run(["openssl", *args], check=True, capture_output=True, cwd=cwd, timeout=30)


class Certs:
    """A test CA and server certificates it signs, with chosen serials."""

    def __init__(self, directory):
        self.dir = directory
        openssl("req", "-x509", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:P-256", "-nodes",
                "-keyout", self.path("ca.key"), "-out", self.path("ca.pem"), "-subj", "/CN=clusterd test CA", "-days", "30")

    def path(self, name):
        return os.path.join(self.dir, name)

    def issue(self, name, serial, names=("localhost",), days=30, start=None, end=None):
        """`name`.pem (certificate) and `name`.key, for DNS `names` and 127.0.0.1."""
        key, csr, pem = self.path(name + ".key"), self.path(name + ".csr"), self.path(name + ".pem")
        openssl("req", "-new", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:P-256", "-nodes", "-keyout", key,
                "-out", csr, "-subj", f"/CN={names[0]}")
        ext = self.path(name + ".ext")
        with open(ext, "w") as f:
            f.write("subjectAltName=" + ",".join([f"DNS:{n}" for n in names] + ["IP:127.0.0.1"]) + "\n")
        if start is None:
            openssl("x509", "-req", "-in", csr, "-CA", self.path("ca.pem"), "-CAkey", self.path("ca.key"),
                    "-set_serial", str(serial), "-days", str(days), "-extfile", ext, "-out", pem)
        else:
            # Given dates: through `openssl ca` (x509 -req cannot backdate before OpenSSL 3.4).
            cnf = self.path(name + ".cnf")
            with open(cnf, "w") as f:
                f.write(f"[ca]\ndefault_ca=d\n[d]\ndatabase={self.path(name + '.db')}\nnew_certs_dir={self.dir}\n"
                        f"serial={self.path(name + '.srl')}\npolicy=p\ndefault_md=sha256\n[p]\ncommonName=supplied\n")
            open(self.path(name + ".db"), "w").close()
            with open(self.path(name + ".srl"), "w") as f:
                f.write("%04X\n" % serial)
            openssl("ca", "-batch", "-config", cnf, "-cert", self.path("ca.pem"), "-keyfile", self.path("ca.key"),
                    "-in", csr, "-out", pem, "-startdate", start, "-enddate", end, "-notext")
        return pem, key


@pytest.fixture
def certs(tmpdir_short):
    return Certs(tmpdir_short)


def client_context(certs, alpn=True, maximum=None, minimum=None):
    ctx = ssl.create_default_context(cafile=certs.path("ca.pem"))
    if alpn:
        ctx.set_alpn_protocols(["h2", "http/1.1"])
    if maximum:
        ctx.maximum_version = maximum
    if minimum:
        ctx.minimum_version = minimum
    return ctx


def tls_connect(port, ctx, name="localhost", session=None, timeout=5):
    raw = socket.create_connection(("127.0.0.1", port), timeout=timeout)
    return ctx.wrap_socket(raw, server_hostname=name, session=session)


def https_request(s, path="/", close=False):
    """One request on a TLS socket: (status, headers, body)."""
    s.sendall(b"GET %s HTTP/1.1\r\nHost: localhost\r\n%s\r\n" % (path.encode(), b"Connection: close\r\n" if close else b""))
    data = b""
    while b"\r\n\r\n" not in data:
        b = s.recv(65536)
        if not b:
            raise ConnectionError("closed before a response")
        data += b
    head, _, body = data.partition(b"\r\n\r\n")
    length = int(re.search(rb"(?i)\r\ncontent-length: *(\d+)", head).group(1))
    while len(body) < length:
        b = s.recv(65536)
        if not b:
            raise ConnectionError("closed inside a body")
        body += b
    status = int(head.split(b" ")[1])
    return status, head.decode(errors="replace"), body


def serial_of(s):
    return int(s.getpeercert()["serialNumber"], 16)


def tls_daemon(daemon_factory, certs, workers=2, extra_tls=None, more=None, http=None):
    """A daemon with a plain listener (d.port, for /metrics and readiness) and a TLS one (d.tls_port)."""
    pem, key = certs.issue("site", 1001, names=("localhost", "site.test"))
    tls_port = free_port()
    tls = {"certificate": pem, "key": key}
    tls.update(extra_tls or {})
    config = {"workers": workers, "drainTimeout": 5}
    config["listen"] = None  # set below (needs the daemon's own port)
    d = daemon_factory(config, start=False)
    d.config["listen"] = [f"127.0.0.1:{d.port}", {"address": f"127.0.0.1:{tls_port}", "tls": tls}] + (more or [])
    if http:
        d.config["http"] = http
    d.tls_port = tls_port
    d.start()
    wait_ready(d, workers)
    wait_for_port(tls_port)
    return d


def metrics(d):
    with socket.create_connection(("127.0.0.1", d.port), timeout=5) as s:
        s.sendall(b"GET /metrics HTTP/1.1\r\nHost: t\r\nConnection: close\r\n\r\n")
        data = b""
        while chunk := s.recv(65536):
            data += chunk
    return data.decode()


def test_https_get_keepalive_alpn_and_versions(daemon_factory, certs):
    d = tls_daemon(daemon_factory, certs)
    with tls_connect(d.tls_port, client_context(certs)) as s:
        assert s.version() == "TLSv1.3"  # preferred
        assert s.selected_alpn_protocol() == "http/1.1"
        assert serial_of(s) == 1001
        for _ in range(3):  # kept alive
            status, _, body = https_request(s)
            assert (status, body) == (200, b"Hello world!")
    with tls_connect(d.tls_port, client_context(certs, maximum=ssl.TLSVersion.TLSv1_2)) as s:
        assert s.version() == "TLSv1.2"
        assert https_request(s, close=True)[2] == b"Hello world!"
    # TLS 1.1 is never offered.
    with pytest.raises(ssl.SSLError):
        ctx = client_context(certs, maximum=ssl.TLSVersion.TLSv1_1)
        ctx.minimum_version = ssl.TLSVersion.TLSv1
        tls_connect(d.tls_port, ctx)
    # Plain HTTP on the TLS port: a plain 400 that says so (as nginx), counted as a failed
    # handshake; the worker goes on serving.
    with socket.create_connection(("127.0.0.1", d.tls_port), timeout=5) as s:
        s.sendall(b"GET / HTTP/1.1\r\nHost: t\r\n\r\n")
        reply = b""
        while chunk := s.recv(4096):
            reply += chunk
    head, _, body = reply.partition(b"\r\n\r\n")
    assert head.startswith(b"HTTP/1.1 400 ") and b"Connection: close" in head, reply
    assert body == b"This port speaks HTTPS: send the request to https://\n"
    # Anything else that is not TLS: closed.
    with socket.create_connection(("127.0.0.1", d.tls_port), timeout=5) as s:
        s.sendall(b"\x00" * 64)
        try:
            assert not s.recv(100).startswith(b"HTTP/")
        except ConnectionResetError:
            pass
    with tls_connect(d.tls_port, client_context(certs)) as s:
        assert https_request(s)[0] == 200
    m = metrics(d)
    assert re.search(r'clusterd_tls_handshakes_total\{result="failed"\} [1-9]', m), m
    assert 'clusterd_tls_record_layer{layer="openssl"} 2' in m or 'clusterd_tls_record_layer{layer="kernel"} 2' in m


def test_min_version_and_ciphers(daemon_factory, certs):
    d = tls_daemon(daemon_factory, certs, workers=1, extra_tls={"ciphers": "ECDHE-ECDSA-CHACHA20-POLY1305"})
    with tls_connect(d.tls_port, client_context(certs, maximum=ssl.TLSVersion.TLSv1_2)) as s:
        assert s.cipher()[0] == "ECDHE-ECDSA-CHACHA20-POLY1305"
    pem, key = certs.issue("strict", 7, names=("localhost",))
    port = free_port()
    d2 = daemon_factory({"workers": 1}, start=False)
    d2.config["listen"] = [f"127.0.0.1:{d2.port}", {"address": f"127.0.0.1:{port}", "tls": {"certificate": pem, "key": key, "minVersion": "1.3"}}]
    d2.config["controlSocket"] = os.path.join(certs.dir, "c2.sock")
    d2.socket_path = d2.config["controlSocket"]
    d2.config_path = os.path.join(certs.dir, "c2.json")
    d2.log_path = os.path.join(certs.dir, "c2.log")
    d2.start()
    wait_for_port(port)
    with pytest.raises(ssl.SSLError):
        tls_connect(port, client_context(certs, maximum=ssl.TLSVersion.TLSv1_2))
    with tls_connect(port, client_context(certs)) as s:
        assert s.version() == "TLSv1.3"


def test_sni_picks_the_certificate(daemon_factory, certs):
    other_pem, other_key = certs.issue("other", 2002, names=("other.test", "*.wild.test"))
    d = tls_daemon(daemon_factory, certs, workers=1, extra_tls={"certificates": [{"certificate": other_pem, "key": other_key}]})
    ctx = client_context(certs)
    with tls_connect(d.tls_port, ctx, name="other.test") as s:
        assert serial_of(s) == 2002
        assert https_request(s, close=True)[0] == 200
    with tls_connect(d.tls_port, ctx, name="a.wild.test") as s:
        assert serial_of(s) == 2002
    with tls_connect(d.tls_port, ctx, name="site.test") as s:
        assert serial_of(s) == 1001
    # A name no certificate covers gets the default one (which then fails the client's check).
    nocheck = ssl.create_default_context()
    nocheck.check_hostname = False
    nocheck.verify_mode = ssl.CERT_NONE
    with tls_connect(d.tls_port, nocheck, name="unknown.test") as s:
        der = s.getpeercert(binary_form=True)
    out = subprocess.run(["openssl", "x509", "-inform", "DER", "-noout", "-serial"], input=der, capture_output=True, check=True).stdout
    assert int(out.decode().strip().split("=")[1], 16) == 1001


def test_static_file_over_tls(daemon_factory, certs, tmpdir_short):
    root = os.path.join(tmpdir_short, "www")
    os.makedirs(root)
    blob = os.urandom(3 * 1024 * 1024 + 17)
    with open(os.path.join(root, "big.bin"), "wb") as f:
        f.write(blob)
    pem, key = certs.issue("site", 1001, names=("localhost",))
    port = free_port()
    d = daemon_factory({"workers": 1, "static": [{"prefix": "/s/", "root": root}]}, start=False)
    d.config["listen"] = [f"127.0.0.1:{d.port}", {"address": f"127.0.0.1:{port}", "tls": {"certificate": pem, "key": key}}]
    d.start()
    wait_for_port(port)
    with tls_connect(port, client_context(certs), timeout=20) as s:
        for _ in range(2):  # the second after the first's file body: the connection goes on
            status, _, body = https_request(s, "/s/big.bin")
            assert status == 200 and body == blob
        # A slow reader: the body waits for the socket (want-write) and then completes.
        s.sendall(b"GET /s/big.bin HTTP/1.1\r\nHost: localhost\r\n\r\n")
        time.sleep(1.0)
        data = b""
        while b"\r\n\r\n" not in data:
            data += s.recv(65536)
        head, _, body = data.partition(b"\r\n\r\n")
        while len(body) < len(blob):
            body += s.recv(65536)
        assert body == blob
    log = d.log_text()
    assert "TLS: OpenSSL records (kernel TLS unavailable" in log or "TLS: kernel TLS offered" in log


def ticket(session_file):
    text = subprocess.run(["openssl", "sess_id", "-in", session_file, "-text", "-noout"], capture_output=True, text=True, check=True).stdout
    return text.split("TLS session ticket:", 1)[1].split("Start Time", 1)[0]


def test_resumption_across_workers_with_s_client(daemon_factory, certs):
    d = tls_daemon(daemon_factory, certs, workers=4)
    for version in ["-tls1_2", "-tls1_3"]:
        sess = os.path.join(certs.dir, f"sess{version}")
        # stdin held open a moment: a TLS 1.3 ticket arrives after the handshake.
        first = subprocess.run(f"sleep 0.3 | openssl s_client -connect 127.0.0.1:{d.tls_port} {version} -sess_out {sess}",
                               shell=True, capture_output=True, text=True, timeout=20)
        assert "New, TLSv1." in first.stdout, first.stdout + first.stderr
        reused = 0
        for _ in range(16):
            r = subprocess.run(f"sleep 0.1 | openssl s_client -connect 127.0.0.1:{d.tls_port} {version} -sess_in {sess}",
                               shell=True, capture_output=True, text=True, timeout=20)
            reused += "Reused, TLSv1." in r.stdout
        assert reused == 16, f"{version}: {reused} of 16 resumed"
        # A resumed session gets a new ticket (a TLS 1.3 client uses each ticket once; OpenSSL's
        # drops it), so a chain of connections, each with the last one's session, all resume.
        previous = sess
        for i in range(4 if version == "-tls1_3" else 0):  # (s_client writes no renewed 1.2 session)
            chained = os.path.join(certs.dir, f"chain{version}{i}")
            r = subprocess.run(f"sleep 0.3 | openssl s_client -connect 127.0.0.1:{d.tls_port} {version} -sess_in {previous} -sess_out {chained}",
                               shell=True, capture_output=True, text=True, timeout=20)
            assert "Reused, TLSv1." in r.stdout, r.stdout
            assert ticket(chained) != ticket(previous), f"{version}: no new ticket after a resumption"
            previous = chained
    # The kernel spread those connections over the workers: more than one resumed sessions.
    slots = re.findall(r'clusterd_worker_tls_resumed_total\{slot="(\d+)"\} (\d+)', metrics(d))
    assert len([s for s, n in slots if int(n) > 0]) >= 2, slots


def test_resumption_survives_a_reload(daemon_factory, certs):
    d = tls_daemon(daemon_factory, certs, workers=2)
    ctx = client_context(certs)
    with tls_connect(d.tls_port, ctx) as s:
        https_request(s)
        session = s.session
    d.ctl("reload", "--wait", check=True)
    wait_ready(d, 2, generation=2)
    with tls_connect(d.tls_port, ctx, session=session) as s:
        assert s.session_reused  # the master's ticket keys outlive the generation


def test_reload_serves_the_renewed_certificate_with_no_failed_request(daemon_factory, certs):
    d = tls_daemon(daemon_factory, certs, workers=2)
    pem, key = certs.path("site.pem"), certs.path("site.key")
    ctx = client_context(certs)
    errors, done, counts = [], threading.Event(), {"requests": 0}

    def client(keepalive):
        # A client as browsers and HTTP libraries are: a request that meets a kept-alive
        # connection closed before any byte of an answer is retried on a new connection.
        s = None
        while not done.is_set():
            try:
                if s is None:
                    s = tls_connect(d.tls_port, ctx)
                    fresh = True
                else:
                    fresh = False
                try:
                    status, head, body = https_request(s, close=not keepalive)
                except (ConnectionError, ssl.SSLError, OSError):
                    s.close()
                    s = None
                    if fresh:
                        raise
                    continue
                if status != 200 or body != b"Hello world!":
                    errors.append(f"status {status}")
                counts["requests"] += 1
                if not keepalive or "connection: close" in head.lower():
                    s.close()
                    s = None
                time.sleep(0.005)
            except Exception as e:  # noqa: BLE001 — every failure is a finding
                errors.append(repr(e))
                s = None
        if s is not None:
            s.close()

    threads = [threading.Thread(target=client, args=(k,)) for k in (True, True, False, False)]
    for t in threads:
        t.start()
    try:
        time.sleep(0.5)
        # The renewal: certbot writes the new files in place (same paths), then the hook reloads.
        certs.issue("renewed", 3003, names=("localhost", "site.test"))
        os.replace(certs.path("renewed.pem"), pem)
        os.replace(certs.path("renewed.key"), key)
        r = d.ctl("reload", "--wait")
        assert r.returncode == 0, r.stdout + r.stderr
        wait_ready(d, 2, generation=2)
        time.sleep(1.5)  # old connections finish or are closed gracefully
    finally:
        done.set()
        for t in threads:
            t.join(10)
    assert errors == []
    assert counts["requests"] > 50
    with tls_connect(d.tls_port, ctx) as s:
        assert serial_of(s) == 3003


def test_broken_certificate_reload_is_refused_and_the_old_one_serves(daemon_factory, certs):
    d = tls_daemon(daemon_factory, certs, workers=1)
    pem, key = certs.path("site.pem"), certs.path("site.key")
    ctx = client_context(certs)
    # A key that is not the certificate's.
    certs.issue("stranger", 4004)
    with open(certs.path("stranger.key")) as f, open(key, "w") as out:
        out.write(f.read())
    r = d.ctl("reload", "--wait")
    assert r.returncode == 1
    assert "listen[1].tls" in r.stderr and "does not match" in r.stderr and pem in r.stderr, r.stderr
    with tls_connect(d.tls_port, ctx) as s:
        assert serial_of(s) == 1001
        assert https_request(s)[0] == 200
    # An expired certificate.
    certs.issue("old", 5005, start="20200101000000Z", end="20210101000000Z")
    os.replace(certs.path("old.pem"), pem)
    os.replace(certs.path("old.key"), key)
    r = d.ctl("reload", "--wait")
    assert r.returncode == 1
    assert "has expired: notAfter 2021-01-01 00:00:00 UTC" in r.stderr, r.stderr
    with tls_connect(d.tls_port, ctx) as s:
        assert serial_of(s) == 1001


def test_check_config_names_what_is_wrong(certs, tmpdir_short):
    pem, key = certs.issue("site", 1001)
    other_pem, other_key = certs.issue("other", 1002)
    expired_pem, expired_key = certs.issue("expired", 1003, start="20200101000000Z", end="20210101000000Z")
    config = os.path.join(tmpdir_short, "check.json")

    def check(tls):
        with open(config, "w") as f:
            json.dump({"listen": ["127.0.0.1:1", {"address": "127.0.0.1:2", "tls": tls}],
                       "controlSocket": os.path.join(tmpdir_short, "x.sock")}, f)
        return subprocess.run([CLUSTERD, "--check-config", "--config", config], capture_output=True, text=True, timeout=10)

    ok = check({"certificate": pem, "key": key})
    assert ok.returncode == 0, ok.stderr
    assert f"127.0.0.1:2 TLS 1.2+: {pem} (/CN=localhost, serial 03E9, until " in ok.stdout, ok.stdout
    r = check({"certificate": pem, "key": other_key})
    assert r.returncode == 78 and f"listen[1].tls: {pem} with {other_key}: key does not match the certificate" in r.stderr, r.stderr
    r = check({"certificate": expired_pem, "key": expired_key})
    assert r.returncode == 78 and f"listen[1].tls.certificate: {expired_pem} has expired" in r.stderr, r.stderr
    r = check({"certificate": pem, "key": key, "certificates": [{"certificate": other_pem, "key": "/nonexistent.key"}]})
    assert r.returncode == 78 and "listen[1].tls.certificates[0].key: cannot read /nonexistent.key" in r.stderr, r.stderr
    os.chmod(key, 0)
    if os.geteuid() != 0:
        r = check({"certificate": pem, "key": key})
        assert r.returncode == 78 and "Permission denied" in r.stderr
    r = check({"certificate": pem, "key": pem})
    assert r.returncode == 78 and "no PEM private key" in r.stderr, r.stderr


def test_slow_handshake_meets_the_header_timeout(daemon_factory, certs):
    d = tls_daemon(daemon_factory, certs, workers=1, http={"headerTimeout": 1})
    started = time.time()
    with socket.create_connection(("127.0.0.1", d.tls_port), timeout=5) as s:
        # Half a ClientHello's record header, then nothing.
        s.sendall(b"\x16\x03\x01")
        assert s.recv(100) == b""  # closed by the server
    assert time.time() - started < 3
    with socket.create_connection(("127.0.0.1", d.tls_port), timeout=5) as s:
        assert s.recv(100) == b""  # nothing at all
    # Meanwhile, and after, others are served.
    with tls_connect(d.tls_port, client_context(certs)) as s:
        assert https_request(s)[0] == 200


def test_connections_queued_for_a_dead_worker_are_relayed_and_still_speak_tls(daemon_factory, certs):
    # The master takes what waits on a dead worker's listener and passes it to a live worker, which
    # must know it for a TLS connection by the listener it arrived on (its handshake still to come).
    from conftest import children
    import signal as signals
    d = tls_daemon(daemon_factory, certs, workers=2)
    ctx = client_context(certs)
    victim = children(d.proc.pid)[0]
    results, lock = [], threading.Lock()

    def one():
        try:
            with tls_connect(d.tls_port, ctx, timeout=10) as s:
                r = https_request(s, close=True)[0]
        except Exception as e:  # noqa: BLE001
            r = repr(e)
        with lock:
            results.append(r)

    os.kill(victim, signals.SIGSTOP)  # its listener queues connections it does not take
    threads = [threading.Thread(target=one) for _ in range(24)]
    for t in threads:
        t.start()
    time.sleep(0.3)
    os.kill(victim, signals.SIGKILL)
    for t in threads:
        t.join(20)
    assert results == [200] * 24, results


def test_a_certificate_about_to_expire_is_warned_of(daemon_factory, certs):
    d = daemon_factory({"workers": 1}, start=False)
    pem, key = certs.issue("soon", 6006, days=3)
    port = free_port()
    d.config["listen"] = [f"127.0.0.1:{d.port}", {"address": f"127.0.0.1:{port}", "tls": {"certificate": pem, "key": key}}]
    d.start()
    wait_ready(d, 1)
    assert re.search(r"soon\.pem \(/CN=localhost\) expires in 7[12] hours", d.log_text()), d.log_text()


def test_resumption_survives_an_upgrade(tmpdir_short, certs):
    """Issue 18: `clusterctl upgrade` hands the session-ticket keys to the new image (in the upgrade
    state's memfd), so a session from before the upgrade resumes on the new image's workers."""
    from test_upgrade import install_rebuilt
    bindir = os.path.join(tmpdir_short, "bin")
    os.makedirs(bindir)
    shutil.copy(os.path.join(BIN, "clusterd"), bindir)
    binary = os.path.join(bindir, "clusterd")
    pem, key = certs.issue("site", 1001, names=("localhost", "site.test"))
    port, tls_port = free_port(), free_port()
    control = os.path.join(tmpdir_short, "control.sock")
    config = os.path.join(tmpdir_short, "upgrade.json")
    with open(config, "w") as f:
        json.dump({"workers": 2, "controlSocket": control, "drainTimeout": 5, "routes": [{"path": "/", "body": "hello"}],
                   "listen": [f"127.0.0.1:{port}", {"address": f"127.0.0.1:{tls_port}", "tls": {"certificate": pem, "key": key}}]}, f)
    log = open(os.path.join(tmpdir_short, "upgrade.log"), "ab")
    proc = subprocess.Popen([binary, "--config", config], stdout=log, stderr=subprocess.STDOUT, start_new_session=True)
    ctl = lambda *a: subprocess.run([os.path.join(BIN, "clusterctl"), "--socket", control, *a], capture_output=True, text=True, timeout=60)
    try:
        wait_for_port(tls_port, proc=proc)
        wait_until(lambda: json.loads(ctl("status", "--json").stdout or "{}").get("ready") == 2, what="2 ready workers")
        ctx = client_context(certs)
        with tls_connect(tls_port, ctx) as s:
            https_request(s)
            session = s.session
        want = install_rebuilt(binary, binary)
        r = ctl("upgrade")
        assert r.returncode == 0, r.stdout + r.stderr
        wait_until(lambda: (lambda st: st.get("build") == want and st.get("ready") == 2)(json.loads(ctl("status", "--json").stdout or "{}")),
                   what="the new image's workers ready")
        with tls_connect(tls_port, ctx, session=session) as s:
            https_request(s)
            assert s.session_reused, "a session from before the upgrade resumes after it"
    finally:
        proc.send_signal(signal.SIGTERM)
        try:
            proc.wait(timeout=30)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()
        log.close()
