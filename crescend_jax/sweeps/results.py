"""A sweep's results: every point's finished seeds pooled (`crescend_jax.evaluate.seed_pooling`) into
``results.json``, the tables and plots (`crescend_jax.evaluate.sweep_report`) and the per-dimension analysis."""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Any, Mapping, Sequence

import ml_collections
import numpy as np

from crescend_jax.config import ConfigError
from crescend_jax.errors import DataError
from crescend_jax.evaluate.nested import nested_get as _metric
from crescend_jax.sweeps.finished import finished
from crescend_jax.sweeps.language import (SWEEP_SECTION, SweepPoint, data_key, encoder_label, run_config,
                                          seed_workdir, sweep_field, value_of)

RESULTS_FILE = "results.json"


def _run_errors() -> tuple[type[BaseException], ...]:
    """What makes pooling a point's seeds fail (reported in its row; the table goes on)."""
    return ConfigError, DataError


class _Tables:
    """Held-out tables and ridge references, loaded once per data and folds."""

    def __init__(self):
        self.sources: dict[str, Any] = {}
        self.references: dict[tuple[str, str], Any] = {}

    def source(self, config: ml_collections.ConfigDict):
        key = data_key(config)
        if key not in self.sources:  # as the run read it (data.targets, a joint run's corpora), its primary view
            from crescend_jax.data.run_table import run_table  # noqa: PLC0415
            from crescend_jax.evaluate.derived import primary_table  # noqa: PLC0415

            self.sources[key] = primary_table(run_table(config))
        return self.sources[key]

    def heldout(self, config: ml_collections.ConfigDict, workdir: Path):
        """The rows of the source table that ``workdir``'s heldout.npz holds (in table order)."""
        from crescend_jax.evaluate.comparison import HELDOUT_FILE  # noqa: PLC0415

        table = self.source(config)
        saved = np.load(workdir / HELDOUT_FILE)
        wanted = set(np.char.add(np.char.add(saved["keys"].astype(str), "|"), saved["renders"].astype(str)).tolist())
        ids = np.char.add(np.char.add(table.keys.astype(str), "|"), table.renders.astype(str))
        return table.subset(np.flatnonzero(np.isin(ids, list(wanted))))

    def reference(self, config: ml_collections.ConfigDict, workdir: Path, heldout):
        from crescend_jax.data import fingerprint as fingerprint_lib  # noqa: PLC0415
        from crescend_jax.evaluate.reference import reference_predictions  # noqa: PLC0415

        _, folds = fingerprint_lib.read_record(workdir)
        key = (data_key(config), json.dumps(folds, sort_keys=True))
        if key not in self.references:
            self.references[key] = reference_predictions(self.source(config), folds, heldout)[0]
        return self.references[key]


def _seed_row(seed: int, workdir: Path, metrics: dict) -> dict[str, Any]:
    return {"seed": seed, "workdir": str(workdir),
            "accuracy": _metric(metrics, "pooled.pairwise_accuracy.mean"),
            "low": _metric(metrics, "interval.mean.low"), "high": _metric(metrics, "interval.mean.high"),
            "fraction": _metric(metrics, "fraction_of_ceiling.pairwise_accuracy.mean"),
            "tau": _metric(metrics, "pooled.kendall_tau_b.mean"),
            "fold_std": _metric(metrics, "fold_std.pairwise_accuracy.mean"),
            "reference": _metric(metrics, "reference.pairwise_accuracy.mean"),
            "vs_baseline": _metric(metrics, "versus_baseline.mean.estimate"),
            "vs_baseline_low": _metric(metrics, "versus_baseline.mean.low"),
            "vs_baseline_high": _metric(metrics, "versus_baseline.mean.high"),
            "vs_reference": _metric(metrics, "reference.difference.mean.estimate"),
            "vs_reference_low": _metric(metrics, "reference.difference.mean.low"),
            "vs_reference_high": _metric(metrics, "reference.difference.mean.high")}


