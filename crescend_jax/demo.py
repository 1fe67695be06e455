"""The main job: demo corpus -> render (2 soundfonts) -> encode -> store -> train + evaluate every approach -> report."""

from __future__ import annotations

import json
import time
from pathlib import Path

import ml_collections

from crescend_jax.commands import evaluate_command, train_command
from crescend_jax.config import ConfigError
from crescend_jax.console import EXIT_OK
from crescend_jax.evaluate.bootstrap import called_real
from crescend_jax.evaluate.report import format_value, interval_text, seed_note  # NaN is null in metrics.json: "n/a"
from crescend_jax.sweeps.finished import finished

SHARED_SECTIONS = ("corpus", "data", "render", "encoder", "store")


def approach_config(config: ml_collections.ConfigDict, name: str) -> ml_collections.ConfigDict:
    """The full training config of approach ``name``: the demo's shared sections + the approach's own sections."""
    full = ml_collections.ConfigDict({section: config[section] for section in SHARED_SECTIONS})
    for section, value in config.approaches[name].items():
        full[section] = value
    full = ml_collections.ConfigDict(full.to_dict())  # a deep copy: runs never share mutable sections
    full.train.resume = True  # a rerun of the demo continues (finished folds are skipped) instead of refusing
    return full


def _stage(number: int, total: int, text: str) -> None:
    print(f"\n[demo {number}/{total}] {text}", flush=True)


def _summary_rows(workdir: Path, names: list[str]) -> list[str]:
    """One row per approach: accuracy with its 95% interval, against the known truth, the paired difference to the
    baseline, fraction of ceiling, tau-b, spread; then the ridge reference on the same inputs and folds."""
    rows = [
        "| approach | pairwise acc. (noisy labels) [95% interval] | vs known truth | − baseline [95% interval] | "
        "fraction of ceiling | tau-b | intra-group std | report |",
        "|---|---|---|---|---|---|---|---|",
    ]
    reference = None
    for name in names:
        metrics = json.loads((workdir / name / "metrics.json").read_text())
        pooled = metrics["pooled"]
        truth = pooled.get("truth_accuracy", {}).get("mean")
        fraction = metrics["fraction_of_ceiling"]["pairwise_accuracy"]["mean"]
        versus = metrics.get("versus_baseline")
        versus_text = "" if not versus else interval_text(versus["mean"], signed=True) + (
            " (real)" if called_real(versus) else " (degenerate)" if versus.get("warnings") else "")
        cells = [interval_text(metrics.get("interval", {}).get("mean")) if metrics.get("interval") else
                 format_value(pooled["pairwise_accuracy"]["mean"]), format_value(truth), versus_text,
                 format_value(fraction, 2), format_value(pooled["kendall_tau_b"]["mean"]),
                 format_value(pooled["intra_group_std"]["mean"])]
        rows.append(f"| {name} | {' | '.join(cells)} | [{name}/report.md]({name}/report.md) |")
        reference = reference or metrics.get("reference")
    if reference:
        rows.append(f"| ridge reference ({reference['input_dim']} inputs) | {interval_text(reference['interval']['mean'])}"
                    " | | | | | | |")
    return rows


def _probe_rows(workdir: Path, names: list[str]) -> list[str]:
    """Disentanglement at a glance: composition probe accuracy (held-out groups of training compositions) and the
    R² of the performer-factor probe, per embedding of each approach."""
    rows = ["| approach | embedding | composition probe (chance) | between-composition variance share | "
            "performer-factor R² |", "|---|---|---|---|---|"]
    for name in names:
        metrics = json.loads((workdir / name / "metrics.json").read_text())
        for embedding, values in (metrics.get("disentanglement") or {}).get("embeddings", {}).items():
            probe = values.get("composition_probe") or {}
            factors = values.get("factor_r2") or {}
            rows.append(f"| {name} | {embedding} | {format_value(probe.get('accuracy'))} "
                        f"({format_value(probe.get('chance'))}) | "
                        f"{format_value((values.get('variance_share') or {}).get('composition'))} | "
                        f"{format_value(factors.get('mean'))} |")
    return rows if len(rows) > 2 else []


