"""Tiled / sharded InfoNCE against the B x B reference (float64), on 1 and 8 simulated devices."""

import functools

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from jax.sharding import Mesh, NamedSharding
from jax.sharding import PartitionSpec as P

from crescend_jax.losses.infonce import infonce_loss, naive_infonce_loss, sharded_infonce_loss

RTOL = 1e-5


def _batch(seed: int, size: int, dim: int, groups: int | None, padding: int = 0, singletons: int = 0):
    """Normalised z [size, dim]; uneven random groups (``groups=None``: consecutive pairs), ``singletons`` rows with a
    group of their own, and the last ``padding`` rows masked out (group -1, as the batchers produce)."""
    rng = np.random.default_rng(seed)
    z = rng.normal(size=(size, dim))
    z /= np.linalg.norm(z, axis=1, keepdims=True)
    if groups is None:
        group = np.arange(size, dtype=np.int32) // 2
    else:
        group = rng.choice(groups, size=size, p=rng.dirichlet(np.ones(groups))).astype(np.int32)
    group[:singletons] = np.arange(1000, 1000 + singletons)
    mask = np.ones(size, np.float32)
    if padding:
        mask[-padding:] = 0.0
        group[-padding:] = -1
    return z, group, mask


def _value_and_grads(loss_fn, z, group, mask, temperature):
    """((loss, diagnostics), (dL/dz, dL/dT)) of loss_fn(z, group, where=mask, temperature=T)."""

    def loss(z, t):
        return loss_fn(z, jnp.asarray(group), where=jnp.asarray(mask), temperature=t)

    return jax.value_and_grad(loss, argnums=(0, 1), has_aux=True)(z, temperature)


@jax.jit
def _reference_x64(z, group, mask, temperature):
    return _value_and_grads(naive_infonce_loss, z, group, mask, temperature)


def _reference(z, group, mask, temperature):
    """The naive loss and gradients in float64."""
    with jax.enable_x64(True):
        out = _reference_x64(jnp.asarray(z, jnp.float64), group, mask, jnp.float64(temperature))
        return jax.tree.map(np.asarray, out)


def _assert_matches(got, want):
    (loss, diag), (dz, dt) = jax.tree.map(np.asarray, got)
    (want_loss, want_diag), (want_dz, want_dt) = want
    np.testing.assert_allclose(loss, want_loss, rtol=RTOL)
    np.testing.assert_allclose(dt, want_dt, rtol=RTOL)
    # elementwise, relative to the gradient's scale (entries near zero have no meaningful relative error)
    np.testing.assert_allclose(dz, want_dz, rtol=RTOL, atol=RTOL * np.abs(want_dz).max())
    assert diag.keys() == want_diag.keys()
    for key in diag:
        np.testing.assert_allclose(diag[key], want_diag[key], rtol=RTOL, atol=1e-6, err_msg=key)


# one shape for all cases (one compilation): 54 rows = 3 full 16-row blocks + a ragged one
CASES = {
    # name: (seed, groups, padding, singletons, temperature)
    "single_positive_pairs": (0, None, 0, 0, 0.1),
    "uneven_multi_positive_no_positive_anchors": (1, 7, 0, 5, 0.07),
    "padding": (2, 5, 9, 3, 0.2),
    "small_temperature": (3, 6, 4, 2, 0.01),
}
_tiled_loss = jax.jit(infonce_loss, static_argnames="block_size")


@pytest.mark.parametrize("block_size", [16, 64], ids=["tiles", "one_tile"])  # 64: the backward reads the saved p
@pytest.mark.parametrize("case", CASES.values(), ids=CASES.keys())
def test_single_device_matches_reference(case, block_size):
    seed, groups, padding, singletons, temperature = case
    z, group, mask = _batch(seed, 54, 16, groups, padding, singletons)
    fn = functools.partial(_tiled_loss, block_size=block_size)
    got = _value_and_grads(fn, jnp.asarray(z, jnp.float32), group, mask, jnp.float32(temperature))
    _assert_matches(got, _reference(z, group, mask, temperature))


def _mesh(n: int) -> Mesh:
    return Mesh(np.array(jax.devices()[:n]), ("data",))


@pytest.mark.parametrize("strategy", ["ring", "allgather"])
@pytest.mark.parametrize("devices", [1, 8])
def test_sharded_matches_reference(strategy, devices):
    # 8 x 13 rows: 13 per device is not a multiple of the 8-row blocks; padding and singleton rows included
    z, group, mask = _batch(seed=4, size=104, dim=16, groups=9, padding=6, singletons=4)
    mesh = _mesh(devices)
    fn = jax.jit(functools.partial(sharded_infonce_loss, mesh=mesh, block_size=8, strategy=strategy))
    got = _value_and_grads(fn, jnp.asarray(z, jnp.float32), group, mask, jnp.float32(0.1))
    _assert_matches(got, _reference(z, group, mask, 0.1))


