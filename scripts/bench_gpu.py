"""One-call accelerator benchmark (``make bench-gpu``): every approach's step, the InfoNCE alone, MFU, compile times.

    python scripts/bench_gpu.py                 # on a GPU machine, within --budget-s seconds (default 480)
    python scripts/bench_gpu.py --dry-run       # tiny sizes on any backend (CPU: seconds), what CI runs

On the default JAX device (one device), within a wall-clock budget:

1. the device's own matmul rate, float32 (at the default matmul precision: TF32 tensor cores on NVIDIA GPUs since
   Ampere) and bfloat16, on an [n, n]^2 product;
2. every approach's train step (baseline, A, B, C; input width ``--dim``, 4,096 = MuQ layers 9-12) at each of
   ``--rows`` (1k-64k) in float32 and, once the config has the field, with ``train.compute_dtype="bfloat16"`` (until
   then bf16 is skipped and the report says so): the step alone (a gathered batch) and the step with its input path
   (host index sampling, placement, on-device gather), the input path's share, compile time (first call of both),
   matmul FLOPs counted exactly (`bench_common.count_flops`) and MFU = matmul FLOP/s / the device's peak;
3. the exact tiled InfoNCE alone (forward + backward, z [N, 256], groups of 4) up to N = 1,048,576.

MFU is against the vendor's dense (no sparsity) peak for the device, from `PEAKS` (float32 reported against both
the plain FP32 and the TF32 tensor-core peak), and against the matmul rate measured in the same run. Cells run in
order of size; a cell whose predicted time (from the previous size) does not fit the remaining budget is skipped
and listed. Writes gpu.md and gpu.json into bench/tmp/ (``--publish``: bench/), the device named.
"""

from __future__ import annotations

import argparse
import json
import re
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from bench_common import (ROOT, add_output_args, count_flops, load_average, machine, median,  # noqa: E402
                          output_dir, timed)

# Dense peak TFLOP/s (sparsity figures halved) from the vendors' datasheets. Matched against jax's device_kind in
# order (the first pattern that matches wins): H200 before H100, the H100 variants before the SXM default.
PEAKS = [
    (r"H200 NVL", {"fp32": 60.0, "tf32": 417.5, "bf16": 835.5}, "NVIDIA H200 NVL datasheet (2024)"),
    (r"H200", {"fp32": 67.0, "tf32": 494.7, "bf16": 989.4}, "NVIDIA H200 Tensor Core GPU datasheet, SXM (2024)"),
    (r"H100.*PCIe", {"fp32": 51.2, "tf32": 378.0, "bf16": 756.0}, "NVIDIA H100 Tensor Core GPU datasheet, PCIe"),
    (r"H100.*NVL", {"fp32": 60.0, "tf32": 417.5, "bf16": 835.5}, "NVIDIA H100 Tensor Core GPU datasheet, NVL"),
    (r"H100", {"fp32": 67.0, "tf32": 494.7, "bf16": 989.4}, "NVIDIA H100 Tensor Core GPU datasheet, SXM5"),
    (r"A100", {"fp32": 19.5, "tf32": 156.0, "bf16": 312.0}, "NVIDIA A100 Tensor Core GPU datasheet (SXM4 and PCIe)"),
    (r"L40S", {"fp32": 91.6, "tf32": 183.0, "bf16": 362.1}, "NVIDIA L40S datasheet"),
    (r"\bL4\b", {"fp32": 30.3, "tf32": 60.0, "bf16": 121.0}, "NVIDIA L4 Tensor Core GPU datasheet"),
]
APPROACHES = ("baseline", "approach_a", "approach_b", "approach_c")
FULL = {"rows": "1024,8192,65536", "infonce": "16384,65536,262144,1048576", "dim": 4096, "repeats": 10,
        "matmul": 8192, "budget": 480.0}
DRY = {"rows": "64", "infonce": "256", "dim": 64, "repeats": 2, "matmul": 256, "budget": 900.0}  # never binds
INFONCE_DIM, INFONCE_GROUP = 256, 4


