#!/usr/bin/env bash
# Installs the Debian packages a make target needs, only those missing. Usage: deps.sh run|test|bench
# postgresql-15 (/usr/lib/postgresql/15/bin): Examples/todo's tests and benchmark start their own server.
set -euo pipefail
want=(libsystemd-dev libssl-dev pkg-config)
case "${1:-run}" in
  run) ;;
  test) want+=(openssl curl python3 python3-pytest python3-prometheus-client python3-yaml python3-venv procps iproute2 util-linux systemd chromium fonts-dejavu-core haproxy postgresql-15) ;;
  bench) want+=(wrk nginx-light curl python3 procps util-linux postgresql-15 gcc libc6-dev openssl) ;;
  *) echo "deps.sh: unknown target $1" >&2; exit 64 ;;
esac
missing=()
# A python3 on PATH other than Debian's (pyenv) that has pytest gets prometheus_client and PyYAML
# from PyPI.
if [ "${1:-run}" = test ] && command -v python3 >/dev/null && python3 -c 'import pytest' 2>/dev/null; then
  python3 -c 'import prometheus_client' 2>/dev/null || python3 -m pip install -q prometheus_client >/dev/null 2>&1 || true
  python3 -c 'import yaml' 2>/dev/null || python3 -m pip install -q pyyaml >/dev/null 2>&1 || true
fi
for p in "${want[@]}"; do
  # nginx-light and nginx both provide the nginx binary.
  if [ "$p" = nginx-light ] && command -v nginx >/dev/null 2>&1; then continue; fi
  dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q 'install ok installed' || missing+=("$p")
done
[ ${#missing[@]} -eq 0 ] && exit 0
echo "deps: installing ${missing[*]}"
SUDO=""
[ "$(id -u)" -eq 0 ] || SUDO="sudo"
export DEBIAN_FRONTEND=noninteractive
$SUDO apt-get update -qq
$SUDO apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
