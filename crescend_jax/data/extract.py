"""`crescend-jax extract` / `merge`: corpus -> rendered audio -> encoder -> embedding store.

Per store (one per soundfont; one in all for a symbolic encoder, which reads the MIDI files and renders nothing), keys
already stored are skipped before anything heavy is built (the encoder, the renderer's workers), renders run in
parallel and are encoded in batches as they arrive, and items are committed in chunks, so a killed run loses at most
one uncommitted chunk and a rerun continues where it stopped. A bad item never stops the others; the closing summary
reads ``done D / skipped S (already stored) / failed F / skipped (bad input): B`` and tells two kinds apart:

- **Bad input** is what the corpus reader finds unusable before anything is rendered, a `Problem` of the corpus
  (PercePiano: a labelled key that does not parse, a labelled key without a MIDI file; ASAP: a performance whose
  MIDI or annotations are missing or unreadable, whose downbeat count differs from its score's or whose annotations
  run past its MIDI, a window whose beats differ from the score's, shorter than ``data.min_window_seconds`` or with
  too few performances; the demo: a score music21 cannot use). The data itself says these items cannot be used, so
  they are skipped and counted per reason (``Problem.reason``) with a few examples each, and are not failures: a run
  that skipped some bad input exits 0. A run that stores nothing at all (every item bad input) exits 1 with the
  reasons.
- **Failures** are items that failed in rendering or encoding (a MIDI file FluidSynth or the symbolic encoder cannot
  read, an encoder error): the input may be fine and the pipeline at fault, so each is listed and the run exits 1; a
  rerun retries exactly these items (they were not stored).

Each store is worked on under its extraction lock (`crescend_jax.data.lock`): a second extract of the same store
waits for the first, then skips what it stored. A store that cannot be written (disk full, read-only) or read (a
corrupt part) ends the run with one line naming the file and the way out (exit code 1, a data failure; a config
mistake such as an unknown corpus, soundfont or shard is exit code 2). A merged dataset that no longer reads back (a
damaged file) is rebuilt from the committed parts, and the run says so.
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
from crescend_jax.data import identity, store
from crescend_jax.data.lock import extraction_lock
from crescend_jax.data.segments import Corpus, Problem, Segment
from crescend_jax.encoders import SYMBOLIC_RENDER, is_symbolic
from crescend_jax.encoders.base import resample
from crescend_jax.errors import EXIT_FAILED, EXIT_OK, DataError, exit_code
EXAMPLES_PER_REASON = 3  # bad input shown per reason in the summary


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
    """The corpus named by ``config.corpus`` ("percepiano", "asap" or "demo"); whole-corpus problems raise."""
    if config.corpus == "percepiano":
        from crescend_jax.data.percepiano import load_percepiano

        return load_percepiano(Path(config.data.root))
    if config.corpus == "demo":
        from crescend_jax.data.demo_corpus import build_demo_corpus

        return build_demo_corpus(config.data)
    if config.corpus == "asap":
        from crescend_jax.data.asap import load_asap

        return load_asap(config.data)
    raise ConfigError(f"unknown corpus {config.corpus!r}; set --config.corpus to 'percepiano', 'asap' or 'demo'")


class _Extraction:
    """One extract run: counters, bad input, failures, the lazily built encoder."""

    def __init__(self, config: ml_collections.ConfigDict, shard: tuple[int, int] | None):
        self.config = config
        self.writer_id = "all" if shard is None else f"shard-{shard[0]}-of-{shard[1]}"
        self.done = self.skipped = 0
        self.bad_input: list[Problem] = []  # the corpus's problems: skipped, not failures (module doc)
        self.failures: list[Problem] = []  # render and encode failures
        self.encoder = None

    def build_encoder(self):
        if self.encoder is None:
            from crescend_jax.encoders import build_encoder

            self.encoder = build_encoder(self.config.encoder)
            store.remember_encoder_name(self.config, self.encoder.name)
        return self.encoder

    def store_info(self, store_identity: dict) -> store.StoreInfo:
        """The ``store.json`` of the store ``store_identity`` names (builds the encoder)."""
        encoder = self.build_encoder()
        return store.StoreInfo(corpus=self.config.corpus, encoder=encoder.name, frame_rate=float(encoder.frame_rate),
                               num_layers=int(encoder.num_layers), dim=int(encoder.dim),
                               frames=bool(self.config.store.frames), render=store_identity["render"],
                               identity=store_identity, data_root=identity.data_location(self.config),
                               input_layer=int(getattr(encoder, "store_input_layer", 0) or 0))

    def writer(self, store_dir: Path, store_identity: dict) -> store.StoreWriter:
        return store.StoreWriter(store_dir, self.store_info(store_identity), self.writer_id,
                                 int(self.config.store.chunk_size))

    def extract_symbolic(self, store_dir: Path, store_identity: dict, pending: list[Segment]) -> None:
        """Encodes and stores ``pending`` from their MIDI files (and score MIDI files) with a symbolic encoder."""
        encoder = self.build_encoder()
        windows = getattr(encoder, "reads_windows", False)  # ASAP windows' annotated beats (`SymbolicEncoder`)
        encode = lambda segments: encoder.encode_midi([s.midi_path for s in segments],
                                                      [s.score_midi_path for s in segments],
                                                      *([[s.window for s in segments]] if windows else []))
        batch_size = max(1, int(self.config.store.encode_batch))
        with self.writer(store_dir, store_identity) as writer, \
                tqdm(total=len(pending), unit="seg", desc="encode+store MIDI", dynamic_ncols=True) as bar:
            for start in range(0, len(pending), batch_size):
                batch = pending[start:start + batch_size]
                self._encode_and_store([(s, s) for s in batch], encode, writer, SYMBOLIC_RENDER, bar)

    def extract_soundfont(self, soundfont: str, store_dir: Path, store_identity: dict, pending: list[Segment]) -> None:
        """Renders, encodes and stores ``pending`` with one soundfont."""
        from crescend_jax.data.render import RenderCache, RenderSettings, render_many

        settings = RenderSettings.from_config(self.config.render, soundfont)
        encoder = self.build_encoder()
        encode = encoder.encode
        batch_size = max(1, int(self.config.store.encode_batch))
        batch: list[tuple[Segment, np.ndarray]] = []
        results = render_many([s.midi_path for s in pending], settings, RenderCache(Path(self.config.render.cache_dir)),
                              int(self.config.render.workers))
        # closing(): an error mid-way stops the render pool at once instead of whenever the generator is collected
        with contextlib.closing(results), self.writer(store_dir, store_identity) as writer, \
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
                    self._encode_and_store(batch, encode, writer, settings.settings_id, bar)
                    audio_seconds += sum(len(wave) for _, wave in batch) / encoder.sample_rate
                    batch = []
                    bar.set_postfix(audio_s_per_s=f"{audio_seconds / (time.perf_counter() - started):.1f}")
            if batch:
                self._encode_and_store(batch, encode, writer, settings.settings_id, bar)
                audio_seconds += sum(len(wave) for _, wave in batch) / encoder.sample_rate
                bar.set_postfix(audio_s_per_s=f"{audio_seconds / (time.perf_counter() - started):.1f}")

    def _encode_and_store(self, batch, encode, writer: store.StoreWriter, render: str, bar) -> None:
        """Encodes one batch of (segment, input) (item by item if the batch fails, to isolate a bad one). ``encode``
        maps a list of inputs (waveforms, or segments for a symbolic encoder) to a list of `Encoded`."""
        inputs = [value for _, value in batch]
        try:
            encoded = encode(inputs)
        except Exception:  # noqa: BLE001 - retried one by one below so a bad item does not sink its batch
            encoded = None
        for position, (segment, value) in enumerate(batch):
            item = encoded[position] if encoded is not None else None
            if item is None:
                try:
                    (item,) = encode([value])
                except Exception as err:  # noqa: BLE001 - a per-item failure, reported in the summary
                    what = "the render of this MIDI file" if render != SYMBOLIC_RENDER else "this MIDI file"
                    self.failures.append(Problem(segment.key, segment.midi_path,
                                                 f"encoding failed ({type(err).__name__}: {err}); check {what}"))
                    bar.update(1)
                    continue
            writer.add(store.item_record(segment, render, item.pooled, item.frames if writer.info.frames else None,
                                         getattr(item, "input_frames", None) if writer.info.input_layer else None))
            self.done += 1
            bar.update(1)

    def summary(self) -> str:
        lines = [f"done {self.done} / skipped {self.skipped} (already stored) / failed {len(self.failures)} / "
                 f"skipped (bad input): {len(self.bad_input)}"]
        lines += bad_input_summary(self.bad_input)
        lines += [f"  failed: {problem}" for problem in self.failures]
        return "\n".join(lines)


def bad_input_summary(problems: Sequence[Problem], examples: int = EXAMPLES_PER_REASON) -> list[str]:
    """The summary lines of the corpus's bad input: per reason (`Problem.kind`; most frequent first), its count and
    up to ``examples`` of its items with their messages. No lines when there is none."""
    if not problems:
        return []
    by_reason: dict[str, list[Problem]] = {}
    for problem in problems:
        by_reason.setdefault(problem.kind, []).append(problem)
    lines = ["  skipped (bad input) by reason (not failures: the corpus data says these items cannot be used):"]
    for reason, group in sorted(by_reason.items(), key=lambda item: (-len(item[1]), item[0])):
        lines.append(f"    {reason}: {len(group)}")
        lines += [f"      e.g. {problem}" for problem in group[:examples]]
        if len(group) > examples:
            lines.append(f"      ... and {len(group) - examples} more")
    return lines


class NothingStoredError(DataError):
    """An extraction that stored nothing: every item of the corpus (or shard) was bad input."""


def run_extract(config: ml_collections.ConfigDict, shard: tuple[int, int] | None = None) -> int:
    """`extract` as a command: 0 ok (some bad input skipped is ok); 1 some items failed to render or encode, nothing
    was stored, or the run failed on its data or disk; 2 a config mistake. Errors are printed as one line."""
    try:
        return EXIT_FAILED if extract(config, shard) else EXIT_OK
    except (ConfigError, DataError) as err:
        print(f"error: {err}", file=sys.stderr)
        return exit_code(err)


def extract(config: ml_collections.ConfigDict, shard: tuple[int, int] | None = None) -> int:
    """Extracts every (shard of the) corpus into one store per soundfont (module docstring) and prints the summary;
    returns the number of items that failed to render or encode (retried by a rerun). Raises `ConfigError` for a
    config mistake, `NothingStoredError` when nothing at all is stored (every item bad input), another `DataError`
    (`StoreError`, `CorpusError`, ...) when the run fails on its data or disk."""
    run = _Extraction(config, shard)
    store.render_ids(config)  # an unknown or absent soundfont is a config mistake: refused before any work
    corpus = load_corpus(config)
    segments, problems = corpus.segments, corpus.problems
    if shard is not None:
        segments = [s for s in segments if shard_of(s.key, shard[1]) == shard[0]]
        problems = [p for p in problems if shard_of(p.item, shard[1]) == shard[0]]
    run.bad_input.extend(problems)

    encoder_name = store.known_encoder_name(config) or run.build_encoder().name
    plan = _plan(config, encoder_name)
    if any(store.pending_segments(segments, d) for _, d, _ in plan) and run.build_encoder().name != encoder_name:
        plan = _plan(config, run.encoder.name)  # the registry was stale (encoder code changed its name)
    timeout = float(config.store.get("lock_timeout", 3600.0))
    for soundfont, store_dir, store_identity in plan:
        with extraction_lock(store_dir, run.writer_id, timeout):
            pending = store.pending_segments(segments, store_dir)  # after the lock: another run may have stored some
            run.skipped += len(segments) - len(pending)
            if store.stored_keys(store_dir) and not (store_dir / "store.json").is_file():
                store.open_store(store_dir, run.store_info(store_identity))  # lost store.json: written again
            if pending and soundfont is None:
                run.extract_symbolic(store_dir, store_identity, pending)
            elif pending:
                run.extract_soundfont(soundfont, store_dir, store_identity, pending)
            if shard is None and store.stored_keys(store_dir):
                _merge_or_repair(store_dir)

    print(run.summary())
    if not any(store.stored_keys(store_dir) for _, store_dir, _ in plan):
        raise NothingStoredError(
            f"nothing was stored: {len(run.bad_input)} item(s) skipped as bad input, {len(run.failures)} failed, "
            f"{len(segments)} usable (reasons above); check --config.data.root and the corpus files")
    if shard is not None:
        print(f"shard {shard[0]}/{shard[1]} finished; once every shard has, run "
              f"`crescend-jax merge --config <this config file>` (same --config.* overrides)")
    return len(run.failures)


def _merge_or_repair(store_dir: Path) -> None:
    """Merges the store's parts when they changed; a merge of the current parts that no longer reads back (a damaged
    file) is said and rebuilt from the parts."""
    if store.is_merged(store_dir) and (problem := store.merged_problem(store_dir)) is not None:
        print(f"the merged dataset of {store_dir} does not read back ({problem}): rebuilding it from its parts",
              file=sys.stderr)
        store.merge_store(store_dir, rebuild=True)
    else:
        store.merge_store(store_dir)


def _plan(config, encoder_name: str) -> list[tuple[str | None, Path, dict]]:
    """(soundfont, or None for a symbolic encoder; store directory; store identity) of every store to fill."""
    identities = store.store_identities(config, encoder_name)
    sources = [None] if is_symbolic(config.encoder) else list(config.render.soundfonts)
    return [(source, store.store_dir_of(config.store.root, ident), ident)
            for source, ident in zip(sources, identities)]


def run_merge(config: ml_collections.ConfigDict) -> int:
    """Merges the part files written by ``extract --shard i/N`` workers into one dataset per store, rebuilding it
    from the parts each time (so it also repairs a damaged merged dataset); the same parts give the same dataset."""
    try:
        name = store.known_encoder_name(config)
        if name is None:
            raise store.StoreError(f"nothing to merge: no store under {Path(config.store.root) / config.corpus} for "
                                   f"this encoder config; run `crescend-jax extract --config <this config file>` first")
        for store_dir in store.store_dirs(config, encoder_name=name):
            print(f"{store_dir}: {store.merge_store(store_dir, rebuild=True)} items")
    except (ConfigError, DataError) as err:
        print(f"error: {err}", file=sys.stderr)
        return exit_code(err)
    return EXIT_OK
