"""Train/test splits by whole compositions or whole works (pure numpy).

Segments of one composition share music across groups (PercePiano's 16-bar segments are pairs of its 8-bar ones),
so a split never cuts below a composition. ``data.split_level = "work"`` keeps the compositions of one work
together (PercePiano's variations of one set and movements of one sonata share a theme and pianists). A row's work is
the one its corpus names (the table's ``works`` column, e.g. ASAP's ``<composer>/<title>`` shared by a score folder and
its no-repeat twin); where none is named (""), it is told from the composition: the first two fields of a PercePiano
composition name (e.g. ``Beethoven_WoO80`` for ``Beethoven_WoO80_var1``), the composition itself for other corpora.
Every function takes per-row arrays [N] and returns bool masks [N].
"""

from __future__ import annotations

from typing import Sequence

import numpy as np

from crescend_jax.errors import ConfigError, DataError

SPLIT_LEVELS = ("composition", "work")


def work_of(composition: str, corpus: str) -> str:
    """The work a composition belongs to: PercePiano ``<composer>_<catalogue>_<part>`` -> ``<composer>_<catalogue>``;
    every other corpus: the composition itself."""
    if corpus == "percepiano":
        return "_".join(str(composition).split("_")[:2])
    return str(composition)


def split_units(compositions: np.ndarray, level: str, corpus: str, works: np.ndarray | None = None) -> np.ndarray:
    """str [N]: the unit each row is split by: its composition, or its work (``level="work"``): ``works[i]`` when
    given and not "", else `work_of` its composition. ``works``: str [N] or None (the table's ``works`` column)."""
    if level not in SPLIT_LEVELS:
        raise SplitConfigError(f"unknown data.split_level {level!r}; use one of {SPLIT_LEVELS}")
    compositions = np.asarray(compositions).astype(str)
    if level == "composition":
        return compositions
    named = np.full(len(compositions), "", dtype=object) if works is None else np.asarray(works).astype(str)
    if len(named) != len(compositions):
        raise SplitError(f"works has {len(named)} rows but compositions has {len(compositions)}")
    return np.array([work or work_of(c, corpus) for c, work in zip(compositions, named)], dtype=object).astype(str)


class SplitError(DataError):
    """A split that cannot be made or that cannot be evaluated on this data (exit 1)."""


class SplitConfigError(SplitError, ConfigError):
    """A split the config asks for that the data cannot give: an unknown split level or composition, too few or too
    many folds, nothing to hold out. A config mistake (exit 2), refused before a workdir exists."""


def composition_folds(compositions: np.ndarray, num_folds: int, seed: int) -> list[np.ndarray]:
    """Bool test masks [N], one per fold; every composition is in exactly one test fold.

    num_folds = 0: one fold per composition (leave-one-composition-out, in sorted composition order).
    num_folds = k >= 2: compositions are shuffled by ``seed`` and dealt largest-first to the fold with the fewest
    rows so far, which balances the folds by row count.
    """
    compositions = np.asarray(compositions)
    names, inverse, counts = np.unique(compositions, return_inverse=True, return_counts=True)
    if num_folds == 0:
        return [inverse == c for c in range(len(names))]
    if num_folds < 2:
        raise SplitConfigError(f"num_folds={num_folds}: use 0 (one fold per composition) or at least 2")
    if num_folds > len(names):
        raise SplitConfigError(
            f"num_folds={num_folds} but there are only {len(names)} compositions ({', '.join(map(str, names))}); "
            f"use num_folds <= {len(names)} or 0 for one fold per composition"
        )
    shuffled = np.random.default_rng(seed).permutation(len(names))
    order = shuffled[np.argsort(-counts[shuffled], kind="stable")]
    fold_rows = np.zeros(num_folds, dtype=np.int64)
    fold_of = np.empty(len(names), dtype=np.int64)
    for c in order:
        fold = int(np.argmin(fold_rows))
        fold_of[c] = fold
        fold_rows[fold] += counts[c]
    return [fold_of[inverse] == f for f in range(num_folds)]


def holdout_split(compositions: np.ndarray, test_compositions: Sequence[str],
                  units: np.ndarray | None = None) -> np.ndarray:
    """Bool test mask [N]: rows whose composition is in ``test_compositions``; with ``units`` [N] (e.g. works), a name
    may also be a unit, and every row of a named row's unit is held out with it (a split never cuts a unit)."""
    compositions = np.asarray(compositions)
    if isinstance(test_compositions, str):
        test_compositions = (test_compositions,)
    known = set(compositions.tolist()) | (set() if units is None else set(np.asarray(units).tolist()))
    unknown = sorted(set(test_compositions) - known)
    if unknown:
        raise SplitConfigError(
            f"data.test_compositions {unknown} are not in the data; known compositions: {', '.join(sorted(known))}"
        )
    if not test_compositions:
        raise SplitConfigError("test_compositions is empty; name at least one composition to hold out")
    named = np.isin(compositions, list(test_compositions))
    if units is None:
        return named
    units = np.asarray(units)
    named |= np.isin(units, list(test_compositions))
    return np.isin(units, units[named])


def evaluation_splits(
    compositions: np.ndarray, num_folds: int, test_compositions: Sequence[str], seed: int,
    units: np.ndarray | None = None, test_fraction: float = 0.0,
) -> list[np.ndarray]:
    """The test masks a ``config.data`` section asks for: a single hold-out when ``test_compositions`` is
    non-empty; else, when ``test_fraction`` > 0, a single hold-out of whole units drawn by ``seed`` (`heldout_units`);
    else `composition_folds` over ``units`` (default: the compositions; e.g. works)."""
    if test_compositions:
        return [holdout_split(compositions, test_compositions, units)]
    if test_fraction > 0:
        return [heldout_units(compositions if units is None else units, test_fraction, seed)]
    return composition_folds(compositions if units is None else units, num_folds, seed)


