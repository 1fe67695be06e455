"""Approach B pair sampler: every pair of each group in both orientations per epoch, singletons, padding, hard pairs."""

import itertools
import math
from collections import Counter

import numpy as np
import pytest

from crescend_jax.config import ConfigError
from crescend_jax.models.pair_sampler import PairSampler, block_hardness, blocks_per_group


def group_ids_for(sizes, seed=0):
    """Rows of group g repeated sizes[g] times, shuffled (so groups are not contiguous in the table)."""
    ids = np.repeat(np.arange(len(sizes)), sizes)
    return np.random.default_rng(seed).permutation(ids)


def ordered_pairs(batches, group_size):
    """Counter of the ordered (row a, row b) pairs formed by the [P, K, K] tiles of the batches."""
    counts = Counter()
    for batch in batches:
        for block in batch.reshape(-1, group_size):
            real = block[block >= 0]
            counts.update(itertools.permutations(real.tolist(), 2))
    return counts


@pytest.mark.parametrize("group_size", [2, 3, 4, 6])
def test_one_epoch_covers_every_pair_in_both_orientations(group_size):
    sizes = [1, 2, 3, 4, 5, 7, 13, 1, 6]
    ids = group_ids_for(sizes)
    sampler = PairSampler(ids, group_size, groups_per_batch=3)
    assert sampler.num_singletons == 2 and len(sampler.members) == 7
    assert sampler.blocks_per_epoch == sum(blocks_per_group(n, group_size) for n in sizes)
    stream = sampler.batches(np.random.default_rng(0))
    epoch = list(itertools.islice(stream, sampler.batches_per_epoch))
    blocks = np.concatenate(epoch).reshape(-1, group_size)[:sampler.blocks_per_epoch]  # exactly the first epoch
    counts = ordered_pairs([blocks], group_size)
    want = {(a, b) for g in range(len(sizes)) for a in np.flatnonzero(ids == g) for b in np.flatnonzero(ids == g)
            if a != b}
    assert set(counts) == want  # every ordered same-group pair, and no pair across groups
    singles = {int(r) for g, n in enumerate(sizes) if n == 1 for r in np.flatnonzero(ids == g)}
    assert not singles & set(blocks.reshape(-1).tolist())
    # exact multiplicities: once for groups that fit a block; for larger groups, once across chunks and c - 1 times
    # within a chunk, so the total over a group is sum over blocks of m (m - 1)
    for g, n in enumerate(sizes):
        rows = set(np.flatnonzero(ids == g).tolist())
        total = sum(c for (a, _), c in counts.items() if a in rows)
        if 2 <= n <= group_size:
            assert total == n * (n - 1)
        elif n > group_size:
            chunks = math.ceil(n / (group_size // 2))
            sizes_c = [len(c) for c in np.array_split(np.arange(n), chunks)]
            assert total == sum((x + y) * (x + y - 1) for x, y in itertools.combinations(sizes_c, 2))
            assert max(counts[(a, b)] for a in rows for b in rows if a != b) <= chunks - 1


def test_blocks_per_group_cost():
    assert [blocks_per_group(n, 8) for n in (0, 1, 2, 8, 9, 12, 16, 20)] == [0, 0, 1, 1, 3, 3, 6, 10]
    assert blocks_per_group(5, 2) == 10  # K = 2: one block per unordered pair


def test_padding_and_layout():
    ids = group_ids_for([2, 3, 5, 1])
    sampler = PairSampler(ids, group_size=4, groups_per_batch=2)
    for batch in itertools.islice(sampler.batches(np.random.default_rng(1)), 20):
        assert batch.shape == (8,) and batch.dtype == np.int64
        for block in batch.reshape(2, 4):
            real = block >= 0
            count = int(real.sum())
            assert count >= 2 and real[:count].all() and (block[count:] == -1).all()  # real rows first
            assert len(set(block[real].tolist())) == count  # distinct rows
            assert len(set(ids[block[real]].tolist())) == 1  # one group per block
    # the group of 5 > K = 4 is split into chunks of <= 2: 3 chunks, 3 blocks of 3 or 4 rows; the others 1 block each
    assert sampler.blocks_per_epoch == 1 + 1 + 3


def test_deterministic_given_the_generator_and_fresh_each_epoch():
    ids = group_ids_for([4, 6, 9, 2, 3])
    sampler = PairSampler(ids, group_size=4, groups_per_batch=3)
    take = lambda seed: list(itertools.islice(sampler.batches(np.random.default_rng(seed)), 12))
    a, b, c = take(5), take(5), take(6)
    assert all((x == y).all() for x, y in zip(a, b))
    assert any((x != z).any() for x, z in zip(a, c))
    rng = np.random.default_rng(7)
    first, second = sampler.epoch(rng), sampler.epoch(rng)
    assert first.shape == second.shape and (first != second).any()  # a fresh shuffle per epoch


def test_hard_pair_emphasis_repeats_close_blocks():
    ids = np.repeat(np.arange(40), 2)  # 40 groups of two
    labels = np.zeros((80, 3), np.float32)
    labels[1::2] = np.where(np.arange(40)[:, None] < 20, 0.03, 0.5)  # groups 0-19 close (hard), 20-39 far apart
    labels[5] = np.nan  # a NaN label never counts
    sampler = PairSampler(ids, 2, 4, label_mean=labels, hard_pair_weight=2.5, hard_gap=0.05, min_label_gap=0.01)
    blocks = np.concatenate([sampler.epoch(np.random.default_rng(s)) for s in range(20)])
    per_group = np.bincount(ids[blocks[:, 0]], minlength=40) / 20
    assert per_group[20:].tolist() == [1.0] * 20  # easy blocks once per epoch
    hard = np.delete(per_group[:20], 2)  # group 2 holds the NaN row: hardness 0, emitted once
    assert per_group[2] == 1.0
    assert hard.min() >= 3 and hard.max() <= 4 and abs(hard.mean() - 3.5) < 0.2  # 1 + 2.5 on average
    assert block_hardness(np.array([[0.0], [0.03], [0.5]]), hard_gap=0.05, min_label_gap=0.01) == pytest.approx(2 / 6)
    assert block_hardness(np.array([[0.0], [0.0]]), hard_gap=0.05, min_label_gap=0.0) == 0.0  # ties do not qualify
    off = PairSampler(ids, 2, 4)
    assert len(off.epoch(np.random.default_rng(0))) == 40


def test_bad_settings_and_singletons_only():
    with pytest.raises(ConfigError, match="group_size"):
        PairSampler(np.zeros(4, int), 1, 2)
    with pytest.raises(ConfigError, match="batch_size"):
        PairSampler(np.zeros(4, int), 2, 0)
    with pytest.raises(ValueError, match="label_mean"):
        PairSampler(np.zeros(4, int), 2, 1, hard_pair_weight=1.0)
    with pytest.raises(ValueError, match=">= 2 performances"):
        PairSampler(np.arange(5), 2, 1)
