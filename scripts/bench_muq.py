"""Benchmark: full-size MuQ (random weights) extraction speed, item by item vs batched; writes bench/muq.{md,json}.

The model has MuQ-large's shape (12 conformer layers of width 1024, 329M parameters), is saved with
save_pretrained and loaded through `MuQEncoder.from_config`, the path the real checkpoint takes. Clips of 10-15 s
(PercePiano segment lengths) are encoded twice: one call per clip (``batch_size=1``) and one call for all clips
(one padded batch). Reported: audio seconds per wall second and the peak process RSS during each phase.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import tempfile
import threading
import time
from pathlib import Path

os.environ.setdefault("HF_HUB_OFFLINE", "1")

import numpy as np  # noqa: E402
import psutil  # noqa: E402
import torch  # noqa: E402

from crescend_jax.encoders.muq import (MuQEncoder, default_encoder_config, import_muq,  # noqa: E402
                                       muq_config_dict)

REPO = Path(__file__).resolve().parents[1]


class PeakRss:
    """Samples this process's resident set size every 20 ms inside a ``with`` block; ``peak`` in bytes."""

    def __init__(self) -> None:
        self.process = psutil.Process()
        self.peak = 0
        self._stop = threading.Event()

    def _sample(self) -> None:
        while not self._stop.is_set():
            self.peak = max(self.peak, self.process.memory_info().rss)
            self._stop.wait(0.02)

    def __enter__(self) -> "PeakRss":
        self.peak = self.process.memory_info().rss
        self._thread = threading.Thread(target=self._sample, daemon=True)
        self._thread.start()
        return self

    def __exit__(self, *exc) -> None:
        self._stop.set()
        self._thread.join()
        self.peak = max(self.peak, self.process.memory_info().rss)


def clips(lengths: list[float], seed: int = 0) -> list[np.ndarray]:
    """Piano-like test signals: decaying harmonic notes plus a little noise, float32 at 24 kHz."""
    rng = np.random.default_rng(seed)
    out = []
    for seconds in lengths:
        t = np.arange(int(seconds * 24_000)) / 24_000
        wave = np.zeros_like(t)
        for onset in np.arange(0, seconds, 0.25):
            pitch = 220 * 2 ** (rng.integers(0, 24) / 12)
            env = np.where(t >= onset, np.exp(-(t - onset) * 3), 0)
            wave += env * sum(np.sin(2 * np.pi * pitch * h * t) / h for h in (1, 2, 3))
        out.append((0.1 * wave / np.abs(wave).max() + 0.001 * rng.standard_normal(len(t))).astype(np.float32))
    return out


def timed(encoder: MuQEncoder, waves: list[np.ndarray], per_item: bool) -> tuple[float, int, list[np.ndarray]]:
    with PeakRss() as rss:
        start = time.perf_counter()
        encoded = [encoder.encode([w])[0] for w in waves] if per_item else encoder.encode(waves)
        seconds = time.perf_counter() - start
    return seconds, rss.peak, [e.pooled for e in encoded]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--lengths", type=float, nargs="+", default=[10.0, 12.5, 15.0], help="clip seconds")
    parser.add_argument("--out", default=str(REPO / "bench" / "muq"), help="writes OUT.md and OUT.json")
    args = parser.parse_args()

    MuQ, MuQConfig = import_muq()
    waves = clips(args.lengths)
    with tempfile.TemporaryDirectory() as checkpoint:
        build_start = time.perf_counter()
        model = MuQ(MuQConfig(**muq_config_dict())).eval()
        parameters = sum(p.numel() for p in model.parameters())
        model.save_pretrained(checkpoint)
        del model
        config = default_encoder_config()
        config.checkpoint, config.batch_size = checkpoint, len(waves)
        encoder = MuQEncoder.from_config(config)
        build_seconds = time.perf_counter() - build_start
    encoder.encode([waves[0][: 24_000]])  # warm-up: first-call allocations

    audio = sum(len(w) for w in waves) / 24_000
    item_s, item_rss, item_pooled = timed(encoder, waves, per_item=True)
    batch_s, batch_rss, batch_pooled = timed(encoder, waves, per_item=False)
    difference = max(float(np.abs(a - b).max()) for a, b in zip(item_pooled, batch_pooled))

    result = {
        "machine": f"{platform.node()} {platform.processor() or platform.machine()}, {os.cpu_count()} CPUs, "
                   f"{psutil.virtual_memory().total / 2**30:.0f} GiB RAM",
        "device": encoder.device, "torch": torch.__version__, "torch_threads": torch.get_num_threads(),
        "model": f"MuQ-large shape, random weights, {parameters / 1e6:.0f}M parameters",
        "encoder": encoder.name, "clip_seconds": args.lengths, "audio_seconds": audio,
        "build_and_load_seconds": round(build_seconds, 1),
        "per_item": {"seconds": round(item_s, 2), "audio_s_per_s": round(audio / item_s, 3),
                     "peak_rss_gib": round(item_rss / 2**30, 2)},
        "batched": {"seconds": round(batch_s, 2), "audio_s_per_s": round(audio / batch_s, 3),
                    "peak_rss_gib": round(batch_rss / 2**30, 2), "batch_size": len(waves)},
        "max_abs_pooled_difference_batched_vs_per_item": difference,
    }
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.with_suffix(".json").write_text(json.dumps(result, indent=2) + "\n")
    rows = [f"| {name} | {r['seconds']} | {r['audio_s_per_s']} | {r['peak_rss_gib']} |"
            for name, r in (("one clip per call", result["per_item"]),
                            (f"one padded batch of {len(waves)}", result["batched"]))]
    out.with_suffix(".md").write_text("\n".join([
        "# MuQ extraction benchmark (`scripts/bench_muq.py`)", "",
        f"Machine: {result['machine']}; device {result['device']}; torch {result['torch']} "
        f"({result['torch_threads']} threads).",
        f"Model: {result['model']}; encoder `{result['encoder']}`.",
        f"Audio: {len(waves)} clips of {', '.join(f'{s:g}' for s in args.lengths)} s = {audio:g} s. "
        f"Building + save_pretrained + loading took {result['build_and_load_seconds']} s.", "",
        "| path | wall s | audio s per s | peak RSS GiB |", "|---|---|---|---|", *rows, "",
        f"Batched and per-clip pooled vectors differ by at most {difference:.2e} (exact masking of the padding).",
        "Timings on a shared machine are noisy; rerun on a quiet one for decisions.", ""]))
    print(out.with_suffix(".md").read_text())


if __name__ == "__main__":
    main()
