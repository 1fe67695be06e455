"""The linear reference: closed-form ridge regression per dimension, regularisation chosen inside the training fold.

`ridge_path` is the project's one ridge solver (the disentanglement probes use it too).

Every approach must beat this number on the same inputs and folds. For one outer fold (a boolean test mask over
the N rows), with the training rows T = the rows outside the mask (or, given ``fit_masks``, those of them the
network fits on: a run's validation compositions are left out, as the network never fits them):

1. x is standardised with T's mean and standard deviation (a feature whose std is at most `STD_FLOOR`, i.e.
   constant, is only centred and so becomes 0).
2. For every alpha of a grid and every dimension k, ridge with an unpenalised intercept is fitted on the rows of T
   whose label k is known (NaN labels are dropped per dimension):
   w_k(alpha) = argmin ||y_k - ybar_k - (X - xbar) w||^2 + alpha ||w||^2 = (Xc^T Xc + alpha I)^-1 Xc^T yc,
   prediction f(z) = ybar_k + (z - xbar) w_k(alpha), with Xc, yc the centred rows (ybar_k: label mean).
3. alpha_k is chosen, given ``selection_masks`` (the run's validation rows), as the network chooses its checkpoint:
   the model fitted on T predicts the selection rows and alpha_k maximises their within-group pairwise accuracy;
   otherwise by inner cross-validation over T only: leave one *training* composition out (or, when T holds a
   single composition, folds of same-music groups), every row of T predicted once by a model that never saw its
   inner fold, alpha_k maximising the within-group pairwise accuracy of those out-of-fold predictions
   (`metrics.pairwise_accuracy`, the metric the project judges by). ``inner_schemes`` says which per fold; ties go
   to the larger alpha (the simpler model).
4. The model fitted on all of T with alpha_k predicts the test rows. The test rows' labels are never read.

One eigendecomposition serves every alpha and every dimension of a (fold, inner fold): with n training rows and
D features, when n <= D the dual Gram matrix Xc Xc^T = U diag(lam) U^T (n x n) gives
f(Z) = ybar + (Z - xbar) Xc^T U diag(1 / (lam + alpha)) U^T yc; otherwise the primal Xc^T Xc = V diag(lam) V^T
(D x D) gives f(Z) = ybar + (Z - xbar) V diag(1 / (lam + alpha)) V^T Xc^T yc. Both equal the direct solve above.
"""

from __future__ import annotations

import dataclasses

import numpy as np

from crescend_jax.evaluate import metrics

# Half-decade steps from 1e-2 to 1e7. The metric only reads the order of predictions inside a group, and as alpha
# grows the fit tends to ybar + (z - xbar) Xc^T yc / alpha, whose order is that of Xc^T yc (a non-trivial model), so
# the grid must reach past the largest eigenvalue (at most n * D with standardised inputs; ~1e6 for 900 x 4096).
DEFAULT_ALPHAS = np.logspace(-2, 7, 19)
DEFAULT_INNER_GROUP_FOLDS = 5
STD_FLOOR = 1e-12  # a training feature whose std is at most this is only centred (a constant feature stays 0)


@dataclasses.dataclass(frozen=True)
class RidgeReference:
    """predictions: float [N, K] for each fold's test rows (NaN elsewhere); alphas: float [F, K] chosen per fold and
    dimension (NaN where a dimension has no training label); alpha_grid: float [A]; inner_scores: float [F, A, K]
    within-group pairwise accuracy of each alpha on the rows it is chosen on (the validation rows, or out of fold on
    the fitted rows); inner_schemes: F strings naming how each fold chose it."""

    predictions: np.ndarray
    alphas: np.ndarray
    alpha_grid: np.ndarray
    inner_scores: np.ndarray
    inner_schemes: tuple[str, ...]

    @property
    def at_grid_edge(self) -> np.ndarray:
        """bool [F, K]: the chosen alpha is the smallest or largest of the grid (the grid may be too narrow)."""
        return np.isin(self.alphas, [self.alpha_grid.min(), self.alpha_grid.max()])


def standardise(x_train: np.ndarray, *others: np.ndarray) -> list[np.ndarray]:
    """(x - mean) / std with the training rows' mean and population std (std <= `STD_FLOOR` -> 1: only centred), for
    x_train [n, D] and each of ``others`` [m, D]."""
    mean = x_train.mean(axis=0)
    std = x_train.std(axis=0)
    std = np.where(std > STD_FLOOR, std, 1.0)
    return [(x - mean) / std for x in (x_train, *others)]


