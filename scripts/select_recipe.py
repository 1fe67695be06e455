"""A training recipe for small data, selected by nested cross-validation: ``python scripts/select_recipe.py``.

For every outer test composition c (leave-one-composition-out), each candidate recipe is trained and scored by
leave-one-composition-out over the *other* compositions only (``data.exclude_compositions=(c,)``: the outer test
composition is never read), the recipe with the best mean inner held-out pairwise accuracy is chosen for c, and only
then is it trained on all compositions but c and scored on c. The outer scores of the chosen recipes are pooled over
the compositions into one held-out accuracy with its 95% interval (bootstrap over same-music groups by
composition), compared (paired) with the default recipe's outer scores and with the ridge reference. No choice ever
sees the composition it is scored on.

Writes ``<workdir>/recipe.md`` and ``recipe.json`` (the README's recipe table comes from here). Inner and outer
runs are ordinary sweep points (``crescend_jax.sweeps``), so an interrupted selection resumes where it stopped.

    python scripts/select_recipe.py --workdir=runs/recipe [--base=configs/approach_a.py] [--root=DATA_ROOT]
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import ml_collections
import numpy as np

from crescend_jax.config import load_config
from crescend_jax.data.store import load_table
from crescend_jax.evaluate import comparison
from crescend_jax.evaluate.bootstrap import called_real
from crescend_jax.evaluate.reference import reference_predictions
from crescend_jax.evaluate.summary import evaluate_predictions, to_json
from crescend_jax.models.contract import Predictions
from crescend_jax.sweeps import default_sweep_config, point
from crescend_jax.sweeps.run import run_sweep

ROOT = Path(__file__).resolve().parents[1]
# Candidate recipes: name -> config fields. "default" is the approach's own config.
RECIPES = {
    "default": {},
    "regularised": {"train.weight_decay": 1e-2, "model.input_dropout": 0.2},
    "narrow": {"model.hidden_dim": 128, "model.projection_dim": 64},
    "short": {"train.num_steps": 300, "train.eval_every": 100},
}


def sweep_config(base: str, root: str, recipes: dict, fixed: dict) -> ml_collections.ConfigDict:
    sweep = default_sweep_config()
    sweep.name = "recipe"
    sweep.base = base
    sweep.seeds = (0,)
    sweep.baseline = "default"
    sweep.fixed = ml_collections.ConfigDict({"data": {"root": root, **fixed}})
    sweep.points = tuple(point(name, fields=fields, baseline="" if name == "default" else "default")
                         for name, fields in recipes.items())
    return sweep


def mean_accuracy(run: Path) -> float:
    return json.loads((run / "metrics.json").read_text())["pooled"]["pairwise_accuracy"]["mean"]


def pooled(runs: dict[str, Path], table) -> Predictions:
    """One scorer over ``table``: each row's scores from the outer run that held its composition out."""
    scores = np.full((len(table), 19), np.nan)
    for composition, run in runs.items():
        rows = np.flatnonzero(table.compositions == composition)
        scores[rows] = comparison.load_heldout(run, table.subset(rows)).scores
    return Predictions(scores=scores)


