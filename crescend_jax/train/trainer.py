"""The fold loop (big_vision style): for each composition fold, steps, checkpoints, resume and logging.

Workdir layout::

    config.json            the config of the run (a resume must match it)
    fingerprint.json       what it trained on: stores, data root, hashes of keys and labels (`data.fingerprint`)
    folds.json             per fold: held-out compositions, works and keys; training and validation compositions
    fold_<k>/checkpoints/  orbax: latest and best-by-validation steps ("model" and "optimizer" items)
    fold_<k>/metrics.jsonl, fold_<k>/tensorboard/, fold_<k>/done.json
    fold_<k>/input_stats.npz   mean, std: the standardisation of the model's inputs; pooled_mean, pooled_std: that
                           of the pooled vectors (`Approach.input_stats`: the same for a plain approach)

The approach supplies the model, objective, loss, sampler and predictions, and the input hooks the trainer calls
without knowing what lies behind them (`Approach.prepare_table`, ``input_stats``, ``initial_state``,
``param_groups``: a trunk's; `crescend_jax.models.contract`); splitting lives in
`crescend_jax.data.splits`, the model's jitted functions in `crescend_jax.models.functions`, the step in `step`,
the optimiser in `optimizer`, the on-device input path in `input_pipeline`, held-out prediction in
`crescend_jax.evaluate.predict`, error kinds and exit codes in `crescend_jax.errors`.
"""

from __future__ import annotations

import contextlib
import dataclasses
import json
import os
import sys
from pathlib import Path
from typing import Any

import jax
import ml_collections
import numpy as np

from crescend_jax.config import ConfigError, config_to_json
from crescend_jax.errors import DataError
from crescend_jax.data import fingerprint as fingerprint_lib
from crescend_jax.data.run_table import run_folds, run_table, run_validation_mask, run_works
from crescend_jax.data.splits import check_split, first_render_mask
from crescend_jax.data.targets import selection_labels
from crescend_jax.data.table import EmbeddingTable, default_input_config
from crescend_jax.models import approach_for
from crescend_jax.models.contract import Approach, InputError, InputStats, crop_frames, mean_pairwise_accuracy
from crescend_jax.models.corpus_mix import training_sampler
from crescend_jax.models.functions import NON_MODEL_FIELDS, flatten, model_functions, predict_rows
from crescend_jax.models.targets import DEFAULT_DERIVED_MIN_LABEL_GAP, DEFAULT_DERIVED_WEIGHT
from crescend_jax.models.trunk import default_trunk_config
from crescend_jax.runtime import distributed
from crescend_jax.runtime.checkpoint import FoldCheckpoints
from crescend_jax.train import measure
from crescend_jax.train.input_pipeline import host_table, place_plan, place_table
from crescend_jax.train.metrics_writer import MetricsWriter
from crescend_jax.train.optimizer import build_optimizer
from crescend_jax.train.step import build_train_step
from crescend_jax.train.warm_start import warm_start

# Fields that may differ between a killed run and its resumption: those that do not change the model (one list,
# `models.functions.NON_MODEL_FIELDS`; this name is kept for the sweep's finished check).
RESUME_IGNORED_FIELDS = NON_MODEL_FIELDS


def added_field_defaults() -> dict[str, Any]:
    """Config fields added after runs existed, flattened, with the value that reproduces what those runs did (a run
    saved without the trunk section trained on the frozen store; one without ``train.label_free`` refused unrated
    rows; one without ``data.group_relative`` read the inputs as stored; one without A's or B's
    ``model.loss.derived_*`` had no derived targets, on which these weights act alone; one without
    ``train.compute_dtype`` trained in float32). A saved config.json that lacks such a field reads as having this
    value, so adding a field never makes the runs made before it look like another config (resume, sweeps skipping finished points)."""
    added = ml_collections.ConfigDict({"trunk": default_trunk_config(),
                                       "train": {"label_free": False, "compute_dtype": "float32"},
                                       "data": default_input_config(),
                                       "model": {"loss": {"derived_weight": DEFAULT_DERIVED_WEIGHT,
                                                          "derived_min_label_gap": DEFAULT_DERIVED_MIN_LABEL_GAP}}})
    return flatten(json.loads(config_to_json(added)))


def saved_config_fields(saved: dict[str, Any]) -> dict[str, Any]:
    """A config (JSON dict: saved, or a current one that leaves such a section out) flattened, with the
    `added_field_defaults` it lacks filled in."""
    return {**added_field_defaults(), **flatten(saved)}


class TrainingError(DataError):
    """Bad input or a failed run; the message names the item and the fix."""