def _centred_path(x: np.ndarray, y: np.ndarray, z: np.ndarray, alphas: np.ndarray) -> np.ndarray:
    """Ridge predictions [A, m, K] at z [m, D] from rows x [n, D], finite labels y [n, K], intercept unpenalised."""
    x_mean, y_mean = x.mean(axis=0), y.mean(axis=0)
    xc, yc, zc = x - x_mean, y - y_mean, z - x_mean
    if len(x) <= x.shape[1]:  # dual: n x n Gram matrix
        lam, basis = np.linalg.eigh(xc @ xc.T)
        coef = basis.T @ yc  # [n, K]
        projection = (zc @ xc.T) @ basis  # [m, n]
    else:  # primal: D x D covariance
        lam, basis = np.linalg.eigh(xc.T @ xc)
        coef = basis.T @ (xc.T @ yc)  # [D, K]
        projection = zc @ basis  # [m, D]
    shrink = 1.0 / (np.maximum(lam, 0.0)[None, :] + alphas[:, None])  # [A, r]
    return y_mean + np.einsum("mr,ar,rk->amk", projection, shrink, coef)


def ridge_path(x_train: np.ndarray, y_train: np.ndarray, x_eval: np.ndarray, alphas: np.ndarray) -> np.ndarray:
    """Ridge predictions for every alpha: float [A, m, K].

    x_train float [n, D] is standardised with its own mean/std (x_eval [m, D] with the same); each dimension k of
    y_train float [n, K] is fitted on its finite rows only, as f(z) = ybar_k + (z - xbar_k) w_k(alpha) with
    w_k = (Xc^T Xc + alpha I)^-1 Xc^T yc over those rows (one eigendecomposition per distinct set of rows, shared by
    all alphas and dimensions). A dimension with no finite label is NaN.
    """
    x_train, x_eval = np.asarray(x_train, np.float64), np.asarray(x_eval, np.float64)
    y_train = np.asarray(y_train, np.float64)
    alphas = np.asarray(alphas, np.float64)
    if x_train.ndim != 2 or x_eval.ndim != 2 or x_eval.shape[1] != x_train.shape[1]:
        raise ValueError(f"x_train {x_train.shape} and x_eval {x_eval.shape} must be [n, D] and [m, D]")
    if y_train.ndim != 2 or len(y_train) != len(x_train):
        raise ValueError(f"y_train {y_train.shape} must be [n, K] with n = {len(x_train)}")
    if alphas.ndim != 1 or len(alphas) == 0 or np.any(alphas <= 0):
        raise ValueError(f"alphas must be a non-empty 1-D array of positive values, got {alphas}")
    x_train, x_eval = standardise(x_train, x_eval)
    out = np.full((len(alphas), len(x_eval), y_train.shape[1]), np.nan)
    finite = np.isfinite(y_train)
    patterns, column_pattern = np.unique(finite.T, axis=0, return_inverse=True)
    for p, rows in enumerate(patterns):
        columns = np.flatnonzero(column_pattern.reshape(-1) == p)
        if rows.any():
            out[:, :, columns] = _centred_path(x_train[rows], y_train[rows][:, columns], x_eval, alphas)
    return out


def _inner_folds(
    compositions: np.ndarray, groups: np.ndarray, num_group_folds: int, seed: int
) -> tuple[np.ndarray, str]:
    """Inner fold id int [n] of each training row and a description of the scheme."""
    names, by_composition = np.unique(compositions, return_inverse=True)
    if len(names) >= 2:
        return by_composition, f"leave-one-composition-out over {len(names)} training compositions"
    group_names, by_group = np.unique(groups, return_inverse=True)
    folds = min(num_group_folds, len(group_names))
    if folds < 2:
        raise ValueError(
            f"cannot choose alpha: the training rows hold one composition ({names[0]}) and {len(group_names)} "
            "same-music group(s); inner cross-validation needs at least two"
        )
    assignment = np.random.default_rng(seed).permutation(len(group_names)) % folds
    return assignment[by_group], (
        f"{folds} folds of same-music groups (only one training composition, {names[0]}: no composition to hold out)"
    )


def _select(scores: np.ndarray) -> np.ndarray:
    """Index [K] of the best alpha per dimension from scores [A, K] (higher is better, ties -> the larger alpha,
    NaN never chosen unless all are NaN, then the largest alpha)."""
    filled = np.where(np.isfinite(scores), scores, -np.inf)
    return len(scores) - 1 - np.argmax(filled[::-1], axis=0)


