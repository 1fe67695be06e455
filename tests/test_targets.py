"""Group-relative derived targets on hand-built groups (z-score, pooled, rank; NaN for groups of one, zero spread and
missing values; performances counted once whatever their renders; log tempo) and `data.targets` on a table."""

import dataclasses

import ml_collections
import numpy as np
import pytest

from crescend_jax.data.dimensions import DIMENSIONS
from crescend_jax.data.performance_labels import DERIVED_LABELS
from crescend_jax.data.table import EmbeddingTable
from crescend_jax.data.targets import (TargetError, derived_columns, derived_targets, group_relative, target_names,
                                       with_targets)

NAN = np.nan
# Groups: A = 1, 2, 3; B = 10, 10 (zero spread); C = 5 (alone); D = 4, NaN, 8 (two finite values).
VALUES = np.array([1, 2, 3, 10, 10, 5, 4, NAN, 8], np.float64)
GROUPS = np.array(["A", "A", "A", "B", "B", "C", "D", "D", "D"])


def test_within_group_zscore_by_hand():
    z = group_relative(VALUES, GROUPS, "zscore")
    sd_a = np.sqrt(2 / 3)  # population SD of 1, 2, 3
    np.testing.assert_allclose(z, [-1 / sd_a, 0, 1 / sd_a, NAN, NAN, NAN, -1, NAN, 1], rtol=1e-6)
    assert z.dtype == np.float32


def test_pooled_scale_is_the_robust_within_group_sd_over_every_usable_group():
    y = group_relative(VALUES, GROUPS, "pooled")
    # residuals x sqrt(n / (n - 1)): A (n = 3) -1.22, 0, 1.22; D (n = 2) -2.83, 2.83; median |r| = sqrt(3 / 2)
    scale = 1.482602218505602 * np.sqrt(3 / 2)
    np.testing.assert_allclose(y, [-1 / scale, 0, 1 / scale, NAN, NAN, NAN, -2 / scale, NAN, 2 / scale], rtol=1e-6)


def test_the_pooled_scale_estimates_the_within_group_sd_and_ignores_outliers():
    rng = np.random.default_rng(1)
    groups = np.repeat(np.arange(2000), 3)
    values = rng.normal(size=len(groups)) * 2.0 + np.repeat(rng.normal(size=2000) * 50, 3)  # sigma 2, piece offsets
    y = group_relative(values, groups, "pooled")
    centred = values - np.repeat(values.reshape(-1, 3).mean(axis=1), 3)
    implied = centred / y  # the scale used
    assert abs(np.median(implied) - 2.0) < 0.1  # the within-group SD, not the piece offsets' 50
    values[:20] *= 1000  # a few wild windows barely move it
    moved = np.median((values - np.repeat(values.reshape(-1, 3).mean(axis=1), 3)) / group_relative(values, groups))
    assert abs(moved - np.median(implied)) < 0.05


def test_rank_shares_ties_and_spans_zero_to_one():
    y = group_relative(np.array([1, 2, 2, 3, 7, 5]), np.array(["g"] * 4 + ["h"] * 2), "rank")
    np.testing.assert_allclose(y, [0, 0.5, 0.5, 1, 1, 0])
    np.testing.assert_allclose(group_relative(VALUES, GROUPS, "rank"), [0, 0.5, 1, NAN, NAN, NAN, 0, NAN, 1])


@pytest.mark.parametrize("transform", ["pooled", "zscore", "rank"])
def test_every_transform_orders_each_group_as_the_raw_label(transform):
    rng = np.random.default_rng(0)
    values = np.round(rng.normal(size=(60, 3)), 1)  # rounded: some ties
    values[rng.random(values.shape) < 0.1] = NAN
    groups = rng.integers(0, 12, 60)
    y = group_relative(values, groups, transform)
    for g in range(12):
        rows = np.flatnonzero(groups == g)
        for k in range(3):
            x, t = values[rows, k], y[rows, k]
            finite = np.isfinite(x)
            if finite.sum() >= 2 and np.ptp(x[finite]) > 0:
                assert np.isfinite(t[finite]).all() and np.isnan(t[~finite]).all()
                gaps = np.sign(np.subtract.outer(x[finite], x[finite]))
                np.testing.assert_array_equal(np.sign(np.subtract.outer(t[finite], t[finite])), gaps)
            else:
                assert np.isnan(t).all()


def test_a_performance_with_several_renders_counts_once():
    values, groups, keys = np.array([1.0, 1.0, 3.0, 3.0]), np.array(["g"] * 4), np.array(["a", "a", "b", "b"])
    by_key = group_relative(values, groups, "pooled", units=keys)
    half = 1 / (1.482602218505602 * np.sqrt(2))  # residuals +-1 of n = 2: scaled by sqrt(2)
    np.testing.assert_allclose(by_key, [-half, -half, half, half], rtol=1e-6)
    by_row = group_relative(values, groups, "pooled")  # rows as units: 4 values, n = 4
    assert not np.allclose(by_row, by_key)
    np.testing.assert_allclose(group_relative(values, groups, "zscore", units=keys), [-1, -1, 1, 1])