def device_peak(kind: str) -> tuple[dict[str, float] | None, str]:
    """(dense peak TFLOP/s by precision, source) for a jax device_kind, or (None, why) for an unknown device."""
    for pattern, peak, source in PEAKS:
        if re.search(pattern, kind, flags=re.IGNORECASE):
            return peak, source
    return None, f"no peak known for {kind!r}: MFU against the measured matmul rate only"


def bf16_supported() -> bool:
    """Whether the training config has ``train.compute_dtype`` (phase 2 of issue 22 adds it)."""
    from crescend_jax.config import load_config

    return "compute_dtype" in load_config(ROOT / "configs" / "baseline.py", []).train


def matmul_rates(size: int, repeats: int) -> dict[str, float]:
    """Measured FLOP/s of an [size, size]^2 product in float32 (default precision) and bfloat16 (f32 accumulate)."""
    import jax
    import jax.numpy as jnp

    out = {}
    for label, dtype in (("fp32", jnp.float32), ("bf16", jnp.bfloat16)):
        a = jax.random.normal(jax.random.key(0), (size, size), dtype)
        f = jax.jit(lambda x: jnp.dot(x, x, preferred_element_type=jnp.float32))
        jax.block_until_ready(f(a))
        out[label] = 2 * size**3 / median(timed(lambda: f(a), repeats))
    return out


class Budget:
    """Wall-clock budget: ``fits(seconds)`` says whether a cell predicted to take ``seconds`` still fits."""

    def __init__(self, seconds: float):
        self.end = time.perf_counter() + seconds

    def left(self) -> float:
        return self.end - time.perf_counter()

    def fits(self, predicted: float) -> bool:
        return predicted < self.left()


def bench_steps(rows: list[int], dim: int, repeats: int, dtypes: list[str], budget: Budget, peak: dict | None,
                rates: dict[str, float], approaches: tuple[str, ...]) -> tuple[list[dict], list[str]]:
    """Every approach's step at every size and dtype (module doc, part 2): (results, skipped cells)."""
    import bench_train

    results, skipped, last = [], [], {}
    for n in rows:
        for dtype in dtypes:
            for name in approaches:
                previous = last.get((name, dtype))  # (rows, compile s, the rest s) of the last size measured
                predicted = 0.0 if previous is None else previous[1] + previous[2] * n / previous[0]
                label = f"{name} {dtype} {n:,} rows"
                if not budget.fits(predicted):
                    skipped.append(f"{label} (predicted {predicted:.0f} s, {budget.left():.0f} s left)")
                    continue
                start = time.perf_counter()
                overrides = ("--config.train.compute_dtype=bfloat16",) if dtype == "bf16" else ()
                try:
                    step = bench_train.build_step(name, n, dim, overrides, table_rows=n)
                    timed(step.alone, 1)
                    alone, with_input = bench_train.measure(step, repeats)
                except Exception as err:  # noqa: BLE001 -- an out-of-memory cell is a result, not a crash
                    skipped.append(f"{label}: {type(err).__name__}: {str(err).splitlines()[0][:160]}")
                    continue
                seconds, seconds_input = median(alone), median(with_input)
                achieved = step.flops.dot / seconds
                key = "bf16" if dtype == "bf16" else "fp32"
                result = {"approach": name, "rows": n, "dtype": dtype, "seconds_alone": seconds,
                          "seconds_with_input": seconds_input, "input_share": 1.0 - seconds / seconds_input,
                          "encoded_per_s": n / seconds, "pairs_per_s": step.pairs_per_step / seconds,
                          "compile_seconds": step.compile_seconds, "matmul_flops": step.flops.dot,
                          "matmul_tflops": achieved / 1e12, "of_measured_matmul": achieved / rates[key]}
                if peak:
                    result["mfu"] = achieved / (peak[key] * 1e12)
                    if key == "fp32":
                        result["mfu_tf32"] = achieved / (peak["tf32"] * 1e12)
                results.append(result)
                last[(name, dtype)] = (n, step.compile_seconds, time.perf_counter() - start - step.compile_seconds)
                print(json.dumps({k: round(v, 5) if isinstance(v, float) else v for k, v in result.items()}),
                      flush=True)
    return results, skipped


