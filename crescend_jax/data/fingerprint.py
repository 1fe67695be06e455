"""What a run trained on, as a small JSON record: compared before a resume, an evaluation or a comparison.

A fingerprint names the stores a table was read from (their identity, as recorded by `crescend_jax.data.store`),
the data root, the encoder, and hashes of the row keys and of the label means, so a changed store, corpus, label
file or row set is told apart from the one a run was trained on. Fold assignments are recorded beside it as the
test keys of each fold (``folds.json``), and a finished run's folds never move.
"""

from __future__ import annotations

import hashlib
import json
from pathlib import Path
from typing import Any

import numpy as np

from crescend_jax.data.table import EmbeddingTable
from crescend_jax.errors import DataError

FINGERPRINT_FILE = "fingerprint.json"
FOLDS_FILE = "folds.json"


class FingerprintMismatch(DataError):
    """A workdir was made from other data than what is about to be used with it."""


def _digest(values: bytes) -> str:
    return hashlib.sha256(values).hexdigest()[:16]


def table_fingerprint(table: EmbeddingTable) -> dict[str, Any]:
    """JSON-able identity of ``table``'s content: stores, data roots, encoder, row count, key and label hashes."""
    order = np.argsort(table.keys, kind="stable")
    keys = "\n".join(f"{k}|{r}" for k, r in zip(table.keys[order], table.renders[order]))
    labels = np.round(np.nan_to_num(table.label_mean[order].astype(np.float64), nan=-1.0), 6)
    return {
        "stores": [str(s) for s in getattr(table, "sources", ()) or ()],
        "data_roots": [str(s) for s in getattr(table, "data_roots", ()) or ()],
        "encoder": table.encoder,
        "num_rows": int(len(table)),
        "keys_sha256": _digest(keys.encode()),
        "labels_sha256": _digest(labels.tobytes()),
    }


def folds_record(table: EmbeddingTable, masks: list[np.ndarray]) -> list[dict[str, Any]]:
    """Per fold: its held-out compositions and keys (what ``folds.json`` holds)."""
    return [{"fold": k, "test_compositions": sorted(set(table.compositions[m].tolist())),
             "test_keys": sorted(set(table.keys[m].tolist()))} for k, m in enumerate(masks)]


def differences(saved: dict[str, Any], current: dict[str, Any]) -> list[str]:
    """'field: saved -> current' for every field that differs (stores and roots compared as sets)."""
    out = []
    for name in sorted(set(saved) | set(current)):
        a, b = saved.get(name), current.get(name)
        if isinstance(a, list) and isinstance(b, list) and name in ("stores", "data_roots"):
            a, b = sorted(a), sorted(b)
        if a != b:
            out.append(f"{name}: {a!r} -> {b!r}")
    return out


def read_record(workdir: str | Path) -> tuple[dict[str, Any] | None, list[dict[str, Any]] | None]:
    """(fingerprint, folds) saved in ``workdir``; None for a file that is not there."""
    workdir = Path(workdir)
    read = lambda name: json.loads((workdir / name).read_text()) if (workdir / name).is_file() else None
    return read(FINGERPRINT_FILE), read(FOLDS_FILE)


def write_record(workdir: str | Path, fingerprint: dict[str, Any], folds: list[dict[str, Any]]) -> None:
    workdir = Path(workdir)
    (workdir / FINGERPRINT_FILE).write_text(json.dumps(fingerprint, indent=1))
    (workdir / FOLDS_FILE).write_text(json.dumps(folds, indent=1))


def check_same_data(workdir: str | Path, fingerprint: dict[str, Any], what: str, other: str = "the current data") -> None:
    """Raises `FingerprintMismatch` (one line naming both sides) when ``workdir`` was trained on other data than
    ``fingerprint`` describes. ``what`` names the action refused (e.g. "resume", "evaluate")."""
    saved, _ = read_record(workdir)
    if saved is None:
        raise FingerprintMismatch(f"cannot {what}: {workdir} has no {FINGERPRINT_FILE} (made by an older version); "
                                  "retrain it into a new --workdir")
    diff = differences(saved, fingerprint)
    if diff:
        raise FingerprintMismatch(f"cannot {what}: {workdir} was trained on other data than {other} ("
                                  + "; ".join(diff[:4]) + "); use the store it was trained on or retrain")


def check_same_folds(workdir_a: str | Path, workdir_b: str | Path, what: str) -> None:
    """Raises `FingerprintMismatch` unless two workdirs share data fingerprint and fold assignment."""
    (fa, folds_a), (fb, folds_b) = read_record(workdir_a), read_record(workdir_b)
    if fa is None or fb is None:
        missing = workdir_a if fa is None else workdir_b
        raise FingerprintMismatch(f"cannot {what}: {missing} has no {FINGERPRINT_FILE}; retrain it")
    diff = differences(fa, fb)
    if diff:
        raise FingerprintMismatch(f"cannot {what}: {workdir_a} and {workdir_b} were trained on different data ("
                                  + "; ".join(diff[:4]) + ")")
    simplify = lambda folds: [(f["fold"], f["test_keys"]) for f in folds or []]
    if simplify(folds_a) != simplify(folds_b):
        raise FingerprintMismatch(f"cannot {what}: {workdir_a} and {workdir_b} hold out different folds; train both "
                                  "with the same data.num_folds / data.test_compositions / data.fold_seed / "
                                  "data.split_level")


def check_same_part(workdir: str | Path, baseline: str | Path, part: dict[str, Any], part_keys: set[str],
                    what: str) -> None:
    """`check_same_folds` for a run trained on more than its baseline (a joint run of PercePiano and ASAP compared
    with a PercePiano-only run): ``part`` is the fingerprint of the run's rows and label columns that the baseline
    covers (`table_fingerprint` of that part of the run's table), ``part_keys`` their keys. Raises
    `FingerprintMismatch` unless the part's rows, labels and encoder are the baseline's, the baseline's stores are
    among the run's, and the run's folds, restricted to the part's keys, hold out exactly the baseline's."""
    (fa, folds_a), (fb, folds_b) = read_record(workdir), read_record(baseline)
    if fa is None or fb is None:
        missing = workdir if fa is None else baseline
        raise FingerprintMismatch(f"cannot {what}: {missing} has no {FINGERPRINT_FILE}; retrain it")
    diff = differences({k: v for k, v in fb.items() if k not in ("stores", "data_roots")},
                       {k: v for k, v in part.items() if k not in ("stores", "data_roots")})
    lacking = sorted(set(fb.get("stores", ())) - set(fa.get("stores", ())))
    if lacking:
        diff.append(f"stores {lacking} of the baseline are not among the run's")
    if diff:
        raise FingerprintMismatch(f"cannot {what}: {baseline} was trained on other data than the part of {workdir} "
                                  f"it is compared on (" + "; ".join(diff[:4]) + ")")
    restrict = lambda folds: [(f["fold"], sorted(k for k in f["test_keys"] if k in part_keys)) for f in folds or []]
    if restrict(folds_a) != [(f["fold"], sorted(f["test_keys"])) for f in folds_b or []]:
        raise FingerprintMismatch(f"cannot {what}: {workdir} and {baseline} hold out different folds of the rows "
                                  "they share; train both with the same data.<corpus> split settings")
