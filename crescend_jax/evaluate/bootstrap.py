"""Bootstrap confidence intervals of within-group pairwise accuracy that resample new music (and seeds).

**What is resampled.** The unit of the data is the same-music group: its pairs share performances and raters, so
they are not independent and resampling single pairs would make intervals far too narrow. Groups are nested in
compositions (a group is one passage of one composition), and with ``data.split_level="work"`` compositions in works.
Two schemes (``eval.bootstrap``):

* ``"two_stage"`` (default): a replicate draws the U held-out *units* (compositions, or works) with replacement, then,
  inside each drawn copy of a unit holding n_u groups, n_u groups with replacement (with works as units the second
  stage draws groups inside the work; the compositions of a work are not a stage of their own). The interval then
  answers the question a reader asks: how accurate is this trained system on *new music* from the same population
  of compositions (same corpus, same kind of performers and raters)? It does not cover other corpora, instruments or
  rating panels, nor the variability of training (which compositions were trained on, the seed: see below).
* ``"within_composition"``: every composition is kept and its n_c groups are redrawn with replacement inside it
  (stratified resampling). This answers the *fixed-set* question: how accurate on these very compositions, had other
  passages of them been rated. It says nothing about new music, and a composition that holds a single group is
  redrawn identically in every replicate: with one group per composition the interval has zero width.

**Shapes and statistic.** P pairs, K dimensions, G groups, U units, B replicates, S seeds (runs of one system).
Inputs are per-pair outcomes (`metrics.pair_outcomes`): ``group`` int [P] (dense index in [0, G)), ``correct``
float [P, K] (or [S, P, K], one slice per seed) in {0, 0.5, 1} with NaN where unusable, ``strata`` [G] (each group's
composition) and ``units`` [G] (each group's top-level unit; default = ``strata``). Per group and seed, sums
X^s [G, K] = sum of correct over its usable pairs and counts C [G, K] = number of usable pairs (the usable pairs are
those finite in every seed, so C does not depend on s). A replicate's group weights w_bg (W [B, G]) count how often
group g was drawn; two-stage: m_bu ~ Multinomial(U; 1/U) copies of unit u, then its groups' weights
~ Multinomial(m_bu n_u; 1/n_u) (the sum of m_bu independent within-unit draws); within-composition:
~ Multinomial(n_c; 1/n_c) per composition. Its accuracy is

    acc_bk = sum_s v_bs (W X^s)_bk / (W C)_bk,

the pooled share of correct pairs over the drawn groups' pairs (the statistic of `metrics.pairwise_accuracy`, where
W = 1), averaged over seeds with seed weights v_bs (V [B, S], rows summing to 1; one seed: v = 1). The mean over
dimensions is the plain mean of acc_bk over the dimensions whose full-sample accuracy is defined (NaN-aware).

**Seeds as a third stage.** With S > 1 runs (seeds) of one system, a replicate also draws S seeds with replacement
(v_bs = count of seed s / S), independently of the music draw: seeds and compositions are crossed factors (every seed
is scored on every composition), and resampling both factors independently (the "pigeonhole" bootstrap, Owen 2007)
brings the seed-to-seed variation of a training run into the interval, including its interaction with the music. It
is mildly conservative for crossed designs (no resampling scheme is exactly unbiased there, McCullagh 2000), and with
S = 3 the seed stage has only 10 distinct draws and (S - 1)/S of the plug-in seed variance: crude, which is why the
spread over seeds is reported beside the interval (`seed_pooling.seed_spread`). Averaging the seeds' outcomes and
resampling music only would leave the seed variation out of a comparison whose gaps are often no larger than
it; averaging scores would make an ensemble, a different system. In a paired difference both systems use
the same music draw W; their seed draws are the same (paired by position) when both have S runs, since same-seed
runs share their initialisation and data streams, and independent otherwise (e.g. against one deterministic ridge
reference, whose seed stage is constant). Hence a system against itself is exactly [0, 0].

**Intervals.** Percentile intervals: the (1 - level)/2 and (1 + level)/2 quantiles of the B replicate statistics
(linear interpolation), around the full-sample estimate. They respect transformations, stay inside [0, 1] for an
accuracy and need no variance formula. The alternatives: the basic (reverse-percentile) interval, no better for a
near-symmetric statistic; BCa (bias and acceleration from a jackknife over units), second-order accurate but its
acceleration is poorly estimated from 5-20 units; bootstrap-t, which needs a nested bootstrap per replicate. The
coverage of the default is checked on simulated compositions (tests/test_bootstrap.py: 90-98% for a nominal 95%).

**Known biases of the two-stage scheme.** For U units of m groups each, with between-unit variance sigma_b^2 and
between-group (within-unit) variance sigma_w^2, the estimate's variance is sigma_b^2/U + sigma_w^2/(U m); resampling
units already carries the within-unit part (the spread of unit means includes sigma_w^2/m), and the second stage adds
it again, about (m - 1)/m sigma_w^2/(U m) (Davison & Hinkley 1997, section 3.8): the interval is slightly wide,
at most by a factor sqrt(2) in width when compositions do not differ at all, not at all when every unit holds a
single group (the second stage then redraws that group). Against it, a percentile bootstrap over U units has
(U - 1)/U of the plug-in variance (slightly narrow for few units). Below `MIN_UNITS` units the interval cannot
speak for new music at all: a bootstrap over 2-4 units sees 3-35 distinct draws.

**Degenerate intervals are said.** Every result carries ``warnings`` (`interval_warnings`): fewer than `MIN_UNITS`
held-out units under the two-stage scheme, or a zero-width interval (every replicate gives the same value). A
difference is called real (``real``, `called_real`) only when its interval excludes 0 *and* it has no warning.

References: A. C. Davison, D. V. Hinkley, Bootstrap Methods and their Application (1997), 3.8; P. McCullagh,
Resampling and exchangeable arrays, Bernoulli 6 (2000); A. B. Owen, The pigeonhole bootstrap, Ann. Appl. Stat. 1
(2007); B. Efron, R. Tibshirani, An Introduction to the Bootstrap (1993), ch. 13-14.
"""