def _check(code: int) -> None:
    if code != 0:
        raise SystemExit(f"a sweep failed (exit {code}); see the messages above, fix, and rerun to resume")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--workdir", default=str(ROOT / "runs" / "recipe"))
    parser.add_argument("--base", default=str(ROOT / "configs" / "approach_a.py"))
    parser.add_argument("--root", default=str(ROOT.parent / "shared" / "data" / "percepiano"))
    args = parser.parse_args()
    workdir = Path(args.workdir)
    config = load_config(args.base, [f"--config.data.root={args.root}"])
    table = load_table(config)
    first = table.renders == table.renders[0]
    compositions = sorted(set(table.compositions.tolist()))
    chosen, inner_scores, outer_runs, default_runs = {}, {}, {}, {}
    for c in compositions:
        inner = workdir / f"inner_without_{c}"
        _check(run_sweep(sweep_config(args.base, args.root, RECIPES, {"exclude_compositions": (c,), "num_folds": 0,
                                                                       "test_compositions": ()}), inner))
        inner_scores[c] = {name: mean_accuracy(inner / name / "seed_0") for name in RECIPES}
        chosen[c] = max(RECIPES, key=lambda name: (inner_scores[c][name], -list(RECIPES).index(name)))
        outer = workdir / f"outer_{c}"
        picked = {name: RECIPES[name] for name in dict.fromkeys(["default", chosen[c]])}
        _check(run_sweep(sweep_config(args.base, args.root, picked, {"test_compositions": (c,)}), outer))
        outer_runs[c] = outer / chosen[c] / "seed_0"
        default_runs[c] = outer / "default" / "seed_0"
    heldout = table.subset(first & np.isin(table.compositions, compositions))
    selected, default = pooled(outer_runs, heldout), pooled(default_runs, heldout)
    folds = [{"fold": k, "test_keys": sorted(table.keys[table.compositions == c].tolist())}
             for k, c in enumerate(compositions)]
    reference, _ = reference_predictions(table, folds, heldout)
    fold = np.searchsorted(compositions, heldout.compositions)
    metrics = evaluate_predictions(heldout, selected, fold, ceiling_splits=10)
    result = to_json({
        "recipes": RECIPES, "chosen": chosen, "inner_scores": inner_scores, "base": args.base,
        "selected": comparison.accuracy_interval(selected, heldout),
        "default": comparison.accuracy_interval(default, heldout),
        "selected_minus_default": comparison.paired_difference(selected, default, heldout),
        "reference": comparison.accuracy_interval(reference, heldout),
        "selected_minus_reference": comparison.paired_difference(selected, reference, heldout),
        "fraction_of_ceiling": metrics["fraction_of_ceiling"]["pairwise_accuracy"]["mean"],
    })
    workdir.mkdir(parents=True, exist_ok=True)
    (workdir / "recipe.json").write_text(json.dumps(result, indent=1))
    (workdir / "recipe.md").write_text(markdown(result, compositions))
    print((workdir / "recipe.md").read_text())


def _ci(entry: dict, signed: bool = False) -> str:
    fmt = (lambda v: f"{v:+.3f}") if signed else (lambda v: f"{v:.3f}")
    mean = entry["mean"]
    return f"{fmt(mean['estimate'])} [{fmt(mean['low'])}, {fmt(mean['high'])}]"


def markdown(result: dict, compositions: list[str]) -> str:
    names = list(result["recipes"])
    lines = ["# Small-data recipe, nested selection (`scripts/select_recipe.py`)", "",
             f"Base config `{Path(result['base']).name}`; recipes: " + "; ".join(
                 f"**{n}** {result['recipes'][n] or '(the config as is)'}" for n in names) + ".", "",
             "Inner mean held-out pairwise accuracy (leave-one-composition-out over the other compositions):", "",
             "| outer test composition | " + " | ".join(names) + " | chosen |",
             "|---|" + "---|" * (len(names) + 1)]
    for c in compositions:
        cells = [f"{result['inner_scores'][c][n]:.3f}" for n in names]
        lines.append(f"| {c} | " + " | ".join(cells) + f" | {result['chosen'][c]} |")
    lines += ["", "Outer (held-out) pairwise accuracy, pooled over the compositions, 95% intervals:", "",
              f"- chosen recipes: {_ci(result['selected'])}",
              f"- default recipe: {_ci(result['default'])}; chosen − default: "
              f"{_ci(result['selected_minus_default'], signed=True)}"
              + (" (real)" if called_real(result["selected_minus_default"]) else " (not a real difference)"),
              f"- ridge reference: {_ci(result['reference'])}; chosen − reference: "
              f"{_ci(result['selected_minus_reference'], signed=True)}"
              + (" (real)" if called_real(result["selected_minus_reference"]) else " (not a real difference)")]
    return "\n".join(lines) + "\n"


if __name__ == "__main__":
    main()