class NonFiniteLossError(TrainingError):
    """The loss became NaN/inf; the last good checkpoint is kept."""


class TrainingStopped(BaseException):
    """``train.stop_after_steps`` stopped the run abruptly (a simulated kill, for tests): like KeyboardInterrupt, not
    a failure any command reports (it is neither a `ConfigError` nor a `DataError`)."""


def default_train_config() -> ml_collections.ConfigDict:
    """The ``config.train`` section.

    batch_size: global rows per step (a multiple of the device count). num_steps: optimizer steps per fold.
    learning_rate, weight_decay: AdamW (weight_decay 0 = Adam). param_groups: optional per-parameter-group
    optimisers (see `crescend_jax.train.optimizer`). seed: model init, dropout and data order.
    eval_every: steps between validations (each one also saves a checkpoint). log_every: steps between metric lines.
    val_fraction: share of the training rows held out, as whole compositions (works with data.split_level="work"),
    for checkpoint selection; with fewer than max(2, round(1/val_fraction)) training compositions there is no
    validation split and the last step is used (said in the log and in done.json).
    standardize_inputs: z-score inputs (pooled vectors and frames alike) with the fold's training-row statistics.
    compute_dtype: "float32" (default; on CPU bfloat16 products are no faster) or "bfloat16": the training step's
    matmuls and activations in bfloat16, the parameters, optimizer state and losses in float32 (`train.step`).
    label_free: allow a corpus without ratings (every row's 19 label means NaN, e.g. ASAP pre-training): only the
    loss terms that need no label learn (approach A's InfoNCE; its ranking term sees no qualifying pair). Off: NaN
    label means are refused as broken rows.
    resume: continue the run in --workdir (its config.json and fingerprint.json must match). stop_after_steps: test
    hook, >0 stops the first unfinished fold abruptly after that many steps (no checkpoint at the stop), like a kill.
    distributed: see `crescend_jax.runtime.distributed.default_distributed_config`.
    """
    config = ml_collections.ConfigDict()
    config.batch_size = 32
    config.num_steps = 1500
    config.learning_rate = 1e-4
    config.weight_decay = 0.0
    config.param_groups = ml_collections.ConfigDict()
    config.seed = 0
    config.eval_every = 150
    config.log_every = 25
    config.val_fraction = 0.15
    config.standardize_inputs = True
    config.label_free = False
    config.compute_dtype = "float32"
    config.resume = False
    config.stop_after_steps = 0
    config.distributed = distributed.default_distributed_config()
    return config


# ----------------------------------------------------------------------------------------------------- checks


def check_config(approach: Approach, config: ml_collections.ConfigDict) -> None:
    """Config mistakes, refused before a workdir is created: `ConfigError`."""
    approach.check_config(config)
    for field in ("batch_size", "num_steps", "eval_every", "log_every"):
        if int(config.train[field]) < 1:
            raise ConfigError(f"train.{field}={config.train[field]} must be >= 1; change --config.train.{field}")
    if not float(config.train.learning_rate) > 0:  # a negative rate climbs the loss; 0 trains nothing
        raise ConfigError(f"train.learning_rate={config.train.learning_rate} must be > 0; change "
                          "--config.train.learning_rate")
    devices = jax.device_count()
    if config.train.batch_size % devices:
        raise ConfigError(f"train.batch_size={config.train.batch_size} is not a multiple of the {devices} devices; "
                          "change --config.train.batch_size")
    if not 0 <= config.train.val_fraction < 1:
        raise ConfigError(f"train.val_fraction={config.train.val_fraction} must be in [0, 1)")


def check_table(table: EmbeddingTable, config: ml_collections.ConfigDict, window: int | None = None) -> None:
    """Raises `TrainingError` for NaN/inf embeddings or label means (a wholly unrated table passes with
    ``train.label_free``), a width other than ``model.input_dim``, or frame windows (``window`` frames per row, default
    `crop_frames` of the config: the approach's `Approach.window_frames`) on a store without frames. Target columns
    (``data.targets``: ``table.label_names`` set) are NaN by design where a corpus lacks them or a group cannot rank
    them, so only their being NaN everywhere is refused."""
    unrated = len(table) > 0 and np.isnan(table.label_mean).all()
    if unrated and not config.train.get("label_free", False):
        raise TrainingError(f"the store {table.encoder!r} holds no label means (a corpus without ratings, e.g. ASAP): "
                            "pre-train a label-free objective with --config.train.label_free=True (approach A's "
                            "InfoNCE), rank its derived targets (--config.data.targets=derived), or train on a rated "
                            "corpus")
    targets = bool(table.label_names)
    checked = (("embeddings", table.pooled),) + ((("label means", table.label_mean),) if not (unrated or targets)
                                                 else ())
    for field, values in checked:
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
    window = crop_frames(config, table.frame_rate) if window is None else window
    if window > 0 and table.frames is None:
        raise TrainingError("model.input='frames' needs a store with frames: extract with --config.store.frames=True "
                            "(crescend-jax extract --config ... --config.store.frames=True) or set "
                            "--config.model.input=pooled")


