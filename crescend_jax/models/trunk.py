"""The trunk every approach shares: frozen stored embeddings, MuQ's top conformer layers fine-tuned in Flax, or an
encoder over score-aligned sequences.

``config.trunk.kind``:

* ``"frozen"`` (default): the approach reads the store as it always has (pooled vectors of MuQ layers 9-12, or
  crops of their frames); no MuQ weight moves.
* ``"finetune"``: the store holds, per performance, the frames entering conformer layer K
  (``hidden_states[K-1]``, bf16; extracted with ``--config.encoder.muq.store_input_layer=K``). Training reads crops
  of them (``model.input="frames"``, ``model.sampler.crop_seconds``) and the model is::

      frames [B, T, H] -> MuQ layers K..depth (Flax, `encoders.muq_flax.MuQLayers`, initialised from the store's
      checkpoint by `encoders.muq_convert`) -> hidden_states[l] for the pooled layers l of encoder.muq.layers
      -> per-layer time mean, concatenated layer-major [B, len(layers) * H]  (the store's pooled vector)
      -> (p - mu) / sigma with the fold's statistics of the stored pooled vectors (fixed, not trained)
      -> the approach's own head, built exactly as for pooled inputs

  so at initialisation a crop covering a whole track gives the frozen model's standardised input (up to the bf16
  rounding of the stored frames). Held-out rows are predicted like any frame model: the approach's outputs averaged
  over the crops that cover the track (`models.functions`).

* ``"sequence"``: a small encoder over the score-aligned frames of the `aligned` encoder (one frame per score beat),
  masked self-attention with relative positions then attention pooling, in front of the approach's head; its
  settings are ``trunk.sequence.*`` and its on-device augmentation ``trunk.augment.*`` (`models.sequence_trunk`,
  `models.sequence_augment`).

Optimisation of the fine-tuned trunk (`param_groups`): the trunk's parameters get their own AdamW (``trunk.learning_rate``,
``trunk.weight_decay``); the layers in ``trunk.frozen_layers`` get no update (optax ``multi_transform``, through
``train.param_groups``, whose own groups match first). The conv modules' batch-norm statistics stay MuQ's (eval-mode
batch norm, `muq_flax.FrozenBatchNorm`). ``trunk.remat`` recomputes each layer in the backward pass (`nnx.remat`),
trading compute for memory on long crops. Data parallelism is the core's: the batch is sharded over the mesh and the
replicated trunk with it.

Refused before training, each with the command that fixes it: a K outside 1..depth, a store without the layer-(K-1)
frames (or holding another layer's), pooled layers below K-1, ``trunk.weights`` that do not reproduce the store's
pooled vectors from its stored input frames (weights of another checkpoint than the store's encoder).
"""

from __future__ import annotations

import copy
import dataclasses
import functools
import json
from pathlib import Path
from typing import Any

import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
from flax import nnx
from jax.sharding import Mesh

from crescend_jax.config import ConfigError
from crescend_jax.data.table import EmbeddingTable
from crescend_jax.encoders.muq_flax import ConformerConfig, MuQLayers
from crescend_jax.models.contract import Approach, InputError, InputStats, Objective, standardisation

KINDS = ("frozen", "finetune", "sequence")
MUQ_DEPTH = 12  # MuQ-large; a checkpoint's own config.json decides for other sizes
# The largest relative error ||p_flax - p_stored|| / ||p_stored|| of a pooled vector recomputed from the stored
# (bf16) input frames that still counts as the store's own weights: bf16 rounding gives ~0.5%; other weights O(1).
WEIGHTS_TOLERANCE = 0.05


class TrunkError(InputError):
    """A store or weights that cannot feed the fine-tuned trunk; the message names the fix."""


