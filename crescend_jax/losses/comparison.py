"""Pairwise comparison losses for a comparator that outputs logit P(a above b) per pair and dimension (approach B).

Pairs come from P groups x K performances batches laid out group-major (row r = p * K + k is member k of group slot
p), so every ordered same-group pair lives in a [P, K, K] tile of the batch: `block_pairs` gives the row indices and
the pair mask of that tile, and `block_comparison_loss` scores a comparator's [P, K, K, D] tile directly. No B x B
matrix is ever formed.
"""

from __future__ import annotations

from typing import NamedTuple

import jax
import jax.numpy as jnp
import optax

from crescend_jax.losses.ranking import agreement_weights, pair_weights
from crescend_jax.losses.reduction import (
    ReduceFn,
    at_least_float32,
    reduce_loss,
    valid_entries,
    weighted_mean,
)

KINDS = ("bce", "logistic_margin", "hinge")


class BlockPairs(NamedTuple):
    """All ordered same-group pairs of a group-major batch, as [P, K, K] tiles.

    first[p, i, j] = p * K + i and second[p, i, j] = p * K + j (int32 row indices into the [P * K] batch);
    mask[p, i, j] is True when i != j and both rows are real. ``first.reshape(-1)`` etc. is the flat pair list
    [P * K * K] (the diagonal and padding included, masked out).
    """

    first: jax.Array
    second: jax.Array
    mask: jax.Array


def block_pairs(row_mask: jax.Array, group_size: int) -> BlockPairs:
    """The ordered pairs of the [P, K, K] tiles of a batch of B = P * K rows (see `BlockPairs`).

    Args:
      row_mask: float or bool [B], nonzero for real rows, 0 for padding; B a multiple of ``group_size``.
      group_size: K (static).
    """
    if row_mask.ndim != 1 or row_mask.shape[0] % group_size:
        raise ValueError(f"block_pairs: row_mask must be [P * K] with K = {group_size}, got shape {row_mask.shape}")
    num_groups = row_mask.shape[0] // group_size
    rows = jnp.arange(num_groups * group_size, dtype=jnp.int32).reshape(num_groups, group_size)
    first = jnp.broadcast_to(rows[:, :, None], (num_groups, group_size, group_size))
    second = jnp.broadcast_to(rows[:, None, :], (num_groups, group_size, group_size))
    real = (row_mask > 0).reshape(num_groups, group_size)
    off_diagonal = ~jnp.eye(group_size, dtype=bool)
    return BlockPairs(first, second, real[:, :, None] & real[:, None, :] & off_diagonal)


def comparison_loss(
    logits: jax.Array,
    label_gap: jax.Array,
    *,
    where: jax.Array | None = None,
    weights: jax.Array | None = None,
    reduce_fn: ReduceFn | None = weighted_mean,
    std_a: jax.Array | None = None,
    std_b: jax.Array | None = None,
    kind: str = "bce",
    margin: float = 1.0,
    min_label_gap: float = 0.0,
    label_smoothing: float = 0.0,
) -> tuple[jax.Array, dict[str, jax.Array]]:
    """Loss of comparator logits x = logit P(a above b) against the sign of the label gap g = y_a - y_b.

    An entry (pair n, dimension d) qualifies when where[n] and |g| > min_label_gap (ties and near-ties are
    skipped). With s = sign(g) and the oriented logit u = s * x (positive = the comparator orders the pair like the
    labels), each qualifying entry costs

        bce:              l = BCE(u, 1 - eps / 2) = (1 - eps/2) softplus(-u) + (eps/2) softplus(u)
        logistic_margin:  l = BCE(u - margin, 1 - eps / 2)  (logistic loss that keeps pushing until u > margin)
        hinge:            l = max(0, margin - u)            (label_smoothing is ignored)

    with eps = label_smoothing (the target 1 becomes 1 - eps/2, i.e. P(a above b) = 1 - eps/2). Because
    BCE(u, t) = BCE(-u, 1 - t), the loss of (a, b) and of (b, a) are equal for an antisymmetric comparator, so
    feeding both orientations only counts each unordered pair twice (the mean is unchanged). An entry weighs
    w = a * v, with a = `agreement_weights`(g, std_a, std_b) (rater agreement, as approach A's ranking loss; no
    gradient) when both stds are given, else 1, and v the pair ``weights`` (else 1). The default reduction is

        loss = sum w l / max(sum w, 1e-6)   over the qualifying entries, 0 when none qualifies.

    Args:
      logits: float [..., D] comparator logits (any leading shape: a pair list [N] or tiles [P, K, K]).
      label_gap: float [..., D] label mean differences y_a - y_b (NaN allowed outside ``where``).
      where: bool (or 0/1 float) [...], the real pairs; None = all.
      weights: optional float pair weights, broadcastable to [..., D].
      reduce_fn: `reduction.weighted_mean` (default), `reduction.weighted_sum`, or None for the [..., D] values.
      std_a, std_b: optional float [..., D] rater standard deviations of a and b (0 where unknown).
      kind: one of KINDS. margin: the margin of "logistic_margin" and "hinge" (on the logit scale).
      min_label_gap: label gaps at or below this are skipped. label_smoothing: eps in [0, 1).

    Returns:
      (loss, {"compare_loss": the weighted mean of l, "compare_pairs": number of qualifying (pair, dimension)
      entries, "compare_accuracy": w-weighted share of them with u > 0, "compare_mean_abs_logit": mean |x| over
      them}), the diagnostics whatever ``reduce_fn``.

    >>> import jax.numpy as jnp
    >>> logits = jnp.array([[2.0], [2.0], [5.0]])  # logit P(a above b) for 3 pairs, one dimension
    >>> gap = jnp.array([[0.3], [-0.3], [0.0]])  # a above b, b above a, a tie (skipped)
    >>> loss, diagnostics = comparison_loss(logits, gap, kind="hinge", margin=1.0)
    >>> float(loss), float(diagnostics["compare_pairs"]), float(diagnostics["compare_accuracy"])  # (0 + 3) / 2
    (1.5, 2.0, 0.5)
    """
    logits = at_least_float32(logits)  # float32 whatever the compute dtype
    if kind not in KINDS:
        raise ValueError(f"comparison_loss: kind must be one of {KINDS}, got {kind!r}")
    if not 0.0 <= label_smoothing < 1.0:
        raise ValueError(f"comparison_loss: label_smoothing must be in [0, 1), got {label_smoothing}")
    real = jnp.broadcast_to(valid_entries(where, logits.shape[:-1])[..., None], logits.shape)
    gap = jnp.where(real, label_gap, 0.0)
    qualifies = real & (jnp.abs(gap) > min_label_gap)
    oriented = jnp.where(gap > 0, logits, -logits)
    if kind == "hinge":
        per_entry = jax.nn.relu(margin - oriented)
    else:
        shifted = oriented - margin if kind == "logistic_margin" else oriented
        per_entry = optax.sigmoid_binary_cross_entropy(shifted, jnp.full_like(shifted, 1.0 - label_smoothing / 2))
    weight = None if weights is None else jnp.asarray(weights, logits.dtype)
    if std_a is not None and std_b is not None:
        std_a = jnp.where(real, std_a, 0.0)
        std_b = jnp.where(real, std_b, 0.0)
        agreement = jax.lax.stop_gradient(agreement_weights(gap, std_a, std_b))
        weight = agreement if weight is None else agreement * weight
    loss = reduce_loss(per_entry, where=qualifies, weights=weight, reduce_fn=reduce_fn)
    count = jnp.sum(qualifies.astype(logits.dtype))
    diagnostics = {
        "compare_loss": weighted_mean(per_entry, where=qualifies, weights=weight),
        "compare_pairs": count,
        "compare_accuracy": weighted_mean((oriented > 0).astype(logits.dtype), where=qualifies, weights=weight),
        "compare_mean_abs_logit": jnp.sum(jnp.where(qualifies, jnp.abs(logits), 0.0)) / jnp.maximum(count, 1.0),
    }
    return loss, diagnostics