def pooled_metrics(item: SweepPoint, runs: list[tuple[int, Path, dict]], baseline_runs: list[Path],
                   tables: _Tables) -> dict[str, Any]:
    """The seed-pooled, metrics-like dict of one point (see `crescend_jax.evaluate.seed_pooling`)."""
    from crescend_jax.data.dimensions import DIMENSIONS  # noqa: PLC0415
    from crescend_jax.evaluate import ceiling as ceiling_lib  # noqa: PLC0415
    from crescend_jax.evaluate import seed_pooling  # noqa: PLC0415
    from crescend_jax.evaluate.comparison import bootstrap_options, load_heldout  # noqa: PLC0415
    from crescend_jax.evaluate.run import eval_settings  # noqa: PLC0415
    from crescend_jax.evaluate.summary import to_json  # noqa: PLC0415

    settings = eval_settings(item.config)
    boot = bootstrap_options(item.config, settings)
    heldout = tables.heldout(item.config, runs[0][1])
    predictions = [load_heldout(workdir, heldout) for _, workdir, _ in runs]
    interval = seed_pooling.pooled_interval(predictions, heldout, **boot)
    first = runs[0][2]
    ceiling = np.array([np.nan if v is None else v for v in first["ceiling"]["per_dimension"]], np.float64)
    accuracy = np.asarray(interval["per_dimension"]["estimate"], np.float64)
    defined = np.isfinite(accuracy) & np.isfinite(ceiling)
    mean_ceiling = float(np.mean(ceiling[defined])) if defined.any() else float("nan")
    scale = lambda value: float(ceiling_lib.fraction_of_ceiling(np.array([value]), np.array([mean_ceiling]))[0])

    def mean_of(path: str) -> float | None:
        values = [_metric(metrics, path) for _, _, metrics in runs]
        values = [v for v in values if v is not None]
        return float(np.mean(values)) if values else None

    result: dict[str, Any] = {
        "dimensions": list(first.get("dimensions") or DIMENSIONS),
        "seeds": [seed for seed, _, _ in runs],
        "pooled": {"pairwise_accuracy": {"mean": interval["mean"]["estimate"], "per_dimension": accuracy},
                   "kendall_tau_b": {"mean": mean_of("pooled.kendall_tau_b.mean")}},
        "kendall_tau_b": {"mean": mean_of("pooled.kendall_tau_b.mean")},
        "interval": interval,
        "seed_std": {"pairwise_accuracy": seed_pooling.seed_spread(
            [_metric(m, "pooled.pairwise_accuracy.mean") for _, _, m in runs])},
        "ceiling": {"per_dimension": ceiling, "mean": mean_ceiling},
        "fraction_of_ceiling": {"pairwise_accuracy": {
            "per_dimension": ceiling_lib.fraction_of_ceiling(accuracy, ceiling),
            "mean": scale(interval["mean"]["estimate"]), "low": scale(interval["mean"]["low"]),
            "high": scale(interval["mean"]["high"])}},
        # the spread over folds (mean over seeds); undefined for a single fold, where metrics.json says 0
        "fold_std": {"pairwise_accuracy": {"mean": mean_of("fold_std.pairwise_accuracy.mean")
                                           if len(first.get("folds", [])) >= 2 else None}},
    }
    if settings.reference and "reference" in first:
        # one reference per seed: each fits the rows its seed's network fitted (its own validation compositions)
        references = [tables.reference(item.config, workdir, heldout) for _, workdir, _ in runs]
        reference_interval = seed_pooling.pooled_interval(references, heldout, **boot)
        result["reference"] = {"pairwise_accuracy": {"mean": reference_interval["mean"]["estimate"],
                                                     "per_dimension": reference_interval["per_dimension"]["estimate"]},
                               "interval": reference_interval,
                               "difference": seed_pooling.pooled_difference(predictions, references, heldout,
                                                                            **boot)}
    if item.baseline and baseline_runs:
        base = [load_heldout(workdir, heldout) for workdir in baseline_runs]
        result["versus_baseline"] = seed_pooling.pooled_difference(predictions, base, heldout, **boot)
        result["baseline_name"] = item.baseline
    return to_json(result)


def swept_fields(points: Sequence[SweepPoint]) -> list[str]:
    """Dotted fields any point sets itself (its own fields and grid values), in first-seen order; the
    ``@`` references (workdirs) left out."""
    fields: dict[str, None] = {}
    for item in points:
        for name in item.fields:
            if name not in item.references:
                fields.setdefault(name, None)
    return list(fields)


def left_out_points(sweep: ml_collections.ConfigDict, points: Sequence[SweepPoint]) -> list[str]:
    """The points of the whole sweep that ``config.only`` left out of this run (in declared order; [] without
    ``only``), so a table run in part says which points it lacks."""
    if not (sweep.get("only", ()) or ()):
        return []
    from crescend_jax.sweeps.expand import expand_sweep  # noqa: PLC0415

    whole = ml_collections.ConfigDict(sweep.to_dict())
    whole.only = ()
    kept = {item.name for item in points}
    return [item.name for item in expand_sweep(whole, validate=False) if item.name not in kept]


