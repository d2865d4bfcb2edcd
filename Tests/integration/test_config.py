"""`clusterd --check-config` and start-up with bad configs."""
import json
import os
import subprocess

import pytest

from conftest import CLUSTERD, get, status, wait_ready


def check(tmp, text):
    path = os.path.join(tmp, "clusterd.json")
    with open(path, "w") as f:
        f.write(text)
    return subprocess.run([CLUSTERD, "--check-config", "--config", path], capture_output=True, text=True, timeout=10), path


def test_shipped_config_is_valid():
    here = os.path.dirname(__file__)
    r = subprocess.run([CLUSTERD, "--check-config", "--config", os.path.join(here, "../../config/clusterd.json")],
                       capture_output=True, text=True, timeout=10)
    assert r.returncode == 0, r.stderr
    assert "configuration is valid" in r.stdout


def test_out_of_range_names_file_and_key(tmpdir_short):
    r, path = check(tmpdir_short, json.dumps({"listen": ["0.0.0.0:8080"], "http": {"maxHeaderBytes": 12}}))
    assert r.returncode == 78
    assert f"{path}: http.maxHeaderBytes: must be 1024...1048576, got 12" in r.stderr


def test_unknown_key(tmpdir_short):
    r, path = check(tmpdir_short, json.dumps({"listen": ["0.0.0.0:8080"], "routes": [{"path": "/", "bdy": "x"}]}))
    assert r.returncode == 78
    assert f"{path}: routes[0].bdy: unknown key" in r.stderr


def test_not_json(tmpdir_short):
    r, path = check(tmpdir_short, "{ listen: nope }")
    assert r.returncode == 78
    assert "not valid JSON" in r.stderr


def test_missing_file():
    r = subprocess.run([CLUSTERD, "--check-config", "--config", "/nonexistent/x.json"], capture_output=True, text=True, timeout=10)
    assert r.returncode == 78
    assert "/nonexistent/x.json: cannot read" in r.stderr


def test_bad_argument():
    r = subprocess.run([CLUSTERD, "--frobnicate"], capture_output=True, text=True, timeout=10)
    assert r.returncode == 64
    assert "unknown argument" in r.stderr


def test_help_texts_match_golden_files():
    import os as _os
    golden = _os.path.join(_os.path.dirname(__file__), "golden")
    from conftest import CLUSTERCTL
    env = dict(_os.environ, COLUMNS="100")
    for args, name in [([CLUSTERCTL, "--help"], "clusterctl-help.txt"), ([CLUSTERCTL, "scale", "--help"], "clusterctl-scale-help.txt"),
                       ([CLUSTERD, "--help"], "clusterd-help.txt")]:
        out = subprocess.run(args, capture_output=True, text=True, timeout=10, env=env).stdout
        assert out == open(_os.path.join(golden, name)).read(), f"{name} changed: update the golden file if intended"


# Issue 12 item 14: what start-up (or a reload) refuses, --check-config refuses too, with the same
# message naming the file and the key; and the reverse. Each row: config overrides on the test
# daemon's config (port P), and the message.
def bad_configs(tmp, port):
    return [
        ({"accessLog": {"path": os.path.join(tmp, "missing", "access.log")}},
         f"accessLog.path: cannot open {tmp}/missing/access.log for appending: No such file or directory (the directory {tmp}/missing does not exist)"),
        ({"listen": [f"[:::::]:{port}"]}, f"listen[0]: \"[:::::]:{port}\": ':::::' is not a numeric IPv6 address"),
        ({"listen": [f"0.0.0.0:{port}", f"127.0.0.1:{port}"]},
         f"listen[1]: \"127.0.0.1:{port}\" overlaps listen[0] (0.0.0.0:{port}): 0.0.0.0:{port} already takes every IPv4 address on port {port}"),
        ({"listen": [f"[::]:{port}", f"[::1]:{port}"]},
         f"listen[1]: \"[::1]:{port}\" overlaps listen[0] ([::]:{port}): [::]:{port} already takes every IPv6 address on port {port}"),
        ({"routes": [{"path": "/healthz", "body": "mine"}]}, "routes[0].path: /healthz is served by clusterd itself"),
        ({"routes": [{"path": "/metrics", "body": "mine"}]}, "routes[0].path: /metrics is the metrics endpoint (metrics.path)"),
        ({"routes": [{"path": "/", "headers": {"Server": "mine"}}]}, "routes[0].headers.Server: is set by the server itself"),
        ({"routes": [{"path": "/", "headers": {"Date": "x"}}]}, "routes[0].headers.Date: is set by the server itself"),
        ({"static": [{"prefix": "/s/", "root": os.path.join(tmp, "nowhere")}]}, f"static[0].root: {tmp}/nowhere is not a readable directory"),
        ({"listn": [f"127.0.0.1:{port}"]}, "listn: unknown key (did you mean listen?)"),
    ]


