"""Benchmark: fine-tuning MuQ's top conformer layers in Flax (forward + backward of layers K..12 at full width).

Random MuQ-large-shaped layers (`crescend_jax.encoders.muq_flax.MuQLayers`, 1024 wide, 16 heads, FFN 4096,
kernel 31, rotary) take a batch of crops of layer-(K-1) frames at 25 fps, mean-pool hidden states 9..12 over the
valid frames and regress a random target; one jitted ``value_and_grad`` of that loss with respect to the layer
parameters is timed (median after compilation). Reported: frames per second (batch x crop frames / step time), the
step's FLOP rate and its fraction of the float32 matmul rate measured in the same process right before (a 4096^3
``jnp.dot``, as scripts/bench_infonce.py measures it).

FLOPs are counted analytically per frame and layer (forward): feed-forward halves 8 H F, attention projections
8 H^2, pointwise convs 6 H^2, depthwise conv 2 k H, scores and weighted values 4 T H; forward + backward = 3x
forward (rematerialisation's recomputation is not counted as useful work).

Writes bench/muq_finetune.md and .json (``--out`` elsewhere). Usage:
    python scripts/bench_muq_finetune.py                  # the full run: K=9, batch 8 x 10 s crops
    python scripts/bench_muq_finetune.py --quick --out /tmp/bench   # smoke run, tiny sizes
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from bench_common import cpu_model, load_average  # noqa: E402

ROOT = Path(__file__).resolve().parents[1]
MATMUL_SIZE = 4096
FRAME_RATE = 25.0
POOLED_LAYERS = (9, 10, 11, 12)


def layer_flops_per_frame(hidden: int, ffn: int, kernel: int, frames: int) -> int:
    """Forward FLOPs of one conformer layer per frame (multiply-adds count 2)."""
    return 8 * hidden * ffn + 8 * hidden**2 + 6 * hidden**2 + 2 * kernel * hidden + 4 * frames * hidden


def timed(compiled, args, runs: int) -> list[float]:
    import jax

    times = []
    for _ in range(runs):
        start = time.perf_counter()
        jax.block_until_ready(compiled(*args))
        times.append(time.perf_counter() - start)
    return times


def run(args: argparse.Namespace) -> dict:
    import jax
    import jax.numpy as jnp
    import numpy as np
    from flax import nnx

    from crescend_jax.encoders.muq_flax import ConformerConfig, MuQLayers

    if args.quick:
        config = ConformerConfig(hidden_size=128, num_heads=4, ffn_dim=512, conv_kernel=31).without_dropout()
        matmul_size = 1024
    else:
        config = ConformerConfig().without_dropout()  # MuQ-large's layer shape
        matmul_size = MATMUL_SIZE
    device = jax.devices()[0]

    a = jnp.asarray(np.random.default_rng(0).normal(size=(matmul_size, matmul_size)), jnp.float32)
    matmul = jax.jit(lambda a: a @ a).lower(a).compile()
    matmul_seconds = statistics.median(timed(matmul, (a,), 3))
    matmul_gflops = 2 * matmul_size**3 / matmul_seconds / 1e9
    del a, matmul

    frames_per_crop = round(args.seconds * FRAME_RATE)
    started = time.perf_counter()
    model = MuQLayers(config, args.first, remat=args.remat, rngs=nnx.Rngs(0))
    graphdef, params, rest = nnx.split(model, nnx.Param, ...)
    num_params = sum(int(np.prod(x.shape)) for x in jax.tree.leaves(params))
    rng = np.random.default_rng(1)
    frames = jnp.asarray(rng.standard_normal((args.batch, frames_per_crop, config.hidden_size)), jnp.float32)
    mask = jnp.ones((args.batch, frames_per_crop), bool)
    pooled_from = [i - args.first for i in POOLED_LAYERS if i >= args.first]
    target = jnp.asarray(rng.standard_normal((args.batch, len(pooled_from) * config.hidden_size)), jnp.float32)

    def loss_fn(params, frames, mask, target):
        states = nnx.merge(graphdef, params, rest)(frames, mask)
        weights = mask[..., None] / mask.sum(axis=1)[:, None, None]
        pooled = jnp.concatenate([(states[i] * weights).sum(axis=1) for i in pooled_from], axis=-1)
        return jnp.mean((pooled - target) ** 2)

    step = jax.jit(jax.value_and_grad(loss_fn)).lower(params, frames, mask, target).compile()
    compile_seconds = time.perf_counter() - started
    times = timed(step, (params, frames, mask, target), args.runs)
    seconds = statistics.median(times)
    layers = 12 - args.first + 1
    flops = 3 * layers * args.batch * frames_per_crop * layer_flops_per_frame(
        config.hidden_size, config.ffn_dim, config.conv_kernel, frames_per_crop)
    gflops = flops / seconds / 1e9
    peak = None
    try:
        stats = device.memory_stats() or {}
        peak = stats.get("peak_bytes_in_use")
    except Exception:  # noqa: BLE001 - backends without memory statistics
        pass
    if peak is None:
        import resource

        peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024
    library = library_step(args, config, matmul_gflops, flops)
    return {
        "library_step": library,
        "quick": args.quick, "first_layer": args.first, "layers": layers, "batch": args.batch,
        "crop_seconds": args.seconds, "crop_frames": frames_per_crop, "remat": args.remat,
        "hidden": config.hidden_size, "heads": config.num_heads, "ffn": config.ffn_dim,
        "parameters": num_params, "compile_seconds": round(compile_seconds, 2), "seconds": seconds, "times": times,
        "frames_per_second": args.batch * frames_per_crop / seconds,
        "audio_seconds_per_second": args.batch * args.seconds / seconds, "gflops": gflops,
        "matmul_gflops": matmul_gflops, "matmul_size": matmul_size, "fraction_of_matmul": gflops / matmul_gflops,
        "peak_memory_bytes": peak, "device": f"{device.platform}: {device.device_kind}",
    }


def library_step(args: argparse.Namespace, conformer, matmul_gflops: float, layer_flops: float) -> dict:
    """The trainer's own fine-tuning step: approach A behind ``trunk.kind="finetune"`` (layers K..12 from random
    weights of this shape, the pooled layers 9..12, A's head and loss, the trunk's own AdamW group), gathering the
    batch's crops on the device from a stored table of layer-(K-1) frames (`crescend_jax.train.step`)."""
    import tempfile

    import jax
    import numpy as np

    from crescend_jax.config import load_config
    from crescend_jax.data.table import EmbeddingTable
    from crescend_jax.encoders.muq import muq_config_dict
    from crescend_jax.models import approach_for
    from crescend_jax.models import trunk as trunk_lib
    from crescend_jax.models.contract import crop_frames
    from crescend_jax.models.functions import model_functions
    from crescend_jax.runtime import distributed
    from crescend_jax.train.input_pipeline import host_table, place_plan, place_table
    from crescend_jax.train.optimizer import build_optimizer
    from crescend_jax.train.step import build_train_step

    checkpoint = Path(tempfile.mkdtemp(prefix="muq-shape-"))  # only config.json is read (no conversion)
    (checkpoint / "config.json").write_text(json.dumps(muq_config_dict(
        encoder_dim=conformer.hidden_size, heads=conformer.num_heads, ffn_dim=conformer.ffn_dim,
        conv_kernel=conformer.conv_kernel, depth=12)))
    (checkpoint / "model.safetensors").touch()  # random layers: the weights are never converted here
    pooled_layers = tuple(i for i in POOLED_LAYERS if i >= args.first - 1)
    config = load_config(ROOT / "configs" / "approach_a.py", [
        "--config.encoder.name=muq", f"--config.encoder.muq.checkpoint={checkpoint}",
        f"--config.encoder.muq.layers={pooled_layers}", f"--config.encoder.muq.store_input_layer={args.first}",
        "--config.trunk.kind=finetune", f"--config.trunk.first_layer={args.first}",
        f"--config.trunk.remat={args.remat}", "--config.model.input=frames",
        f"--config.model.sampler.crop_seconds={args.seconds}", f"--config.train.batch_size={args.batch}",
        f"--config.model.sampler.group_size={min(4, args.batch)}"])
    rows, hidden = 4 * args.batch, conformer.hidden_size
    rng = np.random.default_rng(2)
    index = np.arange(rows)
    frames = [rng.standard_normal((round(1.5 * args.seconds * FRAME_RATE), hidden)).astype(np.float32)
              for _ in index]
    table = EmbeddingTable(
        keys=np.array([f"k{i}" for i in index]), compositions=np.array([f"c{i // 4 % 2}" for i in index]),
        pieces=np.array([f"c{i // 4 % 2}" for i in index]), performers=np.array([str(i % 4) for i in index]),
        groups=np.array([f"g{i // 4}" for i in index]), renders=np.array(["r"] * rows),
        label_mean=rng.uniform(size=(rows, 19)).astype(np.float32), label_std=np.full((rows, 19), 0.1, np.float32),
        label_truth=np.full((rows, 19), np.nan, np.float32), ratings=[np.zeros((0, 19), np.float32)] * rows,
        pooled=rng.standard_normal((rows, len(pooled_layers) * hidden)).astype(np.float32), frames=None,
        encoder="synthetic", frame_rate=FRAME_RATE, input_frames=frames, input_layer=args.first)
    table = trunk_lib.trunk_table(table, config)
    mesh = distributed.make_mesh()
    approach = approach_for(config)
    approach.check_config(config)
    functions = model_functions(approach, config, table.pooled.shape[1], mesh)
    state = functions.init(0)
    tx = build_optimizer(config.train, state, trunk_lib.param_groups(config))
    steps = build_train_step(functions, tx, mesh)
    opt_state = steps.init_optimizer(state)
    mean, std = trunk_lib.identity_stats(table)
    device_table = place_table(host_table(table, mean, std, crop_frames(config, table.frame_rate)), mesh)
    sampler = iter(approach.sampler(table, config, [0, 0]))
    started = time.perf_counter()
    state, opt_state, metrics = steps.step(state, opt_state, device_table, place_plan(next(sampler), mesh),
                                           np.int32(0))
    jax.block_until_ready(metrics["loss"])
    compile_seconds = time.perf_counter() - started
    times = []
    for step in range(1, args.runs + 1):
        started = time.perf_counter()
        state, opt_state, metrics = steps.step(state, opt_state, device_table, place_plan(next(sampler), mesh),
                                               np.int32(step))
        jax.block_until_ready(metrics["loss"])
        times.append(time.perf_counter() - started)
    seconds = statistics.median(times)
    frames_per_step = args.batch * round(args.seconds * FRAME_RATE)
    return {"seconds": seconds, "times": times, "compile_seconds": round(compile_seconds, 2),
            "frames_per_second": frames_per_step / seconds,
            "audio_seconds_per_second": args.batch * args.seconds / seconds,
            "gflops": layer_flops / seconds / 1e9, "fraction_of_matmul": layer_flops / seconds / 1e9 / matmul_gflops,
            "loss_finite": bool(np.isfinite(float(metrics["loss"])))}


