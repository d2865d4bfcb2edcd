"""Examples/todo: clusterd-todo, a JSON API on PostgreSQL (postgres-nio, one pool per worker),
end to end through the cluster and under reloads and scaling (issue 16). Its own PostgreSQL
(postgres.py) is started for the module and always stopped."""
import asyncio
import json
import os
import random
import subprocess
import threading
import time

import pytest

from conftest import BIN, raw_exchange, statuses, wait_ready

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
TODO_BIN = os.environ.get("TODO_BIN", os.path.join(ROOT, "Examples/todo/.build/release"))
CLUSTERD_TODO = os.path.join(TODO_BIN, "clusterd-todo")

pytestmark = pytest.mark.skipif(not os.path.exists(CLUSTERD_TODO),
                                reason=f"{CLUSTERD_TODO} not built (make integration builds it)")


def start_todo(daemon_factory, database_url, workers=2, pool=4, extra=None):
    config = {"workers": workers, "maxWorkers": 8, "app": {"databaseURL": database_url, "poolSize": pool}}
    config.update(extra or {})
    d = daemon_factory(config, start=False)
    d.write_config()
    d.log = open(d.log_path, "ab")
    env = {k: v for k, v in os.environ.items() if k != "DATABASE_URL"}
    d.proc = subprocess.Popen([CLUSTERD_TODO, "--config", d.config_path], stdout=d.log, stderr=subprocess.STDOUT,
                              env=env, start_new_session=True)
    d.proc.stderr_text = d.log_text
    wait_ready(d, workers)
    return d


def call(port, method, path, body=None, raw_body=None):
    """One request on its own connection: (status, headers as a dict of lowercase names, body)."""
    data = raw_body if raw_body is not None else (json.dumps(body).encode() if body is not None else b"")
    head = f"{method} {path} HTTP/1.1\r\nHost: t\r\nConnection: close\r\n"
    if data or method in ("POST", "PATCH"):
        head += f"Content-Type: application/json\r\nContent-Length: {len(data)}\r\n"
    raw = raw_exchange(port, head.encode() + b"\r\n" + data, read_timeout=10)
    head, _, rest = raw.partition(b"\r\n\r\n")
    lines = head.decode().split("\r\n")
    headers = {k.strip().lower(): v.strip() for k, _, v in (l.partition(":") for l in lines[1:])}
    code = statuses(head)
    return (code[0] if code else None), headers, rest


def json_call(port, method, path, body=None, raw_body=None):
    code, headers, rest = call(port, method, path, body, raw_body)
    assert headers.get("content-type") == "application/json", (code, headers, rest)
    return code, json.loads(rest)


