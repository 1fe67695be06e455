"""Losses of the disentangling dual encoder (approach C): gradient reversal, its DANN schedule, the masked
composition cross-entropy, a closed-form least-squares adversary, an orthogonality penalty between z_piece and
z_style and a within-group spread term.

With an adversary a(.) classifying the composition c from z_style behind the reversal layer R_lambda,

    L_adv = CE(a(R_lambda(z_style)), c)

trains a to name the composition while the style encoder receives -lambda * dL_adv/dz_style, i.e. it is pushed to
make the composition unreadable from z_style (Ganin & Lempitsky 2015).
"""

from __future__ import annotations

from typing import NamedTuple

import jax
import jax.numpy as jnp
import optax

from crescend_jax.losses.reduction import (
    ReduceFn,
    at_least_float32,
    reduce_loss,
    valid_entries,
    weighted_mean,
)

SCHEDULES = ("dann", "constant")
ORTHOGONALITY_KINDS = ("cross_correlation", "cosine")


@jax.custom_vjp
def gradient_reversal(x: jax.Array, strength: jax.Array | float) -> jax.Array:
    """R_lambda(x) = x in the forward pass; the backward pass turns the incoming gradient g into -lambda * g.

    ``strength`` (lambda, a scalar, may be traced, e.g. from the step) receives no gradient (its cotangent is 0).
    """
    return x


def _reversal_fwd(x, strength):
    return x, strength


def _reversal_bwd(strength, g):
    return -jnp.asarray(strength, g.dtype) * g, None


gradient_reversal.defvjp(_reversal_fwd, _reversal_bwd)


def reversal_strength(
    step: jax.Array | int,
    num_steps: int,
    *,
    schedule: str = "dann",
    scale: float = 1.0,
    gamma: float = 10.0,
) -> jax.Array:
    """lambda at ``step`` of ``num_steps``: scale * (2 / (1 + exp(-gamma p)) - 1) with p = clip(step / num_steps, 0, 1)
    ("dann": 0 at the start, 2 / (1 + e^-5) - 1 = 0.98661 at p = 0.5 with gamma 10, 0.99991 at the end), or
    ``scale`` throughout ("constant"). float32 scalar; ``step`` may be traced."""
    if schedule not in SCHEDULES:
        raise ValueError(f"reversal_strength: schedule must be one of {SCHEDULES}, got {schedule!r}")
    if schedule == "constant":
        return jnp.float32(scale)
    progress = jnp.clip(jnp.asarray(step, jnp.float32) / max(num_steps, 1), 0.0, 1.0)
    return scale * (2.0 / (1.0 + jnp.exp(-gamma * progress)) - 1.0)


def _row_weights(where: jax.Array | None, weights: jax.Array | None, shape: tuple[int, ...]
                 ) -> tuple[jax.Array, jax.Array]:
    """(real: bool ``shape``, r: float32 ``shape`` = the row weights on real rows, 0 elsewhere; 1 when None)."""
    real = valid_entries(where, shape)
    if weights is None:
        return real, real.astype(jnp.float32)
    return real, jnp.where(real, jnp.broadcast_to(jnp.asarray(weights, jnp.float32), shape), 0.0)


def masked_cross_entropy(
    logits: jax.Array,
    labels: jax.Array,
    *,
    where: jax.Array | None = None,
    weights: jax.Array | None = None,
    reduce_fn: ReduceFn | None = weighted_mean,
) -> tuple[jax.Array, dict[str, jax.Array]]:
    """Softmax cross-entropy of a classifier per row, l_i = lse(logits_i) - logits_i[c_i], over the valid rows.

    With the default reduction, loss = sum_{i valid} w_i l_i / sum_{i valid} w_i (0 when no row is valid).

    Args:
      logits: float [B, C]. labels: int [B] class ids in [0, C) (anything, e.g. -1, outside ``where``).
      where: bool (or 0/1 float) [B], the real rows; None = all. weights: optional float [B] row weights.
      reduce_fn: `reduction.weighted_mean` (default), `reduction.weighted_sum`, or None for the [B] values.

    Returns:
      (loss, {"cross_entropy": the weighted mean of l, "accuracy": weighted share of valid rows whose argmax is the
      label, "rows": number of valid rows}), the diagnostics whatever ``reduce_fn``.

    >>> import jax.numpy as jnp
    >>> logits = jnp.array([[2.0, 0.0], [0.0, 2.0], [9.0, 9.0]])
    >>> loss, diagnostics = masked_cross_entropy(logits, jnp.array([0, 0, -1]), where=jnp.array([1, 1, 0]))
    >>> round(float(loss), 6), float(diagnostics["accuracy"])  # (softplus(-2) + softplus(2)) / 2 = 1 + softplus(-2)
    (1.126928, 0.5)
    """
    logits = at_least_float32(logits)  # float32 whatever the compute dtype
    real = valid_entries(where, labels.shape)
    labels = jnp.where(real, labels, 0)
    per_row = optax.softmax_cross_entropy_with_integer_labels(logits, labels)
    correct = (jnp.argmax(logits, axis=-1) == labels).astype(logits.dtype)
    loss = reduce_loss(per_row, where=real, weights=weights, reduce_fn=reduce_fn)
    return loss, {"cross_entropy": weighted_mean(per_row, where=real, weights=weights),
                  "accuracy": weighted_mean(correct, where=real, weights=weights),
                  "rows": jnp.sum(real.astype(logits.dtype))}


