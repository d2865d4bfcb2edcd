"""Static files as an nginx user expects them, over real sockets."""
import os
import re
import socket
import subprocess

import pytest

from conftest import children, connections, keepalive_request, raw_exchange, statuses, wait_ready


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


# --- Issue 12 items 3, 8, 18 ---------------------------------------------------------------------

def test_directory_redirect_is_never_an_open_redirect(tmpdir_short, daemon_factory):
    """Item 3: the 301 that adds a directory's slash is built from the prefix and the normalised
    path, so `//evil.example/..` and `/\\evil.example/..` go to `/`, never to another host."""
    root = os.path.join(tmpdir_short, "r")
    os.makedirs(os.path.join(root, "sub"))
    d = daemon_factory({"static": [{"prefix": "/", "root": root}, {"prefix": "/s/", "root": root}], "routes": []})
    wait_ready(d, 1)
    for path, location in [("//evil.example/..", "/"), ("/\\evil.example/..", "/"), ("//evil.example//..", "/"),
                           ("///evil.example/../sub", "/sub/"), ("/sub//..//sub", "/sub/"), ("/s//evil.example/..", "/s/"),
                           ("/s", "/s/"), ("/sub?q=1", "/sub/?q=1"), ("/%2fevil.example/..", None)]:
        code, h, _ = request(d.port, path)
        if location is None:
            assert code == 400, path
            continue
        assert code == 301, (path, code)
        assert h["location"] == location, (path, h["location"])


def test_regular_file_is_not_served_as_a_directory(site):
    """Item 18: `/file/` and `/file/.` are 404 (nginx: ENOTDIR), while `/dir/.` still leads to the index."""
    for path in ["/static/index.html/", "/static/index.html/.", "/static/index.html/%2e", "/static/index.html//", "/static/sub/index.html/"]:
        assert request(site.port, path)[0] == 404, path
    code, h, _ = request(site.port, "/static/sub/.")
    assert code == 301 and h["location"] == "/static/sub/"
    assert request(site.port, "/static/index.html")[0] == 200


@pytest.fixture
def hidden_root(tmpdir_short):
    root = os.path.join(tmpdir_short, "h")
    for d in [".git", "a/.hidden", ".well-known/acme-challenge"]:
        os.makedirs(os.path.join(root, d))
    for name, text in [(".env", "SECRET=1"), (".git/config", "[core]"), ("a/.hidden/x", "x"), (".htpasswd", "u:p"),
                       (".well-known/acme-challenge/tok", "challenge"), ("a/b.txt", "visible"), (".well-known/.x", "no")]:
        with open(os.path.join(root, name), "w") as f:
            f.write(text)
    return root


def test_hidden_names_are_not_served_by_default(hidden_root, daemon_factory):
    """Item 18: `.env`, `.git/config` and `/a/.hidden/x` answer 404 (encoded too); `/.well-known/` is public."""
    d = daemon_factory({"static": [{"prefix": "/", "root": hidden_root}], "routes": []})
    wait_ready(d, 1)
    for path in ["/.env", "/.git/config", "/.git/", "/.git", "/a/.hidden/x", "/.htpasswd", "/%2eenv", "/a/%2Ehidden/x", "/.well-known/.x"]:
        code, _, body = request(d.port, path)
        assert code == 404, path
        assert b"SECRET" not in body and b"[core]" not in body
    assert request(d.port, "/.well-known/acme-challenge/tok")[2] == b"challenge"
    assert request(d.port, "/a/b.txt")[2] == b"visible"
    # A hidden segment that `..` takes back out is not part of the path served.
    assert request(d.port, "/a/.hidden/../b.txt")[2] == b"visible"


def test_hidden_names_served_when_the_root_allows(hidden_root, daemon_factory):
    d = daemon_factory({"static": [{"prefix": "/", "root": hidden_root, "allowHidden": True}], "routes": []})
    wait_ready(d, 1)
    assert request(d.port, "/.env")[2] == b"SECRET=1"
    assert request(d.port, "/.git/config")[2] == b"[core]"
    assert request(d.port, "/a/.hidden/x")[2] == b"x"