def write_results(sweep: ml_collections.ConfigDict, points: Sequence[SweepPoint], root: str | Path,
                  failures: Mapping[str, str] | None = None, command: str = "") -> dict[str, Any]:
    """Collects every point's finished seeds into results.json, the tables, plots and the per-dimension analysis;
    returns the results dict. A point whose pooling fails keeps its per-seed rows and says why."""
    import jax  # noqa: PLC0415

    from crescend_jax.data.dimensions import DIMENSIONS  # noqa: PLC0415
    from crescend_jax.evaluate import per_dimension, sweep_report  # noqa: PLC0415

    root = Path(root)
    failures = dict(failures or {})
    by_name = {item.name: item for item in points}
    seeds = tuple(int(s) for s in sweep.seeds)
    swept = swept_fields(points)
    tables = _Tables()
    results: dict[str, Any] = {"name": sweep.get("name") or root.name, "command": command, "seeds": list(seeds),
                               "swept": swept, "notes": list(sweep.get("notes", ()) or ()),
                               "left_out": left_out_points(sweep, points), "points": {}}
    for item in points:
        runs = []
        for seed in seeds:
            workdir = seed_workdir(root, item, seed)
            baseline = seed_workdir(root, by_name[item.baseline], seed) if item.baseline else None
            if finished(workdir, baseline, run_config(item, seed, root, by_name)):
                runs.append((seed, workdir, json.loads((workdir / "metrics.json").read_text())))
        baseline_runs = []
        if item.baseline:
            other = by_name[item.baseline]
            baseline_runs = [seed_workdir(root, other, s) for s in seeds
                             if finished(seed_workdir(root, other, s), None, run_config(other, s, root, by_name))]
        values = {f: (item.learning_rate.get(f[len(SWEEP_SECTION) + 1:]) if sweep_field(f)
                      else value_of(item.config, f)) for f in swept}
        entry: dict[str, Any] = {
            "approach": str(item.config.model.name), "encoder": encoder_label(item.config), "base": item.base,
            "values": values, "baseline": item.baseline, "same_as": item.same_as,
            "learning_rate": item.learning_rate["resolved"], "error": failures.get(item.name),
            "status": "done" if len(runs) == len(seeds) else (f"{len(runs)}/{len(seeds)} seeds"
                                                              if runs else "failed" if item.name in failures
                                                              else "not run"),
            "per_seed": [_seed_row(seed, workdir, metrics) for seed, workdir, metrics in runs], "pooled": None}
        if runs:
            try:
                entry["pooled"] = pooled_metrics(item, runs, baseline_runs, tables)
            except _run_errors() as err:
                entry["error"] = f"pooling seeds failed: {err}"
        results["points"][item.name] = entry
    if jax.process_index() != 0:
        return results
    from crescend_jax.evaluate.summary import to_json  # noqa: PLC0415

    (root / RESULTS_FILE).write_text(json.dumps(to_json(results), indent=1, default=str))
    sweep_report.plot_fields(results, root)
    preamble = _preamble(results, points, sweep)
    sweep_report.write_tables(results, root, preamble)
    for warning in sweep_report.interval_warnings(results):
        print(f"[sweep] warning: {warning}", file=sys.stderr)
    pooled = {name: p["pooled"] for name, p in results["points"].items()  # the 19 ratings' points (not derived)
              if p.get("pooled") and p["pooled"].get("dimensions") == list(DIMENSIONS)}
    if pooled:
        per_dimension.write_analysis(per_dimension.analyze_dimensions(pooled), root, title=results["name"])
    return results


def _preamble(results: Mapping[str, Any], points: Sequence[SweepPoint], sweep: ml_collections.ConfigDict) -> str:
    from crescend_jax.evaluate import sweep_report  # noqa: PLC0415

    encoders = sorted({encoder_label(p.config) for p in points})
    lines = [f"# Sweep {results['name']}", ""]
    if results.get("command"):
        lines += [f"Regenerate: `{results['command']}`", ""]
    lines += [f"{len(points)} points x seeds {list(results['seeds'])}; encoder(s): {', '.join(encoders)}; "
              f"baseline point: {sweep.get('baseline') or '(per point)'}. Accuracy: mean over seeds of the held-out "
              "pairwise accuracy (within same-music groups, compositions never seen in training); "
              f"{sweep_report.interval_sentence(results)} 'seed sd': standard deviation over seeds; 'fold sd': "
              "spread over folds (mean over seeds). Per-dimension analysis: [dimensions.md](dimensions.md).", ""]
    lines += [f"Note: {note}" for note in results.get("notes", [])]
    return "\n".join(lines) + ("\n\n" if results.get("notes") else "\n")
