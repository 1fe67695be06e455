"""`extract` / `merge`: shards, resume after a kill, bad input (skipped, counted per reason) apart from render and
encode failures, whole-run errors, store identity, locks, damaged stores, disk full, a symbolic encoder and fusion
(tiny MIDIs, a counting encoder)."""

import os
import time
from pathlib import Path

import ml_collections
import mido
import numpy as np
import pytest

from crescend_jax import encoders
from crescend_jax.data import extract, store
from crescend_jax.data.render import default_render_config
from crescend_jax.data.segments import Corpus, Problem, Segment
from crescend_jax.data.store import default_store_config


class CountingEncoder:
    """Deterministic features of the waveform; counts encode calls and items."""

    name = "counting"
    sample_rate = 16000
    frame_rate = 4.0
    num_layers = 2
    dim = 3

    def __init__(self, fail_after_items: int | None = None, reject_longer_than: float | None = None):
        self.calls = 0
        self.items = 0
        self.fail_after_items = fail_after_items
        self.reject_longer_than = reject_longer_than

    def encode(self, waveforms):
        self.calls += 1
        out = []
        for wave in waveforms:
            if self.fail_after_items is not None and self.items >= self.fail_after_items:
                raise KeyboardInterrupt  # the run is killed here
            if self.reject_longer_than is not None and len(wave) > self.reject_longer_than * self.sample_rate:
                raise ValueError("too long for this encoder")
            self.items += 1
            chunks = np.array_split(wave, 4)
            frames = np.array([[[c.mean() + layer, c.std(), len(wave) / 1e5] for c in chunks] for layer in range(2)],
                              np.float32)
            out.append(encoders.Encoded(frames=frames, pooled=frames.mean(1).reshape(-1)))
        return out


def write_midi(path: Path, pitch: int, seconds: float = 0.3) -> Path:
    midi = mido.MidiFile(ticks_per_beat=480)
    track = mido.MidiTrack()
    ticks = int(mido.second2tick(seconds, 480, 500000))
    track += [mido.Message("note_on", note=pitch, velocity=80, time=0),
              mido.Message("note_off", note=pitch, velocity=0, time=ticks)]
    midi.tracks.append(track)
    midi.save(path)
    return path


def make_corpus(tmp_path: Path, count: int = 6, bad: bool = False) -> Corpus:
    midi_dir = tmp_path / "midi"
    midi_dir.mkdir(exist_ok=True)
    segments = []
    for i in range(count):
        key = f"Comp{i % 2}_8bars_{i}_1"
        segments.append(Segment(
            key=key, composition=f"Comp{i % 2}", piece=f"Comp{i % 2}_8bars", performer=str(i),
            group=f"Comp{i % 2}_8bars_1", midi_path=write_midi(midi_dir / f"{key}.mid", 60 + i),
            label_mean=np.full(19, i / 10, np.float32), label_std=np.full(19, 0.1, np.float32),
            ratings=np.full((2, 19), i / 10, np.float32), label_truth=np.full(19, np.nan, np.float32)))
    problems = []
    if bad:
        corrupt = midi_dir / "Comp0_8bars_corrupt_1.mid"
        corrupt.write_bytes(b"MThd this is not a MIDI file")
        segments.append(Segment(**{**segments[0].__dict__, "key": "Comp0_8bars_corrupt_1", "midi_path": corrupt}))
        segments.append(Segment(**{**segments[0].__dict__, "key": "Comp0_8bars_missing_1",
                                   "midi_path": midi_dir / "Comp0_8bars_missing_1.mid"}))
        problems.append(Problem("not-a-key", tmp_path / "labels.json", "does not parse as <composition>_<N>bars_..."))
    return Corpus(name="fake", segments=segments, problems=problems)


