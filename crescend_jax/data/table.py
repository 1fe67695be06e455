"""`EmbeddingTable`: the in-memory view of one or more stores that training and evaluation read; `fuse_tables`
joins the tables of several encoders of one corpus side by side."""

from __future__ import annotations

import dataclasses
from typing import Sequence

import numpy as np

from crescend_jax.encoders import SYMBOLIC_RENDER  # the render of rows computed from the MIDI itself: one per key


class TableFusionError(ValueError):
    """Tables that cannot be fused: their rows do not pair up, or they disagree on labels."""


@dataclasses.dataclass
class EmbeddingTable:
    """Column-oriented rows; row i is one (performance, render). Shapes: N rows, D pooled width.

    keys, compositions, pieces, performers, groups, renders: str arrays [N]
    label_mean, label_std, label_truth: float32 [N, 19] (std/truth NaN where unknown)
    ratings: list of N float32 arrays [R_i, 19] (individual raters, NaN = missing)
    pooled: float32 [N, D]
    frames: None, or list of N float32 arrays [layers, T_i, dim]
    encoder: encoder name; frame_rate: frames per second of ``frames``.
    sources: the store directories the rows were read from, absolute (empty for a table built in memory).
    data_roots: where those stores' items were read from (PercePiano's root, the demo's MIDI cache), each once.
    performer_factors: None (the corpus knows no performer factors), or float32 [N, F]: the latent factors each
      row's performance was played with (the demo corpus's simulated performers); NaN rows where unknown (a deadpan
      rendition, or rows concatenated from a table without factors).
    factor_names: the F names of the ``performer_factors`` columns; () when there are none.
    """

    keys: np.ndarray
    compositions: np.ndarray
    pieces: np.ndarray
    performers: np.ndarray
    groups: np.ndarray
    renders: np.ndarray
    label_mean: np.ndarray
    label_std: np.ndarray
    label_truth: np.ndarray
    ratings: list[np.ndarray]
    pooled: np.ndarray
    frames: list[np.ndarray] | None
    encoder: str
    frame_rate: float
    sources: tuple[str, ...] = ()
    data_roots: tuple[str, ...] = ()
    performer_factors: np.ndarray | None = None
    factor_names: tuple[str, ...] = ()

    def __post_init__(self) -> None:
        expected = (len(self.keys), len(self.factor_names))
        if self.performer_factors is not None and np.shape(self.performer_factors) != expected:
            raise ValueError(f"performer_factors must be [{len(self.keys)}, {len(self.factor_names)}] (rows, "
                             f"factor_names), got {np.shape(self.performer_factors)}")

    def __len__(self) -> int:
        return len(self.keys)

    def subset(self, index: np.ndarray) -> "EmbeddingTable":
        """Rows ``index`` (int array or boolean mask) as a new table."""
        index = np.flatnonzero(index) if np.asarray(index).dtype == bool else np.asarray(index)
        return dataclasses.replace(
            self,
            keys=self.keys[index],
            compositions=self.compositions[index],
            pieces=self.pieces[index],
            performers=self.performers[index],
            groups=self.groups[index],
            renders=self.renders[index],
            label_mean=self.label_mean[index],
            label_std=self.label_std[index],
            label_truth=self.label_truth[index],
            ratings=[self.ratings[i] for i in index],
            pooled=self.pooled[index],
            frames=None if self.frames is None else [self.frames[i] for i in index],
            performer_factors=None if self.performer_factors is None else self.performer_factors[index],
        )

    def unrated_keys(self) -> list[str]:
        """Keys (sorted, each once) whose rows hold no finite individual rating: they carry label means for training
        but add nothing to a noise ceiling computed from the ratings."""
        return sorted({str(key) for key, ratings in zip(self.keys, self.ratings) if not np.isfinite(ratings).any()})

    def group_ids(self) -> np.ndarray:
        """int32 [N]: dense ids of ``groups`` (sorted by name)."""
        _, ids = np.unique(self.groups, return_inverse=True)
        return ids.astype(np.int32)

    @staticmethod
    def concat(tables: list["EmbeddingTable"]) -> "EmbeddingTable":
        """Rows of all ``tables`` (e.g. one store per soundfont); encoders must agree, and so must the factor names of
        the tables that carry performer factors (the rows of one without get NaN factors)."""
        first = tables[0]
        for t in tables[1:]:
            if t.encoder != first.encoder or t.pooled.shape[1] != first.pooled.shape[1]:
                raise ValueError(f"cannot combine stores of encoders {first.encoder!r} and {t.encoder!r}")
        cat = lambda name: np.concatenate([getattr(t, name) for t in tables])
        names, factors = _concat_factors(tables)
        return dataclasses.replace(
            first,
            **{n: cat(n) for n in ("keys", "compositions", "pieces", "performers", "groups", "renders",
                                   "label_mean", "label_std", "label_truth", "pooled")},
            ratings=[r for t in tables for r in t.ratings],
            frames=None if any(t.frames is None for t in tables) else [f for t in tables for f in t.frames],
            sources=tuple(s for t in tables for s in t.sources),
            data_roots=_union_roots(tables),
            performer_factors=factors,
            factor_names=names,
        )