def test_padding_rows_are_ignored_and_get_no_gradient():
    z, group, mask = _batch(seed=5, size=54, dim=16, groups=4, padding=10)
    padded_z = z.copy()
    padded_z[-10:] = np.random.default_rng(9).normal(size=(10, 16))  # junk in padding rows must not matter
    fn = functools.partial(_tiled_loss, block_size=16)
    (loss, _), (dz, _) = _value_and_grads(fn, jnp.asarray(padded_z, jnp.float32), group, mask, jnp.float32(0.1))
    (want, _), (want_dz, _) = _value_and_grads(
        fn, jnp.asarray(z[:-10], jnp.float32), group[:-10], mask[:-10], jnp.float32(0.1)
    )
    np.testing.assert_allclose(loss, want, rtol=RTOL)
    assert np.all(np.asarray(dz)[-10:] == 0.0)
    np.testing.assert_allclose(dz[:-10], want_dz, rtol=RTOL, atol=1e-7)


def test_default_block_size_gives_the_same_loss():
    z, group, mask = _batch(seed=10, size=54, dim=16, groups=6)
    args = (jnp.asarray(z, jnp.float32), jnp.asarray(group))
    kwargs = {"where": jnp.asarray(mask), "temperature": 0.1}
    np.testing.assert_allclose(infonce_loss(*args, **kwargs)[0], _tiled_loss(*args, **kwargs, block_size=16)[0],
                               rtol=RTOL)


def test_batch_without_anchors_gives_zero_loss_and_finite_gradient():
    z, _, mask = _batch(seed=6, size=54, dim=16, groups=2)
    group = np.arange(54, dtype=np.int32)  # every row its own music: no positives anywhere
    (loss, diag), (dz, dt) = _value_and_grads(
        functools.partial(_tiled_loss, block_size=16), jnp.asarray(z, jnp.float32), group, mask, 0.1
    )
    assert float(loss) == 0.0 and float(diag["num_anchors"]) == 0.0
    assert np.all(np.asarray(dz) == 0.0) and float(dt) == 0.0


def test_jitted_train_step_with_sharded_inputs():
    """value_and_grad through a projection and L2 normalisation, batch sharded over 8 devices, params replicated."""
    mesh = _mesh(8)
    x, group, mask = _batch(seed=7, size=64, dim=12, groups=10, padding=8)
    w = np.random.default_rng(8).normal(size=(12, 6)) / np.sqrt(12)

    def loss_with(loss_fn):
        def loss(w, x, group, mask):
            h = x @ w
            z = h / jnp.linalg.norm(h, axis=1, keepdims=True)
            return loss_fn(z, group, where=mask, temperature=0.1)[0]

        return loss

    sharded = NamedSharding(mesh, P("data"))
    args = (
        jax.device_put(jnp.asarray(w, jnp.float32), NamedSharding(mesh, P())),
        jax.device_put(jnp.asarray(x, jnp.float32), sharded),
        jax.device_put(jnp.asarray(group), sharded),
        jax.device_put(jnp.asarray(mask), sharded),
    )
    step = jax.jit(
        jax.value_and_grad(loss_with(functools.partial(sharded_infonce_loss, mesh=mesh, block_size=8, strategy="ring")))
    )
    loss, dw = step(*args)
    with jax.enable_x64(True):
        want, want_dw = jax.jit(jax.value_and_grad(loss_with(naive_infonce_loss)))(
            jnp.asarray(w, jnp.float64), jnp.asarray(x, jnp.float64), jnp.asarray(group), jnp.asarray(mask)
        )
    np.testing.assert_allclose(loss, want, rtol=RTOL)
    np.testing.assert_allclose(dw, want_dw, rtol=RTOL, atol=RTOL * np.abs(want_dw).max())


def test_bad_inputs_raise_clear_errors():
    z = jnp.zeros((10, 4))
    group, mask = jnp.zeros(10, jnp.int32), jnp.ones(10)
    with pytest.raises(ValueError, match="must both be \\[B\\]"):
        infonce_loss(z, group[:9], where=mask, temperature=0.1)
    with pytest.raises(ValueError, match="must both be \\[B\\]"):
        infonce_loss(z, group, where=mask[:9], temperature=0.1)
    with pytest.raises(ValueError, match="integer ids"):
        infonce_loss(z, mask, where=mask, temperature=0.1)
    with pytest.raises(ValueError, match="not a multiple of the 8 devices"):
        sharded_infonce_loss(z, group, where=mask, temperature=0.1, mesh=_mesh(8))
    with pytest.raises(ValueError, match="block_size must be a positive integer"):
        infonce_loss(z, group, where=mask, temperature=0.1, block_size=0)
    with pytest.raises(ValueError, match="strategy must be one of"):
        sharded_infonce_loss(z, group, where=mask, temperature=0.1, mesh=_mesh(2), strategy="tree")
