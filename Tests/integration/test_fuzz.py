"""A short, bounded libFuzzer run over the HTTP engine (`make fuzz` runs it for minutes)."""
import os
import shutil
import subprocess

import pytest

ROOT = os.path.join(os.path.dirname(os.path.abspath(__file__)), "../..")


def test_fuzz_http_engine_briefly():
    seconds = os.environ.get("FUZZ_SECONDS_IN_SUITE", "20")
    r = subprocess.run([os.path.join(ROOT, "scripts/fuzz.sh"), seconds], capture_output=True, text=True, timeout=600, cwd=ROOT)
    assert r.returncode == 0, r.stdout[-4000:] + r.stderr[-4000:]
    assert "without a failure" in r.stdout
