"""The split-half noise ceiling against simulated panels whose answer is known in closed form."""

import numpy as np
import pytest

from crescend_jax.evaluate import ceiling, metrics


def simulate(num_groups=150, group_size=8, raters=6, true_std=1.0, noise_std=2.0, num_dims=2, seed=0):
    """Truth ~ N(0, true_std^2) per performance; each rater adds independent N(0, noise_std^2) noise."""
    rng = np.random.default_rng(seed)
    groups = np.repeat(np.arange(num_groups), group_size)
    truth = rng.normal(0.0, true_std, size=(len(groups), num_dims))
    ratings = [t + rng.normal(0.0, noise_std, size=(raters, num_dims)) for t in truth]
    return groups, truth, ratings


def closed_form_reliability(true_std, noise_std, raters):
    """Reliability of full-panel pair differences: var(delta) / (var(delta) + 2 noise^2 / R)."""
    return true_std**2 / (true_std**2 + noise_std**2 / raters)


@pytest.mark.parametrize("raters, noise_std", [(6, 2.0), (5, 1.0)])  # odd panels split 2 / 3
def test_ceiling_matches_closed_form(raters, noise_std):
    groups, truth, ratings = simulate(raters=raters, noise_std=noise_std)
    result = ceiling.noise_ceiling(ratings, groups, num_splits=20, seed=1)
    expected_r = closed_form_reliability(1.0, noise_std, raters)
    assert result.reliability == pytest.approx([expected_r] * 2, abs=0.04)
    expected_ceiling = ceiling.ceiling_from_reliability(np.array([expected_r] * 2))
    assert result.ceiling == pytest.approx(expected_ceiling, abs=0.015)
    # The ceiling is what a predictor that knows the truth scores against the noisy panel means.
    labels = np.stack([r.mean(axis=0) for r in ratings])
    oracle = metrics.pairwise_accuracy(truth, labels, groups).accuracy
    assert oracle == pytest.approx(result.ceiling, abs=0.02)
    assert result.num_segments == len(groups)
    assert result.num_pairs.tolist() == [150 * 28] * 2


def test_ceiling_handles_missing_ratings_and_small_panels():
    groups, truth, ratings = simulate(num_groups=100, raters=8, noise_std=1.5, num_dims=1, seed=3)
    rng = np.random.default_rng(4)
    ratings = [np.where(rng.random(r.shape) < 0.1, np.nan, r) for r in ratings]
    ratings[0] = ratings[0][:1]  # one rater: no halves, skipped
    ratings[1] = np.zeros((0, 1), np.float32)  # no rater at all
    result = ceiling.noise_ceiling(ratings, groups, num_splits=10)
    assert result.num_segments == len(groups) - 2
    assert result.num_pairs[0] < 100 * 28
    expected = ceiling.ceiling_from_reliability(np.array([closed_form_reliability(1.0, 1.5, 8 * 0.9)]))
    assert result.ceiling == pytest.approx(expected, abs=0.02)


def test_pure_noise_gives_chance_and_seed_is_deterministic():
    rng = np.random.default_rng(5)
    groups = np.repeat(np.arange(1500), 5)
    ratings = [rng.normal(size=(6, 3)) for _ in groups]
    first = ceiling.noise_ceiling(ratings, groups, num_splits=8, seed=7)
    again = ceiling.noise_ceiling(ratings, groups, num_splits=8, seed=7)
    assert np.array_equal(first.reliability, again.reliability)
    assert first.reliability == pytest.approx([0.0] * 3, abs=0.04)
    # asin(sqrt(r)) is steep near 0, so a small positive r already lifts the ceiling a few points.
    assert np.all((first.ceiling >= 0.5) & (first.ceiling < 0.57))
    other = ceiling.noise_ceiling(ratings, groups, num_splits=8, seed=8)
    assert not np.array_equal(first.reliability, other.reliability)


def test_excluded_rows_drop_their_pairs():
    groups, _, ratings = simulate(num_groups=20, num_dims=1)
    exclude = np.zeros(len(groups), bool)
    exclude[::8] = True  # one row per group of 8
    result = ceiling.noise_ceiling(ratings, groups, num_splits=2, exclude=exclude)
    assert result.num_pairs.tolist() == [20 * 21] and result.num_segments == 20 * 7


def test_ceiling_formula_and_fraction():
    assert ceiling.ceiling_from_reliability(np.array([1.0, 0.5, 0.0, -0.3])) == pytest.approx([1.0, 0.75, 0.5, 0.5])
    assert np.isnan(ceiling.ceiling_from_reliability(np.array([np.nan]))[0])
    fraction = ceiling.fraction_of_ceiling(np.array([0.6, 0.5, 0.7]), np.array([0.7, 0.8, 0.5]))
    assert fraction[:2] == pytest.approx([0.5, 0.0]) and np.isnan(fraction[2])


def test_mismatched_inputs_are_rejected():
    with pytest.raises(ValueError, match="rating panels"):
        ceiling.noise_ceiling([np.zeros((3, 2))], np.array([0, 0]))
    with pytest.raises(ValueError, match="row 1"):
        ceiling.noise_ceiling([np.zeros((3, 2)), np.zeros((3, 4))], np.array([0, 0]))
