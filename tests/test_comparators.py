"""Approach B comparison heads: exact antisymmetry, tile = explicit pairs, masks, and learning a planted ordering."""

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest
from flax import nnx

from crescend_jax.config import ConfigError
from crescend_jax.losses.comparison import block_comparison_loss
from crescend_jax.models.comparators import COMPARATORS, make_comparator

HEADS = [
    ("concat", dict(num_layers=2, hidden_dim=32)),
    ("bilinear", dict(rank=4)),
    ("cross_attention", dict(num_heads=2, hidden_dim=32, pooling="mean")),
    ("cross_attention", dict(num_heads=2, hidden_dim=32, pooling="attention")),
]
IDS = ["concat", "bilinear", "cross_attention-mean", "cross_attention-attention"]


def perturb(model, seed):
    """Random weights everywhere (zero-initialised biases too), so nothing is antisymmetric by accident."""
    graphdef, params, rest = nnx.split(model, nnx.Param, ...)
    leaves, tree = jax.tree.flatten(params)
    keys = jax.random.split(jax.random.key(seed), len(leaves))
    leaves = [x + 0.3 * jax.random.normal(k, x.shape, x.dtype) for x, k in zip(leaves, keys)]
    return nnx.merge(graphdef, jax.tree.unflatten(tree, leaves), rest)


def inputs(name, shape, seed, frames=5, dim=8):
    """Vectors [*shape, dim], or frames [*shape, T, dim] with ragged frame masks [*shape, T] (>= 1 real frame)."""
    rng = np.random.default_rng(seed)
    if name != "cross_attention":
        return (jnp.asarray(rng.normal(size=(*shape, dim)), jnp.float32),)
    h = rng.normal(size=(*shape, frames, dim)).astype(np.float32)
    lengths = rng.integers(1, frames + 1, size=shape)
    mask = (np.arange(frames) < lengths[..., None]).astype(np.float32)
    return jnp.asarray(h), jnp.asarray(mask)


def pair_call(model, name, a, b):
    return model(a[0], b[0]) if name != "cross_attention" else model(a[0], a[1], b[0], b[1])


@pytest.mark.parametrize("name,options", HEADS, ids=IDS)
def test_antisymmetric_bit_for_bit(name, options):
    model = perturb(make_comparator(name, 8, 5, rngs=nnx.Rngs(0), **options), seed=1)
    a, b = inputs(name, (7,), seed=2), inputs(name, (7,), seed=3)
    forward, backward = pair_call(model, name, a, b), pair_call(model, name, b, a)
    assert forward.shape == (7, 5)
    assert float(jnp.std(forward)) > 0.1  # not trivially zero
    np.testing.assert_array_equal(np.asarray(forward), -np.asarray(backward))  # eager and jitted alike
    jitted = nnx.jit(lambda m, a, b: pair_call(m, name, a, b))
    np.testing.assert_array_equal(np.asarray(jitted(model, a, b)), -np.asarray(jitted(model, b, a)))
    np.testing.assert_allclose(np.asarray(jax.nn.sigmoid(forward) + jax.nn.sigmoid(backward)), 1.0, atol=1e-6)
    np.testing.assert_array_equal(np.asarray(pair_call(model, name, a, a)), 0.0)  # a vs itself: P = 1/2


@pytest.mark.parametrize("name,options", HEADS, ids=IDS)
def test_tile_is_antisymmetric_and_equals_explicit_pairs(name, options):
    model = perturb(make_comparator(name, 8, 5, rngs=nnx.Rngs(0), **options), seed=4)
    x = inputs(name, (3, 4), seed=5)
    tile = model.block_logits(*x)
    assert tile.shape == (3, 4, 4, 5)
    np.testing.assert_array_equal(np.asarray(tile), -np.asarray(jnp.swapaxes(tile, 1, 2)))
    first = tuple(t[:, :, None] for t in x)  # member i against member j, by broadcasting the encoded batch
    second = tuple(t[:, None, :] for t in x)
    np.testing.assert_allclose(np.asarray(tile), np.asarray(pair_call(model, name, first, second)), atol=1e-5)


def test_cross_attention_ignores_padded_frames_and_padding_members():
    model = perturb(make_comparator("cross_attention", 8, 5, rngs=nnx.Rngs(0), num_heads=2, hidden_dim=16), seed=6)
    h, mask = inputs("cross_attention", (2, 3), seed=7)
    noisy = jnp.where(mask[..., None] > 0, h, 1e3)  # garbage in every padded frame
    tile = nnx.jit(lambda m, h, mask: m.block_logits(h, mask))
    np.testing.assert_allclose(np.asarray(tile(model, h, mask)), np.asarray(tile(model, noisy, mask)), atol=1e-5)
    empty = mask.at[1, 2].set(0.0)  # a padding member (no real frame): finite logits, gradients too
    assert np.isfinite(np.asarray(tile(model, h, empty))).all()
    grad = nnx.jit(jax.grad(lambda h, m: jnp.sum(m.block_logits(h, empty))))(h, model)
    assert np.isfinite(np.asarray(grad)).all()