class Moments(NamedTuple):
    """Exponentially weighted sums over the rows seen so far (z [., E], one-hot labels y [., C]): ``weight`` (the
    sum of the row weights), ``z`` [E], ``y`` [C], ``zz`` [E, E] = sum w z z^T, ``zy`` [E, C] = sum w z y^T."""

    weight: jax.Array
    z: jax.Array
    y: jax.Array
    zz: jax.Array
    zy: jax.Array


def empty_moments(dim: int, num_classes: int) -> Moments:
    """`Moments` of no rows, for features of width ``dim`` and ``num_classes`` classes (float32 zeros)."""
    return Moments(jnp.zeros((), jnp.float32), jnp.zeros(dim, jnp.float32), jnp.zeros(num_classes, jnp.float32),
                   jnp.zeros((dim, dim), jnp.float32), jnp.zeros((dim, num_classes), jnp.float32))


def _one_hot(labels: jax.Array, real: jax.Array, num_classes: int) -> jax.Array:
    return jnp.where(real[:, None], jax.nn.one_hot(jnp.where(real, labels, 0), num_classes, dtype=jnp.float32), 0.0)


def update_moments(moments: Moments, z: jax.Array, labels: jax.Array, *, where: jax.Array | None = None,
                   weights: jax.Array | None = None, decay: float) -> Moments:
    """``decay`` x ``moments`` + the sums of this batch's real rows (through stop_gradient): after t batches of n
    rows a batch k steps back weighs decay^k, so the moments describe about n / (1 - decay) recent rows.

    Args: moments of width E and C classes; z float [B, E]; labels int [B] in [0, C) (anything outside ``where``);
    where bool (or 0/1 float) [B], the real rows (None = all); weights optional float [B] row weights; decay in
    [0, 1). Returns the updated `Moments`.
    """
    z = at_least_float32(z)  # float32 whatever the compute dtype
    real, rows = _row_weights(where, weights, labels.shape)
    batch = _batch_moments(jax.lax.stop_gradient(z), labels, real, rows, moments.y.shape[0])
    return Moments(*(decay * old + new for old, new in zip(moments, batch)))


def _batch_moments(z: jax.Array, labels: jax.Array, real: jax.Array, rows: jax.Array, num_classes: int) -> Moments:
    """`Moments` of the real rows of one batch, row i weighing rows[i]."""
    z = jnp.where(real[:, None], z.astype(jnp.float32), 0.0)
    y = _one_hot(labels, real, num_classes)
    weighted_z, weighted_y = rows[:, None] * z, rows[:, None] * y
    return Moments(jnp.sum(rows), jnp.sum(weighted_z, axis=0), jnp.sum(weighted_y, axis=0), weighted_z.T @ z,
                   weighted_z.T @ y)


