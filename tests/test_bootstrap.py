"""The group bootstrap against simulated pair outcomes whose true accuracy is known."""

import time

import numpy as np
import pytest

from crescend_jax.evaluate import bootstrap, metrics

# Three compositions with different true accuracies and numbers of groups (the stratified design is fixed).
STRATUM_ACCURACY = np.array([0.55, 0.62, 0.70])
STRATUM_GROUPS = np.array([10, 15, 25])


def simulate(rng, num_dims=2, group_spread=0.05, accuracy=STRATUM_ACCURACY):
    """Per-pair Bernoulli(p_g) outcomes, p_g = p_composition + N(0, group_spread^2), 3..30 pairs per group.

    Returns group [P], correct [P, K] and strata [G]. Under this design (group sizes independent of p_g) the true
    pooled accuracy is sum_s n_s p_s / sum_s n_s on every dimension.
    """
    strata = np.repeat(np.arange(len(STRATUM_GROUPS)), STRATUM_GROUPS)
    sizes = rng.integers(3, 31, size=len(strata))
    group = np.repeat(np.arange(len(strata)), sizes)
    p = np.clip(accuracy[strata][:, None] + rng.normal(0.0, group_spread, (len(strata), num_dims)), 0.0, 1.0)
    correct = (rng.random((len(group), num_dims)) < p[group]).astype(np.float64)
    return group, correct, strata


def true_accuracy(accuracy=STRATUM_ACCURACY):
    return float(STRATUM_GROUPS @ accuracy / STRATUM_GROUPS.sum())


def test_interval_covers_the_true_accuracy_at_about_the_nominal_rate():
    rng = np.random.default_rng(0)
    truth = true_accuracy()
    covered_mean, covered_dims, repetitions = 0, 0, 200
    for repetition in range(repetitions):
        group, correct, strata = simulate(rng)
        result = bootstrap.accuracy_interval(group, correct, strata, num_replicates=1000, seed=repetition)
        covered_mean += result.mean.low <= truth <= result.mean.high
        covered_dims += np.sum((result.per_dimension.low <= truth) & (truth <= result.per_dimension.high))
    assert 0.90 <= covered_mean / repetitions <= 0.99
    assert 0.90 <= covered_dims / (2 * repetitions) <= 0.99


def test_estimate_equals_pairwise_accuracy_and_interval_brackets_it():
    rng = np.random.default_rng(1)
    groups = np.repeat(np.arange(30), 6)
    compositions = np.repeat(["x", "y", "z"], 60)
    scores, labels = rng.normal(size=(180, 3)), rng.normal(size=(180, 3))
    labels[:, 1] += scores[:, 1]  # dimension 1 is predictable
    outcomes = metrics.pair_outcomes(scores, labels, groups)
    strata = bootstrap.group_strata(groups, compositions, outcomes.group_ids)
    assert strata.tolist() == ["x"] * 10 + ["y"] * 10 + ["z"] * 10
    result = bootstrap.accuracy_interval(outcomes.group, outcomes.correct, strata)
    expected = metrics.pairwise_accuracy(scores, labels, groups).accuracy
    assert result.per_dimension.estimate == pytest.approx(expected)
    assert result.mean.estimate == pytest.approx(expected.mean())
    assert np.all(result.per_dimension.low <= expected) and np.all(expected <= result.per_dimension.high)
    assert result.per_dimension.low[1] > 0.5 and result.num_groups == 30 and result.num_strata == 3
    again = bootstrap.accuracy_interval(outcomes.group, outcomes.correct, strata)
    assert again.mean == result.mean  # seeded
    assert bootstrap.accuracy_interval(outcomes.group, outcomes.correct, strata, seed=1).mean != result.mean


def test_weights_keep_each_stratum_group_count():
    strata = np.array(["a"] * 3 + ["b"] * 7 + ["c"] * 1 + ["a"] * 2)
    weights = bootstrap.bootstrap_weights(strata, num_replicates=500, seed=3)
    assert weights.shape == (500, 13)
    for name in ("a", "b", "c"):
        assert np.all(weights[:, strata == name].sum(axis=1) == np.sum(strata == name))
    assert np.all(weights[:, strata == "c"] == 1)  # a lone group is always drawn once
    # Every group of a stratum is drawn once per replicate on average.
    assert weights.mean(axis=0) == pytest.approx(np.ones(13), abs=0.15)


def test_paired_difference_of_a_system_with_itself_is_exactly_zero():
    group, correct, strata = simulate(np.random.default_rng(2), num_dims=3)
    correct[::7, 1] = np.nan
    for rule in bootstrap.PAIR_RULES:
        result = bootstrap.paired_difference_interval(group, correct, correct, strata, pairs=rule)
        assert result.mean.estimate == 0.0 and result.mean.low == 0.0 and result.mean.high == 0.0
        assert np.all(result.per_dimension.low == 0) and np.all(result.per_dimension.high == 0)
        assert not result.excludes_zero


