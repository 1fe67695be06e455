"""Training-step throughput of every approach, with and without the input path: ``python scripts/bench_train.py``.

For each approach and global batch size, on this machine's default JAX backend (all local devices as the mesh):

* "step + input": what the trainer does each step -- the host samples the batch's row indices (`Sampler`), places
  them sharded (`place_plan`) and the jitted step gathers the rows from the device-resident table, computes the loss
  and gradients and updates the optimizer state;
* "step alone": the same update on a batch gathered in advance (no sampling, no placement, no gather).

Both are medians over repeats after a warm-up, measured in one process one after the other. FLOPs per step come from
XLA's cost analysis of the compiled update; the fraction of the float32 matmul rate divides the achieved rate by a
[4096, 4096] @ [4096, 4096] matmul measured in the same process. The table is synthetic (random pooled vectors of
``--dim`` features, groups of 8 performances, compositions of 16 groups): throughput does not depend on the values.

Writes bench/train.md and bench/train.json. Other approaches add an entry to APPROACHES.
"""

from __future__ import annotations

import argparse
import json
import platform
import statistics
import time
from pathlib import Path

import jax
import numpy as np

from crescend_jax.config import load_config
from crescend_jax.data.table import EmbeddingTable
from crescend_jax.models import get_approach
from crescend_jax.models.functions import model_functions
from crescend_jax.runtime import distributed
from crescend_jax.train.input_pipeline import gather, host_table, place_plan, place_table
from crescend_jax.train.optimizer import build_optimizer
from crescend_jax.train.step import build_train_step

ROOT = Path(__file__).resolve().parents[1]
MATMUL_SIZE = 4096
GROUP_ROWS, GROUPS_PER_COMPOSITION = 8, 16

# name -> (config file, overrides, what a "unit" of throughput is: rows (performances) or within-group pairs)
APPROACHES = {
    "baseline": ("configs/baseline.py", [], "rows"),
    "approach_a": ("configs/approach_a.py", [], "pairs"),
    "approach_b": ("configs/approach_b.py", [], "pairs"),
    # approach C's composition classifiers need a class per training composition: 16,384 rows hold 128
    "approach_c": ("configs/approach_c.py", ["--config.model.adversary.num_classes=128"], "rows"),
}


def synthetic_table(rows: int, dim: int, seed: int = 0) -> EmbeddingTable:
    rng = np.random.default_rng(seed)
    index = np.arange(rows)
    groups = np.array([f"g{i // GROUP_ROWS}" for i in index])
    compositions = np.array([f"c{i // (GROUP_ROWS * GROUPS_PER_COMPOSITION)}" for i in index])
    labels = rng.uniform(size=(rows, 19)).astype(np.float32)
    return EmbeddingTable(
        keys=np.array([f"k{i}" for i in index]), compositions=compositions, pieces=compositions,
        performers=np.array([str(i % GROUP_ROWS) for i in index]), groups=groups, renders=np.array(["r"] * rows),
        label_mean=labels, label_std=np.full((rows, 19), 0.1, np.float32),
        label_truth=np.full((rows, 19), np.nan, np.float32), ratings=[np.zeros((0, 19), np.float32)] * rows,
        pooled=rng.normal(size=(rows, dim)).astype(np.float32), frames=None, encoder="synthetic", frame_rate=0.0)


def _timed(fn, repeats: int) -> list[float]:
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        jax.block_until_ready(fn())
        times.append(time.perf_counter() - start)
    return times


def matmul_gflops() -> float:
    a = jax.random.normal(jax.random.key(0), (MATMUL_SIZE, MATMUL_SIZE), np.float32)
    f = jax.jit(lambda x: x @ x)
    jax.block_until_ready(f(a))
    return 2 * MATMUL_SIZE**3 / statistics.median(_timed(lambda: f(a), 5)) / 1e9