@pytest.fixture
def setup(tmp_path, monkeypatch):
    """Returns (config, corpus, built encoders) with the corpus and encoder swapped for fakes."""
    corpus_box = {"corpus": make_corpus(tmp_path)}
    built: list[CountingEncoder] = []
    encoder_kwargs: dict = {}

    def fake_build(config):
        built.append(CountingEncoder(**encoder_kwargs))
        return built[-1]

    monkeypatch.setattr(extract, "load_corpus", lambda config: corpus_box["corpus"])
    monkeypatch.setattr(encoders, "build_encoder", fake_build)
    config = ml_collections.ConfigDict()
    config.corpus = "fake"
    config.data = ml_collections.ConfigDict({"root": str(tmp_path)})
    config.render = default_render_config()
    config.render.cache_dir = str(tmp_path / "render-cache")
    config.render.sample_rate = 16000
    config.render.workers = 1  # in-process: a spawn pool per run would dominate these tiny runs
    config.encoder = ml_collections.ConfigDict({"name": "counting", "counting": {}})
    config.store = default_store_config()
    config.store.root = str(tmp_path / "stores")
    config.store.chunk_size = 2
    config.store.encode_batch = 2
    return config, corpus_box, built, encoder_kwargs


def test_parse_shard():
    assert extract.parse_shard(None) is None
    assert extract.parse_shard("1/4") == (1, 4)
    for bad in ("4/4", "-1/2", "a/b", "3", "0/0"):
        with pytest.raises(extract.ShardError, match="i/N"):
            extract.parse_shard(bad)


def test_shard_of_is_stable_and_covers_every_shard():
    keys = [f"key_{i}" for i in range(200)]
    assert [extract.shard_of(k, 4) for k in keys] == [extract.shard_of(k, 4) for k in keys]
    assert extract.shard_of("Schubert_D960_mv3_8bars_3_12", 4) == 1  # fixed forever: shards must not move
    assert set(extract.shard_of(k, 4) for k in keys) == {0, 1, 2, 3}


def test_extract_then_rerun_is_a_no_op(setup, capsys):
    config, corpus_box, built, _ = setup
    assert extract.run_extract(config) == 0
    assert "done 6 / skipped 0 (already stored) / failed 0 / skipped (bad input): 0" in capsys.readouterr().out
    table = store.load_table(config)
    assert sorted(table.keys) == sorted(s.key for s in corpus_box["corpus"].segments)
    assert table.encoder == "counting" and table.pooled.shape == (6, 6) and table.frames is None
    row = list(table.keys).index("Comp1_8bars_3_1")
    np.testing.assert_allclose(table.label_mean[row], 0.3)
    assert extract.run_extract(config) == 0
    assert "done 0 / skipped 6 (already stored) / failed 0" in capsys.readouterr().out
    assert len(built) == 1  # the rerun found the store through the registry and built no encoder


def test_killed_run_resumes_without_recomputing(setup, capsys):
    config, corpus_box, built, encoder_kwargs = setup
    encoder_kwargs["fail_after_items"] = 5  # killed inside the third batch of two
    config.store.chunk_size = 3  # the fourth item is still buffered when the kill comes
    with pytest.raises(KeyboardInterrupt):
        extract.run_extract(config)
    (store_dir,) = store.store_dirs(config)
    (store_dir / "parts" / ".tmp-killed.array_record").write_bytes(b"half a chunk")
    finished = store.stored_keys(store_dir)
    assert len(finished) == 4  # both finished batches were committed on the way out, chunk size notwithstanding
    encoder_kwargs["fail_after_items"] = None
    assert extract.run_extract(config) == 0
    assert "done 2 / skipped 4 (already stored)" in capsys.readouterr().out
    assert built[-1].items == 2  # only the unfinished keys were encoded
    table = store.load_table(config)
    assert sorted(table.keys) == sorted(s.key for s in corpus_box["corpus"].segments)


