"""The contract between the training core and an approach (models/<approach>.py)."""

from __future__ import annotations

from typing import Any, Iterator, Protocol

import jax
import ml_collections
import numpy as np
from flax import nnx
from jax.sharding import Mesh

from crescend_jax.data.table import EmbeddingTable

# A batch is a dict of host numpy arrays with a leading batch axis B (a multiple of the mesh size):
#   "x":          float32 [B, D] pooled embeddings (or [B, T, F] frame crops for frame models)
#   "label_mean": float32 [B, 19]
#   "label_std":  float32 [B, 19] (NaN replaced by 0 before batching)
#   "group":      int32   [B] same-music group id (equal ids = same music)
#   "mask":       float32 [B] 1 for real rows, 0 for padding rows (padding has group -1)
#   "row":        int32   [B] each row's index in the table (-1 for padding); stays on the host, names a bad batch
Batch = dict[str, np.ndarray]


class Approach(Protocol):
    """What each approach supplies; the trainer owns the loop, sharding, optimiser, checkpoints, logging."""

    name: str

    def build_model(self, config: ml_collections.ConfigDict, input_dim: int, rngs: nnx.Rngs) -> nnx.Module:
        """The Flax NNX model for ``config.model``."""
        ...

    def loss(self, model: nnx.Module, batch: dict[str, jax.Array], mesh: Mesh) -> tuple[jax.Array, dict[str, Any]]:
        """Scalar training loss and diagnostics (scalars) on a (sharded) batch; called inside jit."""
        ...

    def batches(self, table: EmbeddingTable, config: ml_collections.ConfigDict, rng: np.random.Generator) -> Iterator[Batch]:
        """An endless stream of training batches of ``config.train.batch_size`` rows."""
        ...

    def predict(self, model: nnx.Module, x: jax.Array) -> jax.Array:
        """float32 [N, 19] scores; higher means higher on the dimension (only order within a group matters)."""
        ...
