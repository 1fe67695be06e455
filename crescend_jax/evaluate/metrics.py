"""Ranking metrics inside same-music groups: pairwise accuracy, Kendall tau-b, NDCG, R², intra-group spread.

Shapes: N rows (performances), K dimensions (19), G same-music groups, P within-group pairs, L the largest group.
``scores`` are float [N, K] (higher = higher on the dimension; only their order inside a group matters),
``labels`` float [N, K] (NaN = unknown, such pairs/rows are left out), ``groups`` an array [N] of group ids
(any dtype; equal ids = performances of identical music). Pairs never cross groups. Every function is vectorised
over pairs and dimensions; nothing loops over pairs in Python.
"""

from __future__ import annotations

import dataclasses

import jax
import jax.numpy as jnp
import numpy as np
import rax

# Pairs whose label gap is below this are dropped in the "gap" variant of pairwise accuracy.
DEFAULT_MIN_GAP = 0.05


@dataclasses.dataclass(frozen=True)
class GroupLayout:
    """Rows arranged by group: ``padded[g, p]`` is the row of the p-th member of group g, or -1 past its end.

    group_index: int [N] dense group id of each row (groups sorted by id); padded: int [G, L]; sizes: int [G].
    """

    group_index: np.ndarray
    padded: np.ndarray
    sizes: np.ndarray

    @staticmethod
    def from_groups(groups: np.ndarray) -> "GroupLayout":
        groups = np.asarray(groups)
        if groups.ndim != 1:
            raise ValueError(f"groups must be a 1-D array of group ids, got shape {groups.shape}")
        _, group_index = np.unique(groups, return_inverse=True)
        sizes = np.bincount(group_index) if len(groups) else np.zeros(0, np.int64)
        order = np.argsort(group_index, kind="stable")
        starts = np.concatenate([[0], np.cumsum(sizes)[:-1]]).astype(np.int64)
        position = np.arange(len(groups)) - starts[group_index[order]]
        padded = np.full((len(sizes), int(sizes.max(initial=0))), -1, dtype=np.int64)
        padded[group_index[order], position] = order
        return GroupLayout(group_index=group_index.astype(np.int64), padded=padded, sizes=sizes)

    @property
    def num_groups(self) -> int:
        return len(self.sizes)

    def pairs(self) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """All within-group pairs (i, j, g): int [P] each, rows i and j (member i before j) of group g."""
        a, b = np.triu_indices(self.padded.shape[1], k=1)
        first, second = self.padded[:, a], self.padded[:, b]
        valid = (first >= 0) & (second >= 0)
        group = np.broadcast_to(np.arange(self.num_groups)[:, None], first.shape)
        return first[valid], second[valid], group[valid]