def test_shards_then_merge_give_one_dataset(setup, capsys):
    config, corpus_box, built, _ = setup
    config.store.frames = True
    assert extract.run_extract(config, shard=(0, 2)) == 0
    assert extract.run_extract(config, shard=(1, 2)) == 0
    out = capsys.readouterr().out
    assert "crescend-jax merge" in out
    (store_dir,) = store.store_dirs(config)
    assert not store.is_merged(store_dir)
    assert extract.run_merge(config) == 0
    assert store.is_merged(store_dir)
    assert extract.run_merge(config) == 0  # idempotent
    table = store.read_store([store_dir])
    assert sorted(table.keys) == sorted(s.key for s in corpus_box["corpus"].segments)
    assert sum(b.items for b in built) == 6
    assert [f.shape for f in table.frames] == [(2, 4, 3)] * 6
    np.testing.assert_allclose(np.stack([f.mean(1).reshape(-1) for f in table.frames]), table.pooled, atol=0.05)


def test_bad_items_fail_alone_and_are_summarised(setup, tmp_path, capsys):
    config, corpus_box, built, _ = setup
    corpus_box["corpus"] = make_corpus(tmp_path, bad=True)
    config.render.workers = 2  # failures come back from the worker processes too
    assert extract.run_extract(config) == 1  # two renders failed
    out = capsys.readouterr().out
    assert "done 6 / skipped 0 (already stored) / failed 2 / skipped (bad input): 1" in out
    for item in ("Comp0_8bars_corrupt_1", "Comp0_8bars_missing_1"):
        assert f"failed: {item}" in out
    assert "failed: not-a-key" not in out and "e.g. not-a-key" in out  # the reader's problem is bad input
    assert len(store.load_table(config)) == 6


def test_bad_input_alone_is_skipped_and_counted_per_reason_not_failed(setup, tmp_path, capsys):
    config, corpus_box, _, _ = setup
    corpus = corpus_box["corpus"]
    corpus.problems = [Problem(f"Comp0/P{i}", tmp_path / f"P{i}.mid", f"{60 + i} downbeats against the score's 62; "
                               f"the performance is skipped", reason="downbeat count differs from the score's")
                       for i in range(5)]
    corpus.problems.append(Problem("Comp1__w003__Q", None, "the window lasts 0.40 s: dropped",
                                   reason="window shorter than data.min_window_seconds"))
    corpus.problems.append(Problem("not-a-key", None, "does not parse"))  # no reason: its message is its kind
    assert extract.run_extract(config) == 0  # nothing failed: bad input is not a failure
    out = capsys.readouterr().out
    assert "done 6 / skipped 0 (already stored) / failed 0 / skipped (bad input): 7" in out
    lines = out.splitlines()
    reasons = [line.strip() for line in lines if line.startswith("    ") and not line.startswith("      ")]
    assert reasons == ["downbeat count differs from the score's: 5", "does not parse: 1",
                       "window shorter than data.min_window_seconds: 1"]  # most frequent first
    examples = [line for line in lines if line.startswith("      e.g. Comp0/P")]
    assert len(examples) == extract.EXAMPLES_PER_REASON and "61 downbeats against the score's 62" in examples[1]
    assert "      ... and 2 more" in lines and "failed:" not in out
    assert len(store.load_table(config)) == 6


def test_a_shard_counts_only_its_own_bad_input(setup, capsys):
    config, corpus_box, _, _ = setup
    corpus_box["corpus"].problems = [Problem(f"item-{i}", None, "unusable", reason="bad") for i in range(40)]
    counts = []
    for shard in range(2):
        assert extract.run_extract(config, shard=(shard, 2)) == 0
        line = next(line for line in capsys.readouterr().out.splitlines() if line.startswith("done "))
        counts.append(int(line.rsplit(" ", 1)[1]))
    assert sum(counts) == 40 and all(counts)


def test_an_encoding_failure_sinks_only_its_item(setup, tmp_path, capsys):
    config, corpus_box, built, encoder_kwargs = setup
    corpus = corpus_box["corpus"]
    long_midi = write_midi(tmp_path / "midi" / "long.mid", 70, seconds=4.0)
    corpus.segments[1] = Segment(**{**corpus.segments[1].__dict__, "midi_path": long_midi})
    encoder_kwargs["reject_longer_than"] = 3.0
    assert extract.run_extract(config) == 1
    out = capsys.readouterr().out
    assert "done 5 / skipped 0 (already stored) / failed 1" in out
    assert f"failed: {corpus.segments[1].key} ({long_midi}): encoding failed (ValueError: too long" in out
    assert corpus.segments[1].key not in store.load_table(config).keys


