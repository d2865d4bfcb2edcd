"""`clusterd --check-config` and start-up with bad configs."""
import json
import os
import subprocess

from conftest import CLUSTERD


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
