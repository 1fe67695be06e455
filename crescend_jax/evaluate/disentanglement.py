"""Disentanglement metrics: how much of the music (which piece) and of the playing (how) an embedding carries.

Every function takes plain arrays and returns numbers, so any approach that exposes embeddings (the raw input, the
baseline's hidden layer, approach C's ``z_piece`` and ``z_style``) is measured the same way. Shapes: N rows
(performances, or renders of them), D embedding width, C compositions, G same-music groups, F known factors.

- `composition_probe`: accuracy of a linear classifier of the composition, trained on some same-music groups and
  scored on *other* groups of the same compositions (`group_holdout_split` makes that split), beside chance (1 / C)
  and the majority-class rate. A probe cannot name a composition it never saw, so the held-out rows are new groups
  (new music of known compositions), never new compositions.
- `between_group_variance_share`: share of the total variance that lies between groups (or compositions), with its
  permutation null `variance_share_null`.
- `silhouette`: mean silhouette coefficient, computed in row tiles (never an N x N matrix for large N).
- `factor_probe_r2`: out-of-sample R^2 of a linear (ridge) probe of known factors, per factor.
- `pca_2d`, `plot_embeddings`: a 2-D picture per embedding coloured by composition.
- `disentanglement_metrics`, `disentanglement_table`: all of the above for named embeddings, as a JSON-ready dict
  and markdown table lines.

The composition probe is a multinomial logistic regression with an L2 penalty, the usual linear probe, fitted in
float64 by SciPy's L-BFGS-B (SciPy is already a dependency): the loss is convex and its predictions at the minimum
unique, the fit starts from zero weights and is deterministic, and on evaluation-sized problems float64 numpy needs
no per-shape compilation (a jitted optax L-BFGS would compile once per embedding width and run in float32). A
closed-form one-vs-rest ridge classifier was tried first and dropped: on planted data with few training groups per
composition it named the composition of new groups less often than the logistic model (0.86 against 0.94, nearest
class mean 0.975), because least squares on one-hot targets fits the indicator values, not the class boundaries.
The factor probe is a regression, where ridge is exactly right: solved in closed form by the project's ridge solver
(`evaluate.ridge.ridge_path`, through `ridge_predictions`), one eigendecomposition gives the fit for every strength
of `RIDGE_ALPHA_GRID` at once.
"""

from __future__ import annotations

import dataclasses
import math
import zlib
from pathlib import Path
from typing import Mapping, Sequence

import numpy as np
from scipy import optimize, special

from crescend_jax.evaluate.ridge import ridge_path, standardise

# Penalty strengths (on the per-row mean loss of standardised features; see `composition_probe`, `ridge_predictions`).
PROBE_ALPHA_GRID: tuple[float, ...] = tuple(float(a) for a in 10.0 ** np.arange(-5, 1))  # 1e-5 .. 1
DEFAULT_PROBE_ALPHA = 1e-3  # when no inner split is possible
RIDGE_ALPHA_GRID: tuple[float, ...] = tuple(float(a) for a in 10.0 ** np.arange(-4, 3))  # 1e-4 .. 100
DEFAULT_RIDGE_ALPHA = 1e-2  # shrinks a unit-variance direction by 1%
PROBE_MAX_ITERATIONS = 2000
DEFAULT_HOLDOUT_SHARE = 0.5  # share of each composition's groups held out by `group_holdout_split`
SILHOUETTE_BLOCK_ELEMENTS = 1 << 22  # distance entries per tile (32 MiB of float64)
SILHOUETTE_MAX_ROWS = 20_000  # `disentanglement_metrics` scores a seeded subset of rows above this


# --------------------------------------------------------------------------------------------------------------
# The group-preserving split


@dataclasses.dataclass(frozen=True)
class ProbeSplit:
    """Row indices (int64, ascending) of the probe's training and held-out rows; no group is in both."""

    train: np.ndarray
    eval: np.ndarray


def _composition_of_group(groups: np.ndarray, compositions: np.ndarray) -> dict[str, str]:
    pairs = np.unique(np.stack([groups.astype(str), compositions.astype(str)], axis=1), axis=0)
    names, counts = np.unique(pairs[:, 0], return_counts=True)
    if np.any(counts > 1):
        raise ValueError(f"group {names[counts > 1][0]!r} spans several compositions; a group is one piece of music")
    return dict(zip(pairs[:, 0].tolist(), pairs[:, 1].tolist()))


