"""Benchmark the tiled / sharded InfoNCE against the B x B reference: forward+backward time, peak RSS, FLOP/s.

Every configuration runs in its own subprocess under an address-space cap (RLIMIT_AS), so one that needs more memory
fails cleanly ("out of memory (> cap)") instead of thrashing the machine; its peak RSS comes from os.wait4.
Writes infonce.md and infonce.json into bench/tmp/ (--publish: bench/).
Usage: python scripts/bench_infonce.py [--quick] [--cap-gib 6] [--publish]
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import resource
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(Path(__file__).resolve().parent))
from bench_common import add_output_args, cpu_model, load_average, output_dir  # noqa: E402
DIM = 256
TEMPERATURE = 0.07
GROUP_SIZE = 8  # performances per piece in a synthetic batch
MATMUL_SIZE = 4096  # the reference matmul: [n, n] @ [n, n] float32


def _child(spec: dict) -> dict:
    """Run one configuration in this (child) process and return its measurements."""
    if spec.get("devices", 1) > 1:
        os.environ["XLA_FLAGS"] = f"--xla_force_host_platform_device_count={spec['devices']}"
    os.environ.setdefault("JAX_PLATFORMS", "cpu")
    import jax
    import jax.numpy as jnp
    import numpy as np

    from crescend_jax.losses.infonce import infonce_loss, naive_infonce_loss, sharded_infonce_loss

    def timed(fn, args, runs):
        compiled = jax.jit(fn).lower(*args).compile()
        times = []
        for _ in range(runs):
            start = time.perf_counter()
            jax.block_until_ready(compiled(*args))
            times.append(time.perf_counter() - start)
        return statistics.median(times), times

    if spec["impl"] == "baseline":  # Python + JAX + a tiny loss: the floor under every peak RSS below
        z = jnp.asarray(np.eye(8, DIM), jnp.float32)
        jax.block_until_ready(jax.grad(lambda z: infonce_loss(z, jnp.zeros(8, jnp.int32), temperature=0.1)[0])(z))
        return {}

    # the matmul rate right before the loss, in the same process, so that load drift between configurations cancels
    a = jnp.asarray(np.random.default_rng(0).normal(size=(MATMUL_SIZE, MATMUL_SIZE)), jnp.float32)
    matmul_seconds, _ = timed(lambda a: a @ a, (a,), 3)
    del a
    matmul_gflops = 2 * MATMUL_SIZE**3 / matmul_seconds / 1e9

    batch = spec["batch"]
    rng = np.random.default_rng(0)
    z = rng.normal(size=(batch, DIM)).astype(np.float32)
    z /= np.linalg.norm(z, axis=1, keepdims=True)
    group = (np.arange(batch) // GROUP_SIZE).astype(np.int32)
    mask = np.ones(batch, np.float32)
    args = (jnp.asarray(z), jnp.asarray(group), jnp.asarray(mask))
    if spec["impl"] == "naive":
        loss_fn = lambda z, g, m: naive_infonce_loss(z, g, where=m, temperature=TEMPERATURE)  # noqa: E731
    elif spec["impl"] == "tiled":
        def loss_fn(z, g, m):
            return infonce_loss(z, g, where=m, temperature=TEMPERATURE, block_size=spec["block"])
    else:
        from jax.sharding import Mesh, NamedSharding
        from jax.sharding import PartitionSpec as P

        mesh = Mesh(np.array(jax.devices()), ("data",))
        args = jax.device_put(args, NamedSharding(mesh, P("data")))

        def loss_fn(z, g, m):
            return sharded_infonce_loss(
                z, g, where=m, temperature=TEMPERATURE, mesh=mesh, block_size=spec["block"], strategy=spec["impl"]
            )

    step = jax.value_and_grad(lambda z, g, m: loss_fn(z, g, m), has_aux=True)
    median, times = timed(step, args, spec["runs"])
    # forward 2 B^2 D; backward: recompute s 2 B^2 D + H @ z 2 B^2 D, or H @ z alone when the batch is one tile on one
    # device (the forward's exp(s - lse) is kept); the naive loss's autodiff: s, then ds z twice
    one_tile = spec["impl"] == "tiled" and batch <= spec["block"]
    flops = (4 if one_tile else 6) * batch**2 * DIM
    gflops = flops / median / 1e9
    return {
        "seconds": median, "times": times, "gflops": gflops, "matmul_gflops": matmul_gflops,
        "fraction_of_matmul": gflops / matmul_gflops,
    }


def _run(spec: dict, cap_bytes: int, timeout: float) -> dict:
    """Run ``spec`` in a subprocess capped at ``cap_bytes`` of address space; add its peak RSS (os.wait4)."""

    def limit():
        resource.setrlimit(resource.RLIMIT_AS, (cap_bytes, cap_bytes))

    with tempfile.TemporaryFile("w+") as out, tempfile.TemporaryFile("w+") as err:
        proc = subprocess.Popen(
            [sys.executable, __file__, "--child", json.dumps(spec)], stdout=out, stderr=err, preexec_fn=limit, cwd=ROOT
        )
        deadline = time.monotonic() + timeout
        pid, status, usage = os.wait4(proc.pid, os.WNOHANG)
        while pid == 0:
            if time.monotonic() > deadline:
                proc.kill()
                os.wait4(proc.pid, 0)
                return {**spec, "status": f"timed out (> {timeout:.0f} s)"}
            time.sleep(0.2)
            pid, status, usage = os.wait4(proc.pid, os.WNOHANG)
        proc.returncode = os.waitstatus_to_exitcode(status)  # reaped here; keep Popen from waiting again
        out.seek(0)
        err.seek(0)
        lines = [line for line in out.read().splitlines() if line.startswith("{")]
        error = err.read()
    result = {**spec, "peak_rss_bytes": usage.ru_maxrss * 1024}
    if proc.returncode != 0 or not lines:
        oom = any(sign in error for sign in ("RESOURCE_EXHAUSTED", "MemoryError", "Out of memory", "bad_alloc"))
        cap = f"out of memory (> {cap_bytes / 2**30:.0f} GiB cap)"
        return {**result, "status": cap if oom else "failed: " + error.strip()[-300:]}
    return {**result, "status": "ok", **json.loads(lines[-1])}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--child", help=argparse.SUPPRESS)
    parser.add_argument("--quick", action="store_true", help="small sizes only (a smoke run)")
    parser.add_argument("--cap-gib", type=float, default=6.0, help="address-space cap per configuration")
    add_output_args(parser)
    args = parser.parse_args()
    if args.child:
        spec = json.loads(args.child)
        print(json.dumps(_child(spec)), flush=True)
        return

    batches = [512, 1024] if args.quick else [4096, 16384, 65536]
    runs = {512: 3, 1024: 3, 4096: 5, 16384: 3, 65536: 1}
    specs = [{"impl": "baseline"}]
    from crescend_jax.losses.infonce import DEFAULT_BLOCK_SIZE

    default = DEFAULT_BLOCK_SIZE["cpu"]
    for batch in batches:
        specs.append({"impl": "tiled", "batch": batch, "block": default, "runs": runs[batch]})
        specs.append({"impl": "naive", "batch": batch, "runs": min(runs[batch], 2)})
    mid = batches[1]
    specs += [{"impl": "tiled", "batch": mid, "block": block, "runs": runs[mid]}
              for block in sorted({512, 1024, 2048, 4096} - {default})]
    specs += [
        {"impl": strategy, "batch": mid, "block": 1024, "runs": runs[mid], "devices": 8}
        for strategy in ("ring", "allgather")
    ]

    cap = int(args.cap_gib * 2**30)
    load_before = os.getloadavg()
    started = time.perf_counter()
    results = []
    for spec in specs:
        spec.setdefault("devices", 1)
        result = _run(spec, cap, timeout=400)
        results.append(result)
        print(json.dumps({k: v for k, v in result.items() if k != "times"}), flush=True)
    matmul_gflops = statistics.median(r["matmul_gflops"] for r in results if "matmul_gflops" in r)
    machine = {
        "cpu": cpu_model(),
        "cores": os.cpu_count(),
        "memory_gib": round(os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES") / 2**30, 1),
        "python": platform.python_version(),
        "jax": _jax_version(),
        "load_average_before": [round(x, 2) for x in load_before],
        "load_average_after": load_average(),
        "wall_seconds": round(time.perf_counter() - started, 1),
        "cap_gib": args.cap_gib,
    }
    out_dir = output_dir(args)
    (out_dir / "infonce.json").write_text(json.dumps({"machine": machine, "results": results}, indent=2) + "\n")
    (out_dir / "infonce.md").write_text(_markdown(machine, results, matmul_gflops))
    print(f"wrote {out_dir / 'infonce.md'} and infonce.json in {machine['wall_seconds']} s")


def _jax_version() -> str:
    from importlib.metadata import version

    return version("jax")


def _markdown(machine: dict, results: list[dict], matmul_gflops: float) -> str:
    def gib(r):
        return f"{r['peak_rss_bytes'] / 2**30:.2f}" if "peak_rss_bytes" in r else "-"

    baseline = next(r for r in results if r["impl"] == "baseline")
    lines = [
        "# InfoNCE: tiled custom-VJP loss vs the B x B reference",
        "",
        f"Machine: {machine['cpu']}, {machine['cores']} cores, {machine['memory_gib']} GiB; Python {machine['python']}, "
        f"JAX {machine['jax']}, CPU backend. Load average before / after: {machine['load_average_before']} / "
        f"{machine['load_average_after']} (shared machine: timings are noisy). Whole run {machine['wall_seconds']} s.",
        "",
        f"float32 matmul rate ({MATMUL_SIZE}^3 jnp.dot, measured in each child right before its loss, median over "
        f"children): **{matmul_gflops:.1f} GFLOP/s**; \"of matmul\" divides by the child's own rate. "
        "One forward+backward of the loss "
        f"is counted as 6 B^2 D FLOPs (forward s = z z^T: 2 B^2 D; backward: recompute s 2 B^2 D + H z 2 B^2 D), 4 B^2 D "
        "for a batch that is one tile (the backward reuses the forward's exp(s - lse)), "
        f"D = {DIM}, T = {TEMPERATURE}, groups of {GROUP_SIZE}. Time: median fwd+bwd after AOT compilation. Peak "
        f"memory: the child process's peak RSS (ru_maxrss), which includes Python + JAX "
        f"({gib(baseline)} GiB for a tiny loss); each child is capped at {machine['cap_gib']:.0f} GiB of address space.",
        "",
        "| implementation | devices | batch | block | fwd+bwd s | GFLOP/s | of matmul | peak RSS GiB | status |",
        "|---|---|---|---|---|---|---|---|---|",
    ]
    for r in results:
        if r["impl"] == "baseline":
            continue
        timing = (
            f"{r['seconds']:.3f} | {r['gflops']:.1f} | {r['fraction_of_matmul']:.0%}" if r["status"] == "ok"
            else "- | - | -"
        )
        lines.append(
            f"| {r['impl']} | {r['devices']} | {r['batch']} | {r.get('block', '-')} | {timing} | {gib(r)} | "
            f"{r['status']} |"
        )
    largest = max((r for r in results if r["impl"] == "tiled"), key=lambda r: r["batch"])
    if largest["status"] == "ok":
        memory_ok = largest["peak_rss_bytes"] < 2 * 2**30
        rate_ok = largest["fraction_of_matmul"] >= 0.7
        lines += [
            "",
            f"Goal at batch {largest['batch']:,} (under 2 GiB peak, at least 70% of the matmul rate): peak "
            f"{gib(largest)} GiB ({'met' if memory_ok else 'missed'}), {largest['fraction_of_matmul']:.0%} of the "
            f"matmul rate ({'met' if rate_ok else 'missed'}).",
        ]
    lines += [
        "",
        "On a loaded machine the matmul rate and the loss can be timed under different load, so \"of matmul\" above "
        "100% means the load dropped between the two, not a faster-than-matmul loss.",
        "",
        "`ring` / `allgather`: `sharded_infonce_loss` on 8 simulated CPU devices sharing the same cores (XLA_FLAGS "
        "--xla_force_host_platform_device_count=8): this measures the sharded code's overhead, not multi-device "
        "scaling or interconnect overlap.",
        "",
    ]
    return "\n".join(lines)


if __name__ == "__main__":
    main()
