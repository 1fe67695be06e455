"""Within-group pairwise margin ranking on batches laid out as P groups x K performances.

Pairs are only formed inside a group (identical music), so the pair tensor is [P, K, K, D], never [B, B].
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
from jax.scipy.special import ndtr

from crescend_jax.losses.reduction import (
    ReduceFn,
    at_least_float32,
    reduce_loss,
    valid_entries,
    weighted_mean,
    weighted_sum,
)


def agreement_weights(gap: jax.Array, std_i: jax.Array, std_j: jax.Array) -> jax.Array:
    """Confidence that raters order a pair like its means: w = 2 * Phi(|gap| / sqrt(std_i^2 + std_j^2)) - 1.

    If one rater's ratings are r ~ N(mean, std^2), Phi(...) is the chance that a rater ranks the pair like the means,
    so w is in [0, 1]: 0 for a coin flip, 1 for a certain order (also when both stds are 0, i.e. unknown).
    All arguments broadcast together; returns their broadcast shape.
    """
    spread = jnp.sqrt(std_i**2 + std_j**2)
    z = jnp.abs(gap) / jnp.maximum(spread, 1e-12)
    return 2.0 * ndtr(z) - 1.0


def pair_weights(weights: jax.Array | None) -> jax.Array | None:
    """Per-item weights [P, K] or [P, K, D] -> pair weights w[p, i] * w[p, j], [P, K, K, 1] or [P, K, K, D]."""
    if weights is None:
        return None
    weights = jnp.asarray(weights)
    if weights.ndim == 2:
        weights = weights[..., None]
    return weights[:, :, None, :] * weights[:, None, :, :]


def margin_ranking_loss(
    scores: jax.Array,
    labels: jax.Array,
    *,
    where: jax.Array | None = None,
    weights: jax.Array | None = None,
    reduce_fn: ReduceFn | None = weighted_mean,
    label_std: jax.Array | None = None,
    margin: float = 0.2,
    min_label_gap: float = 0.0,
) -> tuple[jax.Array, dict[str, jax.Array]]:
    """Margin ranking over every ordered same-group pair and every dimension.

    For group p, performances i != j, dimension d with gap g = y[p,i,d] - y[p,j,d] > min_label_gap (each unordered
    pair once, as its higher-label member i):
        l[p,i,j,d] = max(0, margin - (s[p,i,d] - s[p,j,d]))
    over real pairs (where[p,i] and where[p,j]); pairs with |g| <= min_label_gap (too close to call) are skipped.
    A pair weighs w = a * v[p,i] v[p,j], with a = `agreement_weights`(g, std_i, std_j) (no gradient) when
    ``label_std`` is given, else 1, and v the item ``weights`` (else 1). The default reduction is
        loss = sum w l / max(sum w, 1e-6)
    over the qualifying pairs, 0 when none qualifies.

    Args:
      scores: float32 [P, K, D] model scores.
      labels: float32 [P, K, D] label means (performances outside ``where`` may hold anything, even NaN).
      where: bool (or 0/1 float) [P, K], the real performances; None = all.
      weights: optional float [P, K] or [P, K, D] item weights (a pair weighs the product of its two items').
      reduce_fn: `reduction.weighted_mean` (default), `reduction.weighted_sum`, or None for the [P, K, K, D] values.
      label_std: optional float32 [P, K, D] rater standard deviations (0 where unknown): agreement weights.
      margin: hinge margin on the score difference.
      min_label_gap: label gaps at or below this are not ranked.

    Returns:
      (loss, {"rank_loss": the weighted mean of l, "rank_pairs": sum w over the qualifying pairs, "rank_accuracy":
      w-weighted share of them with s_i > s_j}), the diagnostics whatever ``reduce_fn``.

    >>> import jax.numpy as jnp
    >>> scores = jnp.array([[[1.0], [0.9], [2.0]]])  # one group of 3 performances, one dimension
    >>> labels = jnp.array([[[0.9], [0.5], [0.1]]])
    >>> loss, diagnostics = margin_ranking_loss(scores, labels, margin=0.2)
    >>> round(float(loss), 6)  # pairs (0, 1), (0, 2), (1, 2): (0.1 + 1.2 + 1.3) / 3
    0.866667
    >>> float(diagnostics["rank_pairs"]), round(float(diagnostics["rank_accuracy"]), 6)
    (3.0, 0.333333)
    """
    scores = at_least_float32(scores)  # float32 whatever the compute dtype
    real = valid_entries(where, scores.shape[:2])
    labels = jnp.where(real[..., None], labels, 0.0)
    gap = labels[:, :, None, :] - labels[:, None, :, :]  # [P, K, K, D]: y_i - y_j
    diff = scores[:, :, None, :] - scores[:, None, :, :]  # [P, K, K, D]: s_i - s_j
    pair_real = real[:, :, None] & real[:, None, :]  # [P, K, K]; i == j has gap 0 and never qualifies
    qualifies = pair_real[..., None] & (gap > min_label_gap)
    weight = pair_weights(weights)
    if label_std is not None:
        label_std = jnp.where(real[..., None], label_std, 0.0)
        agreement = jax.lax.stop_gradient(
            agreement_weights(gap, label_std[:, :, None, :], label_std[:, None, :, :]))
        weight = agreement if weight is None else agreement * weight
    hinge = jax.nn.relu(margin - diff)
    loss = reduce_loss(hinge, where=qualifies, weights=weight, reduce_fn=reduce_fn)
    total = weighted_sum(jnp.ones_like(hinge), where=qualifies, weights=weight)
    return loss, {"rank_loss": weighted_mean(hinge, where=qualifies, weights=weight), "rank_pairs": total,
                  "rank_accuracy": weighted_mean((diff > 0).astype(hinge.dtype), where=qualifies, weights=weight)}
