"""The demo corpus: determinism, planted factors that move their labels and the MIDI and are kept on every segment,
and the piece confound."""

import io
import shutil
from pathlib import Path

import mido
import numpy as np
import pytest

from crescend_jax.data import demo_corpus as dc
from crescend_jax.data import performers as perf
from crescend_jax.data.dimensions import DIMENSIONS, NUM_DIMENSIONS

DIM = {name: i for i, name in enumerate(DIMENSIONS)}


def _small_config(cache_dir: Path, seed: int = 0):
    config = dc.default_demo_data_config()
    config.seed = seed
    config.num_pieces = 8
    config.num_performers = 6
    config.cache_dir = str(cache_dir)
    return config


@pytest.fixture(scope="module")
def cache_dir(tmp_path_factory) -> Path:
    return tmp_path_factory.mktemp("demo")


@pytest.fixture(scope="module")
def corpus(cache_dir):
    return dc.build_demo_corpus(_small_config(cache_dir))


def _label_arrays(corpus):
    return {name: np.stack([getattr(s, name) for s in corpus.segments]) for name in ("label_mean", "label_std", "label_truth")}


def test_corpus_layout(corpus):
    config = _small_config(Path("unused"))
    assert corpus.name == "demo" and corpus.problems == []
    groups = sorted({s.group for s in corpus.segments})
    assert len({s.composition for s in corpus.segments}) == config.num_pieces
    assert len(groups) == config.num_pieces * config.segments_per_piece
    assert len({s.key for s in corpus.segments}) == len(corpus.segments)
    for group in groups:
        players = sorted(s.performer for s in corpus.segments if s.group == group)
        assert players == ["Score"] + [f"p{i:02d}" for i in range(config.num_performers)]
    for s in corpus.segments:
        assert s.piece.startswith(s.composition + "_") and s.piece.endswith("bars")
        assert s.group.startswith(s.piece + "_") and s.key == f"{s.piece}_{s.performer}_{s.group.rsplit('_', 1)[1]}"
        assert s.ratings.shape == (config.num_raters, NUM_DIMENSIONS) and s.ratings.dtype == np.float32
        rated = s.ratings[~np.isnan(s.ratings).any(axis=1)]
        assert len(rated) >= 1 and np.isnan(s.ratings).all(axis=1).sum() + len(rated) == config.num_raters
        assert set(np.round(rated.ravel() * 7, 4)) <= set(range(1, 8))  # integer 1..7 ratings on the /7 scale
        np.testing.assert_allclose(s.label_mean, rated.mean(axis=0), rtol=1e-6)
        np.testing.assert_allclose(s.label_std, rated.std(axis=0), rtol=1e-5, atol=1e-6)
        assert np.all((s.label_truth > 1 / 7) & (s.label_truth < 1))


def test_midis_parse_with_notes_and_pedal(corpus):
    pedalled = 0
    for s in corpus.segments:
        midi = mido.MidiFile(s.midi_path)
        notes = [m for m in midi if m.type == "note_on" and m.velocity > 0]
        assert len(notes) > 0, s.key
        assert 1.0 < midi.length < 30.0, (s.key, midi.length)
        pedal = [m for m in midi if m.type == "control_change" and m.control == 64]
        if s.is_deadpan:
            assert pedal == [] and {m.velocity for m in notes} == {64}
        pedalled += bool(pedal)
    assert pedalled > len(corpus.segments) // 2


def test_same_seed_same_corpus_and_no_rewrite(corpus, cache_dir, tmp_path):
    # A fresh cache (parsed scores copied, MIDI rendered from scratch) gives identical bytes and labels.
    shutil.copytree(cache_dir / "scores", tmp_path / "scores")
    again = dc.build_demo_corpus(_small_config(tmp_path))
    assert [s.key for s in again.segments] == [s.key for s in corpus.segments]
    for a, b in zip(corpus.segments, again.segments):
        assert a.midi_path != b.midi_path and a.midi_path.read_bytes() == b.midi_path.read_bytes()
        np.testing.assert_array_equal(a.ratings, b.ratings)
    for name, values in _label_arrays(again).items():
        np.testing.assert_array_equal(values, _label_arrays(corpus)[name])
    # Building again in place finds every file identical and leaves it untouched.
    stamps = {s.midi_path: s.midi_path.stat().st_mtime_ns for s in again.segments}
    dc.build_demo_corpus(_small_config(tmp_path))
    assert all(path.stat().st_mtime_ns == stamp for path, stamp in stamps.items())