def least_squares_adversary_loss(
    z: jax.Array, labels: jax.Array, *, where: jax.Array | None = None, weights: jax.Array | None = None,
    reduce_fn: ReduceFn | None = weighted_mean, num_classes: int, ridge: float = 1e-3,
    moments: Moments | None = None,
) -> tuple[jax.Array, dict[str, jax.Array]]:
    """A linear classifier of ``labels`` from ``z`` fitted in closed form: 1 - R^2 of its fit on this batch.

    The classifier is the ridge least-squares regression of the one-hot labels on the standardised features,
    fitted to the rows of ``moments`` (`update_moments`: a window of recent batches, this one included) or, when
    ``moments`` is None, to this batch alone (row i weighing w_i). With mu_z, mu_y the fitted rows' means, C_zz,
    C_zy their covariances, D = diag(C_zz)^(-1/2) (the standardisation), W* = (D C_zz D + ridge I)^-1 D C_zy
    (argmin_W E||y - mu_y - (z - mu_z) D W||^2 + ridge ||W||^2) and, for each valid row i of the batch,

        r_i = ||y_i - mu_y - (z_i - mu_z) D W*||^2,   t_i = ||y_i - mu_y||^2,
        l_i = r_i / (sum_j w_j t_j / sum_j w_j)       (row i's squared residual over the mean label variance)
        loss = sum w_i l_i / sum w_i = sum w r / sum w t = 1 - R^2   (the default reduction)

    is the share of this batch's label variance that the best linear read-out of z leaves unexplained (1: the labels
    are not linearly readable; 0: all of them are). W* is the adversary's best response to the rows it was fitted to,
    so it never lags behind the encoder the way a classifier trained by gradient steps does. W* is a constant for
    the gradient (stop_gradient), and so are mu and D of a window of moments: the gradient is that of a fixed linear
    adversary's loss. For a fit to this batch alone (moments None), mu and D stay functions of z and the gradient is
    exactly that of the minimised objective (envelope theorem: W* is optimal and the penalty does not depend on z).
    Behind `gradient_reversal` the encoder of z therefore *raises* 1 - R^2, removing linearly readable label
    information; the standardisation makes it scale-free.

    A fit to one batch needs many more real rows than features (with B <= E it interpolates the labels: R^2 = 1 and
    a zero gradient); a window of moments does not.

    Args:
      z: float [B, E]. labels: int [B] class ids in [0, num_classes) (anything outside ``where``).
      where: bool (or 0/1 float) [B], the real rows; None = all. weights: optional float [B] row weights (in the
        batch's fit and in the reduction).
      reduce_fn: `reduction.weighted_mean` (default: 1 - R^2), `reduction.weighted_sum`, or None for the [B] values l.
      num_classes: C. ridge: > 0, on the standardised features. moments: `Moments` of width E and C classes.

    Returns:
      (loss, {"r2": 1 - the weighted mean of l (0 when no row is valid), "accuracy": weighted share of valid rows
      whose largest fitted value is their label}); every l_i is 1 when the valid rows hold a single class (nothing
      to read), and the loss is 0 when no row is valid.

    >>> import jax.numpy as jnp
    >>> z = jnp.array([[1.0, 0.0], [1.1, 0.5], [-1.0, 0.2], [-0.9, -0.4], [0.0, 0.0]])
    >>> labels = jnp.array([0, 0, 1, 1, -1])  # readable from the first feature; the last row is padding
    >>> loss, diagnostics = least_squares_adversary_loss(z, labels, where=labels >= 0, num_classes=2)
    >>> round(float(loss), 3), float(diagnostics["accuracy"])  # 0.2% of the label variance left unexplained
    (0.002, 1.0)
    """
    z = at_least_float32(z)  # float32 whatever the compute dtype
    real, rows = _row_weights(where, weights, labels.shape)
    y = _one_hot(labels, real, num_classes)
    # a batch's own moments stay differentiable (exact envelope gradient); a window's are constants
    fit = (_batch_moments(z, labels, real, rows, num_classes) if moments is None
           else jax.tree.map(jax.lax.stop_gradient, moments))
    weight = jnp.maximum(fit.weight, 1e-12)
    mean_z, mean_y = fit.z / weight, fit.y / weight
    cov_zz = fit.zz / weight - jnp.outer(mean_z, mean_z)
    cov_zy = fit.zy / weight - jnp.outer(mean_z, mean_y)
    scale = jax.lax.rsqrt(jnp.maximum(jnp.diagonal(cov_zz), 1e-12))  # a constant feature is left at 0
    gram = cov_zz * scale[:, None] * scale[None, :] + ridge * jnp.eye(z.shape[1], dtype=jnp.float32)
    coefficients = jax.lax.stop_gradient(jnp.linalg.solve(gram, scale[:, None] * cov_zy))  # [E, C]
    features = jnp.where(real[:, None], (z.astype(jnp.float32) - mean_z) * scale, 0.0)
    target = jnp.where(real[:, None], y - mean_y, 0.0)
    residual = jnp.sum(jnp.where(real[:, None], target - features @ coefficients, 0.0) ** 2, axis=1)  # r [B]
    mean_variance = jnp.sum(rows * jnp.sum(target**2, axis=1)) / jnp.maximum(jnp.sum(rows), 1e-12)
    single = jnp.sum(jnp.sum(rows[:, None] * y, axis=0) > 0) < 2  # classes of the rows that weigh anything
    per_row = jnp.where(single, 1.0, residual / jnp.maximum(mean_variance, 1e-12))
    loss = reduce_loss(per_row, where=real, weights=weights, reduce_fn=reduce_fn)
    predicted = jnp.argmax(features @ coefficients + mean_y, axis=-1)
    correct = (predicted == jnp.where(real, labels, 0)).astype(jnp.float32)
    r2 = jnp.where(jnp.any(real), 1.0 - weighted_mean(per_row, where=real, weights=weights), 0.0)
    return loss, {"r2": r2, "accuracy": weighted_mean(correct, where=real, weights=weights)}


