"""`EmbeddingTable`: the in-memory view of one or more stores that training and evaluation read."""

from __future__ import annotations

import dataclasses

import numpy as np


@dataclasses.dataclass
class EmbeddingTable:
    """Column-oriented rows; row i is one (performance, render). Shapes: N rows, D pooled width.

    keys, compositions, pieces, performers, groups, renders: str arrays [N]
    label_mean, label_std, label_truth: float32 [N, 19] (std/truth NaN where unknown)
    ratings: list of N float32 arrays [R_i, 19] (individual raters, NaN = missing)
    pooled: float32 [N, D]
    frames: None, or list of N float32 arrays [layers, T_i, dim]
    encoder: encoder name; frame_rate: frames per second of ``frames``.
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
        )

    def group_ids(self) -> np.ndarray:
        """int32 [N]: dense ids of ``groups`` (sorted by name)."""
        _, ids = np.unique(self.groups, return_inverse=True)
        return ids.astype(np.int32)

    @staticmethod
    def concat(tables: list["EmbeddingTable"]) -> "EmbeddingTable":
        """Rows of all ``tables`` (e.g. one store per soundfont); encoders must agree."""
        first = tables[0]
        for t in tables[1:]:
            if t.encoder != first.encoder or t.pooled.shape[1] != first.pooled.shape[1]:
                raise ValueError(f"cannot combine stores of encoders {first.encoder!r} and {t.encoder!r}")
        cat = lambda name: np.concatenate([getattr(t, name) for t in tables])
        return dataclasses.replace(
            first,
            **{n: cat(n) for n in ("keys", "compositions", "pieces", "performers", "groups", "renders",
                                   "label_mean", "label_std", "label_truth", "pooled")},
            ratings=[r for t in tables for r in t.ratings],
            frames=None if any(t.frames is None for t in tables) else [f for t in tables for f in t.frames],
        )
