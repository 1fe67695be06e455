"""Derived labels on hand-built performances with known answers, read through real MIDI files."""

from pathlib import Path

import _midi_files as midi_files
import numpy as np
import pytest

from crescend_jax.data import performance_labels as pl
from crescend_jax.data.midi_events import read_midi


def write_performance(path: Path, notes=(), pedal=(), tempo: int = midi_files.TEMPO) -> Path:
    """notes: (onset s, offset s, pitch, velocity); pedal: (time s, value) of controller 64; `_midi_files.write_midi`
    with the pedal changes of a tick before its onsets."""
    durations = [(onset, offset - onset, pitch, velocity) for onset, offset, pitch, velocity in notes]
    return midi_files.write_midi(path, durations, pedal, tempo=tempo, pedal_first=True)


def test_tempo_bpm_from_beat_times():
    assert pl.tempo_bpm(np.arange(9) * 0.5) == pytest.approx(120.0)
    assert pl.tempo_bpm(np.array([1.0, 1.75, 2.5])) == pytest.approx(80.0)
    assert np.isnan(pl.tempo_bpm(np.array([3.0])))


def test_constant_tempo_has_instability_zero():
    score = np.arange(17) * 0.5
    assert pl.tempo_instability(score * 1.3 + 2.0, score) == pytest.approx(0.0, abs=1e-9)


def test_following_a_notated_tempo_change_is_stable():
    # the score doubles the beat's length halfway; a performance 10% slower throughout follows it exactly
    score = np.concatenate([np.arange(8) * 0.5, 3.5 + np.arange(1, 9) * 1.0])
    assert pl.tempo_instability(score * 1.1, score) == pytest.approx(0.0, abs=1e-9)


def test_a_steady_ritardando_is_stable():
    intervals = 0.5 * 1.05 ** np.arange(12)  # every beat 5% longer than the last: a straight line in log tempo
    beats = np.concatenate([[0.0], np.cumsum(intervals)])
    assert pl.tempo_instability(beats, np.arange(13) * 0.5) == pytest.approx(0.0, abs=1e-9)


def test_uneven_beats_give_the_rms_of_log_ratio_residuals():
    score = np.arange(9) * 0.5
    intervals = np.array([0.5, 0.5, 0.6, 0.4, 0.5, 0.55, 0.5, 0.45])
    beats = np.concatenate([[0.0], np.cumsum(intervals)])
    x = np.log(intervals / 0.5)
    residuals = x - np.polyval(np.polyfit(np.arange(8), x, 1), np.arange(8))
    value = pl.tempo_instability(beats, score)
    assert value == pytest.approx(np.sqrt(np.mean(residuals**2)), rel=1e-9)
    assert value > 0.05
    assert np.isnan(pl.tempo_instability(beats[:3], score[:3]))  # two intervals: any line fits them
    with pytest.raises(ValueError, match="cannot pair"):
        pl.tempo_instability(beats, score[:-1])


def test_known_velocities():
    velocities = np.array([20, 40, 60, 80, 100])
    assert pl.velocity_mean(velocities) == pytest.approx(60.0)
    assert pl.velocity_range(velocities) == pytest.approx(92.0 - 28.0)  # linear percentiles: 80 + .6*20, 20 + .4*20
    assert np.isnan(pl.velocity_mean(np.array([]))) and np.isnan(pl.velocity_range(np.array([])))


def melody(duration: float, count: int = 8, ioi: float = 0.5, pitch: int = 72):
    return [(i * ioi, i * ioi + duration, pitch + i % 3, 70) for i in range(count)]


@pytest.mark.parametrize("duration,expected", [(0.5, 0.0), (0.25, -0.5), (0.6, 0.2), (0.05, -0.9)])
def test_articulation_legato_staccato_overlap(duration, expected):
    notes = melody(duration)
    onsets, offsets, pitches = (np.array(column, np.float64) for column in list(zip(*notes))[:3])
    assert pl.articulation(onsets, offsets, pitches) == pytest.approx(expected)


