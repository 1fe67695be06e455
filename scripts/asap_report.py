"""The README's ASAP results from finished sweeps: ``python scripts/asap_report.py ranking|batch_size DIR``.

``ranking DIR`` (a finished `configs/sweeps/asap_ranking.py` sweep): markdown tables of (1) PercePiano held-out
pairwise accuracy of a-scratch, a-from_rank, a-from_infonce and joint, seeds pooled, with the 95% interval and the
paired difference against a-scratch (* = called real: its interval excludes 0 and is not degenerate); (2) the
PercePiano dimensions each derived target speaks to (`performance_labels.RELATED_DIMENSIONS`), per point, the paired
per-dimension difference against a-scratch; (3) on ASAP's held-out works, each derived target's within-group ranking
accuracy of asap-rank (its heads, seeds pooled, interval over works then groups), the ridge on the same inputs, and
the linear probe of the shared projection of asap-rank, asap-infonce and joint (mean over seeds).

``batch_size DIR`` (a finished `configs/sweeps/asap_batch_size.py` sweep): one plot per measure against the batch
(``DIR/asap_<measure>.png``; one line per objective and learning-rate rule, the reference-batch point standing for
every rule) and a markdown table of every ASAP point: steps, examples/s, peak RSS, retrieval top-1 of the shared
projection (and of the InfoNCE head), derived-target accuracy (heads, and probe of the shared projection), and the
PercePiano accuracy of its fine-tuned point with the paired difference against pp-scratch. Values are read from
``results.json``, each run's ``metrics.json`` and ``fold_0/done.json``; nothing is retyped.
"""

from __future__ import annotations

import json
import re
import sys
from pathlib import Path
from typing import Any

import numpy as np

from crescend_jax.data.dimensions import DIMENSIONS
from crescend_jax.data.performance_labels import DERIVED_LABELS, RELATED_DIMENSIONS
from crescend_jax.evaluate.nested import nested_get as _get


def _cell(estimate, low=None, high=None, real: bool = False, signed: bool = False, degenerate: bool = False) -> str:
    """"est [low, high]", * when the difference is real, (!) when the interval is degenerate (fewer than 5 held-out
    units, or zero width: `crescend_jax.evaluate.bootstrap`), which no * ever accompanies."""
    if estimate is None:
        return "n/a"
    text = f"{estimate:+.3f}" if signed else f"{estimate:.3f}"
    if low is not None and high is not None:
        text += f" [{low:+.3f}, {high:+.3f}]" if signed else f" [{low:.3f}, {high:.3f}]"
    return text + ("*" if real and not degenerate else "") + (" (!)" if degenerate else "")


def _degenerate(interval: dict | None) -> bool:
    return bool((interval or {}).get("degenerate") or (interval or {}).get("warnings"))


def _warnings(results: dict) -> list[str]:
    """The degenerate-interval reasons of the sweep's intervals, as the sweep table states them."""
    from crescend_jax.evaluate.sweep_report import interval_warnings

    warned = interval_warnings(results)
    return ["", "Degenerate intervals, marked (!) (no difference on them is called real):",
            *[f"- {w}" for w in warned]] if warned else []


def _real(difference: dict | None) -> bool:
    from crescend_jax.evaluate.bootstrap import called_real

    return called_real(difference)


def _runs(entry: dict) -> list[tuple[dict, dict]]:
    """(metrics.json, done.json of fold 0) of each finished seed of a point."""
    runs = []
    for row in entry.get("per_seed", []):
        workdir = Path(row["workdir"])
        metrics = json.loads((workdir / "metrics.json").read_text())
        done_path = workdir / "fold_0" / "done.json"
        runs.append((metrics, json.loads(done_path.read_text()) if done_path.is_file() else {}))
    return runs


def _seed_mean(values: list) -> float | None:
    values = [v for v in values if v is not None and np.isfinite(v)]
    return float(np.mean(values)) if values else None


def load(root: str | Path) -> dict:
    path = Path(root) / "results.json"
    if not path.is_file():
        raise SystemExit(f"{path} does not exist: run the sweep first")
    return json.loads(path.read_text())


# ------------------------------------------------------------------------------------------------ ranking


