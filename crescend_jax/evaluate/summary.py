"""k-fold aggregation of held-out predictions into the JSON metrics dict that `report` writes up.

Metrics dict layout (every array is a list over the label columns: the 19 dimensions, or the targets of ``data.targets``
named in ``dimensions``; NaN is written as null):
  dimensions, num_rows, num_groups, num_compositions, num_deadpan_rows, folds, min_gap, target
  pooled[name]         = {"per_dimension": [...], "mean": x}   over all held-out rows at once
  per_fold             = [{"fold", "num_rows", "num_groups", "metrics": {name: {...}}}]
  fold_mean, fold_std  = {name: {"per_dimension", "mean"}}      mean / std over folds (the "mean" entry is the
                                                               mean / std over folds of each fold's dimension mean)
  ceiling              = {"per_dimension", "mean", "reliability", "num_pairs", "num_segments", "num_splits"}
  ceiling_no_score     = the same over pairs without Score renditions (deadpan pairs are easier for raters)
  fraction_of_ceiling[accuracy name] = {"per_dimension", "mean"} (pooled; mean = (mean acc - 0.5)/(mean ceiling - 0.5));
                         the no-Score accuracy against ceiling_no_score, the others against ceiling (the gap
                         variant conditions on the noisy labels, which the split-half model does not cover)
  within_group         = {"dimensions", "target", "predicted", "actual"}: group-centred values for the plotted dims
Pairs never cross groups and a group lies within one composition, so pooled pairs are the union of the folds' pairs.
"""

from __future__ import annotations

import math
from typing import Any

import numpy as np

from crescend_jax.data.dimensions import DIMENSIONS
from crescend_jax.data.segments import DEADPAN_PERFORMERS
from crescend_jax.data.table import EmbeddingTable
from crescend_jax.evaluate import ceiling as ceiling_lib
from crescend_jax.evaluate import metrics as metrics_lib
from crescend_jax.models.contract import Predictions, win_scores

ACCURACIES = ("pairwise_accuracy", "pairwise_accuracy_gap", "pairwise_accuracy_no_score")
PLOTTED_DIMENSIONS = 4


def to_json(value: Any) -> Any:
    """numpy / NaN -> JSON: arrays to lists, NaN and inf to None."""
    if isinstance(value, dict):
        return {k: to_json(v) for k, v in value.items()}
    if isinstance(value, (list, tuple, np.ndarray)):
        return [to_json(v) for v in (value.tolist() if isinstance(value, np.ndarray) else value)]
    if isinstance(value, (np.integer, int)) and not isinstance(value, bool):
        return int(value)
    if isinstance(value, (np.floating, float)):
        return float(value) if math.isfinite(value) else None
    return value


def _nanmean(values: np.ndarray, axis=None) -> np.ndarray | float:
    values = np.asarray(values, np.float64)
    finite = np.isfinite(values)
    with np.errstate(invalid="ignore", divide="ignore"):
        return np.where(finite, values, 0.0).sum(axis=axis) / finite.sum(axis=axis)


def _nanstd(values: np.ndarray, axis=None) -> np.ndarray | float:
    values = np.asarray(values, np.float64)
    mean = _nanmean(values, axis=axis)
    mean = np.expand_dims(mean, axis) if axis is not None else mean
    return np.sqrt(_nanmean((values - mean) ** 2, axis=axis))


def _summarise(per_dimension: np.ndarray) -> dict[str, Any]:
    return {"per_dimension": per_dimension, "mean": _nanmean(per_dimension)}


def _ceiling_summary(noise: ceiling_lib.NoiseCeiling) -> dict[str, Any]:
    return {
        "per_dimension": noise.ceiling,
        "mean": _nanmean(noise.ceiling),
        "reliability": noise.reliability,
        "num_pairs": noise.num_pairs,
        "num_segments": noise.num_segments,
        "num_splits": noise.num_splits,
    }


