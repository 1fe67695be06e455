"""`EmbeddingTable`: the in-memory view of one or more stores that training and evaluation read; `fuse_tables`
joins the tables of several encoders of one corpus side by side; `group_relative` re-expresses every row against its
same-music group (`input_view`: the inputs a config asks for).

**Group-relative inputs** (``data.group_relative``). For row i of same-music group g (and render r: each soundfont's
rows form their own group), with R(g, r) the group's reference rows (every member, or, with
``data.group_relative_deadpan=False``, the members that are not Score/Score2 deadpan renditions when the group has
any):

    pooled'_i = pooled_i - mean_{m in R(g, r)} pooled_m                       [D]
    frames'_i[l, t] = frames_i[l, t] - nanmean_{m in R(g, r)} frames_m[l, t]   [layers, T, dim], per score position t

where nanmean skips the members whose value at (l, t) is NaN (a masked score position; NaN when every reference
member is masked there), so over the reference members with a value the relative frames sum to 0 at every position,
and the pooled vectors to 0 over the reference members. Frames are transformed only when they are indexed by score
position (``frame_rate == 0``: the `aligned` encoder, or the one-frame `midi` encoder) and every member of a group has
as many; time frames of different performances are not aligned and are refused.

This reads the *inputs* of the group, never a label. It is transductive over inputs: a held-out row is expressed
against the other held-out performances of its group, which the evaluation protocol knows (it only compares
performances of one group), so it is legitimate at test time; it is not a model of a single performance heard
alone. Applied when the table is loaded (`crescend_jax.data.store.load_table`), it is what the fold's
standardisation statistics, the model and the ridge reference all read.
"""

from __future__ import annotations

import dataclasses
from typing import Sequence

import numpy as np

from crescend_jax.data.segments import DEADPAN_PERFORMERS
from crescend_jax.encoders import SYMBOLIC_RENDER  # the render of rows computed from the MIDI itself: one per key

