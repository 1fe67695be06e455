"""What a run ranks by: the table's label columns chosen by ``data.targets``, and derived labels made relative to
their same-music group (pure numpy, computed when the table is read; nothing here changes what a store holds).

**Targets** (``data.targets``). The run's label columns are the table's ``label_mean`` [N, T], named by
``label_names`` [T] (one ranking head per column):

``"ratings"``  the 19 PercePiano dimensions as stored (T = 19): the table is returned unchanged.
``"derived"``  the K performance-derived labels ``data.derived_labels`` (default: every one the store holds, i.e.
               `crescend_jax.data.performance_labels.DERIVED_LABELS`), each group-relative (below); T = K.
``"both"``     the 19 ratings, then the K derived targets (T = 19 + K), as separate columns. A corpus without one set
               holds NaN there (ASAP rows have no ratings, PercePiano rows no derived labels): the ranking losses skip
               NaN gaps, so a column only ever learns from the rows of the corpus that has it.

With derived columns, ``label_std`` is NaN there (no rater spread: the agreement weight of a derived pair is 1),
``label_truth`` NaN, and each row's individual ``ratings`` [R_i, T] carry NaN in the derived columns.

**Group-relative derived targets** (``data.target_transform``). Units are performances (table keys): a performance
that has several rows (one per soundfont render) counts once in its group's statistics, and each of its rows gets its
value. For label k, group g, the finite values x_i of its n = n_gk performances (``tempo_bpm`` is taken as log bpm
first, so a gap is a tempo ratio and "10% faster" weighs the same in a Largo as in a Presto):

``"pooled"`` (default)  y_i = (x_i - mean_g) / s_k: centred per group, one scale per label. s_k is the within-group
                        standard deviation of label k pooled over the table's groups, estimated robustly: with the
                        residuals r_i = (x_i - mean_g) sqrt(n_g / (n_g - 1)) (each ~ N(0, sigma^2) for normal data),
                        s_k = 1.4826 median_i |r_i| (1.4826 = 1 / Phi^-1(3/4)), over every usable group's members.
                        For normal data it estimates the pooled SD sqrt(sum_g sum_i (x_i - mean_g)^2 / sum_g (n_g - 1))
                        (one-way ANOVA's within-group SD); unlike it, a few extreme windows (ASAP's articulation
                        ratio reaches 130 where its residuals' median is 0.08) cannot inflate the scale and shrink
                        every other gap.
``"zscore"``            y_i = (x_i - mean_g) / sd_g, sd_g the group's own population SD (sum (x - mean)^2 / n)^(1/2).
``"rank"``              y_i = (r_i - 1) / (n - 1) in [0, 1], r_i the rank of x_i in its group (ties share the mean
                        rank).

y is NaN where x is not finite, where the group holds fewer than 2 finite values (n_gk < 2), or where they are all
equal (zero spread): nothing to rank is never turned into a target.

**Which transform the ranking losses use, and why.** All three are increasing maps of x inside a group, so they order
every same-group pair exactly as the raw label does, and within-group ranking accuracy is the same whichever is used.
What differs is the *size* of a gap, which the ranking losses of approaches A and B read in one place: pairs with
``|gap| <= model.loss.min_label_gap`` are skipped as ties. ``"pooled"`` keeps the gap's magnitude in a unit shared
by every label (bpm, velocity, share of time all become "typical within-group spreads"), so one ``min_label_gap``
skips the near-ties that annotation and measurement noise decide, whatever the label. ``"zscore"`` blows a two-member
group up to -1/+1 whatever its gap (0.5 bpm apart = 30 bpm apart), and ``"rank"`` makes every distinct pair one full
rank step; neither can tell a near-tie from a real difference. So ``"pooled"`` is the default for training; ``"zscore"``
suits pointwise regression or probing (each group weighs alike) and ``"rank"`` rank-correlation analyses. The pooled
scale s_k is one positive number per label computed over the table's rows (held-out ones included); it changes no
within-group order, and held-out evaluation reads only orders, so it carries nothing about the held-out ranking.

**What the targets can and cannot show.** The derived labels are read off each performance's MIDI. An encoder that
reads the same MIDI (``midi`` features, the ``aligned`` encoder) sees the quantities the labels are computed from,
so ranking them is near-trivial for it and says little about learning performance differences; for ASAP ranking
pre-training the meaningful input is the audio-features store (rendered audio: the encoder has to hear tempo,
dynamics, articulation and pedal). Report derived-target accuracy of a MIDI-based encoder only as that ceiling.
"""

from __future__ import annotations

import dataclasses
from typing import Sequence

import numpy as np