def test_todo_api_end_to_end(daemon_factory, postgres):
    """Every route and its errors, over the Unix socket URL, then the same API while clusterctl
    scales and reloads."""
    d = start_todo(daemon_factory, postgres.socket_url, workers=2)
    p = d.port
    code, headers, body = call(p, "POST", "/todos", {"title": "milk"})
    created = json.loads(body)
    assert code == 201 and created == {"id": created["id"], "title": "milk", "done": False}
    assert headers["location"] == f"/todos/{created['id']}"
    url = f"/todos/{created['id']}"
    assert json_call(p, "GET", url) == (200, created)
    # HEAD: GET's head without its body.
    get_code, get_headers, _ = call(p, "GET", url)
    head_code, head_headers, head_body = call(p, "HEAD", url)
    assert (head_code, head_body) == (200, b"") and head_headers["content-length"] == get_headers["content-length"]
    assert call(p, "HEAD", "/todos")[0] == 200 and call(p, "HEAD", "/todos/999999")[0] == 404
    second = json_call(p, "POST", "/todos", {"title": "bread \"wholemeal\" ✓", "extra": 1})[1]
    code, listed = json_call(p, "GET", "/todos")
    assert code == 200 and [t for t in listed if t["id"] in (created["id"], second["id"])] == [created, second]

    assert json_call(p, "PATCH", url, {"done": True}) == (200, dict(created, done=True))
    assert json_call(p, "PATCH", url, {"title": "oat milk"}) == (200, dict(created, done=True, title="oat milk"))
    assert json_call(p, "PATCH", url, {"title": "milk", "done": False}) == (200, created)
    assert postgres.psql(f"SELECT title, done FROM todos WHERE id = {created['id']}") == [["milk", "f"]]

    # 400s: bad JSON, missing or empty title, nothing to change, wrong types.
    for body in [b"not json", b"{}", b'{"title": ""}', b'{"title": 5}', b"", b"[1]"]:
        code, err = json_call(p, "POST", "/todos", raw_body=body)
        assert code == 400 and isinstance(err["error"], str), (body, code, err)
    for body in [b"{}", b'{"done": "yes"}', b"nope", b'{"title": ""}']:
        code, err = json_call(p, "PATCH", url, raw_body=body)
        assert code == 400 and err["error"], (body, code, err)
    # 404s: no such row, not an id.
    for path in ["/todos/999999999", "/todos/abc", "/todos/0", "/todos/-1"]:
        assert json_call(p, "GET", path) == (404, {"error": "no such todo"}), path
    assert json_call(p, "PATCH", "/todos/999999999", {"done": True})[0] == 404
    assert json_call(p, "DELETE", "/todos/999999999")[0] == 404
    # 405 with Allow.
    code, headers, body = call(p, "PUT", "/todos")
    assert code == 405 and headers["allow"] == "GET, HEAD, POST" and json.loads(body)["error"]
    code, headers, _ = call(p, "POST", url, {"title": "x"})
    assert code == 405 and headers["allow"] == "GET, HEAD, PATCH, DELETE"

    code, headers, body = call(p, "DELETE", url)
    assert (code, body) == (204, b"") and "content-type" not in headers
    assert json_call(p, "GET", url)[0] == 404 and json_call(p, "DELETE", url)[0] == 404
    assert postgres.psql(f"SELECT count(*) FROM todos WHERE id = {created['id']}") == [["0"]]
    # The stock handler behind it.
    assert call(p, "GET", "/healthz")[0] == 200 and call(p, "GET", "/todos/1/more")[0] == 404

    # The cluster around it: requests go on while clusterctl scales and reloads.
    failures, done, stop = [], [], threading.Event()

    def client(n):
        i = 0
        while not stop.is_set():
            i += 1
            try:
                code, _, body = call(p, "POST", "/todos", {"title": f"during-{n}-{i}"})
                if code != 201:
                    failures.append((code, body))
                    continue
                todo = json.loads(body)
                if call(p, "GET", f"/todos/{todo['id']}")[0] != 200:
                    failures.append(("get", todo))
                done.append(todo["id"])
            except Exception as e:  # noqa: BLE001 - any exception is a failed request
                failures.append(repr(e))
    threads = [threading.Thread(target=client, args=(n,)) for n in range(4)]
    for t in threads:
        t.start()
    try:
        d.ctl("scale", "3", check=True)
        wait_ready(d, 3)
        d.ctl("reload", "--wait", check=True)
        wait_ready(d, 3, generation=2)
        d.ctl("scale", "1", check=True)
        wait_ready(d, 1)
        time.sleep(0.5)
    finally:
        stop.set()
        for t in threads:
            t.join(30)
    assert failures == [] and len(done) > 20, (failures[:5], len(done))
    rows = postgres.psql("SELECT count(*) FROM todos WHERE title LIKE 'during-%'")
    assert int(rows[0][0]) == len(done)
    assert "database:" not in d.log_text()


def test_todo_settings_are_checked_without_connecting(daemon_factory, postgres, tmpdir_short):
    """The master validates the app section (a ConfigError names the key) and never connects: a
    database that is not there still passes --check-config; workers connect on first use."""
    d = daemon_factory({"workers": 1, "app": {"databaseURL": "postgres://postgres@127.0.0.1:1/none"}}, start=False)
    d.write_config()
    env = {k: v for k, v in os.environ.items() if k != "DATABASE_URL"}
    r = subprocess.run([CLUSTERD_TODO, "--check-config", "--config", d.config_path], capture_output=True, text=True, timeout=10, env=env)
    assert r.returncode == 0 and r.stdout.startswith("clusterd-todo: "), r.stdout + r.stderr
    for app, key in [({"databaseURL": "mysql://x"}, "app.databaseURL"), ({"databaseURL": postgres.url, "poolSize": 0}, "app.poolSize"),
                     ({"databaseURL": 5}, "app.databaseURL"), ({}, "app.databaseURL")]:
        d.config["app"] = app
        d.write_config()
        r = subprocess.run([CLUSTERD_TODO, "--check-config", "--config", d.config_path], capture_output=True, text=True, timeout=10, env=env)
        assert r.returncode == 78 and key in r.stderr, (app, r.returncode, r.stderr)
    # DATABASE_URL is the default when the config names none.
    r = subprocess.run([CLUSTERD_TODO, "--check-config", "--config", d.config_path], capture_output=True, text=True, timeout=10,
                       env=dict(env, DATABASE_URL=postgres.url))
    assert r.returncode == 0, r.stderr