def test_other_seed_other_corpus(corpus, cache_dir):
    other = dc.build_demo_corpus(_small_config(cache_dir, seed=1))
    assert [s.key for s in other.segments] == [s.key for s in corpus.segments]
    performed = [(a, b) for a, b in zip(corpus.segments, other.segments) if not a.is_deadpan]
    assert all(a.midi_path.read_bytes() != b.midi_path.read_bytes() for a, b in performed)
    assert not np.allclose(_label_arrays(corpus)["label_truth"], _label_arrays(other)["label_truth"])


def test_segments_carry_the_factors_they_were_played_with(corpus):
    config = _small_config(Path("unused"))
    base = dc.performer_factors(config)
    deviations = []
    for s in corpus.segments:
        assert s.factors.dtype == np.float32 and s.factors.shape == (len(perf.FACTOR_NAMES),)
        if s.is_deadpan:
            assert np.isnan(s.factors).all()
            continue
        assert np.isfinite(s.factors).all()
        # the performer's factors plus this performance's jitter, the first draw of the performance's generator
        jitter = dc._rng(config.seed, "performance", s.key).standard_normal(len(perf.FACTOR_NAMES))
        np.testing.assert_allclose(s.factors, base[s.performer].as_array() + jitter * config.performance_sd, rtol=1e-6)
        deviations.append(s.factors - base[s.performer].as_array())
    assert 0.8 * config.performance_sd < np.std(deviations) < 1.2 * config.performance_sd
    # one performer's performances differ, but stay closer to each other than to another performer's
    first = np.stack([s.factors for s in corpus.segments if s.performer == "p00"])
    second = np.stack([s.factors for s in corpus.segments if s.performer == "p01"])
    assert len(np.unique(first[:, 0])) == len(first)
    assert np.abs(first - first.mean(0)).mean() < np.abs(first - second.mean(0)).mean()


def test_labels_are_the_truth_of_the_stored_factors(corpus, cache_dir):
    # Playing a segment again with its stored factors gives its noiseless labels back: the factors a probe is scored
    # against are those that made the labels (not the performer's un-jittered ones).
    config = _small_config(cache_dir)
    s = next(s for s in corpus.segments if s.performer == "p02" and s.group.endswith("_1"))
    piece = next(p for p in dc.PIECES if p.composition == s.composition)
    score = dc.load_score(piece, cache_dir)
    bars = int(s.piece.rsplit("_", 1)[1].removesuffix("bars"))
    first, end = dc.segment_windows(score, bars, config.segments_per_piece)[1]
    traits = perf.PieceTraits(piece.tempo_bpm, piece.loudness, score.minor)

    def truth(factors: np.ndarray) -> np.ndarray:
        rng = dc._rng(config.seed, "performance", s.key)
        rng.standard_normal(len(perf.FACTOR_NAMES))  # the jitter draw
        return perf.render_performance(dc.cut_segment(score, first, end), traits, perf.PerformerFactors.from_array(
            factors), dc.piece_offsets(config, s.composition), rng).truth

    np.testing.assert_allclose(truth(s.factors.astype(np.float64)), s.label_truth, atol=1e-5)
    assert np.abs(truth(dc.performer_factors(config)["p02"].as_array()) - s.label_truth).max() > 1e-3


def test_factors_survive_a_store_round_trip(corpus, tmp_path):
    from crescend_jax.data import store

    info = store.StoreInfo(corpus="demo", encoder="fake-enc", frame_rate=10.0, num_layers=1, dim=2, frames=False,
                           render="r")
    segments = corpus.segments[:20]
    with store.StoreWriter(tmp_path / "s", info, chunk_size=8) as writer:
        for s in segments:
            writer.add(store.item_record(s, "r", np.zeros(2, np.float32), None))
    table = store.read_store([tmp_path / "s"])
    assert table.factor_names == perf.FACTOR_NAMES
    by_key = {s.key: s.factors for s in segments}
    np.testing.assert_array_equal(table.performer_factors, np.stack([by_key[k] for k in table.keys]))
    deadpan = np.array([p == "Score" for p in table.performers])
    assert deadpan.any() and np.isnan(table.performer_factors[deadpan]).all()
    assert np.isfinite(table.performer_factors[~deadpan]).all()


