"""Benchmark: symbolic encoder throughput (segments/s), the `aligned` encoder against the `midi` encoder on the same
PercePiano segments in the same process; writes bench/aligned.{md,json}.

    python scripts/bench_aligned.py [--root ../shared/data/percepiano] [--segments 96] [--repeats 3]

Each repeat encodes the same segments (every ``len // segments``-th of the corpus sorted by key, so 4-, 8- and 16-bar
segments all appear) with each encoder, one process, one thread, MIDI files already in the page cache after a warm-up
pass; the median over repeats is reported and the ratio of the two medians is taken within one run. The load
average before and after is recorded: on a shared machine the absolute numbers are pessimistic, the ratio less so.
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

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from crescend_jax.data.percepiano import load_percepiano  # noqa: E402
from crescend_jax.encoders.aligned import AlignedEncoder  # noqa: E402
from crescend_jax.encoders.midi import MidiEncoder  # noqa: E402


def main(argv: list[str]) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--root", default=str(ROOT.parent / "shared" / "data" / "percepiano"))
    parser.add_argument("--segments", type=int, default=96)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--out", default=str(ROOT / "bench" / "aligned"))
    args = parser.parse_args(argv)
    if not Path(args.root).is_dir():
        print(f"bench_aligned skipped: no PercePiano checkout at {args.root} (--root)")
        return 0
    corpus = sorted(load_percepiano(Path(args.root)).segments, key=lambda s: s.key)
    chosen = corpus[:: max(1, len(corpus) // args.segments)][: args.segments]
    midi_paths = [s.midi_path for s in chosen]
    score_paths = [s.score_midi_path for s in chosen]
    encoders = {"midi": MidiEncoder(), "aligned (beat)": AlignedEncoder(),
                "aligned (chord)": AlignedEncoder(positions="chord")}
    load_before = os.getloadavg()
    for encoder in encoders.values():  # warm-up: imports, page cache
        encoder.encode_midi(midi_paths[:4], score_paths[:4])
    seconds: dict[str, list[float]] = {name: [] for name in encoders}
    frames: dict[str, float] = {}
    for _ in range(args.repeats):
        for name, encoder in encoders.items():
            start = time.perf_counter()
            items = encoder.encode_midi(midi_paths, score_paths)
            seconds[name].append(time.perf_counter() - start)
            frames[name] = statistics.mean(item.frames.shape[1] for item in items)
    load_after = os.getloadavg()
    median = {name: statistics.median(values) for name, values in seconds.items()}
    rate = {name: len(chosen) / value for name, value in median.items()}
    machine = f"{platform.node() or 'host'} {platform.machine()}, {os.cpu_count()} CPUs, Python {platform.python_version()}"
    result = {"machine": machine, "segments": len(chosen), "repeats": args.repeats,
              "load_average_before": load_before, "load_average_after": load_after,
              "median_seconds": median, "segments_per_second": rate, "mean_frames_per_segment": frames,
              "all_seconds": seconds}
    Path(args.out + ".json").write_text(json.dumps(result, indent=1))
    lines = [
        "# Symbolic encoder throughput (`scripts/bench_aligned.py`)", "",
        f"Machine: {machine}; load average (1, 5, 15 min) {', '.join(f'{v:.1f}' for v in load_before)} before and "
        f"{', '.join(f'{v:.1f}' for v in load_after)} after: a shared machine, so absolute rates are pessimistic.",
        f"{len(chosen)} PercePiano segments (4/8/16 bars, performance + score MIDI each), one process; median of "
        f"{args.repeats} repeats, the same segments for every encoder in the same run.", "",
        "| encoder | median s | segments/s | frames per segment | vs midi |", "|---|---|---|---|---|"]
    for name in encoders:
        lines.append(f"| {name} | {median[name]:.2f} | {rate[name]:.1f} | {frames[name]:.1f} | "
                     f"{rate[name] / rate['midi']:.2f}x |")
    lines += ["", "Both encoders read both MIDI files and run the same alignment (`encoders/alignment.py`); the "
              "aligned encoder adds the features of every score position (a Python loop over positions, so chord "
              "positions cost more than beats). Rerun on a quiet machine for decisions."]
    Path(args.out + ".md").write_text("\n".join(lines) + "\n")
    print("\n".join(lines))
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
