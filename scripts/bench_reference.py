"""Our training steps against the PyTorch reference's, back to back in one run: ``python scripts/bench_reference.py``.

The reference (CrescendAI's ``model/archive/disentanglement`` at 87573285, PyTorch Lightning) is never part of this
repository: ``bash ../shared/peer-bench/setup.sh PEER_GIT_DIR PEER`` prepares its benchmark harness in a folder
outside it (``--peer``, default $CRESCEND_PEER or /work/peer); without it this script says so and exits 0.

For every input width (``--dims``), batch and approach (A, B, C) it runs, on this machine, one after the other:

    ours (half the steps) -> the reference's steps (a child process of the harness) -> ours (the other half)

so that both sides see the same load; ``--rounds`` repeats the sandwich. Like for like:

* **same work per step**: a batch of ``batch`` performances encoded on both sides at the same input width. The
  reference's A and B read N pairs and encode both members (2N performances), so they run at N = batch / 2 pairs;
  its C reads N = batch performances. A uses the harness's dense InfoNCE (same value and gradient as the reference's
  loop, which takes minutes at 1,024 rows); fixed batches and no data loading on both sides (ours: the step alone).
* **two units, never divided one by the other**: performances encoded per second (the ratio ours / reference is
  the execution-speed comparison) and distinct same-music pairs supervised per second (the reference: N pairs per
  step for A and B, 0.5 per encoded performance, none for its pointwise C; ours: 1.5 (A, C) or 3.5 (B) per row).
* **FLOPs**: matrix-product FLOPs per step counted exactly on both sides (ours from the jaxpr, scans times trips;
  the reference's with torch's FlopCounterMode, `bench_reference_flops.py`), and each side's share of its own
  framework's float32 matmul rate ([4096, 4096]^2 at the start and end of the run: JAX in this process, torch on
  the reference's threads, ``--reference-threads``, the harness's 2 by default).

Read it only from a quiet machine: torch's OpenMP threads meet at a barrier after every eager operation, and on an
oversubscribed machine each barrier waits for a descheduled thread, so its 2-thread steps slow down many times more
than one large product or XLA's compiled step (compare ``--reference-threads 1``); the report flags a loaded run.

Medians over all timed steps of a cell. Writes reference.md and reference.json into bench/tmp/ (``--publish``:
bench/). ``--quick`` (about 6 minutes): batches 256 and 1,024, fewer steps. The full run (about 20 minutes on an
idle 2-core machine): batches 256, 1,024 and 4,096 at widths 4,096 and 1,024.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from bench_common import (add_output_args, load_average, load_note, machine, matmul_rate,  # noqa: E402
                          median, output_dir, timed)

OURS = {"A": "approach_a", "B": "approach_b", "C": "approach_c"}
REFERENCE_PAIRED = ("A", "B")  # the reference's A and B read pairs and encode both members
QUICK = {"batches": "256,1024", "steps": 4, "warmup": 2}
FULL = {"batches": "256,1024,4096", "steps": 10, "warmup": 3}
DEFAULT_PEER = os.environ.get("CRESCEND_PEER", "/work/peer")


def reference_n(approach: str, batch: int) -> int:
    """The reference's batch argument that encodes ``batch`` performances: pairs for A and B, rows for C."""
    return batch // 2 if approach in REFERENCE_PAIRED else batch


def reference_pairs_per_step(approach: str, n: int) -> int:
    """Same-music pairs the reference's step supervises: its N pairs (A, B); none for the pointwise C."""
    return n if approach in REFERENCE_PAIRED else 0


def peer_python(peer: Path) -> Path:
    return peer / "venv" / "bin" / "python"


def run_reference(peer: Path, approach: str, n: int, dim: int, steps: int, warmup: int, threads: int = 2) -> dict:
    """One measurement of the reference harness (its own child process, memory- and time-capped): the JSON result
    with ``step_times_s`` and ``status``."""
    command = [str(peer_python(peer)), str(peer / "bench_train.py"), "--approaches", approach, "--batch-sizes",
               str(n), "--input-dim", str(dim), "--steps", str(steps), "--warmup", str(warmup), "--no-progress",
               "--time-cap", "900", "--threads", str(threads)]
    if approach == "A":
        command += ["--infonce", "vectorized"]
    done = subprocess.run(command, capture_output=True, text=True, cwd=peer)
    for line in reversed(done.stdout.splitlines()):
        try:
            return json.loads(line)
        except ValueError:
            continue
    return {"status": f"no result (rc {done.returncode}): {done.stderr[-300:]}"}


