"""The linear reference of a run: `ridge.ridge_reference` on the run's inputs, rows and folds.

The inputs are the pooled vectors of the table the run trained on (a fusion of stores when the run fused them). The
rows each fold fits on are exactly those the network fitted on: the fold's training rows, every render, without the
validation compositions (``folds.json``'s ``validation_compositions``), and the regularisation is chosen on those
validation rows (first render, as the network's checkpoint is chosen on them) by within-group pairwise accuracy.
A fold without validation compositions (too few training compositions, or label-free training) fits on all its
training rows, alpha by inner cross-validation over them. A run whose ``folds.json`` predates the record of its
validation compositions is fitted that way too, and its summary says so. The test fold is never read for anything
but the prediction. The reference then predicts the same held-out rows the run is scored on.

For a frame model the network reads crops of the stored frames (a fine-tuned trunk: the frames entering MuQ's layer
K), the reference the stored pooled vectors of the same rows: the same performances and the same information the
store holds, in the pooled form a linear model can read.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from crescend_jax.data.splits import first_render_mask
from crescend_jax.data.table import EmbeddingTable
from crescend_jax.evaluate import ridge
from crescend_jax.models.contract import Predictions

REFERENCE_NAME = "ridge"


def reference_predictions(source: EmbeddingTable, folds: list[dict[str, Any]],
                          heldout: EmbeddingTable) -> tuple[Predictions, dict[str, Any]]:
    """(ridge scores of the ``heldout`` rows [M, 19] as `Predictions`, a JSON-ready summary of the rows and the chosen
    regularisation). ``source``: the full table the run trained on; ``folds``: its folds.json entries."""
    full = [np.isin(source.keys, entry["test_keys"]) for entry in folds]
    masks, seen = [], np.zeros(len(source), bool)
    for test in full:  # a row held out by several folds (a joint run's held-out ASAP works) is predicted by the first
        masks.append(test & ~seen)
        seen |= test
    recorded = all("validation_compositions" in entry for entry in folds)
    fit_masks, selection_masks = [], []
    for entry, test in zip(folds, full):  # each fold fits on what its network fitted: never on any of its test rows
        validation = np.isin(source.compositions, entry.get("validation_compositions", [])) & ~test
        train = np.flatnonzero(~test)
        first = np.zeros(len(source), bool)
        first[train] = first_render_mask(source.renders[train])  # the first render of the training rows
        fit_masks.append(~test & ~validation)
        selection_masks.append(validation & first if validation.any() else None)
    kept = [k for k, mask in enumerate(masks) if mask.any()] or list(range(len(masks)))
    masks, fit_masks, selection_masks = ([values[k] for k in kept] for values in (masks, fit_masks, selection_masks))
    fit = ridge.ridge_reference(source.pooled, source.label_mean, source.compositions, source.groups, masks,
                                fit_masks=fit_masks, selection_masks=selection_masks)
    ids = np.char.add(np.char.add(source.keys.astype(str), "|"), source.renders.astype(str))
    lookup = {name: index for index, name in enumerate(ids.tolist())}
    wanted = np.char.add(np.char.add(heldout.keys.astype(str), "|"), heldout.renders.astype(str))
    rows = np.array([lookup[name] for name in wanted.tolist()], np.int64)
    summary = {
        "name": REFERENCE_NAME,
        "description": "closed-form ridge per dimension on the run's standardised inputs, fitted on the rows the "
                       "network fitted on, alpha chosen on the run's validation compositions (within-group pairwise "
                       "accuracy), or by inner leave-one-training-composition-out cross-validation where a fold has "
                       "none",
        "fit_rows": [int(m.sum()) for m in fit_masks],
        "rows_as_the_run": recorded,
        "input_dim": int(source.pooled.shape[1]),
        "alpha_median": float(np.nanmedian(fit.alphas)) if np.isfinite(fit.alphas).any() else None,
        "alphas_at_grid_edge": int(fit.at_grid_edge.sum()),
        "inner_schemes": list(fit.inner_schemes),
    }
    if not recorded:
        summary["note"] = ("folds.json predates the record of the validation compositions: the reference was "
                           "fitted on every training row, the validation compositions included")
    return Predictions(scores=fit.predictions[rows]), summary