def _standardise(z: jax.Array, real: jax.Array, rows: jax.Array) -> jax.Array:
    """Columns of z [B, E] centred and scaled to unit variance over the real rows, row i weighing rows[i] (rows
    outside ``real`` set to 0)."""
    total = jnp.maximum(jnp.sum(rows), 1e-12)
    z = jnp.where(real[:, None], z, 0.0)
    centred = jnp.where(real[:, None], z - jnp.sum(rows[:, None] * z, axis=0) / total, 0.0)
    variance = jnp.sum(rows[:, None] * centred**2, axis=0) / total
    # rsqrt of a clamped variance: a constant column (variance 0) becomes 0, with a finite gradient
    return centred * jax.lax.rsqrt(jnp.maximum(variance, 1e-12))


def orthogonality_penalty(
    z_piece: jax.Array,
    z_style: jax.Array,
    *,
    where: jax.Array | None = None,
    weights: jax.Array | None = None,
    reduce_fn: ReduceFn | None = weighted_mean,
    kind: str = "cross_correlation",
) -> tuple[jax.Array, dict[str, jax.Array]]:
    """How much z_piece and z_style share, over the valid rows of a batch (0 = nothing), as a mean of per-row terms.

    cross_correlation (default): with each column of z_piece [B, Ep] and z_style [B, Es] centred and scaled to unit
      variance over the valid rows (row i weighing w_i), C = sum_i w_i p_i s_i^T / sum_i w_i [Ep, Es] holds the
      Pearson correlation of every piece feature with every style feature, and the penalty is ||C||_F^2 / (Ep Es),
      the mean squared correlation, in [0, 1]. As ||C||_F^2 = sum_i w_i p_i^T C s_i / sum_i w_i, it is the weighted
      mean of the rows' terms l_i = p_i^T C s_i / (Ep Es). It is 0 exactly when the centred feature columns span
      orthogonal subspaces of R^n (no style feature linearly tracks a piece feature), whatever bases the two
      encoders use. For independent features it is about 1 / n, not 0 (sampling noise), so compare it across runs
      at one batch size.
    cosine: l_i = cos^2(z_piece_i, z_style_i) (needs Ep = Es), the weighted mean over valid rows: 0 when every row's
      two embeddings are orthogonal, e.g. when they lie in orthogonal subspaces of one shared space.

    Args:
      z_piece: float [B, Ep]. z_style: float [B, Es].
      where: bool (or 0/1 float) [B], the real rows; None = all. weights: optional float [B] row weights (in the
        correlation and in the reduction).
      reduce_fn: `reduction.weighted_mean` (default: the penalty), `reduction.weighted_sum`, or None for the [B]
        values l.
      kind: one of ORTHOGONALITY_KINDS.

    Returns:
      (loss, {"orthogonality": the weighted mean of l, "orthogonality_max": the largest |C| entry (cross_correlation)
      or |cos| of a valid row (cosine)}), the diagnostics whatever ``reduce_fn``.

    >>> import jax.numpy as jnp
    >>> z_piece = jnp.array([[1.0, 0.0], [-1.0, 0.0], [0.0, 1.0], [0.0, -1.0]])
    >>> z_style = jnp.array([[0.0, 1.0], [0.0, -1.0], [1.0, 0.0], [-1.0, 0.0]])  # the two features swapped
    >>> loss, diagnostics = orthogonality_penalty(z_piece, z_style)
    >>> round(float(loss), 6), round(float(diagnostics["orthogonality_max"]), 6)  # C = [[0, 1], [1, 0]]
    (0.5, 1.0)
    >>> float(orthogonality_penalty(z_piece, z_style, kind="cosine")[0])  # every row's pair is orthogonal
    0.0
    """
    z_piece, z_style = at_least_float32(z_piece), at_least_float32(z_style)  # float32 whatever the compute dtype
    if kind not in ORTHOGONALITY_KINDS:
        raise ValueError(f"orthogonality_penalty: kind must be one of {ORTHOGONALITY_KINDS}, got {kind!r}")
    real, rows = _row_weights(where, weights, z_piece.shape[:1])
    if kind == "cosine":
        if z_piece.shape != z_style.shape:
            raise ValueError(
                f"orthogonality_penalty: cosine needs equal widths, got {z_piece.shape} and {z_style.shape}")
        dot = jnp.sum(z_piece * z_style, axis=-1)
        norms = jnp.sum(z_piece**2, axis=-1) * jnp.sum(z_style**2, axis=-1)
        per_row = jnp.where(real, dot**2 / jnp.maximum(norms, 1e-12), 0.0)
        largest = jnp.sqrt(jnp.max(per_row, initial=0.0))
    else:
        piece, style = _standardise(z_piece, real, rows), _standardise(z_style, real, rows)
        correlation = (rows[:, None] * piece).T @ style / jnp.maximum(jnp.sum(rows), 1e-12)
        per_row = jnp.sum((piece @ correlation) * style, axis=-1) / correlation.size
        largest = jnp.max(jnp.abs(correlation))
    loss = reduce_loss(per_row, where=real, weights=weights, reduce_fn=reduce_fn)
    return loss, {"orthogonality": weighted_mean(per_row, where=real, weights=weights), "orthogonality_max": largest}