def bench_infonce(sizes: list[int], repeats: int, budget: Budget, peak: dict | None,
                  rates: dict[str, float]) -> tuple[list[dict], list[str]]:
    """The tiled InfoNCE alone, forward + backward on z [N, 256] (module doc, part 3)."""
    import jax
    import jax.numpy as jnp

    from crescend_jax.losses.infonce import infonce_loss

    grad = jax.jit(jax.value_and_grad(lambda z, g, m: infonce_loss(z, g, where=m, temperature=0.1)[0]))
    results, skipped, last = [], [], None
    for n in sizes:
        predicted = 0.0 if last is None else last[1] * (n / last[0]) ** 2
        if not budget.fits(predicted):
            skipped.append(f"InfoNCE {n:,} x {INFONCE_DIM} (predicted {predicted:.0f} s, {budget.left():.0f} s left)")
            continue
        start = time.perf_counter()
        z = jax.random.normal(jax.random.key(0), (n, INFONCE_DIM), jnp.float32)
        z = z / jnp.linalg.norm(z, axis=1, keepdims=True)
        group, mask = jnp.arange(n, dtype=jnp.int32) // INFONCE_GROUP, jnp.ones(n, jnp.float32)
        flops = count_flops(grad, z, group, mask)
        try:
            compile_start = time.perf_counter()
            jax.block_until_ready(grad(z, group, mask))
            compile_seconds = time.perf_counter() - compile_start
            times = timed(lambda: grad(z, group, mask), repeats if n <= 65536 else 2)
        except Exception as err:  # noqa: BLE001
            skipped.append(f"InfoNCE {n:,}: {type(err).__name__}: {str(err).splitlines()[0][:160]}")
            continue
        seconds = median(times)
        result = {"n": n, "dim": INFONCE_DIM, "seconds": seconds, "compile_seconds": compile_seconds,
                  "matmul_flops": flops.dot, "exp_count": flops.transcendental,
                  "matmul_tflops": flops.dot / seconds / 1e12,
                  "of_measured_matmul": flops.dot / seconds / rates["fp32"]}
        if peak:
            result["mfu"] = flops.dot / seconds / (peak["fp32"] * 1e12)
            result["mfu_tf32"] = flops.dot / seconds / (peak["tf32"] * 1e12)
        results.append(result)
        last = (n, time.perf_counter() - start)
        print(json.dumps(result), flush=True)
    return results, skipped


def main(argv: list[str] | None = None) -> Path:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--dry-run", action="store_true", help="tiny sizes on any backend (CI)")
    parser.add_argument("--rows", default=None, help=f"batch rows (default {FULL['rows']})")
    parser.add_argument("--infonce", default=None, help=f"InfoNCE sizes (default {FULL['infonce']})")
    parser.add_argument("--dim", type=int, default=None, help="input width (default 4096)")
    parser.add_argument("--approaches", default=",".join(APPROACHES))
    parser.add_argument("--repeats", type=int, default=None)
    parser.add_argument("--budget-s", type=float, default=None, help="wall-clock budget (default 480 s)")
    add_output_args(parser)
    args = parser.parse_args(argv)
    mode = DRY if args.dry_run else FULL
    budget = Budget(args.budget_s or mode["budget"])
    out = output_dir(args)
    import jax

    info = machine()
    kind = jax.devices()[0].device_kind
    peak, source = device_peak(kind)
    if info["backend"] == "cpu" and not args.dry_run:
        raise SystemExit("no accelerator: the default backend is cpu; run this on a GPU machine, or --dry-run for "
                         "the CPU smoke run (tiny sizes)")
    dtypes = ["fp32"] + (["bf16"] if bf16_supported() else [])
    bf16_note = ("" if "bf16" in dtypes else "bf16 skipped: the config has no `train.compute_dtype` field yet "
                 "(issue 22 phase 2 adds it); rerun this script once it exists.")
    repeats = args.repeats or mode["repeats"]
    rates = matmul_rates(mode["matmul"], repeats)
    steps, skipped = bench_steps([int(r) for r in (args.rows or mode["rows"]).split(",")],
                                 args.dim or mode["dim"], repeats, dtypes, budget, peak, rates,
                                 tuple(args.approaches.split(",")))
    infonce, skipped_infonce = bench_infonce([int(n) for n in (args.infonce or mode["infonce"]).split(",")],
                                             repeats, budget, peak, rates)
    info.update(device_kind=kind, peak_tflops=peak, peak_source=source, matmul_tflops={k: v / 1e12 for k, v in
                                                                                      rates.items()},
                matmul_size=mode["matmul"], dry_run=args.dry_run, dim=args.dim or mode["dim"],
                budget_s=args.budget_s or mode["budget"], load_average_end=load_average(),
                matmul_precision=str(jax.config.jax_default_matmul_precision))
    report = {"machine": info, "steps": steps, "infonce": infonce, "skipped": skipped + skipped_infonce,
              "bf16_note": bf16_note}
    (out / "gpu.json").write_text(json.dumps(report, indent=1))
    (out / "gpu.md").write_text(markdown(report))
    print(f"wrote {out / 'gpu.md'} and gpu.json")
    return out


