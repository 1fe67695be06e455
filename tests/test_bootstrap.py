"""The bootstrap against simulated pair outcomes whose true accuracy is known: the two-stage default (new music),
the within-composition option (a fixed set of compositions), seeds as a further stage, and degenerate intervals."""


import numpy as np
import pytest

from crescend_jax.evaluate import bootstrap, metrics

# Three compositions with different true accuracies and numbers of groups (the fixed-set design).
STRATUM_ACCURACY = np.array([0.55, 0.62, 0.70])
STRATUM_GROUPS = np.array([10, 15, 25])


def simulate(rng, num_dims=2, group_spread=0.05, accuracy=STRATUM_ACCURACY, groups=STRATUM_GROUPS):
    """Per-pair Bernoulli(p_g) outcomes, p_g = p_composition + N(0, group_spread^2), 3..30 pairs per group.

    Returns group [P], correct [P, K] and strata [G]. Under this design (group sizes independent of p_g) the true
    pooled accuracy is sum_s n_s p_s / sum_s n_s on every dimension.
    """
    strata = np.repeat(np.arange(len(groups)), groups)
    sizes = rng.integers(3, 31, size=len(strata))
    group = np.repeat(np.arange(len(strata)), sizes)
    p = np.clip(accuracy[strata][:, None] + rng.normal(0.0, group_spread, (len(strata), num_dims)), 0.0, 1.0)
    correct = (rng.random((len(group), num_dims)) < p[group]).astype(np.float64)
    return group, correct, strata


def true_accuracy(accuracy=STRATUM_ACCURACY):
    return float(STRATUM_GROUPS @ accuracy / STRATUM_GROUPS.sum())


def one_group_per_composition(rng, num_compositions=17, pairs=28, num_dims=3):
    """Each composition holds a single same-music group (variations of one theme) with its own accuracy."""
    p = rng.uniform(0.45, 0.75, num_compositions)
    group = np.repeat(np.arange(num_compositions), pairs)
    correct = (rng.random((len(group), num_dims)) < p[group][:, None]).astype(np.float64)
    return group, correct, np.array([f"var{c}" for c in range(num_compositions)])


# ----------------------------------------------------------------------------------------- the three tests


def test_one_group_per_composition_gets_an_interval_as_wide_as_the_composition_spread():
    """17 compositions x 1 group: the two-stage interval is not degenerate and its width is that of a normal
    interval from the spread of the compositions' accuracies (factor 1.5); the fixed-set scheme is zero-width and
    says so."""
    group, correct, strata = one_group_per_composition(np.random.default_rng(0))
    result = bootstrap.accuracy_interval(group, correct, strata)
    per_composition = np.array([correct[group == g].mean() for g in range(len(strata))])  # equal pair counts
    assert result.mean.estimate == pytest.approx(per_composition.mean())
    by_hand = 2 * 1.959964 * per_composition.std(ddof=1) / np.sqrt(len(strata))
    width = result.mean.high - result.mean.low
    assert by_hand / 1.5 <= width <= 1.5 * by_hand, (width, by_hand)
    assert result.warnings == () and not result.degenerate
    assert result.design.num_units == 17 and result.design.scheme == "two_stage"

    fixed = bootstrap.accuracy_interval(group, correct, strata, scheme="within_composition")
    assert fixed.mean.low == fixed.mean.high == fixed.mean.estimate
    assert fixed.degenerate and "zero-width interval" in fixed.warnings[0]
    assert "fixed set of compositions" in fixed.design.scope


def population_draws(rng, num_draws, num_compositions=20, mean=0.62, concentration=10.0):
    """``num_draws`` held-out sets, each of ``num_compositions`` compositions drawn from a known population:
    p_c ~ Beta(mean * concentration, (1 - mean) * concentration), 1-4 groups per composition with
    p_g = p_c + N(0, 0.05^2), 10 pairs per group. The population accuracy is ``mean`` (group sizes and counts are
    independent of p). Vectorised over draws: [D] lists of (group [P], correct [P, 1], strata [G])."""
    p_c = rng.beta(mean * concentration, (1 - mean) * concentration, (num_draws, num_compositions))
    counts = rng.integers(1, 5, (num_draws, num_compositions))
    spread = rng.normal(0.0, 0.05, (num_draws, 4 * num_compositions))
    outcomes = rng.random((num_draws, 4 * num_compositions, 10))
    draws = []
    for d in range(num_draws):
        strata = np.repeat(np.arange(num_compositions), counts[d])
        p_g = np.clip(p_c[d, strata] + spread[d, : len(strata)], 0.0, 1.0)
        correct = (outcomes[d, : len(strata)] < p_g[:, None]).reshape(-1, 1).astype(np.float64)
        draws.append((np.repeat(np.arange(len(strata)), 10), correct, strata))
    return draws


