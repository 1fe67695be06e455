"""Hand-computed cases for the within-group ranking metrics."""

import numpy as np
import pytest
from scipy import stats

from crescend_jax.evaluate import metrics

# Group "a": 3 performances, "b": 1 (no pairs), "c": 2 with equal labels (a label tie), "d": 2.
GROUPS = np.array(["a", "a", "a", "b", "c", "c", "d", "d"])
LABELS = np.array([[0.1], [0.5], [0.3], [0.9], [0.4], [0.4], [0.2], [0.6]])
# a: scores order row0 < row2 == row1 -> pairs (0,1) correct, (0,2) correct, (1,2) predicted tie.
# d: predicted in the wrong order.
SCORES = np.array([[0.0], [2.0], [2.0], [7.0], [1.0], [3.0], [5.0], [4.0]])


def test_group_pairs_cover_each_within_group_pair_once():
    i, j, g = metrics.GroupLayout.from_groups(GROUPS).pairs()
    pairs = sorted(zip(i.tolist(), j.tolist()))
    assert pairs == [(0, 1), (0, 2), (1, 2), (4, 5), (6, 7)]
    assert g.tolist() == [0, 0, 0, 2, 3]


def test_pairwise_accuracy_ties_singletons_and_label_ties():
    result = metrics.pairwise_accuracy(SCORES, LABELS, GROUPS)
    # usable pairs: (0,1) 1, (0,2) 1, (1,2) predicted tie 0.5, (6,7) 0; (4,5) label tie excluded.
    assert result.num_pairs.tolist() == [4]
    assert result.accuracy[0] == pytest.approx(2.5 / 4)


def test_pairwise_accuracy_gap_and_exclusion():
    gap = metrics.pairwise_accuracy(SCORES, LABELS, GROUPS, min_gap=0.25)
    # label gaps: (0,1) 0.4, (0,2) 0.2, (1,2) 0.2, (6,7) 0.4 -> keep (0,1) correct and (6,7) wrong.
    assert gap.num_pairs.tolist() == [2]
    assert gap.accuracy[0] == pytest.approx(0.5)
    exclude = np.zeros(len(GROUPS), bool)
    exclude[2] = True  # a Score rendition: drops (0,2) and (1,2)
    no_score = metrics.pairwise_accuracy(SCORES, LABELS, GROUPS, exclude=exclude)
    assert no_score.num_pairs.tolist() == [2]
    assert no_score.accuracy[0] == pytest.approx(0.5)


def test_pairwise_accuracy_nan_labels_and_constant_predictor():
    labels = LABELS.copy()
    labels[0, 0] = np.nan
    result = metrics.pairwise_accuracy(SCORES, labels, GROUPS)
    assert result.num_pairs.tolist() == [2]  # (1,2) tie 0.5 and (6,7) wrong
    assert result.accuracy[0] == pytest.approx(0.25)
    constant = metrics.pairwise_accuracy(np.zeros_like(SCORES), LABELS, GROUPS)
    assert constant.accuracy[0] == pytest.approx(0.5)
    none = metrics.pairwise_accuracy(SCORES[:4], LABELS[:4], np.arange(4))  # all singletons
    assert none.num_pairs.tolist() == [0] and np.isnan(none.accuracy[0])


def test_pairwise_accuracy_is_per_dimension_and_rejects_bad_shapes():
    scores = np.concatenate([SCORES, -SCORES], axis=1)
    labels = np.concatenate([LABELS, LABELS], axis=1)
    result = metrics.pairwise_accuracy(scores, labels, GROUPS)
    assert result.accuracy == pytest.approx([2.5 / 4, 1.5 / 4])
    with pytest.raises(ValueError, match="must both be"):
        metrics.pairwise_accuracy(scores, LABELS, GROUPS)


