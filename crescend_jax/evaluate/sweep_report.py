"""A sweep's results as one table (``results.csv``, ``results.md``), one row per run (``runs.csv``) and plots of the
held-out accuracy against each swept numeric field (``plot_<field>.png``).

Input: the ``results`` dict `crescend_jax.sweeps` writes as ``results.json``::

    {"name", "command", "seeds", "swept": [dotted fields], "notes": [...],
     "points": {name: {"approach", "encoder", "base", "values": {swept field: resolved value}, "baseline",
                       "same_as", "status", "error", "learning_rate",
                       "per_seed": [{"seed", "workdir", "accuracy", "low", "high", "fraction", "tau", "fold_std",
                                     "reference", "vs_baseline", "vs_baseline_low", "vs_baseline_high",
                                     "vs_reference", "vs_reference_low", "vs_reference_high"}],
                       "pooled": a metrics-like dict pooled over the finished seeds (`crescend_jax.evaluate.
                                 seed_pooling`): "pooled", "interval" (with "no_score"), "seed_std",
                                 "fraction_of_ceiling", "ceiling", "kendall_tau_b", "fold_std", "reference",
                                 "versus_baseline", "baseline_name"}}}

Every interval is a 95% percentile bootstrap as the run's ``eval.bootstrap`` says (`crescend_jax.evaluate.bootstrap`;
by default two-stage: held-out compositions, then same-music groups inside them, and the seeds as a third stage);
a difference is marked ``*`` only when it is real (`bootstrap.called_real`: its interval excludes 0 and is not
degenerate); a degenerate interval is marked ``(!)`` and its reason listed under the table.
"""

from __future__ import annotations

import csv
import math
from pathlib import Path
from typing import Any, Mapping

import numpy as np

from crescend_jax.evaluate import bootstrap
from crescend_jax.evaluate.nested import nested_get as _get

TABLE_COLUMNS = ("point", "approach", "encoder", "status", "seeds", "accuracy", "accuracy_low", "accuracy_high",
                 "accuracy_no_score", "no_score_low", "no_score_high", "seed_std", "fraction_of_ceiling",
                 "fraction_low", "fraction_high", "kendall_tau_b", "fold_std",
                 "reference", "reference_low", "reference_high", "baseline", "vs_baseline", "vs_baseline_low",
                 "vs_baseline_high", "vs_baseline_real", "vs_reference", "vs_reference_low", "vs_reference_high",
                 "vs_reference_real", "bootstrap", "units", "learning_rate", "same_as", "warnings", "error")
RUN_COLUMNS = ("point", "seed", "workdir", "accuracy", "low", "high", "fraction", "tau", "fold_std", "reference",
               "vs_baseline", "vs_baseline_low", "vs_baseline_high", "vs_reference", "vs_reference_low",
               "vs_reference_high")


def _finite(value: Any) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value)


def _fmt(value: Any, digits: int = 3, signed: bool = False) -> str:
    if not _finite(value):
        return "n/a"
    return f"{value:+.{digits}f}" if signed else f"{value:.{digits}f}"


def _with_interval(estimate: Any, low: Any, high: Any, signed: bool = False, real: bool = False,
                   degenerate: bool = False) -> str:
    """"0.578 [0.561, 0.595]", with " *" when ``real`` (a difference called real) and " (!)" when ``degenerate``."""
    text = _fmt(estimate, signed=signed)
    if _finite(low) and _finite(high):
        text += f" [{_fmt(low, signed=signed)}, {_fmt(high, signed=signed)}]"
        text += " *" if real else " (!)" if degenerate else ""
    return text


def interval_cell(interval: Mapping[str, Any] | None, *, difference: bool = False) -> str:
    """A table cell from an interval dict ({"mean": {estimate, low, high}, "warnings", ...}, e.g. a pooled
    "interval" or "versus_baseline"): "0.578 [0.561, 0.595]"; a difference is signed and marked " *" when real;
    a degenerate interval is marked " (!)"; "n/a" when missing."""
    if not interval or not interval.get("mean"):
        return "n/a"
    mean = interval["mean"]
    return _with_interval(mean.get("estimate"), mean.get("low"), mean.get("high"), signed=difference,
                          real=difference and bootstrap.called_real(interval),
                          degenerate=bool(interval.get("warnings")))


