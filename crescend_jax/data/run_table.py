"""The rows, label columns and folds a run uses, for one corpus or a joint one: what training and held-out
prediction both read, so that they never disagree.

``run_table(config)``: the table of ``config.corpus`` from its store(s) (or of every corpus of a joint config,
`crescend_jax.data.joint`), without ``data.exclude_compositions`` (per corpus for a joint config), its label columns
those of ``data.targets`` (`crescend_jax.data.targets`). ``run_folds``: the test masks of the data section (each
checked to leave groups to rank) and every row's split unit. ``run_validation_mask``: the validation rows of a fold.
"""

from __future__ import annotations

import ml_collections
import numpy as np

from crescend_jax.data import joint
from crescend_jax.data.splits import check_split, evaluation_splits, kept_rows, split_units, validation_mask
from crescend_jax.data.table import EmbeddingTable
from crescend_jax.data.targets import with_targets


def is_joint(config: ml_collections.ConfigDict) -> bool:
    """Whether ``config`` trains on several corpora (``corpus = "joint"``)."""
    return config.get("corpus", "") == joint.JOINT


def run_table(config: ml_collections.ConfigDict, table: EmbeddingTable | None = None) -> EmbeddingTable:
    """The table a run of ``config`` uses (module doc); ``table``: one already read (tests, sweeps), else the stores."""
    if table is None:
        if is_joint(config):
            return joint.load_joint_table(config)
        from crescend_jax.data.store import load_table  # tensorflow-datasets only when a store is read

        table = load_table(config)
    if is_joint(config):
        if table.corpora is None:
            raise joint.JointTableError("a joint config needs a joint table (crescend_jax.data.joint.joint_table)")
        keep = np.ones(len(table), bool)
        for corpus in tuple(config.data.corpora):
            rows = table.corpora == corpus
            section = config.data[corpus]
            works = None if table.works is None else table.works[rows]
            keep[rows] = kept_rows(table.compositions[rows], section, corpus, works)
    else:
        keep = kept_rows(table.compositions, config.data, config.get("corpus", ""), table.works)
    return with_targets(table.subset(keep), config.data)


def run_folds(table: EmbeddingTable, config: ml_collections.ConfigDict) -> tuple[list[np.ndarray], np.ndarray]:
    """(the test masks of ``config.data`` [N] each, checked to leave groups to rank on both sides and to cut no unit;
    the split unit of each row). One corpus: ``data.split_level``, ``test_compositions``, ``test_fraction``,
    ``num_folds``, ``fold_seed``; joint: each corpus by its own section (`joint.joint_fold_masks`)."""
    data = config.data
    if is_joint(config):
        masks, units = joint.joint_fold_masks(table, data)
    else:
        units = split_units(table.compositions, data.get("split_level", "composition"), config.get("corpus", ""),
                            table.works)
        tests = data.get("test_compositions", ())
        masks = evaluation_splits(table.compositions, data.get("num_folds", 0),
                                  (tests,) if isinstance(tests, str) else tuple(tests), data.get("fold_seed", 0),
                                  units, data.get("test_fraction", 0.0))
    for k, mask in enumerate(masks):
        check_split(table.groups, table.performers, mask, compositions=units, name=f"fold {k}")
    return masks, units


def run_validation_mask(table: EmbeddingTable, units: np.ndarray, fraction: float, seed: int) -> np.ndarray | None:
    """bool [N] over a fold's training rows ``table`` (``units``: their split units): `validation_mask`, drawn inside
    each corpus of a joint table (`joint.joint_validation_mask`); None when there are too few units."""
    if table.corpora is not None:
        return joint.joint_validation_mask(units, table.corpora, fraction, seed)
    return validation_mask(units, fraction, seed)


def run_works(table: EmbeddingTable, config: ml_collections.ConfigDict) -> np.ndarray:
    """str [N]: each row's work (`split_units` at level "work", by its own corpus's rule for a joint table), for
    the fold records (`train.trainer.folds_record`) and the warm start's overlap check."""
    if table.corpora is None:
        return split_units(table.compositions, "work", config.get("corpus", ""), table.works)
    works = np.empty(len(table), dtype=object)
    for corpus in dict.fromkeys(table.corpora.tolist()):
        rows = table.corpora == corpus
        works[rows] = split_units(table.compositions[rows], "work", corpus,
                                  None if table.works is None else table.works[rows])
    return works.astype(str)
