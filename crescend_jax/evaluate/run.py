"""`crescend-jax evaluate`: held-out predictions of a trained workdir -> metrics.json, report.md, plots."""

from __future__ import annotations

import json
import sys
from pathlib import Path

import ml_collections

from crescend_jax.config import config_to_json
from crescend_jax.evaluate import ceiling as ceiling_lib
from crescend_jax.evaluate import metrics as metrics_lib
from crescend_jax.evaluate.report import evaluate_predictions, write_report


def load_baseline_metrics(baseline: str | Path) -> dict:
    """The metrics dict a previous ``evaluate`` wrote into the baseline workdir."""
    path = Path(baseline) / "metrics.json"
    if not path.is_file():
        raise FileNotFoundError(
            f"baseline {path} does not exist: run `crescend-jax evaluate --workdir {baseline}` on the baseline first"
        )
    try:
        return json.loads(path.read_text())
    except json.JSONDecodeError as err:
        raise ValueError(f"baseline {path} is not valid JSON ({err}): re-run evaluate on the baseline") from None


def default_eval_config() -> ml_collections.ConfigDict:
    """``config.eval``: the report's baseline, the label gap of the gap variant, the noise ceiling's random splits."""
    config = ml_collections.ConfigDict()
    config.baseline_workdir = ""  # a trained baseline to compare against in the report ("" = none)
    config.min_gap = metrics_lib.DEFAULT_MIN_GAP  # pairs with a smaller label gap are left out of the gap variant
    config.ceiling_splits = ceiling_lib.DEFAULT_NUM_SPLITS  # random half-panel splits averaged by the ceiling
    config.ceiling_seed = 0
    return config


def _evaluation_settings(config: ml_collections.ConfigDict) -> dict:
    """``config.eval.{min_gap, ceiling_splits, ceiling_seed}``, with the defaults for a run's config without them."""
    section = default_eval_config()
    section.update(config.get("eval") or {})
    return {"min_gap": float(section.min_gap), "ceiling_splits": int(section.ceiling_splits),
            "seed": int(section.ceiling_seed)}


def evaluate_workdir(workdir: str, baseline: str | None = None) -> int:
    """Evaluates the held-out predictions of ``workdir``, compared with ``baseline`` (a workdir) when given, else
    with the run's ``config.eval.baseline_workdir`` when that is set.

    Writes metrics.json, report.md and PNG plots into ``workdir`` and prints where the report is.
    Returns 0, or 2 with a message on stderr when the baseline or the trained run cannot be read.
    """
    from crescend_jax.train.trainer import TrainingError, predict_heldout

    try:
        baseline_metrics = None if baseline is None else load_baseline_metrics(baseline)
        heldout = predict_heldout(workdir)
        configured = (heldout.config.get("eval") or {}).get("baseline_workdir", "")
        if baseline is None and configured:
            baseline_metrics = load_baseline_metrics(configured)
    except (FileNotFoundError, ValueError, TrainingError) as err:
        print(f"error: {err}", file=sys.stderr)
        return 2
    metrics = evaluate_predictions(heldout.table, heldout.scores, heldout.fold, **_evaluation_settings(heldout.config))
    report = write_report(workdir, metrics, config_to_json(heldout.config), baseline_metrics)
    accuracy = metrics["pooled"]["pairwise_accuracy"]["mean"]
    fraction = metrics["fraction_of_ceiling"]["pairwise_accuracy"]["mean"]
    print(
        f"held-out pairwise accuracy {accuracy:.3f}"
        + (f" ({100 * fraction:.0f}% of the way to the noise ceiling)" if fraction is not None else "")
    )
    print(f"report: {report}")
    return 0
