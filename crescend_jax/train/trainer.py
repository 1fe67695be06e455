"""The training loop: composition folds, a jitted data-parallel step, checkpoints, metrics (big_vision style).

Workdir layout::

    config.json            the config of the run (a resume must match it)
    folds.json             per fold: held-out compositions and keys
    fold_<k>/checkpoints/  orbax: latest and best-by-validation steps
    fold_<k>/metrics.jsonl, fold_<k>/tensorboard/, fold_<k>/input_stats.npz, fold_<k>/done.json
"""

from __future__ import annotations

import contextlib
import dataclasses
import json
import sys
from pathlib import Path
from typing import Any, Callable, Iterator

import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
import optax
from flax import nnx
from jax.sharding import Mesh

from crescend_jax.config import ConfigError, config_to_json
from crescend_jax.data.splits import SplitError, check_split, evaluation_splits
from crescend_jax.data.table import EmbeddingTable
from crescend_jax.evaluate.metrics import pairwise_accuracy
from crescend_jax.models import get_approach
from crescend_jax.train import distributed
from crescend_jax.train.approach import Approach, Batch
from crescend_jax.train.checkpoint import FoldCheckpoints
from crescend_jax.train.metrics_writer import MetricsWriter

# Fields that may differ between a killed run and its resumption.
RESUME_IGNORED_FIELDS = ("train.resume", "train.stop_after_steps", "train.distributed")
HOST_ONLY_FIELDS = ("row",)  # batch fields kept on the host (row indices, for naming a bad batch's keys)


class TrainingError(RuntimeError):
    """Bad input or a failed run; the message names the item and the fix."""


class NonFiniteLossError(TrainingError):
    """The loss became NaN/inf; the last good checkpoint is kept."""


class TrainingStopped(TrainingError):
    """``train.stop_after_steps`` stopped the run abruptly (a simulated kill, for tests)."""


def default_train_config() -> ml_collections.ConfigDict:
    """The ``config.train`` section.

    batch_size: global rows per step (a multiple of the device count). num_steps: optimizer steps per fold.
    learning_rate, weight_decay: AdamW (weight_decay 0 = Adam). seed: model init, dropout and data order.
    eval_every: steps between validations (each one also saves a checkpoint). log_every: steps between metric lines.
    val_fraction: share of the training rows (whole compositions) held out for checkpoint selection.
    standardize_inputs: z-score pooled embeddings with the fold's training-row mean/std.
    resume: continue the run in --workdir (its config.json must match). stop_after_steps: test hook, >0 stops the
    first unfinished fold abruptly after that many steps (no checkpoint at the stop), like a kill.
    distributed: see `distributed.default_distributed_config`.
    """
    config = ml_collections.ConfigDict()
    config.batch_size = 32
    config.num_steps = 1500
    config.learning_rate = 1e-4
    config.weight_decay = 0.0
    config.seed = 0
    config.eval_every = 150
    config.log_every = 25
    config.val_fraction = 0.15
    config.standardize_inputs = True
    config.resume = False
    config.stop_after_steps = 0
    config.distributed = distributed.default_distributed_config()
    return config


@dataclasses.dataclass
class HeldoutPredictions:
    """Held-out predictions of a trained workdir: rows of ``table`` (first render only), scores float32 [N, 19]
    from the fold that held each row out, fold int32 [N], and the run's config."""

    table: EmbeddingTable
    scores: np.ndarray
    fold: np.ndarray
    config: ml_collections.ConfigDict


# ----------------------------------------------------------------------------------------------------- validation


def check_table(table: EmbeddingTable, config: ml_collections.ConfigDict) -> None:
    """Raises `TrainingError` for NaN/inf embeddings or label means, or a width other than ``model.input_dim``."""
    for field, values in (("embeddings", table.pooled), ("label means", table.label_mean)):
        bad = ~np.isfinite(values.reshape(len(table), -1)).all(axis=1)
        if bad.any():
            keys = ", ".join(table.keys[bad][:5])
            raise TrainingError(f"{bad.sum()} row(s) have NaN/inf {field} (e.g. {keys}); re-extract them or drop "
                                "them from the store")
    expected = config.model.get("input_dim", 0)
    if expected and expected != table.pooled.shape[1]:
        raise TrainingError(f"the store's embeddings are {table.pooled.shape[1]} wide (encoder {table.encoder!r}) but "
                            f"config.model.input_dim={expected}; set --config.model.input_dim=0 (use the store's "
                            "width) or point config.store at the right store")
    devices = jax.device_count()
    if config.train.batch_size % devices:
        raise TrainingError(f"train.batch_size={config.train.batch_size} is not a multiple of the {devices} devices; "
                            "change --config.train.batch_size")