def ridge_reference(
    x: np.ndarray,
    labels: np.ndarray,
    compositions: np.ndarray,
    groups: np.ndarray,
    test_masks: list[np.ndarray],
    *,
    fit_masks: list[np.ndarray] | None = None,
    selection_masks: list[np.ndarray | None] | None = None,
    alphas: np.ndarray = DEFAULT_ALPHAS,
    inner_group_folds: int = DEFAULT_INNER_GROUP_FOLDS,
    seed: int = 0,
) -> RidgeReference:
    """Per-dimension ridge on the run's folds, alpha chosen on each fold's training side only.

    Args:
      x: float [N, D] inputs (e.g. the pooled embeddings the run trained on); labels: float [N, K] (NaN = unknown,
        dropped per dimension); compositions, groups: [N]; test_masks: F bool masks [N] (disjoint), the run's folds;
      fit_masks: F bool masks [N] of the rows each fold fits on (default: every row outside its test mask; test
        rows are never fitted on in any case); selection_masks: F bool masks [N] (or None entries) of the rows alpha
        is chosen on (the run's validation rows; default and None: inner cross-validation over the fitted rows);
      alphas: the grid [A]; inner_group_folds: folds of same-music groups when a fold trains on one composition;
      seed: the group-fold assignment's seed (unused with >= 2 training compositions).
    Returns: `RidgeReference` (see the module docstring for the procedure).
    """
    x = np.asarray(x, np.float64)
    labels = np.asarray(labels, np.float64)
    compositions, groups = np.asarray(compositions), np.asarray(groups)
    alphas = np.sort(np.asarray(alphas, np.float64))
    num_rows, num_dims = labels.shape if labels.ndim == 2 else (-1, -1)
    if x.ndim != 2 or len(x) != num_rows or compositions.shape != (num_rows,) or groups.shape != (num_rows,):
        raise ValueError(
            f"x {x.shape}, labels {labels.shape}, compositions {compositions.shape} and groups {groups.shape} must "
            "be [N, D], [N, K], [N] and [N]"
        )
    if not np.isfinite(x).all():
        raise ValueError(f"x has {np.sum(~np.isfinite(x))} non-finite values; the inputs are corrupt")
    masks = [np.asarray(m, bool) for m in test_masks]
    if not masks or any(m.shape != (num_rows,) for m in masks):
        raise ValueError(f"test_masks must be a non-empty list of bool [{num_rows}] masks")
    if np.any(np.sum(masks, axis=0) > 1):
        raise ValueError("test masks overlap: a row may be held out by one fold only")
    fits = [~m for m in masks] if fit_masks is None else [np.asarray(f, bool) & ~m for f, m in zip(fit_masks, masks)]
    selections = [None] * len(masks) if selection_masks is None else [
        None if s is None or not np.any(s) else np.asarray(s, bool) & ~m & ~f
        for s, m, f in zip(selection_masks, masks, fits)]
    if len(fits) != len(masks) or len(selections) != len(masks):
        raise ValueError(f"fit_masks and selection_masks need one mask per fold ({len(masks)})")

    predictions = np.full((num_rows, num_dims), np.nan)
    chosen = np.full((len(masks), num_dims), np.nan)
    inner_scores = np.full((len(masks), len(alphas), num_dims), np.nan)
    schemes = []
    for f, (test, fit_rows, selection) in enumerate(zip(masks, fits, selections)):
        train = np.flatnonzero(fit_rows)
        if len(train) == 0 or not test.any():
            raise ValueError(f"fold {f} has {len(train)} training and {int(test.sum())} test rows; both are needed")
        if selection is not None:
            held = np.flatnonzero(selection)
            scored = ridge_path(x[train], labels[train], x[held], alphas)  # [A, s, K]
            schemes.append(f"chosen on the run's {len(np.unique(compositions[held]))} validation composition(s) "
                           f"({len(held)} rows), fitted on the other {len(train)} training rows")
        else:
            held = train
            inner, scheme = _inner_folds(compositions[train], groups[train], inner_group_folds, seed)
            schemes.append(scheme)
            scored = np.full((len(alphas), len(train), num_dims), np.nan)
            for i in np.unique(inner):
                part = inner == i
                scored[:, part] = ridge_path(x[train[~part]], labels[train[~part]], x[train[part]], alphas)
        stacked = np.moveaxis(scored, 0, 1).reshape(len(held), -1)  # [n, A * K]
        accuracy = metrics.pairwise_accuracy(stacked, np.tile(labels[held], len(alphas)), groups[held]).accuracy
        inner_scores[f] = accuracy.reshape(len(alphas), num_dims)
        best = _select(inner_scores[f])  # [K]
        has_labels = np.isfinite(labels[train]).any(axis=0)
        chosen[f] = np.where(has_labels, alphas[best], np.nan)
        path = ridge_path(x[train], labels[train], x[test], alphas)  # [A, m, K]
        predictions[test] = np.take_along_axis(path, best[None, None, :], axis=0)[0]
    return RidgeReference(
        predictions=predictions, alphas=chosen, alpha_grid=alphas, inner_scores=inner_scores,
        inner_schemes=tuple(schemes),
    )