from crescend_jax.data.dimensions import DIMENSIONS, NUM_DIMENSIONS
from crescend_jax.data.groups import dense_ids
from crescend_jax.data.performance_labels import DERIVED_LABELS
from crescend_jax.data.table import EmbeddingTable

TARGET_SETS = ("ratings", "derived", "both")
TRANSFORMS = ("pooled", "zscore", "rank")
LOG_LABELS = frozenset({"tempo_bpm"})  # taken in log before the group-relative transform (a gap is a ratio)
MAD_TO_SD = 1.482602218505602  # 1 / Phi^-1(3/4): median |N(0, sigma^2)| x this = sigma


class TargetError(ValueError):
    """A ``data.targets`` setting the table cannot serve (no derived labels, an unknown label name, ...)."""


def group_relative(values: np.ndarray, groups: np.ndarray, transform: str = "pooled",
                   units: np.ndarray | None = None) -> np.ndarray:
    """float32 [N, K]: ``values`` [N, K] (or [N]) expressed relative to their group (module doc).

    groups: [N] same-music group of each row (any dtype). units: [N] the performance of each row (e.g. the table's
    keys): rows of one unit count once in the statistics and all get that unit's value (the first row's values are
    the unit's); None = every row is its own unit. No pre-transform is applied here (`derived_targets` takes log
    tempo). NaN where a value is not finite or its group has < 2 finite values or zero spread.
    """
    if transform not in TRANSFORMS:
        raise TargetError(f"unknown data.target_transform {transform!r}; use one of {TRANSFORMS}")
    values = np.asarray(values, np.float64)
    flat = values.ndim == 1
    values = values[:, None] if flat else values
    groups = np.asarray(groups)
    if values.ndim != 2 or groups.shape != (len(values),):
        raise ValueError(f"values must be [N] or [N, K] and groups [N]; got {values.shape} and {groups.shape}")
    if units is None:
        first, back = np.arange(len(values)), np.arange(len(values))
    else:
        _, first, back = np.unique(np.asarray(units), return_index=True, return_inverse=True)
        back = back.reshape(-1)
    x, g = values[first], dense_ids(groups[first])
    out = np.full_like(x, np.nan)
    for k in range(x.shape[1]):
        out[:, k] = _relative_column(x[:, k], g, transform)
    out = out[back].astype(np.float32)
    return out[:, 0] if flat else out


def _relative_column(x: np.ndarray, g: np.ndarray, transform: str) -> np.ndarray:
    """One label: x float64 [M] (one per unit), g int [M] dense group ids -> float64 [M] (NaN where undefined)."""
    finite = np.isfinite(x)
    num_groups = int(g.max()) + 1 if len(g) else 0
    n = np.bincount(g[finite], minlength=num_groups)
    high = np.full(num_groups, -np.inf)
    low = np.full(num_groups, np.inf)
    np.maximum.at(high, g[finite], x[finite])
    np.minimum.at(low, g[finite], x[finite])
    usable_group = (n >= 2) & (high > low)
    usable = finite & usable_group[g]
    result = np.full(len(x), np.nan)
    if not usable.any():
        return result
    if transform == "rank":
        result[usable] = _group_ranks(x[usable], g[usable])
        return result
    sums = np.bincount(g[usable], weights=x[usable], minlength=num_groups)
    mean = sums / np.maximum(n, 1)
    centred = x[usable] - mean[g[usable]]
    squares = np.bincount(g[usable], weights=centred**2, minlength=num_groups)
    if transform == "zscore":
        scale = np.sqrt(squares / np.maximum(n, 1))[g[usable]]
    else:  # robust pooled within-group SD: 1.4826 x the median |residual|, residuals scaled to variance sigma^2
        size = n[g[usable]]
        scale = MAD_TO_SD * np.median(np.abs(centred) * np.sqrt(size / (size - 1)))
    result[usable] = centred / scale
    return result


def _group_ranks(x: np.ndarray, g: np.ndarray) -> np.ndarray:
    """(r - 1) / (n - 1) per group, r the 1-based rank of x in its group (ties share their mean rank); x finite,
    every group of size >= 2."""
    order = np.lexsort((x, g))
    xs, gs = x[order], g[order]
    new_group = np.concatenate([[True], gs[1:] != gs[:-1]])
    group_start = np.maximum.accumulate(np.where(new_group, np.arange(len(xs)), 0))
    ordinal = np.arange(len(xs)) - group_start  # 0-based rank in the group
    new_run = new_group | np.concatenate([[True], xs[1:] != xs[:-1]])
    run = np.cumsum(new_run) - 1
    mean_rank = np.bincount(run, weights=ordinal) / np.bincount(run)  # ties: the mean of their 0-based ranks
    size = np.bincount(gs)[gs]
    ranks = np.empty(len(xs))
    ranks[order] = mean_rank[run] / (size - 1)
    return ranks


