"""One system trained with several seeds, as one row of a results table: seed-averaged accuracy and intervals that
resample the music *and* the seeds.

Why average outcomes rather than predictions: averaging a scorer's *scores* over seeds makes an ensemble, a
different (usually better) model than any run reported; averaging each pair's *outcome* keeps the statistic the
mean over seeds of each seed's accuracy. With S seeds, per-pair outcomes correct^s [P, K] in {0, 0.5, 1} (NaN =
unusable, `metrics.PairOutcomes`) give

    cbar_pk = (1/S) sum_s correct^s_pk      where every seed's outcome is finite, NaN elsewhere,

and since the usable pairs of one table are the same for every seed (label ties and gaps decide them), the pooled
accuracy sum_p cbar_pk / #usable_k equals the mean over seeds of the seeds' accuracies.

**Seeds in the interval.** The interval is `bootstrap.accuracy_interval` of the per-seed outcomes [S, P, K]: every
replicate draws the held-out music (two-stage by default: compositions, then same-music groups) and, as a third
stage, S seeds with replacement, so the seed-to-seed variation of training is inside the interval; see
`crescend_jax.evaluate.bootstrap` for why this stage (rather than folding nothing in, or a variance formula) and
its limits with S = 3, which is why the spread over seeds (`seed_spread`) is reported beside it. A paired
difference of two pooled systems (a point against its baseline, or against the deterministic ridge reference) is
`bootstrap.paired_difference_interval` of the two stacks with the same music draws (and the same seed draws when
both have S runs: same-seed runs are paired). One seed: the seed stage is void, and the interval says nothing about
seed variation (reports say so).

Shapes: N rows of the held-out table, P within-group pairs, K = 19 dimensions, S seeds.
"""

from __future__ import annotations

from typing import Any, Sequence

import numpy as np

from crescend_jax.data.table import EmbeddingTable
from crescend_jax.evaluate import bootstrap
from crescend_jax.evaluate import comparison
from crescend_jax.evaluate import metrics as metrics_lib
from crescend_jax.models.contract import Predictions


def stacked_outcomes(runs: Sequence[Predictions], table: EmbeddingTable) -> tuple[metrics_lib.PairOutcomes,
                                                                                  np.ndarray]:
    """The pair layout of ``table`` (the first run's outcomes) and every run's outcomes float [S, P, K]. Raises
    ValueError for no runs."""
    if not runs:
        raise ValueError("seed pooling needs at least one run")
    outcomes = [comparison.pair_outcomes(run, table) for run in runs]
    return outcomes[0], np.stack([o.correct for o in outcomes]).astype(np.float64)


def pooled_interval(runs: Sequence[Predictions], table: EmbeddingTable, *, seed: int = 0,
                    num_replicates: int = bootstrap.DEFAULT_REPLICATES, **design: Any) -> dict[str, Any]:
    """95% interval of the seed-averaged accuracy (mean and per dimension; music and seeds resampled), as
    `comparison.accuracy_interval`'s dict (with ``no_score``); the estimate equals the mean over seeds of each
    seed's pooled accuracy. ``design``: ``scheme``, ``split_level``, ``corpus`` (`comparison.bootstrap_options`)."""
    outcomes, stacked = stacked_outcomes(runs, table)
    return comparison.stacked_interval(outcomes, stacked, table, seed=seed, num_replicates=num_replicates, **design)


def pooled_difference(runs: Sequence[Predictions], others: Sequence[Predictions], table: EmbeddingTable, *,
                      seed: int = 0, num_replicates: int = bootstrap.DEFAULT_REPLICATES,
                      **design: Any) -> dict[str, Any]:
    """Seed-averaged ``runs`` minus seed-averaged ``others`` (e.g. the baseline's seeds, or one reference) on the
    same pairs with the same music draws, seeds resampled (paired when both have as many runs), as
    `comparison.paired_difference`'s dict (``real``: the interval excludes 0 and is not degenerate)."""
    outcomes, a = stacked_outcomes(runs, table)
    _, b = stacked_outcomes(others, table)
    return comparison.stacked_difference(outcomes, a, b, table, seed=seed, num_replicates=num_replicates, **design)


def seed_spread(values: Sequence[float | None]) -> float | None:
    """Sample standard deviation (ddof 1) of the finite ``values`` (one per seed); None with fewer than 2."""
    finite = np.array([v for v in values if v is not None and np.isfinite(v)], np.float64)
    return float(finite.std(ddof=1)) if len(finite) >= 2 else None
