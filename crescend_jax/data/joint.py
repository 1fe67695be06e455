"""One table made of several corpora's stores (same encoder), with folds that split each corpus by its own rule.

Joint training (e.g. ASAP's group-relative derived targets and PercePiano's ratings in one run, one head per target
column, `crescend_jax.data.targets`) reads one `EmbeddingTable` whose ``corpora`` column names each row's corpus.
A joint config has ``corpus = "joint"`` and a data section::

    data.corpora = ("percepiano", "asap")    # the corpora, in row order
    data.percepiano = <PercePiano's data section>   # its root, folds and split rule (by composition)
    data.asap = <ASAP's data section>               # its root, windows and split rule (by work, held-out works)
    data.targets, data.target_transform, data.derived_labels   # what the run ranks by (usually "both")

**Names never collide.** Every name is kept as its corpus wrote it (a joint run's PercePiano predictions pair key
for key with a PercePiano-only run's), and `joint_table` refuses corpora that share a key, a same-music group, a
piece, a composition or a work. Every dense id (groups, compositions: `crescend_jax.data.groups.dense_ids`, computed
from those names by the sampler, the input pipeline and the metrics) is therefore distinct across corpora, and no
same-music group, InfoNCE positive or ranked pair ever joins rows of two corpora.

**Folds.** `joint_fold_masks` splits each corpus's rows by its own data section (`crescend_jax.data.splits.
evaluation_splits` with its own ``split_level``, ``num_folds``, ``test_compositions``, ``test_fraction``,
``fold_seed``): k_c test masks for corpus c. Every k_c is 1 or the same k; joint fold f holds out fold f of every
corpus with k folds and the single held-out set of every corpus with one, in every fold. So PercePiano is cross-
validated by composition exactly as a PercePiano-only run with the same section (the same held-out compositions in
each fold, hence paired comparisons), while ASAP's held-out works (``test_fraction`` or ``test_compositions``) are
never trained on in any fold. Split units are namespaced ``<corpus>:<unit>`` so a unit never spans corpora.

**Leakage.** A row of another corpus flagged ``in_percepiano`` (its music may be a PercePiano composition, hence
in a PercePiano test fold) is refused: extract ASAP with ``data.exclude_in_percepiano=True`` (the default).
"""

from __future__ import annotations

import dataclasses
from typing import Mapping

import ml_collections
import numpy as np

from crescend_jax.data.splits import SplitError, evaluation_splits, kept_rows, split_units, validation_mask
from crescend_jax.data.table import EmbeddingTable
from crescend_jax.data.targets import with_targets

JOINT = "joint"
_NAMED_COLUMNS = ("keys", "groups", "pieces", "compositions", "works")


class JointTableError(ValueError):
    """Corpora that cannot be joined (shared names, other encoders, music that may leak into a test fold)."""


def joint_table(tables: Mapping[str, EmbeddingTable]) -> EmbeddingTable:
    """The rows of every corpus's table (``tables``: corpus name -> its table, in row order) in one table whose
    ``corpora`` [N] names each row's corpus; every other column as `EmbeddingTable.concat` joins them (a corpus
    without derived labels gets NaN there; ASAP rows keep their NaN ratings). Raises `JointTableError` for corpora
    that share a name of `_NAMED_COLUMNS`, tables of other encoders, or rows flagged ``in_percepiano`` in a corpus
    other than PercePiano (module doc)."""
    if len(tables) < 2:
        raise JointTableError(f"a joint table needs at least two corpora, got {list(tables)}")
    seen: dict[str, dict[str, str]] = {column: {} for column in _NAMED_COLUMNS}
    for corpus, table in tables.items():
        if not len(table):
            raise JointTableError(f"corpus {corpus!r} has no rows: extract its store first")
        if table.corpora is not None:
            raise JointTableError(f"corpus {corpus!r} is already a joint table")
        if corpus != "percepiano" and table.in_percepiano is not None and table.in_percepiano.any():
            flagged = sorted(set(table.compositions[table.in_percepiano].tolist()))
            raise JointTableError(
                f"{len(flagged)} composition(s) of {corpus!r} may also be PercePiano compositions (e.g. {flagged[0]!r}) "
                f"and could sit in a PercePiano test fold: extract with --config.data.{corpus}.exclude_in_percepiano"
                f"=True or leave them out with data.{corpus}.exclude_compositions")
        for column in _NAMED_COLUMNS:
            values = getattr(table, column)
            for name in ([] if values is None else sorted(set(np.asarray(values).astype(str).tolist()) - {""})):
                other = seen[column].setdefault(name, corpus)
                if other != corpus:
                    raise JointTableError(f"corpora {other!r} and {corpus!r} share the {column[:-1]} {name!r}: "
                                          f"their rows would join one same-music group or split unit")
    try:
        joined = EmbeddingTable.concat([table for table in tables.values()])
    except ValueError as err:
        raise JointTableError(f"cannot join the corpora {list(tables)}: {err}") from None
    corpora = np.concatenate([np.full(len(table), corpus) for corpus, table in tables.items()])
    return dataclasses.replace(joined, corpora=corpora.astype(str))


def _corpus_section(data_config: ml_collections.ConfigDict, corpus: str) -> ml_collections.ConfigDict:
    if corpus not in data_config:
        raise JointTableError(f"data.corpora names {corpus!r} but the data section has no data.{corpus} sub-section")
    return data_config[corpus]