def _check(scores: np.ndarray, labels: np.ndarray, groups: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    scores = np.asarray(scores, dtype=np.float64)
    labels = np.asarray(labels, dtype=np.float64)
    if scores.ndim != 2 or scores.shape != labels.shape or len(groups) != len(scores):
        raise ValueError(
            f"scores {scores.shape} and labels {labels.shape} must both be [N, K] with N = len(groups) = {len(groups)}"
        )
    return scores, labels


@dataclasses.dataclass(frozen=True)
class PairwiseAccuracy:
    """accuracy: float [K] (NaN where a dimension has no usable pair); num_pairs: int [K] usable pairs."""

    accuracy: np.ndarray
    num_pairs: np.ndarray


def pairwise_accuracy(
    scores: np.ndarray,
    labels: np.ndarray,
    groups: np.ndarray,
    *,
    min_gap: float = 0.0,
    exclude: np.ndarray | None = None,
) -> PairwiseAccuracy:
    """Share of within-group pairs whose predicted order matches the label order, per dimension.

    For a pair (i, j) of one group and dimension k, with d = y_ik - y_jk and s = f_ik - f_jk:
    correct = 1[sign(s) = sign(d)] + 0.5 * 1[s = 0]; accuracy_k = mean of correct over usable pairs.
    A pair is usable when d and s are finite, d != 0 (label ties carry no order and are excluded) and
    |d| >= ``min_gap``; pairs touching a row with ``exclude[i]`` (bool [N], e.g. Score renditions) are left out.
    Predicted ties count 0.5 (a coin flip), so a constant predictor scores exactly 0.5.

    Args: scores, labels: float [N, K]; groups: [N]; min_gap: smallest |label difference| kept; exclude: bool [N].
    Returns: PairwiseAccuracy with accuracy float [K] and num_pairs int [K].
    """
    scores, labels = _check(scores, labels, groups)
    i, j, _ = GroupLayout.from_groups(groups).pairs()
    if exclude is not None:
        keep = ~(np.asarray(exclude, bool)[i] | np.asarray(exclude, bool)[j])
        i, j = i[keep], j[keep]
    label_diff = labels[i] - labels[j]
    score_diff = scores[i] - scores[j]
    usable = np.isfinite(label_diff) & np.isfinite(score_diff) & (label_diff != 0) & (np.abs(label_diff) >= min_gap)
    correct = np.where(score_diff == 0, 0.5, (np.sign(score_diff) == np.sign(label_diff)).astype(np.float64))
    num_pairs = usable.sum(axis=0)
    total = np.where(usable, correct, 0.0).sum(axis=0)
    with np.errstate(invalid="ignore", divide="ignore"):
        accuracy = np.where(num_pairs > 0, total / num_pairs, np.nan)
    return PairwiseAccuracy(accuracy=accuracy, num_pairs=num_pairs.astype(np.int64))


def kendall_tau_b(scores: np.ndarray, labels: np.ndarray, groups: np.ndarray) -> np.ndarray:
    """Kendall tau-b inside each group, averaged over groups, per dimension: float [K].

    Per group g and dimension k, over its pairs (i, j) with finite values:
    tau_b = sum sgn(ds) sgn(dy) / sqrt(sum sgn(ds)^2 * sum sgn(dy)^2), i.e. (C - D) / sqrt((n0 - n1)(n0 - n2))
    with ties in either side counted as in scipy.stats.kendalltau. Groups with fewer than 2 performances, or
    where the scores or the labels are all equal (tau_b undefined), are skipped; NaN if no group is left.
    """
    scores, labels = _check(scores, labels, groups)
    layout = GroupLayout.from_groups(groups)
    i, j, g = layout.pairs()
    ds, dy = np.sign(scores[i] - scores[j]), np.sign(labels[i] - labels[j])
    finite = np.isfinite(ds) & np.isfinite(dy)
    ds, dy = np.where(finite, ds, 0.0), np.where(finite, dy, 0.0)
    num_dims = scores.shape[1]
    concordance = np.zeros((layout.num_groups, num_dims))
    untied_scores = np.zeros((layout.num_groups, num_dims))
    untied_labels = np.zeros((layout.num_groups, num_dims))
    np.add.at(concordance, g, ds * dy)
    np.add.at(untied_scores, g, ds * ds)
    np.add.at(untied_labels, g, dy * dy)
    defined = (untied_scores > 0) & (untied_labels > 0)
    with np.errstate(invalid="ignore", divide="ignore"):
        tau = np.where(defined, concordance / np.sqrt(untied_scores * untied_labels), 0.0)
        return np.where(defined.any(axis=0), tau.sum(axis=0) / defined.sum(axis=0), np.nan)


def _identity_gain(label: jnp.ndarray) -> jnp.ndarray:
    return label


@jax.jit
def _list_ndcg(scores: jnp.ndarray, labels: jnp.ndarray, where: jnp.ndarray) -> jnp.ndarray:
    """rax NDCG of each list: float [..., L] inputs -> float [...] (gain = label)."""
    return rax.ndcg_metric(scores, labels, where=where, gain_fn=_identity_gain, reduce_fn=None)


def _bucket(size: int) -> int:
    """The next power of two >= size, so that jit compiles for few distinct shapes."""
    return 1 << max(int(size) - 1, 0).bit_length()


def ndcg(scores: np.ndarray, labels: np.ndarray, groups: np.ndarray) -> np.ndarray:
    """NDCG of each group's ranking with the labels as relevance gains, averaged over groups: float [K].

    ndcg_g = dcg(f, y) / dcg(y, y) with dcg(f, y) = sum_i y_i / log2(1 + rank_f(i)) (gain = label, as the labels
    are already graded relevances on [0, 1]). Computed by ``rax.ndcg_metric`` on lists padded to [K, G, L] with
    ``where`` marking real members (rax's ``segments=`` builds an N x N mask; the padded layout is G x L x L at most).
    Tied scores are ranked by row order (rax's default ``rank_fn``).
    Groups with fewer than 2 rows with finite label and score are skipped; NaN when none is left.
    """
    scores, labels = _check(scores, labels, groups)
    layout = GroupLayout.from_groups(groups)
    padded = np.full((_bucket(layout.num_groups), _bucket(layout.padded.shape[1])), -1)
    padded[: layout.num_groups, : layout.padded.shape[1]] = layout.padded
    member = padded >= 0
    rows = np.where(member, padded, 0)
    padded_scores = np.moveaxis(scores[rows], -1, 0)  # [K, G', L'] (G', L' rounded up to powers of two)
    padded_labels = np.moveaxis(labels[rows], -1, 0)
    where = member[None] & np.isfinite(padded_scores) & np.isfinite(padded_labels)
    values = _list_ndcg(
        jnp.asarray(np.where(where, padded_scores, 0.0), jnp.float32),
        jnp.asarray(np.where(where, padded_labels, 0.0), jnp.float32),
        jnp.asarray(where),
    )  # [K, G']
    rankable = where.sum(axis=-1) >= 2
    values = np.where(rankable, np.asarray(values, np.float64), 0.0)
    with np.errstate(invalid="ignore", divide="ignore"):
        return np.where(rankable.any(axis=-1), values.sum(axis=-1) / rankable.sum(axis=-1), np.nan)


def r2_pooled(scores: np.ndarray, labels: np.ndarray) -> np.ndarray:
    """Coefficient of determination over all rows pooled, per dimension: float [K].

    R²_k = 1 - sum_i (y_ik - f_ik)^2 / sum_i (y_ik - mean_i y_ik)^2 over rows with finite y and f (as the prior
    PercePiano work reports it). Meaningful only for scores on the label scale; NaN when the labels are constant.
    """
    scores = np.asarray(scores, np.float64)
    labels = np.asarray(labels, np.float64)
    finite = np.isfinite(scores) & np.isfinite(labels)
    count = finite.sum(axis=0)
    y = np.where(finite, labels, 0.0)
    with np.errstate(invalid="ignore", divide="ignore"):
        mean = y.sum(axis=0) / count
        residual = np.where(finite, (labels - scores) ** 2, 0.0).sum(axis=0)
        total = np.where(finite, (labels - mean) ** 2, 0.0).sum(axis=0)
        return np.where(total > 0, 1.0 - residual / total, np.nan)


def intra_group_std(values: np.ndarray, groups: np.ndarray) -> np.ndarray:
    """Mean over groups of the within-group standard deviation, per dimension: float [K].

    std_gk = sqrt(mean_{i in g} (v_ik - mean_{i in g} v_ik)^2) (population std, ddof=0) over finite values;
    groups with fewer than 2 finite values are skipped. Small values mean the scores barely separate performers.
    """
    values = np.asarray(values, np.float64)
    layout = GroupLayout.from_groups(groups)
    g = layout.group_index
    finite = np.isfinite(values)
    shape = (layout.num_groups, values.shape[1])
    count, total, squares = np.zeros(shape), np.zeros(shape), np.zeros(shape)
    np.add.at(count, g, finite.astype(np.float64))
    np.add.at(total, g, np.where(finite, values, 0.0))
    with np.errstate(invalid="ignore", divide="ignore"):
        mean = total / count
        np.add.at(squares, g, np.where(finite, (values - mean[g]) ** 2, 0.0))
        std = np.sqrt(squares / count)
        spread = count >= 2
        return np.where(spread.any(axis=0), np.where(spread, std, 0.0).sum(axis=0) / spread.sum(axis=0), np.nan)


def centre_by_group(values: np.ndarray, groups: np.ndarray) -> np.ndarray:
    """``values`` float [N, K] minus their group's mean (NaN-aware): float [N, K]."""
    values = np.asarray(values, np.float64)
    layout = GroupLayout.from_groups(groups)
    finite = np.isfinite(values)
    shape = (layout.num_groups, values.shape[1])
    count, total = np.zeros(shape), np.zeros(shape)
    np.add.at(count, layout.group_index, finite.astype(np.float64))
    np.add.at(total, layout.group_index, np.where(finite, values, 0.0))
    with np.errstate(invalid="ignore", divide="ignore"):
        return values - (total / count)[layout.group_index]


def ranking_metrics(
    scores: np.ndarray,
    labels: np.ndarray,
    groups: np.ndarray,
    *,
    deadpan: np.ndarray,
    truth: np.ndarray | None = None,
    min_gap: float = DEFAULT_MIN_GAP,
) -> dict[str, np.ndarray]:
    """Every per-dimension metric of one set of rows: name -> float/int array [K].

    Keys: pairwise_accuracy (all pairs), pairwise_accuracy_gap (label gap >= ``min_gap``),
    pairwise_accuracy_no_score (pairs without a ``deadpan`` row), their num_pairs*, kendall_tau_b, ndcg, r2,
    intra_group_std (of the scores), label_intra_group_std (of the labels). When ``truth`` [N, K] has finite values
    (simulated corpora) also truth_accuracy (scores against the truth), label_truth_accuracy (the noisy labels
    against the truth: the corpus's own ceiling) and num_pairs_truth.
    """
    all_pairs = pairwise_accuracy(scores, labels, groups)
    gap = pairwise_accuracy(scores, labels, groups, min_gap=min_gap)
    no_score = pairwise_accuracy(scores, labels, groups, exclude=deadpan)
    result = {
        "pairwise_accuracy": all_pairs.accuracy,
        "pairwise_accuracy_gap": gap.accuracy,
        "pairwise_accuracy_no_score": no_score.accuracy,
        "num_pairs": all_pairs.num_pairs,
        "num_pairs_gap": gap.num_pairs,
        "num_pairs_no_score": no_score.num_pairs,
        "kendall_tau_b": kendall_tau_b(scores, labels, groups),
        "ndcg": ndcg(scores, labels, groups),
        "r2": r2_pooled(scores, labels),
        "intra_group_std": intra_group_std(scores, groups),
        "label_intra_group_std": intra_group_std(labels, groups),
    }
    if truth is not None and np.isfinite(truth).any():
        against_truth = pairwise_accuracy(scores, truth, groups)
        result["truth_accuracy"] = against_truth.accuracy
        result["label_truth_accuracy"] = pairwise_accuracy(labels, truth, groups).accuracy
        result["num_pairs_truth"] = against_truth.num_pairs
    return result