def interval_warnings(results: Mapping[str, Any]) -> list[str]:
    """Every degenerate-interval reason of the sweep's pooled results, once per reason, with the points and the
    intervals it concerns ("accuracy", "Δ baseline", "Δ ridge")."""
    found: dict[str, list[str]] = {}
    total = 0
    for name, point in results["points"].items():
        pooled = point.get("pooled") or {}
        sources = (("accuracy", pooled.get("interval")), ("Δ baseline", pooled.get("versus_baseline")),
                   ("Δ ridge", _get(pooled, "reference.difference")))
        for label, interval in sources:
            total += bool(interval)
            for reason in (interval or {}).get("warnings") or []:
                found.setdefault(reason, []).append(f"{name} ({label})")
    return [f"{reason}: " + ("every interval of the table" if len(where) == total > 1 else ", ".join(where))
            for reason, where in found.items()]


def interval_sentence(results: Mapping[str, Any]) -> str:
    """How the table's intervals were drawn and what they speak for, from the first pooled interval."""
    interval = next((p["pooled"]["interval"] for p in results["points"].values()
                     if _get(p, "pooled.interval.mean") is not None), None)
    if interval is None:
        return "No pooled interval yet."
    scheme = interval.get("scheme")
    if scheme is None:
        return ("95% intervals from a bootstrap over same-music groups within compositions (fixed set of "
                "compositions; made before the two-stage bootstrap).")
    seeds = "and the seeds as a further stage (seed-to-seed variation is in the interval of a point with several seeds)"
    return (f"95% percentile intervals, eval.bootstrap={scheme!r}: {interval.get('scope')}, {seeds}; "
            f"{interval.get('num_units')} held-out {interval.get('unit')}s, {interval.get('num_groups')} same-music "
            f"groups, {interval.get('num_replicates')} replicates. Δ columns: paired differences on the same pairs "
            "and draws; * = real (the interval excludes 0 and is not degenerate), (!) = degenerate interval "
            "(reasons below the table). 'no Score': pairs without the deadpan Score renditions.")


def short_name(field: str, fields: list[str]) -> str:
    """The last component of a dotted field, or the whole field when another swept field shares it."""
    last = field.rsplit(".", 1)[-1]
    return last if sum(f.rsplit(".", 1)[-1] == last for f in fields) == 1 else field


def format_value(value: Any) -> str:
    """A field value for names and labels: tuples joined by '+', floats without trailing noise."""
    if isinstance(value, (tuple, list)):
        return "+".join(format_value(v) for v in value) if value else "()"
    if isinstance(value, float):
        return f"{value:g}"
    return str(value)


def table_rows(results: Mapping[str, Any]) -> list[dict[str, Any]]:
    """One dict per point (TABLE_COLUMNS plus the swept fields' resolved values), in the sweep's order."""
    rows = []
    swept = list(results.get("swept", []))
    for name, point in results["points"].items():
        pooled = point.get("pooled") or {}
        fraction = _get(pooled, "fraction_of_ceiling.pairwise_accuracy") or {}
        versus, reference = pooled.get("versus_baseline") or {}, pooled.get("reference") or {}
        row = {
            "point": name, "approach": point.get("approach"), "encoder": point.get("encoder"),
            "status": point.get("status"), "seeds": len(pooled.get("seeds", [])),
            "accuracy": _get(pooled, "interval.mean.estimate"), "accuracy_low": _get(pooled, "interval.mean.low"),
            "accuracy_high": _get(pooled, "interval.mean.high"),
            "accuracy_no_score": _get(pooled, "interval.no_score.mean.estimate"),
            "no_score_low": _get(pooled, "interval.no_score.mean.low"),
            "no_score_high": _get(pooled, "interval.no_score.mean.high"),
            "seed_std": _get(pooled, "seed_std.pairwise_accuracy"),
            "fraction_of_ceiling": fraction.get("mean"), "fraction_low": fraction.get("low"),
            "fraction_high": fraction.get("high"), "kendall_tau_b": _get(pooled, "kendall_tau_b.mean"),
            "fold_std": _get(pooled, "fold_std.pairwise_accuracy.mean"),
            "reference": _get(reference, "interval.mean.estimate"),
            "reference_low": _get(reference, "interval.mean.low"),
            "reference_high": _get(reference, "interval.mean.high"),
            "baseline": point.get("baseline") or "",
            "vs_baseline": _get(versus, "mean.estimate"), "vs_baseline_low": _get(versus, "mean.low"),
            "vs_baseline_high": _get(versus, "mean.high"),
            "vs_baseline_real": bootstrap.called_real(versus) if versus else None,
            "vs_reference": _get(reference, "difference.mean.estimate"),
            "vs_reference_low": _get(reference, "difference.mean.low"),
            "vs_reference_high": _get(reference, "difference.mean.high"),
            "vs_reference_real": bootstrap.called_real(reference.get("difference")) if reference else None,
            "bootstrap": _get(pooled, "interval.scheme"), "units": _get(pooled, "interval.num_units"),
            "learning_rate": point.get("learning_rate"), "same_as": point.get("same_as") or "",
            "warnings": "; ".join(sorted({w for source in (pooled.get("interval"), versus, reference.get("difference"))
                                          for w in (source or {}).get("warnings") or []})),
            "error": point.get("error") or "",
        }
        for field in swept:
            row[field] = format_value(point.get("values", {}).get(field))
        rows.append(row)
    return rows


