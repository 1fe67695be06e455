"""`crescend-jax extract` / `merge`: corpus -> rendered audio -> encoder -> embedding store.

Per soundfont, keys already stored are skipped before anything heavy is built (the encoder, the renderer's workers),
renders run in parallel and are encoded in batches as they arrive, and items are committed in chunks, so a killed run
loses at most one uncommitted chunk and a rerun continues where it stopped. A bad item (unparseable key, missing or
corrupt MIDI, a render or encode error) is reported in the closing summary and never stops the others.
"""

from __future__ import annotations

import contextlib
import hashlib
import sys
import time
from pathlib import Path
from typing import Sequence

import ml_collections
import numpy as np
from tqdm.auto import tqdm

from crescend_jax.config import ConfigError
from crescend_jax.data import store
from crescend_jax.data.segments import Corpus, Problem, Segment
from crescend_jax.encoders.base import resample

EXIT_OK, EXIT_ITEMS_FAILED, EXIT_RUN_FAILED = 0, 1, 2


class ShardError(ConfigError):
    """A ``--shard`` value that is not ``i/N`` with 0 <= i < N."""


def parse_shard(text: str | None) -> tuple[int, int] | None:
    """``"i/N"`` -> ``(i, N)`` (0-based, 0 <= i < N); None -> None (the whole corpus)."""
    if text is None:
        return None
    index, sep, count = text.partition("/")
    try:
        i, n = int(index), int(count)
    except ValueError:
        i = n = -1
    if not sep or n < 1 or not 0 <= i < n:
        raise ShardError(f"--shard {text!r} is not i/N with 0 <= i < N (e.g. --shard 0/4 ... --shard 3/4)")
    return i, n


def shard_of(key: str, num_shards: int) -> int:
    """The shard (0..num_shards-1) of ``key``: a stable hash, the same in every process and Python version."""
    digest = hashlib.blake2b(key.encode(), digest_size=8).digest()
    return int.from_bytes(digest, "big") % num_shards


def load_corpus(config: ml_collections.ConfigDict) -> Corpus:
    """The corpus named by ``config.corpus`` ("percepiano" or "demo"); whole-corpus problems raise."""
    if config.corpus == "percepiano":
        from crescend_jax.data.percepiano import load_percepiano

        return load_percepiano(Path(config.data.root))
    if config.corpus == "demo":
        from crescend_jax.data.demo_corpus import build_demo_corpus

        return build_demo_corpus(config.data)
    raise ConfigError(f"unknown corpus {config.corpus!r}; set --config.corpus to 'percepiano' or 'demo'")


def _whole_run_errors() -> tuple[type[BaseException], ...]:
    from crescend_jax.data.demo_corpus import DemoCorpusError
    from crescend_jax.data.percepiano import CorpusError
    from crescend_jax.data.render import SoundfontError

    return CorpusError, DemoCorpusError, SoundfontError, store.StoreError, ConfigError


