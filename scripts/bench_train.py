"""Training-step throughput of every approach in both units at both input widths: ``python scripts/bench_train.py``.

For each approach, input width (``--dims``: 4,096 = MuQ layers 9-12 as the PyTorch reference reads them, 1,024 = one
MuQ layer) and global batch (rows = performances encoded per step), on this machine's default JAX backend:

* "step alone": the jitted update on a batch gathered beforehand (what the reference's benchmark times: a fixed
  batch, no data loading), and "step + input": what the trainer runs each step (host index sampling, sharded
  placement, on-device gather, update). Medians of interleaved repeats after a warm-up.
* two units, never divided one by the other: **performances encoded per second** (rows / step; every approach encodes
  each row once per step) and **distinct same-music pairs supervised per second**: the unordered within-group pairs
  of distinct rows that the step's loss reads, counted on the sampled batches (A and C: C(4, 2) = 6 per group slot of
  4, i.e. 1.5 per encoded row; B: C(8, 2) = 28 per block of 8, 3.5 per row; the baseline's pointwise MSE: none),
  before the loss's own label-gap filter.
* FLOPs per step counted exactly from the update's jaxpr (`bench_common.count_flops`): matrix products 2 m n k
  (scan bodies such as the tiled InfoNCE's times their trips) and, apart, elementwise and transcendental element
  operations. "% of matmul" = matmul FLOPs / step-alone seconds / the float32 rate of a [4096, 4096]^2 product measured
  in the same process (at the start and the end; their median), i.e. like-for-like matmul work.

Full run: batches 256, 1,024 and 4,096 at both widths and 16,384 at the narrower (about 8 minutes idle); ``--quick``:
256 and 1,024 (about 3 minutes).

The table is synthetic (random pooled vectors, same-music groups of 8 performances, 128 compositions; 2 x batch rows so
that a batch draws each group about once): throughput does not depend on the values. Writes train.md, train.json
and train.png into bench/tmp/ (``--publish``: bench/). The load average is recorded with every measurement.
"""

from __future__ import annotations

import argparse
import dataclasses
import functools
import json
import sys
import time
from pathlib import Path
from typing import Any, Callable

import jax
import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
from bench_common import (ROOT, add_output_args, count_flops, load_average, load_note, machine,  # noqa: E402
                          matmul_rate, median, output_dir, timed)

from crescend_jax.config import load_config  # noqa: E402
from crescend_jax.data.table import EmbeddingTable  # noqa: E402
from crescend_jax.models import get_approach  # noqa: E402
from crescend_jax.models.functions import model_functions  # noqa: E402
from crescend_jax.runtime import distributed  # noqa: E402
from crescend_jax.train.input_pipeline import gather, host_table, place_plan, place_table  # noqa: E402
from crescend_jax.train.optimizer import build_optimizer  # noqa: E402
from crescend_jax.train.step import build_train_step  # noqa: E402

GROUP_ROWS, COMPOSITIONS = 8, 128

# name -> (config file, overrides)
APPROACHES = {
    "baseline": ("configs/baseline.py", []),
    "approach_a": ("configs/approach_a.py", []),
    "approach_b": ("configs/approach_b.py", []),
    # approach C's composition classifiers need a class per training composition
    "approach_c": ("configs/approach_c.py", [f"--config.model.adversary.num_classes={COMPOSITIONS}"]),
}
QUICK = {"batches": "256,1024", "large": "", "repeats": 3}
FULL = {"batches": "256,1024,4096", "large": "16384", "repeats": 5}


@functools.lru_cache(maxsize=2)
def synthetic_table(rows: int, dim: int, seed: int = 0) -> EmbeddingTable:
    """``rows`` random pooled vectors of width ``dim`` in same-music groups of GROUP_ROWS, group g in composition
    g mod COMPOSITIONS; uniform labels. The last two tables are kept (approaches measured one after another at one
    size share them); nothing writes into a table."""
    rng = np.random.default_rng(seed)
    index = np.arange(rows)
    group = index // GROUP_ROWS
    groups = np.array([f"g{g}" for g in group])
    compositions = np.array([f"c{g % COMPOSITIONS}" for g in group])
    labels = rng.uniform(size=(rows, 19)).astype(np.float32)
    return EmbeddingTable(
        keys=np.array([f"k{i}" for i in index]), compositions=compositions, pieces=compositions,
        performers=np.array([str(i % GROUP_ROWS) for i in index]), groups=groups, renders=np.array(["r"] * rows),
        label_mean=labels, label_std=np.full((rows, 19), 0.1, np.float32),
        label_truth=np.full((rows, 19), np.nan, np.float32), ratings=[np.zeros((0, 19), np.float32)] * rows,
        pooled=rng.standard_normal((rows, dim), dtype=np.float32), frames=None, encoder="synthetic", frame_rate=0.0)


