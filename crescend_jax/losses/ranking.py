"""Within-group pairwise margin ranking on batches laid out as P groups x K performances.

Pairs are only formed inside a group (identical music), so the pair tensor is [P, K, K, D], never [B, B].
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
from jax.scipy.special import ndtr


def agreement_weights(gap: jax.Array, std_i: jax.Array, std_j: jax.Array) -> jax.Array:
    """Confidence that raters order a pair like its means: w = 2 * Phi(|gap| / sqrt(std_i^2 + std_j^2)) - 1.

    If one rater's ratings are r ~ N(mean, std^2), Phi(...) is the chance that a rater ranks the pair like the means,
    so w is in [0, 1]: 0 for a coin flip, 1 for a certain order (also when both stds are 0, i.e. unknown).
    All arguments broadcast together; returns their broadcast shape.
    """
    spread = jnp.sqrt(std_i**2 + std_j**2)
    z = jnp.abs(gap) / jnp.maximum(spread, 1e-12)
    return 2.0 * ndtr(z) - 1.0


def margin_ranking_loss(
    scores: jax.Array,
    labels: jax.Array,
    mask: jax.Array,
    label_std: jax.Array | None = None,
    *,
    margin: float = 0.2,
    min_label_gap: float = 0.0,
) -> tuple[jax.Array, dict[str, jax.Array]]:
    """Margin ranking over every ordered same-group pair and every dimension.

    For group p, performances i != j, dimension d with gap g = y[p,i,d] - y[p,j,d] > min_label_gap (each unordered
    pair once, as its higher-label member i):
        l[p,i,j,d] = max(0, margin - (s[p,i,d] - s[p,j,d]))
        loss = sum w * l / max(sum w, eps)
    over real pairs (mask[p,i] = mask[p,j] = 1), with w = `agreement_weights`(g, std_i, std_j) when ``label_std`` is
    given, else w = 1. Pairs with |g| <= min_label_gap (too close to call) are skipped.

    Args:
      scores: float32 [P, K, D] model scores.
      labels: float32 [P, K, D] label means (padding rows may hold anything, even NaN).
      mask: float32 [P, K], 1 for real performances, 0 for padding.
      label_std: optional float32 [P, K, D] rater standard deviations (0 where unknown).
      margin: hinge margin on the score difference.
      min_label_gap: label gaps at or below this are not ranked.

    Returns:
      (scalar loss, {"rank_loss", "rank_pairs": weighted pair count, "rank_accuracy": weighted share of pairs with
      s_i > s_j}); loss is 0 when no pair qualifies.
    """
    real = mask > 0
    labels = jnp.where(real[..., None], labels, 0.0)
    gap = labels[:, :, None, :] - labels[:, None, :, :]  # [P, K, K, D]: y_i - y_j
    diff = scores[:, :, None, :] - scores[:, None, :, :]  # [P, K, K, D]: s_i - s_j
    pair_real = real[:, :, None] & real[:, None, :]  # [P, K, K]; i == j has gap 0 and never qualifies
    qualifies = pair_real[..., None] & (gap > min_label_gap)
    if label_std is None:
        weight = qualifies.astype(scores.dtype)
    else:
        label_std = jnp.where(real[..., None], label_std, 0.0)
        agreement = agreement_weights(gap, label_std[:, :, None, :], label_std[:, None, :, :])
        weight = jnp.where(qualifies, jax.lax.stop_gradient(agreement), 0.0)
    hinge = jax.nn.relu(margin - diff)
    total = jnp.sum(weight)
    denominator = jnp.maximum(total, 1e-6)
    loss = jnp.sum(weight * hinge) / denominator
    accuracy = jnp.sum(weight * (diff > 0)) / denominator
    return loss, {"rank_loss": loss, "rank_pairs": total, "rank_accuracy": accuracy}
