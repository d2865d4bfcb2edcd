#!/usr/bin/env bash
# One kernel door (Docs/architecture.md): only ClusterSystem talks to the kernel. Fails, naming
# every file, when a Swift file under Sources/ imports a module that reaches the C library or the
# kernel from anywhere else:
#   Glibc, Musl, Darwin, Bionic, Android, WASILibc, ucrt, WinSDK  the platform C library;
#   SystemPackage, System                                        swift-system's syscall wrappers;
#   Foundation                                                   re-exports Glibc (FoundationEssentials
#                                                                does not, and stays allowed);
#   CClusterShims                                                ClusterSystem's own C shims;
#   CSystemd                                                     libsystemd, only for ClusterSystemd;
#   CTLS                                                         OpenSSL (libssl), only for ClusterTLS
#                                                                (OpenSSL does the TLS connection's own
#                                                                socket I/O; every other call still goes
#                                                                through ClusterSystem).
# Any spelling counts: `import Glibc`, `@preconcurrency import Glibc`, `public import Glibc`,
# `import struct Glibc.timespec`, inside `#if canImport(Glibc)` or not.
#
#   scripts/check-kernel-door.sh               check this checkout (make test runs it first)
#   scripts/check-kernel-door.sh --root DIR    check the Sources/ under DIR
#   scripts/check-kernel-door.sh --self-test   prove the check fails on what it must refuse
set -euo pipefail

# Files that may still import a forbidden module while their module is moved behind the door.
# Each entry must still need it (a stale entry fails the check too), and this list is to be empty.
ALLOWED=(
)

FORBIDDEN='Glibc|Musl|Darwin|Bionic|Android|WASILibc|ucrt|WinSDK|SystemPackage|System|Foundation|CClusterShims|CSystemd|CTLS'
# Optional attributes and access level, `import`, an optional declaration kind, the module.
IMPORT_RE="^[[:space:]]*(@[A-Za-z_]+[[:space:]]+)*((public|package|internal|fileprivate|private)[[:space:]]+)?import[[:space:]]+((typealias|struct|class|enum|protocol|let|var|func)[[:space:]]+)?($FORBIDDEN)([.[:space:]]|$)"

# The module a file may import: the door itself, ClusterSystemd's libsystemd, ClusterTLS's OpenSSL.
permitted() {  # FILE MODULE
  case "$1" in
    Sources/ClusterSystem/*) [ "$2" != CSystemd ] && [ "$2" != CTLS ] ;;
    Sources/ClusterSystemd/*) [ "$2" = CSystemd ] ;;
    Sources/ClusterTLS/*) [ "$2" = CTLS ] ;;
    *) return 1 ;;
  esac
}

check() {  # ROOT [ALLOWED...]
  local root=$1
  shift
  local -a allowed=("$@")
  local failed=0 file line module rel
  local -A needed=()
  while IFS= read -r file; do
    rel=${file#"$root"/}
    while IFS= read -r line; do
      module=$(sed -E "s/$IMPORT_RE.*/\6/" <<<"$line")
      permitted "$rel" "$module" && continue
      if [[ " ${allowed[*]-} " == *" $rel "* ]]; then
        needed[$rel]=1
        continue
      fi
      echo "kernel door: $rel imports $module (only Sources/ClusterSystem may; route the call through it): $line" >&2
      failed=1
    done < <(grep -E "$IMPORT_RE" "$file" || true)
  done < <(find "$root/Sources" -name '*.swift' | LC_ALL=C sort)
  for rel in "${allowed[@]}"; do
    if [ -z "${needed[$rel]-}" ]; then
      echo "kernel door: $rel no longer imports what it was allowed to: remove it from ALLOWED in $0" >&2
      failed=1
    fi
  done
  return $failed
}

self_test() {
  local dir
  dir=$(mktemp -d /tmp/kernel-door-XXXXXX)
  trap 'rm -rf "$dir"' RETURN
  mkdir -p "$dir/Sources/ClusterSystem" "$dir/Sources/ClusterSystemd" "$dir/Sources/ClusterTLS" "$dir/Sources/App"
  printf 'import CTLS\nimport ClusterSystem\n' >"$dir/Sources/ClusterTLS/Server.swift"
  printf 'import Glibc\nimport CClusterShims\n' >"$dir/Sources/ClusterSystem/Door.swift"
  printf 'import CSystemd\nimport ClusterSystem\n' >"$dir/Sources/ClusterSystemd/Notify.swift"
  printf '// import Glibc is what this must not do\nimport FoundationEssentials\nimport ClusterSystem\nimport SystemdKit\n' >"$dir/Sources/App/Clean.swift"
  printf 'import Glibc\n' >"$dir/Sources/App/Listed.swift"
  local out
  # Door files, comments, FoundationEssentials and modules that merely start alike pass.
  check "$dir" Sources/App/Listed.swift || { echo "kernel door self-test: a clean tree failed" >&2; return 1; }
  # Every spelling of a forbidden import outside the door fails, each file named.
  local -a spellings=(
    'import Glibc' '@preconcurrency import Glibc' '@preconcurrency @_implementationOnly import Musl'
    'public import Darwin' 'import struct Glibc.timespec' 'import func Glibc.write' '  import Foundation'
    'import SystemPackage' 'import CClusterShims' 'import CSystemd' 'import CTLS'
  )
  local i=0 s
  for s in "${spellings[@]}"; do
    printf '#if canImport(Glibc)\n%s\n#endif\n' "$s" >"$dir/Sources/App/Bad$i.swift"
    i=$((i + 1))
  done
  printf 'import Glibc\n' >"$dir/Sources/ClusterSystemd/Bad.swift"
  printf 'import Glibc\n' >"$dir/Sources/ClusterTLS/Bad.swift"
  if out=$(check "$dir" Sources/App/Listed.swift 2>&1); then
    echo "kernel door self-test: forbidden imports passed" >&2
    return 1
  fi
  for ((i = 0; i < ${#spellings[@]}; i++)); do
    grep -q "Sources/App/Bad$i.swift imports" <<<"$out" || { echo "kernel door self-test: missed '${spellings[$i]}'" >&2; return 1; }
  done
  grep -q "Sources/ClusterSystemd/Bad.swift imports Glibc" <<<"$out" || { echo "kernel door self-test: missed Glibc in ClusterSystemd" >&2; return 1; }
  grep -q "Sources/ClusterTLS/Bad.swift imports Glibc" <<<"$out" || { echo "kernel door self-test: missed Glibc in ClusterTLS" >&2; return 1; }
  if grep -q "Clean.swift\|Door.swift\|Notify.swift\|Listed.swift\|Server.swift" <<<"$out"; then
    echo "kernel door self-test: blamed an allowed file: $out" >&2
    return 1
  fi
  # A stale allow-list entry fails.
  rm "$dir"/Sources/App/Bad* "$dir/Sources/ClusterSystemd/Bad.swift" "$dir/Sources/ClusterTLS/Bad.swift"
  if check "$dir" Sources/App/Listed.swift Sources/App/Clean.swift 2>/dev/null; then
    echo "kernel door self-test: a stale allow-list entry passed" >&2
    return 1
  fi
  echo "kernel door self-test: ok"
}

case "${1:-}" in
  --self-test) self_test ;;
  --root) check "${2:?--root needs a directory}" "${ALLOWED[@]}" ;;
  "") cd "$(dirname "$0")/.." && check . "${ALLOWED[@]}" && echo "kernel door: only Sources/ClusterSystem imports the C library" ;;
  *) echo "usage: $0 [--self-test | --root DIR]" >&2; exit 64 ;;
esac
