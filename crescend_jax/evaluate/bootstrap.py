"""Bootstrap confidence intervals of within-group pairwise accuracy, resampling same-music groups by composition.

The unit of resampling is the same-music group: its pairs share performances and raters, so they are not independent
and resampling single pairs would make intervals too narrow. Groups are resampled with replacement *inside each
composition* (stratum), each composition keeping its number of groups, because the set of held-out compositions is
fixed by the protocol (leave-one-composition-out), not a random draw.

Shapes: P pairs, K dimensions, G groups, B replicates. Inputs are per-pair outcomes (`metrics.pair_outcomes`):
``group`` int [P] (dense index in [0, G)), ``correct`` float [P, K] in {0, 0.5, 1} with NaN where unusable, and
``strata`` [G] (the composition of each group). Per group, sums S [G, K] = sum of correct over its usable pairs and
counts C [G, K] = number of usable pairs. A replicate draws, in each stratum s of n_s groups, n_s groups uniformly
with replacement; w_bg is how often group g was drawn in replicate b (W [B, G], multinomial per stratum). Its
accuracy is acc_bk = (W S)_bk / (W C)_bk (the pooled share of correct pairs over the drawn groups' pairs, the same
statistic as `metrics.pairwise_accuracy` on the full sample, where W = 1) and its mean over dimensions is the
plain mean of acc_bk over the dimensions whose full-sample accuracy is defined (NaN-aware per replicate).

Intervals are percentile intervals: the (1 - level)/2 and (1 + level)/2 quantiles of the B replicate statistics
(linear interpolation), around the full-sample estimate. Percentile intervals are transformation-respecting and
need no variance formula; they can be a little narrow with very few groups per composition (the bootstrap
variance of a mean of n draws is (n - 1)/n of the plug-in one).
"""

from __future__ import annotations

import dataclasses
import warnings
from typing import Any

import numpy as np

DEFAULT_REPLICATES = 2000
DEFAULT_LEVEL = 0.95
PAIR_RULES = ("common", "own")


@dataclasses.dataclass(frozen=True)
class Interval:
    """A point estimate and its interval; scalars (a mean over dimensions) or float arrays [K] (per dimension)."""

    estimate: Any
    low: Any
    high: Any

    @property
    def excludes_zero(self) -> Any:
        """low > 0 or high < 0 (bool, or bool [K]); False where the interval is undefined (NaN)."""
        return (np.asarray(self.low) > 0) | (np.asarray(self.high) < 0)

    def as_dict(self) -> dict[str, Any]:
        return {"estimate": self.estimate, "low": self.low, "high": self.high}


@dataclasses.dataclass(frozen=True)
class AccuracyInterval:
    """One system: mean over dimensions (scalars) and per dimension (float [K]); num_groups G, num_strata (the
    compositions), num_replicates B, level (e.g. 0.95)."""

    mean: Interval
    per_dimension: Interval
    num_groups: int
    num_strata: int
    num_replicates: int
    level: float

    def as_dict(self) -> dict[str, Any]:
        """JSON-ready (arrays stay numpy arrays; NaN where undefined)."""
        return {"mean": self.mean.as_dict(), "per_dimension": self.per_dimension.as_dict(),
                "num_groups": self.num_groups, "num_strata": self.num_strata,
                "num_replicates": self.num_replicates, "level": self.level}


@dataclasses.dataclass(frozen=True)
class DifferenceInterval:
    """System a minus system b on the same groups with the same replicate weights: mean and per dimension;
    ``num_pairs`` int [K] usable pairs behind the difference (per system under ``pairs="own"``: a's);
    ``pairs`` the NaN rule ("common" or "own")."""

    mean: Interval
    per_dimension: Interval
    num_pairs: np.ndarray
    pairs: str
    num_groups: int
    num_strata: int
    num_replicates: int
    level: float

    @property
    def excludes_zero(self) -> bool:
        """Whether the interval of the mean difference excludes 0 (the difference is called real only then)."""
        return bool(self.mean.excludes_zero)

    def as_dict(self) -> dict[str, Any]:
        """JSON-ready (arrays stay numpy arrays; NaN where undefined)."""
        return {"mean": self.mean.as_dict(), "per_dimension": self.per_dimension.as_dict(),
                "excludes_zero": self.excludes_zero, "num_pairs": self.num_pairs, "pairs": self.pairs,
                "num_groups": self.num_groups, "num_strata": self.num_strata,
                "num_replicates": self.num_replicates, "level": self.level}


