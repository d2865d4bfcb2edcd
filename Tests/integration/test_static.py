"""Static files as an nginx user expects them, over real sockets."""
import os
import socket
import subprocess

import pytest

from conftest import CLUSTERD, raw_exchange, statuses, wait_ready


def request(port, path, headers=b"", method=b"GET"):
    raw = raw_exchange(port, method + b" " + path.encode() + b" HTTP/1.1\r\nHost: t\r\nConnection: close\r\n" + headers + b"\r\n", read_timeout=5)
    head, _, body = raw.partition(b"\r\n\r\n")
    lines = head.split(b"\r\n")
    fields = {}
    for line in lines[1:]:
        k, _, v = line.partition(b":")
        fields[k.strip().lower().decode()] = v.strip().decode()
    return statuses(lines[0] + b" ")[0], fields, body


@pytest.fixture
def site(tmpdir_short, daemon_factory):
    root = os.path.join(tmpdir_short, "site")
    os.makedirs(os.path.join(root, "sub"))
    with open(os.path.join(root, "index.html"), "w") as f:
        f.write("<h1>index</h1>")
    with open(os.path.join(root, "a b.css"), "w") as f:
        f.write("body{}")
    with open(os.path.join(root, "sub", "index.html"), "w") as f:
        f.write("sub index")
    with open(os.path.join(root, "big.bin"), "wb") as f:
        f.write(os.urandom(5 * 1024 * 1024))
    with open(os.path.join(root, "data.weird"), "w") as f:
        f.write("x")
    os.makedirs(os.path.join(root, "noindex"))
    secret = os.path.join(tmpdir_short, "secret.txt")
    with open(secret, "w") as f:
        f.write("top secret")
    os.symlink(secret, os.path.join(root, "escape.txt"))
    os.symlink("index.html", os.path.join(root, "inside.html"))
    d = daemon_factory({"static": [{"prefix": "/static/", "root": root}],
                        "mimeTypes": {"weird": "application/x-weird"}})
    wait_ready(d, 1)
    d.root = root
    return d


def test_file_types_and_index(site):
    code, h, body = request(site.port, "/static/index.html")
    assert (code, body) == (200, b"<h1>index</h1>")
    assert h["content-type"] == "text/html; charset=utf-8"
    assert h["content-length"] == "14"
    assert h["accept-ranges"] == "bytes"
    assert request(site.port, "/static/")[2] == b"<h1>index</h1>"
    assert request(site.port, "/static/sub/")[2] == b"sub index"
    code, h, _ = request(site.port, "/static/a%20b.css")
    assert (code, h["content-type"]) == (200, "text/css; charset=utf-8")
    assert request(site.port, "/static/data.weird")[1]["content-type"] == "application/x-weird"


def test_directory_without_slash_redirects(site):
    code, h, _ = request(site.port, "/static/sub?x=1")
    assert code == 301 and h["location"] == "/static/sub/?x=1"
    assert request(site.port, "/static/noindex/")[0] == 403


def test_not_found_and_methods(site):
    assert request(site.port, "/static/missing.txt")[0] == 404
    code, h, _ = request(site.port, "/static/index.html", method=b"POST")
    assert code == 405 and h["allow"] == "GET, HEAD"
    code, h, body = request(site.port, "/static/index.html", method=b"HEAD")
    assert code == 200 and h["content-length"] == "14" and body == b""


def test_conditional_requests(site):
    _, h, _ = request(site.port, "/static/index.html")
    etag, modified = h["etag"], h["last-modified"]
    code, h2, body = request(site.port, "/static/index.html", b"If-None-Match: " + etag.encode() + b"\r\n")
    assert (code, body) == (304, b"") and h2["etag"] == etag
    assert request(site.port, "/static/index.html", b'If-None-Match: "other", ' + etag.encode() + b"\r\n")[0] == 304
    assert request(site.port, "/static/index.html", b'If-None-Match: "other"\r\n')[0] == 200
    assert request(site.port, "/static/index.html", b"If-Modified-Since: " + modified.encode() + b"\r\n")[0] == 304
    assert request(site.port, "/static/index.html", b"If-Modified-Since: Thu, 01 Jan 1970 00:00:00 GMT\r\n")[0] == 200