def test_absent_soundfont_is_a_whole_run_error(setup, tmp_path, capsys):
    config, _, built, _ = setup
    config.render.soundfonts = (str(tmp_path / "no-such.sf2"),)
    assert extract.run_extract(config) == 2
    err = capsys.readouterr().err
    assert "no-such.sf2" in err and err.startswith("error:")
    assert not built


def test_merge_without_a_store_is_a_clear_error(setup, capsys):
    config, *_ = setup
    assert extract.run_merge(config) == 1  # a data failure (exit 2 is for config mistakes)
    assert "crescend-jax extract" in capsys.readouterr().err


def test_percepiano_config_loads_with_overrides():
    from crescend_jax.config import load_config

    config = load_config("configs/percepiano.py", ["--config.store.frames=true", "--config.data.root=/x"])
    assert config.corpus == "percepiano" and config.encoder.name == "features"
    assert config.store.frames is True and config.data.root == "/x" and config.store.root == "stores"


@pytest.mark.data
def test_extract_real_percepiano_segments(percepiano_root, setup, monkeypatch, capsys):
    """The real reader and renderer on three PercePiano segments (the encoder stays the counting fake)."""
    from crescend_jax.data.percepiano import load_percepiano

    config, *_ = setup
    corpus = load_percepiano(percepiano_root)
    corpus.segments = corpus.segments[:3]
    corpus.problems = []
    monkeypatch.setattr(extract, "load_corpus", lambda config: corpus)
    config.render.sample_rate = CountingEncoder.sample_rate
    assert extract.run_extract(config) == 0
    table = store.load_table(config)
    assert sorted(table.keys) == sorted(s.key for s in corpus.segments)
    np.testing.assert_array_equal(table.ratings[list(table.keys).index(corpus.segments[0].key)],
                                  corpus.segments[0].ratings)


# ---------------------------------------------------------------------------------------------------------------
# Store identity, locks, damaged stores, disk full


def test_a_new_demo_seed_extracts_into_a_new_store(setup, capsys):
    from crescend_jax.data.demo_corpus import default_demo_data_config

    config, corpus_box, built, _ = setup
    config.corpus = "demo"  # the corpus itself stays the fake one: what matters is how the store is found
    config.data = default_demo_data_config()
    assert extract.run_extract(config) == 0
    (first,) = store.store_dirs(config)
    config.data.num_folds = 4  # a split setting: same store
    assert extract.run_extract(config) == 0
    assert "done 0 / skipped 6" in capsys.readouterr().out
    config.data.seed = 1
    assert extract.run_extract(config) == 0
    assert "done 6 / skipped 0 (already stored)" in capsys.readouterr().out  # not "skipped 6"
    (second,) = store.store_dirs(config)
    assert second != first and second.parent == first.parent
    assert store.read_info(second).identity["corpus_content"]["fields"]["seed"] == 1
    assert store.read_info(first).identity["corpus_content"]["fields"]["seed"] == 0
    assert store.load_table(config).sources == (str(second.resolve()),)


def test_store_json_names_the_identity_and_the_table_its_sources(setup, tmp_path):
    config, *_ = setup
    assert extract.run_extract(config) == 0
    (store_dir,) = store.store_dirs(config)
    info = store.read_info(store_dir)
    assert info.identity == store.store_identities(config, "counting")[0]
    assert info.identity["corpus_content"] == {"root": str(tmp_path)} and info.data_root == str(tmp_path.resolve())
    assert store_dir.name == f"{info.render}-{store.identity_lib.identity_digest(info.identity)}"
    table = store.load_table(config)
    assert table.sources == (str(store_dir.resolve()),) and table.data_roots == (str(tmp_path.resolve()),)


