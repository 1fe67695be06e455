"""Training-step throughput of approaches behind the sequence trunk (``trunk.kind="sequence"``), in bench_train's
units: ``python scripts/bench_sequence.py [--quick] [--publish]``.

`sequence_step` builds the trainer's step exactly as `bench_train.build_step` does for pooled inputs, on a synthetic
table of score-aligned frames instead: [1, T, 19] per row (the `aligned` encoder's features), T uniform in
[max_positions / 2, max_positions] and shared by the rows of a group, 10% of the positions masked (NaN); each batch
is read as windows of ``trunk.sequence.max_positions`` (64) positions, gathered on the device and augmented inside the
step (tempo, velocity, crops: every switch on, as trained). "dim" is the frames' width, 19. The ``+remat`` entry
recomputes each block in the backward pass (``trunk.remat``); its XLA temporary memory (``temp_bytes``, from the
compiled update's memory analysis) is beside its time, since that is what remat trades.

`make bench` runs it after bench_train.py; it writes train_sequence.md / .json beside train.md (bench/tmp/, or bench/
with ``--publish``), and bench_train's train.md links to it.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import sys
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
from bench_common import ROOT, add_output_args, load_average, machine, matmul_rate, median, output_dir  # noqa: E402
from bench_train import GROUP_ROWS, QUICK, FULL, REFERENCE_LINE, Step, compile_step, markdown, measure, summarise, \
    synthetic_table  # noqa: E402

from crescend_jax.config import load_config  # noqa: E402
from crescend_jax.data.table import EmbeddingTable  # noqa: E402
from crescend_jax.encoders.aligned import FEATURE_NAMES  # noqa: E402
from crescend_jax.models import approach_for  # noqa: E402
from crescend_jax.models.functions import model_functions  # noqa: E402
from crescend_jax.runtime import distributed  # noqa: E402
from crescend_jax.train.input_pipeline import host_table, place_table  # noqa: E402
from crescend_jax.train.optimizer import build_optimizer  # noqa: E402
from crescend_jax.train.step import build_train_step  # noqa: E402

# name -> (config file, overrides): approach A behind the sequence trunk, without and with remat
SEQUENCE_APPROACHES = {
    "approach_a+sequence": ("configs/approach_a.py", ["--config.trunk.kind=sequence"]),
    "approach_a+sequence+remat": ("configs/approach_a.py", ["--config.trunk.kind=sequence",
                                                            "--config.trunk.remat=True"]),
}


def aligned_table(rows: int, positions: int, seed: int = 0) -> EmbeddingTable:
    """bench_train's synthetic table with score-aligned frames (module doc)."""
    rng = np.random.default_rng(seed)
    base = synthetic_table(rows, len(FEATURE_NAMES), seed)
    lengths = rng.integers(positions // 2, positions + 1, size=rows // GROUP_ROWS + 1)
    frames = []
    for i in range(rows):
        f = rng.standard_normal((1, int(lengths[i // GROUP_ROWS]), len(FEATURE_NAMES)), dtype=np.float32)
        f[0, rng.random(f.shape[1]) < 0.1] = np.nan
        frames.append(f)
    return dataclasses.replace(base, frames=frames, encoder="aligned-v1-beat-f19-synthetic")


def sequence_step(name: str, batch: int, overrides: tuple[str, ...] = (), table_rows: int = 0) -> Step:
    """`bench_train.build_step` for an entry of `SEQUENCE_APPROACHES` (module doc), with the step's ``temp_bytes``."""
    path, own = SEQUENCE_APPROACHES[name]
    config = load_config(ROOT / path, [*own, *overrides, f"--config.train.batch_size={batch}"])
    approach = approach_for(config)
    approach.check_config(config)
    mesh = distributed.make_mesh()
    window = int(config.trunk.sequence.max_positions)
    table = approach.prepare_table(aligned_table(max(table_rows or 2 * batch, GROUP_ROWS * 32), window), config,
                                   training=True)
    stats = approach.input_stats(table, config)
    dim = table.pooled.shape[1]
    functions = model_functions(approach, config, dim, mesh)
    model_state = approach.initial_state(functions.init(0), config, stats)
    steps = build_train_step(functions, build_optimizer(config.train, model_state), mesh)
    device_table = place_table(host_table(table, stats.mean, stats.std, approach.window_frames(config, table)), mesh)
    sampler = approach.sampler(table, config, 0)
    group_size = int(config.model.get("sampler", {}).get("group_size", 0))
    return compile_step(name, batch, dim, group_size, steps, model_state, device_table, sampler, mesh, memory=True)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--approaches", default=",".join(SEQUENCE_APPROACHES))
    parser.add_argument("--batches", default=None, help=f"rows per step (default {FULL['batches']}; --quick "
                                                         f"{QUICK['batches']})")
    parser.add_argument("--repeats", type=int, default=None)
    parser.add_argument("--quick", action="store_true")
    add_output_args(parser)
    args = parser.parse_args()
    mode = QUICK if args.quick else FULL
    batches = [int(b) for b in (args.batches or mode["batches"]).split(",")]
    repeats = args.repeats or mode["repeats"]
    out = output_dir(args)
    info = machine()
    rates = [matmul_rate()]
    results = []
    for name in args.approaches.split(","):
        for batch in batches:
            load = load_average()
            step = sequence_step(name, batch)
            alone, with_input = measure(step, repeats)
            result = summarise(step, alone, with_input, rates[0])
            result.update(load_average=load, temp_bytes=step.temp_bytes)
            results.append(result)
            print(json.dumps({k: round(v, 4) if isinstance(v, float) else v for k, v in result.items()
                              if not k.startswith("times_")}), flush=True)
    rates.append(matmul_rate())
    rate = median(rates)
    for result in results:
        result["fraction_of_matmul"] = result["matmul_flops"] / result["seconds_alone"] / rate
    info.update(matmul_gflops=rate / 1e9, matmul_gflops_runs=[r / 1e9 for r in rates], repeats=repeats,
                load_average_end=load_average(), mode="quick" if args.quick else "full")
    (out / "train_sequence.json").write_text(json.dumps({"machine": info, "results": results}, indent=1))
    text = markdown(info, results).replace("(`scripts/bench_train.py`)", "(`scripts/bench_sequence.py`)").replace(
        REFERENCE_LINE, "The PyTorch reference has no sequence model: no ratio exists for these steps.").replace(
        "Synthetic pooled inputs", "Synthetic score-aligned frames (windows of 64 positions x 19 features, 10% masked)")
    memory = ["", "XLA temporary memory of the compiled update (`temp_bytes`, what `trunk.remat` trades):", ""]
    memory += [f"- {r['approach']}, batch {r['batch']:,}: {r['temp_bytes'] / 2**20:,.0f} MiB" for r in results]
    (out / "train_sequence.md").write_text(text + "\n".join(memory) + "\n")
    print(f"wrote {out / 'train_sequence.md'} and train_sequence.json")


if __name__ == "__main__":
    main()
