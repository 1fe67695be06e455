"""One ranking head per target column, and the mixing weight between the ratings' and the derived targets' terms.

A run's label columns are named by ``data.targets`` (`crescend_jax.data.targets.target_names`, from the config alone):
the 19 rating dimensions, the K group-relative derived targets, or both (T columns). A ranking approach has one head
(output) per column, and its ranking loss is split by kind of column:

    L_rank = L(rating columns) + w * L(derived columns)

each term the approach's own pairwise loss (A: `losses.ranking.margin_ranking_loss`, B: `losses.comparison.
block_comparison_loss`) over its columns, normalised by its own pair count (a term's scale does not depend on how many
pairs the other corpus contributes), with ``model.loss.min_label_gap`` for the ratings (their [0, 1] scale) and
``model.loss.derived_min_label_gap`` for the derived targets (in robust within-group SDs, `data.targets`).
w = ``model.loss.derived_weight`` (the mixing weight; 0 drops the derived term, so the derived heads receive no
gradient at all). A term over columns that no row of the batch defines costs 0 (every NaN gap is skipped), so a batch
of one corpus only trains its own heads. With ratings alone (the default) the split is the single term of before.
"""

from __future__ import annotations

import dataclasses
from typing import Any, Callable

import jax
import jax.numpy as jnp
import ml_collections
import numpy as np

from crescend_jax.config import ConfigError
from crescend_jax.data.targets import TargetError, derived_columns, target_names

DEFAULT_DERIVED_WEIGHT = 1.0
DEFAULT_DERIVED_MIN_LABEL_GAP = 0.1


@dataclasses.dataclass(frozen=True)
class TargetColumns:
    """The head layout of a run (hashable: part of an approach's frozen objective).

    names: the T column names; rating, derived: the column indices of each kind (sorted); derived_weight: w;
    rating_min_gap, derived_min_gap: the label gaps at or below which a pair is a tie, per kind.
    """

    names: tuple[str, ...]
    rating: tuple[int, ...]
    derived: tuple[int, ...]
    derived_weight: float
    rating_min_gap: float
    derived_min_gap: float

    @property
    def num_targets(self) -> int:
        return len(self.names)

    @property
    def plain(self) -> bool:
        """Ratings only: the single term over every column of before."""
        return not self.derived


def num_targets(config: ml_collections.ConfigDict) -> int:
    """T: the number of label columns (heads) of ``config`` (19 unless ``data.targets`` says otherwise)."""
    try:
        return len(target_names(config.get("data") or {}))
    except TargetError as err:
        raise ConfigError(str(err)) from None


def target_names_of(config: ml_collections.ConfigDict) -> tuple[str, ...]:
    """The label-column names of ``config`` (`target_names` of its data section; the 19 ratings when it has none)."""
    try:
        return tuple(target_names(config.get("data") or {}))
    except TargetError as err:
        raise ConfigError(str(err)) from None


def target_columns(config: ml_collections.ConfigDict) -> TargetColumns:
    """The `TargetColumns` of ``config`` (checked: w >= 0, gaps >= 0, at least one term that trains)."""
    try:
        names = target_names(config.get("data") or {})
    except TargetError as err:
        raise ConfigError(str(err)) from None
    loss = config.model.get("loss") or ml_collections.ConfigDict()
    derived = derived_columns(names)
    weight = float(loss.get("derived_weight", DEFAULT_DERIVED_WEIGHT))
    gap = float(loss.get("derived_min_label_gap", DEFAULT_DERIVED_MIN_LABEL_GAP))
    if weight < 0 or gap < 0:
        raise ConfigError(f"model.loss.derived_weight={weight} and model.loss.derived_min_label_gap={gap} must be >= 0")
    return TargetColumns(names=tuple(names), rating=tuple(int(k) for k in np.flatnonzero(~derived)),
                         derived=tuple(int(k) for k in np.flatnonzero(derived)), derived_weight=weight,
                         rating_min_gap=float(loss.get("min_label_gap", 0.0)), derived_min_gap=gap)


def ratings_only(config: ml_collections.ConfigDict, approach: str) -> None:
    """Raises `ConfigError` when ``config`` trains on derived targets, which ``approach`` does not support."""
    if any(derived_columns(target_names(config.get("data") or {}))):
        raise ConfigError(f"approach {approach!r} ranks the 19 ratings only; data.targets="
                          f"{config.data.get('targets')!r} needs approach A (contrastive) or B (siamese)")


Term = Callable[[np.ndarray, float], tuple[jax.Array, dict[str, jax.Array]]]


def split_terms(columns: TargetColumns, term: Term) -> tuple[jax.Array, dict[str, Any]]:
    """L_rank = term(rating columns) + w * term(derived columns) (module doc), with each term's diagnostics prefixed
    "ratings_" / "derived_". ``term(index, min_gap)`` computes an approach's pairwise loss on the columns ``index``
    (int [C], static) with ``min_gap``; a term without columns, or the derived term with w = 0, is not computed."""
    total = jnp.zeros((), jnp.float32)
    diagnostics: dict[str, Any] = {}
    for kind, index, weight, gap in (("ratings", columns.rating, 1.0, columns.rating_min_gap),
                                     ("derived", columns.derived, columns.derived_weight, columns.derived_min_gap)):
        if not index or weight == 0:
            continue
        loss, own = term(np.asarray(index, np.int32), gap)
        total = total + weight * loss
        diagnostics.update({f"{kind}_{name}": value for name, value in own.items()})
    return total, diagnostics
