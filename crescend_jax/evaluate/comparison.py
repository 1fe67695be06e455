"""Intervals and paired comparisons of held-out predictions, and the saved predictions they are computed from.

Every mean held-out accuracy gets a 95% interval from the bootstrap of `crescend_jax.evaluate.bootstrap` (by default
two-stage: held-out compositions, or works with ``data.split_level="work"``, then same-music groups inside them; the
fixed-set scheme with ``eval.bootstrap="within_composition"``), and every comparison of two systems (a run against
its baseline or against the linear reference) is a *paired* bootstrap of the difference on the same pairs with the
same replicate draws; a difference is called real only when its interval excludes 0 and is not degenerate
(`bootstrap.called_real`). Beside the all-pairs interval, an accuracy interval carries the one over pairs without the
deadpan Score renditions (``no_score``), from the same draws.

A run's held-out predictions are saved as ``heldout.npz`` beside its metrics (keys, renders, fold, and scores or
comparator pairs), so another run's report can pair with them without retraining or re-predicting.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, Mapping

import numpy as np

from crescend_jax.data.segments import DEADPAN_PERFORMERS
from crescend_jax.data.splits import SPLIT_LEVELS, split_units
from crescend_jax.data.table import EmbeddingTable
from crescend_jax.errors import ConfigError
from crescend_jax.evaluate import bootstrap
from crescend_jax.evaluate import metrics as metrics_lib
from crescend_jax.models.contract import Predictions

HELDOUT_FILE = "heldout.npz"
DEFAULT_SEED = 0


def bootstrap_options(config: Mapping[str, Any], settings: Mapping[str, Any]) -> dict[str, Any]:
    """The keyword arguments of this module's and `seed_pooling`'s intervals for a run: ``scheme``
    (``eval.bootstrap``), ``num_replicates``, ``seed``, ``split_level`` (``data.split_level``: what the first stage
    draws) and ``corpus``, from the run's ``config`` and its completed ``eval`` ``settings``. Raises ConfigError for
    an unknown scheme or split level (before any costly work)."""
    scheme = str(settings.get("bootstrap", bootstrap.DEFAULT_SCHEME))
    if scheme not in bootstrap.SCHEMES:
        raise ConfigError(f"eval.bootstrap={scheme!r} is not one of {bootstrap.SCHEMES}")
    data = config.get("data") or {}
    level = str(data.get("split_level", "composition") or "composition")
    if level not in SPLIT_LEVELS:
        raise ConfigError(f"data.split_level={level!r} is not one of {SPLIT_LEVELS}")
    return {"scheme": scheme, "num_replicates": int(settings.get("bootstrap_replicates",
                                                                   bootstrap.DEFAULT_REPLICATES)),
            "seed": int(settings.get("bootstrap_seed", DEFAULT_SEED)), "split_level": level,
            "corpus": str(config.get("corpus", "") or "")}


def pair_outcomes(predictions: Predictions, table: EmbeddingTable) -> metrics_lib.PairOutcomes:
    """Per-pair outcomes over every within-group pair of ``table`` (the same pair layout for any two systems of the
    same rows): a scorer's from its scores, a comparator's from its probabilities."""
    if predictions.scores is not None:
        return metrics_lib.pair_outcomes(predictions.scores, table.label_mean, table.groups)
    i, j, _ = metrics_lib.GroupLayout.from_groups(table.groups).pairs()
    return metrics_lib.pair_outcomes_from_probabilities(predictions.pair_probabilities(i, j), i, j, table.label_mean,
                                                        table.groups)


def resampling(outcomes: metrics_lib.PairOutcomes, table: EmbeddingTable, *, scheme: str = bootstrap.DEFAULT_SCHEME,
               split_level: str = "composition", corpus: str = "") -> dict[str, Any]:
    """The design arguments of `bootstrap.accuracy_interval` for ``outcomes`` of ``table``: ``strata`` [G] (each
    group's composition), ``units`` [G] (its composition or work, `data.splits.split_units`), ``unit`` and
    ``scheme``."""
    strata = bootstrap.group_strata(table.groups, table.compositions, outcomes.group_ids)
    units = bootstrap.group_strata(table.groups, split_units(table.compositions, split_level, corpus, table.works),
                                   outcomes.group_ids)
    return {"strata": strata, "units": units, "unit": split_level, "scheme": scheme}


def no_score_mask(outcomes: metrics_lib.PairOutcomes, table: EmbeddingTable) -> np.ndarray:
    """bool [P]: the pairs that touch a deadpan Score rendition (left out of the no-Score accuracy)."""
    deadpan = np.isin(table.performers, DEADPAN_PERFORMERS)
    return deadpan[outcomes.first] | deadpan[outcomes.second]


def without(correct: np.ndarray, pairs: np.ndarray) -> np.ndarray:
    """``correct`` [..., P, K] with the pairs ``pairs`` bool [P] made unusable (NaN)."""
    return np.where(pairs[:, None], np.nan, correct)


def stacked_interval(outcomes: metrics_lib.PairOutcomes, correct: np.ndarray, table: EmbeddingTable, *,
                     seed: int, num_replicates: int, **design: Any) -> dict[str, Any]:
    """`bootstrap.accuracy_interval` of ``correct`` ([P, K] or per seed [S, P, K], over ``outcomes``' pairs) as a
    dict, with ``no_score``: the same over pairs without Score renditions, from the same draws (None when the table
    has no Score rendition)."""
    design = resampling(outcomes, table, **design)
    args = {**design, "seed": seed, "num_replicates": num_replicates}
    result = bootstrap.accuracy_interval(outcomes.group, correct, **args).as_dict()
    deadpan = no_score_mask(outcomes, table)
    result["no_score"] = (bootstrap.accuracy_interval(outcomes.group, without(correct, deadpan), **args).as_dict()
                          if deadpan.any() else None)
    return result


def stacked_difference(outcomes: metrics_lib.PairOutcomes, correct_a: np.ndarray, correct_b: np.ndarray,
                       table: EmbeddingTable, *, seed: int, num_replicates: int, **design: Any) -> dict[str, Any]:
    """`bootstrap.paired_difference_interval` of two systems' ``correct`` ([P, K] or [S, P, K] each) as a dict."""
    return bootstrap.paired_difference_interval(outcomes.group, correct_a, correct_b,
                                                **resampling(outcomes, table, **design), seed=seed,
                                                num_replicates=num_replicates).as_dict()


def accuracy_interval(predictions: Predictions, table: EmbeddingTable, *, seed: int = DEFAULT_SEED,
                      num_replicates: int = bootstrap.DEFAULT_REPLICATES, **design: Any) -> dict[str, Any]:
    """95% interval of the mean (and per-dimension) held-out pairwise accuracy: `bootstrap.AccuracyInterval` as a
    dict, with its no-Score twin under ``no_score``. ``design``: ``scheme``, ``split_level``, ``corpus`` (see
    `bootstrap_options`)."""
    outcomes = pair_outcomes(predictions, table)
    return stacked_interval(outcomes, outcomes.correct, table, seed=seed, num_replicates=num_replicates, **design)


def paired_difference(a: Predictions, b: Predictions, table: EmbeddingTable, *, seed: int = DEFAULT_SEED,
                      num_replicates: int = bootstrap.DEFAULT_REPLICATES, **design: Any) -> dict[str, Any]:
    """a minus b on the same pairs (pairs both can score) and the same replicate draws: a dict with the mean and
    per-dimension difference intervals, ``excludes_zero``, ``warnings`` and ``real`` (the verdict)."""
    first, second = pair_outcomes(a, table), pair_outcomes(b, table)
    return stacked_difference(first, first.correct, second.correct, table, seed=seed, num_replicates=num_replicates,
                              **design)


# ----------------------------------------------------------------------------------------------------- saved files


def save_heldout(workdir: str | Path, table: EmbeddingTable, predictions: Predictions, fold: np.ndarray) -> Path:
    """Writes ``heldout.npz``: keys, renders, fold, and scores [N, 19] or comparator pairs (first, second, prob)."""
    path = Path(workdir) / HELDOUT_FILE
    arrays = {"keys": table.keys.astype(str), "renders": table.renders.astype(str), "fold": np.asarray(fold)}
    if predictions.scores is not None:
        arrays["scores"] = predictions.scores
    else:
        arrays["first"], arrays["second"], arrays["probability"] = predictions.pairs
    np.savez_compressed(path, **arrays)
    return path


def load_heldout(workdir: str | Path, table: EmbeddingTable) -> Predictions:
    """The predictions saved in ``workdir`` for the rows of ``table`` (matched by key and render). Raises
    ValueError when the file is missing or does not cover every row."""
    path = Path(workdir) / HELDOUT_FILE
    if not path.is_file():
        raise ValueError(f"{path} does not exist: run `crescend-jax evaluate --workdir {workdir}` first")
    saved = np.load(path)
    saved_ids = np.char.add(np.char.add(saved["keys"].astype(str), "|"), saved["renders"].astype(str))
    wanted = np.char.add(np.char.add(table.keys.astype(str), "|"), table.renders.astype(str))
    lookup = {name: index for index, name in enumerate(saved_ids.tolist())}
    index = np.array([lookup.get(name, -1) for name in wanted.tolist()], np.int64)
    if (index < 0).any():
        raise ValueError(f"{path} has no prediction for {(index < 0).sum()} of the rows (e.g. "
                         f"{wanted[index < 0][0]}); it was evaluated on other rows")
    if "scores" in saved:
        return Predictions(scores=saved["scores"][index])
    new = np.full(len(saved_ids), -1, np.int64)
    new[index] = np.arange(len(index))
    first, second = new[saved["first"]], new[saved["second"]]
    keep = (first >= 0) & (second >= 0)
    return Predictions(pairs=(first[keep], second[keep], saved["probability"][keep]))
