"""Score alignment shared by the symbolic encoders (`midi`, `aligned`): MIDI notes, onset chords, the longest common
subsequence of pitch sequences, tempo anchors, and the beat grid of a score MIDI.

Reading (`read_notes`; mido, all tracks merged, tempo map applied, times in seconds): a note lasts from its
``note_on`` (velocity > 0) to the next ``note_off`` / ``note_on`` velocity 0 of the same channel and pitch; a second
``note_on`` of a sounding pitch ends the first one there (a re-strike); notes still sounding at the end of the file end
there; of several notes with the same pitch and onset only the longest is kept (score exports write doubled voices as
a zero-length note plus the real one, and a key cannot be struck twice at once). The sustain pedal is controller 64
(any channel), kept as its messages (time, value 0..127). A MIDI file without any note is an error.

**Chords** (`group_onsets`): over sorted onsets, a chord starts at the earliest onset not yet in a chord and takes
every later onset within ``window`` of that first onset (50 ms for performances, 5 ms for a quantised score).

**Alignment** (`align`): both note lists are ordered by (chord, pitch) and aligned by the longest common subsequence
of their pitch sequences (`lcs_pairs`): a monotone matching that pairs the most notes with equal pitch in the same
order (exact dynamic programme, O(N * M) time and memory); wrong, missing and extra notes stay unmatched. **Tempo
anchors** (`Alignment.anchors`) are the score chords with at least one matched note: score time s_a (the chord's mean
score onset) against performance time q_a (the median onset of its matched performance notes).

**Beat grid** (`score_beats`): the beats of a score MIDI from its time signatures, in score seconds through its tempo
map. From each time signature n/d on (4/4 before the first), a beat lasts 4/d quarter notes, or 3 x 4/d in a
compound metre (n in 6, 9, 12, ... and d >= 8: 6/8 counts two dotted quarters a bar); a time signature change starts
a new bar (and beat) at its own tick. Beats run from tick 0 to the last note onset, plus the next beat after it (the
end of the last beat).
"""

from __future__ import annotations

import dataclasses
from pathlib import Path

import mido
import numpy as np

SUSTAIN_CONTROL = 64
MAX_ALIGNMENT_CELLS = 40_000_000  # N * M of the alignment table (int32): 160 MB


class MidiFeatureError(ValueError):
    """A MIDI file a symbolic encoder cannot describe (missing, corrupt, no notes, too long to align)."""


@dataclasses.dataclass(frozen=True)
class Notes:
    """One MIDI file's notes sorted by (onset, pitch) and its sustain pedal.

    onset, offset: float64 [N] seconds; pitch, velocity: int64 [N]; pedal_times float64 [P] seconds and
    pedal_values float64 [P] (0..127) of every CC64 message in time order.
    """

    onset: np.ndarray
    offset: np.ndarray
    pitch: np.ndarray
    velocity: np.ndarray
    pedal_times: np.ndarray
    pedal_values: np.ndarray

    def __len__(self) -> int:
        return len(self.onset)


def read_notes(path: Path) -> Notes:
    """Notes and pedal of the MIDI file ``path`` (rules in the module docstring); raises `MidiFeatureError`."""
    path = Path(path)
    if not path.is_file():
        raise MidiFeatureError(f"MIDI {path} does not exist; check the corpus path")
    try:
        midi = mido.MidiFile(path)
        now = 0.0
        sounding: dict[tuple[int, int], tuple[float, int]] = {}
        notes: list[tuple[float, float, int, int]] = []
        pedal: list[tuple[float, int]] = []
        for message in midi:  # merged tracks, ``time`` = seconds since the previous message
            now += message.time
            if message.type == "note_on" and message.velocity > 0:
                key = (message.channel, message.note)
                if key in sounding:  # re-strike of a sounding key: the earlier note ends here
                    start, velocity = sounding.pop(key)
                    notes.append((start, now, message.note, velocity))
                sounding[key] = (now, message.velocity)
            elif message.type in ("note_on", "note_off"):
                started = sounding.pop((message.channel, message.note), None)
                if started is not None:
                    notes.append((started[0], now, message.note, started[1]))
            elif message.type == "control_change" and message.control == SUSTAIN_CONTROL:
                pedal.append((now, message.value))
    except Exception as err:  # mido raises OSError, EOFError, ValueError, KeyError, TypeError on bad files
        raise MidiFeatureError(f"MIDI {path} is corrupt: {type(err).__name__}: {err}") from None
    notes += [(start, now, pitch, velocity) for (_, pitch), (start, velocity) in sounding.items()]
    if not notes:
        raise MidiFeatureError(f"MIDI {path} has no notes (no note_on with velocity > 0); nothing to describe")
    table = np.array(sorted(notes, key=lambda n: (n[0], n[2], n[0] - n[1])), dtype=np.float64)  # longest first
    repeat = np.r_[False, (np.diff(table[:, 0]) == 0) & (np.diff(table[:, 2]) == 0)]
    table = table[~repeat]
    pedal_table = np.array(pedal, dtype=np.float64).reshape(-1, 2)
    return Notes(onset=table[:, 0], offset=table[:, 1], pitch=table[:, 2].astype(np.int64),
                 velocity=table[:, 3].astype(np.int64), pedal_times=pedal_table[:, 0], pedal_values=pedal_table[:, 1])


