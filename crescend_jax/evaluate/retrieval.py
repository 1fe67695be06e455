"""Same-window retrieval: does an embedding find the other performances of a passage? (label-free InfoNCE's measure)

For N held-out rows (one per performance of a window) with embeddings e_i [E], cosine similarities
s_ij = <e_i, e_j> / (|e_i| |e_j|). Row i is a query when its same-music group holds another row; its candidates are
every other row (``scope="all"``) or every other row of its own composition (``scope="composition"``: which passage
of this piece is it?, where the other windows of the same performance and piece are the distractors). The query is
a hit when its most similar candidate belongs to its group (a tie with a non-member counts as a miss).

    top1 = mean_i hit_i        chance = mean_i (n_g(i) - 1) / (C_i)

with n_g the group's size and C_i the query's number of candidates (what a random candidate would score). Rows are
compared in blocks of ``block`` queries, so memory is O(block x N), never N x N.
"""

from __future__ import annotations

import numpy as np

SCOPES = ("all", "composition")


def retrieval_top1(embeddings: np.ndarray, groups: np.ndarray, compositions: np.ndarray | None = None, *,
                   scope: str = "all", block: int = 1024) -> dict[str, float]:
    """{"top1", "chance", "num_queries"} of same-group retrieval (module doc).

    embeddings: float [N, E] (rows with a non-finite value are refused); groups: [N] same-music group of each row;
    compositions: [N], needed for ``scope="composition"``. NaN top1 and chance when no row is a query.
    """
    if scope not in SCOPES:
        raise ValueError(f"unknown retrieval scope {scope!r}; use one of {SCOPES}")
    x = np.asarray(embeddings, np.float64)
    groups = np.asarray(groups)
    if x.ndim != 2 or groups.shape != (len(x),):
        raise ValueError(f"embeddings must be [N, E] and groups [N]; got {x.shape} and {groups.shape}")
    if not np.isfinite(x).all():
        raise ValueError("embeddings hold non-finite values: the model diverged or the rows are corrupt")
    if scope == "composition":
        if compositions is None:
            raise ValueError("scope='composition' needs the compositions of the rows")
        scope_ids = np.unique(np.asarray(compositions), return_inverse=True)[1].reshape(-1)
    else:
        scope_ids = np.zeros(len(x), np.int64)
    group_ids = np.unique(groups, return_inverse=True)[1].reshape(-1)
    x = x / np.maximum(np.linalg.norm(x, axis=1, keepdims=True), 1e-12)
    sizes = np.bincount(group_ids)[group_ids]
    scope_sizes = np.bincount(scope_ids)[scope_ids]
    queries = np.flatnonzero(sizes >= 2)
    if not len(queries):
        return {"top1": float("nan"), "chance": float("nan"), "num_queries": 0}
    hits = np.zeros(len(queries), bool)
    for start in range(0, len(queries), block):
        rows = queries[start:start + block]
        similarity = x[rows] @ x.T  # [b, N]
        allowed = scope_ids[None, :] == scope_ids[rows, None]
        allowed[np.arange(len(rows)), rows] = False  # never itself
        similarity = np.where(allowed, similarity, -np.inf)
        best = similarity.max(axis=1)
        member = group_ids[None, :] == group_ids[rows, None]
        best_member = np.where(member & allowed, similarity, -np.inf).max(axis=1)
        best_other = np.where(~member & allowed, similarity, -np.inf).max(axis=1)
        hits[start:start + len(rows)] = (best_member >= best) & (best_member > best_other)
    chance = (sizes[queries] - 1) / (scope_sizes[queries] - 1)
    return {"top1": float(hits.mean()), "chance": float(chance.mean()), "num_queries": int(len(queries))}
