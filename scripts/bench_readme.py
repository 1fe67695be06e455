"""The README's benchmark passage from the result files: ``python scripts/bench_readme.py [DIR]`` (default bench/).

Reads DIR/train.json (`bench_train.py`), DIR/reference.json (`bench_reference.py`), DIR/profile.json
(`bench_profile.py`) and DIR/gpu.json (`bench_gpu.py`) where present and prints markdown: per approach and input
width, performances encoded per second and distinct same-music pairs supervised per second at the largest batch
measured at both widths, with the share of the matmul rate; the back-to-back ratios to the reference; the share of
each profiled step spent outside the matrix products; and whether an accelerator figure exists. Every figure comes
with the machine, date and load average of its run. The README holds its output between the markers
``<!-- bench summary: ... -->`` and ``<!-- /bench summary -->`` (``--write`` replaces it there); `render` is what a
README generator calls.
"""

from __future__ import annotations

import json
import re
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from bench_changes import MATMUL_TARGET, SPEED_TARGET, verdicts  # noqa: E402

ROOT = Path(__file__).resolve().parents[1]
MARKERS = ("<!-- bench summary: python scripts/bench_readme.py -->", "<!-- /bench summary -->")


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


def target_summary(reference: dict | None, train: dict) -> list[str]:
    """One line per approach: the issue's CPU targets met or missed (`bench/perf_changes.md` has the details; a
    speed verdict only from a quiet reference run)."""
    lines = [f"Targets (>= {SPEED_TARGET}x the reference's performances encoded per second, >= {MATMUL_TARGET:.0%} of "
             "the matmul rate; `bench/perf_changes.md`):", ""]
    rows = verdicts(reference, train)
    for short in dict.fromkeys(v["approach"] for v in rows):
        cells = []
        for v in (v for v in rows if v["approach"] == short):
            speed = "speed: no quiet reference run" if v["speed"] is None else (
                f"{v['speed']:.2f}x the reference ({'meets' if v['speed_met'] else 'misses'})")
            share = "-" if v["matmul"] is None else f"{v['matmul']:.0%} of matmul ({'meets' if v['matmul_met'] else 'misses'})"
            cells.append(f"{v['rows']:,} rows, width {v['dim']:,}: {share}, {speed}")
        lines.append(f"- {short}: " + "; ".join(cells))
    return lines


def profile_lines(profile: dict) -> list[str]:
    info = profile["machine"]
    for run in profile.get("merged_runs", []):  # the ops part's own run when it was rerun with --merge
        if "ops" in run["parts"]:
            info = run
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
    if _load(root / "train.json") is not None:
        lines += target_summary(_load(root / "reference.json"), _load(root / "train.json")) + [""]
    lines += gpu_lines(_load(root / "gpu.json"))
    return "\n".join(lines)


def write_readme(directory: Path, readme: Path = ROOT / "README.md") -> None:
    """Replace the passage between `MARKERS` in ``readme`` by `render` of ``directory``."""
    text = readme.read_text()
    pattern = re.compile(re.escape(MARKERS[0]) + r"\n.*?" + re.escape(MARKERS[1]), re.S)
    if not pattern.search(text):
        raise SystemExit(f"{readme} has no {MARKERS[0]} ... {MARKERS[1]} passage")
    readme.write_text(pattern.sub(lambda _: f"{MARKERS[0]}\n{render(directory)}\n{MARKERS[1]}", text))


if __name__ == "__main__":
    args = [a for a in sys.argv[1:] if a != "--write"]
    folder = Path(args[0]) if args else ROOT / "bench"
    if "--write" in sys.argv:
        write_readme(folder)
        print("rewrote the README's benchmark passage")
    else:
        print(render(folder))
