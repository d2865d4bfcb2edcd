"""The library example (Sources/clusterd-example): a user's handler with the whole cluster."""
import json
import os
import subprocess

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
