"""Rewrites the README's generated blocks from result files, so no number in them is ever typed by hand.

    python scripts/generate_readme.py                 # rewrite every block whose result files exist
    python scripts/generate_readme.py --check         # rewrite nothing; exit 1 if a block is stale or unreadable
    python scripts/generate_readme.py --only ablations --runs runs --readme README.md

A block in README.md is delimited by two marker lines::

    <!-- generated:NAME -->
    ...  (written by BLOCKS[NAME], never edited by hand)
    <!-- /generated -->

and ``BLOCKS[NAME](runs)`` renders its markdown from the result files under ``--runs`` (default ``runs/``):
``percepiano_table`` and ``ablations`` from the sweeps' ``results.json`` (seed-pooled, `crescend_jax.sweeps`),
``demo`` from ``demo/<approach>/metrics.json`` (`crescend-jax demo`). To add a block: write a function
``runs -> markdown`` and add it to `BLOCKS`. Every interval is the one the result files hold (by default the
two-stage bootstrap over held-out compositions and same-music groups, seeds resampled in pooled results); a
difference is marked * only when real (`bootstrap.called_real`), a degenerate interval (!) with its reason listed.
"""

from __future__ import annotations

import argparse
import difflib
import json
import re
import sys
from pathlib import Path
from typing import Any, Callable, Mapping

from crescend_jax.evaluate.bootstrap import called_real
from crescend_jax.evaluate.nested import nested_get as _get
from crescend_jax.evaluate.sweep_report import interval_cell, interval_sentence, interval_warnings

APPROACHES = {"baseline": "baseline", "approach_a": "A: contrastive", "approach_b": "B: Siamese",
              "approach_c": "C: dual encoder"}
ENCODERS = {"features": "audio features (librosa)", "midi": "MIDI features",
            "features+midi": "audio + MIDI (fusion)", "aligned": "score-aligned beats (pooled)",
            "aligned, group-relative": "score-aligned beats, group-relative (pooled)",
            "aligned, sequence trunk": "score-aligned beats (sequence trunk)",
            "aligned, group-relative, sequence trunk": "score-aligned beats, group-relative (sequence trunk)"}
BLOCK = re.compile(r"(<!-- generated:(?P<name>[\w-]+) -->\n)(?P<body>.*?)(<!-- /generated -->)", re.S)


class MissingResults(Exception):
    """A block's result files are not there (yet)."""


def _json(path: Path) -> dict[str, Any]:
    if not path.is_file():
        raise MissingResults(f"{path} does not exist")
    return json.loads(path.read_text())


def _verdict(difference: Mapping[str, Any] | None) -> str | None:
    """"higher", "lower", "none" (interval includes 0), "degenerate", or None (no comparison)."""
    if not difference or not difference.get("mean"):
        return None
    if difference.get("warnings"):
        return "degenerate"
    if not called_real(difference):
        return "none"
    return "higher" if difference["mean"]["estimate"] > 0 else "lower"


def _verdict_lines(subject: str, against: str, verdicts: dict[str, str | None]) -> list[str]:
    """One sentence per kind of verdict, e.g. "really higher than the ridge reference: A, B"."""
    words = {"higher": f"really higher than {against}", "lower": f"really lower than {against}",
             "none": f"no real difference from {against} shown", "degenerate":
             f"no verdict against {against} (degenerate interval)"}
    parts = [f"{text}: {', '.join(n for n, v in verdicts.items() if v == kind)}" for kind, text in words.items()
             if any(v == kind for v in verdicts.values())]
    return [f"- {subject}: " + "; ".join(parts) + "."] if parts else []


def _footer(results: Mapping[str, Any]) -> list[str]:
    lines = ["", interval_sentence(results)]
    warned = interval_warnings(results)
    if warned:
        lines += ["", "Degenerate intervals (no difference on them is called real):", *[f"- {w}" for w in warned]]
    missing = [f"{name} ({p.get('status')})" for name, p in results["points"].items() if not p.get("pooled")]
    if missing:
        lines += ["", "Not finished: " + ", ".join(missing) + "."]
    if results.get("left_out"):
        lines += ["", _left_out(results).strip()]
    if results.get("command"):
        lines += ["", f"Regenerate: `{results['command']}`, then `python scripts/generate_readme.py`."]
    return lines