def test_score_cache_is_used(cache_dir, monkeypatch):
    piece = dc.PIECES[0]
    assert list((cache_dir / "scores").glob(piece.corpus_path.replace("/", "__") + "-music21-*.json"))

    def no_parse(path):
        raise AssertionError(f"{path} was parsed again although it is cached")

    monkeypatch.setattr(dc, "_parse_with_music21", no_parse)
    score = dc.load_score(piece, cache_dir)
    assert len(score.onsets) == len(score.pitches) > 0 and score.measure_starts[0] == 0.0


# --- planted factors --------------------------------------------------------------------------------------------

@pytest.fixture(scope="module")
def segment(cache_dir, corpus):
    piece = dc.PIECES[1]  # Joplin: fast, two hands
    score = dc.load_score(piece, cache_dir)
    first, end = dc.segment_windows(score, 6, 1)[0]
    return dc.cut_segment(score, first, end), perf.PieceTraits(piece.tempo_bpm, piece.loudness, score.minor)


def _play(segment, seed=0, **factors):
    score, traits = segment
    base = dict(skill=3.0)  # no wrong notes, so performed notes match score notes one to one
    base.update(factors)
    return perf.render_performance(score, traits, perf.PerformerFactors(**base), np.zeros(NUM_DIMENSIONS),
                                   np.random.default_rng(seed))


def _notes(performance):
    """(onset s, duration s, pitch, velocity) arrays of a performance, ordered by pitch then onset; CC64 values."""
    midi = mido.MidiFile(file=io.BytesIO(performance.midi_bytes))
    now, open_notes, notes, pedal = 0.0, {}, [], []
    for message in midi:
        now += message.time
        if message.type == "note_on" and message.velocity > 0:
            open_notes[message.note] = (now, message.velocity)
        elif message.type in ("note_on", "note_off"):
            onset, velocity = open_notes.pop(message.note)
            notes.append((onset, now - onset, message.note, velocity))
        elif message.type == "control_change" and message.control == 64:
            pedal.append((now, message.value))
    notes = np.array(sorted(notes, key=lambda n: (n[2], n[0])))
    return notes, pedal


def _onset_residual_sd(segment, performance) -> float:
    score, _ = segment
    notes, _ = _notes(performance)
    order = np.lexsort((score.onsets, score.pitches))
    assert len(notes) == len(score.onsets)
    played, notated = notes[:, 0], score.onsets[order]
    fit = np.polyval(np.polyfit(notated, played, 1), notated)
    return float(np.std(played - fit))


def test_loudness_factor_moves_velocities_and_label(segment):
    soft, loud = _play(segment, loudness=-1.5), _play(segment, loudness=1.5)
    assert _notes(loud)[0][:, 3].mean() > _notes(soft)[0][:, 3].mean() + 20
    assert loud.truth[DIM["Timbre_Soft_Loud"]] > soft.truth[DIM["Timbre_Soft_Loud"]] + 0.2


def test_pedal_factor_moves_cc64_and_label(segment):
    dry, wet = _play(segment, pedal=-2.0), _play(segment, pedal=2.0)
    down_count = lambda p: sum(value > 0 for _, value in _notes(p)[1])
    assert down_count(wet) > down_count(dry)
    assert wet.truth[DIM["Pedal_Sparse/dry_Saturated/wet"]] > dry.truth[DIM["Pedal_Sparse/dry_Saturated/wet"]] + 0.2
    clean, blurred = _play(segment, pedal=2.0, pedal_blur=-2.0), _play(segment, pedal=2.0, pedal_blur=3.0)
    assert down_count(blurred) < down_count(clean)  # missed changes: fewer re-presses, longer holds
    assert blurred.truth[DIM["Pedal_Clean_Blurred"]] > clean.truth[DIM["Pedal_Clean_Blurred"]]


def test_timing_factor_moves_onsets_and_label(segment):
    stable, unstable = _play(segment, timing=-2.0), _play(segment, timing=2.0)
    assert _onset_residual_sd(segment, unstable) > 3 * _onset_residual_sd(segment, stable)
    assert unstable.truth[DIM["Timing_Stable_Unstable"]] > stable.truth[DIM["Timing_Stable_Unstable"]] + 0.2