def _write_csv(path: Path, columns: list[str], rows: list[dict[str, Any]]) -> None:
    with path.open("w", newline="") as handle:
        writer = csv.DictWriter(handle, fieldnames=columns, extrasaction="ignore")
        writer.writeheader()
        for row in rows:
            writer.writerow({k: ("" if row.get(k) is None else row.get(k)) for k in columns})


def markdown_table(results: Mapping[str, Any]) -> str:
    """The results table in markdown (finished points; then what is missing and why)."""
    rows = table_rows(results)
    swept = list(results.get("swept", []))
    header = ["point", "approach", "encoder", "seeds", "held-out pairwise acc. [95% CI]", "no Score [95% CI]",
              "seed sd",
              "fraction of ceiling [CI]", "tau-b", "fold sd", "ridge reference [CI]", "baseline",
              "Δ baseline [CI]", "Δ ridge [CI]"]
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    point_of = results["points"]
    missing = []
    for row in rows:
        if not row["seeds"]:
            missing.append(row)
            continue
        cells = [row["point"] + (f" (= {row['same_as']})" if row["same_as"] else ""), str(row["approach"]),
                 str(row["encoder"]), str(row["seeds"]),
                 _with_interval(row["accuracy"], row["accuracy_low"], row["accuracy_high"],
                                degenerate=bool(_get(point_of[row["point"]], "pooled.interval.warnings"))),
                 _with_interval(row["accuracy_no_score"], row["no_score_low"], row["no_score_high"],
                                degenerate=bool(_get(point_of[row["point"]], "pooled.interval.no_score.warnings"))),
                 _fmt(row["seed_std"]),
                 _with_interval(row["fraction_of_ceiling"], row["fraction_low"], row["fraction_high"]),
                 _fmt(row["kendall_tau_b"]), _fmt(row["fold_std"]),
                 _with_interval(row["reference"], row["reference_low"], row["reference_high"]),
                 row["baseline"] or "n/a",
                 _with_interval(row["vs_baseline"], row["vs_baseline_low"], row["vs_baseline_high"], signed=True,
                                real=bool(row["vs_baseline_real"]),
                                degenerate=bool(_get(point_of[row["point"]], "pooled.versus_baseline.warnings"))),
                 _with_interval(row["vs_reference"], row["vs_reference_low"], row["vs_reference_high"], signed=True,
                                real=bool(row["vs_reference_real"]),
                                degenerate=bool(_get(point_of[row["point"]], "pooled.reference.difference.warnings")))]
        lines.append("| " + " | ".join(cells) + " |")
    if swept:
        lines += ["", "Swept fields per point:", ""]
        lines += ["| point | " + " | ".join(swept) + " |",
                  "|" + "---|" * (len(swept) + 1)]
        lines += ["| " + row["point"] + " | " + " | ".join(str(row[f]) for f in swept) + " |" for row in rows]
    warned = interval_warnings(results)
    if warned:
        lines += ["", "Degenerate intervals (no difference on them is called real):"]
        lines += [f"- {warning}" for warning in warned]
    if missing:
        lines += ["", "Not finished:"]
        lines += [f"- {row['point']}: {row['status']}" + (f" ({row['error']})" if row["error"] else "")
                  for row in missing]
    return "\n".join(lines) + "\n"


