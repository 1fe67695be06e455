"""Before/after step times of one code change, interleaved: ``python scripts/bench_ab.py --before main``.

Two modes.

``--swap MODULES`` (in one process; the steadier one on a loaded machine): the "before" side is this tree with the
named modules (e.g. ``crescend_jax.models.comparators``) replaced by their files from the ``--before`` revision:
each is executed from that file under its own name, and every name that this tree's modules (and
``bench_train``) imported from it is pointed at the old module's object of that name while the "before" steps are
built (`bench_train.build_step`, which traces and compiles them), then restored for the "after" steps. The compiled
steps of both sides are then called alternately, step by step, so that load bursts hit both alike; reported are the
medians and the median of the paired (consecutive) ratios. Valid for changes confined to those modules (their
imports resolve to this tree).

Without ``--swap`` (child processes): the "after" side is this working tree; the "before" side is the tree of a git revision (``--before``, exported with
``git archive`` into the scratch folder). Each round runs one child process per side, in alternating order (before
first in even rounds, after first in odd ones), and each child builds the steps with ``bench_train.build_step`` of its
own tree (its own code, configs and benchmark) and times ``--repeats`` calls of the step alone (the jitted update on
a batch gathered beforehand) for every (approach, width, batch). On a shared machine the load drifts over minutes;
alternating the sides round by round puts that drift on both, and the per-round ratios say how steady it was.

Reported per cell: the median step time of each side over all its rounds, after / before (< 1: faster), the median
of the per-round ratios, and the load average (1 min) at the start of each child. Writes ab.md and ab.json into
bench/tmp/ (``--out``; ``--publish``: bench/). Extra config overrides for both sides: ``--override`` (repeatable;
e.g. ``--override=--config.train.compute_dtype=bfloat16`` on the after side only with ``--after-override``).
"""

from __future__ import annotations

import argparse
import importlib.util
import io
import json
import os
import subprocess
import sys
import tarfile
from pathlib import Path
from typing import Callable

sys.path.insert(0, str(Path(__file__).resolve().parent))
from bench_common import ROOT, add_output_args, load_average, machine, median, output_dir  # noqa: E402

CHILD = r"""
import json, sys, time
sys.path.insert(0, "scripts")
from bench_common import load_average, timed
import bench_train
spec = json.loads(sys.argv[1])
out = []
for cell in spec["cells"]:
    load = load_average()
    step = bench_train.build_step(cell["approach"], cell["batch"], cell["dim"], tuple(spec["overrides"]))
    timed(step.alone, 1)
    times = timed(step.alone, spec["repeats"])
    out.append({**cell, "times": times, "load": load, "loss": float(step.alone())})
print("AB-RESULT " + json.dumps(out), flush=True)
"""


def export_tree(revision: str, scratch: Path) -> Path:
    """The files of ``revision`` (crescend_jax/, scripts/, configs/) under scratch/ab-<sha>/ (reused if there)."""
    sha = subprocess.run(["git", "rev-parse", revision], cwd=ROOT, check=True, capture_output=True,
                         text=True).stdout.strip()
    target = scratch / f"ab-{sha[:12]}"
    if not (target / "crescend_jax").exists():
        archive = subprocess.run(["git", "archive", sha, "crescend_jax", "scripts", "configs"], cwd=ROOT,
                                 check=True, capture_output=True).stdout
        target.mkdir(parents=True, exist_ok=True)
        with tarfile.open(fileobj=io.BytesIO(archive)) as tar:
            tar.extractall(target, filter="data")
    return target


def run_side(tree: Path, cells: list[dict], overrides: list[str], repeats: int) -> list[dict]:
    """One child process on ``tree``: the step-alone times of every cell."""
    spec = json.dumps({"cells": cells, "overrides": overrides, "repeats": repeats})
    env = {**os.environ, "PYTHONPATH": str(tree)}
    done = subprocess.run([sys.executable, "-c", CHILD, spec], cwd=tree, env=env, capture_output=True, text=True)
    lines = [line for line in done.stdout.splitlines() if line.startswith("AB-RESULT ")]
    if done.returncode or not lines:
        raise SystemExit(f"the child on {tree} failed:\n{done.stderr[-4000:]}")
    return json.loads(lines[-1][len("AB-RESULT "):])