from __future__ import annotations

import dataclasses
import warnings
from typing import Any, Mapping

import numpy as np

DEFAULT_REPLICATES = 2000
DEFAULT_LEVEL = 0.95
PAIR_RULES = ("common", "own")
SCHEMES = ("two_stage", "within_composition")
DEFAULT_SCHEME = "two_stage"
MIN_UNITS = 5  # fewer held-out units than this: a two-stage interval cannot speak for new music
SCOPE = {"two_stage": "new music: held-out {unit}s resampled, then same-music groups within each drawn {unit}",
         "within_composition": "fixed set of compositions: same-music groups resampled within each composition; "
                               "says nothing about new music"}


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
class Design:
    """How the replicates were drawn: ``scheme`` (one of `SCHEMES`), ``unit`` ("composition" or "work": what the
    first stage draws), ``num_units`` U, ``num_strata`` (compositions), ``num_groups`` G, ``num_seeds`` S (per system;
    a tuple (S_a, S_b) for a difference), ``num_replicates`` B, ``level``."""

    scheme: str
    unit: str
    num_units: int
    num_strata: int
    num_groups: int
    num_seeds: Any
    num_replicates: int
    level: float

    @property
    def scope(self) -> str:
        """What the interval speaks for, in words (the report's label)."""
        return SCOPE[self.scheme].format(unit=self.unit)

    def as_dict(self) -> dict[str, Any]:
        return {"scheme": self.scheme, "unit": self.unit, "num_units": self.num_units, "num_strata": self.num_strata,
                "num_groups": self.num_groups, "num_seeds": self.num_seeds, "num_replicates": self.num_replicates,
                "level": self.level, "scope": self.scope}


