"""Every system of a sweep against the best ridge reference of the whole sweep, paired on the same held-out pairs.

    python scripts/versus_best_ridge.py [runs/percepiano_table]

The sweep's own table compares each system with the ridge *on its own inputs*. The PercePiano table's question is
harder: does any approach beat the best ridge of the table, whatever its inputs (e.g. a network on score-aligned
beats against the ridge on the MIDI features)? This script reads the sweep's ``results.json``
(`crescend_jax.sweeps.results`), takes the point whose ridge reference has the highest seed-pooled accuracy, and for
every pooled point computes the paired difference

    Δ = acc(point, seeds pooled) - acc(best ridge)

on the pairs both predict, with the evaluation's own bootstrap (`crescend_jax.evaluate.seed_pooling.pooled_difference`:
by default two-stage over held-out compositions then same-music groups, the point's seeds as a further stage). The
ridge predictions are recomputed from each seed's folds exactly as the evaluation computes them
(`crescend_jax.evaluate.reference.reference_predictions` on the run's table and folds), and the held-out rows of the
two systems must be the same keys in the same order (the same folds of the same corpus; one render per key, so an
audio store's rows pair with a symbolic store's); a point whose rows differ is
listed as not comparable. Beside it, ``fixed_set`` holds the same differences with ``eval.bootstrap=
"within_composition"`` (same-music groups resampled inside each held-out composition, the set of compositions fixed):
the answer for *these* compositions, which is all a held-out set of fewer than 5 compositions can give. Writes ``versus_best_ridge.json`` beside ``results.json``; `scripts/generate_readme.py`
renders it in the README's PercePiano block.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Any

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from crescend_jax.evaluate.comparison import bootstrap_options, load_heldout  # noqa: E402
from crescend_jax.evaluate.nested import nested_get  # noqa: E402
from crescend_jax.evaluate.predict import read_config  # noqa: E402
from crescend_jax.evaluate.run import eval_settings  # noqa: E402
from crescend_jax.evaluate.seed_pooling import pooled_difference  # noqa: E402
from crescend_jax.evaluate.summary import to_json  # noqa: E402
from crescend_jax.sweeps.results import RESULTS_FILE, _Tables  # noqa: E402

OUT_FILE = "versus_best_ridge.json"
FIXED_SET = "within_composition"  # `crescend_jax.evaluate.bootstrap`: groups resampled inside each composition


def _seed_dirs(point: dict[str, Any]) -> list[Path]:
    return [Path(row["workdir"]) for row in point.get("per_seed") or []]


def best_ridge(results: dict[str, Any]) -> str | None:
    """The point whose seed-pooled ridge reference has the highest mean accuracy (None when no point has one)."""
    scored = {name: nested_get(p, "pooled.reference.interval.mean.estimate")
              for name, p in results["points"].items() if p.get("pooled")}
    scored = {name: value for name, value in scored.items() if value is not None}
    return max(scored, key=scored.get) if scored else None


def compare(root: str | Path) -> dict[str, Any]:
    """``root``'s results.json -> {"best": {...}, "points": {name: paired difference or {"error": ...}}}."""
    root = Path(root)
    results = json.loads((root / RESULTS_FILE).read_text())
    best = best_ridge(results)
    if best is None:
        raise SystemExit(f"error: no point of {root / RESULTS_FILE} has a ridge reference")
    tables = _Tables()
    best_dirs = _seed_dirs(results["points"][best])
    best_config = read_config(best_dirs[0])
    best_heldout = tables.heldout(best_config, best_dirs[0])
    ridge = tables.reference(best_config, best_dirs[0], best_heldout)
    out: dict[str, Any] = {"best": {"point": best, "encoder": results["points"][best].get("encoder"),
                                    "interval": results["points"][best]["pooled"]["reference"]["interval"]},
                           "points": {}, "fixed_set": {}}
    for name, point in results["points"].items():
        dirs = _seed_dirs(point)
        if not point.get("pooled") or not dirs:
            continue
        config = read_config(dirs[0])
        heldout = tables.heldout(config, dirs[0])
        if not np.array_equal(heldout.keys, best_heldout.keys):  # renders differ across encoders (audio vs symbolic)
            out["points"][name] = {"error": "held-out keys differ from the best ridge's (not the same pairs)"}
            continue
        runs = [load_heldout(workdir, heldout) for workdir in dirs]
        boot = bootstrap_options(config, eval_settings(config))
        out["points"][name] = pooled_difference(runs, [ridge], heldout, **boot)
        if boot["scheme"] != FIXED_SET:  # the fixed-set question beside it, labelled as such
            out["fixed_set"][name] = pooled_difference(runs, [ridge], heldout, **{**boot, "scheme": FIXED_SET})
    return to_json(out)


def main(argv: list[str]) -> int:
    root = Path(argv[0] if argv else ROOT / "runs" / "percepiano_table")
    out = compare(root)
    (root / OUT_FILE).write_text(json.dumps(out, indent=1, default=str))
    best = out["best"]
    print(f"best ridge: {best['point']} ({best['encoder']}) {best['interval']['mean']['estimate']:.3f}")
    for name, difference in out["points"].items():
        if "error" in difference:
            print(f"{name:45s} {difference['error']}")
            continue
        mean = difference["mean"]
        fixed = out["fixed_set"].get(name, {}).get("mean")
        print(f"{name:45s} {mean['estimate']:+.3f} [{mean['low']:+.3f}, {mean['high']:+.3f}]"
              f"{' *' if difference.get('real') else ''}{' (!)' if difference.get('degenerate') else ''}"
              + (f"   fixed set [{fixed['low']:+.3f}, {fixed['high']:+.3f}]" if fixed else ""))
    print(f"wrote {root / OUT_FILE}")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