GROUP_RELATIVE_SUFFIX = "+group_relative"  # appended to the encoder of a group-relative table (its fingerprint)


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
    encoder: encoder name; frame_rate: frames per second of ``frames`` (and of ``input_frames``).
    sources: the store directories the rows were read from, absolute (empty for a table built in memory).
    data_roots: where those stores' items were read from (PercePiano's root, the demo's MIDI cache), each once.
    performer_factors: None (the corpus knows no performer factors), or float32 [N, F]: the latent factors each
      row's performance was played with (the demo corpus's simulated performers); NaN rows where unknown (a deadpan
      rendition, or rows concatenated from a table without factors).
    factor_names: the F names of the ``performer_factors`` columns; () when there are none.
    works: None (the corpus names no works), or str [N]: the musical work of each row's composition when it is
      coarser than the composition (ASAP: ``<composer>/<title>``, shared by a score folder and its no-repeat twin);
      "" = none given (the composition's work is then told from its name, `crescend_jax.data.splits.work_of`). Work-
      level splits keep each work whole (`crescend_jax.data.splits.split_units`).
    derived: None (the corpus derives no labels), or float32 [N, K]: labels computed from each row's performance
      (ASAP's `crescend_jax.data.performance_labels.DERIVED_LABELS`), NaN where undefined or unknown (rows
      concatenated from a table without them).
    derived_names: the K names of the ``derived`` columns; () when there are none.
    in_percepiano: None (not checked), or bool [N]: the row's composition may also be a PercePiano composition, so
      pre-training on it would leak into a PercePiano test fold (ASAP's `Segment.in_percepiano`).
    input_frames: None, or list of N arrays [T_i, dim] (bfloat16 as stored): the frames entering conformer layer
      ``input_layer`` (MuQ's ``hidden_states[input_layer - 1]``), what fine-tuning layers K..depth starts from.
    input_layer: that layer K; 0 when the rows hold no input frames.
    label_names: the names of the label columns (``label_mean``, ``label_std``, ``label_truth``, ``ratings``); () =
      the 19 PercePiano dimensions as stored. Set by `crescend_jax.data.targets.with_targets` (``data.targets``:
      ratings, derived targets or both), which then makes those arrays [., T] with T = len(label_names).
    corpora: None (one corpus), or str [N]: the corpus of each row of a table joined from several corpora
      (`crescend_jax.data.joint`), whose folds split each corpus by its own rule.
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
    works: np.ndarray | None = None
    derived: np.ndarray | None = None
    derived_names: tuple[str, ...] = ()
    in_percepiano: np.ndarray | None = None
    input_frames: list[np.ndarray] | None = None
    input_layer: int = 0
    label_names: tuple[str, ...] = ()
    corpora: np.ndarray | None = None

    def __post_init__(self) -> None:
        rows = len(self.keys)
        for what, names in (("performer_factors", "factor_names"), ("derived", "derived_names")):
            values, width = getattr(self, what), len(getattr(self, names))
            if values is not None and np.shape(values) != (rows, width):
                raise ValueError(f"{what} must be [{rows}, {width}] (rows, {names}), got {np.shape(values)}")
        if self.label_names and np.shape(self.label_mean)[1:] != (len(self.label_names),):
            raise ValueError(f"label_mean must be [{rows}, {len(self.label_names)}] (rows, label_names), got "
                             f"{np.shape(self.label_mean)}")
        for what in ("works", "in_percepiano", "corpora"):
            values = getattr(self, what)
            if values is not None and np.shape(values) != (rows,):
                raise ValueError(f"{what} must be [{rows}] (one per row), got {np.shape(values)}")

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
            works=None if self.works is None else self.works[index],
            derived=None if self.derived is None else self.derived[index],
            in_percepiano=None if self.in_percepiano is None else self.in_percepiano[index],
            input_frames=None if self.input_frames is None else [self.input_frames[i] for i in index],
            corpora=None if self.corpora is None else self.corpora[index],
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
        """Rows of all ``tables`` (e.g. one store per soundfont); encoders must agree, and so must the factor (derived
        label) names of the tables that carry performer factors (derived labels). The rows of a table without an
        optional column get NaN factors / derived labels, works "" and in_percepiano False."""
        first = tables[0]
        for t in tables[1:]:
            if t.encoder != first.encoder or t.pooled.shape[1] != first.pooled.shape[1]:
                raise ValueError(f"cannot combine stores of encoders {first.encoder!r} and {t.encoder!r}")
            if t.label_names != first.label_names:
                raise ValueError(f"cannot combine tables whose label columns differ: {list(first.label_names)} and "
                                 f"{list(t.label_names)}")
        cat = lambda name: np.concatenate([getattr(t, name) for t in tables])
        names, factors = _concat_named(tables, "performer_factors", "factor_names")
        derived_names, derived = _concat_named(tables, "derived", "derived_names")
        return dataclasses.replace(
            first,
            **{n: cat(n) for n in ("keys", "compositions", "pieces", "performers", "groups", "renders",
                                   "label_mean", "label_std", "label_truth", "pooled")},
            ratings=[r for t in tables for r in t.ratings],
            frames=None if any(t.frames is None for t in tables) else [f for t in tables for f in t.frames],
            input_frames=(None if any(t.input_frames is None or t.input_layer != first.input_layer for t in tables)
                          else [f for t in tables for f in t.input_frames]),
            sources=tuple(s for t in tables for s in t.sources),
            data_roots=_union_roots(tables),
            performer_factors=factors,
            factor_names=names,
            works=_concat_rows(tables, "works", ""),
            derived=derived,
            derived_names=derived_names,
            in_percepiano=_concat_rows(tables, "in_percepiano", False),
            corpora=_concat_rows(tables, "corpora", ""),
        )


_READABLE = {"performer_factors": "performer factors", "derived": "derived labels", "works": "works",
             "in_percepiano": "PercePiano overlap flags"}


def _concat_named(tables: Sequence[EmbeddingTable], values: str,
                  names: str) -> tuple[tuple[str, ...], np.ndarray | None]:
    """(column names, float32 [sum N_t, F] or None) of the named float column ``values`` (e.g. "performer_factors",
    named by ``names``) of ``tables`` stacked; NaN rows for a table without it; the names must agree."""
    named = {getattr(t, names) for t in tables if getattr(t, values) is not None}
    if not named:
        return (), None
    if len(named) > 1:
        raise ValueError(f"cannot combine tables whose {_READABLE[values]} differ: {sorted(named)}")
    column_names = named.pop()
    return column_names, np.concatenate([
        np.full((len(t), len(column_names)), np.nan, np.float32) if getattr(t, values) is None
        else np.asarray(getattr(t, values), np.float32) for t in tables])


def _concat_rows(tables: Sequence[EmbeddingTable], name: str, missing) -> np.ndarray | None:
    """The per-row column ``name`` of ``tables`` stacked, ``missing`` for the rows of a table without it; None when
    no table has it."""
    if all(getattr(t, name) is None for t in tables):
        return None
    return np.concatenate([np.full(len(t), missing) if getattr(t, name) is None else np.asarray(getattr(t, name))
                           for t in tables])


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
    the labels must agree, else `TableFusionError` names what is missing. Performer factors, works, derived labels and
    in_percepiano each come from the first table that has them; any other table's must agree.

    Frames and input frames are dropped (``frames=None``, ``frame_rate=0``): encoders' frames differ in rate and
    length and are not fused. ``encoder`` is ``fusion(<name>+<name>...)``; ``sources`` lists every table's stores.
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
    names, factors = _fused_column(tables, rows, "performer_factors", "factor_names")
    derived_names, derived = _fused_column(tables, rows, "derived", "derived_names")
    return dataclasses.replace(
        base,
        pooled=np.concatenate([t.pooled[index] for t, index in zip(tables, rows)], axis=1),
        frames=None,
        frame_rate=0.0,
        input_frames=None,
        input_layer=0,
        encoder="fusion(" + "+".join(t.encoder for t in tables) + ")",
        sources=tuple(s for t in tables for s in t.sources),
        data_roots=_union_roots(tables),
        performer_factors=factors,
        factor_names=names,
        works=_fused_column(tables, rows, "works")[1],
        derived=derived,
        derived_names=derived_names,
        in_percepiano=_fused_column(tables, rows, "in_percepiano")[1],
    )


def _fused_column(tables: Sequence[EmbeddingTable], rows: Sequence[np.ndarray], name: str,
                  names: str | None = None) -> tuple[tuple[str, ...], np.ndarray | None]:
    """(column names, values) of the optional column ``name`` (with its names in ``names``, if any) on the fused rows
    (``rows``: each table's row index of every fused row): those of the first table that has it; every other table
    with it must agree (same names, equal values, NaN where NaN). ((), None) when no table has it."""
    known = [(t, index) for t, index in zip(tables, rows) if getattr(t, name) is not None]
    if not known:
        return (), None
    first, first_index = known[0]
    values = np.asarray(getattr(first, name))[first_index]
    column_names = getattr(first, names) if names else ()
    floating = np.issubdtype(values.dtype, np.floating)
    for table, index in known[1:]:
        if (names and getattr(table, names) != column_names) or not np.array_equal(
                np.asarray(getattr(table, name))[index], values, equal_nan=floating):
            raise TableFusionError(f"{table.encoder!r} and {first.encoder!r} disagree on the {_READABLE[name]} of the "
                                   f"same keys: they were extracted from different corpus content")
    return column_names, values


def default_input_config() -> dict[str, bool]:
    """The ``config.data`` fields `input_view` reads (configs/baseline.py adds them to the data section).

    group_relative: each row's inputs minus the mean of its same-music group (module docstring).
    group_relative_deadpan: the Score/Score2 deadpan renditions enter that mean (they are inputs of the group, known
      at test time like the others). False: the mean is over the human performances (every member when a group has
      none), so a row is measured against what the performers did, not against the deadpan.
    """
    return {"group_relative": False, "group_relative_deadpan": True}


def group_relative(table: EmbeddingTable, include_deadpan: bool = True) -> EmbeddingTable:
    """``table`` with every row's pooled vector (and position-indexed frames) minus its same-music group's mean
    (module docstring); ``encoder`` gains `GROUP_RELATIVE_SUFFIX`. Raises ValueError for time frames, for a group whose
    members hold different numbers of frames, or for a table holding MuQ layer-input frames."""
    if table.input_frames is not None:
        raise ValueError("group-relative inputs transform the encoder's outputs, not MuQ's layer-input frames: use "
                         "data.group_relative with a frozen trunk (trunk.kind='frozen')")
    if table.frames is not None and table.frame_rate != 0:
        raise ValueError(f"the store {table.encoder!r} holds time frames ({table.frame_rate:g} frames/s): frame t of "
                         f"two performances is not the same score position, so they cannot be made group-relative; "
                         f"read the store without frames (store.frames=False) or use the aligned encoder")
    pooled = np.asarray(table.pooled, np.float32).copy()
    frames = None if table.frames is None else [np.array(f, np.float32) for f in table.frames]
    deadpan = np.isin(table.performers, DEADPAN_PERFORMERS)
    _, cells = np.unique(np.char.add(np.char.add(table.groups.astype(str), "\x00"), table.renders.astype(str)),
                         return_inverse=True)
    for cell in np.unique(cells):
        members = np.flatnonzero(cells == cell)
        reference = members if include_deadpan or deadpan[members].all() else members[~deadpan[members]]
        pooled[members] -= table.pooled[reference].astype(np.float64).mean(axis=0).astype(np.float32)
        if frames is None:
            continue
        shapes = {table.frames[m].shape for m in members}
        if len(shapes) > 1:
            raise ValueError(f"group {table.groups[members[0]]!r} holds frames of shapes {sorted(shapes)}: its "
                             f"performances are not aligned by score position; re-extract with the aligned encoder")
        stacked = np.stack([table.frames[m] for m in reference]).astype(np.float64)  # [R, layers, T, dim]
        known = np.isfinite(stacked)
        counts = known.sum(axis=0)
        mean = np.where(counts > 0, np.where(known, stacked, 0.0).sum(axis=0) / np.maximum(counts, 1), np.nan)
        for m in members:
            frames[m] = (table.frames[m] - mean).astype(np.float32)
    return dataclasses.replace(table, pooled=pooled, frames=frames, encoder=table.encoder + GROUP_RELATIVE_SUFFIX)


def input_view(table: EmbeddingTable, data_config) -> EmbeddingTable:
    """The inputs ``config.data`` asks for: `group_relative` of ``table`` when ``data.group_relative`` (the deadpan
    renditions in the mean unless ``data.group_relative_deadpan`` is False), else ``table`` itself."""
    get = (lambda name, default: data_config.get(name, default)) if data_config is not None else (
        lambda name, default: default)
    if not get("group_relative", False):
        return table
    return group_relative(table, include_deadpan=bool(get("group_relative_deadpan", True)))