def distinct_pairs(rows: np.ndarray, group_size: int) -> int:
    """Distinct unordered pairs {i, j} of distinct real rows (>= 0) that share a group slot of ``group_size``
    consecutive entries of ``rows`` [B] (a pair met in two slots counts once)."""
    slots = rows.reshape(-1, group_size)
    i, j = np.triu_indices(group_size, k=1)
    a, b = slots[:, i].ravel(), slots[:, j].ravel()
    keep = (a >= 0) & (b >= 0) & (a != b)
    lo, hi = np.minimum(a[keep], b[keep]), np.maximum(a[keep], b[keep])
    return len(np.unique(lo.astype(np.int64) * (int(rows.max()) + 1) + hi))


@dataclasses.dataclass
class Step:
    """One approach's jitted step, set up and compiled: ``alone()`` and ``with_input()`` each run one update and
    return its loss (the state is carried between calls, as in training); ``lower()`` lowers the update on the
    current state (for HLO dumps and cost analysis)."""

    name: str
    batch: int
    dim: int
    group_size: int
    pairs_per_step: float
    flops: Any
    alone: Callable[[], Any]
    with_input: Callable[[], Any]
    host_sampling_seconds: float
    compile_seconds: float
    lower: Callable[[], Any]
    temp_bytes: int = -1  # XLA temporary memory of the compiled update; -1 when not measured


def build_step(name: str, batch: int, dim: int, overrides: tuple[str, ...] = (), table_rows: int = 0) -> Step:
    """Set up ``name``'s train step at ``batch`` rows and input width ``dim`` on the default mesh (config
    ``overrides`` appended; a synthetic table of ``table_rows`` rows, default 2 x batch), compile both variants (one
    warm-up call each) and count its FLOPs and supervised pairs."""
    path, own = APPROACHES[name]
    config = load_config(ROOT / path, [*own, *overrides, f"--config.train.batch_size={batch}"])
    approach = get_approach(config.model.name)
    approach.check_config(config)
    mesh = distributed.make_mesh()
    table = synthetic_table(max(table_rows or 2 * batch, GROUP_ROWS * 32), dim)
    functions = model_functions(approach, config, dim, mesh)
    model_state = functions.init(0)
    steps = build_train_step(functions, build_optimizer(config.train, model_state), mesh)
    device_table = place_table(host_table(table, np.zeros(dim, np.float32), np.ones(dim, np.float32), 0), mesh)
    sampler = functions.approach.sampler(table, config, 0)
    group_size = int(config.model.get("sampler", {}).get("group_size", 0))
    pointwise = name == "baseline" or (name == "approach_c" and config.model.loss.head == "mse")
    return compile_step(name, batch, dim, group_size, steps, model_state, device_table, sampler, mesh,
                        count_pairs=not pointwise)


