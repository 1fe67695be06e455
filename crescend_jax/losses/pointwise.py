"""Pointwise regression losses on label means (the baseline's objective)."""

from __future__ import annotations

import jax
import jax.numpy as jnp

from crescend_jax.losses.reduction import (
    ReduceFn,
    at_least_float32,
    reduce_loss,
    valid_entries,
    weighted_mean,
)


def masked_mse(
    scores: jax.Array,
    labels: jax.Array,
    *,
    where: jax.Array | None = None,
    weights: jax.Array | None = None,
    reduce_fn: ReduceFn | None = weighted_mean,
) -> tuple[jax.Array, dict[str, jax.Array]]:
    """Squared error per row and dimension, l[i, d] = (s[i, d] - y[i, d])^2, over the valid rows.

    With the default reduction, loss = sum_{i valid} sum_d w[i, d] l[i, d] / sum_{i valid} sum_d w[i, d]
    (w = 1: the mean over valid rows and all D dimensions).

    Args:
      scores: float32 [B, D] predictions (sigmoid outputs for the baseline).
      labels: float32 [B, D] label means in [0, 1] (rows outside ``where`` may hold anything, even NaN).
      where: bool (or 0/1 float) [B], the real rows; None = all.
      weights: optional float, broadcastable to [B, D] (e.g. [D] per dimension, [B, 1] per row).
      reduce_fn: `reduction.weighted_mean` (default), `reduction.weighted_sum`, or None for the [B, D] values.

    Returns:
      (loss, {"mse": weighted mean of l, "mae": weighted mean of |s - y|}), the diagnostics whatever ``reduce_fn``.

    >>> import jax.numpy as jnp
    >>> scores = jnp.array([[0.5, 0.5], [0.9, 0.1], [0.0, 0.0]])
    >>> labels = jnp.array([[0.7, 0.5], [0.9, 0.3], [jnp.nan, jnp.nan]])  # the third row is padding
    >>> loss, diagnostics = masked_mse(scores, labels, where=jnp.array([True, True, False]))
    >>> round(float(loss), 6), round(float(diagnostics["mae"]), 6)  # (0.04 + 0.04) / 4, (0.2 + 0.2) / 4
    (0.02, 0.1)
    """
    scores = at_least_float32(scores)  # float32 whatever the compute dtype
    valid = valid_entries(where, scores.shape[:1])[:, None]
    diff = jnp.where(valid, scores - labels, 0.0)  # where, not *: padding labels may be NaN
    squared = diff**2
    loss = reduce_loss(squared, where=valid, weights=weights, reduce_fn=reduce_fn)
    return loss, {"mse": weighted_mean(squared, where=valid, weights=weights),
                  "mae": weighted_mean(jnp.abs(diff), where=valid, weights=weights)}