def group_holdout_split(
    groups: np.ndarray, compositions: np.ndarray, seed: int = 0, holdout_share: float = DEFAULT_HOLDOUT_SHARE
) -> ProbeSplit:
    """Holds out whole same-music groups inside every composition, for a probe scored on unseen groups.

    A composition with k >= 2 groups sends h = clip(round(holdout_share * k), 1, k - 1) of them (Python's round: half
    to even), drawn by a generator seeded with (seed, crc32(composition)), to ``eval`` and the rest to ``train``, so
    it is in both parts; a composition with one group stays whole in ``train`` (a probe cannot be scored on music
    it has no other group of). A group is never split. The draw for one composition does not depend on which other
    compositions exist.

    Args:
      groups: [N] group ids (any dtype; equal ids = identical music). compositions: [N], constant inside a group.
      seed: the draw. holdout_share: in (0, 1).
    Returns:
      `ProbeSplit` of row indices.
    """
    groups, compositions = np.asarray(groups), np.asarray(compositions)
    if groups.shape != compositions.shape or groups.ndim != 1:
        raise ValueError(f"groups {groups.shape} and compositions {compositions.shape} must be equal 1-D shapes")
    if not 0.0 < holdout_share < 1.0:
        raise ValueError(f"holdout_share={holdout_share} must lie in (0, 1)")
    composition_of = _composition_of_group(groups, compositions)
    by_composition: dict[str, list[str]] = {}
    for group in sorted(composition_of):
        by_composition.setdefault(composition_of[group], []).append(group)
    held_out: list[str] = []
    for composition, members in sorted(by_composition.items()):
        k = len(members)
        if k < 2:
            continue
        h = int(np.clip(round(holdout_share * k), 1, k - 1))
        rng = np.random.default_rng([seed, zlib.crc32(composition.encode())])
        held_out.extend(members[i] for i in rng.permutation(k)[:h])
    is_eval = np.isin(groups.astype(str), np.asarray(held_out, dtype=str))
    return ProbeSplit(train=np.flatnonzero(~is_eval), eval=np.flatnonzero(is_eval))


# --------------------------------------------------------------------------------------------------------------
# Ridge in closed form


def ridge_predictions(
    x_train: np.ndarray, y_train: np.ndarray, x_eval: np.ndarray, alphas: Sequence[float]
) -> np.ndarray:
    """Predictions of ridge regressions with an unpenalised intercept, one per strength in ``alphas``: float64
    [A, m, K] from x_train [n, D], y_train [n, K], x_eval [m, D].

    Features are standardised with the training rows' statistics (X below), targets centred on their training mean.
    The strengths are on the per-row mean loss, (1/n) ||X W - (Y - ybar)||^2 + alpha ||W||_F^2, i.e. the summed loss
    of `evaluate.ridge.ridge_path` (the solver) with its strength n * alpha.
    """
    alphas = np.asarray(alphas, np.float64)
    if np.any(alphas <= 0):
        raise ValueError(f"ridge strengths must be > 0, got {alphas.tolist()}")
    return ridge_path(x_train, y_train, x_eval, len(x_train) * alphas)


def _inner_split(groups: np.ndarray | None, compositions: np.ndarray | None, seed: int) -> ProbeSplit | None:
    """A group-preserving split of the probe's training rows for picking alpha, or None when it cannot exist."""
    if groups is None or compositions is None:
        return None
    split = group_holdout_split(groups, compositions, seed=seed + 1, holdout_share=DEFAULT_HOLDOUT_SHARE)
    return split if len(split.eval) and len(split.train) else None


# --------------------------------------------------------------------------------------------------------------
# 1. Composition probe