def test_paired_difference_finds_a_clearly_better_system_and_not_an_equal_one():
    rng = np.random.default_rng(4)
    group, better, strata = simulate(rng, accuracy=np.array([0.70, 0.72, 0.75]))
    worse = (rng.random(better.shape) < 0.55).astype(np.float64)
    result = bootstrap.paired_difference_interval(group, better, worse, strata)
    assert result.excludes_zero and result.mean.low > 0
    assert result.mean.estimate == pytest.approx(np.mean(better) - np.mean(worse))
    reversed_ = bootstrap.paired_difference_interval(group, worse, better, strata)
    assert reversed_.excludes_zero and reversed_.mean.high < 0
    # Two independent draws of the same system: the interval covers 0 (seeded; true difference 0).
    twin = (rng.random(better.shape) < 0.55).astype(np.float64)
    assert not bootstrap.paired_difference_interval(group, twin, worse, strata).excludes_zero


def test_paired_pairs_rule_common_versus_own():
    group = np.array([0, 0, 1, 1, 2, 2])
    strata = np.array(["x", "x", "y"])
    a = np.array([[1.0], [1.0], [0.0], [1.0], [1.0], [0.0]])
    b = np.array([[0.0], [np.nan], [0.0], [1.0], [1.0], [0.0]])
    common = bootstrap.paired_difference_interval(group, a, b, strata, pairs="common", num_replicates=50)
    # common pairs: 0, 2, 3, 4, 5 -> a 3/5, b 2/5
    assert common.per_dimension.estimate[0] == pytest.approx(0.2) and common.num_pairs.tolist() == [5]
    own = bootstrap.paired_difference_interval(group, a, b, strata, pairs="own", num_replicates=50)
    assert own.per_dimension.estimate[0] == pytest.approx(4 / 6 - 2 / 5) and own.num_pairs.tolist() == [6]
    with pytest.raises(ValueError, match="pairs must be"):
        bootstrap.paired_difference_interval(group, a, b, strata, pairs="both")
    with pytest.raises(ValueError, match="same pairs"):
        bootstrap.paired_difference_interval(group, a, b[:5], strata)


def test_undefined_dimensions_and_bad_inputs():
    group = np.array([0, 1, 2])
    correct = np.array([[1.0, np.nan], [0.0, np.nan], [1.0, np.nan]])
    result = bootstrap.accuracy_interval(group, correct, np.array(["x", "x", "y"]), num_replicates=100)
    assert np.isnan(result.per_dimension.estimate[1]) and np.isnan(result.per_dimension.low[1])
    assert result.mean.estimate == pytest.approx(2 / 3)  # the undefined dimension is left out of the mean
    with pytest.raises(ValueError, match="group indices"):
        bootstrap.accuracy_interval(np.array([0, 5, 1]), correct, np.array(["x", "x", "y"]))
    with pytest.raises(ValueError, match="weights"):
        bootstrap.accuracy_interval(group, correct, np.array(["x", "x", "y"]), weights=np.ones((10, 2)))
    with pytest.raises(ValueError, match="span several compositions"):
        bootstrap.group_strata(np.array([1, 1, 2]), np.array(["x", "y", "y"]), np.array([1, 2]))
    with pytest.raises(ValueError, match="no row"):
        bootstrap.group_strata(np.array([1, 1, 2]), np.array(["x", "x", "y"]), np.array([1, 3]))


def test_fast_for_a_thousand_groups_and_nineteen_dimensions():
    rng = np.random.default_rng(5)
    strata = rng.integers(0, 20, size=1000)
    group = np.repeat(np.arange(1000), 28)  # 8 performances per group: 28 pairs
    correct = (rng.random((len(group), 19)) < 0.6).astype(np.float64)
    start = time.perf_counter()
    a = bootstrap.accuracy_interval(group, correct, strata)
    bootstrap.paired_difference_interval(group, correct, 1.0 - correct, strata)
    elapsed = time.perf_counter() - start
    assert a.num_replicates == 2000
    assert elapsed < 5.0, f"{elapsed:.2f} s"  # about 0.5 s on a quiet core; generous for a shared machine


def test_as_dict_carries_the_numbers():
    group, correct, strata = simulate(np.random.default_rng(6))
    single = bootstrap.accuracy_interval(group, correct, strata, num_replicates=200).as_dict()
    assert single["mean"]["low"] <= single["mean"]["estimate"] <= single["mean"]["high"]
    assert single["num_replicates"] == 200 and single["num_strata"] == 3
    paired = bootstrap.paired_difference_interval(group, correct, correct, strata, num_replicates=200).as_dict()
    assert paired["excludes_zero"] is False and paired["pairs"] == "common"