def default_trunk_config() -> ml_collections.ConfigDict:
    """``config.trunk`` (module doc). first_layer: K (the first fine-tuned conformer layer, 1-based as MuQ's
    hidden states). weights: the MuQ checkpoint (directory or weight file) the layers start from; "" = the store's
    encoder checkpoint (``encoder.muq.checkpoint``). frozen_layers: layers of K..depth kept fixed. dropout: use
    MuQ's own dropout rates in the fine-tuned layers (False: no dropout). remat: recompute each layer (fine-tuned MuQ
    layers, or the sequence trunk's blocks) in the backward pass.

    sequence (``kind="sequence"``, `models.sequence_trunk`): width (model width H), num_layers, num_heads, mlp_dim,
    dropout (inside the blocks), max_distance (relative positions are clipped to +-max_distance score positions),
    max_positions (the window the core reads from each row: whole sequences up to this many positions, longer rows
    in windows of it), pooling ("attention": masked softmax pooling, or "mean": masked mean), cross_window (approach
    B's cross_attention head over aligned positions: position t of one performance reads positions t +- cross_window
    of the other; -1 = all).
    augment (``kind="sequence"``, training only, drawn on the device each step, `models.sequence_augment`): tempo,
    velocity, crop (each a switch); tempo_range (the global tempo factor is exp(u log(1 + tempo_range)), u ~ U[-1, 1]),
    velocity_range (offset in MIDI velocity units, U[-v, v]), crop_min_fraction (a crop keeps at least this share of
    the sequence's positions)."""
    config = ml_collections.ConfigDict()
    config.kind = "frozen"
    config.first_layer = 9
    config.weights = ""
    config.learning_rate = 1e-5
    config.weight_decay = 0.0
    config.frozen_layers = ()
    config.remat = False
    config.dropout = False
    config.sequence = ml_collections.ConfigDict()
    config.sequence.width = 64
    config.sequence.num_layers = 2
    config.sequence.num_heads = 4
    config.sequence.mlp_dim = 128
    config.sequence.dropout = 0.1
    config.sequence.max_distance = 16
    config.sequence.max_positions = 64
    config.sequence.pooling = "attention"
    config.sequence.cross_window = 0
    config.augment = ml_collections.ConfigDict()
    config.augment.tempo = True
    config.augment.tempo_range = 0.1
    config.augment.velocity = True
    config.augment.velocity_range = 8.0
    config.augment.crop = True
    config.augment.crop_min_fraction = 0.5
    return config


def trunk_kind(config: ml_collections.ConfigDict) -> str:
    """``config.trunk.kind`` ("frozen" when the config has no trunk section), checked."""
    kind = config.get("trunk", {}).get("kind", "frozen")
    if kind not in KINDS:
        raise ConfigError(f"unknown trunk.kind {kind!r}; set --config.trunk.kind to one of {KINDS}")
    return kind


def is_finetuned(config: ml_collections.ConfigDict) -> bool:
    return trunk_kind(config) == "finetune"


def _extract_hint(k: int) -> str:
    return (f"extract a store with them: `crescend-jax extract --config <this config> --config.encoder.name=muq "
            f"--config.encoder.muq.store_input_layer={k}`")


def weights_source(config: ml_collections.ConfigDict) -> str:
    """Where the trunk's initial weights come from: ``trunk.weights``, else the encoder's checkpoint."""
    return config.trunk.weights or config.encoder.muq.checkpoint


def conformer_config(config: ml_collections.ConfigDict) -> ConformerConfig:
    """The conformer hyperparameters of the weights' checkpoint (its ``config.json``); dropout off unless
    ``trunk.dropout``. Raises `ConfigError` when the checkpoint cannot be found."""
    from crescend_jax.encoders.muq import CheckpointError, resolve_checkpoint

    source = weights_source(config)
    path = Path(source).expanduser()
    try:
        directory = path.parent if path.is_file() else resolve_checkpoint(source)
    except CheckpointError as err:
        raise ConfigError(f"trunk.kind='finetune' starts from MuQ's weights: {err}") from None
    config_file = directory / "config.json"
    if not config_file.is_file():
        raise ConfigError(f"trunk.weights={source!r}: no config.json beside the weights; point --config.trunk.weights "
                          "at a MuQ checkpoint directory (MuQ.save_pretrained)")
    conformer = ConformerConfig.from_muq_config(json.loads(config_file.read_text()))
    return conformer if config.trunk.dropout else conformer.without_dropout()