def test_lost_store_json_is_written_again_by_extract(setup, capsys):
    config, *_ = setup
    assert extract.run_extract(config) == 0
    (store_dir,) = store.store_dirs(config)
    expected = store.read_info(store_dir)
    (store_dir / "store.json").unlink()
    with pytest.raises(store.StoreError, match="store.json is missing but .* holds items: rerun `crescend-jax extract"):
        store.load_table(config)
    assert extract.run_extract(config) == 0
    assert "done 0 / skipped 6" in capsys.readouterr().out
    assert store.read_info(store_dir) == expected and len(store.load_table(config)) == 6


def test_corrupt_part_fails_the_run_naming_it_and_re_extracting_repairs_it(setup, capsys):
    config, *_ = setup
    assert extract.run_extract(config) == 0
    (store_dir,) = store.store_dirs(config)
    part = sorted((store_dir / "parts").glob("*.array_record"))[0]
    part.write_bytes(part.read_bytes()[:100])  # truncated
    (store_dir / "parts" / "later.keys.json").write_text("[]")  # (an orphan keys file is ignored)
    config.store.chunk_size = 100
    capsys.readouterr()
    assert extract.run_merge(config) == 1
    err = capsys.readouterr().err
    assert err.startswith(f"error: part file {part} is corrupt or truncated") and err.count("\n") == 1
    assert "re-extract its 2 items" in err
    part.unlink()
    part.with_name(part.name.replace(".array_record", ".keys.json")).unlink()
    assert extract.run_extract(config) == 0
    assert "done 2 / skipped 4" in capsys.readouterr().out
    assert len(store.load_table(config)) == 6


def test_merge_rebuilds_a_damaged_merged_dataset(setup, capsys):
    config, *_ = setup
    assert extract.run_extract(config) == 0
    (store_dir,) = store.store_dirs(config)
    (shard,) = (store_dir / store.DATASET_VERSION).glob("*.array_record-*")
    shard.write_bytes(shard.read_bytes()[:50])
    with pytest.raises(store.StoreError, match="rebuild it from its parts with `crescend-jax merge --config"):
        store.load_table(config)
    assert extract.run_merge(config) == 0
    assert len(store.load_table(config)) == 6


@pytest.mark.parametrize("damage", ["truncated", "overwritten"])
def test_extract_rebuilds_a_merged_dataset_that_does_not_read_back(setup, capsys, damage):
    config, *_ = setup
    assert extract.run_extract(config) == 0
    (store_dir,) = store.store_dirs(config)
    (shard,) = (store_dir / store.DATASET_VERSION).glob("*.array_record-*")
    data = shard.read_bytes()
    shard.write_bytes(data[:50] if damage == "truncated" else data[:40] + bytes(len(data) - 80) + data[-40:])
    assert store.merged_problem(store_dir) is not None
    capsys.readouterr()
    assert extract.run_extract(config) == 0
    captured = capsys.readouterr()
    assert "done 0 / skipped 6 (already stored)" in captured.out
    assert f"the merged dataset of {store_dir} does not read back" in captured.err
    assert "rebuilding it from its parts" in captured.err
    assert store.merged_problem(store_dir) is None and len(store.load_table(config)) == 6


def test_an_extract_that_stores_nothing_fails_with_the_reasons(setup, tmp_path, capsys):
    config, corpus_box, built, _ = setup
    corpus_box["corpus"] = Corpus(name="fake", segments=[], problems=[
        Problem(f"Comp0/P{i}", None, "its MIDI file is missing", reason="no MIDI file") for i in range(3)])
    assert extract.run_extract(config) == 1
    captured = capsys.readouterr()
    assert "skipped (bad input): 3" in captured.out and "no MIDI file: 3" in captured.out
    (line,) = [line for line in captured.err.splitlines() if line.startswith("error:")]
    assert line.startswith("error: nothing was stored: 3 item(s) skipped as bad input, 0 failed, 0 usable")


def _enospc(*args, **kwargs):
    import errno
    import os

    raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))


