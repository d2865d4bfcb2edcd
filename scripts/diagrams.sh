#!/usr/bin/env bash
# Renders the diagrams in Docs/diagrams/*.dot to Docs/img/*.svg (needs graphviz: apt-get install graphviz).
set -euo pipefail
cd "$(dirname "$0")/.."
command -v dot >/dev/null || { echo "diagrams: graphviz (dot) is missing: apt-get install graphviz" >&2; exit 1; }
for src in Docs/diagrams/*.dot; do
  out="Docs/img/$(basename "${src%.dot}").svg"
  dot -Tsvg "$src" -o "$out"
  echo "diagrams: $out"
done