def check_trunk_config(config: ml_collections.ConfigDict) -> None:
    """The settings of a fine-tuned trunk, refused with the fix before any workdir exists (a frozen trunk: none)."""
    if not is_finetuned(config):
        return
    trunk = config.trunk
    k = trunk.first_layer
    if config.encoder.name != "muq":
        raise ConfigError(f"trunk.kind='finetune' fine-tunes MuQ's layers but encoder.name={config.encoder.name!r}; "
                          "set --config.encoder.name=muq (or --config.trunk.kind=frozen)")
    if not 1 <= k <= MUQ_DEPTH:
        raise ConfigError(f"trunk.first_layer={k}: MuQ's conformer layers are 1..{MUQ_DEPTH}; set "
                          "--config.trunk.first_layer=K in that range (9 fine-tunes the pooled layers 9-12)")
    depth = conformer_config(config).depth
    if k > depth:
        raise ConfigError(f"trunk.first_layer={k} but the checkpoint {weights_source(config)} has {depth} layers; set "
                          f"--config.trunk.first_layer to 1..{depth}")
    stored = config.encoder.muq.get("store_input_layer", 0)
    if stored != k:
        raise ConfigError(f"trunk.first_layer={k} needs a store with the frames entering layer {k} but "
                          f"encoder.muq.store_input_layer={stored}; set --config.encoder.muq.store_input_layer={k} "
                          f"and {_extract_hint(k)}")
    low = [layer for layer in config.encoder.muq.layers if layer < k - 1]
    if low:
        raise ConfigError(f"encoder.muq.layers={tuple(config.encoder.muq.layers)} pools layer(s) {low} below the "
                          f"stored input hidden_states[{k - 1}]: set --config.trunk.first_layer<={min(low) + 1}")
    frozen = [layer for layer in trunk.frozen_layers if not k <= layer <= depth]
    if frozen:
        raise ConfigError(f"trunk.frozen_layers={tuple(trunk.frozen_layers)}: {frozen} not among the fine-tuned "
                          f"layers {k}..{depth}")
    if config.model.get("input", "pooled") != "frames":
        raise ConfigError("trunk.kind='finetune' trains on crops of the stored layer-input frames: set "
                          "--config.model.input=frames (and --config.model.sampler.crop_seconds)")
    if trunk.learning_rate < 0:
        raise ConfigError(f"trunk.learning_rate={trunk.learning_rate} must be >= 0")


def head_config(config: ml_collections.ConfigDict) -> ml_collections.ConfigDict:
    """``config`` as the approach's head sees it: pooled inputs (the trunk does the pooling)."""
    head = copy.deepcopy(config)
    with head.unlocked():
        head.model.input = "pooled"
    return head


# ----------------------------------------------------------------------------------------------------- the table


def trunk_table(table: EmbeddingTable, config: ml_collections.ConfigDict) -> EmbeddingTable:
    """The table a fine-tuned trunk trains on: its ``frames`` are the stored layer-input frames ([1, T, H] per row,
    so every frame path of the core reads them); unchanged for a frozen trunk. Raises `TrunkError` for a store
    without the frames entering ``trunk.first_layer``."""
    if not is_finetuned(config):
        return table
    k = config.trunk.first_layer
    if table.input_frames is None or table.input_layer != k:
        held = f"those of layer {table.input_layer}" if table.input_frames is not None else "none"
        raise TrunkError(f"trunk.kind='finetune' with first_layer={k} needs the frames entering layer {k} "
                         f"(hidden_states[{k - 1}]) in the store {table.encoder!r}, which holds {held}: "
                         f"{_extract_hint(k)}")
    return dataclasses.replace(table, frames=[frames[None] for frames in table.input_frames])


def identity_stats(table: EmbeddingTable) -> tuple[np.ndarray, np.ndarray]:
    """(0, 1) float32 [H] for the layer-input frames: they enter MuQ's layers as MuQ computed them."""
    width = table.frames[0].shape[-1] if table.frames else 0
    return np.zeros(width, np.float32), np.ones(width, np.float32)


# ----------------------------------------------------------------------------------------------------- the model


class Statistic(nnx.Variable):
    """A fixed statistic kept with the model (checkpointed, never trained: not an `nnx.Param`)."""


def last_layer(first: int, pooled_layers) -> int:
    """The last conformer layer the trunk runs: the deepest pooled layer (at least K)."""
    return max(max(pooled_layers), first)


def pool_hidden_states(layers: MuQLayers, frames: jax.Array, pooled_layers, rngs: nnx.Rngs | None = None
                       ) -> jax.Array:
    """Layer-(K-1) frames [B, T, H] through ``layers`` -> per-layer time means of ``pooled_layers`` (layer K-1 is
    the input itself), concatenated layer-major [B, len(pooled_layers) * H]: the store's pooled vector."""
    states = {layers.first - 1: jnp.asarray(frames, jnp.float32)}
    states.update(zip(layers.indices, layers(frames, rngs=rngs)))
    return jnp.concatenate([states[layer].mean(axis=1) for layer in pooled_layers], axis=-1)


class FinetunedTrunk(nnx.Module):
    """Layer-(K-1) frames [B, T, H] -> standardised pooled vector [B, len(pooled) * H] (module doc)."""

    def __init__(self, conformer: ConformerConfig, first: int, pooled_layers: tuple[int, ...], *, remat: bool,
                 rngs: nnx.Rngs) -> None:
        self.layers = MuQLayers(conformer, first, last_layer(first, pooled_layers), remat=remat, rngs=rngs)
        self.pooled_layers = tuple(pooled_layers)
        width = len(pooled_layers) * conformer.hidden_size
        self.mean = Statistic(jnp.zeros(width, jnp.float32))
        self.std = Statistic(jnp.ones(width, jnp.float32))
        rates = (conformer.attention_dropout, conformer.hidden_dropout, conformer.activation_dropout,
                 conformer.conv_dropout)
        self.dropout_rngs = nnx.Rngs(dropout=rngs.dropout()) if any(rates) else None

    def __call__(self, frames: jax.Array) -> jax.Array:
        pooled = pool_hidden_states(self.layers, frames, self.pooled_layers, self.dropout_rngs)
        return (pooled - self.mean.get_value()) / self.std.get_value()


