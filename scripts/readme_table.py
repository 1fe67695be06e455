"""The README's PercePiano table from a finished ``percepiano_table`` sweep: ``python scripts/readme_table.py DIR``.

One row per encoder: the ridge reference and every approach's held-out pairwise accuracy with its 95% interval
(bootstrap over same-music groups stratified by composition); * = the paired difference to the ridge reference on the
same inputs excludes 0. Reads each point's ``DIR/<approach>-<encoder>/seed_0/metrics.json``, prints markdown.
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
    lines = ["| inputs | ridge reference | baseline | A: contrastive | B: Siamese | C: dual encoder |",
             "|---|---|---|---|---|---|"]
    for key, label in ENCODERS.items():
        cells, reference = [], None
        for approach in APPROACHES:
            path = Path(root) / f"{approach}-{key}" / "seed_0" / "metrics.json"
            if not path.is_file():
                cells.append("n/a")
                continue
            metrics = json.loads(path.read_text())
            mean, diff = metrics["interval"]["mean"], metrics["reference"]["difference"]
            cells.append(cell(mean["estimate"], mean["low"], mean["high"], " *" if diff["excludes_zero"] else ""))
            ref = metrics["reference"]["interval"]["mean"]
            reference = reference or cell(ref["estimate"], ref["low"], ref["high"])
        lines.append(f"| {label} | {reference or 'n/a'} | " + " | ".join(cells) + " |")
    print("\n".join(lines))


if __name__ == "__main__":
    main(sys.argv[1] if len(sys.argv) > 1 else "runs/percepiano_table")