def _ceiling_line(workdir: Path, name: str) -> str:
    metrics = json.loads((workdir / name / "metrics.json").read_text())
    ceiling = metrics["ceiling"]["mean"]
    labels_vs_truth = metrics["pooled"].get("label_truth_accuracy", {}).get("mean")
    line = f"Split-half noise ceiling (mean over dimensions): {format_value(ceiling)}."
    if labels_vs_truth is not None:
        line += f" The noisy mean labels themselves order pairs as the known truth does {format_value(labels_vs_truth)} of the time."
    return line


def run_demo(config: ml_collections.ConfigDict, workdir: str) -> int:
    """Runs the whole pipeline on the demo corpus into ``workdir``; returns a process exit code (a config mistake
    raises `ConfigError` before anything runs)."""
    from crescend_jax.data.extract import run_extract

    if config.baseline not in config.approaches:
        raise ConfigError(f"config.baseline={config.baseline!r} is not one of config.approaches "
                          f"{list(config.approaches)}")
    root = Path(workdir)
    root.mkdir(parents=True, exist_ok=True)
    names = [config.baseline] + sorted(name for name in config.approaches if name != config.baseline)
    total = 2 + 2 * len(names)
    started = time.perf_counter()

    _stage(1, total, f"demo corpus ({config.data.num_pieces} pieces x {config.data.segments_per_piece} segments x "
                     f"{config.data.num_performers} performers) -> render {list(config.render.soundfonts)} -> "
                     f"{config.encoder.name} encoder -> store")
    code = run_extract(config)
    if code != 0:
        print(f"demo stopped: extraction failed (exit {code}); see the messages above")
        return code

    stage = 2
    for name in names:
        run_config = approach_config(config, name)
        run_dir = root / name
        _stage(stage, total, f"train {name} by composition folds -> {run_dir}")
        if (code := train_command(run_config, str(run_dir))) != 0:
            return code
        stage += 1
        _stage(stage, total, f"evaluate {name} on held-out compositions")
        baseline = str(root / config.baseline) if name != config.baseline else None
        if finished(run_dir, baseline):
            print(f"{run_dir}/metrics.json is up to date (newer than its folds and its baseline): kept")
        elif (code := evaluate_command(str(run_dir), baseline=baseline)) != 0:
            return code
        stage += 1

    _stage(total, total, "summary report")
    minutes = (time.perf_counter() - started) / 60
    table = _summary_rows(root, names)
    lines = [
        "# crescend-jax demo: ranking simulated performers of the same music",
        "",
        "Built-in corpus: real scores from the music21 corpus, played by simulated performers whose factors (timing "
        "stability, tempo, dynamic range, loudness, articulation, pedalling, skill) are known; labels on the 19 "
        "PercePiano dimensions are functions of those factors plus a per-piece offset (the piece confound), rated by "
        "simulated raters with bias and noise. Every performance is rendered with "
        f"{len(config.render.soundfonts)} soundfonts ({', '.join(config.render.soundfonts)}) and encoded with the "
        f"`{config.encoder.name}` encoder. Models are evaluated on compositions they never saw.",
        "",
        *table,
        "",
        _ceiling_line(root, names[0]),
        "",
        seed_note(json.loads((root / names[0] / "metrics.json").read_text()).get("interval")),
        "",
        *_probe_rows(root, names),
        "",
        f"Whole run: {minutes:.1f} min. Configuration: `configs/demo.py` (each approach's section as in its own "
        "config file).",
    ]
    report = root / "report.md"
    report.write_text("\n".join(lines) + "\n")
    print("\n".join(table))
    print(f"\ndemo report: {report}")
    return EXIT_OK