def swapped(modules: list[str], tree: Path) -> list[tuple[object, str, object]]:
    """Point every name this process's crescend_jax modules (and bench_train) imported from ``modules`` at the
    objects of those modules executed from ``tree``; returns the (namespace, name, new object) list to undo it."""
    import pkgutil

    import crescend_jax

    for info in pkgutil.walk_packages(crescend_jax.__path__, "crescend_jax."):  # every importer bound before the swap
        if info.name.startswith(("crescend_jax.models", "crescend_jax.losses", "crescend_jax.train")):
            importlib.import_module(info.name)
    undo = []
    for module_name in modules:
        current = importlib.import_module(module_name)
        path = tree / Path(*module_name.split(".")).with_suffix(".py")
        spec = importlib.util.spec_from_file_location(f"before_{module_name.replace('.', '_')}", path)
        old = importlib.util.module_from_spec(spec)
        sys.modules[spec.name] = old  # dataclasses look their module up
        spec.loader.exec_module(old)
        for holder in [m for n, m in list(sys.modules.items()) if n.startswith("crescend_jax") or n == "bench_train"]:
            for name, value in list(vars(holder).items()):
                if holder is current or name.startswith("__"):
                    continue
                if value is current:
                    undo.append((holder, name, value))
                    setattr(holder, name, old)
                elif getattr(current, name, None) is value and hasattr(old, name):
                    undo.append((holder, name, value))
                    setattr(holder, name, getattr(old, name))
        for name, value in list(vars(current).items()):  # the module's own globals used through its functions
            if not name.startswith("__") and hasattr(old, name) and callable(value):
                undo.append((current, name, value))
                setattr(current, name, getattr(old, name))
    return undo


def run_in_process(modules: list[str], tree: Path, cells: list[dict], overrides: list[str], repeats: int,
                   after_overrides: list[str], done: Callable[[list[dict]], None]) -> list[dict]:
    """Build every cell's step on both sides in this process (module doc), then time them alternately."""
    import bench_train
    from bench_common import timed

    import crescend_jax.models.functions as functions

    rows = []
    for cell in cells:
        functions._CACHE.clear()
        undo = swapped(modules, tree)
        try:
            before = bench_train.build_step(cell["approach"], cell["batch"], cell["dim"], tuple(overrides))
        finally:
            for holder, name, value in reversed(undo):
                setattr(holder, name, value)
        functions._CACHE.clear()
        after = bench_train.build_step(cell["approach"], cell["batch"], cell["dim"],
                                       tuple(overrides + after_overrides))
        loads = [load_average()[0]]
        times: dict[str, list[float]] = {"before": [], "after": []}
        for side, step in (("before", before), ("after", after)):
            timed(step.alone, 1)
        for index in range(repeats):
            for side, step in ((("before", before), ("after", after)) if index % 2 == 0
                               else (("after", after), ("before", before))):
                times[side] += timed(step.alone, 1)
        loads.append(load_average()[0])
        paired = [a / b for a, b in zip(times["after"], times["before"])]
        rows.append({**cell, "before_ms": 1e3 * median(times["before"]), "after_ms": 1e3 * median(times["after"]),
                     "ratio": median(times["after"]) / median(times["before"]), "paired_ratio": median(paired),
                     "round_ratios": paired, "loads": loads, "times": times,
                     "losses": {"before": float(before.alone()), "after": float(after.alone())}})
        done(rows)  # the results so far, written after every cell
        print(f"{cell}: before {rows[-1]['before_ms']:.1f} ms, after {rows[-1]['after_ms']:.1f} ms, "
              f"paired ratio {rows[-1]['paired_ratio']:.3f}", flush=True)
    return rows


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--before", default="main", help="git revision of the 'before' side")
    parser.add_argument("--approaches", default="approach_b")
    parser.add_argument("--dims", default="4096,1024")
    parser.add_argument("--batches", default="1024")
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--override", action="append", default=[], help="config override for both sides")
    parser.add_argument("--after-override", action="append", default=[], help="config override, after side only")
    parser.add_argument("--label", default="", help="what the change is (written into ab.md)")
    parser.add_argument("--swap", default="", help="modules to take from --before, in one process (module doc); "
                                                   "'none': both sides this tree (compare --after-override alone)")
    add_output_args(parser)
    args = parser.parse_args()
    out = output_dir(args)
    before_tree = export_tree(args.before, out)
    cells = [{"approach": a, "dim": int(d), "batch": int(b)} for d in args.dims.split(",")
             for a in args.approaches.split(",") for b in args.batches.split(",")]
    info = machine()
    if args.swap:
        run_in_process([m for m in args.swap.split(",") if m != "none"], before_tree, cells, args.override, args.repeats * args.rounds,
                       args.after_override, lambda rows: write(out, args, info, rows))
        return
    sides = {"before": (before_tree, args.override), "after": (ROOT, args.override + args.after_override)}
    runs: dict[str, list[list[dict]]] = {"before": [], "after": []}
    for round_ in range(args.rounds):
        order = ("before", "after") if round_ % 2 == 0 else ("after", "before")
        for side in order:
            tree, overrides = sides[side]
            runs[side].append(run_side(tree, cells, overrides, args.repeats))
            print(f"round {round_} {side}: " + ", ".join(
                f"{c['approach']} {c['dim']}x{c['batch']} {1e3 * median(c['times']):.1f} ms" for c in runs[side][-1]),
                flush=True)
    rows = []
    for index, cell in enumerate(cells):
        before = [t for run in runs["before"] for t in run[index]["times"]]
        after = [t for run in runs["after"] for t in run[index]["times"]]
        per_round = [median(a[index]["times"]) / median(b[index]["times"])
                     for a, b in zip(runs["after"], runs["before"])]
        loads = [run[index]["load"][0] for side in runs.values() for run in side]
        losses = {side: runs[side][0][index]["loss"] for side in runs}
        rows.append({**cell, "before_ms": 1e3 * median(before), "after_ms": 1e3 * median(after),
                     "ratio": median(after) / median(before), "paired_ratio": median(per_round),
                     "round_ratios": per_round, "loads": loads, "losses": losses})
    write(out, args, info, rows)


