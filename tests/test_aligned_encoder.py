"""The score-position encoder on hand-built MIDI with known answers (tempo, ritardando, skipped and extra notes, a
rolled chord, identical positions), its beat grid, and a tiny PercePiano extraction."""

from pathlib import Path

import _midi_files as midi_files
import numpy as np
import pytest

from crescend_jax import encoders
from crescend_jax.data.segments import Window
from crescend_jax.encoders.aligned import FEATURE_NAMES, AlignedEncoder, longest_increasing_chain
from crescend_jax.encoders.alignment import MidiFeatureError, score_beats

F = {name: i for i, name in enumerate(FEATURE_NAMES)}


def write_midi(path: Path, notes, pedal=(), signatures=((0, 4, 4),)) -> Path:
    """`_midi_files.write_midi` (120 bpm), in 4/4 unless ``signatures`` says otherwise."""
    return midi_files.write_midi(path, notes, pedal, signatures)


def score_notes(beats=8):
    """A score at 120 bpm in 4/4: a two-note chord (bass + melody) on every beat and a melody eighth between."""
    notes = []
    for b in range(beats):
        notes += [(0.5 * b, 0.5, 48 + b % 3, 64), (0.5 * b, 0.25, 72 + b % 5, 64),
                  (0.5 * b + 0.25, 0.25, 74 + b % 4, 64)]
    return notes


def played(notes, time_map, scale_durations=True):
    """The score ``notes`` performed through ``time_map`` (score seconds -> performed seconds)."""
    out = []
    for onset, duration, pitch, velocity in notes:
        start, end = time_map(onset), time_map(onset + duration)
        out.append((start, (end - start) if scale_durations else duration, pitch, velocity))
    return out


def encode(tmp_path, performance, score, pedal=(), window=None, name="performance", **settings) -> np.ndarray:
    performance_path = write_midi(tmp_path / f"{name}.mid", performance, pedal)
    score_path = write_midi(tmp_path / "score.mid", score)
    (item,) = AlignedEncoder(**settings).encode_midi([performance_path], [score_path],
                                                     None if window is None else [window])
    assert item.frames.shape == (1, item.frames.shape[1], len(FEATURE_NAMES))
    return item.frames[0].astype(np.float64)


def test_constant_tempo_ratio_is_recovered_at_every_position(tmp_path):
    frames = encode(tmp_path, played(score_notes(), lambda s: 0.3 + 1.25 * s), score_notes())
    assert frames.shape[0] == 8  # 8 beats
    np.testing.assert_allclose(frames[:, F["tempo_log_ratio"]], np.log(1.25), atol=4e-3)
    np.testing.assert_allclose(frames[:, F["onset_deviation_ms"]], 0.0, atol=2.0)
    np.testing.assert_allclose(frames[:, F["articulation_log"]], 0.0, atol=1e-2)  # durations stretched alike
    np.testing.assert_allclose(frames[1:, F["tempo_log_change_abs"]], 0.0, atol=4e-3)
    assert np.all(frames[:, F["missing_share"]] == 0) and np.all(frames[:, F["extra_rate"]] == 0)
    np.testing.assert_allclose(frames[:, F["chord_async_ms"]], 0.0, atol=1.5)


def test_a_ritardando_raises_the_local_tempo_ratio(tmp_path):
    iois = 0.5 * 1.06 ** np.arange(9)  # every beat 6% longer than the one before
    onsets = np.concatenate([[0.0], np.cumsum(iois)])
    time_map = lambda s: np.interp(s, 0.5 * np.arange(10), onsets)
    frames = encode(tmp_path, played(score_notes(), time_map), score_notes())
    tempo = frames[:, F["tempo_log_ratio"]]
    assert np.all(np.diff(tempo) > 0.04)
    np.testing.assert_allclose(tempo, np.log(iois[:8] / 0.5), atol=5e-3)