def _probe_features(x_train: np.ndarray, x_eval: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Standardised features (training statistics), reduced without loss to the training rows' span when D > n.

    With the standardised training rows X [n, D] = U S V^T (rank r <= n), an L2-penalised linear model's optimal
    weights lie in the row space of X (a component orthogonal to it leaves every training logit unchanged and only
    adds penalty), so W = V B with ||W||_F = ||B||_F, and the model on X V = U S [n, r] and X_eval V [m, r] is the
    same model. V comes from the eigendecomposition X X^T = U diag(S^2) U^T (directions with S^2 <= 1e-10 max
    dropped). Returns float64 [n, r'] and [m, r'] (r' = D when D <= n).
    """
    x_train, x_eval = standardise(np.asarray(x_train, np.float64), np.asarray(x_eval, np.float64))
    n, d = x_train.shape
    if d <= n:
        return x_train, x_eval
    eigenvalues, basis = np.linalg.eigh(x_train @ x_train.T)
    keep = eigenvalues > 1e-10 * max(float(eigenvalues[-1]), 1e-300)
    singular = np.sqrt(eigenvalues[keep])
    return basis[:, keep] * singular, (x_eval @ x_train.T) @ basis[:, keep] / singular


def logistic_predictions(
    x_train: np.ndarray, y_train: np.ndarray, x_eval: np.ndarray, alphas: Sequence[float], num_classes: int
) -> tuple[np.ndarray, bool]:
    """Held-out class predictions of L2-penalised multinomial logistic regressions, one per strength in ``alphas``.

    Features are standardised with the training rows' statistics (X below; see `_probe_features`). For each alpha,
    with logits L = X W + b (W [D, C], b [C] unpenalised),
      loss(W, b) = (1/n) sum_i [log sum_c exp(L_ic) - L_{i, y_i}] + alpha ||W||_F^2,
      d loss / dW = X^T (P - Y) / n + 2 alpha W,  d loss / db = mean_i (P_i - Y_i),  P = softmax(L), Y = one-hot,
    minimised by SciPy's L-BFGS-B in float64 (convex: strictly in W; b only up to a common shift, which changes no
    prediction). Strengths are fitted from the strongest down, each starting from the previous solution (the first
    from zero). Prediction = argmax of the logits (ties to the lower class index).

    Args:
      x_train: [n, D]; y_train: int [n] in [0, num_classes); x_eval: [m, D]; alphas: A strengths > 0.
    Returns:
      (int64 [A, m] predicted classes in the order of ``alphas``, whether every fit converged).
    """
    alphas = np.asarray(alphas, np.float64)
    if np.any(alphas <= 0):
        raise ValueError(f"penalty strengths must be > 0, got {alphas.tolist()}")
    x_train, x_eval = _probe_features(x_train, x_eval)
    y_train = np.asarray(y_train)
    n, d = x_train.shape
    one_hot = np.eye(num_classes)[y_train]

    def loss_and_gradient(theta: np.ndarray, alpha: float) -> tuple[float, np.ndarray]:
        weights, bias = theta[: d * num_classes].reshape(d, num_classes), theta[d * num_classes:]
        logits = x_train @ weights + bias
        normaliser = special.logsumexp(logits, axis=1)
        loss = float(np.mean(normaliser - logits[np.arange(n), y_train]) + alpha * np.sum(weights**2))
        residual = (np.exp(logits - normaliser[:, None]) - one_hot) / n
        gradient = np.concatenate([(x_train.T @ residual + 2.0 * alpha * weights).ravel(), residual.sum(axis=0)])
        return loss, gradient

    theta = np.zeros(d * num_classes + num_classes)
    predictions = np.zeros((len(alphas), len(x_eval)), np.int64)
    converged = True
    for k in np.argsort(-alphas, kind="stable"):
        fit = optimize.minimize(loss_and_gradient, theta, args=(float(alphas[k]),), jac=True, method="L-BFGS-B",
                                options={"maxiter": PROBE_MAX_ITERATIONS, "ftol": 1e-12, "gtol": 1e-7})
        theta, converged = fit.x, converged and bool(fit.success)
        weights, bias = theta[: d * num_classes].reshape(d, num_classes), theta[d * num_classes:]
        predictions[k] = np.argmax(x_eval @ weights + bias, axis=1)
    return predictions, converged


@dataclasses.dataclass(frozen=True)
class ProbeResult:
    """A composition probe's score and its references.

    accuracy: share of held-out rows whose composition the probe names. chance: 1 / num_classes (classes = the
    training rows' compositions). majority: the largest share of one composition among the held-out rows (the best
    any constant answer scores on those rows). alpha: the penalty strength used; alpha_source: "given",
    "inner split" (picked on held-out groups of the training rows) or "fixed" (`DEFAULT_PROBE_ALPHA`: no inner split
    was possible, e.g. every composition has one training group). converged: L-BFGS-B met its tolerance within
    `PROBE_MAX_ITERATIONS` for every fit.
    """

    accuracy: float
    chance: float
    majority: float
    num_classes: int
    num_train: int
    num_eval: int
    alpha: float
    alpha_source: str
    converged: bool


def _check_rows(name: str, z: np.ndarray, labels: np.ndarray, label_name: str) -> None:
    if z.ndim != 2 or labels.ndim < 1 or labels.shape[0] != z.shape[0]:
        raise ValueError(f"{name} must be [N, D] with {label_name} of N rows, got {z.shape} and {labels.shape}")


def composition_probe(
    embedding_train: np.ndarray,
    comp_train: np.ndarray,
    embedding_eval: np.ndarray,
    comp_eval: np.ndarray,
    *,
    groups_train: np.ndarray | None = None,
    alpha: float | None = None,
    seed: int = 0,
) -> ProbeResult:
    """Linear probe accuracy of the composition from an embedding, on held-out groups of known compositions.

    The probe is an L2-penalised multinomial logistic regression over the C training compositions
    (`logistic_predictions`; features standardised with the training rows' mean and std, classes in sorted name
    order). Its strength is ``alpha`` when given; otherwise it is picked from `PROBE_ALPHA_GRID` by accuracy on an
    inner `group_holdout_split` of the training rows (seed + 1, so held-out *groups* again; needs ``groups_train``
    and a composition with >= 2 training groups; ties go to the stronger penalty), then the probe is refit on all
    training rows; without an inner split it is `DEFAULT_PROBE_ALPHA`. Deterministic for given inputs.

    Args:
      embedding_train: [N, D]; comp_train: [N] composition ids; embedding_eval: [M, D]; comp_eval: [M], every one
        among ``comp_train`` (use `group_holdout_split`). groups_train: [N] group ids, for the inner split.
      alpha: fixed penalty strength (> 0), or None to pick it. seed: the inner split's draw.
    Returns:
      `ProbeResult`.
    """
    x_train, x_eval = np.asarray(embedding_train), np.asarray(embedding_eval)
    comp_train, comp_eval = np.asarray(comp_train).astype(str), np.asarray(comp_eval).astype(str)
    _check_rows("embedding_train", x_train, comp_train, "comp_train")
    _check_rows("embedding_eval", x_eval, comp_eval, "comp_eval")
    if x_train.shape[1] != x_eval.shape[1]:
        raise ValueError(f"train width {x_train.shape[1]} != eval width {x_eval.shape[1]}")
    classes = np.unique(comp_train)
    if len(classes) < 2:
        raise ValueError(f"a composition probe needs >= 2 training compositions, got {classes.tolist()}")
    unseen = np.setdiff1d(np.unique(comp_eval), classes)
    if len(unseen):
        raise ValueError(f"held-out compositions {unseen.tolist()} have no training rows; a probe cannot name them "
                         "(hold out groups of training compositions: group_holdout_split)")
    if len(comp_eval) == 0:
        raise ValueError("no held-out rows to score the probe on")
    y_train = np.searchsorted(classes, comp_train)
    y_eval = np.searchsorted(classes, comp_eval)
    source, converged = "given", True
    if alpha is None:
        inner = _inner_split(groups_train, comp_train, seed)
        if inner is None:
            alpha, source = DEFAULT_PROBE_ALPHA, "fixed"
        else:
            predicted, converged = logistic_predictions(x_train[inner.train], y_train[inner.train],
                                                        x_train[inner.eval], PROBE_ALPHA_GRID, len(classes))
            inner_accuracy = (predicted == y_train[inner.eval][None]).mean(axis=1)
            best = np.flatnonzero(inner_accuracy == inner_accuracy.max())[-1]
            alpha, source = PROBE_ALPHA_GRID[best], "inner split"
    predicted, final_converged = logistic_predictions(x_train, y_train, x_eval, [alpha], len(classes))
    return ProbeResult(
        accuracy=float(np.mean(predicted[0] == y_eval)),
        chance=1.0 / len(classes),
        majority=float(np.bincount(y_eval).max() / len(y_eval)),
        num_classes=len(classes),
        num_train=len(y_train),
        num_eval=len(y_eval),
        alpha=float(alpha),
        alpha_source=source,
        converged=converged and final_converged,
    )


# --------------------------------------------------------------------------------------------------------------
# 2. Variance share


def between_group_variance_share(z: np.ndarray, groups: np.ndarray) -> float:
    """Share of the total variance that lies between groups: sum_g n_g ||mean_g - mean||^2 / sum_i ||z_i - mean||^2.

    The numerator is the trace of the between-group scatter, the denominator the trace of the total scatter, so the
    share is in [0, 1]: 1 when every row equals its group mean, 0 when every group mean equals the overall mean.
    Lower = less piece information (with ``groups`` = same-music groups or compositions). Rows exchangeable across
    groups give `variance_share_null` on average, not 0.

    Args:
      z: [N, D]; groups: [N] group ids (any dtype).
    Returns:
      the share, or NaN when all rows are equal (no variance to share).
    """
    z = np.asarray(z, np.float64)
    groups = np.asarray(groups)
    _check_rows("z", z, groups, "groups")
    centred = z - z.mean(axis=0)
    total = float(np.sum(centred**2))
    if total <= 0.0:
        return math.nan
    _, index, counts = np.unique(groups, return_inverse=True, return_counts=True)
    sums = np.zeros((len(counts), z.shape[1]))
    np.add.at(sums, index, centred)
    between = float(np.sum(sums**2 / counts[:, None]))  # n_g ||mean_g - mean||^2 = ||sum_g (z_i - mean)||^2 / n_g
    return min(between / total, 1.0)


def variance_share_null(groups: np.ndarray) -> float:
    """(G - 1) / (N - 1): the expected `between_group_variance_share` when the group labels are randomly permuted
    over the rows (fixed group sizes), whatever the embedding; the level "no group information" sits at."""
    groups = np.asarray(groups)
    n = len(groups)
    return (len(np.unique(groups)) - 1) / (n - 1) if n > 1 else math.nan


# --------------------------------------------------------------------------------------------------------------
# 3. Silhouette


def _distance_tile(rows: np.ndarray, rows_sq: np.ndarray, z: np.ndarray, z_sq: np.ndarray, metric: str) -> np.ndarray:
    if metric == "euclidean":
        return np.sqrt(np.maximum(rows_sq[:, None] + z_sq[None, :] - 2.0 * rows @ z.T, 0.0))
    return np.clip(1.0 - rows @ z.T, 0.0, 2.0)


def silhouette(
    z: np.ndarray, labels: np.ndarray, metric: str = "euclidean", block_rows: int | None = None
) -> float:
    """Mean silhouette coefficient of the clustering ``labels`` in the embedding ``z``.

    For row i in cluster c (n_c members), with d the distance:
      a(i) = sum_{j in c, j != i} d(i, j) / (n_c - 1)     (mean distance to the rest of its cluster)
      b(i) = min_{c' != c} sum_{j in c'} d(i, j) / n_c'   (mean distance to the nearest other cluster)
      s(i) = (b(i) - a(i)) / max(a(i), b(i)),  s(i) = 0 when n_c = 1 or a(i) = b(i) = 0,
    and the result is mean_i s(i) in [-1, 1] (high = tight, separated clusters). This is the usual definition
    (Rousseeuw 1987; scikit-learn's ``silhouette_score`` conventions).

    metric: "euclidean" (default: the geometry the variance share and the linear probes see) or "cosine"
    (d = 1 - cos(z_i, z_j), for embeddings trained with cosine similarity; all-zero rows count as orthogonal to
    everything). Computed in tiles of ``block_rows`` rows against all N rows (default: ~`SILHOUETTE_BLOCK_ELEMENTS`
    distances per tile), per-cluster sums by a segmented reduction, so memory is O(block_rows * N), never N x N for
    N above ~2k; time is O(N^2 D).

    Args:
      z: [N, D]; labels: [N] cluster ids (any dtype), at least 2 distinct.
    Returns:
      the mean silhouette (float).
    """
    if metric not in ("euclidean", "cosine"):
        raise ValueError(f"metric={metric!r}: use 'euclidean' or 'cosine'")
    z = np.asarray(z, np.float64)
    labels = np.asarray(labels)
    _check_rows("z", z, labels, "labels")
    _, index = np.unique(labels, return_inverse=True)
    counts = np.bincount(index)
    if len(counts) < 2:
        raise ValueError("the silhouette needs at least 2 distinct labels")
    order = np.argsort(index, kind="stable")
    z, index = z[order], index[order]
    starts = np.concatenate([[0], np.cumsum(counts)[:-1]])
    if metric == "euclidean":
        z = z - z.mean(axis=0)  # translation-invariant; smaller norms cut the cancellation in |a|^2 + |b|^2 - 2ab
    else:
        norms = np.linalg.norm(z, axis=1, keepdims=True)
        z = z / np.where(norms > 0, norms, 1.0)
    z_sq = np.sum(z**2, axis=1)
    n = len(z)
    block = block_rows or max(1, SILHOUETTE_BLOCK_ELEMENTS // max(n, 1))
    total = 0.0
    for start in range(0, n, block):
        stop = min(start + block, n)
        distances = _distance_tile(z[start:stop], z_sq[start:stop], z, z_sq, metric)
        distances[np.arange(stop - start), np.arange(start, stop)] = 0.0  # exact zero self-distance
        sums = np.add.reduceat(distances, starts, axis=1)  # [T, C] distance sums to every cluster
        own = index[start:stop]
        rows = np.arange(stop - start)
        own_count = counts[own]
        a = sums[rows, own] / np.maximum(own_count - 1, 1)
        means = sums / counts[None, :]
        means[rows, own] = np.inf
        b = means.min(axis=1)
        largest = np.maximum(a, b)
        s = np.where((own_count > 1) & (largest > 0), (b - a) / np.where(largest > 0, largest, 1.0), 0.0)
        total += float(s.sum())
    return total / n


# --------------------------------------------------------------------------------------------------------------
# 4. Factor probe


@dataclasses.dataclass(frozen=True)
class FactorProbeResult:
    """Per-factor held-out R^2 (tuple over F, NaN where the held-out factor is constant), the ridge strength used
    per factor, how it was chosen ("given", "inner split", "fixed"), and the rows used after dropping rows whose
    factors are not all finite."""

    r2: tuple[float, ...]
    alpha: tuple[float, ...]
    alpha_source: str
    num_train: int
    num_eval: int


def _r2(y: np.ndarray, predicted: np.ndarray) -> np.ndarray:
    """Per column: 1 - sum (y - predicted)^2 / sum (y - mean(y))^2 (NaN where y is constant)."""
    residual = np.sum((y - predicted) ** 2, axis=0)
    spread = np.sum((y - y.mean(axis=0)) ** 2, axis=0)
    with np.errstate(divide="ignore", invalid="ignore"):
        return np.where(spread > 0, 1.0 - residual / np.where(spread > 0, spread, 1.0), np.nan)


def factor_probe_r2(
    z_train: np.ndarray,
    factors_train: np.ndarray,
    z_eval: np.ndarray,
    factors_eval: np.ndarray,
    *,
    groups_train: np.ndarray | None = None,
    alpha: float | None = None,
    seed: int = 0,
) -> FactorProbeResult:
    """Held-out R^2 of a linear (ridge) probe of each known factor from an embedding.

    One ridge regression (`ridge_predictions`: standardised features, centred targets, unpenalised intercept) per
    factor; R^2_f = 1 - sum_i (f_i - fhat_i)^2 / sum_i (f_i - mean_eval(f))^2 over the held-out rows (1 = the factor
    is linearly readable, 0 = no better than the held-out mean, < 0 worse). Rows whose factors are not all finite
    (e.g. deadpan renditions, which have no performer) are dropped. The strength is ``alpha`` when given; otherwise
    picked per factor from `RIDGE_ALPHA_GRID` by the squared error on an inner split of the training rows that holds
    out a seeded half of the same-music groups (seed + 1; whole groups, any composition: a regression needs no class
    in both parts; ties go to the stronger alpha), then the probe is refit on all training rows; without
    ``groups_train`` or with one group it is `DEFAULT_RIDGE_ALPHA`.

    Args:
      z_train: [N, D]; factors_train: [N, F]; z_eval: [M, D]; factors_eval: [M, F]; groups_train: [N] group ids.
    Returns:
      `FactorProbeResult`.
    """
    z_train, z_eval = np.asarray(z_train, np.float64), np.asarray(z_eval, np.float64)
    f_train, f_eval = np.asarray(factors_train, np.float64), np.asarray(factors_eval, np.float64)
    _check_rows("z_train", z_train, f_train, "factors_train")
    _check_rows("z_eval", z_eval, f_eval, "factors_eval")
    if f_train.ndim != 2 or f_eval.ndim != 2 or f_train.shape[1] != f_eval.shape[1]:
        raise ValueError(f"factors must be [N, F] and [M, F], got {f_train.shape} and {f_eval.shape}")
    keep_train = np.all(np.isfinite(f_train), axis=1)
    keep_eval = np.all(np.isfinite(f_eval), axis=1)
    z_train, f_train, z_eval, f_eval = z_train[keep_train], f_train[keep_train], z_eval[keep_eval], f_eval[keep_eval]
    if len(f_train) < 2 or len(f_eval) < 2:
        raise ValueError(f"factor probe needs >= 2 training and held-out rows with finite factors, got "
                         f"{len(f_train)} and {len(f_eval)}")
    num_factors = f_train.shape[1]
    source = "given"
    if alpha is not None:
        alphas = np.full(num_factors, float(alpha))
    else:
        inner = None
        if groups_train is not None:
            kept_groups = np.asarray(groups_train)[keep_train]
            inner = _inner_split(kept_groups, np.zeros(len(kept_groups), np.int64), seed)  # any group may go
        if inner is None:
            alphas, source = np.full(num_factors, DEFAULT_RIDGE_ALPHA), "fixed"
        else:
            predicted = ridge_predictions(z_train[inner.train], f_train[inner.train], z_train[inner.eval],
                                          RIDGE_ALPHA_GRID)
            error = np.sum((predicted - f_train[inner.eval][None]) ** 2, axis=1)  # [A, F]
            best = [np.flatnonzero(error[:, f] == error[:, f].min())[-1] for f in range(num_factors)]
            alphas, source = np.asarray(RIDGE_ALPHA_GRID)[best], "inner split"
    r2 = np.empty(num_factors)
    for value in np.unique(alphas):  # one fit per distinct strength, every factor in it at once
        columns = np.flatnonzero(alphas == value)
        predicted = ridge_predictions(z_train, f_train[:, columns], z_eval, [value])[0]
        r2[columns] = _r2(f_eval[:, columns], predicted)
    return FactorProbeResult(r2=tuple(float(v) for v in r2), alpha=tuple(float(a) for a in alphas),
                             alpha_source=source, num_train=len(f_train), num_eval=len(f_eval))


# --------------------------------------------------------------------------------------------------------------
# 5. Pictures


def _pca(z: np.ndarray, k: int) -> tuple[np.ndarray, float]:
    """[N, k] scores on the top k principal axes and the share of total variance they hold.

    Axes are the top eigenvectors of the covariance of the centred rows (eigh of X^T X or, when N < D, of X X^T);
    each axis' sign is fixed so that its loading of largest magnitude is positive (a deterministic orientation).
    """
    x = np.asarray(z, np.float64)
    x = x - x.mean(axis=0)
    n, d = x.shape
    total = float(np.sum(x**2))
    if n <= d:
        eigenvalues, vectors = np.linalg.eigh(x @ x.T)
        eigenvalues, vectors = eigenvalues[::-1][:k], vectors[:, ::-1][:, :k]
        axes = x.T @ vectors / np.sqrt(np.maximum(eigenvalues, 1e-300))  # [D, k]
    else:
        eigenvalues, axes = np.linalg.eigh(x.T @ x)
        eigenvalues, axes = eigenvalues[::-1][:k], axes[:, ::-1][:, :k]
    eigenvalues = np.maximum(eigenvalues, 0.0)
    axes = np.where(eigenvalues[None, :] > 0, axes, 0.0)  # no direction for a zero-variance axis
    signs = np.sign(axes[np.argmax(np.abs(axes), axis=0), np.arange(axes.shape[1])])
    axes = axes * np.where(signs == 0, 1.0, signs)
    scores = x @ axes
    if scores.shape[1] < k:
        scores = np.concatenate([scores, np.zeros((n, k - scores.shape[1]))], axis=1)
    return scores, (float(eigenvalues.sum()) / total if total > 0 else math.nan)


def pca_2d(z: np.ndarray) -> np.ndarray:
    """float64 [N, 2]: the centred rows of ``z`` [N, D] projected on their two principal axes (largest variance
    first; an axis with no variance, e.g. when D = 1, gives zeros). Signs: see `_pca`."""
    z = np.asarray(z)
    if z.ndim != 2 or len(z) == 0:
        raise ValueError(f"z must be a non-empty [N, D] array, got shape {z.shape}")
    return _pca(z, 2)[0]


def _project_2d(z: np.ndarray, seed: int) -> tuple[np.ndarray, str]:
    """UMAP when ``umap`` imports (seeded), else PCA; returns the [N, 2] picture and a title naming the method."""
    try:
        import umap  # noqa: PLC0415 (optional; not a dependency)
    except ImportError:
        coords, share = _pca(z, 2)
        return coords, (f"PCA ({100 * share:.0f}% of variance)" if math.isfinite(share) else "PCA")
    coords = umap.UMAP(n_components=2, random_state=seed).fit_transform(np.asarray(z, np.float64))
    return np.asarray(coords, np.float64), "UMAP"


def plot_embeddings(
    path: str | Path, named_embeddings: Mapping[str, np.ndarray], compositions: np.ndarray, seed: int = 0
) -> str:
    """Writes one PNG with a panel per embedding (a 2-D picture of its rows) coloured by composition.

    The picture is UMAP when the optional ``umap`` package imports (``random_state=seed``), else PCA (`pca_2d`); each
    panel's title names the method (and PCA's share of variance). A legend names the compositions when there are at
    most 12. Matplotlib's Agg backend; nothing is shown.

    Args:
      path: the PNG to write. named_embeddings: name -> [N, D_name], all over the same N rows.
      compositions: [N] composition of each row. seed: UMAP's seed.
    Returns:
      "umap" or "pca", the method used.
    """
    import matplotlib  # noqa: PLC0415 (only the picture needs it)

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt  # noqa: PLC0415

    compositions = np.asarray(compositions).astype(str)
    if not named_embeddings:
        raise ValueError("no embeddings to plot")
    for name, z in named_embeddings.items():
        if np.ndim(z) != 2 or len(z) != len(compositions):
            raise ValueError(f"embedding {name!r} has shape {np.shape(z)}; expected [{len(compositions)}, D]")
    names, colour_index = np.unique(compositions, return_inverse=True)
    cmap = plt.get_cmap("tab20" if len(names) <= 20 else "turbo")
    colours = cmap(colour_index % 20 if len(names) <= 20 else colour_index / max(len(names) - 1, 1))
    count = len(named_embeddings)
    fig, axes = plt.subplots(1, count, figsize=(4.2 * count, 4.2), squeeze=False)
    method = "pca"
    for ax, (name, z) in zip(axes[0], named_embeddings.items()):
        coords, title = _project_2d(np.asarray(z), seed)
        method = "umap" if title == "UMAP" else "pca"
        ax.scatter(coords[:, 0], coords[:, 1], c=colours, s=8, alpha=0.8, linewidths=0)
        ax.set_title(f"{name}: {title}", fontsize=9)
        ax.set_xticks([])
        ax.set_yticks([])
    if len(names) <= 12:
        handles = [plt.Line2D([], [], ls="", marker="o", color=cmap(i % 20), label=n) for i, n in enumerate(names)]
        fig.legend(handles=handles, loc="lower center", ncol=min(len(names), 4), fontsize=7, frameon=False)
        fig.tight_layout(rect=(0, 0.06 * math.ceil(len(names) / 4), 1, 0.93))
    else:
        fig.tight_layout(rect=(0, 0, 1, 0.93))
    fig.suptitle(f"Embeddings coloured by composition ({len(names)} compositions, {len(compositions)} rows)",
                 fontsize=10)
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return method


# --------------------------------------------------------------------------------------------------------------
# 6. Everything for named embeddings


def _json_float(value: float | None) -> float | None:
    return None if value is None or not math.isfinite(value) else float(value)


def disentanglement_metrics(
    named_embeddings: Mapping[str, np.ndarray],
    compositions: np.ndarray,
    groups: np.ndarray,
    *,
    split: ProbeSplit | None = None,
    factors: np.ndarray | None = None,
    factor_split: ProbeSplit | None = None,
    factor_names: Sequence[str] | None = None,
    seed: int = 0,
    holdout_share: float = DEFAULT_HOLDOUT_SHARE,
    metric: str = "euclidean",
    silhouette_max_rows: int = SILHOUETTE_MAX_ROWS,
) -> dict:
    """Every disentanglement metric for every named embedding of the same N rows, as a JSON-ready dict.

    The composition probe trains on ``split.train`` and scores on ``split.eval`` (default: `group_holdout_split`
    (groups, compositions, seed, holdout_share): held-out groups of the same compositions); the factor probe uses
    ``factor_split`` when given (e.g. one that holds out performers), else the same split. The variance shares and
    silhouettes use all N rows (the silhouette a seeded subset of ``silhouette_max_rows`` rows above that). Pass the
    rows of the training compositions (a probe cannot name unseen ones); the structure metrics of held-out
    compositions' rows can be had from a second call on those rows.

    Args:
      named_embeddings: name -> [N, D_name] (e.g. "input", "hidden", "z_piece", "z_style").
      compositions, groups: [N] ids. split, factor_split: `ProbeSplit` of row indices, or None.
      factors: [N, F] known factors (rows with a NaN, e.g. deadpan renditions, are dropped) or None.
      factor_names: F names (default f0, f1, ...). seed, holdout_share: the default split's (and the inner
      splits'). metric: the silhouette's ("euclidean" or "cosine").
    Returns:
      {"num_rows", "num_compositions", "num_groups", "probe_split": {"num_train", "num_eval", "seed",
       "holdout_share"}, "variance_share_null": {"group", "composition"}, "silhouette_rows", "factor_names",
       "embeddings": {name: {"dim", "composition_probe": ProbeResult fields or None (fewer than 2 training
       compositions or no held-out rows), "variance_share": {"group", "composition"},
       "silhouette": {"composition", "group"}, "factor_r2": {"per_factor": {name: r2}, "mean", "alpha",
       "alpha_source", "num_train", "num_eval"} or absent}}}; NaN is written as None.
    """
    compositions = np.asarray(compositions).astype(str)
    groups = np.asarray(groups).astype(str)
    n = len(compositions)
    if groups.shape != (n,):
        raise ValueError(f"groups {groups.shape} must match compositions ({n},)")
    if split is None:
        split = group_holdout_split(groups, compositions, seed=seed, holdout_share=holdout_share)
    if factors is not None:
        factors = np.asarray(factors, np.float64)
        if factors.ndim != 2 or len(factors) != n:
            raise ValueError(f"factors must be [{n}, F], got {factors.shape}")
        factor_names = list(factor_names) if factor_names is not None else [f"f{i}" for i in range(factors.shape[1])]
        if len(factor_names) != factors.shape[1]:
            raise ValueError(f"{len(factor_names)} factor names for {factors.shape[1]} factors")
    fsplit = factor_split if factor_split is not None else split
    sample = np.arange(n)
    if n > silhouette_max_rows:
        sample = np.sort(np.random.default_rng([seed, 17]).choice(n, silhouette_max_rows, replace=False))
    probe_possible = len(split.eval) > 0 and len(np.unique(compositions[split.train])) >= 2
    result: dict = {
        "num_rows": n,
        "num_compositions": int(len(np.unique(compositions))),
        "num_groups": int(len(np.unique(groups))),
        "probe_split": {"num_train": int(len(split.train)), "num_eval": int(len(split.eval)), "seed": seed,
                        "holdout_share": holdout_share},
        "variance_share_null": {"group": _json_float(variance_share_null(groups)),
                                "composition": _json_float(variance_share_null(compositions))},
        "silhouette_rows": int(len(sample)),
        "silhouette_metric": metric,
        "factor_names": factor_names if factors is not None else None,
        "embeddings": {},
    }
    for name, z in named_embeddings.items():
        z = np.asarray(z, np.float64)
        if z.ndim != 2 or len(z) != n:
            raise ValueError(f"embedding {name!r} has shape {z.shape}; expected [{n}, D]")
        entry: dict = {"dim": int(z.shape[1])}
        if probe_possible:
            probe = composition_probe(z[split.train], compositions[split.train], z[split.eval],
                                      compositions[split.eval], groups_train=groups[split.train], seed=seed)
            entry["composition_probe"] = {k: (_json_float(v) if isinstance(v, float) else v)
                                          for k, v in dataclasses.asdict(probe).items()}
        else:
            entry["composition_probe"] = None
        entry["variance_share"] = {"group": _json_float(between_group_variance_share(z, groups)),
                                   "composition": _json_float(between_group_variance_share(z, compositions))}
        entry["silhouette"] = {
            label: (_json_float(silhouette(z[sample], ids[sample], metric=metric))
                    if len(np.unique(ids[sample])) >= 2 else None)
            for label, ids in (("composition", compositions), ("group", groups))}
        if factors is not None:
            fit = factor_probe_r2(z[fsplit.train], factors[fsplit.train], z[fsplit.eval], factors[fsplit.eval],
                                  groups_train=groups[fsplit.train], seed=seed)
            finite = [v for v in fit.r2 if math.isfinite(v)]
            entry["factor_r2"] = {"per_factor": {f: _json_float(v) for f, v in zip(factor_names, fit.r2)},
                                  "mean": _json_float(float(np.mean(finite)) if finite else math.nan),
                                  "alpha": list(fit.alpha), "alpha_source": fit.alpha_source,
                                  "num_train": fit.num_train, "num_eval": fit.num_eval}
        result["embeddings"][name] = entry
    return result


def _cell(value: float | None, digits: int = 3) -> str:
    return "–" if value is None else f"{value:.{digits}f}"


def disentanglement_table(metrics: dict) -> list[str]:
    """Markdown lines for a report from `disentanglement_metrics`' dict: one row per embedding with the composition
    probe's accuracy against chance and the majority rate, the between-group and between-composition variance
    shares (with their permutation null in the header), the silhouettes by composition and by group, and the mean
    factor R^2 when factors were given; then, with factors, a second table of R^2 per factor."""
    null = metrics["variance_share_null"]
    has_factors = metrics.get("factor_names") is not None
    header = ["embedding", "dim", "probe accuracy", "chance", "majority",
              f"between-group variance (null {_cell(null['group'])})",
              f"between-composition variance (null {_cell(null['composition'])})",
              "silhouette by composition", "silhouette by group"]
    if has_factors:
        header.append("factor R² (mean)")
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    for name, entry in metrics["embeddings"].items():
        probe = entry["composition_probe"] or {}
        row = [name, str(entry["dim"]), _cell(probe.get("accuracy")), _cell(probe.get("chance")),
               _cell(probe.get("majority")), _cell(entry["variance_share"]["group"]),
               _cell(entry["variance_share"]["composition"]), _cell(entry["silhouette"]["composition"]),
               _cell(entry["silhouette"]["group"])]
        if has_factors:
            row.append(_cell(entry["factor_r2"]["mean"]))
        lines.append("| " + " | ".join(row) + " |")
    if has_factors:
        names = metrics["factor_names"]
        lines += ["", "| embedding | " + " | ".join(f"R² {f}" for f in names) + " |", "|---|" + "---|" * len(names)]
        for name, entry in metrics["embeddings"].items():
            per = entry["factor_r2"]["per_factor"]
            lines.append(f"| {name} | " + " | ".join(_cell(per[f]) for f in names) + " |")
    return lines