def _left_out(results: Mapping[str, Any]) -> str:
    """The sentence naming the sweep points that ``config.only`` left out of the run ('' when none was)."""
    if not results.get("left_out"):
        return ""
    return ("\nNot run here (left out of this run with `--config.only` to fit this 2-core machine): "
            + ", ".join(results["left_out"]) + ".\n")


def _best_ridge_lines(root: Path) -> list[str]:
    """Each system against the best ridge of the whole table, paired (``versus_best_ridge.json``, written by
    ``python scripts/versus_best_ridge.py``); [] when that file is absent."""
    path = root / "versus_best_ridge.json"
    if not path.is_file():
        return []
    found = _json(path)
    best = found["best"]
    differences = {name: d for name, d in found["points"].items() if "error" not in d}
    cells = [f"{name} {interval_cell(d, difference=True)}" for name, d in differences.items()]
    verdicts = {name: _verdict(d) for name, d in differences.items()}
    lines = [f"- Against the best ridge of the whole table (the ridge on {ENCODERS.get(best['encoder'], best['encoder'])}, "
             f"{interval_cell(best['interval'])}), paired on the same pairs (`python scripts/versus_best_ridge.py`): "
             + "; ".join(cells) + "."]
    lines += _verdict_lines("Beating the best ridge", "the best ridge", verdicts)
    fixed = {name: d for name, d in (found.get("fixed_set") or {}).items() if "error" not in d}
    if fixed:
        lines += _verdict_lines("On these held-out compositions only (eval.bootstrap='within_composition': the set "
                                "of compositions fixed, groups resampled inside each; it says nothing about new "
                                "music)", "the best ridge", {name: _verdict(d) for name, d in fixed.items()})
    skipped = [name for name, d in found["points"].items() if "error" in d]
    if skipped:
        lines.append(f"- Not comparable with it (other held-out rows): {', '.join(skipped)}.")
    return lines


def percepiano_table(runs: Path) -> str:
    """Encoders x approaches of the ``percepiano_table`` sweep, the ridge reference on the same inputs first."""
    results = _json(runs / "percepiano_table" / "results.json")
    lines = ["| inputs | system | seeds | all pairs [95% CI] | no Score [95% CI] | − ridge [95% CI] | "
             "− baseline [95% CI] |", "|---|---|---|---|---|---|---|"]
    verdicts: list[str] = []
    encoders = dict.fromkeys(p.get("encoder") for p in results["points"].values() if p.get("pooled"))
    for encoder in encoders:
        points = {name: p for name, p in results["points"].items() if p.get("encoder") == encoder and p.get("pooled")}
        inputs = ENCODERS.get(encoder, encoder)
        reference = next((_get(p, "pooled.reference.interval") for p in points.values()
                          if _get(p, "pooled.reference.interval")), None)
        lines.append(f"| {inputs} | ridge reference | | {interval_cell(reference)} | "
                     f"{interval_cell((reference or {}).get('no_score'))} | | |")
        ridge, base = {}, {}
        for name, point in points.items():
            pooled, system = point["pooled"], APPROACHES.get(name.split("-", 1)[0], name)
            versus = interval_cell(pooled.get("versus_baseline"), difference=True) if point.get("baseline") else ""
            lines.append(f"| {inputs} | {system} | {len(pooled.get('seeds', []))} | "
                         f"{interval_cell(pooled.get('interval'))} | "
                         f"{interval_cell(_get(pooled, 'interval.no_score'))} | "
                         f"{interval_cell(_get(pooled, 'reference.difference'), difference=True)} | {versus} |")
            ridge[system] = _verdict(_get(pooled, "reference.difference"))
            if pooled.get("versus_baseline"):
                base[system] = _verdict(pooled["versus_baseline"])
        verdicts += _verdict_lines(inputs, "the ridge reference on the same inputs", ridge)
        verdicts += _verdict_lines(inputs, "the baseline", base)
    verdicts += _best_ridge_lines(runs / "percepiano_table")
    ceiling = next((_get(p, "pooled.ceiling.mean") for p in results["points"].values()
                    if _get(p, "pooled.ceiling.mean") is not None), None)
    if ceiling is not None:
        verdicts += [f"- Split-half rater-noise ceiling (mean over dimensions): {ceiling:.3f}; chance 0.500."]
    return "\n".join(lines + ([""] + verdicts if verdicts else []) + _footer(results)) + "\n"


