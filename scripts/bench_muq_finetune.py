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
import time
from pathlib import Path

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
    return {
        "quick": args.quick, "first_layer": args.first, "layers": layers, "batch": args.batch,
        "crop_seconds": args.seconds, "crop_frames": frames_per_crop, "remat": args.remat,
        "hidden": config.hidden_size, "heads": config.num_heads, "ffn": config.ffn_dim,
        "parameters": num_params, "compile_seconds": round(compile_seconds, 2), "seconds": seconds, "times": times,
        "frames_per_second": args.batch * frames_per_crop / seconds,
        "audio_seconds_per_second": args.batch * args.seconds / seconds, "gflops": gflops,
        "matmul_gflops": matmul_gflops, "matmul_size": matmul_size, "fraction_of_matmul": gflops / matmul_gflops,
        "peak_memory_bytes": peak, "device": f"{device.platform}: {device.device_kind}",
    }


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
        "FLOPs per frame and layer (forward): 8 H F + 14 H^2 + 2 k H + 4 T H; a step counts 3x forward. Peak memory: "
        "the device's peak bytes in use where the backend reports it, else the process's peak RSS.",
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
        "cpu": _cpu_name(), "cores": os.cpu_count(), "python": platform.python_version(), "jax": version("jax"),
        "load_average_before": [round(x, 2) for x in load_before],
        "load_average_after": [round(x, 2) for x in os.getloadavg()],
        "wall_seconds": round(time.perf_counter() - started, 1),
    }
    print(json.dumps({k: v for k, v in result.items() if k != "times"}), flush=True)
    args.out.mkdir(parents=True, exist_ok=True)
    (args.out / "muq_finetune.json").write_text(json.dumps({"machine": machine, "result": result}, indent=2) + "\n")
    (args.out / "muq_finetune.md").write_text(markdown(result, machine))
    print(f"wrote {args.out / 'muq_finetune.md'} and muq_finetune.json in {machine['wall_seconds']} s")


def _cpu_name() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


if __name__ == "__main__":
    main()
