"""ASAP's group-relative derived targets as a run reads them: ``python scripts/asap_targets.py [--config.x=y ...]``.

Reads the ASAP store of ``configs/asap.py`` (with the given overrides, e.g. ``--config.encoder.name=midi``) through
`crescend_jax.data.run_table.run_table` with ``data.targets="derived"``, and prints a markdown card: windows, same-music
groups, works, group sizes; per target the share of windows with a defined target, the within-group pairs a ranking
loss can use, the share of near-ties (|gap| <= ``--min_gap`` in robust within-group SDs, which the ranking losses skip
with ``model.loss.min_label_gap`` at that value), the robust within-group SD in the label's own unit, and the
within-group correlation between targets (targets that move together cannot be told apart by their heads).
"""

from __future__ import annotations

import sys

import numpy as np

from crescend_jax.config import load_config
from crescend_jax.data.groups import within_group_pairs
from crescend_jax.data.run_table import run_table
from crescend_jax.data.targets import LOG_LABELS


def card(table, min_gap: float) -> str:
    names = table.label_names
    first = np.unique(table.keys, return_index=True)[1]  # one row per performance (the first render)
    groups, values, raw = table.groups[first], table.label_mean[first], table.derived[first]
    sizes = np.unique(groups, return_counts=True)[1]
    i, j = within_group_pairs(groups)
    lines = [f"{len(first)} windows (performances of 4-bar passages), {len(sizes)} same-music groups, "
             f"{len(set(table.works.tolist()))} works, {len(set(table.compositions.tolist()))} score folders; "
             f"group size median {np.median(sizes):g}, mean {sizes.mean():.1f}, max {sizes.max()}; "
             f"{len(i)} within-group pairs.", "",
             f"| target | defined | usable pairs | near-ties (|gap| <= {min_gap:g}) | within-group SD (unit) |",
             "|---|---|---|---|---|"]
    for k, name in enumerate(names):
        gap = np.abs(values[i, k] - values[j, k])
        usable = np.isfinite(gap)
        column = raw[:, table.derived_names.index(name)].astype(np.float64)
        column = np.log(column) if name in LOG_LABELS else column
        centred = column - _group_means(column, groups)
        ok = np.isfinite(values[:, k]) & (values[:, k] != 0)
        spread = np.median(centred[ok] / values[ok, k])  # the one scale s_k of y = centred / s_k
        unit = "log bpm (a ratio)" if name in LOG_LABELS else "label unit"
        lines.append(f"| {name} | {np.isfinite(values[:, k]).mean():.3f} | {usable.sum()} | "
                     f"{(gap[usable] <= min_gap).mean():.3f} | {spread:.4g} ({unit}) |")
    finite = np.where(np.isfinite(values), values, np.nan)
    lines += ["", "Within-group correlation of the targets (pairwise over windows where both are defined):", "",
              "| | " + " | ".join(names) + " |", "|---" * (len(names) + 1) + "|"]
    for a, name in enumerate(names):
        cells = []
        for b in range(len(names)):
            both = np.isfinite(finite[:, a]) & np.isfinite(finite[:, b])
            cells.append(f"{np.corrcoef(finite[both, a], finite[both, b])[0, 1]:.2f}")
        lines.append(f"| {name} | " + " | ".join(cells) + " |")
    return "\n".join(lines)


def _group_means(column: np.ndarray, groups: np.ndarray) -> np.ndarray:
    _, ids = np.unique(groups, return_inverse=True)
    finite = np.isfinite(column)
    sums = np.bincount(ids[finite], weights=column[finite], minlength=ids.max() + 1)
    counts = np.bincount(ids[finite], minlength=ids.max() + 1)
    with np.errstate(invalid="ignore", divide="ignore"):
        return (sums / counts)[ids]


def main(argv: list[str]) -> None:
    min_gap = 0.1
    overrides = []
    for arg in argv:
        if arg.startswith("--min_gap="):
            min_gap = float(arg.split("=", 1)[1])
        else:
            overrides.append(arg)
    config = load_config("configs/asap.py", ["--config.data.targets=derived", *overrides])
    print(card(run_table(config), min_gap))


if __name__ == "__main__":
    main(sys.argv[1:])