def _point_table(results: Mapping[str, Any]) -> str:
    """Every pooled point of a sweep against what it is compared with (its baseline point) and against the ridge
    reference on the same inputs, with the verdicts and the footer."""
    lines = ["| point | approach | seeds | all pairs [95% CI] | no Score [95% CI] | compared with | "
             "paired Δ [95% CI] | − ridge [95% CI] |", "|---|---|---|---|---|---|---|---|"]
    verdicts: dict[str, str | None] = {}
    for name, point in results["points"].items():
        pooled = point.get("pooled")
        if not pooled:
            continue
        label = name + (f" (= {point['same_as']})" if point.get("same_as") else "")
        lines.append(f"| {label} | {point.get('approach')} | {len(pooled.get('seeds', []))} | "
                     f"{interval_cell(pooled.get('interval'))} | {interval_cell(_get(pooled, 'interval.no_score'))} "
                     f"| {point.get('baseline') or ''} | "
                     f"{interval_cell(pooled.get('versus_baseline'), difference=True) if point.get('baseline') else ''}"
                     f" | {interval_cell(_get(pooled, 'reference.difference'), difference=True)} |")
        if point.get("baseline") and pooled.get("versus_baseline"):
            verdicts[f"{name} (vs {point['baseline']})"] = _verdict(pooled["versus_baseline"])
    notes = _verdict_lines("Paired Δ", "what the point is compared with", verdicts)
    return "\n".join(lines + ([""] + notes if notes else []) + _footer(results)) + "\n"


def ablations(runs: Path) -> str:
    """Every point of the ``ablations`` sweep against what it is compared with (the baseline or its approach)."""
    return _point_table(_json(runs / "ablations" / "results.json"))


def combined(runs: Path) -> str:
    """The ``combined`` sweep (A, B, A->B, C, B on C's style encoder), each point against its baseline point."""
    return _point_table(_json(runs / "combined" / "results.json"))


