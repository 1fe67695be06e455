"""The experiment report of an evaluated run: report.md (hypothesis, configuration, results against the baseline,
observations computed from the numbers) and plots, from the metrics dict of `crescend_jax.evaluate.summary`."""

from __future__ import annotations

import datetime
import json
import math
from pathlib import Path
from typing import Any

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402

from crescend_jax.evaluate import bootstrap  # noqa: E402
from crescend_jax.evaluate.disentanglement import disentanglement_table  # noqa: E402
from crescend_jax.evaluate.summary import to_json  # noqa: E402

# ----------------------------------------------------------------------------------------------- report writing


def format_value(value: float | None, digits: int = 3, signed: bool = False) -> str:
    """A metric for a table: ``digits`` decimals (with a sign when ``signed``); "n/a" for None/NaN (null in JSON)."""
    if value is None or (isinstance(value, float) and not math.isfinite(value)):
        return "n/a"
    return f"{value:+.{digits}f}" if signed else f"{value:.{digits}f}"


def _per_dim(metrics: dict, name: str, section: str = "pooled") -> np.ndarray:
    values = metrics[section][name]["per_dimension"]
    return np.array([np.nan if v is None else v for v in values], np.float64)


def _ceiling(metrics: dict, name: str = "ceiling") -> np.ndarray:
    return np.array([np.nan if v is None else v for v in metrics[name]["per_dimension"]], np.float64)


def _mean(metrics: dict, name: str, section: str = "pooled") -> float:
    value = metrics[section][name]["mean"]
    return float("nan") if value is None else float(value)


def _flatten(config: dict, prefix: str = "") -> dict[str, Any]:
    flat = {}
    for key, value in config.items():
        if isinstance(value, dict):
            flat.update(_flatten(value, f"{prefix}{key}."))
        else:
            flat[f"{prefix}{key}"] = value
    return flat


# Fields shown in the report's Configuration list besides every top-level scalar and every model / loss field.
KEY_FIELDS = ("experiment.name", "encoder.name", "data.num_folds", "data.fold_seed", "train.batch_size",
              "train.learning_rate", "train.weight_decay", "train.num_steps", "train.seed", "eval.baseline_workdir")


def _key_fields(config: dict) -> list[tuple[str, Any]]:
    """Top-level scalars, ``model.*`` and ``loss.*`` scalars, and `KEY_FIELDS`, in the config's order."""
    fields = []
    for name, value in _flatten(config).items():
        parts = name.split(".")
        if isinstance(value, (list, dict)):
            continue
        if len(parts) == 1 or name in KEY_FIELDS or (len(parts) == 2 and parts[0] in ("model", "loss")):
            fields.append((name, value))
    return fields