def comparator_accuracies(predictions: Predictions, labels: np.ndarray, groups: np.ndarray, *, deadpan: np.ndarray,
                          truth: np.ndarray | None, min_gap: float) -> dict[str, np.ndarray]:
    """The pairwise accuracies of `metrics_lib.ranking_metrics`, straight from a comparator's probabilities
    P(i above j) of every within-group pair (its per-row ranking scores only serve tau, NDCG and spreads)."""
    i, j, p = predictions.pairs

    def accuracy(target: np.ndarray, **kwargs) -> metrics_lib.PairwiseAccuracy:
        return metrics_lib.pair_outcomes_from_probabilities(p, i, j, target, groups, **kwargs).accuracy()

    everything, gap, no_score = accuracy(labels), accuracy(labels, min_gap=min_gap), accuracy(labels, exclude=deadpan)
    result = {"pairwise_accuracy": everything.accuracy, "pairwise_accuracy_gap": gap.accuracy,
              "pairwise_accuracy_no_score": no_score.accuracy, "num_pairs": everything.num_pairs,
              "num_pairs_gap": gap.num_pairs, "num_pairs_no_score": no_score.num_pairs}
    if truth is not None:
        against_truth = accuracy(truth)
        result["truth_accuracy"], result["num_pairs_truth"] = against_truth.accuracy, against_truth.num_pairs
    return result