class TrunkedModel(nnx.Module):
    """``trunk`` (`FinetunedTrunk`) then ``head`` (the approach's model on pooled inputs)."""

    def __init__(self, trunk: FinetunedTrunk, head: nnx.Module) -> None:
        self.trunk = trunk
        self.head = head


class Finetuned(Approach):
    """An `Approach` with a fine-tuned MuQ trunk in front of ``inner``'s model (module doc); same name and kind. It
    overrides the contract's input hooks: the table's frames become the stored layer-input frames, the inputs are not
    standardised (the pooled output is, with the fold's pooled statistics), a fold starts from MuQ's converted
    weights, and the trunk has its own optimiser groups."""

    def __init__(self, inner: Approach) -> None:
        self.inner = inner
        self.name, self.kind = inner.name, inner.kind

    def check_config(self, config: ml_collections.ConfigDict) -> None:
        check_trunk_config(config)
        self.inner.check_config(head_config(config))

    def objective(self, config: ml_collections.ConfigDict) -> Objective:
        return self.inner.objective(head_config(config))

    def build_model(self, config: ml_collections.ConfigDict, input_dim: int, rngs: nnx.Rngs) -> nnx.Module:
        conformer = conformer_config(config)
        pooled_layers = tuple(int(layer) for layer in config.encoder.muq.layers)
        width = len(pooled_layers) * conformer.hidden_size
        if input_dim != width:
            raise TrunkError(f"the store's pooled vectors are {input_dim} wide but layers {pooled_layers} of "
                             f"{weights_source(config)} pool to {width}: the weights are not the store's encoder")
        trunk = FinetunedTrunk(conformer, config.trunk.first_layer, pooled_layers, remat=config.trunk.remat,
                               rngs=rngs)
        return TrunkedModel(trunk, self.inner.build_model(head_config(config), width, rngs))

    def loss(self, objective: Objective, model: TrunkedModel, batch: dict[str, jax.Array], step: jax.Array,
             mesh: Mesh | None) -> tuple[jax.Array, dict[str, Any]]:
        return self.inner.loss(objective, model.head, {**batch, "x": model.trunk(batch["x"])}, step, mesh)

    def sampler(self, table: EmbeddingTable, config: ml_collections.ConfigDict, seed):
        return self.inner.sampler(table, config, seed)  # config.model.input="frames": crops of the input frames

    def encode(self, objective: Objective, model: TrunkedModel, x: jax.Array) -> dict[str, jax.Array]:
        return self.inner.encode(objective, model.head, model.trunk(x))

    def compare(self, objective: Objective, model: TrunkedModel, a: jax.Array, b: jax.Array) -> jax.Array:
        return self.inner.compare(objective, model.head, a, b)

    # -- the input hooks

    def prepare_table(self, table: EmbeddingTable, config: ml_collections.ConfigDict, *,
                      training: bool) -> EmbeddingTable:
        """`trunk_table`; when ``training``, also `check_weights` (the weights a fold starts from must be the
        store's encoder). Raises `TrunkError`."""
        prepared = trunk_table(table, config)
        if training:
            check_weights(table, config)
        return prepared

    def input_stats(self, table: EmbeddingTable, config: ml_collections.ConfigDict) -> InputStats:
        """Identity for the layer-input frames (they enter MuQ's layers as MuQ computed them); the stored pooled
        vectors' statistics for the trunk's pooled output."""
        mean, std = identity_stats(table)
        pooled_mean, pooled_std = standardisation(table.pooled, config.train.get("standardize_inputs", True))
        return InputStats(mean=mean, std=std, pooled_mean=pooled_mean, pooled_std=pooled_std)

    def initial_state(self, model_state: nnx.State, config: ml_collections.ConfigDict,
                      stats: InputStats) -> nnx.State:
        return initial_state(model_state, config, stats.pooled_mean, stats.pooled_std)

    def param_groups(self, config: ml_collections.ConfigDict) -> ml_collections.ConfigDict:
        return param_groups(config)


# ----------------------------------------------------------------------------------------------------- initial state


