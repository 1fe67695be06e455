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


def masked_cross_entropy(
    logits: jax.Array, labels: jax.Array, mask: jax.Array
) -> tuple[jax.Array, dict[str, jax.Array]]:
    """Softmax cross-entropy of a classifier over real rows: sum_i m_i (lse(logits_i) - logits_i[c_i]) / sum_i m_i.

    Args: logits float [B, C]; labels int [B] class ids in [0, C) (anything, e.g. -1, on padding rows); mask float
    [B] (0 = padding). Returns (loss, {"cross_entropy", "accuracy": share of real rows whose argmax is the label,
    "rows": number of real rows}); 0 when no row is real.
    """
    real = mask > 0
    labels = jnp.where(real, labels, 0)
    per_row = optax.softmax_cross_entropy_with_integer_labels(logits, labels)
    rows = jnp.sum(real.astype(logits.dtype))
    denominator = jnp.maximum(rows, 1.0)
    loss = jnp.sum(jnp.where(real, per_row, 0.0)) / denominator
    accuracy = jnp.sum(real & (jnp.argmax(logits, axis=-1) == labels)) / denominator
    return loss, {"cross_entropy": loss, "accuracy": accuracy, "rows": rows}


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


def update_moments(moments: Moments, z: jax.Array, labels: jax.Array, mask: jax.Array, *, decay: float) -> Moments:
    """``decay`` x ``moments`` + the sums of this batch's real rows (through stop_gradient): after t batches of n
    rows a batch k steps back weighs decay^k, so the moments describe about n / (1 - decay) recent rows.

    Args: moments of width E and C classes; z float [B, E]; labels int [B] in [0, C) (anything on padding rows);
    mask float [B] (0 = padding); decay in [0, 1). Returns the updated `Moments`.
    """
    batch = _batch_moments(jax.lax.stop_gradient(z), labels, mask, moments.y.shape[0])
    return Moments(*(decay * old + new for old, new in zip(moments, batch)))


def _batch_moments(z: jax.Array, labels: jax.Array, mask: jax.Array, num_classes: int) -> Moments:
    real = mask > 0
    z = jnp.where(real[:, None], z.astype(jnp.float32), 0.0)
    y = _one_hot(labels, real, num_classes)
    return Moments(jnp.sum(real.astype(jnp.float32)), jnp.sum(z, axis=0), jnp.sum(y, axis=0), z.T @ z, z.T @ y)