def reference_flops(peer: Path, cells: list[tuple[str, int, int]], threads: int = 2) -> tuple[dict, float]:
    """({(approach, n, dim): matmul FLOPs per step}, torch's float32 matmul FLOP/s) from `bench_reference_flops.py`
    run with the harness's Python."""
    spec = ",".join(f"{a}:{n}:{d}" for a, n, d in cells)
    done = subprocess.run([str(peer_python(peer)), str(Path(__file__).parent / "bench_reference_flops.py"),
                           "--peer", str(peer), "--cells", spec, "--threads", str(threads)], capture_output=True,
                          text=True, check=True)
    flops, rate = {}, float("nan")
    for line in done.stdout.splitlines():
        record = json.loads(line)
        if "torch_matmul_flops" in record:
            rate = record["torch_matmul_flops"]
        else:
            flops[(record["approach"], record["n"], record["dim"])] = record["matmul_flops"]
    return flops, rate


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--peer", default=DEFAULT_PEER, help="the reference harness folder (peer-bench setup.sh)")
    parser.add_argument("--approaches", default="A,B,C")
    parser.add_argument("--dims", default="4096,1024")
    parser.add_argument("--batches", default=None, help=f"performances encoded per step (default {FULL['batches']})")
    parser.add_argument("--steps", type=int, default=None, help="timed steps per side and round")
    parser.add_argument("--warmup", type=int, default=None, help="the reference's untimed steps per child")
    parser.add_argument("--rounds", type=int, default=1)
    parser.add_argument("--reference-threads", type=int, default=2,
                        help="torch threads of the reference (the harness's 2; JAX uses its own pool on all cores)")
    parser.add_argument("--quick", action="store_true")
    add_output_args(parser)
    args = parser.parse_args()
    peer = Path(args.peer)
    if not (peer_python(peer).exists() and (peer / "bench_train.py").exists()):
        print(f"no reference harness in {peer}: prepare it with `bash ../shared/peer-bench/setup.sh PEER_GIT_DIR "
              f"{peer}` (or pass --peer); skipping the back-to-back comparison")
        return
    mode = QUICK if args.quick else FULL
    batches = [int(b) for b in (args.batches or mode["batches"]).split(",")]
    steps, warmup = args.steps or mode["steps"], args.warmup or mode["warmup"]
    approaches, dims = args.approaches.split(","), [int(d) for d in args.dims.split(",")]
    out = output_dir(args)

    import bench_train  # jax and the library, after the harness check

    info = machine()
    cells = [(a, reference_n(a, b), d) for d in dims for b in batches for a in approaches]
    ref_flops, torch_rates = reference_flops(peer, cells, args.reference_threads)
    torch_rates, jax_rates = [torch_rates], [matmul_rate()]
    results = []
    for dim in dims:
        for batch in batches:
            for approach in approaches:
                n = reference_n(approach, batch)
                load = load_average()
                step = bench_train.build_step(OURS[approach], batch, dim)
                timed(step.alone, 1)
                ours, reference, statuses = [], [], []
                for _ in range(args.rounds):
                    ours += timed(step.alone, steps - steps // 2)
                    peer_result = run_reference(peer, approach, n, dim, steps, warmup, args.reference_threads)
                    statuses.append(peer_result.get("status"))
                    reference += peer_result.get("step_times_s", [])
                    ours += timed(step.alone, steps // 2)
                result = row(approach, batch, dim, n, step, ours, reference, ref_flops.get((approach, n, dim)))
                result.update(load_average=load, load_average_after=load_average(), reference_status=statuses,
                              reference_rss_mb=peer_result.get("peak_rss_mb"))
                results.append(result)
                print(json.dumps({k: round(v, 4) if isinstance(v, float) else v for k, v in result.items()
                                  if not k.endswith("_times")}), flush=True)
    jax_rates.append(matmul_rate())
    torch_rates.append(reference_flops(peer, [], args.reference_threads)[1])
    jax_rate, torch_rate = median(jax_rates), median(torch_rates)
    for result in results:
        result["ours_fraction_of_matmul"] = result["ours_matmul_flops"] / result["ours_seconds"] / jax_rate
        result["reference_fraction_of_matmul"] = (result["reference_matmul_flops"] / result["reference_seconds"]
                                                  / torch_rate)
    info.update(jax_matmul_gflops=jax_rate / 1e9, torch_matmul_gflops=torch_rate / 1e9,
                jax_matmul_gflops_runs=[r / 1e9 for r in jax_rates],
                torch_matmul_gflops_runs=[r / 1e9 for r in torch_rates], steps=steps, warmup=warmup,
                rounds=args.rounds, peer=str(peer), load_average_end=load_average(),
                reference_threads=args.reference_threads,
                mode="quick" if args.quick else "full")
    (out / "reference.json").write_text(json.dumps({"machine": info, "results": results}, indent=1))
    (out / "reference.md").write_text(markdown(info, results))
    print(f"wrote {out / 'reference.md'} and reference.json")
    if (out / "train.json").is_file():  # train.md gains the reference columns of this run
        from bench_train import write_outputs  # noqa: PLC0415

        write_outputs(out)
        print(f"rewrote {out / 'train.md'} with the reference columns")


def row(approach: str, batch: int, dim: int, n: int, step, ours: list[float], reference: list[float],
        reference_flops_per_step: float | None) -> dict:
    """One cell's result: both sides' medians, both units, FLOPs."""
    ours_s, ref_s = median(ours), median(reference)
    ref_pairs = reference_pairs_per_step(approach, n)
    ref_flops = float(reference_flops_per_step) if reference_flops_per_step is not None else float("nan")
    return {
        "approach": approach, "batch": batch, "dim": dim, "reference_n": n,
        "ours_seconds": ours_s, "reference_seconds": ref_s, "ours_times": ours, "reference_times": reference,
        "ours_encoded_per_s": batch / ours_s, "reference_encoded_per_s": batch / ref_s,
        "encoded_ratio": ref_s / ours_s,
        "ours_pairs_per_encoded": step.pairs_per_step / batch, "reference_pairs_per_encoded": ref_pairs / batch,
        "ours_pairs_per_s": step.pairs_per_step / ours_s, "reference_pairs_per_s": ref_pairs / ref_s,
        "ours_matmul_flops": step.flops.dot, "reference_matmul_flops": ref_flops,
        "ours_mflop_per_encoded": step.flops.dot / batch / 1e6, "reference_mflop_per_encoded": ref_flops / batch / 1e6,
    }


def markdown(info: dict, results: list[dict]) -> str:
    lines = [
        "# Back to back with the PyTorch reference (`scripts/bench_reference.py`)",
        "",
        f"{info['date']}, {info['cpu']}, {info['cores']} cores; jax {info['jax']} (XLA_FLAGS "
        f"`{info['xla_flags'] or '(none)'}`) against the reference's steps in torch on "
        f"{info['reference_threads']} thread(s) (harness {info['peer']}). Float32 matmul rate [4096, 4096]^2 in "
        f"this run: JAX {info['jax_matmul_gflops']:.0f} "
        f"GFLOP/s, torch {info['torch_matmul_gflops']:.0f} GFLOP/s (medians of the start and end). "
        f"{load_note(info)}",
        "",
        f"Each cell: ours {info['steps'] - info['steps'] // 2} steps, then the reference's {info['warmup']} warm-up + "
        f"{info['steps']} timed steps in its own process, then ours {info['steps'] // 2} steps"
        + (f", {info['rounds']} rounds" if info["rounds"] > 1 else "") + "; medians. Both sides encode **batch** "
        "performances per step at the same input width from a fixed batch (the reference's A and B: batch / 2 pairs, "
        "both members encoded; its C: batch performances; its A with the harness's dense InfoNCE). **ratio** = our "
        "performances encoded per second / the reference's (> 1: ours faster). Pairs supervised per second are a "
        "second unit (the reference: 0.5 pairs per encoded performance for A and B, none for its pointwise C; "
        "ours: 1.5 for A and C, 3.5 for B), shown side by side, never divided. MFLOP/enc = matmul FLOPs per encoded "
        "performance (exact counts); % matmul = each side's matmul FLOP rate / its own framework's matmul rate. The "
        "objectives differ (ours: ranking + InfoNCE + linear adversary re-fit + spread term for C; the reference's "
        "C: MSE + trained adversary), which the FLOP columns show.",
    ]
    for dim in sorted({r["dim"] for r in results}, reverse=True):
        lines += ["", f"## Input width {dim:,}", "",
                  "| approach | batch | encoded/s ours | encoded/s ref | **ratio** | pairs/s ours (per enc) | "
                  "pairs/s ref (per enc) | MFLOP/enc ours / ref | % matmul ours / ref | load 1 min |",
                  "|---|---|---|---|---|---|---|---|---|---|"]
        for r in (r for r in results if r["dim"] == dim):
            ref_pairs = (f"{r['reference_pairs_per_s']:,.0f} ({r['reference_pairs_per_encoded']:.1f})"
                         if r["reference_pairs_per_encoded"] else "- (0)")
            lines.append(
                f"| {r['approach']} | {r['batch']:,} | {r['ours_encoded_per_s']:,.0f} | "
                f"{r['reference_encoded_per_s']:,.0f} | **{r['encoded_ratio']:.2f}x** | "
                f"{r['ours_pairs_per_s']:,.0f} ({r['ours_pairs_per_encoded']:.1f}) | {ref_pairs} | "
                f"{r['ours_mflop_per_encoded']:.1f} / {r['reference_mflop_per_encoded']:.1f} | "
                f"{r['ours_fraction_of_matmul']:.0%} / {r['reference_fraction_of_matmul']:.0%} | "
                f"{r['load_average'][0]} |")
    loads = [info["load_average_start"][0], info["load_average_end"][0]] + [r["load_average"][0] for r in results]
    if max(loads) > (info.get("cores") or 1):
        lines += ["", f"**Not a like-for-like comparison**: the 1-minute load average reached {max(loads)} on "
                      f"{info['cores']} cores. torch's OpenMP threads meet at a barrier after every operation of an "
                      "eager step; on an oversubscribed machine each barrier waits for a descheduled thread, which "
                      "slows the reference's many small operations far more than one large product or XLA's compiled "
                      "step. Rerun on a quiet machine (`--reference-threads 1` shows the effect)."]
    failed = [r for r in results if any(s != "ok" for s in r["reference_status"])]
    if failed:
        lines += ["", "Reference measurements that did not finish: " + "; ".join(
            f"{r['approach']} {r['batch']} x {r['dim']}: {r['reference_status']}" for r in failed)]
    return "\n".join(lines) + "\n"


if __name__ == "__main__":
    main()