def load_layers(config: ml_collections.ConfigDict) -> MuQLayers:
    """MuQ layers K..(last pooled layer) from ``trunk.weights`` (or the encoder's checkpoint), converted; read and
    converted once per process (the weight check and every fold's initial state share them; never mutated)."""
    k = config.trunk.first_layer
    return _converted_layers(weights_source(config), k, last_layer(k, config.encoder.muq.layers),
                             conformer_config(config))


@functools.lru_cache(maxsize=1)
def _converted_layers(source: str, first: int, last: int, conformer: ConformerConfig) -> MuQLayers:
    from crescend_jax.encoders.muq_convert import ConversionError, load_muq_layers

    try:
        return load_muq_layers(source, first, last, conformer)
    except ConversionError as err:
        raise TrunkError(f"trunk.weights={source!r}: {err}") from None


def check_weights(table: EmbeddingTable, config: ml_collections.ConfigDict) -> float:
    """Refuses weights that are not the store's encoder: the converted layers must turn the stored input frames of
    the shortest row into its stored pooled vector (relative error <= `WEIGHTS_TOLERANCE`). Returns the error."""
    if not is_finetuned(config):
        return 0.0
    layers = load_layers(config)
    table = trunk_table(table, config)
    lengths = [frames.shape[1] for frames in table.frames]
    row = int(np.argmin(lengths))
    frames = jnp.asarray(np.asarray(table.frames[row][0], np.float32))[None]
    pooled = np.asarray(pool_hidden_states(layers, frames, tuple(config.encoder.muq.layers)))[0]
    stored = table.pooled[row]
    error = float(np.linalg.norm(pooled - stored) / max(np.linalg.norm(stored), 1e-12))
    if not error <= WEIGHTS_TOLERANCE:
        raise TrunkError(
            f"trunk.weights={weights_source(config)!r} do not reproduce the store {table.encoder!r}: its layers turn "
            f"the stored input frames of {table.keys[row]} into a pooled vector {error:.1%} away from the stored one "
            f"(<= {WEIGHTS_TOLERANCE:.0%} expected); fine-tune from the store's own checkpoint "
            f"(--config.trunk.weights='' uses encoder.muq.checkpoint={config.encoder.muq.checkpoint!r}) or extract "
            f"a store with these weights ({_extract_hint(config.trunk.first_layer)} "
            f"--config.encoder.muq.checkpoint=<their directory>)")
    return error


def initial_state(model_state: nnx.State, config: ml_collections.ConfigDict, pooled_mean: np.ndarray,
                  pooled_std: np.ndarray) -> nnx.State:
    """``model_state`` (a `TrunkedModel`'s) with the trunk's layers from the converted MuQ weights and the fold's
    pooled-vector statistics; each leaf keeps its sharding."""
    layers = nnx.state(load_layers(config))
    state = nnx.to_pure_dict(model_state)
    fresh = nnx.to_pure_dict(layers)
    # through host memory: new device buffers, so the train step's donation never deletes the cached layers' arrays
    replaced = jax.tree.map(lambda old, new: jax.device_put(np.asarray(new, old.dtype), old.sharding),
                            state["trunk"]["layers"], fresh)
    state["trunk"]["layers"] = replaced
    for name, value in (("mean", pooled_mean), ("std", pooled_std)):
        old = state["trunk"][name]
        state["trunk"][name] = jax.device_put(jnp.asarray(value, old.dtype), old.sharding)
    nnx.replace_by_pure_dict(model_state, state)
    return model_state


def param_groups(config: ml_collections.ConfigDict) -> ml_collections.ConfigDict:
    """The optimiser groups a fine-tuned trunk adds after ``train.param_groups``: its frozen layers, then the rest of
    its layers at ``trunk.learning_rate`` (`crescend_jax.train.optimizer`)."""
    groups = ml_collections.ConfigDict()
    if not is_finetuned(config):
        return groups
    trunk = config.trunk
    k = trunk.first_layer
    frozen = ""
    if trunk.frozen_layers:  # (a ConfigDict orders its groups by name: the patterns must not overlap)
        frozen = "layers/layers/(" + "|".join(str(layer - k) for layer in sorted(trunk.frozen_layers)) + ")/"
        groups.trunk_frozen = {"pattern": f"^trunk/{frozen}", "learning_rate": 0.0, "weight_decay": 0.0,
                               "frozen": True}
    groups.trunk = {"pattern": f"^trunk/(?!{frozen})" if frozen else "^trunk/",
                    "learning_rate": trunk.learning_rate, "weight_decay": trunk.weight_decay, "frozen": False}
    return groups