def _flatten(tree: Any, prefix: str = "") -> dict[str, Any]:
    if isinstance(tree, dict):
        return {k: v for name, sub in tree.items() for k, v in _flatten(sub, f"{prefix}{name}.").items()}
    return {prefix[:-1]: tree}


def _prepare_workdir(workdir: Path, config: ml_collections.ConfigDict) -> None:
    """Writes config.json, or checks a resumed run's config against it (naming the differing fields)."""
    saved_path = workdir / "config.json"
    current = json.loads(config_to_json(config))
    exists = saved_path.exists()
    distributed.barrier("checked workdir")  # every process looks before process 0 writes
    if exists:
        if not config.train.resume:
            raise TrainingError(f"{workdir} already holds a run; pass --config.train.resume=True to continue it or "
                                "choose a new --workdir")
        saved, now = _flatten(json.loads(saved_path.read_text())), _flatten(current)
        differing = sorted(name for name in set(saved) | set(now) if saved.get(name) != now.get(name)
                           and not name.startswith(RESUME_IGNORED_FIELDS))
        if differing:
            details = "; ".join(f"{n}: {saved.get(n)!r} -> {now.get(n)!r}" for n in differing[:8])
            raise TrainingError(f"cannot resume {workdir}: it was made by another config ({details}); use the same "
                                "config or a new --workdir")
    elif jax.process_index() == 0:
        workdir.mkdir(parents=True, exist_ok=True)
        saved_path.write_text(config_to_json(config))
    distributed.barrier("prepared workdir")


def first_render_mask(table: EmbeddingTable) -> np.ndarray:
    """bool [N]: rows of the table's first render (in row order); all rows when there is one render."""
    return table.renders == table.renders[0] if len(table) else np.zeros(0, bool)


def validation_mask(table: EmbeddingTable, fraction: float, seed: int) -> np.ndarray:
    """bool [N] over a fold's training rows: whole units drawn at random until they hold >= ``fraction`` of the rows.

    Units are compositions (mirroring the test split) when there are at least 1 / ``fraction`` of them, else
    same-music groups (so two training compositions do not lose one to validation).
    """
    compositions = np.unique(table.compositions)
    units = table.compositions if len(compositions) * fraction >= 1 else table.groups
    names = np.random.default_rng(seed).permutation(np.unique(units))
    mask = np.zeros(len(table), bool)
    for name in names[:-1]:  # at least one unit stays for fitting
        if mask.mean() >= fraction:
            break
        mask |= units == name
    return mask


# ----------------------------------------------------------------------------------------------------- the fold loop


def _standardize(table: EmbeddingTable, mean: np.ndarray, std: np.ndarray) -> EmbeddingTable:
    return dataclasses.replace(table, pooled=((table.pooled - mean) / std).astype(np.float32))


def _input_stats(table: EmbeddingTable, enabled: bool) -> tuple[np.ndarray, np.ndarray]:
    width = table.pooled.shape[1]
    if not enabled:
        return np.zeros(width, np.float32), np.ones(width, np.float32)
    mean = table.pooled.mean(axis=0, dtype=np.float64)
    std = table.pooled.std(axis=0, dtype=np.float64)
    return mean.astype(np.float32), np.where(std > 1e-6, std, 1.0).astype(np.float32)


@dataclasses.dataclass
class _Compiled:
    """The jitted functions of one (approach, config, input width, mesh); every fold shares them."""

    init: Callable[[int], Any]  # fold -> replicated nnx.State of (model, optimizer)
    train_step: Callable  # (state, sharded batch) -> (state, metrics); donates state
    predict: Callable[[Any, np.ndarray], np.ndarray]  # (state, host x [N, ...]) -> host scores [N, 19]


