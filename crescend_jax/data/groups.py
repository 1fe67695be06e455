"""Same-music group structure: the within-group pairs every ranking objective and metric is built on."""

from __future__ import annotations

import numpy as np


def dense_ids(values: np.ndarray) -> np.ndarray:
    """int32 [N]: dense ids 0..U-1 of ``values`` [N] (any dtype), in sorted order of the distinct values."""
    _, ids = np.unique(np.asarray(values), return_inverse=True)
    return ids.astype(np.int32).reshape(-1)


def within_group_pairs(groups: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Every unordered pair of rows of one group: (i, j) int64 [P] each, i < j, grouped by group (sorted ids).

    P = sum_g n_g (n_g - 1) / 2; pairs never cross groups; groups of one give none.
    """
    groups = np.asarray(groups)
    if groups.ndim != 1:
        raise ValueError(f"groups must be a 1-D array of group ids, got shape {groups.shape}")
    ids = dense_ids(groups)
    order = np.argsort(ids, kind="stable")
    sizes = np.bincount(ids) if len(ids) else np.zeros(0, np.int64)
    firsts, seconds = [], []
    start = 0
    for size in sizes:  # one vectorised triu per group size
        a, b = np.triu_indices(int(size), k=1)
        members = order[start:start + size]
        firsts.append(members[a])
        seconds.append(members[b])
        start += size
    if not firsts:
        return np.zeros(0, np.int64), np.zeros(0, np.int64)
    i, j = np.concatenate(firsts).astype(np.int64), np.concatenate(seconds).astype(np.int64)
    return np.minimum(i, j), np.maximum(i, j)
