#!/bin/bash
# Instructions per request in the worker process (callgrind; repeatable on a noisy machine), for
# comparing builds of the worker loop. Runs a one-worker daemon under valgrind twice (N1 and N2
# requests) and prints (I(N2) - I(N1)) / (N2 - N1), so start-up and shutdown cancel out.
# Usage: scripts/worker-callgrind.sh BINARY [keepalive|close] [N1] [N2]
set -euo pipefail
# valgrind 3.19's DWARF reader gives up on the release binary's debug info since the TLS target
# (CTLS) joined it ("possibly corrupted debuginfo"): count a copy without it (symbols stay, so
# profiles still name functions).
STRIPPED=$(mktemp /tmp/callgrind-bin.XXXX)
trap 'rm -f "$STRIPPED"' EXIT
BIN=$1; MODE=${2:-keepalive}; N1=${3:-2000}; N2=${4:-12000}
objcopy --strip-debug "$BIN" "$STRIPPED"; chmod +x "$STRIPPED"; BIN=$STRIPPED

count() {  # count N -> the worker's instruction total
    local n=$1 dir port vg f pid
    dir=$(mktemp -d /tmp/worker-callgrind.XXXX)
    port=$(python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])')
    cat > "$dir/c.json" <<J
{"workers": 1, "listen": ["127.0.0.1:$port"], "controlSocket": "$dir/ctl.sock", "busyPoll": 0,
 "releaseMemoryAfterIdle": 0,
 "routes": [{"path": "/", "status": 200, "contentType": "text/plain", "body": "Hello world!"}]}
J
    valgrind --tool=callgrind --trace-children=yes --callgrind-out-file="$dir/cg.%p" "$BIN" --config "$dir/c.json" >"$dir/log" 2>&1 &
    vg=$!
    python3 - "$port" "$n" "$MODE" <<'P'
import socket, sys, time
port, n, mode = int(sys.argv[1]), int(sys.argv[2]), sys.argv[3]
for _ in range(600):
    try:
        socket.create_connection(("127.0.0.1", port)).close(); break
    except OSError: time.sleep(0.1)
time.sleep(1.0)
close = mode == "close"
req = b"GET / HTTP/1.1\r\nHost: x\r\n" + (b"Connection: close\r\n" if close else b"") + b"\r\n"
s = None
for i in range(n):
    if s is None: s, buf = socket.create_connection(("127.0.0.1", port)), b""
    s.sendall(req)
    while b"Hello world!" not in buf: buf += s.recv(65536)
    buf = buf[buf.index(b"Hello world!") + 12:]
    if close: s.close(); s = None
P
    kill -TERM "$vg"; wait "$vg" || true
    for f in "$dir"/cg.*; do
        pid=${f##*.}
        [ "$pid" = "$vg" ] && continue  # the master
        sed -n 's/^\(summary\|totals\): \([0-9]*\).*/\2/p' "$f" | head -1
    done
    rm -rf "$dir"
}
a=$(count "$N1"); b=$(count "$N2")
echo "$MODE: $(( (b - a) / (N2 - N1) )) instructions per request in the worker ($N1 vs $N2 requests, callgrind)"