def _writable(workdir: Path) -> None:
    """Raises `TrainingError` naming ``workdir`` when it cannot be created or written (read-only, disk full)."""
    try:
        workdir.mkdir(parents=True, exist_ok=True)
        probe = workdir / f".write-test-{os.getpid()}"
        probe.write_text("ok")
        probe.unlink()
    except OSError as err:
        raise TrainingError(f"cannot write the workdir {workdir} ({err.strerror or err}); free space there or choose "
                            "another --workdir") from None


def _prepare_workdir(workdir: Path, config: ml_collections.ConfigDict, fingerprint: dict,
                     folds: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """Writes config.json, fingerprint.json and folds.json, or checks a resumed run against them; returns the folds
    to train (a resumed run keeps its saved folds: a changed split never moves folds under a run)."""
    saved_path = workdir / "config.json"
    current = json.loads(config_to_json(config))
    exists = saved_path.exists()
    distributed.barrier("checked workdir")  # every process looks before process 0 writes
    if exists:
        if not config.train.resume:
            raise TrainingError(f"{workdir} already holds a run; pass --config.train.resume=True to continue it or "
                                "choose a new --workdir")
        saved, now = saved_config_fields(json.loads(saved_path.read_text())), saved_config_fields(current)
        differing = sorted(name for name in set(saved) | set(now) if saved.get(name) != now.get(name)
                           and not name.startswith(RESUME_IGNORED_FIELDS))
        if differing:
            details = "; ".join(f"{n}: {saved.get(n)!r} -> {now.get(n)!r}" for n in differing[:8])
            raise TrainingError(f"cannot resume {workdir}: it was made by another config ({details}); use the same "
                                "config or a new --workdir")
        try:
            fingerprint_lib.check_same_data(workdir, fingerprint, "resume", "the store read now")
        except fingerprint_lib.FingerprintMismatch as err:
            raise TrainingError(str(err)) from None
        _, saved_folds = fingerprint_lib.read_record(workdir)
        return saved_folds
    if jax.process_index() == 0:
        _writable(workdir)
        saved_path.write_text(config_to_json(config))
        fingerprint_lib.write_record(workdir, fingerprint, folds)
    distributed.barrier("prepared workdir")
    return folds


# ----------------------------------------------------------------------------------------------------- the fold loop


def _check_losses(pending: list[tuple[int, jax.Array, np.ndarray]], keys: np.ndarray, fold: int,
                  saved_step: int | None) -> None:
    """Raises `NonFiniteLossError` naming the first step in ``pending`` with a NaN/inf loss and its batch's keys."""
    if not pending:
        return
    losses = np.array(jax.device_get([loss for _, loss, _ in pending]), np.float32)
    bad = np.flatnonzero(~np.isfinite(losses))
    if bad.size:
        step, _, rows = pending[bad[0]]
        names = ", ".join(keys[rows[rows >= 0]][:8])
        kept = (f"the last good checkpoint (step {saved_step}) is kept" if saved_step is not None
                else "no checkpoint was saved before it")
        raise NonFiniteLossError(f"fold {fold}: the loss is {losses[bad[0]]} at step {step}; its batch holds rows "
                                 f"{names}; {kept}. Lower --config.train.learning_rate or inspect those rows")
    pending.clear()


@dataclasses.dataclass
class _FoldData:
    fit: EmbeddingTable
    val: EmbeddingTable | None
    stats: InputStats  # `Approach.input_stats` of the fit rows
    selection: str


def _validation(train_table: EmbeddingTable, train_units: np.ndarray, config: ml_collections.ConfigDict,
                fold: int) -> tuple[np.ndarray | None, str]:
    """(bool [M] validation rows of a fold's training rows, or None; how the checkpoint is selected)."""
    if config.train.get("label_free", False) and np.isnan(train_table.label_mean).all():
        return None, "last step (label-free training: no labels to validate on)"
    if not config.train.val_fraction > 0:
        return None, "last step (train.val_fraction=0: no validation split)"
    val = run_validation_mask(train_table, train_units, config.train.val_fraction, config.train.seed + fold)
    if val is None:
        count, needed = len(np.unique(train_units)), max(2, int(np.round(1 / max(config.train.val_fraction, 1e-9))))
        return None, (f"last step (only {count} training {config.data.get('split_level', 'composition')}s: a "
                      f"validation split by whole units needs >= {needed})")
    return val, "best validation pairwise accuracy (validation by whole compositions)"


def _fold_data(approach: Approach, table: EmbeddingTable, units: np.ndarray, test_mask: np.ndarray,
               config: ml_collections.ConfigDict, fold: int) -> _FoldData:
    train_table, train_units = table.subset(~test_mask), units[~test_mask]
    val, selection = _validation(train_table, train_units, config, fold)
    if val is None:
        fit, val_table = train_table, None
    else:
        check_split(train_table.groups, train_table.performers, val, name=f"fold {fold} validation split")
        fit = train_table.subset(~val)
        val_table = train_table.subset(val & first_render_mask(train_table.renders))
    return _FoldData(fit=fit, val=val_table, stats=approach.input_stats(fit, config), selection=selection)


def folds_record(table: EmbeddingTable, masks: list[np.ndarray], units: np.ndarray,
                 config: ml_collections.ConfigDict) -> list[dict[str, Any]]:
    """What ``folds.json`` holds per fold: its test compositions and keys (`fingerprint.folds_record`), its test
    works, and what the fold trains on: its training compositions and works, and the validation compositions the
    network never fits (its checkpoint is chosen on them). The ridge reference fits on exactly the rows the network
    fits (`evaluate.reference`), and a warm start refuses a source that trained on the music a fold tests
    (`train.warm_start`)."""
    works = run_works(table, config)
    records = fingerprint_lib.folds_record(table, masks)
    for k, (record, mask) in enumerate(zip(records, masks)):
        train_table = table.subset(~mask)
        val, _ = _validation(train_table, units[~mask], config, k)
        record.update(
            test_works=sorted(set(works[mask].tolist())),
            train_compositions=sorted(set(train_table.compositions.tolist())),
            train_works=sorted(set(works[~mask].tolist())),
            validation_compositions=[] if val is None else sorted(set(train_table.compositions[val].tolist())))
    return records


def train_fold(approach: Approach, config: ml_collections.ConfigDict, table: EmbeddingTable, units: np.ndarray,
               test_mask: np.ndarray, fold: int, fold_dir: Path, mesh,
               target_folds: list[dict[str, Any]] | None = None) -> dict[str, Any]:
    """Trains one fold in ``fold_dir`` (resuming from its latest checkpoint if any); returns its done record."""
    done_path = fold_dir / "done.json"
    if done_path.exists():
        return json.loads(done_path.read_text())
    measure.reset_peak_rss()  # this fold's own peak (a sweep runs many in one process)
    data = _fold_data(approach, table, units, test_mask, config, fold)
    stats = data.stats
    if jax.process_index() == 0:
        fold_dir.mkdir(parents=True, exist_ok=True)
        np.savez(fold_dir / "input_stats.npz", mean=stats.mean, std=stats.std, pooled_mean=stats.pooled_mean,
                 pooled_std=stats.pooled_std)
        print(f"fold {fold}: {len(data.fit)} training rows; checkpoint selection: {data.selection}", file=sys.stderr)

    functions = model_functions(approach, config, table.pooled.shape[1], mesh)
    model_state = approach.initial_state(functions.init(fold), config, stats)
    tx = build_optimizer(config.train, model_state, approach.param_groups(config))
    steps = build_train_step(functions, tx, mesh)
    opt_state = steps.init_optimizer(model_state)
    sampler = training_sampler(approach, data.fit, config, [config.train.seed, fold])
    crop = approach.window_frames(config, table)
    device_table = place_table(host_table(data.fit, stats.mean, stats.std, crop), mesh)
    num_steps, eval_every = config.train.num_steps, config.train.eval_every
    with contextlib.ExitStack() as cleanup:  # closes the writer, then the checkpoints, however the fold ends
        checkpoints = cleanup.enter_context(contextlib.closing(
            FoldCheckpoints(fold_dir / "checkpoints", by_validation=data.val is not None)))
        step, warm = 0, None
        if (latest := checkpoints.latest_step()) is None and config.model.get("init_from", ""):
            model_state, warm = warm_start(model_state, config, fold, target_folds, mesh)
            opt_state = steps.init_optimizer(model_state)
        if latest is not None:
            items, record = checkpoints.restore(latest, {"model": model_state, "optimizer": opt_state})
            model_state, opt_state = items["model"], items["optimizer"]
            step = record["step"]
            sampler.restore(record["sampler"])  # the data position itself, nothing replayed

        writer = cleanup.enter_context(contextlib.closing(
            MetricsWriter(fold_dir, num_steps, initial_step=step, description=f"fold {fold}")))
        pending: list[tuple[int, jax.Array, np.ndarray]] = []
        stop_at = step + config.train.stop_after_steps if config.train.stop_after_steps > 0 else None
        clock, first_step = measure.StepClock(), step + 1
        while step < num_steps:
            plan = next(sampler)
            model_state, opt_state, metrics = steps.step(model_state, opt_state, device_table,
                                                         place_plan(plan, mesh), np.int32(step))
            step += 1
            if step == first_step:  # compiled and run once: the steady state starts here
                jax.block_until_ready(metrics["loss"])
                clock.started(step)
            pending.append((step, metrics["loss"], plan.rows))
            if step == stop_at:
                raise TrainingStopped(f"fold {fold}: stopped after step {step} (train.stop_after_steps)")
            if step % config.train.log_every == 0 or step % eval_every == 0 or step == num_steps:
                _check_losses(pending, data.fit.keys, fold, checkpoints.latest_step())
                logged = {k: float(v) for k, v in jax.device_get(metrics).items()}
                clock.pause()  # the step is done (synced above); validation and checkpoints are not its cost
                if step % eval_every == 0 or step == num_steps:
                    val_accuracy = None
                    if data.val is not None:
                        predictions = predict_rows(functions, model_state, data.val, stats.mean, stats.std, config)
                        val_accuracy = mean_pairwise_accuracy(predictions, selection_labels(data.val),
                                                              data.val.groups)
                        logged["val_accuracy"] = val_accuracy
                    try:
                        checkpoints.save(step, {"model": model_state, "optimizer": opt_state},
                                         {"step": step, "sampler": sampler.state()}, val_accuracy)
                    except OSError as err:
                        raise TrainingError(f"fold {fold}: cannot write a checkpoint under {fold_dir} "
                                            f"({err.strerror or err}); free space there or choose another "
                                            "--workdir, then resume") from None
                writer.write(step, logged)
                clock.resume()
        checkpoints.manager.wait_until_finished()
        best = checkpoints.best_step() if data.val is not None else None
        record = {"fold": fold, "steps": step, "best_step": best if best is not None else step,
                  "selection": data.selection, "fit_rows": len(data.fit),
                  "val_rows": 0 if data.val is None else len(data.val),
                  "batch_size": int(config.train.batch_size), **clock.summary(step, int(config.train.batch_size))}
        if warm is not None:
            record["init_from"] = warm
    if jax.process_index() == 0:
        done_path.write_text(json.dumps(record, indent=2))
    return record


# ----------------------------------------------------------------------------------------------------- entry points


def fold_masks(table: EmbeddingTable, config: ml_collections.ConfigDict) -> tuple[list[np.ndarray], np.ndarray]:
    """(the test masks of ``config.data``, each checked to leave groups to rank; the split unit of each row): each
    corpus of a joint config by its own rule (`crescend_jax.data.run_table.run_folds`)."""
    return run_folds(table, config)


def train(config: ml_collections.ConfigDict, workdir: str | Path, table: EmbeddingTable | None = None,
          approach: Approach | None = None) -> list[dict[str, Any]]:
    """Trains every fold of ``config`` into ``workdir``; ``table``/``approach`` default to the store / registry.

    Raises `ConfigError` for a bad setting and `TrainingError` / `SplitError` for bad input (before any step or
    workdir), `NonFiniteLossError` on a NaN loss.
    """
    distributed.initialize_distributed(config.train.get("distributed"))
    workdir = Path(workdir)
    approach = approach if approach is not None else approach_for(config)
    check_config(approach, config)
    table = run_table(config, table)  # the stores (every corpus of a joint config), kept rows, data.targets
    try:
        table = approach.prepare_table(table, config, training=True)  # e.g. a trunk's own frames, its weights checked
    except InputError as err:
        raise TrainingError(str(err)) from None
    check_table(table, config, approach.window_frames(config, table))
    masks, units = fold_masks(table, config)
    folds = _prepare_workdir(workdir, config, fingerprint_lib.table_fingerprint(table),
                             folds_record(table, masks, units, config))
    mesh = distributed.make_mesh()
    records = []
    for entry in folds:
        mask = np.isin(table.keys, entry["test_keys"])
        records.append(train_fold(approach, config, table, units, mask, entry["fold"],
                                  workdir / f"fold_{entry['fold']}", mesh, folds))
    return records

