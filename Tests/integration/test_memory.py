"""An idle worker gives back the code and read-only data pages it mapped while starting and serving
(`releaseMemoryAfterIdle`), keeps serving correctly afterwards, and a worker with it off keeps them."""
import os
import time

from conftest import Daemon, children, get, wait_ready


def mapped_readonly_file_kb(pid):
    """RSS of private, non-writable, file-backed mappings: what MemoryRelease may give back."""
    total, counting = 0, False
    with open(f"/proc/{pid}/smaps") as f:
        for line in f:
            head = line.split()
            if "-" in head[0] and len(head) >= 5 and ":" in head[3]:
                perms = head[1]
                counting = len(head) >= 6 and head[5].startswith("/") and perms[1] == "-" and perms[3] == "p"
            elif counting and line.startswith("Rss:"):
                total += int(head[1])
    return total


def test_idle_worker_releases_clean_file_pages(tmpdir_short):
    daemons = []
    try:
        for name, seconds in (("release", 0.5), ("keep", 0)):
            tmp = os.path.join(tmpdir_short, name)
            os.mkdir(tmp)
            d = Daemon(tmp, {"releaseMemoryAfterIdle": seconds})
            daemons.append(d)
            d.start()
            wait_ready(d, 1)
        workers = []
        for d in daemons:
            for path in ("/", "/healthz", "/metrics", "/nope") * 50:
                code, _ = get(d.port, path)
                assert code in (200, 404)
            workers.append(children(d.proc.pid)[0])
        time.sleep(2.0)
        released, kept = (mapped_readonly_file_kb(w) for w in workers)
        print("read-only file pages mapped (KiB): released", released, "kept", kept)
        assert kept > 2000, kept
        assert released < kept / 2, (released, kept)
        # Everything still works afterwards, in the same worker (nothing crashed and respawned).
        for path, expected in (("/", b"Hello world!"), ("/healthz", None)):
            code, body = get(daemons[0].port, path)
            assert code == 200
            if expected is not None:
                assert body == expected
        assert children(daemons[0].proc.pid) == [workers[0]]
        assert "cannot release idle memory" not in daemons[0].log_text()
    finally:
        for d in daemons:
            d.stop()