def test_kendall_tau_b_matches_scipy_and_skips_degenerate_groups():
    tau = metrics.kendall_tau_b(SCORES, LABELS, GROUPS)
    # Only "a" and "d" count: "b" is a singleton, "c" has constant labels.
    expected = np.mean([stats.kendalltau(SCORES[:3, 0], LABELS[:3, 0]).statistic, -1.0])
    assert tau[0] == pytest.approx(expected)
    constant = metrics.kendall_tau_b(np.ones_like(SCORES), LABELS, GROUPS)
    assert np.isnan(constant[0])


def test_kendall_tau_b_random_groups_against_scipy():
    rng = np.random.default_rng(0)
    groups = np.repeat(np.arange(5), [4, 6, 3, 5, 7])
    scores = rng.integers(0, 3, size=(len(groups), 2)).astype(float)  # many ties
    labels = rng.normal(size=(len(groups), 2)).round(1)
    tau = metrics.kendall_tau_b(scores, labels, groups)
    for k in range(2):
        per_group = [stats.kendalltau(scores[groups == g, k], labels[groups == g, k]).statistic for g in range(5)]
        assert tau[k] == pytest.approx(np.nanmean(per_group))


def test_ndcg_perfect_reversed_and_singletons():
    groups = np.array([0, 0, 0, 1])
    labels = np.array([[0.0], [0.5], [1.0], [0.3]])
    perfect = metrics.ndcg(labels, labels, groups)
    assert perfect[0] == pytest.approx(1.0)  # singleton group 1 skipped
    reversed_ = metrics.ndcg(-labels, labels, groups)
    # ranks 1..3 give 0.0, 0.5, 1.0: dcg = 0/1 + 0.5/log2(3) + 1/2; ideal = 1/1 + 0.5/log2(3) + 0.
    expected = (0.5 / np.log2(3) + 0.5) / (1.0 + 0.5 / np.log2(3))
    assert reversed_[0] == pytest.approx(expected, rel=1e-5)


def test_r2_and_intra_group_std():
    labels = np.array([[1.0], [2.0], [3.0], [4.0]])
    assert metrics.r2_pooled(labels, labels)[0] == pytest.approx(1.0)
    assert metrics.r2_pooled(np.full_like(labels, 2.5), labels)[0] == pytest.approx(0.0)
    scores = np.array([[1.0], [2.0], [3.0], [4.0]]) + np.array([[0.5], [0.0], [0.0], [0.0]])
    # residuals 0.5, 0, 0, 0 -> 1 - 0.25 / 5
    assert metrics.r2_pooled(scores, labels)[0] == pytest.approx(0.95)
    groups = np.array([0, 0, 1, 2])  # group 0 std 0.5 (ddof 0), groups 1 and 2 are singletons
    values = np.array([[1.0], [2.0], [9.0], [4.0]])
    assert metrics.intra_group_std(values, groups)[0] == pytest.approx(0.5)
    groups = np.array([0, 0, 1, 1])
    values = np.array([[1.0], [2.0], [5.0], [8.0]])
    assert metrics.intra_group_std(values, groups)[0] == pytest.approx((0.5 + 1.5) / 2)
    centred = metrics.centre_by_group(values, groups)
    assert centred[:, 0] == pytest.approx([-0.5, 0.5, -1.5, 1.5])


def test_ranking_metrics_truth_keys_only_when_simulated():
    deadpan = np.zeros(len(GROUPS), bool)
    plain = metrics.ranking_metrics(SCORES, LABELS, GROUPS, deadpan=deadpan, truth=np.full_like(LABELS, np.nan))
    assert "truth_accuracy" not in plain
    simulated = metrics.ranking_metrics(SCORES, LABELS, GROUPS, deadpan=deadpan, truth=LABELS + 0.01)
    assert simulated["label_truth_accuracy"][0] == pytest.approx(1.0)
    assert simulated["truth_accuracy"][0] == pytest.approx(plain["pairwise_accuracy"][0])