def least_squares_adversary_loss(
    z: jax.Array, labels: jax.Array, mask: jax.Array, num_classes: int, *, ridge: float = 1e-3,
    moments: Moments | None = None,
) -> tuple[jax.Array, dict[str, jax.Array]]:
    """A linear classifier of ``labels`` from ``z`` fitted in closed form: 1 - R^2 of its fit on this batch.

    The classifier is the ridge least-squares regression of the one-hot labels on the standardised features,
    fitted to the rows of ``moments`` (`update_moments`: a window of recent batches, this one included) or, when
    ``moments`` is None, to this batch alone. With mu_z, mu_y the fitted rows' means, C_zz, C_zy their covariances,
    D = diag(C_zz)^(-1/2) (the standardisation) and

        W* = (D C_zz D + ridge I)^-1 D C_zy                  (argmin_W E||y - mu_y - (z - mu_z) D W||^2 + ridge ||W||^2)
        loss = sum_batch ||y - mu_y - (z - mu_z) D W*||^2 / sum_batch ||y - mu_y||^2 = 1 - R^2

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

    Args: z float [B, E]; labels int [B] class ids in [0, num_classes) (anything on padding rows); mask float [B]
    (0 = padding); ridge > 0 on the standardised features; moments: `Moments` of width E and num_classes classes.
    Returns (loss, {"r2": 1 - loss, "accuracy": share of real rows whose largest fitted value is their label}); the
    loss is 1 when the batch's real rows hold a single class (nothing to read).
    """
    real = mask > 0
    rows = jnp.maximum(jnp.sum(real.astype(jnp.float32)), 1.0)
    y = _one_hot(labels, real, num_classes)
    # a batch's own moments stay differentiable (exact envelope gradient); a window's are constants
    fit = (_batch_moments(z, labels, mask, num_classes) if moments is None
           else jax.tree.map(jax.lax.stop_gradient, moments))
    weight = jnp.maximum(fit.weight, 1e-12)
    mean_z, mean_y = fit.z / weight, fit.y / weight
    cov_zz = fit.zz / weight - jnp.outer(mean_z, mean_z)
    cov_zy = fit.zy / weight - jnp.outer(mean_z, mean_y)
    scale = jax.lax.rsqrt(jnp.maximum(jnp.diagonal(cov_zz), 1e-12))  # a constant feature is left at 0
    gram = cov_zz * scale[:, None] * scale[None, :] + ridge * jnp.eye(z.shape[1], dtype=jnp.float32)
    weights = jax.lax.stop_gradient(jnp.linalg.solve(gram, scale[:, None] * cov_zy))  # [E, C]
    features = jnp.where(real[:, None], (z.astype(jnp.float32) - mean_z) * scale, 0.0)
    target = jnp.where(real[:, None], y - mean_y, 0.0)
    residual = jnp.sum(jnp.where(real[:, None], target - features @ weights, 0.0) ** 2)
    single = jnp.sum(jnp.sum(y, axis=0) > 0) < 2
    loss = jnp.where(single, 1.0, residual / jnp.maximum(jnp.sum(target**2), 1e-12))
    predicted = jnp.argmax(features @ weights + mean_y, axis=-1)
    accuracy = jnp.sum(real & (predicted == jnp.where(real, labels, 0))) / rows
    return loss, {"r2": 1.0 - loss, "accuracy": accuracy}


def _standardise(z: jax.Array, real: jax.Array, rows: jax.Array) -> jax.Array:
    """Columns of z [B, E] centred and scaled to unit variance over the real rows (padding rows set to 0)."""
    z = jnp.where(real[:, None], z, 0.0)
    centred = jnp.where(real[:, None], z - jnp.sum(z, axis=0) / rows, 0.0)
    variance = jnp.sum(centred**2, axis=0) / rows
    # rsqrt of a clamped variance: a constant column (variance 0) becomes 0, with a finite gradient
    return centred * jax.lax.rsqrt(jnp.maximum(variance, 1e-12))


def orthogonality_penalty(
    z_piece: jax.Array, z_style: jax.Array, mask: jax.Array, *, kind: str = "cross_correlation"
) -> jax.Array:
    """How much z_piece and z_style share, over the real rows of a batch (0 = nothing).

    cross_correlation (default): with each column of z_piece [B, Ep] and z_style [B, Es] centred and scaled to unit
      variance over the n real rows, C = Zp^T Zs / n [Ep, Es] holds the Pearson correlation of every piece feature
      with every style feature, and the penalty is ||C||_F^2 / (Ep Es), the mean squared correlation, in [0, 1]. It
      is 0 exactly when the centred feature columns span orthogonal subspaces of R^n (no style feature linearly
      tracks a piece feature), whatever bases the two encoders use. For independent features it is about 1 / n,
      not 0 (sampling noise), so compare it across runs at one batch size.
    cosine: mean over real rows of cos^2(z_piece_i, z_style_i) (needs Ep = Es): 0 when every row's two embeddings are
      orthogonal, e.g. when they lie in orthogonal subspaces of one shared space.

    Args: z_piece float [B, Ep]; z_style float [B, Es]; mask float [B] (0 = padding). Returns a float32 scalar.
    """
    if kind not in ORTHOGONALITY_KINDS:
        raise ValueError(f"orthogonality_penalty: kind must be one of {ORTHOGONALITY_KINDS}, got {kind!r}")
    real = mask > 0
    rows = jnp.maximum(jnp.sum(real.astype(jnp.float32)), 1.0)
    if kind == "cosine":
        if z_piece.shape != z_style.shape:
            raise ValueError(
                f"orthogonality_penalty: cosine needs equal widths, got {z_piece.shape} and {z_style.shape}")
        dot = jnp.sum(z_piece * z_style, axis=-1)
        norms = jnp.sum(z_piece**2, axis=-1) * jnp.sum(z_style**2, axis=-1)
        cos2 = dot**2 / jnp.maximum(norms, 1e-12)
        return jnp.sum(jnp.where(real, cos2, 0.0)) / rows
    correlation = _standardise(z_piece, real, rows).T @ _standardise(z_style, real, rows) / rows
    return jnp.mean(correlation**2)


