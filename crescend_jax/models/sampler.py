"""Host-side samplers: which rows (and which frame crops) each training batch holds, as `BatchPlan` s.

They draw indices only; the training core gathers the rows on the devices. Both are checkpointable iterators:
``state()`` (JSON) is the generator's state plus what is left of the current pass, and ``restore`` continues exactly
there, so a resumed run draws the same batches as an uninterrupted one without replaying the stream.

`GroupSampler` (P groups x K performances, for within-group objectives): row ``p * K + k`` of a batch is slot k of
group slot p, so ``x.reshape(P, K, ...)`` recovers the groups. Group slots come from endless shuffled passes over
the groups that hold >= 2 rows (a single performance has nothing to rank against; such groups are counted in
``num_single_groups``). In each slot, up to K distinct rows of the group are drawn without replacement (vectorised:
the K smallest of uniform keys). When the group has fewer than K rows the rest of the slot is

* padding (row -1: mask 0, group -1, zeros) for pooled inputs, or
* further random crops of the group's rows (drawn with replacement) for frame inputs: each crop is a separate item
  of the same group (a positive in a contrastive term; equal labels, so never a ranking pair).

A batch with more group slots than there are groups repeats groups across slots, which is how a batch larger than
the corpus is filled; with frame inputs every repeat is a fresh crop.

`PlainSampler`: shuffled passes over all rows, ``batch_size`` rows a batch (pointwise objectives).

Frame crops: ``crop_start`` is uniform over the positions where a ``crop_frames`` window fits; a track shorter than
the crop starts at 0 and is read cyclically (repeated end to end) by the gather.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from crescend_jax.config import ConfigError
from crescend_jax.data.groups import dense_ids
from crescend_jax.data.table import EmbeddingTable
from crescend_jax.models.contract import BatchPlan


def _generator_state(rng: np.random.Generator) -> dict[str, Any]:
    return rng.bit_generator.state


def crop_starts(lengths: np.ndarray, rows: np.ndarray, crop_frames: int, rng: np.random.Generator) -> np.ndarray:
    """int32 [B] uniform crop starts in [0, max(T_row - crop_frames, 0)] for ``rows`` (-1 -> 0); ``lengths`` [N]."""
    safe = np.where(rows >= 0, rows, 0)
    room = np.maximum(lengths[safe] - crop_frames, 0) + 1
    starts = np.floor(rng.random(len(rows)) * room).astype(np.int32)
    return np.where(rows >= 0, starts, 0).astype(np.int32)


def aligned_crop_starts(lengths: np.ndarray, rows: np.ndarray, crop_frames: int, fraction: np.ndarray) -> np.ndarray:
    """int32 [B] starts of the crops centred at the fraction f_b in [0, 1) of each row's track: start =
    clip(floor(f T - crop / 2), 0, max(T - crop, 0)) (-1 rows -> 0). Rows given the same f are cut at the same
    relative place of their tracks, the same passage when two performances differ only in tempo; the evaluation
    pairs crops the same way (`models.functions.aligned_crops`: crop centres at the fractions (c + 1/2) / C)."""
    safe = np.where(rows >= 0, rows, 0)
    length = lengths[safe]
    starts = np.clip(np.floor(fraction * length - crop_frames / 2), 0, np.maximum(length - crop_frames, 0))
    return np.where(rows >= 0, starts, 0).astype(np.int32)


def frame_lengths(table: EmbeddingTable) -> np.ndarray:
    """int64 [N] frames per row of a table with frames."""
    if table.frames is None:
        raise ConfigError("frame inputs need a store with frames: extract with --config.store.frames=True or set "
                          "--config.model.input=pooled")
    return np.array([f.shape[1] for f in table.frames], np.int64)


class _Checkpointable:
    """The shared state handling: a numpy Generator and a queue of pending indices."""

    def __init__(self, seed: int):
        self.rng = np.random.default_rng(seed)
        self.queue = np.empty(0, np.int64)

    def state(self) -> dict[str, Any]:
        return {"rng": _generator_state(self.rng), "queue": self.queue.tolist()}

    def restore(self, state: dict[str, Any]) -> None:
        self.rng.bit_generator.state = state["rng"]
        self.queue = np.asarray(state["queue"], np.int64)

    def _take(self, count: int, population: int) -> np.ndarray:
        while len(self.queue) < count:
            self.queue = np.concatenate([self.queue, self.rng.permutation(population)])
        taken, self.queue = self.queue[:count], self.queue[count:]
        return taken

    def __iter__(self):
        return self


class PlainSampler(_Checkpointable):
    """Endless shuffled passes over the rows of ``table``, ``batch_size`` rows a batch (see the module doc)."""

    def __init__(self, table: EmbeddingTable, batch_size: int, seed: int, *, crop_frames: int = 0):
        super().__init__(seed)
        if batch_size < 1:
            raise ConfigError(f"train.batch_size={batch_size} must be positive")
        if len(table) == 0:
            raise ValueError("no training rows to sample")
        self.num_rows, self.batch_size, self.crop_frames = len(table), batch_size, crop_frames
        self.lengths = frame_lengths(table) if crop_frames > 0 else None

    def __next__(self) -> BatchPlan:
        rows = self._take(self.batch_size, self.num_rows).astype(np.int32)
        starts = crop_starts(self.lengths, rows, self.crop_frames, self.rng) if self.crop_frames > 0 else None
        return BatchPlan(rows=rows, crop_start=starts)


class GroupSampler(_Checkpointable):
    """Endless `BatchPlan` s of ``batch_size // group_size`` groups x ``group_size`` rows (see the module doc)."""

    def __init__(self, table: EmbeddingTable, batch_size: int, group_size: int, seed: int, *, crop_frames: int = 0):
        super().__init__(seed)
        if group_size < 2 or batch_size % group_size:
            raise ConfigError(f"batch_size {batch_size} must be a multiple of group_size {group_size} >= 2; set "
                              "--config.train.batch_size / --config.model.sampler.group_size")
        ids = dense_ids(table.groups)
        sizes = np.bincount(ids, minlength=int(ids.max(initial=-1)) + 1)
        order = np.argsort(ids, kind="stable")
        members = np.split(order, np.cumsum(sizes)[:-1]) if len(order) else []
        members = [m for m in members if len(m) >= 2]
        self.num_single_groups = int((sizes == 1).sum())
        if not members:
            raise ValueError(f"no group of the {len(table)} training rows holds >= 2 performances; nothing to rank")
        self.sizes = np.array([len(m) for m in members], np.int64)
        self.members = np.full((len(members), int(self.sizes.max())), -1, np.int64)  # [G, L] padded member rows
        for g, m in enumerate(members):
            self.members[g, : len(m)] = m
        self.batch_size, self.group_size, self.crop_frames = batch_size, group_size, crop_frames
        self.lengths = frame_lengths(table) if crop_frames > 0 else None

    def __next__(self) -> BatchPlan:
        k = self.group_size
        slots = self._take(self.batch_size // k, len(self.members))  # [S] group indices
        members, sizes = self.members[slots], self.sizes[slots]  # [S, L], [S]
        width = members.shape[1]
        keys = np.where(members >= 0, self.rng.random(members.shape), np.inf)
        chosen = np.argsort(keys, axis=1, kind="stable")[:, :k]  # the k smallest keys: k distinct members
        if chosen.shape[1] < k:
            chosen = np.concatenate([chosen, np.full((len(slots), k - chosen.shape[1]), width)], axis=1)
        position = np.arange(k)[None, :]
        distinct = position < sizes[:, None]
        padded = np.concatenate([members, np.full((len(slots), 1), -1)], axis=1)
        rows = np.take_along_axis(padded, chosen, axis=1)
        if self.crop_frames > 0:  # fill the slot with more crops of its group's rows
            extra = np.floor(self.rng.random((len(slots), k)) * sizes[:, None]).astype(np.int64)
            rows = np.where(distinct, rows, np.take_along_axis(members, extra, axis=1))
        else:
            rows = np.where(distinct, rows, -1)
        rows = rows.reshape(-1).astype(np.int32)
        starts = crop_starts(self.lengths, rows, self.crop_frames, self.rng) if self.crop_frames > 0 else None
        return BatchPlan(rows=rows, crop_start=starts)
