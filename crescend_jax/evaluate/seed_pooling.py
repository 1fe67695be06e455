"""One system trained with several seeds, as one row of a results table: seed-averaged per-pair outcomes and their
bootstrap intervals.

Why average outcomes rather than predictions: averaging a scorer's *scores* over seeds makes an ensemble, a
different (usually better) model than any run reported; averaging each pair's *outcome* keeps the statistic the
mean over seeds of each seed's accuracy. With S seeds, per-pair outcomes correct^s [P, K] in {0, 0.5, 1} (NaN =
unusable, `metrics.PairOutcomes`) give

    cbar_pk = (1/S) sum_s correct^s_pk      where every seed's outcome is finite, NaN elsewhere,

and since the usable pairs of one table are the same for every seed (label ties and gaps decide them), the pooled
accuracy sum_p cbar_pk / #usable_k equals the mean over seeds of the seeds' accuracies. The interval is then
`bootstrap.accuracy_interval` of cbar: same-music groups resampled within compositions, so it covers the
variability of *which groups were rated* for this set of seeds; seed-to-seed variability is reported beside it as
the spread over seeds (it is not folded into the interval: with 1-3 seeds a variance component cannot be estimated
honestly). A paired difference of two pooled systems (a point against its baseline, averaged over the baseline's
seeds, or against the deterministic ridge reference) is `bootstrap.paired_difference_interval` of the two cbar
arrays with the same replicate weights.

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


def averaged_outcomes(runs: Sequence[Predictions], table: EmbeddingTable) -> metrics_lib.PairOutcomes:
    """Per-pair outcomes of every within-group pair of ``table``, averaged over ``runs`` (one `Predictions` per
    seed): ``correct`` float [P, K] = cbar (NaN where any run's outcome is NaN). Raises ValueError for no runs."""
    if not runs:
        raise ValueError("averaged_outcomes needs at least one run")
    outcomes = [comparison.pair_outcomes(run, table) for run in runs]
    first = outcomes[0]
    stacked = np.stack([o.correct for o in outcomes]).astype(np.float64)  # [S, P, K]
    usable = np.isfinite(stacked).all(axis=0)
    mean = np.where(usable, np.where(np.isfinite(stacked), stacked, 0.0).mean(axis=0), np.nan)
    return metrics_lib.PairOutcomes(first=first.first, second=first.second, group=first.group,
                                    group_ids=first.group_ids, correct=mean)


def _strata(outcomes: metrics_lib.PairOutcomes, table: EmbeddingTable) -> np.ndarray:
    return bootstrap.group_strata(table.groups, table.compositions, outcomes.group_ids)


def pooled_interval(runs: Sequence[Predictions], table: EmbeddingTable, *, seed: int = 0,
                    num_replicates: int = bootstrap.DEFAULT_REPLICATES) -> dict[str, Any]:
    """95% interval of the seed-averaged accuracy (mean and per dimension), as `comparison.accuracy_interval`'s
    dict; the estimate equals the mean over seeds of each seed's pooled accuracy."""
    outcomes = averaged_outcomes(runs, table)
    return bootstrap.accuracy_interval(outcomes.group, outcomes.correct, _strata(outcomes, table),
                                       num_replicates=num_replicates, seed=seed).as_dict()


def pooled_difference(runs: Sequence[Predictions], others: Sequence[Predictions], table: EmbeddingTable, *,
                      seed: int = 0, num_replicates: int = bootstrap.DEFAULT_REPLICATES) -> dict[str, Any]:
    """Seed-averaged ``runs`` minus seed-averaged ``others`` (e.g. the baseline's seeds, or one reference) on the
    same pairs with the same replicate weights, as `comparison.paired_difference`'s dict (``excludes_zero``: the
    interval of the mean difference excludes 0)."""
    a, b = averaged_outcomes(runs, table), averaged_outcomes(others, table)
    return bootstrap.paired_difference_interval(a.group, a.correct, b.correct, _strata(a, table),
                                                num_replicates=num_replicates, seed=seed).as_dict()


def seed_spread(values: Sequence[float | None]) -> float | None:
    """Sample standard deviation (ddof 1) of the finite ``values`` (one per seed); None with fewer than 2."""
    finite = np.array([v for v in values if v is not None and np.isfinite(v)], np.float64)
    return float(finite.std(ddof=1)) if len(finite) >= 2 else None