def group_onsets(onsets: np.ndarray, window: float) -> list[np.ndarray]:
    """Chords of sorted ``onsets``: each starts at the first onset left and takes every onset <= it + ``window``.

    Returns index arrays into ``onsets``, in time order.
    """
    chords, start = [], 0
    while start < len(onsets):
        stop = int(np.searchsorted(onsets, onsets[start] + window + 1e-9, side="right"))
        chords.append(np.arange(start, stop))
        start = stop
    return chords


def lcs_pairs(a: np.ndarray, b: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Indices (ia, ib) of a longest common subsequence of the integer sequences ``a`` [N] and ``b`` [M].

    Exact dynamic programme; each row is one vectorised step, since L[i, j] = max_{k <= j} max(L[i-1, k],
    L[i-1, k-1] + [a_i == b_k]) is a running maximum. Both index arrays are increasing. Raises `MidiFeatureError`
    when N * M exceeds `MAX_ALIGNMENT_CELLS`.
    """
    n, m = len(a), len(b)
    if n * m > MAX_ALIGNMENT_CELLS:
        raise MidiFeatureError(f"score alignment of {n} x {m} notes is too large; use shorter segments (the midi "
                               f"encoder can skip the score: --config.encoder.midi.use_score=False)")
    table = np.zeros((n + 1, m + 1), np.int32)
    for i in range(1, n + 1):
        previous = table[i - 1]
        candidate = previous.copy()
        candidate[1:] = np.maximum(previous[1:], previous[:-1] + (b == a[i - 1]))
        table[i] = np.maximum.accumulate(candidate)
    ia, ib = [], []
    i, j = n, m
    while i > 0 and j > 0:
        if a[i - 1] == b[j - 1] and table[i, j] == table[i - 1, j - 1] + 1:
            ia.append(i - 1)
            ib.append(j - 1)
            i, j = i - 1, j - 1
        elif table[i - 1, j] >= table[i, j - 1]:
            i -= 1
        else:
            j -= 1
    return np.array(ia[::-1], np.int64), np.array(ib[::-1], np.int64)


def chord_order(notes: Notes, chords: list[np.ndarray]) -> tuple[np.ndarray, np.ndarray]:
    """Note indices ordered by (chord, pitch) and each note's chord index."""
    order = np.concatenate([c[np.argsort(notes.pitch[c], kind="stable")] for c in chords])
    chord_of = np.empty(len(notes), np.int64)
    for k, c in enumerate(chords):
        chord_of[c] = k
    return order, chord_of


@dataclasses.dataclass(frozen=True)
class Alignment:
    """Matched notes of a performance against its score (see the module docstring).

    performance: int64 [K] performance note indices; score: int64 [K] their score note indices; score_chord: int64 [K]
    the score chord of each; score_chords: the score chords (index arrays into the score's notes, in time order);
    score_chord_times: float64 [C] the score chords' mean onsets (seconds); score_notes: the score's note count.
    """

    performance: np.ndarray
    score: np.ndarray
    score_chord: np.ndarray
    score_chords: list[np.ndarray]
    score_chord_times: np.ndarray
    score_notes: int

    def anchors(self, notes: Notes) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """Tempo anchors (module docstring): (score chord ids int64 [A] increasing, s_a float64 [A] their score times,
        q_a float64 [A] the median onset of their matched notes in ``notes``, the performance)."""
        anchors = np.unique(self.score_chord)
        score_times = self.score_chord_times[anchors]
        played = np.array([np.median(notes.onset[self.performance[self.score_chord == a]]) for a in anchors])
        return anchors, score_times, played


def align(notes: Notes, chords: list[np.ndarray], score: Notes, score_chord_tolerance_s: float) -> Alignment:
    """`Alignment` of the performance ``notes`` (grouped into ``chords``) against ``score``, whose chords group onsets
    within ``score_chord_tolerance_s``."""
    score_chords = group_onsets(score.onset, score_chord_tolerance_s)
    performance_order, _ = chord_order(notes, chords)
    score_order, score_chord_of = chord_order(score, score_chords)
    ia, ib = lcs_pairs(notes.pitch[performance_order], score.pitch[score_order])
    return Alignment(performance=performance_order[ia], score=score_order[ib],
                     score_chord=score_chord_of[score_order[ib]], score_chords=score_chords,
                     score_chord_times=np.array([score.onset[c].mean() for c in score_chords]),
                     score_notes=len(score))


def _beat_ticks(signatures: list[tuple[int, int, int]], ticks_per_beat: int, last_tick: int) -> np.ndarray:
    """Beat positions in ticks (module docstring): every beat up to ``last_tick`` and the first one after it.
    ``signatures``: (tick, numerator, denominator) in file order (of several at one tick the last one counts)."""
    at_tick = {0: (4, 4)}
    for tick, numerator, denominator in signatures:
        at_tick[tick] = (numerator, denominator)
    changes = sorted(at_tick.items())
    beats: list[float] = []
    for index, (start, (numerator, denominator)) in enumerate(changes):
        length = ticks_per_beat * 4.0 / denominator
        if numerator % 3 == 0 and numerator > 3 and denominator >= 8:
            length *= 3
        stop = changes[index + 1][0] if index + 1 < len(changes) else np.inf
        tick = float(start)
        while tick < stop and (not beats or beats[-1] <= last_tick):
            beats.append(tick)
            tick += length
    return np.array(beats, np.float64)


def score_beats(path: Path) -> np.ndarray:
    """float64 [B]: the beat grid of the score MIDI ``path`` in seconds (module docstring), increasing, from tick 0 to
    the first beat after the last note onset. Raises `MidiFeatureError` for a missing, corrupt or note-less file."""
    path = Path(path)
    if not path.is_file():
        raise MidiFeatureError(f"score MIDI {path} does not exist; check the corpus path")
    try:
        midi = mido.MidiFile(path)
    except Exception as err:  # noqa: BLE001 - mido raises many types on bad files
        raise MidiFeatureError(f"MIDI {path} is corrupt: {type(err).__name__}: {err}") from None
    signatures, tempos, last_onset = [], [], -1
    for track in midi.tracks:
        tick = 0
        for message in track:
            tick += message.time
            if message.type == "time_signature":
                signatures.append((tick, message.numerator, message.denominator))
            elif message.type == "set_tempo":
                tempos.append((tick, message.tempo))
            elif message.type == "note_on" and message.velocity > 0:
                last_onset = max(last_onset, tick)
    if last_onset < 0:
        raise MidiFeatureError(f"MIDI {path} has no notes (no note_on with velocity > 0); nothing to describe")
    beats = _beat_ticks(signatures, midi.ticks_per_beat, last_onset)
    tempos.sort(key=lambda item: item[0])  # stable: of several tempos at one tick the file's last counts
    tempo_ticks = np.array([0] + [t for t, _ in tempos], np.float64)
    values = np.array([500_000] + [v for _, v in tempos], np.float64)
    keep = np.r_[tempo_ticks[1:] != tempo_ticks[:-1], True]  # of several tempos at one tick the last one counts
    tempo_ticks, values = tempo_ticks[keep], values[keep]
    seconds_per_tick = values / (midi.ticks_per_beat * 1e6)
    starts = np.concatenate([[0.0], np.cumsum(np.diff(tempo_ticks) * seconds_per_tick[:-1])])
    segment = np.searchsorted(tempo_ticks, beats, side="right") - 1
    return starts[segment] + (beats - tempo_ticks[segment]) * seconds_per_tick[segment]
