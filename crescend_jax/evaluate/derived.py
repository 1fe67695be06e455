"""Held-out evaluation of runs with derived targets (``data.targets`` "derived" or "both", `crescend_jax.data.targets`):
what a run is judged on, and what it learned about performances of music it never heard.

**Views.** A run's held-out rows and label columns split into a *ratings view* (the rating dimensions, on the rows
that have ratings: PercePiano's) and a *derived view* (the derived targets, on the rows that have them: ASAP's
held-out works). The *primary* view is the ratings view when there is one (a joint run is for PercePiano: its report,
``heldout.npz``, intervals, paired comparisons with PercePiano-only runs and ridge reference are those of the
ratings, key for key), else the derived view (an ASAP ranking run: the report is the within-group ranking accuracy of
each derived target on the held-out works, with the two-stage interval over works then groups, and the ridge on the
same inputs). The table of a view keeps its rows' names, so pairs and bootstrap units are the ones of the corpus.

**The derived block** (``metrics["derived"]``), on the derived view's rows (one per performance of each window of the
held-out works, first render):

* ``accuracy``: the run's within-group pairwise accuracy per derived target and its mean (a comparator's from its
  probabilities), with the interval of `comparison.accuracy_interval` (two-stage: works, then groups);
* ``probe``: the same accuracy of a linear probe on each named embedding of the model (and on the standardised
  ``input``: the ridge on the same inputs): `ridge.ridge_reference` fitted on the first fold's training rows'
  embeddings, alpha chosen on `PROBE_VALIDATION` of the training compositions (whole, drawn by seed 0, left out of
  the fit; one fit per alpha path instead of an inner leave-one-composition-out over ASAP's ~130 training works),
  predicting the held-out rows. For a label-free (InfoNCE) run, whose rank heads never trained, this is its
  derived-target accuracy; for a ranking run it says how linearly the embedding holds the targets;
* ``retrieval``: same-window retrieval top-1 of each named embedding and of the input (`evaluate.retrieval`), over all
  held-out windows and within each window's own composition, with chance.
"""

from __future__ import annotations

import dataclasses
from typing import Any

import numpy as np

from crescend_jax.data.dimensions import DIMENSIONS
from crescend_jax.data.splits import validation_mask
from crescend_jax.data.table import EmbeddingTable
from crescend_jax.data.targets import derived_columns
from crescend_jax.evaluate import comparison
from crescend_jax.evaluate import ridge
from crescend_jax.evaluate.retrieval import retrieval_top1
from crescend_jax.evaluate.summary import to_json
from crescend_jax.models.contract import Predictions


PROBE_VALIDATION = 0.15  # share of the training compositions a probe's alpha is chosen on


@dataclasses.dataclass(frozen=True)
class View:
    """rows int [M] of a held-out table and columns int [C] of its labels; ``kind``: "ratings" or "derived"."""

    kind: str
    rows: np.ndarray
    columns: np.ndarray


def views(table: EmbeddingTable) -> dict[str, View]:
    """The non-empty views of ``table`` (module doc), "ratings" first; a table without target names is one ratings
    view of every row and column."""
    if not table.label_names:
        return {"ratings": View("ratings", np.arange(len(table)), np.arange(table.label_mean.shape[1]))}
    derived = derived_columns(table.label_names)
    found = {}
    for kind, columns in (("ratings", np.flatnonzero(~derived)), ("derived", np.flatnonzero(derived))):
        if not len(columns):
            continue
        rows = np.flatnonzero(np.isfinite(table.label_mean[:, columns]).any(axis=1))
        if len(rows):
            found[kind] = View(kind, rows, columns)
    return found


def primary(table: EmbeddingTable) -> View:
    """The view a run's report, heldout.npz and comparisons are about (module doc)."""
    found = views(table)
    if not found:
        raise ValueError("the held-out rows hold no label to evaluate (every target NaN)")
    return found.get("ratings", found.get("derived"))


def view_table(table: EmbeddingTable, view: View, *, all_rows: bool = False) -> EmbeddingTable:
    """``table`` restricted to the view's columns (and rows, unless ``all_rows``); a view of the 19 ratings drops the
    target names, so it reads as a ratings table (reports, per-dimension analysis, pairing with other runs)."""
    part = table if all_rows else table.subset(view.rows)
    columns = view.columns
    names = tuple(np.asarray(part.label_names)[columns]) if part.label_names else ()
    return dataclasses.replace(
        part, label_mean=part.label_mean[:, columns], label_std=part.label_std[:, columns],
        label_truth=part.label_truth[:, columns], ratings=[r[:, columns] for r in part.ratings],
        label_names=() if names == DIMENSIONS else names)


def primary_table(table: EmbeddingTable) -> EmbeddingTable:
    """Every row of ``table`` with the columns of its primary view (what a sweep pools a run's heldout.npz over)."""
    if not table.label_names:
        return table
    return view_table(table, primary(table), all_rows=True)