def _flops(compiled) -> float:
    analysis = compiled.cost_analysis()
    analysis = analysis[0] if isinstance(analysis, (list, tuple)) else analysis
    return float(analysis.get("flops", float("nan")))


def bench_one(name: str, batch: int, dim: int, repeats: int) -> dict:
    path, overrides, unit = APPROACHES[name]
    config = load_config(ROOT / path, [*overrides, f"--config.train.batch_size={batch}"])
    approach = get_approach(config.model.name)
    approach.check_config(config)
    mesh = distributed.make_mesh()
    table = synthetic_table(max(batch, GROUP_ROWS * GROUPS_PER_COMPOSITION * 2), dim)
    functions = model_functions(approach, config, dim, mesh)
    model_state = functions.init(0)
    steps = build_train_step(functions, build_optimizer(config.train, model_state), mesh)
    opt_state = steps.init_optimizer(model_state)
    device_table = place_table(host_table(table, np.zeros(dim, np.float32), np.ones(dim, np.float32), 0), mesh)
    sampler = functions.approach.sampler(table, config, 0)
    state = {"model": model_state, "opt": opt_state, "step": 0}

    def with_input():
        plan = place_plan(next(sampler), mesh)
        state["model"], state["opt"], metrics = steps.step(state["model"], state["opt"], device_table, plan,
                                                           np.int32(state["step"]))
        state["step"] += 1
        return metrics["loss"]

    fixed = jax.jit(gather)(device_table, place_plan(next(sampler), mesh))

    def alone():
        state["model"], state["opt"], metrics = steps.update(state["model"], state["opt"], fixed,
                                                             np.int32(state["step"]))
        state["step"] += 1
        return metrics["loss"]

    flops = _flops(steps.update.lower(state["model"], state["opt"], fixed, np.int32(0)).compile())
    host = statistics.median(_timed(lambda: next(sampler).rows, max(repeats, 5)))
    for fn in (with_input, alone):  # warm-up: compile both
        _timed(fn, 2)
    times_input, times_alone = [], []
    for _ in range(repeats):  # interleaved, so load drift hits both alike
        times_input += _timed(with_input, 1)
        times_alone += _timed(alone, 1)
    seconds_input, seconds_alone = statistics.median(times_input), statistics.median(times_alone)
    group_size = config.model.get("sampler", {}).get("group_size", 0) if unit == "pairs" else 0
    units = batch // group_size * group_size * (group_size - 1) // 2 if group_size else batch
    return {"approach": name, "batch": batch, "unit": unit, "units_per_batch": units, "dim": dim,
            "seconds_with_input": seconds_input, "seconds_alone": seconds_alone,
            "input_overhead": seconds_input / seconds_alone - 1.0, "host_sampling_seconds": host,
            "units_per_s": units / seconds_input, "rows_per_s": batch / seconds_input, "flops_per_step": flops,
            "gflops": flops / seconds_alone / 1e9}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--approaches", default=",".join(APPROACHES))
    parser.add_argument("--batches", default="256,1024,4096,16384")
    parser.add_argument("--dim", type=int, default=1024, help="input width (MuQ layers 9-12: 4096; features: 648)")
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--out", default=str(ROOT / "bench"))
    parser.add_argument("--replot", action="store_true", help="only redraw train.png from OUT/train.json")
    args = parser.parse_args()
    out = Path(args.out)
    if args.replot:
        saved = json.loads((out / "train.json").read_text())
        plot(saved["machine"], saved["results"], out / "train.png")
        print(f"wrote {out / 'train.png'}")
        return
    rate = matmul_gflops()
    results = []
    for name in args.approaches.split(","):
        for batch in (int(b) for b in args.batches.split(",")):
            result = bench_one(name, batch, args.dim, args.repeats)
            result["fraction_of_matmul"] = result["gflops"] / rate
            results.append(result)
            print(json.dumps({k: round(v, 4) if isinstance(v, float) else v for k, v in result.items()}), flush=True)
    rate = statistics.median([rate, matmul_gflops()])  # once more at the end: the load may have drifted
    for result in results:
        result["fraction_of_matmul"] = result["gflops"] / rate
    machine = {"cpu": platform.processor() or platform.machine(), "backend": jax.default_backend(),
               "devices": jax.device_count(), "device_kind": jax.devices()[0].device_kind, "jax": jax.__version__,
               "matmul_gflops": rate}
    out.mkdir(parents=True, exist_ok=True)
    (out / "train.json").write_text(json.dumps({"machine": machine, "results": results}, indent=1))
    (out / "train.md").write_text(markdown(machine, results))
    plot(machine, results, out / "train.png")
    print(f"wrote {out / 'train.md'} and {out / 'train.png'}")