def _slot_weights(where: jax.Array | None, weights: jax.Array | None, z: jax.Array
                  ) -> tuple[jax.Array, jax.Array, jax.Array]:
    """(real [P, K, 1] bool, r [P, K, 1] row weights (0 off real rows), z with rows off ``where`` set to 0)."""
    real, rows = _row_weights(where, weights, z.shape[:2])
    return real[..., None], rows[..., None], jnp.where(real[..., None], z, 0.0)


def between_group_share(
    z: jax.Array,
    *,
    where: jax.Array | None = None,
    weights: jax.Array | None = None,
    reduce_fn: ReduceFn | None = weighted_mean,
) -> tuple[jax.Array, dict[str, jax.Array]]:
    """Share of the variance of z that lies between the group slots of a [P, K] batch (the style "spread" term).

    With the valid rows' overall mean mu, each slot's mean mu_p (row weights w, 1 by default) and
        total  = sum_{p,k valid} w_pk ||z_pk - mu||^2,      within = sum_{p,k valid} w_pk ||z_pk - mu_p||^2
        l_pk   = (||z_pk - mu||^2 - ||z_pk - mu_p||^2) / (total / sum w)     (row pk's part of the between-slot spread)
        share  = sum w l / sum w = 1 - within / total   in [0, 1]   (the default reduction; 0 when total = 0)
    Minimising it spreads z_style inside each group relative to its spread across groups (0: the group means
    coincide, nothing of the piece is left; 1: all members of a group share one embedding). It is scale-free (an
    encoder cannot lower it by shrinking or inflating z) and equals, on the batch, the "between-group share of
    variance" disentanglement metric. Slots are the groups: two slots holding parts of one group count as two.

    Args:
      z: float [P, K, E]. where: bool (or 0/1 float) [P, K], the real rows; None = all.
      weights: optional float [P, K] row weights (in the means, the variances and the reduction).
      reduce_fn: `reduction.weighted_mean` (default: the share), `reduction.weighted_sum`, or None for the [P, K]
        values l.

    Returns:
      (loss, {"between_share": the weighted mean of l, "variance": total / sum w, the spread of z (0: collapsed)}),
      the diagnostics whatever ``reduce_fn``.

    >>> import jax.numpy as jnp
    >>> z = jnp.array([[[0.0], [2.0]], [[10.0], [12.0]]])  # two slots of two: means 1 and 11, overall 6
    >>> loss, diagnostics = between_group_share(z)
    >>> round(float(loss), 6), float(diagnostics["variance"])  # 1 - within / total = 1 - 4 / 104
    (0.961538, 26.0)
    """
    z = at_least_float32(z)  # float32 whatever the compute dtype
    real, rows, z = _slot_weights(where, weights, z)
    count = jnp.maximum(jnp.sum(rows), 1e-12)
    mean = jnp.sum(rows * z, axis=(0, 1)) / count
    slot_mean = jnp.sum(rows * z, axis=1, keepdims=True) / jnp.maximum(jnp.sum(rows, axis=1, keepdims=True), 1e-12)
    spread = jnp.sum(jnp.where(real, (z - mean) ** 2, 0.0), axis=-1)  # [P, K]
    within = jnp.sum(jnp.where(real, (z - slot_mean) ** 2, 0.0), axis=-1)
    total = jnp.sum(rows[..., 0] * spread)
    per_row = jnp.where(total > 1e-12, (spread - within) * count / jnp.maximum(total, 1e-12), 0.0)
    loss = reduce_loss(per_row, where=real[..., 0], weights=weights, reduce_fn=reduce_fn)
    return loss, {"between_share": weighted_mean(per_row, where=real[..., 0], weights=weights),
                  "variance": total / count}


