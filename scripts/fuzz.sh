#!/usr/bin/env bash
# Builds the libFuzzer target over ClusterHTTP and runs it.
#   scripts/fuzz.sh SECONDS      (make fuzz: FUZZ_SECONDS, default 300)
#   scripts/fuzz.sh --runs N     N inputs from a fixed seed: the same run every time (the test suite)
# New crashers land in Fuzz/crashers/ (commit them: the unit tests replay every file there).
set -euo pipefail
cd "$(dirname "$0")/.."
if [ "${1:-}" = "--runs" ]; then
  limit=(-runs="${2:?--runs needs a count}" -seed=1)
  what="${2} inputs (seed 1)"
else
  limit=(-max_total_time="${1:-300}")
  what="${1:-300}s"
fi
SWIFTC=${SWIFTC:-$(command -v swiftc || echo /opt/swift/usr/bin/swiftc)}
mkdir -p .build/fuzz Fuzz/crashers
work=$(mktemp -d /tmp/cd-fuzz-XXXXXX)
trap 'rm -rf "$work"' EXIT
"$SWIFTC" -module-name ClusterHTTP -parse-as-library -O -sanitize=fuzzer,address \
  Sources/ClusterHTTP/*.swift Fuzz/HTTPFuzz.swift -o .build/fuzz/http-fuzzer 2> "$work/build.log" \
  || { cat "$work/build.log" >&2; exit 1; }
# The committed corpus seeds the run; what the fuzzer finds goes to a scratch corpus.
cp Fuzz/corpus/* "$work/" 2>/dev/null || true
mkdir -p "$work/corpus" && mv "$work"/seed-* "$work/corpus/" 2>/dev/null || true
set +e
.build/fuzz/http-fuzzer "$work/corpus" "${limit[@]}" -max_len=4096 -timeout=10 -rss_limit_mb=2048 \
  -artifact_prefix=Fuzz/crashers/ -print_final_stats=1 2>&1 | tail -25
rc=${PIPESTATUS[0]}
set -e
if [ "$rc" -ne 0 ]; then
  echo "fuzz: the fuzzer found a failure (saved in Fuzz/crashers/)" >&2
  exit "$rc"
fi
echo "fuzz: ${what} without a failure"