class _Extraction:
    """One extract run: counters, failures, the lazily built encoder."""

    def __init__(self, config: ml_collections.ConfigDict, shard: tuple[int, int] | None):
        self.config = config
        self.writer_id = "all" if shard is None else f"shard-{shard[0]}-of-{shard[1]}"
        self.done = self.skipped = 0
        self.failures: list[Problem] = []
        self.encoder = None

    def build_encoder(self):
        if self.encoder is None:
            from crescend_jax.encoders import build_encoder

            self.encoder = build_encoder(self.config.encoder)
            store.remember_encoder_name(self.config, self.encoder.name)
        return self.encoder

    def extract_soundfont(self, soundfont: str, store_dir: Path, pending: list[Segment]) -> None:
        """Renders, encodes and stores ``pending`` with one soundfont."""
        from crescend_jax.data.render import RenderCache, RenderSettings, render_many

        settings = RenderSettings.from_config(self.config.render, soundfont)
        encoder = self.build_encoder()
        info = store.StoreInfo(corpus=self.config.corpus, encoder=encoder.name, frame_rate=float(encoder.frame_rate),
                               num_layers=int(encoder.num_layers), dim=int(encoder.dim),
                               frames=bool(self.config.store.frames), render=settings.settings_id)
        batch_size = max(1, int(self.config.store.encode_batch))
        batch: list[tuple[Segment, np.ndarray]] = []
        results = render_many([s.midi_path for s in pending], settings, RenderCache(Path(self.config.render.cache_dir)),
                              int(self.config.render.workers))
        # closing(): an error mid-way stops the render pool at once instead of whenever the generator is collected
        with contextlib.closing(results), \
                store.StoreWriter(store_dir, info, self.writer_id, int(self.config.store.chunk_size)) as writer, \
                tqdm(total=len(pending), unit="seg", desc=f"encode+store {settings.settings_id}",
                     dynamic_ncols=True) as bar:
            started, audio_seconds = time.perf_counter(), 0.0
            for index, result in results:
                segment = pending[index]
                if isinstance(result, Exception):
                    self.failures.append(Problem(segment.key, segment.midi_path, f"render failed: {result}"))
                    bar.update(1)
                    continue
                batch.append((segment, resample(result, settings.sample_rate, encoder.sample_rate)))
                if len(batch) >= batch_size:
                    audio_seconds += self._encode_and_store(batch, encoder, writer, info.render, bar)
                    batch = []
                    bar.set_postfix(audio_s_per_s=f"{audio_seconds / (time.perf_counter() - started):.1f}")
            if batch:
                audio_seconds += self._encode_and_store(batch, encoder, writer, info.render, bar)
                bar.set_postfix(audio_s_per_s=f"{audio_seconds / (time.perf_counter() - started):.1f}")

    def _encode_and_store(self, batch, encoder, writer: store.StoreWriter, render: str, bar) -> float:
        """Encodes one batch (item by item if the batch fails, to isolate a bad one); returns its audio seconds."""
        waves = [wave for _, wave in batch]
        try:
            encoded = encoder.encode(waves)
        except Exception:  # noqa: BLE001 - retried one by one below so a bad item does not sink its batch
            encoded = None
        for position, (segment, wave) in enumerate(batch):
            item = encoded[position] if encoded is not None else None
            if item is None:
                try:
                    (item,) = encoder.encode([wave])
                except Exception as err:  # noqa: BLE001 - a per-item failure, reported in the summary
                    self.failures.append(Problem(segment.key, segment.midi_path,
                                                 f"encoding failed ({type(err).__name__}: {err}); check the render "
                                                 f"of this MIDI file"))
                    bar.update(1)
                    continue
            writer.add(store.item_record(segment, render, item.pooled, item.frames if writer.info.frames else None))
            self.done += 1
            bar.update(1)
        return sum(len(w) for w in waves) / encoder.sample_rate

    def summary(self) -> str:
        lines = [f"done {self.done} / skipped {self.skipped} (already stored) / failed {len(self.failures)}"]
        lines += [f"  failed: {problem}" for problem in self.failures]
        return "\n".join(lines)


def run_extract(config: ml_collections.ConfigDict, shard: tuple[int, int] | None = None) -> int:
    """Extracts every (shard of the) corpus into one store per soundfont; 0 ok, 1 some items failed, 2 run failed."""
    try:
        return _run_extract(config, shard)
    except _whole_run_errors() as err:
        print(f"error: {err}", file=sys.stderr)
        return EXIT_RUN_FAILED


def _run_extract(config: ml_collections.ConfigDict, shard: tuple[int, int] | None) -> int:
    run = _Extraction(config, shard)
    corpus = load_corpus(config)
    segments, problems = corpus.segments, corpus.problems
    if shard is not None:
        segments = [s for s in segments if shard_of(s.key, shard[1]) == shard[0]]
        problems = [p for p in problems if shard_of(p.item, shard[1]) == shard[0]]
    run.failures.extend(problems)

    store.render_settings_ids(config)  # an absent soundfont fails the run before any work
    encoder_name = store.known_encoder_name(config) or run.build_encoder().name
    plan = _plan(config, encoder_name, segments)
    if any(pending for _, _, pending in plan) and run.build_encoder().name != encoder_name:
        plan = _plan(config, run.encoder.name, segments)  # the registry was stale (encoder code changed its name)
    for soundfont, store_dir, pending in plan:
        run.skipped += len(segments) - len(pending)
        if pending:
            run.extract_soundfont(soundfont, store_dir, pending)
        if shard is None and store.stored_keys(store_dir):
            store.merge_store(store_dir)

    print(run.summary())
    if shard is not None:
        print(f"shard {shard[0]}/{shard[1]} finished; once every shard has, run "
              f"`crescend-jax merge --config <this config file>` (same --config.* overrides)")
    return EXIT_ITEMS_FAILED if run.failures else EXIT_OK


def _plan(config, encoder_name: str, segments: Sequence[Segment]) -> list[tuple[str, Path, list[Segment]]]:
    dirs = store.store_dirs(config, encoder_name=encoder_name)
    return [(soundfont, store_dir, store.pending_segments(segments, store_dir))
            for soundfont, store_dir in zip(config.render.soundfonts, dirs)]


def run_merge(config: ml_collections.ConfigDict) -> int:
    """Merges the part files written by ``extract --shard i/N`` workers into one dataset per store (idempotent)."""
    try:
        name = store.known_encoder_name(config)
        if name is None:
            raise store.StoreError(f"nothing to merge: no store under {Path(config.store.root) / config.corpus} for "
                                   f"this encoder config; run `crescend-jax extract --config <this config file>` first")
        for store_dir in store.store_dirs(config, encoder_name=name):
            print(f"{store_dir}: {store.merge_store(store_dir)} items")
    except _whole_run_errors() as err:
        print(f"error: {err}", file=sys.stderr)
        return EXIT_RUN_FAILED
    return EXIT_OK
