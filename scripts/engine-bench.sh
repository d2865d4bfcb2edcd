#!/usr/bin/env bash
# Instructions per request of the HTTP engine (parser + state machine + response), counted by
# callgrind: repeatable whatever else the machine does. Usage: scripts/engine-bench.sh [REQUESTS]
set -euo pipefail
cd "$(dirname "$0")/.."
n=${1:-200000}
SWIFTC=${SWIFTC:-$(command -v swiftc || echo /opt/swift/usr/bin/swiftc)}
mkdir -p .build/engine-bench
"$SWIFTC" -O -wmo -parse-as-library -module-name ClusterHTTP Sources/ClusterHTTP/*.swift Bench/EngineBench.swift -o .build/engine-bench/engine-bench
command -v valgrind >/dev/null || { echo "engine-bench: valgrind is missing (apt-get install valgrind)" >&2; exit 1; }
run() {
  valgrind --tool=callgrind --callgrind-out-file=/dev/null .build/engine-bench/engine-bench "$1" 2>&1 | sed -n 's/.*Collected : \([0-9]*\).*/\1/p'
}
base=$(run 16)
total=$(run "$n")
echo "engine-bench: $(( (total - base) / (n - 16) )) instructions per request ($n pipelined GETs, callgrind)"