@dataclasses.dataclass(frozen=True)
class AccuracyInterval:
    """One system: mean over dimensions (scalars) and per dimension (float [K]), the resampling design and the
    warnings that make the interval degenerate (empty when it is not)."""

    mean: Interval
    per_dimension: Interval
    design: Design
    warnings: tuple[str, ...]

    @property
    def degenerate(self) -> bool:
        return bool(self.warnings)

    def as_dict(self) -> dict[str, Any]:
        """JSON-ready (arrays stay numpy arrays; NaN where undefined)."""
        return {"mean": self.mean.as_dict(), "per_dimension": self.per_dimension.as_dict(), **self.design.as_dict(),
                "warnings": list(self.warnings), "degenerate": self.degenerate}


@dataclasses.dataclass(frozen=True)
class DifferenceInterval:
    """System a minus system b on the same groups with the same music draws: mean and per dimension;
    ``num_pairs`` int [K] usable pairs behind the difference (per system under ``pairs="own"``: a's);
    ``pairs`` the NaN rule ("common" or "own"); the design and the warnings."""

    mean: Interval
    per_dimension: Interval
    num_pairs: np.ndarray
    pairs: str
    design: Design
    warnings: tuple[str, ...]

    @property
    def excludes_zero(self) -> bool:
        """Whether the interval of the mean difference excludes 0 (a fact about the interval, not a verdict)."""
        return bool(self.mean.excludes_zero)

    @property
    def degenerate(self) -> bool:
        return bool(self.warnings)

    @property
    def real(self) -> bool:
        """The verdict: the interval excludes 0 and is not degenerate."""
        return self.excludes_zero and not self.degenerate

    def as_dict(self) -> dict[str, Any]:
        """JSON-ready (arrays stay numpy arrays; NaN where undefined)."""
        return {"mean": self.mean.as_dict(), "per_dimension": self.per_dimension.as_dict(),
                "excludes_zero": self.excludes_zero, "real": self.real, "num_pairs": self.num_pairs,
                "pairs": self.pairs, **self.design.as_dict(), "warnings": list(self.warnings),
                "degenerate": self.degenerate}


# ------------------------------------------------------------------------------------------------ verdicts


def interval_warnings(mean: Interval | Mapping[str, Any], *, scheme: str, unit: str, num_units: int) -> list[str]:
    """Why an interval is degenerate, one sentence each (empty when it is not): under ``"two_stage"``, fewer than
    `MIN_UNITS` held-out units; under any scheme, zero width (every replicate gave the same value)."""
    low, high = (mean.low, mean.high) if isinstance(mean, Interval) else (mean.get("low"), mean.get("high"))
    reasons = []
    if scheme == "two_stage" and num_units < MIN_UNITS:
        reasons.append(f"{num_units} held-out {unit}{'' if num_units == 1 else 's'}: this interval cannot speak for "
                       f"new music (a bootstrap needs at least {MIN_UNITS} {unit}s to resample)")
    finite = low is not None and high is not None and np.isfinite(low) and np.isfinite(high)
    if finite and not high > low:
        why = ("e.g. a system compared with itself, or compositions that each hold a single same-music group, which "
               "the fixed-set scheme redraws identically: eval.bootstrap='two_stage' resamples the compositions"
               if scheme == "within_composition" else
               "e.g. a system compared with itself, or every held-out unit scoring the same")
        reasons.append(f"zero-width interval [{low:.3f}, {high:.3f}]: every replicate gives the same value, so it "
                       f"shows no uncertainty ({why})")
    return reasons


def called_real(difference: Mapping[str, Any] | None) -> bool:
    """Whether a difference dict (`DifferenceInterval.as_dict`, or one read back from JSON) may be called real: its
    mean interval excludes 0 and it is not degenerate. A dict from before warnings existed is judged from its
    numbers (a zero-width interval is never real)."""
    if not difference:
        return False
    mean = difference.get("mean") or {}
    low, high = mean.get("low"), mean.get("high")
    if low is None or high is None or not (np.isfinite(low) and np.isfinite(high)):
        return False
    if difference.get("warnings") or difference.get("degenerate") or not high > low:
        return False
    return bool(low > 0 or high < 0)


# ------------------------------------------------------------------------------------------------ weights