def test_disk_full_fails_the_run_with_one_line_and_a_rerun_continues(setup, monkeypatch, capsys):
    config, *_ = setup
    write_records = store._write_records
    monkeypatch.setattr(store, "_write_records", _enospc)
    assert extract.run_extract(config) == 1
    captured = capsys.readouterr()
    errors = [line for line in captured.err.splitlines() if line.startswith("error:")]
    assert len(errors) == 1 and "Traceback" not in captured.err
    assert errors[0].startswith(f"error: cannot write {config.store.root}/fake/counting/")
    assert "No space left on device; free space on that disk or set --config.store.root" in errors[0]
    (store_dir,) = store.store_dirs(config)
    assert store.stored_keys(store_dir) == set()  # nothing partial was committed
    assert not [p for p in (store_dir / "parts").iterdir()]
    monkeypatch.setattr(store, "_write_records", write_records)  # space again
    assert extract.run_extract(config) == 0
    assert "done 6 / skipped 0" in capsys.readouterr().out


def test_unwritable_store_root_fails_the_run_with_one_line(setup, tmp_path, capsys):
    config, _, built, _ = setup
    (tmp_path / "not-a-dir").write_text("")
    config.store.root = str(tmp_path / "not-a-dir")
    assert extract.run_extract(config) == 1
    err = capsys.readouterr().err
    assert err.startswith(f"error: cannot write {tmp_path / 'not-a-dir'}") and "Not a directory" in err
    assert err.count("\n") == 1


def test_a_second_extract_waits_for_the_first_then_skips_what_it_stored(setup, capsys):
    import threading

    from crescend_jax.data.lock import extraction_lock

    config, corpus_box, built, _ = setup
    (store_dir,) = store.store_dirs(config)
    info = store.StoreInfo(corpus="fake", encoder="counting", frame_rate=4.0, num_layers=2, dim=3, frames=False,
                           render=store_dir.name.rsplit("-", 1)[0], identity=store.store_identities(config, "counting")[0],
                           data_root=str(Path(config.data.root).resolve()))
    first_has_lock, release = threading.Event(), threading.Event()

    def first_extract():  # holds the store's lock and stores four items meanwhile
        with extraction_lock(store_dir, "all"):
            first_has_lock.set()
            with store.StoreWriter(store_dir, info) as writer:
                for segment in corpus_box["corpus"].segments[:4]:
                    writer.add(store.item_record(segment, info.render, np.zeros(6, np.float32), None))
            release.wait(10)

    thread = threading.Thread(target=first_extract)
    thread.start()
    assert first_has_lock.wait(10)
    threading.Timer(0.5, release.set).start()
    started = time.monotonic()
    assert extract.run_extract(config) == 0
    waited = time.monotonic() - started
    thread.join()
    captured = capsys.readouterr()
    assert f"waiting for {store_dir / 'extract.lock'}: `crescend-jax extract` pid {os.getpid()}" in captured.err
    assert "done 2 / skipped 4 (already stored)" in captured.out and waited >= 0.4
    assert len(store.load_table(config)) == 6


def test_a_second_extract_refuses_after_the_timeout(setup, capsys):
    import subprocess
    import sys

    config, _, built, _ = setup
    config.store.lock_timeout = 0.5
    (store_dir,) = store.store_dirs(config)
    holder = subprocess.Popen(
        [sys.executable, "-c", "import sys, time\nfrom crescend_jax.data.lock import extraction_lock\n"
         f"with extraction_lock({str(store_dir)!r}, 'all'):\n    print('held', flush=True)\n    time.sleep(30)\n"],
        stdout=subprocess.PIPE, text=True)
    try:
        assert holder.stdout.readline().strip() == "held"
        assert extract.run_extract(config) == 1
    finally:
        holder.kill()
        holder.wait()
    err = capsys.readouterr().err
    line = next(line for line in err.splitlines() if line.startswith("error:"))
    assert f"{store_dir / 'extract.lock'} is still held by `crescend-jax extract` pid {holder.pid}" in line
    assert "after 0.5 s" in line and "--config.store.lock_timeout" in line
    assert sum(b.items for b in built) == 0  # refused before encoding anything
    assert extract.run_extract(config) == 0  # the holder died: the kernel dropped its lock


