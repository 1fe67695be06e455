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

from crescend_jax.data.pairs import outcome_accuracy, pair_outcome

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


@dataclasses.dataclass(frozen=True)
class PairOutcomes:
    """The outcome of every within-group pair, per dimension: what the bootstrap resamples.

    first, second: int [P] rows of each pair; group: int [P] dense index of its group into ``group_ids``;
    group_ids: [G] the distinct group ids, sorted (``GroupLayout`` order); correct: float [P, K], 1 when the pair is
    ordered as the labels order it, 0 when reversed, 0.5 for a predicted tie, NaN when the pair is unusable on that
    dimension (label tie, label gap below ``min_gap``, a row excluded, a non-finite label or score): the rule of
    `crescend_jax.data.pairs`, which the trainer's checkpoint selection uses too.
    """

    first: np.ndarray
    second: np.ndarray
    group: np.ndarray
    group_ids: np.ndarray
    correct: np.ndarray

    @property
    def num_groups(self) -> int:
        return len(self.group_ids)

    def accuracy(self) -> PairwiseAccuracy:
        """accuracy_k = sum_p correct_pk / #{p: correct_pk finite}; NaN where no pair is usable."""
        accuracy, num_pairs = outcome_accuracy(self.correct)
        return PairwiseAccuracy(accuracy=accuracy, num_pairs=num_pairs)


def _usable_label_pairs(
    labels: np.ndarray, i: np.ndarray, j: np.ndarray, min_gap: float, exclude: np.ndarray | None
) -> tuple[np.ndarray, np.ndarray]:
    """label_diff float [P, K] = y_i - y_j and usable bool [P, K]: |diff| >= min_gap and neither row excluded (label
    ties and non-finite gaps are `data.pairs.pair_outcome`'s to leave out)."""
    label_diff = labels[i] - labels[j]
    with np.errstate(invalid="ignore"):
        usable = np.abs(label_diff) >= min_gap
    if exclude is not None:
        exclude = np.asarray(exclude, bool)
        if exclude.shape != (len(labels),):
            raise ValueError(f"exclude must be a bool [N] mask with N = {len(labels)}, got shape {exclude.shape}")
        usable &= ~(exclude[i] | exclude[j])[:, None]
    return label_diff, usable


def pair_outcomes(
    scores: np.ndarray,
    labels: np.ndarray,
    groups: np.ndarray,
    *,
    min_gap: float = 0.0,
    exclude: np.ndarray | None = None,
) -> PairOutcomes:
    """Per-pair outcomes of a scorer: every within-group pair (i, j), ``correct`` float [P, K].

    With d = y_ik - y_jk and s = f_ik - f_jk: correct = 1[sign(s) = sign(d)] + 0.5 * 1[s = 0] where the pair is
    usable (d and s finite, d != 0, |d| >= ``min_gap``, neither row in ``exclude``), NaN elsewhere
    (`data.pairs.pair_outcome` with margin s). Every pair of the groups is listed (unusable ones as NaN), so two
    scorers of the same rows have the same pair layout.

    Args: scores, labels: float [N, K]; groups: [N]; min_gap: smallest |label difference| kept; exclude: bool [N].
    """
    scores, labels = _check(scores, labels, groups)
    layout = GroupLayout.from_groups(groups)
    i, j, g = layout.pairs()
    label_diff, usable = _usable_label_pairs(labels, i, j, min_gap, exclude)
    return PairOutcomes(
        first=i, second=j, group=g, group_ids=np.unique(np.asarray(groups)),
        correct=pair_outcome(scores[i] - scores[j], label_diff, usable),
    )