def within_group_variance_hinge(
    z: jax.Array,
    *,
    where: jax.Array | None = None,
    weights: jax.Array | None = None,
    reduce_fn: ReduceFn | None = weighted_mean,
    target_std: float,
) -> tuple[jax.Array, dict[str, jax.Array]]:
    """Alternative spread term (VICReg's variance hinge, inside groups): for each slot p with >= 2 valid rows (of
    positive weight) and each feature e, l[p, e] = max(0, target_std - sqrt(var_pe + 1e-4)), where var_pe is the
    feature's (biased, row-weighted) variance among the slot's valid rows; the default reduction is the mean over
    those slots and the E features. Keeps z_style from collapsing to one point per group; unlike
    `between_group_share` it depends on the scale of z, so pick ``target_std`` for the embedding's scale
    (e.g. about 1/sqrt(E) for unit-norm rows).

    Args:
      z: float [P, K, E]. where: bool (or 0/1 float) [P, K], the real rows; None = all.
      weights: optional float [P, K] row weights (in the slot variances; the slots weigh 1 in the reduction).
      reduce_fn: `reduction.weighted_mean` (default), `reduction.weighted_sum`, or None for the [P, E] values l.
      target_std: the hinge's target standard deviation.

    Returns:
      (loss, {"variance_hinge": the mean of l, "slots": number of slots with >= 2 valid rows}), the diagnostics
      whatever ``reduce_fn``; 0 when no slot has two valid rows.

    >>> import jax.numpy as jnp
    >>> z = jnp.array([[[1.0], [-1.0]], [[0.5], [0.5]]])  # slot 0 spread (std 1), slot 1 collapsed (std 0)
    >>> loss, diagnostics = within_group_variance_hinge(z, target_std=0.5)
    >>> round(float(loss), 6), float(diagnostics["slots"])  # (0 + (0.5 - 0.01)) / 2
    (0.245, 2.0)
    """
    z = at_least_float32(z)  # float32 whatever the compute dtype
    real, rows, z = _slot_weights(where, weights, z)
    slot_weight = jnp.sum(rows, axis=1)  # [P, 1]
    slot_mean = jnp.sum(rows * z, axis=1, keepdims=True) / jnp.maximum(slot_weight[:, None], 1e-12)
    variance = jnp.sum(jnp.where(real, rows * (z - slot_mean) ** 2, 0.0), axis=1) / jnp.maximum(slot_weight, 1e-12)
    hinge = jax.nn.relu(target_std - jnp.sqrt(variance + 1e-4))  # [P, E]
    eligible = jnp.broadcast_to(jnp.sum(rows > 0, axis=1) >= 2, hinge.shape)
    loss = reduce_loss(hinge, where=eligible, weights=None, reduce_fn=reduce_fn)
    return loss, {"variance_hinge": weighted_mean(hinge, where=eligible),
                  "slots": jnp.sum(eligible[:, 0].astype(jnp.float32))}
