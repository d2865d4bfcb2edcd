"""clusterctl's command line, parsed by swift-argument-parser alone (no argv rewriting): the
connection options go before the subcommand or after it, after wins, and a relative scale count
(`-1`) is a count, not an option."""
import subprocess

from conftest import CLUSTERCTL, wait_ready


def ctl(*args):
    return subprocess.run([CLUSTERCTL, *args], capture_output=True, text=True, timeout=60)


def test_connection_options_before_or_after_the_subcommand(daemon):
    path = daemon.socket_path
    for args in (["--socket", path, "status"], ["status", "--socket", path], [f"--socket={path}", "--timeout=5", "workers"],
                 ["--timeout", "5", "workers", "--socket", path]):
        r = ctl(*args)
        assert r.returncode == 0, f"{args}: {r.stderr}"
    # Given on both sides, the subcommand's own option wins.
    r = ctl("--socket", "/nonexistent/clusterd.sock", "status", "--socket", path)
    assert r.returncode == 0, r.stderr
    r = ctl("--socket", path, "status", "--socket", "/nonexistent/clusterd.sock")
    assert r.returncode == 3 and "/nonexistent/clusterd.sock" in r.stderr
    # A bad value is a usage error wherever it is given.
    assert ctl("--timeout", "0", "status", "--socket", path).returncode == 64
    assert ctl("status", "--socket", path, "--timeout", "0").returncode == 64


def test_relative_scale_counts_with_options_around_them(daemon):
    path = daemon.socket_path
    r = ctl("--socket", path, "scale", "+1", "--wait")
    assert r.returncode == 0 and "scaled to 2 workers" in r.stdout, r.stderr
    wait_ready(daemon, workers=2)
    r = ctl("scale", "-1", "--socket", path, "--wait")
    assert r.returncode == 0 and "scaled to 1 workers" in r.stdout, r.stderr
    wait_ready(daemon, workers=1)
    r = ctl("--socket", path, "scale", "-x")
    assert r.returncode == 64 and "'-x' is not N, +k or -k" in r.stderr