def group_totals(group: np.ndarray, correct: np.ndarray, num_groups: int) -> tuple[np.ndarray, np.ndarray]:
    """Per-group sums X [G, K] of ``correct`` [P, K] over usable (finite) entries and their counts C [G, K]."""
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
    """The composition (or any coarser unit, e.g. the work) of each group in ``group_ids`` [G] (e.g.
    ``PairOutcomes.group_ids``), from per-row ``groups`` [N] and ``compositions`` [N]; a group whose rows name
    several compositions, or a group id with no row, raises."""
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


def _check_scheme(scheme: str) -> None:
    if scheme not in SCHEMES:
        raise ValueError(f"unknown bootstrap scheme {scheme!r} (eval.bootstrap): use one of {SCHEMES}")


def bootstrap_weights(strata: np.ndarray, *, units: np.ndarray | None = None, scheme: str = DEFAULT_SCHEME,
                      num_replicates: int = DEFAULT_REPLICATES, seed: int = 0) -> np.ndarray:
    """Replicate weights W float [B, G]: w_bg = times group g is drawn in replicate b.

    ``"two_stage"``: m_bu ~ Multinomial(U; 1/U) copies of each unit (``units`` [G], default ``strata``), then the
    n_u groups of unit u get Multinomial(m_bu n_u; 1/n_u) (m_bu independent draws of n_u groups), so a replicate
    holds sum_u m_bu n_u groups (G in expectation, exactly G when units are equal in size). ``"within_composition"``:
    Multinomial(n_s; 1/n_s) inside each stratum of n_s groups, so every replicate keeps each stratum's group count.
    Seeded: the same inputs and seed give the same W.
    """
    _check_scheme(scheme)
    strata = np.asarray(strata)
    units = strata if units is None else np.asarray(units)
    if strata.ndim != 1 or units.shape != strata.shape:
        raise ValueError(f"strata {strata.shape} and units {units.shape} must both be [G]")
    if num_replicates < 1:
        raise ValueError(f"num_replicates must be >= 1, got {num_replicates}")
    rng = np.random.default_rng(seed)
    _, cluster = np.unique(strata if scheme == "within_composition" else units, return_inverse=True)
    num_clusters = cluster.max(initial=-1) + 1
    copies = (np.ones((num_replicates, num_clusters), np.int64) if scheme == "within_composition" else
              rng.multinomial(num_clusters, np.full(num_clusters, 1.0 / max(num_clusters, 1)), num_replicates))
    weights = np.zeros((num_replicates, len(strata)))
    for c in range(num_clusters):
        members = np.flatnonzero(cluster == c)
        size = len(members)
        weights[:, members] = rng.multinomial(copies[:, c] * size, np.full(size, 1.0 / size))
    return weights


def seed_weights(num_seeds: int, num_replicates: int, seed: int = 0) -> np.ndarray:
    """Seed weights V float [B, S]: v_bs = (times run s is drawn) / S, S runs drawn with replacement per replicate
    (rows sum to 1; one run: all ones). Seeded apart from `bootstrap_weights`, so adding seeds leaves W as it was."""
    if num_seeds < 1:
        raise ValueError(f"num_seeds must be >= 1, got {num_seeds}")
    if num_seeds == 1:
        return np.ones((num_replicates, 1))
    rng = np.random.default_rng([seed, 1])
    return rng.multinomial(num_seeds, np.full(num_seeds, 1.0 / num_seeds), num_replicates) / num_seeds


# ------------------------------------------------------------------------------------------------ statistics


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


def _seeded(correct: np.ndarray) -> np.ndarray:
    """``correct`` as float [S, P, K] (a [P, K] input is one seed)."""
    correct = np.asarray(correct, np.float64)
    if correct.ndim == 2:
        return correct[None]
    if correct.ndim != 3 or not len(correct):
        raise ValueError(f"correct {correct.shape} must be [P, K] or [S, P, K] with S >= 1")
    return correct


