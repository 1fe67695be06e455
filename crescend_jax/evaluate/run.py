"""`crescend-jax evaluate`: held-out predictions of a trained workdir -> metrics.json, report.md, plots.

Writes are safe on a bad day: ``heldout.npz`` (which other runs read as their baseline) is written aside and renamed
into place, so it is never seen half-written; a write that fails (a full disk, a read-only workdir) is one
`EvaluationError` naming the workdir, and leaves no partial ``metrics.json`` behind (the run then reads as not
evaluated, never as finished). A baseline whose ``heldout.npz`` cannot be read is an `EvaluationError` too.
"""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import sys
import uuid
import zipfile
from pathlib import Path
from typing import Any, Iterator

import ml_collections
import numpy as np

from crescend_jax.config import config_to_json
from crescend_jax.data import fingerprint as fingerprint_lib
from crescend_jax.data.joint import corpus_config
from crescend_jax.data.run_table import is_joint
from crescend_jax.data.targets import derived_columns, target_names
from crescend_jax.evaluate import bootstrap
from crescend_jax.evaluate import ceiling as ceiling_lib
from crescend_jax.evaluate import comparison
from crescend_jax.evaluate import derived as derived_lib
from crescend_jax.evaluate import disentanglement as disentanglement_lib
from crescend_jax.evaluate import metrics as metrics_lib
from crescend_jax.evaluate.predict import EvaluationError, HeldoutPredictions, predict_heldout, read_config
from crescend_jax.evaluate.reference import reference_predictions
from crescend_jax.evaluate.report import console_summary, write_report
from crescend_jax.evaluate.summary import evaluate_predictions, to_json


def default_eval_config() -> ml_collections.ConfigDict:
    """``config.eval``: the report's baseline, the label gap of the gap variant, the noise ceiling's random splits."""
    config = ml_collections.ConfigDict()
    config.baseline_workdir = ""  # a trained baseline to compare against in the report ("" = none)
    config.min_gap = metrics_lib.DEFAULT_MIN_GAP  # pairs with a smaller label gap are left out of the gap variant
    config.ceiling_splits = ceiling_lib.DEFAULT_NUM_SPLITS  # random half-panel splits averaged by the ceiling
    config.ceiling_seed = 0
    config.reference = True  # the linear (ridge) reference on the same inputs and folds, in every report
    config.disentanglement = True  # probes of each named embedding (and the input) on the folds' training rows
    # intervals: "two_stage" resamples held-out compositions (works with data.split_level="work"), then same-music
    # groups inside them (new music); "within_composition" keeps the compositions (the fixed-set question)
    config.bootstrap = bootstrap.DEFAULT_SCHEME
    config.bootstrap_replicates = bootstrap.DEFAULT_REPLICATES
    config.bootstrap_seed = 0
    return config


def eval_settings(config: ml_collections.ConfigDict) -> ml_collections.ConfigDict:
    """``config.eval`` completed with the defaults (a run's config from an older version may lack fields)."""
    section = default_eval_config()
    section.update(config.get("eval") or {})
    return section


def load_baseline_metrics(baseline: str | Path, workdir: str | Path, check: bool = True) -> dict:
    """The metrics a previous ``evaluate`` wrote into the baseline workdir, after checking (unless not ``check``: a
    joint run checks its shared part once its table is read, `fingerprint.check_same_part`) that the baseline was
    trained on the same data and folds as ``workdir`` (`FingerprintMismatch` otherwise)."""
    path = Path(baseline) / "metrics.json"
    if not path.is_file():
        raise EvaluationError(
            f"baseline {path} does not exist: run `crescend-jax evaluate --workdir {baseline}` on the baseline first"
        )
    if check:
        fingerprint_lib.check_same_folds(workdir, baseline, "compare with the baseline")
    try:
        return json.loads(path.read_text())
    except json.JSONDecodeError as err:
        raise EvaluationError(f"baseline {path} is not valid JSON ({err}): re-run evaluate on the baseline") from None


@contextlib.contextmanager
def _writing(workdir: Path) -> Iterator[None]:
    """An OSError while writing the evaluation into ``workdir`` -> one `EvaluationError`; a metrics.json it may have
    left half-written is removed."""
    try:
        yield
    except OSError as err:
        with contextlib.suppress(OSError):
            (workdir / "metrics.json").unlink(missing_ok=True)
        raise EvaluationError(f"cannot write the evaluation into {workdir} ({err.strerror or err}); free space there "
                              "and run evaluate again") from None