def percepiano_dimensions(runs: Path) -> str:
    """Per dimension, the PercePiano table's ridge and approach A on each input that has both (seed-pooled
    accuracies), and each input's A minus A on the audio features: which dimensions the other inputs move. Point
    estimates: the per-dimension intervals are in ``runs/percepiano_table/dimensions.md``."""
    results = _json(runs / "percepiano_table" / "results.json")
    points = {name: p for name, p in results["points"].items() if p.get("pooled")}
    inputs: dict[str, dict[str, Any]] = {}
    for name, point in points.items():
        if name.startswith("approach_a-") and _get(point, "pooled.reference.pairwise_accuracy.per_dimension"):
            inputs[point.get("encoder")] = point["pooled"]
    if not inputs:
        raise MissingResults("no approach_a point with its ridge reference in percepiano_table/results.json")
    first = next(iter(inputs.values()))
    dimensions, ceiling = first.get("dimensions") or [], _get(first, "ceiling.per_dimension") or []
    features = inputs.get("features")
    header = ["dimension", "ceiling"]
    for encoder in inputs:
        short = ENCODERS.get(encoder, encoder)
        header += [f"ridge, {short}", f"A, {short}"]
    header += [f"A: {ENCODERS.get(e, e)} − audio features" for e in inputs if features and e != "features"]
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    number = lambda v: "" if v is None else f"{v:.3f}"
    gains: dict[str, list[tuple[float, str]]] = {e: [] for e in inputs if features and e != "features"}
    for k, dimension in enumerate(dimensions):
        row = [dimension.replace("_", " "), number(ceiling[k] if k < len(ceiling) else None)]
        for pooled in inputs.values():
            row += [number(_get(pooled, "reference.pairwise_accuracy.per_dimension")[k]),
                    number(_get(pooled, "pooled.pairwise_accuracy.per_dimension")[k])]
        for encoder in gains:
            a, base = (_get(inputs[encoder], "pooled.pairwise_accuracy.per_dimension")[k],
                       _get(features, "pooled.pairwise_accuracy.per_dimension")[k])
            delta = None if a is None or base is None else a - base
            row.append("" if delta is None else f"{delta:+.3f}")
            if delta is not None:
                gains[encoder].append((delta, dimension.replace("_", " ")))
        lines.append("| " + " | ".join(row) + " |")
    notes = [""]
    for encoder, deltas in gains.items():
        ordered = sorted(deltas, reverse=True)
        up = [f"{d} ({v:+.3f})" for v, d in ordered[:4] if v > 0]
        down = [f"{d} ({v:+.3f})" for v, d in ordered[::-1][:4] if v < 0]
        notes.append(f"- A on {ENCODERS.get(encoder, encoder)} against A on the audio features: largest gains "
                     f"{', '.join(up) or 'none'}; largest losses {', '.join(down) or 'none'}.")
    units = _get(first, "interval.num_units")
    notes += ["", f"Seed-pooled point estimates on {units} held-out compositions"
              + (": per-dimension intervals on so few compositions cannot speak for new music, so these "
                 "differences say where to look, not what is real" if units is not None and units < 5 else "")
              + "; each dimension's intervals: `runs/percepiano_table/dimensions.md`."]
    return "\n".join(lines + notes) + "\n"


def demo(runs: Path) -> str:
    """The demo's approaches (one seed each) with the ridge reference, from ``demo/<approach>/metrics.json``."""
    root = runs / "demo"
    found = {path.parent.name: _json(path) for path in sorted(root.glob("*/metrics.json"))}
    if not found:
        raise MissingResults(f"{root}/*/metrics.json: no evaluated approach (run `make demo`)")
    names = sorted(found, key=lambda n: (bool(found[n].get("versus_baseline")), n))  # the baseline first
    lines = ["| approach | all pairs [95% CI] | no Score [95% CI] | vs known truth | − baseline [95% CI] | "
             "− ridge [95% CI] |", "|---|---|---|---|---|---|"]
    reference, warned = None, {}
    for name in names:
        metrics = found[name]
        truth = _get(metrics, "pooled.truth_accuracy.mean")
        lines.append(f"| {name} | {interval_cell(metrics.get('interval'))} | "
                     f"{interval_cell(_get(metrics, 'interval.no_score'))} | "
                     f"{'n/a' if truth is None else f'{truth:.3f}'} | "
                     f"{interval_cell(metrics.get('versus_baseline'), difference=True)} | "
                     f"{interval_cell(_get(metrics, 'reference.difference'), difference=True)} |")
        reference = reference or _get(metrics, "reference.interval")
        for source in (metrics.get("interval"), metrics.get("versus_baseline"), _get(metrics, "reference.difference")):
            for reason in (source or {}).get("warnings") or []:
                warned.setdefault(reason, []).append(name)
    if reference:
        lines.append(f"| ridge reference | {interval_cell(reference)} | {interval_cell(reference.get('no_score'))} "
                     "| | | |")
    interval = found[names[0]].get("interval") or {}
    lines += ["", f"95% percentile intervals, eval.bootstrap={interval.get('scheme')!r}: {interval.get('scope')}; "
              f"{interval.get('num_units')} held-out {interval.get('unit')}s, {interval.get('num_groups')} same-music "
              "groups. One seed per approach (the demo's time budget): seed-to-seed variation is not in these "
              "intervals. * = real (the interval excludes 0 and is not degenerate)."]
    if warned:
        lines += ["", "Degenerate intervals:", *[f"- {r}: {', '.join(n)}" for r, n in warned.items()]]
    return "\n".join(lines) + "\n"