def test_pair_outcomes_layout_and_rules():
    outcomes = metrics.pair_outcomes(SCORES, LABELS, GROUPS)
    assert list(zip(outcomes.first.tolist(), outcomes.second.tolist())) == [(0, 1), (0, 2), (1, 2), (4, 5), (6, 7)]
    assert outcomes.group.tolist() == [0, 0, 0, 2, 3] and outcomes.group_ids.tolist() == ["a", "b", "c", "d"]
    # (4,5) is a label tie: NaN; (1,2) a predicted tie: 0.5; (6,7) reversed: 0.
    assert np.array_equal(outcomes.correct[:, 0], [1.0, 1.0, 0.5, np.nan, 0.0], equal_nan=True)
    gap = metrics.pair_outcomes(SCORES, LABELS, GROUPS, min_gap=0.25).correct[:, 0]
    assert np.array_equal(gap, [1.0, np.nan, np.nan, np.nan, 0.0], equal_nan=True)
    exclude = np.zeros(len(GROUPS), bool)
    exclude[2] = True
    excluded = metrics.pair_outcomes(SCORES, LABELS, GROUPS, exclude=exclude).correct[:, 0]
    assert np.array_equal(excluded, [1.0, np.nan, np.nan, np.nan, 0.0], equal_nan=True)
    scores = SCORES.copy()
    scores[7, 0] = np.inf - np.inf  # NaN score
    assert np.isnan(metrics.pair_outcomes(scores, LABELS, GROUPS).correct[4, 0])
    with pytest.raises(ValueError, match="exclude"):
        metrics.pair_outcomes(SCORES, LABELS, GROUPS, exclude=np.zeros(3, bool))


def test_pairwise_accuracy_is_the_mean_of_pair_outcomes():
    rng = np.random.default_rng(1)
    groups = rng.integers(0, 12, size=80)
    scores = rng.normal(size=(80, 3)).round(1)
    labels = rng.normal(size=(80, 3)).round(1)
    labels[rng.random(labels.shape) < 0.1] = np.nan
    for kwargs in ({}, {"min_gap": 0.3}, {"exclude": rng.random(80) < 0.2}):
        outcomes = metrics.pair_outcomes(scores, labels, groups, **kwargs)
        direct = metrics.pairwise_accuracy(scores, labels, groups, **kwargs)
        expected = np.nanmean(outcomes.correct, axis=0)
        assert direct.accuracy == pytest.approx(expected)
        assert direct.num_pairs.tolist() == np.isfinite(outcomes.correct).sum(axis=0).tolist()


def test_pair_outcomes_from_probabilities_match_scores_and_any_orientation():
    rng = np.random.default_rng(2)
    groups = np.repeat(np.arange(6), 5)
    scores = rng.normal(size=(30, 2)).round(1)
    labels = rng.normal(size=(30, 2)).round(1)
    from_scores = metrics.pair_outcomes(scores, labels, groups, min_gap=0.2)
    i, j = from_scores.first, from_scores.second
    probability = 1.0 / (1.0 + np.exp(-(scores[i] - scores[j])))  # exactly 0.5 where the scores tie
    comparator = metrics.pair_outcomes_from_probabilities(probability, i, j, labels, groups, min_gap=0.2)
    assert np.array_equal(comparator.correct, from_scores.correct, equal_nan=True)
    assert np.array_equal(comparator.group, from_scores.group)
    flipped = metrics.pair_outcomes_from_probabilities(1.0 - probability, j, i, labels, groups, min_gap=0.2)
    assert np.array_equal(flipped.correct, from_scores.correct, equal_nan=True)
    coin = metrics.pair_outcomes_from_probabilities(np.full_like(probability, 0.5), i, j, labels, groups)
    assert np.nanmax(coin.correct) == 0.5 == np.nanmin(coin.correct)
    with pytest.raises(ValueError, match="same group"):
        metrics.pair_outcomes_from_probabilities(probability[:1], np.array([0]), np.array([5]), labels, groups)
    with pytest.raises(ValueError, match="probabilities"):
        metrics.pair_outcomes_from_probabilities(probability[:, :1], i, j, labels, groups)


def _numpy_ndcg(order_scores, gains):
    """NDCG of one list with numpy: rank by descending score (stable), discount 1 / log2(1 + position)."""
    order = np.argsort(-order_scores, kind="stable")
    discounts = 1.0 / np.log2(2.0 + np.arange(len(gains)))
    return (gains[order] @ discounts) / (np.sort(gains)[::-1] @ discounts)