def save_heldout_atomically(workdir: Path, table, predictions, fold) -> Path:
    """`comparison.save_heldout` into a folder beside, then renamed into place: readers never see a partial file."""
    staging = workdir / f".heldout-{uuid.uuid4().hex[:8]}.tmp"
    try:
        staging.mkdir()
        written = comparison.save_heldout(staging, table, predictions, fold)
        target = workdir / written.name
        os.replace(written, target)
        return target
    finally:
        shutil.rmtree(staging, ignore_errors=True)


def load_baseline_heldout(baseline: str | Path, table) -> Any:
    """The baseline's held-out predictions for ``table``'s rows; `EvaluationError` when its heldout.npz is missing,
    damaged (e.g. an empty file from a full disk) or covers other rows."""
    path = Path(baseline) / comparison.HELDOUT_FILE
    try:
        return comparison.load_heldout(baseline, table)
    except (OSError, EOFError, ValueError, KeyError, zipfile.BadZipFile) as err:  # reading one saved file
        raise EvaluationError(f"baseline predictions {path} cannot be used ({type(err).__name__}: {err}); run "
                              f"`crescend-jax evaluate --workdir {baseline}` again") from None


def disentanglement(heldout: HeldoutPredictions, workdir: Path) -> dict[str, Any] | None:
    """Probe metrics of the raw input and each named embedding on the first fold's training rows (held-out groups
    of the training compositions score the composition probe), and a 2-D picture of them. One fold: the probes fit
    a multinomial logistic regression per embedding and penalty, minutes per fold on the demo corpus; BLAS runs on
    one thread here (many small solves: threads only contend with XLA's)."""
    if not heldout.train_rows:
        return None
    from threadpoolctl import threadpool_limits

    k = min(heldout.train_rows)
    source = heldout.source.subset(heldout.train_rows[k])
    named = {"input": source.pooled, **heldout.train_embeddings[k]}
    factors = getattr(source, "performer_factors", None)
    known = factors is not None and np.isfinite(factors).any()
    with threadpool_limits(limits=1, user_api="blas"):
        try:
            result = disentanglement_lib.disentanglement_metrics(
                named, source.compositions, source.groups, factors=factors if known else None,
                factor_names=(source.factor_names or None) if known else None)
        except ValueError as err:  # e.g. too few rows with known factors on a tiny corpus: the other probes stand
            if not known:
                raise
            result = disentanglement_lib.disentanglement_metrics(named, source.compositions, source.groups)
            result["factor_probe_skipped"] = str(err)
        disentanglement_lib.plot_embeddings(workdir / "embeddings.png", named, source.compositions)
    result["num_folds"] = 1
    result["fold"] = int(k)
    return result


def _view_boot(config: ml_collections.ConfigDict, settings: ml_collections.ConfigDict, table, rows: np.ndarray,
               boot: dict[str, Any]) -> dict[str, Any]:
    """The bootstrap options of a view's rows: ``boot`` (the run's), or for a joint run those of the one corpus the
    rows belong to (its own split level: ASAP's works, PercePiano's compositions)."""
    if not is_joint(config) or table.corpora is None:
        return boot
    corpora = sorted(set(table.corpora[rows].tolist()))
    return comparison.bootstrap_options(corpus_config(config, corpora[0]), settings) if len(corpora) == 1 else boot


