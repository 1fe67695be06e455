"""Held-out prediction of a trained workdir: each fold's selected checkpoint predicts the compositions it held out.

The run's config, fingerprint and folds are read from the workdir; the table is checked against the fingerprint
(a changed store is refused, never silently evaluated), and each fold restores only its "model" checkpoint item.
"""

from __future__ import annotations

import contextlib
import dataclasses
import json
from pathlib import Path

import ml_collections
import numpy as np

from crescend_jax.data import fingerprint as fingerprint_lib
from crescend_jax.data.run_table import run_table
from crescend_jax.data.splits import first_render_mask
from crescend_jax.data.table import EmbeddingTable
from crescend_jax.errors import DataError
from crescend_jax.models import approach_for
from crescend_jax.models.contract import InputError, Predictions
from crescend_jax.models.functions import model_functions, predict_rows
from crescend_jax.runtime import distributed
from crescend_jax.runtime.checkpoint import FoldCheckpoints


class EvaluationError(DataError):
    """A workdir that cannot be evaluated; the message names the fix."""


@dataclasses.dataclass
class HeldoutPredictions:
    """Held-out predictions of a trained workdir: rows of ``table`` (first render only), `Predictions` from the
    fold that held each row out (comparator pairs never cross folds: a group lies in one composition), fold int32
    [N], and the run's config. ``train_embeddings[k]`` holds fold k's named embeddings of its own training rows
    (first render; ``train_rows[k]`` int [M] are their rows in ``source``), for probes that need training rows."""

    table: EmbeddingTable
    predictions: Predictions
    fold: np.ndarray
    config: ml_collections.ConfigDict
    source: EmbeddingTable
    train_rows: dict[int, np.ndarray]
    train_embeddings: dict[int, dict[str, np.ndarray]]

    @property
    def scores(self) -> np.ndarray:
        """A scorer's held-out scores [N, 19] (kept for callers that only know scorers)."""
        if self.predictions.scores is None:
            raise ValueError("a comparator has no per-row scores; use .predictions")
        return self.predictions.scores


def read_config(workdir: Path) -> ml_collections.ConfigDict:
    path = workdir / "config.json"
    if not path.exists():
        raise EvaluationError(f"{workdir} has no config.json: it is not a training workdir (run `crescend-jax train`)")
    return ml_collections.ConfigDict(json.loads(path.read_text()))


def selected_step(fold_dir: Path, checkpoints: FoldCheckpoints) -> int:
    """The fold's selected checkpoint step (`FoldCheckpoints.selected_step`); `EvaluationError` when it has none."""
    step = checkpoints.selected_step(fold_dir)
    if step is None:
        raise EvaluationError(f"{fold_dir} has no checkpoint; train it first (crescend-jax train ... "
                              "--config.train.resume=True)")
    return step


def _merge(parts: list[tuple[np.ndarray, Predictions]], num_rows: int) -> Predictions:
    """Per-fold predictions (their rows in the evaluated table) as one `Predictions` over ``num_rows`` rows."""
    embeddings: dict[str, np.ndarray] = {}
    for rows, predictions in parts:
        for name, value in predictions.embeddings.items():
            embeddings.setdefault(name, np.full((num_rows, *value.shape[1:]), np.nan, np.float32))[rows] = value
    if parts and parts[0][1].scores is not None:
        scores = np.full((num_rows, parts[0][1].scores.shape[1]), np.nan, np.float32)
        for rows, predictions in parts:
            scores[rows] = predictions.scores
        return Predictions(scores=scores, embeddings=embeddings)
    firsts, seconds, probabilities = [], [], []
    for rows, predictions in parts:
        i, j, p = predictions.pairs
        firsts.append(rows[i])
        seconds.append(rows[j])
        probabilities.append(p)
    pairs = (np.concatenate(firsts), np.concatenate(seconds), np.concatenate(probabilities)) if parts else (
        np.zeros(0, np.int64), np.zeros(0, np.int64), np.zeros((0, 0)))
    return Predictions(pairs=pairs, embeddings=embeddings)


def predict_heldout(workdir: str | Path, table: EmbeddingTable | None = None, *,
                    training_embeddings: bool = False) -> HeldoutPredictions:
    """Predictions of every held-out row (first render) from the selected checkpoint of the fold that held it out
    (the first such fold, for a row that several folds hold out).

    ``training_embeddings``: also encode each fold's training rows (for probes). Raises `EvaluationError` or
    `fingerprint.FingerprintMismatch` for a workdir that cannot be evaluated on ``table`` (default: its store).
    """
    workdir = Path(workdir)
    config = read_config(workdir)
    approach = approach_for(config)
    table = run_table(config, table)  # as the trainer read it: kept rows, data.targets, every corpus of a joint run
    fingerprint_lib.check_same_data(workdir, fingerprint_lib.table_fingerprint(table), "evaluate",
                                    "the store read now")
    _, folds = fingerprint_lib.read_record(workdir)
    try:
        model_table = approach.prepare_table(table, config, training=False)  # what the model reads (a trunk's frames)
    except InputError as err:
        raise EvaluationError(str(err)) from None
    mesh = distributed.make_mesh()
    first = first_render_mask(table.renders)
    fold_of_row = np.full(len(table), -1, np.int32)
    functions = model_functions(approach, config, table.pooled.shape[1], mesh)
    parts: list[tuple[np.ndarray, Predictions]] = []
    train_rows, train_embeddings = {}, {}
    for entry in folds:
        k = entry["fold"]
        fold_dir = workdir / f"fold_{k}"
        test = np.isin(table.keys, entry["test_keys"])
        # a row held out by several folds (a joint run's held-out ASAP works, held out in every fold) is predicted
        # once, by the first of them
        rows = np.flatnonzero(first & test & (fold_of_row < 0))
        with contextlib.closing(FoldCheckpoints(fold_dir / "checkpoints")) as checkpoints:
            step = selected_step(fold_dir, checkpoints)
            items, _ = checkpoints.restore(step, {"model": functions.init(k)})
        stats = np.load(fold_dir / "input_stats.npz")
        parts.append((rows, predict_rows(functions, items["model"], model_table.subset(rows), stats["mean"],
                                         stats["std"], config)))
        fold_of_row[rows] = k
        if training_embeddings:
            own = np.flatnonzero(first & ~test)
            train_rows[k] = own
            train_embeddings[k] = predict_rows(functions, items["model"], model_table.subset(own), stats["mean"],
                                               stats["std"], config).embeddings
    keep = np.flatnonzero(fold_of_row >= 0)
    merged = _merge(parts, len(table)).subset(keep)
    return HeldoutPredictions(table=table.subset(keep), predictions=merged, fold=fold_of_row[keep], config=config,
                              source=table, train_rows=train_rows, train_embeddings=train_embeddings)
