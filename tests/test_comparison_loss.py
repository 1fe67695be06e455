"""Comparison losses (approach B): naive loop for every kind, ties and gaps, smoothing, agreement weights, tiles."""

import math

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from crescend_jax.losses.comparison import block_comparison_loss, block_pairs
from crescend_jax.losses.comparison import comparison_loss as eager_comparison_loss

comparison_loss = jax.jit(eager_comparison_loss,
                          static_argnames=("kind", "margin", "min_label_gap", "label_smoothing"))


def softplus(x):
    return math.log1p(math.exp(-abs(x))) + max(x, 0.0)


def naive(logits, gap, mask, std_a, std_b, kind, margin, min_gap, eps):
    """Explicit loop over pairs and dimensions."""
    num = den = correct = count = abs_sum = 0.0
    for n in range(logits.shape[0]):
        if not mask[n]:
            continue
        for d in range(logits.shape[1]):
            g, x = float(gap[n, d]), float(logits[n, d])
            if abs(g) <= min_gap:
                continue
            u = x if g > 0 else -x
            if kind == "hinge":
                loss = max(0.0, margin - u)
            else:
                v = u - margin if kind == "logistic_margin" else u
                t = 1 - eps / 2
                loss = t * softplus(-v) + (1 - t) * softplus(v)
            w = 1.0
            if std_a is not None:
                spread = math.sqrt(std_a[n, d] ** 2 + std_b[n, d] ** 2)
                w = math.erf(abs(g) / spread / math.sqrt(2)) if spread > 0 else 1.0
            num += w * loss
            den += w
            correct += w * (u > 0)
            count += 1
            abs_sum += abs(x)
    return num / max(den, 1e-6), count, correct / max(den, 1e-6), abs_sum / max(count, 1)


def random_pairs(seed, n=40, d=5):
    rng = np.random.default_rng(seed)
    logits = rng.normal(scale=2.0, size=(n, d)).astype(np.float32)
    gap = rng.choice([-0.4, -0.1, -0.03, 0.0, 0.03, 0.1, 0.5], size=(n, d)).astype(np.float32)
    mask = rng.uniform(size=n) > 0.2
    std_a = rng.uniform(0.0, 0.3, size=(n, d)).astype(np.float32)
    std_b = rng.uniform(0.0, 0.3, size=(n, d)).astype(np.float32)
    return logits, gap, mask, std_a, std_b


@pytest.mark.parametrize("kind", ["bce", "logistic_margin", "hinge"])
@pytest.mark.parametrize("weighted", [False, True])
def test_matches_naive_loop(kind, weighted):
    logits, gap, mask, std_a, std_b = random_pairs(0)
    if not weighted:
        std_a = std_b = None
    loss, diag = comparison_loss(logits, gap, where=mask, std_a=std_a, std_b=std_b, kind=kind, margin=0.7,
                                 min_label_gap=0.05, label_smoothing=0.1)
    want_loss, want_count, want_accuracy, want_abs = naive(logits, gap, mask, std_a, std_b, kind, 0.7, 0.05, 0.1)
    assert float(loss) == pytest.approx(want_loss, rel=1e-5)
    assert float(diag["compare_loss"]) == pytest.approx(want_loss, rel=1e-5)
    assert float(diag["compare_pairs"]) == want_count
    assert float(diag["compare_accuracy"]) == pytest.approx(want_accuracy, rel=1e-5)
    assert float(diag["compare_mean_abs_logit"]) == pytest.approx(want_abs, rel=1e-5)


def test_hand_computed_bce_with_smoothing():
    # gap > 0, logit 2: target 0.95 -> 0.95 softplus(-2) + 0.05 softplus(2); gap < 0, logit 2 -> oriented -2
    logits = jnp.array([[2.0], [2.0]])
    gap = jnp.array([[0.3], [-0.3]])
    loss, diag = comparison_loss(logits, gap, where=jnp.array([True, True]), label_smoothing=0.1)
    right = 0.95 * softplus(-2.0) + 0.05 * softplus(2.0)
    wrong = 0.95 * softplus(2.0) + 0.05 * softplus(-2.0)
    assert float(loss) == pytest.approx((right + wrong) / 2, rel=1e-6)
    assert float(diag["compare_accuracy"]) == 0.5 and float(diag["compare_mean_abs_logit"]) == 2.0


def test_ties_small_gaps_and_padding_are_skipped():
    logits = jnp.array([[5.0, -5.0, 5.0, 1.0]])
    gap = jnp.array([[0.0, 0.04, -0.05, 0.2]])  # tie, below the threshold, at the threshold, counted
    loss, diag = comparison_loss(logits, gap, where=jnp.array([1.0]), kind="hinge", margin=1.0,
                                 min_label_gap=0.05)
    assert float(diag["compare_pairs"]) == 1 and float(loss) == 0.0  # only the last entry, already past the margin
    # a padding pair with NaN labels
    loss, diag = comparison_loss(logits, jnp.full((1, 4), jnp.nan), where=jnp.array([0.0]))
    assert float(loss) == 0.0 and float(diag["compare_pairs"]) == 0
    grad = jax.grad(lambda x: comparison_loss(x, jnp.full((1, 4), jnp.nan), where=jnp.array([0.0]))[0])(logits)
    assert np.all(np.asarray(grad) == 0)