def ranking_report(root: str | Path) -> str:
    results = load(root)
    points = results["points"]
    lines = [f"Sweep `{results.get('name')}` ({len(results.get('seeds', []))} seeds; regenerate: "
             f"`python scripts/asap_report.py ranking {root}`).", "",
             "| PercePiano, approach A | held-out pairwise accuracy | vs a-scratch (paired) |", "|---|---|---|"]
    names = [n for n in ("a-scratch", "a-from_rank", "a-from_infonce", "joint") if n in points]
    for name in names:
        pooled = points[name].get("pooled") or {}
        interval, versus = _get(pooled, "interval.mean") or {}, pooled.get("versus_baseline")
        accuracy = _cell(interval.get("estimate"), interval.get("low"), interval.get("high"),
                         degenerate=_degenerate(pooled.get("interval")))
        lines.append(f"| {name} | {accuracy} | "
                     + (_cell(_get(versus, 'mean.estimate'), _get(versus, 'mean.low'), _get(versus, 'mean.high'),
                              _real(versus), signed=True, degenerate=_degenerate(versus))
                        if versus else "(baseline)") + " |")
    related = {}
    for label, (dimension, sign) in RELATED_DIMENSIONS.items():
        related.setdefault(dimension, []).append(f"{label} ({'+' if sign > 0 else '-'})")
    lines += ["", "Per related dimension, paired difference against a-scratch:", "",
              "| PercePiano dimension (derived target) | " + " | ".join(names[1:]) + " |",
              "|---" * len(names) + "|"]
    for dimension, labels in related.items():
        k = DIMENSIONS.index(dimension)
        cells = []
        for name in names[1:]:
            versus = (points[name].get("pooled") or {}).get("versus_baseline") or {}
            per = versus.get("per_dimension") or {}
            values = [per.get(f, [None] * 19)[k] if per.get(f) else None for f in ("estimate", "low", "high")]
            real = values[1] is not None and values[2] is not None and (values[1] > 0 or values[2] < 0)
            cells.append(_cell(*values, real=real, signed=True, degenerate=_degenerate(versus)))
        lines.append(f"| {dimension} ({', '.join(labels)}) | " + " | ".join(cells) + " |")
    lines += ["", "ASAP held-out works, within-group ranking accuracy per derived target:", "",
              "| target | asap-rank (heads) | ridge on the inputs | asap-rank probe | asap-infonce probe | "
              "joint (heads) |", "|---|---|---|---|---|---|"]
    rank = points.get("asap-rank", {})
    pooled = rank.get("pooled") or {}
    per = _get(pooled, "interval.per_dimension") or {}
    reference = _get(pooled, "reference.interval.per_dimension") or {}
    probe = lambda name: [_seed_mean(v) for v in zip(*[_get(m, "derived.probe.hidden.per_dimension") or
                                                      [None] * len(DERIVED_LABELS) for m, _ in _runs(points.get(
                                                          name, {}))])] if points.get(name) else []
    joint_heads = [_seed_mean(v) for v in zip(*[_get(m, "derived.accuracy.per_dimension") or [None] * len(
        DERIVED_LABELS) for m, _ in _runs(points.get("joint", {}))])] if points.get("joint") else []
    rank_probe, infonce_probe = probe("asap-rank"), probe("asap-infonce")
    dimensions = pooled.get("dimensions") or list(DERIVED_LABELS)
    for k, name in enumerate(dimensions):
        pick = lambda values: values[k] if k < len(values) else None
        lines.append(f"| {name} | " + " | ".join([
            _cell(pick(per.get("estimate", [])), pick(per.get("low", [])), pick(per.get("high", [])),
                  degenerate=_degenerate(_get(pooled, "interval"))),
            _cell(pick(reference.get("estimate", [])), pick(reference.get("low", [])),
                  pick(reference.get("high", [])), degenerate=_degenerate(_get(pooled, "reference.interval"))),
            _cell(pick(rank_probe)), _cell(pick(infonce_probe)), _cell(pick(joint_heads))]) + " |")
    return "\n".join(lines + _warnings(results))


# ------------------------------------------------------------------------------------------------ batch size

MEASURES = {  # name -> (label, how to read it from (metrics, done, finetuned entry))
    "retrieval": "same-window retrieval top-1, held-out works (shared projection)",
    "retrieval_infonce_head": "same-window retrieval top-1, held-out works (InfoNCE head z)",
    "derived_heads": "derived-target ranking accuracy, held-out works (rank heads)",
    "derived_probe": "derived-target ranking accuracy, held-out works (linear probe of the shared projection)",
    "percepiano": "PercePiano pairwise accuracy after fine-tuning",
    "examples_per_second": "examples per second (steady state)",
    "peak_memory_gb": "peak memory, GB (host RSS; accelerator peak on a GPU)",
}
_NAME = re.compile(r"^(infonce|rank)-b(\d+)-(none|linear|sqrt)$")


