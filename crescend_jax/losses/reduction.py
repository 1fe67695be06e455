"""The reductions every loss shares: which entries count (``where``), how much (``weights``), and how they are summed.

A loss of this package computes per-entry values l (one per row, pair or anchor, and dimension where it has one),
then calls ``reduce_fn(l, where=valid, weights=w)`` with ``valid`` its bool mask of the entries that count and ``w``
its weights (None = 1), broadcast against l:

    weighted_mean:  sum_{valid} w l / max(sum_{valid} w, 1e-6)   (the default; 0 when nothing is valid)
    weighted_sum:   sum_{valid} w l
    None:           the unreduced array w * l, 0 where not valid, so that its sum equals the weighted_sum

The 1e-6 floor keeps the mean continuous as the total weight goes to 0 (a vanishing weight cannot flip the loss
from l to 0) and its gradient finite when nothing is valid; with weights of 1 it is never reached (the total is a
count, 0 or at least 1). Any callable ``f(values, *, where, weights) -> scalar`` may be passed as ``reduce_fn``.

>>> import jax.numpy as jnp
>>> values = jnp.array([1.0, 2.0, 30.0])
>>> where = jnp.array([True, True, False])
>>> float(weighted_mean(values, where=where, weights=jnp.array([1.0, 3.0, 1.0])))  # (1 + 6) / 4
1.75
>>> float(weighted_sum(values, where=where, weights=None))
3.0
>>> reduce_loss(values, where=where, weights=None, reduce_fn=None).tolist()
[1.0, 2.0, 0.0]
"""

from __future__ import annotations

from collections.abc import Callable

import jax
import jax.numpy as jnp

ReduceFn = Callable[..., jax.Array]  # f(values, *, where, weights) -> scalar
MIN_TOTAL_WEIGHT = 1e-6


def at_least_float32(x: jax.Array) -> jax.Array:
    """x as float32 (float64 stays): every loss computes in float32 whatever the model's compute dtype (a bfloat16
    training step, `crescend_jax.train.step`, hands its outputs over in bfloat16)."""
    x = jnp.asarray(x)
    return x.astype(jnp.promote_types(x.dtype, jnp.float32))


def valid_entries(where: jax.Array | None, shape: tuple[int, ...]) -> jax.Array:
    """``where`` as a bool array of ``shape`` (nonzero = valid; a 0/1 float mask is accepted); None = all valid."""
    if where is None:
        return jnp.ones(shape, bool)
    where = jnp.asarray(where)
    if where.shape != tuple(shape):
        raise ValueError(f"where must have shape {tuple(shape)}, got {where.shape}")
    return where if where.dtype == bool else where > 0


def _masked(values: jax.Array, where: jax.Array, weights: jax.Array | None) -> tuple[jax.Array, jax.Array]:
    """(w * l, w) with 0 outside ``where``; ``where`` and ``weights`` broadcast against ``values``."""
    where = jnp.broadcast_to(where, values.shape)
    if weights is None:
        return jnp.where(where, values, 0.0), where.astype(values.dtype)
    # weights outside ``where`` are zeroed *before* the product: a NaN weight there (e.g. agreement weights of
    # unrated pairs) would otherwise reach the gradient of ``values`` as 0 * NaN
    weights = jnp.where(where, jnp.broadcast_to(jnp.asarray(weights, values.dtype), values.shape), 0.0)
    return jnp.where(where, weights * values, 0.0), weights


def weighted_mean(values: jax.Array, *, where: jax.Array, weights: jax.Array | None = None) -> jax.Array:
    """sum_{where} w l / max(sum_{where} w, 1e-6): the weighted mean of the valid entries, 0 when none is valid."""
    weighted, weight = _masked(values, where, weights)
    return jnp.sum(weighted) / jnp.maximum(jnp.sum(weight), MIN_TOTAL_WEIGHT)


def weighted_sum(values: jax.Array, *, where: jax.Array, weights: jax.Array | None = None) -> jax.Array:
    """sum_{where} w l."""
    return jnp.sum(_masked(values, where, weights)[0])


def reduce_loss(values: jax.Array, *, where: jax.Array, weights: jax.Array | None,
                reduce_fn: ReduceFn | None) -> jax.Array:
    """``reduce_fn(values, where=where, weights=weights)`` (``where`` broadcast to the shape of ``values``), or for
    ``reduce_fn=None`` the unreduced w * l with 0 outside ``where`` (shape of ``values``)."""
    where = jnp.broadcast_to(where, values.shape)
    if reduce_fn is None:
        return _masked(values, where, weights)[0]
    return reduce_fn(values, where=where, weights=weights)
