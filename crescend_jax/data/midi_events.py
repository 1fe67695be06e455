"""A performance MIDI file as note and controller arrays, and a time range of it written as a MIDI file of its own.

`read_midi` gives every note (onset, offset, pitch, velocity, channel) and every controller event in seconds, tempo
changes applied, with each event's position in the file's merged event order (tracks merged by tick, earlier tracks
first, as mido plays them), so that a rewrite keeps simultaneous events in their original order.

`write_time_range` cuts ``[start, end)`` out of it: the notes whose onset lies in the range, their note-offs clipped
to ``end``; the controller events inside the range; and, at the new time 0, the last value every controller
(sustain pedal included) had before ``start``, so a pedal pressed before the cut is still down. Times are written on
a 1 ms grid (500 ticks per beat at 120 bpm); FluidSynth applies events on 64-sample blocks (2.7 ms at 24 kHz).
Pitch bend, aftertouch and program changes are not kept (piano performances; the renderer forces the piano).
"""

from __future__ import annotations

import dataclasses
import os
import struct
import tempfile
from pathlib import Path

import mido
import numpy as np

# Bump when `time_range_midi` writes different bytes for the same input: cut files are cached under this version.
CUT_VERSION = 1
SUSTAIN_CONTROL = 64
TICKS_PER_BEAT = 500
TEMPO = 500_000  # microseconds per beat: with TICKS_PER_BEAT, one tick is one millisecond
_DEFAULT_TEMPO = 500_000  # the MIDI default before any set_tempo


class MidiError(ValueError):
    """A MIDI file that cannot be read as a performance (missing, corrupt, type 2)."""


