"""Issue 14: `clusterctl upgrade` switches to the binary now on disk in place — same PID, listeners,
control socket and stats — and replaces the workers as a reload does, under the chaos test's load
(every answer checked byte for byte), with no failed request; a binary that cannot run the config,
or is not a program at all, leaves the old master serving and the command fails with the reason."""
import asyncio
import json
import os
import shutil
import signal
import subprocess

from conftest import BIN, free_port, load_chaos, unix_get, wait_for_port, wait_until

def build_id(path):
    out = subprocess.run([path, "--version"], capture_output=True, text=True, timeout=30).stdout
    # "clusterd 0.1.0 (build X)", or an app's "clusterd-example 1.0.0 (clusterd 0.1.0, build X)".
    return out.split("build ")[1].rstrip(")\n")


def install_rebuilt(source, target):
    """A copy of `source` whose GNU build ID differs (one byte of the note flipped): another build of
    the same code, installed over `target` the way a package manager does (write aside, rename)."""
    data = bytearray(open(source, "rb").read())
    old = bytes.fromhex(build_id(source))
    assert data.count(old) == 1, "the build ID note is found exactly once"
    i = data.index(old) + len(old) - 1
    data[i] ^= 0xFF
    tmp = target + ".new"
    with open(tmp, "wb") as f:
        f.write(data)
    os.chmod(tmp, 0o755)
    os.rename(tmp, target)
    return build_id(target)


def install_file(target, data, mode=0o755):
    tmp = target + ".new"
    with open(tmp, "wb") as f:
        f.write(data)
    os.chmod(tmp, mode)
    os.rename(tmp, target)


def test_upgrades_under_load_lose_nothing_and_a_bad_binary_changes_nothing(tmpdir_short):
    chaos = load_chaos()
    bindir = os.path.join(tmpdir_short, "bin")
    os.makedirs(bindir)
    shutil.copy(os.path.join(BIN, "clusterd-example"), bindir)
    shutil.copy(os.path.join(BIN, "clusterctl"), bindir)
    binary = os.path.join(bindir, "clusterd-example")
    pristine = os.path.join(tmpdir_short, "pristine")
    shutil.copy(binary, pristine)

    class UpgradeChaos(chaos.Chaos):
        def upgrade(self):
            before = json.loads(self.ctl("status", "--json").stdout)
            want = install_rebuilt(pristine if before["build"] != build_id(pristine) else binary, binary)
            r = self.ctl("upgrade")
            after = json.loads(self.ctl("status", "--json").stdout)
            self.upgrades.append((before["build"], want, after["build"], before["pid"], after["pid"], r.stdout + r.stderr))
            return r.returncode == 0 and after["build"] == want and after["pid"] == before["pid"] and not after["binaryDiffers"]

        def bad_upgrade(self, data, reason):
            good = open(binary, "rb").read()
            install_file(binary, data)
            r = self.ctl("upgrade")
            install_file(binary, good)
            status = json.loads(self.ctl("status", "--json").stdout)
            self.refusals.append(r.stderr)
            return r.returncode == 1 and reason in r.stderr and status["state"] == "running" and status["draining"] == 0

        async def events_loop(self):
            await asyncio.sleep(1)
            plan = [("upgrade", self.upgrade), ("reload", lambda: self.reload(1)), ("upgrade", self.upgrade),
                    ("scale 4", lambda: self.scale(4)), ("upgrade", self.upgrade),
                    ("bad binary", lambda: self.bad_upgrade(open("/bin/false", "rb").read(), "exited with code 1")),
                    ("not a program", lambda: self.bad_upgrade(b"#!/bin/sh\nexit 0\n", "not a 64-bit little-endian ELF file")),
                    ("upgrade", self.upgrade)]
            for name, fn in plan:
                await self.event(name, fn)

    args = type("Args", (), {"duration": 12, "bin": bindir, "keepalive": 12, "close": 6, "pipeline": 3, "pause": 0.5,
                             "json": None, "defer_accept": False})()
    run = UpgradeChaos(args)
    run.upgrades, run.refusals = [], []
    asyncio.run(run.run())
    report = run.report()
    print(json.dumps({"report": report, "upgrades": run.upgrades, "refusals": run.refusals}))
    assert report["events_failed"] == [], (report, run.upgrades, run.refusals, run.log_text[-3000:])
    assert report["events_by_kind"].get("upgrade") == 4, report
    assert report["failures"] == {} and report["failures_excused_killed_worker_in_flight"] == {}, (report, run.log_text[-3000:])
    assert report["responses_verified"] > 2000, report
    assert len({u[3] for u in run.upgrades} | {u[4] for u in run.upgrades}) == 1, "one master PID throughout"