def test_ranges(site):
    code, h, body = request(site.port, "/static/index.html", b"Range: bytes=1-3\r\n")
    assert (code, body, h["content-range"]) == (206, b"h1>", "bytes 1-3/14")
    code, h, body = request(site.port, "/static/index.html", b"Range: bytes=-5\r\n")
    assert (code, body) == (206, b"</h1>")
    code, h, body = request(site.port, "/static/index.html", b"Range: bytes=10-\r\n")
    assert (code, body) == (206, b"/h1>")
    code, h, _ = request(site.port, "/static/index.html", b"Range: bytes=100-200\r\n")
    assert code == 416 and h["content-range"] == "bytes */14"
    # Several ranges, or If-Range that does not match: the whole file.
    assert request(site.port, "/static/index.html", b"Range: bytes=0-1,3-4\r\n")[0] == 200
    assert request(site.port, "/static/index.html", b'Range: bytes=0-1\r\nIf-Range: "stale"\r\n')[0] == 200


def test_traversal_never_leaves_the_root(site):
    for path in ["/static/../secret.txt", "/static/%2e%2e/secret.txt", "/static/sub/../../secret.txt",
                 "/static/..%2fsecret.txt", "/static/%2E%2E%2Fsecret.txt", "/static/a%00b", "/static/%zz"]:
        code, _, body = request(site.port, path)
        assert code in (400, 403, 404), path
        assert b"top secret" not in body
    # A symlink pointing outside the root is refused by the kernel (openat2 RESOLVE_BENEATH)...
    code, _, body = request(site.port, "/static/escape.txt")
    assert code == 403 and b"top secret" not in body
    # ... one inside is fine.
    assert request(site.port, "/static/inside.html")[2] == b"<h1>index</h1>"


def test_symlinks_outside_when_allowed(tmpdir_short, daemon_factory):
    root = os.path.join(tmpdir_short, "r")
    os.makedirs(root)
    with open(os.path.join(tmpdir_short, "shared.txt"), "w") as f:
        f.write("shared")
    os.symlink(os.path.join(tmpdir_short, "shared.txt"), os.path.join(root, "shared.txt"))
    d = daemon_factory({"static": [{"prefix": "/", "root": root, "allowSymlinksOutside": True}], "routes": []})
    wait_ready(d, 1)
    assert request(d.port, "/shared.txt")[2] == b"shared"


def test_large_file_streams_and_slow_reader_is_bounded(site):
    with open(os.path.join(site.root, "big.bin"), "rb") as f:
        expected = f.read()
    code, h, body = request(site.port, "/static/big.bin")
    assert code == 200 and body == expected
    assert h["content-type"] == "application/octet-stream"
    # A reader that takes a little at a time does not make the worker buffer the file.
    worker = int(open(f"/proc/{site.proc.pid}/task/{site.proc.pid}/children").read().split()[0])
    s = socket.create_connection(("127.0.0.1", site.port), timeout=10)
    s.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
    s.sendall(b"GET /static/big.bin HTTP/1.1\r\nHost: t\r\n\r\n")
    got = s.recv(1000)
    rss = int([l for l in open(f"/proc/{worker}/status") if l.startswith("VmRSS:")][0].split()[1])
    assert rss < 40 * 1024, rss
    s.close()
    assert got.startswith(b"HTTP/1.1 200")


def test_pipelined_files_and_routes_keep_order(site):
    reqs = b"GET /static/index.html HTTP/1.1\r\nHost: t\r\n\r\nGET / HTTP/1.1\r\nHost: t\r\n\r\nGET /static/sub/ HTTP/1.1\r\nHost: t\r\nConnection: close\r\n\r\n"
    raw = raw_exchange(site.port, reqs, read_timeout=5)
    assert statuses(raw) == [200, 200, 200]
    assert raw.index(b"<h1>index</h1>") < raw.index(b"Hello world!") < raw.index(b"sub index")


def test_demo_page_assets_with_curl(daemon_factory):
    www = os.path.join(os.path.dirname(os.path.abspath(__file__)), "../../www")
    d = daemon_factory({"static": [{"prefix": "/", "root": os.path.realpath(www)}], "routes": []})
    wait_ready(d, 1)
    for path, kind in [("/", "text/html"), ("/style.css", "text/css"), ("/app.js", "text/javascript"), ("/logo.svg", "image/svg+xml")]:
        r = subprocess.run(["curl", "-sS", "-o", "/dev/null", "-w", "%{http_code} %{content_type}", f"http://127.0.0.1:{d.port}{path}"],
                           capture_output=True, text=True, timeout=10)
        assert r.stdout.startswith("200 " + kind), (path, r.stdout)
