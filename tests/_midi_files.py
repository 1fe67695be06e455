"""Hand-built MIDI files for the symbolic tests (encoders, derived labels): notes and sustain pedal placed in seconds,
written as one track at one tempo, so that every onset, duration and pedal change is known to the tick."""

from __future__ import annotations

from pathlib import Path

import mido

TICKS = 480  # per quarter note
TEMPO = 500_000  # microseconds per quarter note: 120 bpm, a quarter-note beat lasts 0.5 s


def write_midi(path: Path, notes, pedal=(), signatures=(), tempo: int = TEMPO, pedal_first: bool = False) -> Path:
    """Writes ``path`` (and returns it): one track at ``tempo`` with ``notes`` (onset_s, duration_s, pitch, velocity),
    ``pedal`` (time_s, CC64 value) and ``signatures`` (tick, numerator, denominator), seconds rounded to the nearest
    of TICKS ticks a quarter note. At one tick: time signatures, then note releases, then onsets, then pedal changes
    (``pedal_first``: pedal changes before the onsets), each kind in the order given."""
    events = [(mido.tick2second(tick, TICKS, tempo), 0, mido.MetaMessage("time_signature", numerator=n, denominator=d))
              for tick, n, d in signatures]
    for onset, duration, pitch, velocity in notes:
        events.append((onset, 2, mido.Message("note_on", note=pitch, velocity=velocity)))
        events.append((onset + duration, 1, mido.Message("note_off", note=pitch, velocity=0)))
    events += [(time, 1 if pedal_first else 3, mido.Message("control_change", control=64, value=value))
               for time, value in pedal]
    events.sort(key=lambda e: (e[0], e[1]))
    track = mido.MidiTrack([mido.MetaMessage("set_tempo", tempo=tempo, time=0)])
    now = 0
    for time, _, message in events:
        tick = round(mido.second2tick(time, TICKS, tempo))
        track.append(message.copy(time=tick - now))
        now = tick
    midi = mido.MidiFile(ticks_per_beat=TICKS)
    midi.tracks.append(track)
    midi.save(path)
    return path