def block_comparison_loss(
    logits: jax.Array,
    labels: jax.Array,
    *,
    where: jax.Array | None = None,
    weights: jax.Array | None = None,
    reduce_fn: ReduceFn | None = weighted_mean,
    label_std: jax.Array | None = None,
    **options,
) -> tuple[jax.Array, dict[str, jax.Array]]:
    """`comparison_loss` over every ordered pair of each group slot, from the comparator's [P, K, K, D] tile.

    logits[p, i, j, d] = logit P(member i above member j) on dimension d; the label gaps are the tile
    labels[p, i, d] - labels[p, j, d] and the pairs are i != j with both members real (as `block_pairs`).

    Args:
      logits: float [P, K, K, D]. labels: float [P, K, D] label means (NaN allowed outside ``where``).
      where: bool (or 0/1 float) [P, K], the real performances; None = all.
      weights: optional float [P, K] or [P, K, D] member weights (a pair weighs the product of its members').
      reduce_fn: as `comparison_loss` (None: the [P, K, K, D] values).
      label_std: optional float [P, K, D] (enables agreement weights).
      **options: kind, margin, min_label_gap, label_smoothing of `comparison_loss`.

    >>> import jax.numpy as jnp
    >>> logits = jnp.array([[[[0.0], [3.0]], [[-3.0], [0.0]]]])  # one block of 2, antisymmetric
    >>> labels = jnp.array([[[0.8], [0.2]]])
    >>> loss, diagnostics = block_comparison_loss(logits, labels, kind="hinge", margin=1.0)
    >>> float(loss), float(diagnostics["compare_pairs"])  # both orientations, each past the margin
    (0.0, 2.0)
    """
    logits = at_least_float32(logits)  # float32 whatever the compute dtype
    num_groups, group_size = labels.shape[:2]
    if logits.shape[:3] != (num_groups, group_size, group_size):
        raise ValueError(f"block_comparison_loss: logits {logits.shape} must be [P, K, K, D] for labels "
                         f"{labels.shape} [P, K, D]")
    real = valid_entries(where, (num_groups, group_size))
    labels = jnp.where(real[..., None], labels, 0.0)
    pair_mask = block_pairs(real.reshape(-1), group_size).mask
    gap = labels[:, :, None, :] - labels[:, None, :, :]
    stds = {}
    if label_std is not None:
        label_std = jnp.where(real[..., None], label_std, 0.0)
        stds = {"std_a": jnp.broadcast_to(label_std[:, :, None, :], logits.shape),
                "std_b": jnp.broadcast_to(label_std[:, None, :, :], logits.shape)}
    return comparison_loss(logits, gap, where=pair_mask, weights=pair_weights(weights), reduce_fn=reduce_fn,
                           **stds, **options)