def test_harder_segments_expose_weak_timing(segment):
    score, traits = segment
    slow = perf.PieceTraits(traits.tempo_bpm / 3, traits.loudness, traits.minor)
    weak = perf.PerformerFactors(skill=-2.0)
    jitter = lambda t, f: perf.rendition_parameters(score, t, f).jitter_s
    assert jitter(traits, weak) > 1.5 * jitter(slow, weak)  # the same player, the music three times as dense
    strong = perf.PerformerFactors(skill=2.0)
    assert jitter(traits, weak) / jitter(slow, weak) > jitter(traits, strong) / jitter(slow, strong)


def test_tempo_articulation_skill_move_their_labels(segment):
    slow, fast = _play(segment, tempo=-2.0), _play(segment, tempo=2.0)
    assert _notes(fast)[0][:, 0].max() < _notes(slow)[0][:, 0].max()
    paced = DIM["Music_Making_Fast_paced_Slow_paced"]
    assert slow.truth[paced] > fast.truth[paced] + 0.1
    legato, staccato = _play(segment, articulation=-2.0), _play(segment, articulation=2.0)
    assert np.median(_notes(staccato)[0][:, 1]) < 0.6 * np.median(_notes(legato)[0][:, 1])
    assert staccato.truth[DIM["Articulation_Long_Short"]] > legato.truth[DIM["Articulation_Long_Short"]] + 0.2
    weak, strong = _play(segment, skill=-2.0), _play(segment, skill=2.0)
    convincing = DIM["Interpretation_Unsatisfactory/doubtful_Convincing"]
    assert strong.truth[convincing] > weak.truth[convincing] + 0.2


# --- the piece confound ---------------------------------------------------------------------------------------------

def _pairwise_accuracy(pred: np.ndarray, labels: np.ndarray, groups: np.ndarray) -> float:
    """Share of same-group pairs (per dimension, label ties skipped) ordered as the labels; prediction ties = 0.5."""
    scores = []
    for group in np.unique(groups):
        rows = np.flatnonzero(groups == group)
        i, j = np.triu_indices(len(rows), k=1)
        dl, dp = labels[rows[i]] - labels[rows[j]], pred[rows[i]] - pred[rows[j]]
        keep = dl != 0
        scores.append(np.where(dp[keep] == 0, 0.5, np.sign(dp[keep]) == np.sign(dl[keep])))
    return float(np.concatenate(scores).mean())


def test_piece_mean_predictor_wins_across_pieces_not_within_groups(corpus):
    # Piece means are learnt on performers p00..p02 and judged on p03..p05: a predictor that only knows the piece.
    segments = [s for s in corpus.segments if not s.is_deadpan]
    train = [s for s in segments if s.performer < "p03"]
    test = [s for s in segments if s.performer >= "p03"]
    piece_mean = {c: np.mean([s.label_mean for s in train if s.composition == c], axis=0) for c in {s.composition for s in train}}
    pred = np.stack([piece_mean[s.composition] for s in test])
    labels = np.stack([s.label_mean for s in test])
    truth = np.stack([s.label_truth for s in test])
    groups = np.array([s.group for s in test])
    correlation = np.array([np.corrcoef(pred[:, d], labels[:, d])[0, 1] for d in range(NUM_DIMENSIONS)])
    piece_accuracy = _pairwise_accuracy(pred, labels, groups)
    truth_accuracy = _pairwise_accuracy(truth, labels, groups)
    print(f"piece-mean predictor: mean correlation with labels across pieces {np.nanmean(correlation):.2f} "
          f"(per dimension {np.round(correlation, 2).tolist()}), within-group pairwise accuracy {piece_accuracy:.3f}; "
          f"noiseless truth within groups {truth_accuracy:.3f}")
    assert np.nanmean(correlation) > 0.3  # the shortcut works on absolute scores...
    assert piece_accuracy == 0.5  # ...and is worthless for ranking performances of the same music
    assert truth_accuracy > 0.7  # while the performer signal is there to be found


def test_bad_config_is_named(tmp_path):
    config = _small_config(tmp_path)
    config.num_pieces = len(dc.PIECES) + 1
    with pytest.raises(dc.DemoCorpusError, match="data.num_pieces"):
        dc.build_demo_corpus(config)
