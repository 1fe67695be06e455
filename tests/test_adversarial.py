"""Approach C losses: gradient reversal, DANN schedule, masked cross-entropy, orthogonality, within-group spread."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from crescend_jax.losses.adversarial import (
    between_group_share,
    gradient_reversal,
    masked_cross_entropy,
    orthogonality_penalty,
    reversal_strength,
    within_group_variance_hinge,
)


def test_reversal_forward_is_the_identity():
    x = jnp.asarray(np.random.default_rng(0).normal(size=(4, 3)), jnp.float32)
    np.testing.assert_array_equal(np.asarray(gradient_reversal(x, 0.7)), np.asarray(x))
    np.testing.assert_array_equal(np.asarray(jax.jit(gradient_reversal)(x, 0.7)), np.asarray(x))


@pytest.mark.parametrize("strength", [0.0, 0.3, 1.0, 2.5])
def test_reversal_gradient_is_minus_lambda_times_the_incoming_one(strength):
    rng = np.random.default_rng(1)
    x = jnp.asarray(rng.normal(size=(5, 4)), jnp.float32)
    w = jnp.asarray(rng.normal(size=(5, 4)), jnp.float32)  # d/dx sum(w * x) = w
    grad = jax.grad(lambda x: jnp.sum(w * gradient_reversal(x, strength)))(x)
    np.testing.assert_array_equal(np.asarray(grad), np.asarray(-jnp.float32(strength) * w))
    # traced lambda under jit, and no gradient flows into lambda
    grad_x, grad_lambda = jax.jit(jax.grad(lambda x, s: jnp.sum(w * gradient_reversal(x, s)), argnums=(0, 1)))(
        x, jnp.float32(strength))
    np.testing.assert_array_equal(np.asarray(grad_x), np.asarray(-jnp.float32(strength) * w))
    assert float(grad_lambda) == 0.0


def test_reversal_only_flips_the_path_through_it():
    # f(x) = sum(x^2) + sum(R(x)): gradient 2x - lambda
    x = jnp.array([1.0, -2.0, 3.0])
    grad = jax.grad(lambda x: jnp.sum(x**2) + jnp.sum(gradient_reversal(x, 0.5)))(x)
    np.testing.assert_allclose(np.asarray(grad), 2 * np.asarray(x) - 0.5)


def test_schedule_values():
    assert float(reversal_strength(0, 100)) == 0.0
    assert float(reversal_strength(50, 100)) == pytest.approx(2 / (1 + np.exp(-5)) - 1, rel=1e-6)
    assert float(reversal_strength(50, 100)) == pytest.approx(0.98661, abs=1e-5)
    assert float(reversal_strength(100, 100)) == pytest.approx(0.99991, abs=1e-5)
    assert float(reversal_strength(300, 100)) == float(reversal_strength(100, 100))  # progress clipped at 1
    assert float(reversal_strength(50, 100, scale=0.1)) == pytest.approx(0.098661, abs=1e-6)
    assert float(reversal_strength(7, 100, schedule="constant", scale=0.3)) == pytest.approx(0.3)
    steps = jnp.arange(0, 101)
    values = np.asarray(jax.jit(jax.vmap(lambda s: reversal_strength(s, 100)))(steps))
    assert (np.diff(values) > 0).all()  # increasing, traced step
    with pytest.raises(ValueError, match="schedule"):
        reversal_strength(0, 10, schedule="linear")


def test_cross_entropy_equals_numpy():
    rng = np.random.default_rng(2)
    logits = rng.normal(scale=3.0, size=(7, 5)).astype(np.float32)
    labels = rng.integers(0, 5, size=7)
    mask = np.array([1, 1, 0, 1, 1, 0, 1], np.float32)
    labels[mask == 0] = -1
    loss, diag = jax.jit(masked_cross_entropy)(logits, labels, where=mask)
    real = mask > 0
    shifted = logits - logits.max(axis=1, keepdims=True)
    log_probs = shifted - np.log(np.exp(shifted).sum(axis=1, keepdims=True))
    want = -np.mean(log_probs[real, labels[real]])
    assert float(loss) == pytest.approx(want, rel=1e-5)
    assert float(diag["cross_entropy"]) == pytest.approx(want, rel=1e-5)
    assert float(diag["rows"]) == 5
    assert float(diag["accuracy"]) == pytest.approx(np.mean(logits[real].argmax(1) == labels[real]))
    empty, _ = masked_cross_entropy(logits, labels, where=np.zeros(7, np.float32))
    assert float(empty) == 0.0


def orthogonal_columns(n, widths, seed):
    """Blocks of centred columns spanning mutually orthogonal subspaces of R^n (random scales and offsets)."""
    rng = np.random.default_rng(seed)
    # orthonormal columns orthogonal to the all-ones vector, i.e. centred
    basis = np.linalg.qr(np.concatenate([np.ones((n, 1)), rng.normal(size=(n, sum(widths)))], axis=1))[0][:, 1:]
    blocks, start = [], 0
    for w in widths:
        mix = rng.normal(size=(w, w))
        blocks.append(basis[:, start:start + w] @ mix * 3.0 + rng.normal(size=w))  # mixed, scaled, shifted
        start += w
    return [b.astype(np.float32) for b in blocks]


def test_cross_correlation_is_zero_for_orthogonal_subspaces_and_pearson_otherwise():
    z_piece, z_style = orthogonal_columns(32, [4, 6], seed=3)
    mask = np.ones(32, np.float32)
    assert float(orthogonality_penalty(z_piece, z_style, where=mask)[0]) == pytest.approx(0.0, abs=1e-10)
    # a style feature that is an affine copy of a piece feature: the mean squared Pearson correlation (numpy)
    copied = z_style.copy()
    copied[:, 0] = -2 * z_piece[:, 1] + 5
    want = np.mean(np.corrcoef(z_piece.T, copied.T)[:4, 4:] ** 2)
    assert want > 0.04
    assert float(orthogonality_penalty(z_piece, copied, where=mask)[0]) == pytest.approx(want, rel=1e-4)
    # padding rows do not count: orthogonality on the real rows survives arbitrary padding values
    padded_piece = np.concatenate([z_piece, np.full((3, 4), 100.0, np.float32)])
    padded_style = np.concatenate([z_style, np.full((3, 6), -7.0, np.float32)])
    padded_mask = np.concatenate([mask, np.zeros(3, np.float32)])
    padded, _ = orthogonality_penalty(padded_piece, padded_style, where=padded_mask)
    assert float(padded) == pytest.approx(0.0, abs=1e-10)
    # a constant feature gives a finite value and gradient
    constant = z_style.copy()
    constant[:, 2] = 1.0
    grad = jax.grad(lambda s: orthogonality_penalty(jnp.asarray(z_piece), s, where=jnp.asarray(mask))[0])(
        jnp.asarray(constant))
    assert np.isfinite(np.asarray(grad)).all()


def test_cosine_is_zero_for_orthogonal_coordinate_subspaces():
    rng = np.random.default_rng(4)
    z_piece = np.concatenate([rng.normal(size=(10, 3)), np.zeros((10, 5))], axis=1).astype(np.float32)
    z_style = np.concatenate([np.zeros((10, 3)), rng.normal(size=(10, 5))], axis=1).astype(np.float32)
    mask = np.ones(10, np.float32)
    assert float(orthogonality_penalty(z_piece, z_style, where=mask, kind="cosine")[0]) == 0.0
    parallel, _ = orthogonality_penalty(z_piece, 2 * z_piece, where=mask, kind="cosine")
    assert float(parallel) == pytest.approx(1.0, rel=1e-6)
    with pytest.raises(ValueError, match="equal widths"):
        orthogonality_penalty(z_piece, z_style[:, :4], where=mask, kind="cosine")
    with pytest.raises(ValueError, match="kind"):
        orthogonality_penalty(z_piece, z_style, where=mask, kind="hsic")


def test_between_group_share():
    rng = np.random.default_rng(5)
    P, K, E = 4, 5, 3
    mask = np.ones((P, K), np.float32)
    mask[3, 2:] = 0
    spread = rng.normal(size=(P, K, E)).astype(np.float32)
    collapsed = np.repeat(rng.normal(size=(P, 1, E)), K, axis=1).astype(np.float32)  # one point per group
    assert float(between_group_share(collapsed, where=mask)[0]) == pytest.approx(1.0, abs=1e-6)
    centred = spread - (spread * mask[..., None]).sum(1, keepdims=True) / mask.sum(1)[:, None, None]
    assert float(between_group_share(centred, where=mask)[0]) == pytest.approx(0.0, abs=1e-6)  # equal group means
    # numpy: 1 - within / total over the real rows, padding ignored
    z = spread.copy()
    z[mask == 0] = 1e3
    real = z[mask > 0]
    total = ((real - real.mean(0)) ** 2).sum()
    within = sum(((z[p][mask[p] > 0] - z[p][mask[p] > 0].mean(0)) ** 2).sum() for p in range(P))
    assert float(between_group_share(z, where=mask)[0]) == pytest.approx(1 - within / total, rel=1e-5)
    scaled, _ = between_group_share(3 * z + 1, where=mask)
    assert float(scaled) == pytest.approx(1 - within / total, rel=1e-5)  # scale-free
    assert float(between_group_share(np.zeros((P, K, E), np.float32), where=mask)[0]) == 0.0
    grad = jax.grad(lambda z: between_group_share(z, where=jnp.asarray(mask))[0])(jnp.zeros((P, K, E)))
    assert np.isfinite(np.asarray(grad)).all()


def test_within_group_variance_hinge():
    mask = np.array([[1, 1, 0], [1, 0, 0]], np.float32)  # only the first slot has a pair
    z = np.zeros((2, 3, 2), np.float32)
    z[0, 0] = [1.0, 0.0]
    z[0, 1] = [-1.0, 0.0]
    z[0, 2] = [50.0, 50.0]  # padding, ignored
    # slot 0: std of feature 0 is 1 (-> hinge 0 at target 1), feature 1 has std 0 (-> hinge 1 - 0.01)
    value = float(within_group_variance_hinge(z, where=mask, target_std=1.0)[0])
    assert value == pytest.approx((max(0.0, 1 - np.sqrt(1 + 1e-4)) + (1 - 0.01)) / 2, rel=1e-5)
    assert float(within_group_variance_hinge(z, where=np.zeros((2, 3), np.float32), target_std=1.0)[0]) == 0.0
