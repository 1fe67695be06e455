"""Within-group margin ranking: hand case, naive double loop, rax, gap threshold, padding, agreement weights."""

import math

import jax
import jax.numpy as jnp
import numpy as np
import pytest
import rax

from crescend_jax.losses.ranking import agreement_weights
from crescend_jax.losses.ranking import margin_ranking_loss as eager_margin_ranking_loss

margin_ranking_loss = jax.jit(eager_margin_ranking_loss, static_argnames=("margin", "min_label_gap"))


def naive_loss(scores, labels, mask, std, margin, min_gap):
    """Explicit loops over groups, ordered pairs and dimensions."""
    num, den, correct = 0.0, 0.0, 0.0
    P, K, D = scores.shape
    for p in range(P):
        for i in range(K):
            for j in range(K):
                if i == j or not (mask[p, i] and mask[p, j]):
                    continue
                for d in range(D):
                    gap = labels[p, i, d] - labels[p, j, d]
                    if gap <= min_gap:
                        continue
                    w = 1.0
                    if std is not None:
                        spread = math.sqrt(std[p, i, d] ** 2 + std[p, j, d] ** 2)
                        w = math.erf(gap / spread / math.sqrt(2)) if spread > 0 else 1.0
                    diff = scores[p, i, d] - scores[p, j, d]
                    num += w * max(0.0, margin - diff)
                    den += w
                    correct += w * (diff > 0)
    return num / max(den, 1e-6), den, correct / max(den, 1e-6)


def test_hand_computed_case():
    # one group of 3, one dimension: labels 0.9 > 0.5 > 0.1, scores 1.0, 0.9, 2.0
    scores = jnp.array([[[1.0], [0.9], [2.0]]])
    labels = jnp.array([[[0.9], [0.5], [0.1]]])
    mask = jnp.ones((1, 3))
    loss, diag = margin_ranking_loss(scores, labels, where=mask, margin=0.2)
    # pairs (hi, lo): (0,1): 0.2-0.1=0.1; (0,2): 0.2+1.0=1.2; (1,2): 0.2+1.1=1.3 -> mean 2.6/3
    assert float(loss) == pytest.approx(2.6 / 3, rel=1e-6)
    assert float(diag["rank_pairs"]) == 3
    assert float(diag["rank_accuracy"]) == pytest.approx(1 / 3)


@pytest.mark.parametrize("weighted", [False, True])
def test_matches_naive_double_loop(weighted):
    rng = np.random.default_rng(0)
    P, K, D = 3, 5, 4
    scores = rng.normal(size=(P, K, D)).astype(np.float32)
    labels = rng.choice([0.1, 0.3, 0.32, 0.6, 0.9], size=(P, K, D)).astype(np.float32)
    mask = (rng.uniform(size=(P, K)) > 0.25).astype(np.float32)
    std = rng.uniform(0.0, 0.3, size=(P, K, D)).astype(np.float32) if weighted else None
    std_arg = None if std is None else jnp.asarray(std)
    loss, diag = margin_ranking_loss(jnp.asarray(scores), jnp.asarray(labels), where=jnp.asarray(mask),
                                     label_std=std_arg, margin=0.3, min_label_gap=0.05)
    expected, pairs, accuracy = naive_loss(scores, labels, mask, std, 0.3, 0.05)
    assert float(loss) == pytest.approx(expected, rel=1e-5)
    assert float(diag["rank_pairs"]) == pytest.approx(pairs, rel=1e-5)
    assert float(diag["rank_accuracy"]) == pytest.approx(accuracy, rel=1e-5)


def test_matches_rax_pairwise_hinge():
    """margin 1, no threshold, no weights: the pair sum equals rax's pairwise hinge over each (group, dimension)."""
    rng = np.random.default_rng(1)
    P, K, D = 4, 6, 3
    scores = jnp.asarray(rng.normal(size=(P, K, D)), jnp.float32)
    labels = jnp.asarray(rng.uniform(size=(P, K, D)), jnp.float32)
    mask = jnp.asarray(rng.uniform(size=(P, K)) > 0.2, jnp.float32)
    loss, diag = margin_ranking_loss(scores, labels, where=mask, margin=1.0)
    lists = lambda a: jnp.moveaxis(a, 2, 1).reshape(P * D, K)  # [P, K, D] -> [P * D, K]
    where = jnp.repeat(mask > 0, D, axis=0)
    total = rax.pairwise_hinge_loss(lists(scores), lists(labels), where=where, reduce_fn=jnp.sum)
    assert float(loss * diag["rank_pairs"]) == pytest.approx(float(total), rel=1e-5)


def test_gap_threshold_skips_close_pairs():
    scores = jnp.zeros((1, 2, 1))
    labels = jnp.array([[[0.50], [0.52]]])
    mask = jnp.ones((1, 2))
    _, below = margin_ranking_loss(scores, labels, where=mask, min_label_gap=0.05)
    _, above = margin_ranking_loss(scores, labels, where=mask, min_label_gap=0.01)
    assert float(below["rank_pairs"]) == 0 and float(above["rank_pairs"]) == 1


def test_padding_is_ignored_even_with_nan():
    rng = np.random.default_rng(2)
    scores = jnp.asarray(rng.normal(size=(2, 4, 19)), jnp.float32)
    labels = jnp.asarray(rng.uniform(size=(2, 4, 19)), jnp.float32)
    std = jnp.asarray(rng.uniform(0.05, 0.2, size=(2, 4, 19)), jnp.float32)
    mask = jnp.array([[1, 1, 1, 0], [1, 1, 0, 0]], jnp.float32)
    poisoned_labels = labels.at[0, 3].set(jnp.nan).at[1, 2:].set(jnp.nan)
    poisoned_scores = scores.at[0, 3].set(1e6)
    loss, diag = margin_ranking_loss(scores, labels, where=mask, label_std=std)
    poisoned, poisoned_diag = margin_ranking_loss(poisoned_scores, poisoned_labels, where=mask,
                                                         label_std=std.at[0, 3].set(jnp.nan))
    assert float(poisoned) == pytest.approx(float(loss), rel=1e-6)
    assert float(poisoned_diag["rank_pairs"]) == pytest.approx(float(diag["rank_pairs"]), rel=1e-6)
    grads = jax.grad(lambda s: margin_ranking_loss(s, poisoned_labels, where=mask, label_std=std)[0])(poisoned_scores)
    assert np.isfinite(np.asarray(grads)).all()
    assert float(jnp.abs(grads[0, 3]).sum()) == 0.0


def test_no_pairs_gives_zero_loss():
    loss, diag = margin_ranking_loss(jnp.ones((2, 3, 19)), jnp.full((2, 3, 19), 0.5), where=jnp.ones((2, 3)))
    assert float(loss) == 0.0 and float(diag["rank_pairs"]) == 0.0


def test_agreement_weights():
    w = agreement_weights(jnp.array([0.0, 0.1, 0.1, 1.0, 0.1]), jnp.array([0.2, 0.2, 0.0, 0.2, 0.0]),
                          jnp.array([0.2, 0.2, 0.0, 0.2, 0.0]))
    expected = [0.0, math.erf(0.1 / math.sqrt(0.08) / math.sqrt(2)), 1.0, math.erf(1 / math.sqrt(0.08) / math.sqrt(2)), 1.0]
    np.testing.assert_allclose(np.asarray(w), expected, rtol=1e-5, atol=1e-6)