def test_unknown_transform_and_bad_shapes_are_refused():
    with pytest.raises(TargetError, match="unknown data.target_transform 'minmax'"):
        group_relative(VALUES, GROUPS, "minmax")
    with pytest.raises(ValueError, match="groups"):
        group_relative(VALUES, GROUPS[:3])


def table(derived=None, names=DERIVED_LABELS, keys=None, groups=None) -> EmbeddingTable:
    keys = np.array(keys if keys is not None else [f"k{i}" for i in range(4)])
    n = len(keys)
    groups = np.array(groups if groups is not None else ["g0", "g0", "g1", "g1"][:n])
    label = np.tile(np.linspace(0, 1, n, dtype=np.float32)[:, None], (1, 19))
    return EmbeddingTable(
        keys=keys, compositions=np.array(["C"] * n), pieces=np.array(["C"] * n), performers=keys, groups=groups,
        renders=np.array(["r"] * n), label_mean=label, label_std=np.full((n, 19), 0.1, np.float32),
        label_truth=np.full((n, 19), NAN, np.float32), ratings=[np.full((2, 19), 0.5, np.float32)] * n,
        pooled=np.zeros((n, 2), np.float32), frames=None, encoder="e", frame_rate=0.0,
        derived=None if derived is None else np.asarray(derived, np.float32), derived_names=names if derived is not None
        else ())


def data(targets, **fields):
    return ml_collections.ConfigDict({"targets": targets, "target_transform": "pooled", "derived_labels": (),
                                      **fields})


def test_tempo_is_relative_as_a_ratio():
    # group g0: 60 and 120 bpm (a Largo), g1: 100 and 200 bpm (a Presto): one performance twice as fast in each
    derived = np.zeros((4, len(DERIVED_LABELS)), np.float32)
    derived[:, 0] = [60, 120, 100, 200]
    derived[:, 2] = [40, 50, 80, 90]  # velocity: 10 apart in each
    derived[:, 3] = [7, 7, 1, 2]  # g0 has no spread of velocity range
    y = derived_targets(table(derived), ("tempo_bpm", "velocity_mean", "velocity_range"))
    np.testing.assert_allclose(y[:2, 0], y[2:, 0], rtol=1e-6)  # the same ratio -> the same target
    half = 1 / (1.482602218505602 * np.sqrt(2))  # pairs at -d/2, +d/2: residuals (d/2) sqrt(2), scale 1.4826 d/sqrt(2)
    np.testing.assert_allclose(y[:, 0], [-half, half, -half, half], rtol=1e-6)
    np.testing.assert_allclose(y[:, 1], [-half, half, -half, half], rtol=1e-6)
    np.testing.assert_allclose(y[:, 2], [NAN, NAN, -half, half], rtol=1e-6)  # zero spread stays undefined


def test_targets_derived_and_both_shape_the_label_columns():
    derived = np.arange(4 * len(DERIVED_LABELS), dtype=np.float32).reshape(4, -1)
    rated = table(derived)
    assert with_targets(rated, data("ratings")) is rated
    only = with_targets(rated, data("derived"))
    assert only.label_names == DERIVED_LABELS and only.label_mean.shape == (4, len(DERIVED_LABELS))
    assert np.isnan(only.label_std).all() and np.isnan(only.label_truth).all()
    assert all(r.shape == (0, len(DERIVED_LABELS)) for r in only.ratings)
    both = with_targets(rated, data("both"))
    width = 19 + len(DERIVED_LABELS)
    assert both.label_names == DIMENSIONS + DERIVED_LABELS and both.label_mean.shape == (4, width)
    np.testing.assert_array_equal(both.label_mean[:, :19], rated.label_mean)
    np.testing.assert_array_equal(both.label_mean[:, 19:], only.label_mean)
    np.testing.assert_array_equal(both.label_std[:, :19], rated.label_std)
    assert np.isnan(both.label_std[:, 19:]).all()
    assert all(r.shape == (2, width) and np.isnan(r[:, 19:]).all() for r in both.ratings)
    np.testing.assert_array_equal(derived_columns(both.label_names), [False] * 19 + [True] * len(DERIVED_LABELS))
    picked = with_targets(rated, data("derived", derived_labels=("pedal", "tempo_bpm")))
    assert picked.label_names == ("pedal", "tempo_bpm")
    assert target_names(data("derived", derived_labels=("pedal", "tempo_bpm"))) == ("pedal", "tempo_bpm")
    assert both.subset(np.array([2, 0])).label_names == both.label_names


def test_targets_the_table_cannot_serve_are_refused():
    with pytest.raises(TargetError, match="holds no derived labels"):
        with_targets(table(), data("derived"))
    derived = np.zeros((4, len(DERIVED_LABELS)), np.float32)
    with pytest.raises(TargetError, match=r"names \['loudness'\], which the store does not hold"):
        with_targets(table(derived), data("derived", derived_labels=("loudness",)))
    with pytest.raises(TargetError, match="unknown data.targets 'all'"):
        target_names(data("all"))
    twice = with_targets(table(derived), data("both"))
    assert with_targets(twice, data("both")) is twice
    with pytest.raises(TargetError, match="apply data.targets once"):
        with_targets(twice, data("derived"))
    with pytest.raises(ValueError, match=r"label_mean must be \[4, 3\]"):
        dataclasses.replace(table(), label_names=("a", "b", "c"))