@dataclasses.dataclass(frozen=True)
class MidiPerformance:
    """Notes and controller events of one MIDI file, times in seconds from its start.

    onsets, offsets: float64 [n] (a note never released ends at ``length``); pitches, velocities, channels: int64 [n];
    on_order, off_order: int64 [n], positions of the note's on and off messages in the merged event order.
    control_times: float64 [c]; control_order, control_channels, control_numbers, control_values: int64 [c].
    length: seconds to the file's last message (meta messages included, as mido counts it).
    Notes are sorted by (onset, on_order), controller events by order.
    """

    onsets: np.ndarray
    offsets: np.ndarray
    pitches: np.ndarray
    velocities: np.ndarray
    channels: np.ndarray
    on_order: np.ndarray
    off_order: np.ndarray
    control_times: np.ndarray
    control_order: np.ndarray
    control_channels: np.ndarray
    control_numbers: np.ndarray
    control_values: np.ndarray
    length: float

    def controller(self, number: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """(times, channels, values) of controller ``number``'s events, in order."""
        mask = self.control_numbers == number
        return self.control_times[mask], self.control_channels[mask], self.control_values[mask]


def _seconds(ticks: np.ndarray, tempo_ticks: np.ndarray, tempos: np.ndarray, ticks_per_beat: int) -> np.ndarray:
    """Absolute ticks -> seconds under a tempo map (``tempo_ticks`` sorted, starting at 0)."""
    spans = np.diff(tempo_ticks) * tempos[:-1] / (ticks_per_beat * 1e6)
    starts = np.concatenate([[0.0], np.cumsum(spans)])
    segment = np.searchsorted(tempo_ticks, ticks, side="right") - 1
    return starts[segment] + (ticks - tempo_ticks[segment]) * tempos[segment] / (ticks_per_beat * 1e6)


def read_midi(path: Path) -> MidiPerformance:
    """Reads ``path``; a missing, corrupt or type-2 file raises `MidiError` naming it.

    Note-offs (or note-ons of velocity 0) close the earliest open note of their channel and pitch.
    """
    path = Path(path)
    if not path.is_file():
        raise MidiError(f"MIDI {path} does not exist")
    try:
        midi = mido.MidiFile(path)
    except Exception as err:  # mido raises OSError, EOFError, ValueError, KeyError on bad files
        raise MidiError(f"MIDI {path} is corrupt: {type(err).__name__}: {err}") from None
    if midi.type == 2:
        raise MidiError(f"MIDI {path} is type 2 (independent tracks), not a performance")
    events: list[tuple[int, int, int, mido.Message]] = []
    tempo_events: list[tuple[int, int, int, int]] = []
    end_tick = 0
    for track_index, track in enumerate(midi.tracks):
        tick = 0
        for index, message in enumerate(track):
            tick += message.time
            if message.type == "set_tempo":
                tempo_events.append((tick, track_index, index, message.tempo))
            elif message.type in ("note_on", "note_off", "control_change"):
                events.append((tick, track_index, index, message))
        end_tick = max(end_tick, tick)
    events.sort(key=lambda e: e[:3])
    tempo_events.sort()
    tempo_ticks = np.array([0] + [t for t, *_ in tempo_events], np.int64)
    tempos = np.array([_DEFAULT_TEMPO] + [tempo for *_, tempo in tempo_events], np.float64)
    ticks = np.array([e[0] for e in events] + [end_tick], np.int64)
    seconds = _seconds(ticks, tempo_ticks, tempos, midi.ticks_per_beat)
    length = float(seconds[-1])

    notes: list[list[float]] = []  # onset, offset, pitch, velocity, channel, on_order, off_order
    open_notes: dict[tuple[int, int], list[int]] = {}
    controls: list[tuple[float, int, int, int, int]] = []
    for order, ((_, _, _, message), time) in enumerate(zip(events, seconds[:-1])):
        if message.type == "control_change":
            controls.append((time, order, message.channel, message.control, message.value))
        elif message.type == "note_on" and message.velocity > 0:
            open_notes.setdefault((message.channel, message.note), []).append(len(notes))
            notes.append([time, length, message.note, message.velocity, message.channel, order, len(events)])
        else:
            waiting = open_notes.get((message.channel, message.note))
            if waiting:
                note = notes[waiting.pop(0)]
                note[1], note[6] = time, order
    table = np.array(notes, np.float64).reshape(-1, 7)
    table = table[np.lexsort((table[:, 5], table[:, 0]))]
    control = np.array(controls, np.float64).reshape(-1, 5)
    as_int = lambda column: column.astype(np.int64)
    return MidiPerformance(
        onsets=table[:, 0], offsets=table[:, 1], pitches=as_int(table[:, 2]), velocities=as_int(table[:, 3]),
        channels=as_int(table[:, 4]), on_order=as_int(table[:, 5]), off_order=as_int(table[:, 6]),
        control_times=control[:, 0], control_order=as_int(control[:, 1]), control_channels=as_int(control[:, 2]),
        control_numbers=as_int(control[:, 3]), control_values=as_int(control[:, 4]), length=length)


def _variable_length(value: int) -> bytes:
    """A MIDI variable-length quantity (7 bits a byte, high bit set on all but the last)."""
    out = [value & 0x7F]
    value >>= 7
    while value:
        out.append(0x80 | (value & 0x7F))
        value >>= 7
    return bytes(reversed(out))


def time_range_midi(performance: MidiPerformance, start: float, end: float) -> bytes:
    """The bytes of a type-0 MIDI file playing ``[start, end)`` of ``performance`` from time 0 (see module doc).

    The file lasts ``end - start`` (an end-of-track marker there), so a renderer gives the whole range even when
    its last notes end earlier. Encoded here (no running status) rather than through mido, whose per-message checks
    cost ~40 ms a window.
    """
    if not end > start:
        raise ValueError(f"time range [{start}, {end}) is empty")
    p = performance
    events: list[tuple[float, float, bytes]] = []  # (seconds from start, original order, status and data bytes)
    before = p.control_times < start
    carried: dict[tuple[int, int], int] = {}
    for channel, number, value in zip(p.control_channels[before], p.control_numbers[before],
                                      p.control_values[before]):
        carried[(int(channel), int(number))] = int(value)  # in order: the last one wins
    for (channel, number), value in sorted(carried.items()):
        events.append((0.0, -1.0, bytes((0xB0 | channel, number, value))))
    inside = (p.control_times >= start) & (p.control_times < end)
    for time, order, channel, number, value in zip(p.control_times[inside], p.control_order[inside],
                                                   p.control_channels[inside], p.control_numbers[inside],
                                                   p.control_values[inside]):
        events.append((time - start, float(order), bytes((0xB0 | int(channel), int(number), int(value)))))
    playing = (p.onsets >= start) & (p.onsets < end)
    for onset, offset, pitch, velocity, channel, on_order, off_order in zip(
            p.onsets[playing], p.offsets[playing], p.pitches[playing], p.velocities[playing], p.channels[playing],
            p.on_order[playing], p.off_order[playing]):
        events.append((onset - start, float(on_order), bytes((0x90 | int(channel), int(pitch), int(velocity)))))
        clipped = offset >= end
        events.append((min(offset, end) - start, np.inf if clipped else float(off_order),
                       bytes((0x80 | int(channel), int(pitch), 0))))
    events.sort(key=lambda e: (e[0], e[1]))
    ticks_per_second = TICKS_PER_BEAT * 1e6 / TEMPO
    track = bytearray(b"\x00\xff\x51\x03" + TEMPO.to_bytes(3, "big"))
    now = 0
    for time, _, message in events:
        tick = int(round(time * ticks_per_second))
        track += _variable_length(tick - now) + message
        now = tick
    track += _variable_length(max(0, int(round((end - start) * ticks_per_second)) - now)) + b"\xff\x2f\x00"
    header = b"MThd" + struct.pack(">IHHH", 6, 0, 1, TICKS_PER_BEAT)
    return header + b"MTrk" + struct.pack(">I", len(track)) + bytes(track)


def write_time_range(performance: MidiPerformance, start: float, end: float, path: Path) -> Path:
    """Writes `time_range_midi` to ``path`` atomically (temp file + rename; concurrent writers of the same range write
    the same bytes) unless it already exists; returns ``path``."""
    path = Path(path)
    if path.is_file():
        return path
    data = time_range_midi(performance, start, end)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, temp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    with os.fdopen(fd, "wb") as f:
        f.write(data)
    os.replace(temp, path)
    return path
