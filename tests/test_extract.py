"""`extract` / `merge`: shards, resume after a kill, bad items, whole-run errors (tiny MIDIs, a counting encoder)."""

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
    assert "done 6 / skipped 0 (already stored) / failed 0" in capsys.readouterr().out
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
    assert extract.run_extract(config) == 1
    out = capsys.readouterr().out
    assert "done 6 / skipped 0 (already stored) / failed 3" in out
    for item in ("not-a-key", "Comp0_8bars_corrupt_1", "Comp0_8bars_missing_1"):
        assert f"failed: {item}" in out
    assert len(store.load_table(config)) == 6


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
    assert extract.run_merge(config) == 2
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
