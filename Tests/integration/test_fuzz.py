"""A short, bounded libFuzzer run over every target in Fuzz/ (HTTP engine, control plane, ...; `make fuzz` runs them for minutes)."""
import os
import shutil
import subprocess

import pytest

ROOT = os.path.join(os.path.dirname(os.path.abspath(__file__)), "../..")


def test_fuzz_http_engine_briefly():
    # A fixed seed and a fixed number of inputs: the same run on every machine (make fuzz explores).
    runs = os.environ.get("FUZZ_RUNS_IN_SUITE", "300000")
    r = subprocess.run([os.path.join(ROOT, "scripts/fuzz.sh"), "--runs", runs], capture_output=True, text=True, timeout=900, cwd=ROOT)
    assert r.returncode == 0, r.stdout[-4000:] + r.stderr[-4000:]
    assert "without a failure" in r.stdout
