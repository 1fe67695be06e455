#!/usr/bin/env bash
# `make bench`: every benchmark, one after another on a quiet machine; each writes bench/<name>.md and .json.
set -euo pipefail
cd "$(dirname "$0")/.."
PY=.venv/bin/python
for bench in scripts/bench_*.py; do
  echo "== $bench"
  $PY "$bench"
done
echo "results: $(ls bench/*.md | tr '\n' ' ')"
