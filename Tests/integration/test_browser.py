"""A real browser (headless Chromium) loads the shipped demo page (www/) from clusterd: the page,
its stylesheet, script and logo, and the script's fetch of /metrics; the screenshot shows the
stylesheet applied."""
import os
import shutil
import struct
import subprocess
import zlib

import pytest

from conftest import wait_ready, wait_until

WWW = os.path.realpath(os.path.join(os.path.dirname(os.path.abspath(__file__)), "../../www"))
CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser")


def png_pixel(path, x, y):
    """RGB of one pixel of an 8-bit RGB/RGBA PNG, decoded with zlib only."""
    data = open(path, "rb").read()
    assert data[:8] == b"\x89PNG\r\n\x1a\n"
    pos, idat = 8, b""
    while pos < len(data):
        length, kind = struct.unpack(">I4s", data[pos:pos + 8])
        chunk = data[pos + 8:pos + 8 + length]
        if kind == b"IHDR":
            width, height, depth, color = struct.unpack(">IIBB", chunk[:10])
        elif kind == b"IDAT":
            idat += chunk
        pos += 12 + length
    assert depth == 8 and color in (2, 6)
    bpp = 3 if color == 2 else 4
    raw = zlib.decompress(idat)
    stride = width * bpp
    prev = bytearray(stride)
    for row in range(y + 1):
        f = raw[row * (stride + 1)]
        line = bytearray(raw[row * (stride + 1) + 1:(row + 1) * (stride + 1)])
        for i in range(stride):
            a = line[i - bpp] if i >= bpp else 0
            b = prev[i]
            c = prev[i - bpp] if i >= bpp else 0
            if f == 1:
                line[i] = (line[i] + a) & 255
            elif f == 2:
                line[i] = (line[i] + b) & 255
            elif f == 3:
                line[i] = (line[i] + (a + b) // 2) & 255
            elif f == 4:
                p = a + b - c
                pa, pb, pc = abs(p - a), abs(p - b), abs(p - c)
                line[i] = (line[i] + (a if pa <= pb and pa <= pc else b if pb <= pc else c)) & 255
        prev = line
    return tuple(prev[x * bpp:x * bpp + 3])


@pytest.mark.skipif(CHROMIUM is None, reason="chromium is not installed (make test installs it)")
def test_headless_chromium_loads_the_demo_page(daemon_factory, tmpdir_short):
    log = os.path.join(tmpdir_short, "access.log")
    d = daemon_factory({"workers": 2, "routes": [], "static": [{"prefix": "/", "root": WWW}],
                        "accessLog": {"path": log, "format": "combined"}})
    wait_ready(d, 2)
    shot = os.path.join(tmpdir_short, "shot.png")
    r = subprocess.run([CHROMIUM, "--headless", "--no-sandbox", "--disable-gpu", "--hide-scrollbars",
                        f"--user-data-dir={tmpdir_short}/chromium", "--virtual-time-budget=3000",
                        "--window-size=900,600", f"--screenshot={shot}", f"http://127.0.0.1:{d.port}/"],
                       capture_output=True, text=True, timeout=120)
    assert os.path.exists(shot), r.stderr[-2000:]
    wanted = ['"GET / HTTP/1.1" 200', '"GET /style.css HTTP/1.1" 200', '"GET /logo.svg HTTP/1.1" 200',
              '"GET /app.js HTTP/1.1" 200', '"GET /metrics HTTP/1.1" 200']
    wait_until(lambda: all(w in open(log).read() for w in wanted), timeout=10, what="every asset in the access log")
    assert "HeadlessChrome" in open(log).read()
    # The header's background from style.css (#00587a) and the body's (#0f3057).
    assert png_pixel(shot, 5, 5) == (0x00, 0x58, 0x7a)
    assert png_pixel(shot, 5, 590) == (0x0f, 0x30, 0x57)