def evaluate_predictions(
    table: EmbeddingTable,
    predictions: Predictions | np.ndarray,
    fold: np.ndarray,
    *,
    min_gap: float = metrics_lib.DEFAULT_MIN_GAP,
    ceiling_splits: int = ceiling_lib.DEFAULT_NUM_SPLITS,
    seed: int = 0,
) -> dict[str, Any]:
    """All metrics of held-out ``predictions`` on ``table`` (N rows), pooled and per ``fold`` int [N].

    ``predictions``: a `Predictions` (scorer or comparator) or a scorer's scores float [N, 19]. A scorer is measured
    on its scores; a comparator's pairwise accuracies come from its probabilities and its per-group rankings (for
    tau, NDCG, spreads) from expected win counts (`crescend_jax.models.contract.win_scores`).
    Returns a JSON-serialisable dict (layout in the module docstring). ``min_gap`` is the label gap of the
    gap variant; ``ceiling_splits`` and ``seed`` drive the split-half noise ceiling (computed once, on all rows).
    """
    if not isinstance(predictions, Predictions):
        predictions = Predictions(scores=np.asarray(predictions, np.float64))
    fold = np.asarray(fold)
    num_rows = len(table)
    scores = np.asarray(win_scores(predictions, table.groups), np.float64)
    names = list(table.label_names) if table.label_names else list(DIMENSIONS)  # the label columns (data.targets)
    if scores.shape != (num_rows, len(names)):
        raise ValueError(
            f"scores have shape {scores.shape}; expected [{num_rows}, {len(names)}] (one row per table row, one "
            "column per label)"
        )
    if fold.shape != (num_rows,):
        raise ValueError(f"fold ids have shape {fold.shape}; expected [{num_rows}]")
    bad = ~np.isfinite(scores).all(axis=1)
    if predictions.pairs is not None:
        bad_pairs = ~np.isfinite(predictions.pairs[2]).all(axis=1)
        bad[predictions.pairs[0][bad_pairs]] = True
    if bad.any():
        raise ValueError(
            f"{bad.sum()} rows have non-finite predictions (first: {table.keys[bad][0]}); the model diverged or the "
            "predictions are corrupt: retrain, e.g. with a lower learning rate"
        )
    if num_rows == 0:
        raise ValueError("no held-out rows to evaluate: the table is empty")

    deadpan = np.isin(table.performers, DEADPAN_PERFORMERS)
    truth = table.label_truth if np.isfinite(table.label_truth).any() else None

    def measure(rows: np.ndarray) -> dict[str, np.ndarray]:
        labels, groups = table.label_mean[rows], table.groups[rows]
        row_truth = None if truth is None else truth[rows]
        result = metrics_lib.ranking_metrics(scores[rows], labels, groups, deadpan=deadpan[rows], truth=row_truth,
                                             min_gap=min_gap)
        if predictions.pairs is not None:
            result.update(comparator_accuracies(predictions.subset(rows), labels, groups, deadpan=deadpan[rows],
                                                truth=row_truth, min_gap=min_gap))
        return result

    everything = np.arange(num_rows)
    pooled = measure(everything)
    fold_ids = np.unique(fold)
    per_fold = []
    for fold_id in fold_ids:
        rows = np.flatnonzero(fold == fold_id)
        per_fold.append((fold_id, rows, measure(rows)))

    noise = ceiling_lib.noise_ceiling(table.ratings, table.groups, num_splits=ceiling_splits, seed=seed)
    noise_no_score = ceiling_lib.noise_ceiling(
        table.ratings, table.groups, num_splits=ceiling_splits, seed=seed, exclude=deadpan
    ) if deadpan.any() else noise
    fraction = {}
    for name in ACCURACIES:
        reference = noise_no_score.ceiling if name == "pairwise_accuracy_no_score" else noise.ceiling
        usable = np.isfinite(pooled[name]) & np.isfinite(reference)
        mean_fraction = ceiling_lib.fraction_of_ceiling(
            np.array([_nanmean(pooled[name][usable])]), np.array([_nanmean(reference[usable])])
        )[0]
        fraction[name] = {
            "per_dimension": ceiling_lib.fraction_of_ceiling(pooled[name], reference),
            "mean": mean_fraction,
        }

    fold_mean, fold_std = {}, {}
    for name in pooled:
        stacked = np.stack([values[name] for _, _, values in per_fold]).astype(np.float64)  # [F, K]
        dimension_means = _nanmean(stacked, axis=1)
        fold_mean[name] = {"per_dimension": _nanmean(stacked, axis=0), "mean": _nanmean(dimension_means)}
        fold_std[name] = {"per_dimension": _nanstd(stacked, axis=0), "mean": _nanstd(dimension_means)}

    target = table.label_mean if truth is None else truth
    plotted = np.argsort(-np.nan_to_num(pooled["pairwise_accuracy"], nan=-1.0), kind="stable")
    plotted = np.unique(np.concatenate([plotted[: PLOTTED_DIMENSIONS // 2], plotted[::-1][: PLOTTED_DIMENSIONS // 2]]))
    within_group = {
        "dimensions": [names[k] for k in plotted],
        "target": "label_mean" if truth is None else "label_truth",
        "predicted": np.round(metrics_lib.centre_by_group(scores, table.groups)[:, plotted].T, 5),
        "actual": np.round(metrics_lib.centre_by_group(target, table.groups)[:, plotted].T, 5),
    }

    return to_json({
        "dimensions": names,
        "num_rows": num_rows,
        "num_groups": len(np.unique(table.groups)),
        "num_compositions": len(np.unique(table.compositions)),
        "num_deadpan_rows": int(deadpan.sum()),
        "folds": fold_ids,
        "min_gap": min_gap,
        "target": within_group["target"],
        "pooled": {name: _summarise(values) for name, values in pooled.items()},
        "per_fold": [
            {
                "fold": fold_id,
                "num_rows": len(rows),
                "num_groups": len(np.unique(table.groups[rows])),
                "metrics": {name: _summarise(v) for name, v in values.items()},
            }
            for fold_id, rows, values in per_fold
        ],
        "fold_mean": fold_mean,
        "fold_std": fold_std,
        "ceiling": _ceiling_summary(noise),
        "ceiling_no_score": _ceiling_summary(noise_no_score),
        "fraction_of_ceiling": fraction,
        "within_group": within_group,
    })
