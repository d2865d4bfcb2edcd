"""The library example (Sources/clusterd-example): a user's handler with the whole cluster."""
import asyncio
import json
import os
import resource
import socket
import subprocess
import time

from conftest import BIN, get, raw_exchange, statuses, wait_ready


def test_example_api_with_the_cluster(daemon_factory):
    d = daemon_factory({"workers": 2}, start=False)
    d.write_config()
    log = open(d.log_path, "ab")
    d.log = log
    d.proc = subprocess.Popen([os.path.join(BIN, "clusterd-example"), "--config", d.config_path],
                              stdout=log, stderr=subprocess.STDOUT, start_new_session=True)
    d.proc.stderr_text = d.log_text
    wait_ready(d, 2)
    code, body = get(d.port, "/api/hello?name=Ada")
    assert (code, json.loads(body)) == (200, {"hello": "Ada"})
    assert get(d.port, "/api/hello-async?name=Ada") == (code, body)
    raw = raw_exchange(d.port, b'POST /api/sum HTTP/1.1\r\nHost: t\r\nContent-Type: application/json\r\nContent-Length: 24\r\nConnection: close\r\n\r\n{"numbers": [1, 2, 3.5]}')
    assert statuses(raw) == [200] and json.loads(raw.split(b"\r\n\r\n", 1)[1]) == {"count": 3, "sum": 6.5}
    raw = raw_exchange(d.port, b"POST /api/sum HTTP/1.1\r\nHost: t\r\nContent-Length: 3\r\nConnection: close\r\n\r\nnot")
    assert statuses(raw) == [400]
    raw = raw_exchange(d.port, b"POST /api/echo HTTP/1.1\r\nHost: t\r\nTransfer-Encoding: chunked\r\nConnection: close\r\n\r\n3\r\nabc\r\n2\r\nde\r\n0\r\n\r\n")
    assert raw.endswith(b"\r\n\r\nabcde")
    assert get(d.port, "/api/echo")[0] == 405
    # The stock handler behind it: config routes and /healthz.
    assert get(d.port, "/") == (200, b"Hello world!")
    assert get(d.port, "/healthz") == (200, b"ok\n")
    # And the cluster around it: scale and reload through clusterctl.
    d.ctl("scale", "3", check=True)
    wait_ready(d, 3)
    d.ctl("reload", "--wait", check=True)
    wait_ready(d, 3, generation=2)
    assert get(d.port, "/api/hello")[1] == b'{"hello":"world"}'


def start_example(daemon_factory, workers):
    d = daemon_factory({"workers": workers}, start=False)
    d.write_config()
    d.log = open(d.log_path, "ab")
    d.proc = subprocess.Popen([os.path.join(BIN, "clusterd-example"), "--config", d.config_path],
                              stdout=d.log, stderr=subprocess.STDOUT, start_new_session=True)
    d.proc.stderr_text = d.log_text
    wait_ready(d, workers)
    return d


async def fetch(port, path, timeout=10):
    reader, writer = await asyncio.wait_for(asyncio.open_connection("127.0.0.1", port), timeout)
    writer.write(f"GET {path} HTTP/1.1\r\nHost: t\r\nConnection: close\r\n\r\n".encode())
    data = await asyncio.wait_for(reader.read(), timeout)
    writer.close()
    return data


def test_async_answers_do_not_block_the_worker(daemon_factory):
    """Issue 16: a handler that awaits (`Task.sleep` in /api/sleep) suspends only its own task: one
    worker keeps 300 sleeping requests in flight at once and answers `GET /` meanwhile."""
    d = start_example(daemon_factory, 1)
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    resource.setrlimit(resource.RLIMIT_NOFILE, (min(hard, max(soft, 4096)), hard))

    async def run():
        started = time.monotonic()
        sleeps = [asyncio.create_task(fetch(d.port, "/api/sleep?ms=300")) for _ in range(300)]
        await asyncio.sleep(0.1)
        t = time.monotonic()
        root = await fetch(d.port, "/")
        root_time = time.monotonic() - t
        answers = await asyncio.gather(*sleeps)
        return answers, root, root_time, time.monotonic() - started

    answers, root, root_time, elapsed = asyncio.run(run())
    assert all(a.startswith(b"HTTP/1.1 200") and a.endswith(b'{"slept":300}') for a in answers)
    assert root.endswith(b"Hello world!") and root_time < 0.25, root_time
    # One after another they would take 90 s; concurrently, the sleep and the clients' own pace.
    assert elapsed < 5, elapsed
    assert get(d.port, "/api/sleep?ms=x")[0] == 400


