"""The outcome of a predicted pair order against the labels: the one rule every pairwise accuracy uses.

For a pair (i, j) of one same-music group and a dimension, with the label gap d = y_i - y_j and a predicted margin
m (any number whose sign is the predicted order: a scorer's s_i - s_j, a comparator's P(i above j) - 1/2):

    outcome = 1    where sign(m) = sign(d)          the order is right
            = 0    where sign(m) = -sign(d)         the order is wrong
            = 1/2  where m = 0                      a predicted tie counts as a coin flip (a constant model scores 1/2)
            = NaN  where d = 0, or d or m is not finite, or the caller marks the pair unusable
                                                    label ties carry no order and are left out

Both the trainer's checkpoint selection (`models.contract.mean_pairwise_accuracy`) and every reported accuracy
(`evaluate.metrics.pair_outcomes`, its bootstrap and paired comparisons) are built on `pair_outcome` and
`outcome_accuracy`, so the number a checkpoint is chosen by is the number the report gives for the same rows.
"""

from __future__ import annotations

import numpy as np


def pair_outcome(margin: np.ndarray, label_gap: np.ndarray, usable: np.ndarray | None = None) -> np.ndarray:
    """Outcomes float64 [P, K] (module doc) of predicted margins [P, K] against label gaps [P, K]; ``usable`` bool
    [P, K] (or broadcastable) marks further pairs to leave out (NaN) where False, e.g. a label gap below a threshold."""
    margin = np.asarray(margin, np.float64)
    label_gap = np.asarray(label_gap, np.float64)
    valid = np.isfinite(margin) & np.isfinite(label_gap) & (label_gap != 0)
    if usable is not None:
        valid &= np.asarray(usable, bool)
    with np.errstate(invalid="ignore"):
        correct = np.where(margin == 0, 0.5, (np.sign(margin) == np.sign(label_gap)).astype(np.float64))
    return np.where(valid, correct, np.nan)


def outcome_accuracy(outcomes: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """(accuracy float [K], usable pairs int [K]) of outcomes [P, K]: accuracy_k = sum_p o_pk / #{p: o_pk finite},
    NaN where a dimension has no usable pair."""
    usable = np.isfinite(outcomes)
    count = usable.sum(axis=0)
    total = np.where(usable, outcomes, 0.0).sum(axis=0)
    with np.errstate(invalid="ignore", divide="ignore"):
        accuracy = np.where(count > 0, total / np.maximum(count, 1), np.nan)
    return accuracy, count.astype(np.int64)
