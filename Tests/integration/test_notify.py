"""sd_notify as systemd would see it: a fake NOTIFY_SOCKET records every message and its sender."""
import json
import os
import signal
import socket
import struct
import threading
import time

from conftest import wait_ready, wait_until


class NotifyRecorder:
    def __init__(self, path):
        self.path = path
        self.sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
        self.sock.bind(path)
        self.sock.setsockopt(socket.SOL_SOCKET, socket.SO_PASSCRED, 1)
        self.sock.settimeout(0.2)
        self.messages = []  # (pid, {key: value})
        self.timed = []  # (time.monotonic(), {key: value})
        self.stop = threading.Event()
        self.thread = threading.Thread(target=self.run, daemon=True)
        self.thread.start()

    def run(self):
        while not self.stop.is_set():
            try:
                data, anc, _, _ = self.sock.recvmsg(65536, socket.CMSG_SPACE(12))
            except socket.timeout:
                continue
            pid = None
            for level, kind, payload in anc:
                if level == socket.SOL_SOCKET and kind == socket.SCM_CREDENTIALS:
                    pid, _, _ = struct.unpack("iII", payload[:12])
            fields = dict(line.split("=", 1) for line in data.decode().splitlines() if "=" in line)
            self.messages.append((pid, fields))
            self.timed.append((time.monotonic(), fields))

    def close(self):
        self.stop.set()
        self.thread.join()
        self.sock.close()

    def lifecycle(self):
        """Messages that change the unit's state (not the periodic STATUS= or WATCHDOG=)."""
        return [f for _, f in self.messages if {"READY", "RELOADING", "STOPPING"} & f.keys()]


def test_notify_sequence(daemon_factory, tmpdir_short):
    rec = NotifyRecorder(os.path.join(tmpdir_short, "notify.sock"))
    try:
        d = daemon_factory({"workers": 2}, env={"NOTIFY_SOCKET": rec.path}, wait=False)
        wait_until(lambda: rec.lifecycle(), what="READY=1")
        wait_ready(d, 2)
        first = rec.lifecycle()[0]
        assert first["READY"] == "1"
        assert first["STATUS"].startswith("2 workers, generation 1")

        before = len(rec.messages)
        d.ctl("scale", "3", check=True)
        wait_ready(d, 3)
        time.sleep(0.2)
        scale_msgs = [f for _, f in rec.messages[before:]]
        assert scale_msgs and all(f.keys() == {"STATUS"} for f in scale_msgs), scale_msgs
        assert any("3 workers" in f["STATUS"] for f in scale_msgs)

        n = len(rec.lifecycle())
        d.ctl("reload", "--wait", check=True)
        wait_until(lambda: len(rec.lifecycle()) >= n + 2, what="reload notifications")
        reloading, ready = rec.lifecycle()[n:n + 2]
        assert reloading["RELOADING"] == "1" and int(reloading["MONOTONIC_USEC"]) > 0 and "READY" not in reloading
        assert ready["READY"] == "1" and "generation 2" in ready["STATUS"]

        with open(d.config_path, "w") as f:
            f.write("{")
        n = len(rec.lifecycle())
        assert d.ctl("reload", "--wait").returncode == 1
        wait_until(lambda: len(rec.lifecycle()) >= n + 2, what="failed reload notifications")
        reloading, ready = rec.lifecycle()[n:n + 2]
        assert reloading["RELOADING"] == "1"
        assert ready["READY"] == "1" and ready["STATUS"].startswith("reload failed:")

        d.signal(signal.SIGTERM)
        assert d.proc.wait(timeout=10) == 0
        time.sleep(0.3)
        assert rec.lifecycle()[-1]["STOPPING"] == "1"
        # Only the master talks to systemd.
        assert {pid for pid, _ in rec.messages} == {d.proc.pid}
    finally:
        rec.close()


def test_watchdog_is_fed(daemon_factory, tmpdir_short):
    rec = NotifyRecorder(os.path.join(tmpdir_short, "notify.sock"))
    try:
        d = daemon_factory({"workers": 1}, env={"NOTIFY_SOCKET": rec.path, "WATCHDOG_USEC": "400000"})
        wait_ready(d, 1)
        time.sleep(1.5)
        pings = [f for _, f in rec.messages if f.get("WATCHDOG") == "1"]
        assert len(pings) >= 4
    finally:
        rec.close()