def plot(machine: dict, results: list[dict], path: Path) -> None:
    """Throughput (units/s, step + input) against the batch, every approach on one log-log plot; the unit (rows or
    pairs) is in each line's label. Dashed: the fraction of the matmul rate on the right axis."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, left = plt.subplots(figsize=(7, 4.2))
    right = left.twinx()
    for index, name in enumerate(dict.fromkeys(r["approach"] for r in results)):
        rows = sorted((r for r in results if r["approach"] == name), key=lambda r: r["batch"])
        color = f"C{index}"
        batches = [r["batch"] for r in rows]
        left.plot(batches, [r["units_per_s"] for r in rows], "o-", color=color, label=f"{name} ({rows[0]['unit']}/s)")
        right.plot(batches, [100 * r["fraction_of_matmul"] for r in rows], "--", color=color, alpha=0.5)
    left.set_xscale("log", base=2)
    left.set_yscale("log")
    left.set_xlabel("batch (rows)")
    left.set_ylabel("throughput, step + input (units/s)")
    right.set_ylabel("% of the float32 matmul rate (dashed)")
    right.set_ylim(0, 100)
    left.legend(fontsize=8, loc="lower left")
    left.set_title(f"train step throughput, {machine['backend']} ({machine['device_kind']}), matmul "
                   f"{machine['matmul_gflops']:.0f} GFLOP/s", fontsize=9)
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)


def markdown(machine: dict, results: list[dict]) -> str:
    lines = [
        "# Training-step throughput (`scripts/bench_train.py`)",
        "",
        f"Backend {machine['backend']} ({machine['device_kind']}, {machine['devices']} device(s)), jax "
        f"{machine['jax']}; float32 matmul rate {machine['matmul_gflops']:.0f} GFLOP/s ({MATMUL_SIZE}^3). Synthetic "
        f"pooled inputs of {results[0]['dim'] if results else 0} features; each approach's own config; medians of "
        "interleaved repeats after a warm-up. \"step + input\" is what the trainer runs (host index sampling, "
        "sharded placement, on-device gather, step); \"alone\" the same update on a batch gathered beforehand.",
        "",
        "| approach | batch rows | unit | units/s (step + input) | step + input s | alone s | input overhead | "
        "host sampling ms | GFLOP/step | of matmul |",
        "|---|---|---|---|---|---|---|---|---|---|",
    ]
    for r in results:
        lines.append(
            f"| {r['approach']} | {r['batch']:,} | {r['unit']} | {r['units_per_s']:,.0f} | "
            f"{r['seconds_with_input']:.4f} | {r['seconds_alone']:.4f} | {r['input_overhead']:+.1%} | "
            f"{1e3 * r['host_sampling_seconds']:.2f} | {r['flops_per_step'] / 1e9:.2f} | {r['fraction_of_matmul']:.0%} |")
    worst = max(results, key=lambda r: r["input_overhead"]) if results else None
    if worst is not None:
        lines += ["", f"Largest input overhead: {worst['input_overhead']:+.1%} ({worst['approach']}, batch "
                      f"{worst['batch']:,}); the goal is within 10% of the step alone."]
    return "\n".join(lines) + "\n"


if __name__ == "__main__":
    main()