def test_ndcg_rank_and_standardised_gains_by_hand():
    groups = np.array([0, 0, 0, 0, 1, 1, 1])
    labels = np.array([[0.50], [0.52], [0.52], [0.60], [0.3], [0.3], [0.3]])  # group 1: constant labels
    scores = np.array([[4.0], [3.0], [2.0], [1.0], [1.0], [2.0], [3.0]])  # group 0 reversed
    rank_gains = np.array([0.0, 1.5, 1.5, 3.0]) / 3  # mid-ranks 0, 1.5, 1.5, 3 over n - 1 = 3
    result = metrics.ndcg_with_random(scores, labels, groups, gain="rank")
    assert result.num_groups.tolist() == [1]  # constant-label group skipped
    assert result.ndcg[0] == pytest.approx(_numpy_ndcg(scores[:4, 0], rank_gains), rel=1e-5)
    y = labels[:4, 0]
    standard_gains = (y - y.min()) / y.std()
    standardised = metrics.ndcg_with_random(scores, labels, groups, gain="standardised")
    assert standardised.ndcg[0] == pytest.approx(_numpy_ndcg(scores[:4, 0], standard_gains), rel=1e-5)
    assert metrics.ndcg(labels, labels, groups, gain="rank")[0] == pytest.approx(1.0)
    # Identity gains near the group mean: a reversed order still scores close to 1, the within-group gains do not.
    assert metrics.ndcg(scores, labels, groups)[0] > 0.9 > result.ndcg[0]
    with pytest.raises(ValueError, match="unknown NDCG gain"):
        metrics.ndcg(scores, labels, groups, gain="exp")


@pytest.mark.parametrize("gain", metrics.NDCG_GAINS)
def test_ndcg_random_is_the_average_over_all_orders(gain):
    import itertools

    rng = np.random.default_rng(3)
    sizes = [2, 3, 5]
    groups = np.repeat(np.arange(3), sizes)
    labels = rng.integers(1, 5, size=(len(groups), 2)) / 7.0  # ties inside groups
    labels[0, 1] = np.nan  # group 0 has a single ranked member on dimension 1: skipped there
    result = metrics.ndcg_with_random(np.zeros_like(labels), labels, groups, gain=gain)
    for k in range(2):
        per_group = []
        for g, n in enumerate(sizes):
            rows = np.flatnonzero((groups == g) & np.isfinite(labels[:, k]))
            if len(rows) < 2 or (gain != "identity" and np.ptp(labels[rows, k]) == 0):
                continue
            padded = np.full((1, 1, 8), np.nan)
            padded[0, 0, : len(rows)] = labels[rows, k]
            gains = metrics._within_list_gains(padded, np.isfinite(padded), gain)[0, 0, : len(rows)]
            orders = [_numpy_ndcg(-np.array(p, float), gains) for p in itertools.permutations(range(len(rows)))]
            per_group.append(np.mean(orders))
        assert result.num_groups[k] == len(per_group)
        assert result.random[k] == pytest.approx(np.mean(per_group))


def test_ranking_metrics_keys_include_within_group_ndcg():
    deadpan = np.zeros(len(GROUPS), bool)
    result = metrics.ranking_metrics(SCORES, LABELS, GROUPS, deadpan=deadpan)
    for key in ("pairwise_accuracy", "ndcg", "kendall_tau_b", "r2", "num_pairs_gap"):
        assert key in result
    for gain in ("rank", "standardised"):
        assert result[f"ndcg_{gain}"] == pytest.approx(metrics.ndcg(SCORES, LABELS, GROUPS, gain=gain))
        assert result[f"ndcg_{gain}_random"] == pytest.approx(
            metrics.ndcg_with_random(SCORES, LABELS, GROUPS, gain=gain).random
        )
    assert result["ndcg"] == pytest.approx(metrics.ndcg(SCORES, LABELS, GROUPS))
