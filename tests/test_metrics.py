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