def test_a_worker_of_another_build_refuses_to_serve():
    """The hand-shake's build check: a worker whose master runs another build exits 78 and says so
    (the master never starts one: it spawns from its own image; this starts one by hand)."""
    binary = os.path.join(BIN, "clusterd")
    own = build_id(binary)
    other = ("0" if own[0] != "0" else "1") + own[1:]
    env = {"PATH": os.environ.get("PATH", ""), "CLUSTERD_WORKER_SLOT": "0", "CLUSTERD_GENERATION": "1", "LISTEN_FDS": "1",
           "CLUSTERD_CHANNEL_FD": "4", "CLUSTERD_STATS_FD": "5", "CLUSTERD_CONFIG_FD": "6", "CLUSTERD_IMAGE_FD": "7",
           "CLUSTERD_STATS_SLOTS": "2", "CLUSTERD_STATS_SLOT": "0", "CLUSTERD_MASTER_PID": str(os.getpid()),
           "CLUSTERD_CONFIG": "c.json", "CLUSTERD_BUILD": other}
    r = subprocess.run([binary], env=env, capture_output=True, text=True, timeout=30)
    assert r.returncode == 78, r.stderr
    assert f"version skew: this worker's binary is build {own}, its master runs build {other}" in r.stderr, r.stderr


def test_an_upgrade_keeps_a_unix_socket_listener(tmpdir_short):
    """Issue 15: a Unix-socket listener passes to the new image like a TCP one: the same socket and
    file (not unlinked by the old image, not made again by the new), still served; a stop removes it."""
    bindir = os.path.join(tmpdir_short, "bin")
    os.makedirs(bindir)
    shutil.copy(os.path.join(BIN, "clusterd"), bindir)
    binary = os.path.join(bindir, "clusterd")
    port = free_port()
    path = os.path.join(tmpdir_short, "http.sock")
    control = os.path.join(tmpdir_short, "control.sock")
    config = os.path.join(tmpdir_short, "clusterd.json")
    with open(config, "w") as f:
        json.dump({"workers": 2, "listen": [f"127.0.0.1:{port}", f"unix:{path}"], "controlSocket": control,
                   "drainTimeout": 5, "routes": [{"path": "/", "body": "served"}]}, f)
    log = open(os.path.join(tmpdir_short, "clusterd.log"), "ab")
    proc = subprocess.Popen([binary, "--config", config], stdout=log, stderr=subprocess.STDOUT, start_new_session=True)
    ctl = lambda *a: subprocess.run([os.path.join(BIN, "clusterctl"), "--socket", control, *a], capture_output=True, text=True, timeout=60)
    try:
        wait_for_port(port, proc=proc)
        wait_until(lambda: json.loads(ctl("status", "--json").stdout or "{}").get("ready") == 2, what="2 ready workers")
        inode = os.lstat(path).st_ino
        assert unix_get(path) == (200, b"served")
        want = install_rebuilt(binary, binary)
        r = ctl("upgrade")
        assert r.returncode == 0, r.stdout + r.stderr
        status = json.loads(ctl("status", "--json").stdout)
        assert status["build"] == want and status["listeners"] == 2 + 1
        assert os.lstat(path).st_ino == inode
        assert [unix_get(path) for _ in range(20)] == [(200, b"served")] * 20
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(timeout=20) == 0
        assert not os.path.exists(path)
    finally:
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait(timeout=5)
        log.close()