def group_totals(group: np.ndarray, correct: np.ndarray, num_groups: int) -> tuple[np.ndarray, np.ndarray]:
    """Per-group sums S [G, K] of ``correct`` [P, K] over usable (finite) entries and their counts C [G, K]."""
    group = np.asarray(group, np.int64)
    correct = np.asarray(correct, np.float64)
    if correct.ndim != 2 or group.shape != (len(correct),):
        raise ValueError(f"correct {correct.shape} must be [P, K] and group {group.shape} must be [P]")
    if len(group) and (group.min() < 0 or group.max() >= num_groups):
        raise ValueError(f"group indices must lie in [0, {num_groups}); got {group.min()}..{group.max()}")
    usable = np.isfinite(correct)
    sums = np.zeros((num_groups, correct.shape[1]))
    counts = np.zeros((num_groups, correct.shape[1]))
    np.add.at(sums, group, np.where(usable, correct, 0.0))
    np.add.at(counts, group, usable.astype(np.float64))
    return sums, counts


def group_strata(groups: np.ndarray, compositions: np.ndarray, group_ids: np.ndarray) -> np.ndarray:
    """The composition of each group in ``group_ids`` [G] (e.g. ``PairOutcomes.group_ids``), from per-row ``groups``
    [N] and ``compositions`` [N]; a group whose rows name several compositions, or a group id with no row, raises."""
    groups, compositions, group_ids = np.asarray(groups), np.asarray(compositions), np.asarray(group_ids)
    if groups.shape != compositions.shape or groups.ndim != 1:
        raise ValueError(f"groups {groups.shape} and compositions {compositions.shape} must both be [N]")
    ids, first, index = np.unique(groups, return_index=True, return_inverse=True)
    composition = compositions[first]  # [U] the composition of each distinct group's first row
    spanning = np.unique(groups[composition[index] != compositions])
    if len(spanning):
        raise ValueError(f"groups {spanning[:3].tolist()} span several compositions; a group is one piece of music")
    position = np.clip(np.searchsorted(ids, group_ids), 0, max(len(ids) - 1, 0))
    missing = (ids[position] != group_ids) if len(ids) else np.ones(len(group_ids), bool)
    if np.any(missing):
        raise ValueError(f"group ids {group_ids[missing][:3].tolist()} have no row in ``groups``")
    return composition[position]


def bootstrap_weights(strata: np.ndarray, *, num_replicates: int = DEFAULT_REPLICATES, seed: int = 0) -> np.ndarray:
    """Replicate weights W float [B, G]: w_bg = times group g is drawn in replicate b, drawing n_s groups with
    replacement inside each stratum of n_s groups (multinomial(n_s, 1/n_s) per stratum), so every replicate keeps
    each stratum's group count: sum_{g in s} w_bg = n_s. Seeded: the same strata and seed give the same W."""
    strata = np.asarray(strata)
    if strata.ndim != 1:
        raise ValueError(f"strata must be [G], got shape {strata.shape}")
    if num_replicates < 1:
        raise ValueError(f"num_replicates must be >= 1, got {num_replicates}")
    rng = np.random.default_rng(seed)
    _, stratum = np.unique(strata, return_inverse=True)
    weights = np.zeros((num_replicates, len(strata)))
    for s in range(stratum.max(initial=-1) + 1):
        members = np.flatnonzero(stratum == s)
        weights[:, members] = rng.multinomial(len(members), np.full(len(members), 1.0 / len(members)), num_replicates)
    return weights


def _ratio(sums: np.ndarray, counts: np.ndarray) -> np.ndarray:
    with np.errstate(invalid="ignore", divide="ignore"):
        return np.where(counts > 0, sums / np.where(counts > 0, counts, 1.0), np.nan)


def _nanmean_rows(values: np.ndarray, keep: np.ndarray) -> np.ndarray:
    """Mean over the last axis of ``values`` [..., K] restricted to dimensions ``keep`` [K], ignoring NaN."""
    kept = values[..., keep]
    finite = np.isfinite(kept)
    with np.errstate(invalid="ignore", divide="ignore"):
        return np.where(finite.any(axis=-1), np.where(finite, kept, 0.0).sum(axis=-1) / finite.sum(axis=-1), np.nan)


def _interval(estimate: np.ndarray, replicates: np.ndarray, level: float) -> Interval:
    """Percentile interval of ``replicates`` [B, ...] (NaN replicates ignored) around ``estimate`` [...]."""
    if not 0 < level < 1:
        raise ValueError(f"level must lie in (0, 1), got {level}")
    tails = [(1 - level) / 2, (1 + level) / 2]
    finite = np.isfinite(replicates)
    if finite.all():
        low, high = np.quantile(replicates, tails, axis=0)
    elif finite.any():
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", RuntimeWarning)  # all-NaN columns stay NaN
            low, high = np.nanquantile(replicates, tails, axis=0)
    else:
        low = high = np.full(np.shape(estimate), np.nan)
    undefined = ~np.isfinite(estimate)
    low, high = np.where(undefined, np.nan, low), np.where(undefined, np.nan, high)
    if np.ndim(estimate) == 0:
        return Interval(estimate=float(estimate), low=float(low), high=float(high))
    return Interval(estimate=np.asarray(estimate, np.float64), low=low, high=high)