def test_shard_workers_share_a_store_but_not_a_shard(tmp_path):
    import threading

    from crescend_jax.data.lock import StoreLockedError, extraction_lock

    store_dir = tmp_path / "s"
    with extraction_lock(store_dir, "shard-0-of-2", timeout=0):
        with extraction_lock(store_dir, "shard-1-of-2", timeout=0):  # another shard: side by side
            pass
        result = {}

        def other(writer_id):  # flock excludes another open file description, even in this process
            try:
                with extraction_lock(store_dir, writer_id, timeout=0):
                    result[writer_id] = "acquired"
            except StoreLockedError as err:
                result[writer_id] = str(err)

        for writer_id in ("shard-0-of-2", "all"):
            thread = threading.Thread(target=other, args=(writer_id,))
            thread.start()
            thread.join()
        assert "extract-shard-0-of-2.lock is still held" in result["shard-0-of-2"]
        assert "extract.lock is still held" in result["all"]  # a whole-corpus run waits for the shard workers
    with extraction_lock(store_dir, "all", timeout=0):
        assert (store_dir / "extract.lock").read_text().startswith('{"pid": ')
    assert (store_dir / "extract.lock").read_text() == ""  # names a holder only while one holds it


# ---------------------------------------------------------------------------------------------------------------
# A symbolic encoder's store, fused with an audio encoder's


class SymbolicFake:
    """A symbolic encoder: MIDI (and score) paths in, their byte size out; renders nothing."""

    name = "midi-fake"
    symbolic = True
    frame_rate = 0.0
    num_layers = 1
    dim = 2

    def __init__(self):
        self.items = 0

    def encode_midi(self, midi_paths, score_paths=None):
        self.items += len(midi_paths)
        return [encoders.Encoded(frames=np.zeros((1, 1, 2), np.float32),
                                 pooled=np.array([Path(p).stat().st_size, score is not None], np.float32))
                for p, score in zip(midi_paths, score_paths)]


def test_symbolic_store_then_fusion_with_the_audio_stores(setup, tmp_path, monkeypatch, capsys):
    config, corpus_box, built, _ = setup
    symbolic = []

    def build(encoder_config):
        if encoder_config.name == "midi":
            symbolic.append(SymbolicFake())
            return symbolic[-1]
        built.append(CountingEncoder())
        return built[-1]

    monkeypatch.setattr(encoders, "build_encoder", build)
    with config.encoder.unlocked():
        config.encoder.midi = ml_collections.ConfigDict({"use_score": True})
    config.render.soundfonts = ("fluidr3", "musescore")
    assert extract.run_extract(config) == 0
    config.encoder.name = "midi"
    config.render.cache_dir = str(tmp_path / "no-render-cache")
    assert extract.run_extract(config) == 0
    assert "done 6 / skipped 0" in capsys.readouterr().out
    assert symbolic[0].items == 6 and not (tmp_path / "no-render-cache").exists()  # nothing was rendered
    (symbolic_dir,) = store.store_dirs(config)
    assert symbolic_dir.name.startswith("symbolic-") and symbolic_dir.parent.name == "midi-fake"
    midi_table = store.load_table(config)
    assert set(midi_table.renders) == {"symbolic"} and midi_table.pooled.shape == (6, 2)

    config.encoder.name = "counting"
    config.store.fuse = ("counting", "midi")
    table = store.load_table(config)
    audio = store.load_table(ml_collections.ConfigDict({**config.to_dict(), "store": {**config.store.to_dict(),
                                                                                     "fuse": ()}}))
    assert table.encoder == "fusion(counting+midi-fake)" and table.pooled.shape == (12, 8) and table.frames is None
    np.testing.assert_array_equal(table.keys, audio.keys)
    np.testing.assert_array_equal(table.renders, audio.renders)
    np.testing.assert_array_equal(table.pooled[:, :6], audio.pooled)
    by_key = dict(zip(midi_table.keys, midi_table.pooled))
    np.testing.assert_array_equal(table.pooled[:, 6:], np.stack([by_key[k] for k in table.keys]))
    assert len(table.sources) == 3