def _asap_report():
    """scripts/asap_report.py (the ASAP sweeps' tables and plots) as a module."""
    import importlib.util  # noqa: PLC0415

    spec = importlib.util.spec_from_file_location("asap_report", Path(__file__).with_name("asap_report.py"))
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def asap_ranking(runs: Path) -> str:
    """`configs/sweeps/asap_ranking.py`'s results (``runs/asap_ranking``): `asap_report.ranking_report`."""
    results = _json(runs / "asap_ranking" / "results.json")
    return _asap_report().ranking_report(runs / "asap_ranking") + "\n" + _left_out(results)


def asap_batch_size(runs: Path) -> str:
    """`configs/sweeps/asap_batch_size.py`'s results (``runs/asap_batch_size``): the table, and a plot per measure
    against the batch written to docs/figures."""
    results = _json(runs / "asap_batch_size" / "results.json")
    figures = Path(__file__).resolve().parents[1] / "docs" / "figures"
    return (_asap_report().batch_report(runs / "asap_batch_size", figures, link="docs/figures/") + "\n"
            + _left_out(results))


BLOCKS: dict[str, Callable[[Path], str]] = {"percepiano_table": percepiano_table,
                                           "percepiano_dimensions": percepiano_dimensions, "ablations": ablations,
                                           "combined": combined, "demo": demo, "asap_ranking": asap_ranking,
                                           "asap_batch_size": asap_batch_size}


def render(text: str, runs: Path, only: set[str] | None = None) -> tuple[str, list[str]]:
    """``text`` with every generated block (of ``only``, when given) rewritten from ``runs``, and the problems:
    unknown block names and blocks whose result files are missing (those blocks are kept as they are)."""
    problems: list[str] = []

    def rewrite(match: re.Match) -> str:
        name = match["name"]
        if only is not None and name not in only:
            return match[0]
        if name not in BLOCKS:
            problems.append(f"{name}: no such block (known: {', '.join(BLOCKS)})")
            return match[0]
        try:
            return match[1] + BLOCKS[name](runs) + match[4]
        except MissingResults as err:
            problems.append(f"{name}: not regenerated: {err}")
            return match[0]

    new = BLOCK.sub(rewrite, text)
    present = {m["name"] for m in BLOCK.finditer(text)}
    problems += [f"{name}: no <!-- generated:{name} --> block in the README" for name in sorted((only or set())
                                                                                             - present)]
    return new, problems


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--readme", default="README.md", type=Path)
    parser.add_argument("--runs", default="runs", type=Path, help="the folder holding the result files")
    parser.add_argument("--check", action="store_true", help="rewrite nothing; exit 1 when a block is stale")
    parser.add_argument("--only", nargs="+", help=f"block names among {', '.join(BLOCKS)}")
    args = parser.parse_args(argv)
    text = args.readme.read_text()
    new, problems = render(text, args.runs, set(args.only) if args.only else None)
    for problem in problems:
        print(f"error: {problem}" if args.check else f"warning: {problem}", file=sys.stderr)
    if args.check:
        if new != text:
            sys.stdout.writelines(difflib.unified_diff(text.splitlines(True), new.splitlines(True),
                                                       str(args.readme), "regenerated"))
            print(f"{args.readme}: generated blocks are stale: run python scripts/generate_readme.py", file=sys.stderr)
        return 1 if new != text or problems else 0
    if new != text:
        args.readme.write_text(new)
        print(f"{args.readme}: generated blocks rewritten")
    else:
        print(f"{args.readme}: no generated block changed")
    return 1 if problems else 0


if __name__ == "__main__":
    sys.exit(main())