def test_coverage_of_the_population_accuracy_over_held_out_sets_of_compositions():
    """Held-out compositions drawn from a known population 500 times: the 95% two-stage interval covers the
    population accuracy in 90-98% of draws; the fixed-set scheme, which ignores the draw of compositions, does not
    (it answers another question)."""
    rng = np.random.default_rng(7)
    draws = population_draws(rng, 500)
    covered = {scheme: 0 for scheme in bootstrap.SCHEMES}
    for d, (group, correct, strata) in enumerate(draws):
        for scheme in covered:
            result = bootstrap.accuracy_interval(group, correct, strata, scheme=scheme, num_replicates=400, seed=d)
            covered[scheme] += result.mean.low <= 0.62 <= result.mean.high
    assert 0.90 <= covered["two_stage"] / len(draws) <= 0.98, covered
    assert covered["within_composition"] / len(draws) < 0.80, covered


def test_paired_difference_of_a_system_with_itself_is_exactly_zero():
    group, correct, strata = simulate(np.random.default_rng(2), num_dims=3)
    correct[::7, 1] = np.nan
    seeds = np.stack([correct, 1.0 - correct, correct])
    for scheme in bootstrap.SCHEMES:
        for rule in bootstrap.PAIR_RULES:
            for outcomes in (correct, seeds):
                result = bootstrap.paired_difference_interval(group, outcomes, outcomes, strata, pairs=rule,
                                                              scheme=scheme)
                assert result.mean.estimate == 0.0 and result.mean.low == 0.0 and result.mean.high == 0.0
                assert np.all(result.per_dimension.low == 0) and np.all(result.per_dimension.high == 0)
                assert not result.excludes_zero and not result.real
                assert any("zero-width" in w for w in result.warnings)


# ----------------------------------------------------------------------------------------- degenerate intervals


def test_few_held_out_compositions_are_said_and_never_called_real():
    rng = np.random.default_rng(4)
    group, better, strata = simulate(rng, accuracy=np.array([0.80, 0.82]), groups=np.array([20, 20]))
    worse = (rng.random(better.shape) < 0.5).astype(np.float64)
    result = bootstrap.paired_difference_interval(group, better, worse, strata)
    assert result.excludes_zero  # the numbers exclude 0 ...
    assert not result.real  # ... but two compositions cannot speak for new music
    assert result.warnings[0].startswith("2 held-out compositions: this interval cannot speak for new music")
    as_dict = result.as_dict()
    assert as_dict["real"] is False and as_dict["degenerate"] and not bootstrap.called_real(as_dict)
    single = bootstrap.accuracy_interval(group, better, strata, unit="work")
    assert single.warnings[0].startswith("2 held-out works:")
    # the fixed-set question does not claim new music: no warning on 2 compositions, the difference is real there
    fixed = bootstrap.paired_difference_interval(group, better, worse, strata, scheme="within_composition")
    assert fixed.warnings == () and fixed.real and "says nothing about new music" in fixed.design.scope
    # five compositions: no warning
    group5, correct5, strata5 = simulate(rng, accuracy=np.full(5, 0.6), groups=np.full(5, 4))
    assert bootstrap.accuracy_interval(group5, correct5, strata5).warnings == ()


def test_called_real_reads_json_dicts_old_and_new():
    real = {"mean": {"estimate": 0.02, "low": 0.01, "high": 0.03}, "warnings": []}
    assert bootstrap.called_real(real)
    assert not bootstrap.called_real({**real, "warnings": ["3 held-out compositions: ..."]})
    assert not bootstrap.called_real({"mean": {"estimate": -0.001, "low": -0.001, "high": -0.001},
                                      "excludes_zero": True})  # an old zero-width dict: never real
    assert not bootstrap.called_real({"mean": {"estimate": 0.01, "low": -0.01, "high": 0.03}})
    assert not bootstrap.called_real({"mean": {"estimate": None, "low": None, "high": None}})
    assert not bootstrap.called_real(None)


# ----------------------------------------------------------------------------------------- the fixed-set option


def test_within_composition_covers_the_fixed_set_accuracy_at_about_the_nominal_rate():
    rng = np.random.default_rng(0)
    truth = true_accuracy()
    covered_mean, covered_dims, repetitions = 0, 0, 200
    for repetition in range(repetitions):
        group, correct, strata = simulate(rng)
        result = bootstrap.accuracy_interval(group, correct, strata, scheme="within_composition",
                                             num_replicates=1000, seed=repetition)
        covered_mean += result.mean.low <= truth <= result.mean.high
        covered_dims += np.sum((result.per_dimension.low <= truth) & (truth <= result.per_dimension.high))
    assert 0.90 <= covered_mean / repetitions <= 0.99
    assert 0.90 <= covered_dims / (2 * repetitions) <= 0.99