def pair_outcomes_from_probabilities(
    probabilities: np.ndarray,
    first: np.ndarray,
    second: np.ndarray,
    labels: np.ndarray,
    groups: np.ndarray,
    *,
    min_gap: float = 0.0,
    exclude: np.ndarray | None = None,
) -> PairOutcomes:
    """Per-pair outcomes of a comparator that outputs q = P(row ``first`` above row ``second``), float [P, K].

    correct = 1 when q > 0.5 and y_first > y_second or q < 0.5 and y_first < y_second, 0 when the order disagrees,
    0.5 when q = 0.5 exactly; NaN where the pair is unusable (same label rules as `pair_outcomes`, or q not finite):
    `data.pairs.pair_outcome` with margin q - 1/2.
    The pairs are the caller's (any subset, any orientation), each inside one group.

    Args: probabilities: float [P, K]; first, second: int [P] rows; labels: float [N, K]; groups: [N];
      min_gap, exclude: as in `pair_outcomes`.
    """
    labels = np.asarray(labels, np.float64)
    probabilities = np.asarray(probabilities, np.float64)
    first, second = np.asarray(first, np.int64), np.asarray(second, np.int64)
    if labels.ndim != 2 or len(groups) != len(labels):
        raise ValueError(f"labels {labels.shape} must be [N, K] with N = len(groups) = {len(groups)}")
    if first.shape != second.shape or first.ndim != 1 or probabilities.shape != (len(first), labels.shape[1]):
        raise ValueError(
            f"probabilities {probabilities.shape} must be [P, K] with P = len(first) = len(second) "
            f"({first.shape}, {second.shape}) and K = {labels.shape[1]}"
        )
    layout = GroupLayout.from_groups(groups)
    g = layout.group_index[first]
    if np.any(g != layout.group_index[second]) or np.any(first == second):
        raise ValueError("every pair must join two different rows of the same group")
    label_diff, usable = _usable_label_pairs(labels, first, second, min_gap, exclude)
    return PairOutcomes(
        first=first, second=second, group=g, group_ids=np.unique(np.asarray(groups)),
        correct=pair_outcome(probabilities - 0.5, label_diff, usable),
    )


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
    Predicted ties count 0.5 (a coin flip), so a constant predictor scores exactly 0.5. The per-pair outcomes are
    `pair_outcomes` (this is their mean).

    Args: scores, labels: float [N, K]; groups: [N]; min_gap: smallest |label difference| kept; exclude: bool [N].
    Returns: PairwiseAccuracy with accuracy float [K] and num_pairs int [K].
    """
    return pair_outcomes(scores, labels, groups, min_gap=min_gap, exclude=exclude).accuracy()


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


NDCG_GAINS = ("identity", "rank", "standardised")


def _identity_gain(label: jnp.ndarray) -> jnp.ndarray:
    return label


@jax.jit
def _list_ndcg(scores: jnp.ndarray, gains: jnp.ndarray, where: jnp.ndarray) -> jnp.ndarray:
    """rax NDCG of each list: float [..., L] inputs -> float [...] (``gains`` are used as given)."""
    return rax.ndcg_metric(scores, gains, where=where, gain_fn=_identity_gain, reduce_fn=None)


def _bucket(size: int) -> int:
    """The next power of two >= size, so that jit compiles for few distinct shapes."""
    return 1 << max(int(size) - 1, 0).bit_length()


def _within_list_gains(labels: np.ndarray, where: np.ndarray, gain: str) -> np.ndarray:
    """Gains of each list member, float [K, G, L] from labels [K, G, L] and the member mask ``where`` (0 elsewhere).

    identity: g_i = y_i. rank: g_i = r_i / (n - 1) with r_i = #{j: y_j < y_i} + #{j != i: y_j = y_i} / 2 the
    0-based mid-rank among the list's n members (lowest 0, highest 1). standardised: g_i = (y_i - min_j y_j) / sd
    with sd the list's population standard deviation (the within-list z-score shifted so the lowest member gets 0);
    0 when all labels are equal.
    """
    if gain == "identity":
        return np.where(where, labels, 0.0)
    y = np.where(where, labels, 0.0)
    n = where.sum(axis=-1, keepdims=True)
    if gain == "rank":
        both = where[..., :, None] & where[..., None, :]
        below = (both & (y[..., None, :] < y[..., :, None])).sum(axis=-1)
        tied = (both & (y[..., None, :] == y[..., :, None])).sum(axis=-1) - 1
        with np.errstate(invalid="ignore", divide="ignore"):
            return np.where(where & (n > 1), (below + 0.5 * tied) / (n - 1), 0.0)
    if gain == "standardised":
        with np.errstate(invalid="ignore", divide="ignore"):
            mean = y.sum(axis=-1, keepdims=True) / n
            sd = np.sqrt(np.where(where, (y - mean) ** 2, 0.0).sum(axis=-1, keepdims=True) / n)
            lowest = np.where(where, y, np.inf).min(axis=-1, keepdims=True)
            return np.where(where & (sd > 0), (y - lowest) / sd, 0.0)
    raise ValueError(f"unknown NDCG gain {gain!r}; expected one of {NDCG_GAINS}")


@dataclasses.dataclass(frozen=True)
class Ndcg:
    """ndcg: float [K] mean NDCG over groups; random: float [K] its exact expected value for a uniformly random order
    of each group (same groups, same gains); num_groups: int [K] groups averaged."""

    ndcg: np.ndarray
    random: np.ndarray
    num_groups: np.ndarray


def ndcg_with_random(scores: np.ndarray, labels: np.ndarray, groups: np.ndarray, *, gain: str = "identity") -> Ndcg:
    """NDCG of each group's ranking, averaged over groups, and the same for a random order, per dimension.

    For a group with n ranked members (finite label and score), gains g_i (see ``gain``) and discounts
    D(p) = 1 / log2(1 + p) at 1-based position p: dcg(f) = sum_i g_i D(rank_f(i)), ndcg = dcg(f) / dcg(ideal), where
    the ideal order sorts by gain. A uniformly random order puts every member at every position with probability
    1/n, so E[dcg] = (sum_i g_i) (1/n) sum_{p=1..n} D(p) exactly (no sampling), and random = E[dcg] / dcg(ideal).

    gain: "identity" g = y (the labels as graded relevance; on PercePiano every member's label is near the group's
    mean, so any order scores close to 1 and the value carries little signal); "rank" g = mid-rank of y in the group
    scaled to [0, 1]; "standardised" g = (y - min y) / sd(y) in the group. The last two depend only on the order and
    spread of labels *inside* the group, so a random order scores clearly below 1.

    Computed by ``rax.ndcg_metric`` on lists padded to [K, G, L] with ``where`` marking real members (rax's
    ``segments=`` builds an N x N mask; the padded layout is G x L x L at most). Tied scores are ranked by row order
    (rax's default ``rank_fn``). Groups with fewer than 2 ranked members, or (rank/standardised) whose labels are all
    equal, are skipped; NaN when none is left.
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
    gains = _within_list_gains(padded_labels, where, gain)
    values = _list_ndcg(
        jnp.asarray(np.where(where, padded_scores, 0.0), jnp.float32),
        jnp.asarray(gains, jnp.float32),
        jnp.asarray(where),
    )  # [K, G']
    count = where.sum(axis=-1)
    rankable = count >= 2
    if gain != "identity":
        spread = np.where(where, gains, -np.inf).max(axis=-1) - np.where(where, gains, np.inf).min(axis=-1)
        rankable &= spread > 0  # labels not all equal
    discounts = 1.0 / np.log2(2.0 + np.arange(padded.shape[1]))  # D(p) at p = 1..L'
    mean_discount = np.cumsum(discounts)[np.maximum(count - 1, 0)] / np.maximum(count, 1)  # [K, G']
    ideal = np.sort(gains, axis=-1)[..., ::-1] @ discounts  # members' gains first (padding has gain 0, sorts last)
    with np.errstate(invalid="ignore", divide="ignore"):
        random = np.where(rankable, gains.sum(axis=-1) * mean_discount / ideal, 0.0)
        values = np.where(rankable, np.asarray(values, np.float64), 0.0)
        num_groups = rankable.sum(axis=-1)
        return Ndcg(
            ndcg=np.where(num_groups > 0, values.sum(axis=-1) / num_groups, np.nan),
            random=np.where(num_groups > 0, random.sum(axis=-1) / num_groups, np.nan),
            num_groups=num_groups.astype(np.int64),
        )


def ndcg(scores: np.ndarray, labels: np.ndarray, groups: np.ndarray, *, gain: str = "identity") -> np.ndarray:
    """Mean NDCG over groups per dimension, float [K] (``ndcg_with_random(...).ndcg``; gain = label by default).

    ndcg_g = dcg(f, y) / dcg(y, y) with dcg(f, y) = sum_i g(y_i) / log2(1 + rank_f(i)). Groups with fewer than 2 rows
    with finite label and score are skipped; NaN when none is left.
    """
    return ndcg_with_random(scores, labels, groups, gain=gain).ndcg


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
    pairwise_accuracy_no_score (pairs without a ``deadpan`` row), their num_pairs*, kendall_tau_b, ndcg (gain =
    label), ndcg_rank and ndcg_standardised (within-group gains, see `ndcg_with_random`) with ndcg_rank_random and
    ndcg_standardised_random (their exact expectation for a random order of each group), r2, intra_group_std (of
    the scores), label_intra_group_std (of the labels). When ``truth`` [N, K] has finite values
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
    for gain in ("rank", "standardised"):
        within = ndcg_with_random(scores, labels, groups, gain=gain)
        result[f"ndcg_{gain}"] = within.ndcg
        result[f"ndcg_{gain}_random"] = within.random
    if truth is not None and np.isfinite(truth).any():
        against_truth = pairwise_accuracy(scores, truth, groups)
        result["truth_accuracy"] = against_truth.accuracy
        result["label_truth_accuracy"] = pairwise_accuracy(labels, truth, groups).accuracy
        result["num_pairs_truth"] = against_truth.num_pairs
    return result