def test_requests_awaiting_their_answer_survive_a_reload(daemon_factory):
    """A reload's old worker is busy while answers are awaited: it finishes them before it exits."""
    d = start_example(daemon_factory, 2)

    async def run():
        sleeps = [asyncio.create_task(fetch(d.port, "/api/sleep?ms=700")) for _ in range(40)]
        await asyncio.sleep(0.2)
        reload = await asyncio.create_subprocess_exec(os.path.join(BIN, "clusterctl"), "--socket", d.socket_path, "reload", "--wait")
        answers = await asyncio.gather(*sleeps)
        return answers, await reload.wait()

    answers, rc = asyncio.run(run())
    assert rc == 0
    assert all(a.startswith(b"HTTP/1.1 200") for a in answers), [a[:40] for a in answers if not a.startswith(b"HTTP/1.1 200")]
    wait_ready(d, 2, generation=2)


def test_an_application_is_itself(daemon_factory, tmpdir_short):
    """Issue 16, "apps are apps": the example bootstraps swift-log itself (clusterd must not do it
    again), names itself in --version, --help, messages and `Server`, and reads the config's `app`
    section (refusing a bad value like any config mistake)."""
    example = os.path.join(BIN, "clusterd-example")
    r = subprocess.run([example, "--version"], capture_output=True, text=True, timeout=10)
    assert r.returncode == 0 and r.stdout.startswith("clusterd-example 1.0.0 (clusterd "), r.stdout + r.stderr
    r = subprocess.run([example, "--help"], capture_output=True, text=True, timeout=10)
    assert r.returncode == 0 and r.stdout.startswith("usage: clusterd-example [--config PATH]"), r.stdout
    r = subprocess.run([example, "--bogus"], capture_output=True, text=True, timeout=10)
    assert r.returncode == 64 and r.stderr.startswith("clusterd-example: unknown argument '--bogus'"), r.stderr

    d = daemon_factory({"workers": 1, "app": {"greeting": "hi"}}, start=False)
    d.write_config()
    r = subprocess.run([example, "--check-config", "--config", d.config_path], capture_output=True, text=True, timeout=10)
    assert r.returncode == 0 and r.stdout.startswith("clusterd-example: "), r.stdout + r.stderr
    d.log = open(d.log_path, "ab")
    d.proc = subprocess.Popen([example, "--config", d.config_path], stdout=d.log, stderr=subprocess.STDOUT, start_new_session=True)
    d.proc.stderr_text = d.log_text
    wait_ready(d, 1)
    raw = raw_exchange(d.port, b"GET /api/hello?name=Ada HTTP/1.1\r\nHost: t\r\nConnection: close\r\n\r\n")
    assert b"\r\nServer: clusterd-example\r\n" in raw and raw.endswith(b'{"hi":"Ada"}'), raw
    assert b"Server: clusterd-example" in raw_exchange(d.port, b"GET /healthz HTTP/1.1\r\nHost: t\r\nConnection: close\r\n\r\n")
    # A reload to a bad `app` value is refused by the application's factory, and it keeps serving.
    d.config["app"] = {"greeting": 7}
    d.write_config()
    r = d.ctl("reload", "--wait")
    assert r.returncode != 0 and "app.greeting: must be a non-empty string" in r.stdout + r.stderr, r.stdout + r.stderr
    assert get(d.port, "/api/hello?name=Ada")[1] == b'{"hi":"Ada"}'
    r = subprocess.run([example, "--check-config", "--config", d.config_path], capture_output=True, text=True, timeout=10)
    assert r.returncode == 78 and "app.greeting" in r.stderr


def test_a_streamed_body_arrives_piece_by_piece(daemon_factory):
    """Issue 16: a streamed (chunked) answer: /api/count writes a line every 150 ms; the first line
    reaches the client long before the last is written, and the connection is reused after it."""
    d = start_example(daemon_factory, 1)
    with socket.create_connection(("127.0.0.1", d.port), timeout=10) as s:
        started = time.monotonic()
        s.sendall(b"GET /api/count?n=4&ms=150 HTTP/1.1\r\nHost: t\r\n\r\n")
        data = b""
        first_line_at = None
        while not data.endswith(b"0\r\n\r\n"):
            chunk = s.recv(4096)
            assert chunk, data
            data += chunk
            if first_line_at is None and b"\r\n\r\n2\r\n1\n\r\n" in data:
                first_line_at = time.monotonic() - started
        total = time.monotonic() - started
        head, body = data.split(b"\r\n\r\n", 1)
        assert b"Transfer-Encoding: chunked" in head and b"Content-Length" not in head
        assert body == b"2\r\n1\n\r\n2\r\n2\n\r\n2\r\n3\n\r\n2\r\n4\n\r\n0\r\n\r\n"
        assert first_line_at is not None and first_line_at < 0.45 and total >= 0.55, (first_line_at, total)
        # Kept alive: the next request on the same connection is answered.
        s.sendall(b"GET / HTTP/1.1\r\nHost: t\r\nConnection: close\r\n\r\n")
        rest = b""
        while chunk := s.recv(4096):
            rest += chunk
        assert rest.startswith(b"HTTP/1.1 200") and rest.endswith(b"Hello world!")
    assert get(d.port, "/api/count?n=x")[0] == 400