def _pct(value: float | None) -> str:
    return "-" if value is None else f"{value:.1%}"


def markdown(report: dict) -> str:
    info = report["machine"]
    peak = info["peak_tflops"]
    lines = [
        "# Accelerator benchmark (`scripts/bench_gpu.py`)" + (" -- DRY RUN (tiny sizes)" if info["dry_run"] else ""),
        "",
        f"{info['date']}: **{info['device_kind']}** ({info['backend']}, {info['devices']} device(s)), jax "
        f"{info['jax']}, default matmul precision {info['matmul_precision']}. Dense peak: "
        + (f"FP32 {peak['fp32']} / TF32 {peak['tf32']} / BF16 {peak['bf16']} TFLOP/s ({info['peak_source']})"
           if peak else info["peak_source"])
        + f". Measured [{info['matmul_size']:,}]^2 matmul: FP32 (default precision) "
          f"{info['matmul_tflops']['fp32']:.1f}, BF16 {info['matmul_tflops']['bf16']:.1f} TFLOP/s. Input width "
          f"{info['dim']:,}; budget {info['budget_s']:.0f} s.",
    ]
    if report["bf16_note"]:
        lines += ["", report["bf16_note"]]
    lines += ["", "## Train steps", "",
              "MFU = matmul FLOPs (exact count) per second of the step alone / the dense peak (FP32 cells: against "
              "FP32 and, second, TF32); **of matmul** = against the matmul rate measured above; **input share** = "
              "the part of the trainer's step (sampling, placement, gather, update) not in the update alone.", "",
              "| approach | dtype | rows | encoded/s | pairs/s | step ms | input share | compile s | matmul TFLOP/s | "
              "MFU | MFU (TF32) | of matmul |", "|---|---|---|---|---|---|---|---|---|---|---|---|"]
    for r in report["steps"]:
        lines.append(f"| {r['approach']} | {r['dtype']} | {r['rows']:,} | {r['encoded_per_s']:,.0f} | "
                     f"{r['pairs_per_s']:,.0f} | {1e3 * r['seconds_alone']:.2f} | {r['input_share']:.0%} | "
                     f"{r['compile_seconds']:.1f} | {r['matmul_tflops']:.2f} | {_pct(r.get('mfu'))} | "
                     f"{_pct(r.get('mfu_tf32'))} | {r['of_measured_matmul']:.0%} |")
    lines += ["", f"## InfoNCE alone (forward + backward, z [N, {INFONCE_DIM}], groups of {INFONCE_GROUP})", "",
              "| N | s | compile s | matmul TFLOP/s | MFU (FP32) | MFU (TF32) | of matmul |",
              "|---|---|---|---|---|---|---|"]
    for r in report["infonce"]:
        lines.append(f"| {r['n']:,} | {r['seconds']:.3f} | {r['compile_seconds']:.1f} | {r['matmul_tflops']:.2f} | "
                     f"{_pct(r.get('mfu'))} | {_pct(r.get('mfu_tf32'))} | {r['of_measured_matmul']:.0%} |")
    if report["skipped"]:
        lines += ["", "Skipped (time budget or error): " + "; ".join(report["skipped"])]
    return "\n".join(lines) + "\n"


if __name__ == "__main__":
    main()