def heldout_units(units: np.ndarray, fraction: float, seed: int) -> np.ndarray:
    """bool [N]: a held-out test set of whole units (compositions or works, ``units`` [N]) holding about ``fraction``
    of the rows (``data.test_fraction``: ASAP's held-out works, never trained on), drawn as `validation_mask` draws
    (units in an order shuffled by ``seed``, added while that brings the held-out share closer to ``fraction``; at
    least one unit held out, at least one kept). Raises `SplitError` for a fraction outside (0, 1) or too few units."""
    if not 0 < fraction < 1:
        raise SplitError(f"data.test_fraction={fraction} must be in (0, 1)")
    mask = validation_mask(units, fraction, seed)
    if mask is None:
        raise SplitError(f"data.test_fraction={fraction} needs at least {max(2, round(1 / fraction))} split units; "
                         f"there are {len(np.unique(np.asarray(units)))}: name data.test_compositions instead")
    return mask


def validation_mask(units: np.ndarray, fraction: float, seed: int) -> np.ndarray | None:
    """Bool [N] over a fold's training rows: whole split units (compositions or works), drawn in a random order and
    added while that brings the validation share of the rows closer to ``fraction`` (at least one unit, never all),
    so validation never shares music with what is fitted. None when there are fewer than max(2, round(1 / fraction))
    units: validation would then be one unit in a handful, too noisy and too costly to the fit, and the caller
    selects checkpoints another way (the last step). Same-music groups are never used as units (16-bar segments
    reuse the 8-bar recordings of the same composition)."""
    units = np.asarray(units)
    names = np.unique(units)
    if fraction <= 0 or len(names) < max(2, round(1.0 / fraction)):
        return None
    names = np.random.default_rng(seed).permutation(names)
    mask = np.zeros(len(units), bool)
    for name in names[:-1]:  # at least one unit stays for fitting
        grown = mask | (units == name)
        if mask.any() and abs(grown.mean() - fraction) >= abs(mask.mean() - fraction):
            break
        mask = grown
    return mask


def _ranked_groups(groups: np.ndarray, performers: np.ndarray) -> np.ndarray:
    """Names of groups holding >= 2 distinct performers (the only groups a within-group ranking can use)."""
    pairs = np.unique(np.stack([groups.astype(str), performers.astype(str)]), axis=1)
    names, counts = np.unique(pairs[0], return_counts=True)
    return names[counts >= 2]


def check_split(
    groups: np.ndarray,
    performers: np.ndarray,
    test_mask: np.ndarray,
    *,
    compositions: np.ndarray | None = None,
    name: str = "split",
) -> None:
    """Raises `SplitError` when a group (or, if given, a composition) has rows on both sides of ``test_mask``, or
    when the train or test side has no group with >= 2 distinct performers (nothing to rank)."""
    groups, performers, test_mask = np.asarray(groups), np.asarray(performers), np.asarray(test_mask, dtype=bool)
    if not (len(groups) == len(performers) == len(test_mask)):
        raise SplitError(
            f"{name}: groups, performers and test_mask must have equal lengths, "
            f"got {len(groups)}, {len(performers)}, {len(test_mask)}"
        )
    for label, units in (("group", groups), ("composition", compositions)):
        if units is None:
            continue
        crossing = np.intersect1d(np.asarray(units)[test_mask], np.asarray(units)[~test_mask])
        if crossing.size:
            raise SplitError(
                f"{name}: {len(crossing)} {label}(s) have rows in both train and test (e.g. {crossing[0]!r}); "
                "split by whole compositions with composition_folds or holdout_split"
            )
    for side, rows in (("test", test_mask), ("train", ~test_mask)):
        if _ranked_groups(groups[rows], performers[rows]).size == 0:
            raise SplitError(
                f"{name}: the {side} side ({int(rows.sum())} rows) has no group with >= 2 performers, so there is "
                "nothing to rank; choose other test compositions or fewer folds"
            )


def kept_rows(compositions: np.ndarray, data_config, corpus: str, works: np.ndarray | None = None) -> np.ndarray:
    """bool [N]: rows a run uses, i.e. all but those of ``data_config.exclude_compositions`` (compositions, or works
    with ``split_level="work"``, as `split_units` finds them from ``works``); raises `SplitError` for a name that is
    not in the data."""
    excluded = data_config.get("exclude_compositions", ()) or ()
    excluded = (excluded,) if isinstance(excluded, str) else tuple(excluded)
    compositions = np.asarray(compositions).astype(str)
    if not excluded:
        return np.ones(len(compositions), bool)
    units = split_units(compositions, data_config.get("split_level", "composition"), corpus, works)
    unknown = sorted(set(excluded) - set(compositions.tolist()) - set(units.tolist()))
    if unknown:
        raise SplitConfigError(f"data.exclude_compositions names {unknown}, which are not in the data")
    return ~(np.isin(compositions, excluded) | np.isin(units, excluded))


def first_render_mask(renders: np.ndarray) -> np.ndarray:
    """bool [N]: rows of the first render (in row order) of a table with one row per (performance, render); all
    rows when there is one render. Validation and evaluation score each performance once."""
    renders = np.asarray(renders)
    return renders == renders[0] if len(renders) else np.zeros(0, bool)