def established_owners(port):
    """PIDs holding established server-side connections on `port`."""
    out = subprocess.run(["ss", "-Htnp", "state", "established", f"sport = :{port}"], capture_output=True, text=True, timeout=10).stdout
    return {int(p) for p in re.findall(r"pid=(\d+)", out)}


def test_symlink_swap_deploy_is_followed_at_once(tmpdir_short, daemon_factory):
    """Item 8: `current -> releases/N` swapped by renaming a new symlink over it: the very next
    request on every connection of every worker serves the new release; deleting the old release
    changes nothing; symlinks out of the new root are still refused."""
    base = os.path.join(tmpdir_short, "deploy")
    for n in (1, 2):
        os.makedirs(os.path.join(base, "releases", str(n), "sub"))
        for name in ("index.html", "v.txt", "sub/index.html"):
            with open(os.path.join(base, "releases", str(n), name), "w") as f:
                f.write(f"release {n}")
    with open(os.path.join(tmpdir_short, "secret.txt"), "w") as f:
        f.write("top secret")
    os.symlink(os.path.join(tmpdir_short, "secret.txt"), os.path.join(base, "releases", "2", "escape.txt"))
    current = os.path.join(base, "current")
    os.symlink("releases/1", current)
    d = daemon_factory({"workers": 2, "static": [{"prefix": "/", "root": current}], "routes": []})
    wait_ready(d, 2)
    workers = set(children(d.proc.pid))
    assert len(workers) == 2
    with connections(d.port, 24) as socks:
        for s in socks:
            assert keepalive_request(s, "/v.txt") == (200, b"release 1")
        # Both workers hold some of the connections (the kernel spreads them by hash).
        assert established_owners(d.port) == workers
        new = os.path.join(base, "current.new")
        os.symlink("releases/2", new)
        os.rename(new, current)
        for s in socks:
            assert keepalive_request(s, "/v.txt") == (200, b"release 2")
        subprocess.run(["rm", "-rf", os.path.join(base, "releases", "1")], check=True)
        for s in socks:
            assert keepalive_request(s, "/") == (200, b"release 2")
            assert keepalive_request(s, "/sub/") == (200, b"release 2")
            code, body = keepalive_request(s, "/escape.txt")
            assert code == 403 and b"secret" not in body
            assert keepalive_request(s, "/../secret.txt")[0] in (400, 403)
        # The root gone altogether: 404, and back as soon as it is there again.
        os.unlink(current)
        for s in socks:
            assert keepalive_request(s, "/v.txt")[0] == 404
        os.symlink("releases/2", current)
        for s in socks:
            assert keepalive_request(s, "/v.txt") == (200, b"release 2")


def worker_fds(pid):
    return len(os.listdir(f"/proc/{pid}/fd"))


