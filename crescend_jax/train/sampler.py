"""P groups x K performances batches for within-group objectives (ranking pairs, contrastive positives).

Layout: row ``p * K + k`` of a batch is slot k of group slot p, so ``x.reshape(P, K, ...)`` recovers the groups.
Group slots are drawn from endless shuffled passes over the groups that hold >= 2 rows (a single performance has
nothing to rank against). In each slot, up to K distinct rows of the group are drawn without replacement. When the
group has fewer than K rows the rest of the slot is

* padding (mask 0, group -1, zeros) for pooled inputs, or
* further random temporal crops of the group's rows (drawn with replacement) for frame inputs: each crop is a
  separate item of the same group (a positive in the contrastive term; equal labels, so never a ranking pair).

A batch with more group slots than there are groups repeats groups across slots, which is how a batch larger than
the corpus is filled; with frame inputs every repeat is a fresh crop.
"""

from __future__ import annotations

from typing import Iterator

import numpy as np

from crescend_jax.config import ConfigError
from crescend_jax.data.table import EmbeddingTable
from crescend_jax.train.approach import Batch


def random_crop(frames: np.ndarray, length: int, rng: np.random.Generator) -> np.ndarray:
    """A random window of a store's ``frames`` [layers, T, dim] as float32 [length, layers * dim], each frame's
    layers concatenated layer-major like ``pooled``; a track shorter than ``length`` is repeated end to end."""
    layers, total, dim = frames.shape
    if total < length:
        frames = np.tile(frames, (1, -(-length // total), 1))
        total = frames.shape[1]
    start = int(rng.integers(0, total - length + 1))
    window = frames[:, start:start + length]
    return window.transpose(1, 0, 2).reshape(length, layers * dim).astype(np.float32)


def group_batches(
    table: EmbeddingTable,
    batch_size: int,
    group_size: int,
    rng: np.random.Generator,
    *,
    crop_frames: int = 0,
) -> Iterator[Batch]:
    """Endless `Batch` dicts of ``batch_size // group_size`` groups x ``group_size`` rows (see the module doc).

    ``crop_frames`` > 0 yields frame crops "x" float32 [B, crop_frames, F] (needs ``table.frames``); 0 yields the
    pooled vectors [B, D]. Besides the `Batch` fields, "row" int32 [B] is each row's index in ``table`` (-1 for
    padding). Deterministic given ``rng``.
    """
    if group_size < 2 or batch_size % group_size:
        raise ConfigError(
            f"batch_size {batch_size} must be a multiple of group_size {group_size} >= 2; "
            "set --config.train.batch_size / --config.model.sampler.group_size"
        )
    if crop_frames > 0 and table.frames is None:
        raise ConfigError("frame crops need a store with frames; extract with frames or set model.input='pooled'")
    group_ids = table.group_ids()
    members = np.split(np.argsort(group_ids, kind="stable"), np.cumsum(np.bincount(group_ids))[:-1])
    members = [rows for rows in members if len(rows) >= 2]
    if not members:
        raise ValueError(f"no group of the {len(table)} training rows holds >= 2 performances; nothing to rank")
    label_std = np.nan_to_num(table.label_std.astype(np.float32), nan=0.0)
    num_slots = batch_size // group_size
    queue = np.empty(0, dtype=np.int64)
    while True:
        while len(queue) < num_slots:
            queue = np.concatenate([queue, rng.permutation(len(members))])
        slots, queue = queue[:num_slots], queue[num_slots:]
        rows = np.full(batch_size, -1, dtype=np.int64)
        for p, g in enumerate(slots):
            group_rows = members[g]
            distinct = rng.choice(group_rows, size=min(group_size, len(group_rows)), replace=False)
            if crop_frames > 0 and len(distinct) < group_size:
                distinct = np.concatenate([distinct, rng.choice(group_rows, size=group_size - len(distinct))])
            rows[p * group_size:p * group_size + len(distinct)] = distinct
        real = rows >= 0
        safe = np.where(real, rows, 0)
        if crop_frames == 0:
            x = table.pooled[safe].astype(np.float32)
        else:
            x = np.stack([random_crop(table.frames[r], crop_frames, rng) for r in safe])
        x[~real] = 0.0
        yield {
            "x": x,
            "label_mean": np.where(real[:, None], table.label_mean[safe], 0.0).astype(np.float32),
            "label_std": np.where(real[:, None], label_std[safe], 0.0).astype(np.float32),
            "group": np.where(real, group_ids[safe], -1).astype(np.int32),
            "mask": real.astype(np.float32),
            "row": rows.astype(np.int32),
        }

