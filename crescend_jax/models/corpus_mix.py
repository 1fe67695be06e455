"""Batches of a joint table (several corpora, `crescend_jax.data.joint`): a fixed share of every batch per corpus.

Drawn from the whole joint table, a batch would hold the corpora in proportion to their groups (ASAP's 7,000 window
groups against PercePiano's hundred: a PercePiano group in one batch of fifty), so the ratings' heads would hardly
train. `CorpusMixSampler` instead gives corpus c a fixed number of the batch's S = B / K slots (K rows each, the
approach's ``model.sampler.group_size``; 1 for an approach without group slots):

    S_c = floor(s_c S) for shares s_c = ``data.<corpus>.batch_share`` normalised to sum 1 (default: equal shares),
    the slots left over going to the corpora in order of their largest remainders; every corpus with s_c > 0 gets
    at least one slot.

Each corpus's rows are drawn by the approach's own sampler (`Approach.sampler`) over that corpus's rows alone with
batch size S_c K, so a slot never mixes corpora, and the sub-batches are concatenated in ``data.corpora`` order (whole
slots, so the P x K layout of the batch holds). Loss weights between the corpora's terms are the approach's
(``model.loss.derived_weight``); this sampler only fixes what each batch contains. Checkpointable: ``state()`` holds
every corpus sampler's state.
"""

from __future__ import annotations

from typing import Any

import ml_collections
import numpy as np

from crescend_jax.config import ConfigError
from crescend_jax.data.table import EmbeddingTable
from crescend_jax.models.contract import Approach, BatchPlan, Sampler


def corpus_slots(shares: dict[str, float], num_slots: int) -> dict[str, int]:
    """Slots per corpus (module doc): ``shares`` (>= 0, any scale, at least one > 0) of ``num_slots``."""
    if any(s < 0 for s in shares.values()) or not any(s > 0 for s in shares.values()):
        raise ConfigError(f"data.<corpus>.batch_share must be >= 0 with at least one > 0; got {shares}")
    total = sum(shares.values())
    wanted = {c: s / total * num_slots for c, s in shares.items()}
    slots = {c: int(np.floor(w)) for c, w in wanted.items()}
    for corpus in sorted(wanted, key=lambda c: -(wanted[c] - slots[c])):
        if sum(slots.values()) >= num_slots:
            break
        slots[corpus] += 1
    for corpus, share in shares.items():  # a corpus with a share never gets nothing: take from the largest
        if share > 0 and slots[corpus] == 0:
            largest = max(slots, key=slots.get)
            if slots[largest] <= 1:
                raise ConfigError(f"a batch of {num_slots} slot(s) cannot hold every corpus of {list(shares)}: "
                                  "raise train.batch_size")
            slots[largest] -= 1
            slots[corpus] = 1
    return slots


def group_size(config: ml_collections.ConfigDict) -> int:
    """K rows per slot of the approach of ``config`` (1 without ``model.sampler.group_size``)."""
    sampler = config.model.get("sampler") or {}
    return int(sampler.get("group_size", 1))


class CorpusMixSampler:
    """`Sampler` over a joint table: per batch S_c slots of corpus c, each corpus drawn by the approach's sampler."""

    def __init__(self, approach: Approach, table: EmbeddingTable, config: ml_collections.ConfigDict, seed: Any):
        if table.corpora is None:
            raise ValueError("CorpusMixSampler needs a joint table (a corpora column)")
        order = [c for c in tuple(config.data.get("corpora", ())) if c in set(table.corpora.tolist())]
        order += [c for c in dict.fromkeys(table.corpora.tolist()) if c not in order]
        k = group_size(config)
        slots = corpus_slots({c: float((config.data.get(c) or {}).get("batch_share", 1.0)) for c in order},
                             config.train.batch_size // k)
        self.rows: dict[str, np.ndarray] = {}
        self.samplers: dict[str, Sampler] = {}
        for index, corpus in enumerate(order):
            if not slots[corpus]:
                continue
            rows = np.flatnonzero(table.corpora == corpus)
            own = ml_collections.ConfigDict(config.to_dict())
            own.train.batch_size = slots[corpus] * k
            base = list(seed) if isinstance(seed, (list, tuple)) else [seed]
            self.rows[corpus] = rows
            self.samplers[corpus] = approach.sampler(table.subset(rows), own, [*base, index])
        self.slots = slots

    def __iter__(self):
        return self

    def __next__(self) -> BatchPlan:
        rows, starts = [], []
        for corpus, sampler in self.samplers.items():
            plan = next(sampler)
            own = self.rows[corpus]
            rows.append(np.where(plan.rows >= 0, own[np.maximum(plan.rows, 0)], -1).astype(np.int32))
            starts.append(plan.crop_start)
        crop = None if any(s is None for s in starts) else np.concatenate(starts).astype(np.int32)
        return BatchPlan(rows=np.concatenate(rows), crop_start=crop)

    def state(self) -> dict[str, Any]:
        return {corpus: sampler.state() for corpus, sampler in self.samplers.items()}

    def restore(self, state: dict[str, Any]) -> None:
        for corpus, sampler in self.samplers.items():
            sampler.restore(state[corpus])


def training_sampler(approach: Approach, table: EmbeddingTable, config: ml_collections.ConfigDict,
                     seed: Any) -> Sampler:
    """The batch stream of a fold's training rows: the approach's sampler, or `CorpusMixSampler` for a joint
    table."""
    if table.corpora is None:
        return approach.sampler(table, config, seed)
    return CorpusMixSampler(approach, table, config, seed)