def derived_targets(table: EmbeddingTable, names: Sequence[str] = (), transform: str = "pooled") -> np.ndarray:
    """float32 [N, K]: the table's derived labels ``names`` (default: all it holds), log tempo for `LOG_LABELS`,
    made relative to each row's same-music group by performance (`group_relative` with the keys as units)."""
    if table.derived is None:
        raise TargetError("the table holds no derived labels (a rated corpus such as PercePiano): use "
                          "data.targets='ratings', or a joint table with ASAP (crescend_jax.data.joint)")
    names = tuple(names) or tuple(table.derived_names)
    unknown = [n for n in names if n not in table.derived_names]
    if unknown:
        raise TargetError(f"data.derived_labels names {unknown}, which the store does not hold; it holds "
                          f"{list(table.derived_names)}")
    columns = np.stack([table.derived[:, table.derived_names.index(n)].astype(np.float64) for n in names], axis=1)
    for position, name in enumerate(names):
        if name in LOG_LABELS:
            column = columns[:, position]
            with np.errstate(divide="ignore", invalid="ignore"):
                columns[:, position] = np.where(column > 0, np.log(np.where(column > 0, column, 1.0)), np.nan)
    return group_relative(columns, table.groups, transform, units=table.keys)


def target_names(data_config) -> tuple[str, ...]:
    """The T label-column names a run with ``data_config`` trains on (its heads, in order), from the config alone:
    the 19 `DIMENSIONS`, the derived labels ``data.derived_labels`` (default `DERIVED_LABELS`), or both."""
    targets = data_config.get("targets", "ratings")
    if targets not in TARGET_SETS:
        raise TargetError(f"unknown data.targets {targets!r}; use one of {TARGET_SETS}")
    derived = tuple(data_config.get("derived_labels", ()) or ()) or DERIVED_LABELS
    return {"ratings": DIMENSIONS, "derived": derived, "both": DIMENSIONS + derived}[targets]


def derived_columns(names: Sequence[str]) -> np.ndarray:
    """bool [T]: which of the label columns ``names`` are derived targets (the rest are rating dimensions)."""
    return np.array([name not in DIMENSIONS for name in names], bool)


def with_targets(table: EmbeddingTable, data_config) -> EmbeddingTable:
    """``table`` whose label columns are the targets of ``data_config`` (module doc): ``label_mean``, ``label_std``,
    ``label_truth`` [N, T], ``ratings`` [R_i, T] and ``label_names`` (T names, `target_names`). "ratings", and a table
    whose columns already are these targets, return ``table`` itself. Raises `TargetError` when the table cannot
    serve the setting."""
    targets = data_config.get("targets", "ratings")
    names = target_names(data_config)
    if targets == "ratings" or table.label_names == names:
        return table
    if table.label_mean.shape[1] != NUM_DIMENSIONS or (table.label_names and table.label_names != DIMENSIONS):
        raise TargetError(f"the table's label columns are already targets {list(table.label_names)}; apply "
                          f"data.targets once, to the table as read from the store")
    derived_names = names[NUM_DIMENSIONS:] if targets == "both" else names
    derived = derived_targets(table, derived_names, data_config.get("target_transform", "pooled"))
    blank = np.full(derived.shape, np.nan, np.float32)
    if targets == "derived":
        mean, std, truth = derived, blank, blank
        ratings = [np.zeros((0, len(names)), np.float32) for _ in table.ratings]
    else:
        mean = np.concatenate([table.label_mean, derived], axis=1)
        std = np.concatenate([table.label_std, blank], axis=1)
        truth = np.concatenate([table.label_truth, blank], axis=1)
        ratings = [np.concatenate([r, np.full((len(r), len(derived_names)), np.nan, np.float32)], axis=1)
                   for r in table.ratings]
    return dataclasses.replace(table, label_mean=mean.astype(np.float32), label_std=std.astype(np.float32),
                               label_truth=truth.astype(np.float32), ratings=ratings, label_names=names)


def selection_labels(table: EmbeddingTable) -> np.ndarray:
    """float [N, T]: the label columns a checkpoint is selected on (validation pairwise accuracy): every column, but
    with both ratings and derived targets (a joint run) only the ratings, the derived columns set to NaN (no pair of
    theirs counts): the derived targets are the auxiliary task, the ratings the one the run is for."""
    derived = derived_columns(table.label_names) if table.label_names else np.zeros(table.label_mean.shape[1], bool)
    if not derived.any() or derived.all():
        return table.label_mean
    return np.where(derived[None, :], np.nan, table.label_mean)