def batch_rows(root: str | Path) -> list[dict[str, Any]]:
    results = load(root)
    points = results["points"]
    rows = []
    for name, entry in points.items():
        match = _NAME.match(name)
        if not match or not entry.get("per_seed"):
            continue
        runs = _runs(entry)
        row = {"name": name, "objective": match.group(1), "batch": int(match.group(2)), "rule": match.group(3),
               "steps": _seed_mean([d.get("steps") for _, d in runs]),
               "learning_rate": entry.get("learning_rate"),
               "retrieval": _seed_mean([_get(m, "derived.retrieval.hidden.all.top1") for m, _ in runs]),
               "retrieval_infonce_head": _seed_mean([_get(m, "derived.retrieval.z_piece.all.top1") for m, _ in runs]),
               # an InfoNCE point's rank heads never train (derived_weight=0): their accuracy is not a measure
               "derived_heads": None if match.group(1) == "infonce" else _seed_mean(
                   [_get(m, "derived.accuracy.mean") for m, _ in runs]),
               "derived_probe": _seed_mean([_get(m, "derived.probe.hidden.mean") for m, _ in runs]),
               "examples_per_second": _seed_mean([d.get("examples_per_second") for _, d in runs]),
               "peak_memory_gb": _seed_mean([(d.get("device_peak_bytes") or d.get("peak_rss_bytes") or np.nan) / 1e9
                                             for _, d in runs])}
        finetuned = points.get(f"pp-{name}", {}).get("pooled") or {}
        row["percepiano"] = _get(finetuned, "interval.mean.estimate")
        row["percepiano_interval"] = (_get(finetuned, "interval.mean.low"), _get(finetuned, "interval.mean.high"))
        row["percepiano_degenerate"] = _degenerate(_get(finetuned, "interval"))
        row["versus_scratch"] = finetuned.get("versus_baseline")
        rows.append(row)
    rules = ("none", "linear", "sqrt")
    return sorted(rows, key=lambda r: (r["objective"], r["batch"], rules.index(r["rule"])))


def plot_batch(rows: list[dict[str, Any]], root: str | Path) -> list[Path]:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    written = []
    for measure, label in MEASURES.items():
        fig, ax = plt.subplots(figsize=(6, 4))
        drawn = False
        for objective in ("infonce", "rank"):
            own = [r for r in rows if r["objective"] == objective]
            ruled = {r["batch"] for r in own if r["rule"] != "none"}
            reference = [r for r in own if r["rule"] == "none" and r["batch"] not in ruled]  # all rules agree there
            for rule, style in (("none", "-o"), ("linear", "--s"), ("sqrt", ":^")):
                line = sorted({r["batch"]: r for r in rows if r["objective"] == objective and r["rule"] == rule}
                              .values(), key=lambda r: r["batch"])
                line = sorted({r["batch"]: r for r in reference + line}.values(), key=lambda r: r["batch"])
                xs = [r["batch"] for r in line if r.get(measure) is not None and np.isfinite(r[measure])]
                ys = [r[measure] for r in line if r.get(measure) is not None and np.isfinite(r[measure])]
                if xs:
                    ax.plot(xs, ys, style, label=f"{objective}, lr {rule}")
                    drawn = True
        if not drawn:
            plt.close(fig)
            continue
        ax.set_xscale("log", base=2)
        ax.set_xlabel("batch (rows), fixed budget of examples seen")
        ax.set_ylabel(label, fontsize=8)
        ax.legend(fontsize=7)
        ax.set_title(label, fontsize=9)
        fig.tight_layout()
        path = Path(root) / f"asap_{measure}.png"
        fig.savefig(path, dpi=110)
        plt.close(fig)
        written.append(path)
    return written


def batch_report(root: str | Path, figures: str | Path | None = None, link: str = "") -> str:
    """The batch-size table; the plots go to ``figures`` (default: the sweep folder), linked as ``link`` + name."""
    rows = batch_rows(root)
    written = plot_batch(rows, figures or root)
    lines = [f"Regenerate: `python scripts/asap_report.py batch_size {root}`; plots: "
             + ", ".join(f"[{p.stem}]({link}{p.name})" if link else f"`{p.name}`" for p in written), "",
             "| point | steps | lr | examples/s | peak GB | retrieval top-1 (h / z) | derived acc. heads / probe | "
             "PercePiano after fine-tuning | vs pp-scratch |", "|---|---|---|---|---|---|---|---|---|"]
    for r in rows:
        versus = r["versus_scratch"]
        low, high = r["percepiano_interval"]
        lines.append(
            f"| {r['name']} | {r['steps']:.0f} | {r['learning_rate']:.2g} | "
            f"{(r['examples_per_second'] or float('nan')):,.0f} | {r['peak_memory_gb']:.2f} | "
            f"{_cell(r['retrieval'])} / {_cell(r['retrieval_infonce_head'])} | "
            f"{_cell(r['derived_heads'])} / {_cell(r['derived_probe'])} | "
            f"{_cell(r['percepiano'], low, high, degenerate=r.get('percepiano_degenerate', False))} | "
            + (_cell(_get(versus, 'mean.estimate'), _get(versus, 'mean.low'), _get(versus, 'mean.high'),
                     _real(versus), signed=True, degenerate=_degenerate(versus)) if versus else "n/a") + " |")
    return "\n".join(lines + _warnings(load(root)))


def main(argv: list[str]) -> None:
    if len(argv) != 2 or argv[0] not in ("ranking", "batch_size"):
        raise SystemExit("usage: python scripts/asap_report.py ranking|batch_size SWEEP_DIR")
    print(ranking_report(argv[1]) if argv[0] == "ranking" else batch_report(argv[1]))


if __name__ == "__main__":
    main(sys.argv[1:])
