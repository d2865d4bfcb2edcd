#!/bin/bash
# Instructions per request in the worker for GET PATH on keep-alive (callgrind), e.g. to compare a
# sync and an async route of clusterd-example. Usage: scripts/worker-callgrind-path.sh BINARY PATH [N1] [N2]
# With STATIC_ROOT=DIR, DIR is served under /static/ (e.g. PATH=/static/1k.html); HEADER="Name: value"
# adds a request header (e.g. HEADER="Range: bytes=4096-20479").
set -euo pipefail
# valgrind 3.19's DWARF reader gives up on the release binary's debug info since the TLS target
# (CTLS) joined it ("possibly corrupted debuginfo"): count a copy without it (symbols stay, so
# profiles still name functions).
STRIPPED=$(mktemp /tmp/callgrind-bin.XXXX)
trap 'rm -f "$STRIPPED"' EXIT
BIN=$1; P=$2; N1=${3:-1000}; N2=${4:-5000}
objcopy --strip-debug "$BIN" "$STRIPPED"; chmod +x "$STRIPPED"; BIN=$STRIPPED
count() {
    local n=$1 dir port vg f pid
    dir=$(mktemp -d /tmp/cgq.XXXX)
    port=$(python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])')
    local static=""
    [ -n "${STATIC_ROOT:-}" ] && static=", \"static\": [{\"prefix\": \"/static/\", \"root\": \"$STATIC_ROOT\"}]"
    cat > "$dir/c.json" <<J
{"workers": 1, "listen": ["127.0.0.1:$port"], "controlSocket": "$dir/ctl.sock", "busyPoll": 0, "releaseMemoryAfterIdle": 0,
 "routes": [{"path": "/", "status": 200, "contentType": "text/plain", "body": "Hello world!"}]$static}
J
    valgrind --tool=callgrind --trace-children=yes --callgrind-out-file="$dir/cg.%p" "$BIN" --config "$dir/c.json" >"$dir/log" 2>&1 &
    vg=$!
    python3 - "$port" "$n" "$P" "${HEADER:-}" <<'PY'
import socket, sys, time
port, n, path, header = int(sys.argv[1]), int(sys.argv[2]), sys.argv[3], sys.argv[4]
for _ in range(600):
    try:
        socket.create_connection(("127.0.0.1", port)).close(); break
    except OSError: time.sleep(0.1)
time.sleep(1.0)
req = ("GET %s HTTP/1.1\r\nHost: x\r\n%s\r\n" % (path, header + "\r\n" if header else "")).encode()
s = socket.create_connection(("127.0.0.1", port)); buf = b""
for i in range(n):
    s.sendall(req)
    while True:
        i2 = buf.find(b"\r\n\r\n")
        if i2 >= 0:
            head = buf[:i2]; cl = int([l.split(b":")[1] for l in head.split(b"\r\n") if l.lower().startswith(b"content-length")][0])
            if len(buf) >= i2 + 4 + cl: buf = buf[i2+4+cl:]; break
        buf += s.recv(65536)
PY
    kill -TERM "$vg"; wait "$vg" || true
    for f in "$dir"/cg.*; do pid=${f##*.}; [ "$pid" = "$vg" ] && continue; sed -n 's/^\(summary\|totals\): \([0-9]*\).*/\2/p' "$f" | head -1; done
    rm -rf "$dir"
}
a=$(count "$N1"); b=$(count "$N2")
echo "$P: $(( (b - a) / (N2 - N1) )) instructions per request"
