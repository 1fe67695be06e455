"""The rater-noise ceiling of within-group pairwise accuracy, estimated from the raw ratings by split halves.

Model: a pair's label difference is its true difference plus independent rater noise. The reliability r_full of
full-panel pair differences is estimated by splitting each segment's raters into random halves, correlating the
half-A and half-B pair differences, and stepping up with Spearman-Brown. A predictor that knew the truth would
agree in sign with the labels with probability 0.5 + asin(sqrt(r_full)) / pi (two bivariate-normal variables with
correlation sqrt(r_full) share a sign that often): no model can be expected to beat that against these labels.

The ceiling is only as good as the ratings it rests on: `NoiseCeiling` counts the segments used and the rows that
had no rating at all, and `rating_agreement` measures how far the raters' plain means are from the label file. On
PercePiano the label means were not built from every rating: rater rows holding an answer outside the 1..7 scale
were dropped whole (see `label_file_ratings`), so the ceiling should be computed from the same filtered ratings.
"""

from __future__ import annotations

import dataclasses

import numpy as np

from crescend_jax.evaluate.metrics import GroupLayout

DEFAULT_NUM_SPLITS = 50


RATING_SCALE = 7  # PercePiano raters answered on 1..7; 0 means "no answer"


@dataclasses.dataclass(frozen=True)
class NoiseCeiling:
    """ceiling: float [K] best reachable pairwise accuracy; reliability: float [K] mean Spearman-Brown r_full;
    num_pairs: int [K] pairs with both half-panel differences finite (first split); num_segments: segments with
    >= 2 raters (not excluded), the segments the ceiling rests on; num_splits: random half splits averaged;
    num_rows: rows given; num_unrated: rows without a single finite rating (a labelled row with no ratings means
    the label and the ratings disagree: worth a warning); num_single_rater: rows with exactly one rater (no halves).
    A rater counts when at least one of their K ratings is finite."""

    ceiling: np.ndarray
    reliability: np.ndarray
    num_pairs: np.ndarray
    num_segments: int
    num_splits: int
    num_rows: int = 0
    num_unrated: int = 0
    num_single_rater: int = 0

    @property
    def warning(self) -> str | None:
        """A sentence for the report when some rows had no rating (None otherwise)."""
        if self.num_unrated == 0:
            return None
        return (
            f"{self.num_unrated} of {self.num_rows} rows have no rating at all and {self.num_single_rater} only one "
            f"rater: the noise ceiling rests on {self.num_segments} segments"
        )


def ceiling_from_reliability(reliability: np.ndarray) -> np.ndarray:
    """ceiling = 0.5 + asin(sqrt(r)) / pi for r > 0, 0.5 for r <= 0 (NaN stays NaN); float [K] -> float [K]."""
    reliability = np.asarray(reliability, np.float64)
    clipped = np.clip(np.nan_to_num(reliability, nan=0.0), 0.0, 1.0)
    return np.where(np.isnan(reliability), np.nan, 0.5 + np.arcsin(np.sqrt(clipped)) / np.pi)


def fraction_of_ceiling(accuracy: np.ndarray, ceiling: np.ndarray) -> np.ndarray:
    """(accuracy - 0.5) / (ceiling - 0.5): 0 at chance, 1 at the ceiling; NaN where ceiling <= 0.5. Shapes [K]."""
    accuracy = np.asarray(accuracy, np.float64)
    ceiling = np.asarray(ceiling, np.float64)
    headroom = ceiling - 0.5
    with np.errstate(invalid="ignore", divide="ignore"):
        return np.where(headroom > 0, (accuracy - 0.5) / headroom, np.nan)


def _padded_ratings(ratings: list[np.ndarray], num_dims: int) -> tuple[np.ndarray, np.ndarray]:
    """float [N, R_max, K] ratings of the raters with at least one finite rating (NaN past each segment's raters)
    and int [N] their counts."""
    panels = []
    for row, panel in enumerate(ratings):
        panel = np.asarray(panel, np.float64)
        if panel.size and (panel.ndim != 2 or panel.shape[1] != num_dims):
            raise ValueError(f"ratings of row {row} have shape {panel.shape}; expected [raters, {num_dims}]")
        panel = panel.reshape(-1, num_dims) if panel.size else np.zeros((0, num_dims))
        panels.append(panel[np.isfinite(panel).any(axis=1)])
    counts = np.array([len(p) for p in panels], dtype=np.int64)
    padded = np.full((len(panels), int(counts.max(initial=0)), num_dims), np.nan)
    for row, panel in enumerate(panels):
        padded[row, : len(panel)] = panel
    return padded, counts


