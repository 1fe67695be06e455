"""The README's benchmark passage from the result files: ``python scripts/bench_readme.py [DIR]`` (default bench/).

Reads DIR/train.json (`bench_train.py`), DIR/reference.json (`bench_reference.py`), DIR/profile.json
(`bench_profile.py`) and DIR/gpu.json (`bench_gpu.py`) where present and prints markdown: per approach and input
width, performances encoded per second and distinct same-music pairs supervised per second at the largest batch
measured at both widths, with the share of the matmul rate; the back-to-back ratios to the reference; the share of
each profiled step spent outside the matrix products; and whether an accelerator figure exists. Every figure comes
with the machine, date and load average of its run. The README holds its output between the markers
``<!-- bench summary: ... -->`` and ``<!-- /bench summary -->``; `render` is what a README generator calls.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def _load(path: Path) -> dict | None:
    return json.loads(path.read_text()) if path.is_file() else None


def _short(name: str) -> str:
    return name.split("_")[-1].upper() if name.startswith("approach_") else name


def train_lines(train: dict) -> list[str]:
    info, results = train["machine"], train["results"]
    lines = [f"Training steps (`bench/train.md`, {info['date']}, {info['cpu']} {info['cores']} cores, load "
             f"{info['load_average_start'][0]}-{info['load_average_end'][0]}, matmul {info['matmul_gflops']:.0f} "
             f"GFLOP/s, {info['mode']} run): performances encoded per second / same-music pairs supervised per "
             "second (pairs per encoding) / % of the matmul rate, step alone:", "",
             "| approach | batch | width 4,096 | width 1,024 |", "|---|---|---|---|"]
    for name in dict.fromkeys(r["approach"] for r in results):
        mine = [r for r in results if r["approach"] == name]
        both = sorted({r["batch"] for r in mine if r["dim"] == 4096} & {r["batch"] for r in mine if r["dim"] == 1024})
        for batch in both[-2:]:
            cells = []
            for dim in (4096, 1024):
                r = next(r for r in mine if r["dim"] == dim and r["batch"] == batch)
                pairs = f"{r['pairs_per_s']:,.0f} ({r['pairs_per_encoded']:.1f})" if r["pairs_per_step"] else "-"
                cells.append(f"{r['encoded_per_s']:,.0f} / {pairs} / {r['fraction_of_matmul']:.0%}")
            lines.append(f"| {_short(name)} | {batch:,} | {cells[0]} | {cells[1]} |")
    return lines


def reference_lines(reference: dict) -> list[str]:
    info, results = reference["machine"], reference["results"]
    loads = [info["load_average_start"][0], info["load_average_end"][0]]
    lines = [f"Against the PyTorch reference, back to back in one run (`bench/reference.md`, {info['date']}, load "
             f"{min(loads)}-{max(loads)}; JAX matmul {info['jax_matmul_gflops']:.0f}, torch "
             f"{info['torch_matmul_gflops']:.0f} GFLOP/s): our performances encoded per second / the reference's "
             "at the same batch and width:", ""]
    for dim in sorted({r["dim"] for r in results}, reverse=True):
        cells = [f"{r['approach']} {r['batch']:,}: {r['encoded_ratio']:.2f}x" for r in results if r["dim"] == dim]
        lines.append(f"- width {dim:,}: " + ", ".join(cells))
    if max(loads) > (info.get("cores") or 1):
        lines.append("- measured under load: not a like-for-like figure (bench/reference.md says why); rerun quiet.")
    return lines


def profile_lines(profile: dict) -> list[str]:
    info = profile["machine"]
    cells = []
    for r in profile.get("ops", []):
        outside = 1 - sum(v for k, v in r["categories"].items() if k.startswith("matmul")) / r["thunk_seconds"]
        cells.append(f"{_short(r['approach'])} {r['rows']:,} rows {outside:.0%}")
    return [f"Outside the matrix products (`bench/profile.md`, {info['date']}, load "
            f"{info['load_average_start'][0]}-{info['load_average_end'][0]}; share of the traced step at width "
            f"{profile['dim']:,}): " + ", ".join(cells) + ". Its work order lists what to change, file by file."]


def gpu_lines(gpu: dict | None) -> list[str]:
    if gpu is None or gpu["machine"].get("dry_run"):
        return ["No accelerator figure exists: `make bench-gpu` (`scripts/bench_gpu.py`, at most 8 minutes on one "
                "GPU) has not run on a GPU yet; its CPU dry run is tested (tests/test_bench_gpu.py)."]
    info = gpu["machine"]
    best = max(gpu["steps"], key=lambda r: r.get("mfu", 0.0), default=None)
    return [f"On {info['device_kind']} (`bench/gpu.md`, {info['date']}): best step MFU "
            f"{best.get('mfu', float('nan')):.0%} ({best['approach']}, {best['dtype']}, {best['rows']:,} rows)."
            if best else f"On {info['device_kind']}: no step measured (`bench/gpu.md`)."]


def render(directory: Path) -> str:
    """The passage (markdown) from the result files in ``directory``."""
    root = Path(directory)
    lines = []
    for name, render in (("train.json", train_lines), ("reference.json", reference_lines),
                         ("profile.json", profile_lines)):
        data = _load(root / name)
        if data is not None:
            lines += render(data) + [""]
    lines += gpu_lines(_load(root / "gpu.json"))
    return "\n".join(lines)


if __name__ == "__main__":
    print(render(Path(sys.argv[1]) if len(sys.argv) > 1 else ROOT / "bench"))
