"""Intervals and paired comparisons of held-out predictions, and the saved predictions they are computed from.

Every mean held-out accuracy gets a 95% interval from a bootstrap over same-music groups stratified by composition
(`crescend_jax.evaluate.bootstrap`), and every comparison of two systems (a run against its baseline or against
the linear reference) is a *paired* bootstrap of the difference on the same pairs with the same replicate weights;
a difference is called real only when its interval excludes 0.

A run's held-out predictions are saved as ``heldout.npz`` beside its metrics (keys, renders, fold, and scores or
comparator pairs), so another run's report can pair with them without retraining or re-predicting.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np

from crescend_jax.data.table import EmbeddingTable
from crescend_jax.evaluate import bootstrap
from crescend_jax.evaluate import metrics as metrics_lib
from crescend_jax.models.contract import Predictions

HELDOUT_FILE = "heldout.npz"
DEFAULT_SEED = 0


def pair_outcomes(predictions: Predictions, table: EmbeddingTable) -> metrics_lib.PairOutcomes:
    """Per-pair outcomes over every within-group pair of ``table`` (the same pair layout for any two systems of the
    same rows): a scorer's from its scores, a comparator's from its probabilities."""
    if predictions.scores is not None:
        return metrics_lib.pair_outcomes(predictions.scores, table.label_mean, table.groups)
    i, j, _ = metrics_lib.GroupLayout.from_groups(table.groups).pairs()
    return metrics_lib.pair_outcomes_from_probabilities(predictions.pair_probabilities(i, j), i, j, table.label_mean,
                                                        table.groups)


def _strata(outcomes: metrics_lib.PairOutcomes, table: EmbeddingTable) -> np.ndarray:
    return bootstrap.group_strata(table.groups, table.compositions, outcomes.group_ids)


def accuracy_interval(predictions: Predictions, table: EmbeddingTable, *, seed: int = DEFAULT_SEED,
                      num_replicates: int = bootstrap.DEFAULT_REPLICATES) -> dict[str, Any]:
    """95% interval of the mean (and per-dimension) held-out pairwise accuracy: `bootstrap.AccuracyInterval` as a
    dict."""
    outcomes = pair_outcomes(predictions, table)
    result = bootstrap.accuracy_interval(outcomes.group, outcomes.correct, _strata(outcomes, table),
                                         num_replicates=num_replicates, seed=seed)
    return result.as_dict()


def paired_difference(a: Predictions, b: Predictions, table: EmbeddingTable, *, seed: int = DEFAULT_SEED,
                      num_replicates: int = bootstrap.DEFAULT_REPLICATES) -> dict[str, Any]:
    """a minus b on the same pairs (pairs both can score) and the same replicate weights: a dict with the mean and
    per-dimension difference intervals and ``excludes_zero`` (whether the difference is real)."""
    first, second = pair_outcomes(a, table), pair_outcomes(b, table)
    result = bootstrap.paired_difference_interval(first.group, first.correct, second.correct,
                                                  _strata(first, table), num_replicates=num_replicates, seed=seed)
    return result.as_dict()


# ----------------------------------------------------------------------------------------------------- saved files


def save_heldout(workdir: str | Path, table: EmbeddingTable, predictions: Predictions, fold: np.ndarray) -> Path:
    """Writes ``heldout.npz``: keys, renders, fold, and scores [N, 19] or comparator pairs (first, second, prob)."""
    path = Path(workdir) / HELDOUT_FILE
    arrays = {"keys": table.keys.astype(str), "renders": table.renders.astype(str), "fold": np.asarray(fold)}
    if predictions.scores is not None:
        arrays["scores"] = predictions.scores
    else:
        arrays["first"], arrays["second"], arrays["probability"] = predictions.pairs
    np.savez_compressed(path, **arrays)
    return path


def load_heldout(workdir: str | Path, table: EmbeddingTable) -> Predictions:
    """The predictions saved in ``workdir`` for the rows of ``table`` (matched by key and render). Raises
    ValueError when the file is missing or does not cover every row."""
    path = Path(workdir) / HELDOUT_FILE
    if not path.is_file():
        raise ValueError(f"{path} does not exist: run `crescend-jax evaluate --workdir {workdir}` first")
    saved = np.load(path)
    saved_ids = np.char.add(np.char.add(saved["keys"].astype(str), "|"), saved["renders"].astype(str))
    wanted = np.char.add(np.char.add(table.keys.astype(str), "|"), table.renders.astype(str))
    lookup = {name: index for index, name in enumerate(saved_ids.tolist())}
    index = np.array([lookup.get(name, -1) for name in wanted.tolist()], np.int64)
    if (index < 0).any():
        raise ValueError(f"{path} has no prediction for {(index < 0).sum()} of the rows (e.g. "
                         f"{wanted[index < 0][0]}); it was evaluated on other rows")
    if "scores" in saved:
        return Predictions(scores=saved["scores"][index])
    new = np.full(len(saved_ids), -1, np.int64)
    new[index] = np.arange(len(index))
    first, second = new[saved["first"]], new[saved["second"]]
    keep = (first >= 0) & (second >= 0)
    return Predictions(pairs=(first[keep], second[keep], saved["probability"][keep]))