def test_articulation_follows_the_top_voice_under_a_legato_bass(tmp_path):
    staccato_top = melody(0.25)
    # a held bass (struck 20 ms early, overlapping its successor) and inner notes: below the top voice, ignored
    bass = [(i * 0.5 - 0.02 if i else 0.0, i * 0.5 + 0.8, 40 + i % 2, 50) for i in range(8)]
    inner = [(i * 0.5 + 0.01, i * 0.5 + 0.45, 60, 50) for i in range(8)]
    path = write_performance(tmp_path / "p.mid", staccato_top + bass + inner)
    performance = read_midi(path)
    assert pl.articulation(performance.onsets, performance.offsets, performance.pitches) == pytest.approx(-0.5,
                                                                                                          abs=0.01)
    legato = read_midi(write_performance(tmp_path / "l.mid", melody(0.5) + bass + inner))
    assert pl.articulation(legato.onsets, legato.offsets, legato.pitches) == pytest.approx(0.0, abs=0.01)
    top = pl.top_voice(performance.onsets, performance.pitches)
    assert list(performance.pitches[top]) == [72 + i % 3 for i in range(8)]


def test_pedal_held_half_the_time(tmp_path):
    path = write_performance(tmp_path / "p.mid", melody(0.5), pedal=[(1.0, 127), (2.0, 0), (3.0, 100), (3.5, 10)])
    times, channels, values = read_midi(path).controller(64)
    assert pl.pedal_share(times, channels, values, 0.0, 4.0) == pytest.approx(1.5 / 4, abs=1e-3)
    assert pl.pedal_share(times, channels, values, 0.0, 2.0) == pytest.approx(0.5, abs=1e-3)
    # the pedal pressed at 1.0 is still down when a window starts at 1.5: carried in
    assert pl.pedal_share(times, channels, values, 1.5, 2.5) == pytest.approx(0.5, abs=1e-3)
    assert pl.pedal_share(times, channels, values, 2.0, 3.0) == 0.0
    assert pl.pedal_share(times, channels, values, 3.0, 3.5) == pytest.approx(1.0)


def test_pedal_is_down_while_any_channel_holds_it():
    times, channels, values = np.array([0.0, 1.0, 2.0, 3.0]), np.array([0, 1, 0, 1]), np.array([127, 127, 0, 0])
    assert pl.pedal_share(times, channels, values, 0.0, 4.0) == pytest.approx(0.75)


def test_window_labels_of_a_hand_built_performance(tmp_path):
    # 60 bpm written at 120 bpm with a tempo change: read_midi must apply it
    notes = [(i * 1.0, i * 1.0 + 0.5, 60 + i, 30 + 10 * i) for i in range(8)]
    path = write_performance(tmp_path / "p.mid", notes, pedal=[(0.0, 127), (2.0, 0)], tempo=1000000)
    performance = read_midi(path)
    assert performance.onsets == pytest.approx(np.arange(8.0), abs=1e-3)
    beats = np.arange(9) * 1.0
    labels = pl.window_labels(performance, 0.0, 8.0, beats, beats / 2)
    assert labels.dtype == np.float32 and labels.shape == (len(pl.DERIVED_LABELS),)
    named = dict(zip(pl.DERIVED_LABELS, labels))
    assert named["tempo_bpm"] == pytest.approx(60.0)
    assert named["tempo_instability"] == pytest.approx(0.0, abs=1e-6)
    assert named["velocity_mean"] == pytest.approx(65.0)
    assert named["velocity_range"] == pytest.approx(np.percentile(30 + 10 * np.arange(8), 90) -
                                                    np.percentile(30 + 10 * np.arange(8), 10))
    assert named["articulation"] == pytest.approx(-0.5, abs=1e-3)
    assert named["pedal"] == pytest.approx(0.25, abs=1e-3)
    # a window of the last four seconds only sees its own notes; unpaired beats leave the tempo labels NaN
    late = dict(zip(pl.DERIVED_LABELS, pl.window_labels(performance, 4.0, 8.0, None, None)))
    assert np.isnan(late["tempo_bpm"]) and np.isnan(late["tempo_instability"])
    assert late["velocity_mean"] == pytest.approx(85.0) and late["pedal"] == 0.0


def test_related_dimensions_name_percepiano_dimensions():
    from crescend_jax.data.dimensions import DIMENSIONS

    assert set(pl.RELATED_DIMENSIONS) == set(pl.DERIVED_LABELS)
    assert {dimension for dimension, _ in pl.RELATED_DIMENSIONS.values()} <= set(DIMENSIONS)