async def create_loop(port, client_id, stop_at, created, failures, keepalive):
    """Creates todos with unique titles until `stop_at`; records (id, title) of every 201."""
    conn = None
    i = 0
    while time.monotonic() < stop_at:
        i += 1
        title = f"chaos-{client_id}-{i}"
        body = json.dumps({"title": title}).encode()
        request = (f"POST /todos HTTP/1.1\r\nHost: c\r\nContent-Type: application/json\r\nContent-Length: {len(body)}\r\n"
                   + ("" if keepalive else "Connection: close\r\n") + "\r\n").encode() + body
        try:
            if conn is None:
                conn = await asyncio.wait_for(asyncio.open_connection("127.0.0.1", port), 10)
            reader, writer = conn
            writer.write(request)
            await writer.drain()
            head = await asyncio.wait_for(reader.readuntil(b"\r\n\r\n"), 15)
            lines = head.decode().split("\r\n")
            fields = {k.strip().lower(): v.strip() for k, _, v in (l.partition(":") for l in lines[1:] if l)}
            answer = await asyncio.wait_for(reader.readexactly(int(fields.get("content-length", "0"))), 15)
            code = int(lines[0][9:12])
            if code == 201:
                todo = json.loads(answer)
                if todo["title"] != title:
                    failures.append(("wrong-title", title, todo))
                created.append((todo["id"], title))
            else:
                failures.append((code, title, answer[:200]))
            if not keepalive or fields.get("connection", "").lower() == "close":
                if keepalive:
                    failures.append(("server-closed-keepalive", title))
                writer.close()
                conn = None
        except (OSError, asyncio.IncompleteReadError, asyncio.TimeoutError, ValueError) as e:
            failures.append((type(e).__name__, title, str(e)[:200]))
            if conn:
                conn[1].close()
            conn = None
    if conn:
        conn[1].close()


def test_todo_creates_under_reloads_and_scaling(daemon_factory, postgres):
    """Issue 16's chaos run on the todo API: 16 clients (keep-alive and a new connection per
    request) create todos with unique titles for ~15 s while the cluster reloads and scales; every
    request answers 201 and every 201's row is in the database exactly once."""
    d = start_todo(daemon_factory, postgres.url, workers=2, pool=4)
    duration = float(os.environ.get("TODO_CHAOS_DURATION", "15"))
    created, failures = [], []
    events = []

    def drive_events(stop_at):
        rng = random.Random(16)
        n = 0
        while time.monotonic() < stop_at - 1.5:
            n += 1
            if n % 2:
                d.config["app"]["poolSize"] = rng.choice([2, 3, 4])
                d.write_config()
                r = d.ctl("reload", "--wait")
                events.append(("reload", r.returncode))
            else:
                workers = rng.choice([1, 2, 3, 4])
                r = d.ctl("scale", str(workers))
                events.append((f"scale {workers}", r.returncode))
                if r.returncode == 0:
                    wait_ready(d, workers)
            time.sleep(0.3)

    async def run():
        stop_at = time.monotonic() + duration
        events_thread = asyncio.get_running_loop().run_in_executor(None, drive_events, stop_at)
        await asyncio.gather(*[create_loop(d.port, c, stop_at, created, failures, keepalive=c % 2 == 0) for c in range(16)])
        await events_thread

    asyncio.run(run())
    print(f"todo chaos: {len(created)} created in {duration:g} s, {len(failures)} failed, events {events}")
    assert failures == [], (len(failures), failures[:10], events)
    assert all(rc == 0 for _, rc in events) and sum(1 for e, _ in events if e == "reload") >= 3, events
    assert len(created) > 500, len(created)
    rows = postgres.psql("SELECT id, title FROM todos WHERE title LIKE 'chaos-%'")
    in_db = sorted((int(i), t) for i, t in rows)
    assert len({t for _, t in in_db}) == len(in_db), "a title was inserted twice"
    assert in_db == sorted(created), (len(in_db), len(created))


def test_a_worker_with_driver_threads_still_drains_on_term(daemon_factory, postgres):
    """The factory starts threads (PostgresNIO's event loop, the concurrency pool): they inherit a
    signal mask with TERM blocked, so a TERM to the worker reaches its signalfd (the master runs the
    stop) instead of killing it (it was: 'killed by SIGTERM; restarting')."""
    import signal
    from conftest import children, status, wait_until
    d = start_todo(daemon_factory, postgres.url, workers=1)
    assert json_call(d.port, "POST", "/todos", {"title": "before"})[0] == 201
    worker = children(d.proc.pid)[0]
    threads = os.listdir(f"/proc/{worker}/task")
    assert len(threads) > 1, "the factory started no thread: this test proves nothing"
    for tid in threads:
        blocked = int(open(f"/proc/{worker}/task/{tid}/status").read().split("SigBlk:")[1].split()[0], 16)
        assert blocked & (1 << (signal.SIGTERM - 1)), f"thread {tid} of the worker takes TERM"
    os.kill(worker, signal.SIGTERM)
    wait_until(lambda: "runs the stop; serving until it says drain" in d.log_text(), what="the worker's TERM notice")
    time.sleep(0.3)
    assert worker in children(d.proc.pid) and "killed by SIGTERM" not in d.log_text()
    assert json_call(d.port, "POST", "/todos", {"title": "after"})[0] == 201