def _tests(section) -> tuple[str, ...]:
    tests = section.get("test_compositions", ()) or ()
    return (tests,) if isinstance(tests, str) else tuple(tests)


def joint_units(table: EmbeddingTable, data_config: ml_collections.ConfigDict) -> np.ndarray:
    """str [N]: each row's split unit by its corpus's rule (``data.<corpus>.split_level``), as ``<corpus>:<unit>``."""
    if table.corpora is None:
        raise JointTableError("joint folds need a joint table (crescend_jax.data.joint.joint_table)")
    units = np.empty(len(table), dtype=object)
    for corpus in tuple(data_config.corpora):
        rows = table.corpora == corpus
        section = _corpus_section(data_config, corpus)
        works = None if table.works is None else table.works[rows]
        own = split_units(table.compositions[rows], section.get("split_level", "composition"), corpus, works)
        units[rows] = [f"{corpus}:{unit}" for unit in own]
    unknown = sorted(set(table.corpora.tolist()) - set(data_config.corpora))
    if unknown:
        raise JointTableError(f"the table holds rows of {unknown}, which data.corpora does not name")
    return units.astype(str)


def joint_fold_masks(table: EmbeddingTable, data_config: ml_collections.ConfigDict) -> tuple[list[np.ndarray],
                                                                                                np.ndarray]:
    """(bool test masks [N], one per joint fold; the namespaced split unit of each row, `joint_units`): each corpus
    split by its own data section, the folds combined as the module doc says. Raises `SplitError` when the corpora's
    fold counts are neither 1 nor one common k."""
    units = joint_units(table, data_config)
    per_corpus = []
    for corpus in tuple(data_config.corpora):
        rows = np.flatnonzero(table.corpora == corpus)
        if not len(rows):
            raise JointTableError(f"the joint table holds no row of {corpus!r}")
        section = _corpus_section(data_config, corpus)
        own = np.array([unit.split(":", 1)[1] for unit in units[rows]])  # the corpus's own names
        masks = evaluation_splits(table.compositions[rows], section.get("num_folds", 0), _tests(section),
                                  section.get("fold_seed", 0), own, section.get("test_fraction", 0.0))
        per_corpus.append((corpus, rows, masks))
    counts = {corpus: len(masks) for corpus, _, masks in per_corpus}
    num_folds = max(counts.values())
    if any(count not in (1, num_folds) for count in counts.values()):
        raise SplitError(f"joint folds need every corpus to give one held-out set or the same number of folds; got "
                         f"{counts}: set data.<corpus>.num_folds / test_fraction so that they agree")
    folds = []
    for fold in range(num_folds):
        mask = np.zeros(len(table), bool)
        for _, rows, masks in per_corpus:
            mask[rows] = masks[fold if len(masks) > 1 else 0]
        folds.append(mask)
    return folds, units


def joint_validation_mask(units: np.ndarray, corpora: np.ndarray, fraction: float, seed: int) -> np.ndarray | None:
    """bool [N] over a joint fold's training rows: `validation_mask` drawn inside each corpus separately (whole
    units, about ``fraction`` of each corpus's rows), so validation holds every corpus in proportion rather than
    whichever the draw happens to favour. None when no corpus has enough units for a validation split."""
    mask = np.zeros(len(units), bool)
    found = False
    for corpus in dict.fromkeys(np.asarray(corpora).tolist()):
        rows = np.flatnonzero(np.asarray(corpora) == corpus)
        own = validation_mask(np.asarray(units)[rows], fraction, seed)
        if own is not None:
            mask[rows] = own
            found = True
    return mask if found else None


def corpus_config(config: ml_collections.ConfigDict, corpus: str) -> ml_collections.ConfigDict:
    """A copy of the joint ``config`` as a run on ``corpus`` alone: ``corpus`` set, ``data`` its sub-section (the
    encoder, render and store sections shared, hence the same encoder for every corpus)."""
    copy = ml_collections.ConfigDict(config.to_dict())
    copy.corpus = corpus
    copy.data = ml_collections.ConfigDict(_corpus_section(config.data, corpus).to_dict())
    return copy


def load_joint_table(config: ml_collections.ConfigDict) -> EmbeddingTable:
    """The joint table of ``config`` (module doc): each corpus's stores read with its own section (`corpus_config`,
    ``data.<corpus>.exclude_compositions`` applied), joined (`joint_table`), then the targets of ``data.targets``
    (`crescend_jax.data.targets.with_targets`)."""
    from crescend_jax.data.store import load_table  # the store reader (tensorflow-datasets) only when reading

    tables = {}
    for corpus in tuple(config.data.corpora):
        section = corpus_config(config, corpus)
        table = load_table(section)
        tables[corpus] = table.subset(kept_rows(table.compositions, section.data, corpus, table.works))
    return with_targets(joint_table(tables), config.data)


def default_joint_data_config(sections: Mapping[str, ml_collections.ConfigDict]) -> ml_collections.ConfigDict:
    """A joint ``config.data`` of the corpora ``sections`` (name -> its data section, in row order), ranking the 19
    ratings and every derived target ("both", pooled group-relative)."""
    config = ml_collections.ConfigDict()
    config.corpora = tuple(sections)
    for corpus, section in sections.items():
        config[corpus] = section
    config.targets = "both"
    config.target_transform = "pooled"
    config.derived_labels = ()
    return config