def test_margin_kinds_need_the_margin():
    logits, gap = jnp.array([[0.5]]), jnp.array([[1.0]])
    hinge, _ = comparison_loss(logits, gap, where=jnp.array([True]), kind="hinge", margin=1.0)
    logistic, _ = comparison_loss(logits, gap, where=jnp.array([True]), kind="logistic_margin", margin=1.0)
    plain, _ = comparison_loss(logits, gap, where=jnp.array([True]), kind="bce")
    assert float(hinge) == pytest.approx(0.5)
    assert float(logistic) == pytest.approx(softplus(0.5), rel=1e-6)  # softplus(margin - u)
    assert float(plain) == pytest.approx(softplus(-0.5), rel=1e-6)


def test_both_orientations_cost_the_same_for_antisymmetric_logits():
    logits, gap, mask, std_a, std_b = random_pairs(1)
    kwargs = dict(kind="logistic_margin", margin=0.3, min_label_gap=0.02, label_smoothing=0.2)
    forward, _ = comparison_loss(logits, gap, where=mask, std_a=std_a, std_b=std_b, **kwargs)
    backward, _ = comparison_loss(-logits, -gap, where=mask, std_a=std_b, std_b=std_a, **kwargs)
    assert float(forward) == pytest.approx(float(backward), rel=1e-6)


def test_block_pairs_indices_and_mask():
    pairs = block_pairs(jnp.array([1, 1, 0, 1, 1, 1], jnp.float32), group_size=3)
    assert pairs.first.shape == pairs.second.shape == pairs.mask.shape == (2, 3, 3)
    for p in range(2):
        for i in range(3):
            for j in range(3):
                assert int(pairs.first[p, i, j]) == 3 * p + i and int(pairs.second[p, i, j]) == 3 * p + j
    want = np.array([[[0, 1, 0], [1, 0, 0], [0, 0, 0]], [[0, 1, 1], [1, 0, 1], [1, 1, 0]]], bool)
    np.testing.assert_array_equal(np.asarray(pairs.mask), want)
    with pytest.raises(ValueError, match="P \\* K"):
        block_pairs(jnp.ones(5), group_size=3)


@pytest.mark.parametrize("weighted", [False, True])
def test_block_loss_equals_the_flat_pair_list(weighted):
    rng = np.random.default_rng(2)
    P, K, D = 3, 4, 5
    logits = rng.normal(size=(P, K, K, D)).astype(np.float32)
    labels = rng.choice([0.1, 0.3, 0.32, 0.6, 0.9], size=(P, K, D)).astype(np.float32)
    mask = np.array([[1, 1, 1, 1], [1, 1, 0, 0], [1, 0, 0, 0]], np.float32)
    labels[mask == 0] = np.nan
    std = rng.uniform(0.0, 0.3, size=(P, K, D)).astype(np.float32) if weighted else None
    kwargs = dict(kind="bce", min_label_gap=0.05, label_smoothing=0.1)
    loss, diag = jax.jit(block_comparison_loss, static_argnames=tuple(kwargs))(logits, labels, where=mask,
                                                                                label_std=std, **kwargs)
    pairs = block_pairs(jnp.asarray(mask.reshape(-1)), K)
    flat_labels = labels.reshape(P * K, D)
    first, second = np.asarray(pairs.first).reshape(-1), np.asarray(pairs.second).reshape(-1)
    flat_std = {} if std is None else {"std_a": std.reshape(P * K, D)[first], "std_b": std.reshape(P * K, D)[second]}
    want, want_diag = comparison_loss(logits.reshape(-1, D), flat_labels[first] - flat_labels[second],
                                      where=np.asarray(pairs.mask).reshape(-1), **flat_std, **kwargs)
    assert np.isfinite(float(loss))
    assert float(loss) == pytest.approx(float(want), rel=1e-6)
    for name in want_diag:
        assert float(diag[name]) == pytest.approx(float(want_diag[name]), rel=1e-6)
    assert float(diag["compare_pairs"]) > 0


def test_bad_settings():
    x = jnp.zeros((1, 1))
    with pytest.raises(ValueError, match="kind"):
        eager_comparison_loss(x, x, kind="softmax")
    with pytest.raises(ValueError, match="label_smoothing"):
        eager_comparison_loss(x, x, label_smoothing=1.0)
    with pytest.raises(ValueError, match="\\[P, K, K, D\\]"):
        block_comparison_loss(jnp.zeros((2, 3, 3, 1)), jnp.zeros((2, 4, 1)), where=jnp.ones((2, 4)))