def _masked_mean(values: np.ndarray, mask: np.ndarray) -> np.ndarray:
    """Mean over axis 1 of ``values`` [N, R, K] where ``mask`` [N, R] and the value is finite: [N, K], NaN if none."""
    use = mask[:, :, None] & np.isfinite(values)
    with np.errstate(invalid="ignore", divide="ignore"):
        return np.where(use, values, 0.0).sum(axis=1) / use.sum(axis=1)


def _uncentred_correlation(a: np.ndarray, b: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """sum a b / sqrt(sum a^2 sum b^2) over rows where both are finite, per column of [P, K]; and that count [K].

    Uncentred because a pair's orientation (i, j) vs (j, i) is arbitrary: differences are symmetric about 0, and
    this estimate, unlike a centred one, does not change when a pair is flipped.
    """
    finite = np.isfinite(a) & np.isfinite(b)
    a, b = np.where(finite, a, 0.0), np.where(finite, b, 0.0)
    with np.errstate(invalid="ignore", divide="ignore"):
        return (a * b).sum(axis=0) / np.sqrt((a * a).sum(axis=0) * (b * b).sum(axis=0)), finite.sum(axis=0)


def noise_ceiling(
    ratings: list[np.ndarray],
    groups: np.ndarray,
    *,
    num_splits: int = DEFAULT_NUM_SPLITS,
    seed: int = 0,
    exclude: np.ndarray | None = None,
) -> NoiseCeiling:
    """Split-half noise ceiling of within-group pairwise accuracy, per dimension.

    For each of ``num_splits`` seeded splits: every segment's raters (rows of ``ratings[i]``, float [R_i, K],
    NaN = missing) are shuffled into halves A (floor(R_i / 2) raters) and B (the rest); half means m^A, m^B
    [N, K] are NaN-aware; over all pairs (i < j) inside a group, r = corr(m^A_i - m^A_j, m^B_i - m^B_j)
    (uncentred, see ``_uncentred_correlation``) per dimension; r_full = 2r / (1 + r) (Spearman-Brown, clipped
    to >= -1). reliability = mean of r_full over splits; ceiling = 0.5 + asin(sqrt(reliability)) / pi (0.5 when
    reliability <= 0). Segments with fewer than 2 raters have no halves and are skipped; pairs touching a row with
    ``exclude[i]`` (bool [N], e.g. Score renditions) are left out, giving the ceiling of that pair subset.

    Args: ratings: N arrays [R_i, K]; groups: [N] same-music group ids; num_splits: S; seed: the splits' seed;
      exclude: optional bool [N].
    """
    if len(ratings) != len(groups):
        raise ValueError(f"{len(ratings)} rating panels but {len(groups)} group ids: one panel per row is needed")
    if num_splits < 1:
        raise ValueError(f"num_splits must be >= 1, got {num_splits}")
    num_dims = next((np.shape(r)[1] for r in ratings if np.ndim(r) == 2), 0)
    padded, counts = _padded_ratings(ratings, num_dims)
    usable = counts >= 2
    if exclude is not None:
        usable &= ~np.asarray(exclude, bool)
    i, j, _ = GroupLayout.from_groups(groups).pairs()
    keep = usable[i] & usable[j]
    i, j = i[keep], j[keep]
    half = (counts // 2)[:, None]
    real = np.arange(padded.shape[1])[None, :] < counts[:, None]
    rng = np.random.default_rng(seed)
    stepped_up = np.zeros((num_splits, num_dims))
    num_pairs = np.zeros(num_dims, np.int64)
    for split in range(num_splits):
        shuffle_keys = np.where(real, rng.random(real.shape), np.inf)
        rank = np.argsort(np.argsort(shuffle_keys, axis=1), axis=1)
        mean_a = _masked_mean(padded, real & (rank < half))
        mean_b = _masked_mean(padded, real & (rank >= half))
        r, count = _uncentred_correlation(mean_a[i] - mean_a[j], mean_b[i] - mean_b[j])
        with np.errstate(invalid="ignore", divide="ignore"):
            stepped_up[split] = np.maximum(2 * r / (1 + r), -1.0)
        if split == 0:
            num_pairs = count.astype(np.int64)
    reliability = stepped_up.mean(axis=0)
    return NoiseCeiling(
        ceiling=ceiling_from_reliability(reliability),
        reliability=reliability,
        num_pairs=num_pairs,
        num_segments=int(usable.sum()),
        num_splits=num_splits,
        num_rows=len(ratings),
        num_unrated=int(np.sum(counts == 0)),
        num_single_rater=int(np.sum(counts == 1)),
    )


def label_file_ratings(answers: np.ndarray, *, scale: int = RATING_SCALE) -> np.ndarray:
    """One segment's individual ratings as PercePiano's label file used them: float [R', K] in label units.

    ``answers`` float [R, K] are one segment's raw answers, one row per rater (row of the ratings CSV): 1..``scale``,
    0 = no answer, NaN = blank or unreadable, values above ``scale`` out of the scale (PercePiano has 342 eights).
    Rule (reproduced from the files, see the module docstring): a rater row holding any answer above ``scale`` is
    dropped whole; in the remaining rows 0 and anything outside 1..``scale`` is missing (NaN); values are divided by
    ``scale``. The label mean of a segment is then the NaN-aware mean over the kept rows. Returns R' <= R rows.
    """
    answers = np.asarray(answers, np.float64)
    if answers.ndim != 2:
        raise ValueError(f"answers must be [raters, K], got shape {answers.shape}")
    kept = answers[~(answers > scale).any(axis=1)]
    on_scale = (kept >= 1) & (kept <= scale)
    return np.where(on_scale, kept, np.nan) / scale


@dataclasses.dataclass(frozen=True)
class RatingAgreement:
    """How far the raters' plain means are from the labels. share_differing: share of cells (row, dimension) with
    both finite whose |mean - label| > tolerance; mean_abs_difference, max_abs_difference: over those cells (label
    units); num_cells: cells compared; num_rows_differing: rows with at least one differing cell; num_rows: rows with
    a compared cell; num_unrated: rows without any finite rating; tolerance: the threshold used."""

    share_differing: float
    mean_abs_difference: float
    max_abs_difference: float
    num_cells: int
    num_rows_differing: int
    num_rows: int
    num_unrated: int
    tolerance: float


def rating_agreement(ratings: list[np.ndarray], labels: np.ndarray, *, tolerance: float = 0.01) -> RatingAgreement:
    """Compares each row's plain rater mean m_ik = mean of finite ratings[i][:, k] with labels[i, k].

    Args: ratings: N arrays [R_i, K] (label units, NaN = missing); labels: float [N, K]; tolerance: a cell differs
      when |m - y| > tolerance (0.01 on the 0..1 label scale is 0.07 of a 1..7 answer).
    """
    labels = np.asarray(labels, np.float64)
    if labels.ndim != 2 or len(labels) != len(ratings):
        raise ValueError(f"labels {labels.shape} must be [N, K] with N = {len(ratings)} rating panels")
    padded, counts = _padded_ratings(ratings, labels.shape[1])
    means = _masked_mean(padded, np.ones(padded.shape[:2], bool))
    compared = np.isfinite(means) & np.isfinite(labels)
    difference = np.abs(np.where(compared, means - labels, 0.0))
    differing = compared & (difference > tolerance)
    num_cells = int(compared.sum())
    return RatingAgreement(
        share_differing=float(differing.sum() / num_cells) if num_cells else float("nan"),
        mean_abs_difference=float(difference.sum() / num_cells) if num_cells else float("nan"),
        max_abs_difference=float(difference.max(initial=0.0)) if num_cells else float("nan"),
        num_cells=num_cells,
        num_rows_differing=int(differing.any(axis=1).sum()),
        num_rows=int(compared.any(axis=1).sum()),
        num_unrated=int(np.sum(counts == 0)),
        tolerance=tolerance,
    )