def markdown(result: dict, machine: dict) -> str:
    r = result
    return "\n".join([
        "# Fine-tuning MuQ's top layers in Flax: forward + backward throughput",
        "",
        f"Machine: {machine['cpu']}, {machine['cores']} cores; device {r['device']}; Python {machine['python']}, "
        f"JAX {machine['jax']}. Load average before / after: {machine['load_average_before']} / "
        f"{machine['load_average_after']} (a shared machine makes timings noisy).",
        "",
        f"Layers {r['first_layer']}..12 ({r['layers']} layers, {r['parameters'] / 1e6:.1f}M parameters, width "
        f"{r['hidden']}, {r['heads']} heads, FFN {r['ffn']}{', quick sizes' if r['quick'] else ''}), batch "
        f"{r['batch']} x {r['crop_seconds']:g} s crops ({r['crop_frames']} frames), remat {r['remat']}, float32; "
        f"loss: MSE of the mean-pooled hidden states 9..12. Compilation {r['compile_seconds']} s.",
        "",
        "| frames/s | audio s/s | step s (median) | GFLOP/s | float32 matmul GFLOP/s | of matmul | peak memory GiB |",
        "|---|---|---|---|---|---|---|",
        f"| {r['frames_per_second']:.0f} | {r['audio_seconds_per_second']:.1f} | {r['seconds']:.3f} | "
        f"{r['gflops']:.1f} | {r['matmul_gflops']:.1f} ({r['matmul_size']}^3) | {r['fraction_of_matmul']:.0%} | "
        f"{r['peak_memory_bytes'] / 2**30:.2f} |",
        "",
        "**The trainer's fine-tuning step** (approach A with `trunk.kind=\"finetune\"`: the same layers, A's head "
        "and loss, AdamW on every layer, crops gathered on the device from a table of stored layer-(K-1) frames; "
        f"compiled in {r['library_step']['compile_seconds']} s):",
        "",
        "| frames/s | audio s/s | step s (median) | layer GFLOP/s | of matmul |",
        "|---|---|---|---|---|",
        f"| {r['library_step']['frames_per_second']:.0f} | {r['library_step']['audio_seconds_per_second']:.1f} | "
        f"{r['library_step']['seconds']:.3f} | {r['library_step']['gflops']:.1f} | "
        f"{r['library_step']['fraction_of_matmul']:.0%} |",
        "",
        "FLOPs per frame and layer (forward): 8 H F + 14 H^2 + 2 k H + 4 T H; a step counts 3x forward (the trainer's "
        "step is credited with the layers' FLOPs only: the head, the loss and the optimizer update are its overhead). "
        "Peak memory: the device's peak bytes in use where the backend reports it, else the process's peak RSS.",
        "",
    ])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--quick", action="store_true", help="tiny width and crops (a smoke run)")
    parser.add_argument("--first", type=int, default=9, help="first fine-tuned layer K (layers K..12)")
    parser.add_argument("--batch", type=int, default=8, help="crops per step")
    parser.add_argument("--seconds", type=float, default=10.0, help="crop length in seconds (25 frames/s)")
    parser.add_argument("--remat", action="store_true", help="rematerialise each layer (nnx.remat)")
    parser.add_argument("--runs", type=int, default=3, help="timed steps after compilation")
    parser.add_argument("--out", type=Path, default=ROOT / "bench", help="directory for muq_finetune.{md,json}")
    args = parser.parse_args()
    if args.quick and (args.batch, args.seconds) == (8, 10.0):
        args.batch, args.seconds, args.runs = 2, 2.0, 2
    if not 1 <= args.first <= 12:
        parser.error(f"--first {args.first}: a conformer layer 1..12")
    load_before = os.getloadavg()
    started = time.perf_counter()
    result = run(args)
    from importlib.metadata import version

    machine = {
        "cpu": cpu_model(), "cores": os.cpu_count(), "python": platform.python_version(), "jax": version("jax"),
        "load_average_before": [round(x, 2) for x in load_before],
        "load_average_after": load_average(),
        "wall_seconds": round(time.perf_counter() - started, 1),
    }
    print(json.dumps({k: v for k, v in result.items() if k not in ("times", "library_step")}), flush=True)
    print(json.dumps({k: v for k, v in result["library_step"].items() if k != "times"}), flush=True)
    args.out.mkdir(parents=True, exist_ok=True)
    (args.out / "muq_finetune.json").write_text(json.dumps({"machine": machine, "result": result}, indent=2) + "\n")
    (args.out / "muq_finetune.md").write_text(markdown(result, machine))
    print(f"wrote {args.out / 'muq_finetune.md'} and muq_finetune.json in {machine['wall_seconds']} s")


if __name__ == "__main__":
    main()
