"""Access log (combined and JSON, reopen for logrotate), Prometheus metrics for the whole cluster
(checked with prometheus_client's own parser), clusterctl status/top reading the same numbers."""
import json
import os
import signal
import socket
import subprocess
import time

import pytest

from prometheus_client.parser import text_string_to_metric_families

from conftest import get, raw_exchange, status, wait_ready, wait_until


def metrics(port):
    code, body = get(port, "/metrics")
    assert code == 200
    families = {f.name: f for f in text_string_to_metric_families(body.decode())}
    return families


def value(families, name, **labels):
    for fam in families.values():
        for s in fam.samples:
            if s.name == name and all(s.labels.get(k) == v for k, v in labels.items()):
                return s.value
    raise KeyError(name)


def test_combined_access_log_and_reopen(daemon_factory, tmpdir_short):
    log = os.path.join(tmpdir_short, "access.log")
    d = daemon_factory({"workers": 2, "accessLog": {"path": log, "format": "combined"}})
    wait_ready(d, 2)
    subprocess.run(["curl", "-sS", "-o", "/dev/null", "-A", 'agent "quoted"', "-e", "http://ref/", f"http://127.0.0.1:{d.port}/?q=1"], timeout=10)
    get(d.port, "/missing")
    wait_until(lambda: os.path.exists(log) and len(open(log).read().splitlines()) >= 2, what="log lines")
    lines = open(log).read().splitlines()
    first = [l for l in lines if "GET /?q=1" in l][0]
    assert first.startswith("127.0.0.1 - - [")
    assert '"GET /?q=1 HTTP/1.1" 200 12 "http://ref/" "agent \\x22quoted\\x22"' in first
    assert any('"GET /missing HTTP/1.1" 404 10' in l for l in lines)
    # logrotate: move the file away, then reopen.
    os.rename(log, log + ".1")
    r = d.ctl("reopen-logs", check=True)
    time.sleep(0.3)
    get(d.port, "/after-rotate")
    d.signal(signal.SIGUSR1)
    time.sleep(0.3)
    get(d.port, "/after-usr1")
    wait_until(lambda: os.path.exists(log) and "after-usr1" in open(log).read(), what="new log file")
    assert "/after-rotate" in open(log).read()
    assert "/after-rotate" not in open(log + ".1").read()


def test_json_access_log(daemon_factory, tmpdir_short):
    log = os.path.join(tmpdir_short, "access.jsonl")
    d = daemon_factory({"accessLog": {"path": log, "format": "json"}})
    wait_ready(d, 1)
    raw_exchange(d.port, b"GET /p%22x HTTP/1.1\r\nHost: t\r\nUser-Agent: t\xe9\"x\r\nConnection: close\r\n\r\n")
    raw_exchange(d.port, b"GET / HTTP/1.1\r\nHost : t\r\n\r\n")
    wait_until(lambda: os.path.exists(log) and len(open(log).read().splitlines()) == 2, what="log lines")
    first, second = [json.loads(l) for l in open(log).read().splitlines()]
    assert first["method"] == "GET" and first["target"] == "/p%22x" and first["status"] == 404
    assert first["userAgent"] == "t\u00e9\"x" and first["remote"] == "127.0.0.1" and first["time"].endswith("Z")
    assert second["status"] == 400 and second["method"] == "-" and second["error"] == "whitespace between field name and colon"


def test_metrics_cover_the_whole_cluster(daemon_factory):
    d = daemon_factory({"workers": 3})
    wait_ready(d, 3)
    for _ in range(60):
        get(d.port)
    get(d.port, "/nope")
    fams = metrics(d.port)
    # Any worker answers for all of them.
    assert value(fams, "clusterd_requests_total") >= 61
    assert value(fams, "clusterd_responses_total", **{"class": "4xx"}) >= 1
    assert value(fams, "clusterd_workers") == 3
    assert value(fams, "clusterd_generation") == 1
    per_worker = [s for s in fams["clusterd_worker_requests"].samples]
    assert len(per_worker) == 3 and {s.labels["slot"] for s in per_worker} == {"0", "1", "2"}
    assert sum(s.value for s in per_worker) >= 61
    hist = fams["clusterd_request_duration_seconds"]
    count = [s.value for s in hist.samples if s.name.endswith("_count")][0]
    inf = [s.value for s in hist.samples if s.name.endswith("_bucket") and s.labels["le"] == "+Inf"][0]
    assert count == inf >= 61
    # Totals survive workers leaving (a reload replaces all three).
    before = value(fams, "clusterd_requests_total")
    d.ctl("reload", "--wait", check=True)
    wait_ready(d, 3, generation=2)
    wait_until(lambda: len(metrics(d.port)["clusterd_worker_requests"].samples) == 3, what="old generation to leave")
    fams = metrics(d.port)
    assert value(fams, "clusterd_requests_total") >= before
    assert value(fams, "clusterd_reloads_total") == 1
    # clusterctl reads the same numbers.
    assert status(d)["requests"] >= before


def test_metrics_path_can_be_turned_off(daemon_factory):
    d = daemon_factory({"metricsPath": None})
    wait_ready(d, 1)
    assert get(d.port, "/metrics")[0] == 404


def test_clusterctl_top(daemon_factory):
    d = daemon_factory({"workers": 2})
    wait_ready(d, 2)
    r = d.ctl("top", "--iterations", "2", "--interval", "0.3", check=True)
    assert r.stdout.count("clusterd top — generation 1, 2 workers") == 2
    assert "REQ/S" in r.stdout and len([l for l in r.stdout.splitlines() if l.split()[:1] in (["0"], ["1"])]) == 4


def busy_polls(port):
    fams = metrics(port)
    return value(fams, "clusterd_busy_polls_total", result="event") + value(fams, "clusterd_busy_polls_total", result="timeout")


@pytest.mark.parametrize("busy_poll", [20, 0])
def test_busy_poll_backs_off_for_a_slow_client(daemon_factory, busy_poll):
    """After serving, a worker polls briefly for its next event before it sleeps (busyPoll), but
    only while that pays: for a client that sends one request every 3 ms the polls run out, and
    after the first misses the worker sleeps at once, probing every 32nd turn. busyPoll 0 never
    polls. The counts are in /metrics."""
    d = daemon_factory({"busyPoll": busy_poll})
    wait_ready(d, 1)
    before = busy_polls(d.port)
    with socket.create_connection(("127.0.0.1", d.port), timeout=5) as s:
        for _ in range(200):
            s.sendall(b"GET / HTTP/1.1\r\nHost: t\r\n\r\n")
            data = b""
            while not data.endswith(b"Hello world!"):
                chunk = s.recv(4096)
                assert chunk
                data += chunk
            time.sleep(0.003)
    polls = busy_polls(d.port) - before
    if busy_poll == 0:
        assert polls == 0
    else:
        # 200 requests and a few /metrics reads: one poll per turn would be 200 or more.
        assert 1 <= polls <= 30, polls