def _plot_accuracy(path: Path, metrics: dict, baseline: dict | None) -> None:
    accuracy = _per_dim(metrics, "pairwise_accuracy")
    ceiling = _ceiling(metrics)
    x = np.arange(len(accuracy))
    width = 0.4 if baseline is not None else 0.7
    fig, ax = plt.subplots(figsize=(12, 5))
    if baseline is not None:
        ax.bar(x - width / 2, _per_dim(baseline, "pairwise_accuracy"), width, color="0.7", label="baseline")
        ax.bar(x + width / 2, accuracy, width, color="tab:blue", label="this run")
    else:
        ax.bar(x, accuracy, width, color="tab:blue", label="this run")
    ax.scatter(x, ceiling, marker="_", s=400, color="tab:red", label="noise ceiling", zorder=3)
    ax.axhline(0.5, color="k", lw=0.8, ls="--", label="chance")
    ax.set_xticks(x, [d.replace("_", " ") for d in metrics["dimensions"]], rotation=60, ha="right", fontsize=7)
    ax.set_ylabel("within-group pairwise accuracy")
    finite = np.concatenate([accuracy[np.isfinite(accuracy)], ceiling[np.isfinite(ceiling)], [0.5]])
    ax.set_ylim(max(0.0, finite.min() - 0.05), min(1.0, finite.max() + 0.05) + 0.05)
    ax.legend(loc="upper center", ncol=4, fontsize=8)
    ax.set_title("Held-out pairwise accuracy per dimension against the rater-noise ceiling")
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def _plot_within_group(path: Path, metrics: dict) -> None:
    sample = metrics["within_group"]
    names = sample["dimensions"]
    accuracy = dict(zip(metrics["dimensions"], _per_dim(metrics, "pairwise_accuracy")))
    fig, axes = plt.subplots(1, len(names), figsize=(3.2 * len(names), 3.2), squeeze=False)
    for ax, name, predicted, actual in zip(axes[0], names, sample["predicted"], sample["actual"]):
        predicted = np.array([np.nan if v is None else v for v in predicted])
        actual = np.array([np.nan if v is None else v for v in actual])
        ax.scatter(actual, predicted, s=6, alpha=0.5)
        ax.axhline(0, color="0.6", lw=0.6)
        ax.axvline(0, color="0.6", lw=0.6)
        ax.set_title(f"{name.replace('_', ' ')}\npairwise accuracy {format_value(accuracy[name])}", fontsize=8)
        ax.set_xlabel(f"{sample['target']} - group mean", fontsize=8)
    axes[0][0].set_ylabel("prediction - group mean", fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def _results_table(metrics: dict, baseline: dict | None) -> list[str]:
    columns = [
        ("Accuracy", _per_dim(metrics, "pairwise_accuracy"), _mean(metrics, "pairwise_accuracy")),
        (f"Acc. gap≥{metrics['min_gap']:g}", _per_dim(metrics, "pairwise_accuracy_gap"),
         _mean(metrics, "pairwise_accuracy_gap")),
        ("Acc. no Score", _per_dim(metrics, "pairwise_accuracy_no_score"),
         _mean(metrics, "pairwise_accuracy_no_score")),
        ("Ceiling", _ceiling(metrics), metrics["ceiling"]["mean"]),
        ("Frac. of ceiling", _per_dim(metrics, "pairwise_accuracy", "fraction_of_ceiling"),
         _mean(metrics, "pairwise_accuracy", "fraction_of_ceiling")),
        ("Ceiling no Score", _ceiling(metrics, "ceiling_no_score"), metrics["ceiling_no_score"]["mean"]),
        ("Frac. no Score", _per_dim(metrics, "pairwise_accuracy_no_score", "fraction_of_ceiling"),
         _mean(metrics, "pairwise_accuracy_no_score", "fraction_of_ceiling")),
        ("Tau-b", _per_dim(metrics, "kendall_tau_b"), _mean(metrics, "kendall_tau_b")),
        ("NDCG", _per_dim(metrics, "ndcg"), _mean(metrics, "ndcg")),
        ("R²", _per_dim(metrics, "r2"), _mean(metrics, "r2")),
        ("Std pred.", _per_dim(metrics, "intra_group_std"), _mean(metrics, "intra_group_std")),
        ("Std labels", _per_dim(metrics, "label_intra_group_std"), _mean(metrics, "label_intra_group_std")),
    ]
    if "truth_accuracy" in metrics["pooled"]:
        columns += [
            ("Acc. vs truth", _per_dim(metrics, "truth_accuracy"), _mean(metrics, "truth_accuracy")),
            ("Labels vs truth", _per_dim(metrics, "label_truth_accuracy"), _mean(metrics, "label_truth_accuracy")),
        ]
    if baseline is not None:
        base = _per_dim(baseline, "pairwise_accuracy")
        base_mean = _mean(baseline, "pairwise_accuracy")
        columns += [
            ("Baseline acc.", base, base_mean),
            ("Δ acc.", _per_dim(metrics, "pairwise_accuracy") - base, _mean(metrics, "pairwise_accuracy") - base_mean),
        ]
    fold_mean = _per_dim(metrics, "pairwise_accuracy", "fold_mean")
    fold_std = _per_dim(metrics, "pairwise_accuracy", "fold_std")
    header = ["Dimension"] + [name for name, _, _ in columns] + ["Acc. fold mean ± std"]
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    for k, dimension in enumerate(metrics["dimensions"]):
        cells = [format_value(values[k], signed=name.startswith("Δ")) for name, values, _ in columns]
        lines.append(f"| {dimension} | " + " | ".join(cells) + f" | {format_value(fold_mean[k])} ± {format_value(fold_std[k])} |")
    means = [format_value(mean, signed=name.startswith("Δ")) for name, _, mean in columns]
    lines.append(
        "| **Mean** | " + " | ".join(means)
        + f" | {format_value(_mean(metrics, 'pairwise_accuracy', 'fold_mean'))} ± "
        + f"{format_value(_mean(metrics, 'pairwise_accuracy', 'fold_std'))} |"
    )
    return lines


def _difference(a: float | None, b: float | None) -> float:
    return float("nan") if a is None or b is None else a - b


def _observations(metrics: dict, baseline: dict | None) -> list[str]:
    names = metrics["dimensions"]
    accuracy = _per_dim(metrics, "pairwise_accuracy")
    mean_accuracy = _mean(metrics, "pairwise_accuracy")
    pairs = metrics["pooled"]["num_pairs"]["per_dimension"]
    pair_range = f"{min(pairs)}" if min(pairs) == max(pairs) else f"{min(pairs)}–{max(pairs)}"
    notes = [
        f"Mean within-group pairwise accuracy is {format_value(mean_accuracy)} (chance 0.500) over "
        f"{pair_range} pairs per dimension in {metrics['num_groups']} groups of "
        f"{metrics['num_compositions']} held-out compositions; that is "
        f"{format_value(100 * _mean(metrics, 'pairwise_accuracy', 'fraction_of_ceiling'), 0)}% of the way from chance to "
        f"the mean noise ceiling {format_value(metrics['ceiling']['mean'])}."
    ]
    per_fold = np.array([fold["metrics"]["pairwise_accuracy"]["mean"] for fold in metrics["per_fold"]], np.float64)
    notes.append(
        f"Across {len(per_fold)} folds the mean accuracy is "
        f"{format_value(_mean(metrics, 'pairwise_accuracy', 'fold_mean'))} ± "
        f"{format_value(_mean(metrics, 'pairwise_accuracy', 'fold_std'))} (folds range {format_value(np.nanmin(per_fold))}–"
        f"{format_value(np.nanmax(per_fold))}; {int((per_fold < 0.5).sum())} below chance)."
    )
    order = [k for k in np.argsort(-np.nan_to_num(accuracy, nan=-np.inf), kind="stable") if np.isfinite(accuracy[k])]
    if order:
        best = ", ".join(f"{names[k]} {format_value(accuracy[k])}" for k in order[:3])
        worst = ", ".join(f"{names[k]} {format_value(accuracy[k])}" for k in order[::-1][:3])
        notes.append(f"Best dimensions: {best}. Worst: {worst}.")
    below = [names[k] for k in order if accuracy[k] < 0.5]
    notes.append(f"{len(below)} dimension(s) below chance" + (f": {', '.join(below)}." if below else "."))
    ceiling = _ceiling(metrics)
    above_ceiling = [names[k] for k in order if accuracy[k] > ceiling[k]]
    if above_ceiling:
        notes.append(
            f"Above the estimated ceiling (within sampling noise of the ceiling estimate): {', '.join(above_ceiling)}."
        )
    gap_pairs = metrics["pooled"]["num_pairs_gap"]["per_dimension"]
    notes.append(
        f"Keeping only pairs with a label gap ≥ {metrics['min_gap']:g} ({sum(gap_pairs)} of {sum(pairs)} pairs) moves "
        f"the mean accuracy by {format_value(_mean(metrics, 'pairwise_accuracy_gap') - mean_accuracy, signed=True)}."
    )
    if metrics["num_deadpan_rows"]:
        notes.append(
            f"Leaving out pairs with the {metrics['num_deadpan_rows']} Score renditions moves it by "
            f"{format_value(_mean(metrics, 'pairwise_accuracy_no_score') - mean_accuracy, signed=True)} and the mean "
            f"ceiling by "
            f"{format_value(_difference(metrics['ceiling_no_score']['mean'], metrics['ceiling']['mean']), signed=True)} "
            f"({format_value(100 * _mean(metrics, 'pairwise_accuracy_no_score', 'fraction_of_ceiling'), 0)}% of the way "
            "to that ceiling)."
        )
    else:
        notes.append("No Score renditions among the held-out rows, so the no-Score accuracy equals the accuracy.")
    spread, label_spread = _mean(metrics, "intra_group_std"), _mean(metrics, "label_intra_group_std")
    notes.append(
        f"Predictions spread within a group by {format_value(spread)} on average (labels: {format_value(label_spread)}, ratio "
        f"{format_value(spread / label_spread if label_spread else float('nan'), 2)}); pooled R² is "
        f"{format_value(_mean(metrics, 'r2'))}, meaningful only when the scores are on the label scale."
    )
    if "truth_accuracy" in metrics["pooled"]:
        notes.append(
            f"Simulated corpus: against the noiseless truth the accuracy is {format_value(_mean(metrics, 'truth_accuracy'))}; "
            f"the noisy labels themselves agree with the truth on {format_value(_mean(metrics, 'label_truth_accuracy'))} of "
            f"pairs, against an estimated ceiling of {format_value(metrics['ceiling']['mean'])}."
        )
    if baseline is not None:
        delta = accuracy - _per_dim(baseline, "pairwise_accuracy")
        finite = np.flatnonzero(np.isfinite(delta))
        ranked = finite[np.argsort(-delta[finite], kind="stable")]
        gains = ", ".join(f"{names[k]} {format_value(delta[k], signed=True)}" for k in ranked[:3] if delta[k] > 0) or "none"
        losses = ", ".join(f"{names[k]} {format_value(delta[k], signed=True)}" for k in ranked[::-1][:3] if delta[k] < 0)
        losses = losses or "none"
        notes.append(
            f"Against the baseline: higher on {int((delta[finite] > 0).sum())} of {len(finite)} dimensions, mean "
            f"{format_value(mean_accuracy - _mean(baseline, 'pairwise_accuracy'), signed=True)} (baseline fold std "
            f"{format_value(_mean(baseline, 'pairwise_accuracy', 'fold_std'))}). Largest gains: {gains}. "
            f"Largest losses: {losses}."
        )
        if metrics.get("versus_baseline"):
            notes.append(_verdict("the baseline", metrics["versus_baseline"]))
    if metrics.get("reference"):
        notes.append(_verdict(f"the linear reference ({metrics['reference']['name']})",
                              metrics["reference"]["difference"]))
    if metrics.get("interval"):
        notes.append(seed_note(metrics["interval"]))
    return notes


def interval_text(interval: dict | None, signed: bool = False) -> str:
    """"0.578 [0.561, 0.595]" from an {"estimate", "low", "high"} dict ("n/a" when missing)."""
    if not interval:
        return "n/a"
    return (f"{format_value(interval['estimate'], signed=signed)} [{format_value(interval['low'], signed=signed)}, "
            f"{format_value(interval['high'], signed=signed)}]")


def _seeds(interval: dict | None) -> int:
    """Runs per system behind an interval (``num_seeds``: an int, or (S_a, S_b) for a difference): the fewest."""
    seeds = (interval or {}).get("num_seeds", 1)
    return int(min(seeds)) if isinstance(seeds, (list, tuple)) else int(seeds or 1)


def verdict(difference: dict) -> str:
    """What a paired difference shows, in words: really higher, really lower, no real difference shown, or why it
    cannot say (a degenerate interval, with the reasons). Real only when the 95% interval excludes 0 and has no
    warning (`bootstrap.called_real`); a real difference of single runs says that seed variation is not in it."""
    mean = difference.get("mean") or {}
    low, high = mean.get("low"), mean.get("high")
    if difference.get("warnings"):
        return "degenerate interval, no verdict (" + "; ".join(difference["warnings"]) + ")"
    if low is not None and high is not None and math.isfinite(low) and math.isfinite(high) and not high > low:
        return "degenerate interval (zero width), no verdict"
    if not bootstrap.called_real(difference):
        return "the interval includes 0, so no real difference is shown"
    better = "higher" if (mean.get("estimate") or 0) > 0 else "lower"
    seeds = "" if _seeds(difference) > 1 else " (for these runs: seed variation is not in the interval)"
    return f"the interval excludes 0, so this run is really {better}{seeds}"


def _verdict(other: str, difference: dict) -> str:
    """One sentence on a paired difference: real only when its 95% interval excludes 0 and is not degenerate."""
    text = f"Paired difference against {other} (this run minus it): {interval_text(difference['mean'], signed=True)}"
    return f"{text}: {verdict(difference)}."


def collect_warnings(metrics: dict) -> list[str]:
    """Every degenerate-interval reason of a run's metrics, once each, with the intervals it concerns."""
    sources = [("accuracy", metrics.get("interval")),
               ("no-Score accuracy", (metrics.get("interval") or {}).get("no_score")),
               ("reference accuracy", (metrics.get("reference") or {}).get("interval")),
               ("this run − reference", (metrics.get("reference") or {}).get("difference")),
               ("this run − baseline", metrics.get("versus_baseline"))]
    found: dict[str, list[str]] = {}
    for name, interval in sources:
        for reason in (interval or {}).get("warnings") or []:
            found.setdefault(reason, []).append(name)
    return [f"{reason} [{', '.join(names)}]" for reason, names in found.items()]


def scope_text(interval: dict | None) -> str:
    """How the intervals were drawn and what they speak for, in one sentence."""
    interval = interval or {}
    scheme = interval.get("scheme")
    if scheme is None:  # metrics from before the two-stage bootstrap
        return "bootstrap over same-music groups resampled within each composition (fixed set of compositions)"
    units = f"{interval.get('num_units', 'n/a')} {interval.get('unit', 'composition')}s"
    return (f"{'two-stage' if scheme == 'two_stage' else 'within-composition'} bootstrap "
            f"(eval.bootstrap={scheme!r}, {units}, {interval.get('num_groups', 'n/a')} same-music groups, "
            f"{interval.get('num_replicates', 'n/a')} replicates): {interval.get('scope', '')}")


def seed_note(interval: dict | None) -> str:
    """Whether seed-to-seed variation is in the intervals (several seeds pooled) or not (one run)."""
    seeds = _seeds(interval)
    if seeds > 1:
        return f"{seeds} seeds pooled: the seeds are resampled too, so seed-to-seed variation is in the intervals."
    return ("One run (one training seed): seed-to-seed variation of training is not in these intervals nor in the "
            "paired differences, and it can be as large as the gaps between systems; to include it, train several "
            "seeds (`crescend-jax sweep ... --config.seeds=\"(0,1,2)\"` resamples the seeds as well).")


def console_summary(metrics: dict) -> tuple[list[str], list[str]]:
    """What ``evaluate`` prints: the interval and each comparison in one line (the verdict included), and the
    degenerate-interval warnings."""
    interval = metrics.get("interval") or {}
    lines = [f"held-out pairwise accuracy 95% interval {interval_text(interval.get('mean'))} "
             f"(no Score renditions: {interval_text((interval.get('no_score') or {}).get('mean'))}); "
             f"{scope_text(interval)}"]
    comparisons = [("reference", (metrics.get("reference") or {}).get("difference")),
                   ("baseline", metrics.get("versus_baseline"))]
    for name, difference in comparisons:
        if difference:
            lines.append(f"this run − {name}: {interval_text(difference['mean'], signed=True)}: "
                         f"{verdict(difference)}")
    if any(difference for _, difference in comparisons) and _seeds(interval) == 1:
        lines.append("one seed: seed-to-seed variation is not in these intervals")
    return lines, collect_warnings(metrics)


def _intervals_section(metrics: dict) -> list[str]:
    """The mean accuracy with its interval, the linear reference, the paired comparisons, and what they speak for."""
    interval = metrics.get("interval") or {}
    level = interval.get("level", 0.95)
    lines = ["## Intervals and references", "",
             f"{100 * level:.0f}% percentile intervals, {scope_text(interval)}. Comparisons are paired (same pairs, "
             "same replicates). A difference is called real only when its interval excludes 0 and is not degenerate.",
             "", seed_note(interval), ""]
    lines += [f"> **Warning:** {warning}" for warning in collect_warnings(metrics)]
    lines += [""] if collect_warnings(metrics) else []
    lines += ["| | mean pairwise accuracy [95% interval] | no Score renditions [95% interval] | "
              "paired difference [95% interval] |",
              "|---|---|---|---|",
              f"| this run | {interval_text(interval.get('mean'))} | "
              f"{interval_text((interval.get('no_score') or {}).get('mean'))} | |"]
    reference = metrics.get("reference")
    if reference:
        lines.append(f"| linear reference ({reference['name']}, {reference['input_dim']} inputs) | "
                     f"{interval_text(reference['interval']['mean'])} | "
                     f"{interval_text((reference['interval'].get('no_score') or {}).get('mean'))} | "
                     f"this run − reference: {interval_text(reference['difference']['mean'], signed=True)} |")
    if metrics.get("versus_baseline"):
        lines.append(f"| baseline | | | this run − baseline: "
                     f"{interval_text(metrics['versus_baseline']['mean'], signed=True)} |")
    return lines + [""]


def _disentanglement_section(metrics: dict) -> list[str]:
    if not metrics.get("disentanglement"):
        return []
    return ["## Disentanglement", "",
            f"Probes on the training rows of fold {metrics['disentanglement'].get('fold', 0)}: "
            "the composition probe trains on some same-music groups of the training compositions and names the "
            "composition of held-out groups (a probe cannot name an unseen composition).", "",
            *disentanglement_table(metrics["disentanglement"]), "",
            "![embeddings coloured by composition](embeddings.png)", ""]


def write_report(workdir: str | Path, metrics: dict, config_json: str, baseline_metrics: dict | None) -> Path:
    """Writes ``metrics.json``, ``report.md``, ``accuracy_vs_ceiling.png`` and ``within_group.png`` into ``workdir``.

    ``metrics`` comes from `evaluate_predictions`, ``config_json`` is the run's config as JSON, ``baseline_metrics``
    another run's metrics dict to compare with (or None). Returns the path of report.md.
    """
    workdir = Path(workdir)
    workdir.mkdir(parents=True, exist_ok=True)
    if baseline_metrics is not None and baseline_metrics.get("dimensions") != metrics["dimensions"]:
        raise ValueError("the baseline's metrics.json has other dimensions than this run: was it made by this library?")
    config = json.loads(config_json)
    experiment = config.get("experiment", {}) if isinstance(config.get("experiment"), dict) else {}
    title = experiment.get("name") or workdir.name
    hypothesis = experiment.get("hypothesis") or "(none given: set `config.experiment.hypothesis`)"

    (workdir / "metrics.json").write_text(json.dumps(to_json(metrics), indent=2, allow_nan=False) + "\n")
    _plot_accuracy(workdir / "accuracy_vs_ceiling.png", metrics, baseline_metrics)
    _plot_within_group(workdir / "within_group.png", metrics)

    lines = [
        f"# {title}",
        "",
        f"Evaluated {datetime.datetime.now(datetime.timezone.utc):%Y-%m-%d %H:%M} UTC on {metrics['num_rows']} "
        f"held-out rows ({metrics['num_groups']} same-music groups, {metrics['num_compositions']} compositions, "
        f"{len(metrics['folds'])} folds); workdir `{workdir}`.",
        "",
        *[f"> **Warning:** {warning}" for warning in collect_warnings(metrics)],
        *([""] if collect_warnings(metrics) else []),
        "## Hypothesis",
        "",
        hypothesis,
        "",
        "## Configuration",
        "",
        *[f"- `{name}`: `{value}`" for name, value in _key_fields(config)],
        "",
        "<details><summary>Full configuration</summary>",
        "",
        "```json",
        json.dumps(config, indent=2, sort_keys=True),
        "```",
        "",
        "</details>",
        "",
        "## Results",
        "",
        "Pairwise accuracy inside same-music groups on held-out compositions, all folds pooled (label ties excluded, "
        "predicted ties count 0.5). Ceiling: split-half rater-noise ceiling "
        f"({metrics['ceiling']['num_splits']} splits, {metrics['ceiling']['num_segments']} segments with ≥ 2 raters); "
        "fraction of ceiling = (accuracy − 0.5) / (ceiling − 0.5). Tau-b and NDCG are per-group means; R² is pooled; "
        "Std = mean within-group standard deviation.",
        "",
        *_results_table(metrics, baseline_metrics),
        "",
        "![accuracy against ceiling](accuracy_vs_ceiling.png)",
        "",
        f"![predicted against {metrics['target']} inside groups](within_group.png)",
        "",
        *_intervals_section(metrics),
        *_disentanglement_section(metrics),
        "## Observations",
        "",
        *[f"- {note}" for note in _observations(metrics, baseline_metrics)],
        "",
    ]
    report = workdir / "report.md"
    report.write_text("\n".join(lines))
    return report