_COMPILED: dict[tuple, _Compiled] = {}


def _compiled(approach: Approach, config: ml_collections.ConfigDict, input_dim: int, mesh: Mesh) -> _Compiled:
    """`_Compiled` for these settings, built (and traced) once per process and reused by every fold.

    We use jax.jit over the split state rather than nnx.jit: the NNX graph is traversed once at trace time instead
    of on every call (nnx.jit re-splits/merges the module each step, which dominates tiny CPU steps), and the
    state is a plain pytree with explicit shardings, which orbax saves and restores as is.
    """
    settings = {k: v for k, v in _flatten(json.loads(config_to_json(config))).items()
                if not k.startswith(RESUME_IGNORED_FIELDS)}
    cache_key = (type(approach), json.dumps(settings, sort_keys=True), input_dim, mesh)
    if cache_key in _COMPILED:
        return _COMPILED[cache_key]
    tx = optax.adamw(config.train.learning_rate, weight_decay=config.train.weight_decay)

    def create(fold: jax.Array) -> tuple[nnx.Module, nnx.Optimizer]:
        key = jax.random.fold_in(jax.random.key(config.train.seed), fold)
        model = approach.build_model(config, input_dim, nnx.Rngs(params=key, dropout=jax.random.fold_in(key, 1)))
        return model, nnx.Optimizer(model, tx, wrt=nnx.Param)

    # Shapes first, then one jitted initialisation placed replicated on the mesh (no eager op per parameter).
    model, optimizer = nnx.eval_shape(create, jnp.int32(0))
    graphdef = nnx.graphdef((model, optimizer))
    model.eval()  # Dropout off: a separate (static) graph for prediction
    eval_graphdef = nnx.graphdef((model, optimizer))
    replicated = distributed.replicated(mesh)
    jitted_init = jax.jit(lambda fold: nnx.state(create(fold)), out_shardings=replicated)

    def train_step(state, batch):
        model, optimizer = nnx.merge(graphdef, state)
        (loss, diagnostics), grads = nnx.value_and_grad(
            lambda m: approach.loss(m, batch, mesh), has_aux=True)(model)
        optimizer.update(model, grads)
        metrics = {"loss": loss, "grad_norm": optax.tree.norm(grads), **diagnostics}
        return nnx.state((model, optimizer)), metrics

    def predict_step(state, x):
        model, _ = nnx.merge(eval_graphdef, state)
        return approach.predict(model, x)

    jitted_predict = jax.jit(predict_step, out_shardings=distributed.data_sharded(mesh))
    devices = mesh.devices.size

    def predict(state, x: np.ndarray) -> np.ndarray:
        padded = np.zeros((-(-len(x) // devices) * devices, *x.shape[1:]), np.float32)
        padded[: len(x)] = x
        sharded = distributed.shard_batch({"x": padded}, mesh)["x"]
        return distributed.to_host(jitted_predict(state, sharded))[: len(x)]

    compiled = _Compiled(init=lambda fold: jitted_init(np.int32(fold)),
                         train_step=jax.jit(train_step, donate_argnums=0, out_shardings=replicated),
                         predict=predict)
    _COMPILED[cache_key] = compiled
    return compiled


def _mean_pairwise_accuracy(scores: np.ndarray, table: EmbeddingTable) -> float:
    accuracy = pairwise_accuracy(scores, table.label_mean, table.groups).accuracy
    return float(np.nanmean(accuracy)) if np.isfinite(accuracy).any() else float("nan")


def _check_losses(pending: list[tuple[int, jax.Array, np.ndarray]], keys: np.ndarray, fold: int,
                  saved_step: int | None) -> None:
    """Raises `NonFiniteLossError` naming the first step in ``pending`` with a NaN/inf loss and its batch's keys."""
    if not pending:
        return
    losses = np.array(jax.device_get([loss for _, loss, _ in pending]), np.float32)
    bad = np.flatnonzero(~np.isfinite(losses))
    if bad.size:
        step, _, rows = pending[bad[0]]
        names = ", ".join(keys[rows[rows >= 0]][:8]) if rows is not None else "(the approach gives no 'row' field)"
        kept = (f"the last good checkpoint (step {saved_step}) is kept" if saved_step is not None
                else "no checkpoint was saved before it")
        raise NonFiniteLossError(f"fold {fold}: the loss is {losses[bad[0]]} at step {step}; its batch holds rows "
                                 f"{names}; {kept}. Lower --config.train.learning_rate or inspect those rows")
    pending.clear()


def _skip(stream: Iterator[Batch], count: int) -> None:
    for _ in range(count):
        next(stream)


def train_fold(approach: Approach, config: ml_collections.ConfigDict, table: EmbeddingTable, test_mask: np.ndarray,
               fold: int, fold_dir: Path, mesh: Mesh) -> dict[str, Any]:
    """Trains one fold in ``fold_dir`` (resuming from its latest checkpoint if any); returns its done record."""
    done_path = fold_dir / "done.json"
    if done_path.exists():
        return json.loads(done_path.read_text())
    train_table = table.subset(~test_mask)
    val = validation_mask(train_table, config.train.val_fraction, config.train.seed + fold)
    check_split(train_table.groups, train_table.performers, val, name=f"fold {fold} validation split")
    fit_table = train_table.subset(~val)
    mean, std = _input_stats(fit_table, config.train.standardize_inputs)
    fit_table = _standardize(fit_table, mean, std)
    val_table = _standardize(train_table.subset(val & first_render_mask(train_table)), mean, std)
    if jax.process_index() == 0:
        fold_dir.mkdir(parents=True, exist_ok=True)
        np.savez(fold_dir / "input_stats.npz", mean=mean, std=std)

    built = _compiled(approach, config, table.pooled.shape[1], mesh)
    state = built.init(fold)
    num_steps, eval_every = config.train.num_steps, config.train.eval_every
    with contextlib.ExitStack() as cleanup:  # closes the writer, then the checkpoints, however the fold ends
        checkpoints = cleanup.enter_context(contextlib.closing(FoldCheckpoints(fold_dir / "checkpoints")))
        rng_state = np.random.default_rng([config.train.seed, fold]).bit_generator.state
        step = 0
        if (latest := checkpoints.latest_step()) is not None:
            state, saved = checkpoints.restore(latest, state)
            step, rng_state = saved["step"], saved["data_rng_state"]
        rng = np.random.default_rng()
        rng.bit_generator.state = rng_state
        stream = approach.batches(fit_table, config, rng)
        _skip(stream, step)  # replay the data order up to the checkpoint

        writer = cleanup.enter_context(contextlib.closing(
            MetricsWriter(fold_dir, num_steps, initial_step=step, description=f"fold {fold}")))
        pending: list[tuple[int, jax.Array, np.ndarray]] = []
        stop_at = step + config.train.stop_after_steps if config.train.stop_after_steps > 0 else None
        while step < num_steps:
            batch = next(stream)
            rows = batch.get("row")
            device_batch = distributed.shard_batch(
                {k: v for k, v in batch.items() if k not in HOST_ONLY_FIELDS}, mesh)
            state, metrics = built.train_step(state, device_batch)
            step += 1
            pending.append((step, metrics["loss"], rows))
            if step == stop_at:
                raise TrainingStopped(f"fold {fold}: stopped after step {step} (train.stop_after_steps)")
            if step % config.train.log_every == 0 or step % eval_every == 0 or step == num_steps:
                _check_losses(pending, fit_table.keys, fold, checkpoints.latest_step())
                logged = {k: float(v) for k, v in jax.device_get(metrics).items()}
                if step % eval_every == 0 or step == num_steps:
                    logged["val_accuracy"] = _mean_pairwise_accuracy(built.predict(state, val_table.pooled), val_table)
                    checkpoints.save(step, state, {"step": step, "data_rng_state": rng_state},
                                     logged["val_accuracy"])
                writer.write(step, logged)
        checkpoints.manager.wait_until_finished()
        record = {"fold": fold, "steps": step, "best_step": checkpoints.best_step(), "fit_rows": len(fit_table),
                  "val_rows": len(val_table)}
    if jax.process_index() == 0:
        done_path.write_text(json.dumps(record, indent=2))
    return record


# ----------------------------------------------------------------------------------------------------- entry points


def fold_masks(table: EmbeddingTable, config: ml_collections.ConfigDict) -> list[np.ndarray]:
    """The test masks of ``config.data`` (folds or one hold-out), each checked to leave groups to rank."""
    data = config.data
    masks = evaluation_splits(table.compositions, data.get("num_folds", 0), tuple(data.get("test_compositions", ())),
                              data.get("fold_seed", 0))
    for k, mask in enumerate(masks):
        check_split(table.groups, table.performers, mask, compositions=table.compositions, name=f"fold {k}")
    return masks


def train(config: ml_collections.ConfigDict, workdir: str | Path, table: EmbeddingTable | None = None,
          approach: Approach | None = None) -> list[dict[str, Any]]:
    """Trains every fold of ``config`` into ``workdir``; ``table``/``approach`` default to the store / registry.

    Raises `TrainingError` / `SplitError` for bad input (before any step), `NonFiniteLossError` on a NaN loss.
    """
    distributed.initialize_distributed(config.train.get("distributed"))
    workdir = Path(workdir)
    approach = approach if approach is not None else get_approach(config.model.name)
    if table is None:
        from crescend_jax.data.store import load_table

        table = load_table(config)
    check_table(table, config)
    masks = fold_masks(table, config)
    _prepare_workdir(workdir, config)
    if jax.process_index() == 0:
        folds = [{"fold": k, "test_compositions": sorted(set(table.compositions[m])),
                  "test_keys": sorted(set(table.keys[m]))} for k, m in enumerate(masks)]
        (workdir / "folds.json").write_text(json.dumps(folds, indent=1))
    mesh = distributed.make_mesh()
    return [train_fold(approach, config, table, mask, k, workdir / f"fold_{k}", mesh) for k, mask in enumerate(masks)]


def run_training(config: ml_collections.ConfigDict, workdir: str) -> int:
    """CLI entry: 0 when every fold trained; 1 (with the reason on stderr) for bad input, a bad setting or a NaN
    loss."""
    from crescend_jax.data.store import StoreError

    try:
        records = train(config, workdir)
    except (TrainingError, SplitError, StoreError, ConfigError) as err:
        print(f"error: {err}", file=sys.stderr)
        return 1
    for record in records:
        print(f"fold {record['fold']}: {record['steps']} steps, best step {record['best_step']}")
    return 0


def predict_heldout(workdir: str | Path, table: EmbeddingTable | None = None) -> HeldoutPredictions:
    """Scores of every held-out row (first render) from the best checkpoint of the fold that held it out."""
    workdir = Path(workdir)
    config_path = workdir / "config.json"
    if not config_path.exists():
        raise TrainingError(f"{workdir} has no config.json: it is not a training workdir (run `crescend-jax train`)")
    config = ml_collections.ConfigDict(json.loads(config_path.read_text()))
    approach = get_approach(config.model.name)
    if table is None:
        from crescend_jax.data.store import load_table

        table = load_table(config)
    folds = json.loads((workdir / "folds.json").read_text())
    mesh = distributed.make_mesh()
    heldout = first_render_mask(table)
    fold_of_row = np.full(len(table), -1, np.int32)
    scores = np.full((len(table), table.label_mean.shape[1]), np.nan, np.float32)
    built = _compiled(approach, config, table.pooled.shape[1], mesh)
    for entry in folds:
        k = entry["fold"]
        fold_dir = workdir / f"fold_{k}"
        rows = np.flatnonzero(heldout & np.isin(table.keys, entry["test_keys"]))
        with contextlib.closing(FoldCheckpoints(fold_dir / "checkpoints")) as checkpoints:
            step = checkpoints.best_step()
            step = step if step is not None else checkpoints.latest_step()
            if step is None:
                raise TrainingError(f"{fold_dir} has no checkpoint; train it first (crescend-jax train ... "
                                    "--config.train.resume=True)")
            state, _ = checkpoints.restore(step, built.init(k))
        stats = np.load(fold_dir / "input_stats.npz")
        scores[rows] = built.predict(state, (table.pooled[rows] - stats["mean"]) / stats["std"])
        fold_of_row[rows] = k
    keep = fold_of_row >= 0
    return HeldoutPredictions(table=table.subset(keep), scores=scores[keep], fold=fold_of_row[keep], config=config)
