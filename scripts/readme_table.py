"""The README's PercePiano table from a finished ``percepiano_table`` sweep: ``python scripts/readme_table.py DIR``.

One row per encoder: the ridge reference and every approach's held-out pairwise accuracy with its 95% interval
(bootstrap over same-music groups stratified by composition); * = the paired difference to the ridge reference on the
same inputs excludes 0. Reads ``DIR/results.json`` (written by `crescend-jax sweep`), prints markdown.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

APPROACHES = ("baseline", "approach_a", "approach_b", "approach_c")
ENCODERS = {"features": "audio features (librosa)", "midi": "MIDI features", "fused": "audio + MIDI (fusion)"}


def cell(accuracy: float, low: float, high: float, mark: str = "") -> str:
    return f"{accuracy:.3f} [{low:.3f}, {high:.3f}]{mark}"


def main(root: str) -> None:
    results = json.loads((Path(root) / "results.json").read_text())
    points = results["points"] if isinstance(results["points"], dict) else {p["name"]: p for p in results["points"]}
    lines = ["| inputs | ridge reference | baseline | A: contrastive | B: Siamese | C: dual encoder |",
             "|---|---|---|---|---|---|"]
    for key, label in ENCODERS.items():
        cells, reference = [], None
        for approach in APPROACHES:
            entry = points.get(f"{approach}-{key}")
            if not entry or not entry.get("per_seed"):
                cells.append("n/a")
                continue
            run = entry["per_seed"][0]
            real = run["vs_reference_low"] > 0 or run["vs_reference_high"] < 0
            cells.append(cell(run["accuracy"], run["low"], run["high"], " *" if real else ""))
            if reference is None:
                ref = json.loads((Path(run["workdir"]) / "metrics.json").read_text())["reference"]["interval"]["mean"]
                reference = cell(ref["estimate"], ref["low"], ref["high"])
        lines.append(f"| {label} | {reference or 'n/a'} | " + " | ".join(cells) + " |")
    print("\n".join(lines))


if __name__ == "__main__":
    main(sys.argv[1] if len(sys.argv) > 1 else "runs/percepiano_table")
