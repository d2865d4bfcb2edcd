#!/usr/bin/env bash
# Builds the libFuzzer targets and runs them. Each target is a folder Fuzz/NAME/ with one harness
# (*.swift), a seed corpus (corpus/), the inputs it ever failed on (crashers/, replayed by the
# unit tests: commit them) and optionally a libFuzzer dictionary (dict: tokens such as key names). The sources each target is compiled with are listed in sources_for.
#   scripts/fuzz.sh SECONDS            every target for SECONDS each (make fuzz: FUZZ_SECONDS, default 300)
#   scripts/fuzz.sh --runs N           every target, N inputs from a fixed seed (the test suite)
#   FUZZ_TARGETS="http control" scripts/fuzz.sh ...   only those targets (http, proxy, config, control)
set -euo pipefail
cd "$(dirname "$0")/.."
# A failing input must end the run at once: Swift's crash reporter would otherwise symbolicate the
# fuzzer's huge binary for minutes before libFuzzer writes the crasher and exits.
export SWIFT_BACKTRACE=enable=no

# The package modules a target is built from, one "MODULE SOURCES..." line each, in dependency
# order. The last line is the module compiled together with the harness into the fuzzer; the lines
# before it are built first as modules of their own (a C module from its .c files and include/), so
# a harness can reach code whose module imports others.
sources_for() {
  case "$1" in
    http)
      # ClusterHTTP as a module of its own; the harness and its driver (shared with the unit tests)
      # are the module HTTPFuzz over it.
      echo "ClusterHTTP Sources/ClusterHTTP/*.swift"
      echo "HTTPFuzz" ;;
    proxy)
      # The PROXY protocol parser is part of ClusterHTTP: the same module, the harness and its driver
      # (shared with the unit tests) as the module ProxyFuzz over it.
      echo "ClusterHTTP Sources/ClusterHTTP/*.swift"
      echo "ProxyFuzz" ;;
    config) echo "ClusterConfig Sources/ClusterJSON/*.swift Sources/ClusterConfig/*.swift" ;;
    control)
      # The control protocol over ClusterJSON, and the master's pure state machine (MasterCore*.swift
      # and its actions: the executor's syscalls stay out). The harness is its own module, ControlFuzz.
      echo "CClusterShims Sources/CClusterShims/shims.c"
      echo "ClusterSystem Sources/ClusterSystem/*.swift"
      echo "ClusterJSON Sources/ClusterJSON/*.swift"
      echo "ClusterControl Sources/ClusterControl/*.swift"
      echo "ClusterConfig Sources/ClusterConfig/*.swift"
      echo "ClusterMaster Sources/ClusterMaster/MasterAction.swift Sources/ClusterMaster/MasterCore*.swift"
      echo "ControlFuzz" ;;
    *) echo "fuzz: no sources listed for target $1 (scripts/fuzz.sh: sources_for)" >&2; return 1 ;;
  esac
}

# --runs N gives each target N inputs, scaled by its cost: an input of the control target runs a
# whole master (start, commands, events, stop), about a fifth as fast as an HTTP exchange, so it
# gets N/5 and the suite's run stays about as long per target.
runs_for() {
  case "$1" in
    control) echo $(( $2 / 5 > 0 ? $2 / 5 : 1 )) ;;
    *) echo "$2" ;;
  esac
}

if [ "${1:-}" = "--runs" ]; then
  runs="${2:?--runs needs a count}"
else
  runs=""
fi
targets=${FUZZ_TARGETS:-$(cd Fuzz && ls -d */ | tr -d /)}
SWIFTC=${SWIFTC:-$(command -v swiftc || echo /opt/swift/usr/bin/swiftc)}
mkdir -p .build/fuzz
work=$(mktemp -d /tmp/cd-fuzz-XXXXXX)
trap 'rm -rf "$work"' EXIT
failed=0
for t in $targets; do
  mapfile -t lines < <(sources_for "$t")
  [ "${#lines[@]}" -gt 0 ] || exit 1
  mkdir -p "Fuzz/$t/crashers" "$work/$t" "$work/$t.modules"
  modules="$work/$t.modules"
  objects=()
  for line in "${lines[@]:0:${#lines[@]}-1}"; do
    read -r dep depsources <<< "$line"
    case "$depsources" in
      *.c)
        # A C module: its include/ folder behind a generated module map, its .c files instrumented.
        include=$(cd "$(dirname "${depsources%% *}")/include" && pwd)
        printf 'module %s {\n  umbrella "%s"\n  export *\n}\n' "$dep" "$include" >> "$modules/module.modulemap"
        for c in $depsources; do
          "$(dirname "$SWIFTC")/clang" -c -O1 -fsanitize=fuzzer-no-link,address -I "$include" "$c" \
            -o "$modules/$dep-$(basename "$c" .c).o" 2>> "$work/$t.build.log" || { cat "$work/$t.build.log" >&2; exit 1; }
          objects+=("$modules/$dep-$(basename "$c" .c).o")
        done ;;
      *)
        # shellcheck disable=SC2086
        "$SWIFTC" -module-name "$dep" -parse-as-library -O -wmo -sanitize=fuzzer,address -I "$modules" \
          -emit-module -emit-module-path "$modules/$dep.swiftmodule" -c $depsources -o "$modules/$dep.o" \
          2>> "$work/$t.build.log" || { cat "$work/$t.build.log" >&2; exit 1; }
        objects+=("$modules/$dep.o") ;;
    esac
  done
  read -r module sources <<< "${lines[${#lines[@]}-1]}"
  # shellcheck disable=SC2086
  "$SWIFTC" -module-name "$module" -parse-as-library -O -sanitize=fuzzer,address -I "$modules" \
    $sources Fuzz/"$t"/*.swift "${objects[@]}" -o ".build/fuzz/$t-fuzzer" 2>> "$work/$t.build.log" \
    || { cat "$work/$t.build.log" >&2; exit 1; }
  if [ -n "$runs" ]; then
    limit=(-runs="$(runs_for "$t" "$runs")" -seed=1)
    what="$(runs_for "$t" "$runs") inputs (seed 1)"
  else
    limit=(-max_total_time="${1:-300}")
    what="${1:-300}s"
  fi
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