def test_a_skipped_and_an_extra_note_are_masked_and_counted_not_misaligned(tmp_path):
    score = [(0.5 * b, 0.4, 60 + 2 * b, 70) for b in range(8)]  # one note a beat, pitches all different
    performance = [(0.2 + 1.2 * onset, 1.2 * duration, pitch, velocity)
                   for b, (onset, duration, pitch, velocity) in enumerate(score) if b != 3]  # beat 3 skipped
    performance.append((0.2 + 1.2 * 2.75, 0.1, 61, 70))  # an extra (wrong) note in beat 5
    frames = encode(tmp_path, performance, score)
    assert frames[3, F["missing_share"]] == 1.0
    assert np.isnan(np.delete(frames[3], F["missing_share"])).all()  # masked, not invented
    assert frames[5, F["extra_rate"]] == 1.0 and np.nansum(np.delete(frames[:, F["extra_rate"]], 5)) == 0
    others = np.delete(np.arange(8), 3)
    assert np.all(frames[others, F["missing_share"]] == 0)
    np.testing.assert_allclose(frames[others, F["tempo_log_ratio"]], np.log(1.2), atol=4e-3)  # still aligned


def test_a_rolled_chord_gives_its_asynchrony_and_melody_lag(tmp_path):
    pitches = (48, 55, 64, 72)
    score = [(0.5 * b, 0.45, p, 60) for b in range(6) for p in pitches]
    performance = [(0.5 * b + (0.03 * k if b == 2 else 0.0), 0.45, p, 60)
                   for b in range(6) for k, p in enumerate(pitches)]  # beat 2 rolled upwards, 30 ms a note
    frames = encode(tmp_path, performance, score)
    assert frames[2, F["chord_async_ms"]] == pytest.approx(90.0, abs=2.0)
    assert frames[2, F["melody_lead_ms"]] == pytest.approx((0 + 30 + 60) / 3 - 90, abs=2.0)  # the melody comes last
    np.testing.assert_allclose(np.delete(frames[:, F["chord_async_ms"]], 2), 0.0, atol=1.5)


def test_two_performances_of_one_score_have_frames_at_the_same_positions(tmp_path):
    score = score_notes(6)
    fast = played(score, lambda s: 0.9 * s)
    slow = [(t, d, p, v - 20) for t, d, p, v in played(score, lambda s: 0.5 + 1.4 * s + 0.1 * np.sin(s))][:-3]
    a = encode(tmp_path, fast, score, name="fast")
    b = encode(tmp_path, slow, score, name="slow")
    assert a.shape == b.shape == (6, len(FEATURE_NAMES))
    np.testing.assert_allclose(a[:, F["tempo_log_ratio"]], np.log(0.9), atol=4e-3)
    assert np.all(b[:5, F["tempo_log_ratio"]] > 0.25)
    assert b[5, F["missing_share"]] == 1.0 and np.isnan(b[5, F["tempo_log_ratio"]])  # last beat not played: masked
    chords_a = encode(tmp_path, fast, score, name="fast", positions="chord")
    chords_b = encode(tmp_path, slow, score, name="slow", positions="chord")
    assert chords_a.shape == chords_b.shape == (12, len(FEATURE_NAMES))  # a chord and an eighth per beat


def test_velocity_articulation_and_pedal_per_position(tmp_path):
    score = [(0.5 * b, 0.5, p, 64) for b in range(4) for p in (48, 72)]
    performance = [(0.5 * b, 0.25 if b == 1 else 0.5, p, (90 if p == 72 else 50) + 4 * b)
                   for b in range(4) for p in (48, 72)]
    frames = encode(tmp_path, performance, score, pedal=((1.0, 127), (1.25, 0)))
    np.testing.assert_allclose(frames[:, F["velocity_melody"]], 90 + 4 * np.arange(4))
    np.testing.assert_allclose(frames[:, F["velocity_rest"]], 50 + 4 * np.arange(4))
    mean = np.mean([(90 if p == 72 else 50) + 4 * b for b in range(4) for p in (48, 72)])
    np.testing.assert_allclose(frames[:, F["velocity_melody_rel"]], 90 + 4 * np.arange(4) - mean)
    assert frames[1, F["articulation_log"]] == pytest.approx(np.log(0.5), abs=1e-2)  # half-length staccato
    assert frames[1, F["legato_overlap"]] == pytest.approx(-0.5, abs=1e-2)  # a gap of half the interval
    assert frames[2, F["pedal_down_share"]] == pytest.approx(0.5, abs=1e-2)
    assert frames[2, F["pedal_changes"]] == 1 and frames[0, F["pedal_down_share"]] == 0


