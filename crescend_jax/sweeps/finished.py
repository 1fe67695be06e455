"""Whether a run is finished: an up-to-date evaluation of the same config against the same baseline. A sweep
skips finished points, and the demo keeps an evaluation that is up to date."""

from __future__ import annotations

import json
from pathlib import Path

import ml_collections

from crescend_jax.config import config_to_json


def _mtime(path: Path) -> int:
    return path.stat().st_mtime_ns


def same_config(workdir: str | Path, config: ml_collections.ConfigDict) -> bool:
    """Whether ``workdir``'s config.json is ``config`` (up to the fields a resumed run may change)."""
    from crescend_jax.train.trainer import RESUME_IGNORED_FIELDS, saved_config_fields

    path = Path(workdir) / "config.json"
    try:
        saved = saved_config_fields(json.loads(path.read_text()))
    except (OSError, json.JSONDecodeError):
        return False
    now = saved_config_fields(json.loads(config_to_json(config)))
    return all(saved.get(n) == now.get(n) for n in set(saved) | set(now) if not n.startswith(RESUME_IGNORED_FIELDS))


def same_evaluation(written_metrics: dict, config: ml_collections.ConfigDict) -> bool:
    """Whether ``metrics.json`` (``written_metrics``) was evaluated with ``config``'s eval section (completed with
    its defaults): changing only ``eval.*`` re-evaluates a point without retraining it."""
    from crescend_jax.evaluate.run import eval_settings

    written = written_metrics.get("eval_config") if isinstance(written_metrics, dict) else None
    now = json.loads(config_to_json(eval_settings(config)))
    return written is not None and json.loads(json.dumps(written)) == now


def finished(workdir: str | Path, baseline: str | Path | None = None,
             config: ml_collections.ConfigDict | None = None) -> bool:
    """Whether ``workdir`` holds an up-to-date evaluation: a readable metrics.json and a non-empty heldout.npz,
    metrics.json newer than every fold's done.json (every fold of folds.json done) and, with a ``baseline`` workdir, holding the comparison with that workdir and newer than
    the baseline's heldout.npz; with ``config``, also trained with that config (a changed sweep point is not finished:
    its rerun reaches the trainer, which refuses to resume a workdir made by another config) and evaluated with
    its eval section (`same_evaluation`)."""
    from crescend_jax.data import fingerprint as fingerprint_lib
    from crescend_jax.evaluate.comparison import HELDOUT_FILE

    workdir = Path(workdir)
    metrics = workdir / "metrics.json"
    own = workdir / HELDOUT_FILE
    if not metrics.is_file() or not own.is_file() or own.stat().st_size == 0:
        return False
    try:
        written_metrics = json.loads(metrics.read_text())
    except (OSError, json.JSONDecodeError):  # half-written (a kill or a full disk): evaluate again
        return False
    if config is not None and not same_config(workdir, config):
        return False
    if config is not None and not same_evaluation(written_metrics, config):
        return False
    _, folds = fingerprint_lib.read_record(workdir)
    if not folds:
        return False
    done = [workdir / f"fold_{entry['fold']}" / "done.json" for entry in folds]
    if not all(path.is_file() for path in done):
        return False
    written = _mtime(metrics)
    if any(_mtime(path) > written for path in done):
        return False
    if baseline is not None:
        saved = Path(baseline) / HELDOUT_FILE
        if not saved.is_file() or _mtime(saved) > written:
            return False
        # compared with this very baseline (a sweep whose point changed its baseline evaluates again)
        versus = (written_metrics.get("versus_baseline") if isinstance(written_metrics, dict) else None) or {}
        if versus.get("baseline") != str(Path(baseline).resolve()):
            return False
    return True