def _common(correct: np.ndarray) -> np.ndarray:
    """[S, P, K] with a pair kept only where every seed's outcome is finite (the usable pairs of all seeds)."""
    usable = np.isfinite(correct).all(axis=0)
    return np.where(usable[None], correct, np.nan)


def _seed_totals(group: np.ndarray, correct: np.ndarray, num_groups: int) -> tuple[np.ndarray, np.ndarray]:
    """Per-seed group sums X [S, G, K] and the common counts C [G, K] of ``correct`` [S, P, K] (common pairs)."""
    totals = [group_totals(group, c, num_groups) for c in correct]
    return np.stack([s for s, _ in totals]), totals[0][1]


def _accuracies(sums: np.ndarray, counts: np.ndarray, weights: np.ndarray, seeds: np.ndarray
                ) -> tuple[np.ndarray, np.ndarray]:
    """Full-sample accuracy [K] (the mean over seeds) and replicate accuracies [B, K] = sum_s v_bs (W X^s) / (W C)."""
    estimate = _ratio(sums.mean(axis=0).sum(axis=0), counts.sum(axis=0))
    drawn = np.einsum("bs,sbk->bk", seeds, weights @ sums)  # weights @ sums: [S, B, K], one BLAS product per seed
    return estimate, _ratio(drawn, weights @ counts)


def _design(strata: np.ndarray, units: np.ndarray | None, scheme: str, unit: str, num_seeds: Any,
            weights: np.ndarray, level: float) -> Design:
    units = strata if units is None else np.asarray(units)
    counted = strata if scheme == "within_composition" else units
    return Design(scheme=scheme, unit="composition" if scheme == "within_composition" else unit,
                  num_units=len(np.unique(counted)), num_strata=len(np.unique(strata)), num_groups=len(strata),
                  num_seeds=num_seeds, num_replicates=len(weights), level=level)


def _prepare(strata: np.ndarray, units: np.ndarray | None, scheme: str, weights: np.ndarray | None,
             num_replicates: int, seed: int) -> np.ndarray:
    """``weights`` checked against ``strata`` [G], or fresh ones from `bootstrap_weights`."""
    if weights is None:
        return bootstrap_weights(strata, units=units, scheme=scheme, num_replicates=num_replicates, seed=seed)
    _check_scheme(scheme)
    weights = np.asarray(weights, np.float64)
    if weights.ndim != 2 or weights.shape[1] != len(strata):
        raise ValueError(f"weights {weights.shape} must be [B, G] with G = len(strata) = {len(strata)}")
    return weights


def accuracy_interval(
    group: np.ndarray,
    correct: np.ndarray,
    strata: np.ndarray,
    *,
    units: np.ndarray | None = None,
    unit: str = "composition",
    scheme: str = DEFAULT_SCHEME,
    num_replicates: int = DEFAULT_REPLICATES,
    seed: int = 0,
    level: float = DEFAULT_LEVEL,
    weights: np.ndarray | None = None,
) -> AccuracyInterval:
    """Percentile bootstrap interval of one system's pairwise accuracy, per dimension and averaged over dimensions.

    estimate_k = sum_g mean_s X^s_gk / sum_g C_gk (= `metrics.pairwise_accuracy` for one seed, the mean of the seeds'
    accuracies for several), mean = average of estimate_k over defined dimensions; replicates as in the module
    docstring. Cost: S [B, G] @ [G, K] products.

    Args: group: int [P] in [0, G); correct: float [P, K] or [S, P, K] (NaN = unusable; with seeds, a pair counts
      only where every seed's outcome is finite); strata: [G] composition per group; units: [G] the first-stage unit
      per group (default strata); unit: its name for messages ("composition" or "work"); scheme: one of `SCHEMES`;
      num_replicates: B; seed: the replicates' seed; level: interval coverage (0.95); weights: optional W [B, G].
    """
    strata = np.asarray(strata)
    weights = _prepare(strata, units, scheme, weights, num_replicates, seed)
    correct = _common(_seeded(correct))
    sums, counts = _seed_totals(group, correct, len(strata))
    estimate, replicates = _accuracies(sums, counts, weights, seed_weights(len(correct), len(weights), seed))
    defined = np.isfinite(estimate)
    mean = _interval(_nanmean_rows(estimate, defined), _nanmean_rows(replicates, defined), level)
    design = _design(strata, units, scheme, unit, len(correct), weights, level)
    return AccuracyInterval(mean=mean, per_dimension=_interval(estimate, replicates, level), design=design,
                            warnings=tuple(interval_warnings(mean, scheme=scheme, unit=design.unit,
                                                             num_units=design.num_units)))


