#!/usr/bin/env bash
# Builds the libFuzzer targets and runs them. Each target is a folder Fuzz/NAME/ with one harness
# (*.swift), a seed corpus (corpus/), the inputs it ever failed on (crashers/, replayed by the
# unit tests: commit them) and optionally a libFuzzer dictionary (dict: tokens such as key names). The sources each target is compiled with are listed in sources_for.
#   scripts/fuzz.sh SECONDS            every target for SECONDS each (make fuzz: FUZZ_SECONDS, default 300)
#   scripts/fuzz.sh --runs N           every target, N inputs from a fixed seed (the test suite)
#   FUZZ_TARGETS="http control" scripts/fuzz.sh ...   only those targets
set -euo pipefail
cd "$(dirname "$0")/.."

# The module a target is built as, and the package sources compiled into it with its harness.
sources_for() {
  case "$1" in
    http) echo "ClusterHTTP Sources/ClusterHTTP/*.swift" ;;
    config) echo "ClusterConfig Sources/ClusterJSON/*.swift Sources/ClusterConfig/*.swift" ;;
    *) echo "fuzz: no sources listed for target $1 (scripts/fuzz.sh: sources_for)" >&2; return 1 ;;
  esac
}

if [ "${1:-}" = "--runs" ]; then
  limit=(-runs="${2:?--runs needs a count}" -seed=1)
  what="${2} inputs (seed 1)"
else
  limit=(-max_total_time="${1:-300}")
  what="${1:-300}s"
fi
targets=${FUZZ_TARGETS:-$(cd Fuzz && ls -d */ | tr -d /)}
SWIFTC=${SWIFTC:-$(command -v swiftc || echo /opt/swift/usr/bin/swiftc)}
mkdir -p .build/fuzz
work=$(mktemp -d /tmp/cd-fuzz-XXXXXX)
trap 'rm -rf "$work"' EXIT
failed=0
for t in $targets; do
  read -r module sources < <(sources_for "$t")
  mkdir -p "Fuzz/$t/crashers" "$work/$t"
  # shellcheck disable=SC2086
  "$SWIFTC" -module-name "$module" -parse-as-library -O -sanitize=fuzzer,address \
    $sources Fuzz/"$t"/*.swift -o ".build/fuzz/$t-fuzzer" 2> "$work/$t.build.log" \
    || { cat "$work/$t.build.log" >&2; exit 1; }
  # The committed corpus seeds the run; what the fuzzer finds goes to a scratch corpus.
  cp Fuzz/"$t"/corpus/* "$work/$t/" 2>/dev/null || true
  # What it failed on before is tried first, every run.
  find "Fuzz/$t/crashers" -type f ! -name '.*' -exec cp {} "$work/$t/" \;
  dict=()
  [ -f "Fuzz/$t/dict" ] && dict=(-dict="Fuzz/$t/dict")
  set +e
  ".build/fuzz/$t-fuzzer" "$work/$t" "${limit[@]}" "${dict[@]}" -max_len=4096 -timeout=10 -rss_limit_mb=2048 \
    -artifact_prefix="Fuzz/$t/crashers/" -print_final_stats=1 2>&1 | tail -25
  rc=${PIPESTATUS[0]}
  set -e
  if [ "$rc" -ne 0 ]; then
    echo "fuzz: target $t found a failure (saved in Fuzz/$t/crashers/)" >&2
    failed=$rc
  else
    echo "fuzz: $t: ${what} without a failure"
  fi
done
exit "$failed"
