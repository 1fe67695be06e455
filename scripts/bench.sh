#!/usr/bin/env bash
# `make bench`: the CPU benchmarks one after another on a quiet machine. Results go to bench/tmp/ (ignored by git);
# `make bench BENCH_ARGS=--publish` writes the tracked bench/ instead, `BENCH_ARGS=--quick` runs the short versions.
#   1. bench_train.py      every approach's step, both units, widths 4,096 and 1,024, exact FLOPs (train.md)
#   1b. bench_sequence.py  the same step behind the sequence trunk over score-aligned frames (train_sequence.md)
#   2. bench_reference.py  the PyTorch reference's steps back to back with ours, when its harness exists in
#                          $CRESCEND_PEER (default /work/peer; ../shared/peer-bench/setup.sh makes it) (reference.md)
#   3. bench_profile.py    where each step's time goes, XLA flags, the phase-2 work order (profile.md)
#   4. bench_infonce.py    the tiled InfoNCE alone (infonce.md)
# Full run: about 25 minutes on an idle 2-core machine; --quick about 12. MuQ's own benchmarks (bench_muq*.py) need
# its weights and run separately; bench_gpu.py is `make bench-gpu`.
set -euo pipefail
cd "$(dirname "$0")/.."
PY=${PY:-.venv/bin/python}
export PYTHONPATH=$PWD${PYTHONPATH:+:$PYTHONPATH}
started=$(date +%s)
for bench in bench_train bench_sequence bench_reference bench_profile bench_infonce; do
  echo "== scripts/$bench.py $* (load average: $(cut -d' ' -f1-3 /proc/loadavg))"
  "$PY" "scripts/$bench.py" "$@"
done
echo "done in $(( $(date +%s) - started )) s"