def write_tables(results: Mapping[str, Any], out_dir: str | Path, preamble: str = "") -> dict[str, Path]:
    """results.csv, runs.csv and results.md (``preamble`` above the table, then plots); returns their paths."""
    out = Path(out_dir)
    rows = table_rows(results)
    swept = list(results.get("swept", []))
    paths = {"csv": out / "results.csv", "runs": out / "runs.csv", "markdown": out / "results.md"}
    _write_csv(paths["csv"], list(TABLE_COLUMNS[:3]) + swept + list(TABLE_COLUMNS[3:]), rows)
    runs = [{"point": name, **seed} for name, point in results["points"].items() for seed in point.get("per_seed", [])]
    _write_csv(paths["runs"], list(RUN_COLUMNS), runs)
    plots = sorted(out.glob("plot_*.png"))
    text = preamble + markdown_table(results)
    if plots:
        text += "\n" + "\n".join(f"![{p.stem}]({p.name})" for p in plots) + "\n"
    paths["markdown"].write_text(text)
    return paths


# ----------------------------------------------------------------------------------------------------- plots


def _numeric(value: Any) -> bool:
    return _finite(value)


def plot_fields(results: Mapping[str, Any], out_dir: str | Path) -> list[Path]:
    """One ``plot_<field>.png`` per swept numeric field: seed-pooled held-out accuracy against the field's value,
    error bars = the 95% bootstrap interval. Points that agree on every other swept field (and base config) form
    one line; lines with fewer than two values of the field are left out. The baseline point's interval is shaded.
    Returns the files written (stale plots of fields no longer plottable are removed)."""
    import matplotlib  # noqa: PLC0415 (only the pictures need it)

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt  # noqa: PLC0415

    out = Path(out_dir)
    for stale in out.glob("plot_*.png"):
        stale.unlink()
    swept = list(results.get("swept", []))
    finished = {name: p for name, p in results["points"].items()
                if _get(p, "pooled.interval.mean.estimate") is not None}
    baselines = {p.get("baseline") for p in results["points"].values() if p.get("baseline")}
    written = []
    for field in swept:
        values = {name: p.get("values", {}).get(field) for name, p in finished.items()}
        if not any(_numeric(v) for v in values.values()):
            continue
        others = [f for f in swept if f != field]
        lines: dict[tuple, list[tuple[float, str]]] = {}
        for name, value in values.items():
            if not _numeric(value):
                continue
            point = finished[name]
            key = (point.get("base"), *(format_value(point.get("values", {}).get(f)) for f in others))
            lines.setdefault(key, []).append((float(value), name))
        lines = {k: sorted(v) for k, v in lines.items() if len({x for x, _ in v}) >= 2}
        if not lines:
            continue
        varying = [i for i in range(len(others) + 1) if len({k[i] for k in lines}) > 1]
        fig, ax = plt.subplots(figsize=(6.4, 4.2))
        for key, members in lines.items():
            xs = np.array([x for x, _ in members])
            acc = np.array([_get(finished[n], "pooled.interval.mean.estimate") for _, n in members], float)
            low = np.array([_get(finished[n], "pooled.interval.mean.low") or np.nan for _, n in members], float)
            high = np.array([_get(finished[n], "pooled.interval.mean.high") or np.nan for _, n in members], float)
            label_parts = [Path(str(key[0])).stem if i == 0 else
                           f"{short_name(others[i - 1], swept)}={key[i]}" for i in varying]
            ax.errorbar(xs, acc, yerr=np.vstack([acc - low, high - acc]), marker="o", capsize=3,
                        label=", ".join(label_parts) or Path(str(key[0])).stem)
        for name in sorted(baselines & set(finished)):
            low, high = _get(finished[name], "pooled.interval.mean.low"), _get(finished[name],
                                                                              "pooled.interval.mean.high")
            if _finite(low) and _finite(high):
                ax.axhspan(low, high, color="grey", alpha=0.2, label=f"baseline {name} (95% CI)")
        positive = all(x > 0 for members in lines.values() for x, _ in members)
        span = [x for members in lines.values() for x, _ in members]
        if positive and max(span) / min(span) >= 8:
            ax.set_xscale("log", base=2 if all(float(x).is_integer() for x in span) else 10)
        ax.axhline(0.5, color="black", linewidth=0.6, linestyle=":")
        ax.set_xlabel(field)
        ax.set_ylabel("held-out pairwise accuracy (mean over seeds)")
        ax.set_title(f"{results.get('name', 'sweep')}: accuracy vs {short_name(field, swept)} (95% CI)", fontsize=9)
        ax.legend(fontsize=7)
        fig.tight_layout()
        path = out / f"plot_{field.replace('.', '_')}.png"
        fig.savefig(path, dpi=110)
        plt.close(fig)
        written.append(path)
    return written