def between_group_share(z: jax.Array, mask: jax.Array) -> jax.Array:
    """Share of the variance of z that lies between the group slots of a [P, K] batch (the style "spread" term).

    With the real rows' overall mean mu, each slot's mean mu_p and n real rows,
        total  = (1/n) sum_{p,k real} ||z_pk - mu||^2
        within = (1/n) sum_{p,k real} ||z_pk - mu_p||^2
        share  = 1 - within / total   in [0, 1]
    Minimising it spreads z_style inside each group relative to its spread across groups (0: the group means
    coincide, nothing of the piece is left; 1: all members of a group share one embedding). It is scale-free (an
    encoder cannot lower it by shrinking or inflating z) and equals, on the batch, the "between-group share of
    variance" disentanglement metric. Slots are the groups: two slots holding parts of one group count as two.

    Args: z float [P, K, E]; mask float [P, K] (0 = padding). Returns a float32 scalar (0 when the batch has no
    spread at all).
    """
    real = (mask > 0)[..., None]
    z = jnp.where(real, z, 0.0)
    count = jnp.sum(real.astype(jnp.float32))
    mean = jnp.sum(z, axis=(0, 1)) / jnp.maximum(count, 1.0)
    slot_count = jnp.sum(real.astype(jnp.float32), axis=1, keepdims=True)
    slot_mean = jnp.sum(z, axis=1, keepdims=True) / jnp.maximum(slot_count, 1.0)
    total = jnp.sum(jnp.where(real, (z - mean) ** 2, 0.0))
    within = jnp.sum(jnp.where(real, (z - slot_mean) ** 2, 0.0))
    return jnp.where(total > 1e-12, 1.0 - within / jnp.maximum(total, 1e-12), 0.0)


def within_group_variance_hinge(z: jax.Array, mask: jax.Array, *, target_std: float) -> jax.Array:
    """Alternative spread term (VICReg's variance hinge, inside groups): mean over the slots with >= 2 real rows and
    over the E features of max(0, target_std - sqrt(var_within + 1e-4)), where var_within is the feature's
    (biased) variance among the slot's real rows. Keeps z_style from collapsing to one point per group; unlike
    `between_group_share` it depends on the scale of z, so pick ``target_std`` for the embedding's scale
    (e.g. about 1/sqrt(E) for unit-norm rows).

    Args: z float [P, K, E]; mask float [P, K]. Returns a float32 scalar (0 when no slot has two real rows).
    """
    real = (mask > 0)[..., None]
    slot_count = jnp.sum(real.astype(jnp.float32), axis=1)  # [P, 1]
    slot_mean = jnp.sum(jnp.where(real, z, 0.0), axis=1, keepdims=True) / jnp.maximum(slot_count[:, None], 1.0)
    variance = jnp.sum(jnp.where(real, (z - slot_mean) ** 2, 0.0), axis=1) / jnp.maximum(slot_count, 1.0)  # [P, E]
    hinge = jax.nn.relu(target_std - jnp.sqrt(variance + 1e-4))
    eligible = (slot_count >= 2).astype(jnp.float32)  # [P, 1]
    return jnp.sum(hinge * eligible) / jnp.maximum(jnp.sum(eligible) * z.shape[-1], 1.0)