def planted(seed, groups=4, members=6, dims=3, width=12, frames=0):
    """Labels y = piece offset + hidden per-performance scalar (distinct, gaps >= 0.2) on each dimension; the input
    is a random linear mix of a piece embedding and the hidden scalars (frames: the vector plus per-frame noise)."""
    rng = np.random.default_rng(seed)
    hidden = np.stack([np.stack([rng.permutation(members) * 0.2 for _ in range(dims)], axis=-1)
                       for _ in range(groups)])  # [G, M, dims]
    offset = rng.normal(size=(groups, 1, dims))
    labels = (offset + hidden).astype(np.float32)
    piece = np.repeat(rng.normal(size=(groups, 1, 4)), members, axis=1)
    z = np.concatenate([piece, hidden], axis=-1) @ rng.normal(size=(4 + dims, width)) / 2
    if not frames:
        return (jnp.asarray(z, jnp.float32),), jnp.asarray(labels)
    h = z[:, :, None, :] + 0.1 * rng.normal(size=(groups, members, frames, width))
    mask = (np.arange(frames) < rng.integers(frames // 2, frames + 1, size=(groups, members, 1))).astype(np.float32)
    return (jnp.asarray(h, jnp.float32), jnp.asarray(mask)), jnp.asarray(labels)


@pytest.mark.parametrize("name,options", HEADS[:3], ids=IDS[:3])
def test_learns_a_planted_ordering(name, options):
    x, labels = planted(0, frames=6 if name == "cross_attention" else 0)
    model = make_comparator(name, 12, 3, rngs=nnx.Rngs(1), **options)
    graphdef, params, rest = nnx.split(model, nnx.Param, ...)
    optimizer = optax.adam(1e-2)
    mask = jnp.ones(labels.shape[:2])

    def loss_fn(params):
        tile = nnx.merge(graphdef, params, rest).block_logits(*x)
        return block_comparison_loss(tile, labels, where=mask)

    @jax.jit
    def step(params, state):
        (loss, diagnostics), grads = jax.value_and_grad(loss_fn, has_aux=True)(params)
        updates, state = optimizer.update(grads, state, params)
        return optax.apply_updates(params, updates), state, diagnostics

    state = optimizer.init(params)
    _, start = loss_fn(params)
    for _ in range(300):
        params, state, diagnostics = step(params, state)
    tile = np.asarray(nnx.merge(graphdef, params, rest).block_logits(*x))
    gap = np.asarray(labels[:, :, None, :] - labels[:, None, :, :])
    off_diagonal = ~np.eye(labels.shape[1], dtype=bool)[None, :, :, None] & np.ones_like(gap, bool)
    assert float(start["compare_accuracy"]) < 0.9  # not solved at initialisation
    assert np.all(np.sign(tile[off_diagonal]) == np.sign(gap[off_diagonal]))  # 100% of the ordered training pairs
    assert float(diagnostics["compare_accuracy"]) == 1.0 and float(diagnostics["compare_pairs"]) == 4 * 6 * 5 * 3


def test_factory_and_bad_settings():
    assert set(COMPARATORS) == {"concat", "bilinear", "cross_attention"}
    with pytest.raises(ConfigError, match="model.comparison"):
        make_comparator("siamese", 8, rngs=nnx.Rngs(0))
    with pytest.raises(ConfigError, match="num_heads"):
        make_comparator("cross_attention", 8, rngs=nnx.Rngs(0), num_heads=3)
    with pytest.raises(ConfigError, match="pooling"):
        make_comparator("cross_attention", 8, rngs=nnx.Rngs(0), pooling="max")
    with pytest.raises(ConfigError, match="rank"):
        make_comparator("bilinear", 8, rngs=nnx.Rngs(0), rank=0)
    assert make_comparator("bilinear", 8, rngs=nnx.Rngs(0)).block_logits(jnp.zeros((1, 2, 8))).shape == (1, 2, 2, 19)


@pytest.mark.parametrize("group_size", [1, 2, 3, 8])
def test_pair_layout_without_gathers(group_size):
    """The shifted slices list every pair i < j once, `_diagonals` reads them off a tile, `_tile_from_upper` puts
    them back (v at (i, j), -v at (j, i), 0 on the diagonal), and none of the three lowers to a gather or scatter
    (value and gradient)."""
    from crescend_jax.models.comparators import _diagonals, _shifted, _tile_from_upper

    k = group_size
    members = jnp.broadcast_to(jnp.arange(k, dtype=jnp.float32)[None, :, None], (2, k, 1))
    left, right = _shifted(members)
    pairs = sorted(zip(np.asarray(left[0, :, 0]).astype(int), np.asarray(right[0, :, 0]).astype(int)))
    assert pairs == sorted(zip(*np.triu_indices(k, k=1)))
    values = jnp.asarray(np.random.default_rng(0).normal(size=(2, k * (k - 1) // 2, 3)), jnp.float32)
    tile = _tile_from_upper(values, k)
    expected = np.zeros((2, k, k, 3), np.float32)
    for m, (i, j) in enumerate(zip(np.asarray(left[0, :, 0]).astype(int), np.asarray(right[0, :, 0]).astype(int))):
        expected[:, i, j], expected[:, j, i] = values[:, m], -values[:, m]
    np.testing.assert_array_equal(np.asarray(tile), expected)
    np.testing.assert_array_equal(np.asarray(_diagonals(tile)), np.asarray(values))
    loss = lambda v: jnp.sum(jnp.sin(_tile_from_upper(v, k)) + _diagonals(_tile_from_upper(v, k)).sum())
    text = jax.jit(jax.grad(loss)).lower(values).as_text()
    assert "gather" not in text and "scatter" not in text
