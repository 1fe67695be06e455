"""The linear reference of a run: `ridge.ridge_reference` on exactly the run's inputs and folds.

The inputs are the pooled vectors of the table the run trained on (a fusion of stores when the run fused them),
every render's rows included, as the run's training saw them; the folds are the run's saved ``folds.json``; the
regularisation is chosen by inner cross-validation over each fold's training compositions only (never the test
fold). The reference then predicts the same held-out rows the run is scored on.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from crescend_jax.data.table import EmbeddingTable
from crescend_jax.evaluate import ridge
from crescend_jax.models.contract import Predictions

REFERENCE_NAME = "ridge"


def reference_predictions(source: EmbeddingTable, folds: list[dict[str, Any]],
                          heldout: EmbeddingTable) -> tuple[Predictions, dict[str, Any]]:
    """(ridge scores of the ``heldout`` rows [M, 19] as `Predictions`, a JSON-ready summary of the chosen
    regularisation). ``source``: the full table the run trained on; ``folds``: its folds.json entries."""
    masks, seen = [], np.zeros(len(source), bool)
    for entry in folds:  # a row held out by several folds (a joint run's held-out ASAP works) counts in the first
        mask = np.isin(source.keys, entry["test_keys"]) & ~seen
        seen |= mask
        masks.append(mask)
    masks = [mask for mask in masks if mask.any()] or masks
    fit = ridge.ridge_reference(source.pooled, source.label_mean, source.compositions, source.groups, masks)
    ids = np.char.add(np.char.add(source.keys.astype(str), "|"), source.renders.astype(str))
    lookup = {name: index for index, name in enumerate(ids.tolist())}
    wanted = np.char.add(np.char.add(heldout.keys.astype(str), "|"), heldout.renders.astype(str))
    rows = np.array([lookup[name] for name in wanted.tolist()], np.int64)
    summary = {
        "name": REFERENCE_NAME,
        "description": "closed-form ridge per dimension on the run's standardised inputs, alpha by inner "
                       "leave-one-training-composition-out cross-validation (within-group pairwise accuracy)",
        "input_dim": int(source.pooled.shape[1]),
        "alpha_median": float(np.nanmedian(fit.alphas)) if np.isfinite(fit.alphas).any() else None,
        "alphas_at_grid_edge": int(fit.at_grid_edge.sum()),
        "inner_schemes": list(fit.inner_schemes),
    }
    return Predictions(scores=fit.predictions[rows]), summary