def test_open_file_cache_never_serves_a_stale_file(tmpdir_short, daemon_factory):
    """Issue 17: a file served once stays open (and, when small and settled, in memory), yet every
    change is seen by the very next request: rewritten in place with the same size within the
    same second, replaced by rename, truncated, deleted, a symlink inside the root re-pointed
    outside it, an old file (copied into memory) rewritten."""
    root = os.path.join(tmpdir_short, "site")
    os.makedirs(root)
    secret = os.path.join(tmpdir_short, "secret.txt")
    with open(secret, "w") as f:
        f.write("top secret")

    def put(name, data, age=0):
        path = os.path.join(root, name)
        with open(path, "wb") as f:
            f.write(data)
        if age:
            t = os.stat(path).st_mtime - age
            os.utime(path, (t, t))

    put("new.txt", b"AAAA")
    put("old.txt", b"old!" * 100, age=3600)  # settled: kept in memory
    put("big.bin", os.urandom(200_000))
    put("target.txt", b"inside")
    os.symlink("target.txt", os.path.join(root, "link.txt"))
    d = daemon_factory({"static": [{"prefix": "/", "root": root}], "routes": []})
    wait_ready(d, 1)
    with connections(d.port, 1) as (s,):
        for _ in range(3):
            assert keepalive_request(s, "/new.txt") == (200, b"AAAA")
            assert keepalive_request(s, "/old.txt") == (200, b"old!" * 100)
        # Same size, same second, in place: mtime/ctime nanoseconds move.
        with open(os.path.join(root, "new.txt"), "r+b") as f:
            f.write(b"BBBB")
        assert keepalive_request(s, "/new.txt") == (200, b"BBBB")
        # An old file in memory, rewritten in place (same size) and then its mtime set back to the
        # old value: ctime still tells.
        st = os.stat(os.path.join(root, "old.txt"))
        with open(os.path.join(root, "old.txt"), "r+b") as f:
            f.write(b"new!" * 100)
        os.utime(os.path.join(root, "old.txt"), ns=(st.st_atime_ns, st.st_mtime_ns))
        assert keepalive_request(s, "/old.txt") == (200, b"new!" * 100)
        # Replaced by rename (a deploy tool's atomic write).
        put("next.tmp", b"CCCCCC")
        os.rename(os.path.join(root, "next.tmp"), os.path.join(root, "new.txt"))
        assert keepalive_request(s, "/new.txt") == (200, b"CCCCCC")
        # Big file (sent from the shared descriptor) truncated, then deleted.
        assert keepalive_request(s, "/big.bin")[0] == 200
        os.truncate(os.path.join(root, "big.bin"), 10)
        code, body = keepalive_request(s, "/big.bin")
        assert code == 200 and len(body) == 10
        os.unlink(os.path.join(root, "big.bin"))
        assert keepalive_request(s, "/big.bin")[0] == 404
        # A symlink inside the root, served once, re-pointed outside: refused at once.
        assert keepalive_request(s, "/link.txt") == (200, b"inside")
        os.unlink(os.path.join(root, "link.txt"))
        os.symlink(secret, os.path.join(root, "link.txt"))
        code, body = keepalive_request(s, "/link.txt")
        assert code == 403 and b"secret" not in body
        # Conditional and range answers come from the cached entry too.
        code, fields, body = request(d.port, "/old.txt", b"Range: bytes=4-7\r\n")
        assert code == 206 and body == b"new!" and fields["content-range"] == "bytes 4-7/400"
        code, fields, _ = request(d.port, "/old.txt")
        assert request(d.port, "/old.txt", f"If-None-Match: {fields['etag']}\r\n".encode())[0] == 304


def test_open_file_cache_is_bounded(tmpdir_short, daemon_factory):
    """Issue 17: `openFileCache` caps the descriptors a worker keeps per root; 0 keeps none."""
    root = os.path.join(tmpdir_short, "site")
    os.makedirs(root)
    for i in range(40):
        with open(os.path.join(root, f"f{i}.txt"), "w") as f:
            f.write(f"file {i}")
    for cap, most in ((10, 10), (0, 0)):
        d = daemon_factory({"static": [{"prefix": "/", "root": root, "openFileCache": cap}], "routes": []})
        wait_ready(d, 1)
        (worker,) = children(d.proc.pid)
        with connections(d.port, 1) as (s,):
            keepalive_request(s, "/f0.txt")
            # A 404 after each batch: its answer comes after the worker is done with the last file
            # (the client can read a file's bytes before the worker lets go of its descriptor).
            assert keepalive_request(s, "/missing.txt")[0] == 404
            base = worker_fds(worker)
            for round_ in range(2):
                for i in range(40):
                    assert keepalive_request(s, f"/f{i}.txt") == (200, f"file {i}".encode())
            assert keepalive_request(s, "/missing.txt")[0] == 404
            grown = worker_fds(worker) - base
            assert grown <= most, f"openFileCache {cap}: {grown} more descriptors"
        d.stop()