def paired_difference_interval(
    group: np.ndarray,
    correct_a: np.ndarray,
    correct_b: np.ndarray,
    strata: np.ndarray,
    *,
    units: np.ndarray | None = None,
    unit: str = "composition",
    scheme: str = DEFAULT_SCHEME,
    pairs: str = "common",
    num_replicates: int = DEFAULT_REPLICATES,
    seed: int = 0,
    level: float = DEFAULT_LEVEL,
    weights: np.ndarray | None = None,
) -> DifferenceInterval:
    """Paired bootstrap interval of accuracy(a) - accuracy(b), two systems scored on the same pairs.

    Both systems' outcomes ``correct_a`` ([P, K] or [S_a, P, K]) and ``correct_b`` ([P, K] or [S_b, P, K]) are over
    the same pair list (same ``group`` [P]); every replicate uses the same music weights W for both, so group- and
    composition-level difficulty cancels in the difference; seeds are drawn alike when S_a = S_b (paired by
    position), independently otherwise. NaN rule (``pairs``): "common" (default) counts a pair on dimension k only
    where both systems (every seed) have a finite outcome, so the difference compares identical pairs; "own" lets
    each system keep its own usable pairs (each accuracy as that system would report it).
    diff_bk = acc^a_bk - acc^b_bk; mean difference = mean over dimensions defined for both of diff_k.
    A system against itself gives exactly 0 in every replicate: a zero-width interval [0, 0] (degenerate: not real).
    Other arguments as in `accuracy_interval`.
    """
    if pairs not in PAIR_RULES:
        raise ValueError(f"pairs must be one of {PAIR_RULES}, got {pairs!r}")
    correct_a, correct_b = _common(_seeded(correct_a)), _common(_seeded(correct_b))
    if correct_a.shape[1:] != correct_b.shape[1:]:
        raise ValueError(f"correct_a {correct_a.shape} and correct_b {correct_b.shape} must be the same pairs [P, K]")
    if pairs == "common":
        both = np.isfinite(correct_a[0]) & np.isfinite(correct_b[0])
        correct_a, correct_b = np.where(both, correct_a, np.nan), np.where(both, correct_b, np.nan)
    strata = np.asarray(strata)
    weights = _prepare(strata, units, scheme, weights, num_replicates, seed)
    seeds_a = seed_weights(len(correct_a), len(weights), seed)
    seeds_b = seeds_a if len(correct_b) == len(correct_a) else seed_weights(len(correct_b), len(weights), seed + 1)
    sums_a, counts_a = _seed_totals(group, correct_a, len(strata))
    sums_b, counts_b = _seed_totals(group, correct_b, len(strata))
    estimate_a, replicates_a = _accuracies(sums_a, counts_a, weights, seeds_a)
    estimate_b, replicates_b = _accuracies(sums_b, counts_b, weights, seeds_b)
    estimate, replicates = estimate_a - estimate_b, replicates_a - replicates_b
    defined = np.isfinite(estimate)
    mean = _interval(_nanmean_rows(estimate, defined), _nanmean_rows(replicates, defined), level)
    design = _design(strata, units, scheme, unit, (len(correct_a), len(correct_b)), weights, level)
    return DifferenceInterval(
        mean=mean,
        per_dimension=_interval(estimate, replicates, level),
        num_pairs=counts_a.sum(axis=0).astype(np.int64),
        pairs=pairs,
        design=design,
        warnings=tuple(interval_warnings(mean, scheme=scheme, unit=design.unit, num_units=design.num_units)),
    )