def compile_step(name: str, batch: int, dim: int, group_size: int, steps, model_state, device_table, sampler, mesh,
                 count_pairs: bool = True, memory: bool = False) -> Step:
    """The `Step` of a built train step (``steps``, from `build_train_step`) on the placed table ``device_table``
    drawing batches from ``sampler``: the optimizer state initialised, both variants compiled (one warm-up call each,
    timed together as ``compile_seconds``), FLOPs counted on the update, the supervised pairs per step counted on 4
    sampled batches (0 when not ``count_pairs`` or without group slots), the host's sampling time (median of 5).
    ``memory``: also the XLA temporary bytes of the compiled update (``temp_bytes``, before anything runs)."""
    opt_state = steps.init_optimizer(model_state)
    state = {"model": model_state, "opt": opt_state, "step": 0}
    sampled = [next(sampler) for _ in range(4)]
    pairs = float(np.mean([distinct_pairs(p.rows, group_size) for p in sampled])) if count_pairs and group_size \
        else 0.0

    def with_input():
        plan = place_plan(next(sampler), mesh)
        state["model"], state["opt"], metrics = steps.step(state["model"], state["opt"], device_table, plan,
                                                           np.int32(state["step"]))
        state["step"] += 1
        return metrics["loss"]

    fixed = jax.jit(gather)(device_table, place_plan(sampled[0], mesh))

    def alone():
        state["model"], state["opt"], metrics = steps.update(state["model"], state["opt"], fixed,
                                                             np.int32(state["step"]))
        state["step"] += 1
        return metrics["loss"]

    flops = count_flops(steps.update, state["model"], state["opt"], fixed, np.int32(0))
    temp_bytes = -1
    if memory:
        analysis = steps.update.lower(state["model"], state["opt"], fixed, np.int32(0)).compile().memory_analysis()
        temp_bytes = int(getattr(analysis, "temp_size_in_bytes", -1)) if analysis is not None else -1
    start = time.perf_counter()
    for fn in (alone, with_input):  # compiles both
        timed(fn, 1)
    compile_seconds = time.perf_counter() - start
    host = median(timed(lambda: next(sampler).rows, 5))
    lower = lambda: steps.update.lower(state["model"], state["opt"], fixed, np.int32(state["step"]))
    return Step(name=name, batch=batch, dim=dim, group_size=group_size, pairs_per_step=pairs, flops=flops,
                alone=alone, with_input=with_input, host_sampling_seconds=host, compile_seconds=compile_seconds,
                lower=lower, temp_bytes=temp_bytes)


def measure(step: Step, repeats: int) -> tuple[list[float], list[float]]:
    """(step-alone seconds, step + input seconds), ``repeats`` each, interleaved so that load drift hits both."""
    timed(step.alone, 1)  # one more warm-up: the first calls after compilation are slower
    alone, with_input = [], []
    for _ in range(repeats):
        with_input += timed(step.with_input, 1)
        alone += timed(step.alone, 1)
    return alone, with_input