def evaluate_workdir(workdir: str, baseline: str | None = None,
                     config: ml_collections.ConfigDict | None = None) -> dict:
    """Evaluates the held-out predictions of ``workdir``, compared with ``baseline`` (a workdir) when given, else
    with the run's ``config.eval.baseline_workdir`` when that is set. ``config``: the run's config with overrides
    (e.g. of ``eval``); None = the saved one.

    Beside the metrics of `evaluate_predictions`, the dict holds: "interval" (95% bootstrap interval of the mean
    pairwise accuracy, `comparison.bootstrap_options`: by default compositions then same-music groups resampled;
    its no-Score twin under "no_score"; ``warnings`` when degenerate), "reference" (the ridge reference on the
    same inputs and folds, its accuracy, interval and the paired difference run - reference), "versus_baseline"
    (the paired difference run - baseline) and "disentanglement" (probes).
    Writes metrics.json, heldout.npz, report.md and PNG plots into ``workdir``; returns the metrics dict (with
    "report": path). Raises `EvaluationError` / `FingerprintMismatch` when the run or the baseline cannot be read.
    """
    workdir_path = Path(workdir)
    run_config = config if config is not None else None
    saved_config = run_config if run_config is not None else read_config(workdir_path)
    settings = eval_settings(saved_config)
    boot = comparison.bootstrap_options(saved_config, settings)  # an unknown scheme fails here, before predicting
    baseline = baseline or settings.baseline_workdir or None
    # the baseline is checked before the costly prediction: a wrong one fails in a second, not after the run
    joint = is_joint(saved_config)  # a joint run is compared on its PercePiano part, checked once it is read
    baseline_metrics = None if baseline is None else load_baseline_metrics(baseline, workdir, check=not joint)
    has_derived = bool(derived_columns(target_names(saved_config.get("data") or {})).any())
    # the derived block's probes read the training rows' embeddings too
    heldout = predict_heldout(workdir, training_embeddings=bool(settings.disentanglement) or has_derived)
    run_config = run_config if run_config is not None else heldout.config
    # the primary view: the ratings (PercePiano's rows of a joint run), else the derived targets (derived.py)
    view = derived_lib.primary(heldout.table)
    table = derived_lib.view_table(heldout.table, view)
    predictions = derived_lib.view_predictions(heldout.predictions, view)
    fold = heldout.fold[view.rows]
    if baseline is not None and joint:
        part = derived_lib.view_table(heldout.source, view, all_rows=True)
        part = part.subset(np.flatnonzero(np.isfinite(part.label_mean).any(axis=1)))
        fingerprint_lib.check_same_part(workdir_path, baseline, fingerprint_lib.table_fingerprint(part),
                                        set(part.keys.tolist()), "compare with the baseline")
    primary_boot = _view_boot(saved_config, settings, heldout.table, view.rows, boot)
    metrics = evaluate_predictions(table, predictions, fold, min_gap=float(settings.min_gap),
                                   ceiling_splits=int(settings.ceiling_splits), seed=int(settings.ceiling_seed))
    metrics["interval"] = to_json(comparison.accuracy_interval(predictions, table, **primary_boot))
    metrics["eval_config"] = settings.to_dict()  # what a sweep's finished check compares (eval.* may change alone)
    with _writing(workdir_path):
        save_heldout_atomically(workdir_path, table, predictions, fold)
    if settings.reference:
        _, folds = fingerprint_lib.read_record(workdir_path)
        reference, summary = reference_predictions(derived_lib.primary_table(heldout.source), folds, table)
        scored = evaluate_predictions(table, reference, fold, min_gap=float(settings.min_gap),
                                      ceiling_splits=1, seed=int(settings.ceiling_seed))
        metrics["reference"] = to_json({
            **summary, "pairwise_accuracy": scored["pooled"]["pairwise_accuracy"],
            "kendall_tau_b": scored["pooled"]["kendall_tau_b"],
            "interval": comparison.accuracy_interval(reference, table, **primary_boot),
            "difference": comparison.paired_difference(predictions, reference, table, **primary_boot)})
    if baseline is not None:
        base = load_baseline_heldout(baseline, table)
        metrics["versus_baseline"] = {**to_json(comparison.paired_difference(predictions, base, table,
                                                                              **primary_boot)),
                                      "baseline": str(Path(baseline).resolve())}
    if has_derived:
        found = derived_lib.views(heldout.table)
        if "derived" in found:
            metrics["derived"] = derived_lib.derived_block(
                heldout, boot=_view_boot(saved_config, settings, heldout.table, found["derived"].rows, boot))
    with _writing(workdir_path):
        if settings.disentanglement:
            metrics["disentanglement"] = to_json(disentanglement(heldout, workdir_path))
        metrics["report"] = str(write_report(workdir, metrics, config_to_json(run_config), baseline_metrics))
    lines, warned = console_summary(metrics)
    print("\n".join(lines))
    for line in warned:
        print(f"warning: {line}", file=sys.stderr)
    return metrics