def _concat_factors(tables: Sequence[EmbeddingTable]) -> tuple[tuple[str, ...], np.ndarray | None]:
    """(factor names, float32 [sum N_t, F] or None) of ``tables`` stacked; NaN rows for a table without factors."""
    named = {t.factor_names for t in tables if t.performer_factors is not None}
    if not named:
        return (), None
    if len(named) > 1:
        raise ValueError(f"cannot combine tables whose performer factors differ: {sorted(named)}")
    names = named.pop()
    return names, np.concatenate([
        np.full((len(t), len(names)), np.nan, np.float32) if t.performer_factors is None
        else np.asarray(t.performer_factors, np.float32) for t in tables])


def _union_roots(tables: Sequence[EmbeddingTable]) -> tuple[str, ...]:
    return tuple(dict.fromkeys(root for table in tables for root in table.data_roots))


def _describe(rows: Sequence, count: int = 3) -> str:
    shown = ", ".join("/".join(map(str, row)) if isinstance(row, tuple) else str(row) for row in rows[:count])
    return f"{len(rows)} ({shown}{', ...' if len(rows) > count else ''})"


def fuse_tables(tables: Sequence[EmbeddingTable]) -> EmbeddingTable:
    """The tables of several encoders of one corpus side by side: pooled vectors concatenated per row, in the order
    of ``tables`` (width = sum of their widths).

    Rows pair up by (key, render) between audio tables, which must therefore hold the same renders (soundfonts); a
    symbolic table (every row's render is `SYMBOLIC_RENDER`, one row per key) pairs by key alone, so its vector is
    repeated for every render of the audio tables. The rows, their order and their labels are those of the first
    audio table (the first table when every one is symbolic); every row must find its partner in every table and
    the labels must agree, else `TableFusionError` names what is missing. Performer factors come from the first table
    that has them; any other table's must agree.

    Frames are dropped (``frames=None``, ``frame_rate=0``): encoders' frames differ in rate and length and are not
    fused. ``encoder`` is ``fusion(<name>+<name>...)``; ``sources`` lists every table's stores.
    """
    if not tables:
        raise TableFusionError("fuse_tables needs at least one table")
    symbolic = [set(t.renders.tolist()) <= {SYMBOLIC_RENDER} for t in tables]
    audio = [i for i, s in enumerate(symbolic) if not s]
    base = tables[audio[0]] if audio else tables[0]
    base_renders = sorted(set(base.renders.tolist()))
    pairs = list(zip(base.keys.tolist(), base.renders.tolist()))
    rows = []
    for table, is_symbolic in zip(tables, symbolic):
        if not is_symbolic and sorted(set(table.renders.tolist())) != base_renders:
            raise TableFusionError(
                f"cannot fuse {table.encoder!r} (renders {sorted(set(table.renders.tolist()))}) with {base.encoder!r} "
                f"(renders {base_renders}): audio tables pair rows by render, so extract both with the same "
                f"config.render settings")
        wanted = [key for key, _ in pairs] if is_symbolic else pairs
        columns = table.keys.tolist() if is_symbolic else list(zip(table.keys.tolist(), table.renders.tolist()))
        index = {row: i for i, row in enumerate(columns)}
        if len(index) != len(columns):
            raise TableFusionError(f"{table.encoder!r} holds some {'key' if is_symbolic else '(key, render)'} twice; "
                                   f"it cannot be paired")
        missing = [row for row in dict.fromkeys(wanted) if row not in index]
        if missing:
            raise TableFusionError(f"{table.encoder!r} has no row for {_describe(missing)} of {base.encoder!r}")
        extra = set(index) - set(wanted)
        if extra:
            raise TableFusionError(f"{base.encoder!r} has no row for {_describe(sorted(extra))} of {table.encoder!r}")
        rows.append(np.array([index[row] for row in wanted], dtype=np.int64))
    for table, index in zip(tables, rows):
        same = (np.array_equal(table.label_mean[index], base.label_mean, equal_nan=True)
                and np.array_equal(table.label_truth[index], base.label_truth, equal_nan=True)
                and all(np.array_equal(getattr(table, name)[index], getattr(base, name))
                        for name in ("compositions", "pieces", "performers", "groups")))
        if not same:
            raise TableFusionError(f"{table.encoder!r} and {base.encoder!r} disagree on the labels or groups of the "
                                   f"same keys: they were extracted from different corpus content")
    names, factors = _fused_factors(tables, rows)
    return dataclasses.replace(
        base,
        pooled=np.concatenate([t.pooled[index] for t, index in zip(tables, rows)], axis=1),
        frames=None,
        frame_rate=0.0,
        encoder="fusion(" + "+".join(t.encoder for t in tables) + ")",
        sources=tuple(s for t in tables for s in t.sources),
        data_roots=_union_roots(tables),
        performer_factors=factors,
        factor_names=names,
    )


def _fused_factors(tables: Sequence[EmbeddingTable],
                   rows: Sequence[np.ndarray]) -> tuple[tuple[str, ...], np.ndarray | None]:
    """The performer factors of the fused rows (``rows``: each table's row index of every fused row): those of the
    first table that has any; every other table with factors must agree (same names, equal values, NaN where NaN)."""
    known = [(t, index) for t, index in zip(tables, rows) if t.performer_factors is not None]
    if not known:
        return (), None
    first, first_index = known[0]
    factors = np.asarray(first.performer_factors[first_index], np.float32)
    for table, index in known[1:]:
        if table.factor_names != first.factor_names or not np.array_equal(
                table.performer_factors[index], factors, equal_nan=True):
            raise TableFusionError(f"{table.encoder!r} and {first.encoder!r} disagree on the performer factors of "
                                   f"the same keys: they were extracted from different corpus content")
    return first.factor_names, factors
