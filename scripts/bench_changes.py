"""bench/perf_changes.md from the result files: ``python scripts/bench_changes.py [DIR]`` (default bench/).

Reads every DIR/ab/*/ab.json (`bench_ab.py`: one code change measured before/after, interleaved), DIR/reference.json
(`bench_reference.py`), DIR/train.json (`bench_train.py`) and DIR/profile.json (`bench_profile.py`), and writes
DIR/perf_changes.md: what each change did to the step alone (medians and paired ratios, the load of its run),
whether it was kept, and for every approach whether it meets the issue's two CPU targets -- at least 1.2x the PyTorch
reference's performances encoded per second at 1,024 and 4,096 rows, and at least 80% of the measured matmul rate at
1,024 rows and more -- or, from the profile, what takes the rest of its step. No number is written by hand: the
prose is this script's, the figures the result files'.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
SPEED_TARGET, MATMUL_TARGET, TARGET_ROWS = 1.2, 0.8, (1024, 4096)
# ab folder -> (kept?, what was changed and why)
CHANGES = {
    "01-b-pair-head": (True, "B's pair head (`models/comparators.py`): every product on 2-D rows (with [P, M, hidden] "
                             "operands XLA CPU wrote a transposed copy of each weight gradient's cotangent first, a "
                             "strided loop that cost more than the product), the K(K-1)/2 pairs taken by K-1 static "
                             "slices and the tile laid out by pads (no index gather, whose gradient is a "
                             "scatter-add), W_p and W_d as one product (undone by 10: no gain); antisymmetry still "
                             "exact bit for bit."),
    "10-b-one-joint-product-rejected": (False, "B's W_p (xa * xb) and W_d |xa - xb| as one product of the "
                                               "concatenated features (after) against two products (before), "
                                               "both on 2-D rows: no gain beyond the noise, so the two products "
                                               "(no concatenation copy) stay."),
    "02-dropout-16-bit-rejected": (False, "Dropout masks from 16-bit threefry draws instead of float32 uniforms (a "
                                          "[4,096, 512] mask alone cost a fifth): no gain in the step beyond the "
                                          "noise, so nnx.Dropout stays. (rbg keys for the dropout stream were "
                                          "measured too: no gain on this CPU.)"),
    "03-bfloat16-on-cpu": (False, "train.compute_dtype=bfloat16 against float32 on this CPU (the mixed-precision "
                                  "step is kept as an option; float32 stays the default on CPU, where bfloat16 "
                                  "products are no faster)."),
    "04-infonce-one-tile": (True, "InfoNCE (`losses/infonce.py`): a batch that is one tile on one device keeps "
                                  "exp(s - lse) from the forward, and the backward forms H from it (one product "
                                  "and two exponential passes fewer)."),
    "06-infonce-one-tile-4096-rejected": (False, "InfoNCE as one [4,096, 4,096] tile (instead of 2 x 2 tiles of "
                                                 "2,048) for a 4,096-row batch on one CPU device, to reuse exp(s - "
                                                 "lse) there too: slower (its 64 MiB intermediates), so the one-tile "
                                                 "path stays for batches up to the block size."),
    "07-infonce-block-512": (True, "InfoNCE tiles of 512 rows on CPU (`DEFAULT_BLOCK_SIZE`, was 2,048; measured as "
                                   "approach A with model.loss.block_size=512 against the default): a 512 x 512 "
                                   "float32 tile (1 MiB) stays in cache; bench/infonce.md had the loss alone at 100% "
                                   "of the matmul rate with 512 against 84% with 2,048."),
    "08-infonce-block-256-rejected": (False, "Tiles of 256 against 512 (A): slower, so 512."),
    "09-infonce-block-512-c": (True, "The same 512-row tiles in approach C (model.piece.block_size=512 against the "
                                     "default 2,048): its InfoNCE is a smaller share of the step."),
    "05-c-adversary-cost": (None, "What C's least-squares adversary costs: the step with lambda_adv=0 against the full "
                                  "step (not a change; the measurement item 4 of the work order asks for)."),
}


def _load(path: Path) -> dict | None:
    return json.loads(path.read_text()) if path.is_file() else None


def change_lines(directory: Path) -> list[str]:
    lines = ["## Changes, each measured before/after (`scripts/bench_ab.py`)", "",
             "Step alone (the jitted update on a gathered batch), each approach's own config. The two sides are "
             "compiled in one process and called alternately step by step (or, for config comparisons, the same "
             "tree with an override), so load bursts hit both; the median of the paired ratios is the steadier "
             "figure on this shared machine. Below 1: faster.", ""]
    for folder in sorted((directory / "ab").glob("*/ab.json")):
        data = json.loads(folder.read_text())
        info, name = data["machine"], folder.parent.name
        kept, text = CHANGES.get(name, (None, info.get("label", "")))
        verdict = {True: "kept", False: "not adopted", None: "measurement"}[kept]
        lines += [f"### {name} ({verdict})", "", text, "",
                  f"{info['date']}, load {info['load_average_start'][0]}-{info['load_average_end'][0]} on "
                  f"{info['cores']} cores; [ab.md](ab/{name}/ab.md).", "",
                  "| approach | width | rows | before ms | after ms | median paired ratio |", "|---|---|---|---|---|---|"]
        for r in data["rows"]:
            lines.append(f"| {r['approach']} | {r['dim']:,} | {r['batch']:,} | {r['before_ms']:.1f} | "
                         f"{r['after_ms']:.1f} | {r.get('paired_ratio', r['ratio']):.3f} |")
        lines.append("")
    return lines


def _outside(profile: dict | None, name: str) -> str:
    """The largest non-matmul categories of ``name``'s traced step (the profile's widest rows), as text."""
    if profile is None:
        return "no profile"
    runs = [r for r in profile.get("ops", []) if r["approach"] == name]
    if not runs:
        return "not profiled"
    parts = []
    for r in runs:
        total = r["thunk_seconds"]
        matmul = sum(v for k, v in r["categories"].items() if k.startswith("matmul")) / total
        top = sorted(((v, k) for k, v in r["categories"].items() if not k.startswith("matmul")), reverse=True)[:3]
        parts.append(f"{r['rows']:,} rows: operations {total / r['wall_seconds']:.0%} of the wall time; of their time "
                     f"products {matmul:.0%}, then " +
                     ", ".join(f"{k} {v / total:.0%}" for v, k in top))
    return "; ".join(parts)


NAMES = {"A": "approach_a", "B": "approach_b", "C": "approach_c"}


def quiet(reference: dict | None) -> bool:
    """Whether the reference run was like for like: its 1-minute load stayed at or below the core count (under load
    torch's eager steps slow down many times more than XLA's, `bench_reference.py`)."""
    if reference is None:
        return False
    info = reference["machine"]
    return max(info["load_average_start"][0], info["load_average_end"][0]) <= (info.get("cores") or 1)


def verdicts(reference: dict | None, train: dict) -> list[dict]:
    """Per approach, width and target row count measured: the speed ratio to the reference (None where not measured,
    or when the reference run was loaded: `quiet`) and the matmul share (None where not measured), and whether each
    meets its target."""
    reference = reference if quiet(reference) else {"results": []}
    out = []
    for short, name in NAMES.items():
        for dim in (4096, 1024):
            for rows in TARGET_ROWS:
                ref = next((r for r in reference["results"] if r["approach"] == short and r["dim"] == dim
                            and r["batch"] == rows), None)
                ours = next((r for r in train["results"] if r["approach"] == name and r["dim"] == dim
                             and r["batch"] == rows), None)
                if ref is None and ours is None:
                    continue
                speed = None if ref is None else ref["encoded_ratio"]
                share = None if ours is None else ours["fraction_of_matmul"]
                out.append({"approach": short, "dim": dim, "rows": rows, "speed": speed, "matmul": share,
                            "speed_met": speed is not None and speed >= SPEED_TARGET,
                            "matmul_met": share is not None and share >= MATMUL_TARGET})
    return out


def target_lines(reference: dict | None, train: dict | None, profile: dict | None) -> list[str]:
    lines = ["## The targets", ""]
    if train is None:
        return lines + ["No train.json in this folder: run `scripts/bench_train.py --publish`."]
    t_info = train["machine"]
    if reference is None:
        speed_note = ("Speed against the reference: no published `bench/reference.json` (a back-to-back run of "
                      "`scripts/bench_reference.py` on a quiet machine); the speed column is empty.")
    elif not quiet(reference):
        r_info = reference["machine"]
        speed_note = (f"Speed against the reference: the published run ({r_info['date']}) was loaded (1-minute load "
                      f"{max(r_info['load_average_start'][0], r_info['load_average_end'][0])} on "
                      f"{r_info.get('cores')} cores), where torch's eager steps slow down many times more than "
                      "XLA's; no speed verdict is drawn from it.")
    else:
        r_info = reference["machine"]
        speed_note = (f"Speed: ours / the reference's performances encoded per second, back to back in one quiet run "
                      f"(`bench/reference.md`, {r_info['date']}).")
    lines += [speed_note + f" Matmul share: the step's matmul FLOP rate / the matmul rate measured in the same run "
              f"(`bench/train.md`, {t_info['date']}, {t_info['mode']} run, load "
              f"{t_info['load_average_start'][0]}-{t_info['load_average_end'][0]} on {t_info['cores']} cores).", "",
              "| approach | width | rows | ours / reference (>= 1.2x) | % of matmul (>= 80%) |",
              "|---|---|---|---|---|"]
    for v in verdicts(reference, train):
        speed = "not measured" if v["speed"] is None else f"{v['speed']:.2f}x " + (
            "meets" if v["speed_met"] else "**misses**")
        share = "not measured" if v["matmul"] is None else f"{v['matmul']:.0%} " + (
            "meets" if v["matmul_met"] else "**misses**")
        lines.append(f"| {v['approach']} | {v['dim']:,} | {v['rows']:,} | {speed} | {share} |")
    lines += ["", "Where the rest of each step goes (`bench/profile.md`, traced at width "
                  f"{(profile or {}).get('dim', 4096):,}): first the share of the untraced step's wall time that XLA's "
                  "operations fill (the rest is the runtime between them and, on a loaded machine, time slices "
                  "lost to other processes), then the shares of the operations' summed time:", ""]
    for short, name in NAMES.items():
        lines.append(f"- {short}: {_outside(profile, name)}.")
    return lines


def render(directory: Path) -> str:
    directory = Path(directory)
    lines = ["# Phase 2 of issue 22: what was changed, what it gained, where each approach stands "
             "(`scripts/bench_changes.py`)", ""]
    lines += change_lines(directory)
    lines += target_lines(_load(directory / "reference.json"), _load(directory / "train.json"),
                          _load(directory / "profile.json"))
    return "\n".join(lines) + "\n"


if __name__ == "__main__":
    folder = Path(sys.argv[1]) if len(sys.argv) > 1 else ROOT / "bench"
    (folder / "perf_changes.md").write_text(render(folder))
    print(f"wrote {folder / 'perf_changes.md'}")