def summarise(step: Step, alone: list[float], with_input: list[float], rate: float) -> dict[str, Any]:
    """The result row of one measurement (rate: the matmul FLOP/s of the same run)."""
    seconds_alone, seconds_input = median(alone), median(with_input)
    return {
        "approach": step.name, "batch": step.batch, "dim": step.dim, "group_size": step.group_size,
        "pairs_per_step": step.pairs_per_step, "pairs_per_encoded": step.pairs_per_step / step.batch,
        "seconds_alone": seconds_alone, "seconds_with_input": seconds_input,
        "times_alone": [round(t, 5) for t in alone], "times_with_input": [round(t, 5) for t in with_input],
        "input_overhead": seconds_input / seconds_alone - 1.0, "host_sampling_seconds": step.host_sampling_seconds,
        "encoded_per_s": step.batch / seconds_alone, "encoded_per_s_with_input": step.batch / seconds_input,
        "pairs_per_s": step.pairs_per_step / seconds_alone,
        "matmul_flops": step.flops.dot, "elementwise_flops": step.flops.elementwise,
        "transcendental_flops": step.flops.transcendental, "scan_trips": step.flops.scan_trips,
        "matmul_flops_per_encoded": step.flops.dot / step.batch,
        "matmul_gflops_achieved": step.flops.dot / seconds_alone / 1e9,
        "fraction_of_matmul": step.flops.dot / seconds_alone / rate, "compile_seconds": step.compile_seconds,
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--approaches", default=",".join(APPROACHES))
    parser.add_argument("--dims", default="4096,1024", help="input widths (MuQ layers 9-12: 4096; one layer: 1024)")
    parser.add_argument("--batches", default=None, help=f"rows per step (default {FULL['batches']}; "
                                                         f"--quick {QUICK['batches']})")
    parser.add_argument("--large", default=None, help=f"batches run at the narrowest width only (default "
                                                       f"{FULL['large']}; --quick none)")
    parser.add_argument("--repeats", type=int, default=None)
    parser.add_argument("--quick", action="store_true", help="fewer batches and repeats (a few minutes)")
    parser.add_argument("--replot", action="store_true", help="only redraw train.png from OUT/train.json")
    parser.add_argument("--compute-dtype", default="float32", choices=("float32", "bfloat16"),
                        help="train.compute_dtype of every step (bf16 matmuls and activations, float32 parameters)")
    add_output_args(parser)
    args = parser.parse_args()
    mode = QUICK if args.quick else FULL
    batches = [int(b) for b in (args.batches or mode["batches"]).split(",")]
    large = [int(b) for b in (mode["large"] if args.large is None else args.large).split(",") if b]
    dims = [int(d) for d in args.dims.split(",")]
    repeats = args.repeats or mode["repeats"]
    out = output_dir(args)
    if args.replot:
        write_outputs(out)
        print(f"wrote {out / 'train.md'} and {out / 'train.png'}")
        return
    info = machine()
    rates = [matmul_rate()]
    results = []
    for dim in dims:
        for name in args.approaches.split(","):
            for batch in batches + (large if dim == min(dims) else []):
                load = load_average()
                step = build_step(name, batch, dim, (f"--config.train.compute_dtype={args.compute_dtype}",))
                alone, with_input = measure(step, repeats)
                result = summarise(step, alone, with_input, rates[0])
                result["load_average"] = load
                result["compute_dtype"] = args.compute_dtype
                results.append(result)
                print(json.dumps({k: round(v, 4) if isinstance(v, float) else v for k, v in result.items()
                                  if not k.startswith("times_")}), flush=True)
    rates.append(matmul_rate())  # once more at the end: the load may have drifted
    rate = median(rates)
    for result in results:
        result["fraction_of_matmul"] = result["matmul_flops"] / result["seconds_alone"] / rate
    info.update(matmul_gflops=rate / 1e9, matmul_gflops_runs=[r / 1e9 for r in rates], repeats=repeats,
                load_average_end=load_average(), mode="quick" if args.quick else "full",
                compute_dtype=args.compute_dtype)
    (out / "train.json").write_text(json.dumps({"machine": info, "results": results}, indent=1))
    write_outputs(out)
    print(f"wrote {out / 'train.md'}, train.json and train.png")


def write_outputs(out: Path) -> None:
    """train.md and train.png from ``out``/train.json, with the back-to-back reference columns of
    ``out``/reference.json when it exists (`bench_reference.py` calls this again once it has run)."""
    saved = json.loads((out / "train.json").read_text())
    reference_path = out / "reference.json"
    reference = json.loads(reference_path.read_text()) if reference_path.is_file() else None
    (out / "train.md").write_text(markdown(saved["machine"], saved["results"], reference)
                                  + "\nThe same steps behind the sequence trunk (score-aligned frames, width 19): "
                                  "[train_sequence.md](train_sequence.md) (`scripts/bench_sequence.py`, run next by "
                                  "`make bench`).\n")
    plot(saved["machine"], saved["results"], out / "train.png")


def plot(info: dict, results: list[dict], path: Path) -> None:
    """Left: performances encoded per second (step alone) against the batch, one line per approach and width (solid
    4,096, dashed 1,024). Right: the share of the measured matmul rate."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, (left, right) = plt.subplots(1, 2, figsize=(10, 4))
    dims = sorted({r["dim"] for r in results}, reverse=True)
    for index, name in enumerate(dict.fromkeys(r["approach"] for r in results)):
        for dim, style in zip(dims, ("o-", "s--", "^:")):
            rows = sorted((r for r in results if r["approach"] == name and r["dim"] == dim), key=lambda r: r["batch"])
            if not rows:
                continue
            batches = [r["batch"] for r in rows]
            label = f"{name}, width {dim:,}"
            left.plot(batches, [r["encoded_per_s"] for r in rows], style, color=f"C{index}", label=label)
            right.plot(batches, [100 * r["fraction_of_matmul"] for r in rows], style, color=f"C{index}")
    for axis in (left, right):
        axis.set_xscale("log", base=2)
        axis.set_xlabel("batch (rows encoded per step)")
    left.set_yscale("log")
    left.set_ylabel("performances encoded / s (step alone)")
    right.set_ylabel("% of the measured float32 matmul rate")
    right.set_ylim(0, 100)
    left.legend(fontsize=7, loc="lower left")
    fig.suptitle(f"train step, {info['backend']} ({info['cpu']}, {info['cores']} cores), matmul "
                 f"{info['matmul_gflops']:.0f} GFLOP/s, load {info['load_average_start'][0]}", fontsize=9)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


REFERENCE_LINE = ("Ratios to the PyTorch reference are in reference.md (`scripts/bench_reference.py`, its steps run "
                  "back to back with these in one process run).")


def _reference_cells(reference: dict | None, row: dict) -> list[str]:
    """The reference's performances encoded / pairs supervised per second at ``row``'s approach, batch and width,
    and ours / its (the ratio of reference.json's back-to-back run, not of this file's figures); "" when absent."""
    letter = row["approach"].removeprefix("approach_").upper()  # reference.json names the approaches A, B, C
    match = next((r for r in (reference or {}).get("results", []) if (r["approach"], r["batch"], r["dim"]) ==
                  (letter, row["batch"], row["dim"]) and r.get("reference_encoded_per_s")), None)
    if match is None:
        return ["", "", ""]
    pairs = match.get("reference_pairs_per_s")
    return [f"{match['reference_encoded_per_s']:,.0f}", f"{pairs:,.0f}" if pairs else "-",
            f"**{match['encoded_ratio']:.2f}x**"]


def markdown(info: dict, results: list[dict], reference: dict | None = None) -> str:
    lines = [
        "# Training-step throughput (`scripts/bench_train.py`)",
        "",
        f"{info['date']}, backend {info['backend']} ({info['cpu']}, {info['cores']} cores, {info['devices']} "
        f"device(s)), jax {info['jax']}, XLA_FLAGS `{info['xla_flags'] or '(none)'}`; train.compute_dtype "
        f"{info.get('compute_dtype', 'float32')}; float32 matmul rate "
        f"{info['matmul_gflops']:.0f} GFLOP/s ([4096, 4096]^2, median of "
        f"{', '.join(f'{r:.0f}' for r in info['matmul_gflops_runs'])} at the start and end). {load_note(info)}",
        "",
        "Synthetic pooled inputs, each approach's own config; medians of "
        f"{info['repeats']} interleaved repeats after a warm-up. **encoded/s** = performances encoded per second by "
        "the step alone (a batch gathered beforehand, as the reference's benchmark times it); **+ input** = the "
        "trainer's step with host sampling, placement and on-device gather. **pairs/enc** = distinct same-music "
        "pairs the loss supervises per encoded performance, **pairs/s** their rate (a different unit: never divide "
        "one by the other). **matmul GFLOP** is counted exactly from the jaxpr (scan bodies times their trips); "
        "**other** is elementwise + transcendental element operations; **% matmul** = matmul FLOPs per second of "
        "the step alone / the measured matmul rate.",
    ]
    if reference:
        when = reference["machine"]
        lines += ["", f"**ref encoded/s**, **ref pairs/s**: the PyTorch reference's own steps at the same batch and "
                      f"width, and **ours / ref** the ratio of performances encoded per second, both measured back to "
                      f"back with ours in one run (`scripts/bench_reference.py`, reference.md, {when.get('date')}, "
                      f"load {when.get('load_average_start', ['?'])[0]}-{when.get('load_average_end', ['?'])[0]}); the "
                      "reference encodes 0.5 pairs per performance (A, B) or none (C)."]
    extra = ["ref encoded/s", "ref pairs/s", "ours / ref"] if reference else []
    for dim in sorted({r["dim"] for r in results}, reverse=True):
        lines += ["", f"## Input width {dim:,}", "",
                  "| approach | batch | pairs/enc | encoded/s | + input | pairs/s | step ms | input overhead | "
                  "matmul GFLOP | MFLOP/enc | other GFLOP | % matmul | load 1 min |" + "".join(f" {e} |" for e in extra),
                  "|---|---|---|---|---|---|---|---|---|---|---|---|---|" + "---|" * len(extra)]
        for r in (r for r in results if r["dim"] == dim):
            pairs = f"{r['pairs_per_s']:,.0f}" if r["pairs_per_step"] else "-"
            lines.append(
                f"| {r['approach']} | {r['batch']:,} | {r['pairs_per_encoded']:.2f} | {r['encoded_per_s']:,.0f} | "
                f"{r['encoded_per_s_with_input']:,.0f} | {pairs} | {1e3 * r['seconds_alone']:.1f} | "
                f"{r['input_overhead']:+.1%} | {r['matmul_flops'] / 1e9:.2f} | "
                f"{r['matmul_flops_per_encoded'] / 1e6:.2f} | "
                f"{(r['elementwise_flops'] + r['transcendental_flops']) / 1e9:.2f} | {r['fraction_of_matmul']:.0%} | "
                f"{r['load_average'][0]} |" + "".join(f" {c} |" for c in (_reference_cells(reference, r)
                                                                         if reference else [])))
    lines += ["", REFERENCE_LINE]
    return "\n".join(lines) + "\n"


if __name__ == "__main__":
    main()