def _prepare(strata: np.ndarray, weights: np.ndarray | None, num_replicates: int, seed: int) -> np.ndarray:
    """``weights`` checked against ``strata`` [G], or fresh ones from `bootstrap_weights`."""
    if weights is None:
        return bootstrap_weights(strata, num_replicates=num_replicates, seed=seed)
    weights = np.asarray(weights, np.float64)
    if weights.ndim != 2 or weights.shape[1] != len(strata):
        raise ValueError(f"weights {weights.shape} must be [B, G] with G = len(strata) = {len(strata)}")
    return weights


def accuracy_interval(
    group: np.ndarray,
    correct: np.ndarray,
    strata: np.ndarray,
    *,
    num_replicates: int = DEFAULT_REPLICATES,
    seed: int = 0,
    level: float = DEFAULT_LEVEL,
    weights: np.ndarray | None = None,
) -> AccuracyInterval:
    """Percentile bootstrap interval of one system's pairwise accuracy, per dimension and averaged over dimensions.

    estimate_k = sum_g S_gk / sum_g C_gk (= `metrics.pairwise_accuracy`), mean = average of estimate_k over defined
    dimensions; replicates acc_bk = (W S)_bk / (W C)_bk with W from `bootstrap_weights` (or ``weights`` [B, G], e.g.
    shared between systems). Cost: one [B, G] @ [G, K] product per system.

    Args: group: int [P] in [0, G); correct: float [P, K] (NaN = unusable); strata: [G] composition per group;
      num_replicates: B; seed: the replicates' seed; level: interval coverage (0.95); weights: optional [B, G].
    """
    strata = np.asarray(strata)
    weights = _prepare(strata, weights, num_replicates, seed)
    sums, counts = group_totals(group, correct, len(strata))
    estimate = _ratio(sums.sum(axis=0), counts.sum(axis=0))  # [K]
    replicates = _ratio(weights @ sums, weights @ counts)  # [B, K]
    defined = np.isfinite(estimate)
    return AccuracyInterval(
        mean=_interval(_nanmean_rows(estimate, defined), _nanmean_rows(replicates, defined), level),
        per_dimension=_interval(estimate, replicates, level),
        num_groups=len(strata),
        num_strata=len(np.unique(strata)),
        num_replicates=len(weights),
        level=level,
    )


def paired_difference_interval(
    group: np.ndarray,
    correct_a: np.ndarray,
    correct_b: np.ndarray,
    strata: np.ndarray,
    *,
    pairs: str = "common",
    num_replicates: int = DEFAULT_REPLICATES,
    seed: int = 0,
    level: float = DEFAULT_LEVEL,
    weights: np.ndarray | None = None,
) -> DifferenceInterval:
    """Paired bootstrap interval of accuracy(a) - accuracy(b), two systems scored on the same pairs.

    Both systems' outcomes ``correct_a``, ``correct_b`` [P, K] are over the same pair list (same ``group`` [P]);
    every replicate uses the same weights W for both, so group-level difficulty cancels in the difference.
    NaN rule (``pairs``): "common" (default) counts a pair on dimension k only where both systems have a finite
    outcome, so the difference compares identical pairs (NaN in either system drops the pair for both);
    "own" lets each system keep its own usable pairs (each accuracy as that system would report it).
    diff_bk = acc^a_bk - acc^b_bk; mean difference = mean over dimensions defined for both of diff_k.
    A system against itself gives exactly 0 in every replicate: a zero-width interval [0, 0].
    """
    if pairs not in PAIR_RULES:
        raise ValueError(f"pairs must be one of {PAIR_RULES}, got {pairs!r}")
    correct_a = np.asarray(correct_a, np.float64)
    correct_b = np.asarray(correct_b, np.float64)
    if correct_a.shape != correct_b.shape:
        raise ValueError(f"correct_a {correct_a.shape} and correct_b {correct_b.shape} must be the same pairs [P, K]")
    if pairs == "common":
        both = np.isfinite(correct_a) & np.isfinite(correct_b)
        correct_a, correct_b = np.where(both, correct_a, np.nan), np.where(both, correct_b, np.nan)
    strata = np.asarray(strata)
    weights = _prepare(strata, weights, num_replicates, seed)
    sums_a, counts_a = group_totals(group, correct_a, len(strata))
    sums_b, counts_b = group_totals(group, correct_b, len(strata))
    estimate = _ratio(sums_a.sum(axis=0), counts_a.sum(axis=0)) - _ratio(sums_b.sum(axis=0), counts_b.sum(axis=0))
    replicates = _ratio(weights @ sums_a, weights @ counts_a) - _ratio(weights @ sums_b, weights @ counts_b)
    defined = np.isfinite(estimate)
    return DifferenceInterval(
        mean=_interval(_nanmean_rows(estimate, defined), _nanmean_rows(replicates, defined), level),
        per_dimension=_interval(estimate, replicates, level),
        num_pairs=counts_a.sum(axis=0).astype(np.int64),
        pairs=pairs,
        num_groups=len(strata),
        num_strata=len(np.unique(strata)),
        num_replicates=len(weights),
        level=level,
    )