def test_within_composition_weights_keep_each_stratum_group_count():
    strata = np.array(["a"] * 3 + ["b"] * 7 + ["c"] * 1 + ["a"] * 2)
    weights = bootstrap.bootstrap_weights(strata, scheme="within_composition", num_replicates=500, seed=3)
    assert weights.shape == (500, 13)
    for name in ("a", "b", "c"):
        assert np.all(weights[:, strata == name].sum(axis=1) == np.sum(strata == name))
    assert np.all(weights[:, strata == "c"] == 1)  # a lone group is always drawn once
    assert weights.mean(axis=0) == pytest.approx(np.ones(13), abs=0.15)


def test_two_stage_weights_draw_units_then_groups_inside_them():
    strata = np.array(["a"] * 3 + ["b"] * 7 + ["c"] * 1 + ["d"] * 1 + ["e"] * 4)
    weights = bootstrap.bootstrap_weights(strata, num_replicates=4000, seed=3)
    assert weights.shape == (4000, 16) and np.all(weights >= 0)
    # per unit, the groups' weights sum to (copies of the unit) x (its groups); copies sum to the number of units
    copies = np.stack([weights[:, strata == u].sum(axis=1) / np.sum(strata == u) for u in "abcde"], axis=1)
    assert np.all(copies == np.round(copies)) and np.all(copies.sum(axis=1) == 5)
    assert np.any(copies == 0) and np.any(copies >= 2)  # units are left out and repeated
    assert weights.mean(axis=0) == pytest.approx(np.ones(16), abs=0.1)  # every group once on average
    # works as units: "a" and "b" one work, drawn together
    units = np.where(np.isin(strata, ["a", "b"]), "ab", strata)
    by_work = bootstrap.bootstrap_weights(strata, units=units, num_replicates=500, seed=3)
    drawn = by_work[:, np.isin(strata, ["a", "b"])].sum(axis=1)
    assert np.all(drawn % 10 == 0)
    with pytest.raises(ValueError, match="unknown bootstrap scheme"):
        bootstrap.bootstrap_weights(strata, scheme="pairs")


# ----------------------------------------------------------------------------------------- seeds


def test_seeds_are_a_further_stage_of_the_interval():
    """Three seeds whose accuracies differ by a constant shift: the estimate is the mean over seeds, and resampling
    the seeds widens the interval beyond the music-only interval of the averaged outcomes."""
    rng = np.random.default_rng(5)
    group, correct, strata = simulate(rng, accuracy=np.full(12, 0.6), groups=np.full(12, 8), num_dims=1)
    flips = [rng.random(correct.shape) < rate for rate in (0.0, 0.1, 0.2)]
    seeds = np.stack([np.where(flip, 1.0 - correct, correct) for flip in flips])  # [3, P, 1]
    pooled = bootstrap.accuracy_interval(group, seeds, strata)
    each = [bootstrap.accuracy_interval(group, s, strata).mean.estimate for s in seeds]
    assert pooled.mean.estimate == pytest.approx(np.mean(each)) and pooled.design.num_seeds == 3
    music_only = bootstrap.accuracy_interval(group, seeds.mean(axis=0), strata)
    assert music_only.mean.estimate == pytest.approx(pooled.mean.estimate)
    assert pooled.mean.high - pooled.mean.low > 1.2 * (music_only.mean.high - music_only.mean.low)
    # the seed stage does not change the music draws: one seed repeated three times is the one-seed interval
    once = bootstrap.accuracy_interval(group, seeds[0], strata)
    thrice = bootstrap.accuracy_interval(group, np.stack([seeds[0]] * 3), strata)
    assert thrice.mean == once.mean
    weights = bootstrap.seed_weights(3, 1000, seed=0)
    assert weights.shape == (1000, 3) and np.allclose(weights.sum(axis=1), 1.0)
    assert np.all(bootstrap.seed_weights(1, 10) == 1.0)


def test_paired_seeds_against_a_single_reference():
    rng = np.random.default_rng(6)
    group, correct, strata = simulate(rng, accuracy=np.full(8, 0.7), groups=np.full(8, 6), num_dims=2)
    reference = (rng.random(correct.shape) < 0.6).astype(np.float64)
    seeds = np.stack([correct, np.where(rng.random(correct.shape) < 0.1, 1 - correct, correct)])
    result = bootstrap.paired_difference_interval(group, seeds, reference, strata)
    assert result.design.num_seeds == (2, 1)
    assert result.mean.estimate == pytest.approx(
        np.mean([np.nanmean(s) for s in seeds]) - np.nanmean(reference), abs=1e-9)