def test_check_start_and_reload_refuse_the_same_configs(daemon_factory, tmpdir_short):
    running = daemon_factory({"workers": 1})
    wait_ready(running, 1)
    good = dict(running.config)
    rows = bad_configs(tmpdir_short, running.port)
    for overrides, message in rows:
        config = dict(good, **overrides)
        if "listn" in overrides:
            del config["listen"]
        # --check-config
        path = os.path.join(tmpdir_short, "bad.json")
        with open(path, "w") as f:
            json.dump(config, f)
        r = subprocess.run([CLUSTERD, "--check-config", "--config", path], capture_output=True, text=True, timeout=10)
        assert r.returncode == 78, (overrides, r.stdout, r.stderr)
        assert f"{path}: {message}" in r.stderr, (overrides, r.stderr)
        # start-up: exits 78 before it listens, same message
        s = subprocess.run([CLUSTERD, "--config", path], capture_output=True, text=True, timeout=10)
        assert s.returncode == 78, (overrides, s.stderr)
        assert f"{path}: {message}" in s.stderr, (overrides, s.stderr)
        # reload: refused, the old generation keeps serving
        running.write_config(config)
        rr = running.ctl("reload", "--wait")
        assert rr.returncode != 0, (overrides, rr.stdout)
        assert message in rr.stdout + rr.stderr, (overrides, rr.stdout, rr.stderr)
        st = status(running)
        assert st["generation"] == 1 and st["state"] == "running", st
        assert get(running.port)[0] == 200
    assert not os.path.exists(os.path.join(tmpdir_short, "missing"))
    # The good config still reloads: nothing above was half-applied.
    running.write_config(good)
    running.ctl("reload", "--wait", check=True)
    wait_ready(running, 1, generation=2)


def test_overlapping_v4_and_v6_wildcards_are_fine(tmpdir_short):
    """0.0.0.0 and [::] on one port do not overlap: the IPv6 listeners are IPV6_V6ONLY."""
    r, _ = check(tmpdir_short, json.dumps({"listen": ["0.0.0.0:8080", "[::]:8080"]}))
    assert r.returncode == 0, r.stderr


def unshare_ro(directory):
    """A command prefix that runs the rest in a private mount namespace where `directory` is a
    read-only file system (a tmpfs mounted ro over it)."""
    return ["unshare", "-m", "sh", "-c", f'mount -t tmpfs -o ro tmpfs "{directory}" && exec "$0" "$@"']


def test_access_log_on_a_read_only_file_system_is_refused(daemon_factory, tmpdir_short):
    ro = os.path.join(tmpdir_short, "ro")
    os.mkdir(ro)
    probe = subprocess.run(unshare_ro(ro) + ["true"], capture_output=True, timeout=10)
    if probe.returncode != 0:
        pytest.skip(f"cannot make a private read-only mount here: {probe.stderr.decode().strip()}")
    d = daemon_factory({"accessLog": {"path": os.path.join(ro, "access.log")}}, start=False,
                       prefix=unshare_ro(ro))
    d.write_config()
    message = f"accessLog.path: cannot open {ro}/access.log for appending: Read-only file system"
    r = subprocess.run(unshare_ro(ro) + [CLUSTERD, "--check-config", "--config", d.config_path], capture_output=True, text=True, timeout=10)
    assert r.returncode == 78 and message in r.stderr, r.stderr
    s = subprocess.run(unshare_ro(ro) + [CLUSTERD, "--config", d.config_path], capture_output=True, text=True, timeout=10)
    assert s.returncode == 78 and message in s.stderr, s.stderr


def test_comments_and_trailing_comma(tmpdir_short):
    text = '// staging\n{\n  /* loopback */ "listen": ["127.0.0.1:8080"], // here\n  "workers": 1\n}\n'
    r, _ = check(tmpdir_short, text)
    assert r.returncode == 0, r.stderr
    r, path = check(tmpdir_short, '{\n  "listen": ["127.0.0.1:8080"],\n}\n')
    assert r.returncode == 78
    assert f"{path}: not valid JSON: line 2, column 31: trailing comma before '}}' (JSON allows none)" in r.stderr


def test_unit_creates_the_log_directory_the_docs_use():
    """Without booting systemd: the shipped unit creates /var/log/clusterd, and nothing in it
    relies on a directory it does not create."""
    unit = open(os.path.join(os.path.dirname(__file__), "../../", "systemd/clusterd.service")).read()
    assert "\nLogsDirectory=clusterd\n" in unit and "\nProtectSystem=strict\n" in unit
    assert "ReadWritePaths=-/var/log/clusterd" not in unit
    docs = open(os.path.join(os.path.dirname(__file__), "../../", "Docs/configuration.md")).read()
    assert "/var/log/clusterd/access.log" in docs
