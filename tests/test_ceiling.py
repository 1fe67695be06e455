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


def test_ceiling_counts_unrated_rows_and_warns():
    groups, _, ratings = simulate(num_groups=10, raters=4, num_dims=2, seed=6)
    ratings[0] = np.zeros((0, 2))  # no panel
    ratings[1] = np.full((3, 2), np.nan)  # three raters who rated nothing: no rating either
    ratings[2] = ratings[2][:1]  # one rater
    ratings[3] = np.concatenate([ratings[3][:1], np.full((2, 2), np.nan)])  # one real rater among empty rows
    result = ceiling.noise_ceiling(ratings, groups, num_splits=2)
    assert (result.num_rows, result.num_unrated, result.num_single_rater) == (80, 2, 2)
    assert result.num_segments == 76
    assert result.warning.startswith("2 of 80 rows have no rating at all and 2 only one rater")
    full = ceiling.noise_ceiling(simulate(num_groups=10, raters=4, seed=6)[2], groups, num_splits=2)
    assert full.warning is None and full.num_unrated == 0


def test_label_file_ratings_drop_out_of_scale_raters():
    answers = np.array([
        [3.0, 4.0, 0.0],  # 0 = no answer: that cell is missing
        [8.0, 2.0, 5.0],  # an 8: the whole rater row is dropped
        [np.nan, 7.0, 1.0],  # blank cell
        [2.0, 6.0, 6.0],
    ])
    kept = ceiling.label_file_ratings(answers)
    expected = np.array([[3.0, 4.0, np.nan], [np.nan, 7.0, 1.0], [2.0, 6.0, 6.0]]) / 7
    np.testing.assert_array_equal(kept, expected)
    assert np.nanmean(kept, axis=0) * 7 == pytest.approx([2.5, 17 / 3, 3.5])
    with pytest.raises(ValueError, match="raters, K"):
        ceiling.label_file_ratings(np.zeros(3))


def test_rating_agreement_by_hand():
    ratings = [np.array([[0.2, 0.4], [0.4, np.nan]]), np.array([[0.5, 0.5]]), np.zeros((0, 2))]
    labels = np.array([[0.3, 0.45], [0.5, 0.5], [0.7, 0.7]])
    result = ceiling.rating_agreement(ratings, labels)
    # row 0: means 0.3, 0.4 -> differences 0, 0.05; row 1: 0, 0; row 2: no rating.
    assert result.num_cells == 4 and result.num_rows == 2 and result.num_unrated == 1
    assert result.share_differing == pytest.approx(0.25) and result.num_rows_differing == 1
    assert result.mean_abs_difference == pytest.approx(0.05 / 4) and result.max_abs_difference == pytest.approx(0.05)
    with pytest.raises(ValueError, match="rating panels"):
        ceiling.rating_agreement(ratings, labels[:2])


def _raw_percepiano_answers(root):
    """key -> float [R, 19] raw answers of the ratings CSV (text cells NaN), read here with pandas."""
    import pandas as pd

    frame = pd.read_csv(root / "labels" / "total_2rounds.csv", dtype=str, keep_default_na=False)
    questions = [c for c in frame.columns if c.startswith("Question_")][:19]
    values = frame[questions].apply(pd.to_numeric, errors="coerce").to_numpy(np.float64)
    keys = frame["filename"].str.strip().str.removesuffix(".wav").to_numpy()
    order = np.argsort(keys, kind="stable")
    names, starts = np.unique(keys[order], return_index=True)
    return dict(zip(names, np.split(values[order], starts[1:])))


@pytest.mark.data
def test_label_file_filter_reproduces_percepiano_labels(percepiano_root):
    import json

    labels_dir = percepiano_root / "labels"
    means = json.loads(next(labels_dir.glob("label_*_mean_*.json")).read_text())
    keys = sorted(means)
    labels = np.array([means[k][:19] for k in keys])
    answers = _raw_percepiano_answers(percepiano_root)
    plain = [np.where((answers[k] >= 1) & (answers[k] <= 7), answers[k], np.nan) / 7 for k in keys]
    filtered = [ceiling.label_file_ratings(answers[k]) for k in keys]
    before = ceiling.rating_agreement(plain, labels, tolerance=1e-9)
    after = ceiling.rating_agreement(filtered, labels, tolerance=1e-9)
    assert before.num_unrated == after.num_unrated == 0
    # Plain means (0, 8 and text read as missing cells) differ from the labels on about 15% of the cells ...
    assert 0.10 < before.share_differing < 0.20 and before.num_rows_differing > 150
    # ... the label-file rule reproduces every segment but one: Score2_1 of D935 no. 3, whose label also averages
    # the ratings of the unlabelled key Score_1.
    assert after.num_rows_differing == 1 and after.max_abs_difference < 0.2
    odd = [k for k, panel, y in zip(keys, filtered, labels) if np.nanmax(np.abs(np.nanmean(panel, 0) - y)) > 1e-9]
    assert odd == ["Schubert_D935_no.3_4bars_Score2_1"]
    merged = np.concatenate([answers["Schubert_D935_no.3_4bars_Score2_1"], answers["Schubert_D935_no.3_4bars_Score_1"]])
    np.testing.assert_allclose(np.nanmean(ceiling.label_file_ratings(merged), 0), means[odd[0]][:19], atol=1e-12)