def write(out: Path, args: argparse.Namespace, info: dict, rows: list[dict]) -> None:
    """ab.json and ab.md."""
    mode = (f"one process, modules {args.swap} from {args.before}, {args.rounds * args.repeats} steps per side "
            "called alternately" if args.swap else
            f"child processes, {args.rounds} rounds x {args.repeats} steps per side, sides alternating")
    info = dict(info)
    info.update(before=args.before, label=args.label, rounds=args.rounds, repeats=args.repeats,
                overrides=args.override, after_overrides=args.after_override, load_average_end=load_average())
    (out / "ab.json").write_text(json.dumps({"machine": info, "rows": rows}, indent=1))
    lines = [f"# Before / after: {args.label or 'this tree'} against {args.before} (`scripts/bench_ab.py`)", "",
             f"{info['date']}, {info['cpu']}, {info['cores']} cores, jax {info['jax']}; {mode}; step alone (jitted "
             f"update on a gathered batch); overrides {args.override or 'none'}, after side "
             f"also {args.after_override or 'none'}. Load average (1 min) {info['load_average_start'][0]} at the "
             f"start, {info['load_average_end'][0]} at the end.", "",
             "| approach | width | batch | before ms | after ms | after / before (medians) | median paired ratio | "
             "paired ratios | load range |",
             "|---|---|---|---|---|---|---|---|---|"]
    for r in rows:
        lines.append(f"| {r['approach']} | {r['dim']:,} | {r['batch']:,} | {r['before_ms']:.1f} | "
                     f"{r['after_ms']:.1f} | {r['ratio']:.3f} | {r['paired_ratio']:.3f} | "
                     f"{', '.join(f'{x:.2f}' for x in r['round_ratios'])} | "
                     f"{min(r['loads']):.1f}-{max(r['loads']):.1f} |")
    (out / "ab.md").write_text("\n".join(lines) + "\n")
    print("\n".join(lines[-len(rows) - 2:]))
    print(f"wrote {out / 'ab.md'}")


if __name__ == "__main__":
    main()