def view_predictions(predictions: Predictions, view: View) -> Predictions:
    """The predictions of the view's rows and columns."""
    part = predictions.subset(view.rows)
    if part.scores is not None:
        return Predictions(scores=part.scores[:, view.columns], embeddings=part.embeddings)
    i, j, p = part.pairs
    return Predictions(pairs=(i, j, p[:, view.columns]), embeddings=part.embeddings)


def _accuracy(predictions: Predictions, table: EmbeddingTable) -> dict[str, Any]:
    outcomes = comparison.pair_outcomes(predictions, table)
    accuracy = outcomes.accuracy()
    return {"per_dimension": accuracy.accuracy, "mean": float(np.nanmean(accuracy.accuracy))
            if np.isfinite(accuracy.accuracy).any() else None, "num_pairs": accuracy.num_pairs}


def _standardised_input(heldout, rows_source: np.ndarray, train_rows: np.ndarray) -> np.ndarray:
    pooled = heldout.source.pooled.astype(np.float64)
    mean, std = pooled[train_rows].mean(axis=0), pooled[train_rows].std(axis=0)
    return (pooled[rows_source] - mean) / np.where(std > 1e-12, std, 1.0)


def _probe(train_x: np.ndarray, test_x: np.ndarray, train: EmbeddingTable, test: EmbeddingTable) -> dict[str, Any]:
    """Within-group accuracy per target of a ridge fitted on ``train_x`` [M, E] to ``train``'s labels, on ``test``
    (alpha chosen on `PROBE_VALIDATION` of the training compositions, or by inner cross-validation when too few)."""
    x = np.concatenate([train_x, test_x]).astype(np.float64)
    labels = np.concatenate([train.label_mean, test.label_mean])
    compositions = np.concatenate([train.compositions, test.compositions])
    groups = np.concatenate([train.groups, test.groups])
    mask = np.arange(len(x)) >= len(train_x)
    validation = validation_mask(train.compositions, PROBE_VALIDATION, seed=0)
    selection = None if validation is None else np.concatenate([validation, np.zeros(len(test_x), bool)])
    fit = ridge.ridge_reference(x, labels, compositions, groups, [mask],
                                fit_masks=None if selection is None else [~selection],
                                selection_masks=None if selection is None else [selection])
    scores = fit.predictions[mask]
    result = _accuracy(Predictions(scores=scores), test)
    result["alpha_median"] = float(np.nanmedian(fit.alphas)) if np.isfinite(fit.alphas).any() else None
    return result


def derived_block(heldout, *, boot: dict[str, Any], probes: bool = True) -> dict[str, Any] | None:
    """The derived block (module doc) of `evaluate.predict.HeldoutPredictions` ``heldout``; None without derived
    targets. ``boot``: `comparison.bootstrap_options`. ``probes``: fit the probes (they need the training rows'
    embeddings, ``predict_heldout(..., training_embeddings=True)``)."""
    found = views(heldout.table)
    if "derived" not in found:
        return None
    view = found["derived"]
    table = view_table(heldout.table, view)
    predictions = view_predictions(heldout.predictions, view)
    block: dict[str, Any] = {"dimensions": list(table.label_names), "num_rows": len(table),
                             "num_groups": len(np.unique(table.groups)),
                             "num_compositions": len(np.unique(table.compositions)),
                             "accuracy": _accuracy(predictions, table),
                             "interval": comparison.accuracy_interval(predictions, table, **boot)}
    # the held-out rows in the source table, and the first fold's training rows of the same corpus
    ids = lambda t: np.char.add(np.char.add(t.keys.astype(str), "|"), t.renders.astype(str))
    lookup = {name: index for index, name in enumerate(ids(heldout.source).tolist())}
    source_rows = np.array([lookup[name] for name in ids(table).tolist()], np.int64)
    embeddings = {"input": None, **{name: value for name, value in predictions.embeddings.items()
                                    if np.ndim(value) == 2}}
    k = min(heldout.train_rows) if heldout.train_rows else None
    train_rows = None
    if k is not None:  # the first fold's training rows that hold a derived target (the same corpus's)
        train_rows = heldout.train_rows[k]
        keep = np.isfinite(view_table(heldout.source, view, all_rows=True).label_mean[train_rows]).any(axis=1)
        train_rows = train_rows[keep]
    retrieval, probe = {}, {}
    for name, value in embeddings.items():
        if name == "input":
            if train_rows is None:
                continue
            value = _standardised_input(heldout, source_rows, train_rows)
        retrieval[name] = {scope: retrieval_top1(value, table.groups, table.compositions, scope=scope)
                           for scope in ("all", "composition")}
        if probes and train_rows is not None and len(train_rows):
            train_table = view_table(heldout.source, view, all_rows=True).subset(train_rows)
            if name == "input":
                train_x = _standardised_input(heldout, train_rows, train_rows)
            else:
                own = heldout.train_embeddings[k].get(name)
                if own is None:
                    continue
                position = {row: index for index, row in enumerate(heldout.train_rows[k].tolist())}
                train_x = own[[position[row] for row in train_rows.tolist()]]
            probe[name] = _probe(train_x, value, train_table, table)
    block["retrieval"] = retrieval
    if probe:
        block["probe"] = probe
        block["probe_fold"] = int(k)
    return to_json(block)
