"""The pointwise baseline (the prior model to beat): pooled embedding -> 2-layer MLP -> 19 sigmoids, MSE on means."""

from __future__ import annotations

from typing import Any

import jax
import ml_collections
from flax import nnx
from jax.sharding import Mesh

from crescend_jax.config import ConfigError
from crescend_jax.data.dimensions import NUM_DIMENSIONS
from crescend_jax.data.table import EmbeddingTable
from crescend_jax.losses.pointwise import masked_mse
from crescend_jax.models.contract import SCORER, Approach, Objective, check_batch_config, model_input
from crescend_jax.models.sampler import PlainSampler


def default_model_config() -> ml_collections.ConfigDict:
    """The ``config.model`` section: hidden_dim (512), dropout (0.3) after the hidden layer, input_dropout (0: off) on
    the standardised inputs, input_dim (0 = the store's width)."""
    config = ml_collections.ConfigDict()
    config.name = "baseline"
    config.input_dim = 0
    config.init_from = ""  # a finished workdir whose parameters start every fold (train/warm_start.py)
    config.init_from_prefix = ""  # use only the source's parameters under this path prefix (e.g. "style/")
    config.hidden_dim = 512
    config.dropout = 0.3
    config.input_dropout = 0.0
    return config


class PointwiseMLP(nnx.Module):
    """x [B, D] -> Linear(hidden) -> GELU -> Dropout -> Linear(19) -> sigmoid, scores [B, 19] in (0, 1)."""

    def __init__(self, input_dim: int, hidden_dim: int, dropout: float, rngs: nnx.Rngs, input_dropout: float = 0.0):
        self.input_dropout = nnx.Dropout(input_dropout, rngs=rngs)
        self.hidden = nnx.Linear(input_dim, hidden_dim, rngs=rngs)
        self.dropout = nnx.Dropout(dropout, rngs=rngs)
        self.out = nnx.Linear(hidden_dim, NUM_DIMENSIONS, rngs=rngs)

    def features(self, x: jax.Array) -> jax.Array:
        """The hidden layer GELU(Linear(x)) [B, hidden] (before dropout): the embedding the evaluation probes."""
        return nnx.gelu(self.hidden(self.input_dropout(x)))

    def __call__(self, x: jax.Array) -> jax.Array:
        return nnx.sigmoid(self.out(self.dropout(self.features(x))))


class PointwiseBaseline(Approach):
    """`Approach` "baseline" (a scorer): regress each performance's 19 label means independently."""

    name = "baseline"
    kind = SCORER

    def check_config(self, config: ml_collections.ConfigDict) -> None:
        check_batch_config(config)
        if model_input(config) != "pooled":
            raise ConfigError("the baseline reads pooled vectors only; set --config.model.input=pooled")
        if not (0 <= config.model.dropout < 1 and 0 <= config.model.get("input_dropout", 0.0) < 1
                and config.model.hidden_dim >= 1):
            raise ConfigError("model.dropout and model.input_dropout must be in [0, 1) and model.hidden_dim positive")

    def objective(self, config: ml_collections.ConfigDict) -> Objective:
        return Objective()  # plain MSE: no setting

    def build_model(self, config: ml_collections.ConfigDict, input_dim: int, rngs: nnx.Rngs) -> nnx.Module:
        return PointwiseMLP(input_dim, config.model.hidden_dim, config.model.dropout, rngs,
                            input_dropout=config.model.get("input_dropout", 0.0))

    def loss(self, objective: Objective, model: nnx.Module, batch: dict[str, jax.Array], step: jax.Array,
             mesh: Mesh | None) -> tuple[jax.Array, dict[str, Any]]:
        del objective, step, mesh  # no schedule; data parallel: jit partitions the batch mean over the "data" axis
        return masked_mse(model(batch["x"]), batch["label_mean"], where=batch["mask"])

    def sampler(self, table: EmbeddingTable, config: ml_collections.ConfigDict, seed: int) -> PlainSampler:
        return PlainSampler(table, config.train.batch_size, seed)

    def encode(self, objective: Objective, model: nnx.Module, x: jax.Array) -> dict[str, jax.Array]:
        return {"scores": model(x), "hidden": model.features(x)}
