"""The pointwise baseline (the prior model to beat): pooled embedding -> 2-layer MLP -> 19 sigmoids, MSE on means."""

from __future__ import annotations

from typing import Any, Iterator

import jax
import ml_collections
import numpy as np
from flax import nnx
from jax.sharding import Mesh

from crescend_jax.data.dimensions import NUM_DIMENSIONS
from crescend_jax.data.table import EmbeddingTable
from crescend_jax.losses.pointwise import masked_mse
from crescend_jax.train.approach import Batch


def default_model_config() -> ml_collections.ConfigDict:
    """The ``config.model`` section: hidden_dim (512), dropout (0.3), input_dim (0 = the store's width)."""
    config = ml_collections.ConfigDict()
    config.name = "baseline"
    config.input_dim = 0
    config.hidden_dim = 512
    config.dropout = 0.3
    return config


class PointwiseMLP(nnx.Module):
    """x [B, D] -> Linear(hidden) -> GELU -> Dropout -> Linear(19) -> sigmoid, scores [B, 19] in (0, 1)."""

    def __init__(self, input_dim: int, hidden_dim: int, dropout: float, rngs: nnx.Rngs):
        self.hidden = nnx.Linear(input_dim, hidden_dim, rngs=rngs)
        self.dropout = nnx.Dropout(dropout, rngs=rngs)
        self.out = nnx.Linear(hidden_dim, NUM_DIMENSIONS, rngs=rngs)

    def __call__(self, x: jax.Array) -> jax.Array:
        return nnx.sigmoid(self.out(self.dropout(nnx.gelu(self.hidden(x)))))


def plain_batches(table: EmbeddingTable, batch_size: int, rng: np.random.Generator) -> Iterator[Batch]:
    """Endless shuffled batches of ``batch_size`` rows: epochs are fresh permutations, joined end to end.

    Besides the `Batch` fields, "row" int32 [B] holds each row's index in ``table`` (for error messages).
    """
    groups = table.group_ids()
    label_std = np.nan_to_num(table.label_std.astype(np.float32), nan=0.0)
    order = np.empty(0, dtype=np.int64)
    while True:
        while len(order) < batch_size:
            order = np.concatenate([order, rng.permutation(len(table))])
        rows, order = order[:batch_size], order[batch_size:]
        yield {
            "x": table.pooled[rows].astype(np.float32),
            "label_mean": table.label_mean[rows].astype(np.float32),
            "label_std": label_std[rows],
            "group": groups[rows],
            "mask": np.ones(batch_size, np.float32),
            "row": rows.astype(np.int32),
        }


class PointwiseBaseline:
    """`Approach` "baseline": regress each performance's 19 label means independently."""

    name = "baseline"

    def build_model(self, config: ml_collections.ConfigDict, input_dim: int, rngs: nnx.Rngs) -> nnx.Module:
        return PointwiseMLP(input_dim, config.model.hidden_dim, config.model.dropout, rngs)

    def loss(self, model: nnx.Module, batch: dict[str, jax.Array], mesh: Mesh) -> tuple[jax.Array, dict[str, Any]]:
        del mesh  # plain data parallelism: jit partitions the batch mean over the "data" axis itself
        return masked_mse(model(batch["x"]), batch["label_mean"], batch["mask"])

    def batches(self, table: EmbeddingTable, config: ml_collections.ConfigDict,
                rng: np.random.Generator) -> Iterator[Batch]:
        return plain_batches(table, config.train.batch_size, rng)

    def predict(self, model: nnx.Module, x: jax.Array) -> jax.Array:
        return model(x)
