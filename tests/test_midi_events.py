"""MIDI as note/controller arrays, and cutting a time range: notes clipped, pedal state carried in, exact length."""

import dataclasses
from pathlib import Path

import mido
import numpy as np
import pytest

from crescend_jax.data.midi_events import MidiError, read_midi, time_range_midi, write_time_range


def write_two_tracks(path: Path) -> Path:
    """Type 1: a tempo track (120 bpm, then 60 bpm from beat 4) and a note track with the pedal."""
    midi = mido.MidiFile(type=1, ticks_per_beat=480)
    midi.tracks.append(mido.MidiTrack([
        mido.MetaMessage("set_tempo", tempo=500000, time=0),
        mido.MetaMessage("set_tempo", tempo=1000000, time=4 * 480)]))
    notes = mido.MidiTrack()
    notes += [
        mido.Message("control_change", control=64, value=127, time=0),
        mido.Message("note_on", note=60, velocity=50, time=0),          # 0.0 s
        mido.Message("note_on", note=60, velocity=60, time=480),        # 0.5 s: the same key again (overlap)
        mido.Message("note_off", note=60, velocity=0, time=480),        # 1.0 s: closes the first one
        mido.Message("note_on", note=60, velocity=0, time=480),         # 1.5 s: closes the second one
        mido.Message("control_change", control=64, value=0, time=480),  # 2.0 s
        mido.Message("note_on", note=64, velocity=90, time=480),        # beat 5 at 60 bpm: 3.0 s
        mido.Message("note_on", note=67, velocity=91, time=480),        # 4.0 s, never released
        mido.Message("note_off", note=64, velocity=0, time=480),        # 5.0 s
    ]
    midi.tracks.append(notes)
    midi.save(path)
    return path


def test_read_midi_applies_tempo_changes_and_pairs_notes(tmp_path):
    performance = read_midi(write_two_tracks(tmp_path / "a.mid"))
    assert performance.onsets == pytest.approx([0.0, 0.5, 3.0, 4.0])
    assert performance.offsets == pytest.approx([1.0, 1.5, 5.0, 5.0])  # FIFO pairing; the unreleased one ends at 5
    assert list(performance.velocities) == [50, 60, 90, 91]
    assert performance.length == pytest.approx(5.0)
    times, channels, values = performance.controller(64)
    assert times == pytest.approx([0.0, 2.0]) and list(values) == [127, 0] and list(channels) == [0, 0]


def test_bad_files_raise_midi_error(tmp_path):
    with pytest.raises(MidiError, match="does not exist"):
        read_midi(tmp_path / "missing.mid")
    (tmp_path / "bad.mid").write_bytes(b"MThd garbage")
    with pytest.raises(MidiError, match="corrupt"):
        read_midi(tmp_path / "bad.mid")
    two = mido.MidiFile(type=2)
    two.tracks.append(mido.MidiTrack([mido.Message("note_on", note=60, velocity=9, time=0)]))
    two.save(tmp_path / "two.mid")
    with pytest.raises(MidiError, match="type 2"):
        read_midi(tmp_path / "two.mid")


def test_time_range_keeps_onsets_inside_clips_offsets_and_carries_the_pedal(tmp_path):
    performance = read_midi(write_two_tracks(tmp_path / "a.mid"))
    cut_path = tmp_path / "cut.mid"
    cut_path.write_bytes(time_range_midi(performance, 0.25, 3.5))
    cut = read_midi(cut_path)
    # the 0.0 s note started before the range: left out; 0.5 s and 3.0 s are in, the latter clipped at the end
    assert cut.onsets == pytest.approx([0.25, 2.75], abs=1e-3)
    assert cut.offsets == pytest.approx([1.25, 3.25], abs=1e-3)
    assert list(cut.velocities) == [60, 90]
    times, _, values = cut.controller(64)
    assert times == pytest.approx([0.0, 1.75], abs=1e-3) and list(values) == [127, 0]  # down from the start
    assert cut.length == pytest.approx(3.25, abs=1e-3)
    assert mido.MidiFile(cut_path).length == pytest.approx(3.25, abs=1e-3)  # mido reads the same file


def test_time_range_of_silence_still_lasts_the_range(tmp_path):
    performance = read_midi(write_two_tracks(tmp_path / "a.mid"))
    path = write_time_range(performance, 2.1, 2.9, tmp_path / "silence.mid")
    cut = read_midi(path)
    assert len(cut.onsets) == 0 and cut.length == pytest.approx(0.8, abs=1e-3)
    with pytest.raises(ValueError, match="empty"):
        time_range_midi(performance, 2.0, 2.0)


def test_write_time_range_is_deterministic_and_keeps_an_existing_file(tmp_path):
    performance = read_midi(write_two_tracks(tmp_path / "a.mid"))
    first = write_time_range(performance, 0.25, 3.5, tmp_path / "w" / "x.mid").read_bytes()
    assert first == time_range_midi(performance, 0.25, 3.5)
    write_time_range(performance, 0.0, 1.0, tmp_path / "w" / "x.mid")  # the name is the caller's content key
    assert (tmp_path / "w" / "x.mid").read_bytes() == first
    assert not [p for p in (tmp_path / "w").iterdir() if p.name.endswith(".tmp")]


def test_carried_pedal_keeps_the_cut_ringing(tmp_path):
    from crescend_jax.data.render import RenderSettings, render_midi

    midi = mido.MidiFile(ticks_per_beat=480)  # 120 bpm: pedal down at 0, notes at 0.5 s and 1.0 s, 0.1 s each
    midi.tracks.append(mido.MidiTrack([
        mido.Message("control_change", control=64, value=127, time=0),
        mido.Message("note_on", note=60, velocity=90, time=480),
        mido.Message("note_off", note=60, velocity=0, time=96),
        mido.Message("note_on", note=64, velocity=90, time=384),
        mido.Message("note_off", note=64, velocity=0, time=96),
    ]))
    midi.save(tmp_path / "p.mid")
    performance = read_midi(tmp_path / "p.mid")
    settings = RenderSettings("fluidr3", tail_seconds=0.0)
    carried = render_midi(write_time_range(performance, 0.4, 1.4, tmp_path / "carried.mid"), settings)
    # the same notes without the pedal event before the cut
    no_pedal = dataclasses.replace(performance, **{name: getattr(performance, name)[:0] for name in (
        "control_times", "control_order", "control_channels", "control_numbers", "control_values")})
    released = render_midi(write_time_range(no_pedal, 0.4, 1.4, tmp_path / "dry.mid"), settings)
    assert len(carried) == len(released) == 24000
    gap = slice(int(0.35 * 24000), int(0.55 * 24000))  # after the first note's key release, before the second
    rms = lambda a: float(np.sqrt(np.mean(a.astype(np.float64) ** 2)))
    assert rms(carried[gap]) > 3.0 * rms(released[gap])
