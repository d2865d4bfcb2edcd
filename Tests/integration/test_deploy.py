"""Issue 15's deployment artifacts: the Kubernetes manifests validate against the API schema
(`kubernetes-validate` from PyPI, no cluster here), the ConfigMap's config is one clusterd accepts,
and the pod's timings agree with it; `"workers": "auto"` follows a CPU limit (cgroup quota)."""
import json
import os
import shutil
import subprocess
import sys

import pytest
import yaml

from conftest import BIN, free_port

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
K8S = os.path.join(ROOT, "deploy/kubernetes")
VENV = os.path.join(ROOT, ".build/venv-kubernetes-validate")


def manifests():
    docs = {}
    for name in sorted(os.listdir(K8S)):
        if name.endswith(".yaml"):
            with open(os.path.join(K8S, name)) as f:
                for doc in yaml.safe_load_all(f):
                    docs[doc["kind"]] = doc
    return docs


def validator():
    """kubernetes-validate in a venv under .build (made once; PyPI needed the first time)."""
    tool = os.path.join(VENV, "bin/kubernetes-validate")
    if not os.path.exists(tool):
        subprocess.run([sys.executable, "-m", "venv", VENV], check=True, timeout=300)
        r = subprocess.run([os.path.join(VENV, "bin/pip"), "install", "-q", "kubernetes-validate"], capture_output=True, text=True, timeout=600)
        if r.returncode != 0:
            shutil.rmtree(VENV, ignore_errors=True)
            pytest.skip(f"cannot install kubernetes-validate from PyPI: {r.stderr.strip()[-300:]}")
    return tool


def test_manifests_validate_against_the_kubernetes_schema():
    files = [os.path.join(K8S, n) for n in sorted(os.listdir(K8S)) if n.endswith(".yaml")]
    assert len(files) == 3
    r = subprocess.run([validator(), "--strict", *files], capture_output=True, text=True, timeout=300)
    assert r.returncode == 0, r.stdout + r.stderr
    assert r.stdout.count("passed") == 3, r.stdout


def test_the_configmap_config_is_valid_and_the_pod_timings_agree(tmpdir_short):
    docs = manifests()
    text = docs["ConfigMap"]["data"]["clusterd.json"]
    path = os.path.join(tmpdir_short, "clusterd.json")
    with open(path, "w") as f:
        f.write(text)
    r = subprocess.run([os.path.join(BIN, "clusterd"), "--check-config", "--config", path], capture_output=True, text=True, timeout=30)
    assert r.returncode == 0, r.stderr
    config = json.loads(text)
    pod = docs["Deployment"]["spec"]["template"]["spec"]
    container = pod["containers"][0]
    # TERM → shutdownDelay of serving → drainTimeout → fast stop, KILL 3 s later: all inside the grace.
    assert pod["terminationGracePeriodSeconds"] >= config["shutdownDelay"] + config["drainTimeout"] + 3
    # The readiness probe turns red during shutdownDelay (and while a reload or upgrade has no ready
    # worker): /readyz on the port the config listens on; liveness: /healthz.
    port = int(config["listen"][0].rsplit(":", 1)[1])
    assert container["ports"][0]["containerPort"] == port
    assert container["readinessProbe"]["httpGet"]["path"] == "/readyz"
    assert container["livenessProbe"]["httpGet"]["path"] == "/healthz"
    ready = container["readinessProbe"]
    assert ready["periodSeconds"] * ready["failureThreshold"] < config["shutdownDelay"], "the probe sees 503 before the delay ends"
    # The control socket's directory is writable in a read-only root filesystem, and the pod is not root.
    mounts = {m["mountPath"] for m in container["volumeMounts"]}
    assert os.path.dirname(config["controlSocket"]) in mounts
    assert pod["securityContext"]["runAsNonRoot"] and container["securityContext"]["readOnlyRootFilesystem"]
    assert docs["Service"]["spec"]["selector"] == docs["Deployment"]["spec"]["selector"]["matchLabels"]


def cpu_cgroup(tmp_name):
    """A cgroup limited to half a CPU that this test may put a process in, or None: the v1 cpu
    controller's hierarchy if mounted, else cgroup v2 when the root delegates the cpu controller."""
    if os.geteuid() != 0:
        return None
    v1, v2 = "/sys/fs/cgroup/cpu", "/sys/fs/cgroup"
    if os.path.exists(os.path.join(v1, "cpu.cfs_quota_us")):
        base, limit_file, limit = v1, "cpu.cfs_quota_us", "50000"
    else:
        try:
            with open(os.path.join(v2, "cgroup.subtree_control")) as f:
                if "cpu" not in f.read().split():
                    return None
        except OSError:
            return None
        base, limit_file, limit = v2, "cpu.max", "50000 100000"
    path = os.path.join(base, tmp_name)
    try:
        os.makedirs(path, exist_ok=True)
        with open(os.path.join(path, limit_file), "w") as f:
            f.write(limit)
    except OSError:
        if os.path.isdir(path):
            os.rmdir(path)
        return None
    return path


def test_auto_workers_follow_the_cpu_limit(tmpdir_short):
    if os.cpu_count() < 2:
        pytest.skip("needs 2 CPUs to tell a limit of 1 from the affinity mask")
    group = cpu_cgroup(f"clusterd-test-{os.getpid()}")
    if group is None:
        pytest.skip("no cgroup with a CPU quota can be made here (needs root and a writable cpu controller)")
    try:
        config = os.path.join(tmpdir_short, "c.json")
        with open(config, "w") as f:
            json.dump({"workers": "auto", "listen": [f"127.0.0.1:{free_port()}"], "controlSocket": os.path.join(tmpdir_short, "c.sock")}, f)

        def enter():
            with open(os.path.join(group, "cgroup.procs"), "w") as f:
                f.write(str(os.getpid()))

        # The master logs how many workers it starts; `timeout` stops it (TERM: a graceful stop).
        r = subprocess.run(["timeout", "3", os.path.join(BIN, "clusterd"), "--config", config], capture_output=True, text=True,
                           preexec_fn=enter, timeout=30)
        assert "starting 1 workers" in r.stderr, r.stderr
    finally:
        subprocess.run(["rmdir", group])