# ----------------------------------------------------------------------------------------- the rest


def test_estimate_equals_pairwise_accuracy_and_interval_brackets_it():
    rng = np.random.default_rng(1)
    groups = np.repeat(np.arange(30), 6)
    compositions = np.repeat(["x", "y", "z", "u", "v", "w"], 30)
    scores, labels = rng.normal(size=(180, 3)), rng.normal(size=(180, 3))
    labels[:, 1] += scores[:, 1]  # dimension 1 is predictable
    outcomes = metrics.pair_outcomes(scores, labels, groups)
    strata = bootstrap.group_strata(groups, compositions, outcomes.group_ids)
    assert strata.tolist() == ["x"] * 5 + ["y"] * 5 + ["z"] * 5 + ["u"] * 5 + ["v"] * 5 + ["w"] * 5
    result = bootstrap.accuracy_interval(outcomes.group, outcomes.correct, strata)
    expected = metrics.pairwise_accuracy(scores, labels, groups).accuracy
    assert result.per_dimension.estimate == pytest.approx(expected)
    assert result.mean.estimate == pytest.approx(expected.mean())
    assert np.all(result.per_dimension.low <= expected) and np.all(expected <= result.per_dimension.high)
    assert result.per_dimension.low[1] > 0.5 and result.design.num_groups == 30 and result.design.num_units == 6
    again = bootstrap.accuracy_interval(outcomes.group, outcomes.correct, strata)
    assert again.mean == result.mean  # seeded
    assert bootstrap.accuracy_interval(outcomes.group, outcomes.correct, strata, seed=1).mean != result.mean


def test_paired_difference_finds_a_clearly_better_system_and_not_an_equal_one():
    rng = np.random.default_rng(4)
    group, better, strata = simulate(rng, accuracy=np.linspace(0.70, 0.75, 8), groups=np.full(8, 6))
    worse = (rng.random(better.shape) < 0.55).astype(np.float64)
    result = bootstrap.paired_difference_interval(group, better, worse, strata)
    assert result.real and result.mean.low > 0
    assert result.mean.estimate == pytest.approx(np.mean(better) - np.mean(worse))
    reversed_ = bootstrap.paired_difference_interval(group, worse, better, strata)
    assert reversed_.real and reversed_.mean.high < 0
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
    with pytest.raises(ValueError, match=r"\[P, K\] or \[S, P, K\]"):
        bootstrap.accuracy_interval(group, correct[None, None], np.array(["x", "x", "y"]))
    with pytest.raises(ValueError, match="span several compositions"):
        bootstrap.group_strata(np.array([1, 1, 2]), np.array(["x", "y", "y"]), np.array([1, 2]))
    with pytest.raises(ValueError, match="no row"):
        bootstrap.group_strata(np.array([1, 1, 2]), np.array(["x", "x", "y"]), np.array([1, 3]))


def test_a_thousand_groups_and_nineteen_dimensions():
    rng = np.random.default_rng(5)
    strata = rng.integers(0, 20, size=1000)
    group = np.repeat(np.arange(1000), 28)  # 8 performances per group: 28 pairs
    correct = (rng.random((len(group), 19)) < 0.6).astype(np.float64)
    a = bootstrap.accuracy_interval(group, correct, strata)
    d = bootstrap.paired_difference_interval(group, correct, 1.0 - correct, strata)
    assert a.design.num_replicates == 2000  # speed: not a test's business (benchmarks hold speed goals)
    assert a.mean.low < a.mean.estimate < a.mean.high and d.mean.low < d.mean.estimate < d.mean.high


def test_as_dict_carries_the_numbers_and_the_design():
    group, correct, strata = simulate(np.random.default_rng(6))
    single = bootstrap.accuracy_interval(group, correct, strata, num_replicates=200).as_dict()
    assert single["mean"]["low"] <= single["mean"]["estimate"] <= single["mean"]["high"]
    assert single["num_replicates"] == 200 and single["num_strata"] == 3 and single["num_units"] == 3
    assert single["scheme"] == "two_stage" and single["unit"] == "composition" and single["num_seeds"] == 1
    assert single["degenerate"] and "3 held-out compositions" in single["warnings"][0]
    assert "new music" in single["scope"]
    paired = bootstrap.paired_difference_interval(group, correct, correct, strata, num_replicates=200).as_dict()
    assert paired["excludes_zero"] is False and paired["real"] is False and paired["pairs"] == "common"
