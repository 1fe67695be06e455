"""Pointwise regression losses on label means (the baseline's objective)."""

from __future__ import annotations

import jax
import jax.numpy as jnp


def masked_mse(scores: jax.Array, labels: jax.Array, mask: jax.Array) -> tuple[jax.Array, dict[str, jax.Array]]:
    """Mean squared error over real rows and all dimensions.

    loss = sum_i m_i * sum_d (s_id - y_id)^2 / (D * max(sum_i m_i, 1))

    Args:
      scores: float32 [B, D] predictions (sigmoid outputs for the baseline).
      labels: float32 [B, D] label means in [0, 1].
      mask: float32 [B], 1 for real rows, 0 for padding (ignored, whatever their values).

    Returns:
      (scalar loss, {"mse": loss, "mae": mean absolute error on the same rows}).
    """
    mask = mask.astype(scores.dtype)[:, None]
    count = jnp.maximum(jnp.sum(mask), 1.0) * scores.shape[-1]
    diff = jnp.where(mask > 0, scores - labels, 0.0)  # where, not *: padding labels may be NaN
    loss = jnp.sum(diff**2) / count
    return loss, {"mse": loss, "mae": jnp.sum(jnp.abs(diff)) / count}