def test_annotated_beats_are_the_anchors_of_a_window(tmp_path):
    """An ASAP window: its beats give the positions and the tempo, whatever the notes say."""
    score = [(0.05 + 0.5 * b, 0.4, 60 + b, 64) for b in range(4)]
    performed_beats = 0.05 + np.array([0.0, 0.6, 1.3, 2.1, 3.0])
    performance = [(performed_beats[b], 0.4, 60 + b, 64) for b in range(4)]
    window = Window(index=0, first_downbeat=0, bars=1, source_midi=tmp_path / "x.mid", start_seconds=0.0,
                    end_seconds=3.0, score_start_seconds=0.05, score_end_seconds=2.05,
                    beats=tuple(performed_beats), score_beats=tuple(0.05 + 0.5 * np.arange(5)))
    frames = encode(tmp_path, performance, score, window=window)
    assert frames.shape[0] == 4
    np.testing.assert_allclose(frames[:, F["tempo_log_ratio"]], np.log(np.diff(performed_beats) / 0.5), atol=3e-3)
    with pytest.raises(MidiFeatureError, match="beat annotations"):
        encode(tmp_path, performance, score, window=Window(0, 0, 1, tmp_path, 0.0, 1.0, 0.0, 1.0))


def test_beat_grid_follows_time_signatures(tmp_path):
    notes = [(0.0, 0.2, 60, 64), (4.0, 0.2, 62, 64)]
    three_four = score_beats(write_midi(tmp_path / "a.mid", notes, signatures=((0, 3, 4),)))
    np.testing.assert_allclose(three_four, 0.5 * np.arange(10))  # quarter beats up to the first after 4 s
    six_eight = score_beats(write_midi(tmp_path / "b.mid", notes, signatures=((0, 6, 8),)))
    np.testing.assert_allclose(six_eight, 0.75 * np.arange(7))  # dotted-quarter beats
    pickup = score_beats(write_midi(tmp_path / "c.mid", notes, signatures=((0, 1, 8), (240, 2, 2))))
    np.testing.assert_allclose(pickup, np.r_[0.0, 0.25 + 1.0 * np.arange(5)])  # an eighth, then half notes


def test_longest_increasing_chain_and_errors(tmp_path):
    assert longest_increasing_chain(np.array([0.0, 1.0, 0.5, 2.0, 3.0, 2.5])).tolist() in ([0, 2, 3, 5], [0, 1, 3, 5],
                                                                                          [0, 1, 3, 4], [0, 2, 3, 4])
    score = write_midi(tmp_path / "score.mid", [(0.0, 0.5, 60, 64)])
    other = write_midi(tmp_path / "other.mid", [(0.0, 0.5, 61, 64)])
    encoder = AlignedEncoder()
    with pytest.raises(MidiFeatureError, match="no note matches"):
        encoder.encode_midi([other], [score])
    with pytest.raises(MidiFeatureError, match="score MIDI"):
        encoder.encode_midi([other], [None])
    with pytest.raises(ValueError, match="positions"):
        AlignedEncoder(positions="bar")


def test_registered_and_named_by_its_settings():
    config = encoders.default_encoder_config()
    config.name = "aligned"
    assert encoders.is_symbolic(config)
    encoder = encoders.build_encoder(config)
    assert isinstance(encoder, AlignedEncoder) and encoder.dim == len(FEATURE_NAMES)
    assert encoder.name.startswith("aligned-v1-beat-f19-")
    config.aligned.positions = "chord"
    assert encoders.build_encoder(config).name.startswith("aligned-v1-chord-") != encoder.name


@pytest.mark.filterwarnings("ignore::UserWarning")
def test_percepiano_group_frames_line_up(percepiano_root):
    from crescend_jax.data.percepiano import load_percepiano

    corpus = load_percepiano(percepiano_root)
    group = sorted(corpus.segments, key=lambda s: s.key)[0].group
    members = [s for s in corpus.segments if s.group == group][:4]
    deadpan = [s for s in corpus.segments if s.group == group and s.is_deadpan][:1]
    items = AlignedEncoder().encode_midi([s.midi_path for s in members + deadpan],
                                         [s.score_midi_path for s in members + deadpan])
    lengths = {item.frames.shape[1] for item in items}
    assert len(lengths) == 1 and lengths.pop() >= 4  # the same score positions, index by index
    assert all(np.isfinite(item.pooled).all() for item in items)
    played_share = [1 - item.pooled[F["missing_share"]] for item in items]
    assert np.median(played_share) > 0.85  # the alignment finds the music
    if deadpan:
        assert abs(items[-1].pooled[F["tempo_log_ratio"]]) < 0.02  # the deadpan plays the score's tempo
