"""`MidiEncoder`: a weight-free *symbolic* encoder of the performance MIDI itself (no rendering, no audio).

Reading (mido, all tracks merged, tempo map applied, times in seconds): a note lasts from its ``note_on`` (velocity
> 0) to the next ``note_off`` / ``note_on`` velocity 0 of the same channel and pitch; a second ``note_on`` of a
sounding pitch ends the first one there (a re-strike); notes still sounding at the end of the file end there; of
several notes with the same pitch and onset only the longest is kept (score exports write doubled voices as a
zero-length note plus the real one, and a key cannot be struck twice at once). The sustain pedal is controller 64
(any channel), a step function v(t) in 0..127, 0 before its first message. A MIDI file without any note is an error
(nothing was performed).

Notation: notes i sorted by (onset, pitch) with onset o_i, offset f_i, duration d_i = f_i - o_i (key down, pedal
ignored), pitch p_i, velocity v_i. The analysed window is [t0, t1] = [min o_i, max f_i], span T = t1 - t0.
**Chords** are formed from the onset stream: a chord starts at the earliest note not yet in a chord and takes
every later note whose onset is within ``chord_window_s`` (50 ms) of that first onset; c_k is the mean onset of
chord k and top(k) its highest note (the melody note). **Score chords** (when a score MIDI is given) group the
score's notes whose onsets lie within ``score_chord_tolerance_s`` (5 ms) of the chord's first onset.

**Score alignment** (only with a score MIDI): both note lists are ordered by (chord, pitch) (performance chords as
above, score chords as above) and aligned by the longest common subsequence of their pitch sequences: a monotone
matching that pairs the most notes with equal pitch in the same order (exact dynamic programme, O(N * M) time and
memory; wrong, missing and extra notes stay unmatched). Tempo anchors are the score chords with at least one matched
note: score time s_a (the score chord's mean onset) against performance time q_a (median onset of its matched
performance notes). Walking the anchors in score order and keeping the next anchor only once its score time is at
least ``min_score_ioi_s`` (50 ms) after the last kept one gives the local tempo ratios
r_a = (q_{a+1} - q_a) / (s_{a+1} - s_a) over kept pairs with q_{a+1} > q_a. Reading, chords, the alignment and the
anchors are `crescend_jax.encoders.alignment`, shared with the score-position encoder (`crescend_jax.encoders.aligned`).

Features (``FEATURE_NAMES``, this order; the default in brackets is used when a formula has nothing to work on):

timing from the onset stream (always)
  duration_s                T = t1 - t0, seconds.
  ioi_median_s              median of the chord inter-onset intervals c_{k+1} - c_k, seconds [0: < 2 chords].
  ioi_log_ratio_std         std of log(IOI_{k+1} / IOI_k) over successive chord IOIs (natural log, population std),
                            0 for a metronomic performance of even notes; mixes rhythm with rubato
                            [0: < 3 chords].
timing against the score (score MIDI given and ``use_score``)
  has_score                 1 when a score MIDI was aligned, else 0 (and the next three take their defaults).
  score_match_share         matched notes / max(performance notes, score notes), 0..1 [0].
  tempo_ratio               relative tempo = performed duration / score duration between the first and the last
                            anchor, (q_last - q_first) / (s_last - s_first); > 1 is slower than the score MIDI's own
                            tempo, e.g. 2 when played twice as slow [1: < 2 anchors].
  tempo_log_std             local tempo variation: std of log r_a (natural log, population std) [0: < 2 ratios].
velocity (MIDI velocity units 0..127; std = population std)
  velocity_mean, velocity_std   level and spread over all notes.
  velocity_range            95th minus 5th percentile of v_i (linear interpolation).
  velocity_mean_low, velocity_std_low     notes with p_i < ``register_split`` (60 = middle C).
  velocity_mean_high, velocity_std_high   notes with p_i >= ``register_split``.
  velocity_high_minus_low   velocity_mean_high - velocity_mean_low.
  velocity_mean_melody, velocity_std_melody   the top note of every chord (melody).
  velocity_mean_accompaniment, velocity_std_accompaniment   every other note.
  melody_projection         mean over chords of >= 2 notes of (v_top - mean velocity of the chord's other notes);
                            > 0 when the melody is played louder than its accompaniment [0: no such chord].
  An empty group (no low notes, no accompaniment, ...) takes the overall velocity_mean and a std of 0, so its
  differences are 0.
articulation (ratios of key-down duration to inter-onset interval: 1 = legato, 0.5 = half-length staccato)
  articulation_melody       median over successive melody notes of d_top(k) / (o_top(k+1) - o_top(k)) [1: < 2 chords].
  articulation_all          median over notes of chords k < K-1 of d_i / (c_{k+1} - c_k) [1: < 2 chords].
  overlap_share             share of successive melody notes where the first is released after the next starts,
                            f_top(k) > o_top(k+1), 0..1 [0: < 2 chords].
chord asynchrony (chords: score chords' matched notes when a score is aligned, else the 50 ms chords; only
chords of >= 2 notes)
  chord_async_ms            median over chords of (latest onset - earliest onset), milliseconds [0].
  melody_lead_ms            median over chords of (mean onset of the other notes - onset of the top note),
                            milliseconds; > 0 when the melody sounds first [0].
sustain pedal (v(t) over [t0, t1]; down = v >= ``pedal_threshold`` = 64)
  pedal_down_share          time with the pedal down / T, 0..1 [0: T = 0].
  pedal_changes_per_s       up/down transitions in (t0, t1] / T, per second [0: T = 0].
  pedal_depth_mean          time mean of v(t) / 127 while the pedal is not fully up (v > 0), 0..1 [0: never].
note density
  notes_per_s, chords_per_s   note and chord counts / T, per second [0: T = 0].
  chord_size_mean           notes per chord.
  polyphony_mean            time mean of the number of keys held down, sum_i d_i / T [0: T = 0].

Every feature is finite for any MIDI with at least one note. Units differ (seconds, velocities, shares): models
should standardise the vector (the store keeps raw values).

``Encoded``: ``pooled`` is the float32 feature vector [len(FEATURE_NAMES)]; ``frames`` is that same vector as a
single frame [1, 1, dim] (one frame per segment, no time axis: ``frame_rate`` is 0).
"""

from __future__ import annotations

from pathlib import Path
from typing import Sequence

import ml_collections
import numpy as np

from crescend_jax.encoders.alignment import (SUSTAIN_CONTROL, Alignment, MidiFeatureError, Notes, align, group_onsets,
                                             lcs_pairs, read_notes)
from crescend_jax.encoders.base import Encoded, set_symbolic_settings, symbolic_digest

# Re-exported: the reading and alignment helpers lived here before `alignment` was split out.
__all__ = ["ENCODER_VERSION", "FEATURE_NAMES", "SUSTAIN_CONTROL", "MidiEncoder", "MidiFeatureError", "Notes",
           "default_encoder_config", "group_onsets", "lcs_pairs", "read_notes"]

# Bump by hand whenever a formula or the parsing changes: it is part of ``MidiEncoder.name`` (and of the store
# identity, which reads ``ENCODER_VERSION`` of every encoder module), so a changed encoder writes a new store.
ENCODER_VERSION = 1

FEATURE_NAMES = (
    "duration_s", "ioi_median_s", "ioi_log_ratio_std",
    "has_score", "score_match_share", "tempo_ratio", "tempo_log_std",
    "velocity_mean", "velocity_std", "velocity_range",
    "velocity_mean_low", "velocity_std_low", "velocity_mean_high", "velocity_std_high", "velocity_high_minus_low",
    "velocity_mean_melody", "velocity_std_melody", "velocity_mean_accompaniment", "velocity_std_accompaniment",
    "melody_projection",
    "articulation_melody", "articulation_all", "overlap_share",
    "chord_async_ms", "melody_lead_ms",
    "pedal_down_share", "pedal_changes_per_s", "pedal_depth_mean",
    "notes_per_s", "chords_per_s", "chord_size_mean", "polyphony_mean",
)
def default_encoder_config() -> ml_collections.ConfigDict:
    """``config.encoder.midi``: symbolic performance features (``name="midi"``); see the module docstring."""
    config = ml_collections.ConfigDict()
    config.name = "midi"
    config.use_score = True  # align against the segment's score MIDI when the corpus provides one
    config.chord_window_s = 0.05  # onsets within this of a chord's first onset join the chord
    config.score_chord_tolerance_s = 0.005  # score onsets this close coincide
    config.min_score_ioi_s = 0.05  # shortest score interval between two tempo anchors
    config.register_split = 60  # middle C: pitches below are "low", the rest "high"
    config.pedal_threshold = 64  # CC64 value from which the sustain pedal counts as down
    return config


def _std(values: np.ndarray) -> float:
    return float(np.std(values)) if len(values) else 0.0


def _median(values, default: float) -> float:
    return float(np.median(values)) if len(values) else default


class MidiEncoder:
    """Symbolic performance features of MIDI files; see the module docstring for every formula.

    ``symbolic = True``: extraction calls ``encode_midi`` on the corpus's MIDI files instead of rendering audio.
    ``name`` is ``midi-v<ENCODER_VERSION>-f<number of features>-<hash of every setting and the mido version>``.
    """

    symbolic = True
    sample_rate = 0  # reads MIDI, never audio
    frame_rate = 0.0  # one frame per segment
    num_layers = 1
    feature_names = FEATURE_NAMES

    def __init__(self, *, use_score: bool = True, chord_window_s: float = 0.05, score_chord_tolerance_s: float = 0.005,
                 min_score_ioi_s: float = 0.05, register_split: int = 60, pedal_threshold: int = 64):
        set_symbolic_settings(self, chord_window_s=chord_window_s, score_chord_tolerance_s=score_chord_tolerance_s,
                              min_score_ioi_s=min_score_ioi_s, pedal_threshold=pedal_threshold)
        if not 0 <= register_split <= 128:
            raise ValueError(f"register_split={register_split} must be a MIDI pitch in 0..128")
        self.use_score = bool(use_score)
        self.register_split = int(register_split)
        self.dim = len(FEATURE_NAMES)
        digest = symbolic_digest(self, ("use_score", "register_split"), ENCODER_VERSION, FEATURE_NAMES)
        self.name = f"midi-v{ENCODER_VERSION}-f{self.dim}-{digest}"

    @classmethod
    def from_config(cls, config: ml_collections.ConfigDict) -> "MidiEncoder":
        """From `default_encoder_config`'s fields (``name`` must be "midi")."""
        if config.name != "midi":
            raise ValueError(f"MidiEncoder.from_config got encoder name {config.name!r}, expected 'midi'")
        return cls(use_score=config.use_score, chord_window_s=config.chord_window_s,
                   score_chord_tolerance_s=config.score_chord_tolerance_s, min_score_ioi_s=config.min_score_ioi_s,
                   register_split=config.register_split, pedal_threshold=config.pedal_threshold)

    def encode_midi(self, midi_paths: Sequence[Path], score_paths: Sequence[Path | None] | None = None
                    ) -> list[Encoded]:
        """One `Encoded` per performance MIDI; ``score_paths[i]`` (or None) is the score MIDI of ``midi_paths[i]``.

        Raises `MidiFeatureError` naming the file for a missing, corrupt or empty MIDI.
        """
        scores = list(score_paths) if score_paths is not None else [None] * len(midi_paths)
        if len(scores) != len(midi_paths):
            raise ValueError(f"{len(midi_paths)} performance MIDIs but {len(scores)} score paths")
        encoded = []
        for path, score in zip(midi_paths, scores):
            vector = self.feature_vector(path, score)
            encoded.append(Encoded(frames=vector.reshape(1, 1, -1), pooled=vector))
        return encoded

    def feature_vector(self, midi_path: Path, score_path: Path | None = None) -> np.ndarray:
        """float32 [len(FEATURE_NAMES)] of one performance (and its score MIDI when given and ``use_score``)."""
        values = self.features(midi_path, score_path)
        return np.array([values[name] for name in FEATURE_NAMES], np.float32)

    def features(self, midi_path: Path, score_path: Path | None = None) -> dict[str, float]:
        """name -> value of every feature in ``FEATURE_NAMES`` (formulas and units in the module docstring)."""
        notes = read_notes(midi_path)
        chords = group_onsets(notes.onset, self.chord_window_s)
        alignment = None
        if self.use_score and score_path is not None:
            alignment = align(notes, chords, read_notes(score_path), self.score_chord_tolerance_s)
        values: dict[str, float] = {}
        values.update(self._timing(notes, chords))
        values.update(self._score_timing(notes, alignment))
        values.update(self._velocity(notes, chords))
        values.update(self._articulation(notes, chords))
        values.update(self._asynchrony(notes, chords, alignment))
        values.update(self._pedal(notes))
        values.update(self._density(notes, chords))
        if set(values) != set(FEATURE_NAMES):  # a formula added without its name, or the reverse
            raise AssertionError(f"features and FEATURE_NAMES differ: {sorted(set(values) ^ set(FEATURE_NAMES))}")
        return {name: float(values[name]) for name in FEATURE_NAMES}

    # -----------------------------------------------------------------------------------------------------------

    @staticmethod
    def _chord_times(notes: Notes, chords: list[np.ndarray]) -> np.ndarray:
        return np.array([notes.onset[c].mean() for c in chords])

    def _timing(self, notes: Notes, chords: list[np.ndarray]) -> dict[str, float]:
        ioi = np.diff(self._chord_times(notes, chords))
        log_ratios = np.diff(np.log(ioi)) if len(ioi) >= 2 else np.zeros(0)
        return {"duration_s": notes.offset.max() - notes.onset.min(), "ioi_median_s": _median(ioi, 0.0),
                "ioi_log_ratio_std": _std(log_ratios)}

    def _score_timing(self, notes: Notes, alignment: Alignment | None) -> dict[str, float]:
        values = {"has_score": 0.0, "score_match_share": 0.0, "tempo_ratio": 1.0, "tempo_log_std": 0.0}
        if alignment is None:
            return values
        values["has_score"] = 1.0
        values["score_match_share"] = len(alignment.performance) / max(len(notes), alignment.score_notes)
        anchors, score_times, played = alignment.anchors(notes)  # score chords with a matched note, in score order
        if len(anchors) < 2:
            return values
        if score_times[-1] > score_times[0] and played[-1] > played[0]:
            values["tempo_ratio"] = (played[-1] - played[0]) / (score_times[-1] - score_times[0])
        kept = [0]
        for a in range(1, len(anchors)):
            if score_times[a] - score_times[kept[-1]] >= self.min_score_ioi_s - 1e-9:
                kept.append(a)
        score_gaps, played_gaps = np.diff(score_times[kept]), np.diff(played[kept])
        forward = played_gaps > 0
        ratios = played_gaps[forward] / score_gaps[forward]
        values["tempo_log_std"] = _std(np.log(ratios)) if len(ratios) >= 2 else 0.0
        return values

    def _velocity(self, notes: Notes, chords: list[np.ndarray]) -> dict[str, float]:
        velocity = notes.velocity.astype(np.float64)
        overall = velocity.mean()

        def level(mask: np.ndarray) -> tuple[float, float]:
            chosen = velocity[mask]
            return (chosen.mean(), chosen.std()) if chosen.size else (overall, 0.0)

        low = notes.pitch < self.register_split
        melody = np.zeros(len(notes), bool)
        melody[[c[np.argmax(notes.pitch[c])] for c in chords]] = True
        projection = [velocity[c[melody[c]]][0] - velocity[c[~melody[c]]].mean() for c in chords if len(c) >= 2]
        low_mean, low_std = level(low)
        high_mean, high_std = level(~low)
        melody_mean, melody_std = level(melody)
        accompaniment_mean, accompaniment_std = level(~melody)
        p5, p95 = np.percentile(velocity, [5, 95])
        return {"velocity_mean": overall, "velocity_std": velocity.std(), "velocity_range": p95 - p5,
                "velocity_mean_low": low_mean, "velocity_std_low": low_std,
                "velocity_mean_high": high_mean, "velocity_std_high": high_std,
                "velocity_high_minus_low": high_mean - low_mean,
                "velocity_mean_melody": melody_mean, "velocity_std_melody": melody_std,
                "velocity_mean_accompaniment": accompaniment_mean, "velocity_std_accompaniment": accompaniment_std,
                "melody_projection": float(np.mean(projection)) if projection else 0.0}

    def _articulation(self, notes: Notes, chords: list[np.ndarray]) -> dict[str, float]:
        if len(chords) < 2:
            return {"articulation_melody": 1.0, "articulation_all": 1.0, "overlap_share": 0.0}
        duration = notes.offset - notes.onset
        top = np.array([c[np.argmax(notes.pitch[c])] for c in chords])
        melody_ioi = np.diff(notes.onset[top])  # > 0: successive chords start more than a chord window apart
        times = self._chord_times(notes, chords)
        ratios = [duration[c] / (times[k + 1] - times[k]) for k, c in enumerate(chords[:-1])]
        return {"articulation_melody": float(np.median(duration[top[:-1]] / melody_ioi)),
                "articulation_all": float(np.median(np.concatenate(ratios))),
                "overlap_share": float(np.mean(notes.offset[top[:-1]] > notes.onset[top[1:]]))}

    def _asynchrony(self, notes: Notes, chords: list[np.ndarray], alignment: Alignment | None) -> dict[str, float]:
        if alignment is not None:
            groups = [alignment.performance[alignment.score_chord == a] for a in np.unique(alignment.score_chord)]
        else:
            groups = chords
        spreads, leads = [], []
        for group in groups:
            if len(group) < 2:
                continue
            onsets = notes.onset[group]
            top = int(np.argmax(notes.pitch[group]))
            spreads.append(onsets.max() - onsets.min())
            leads.append(np.delete(onsets, top).mean() - onsets[top])
        return {"chord_async_ms": 1000.0 * _median(spreads, 0.0), "melody_lead_ms": 1000.0 * _median(leads, 0.0)}

    def _pedal(self, notes: Notes) -> dict[str, float]:
        start, end = notes.onset.min(), notes.offset.max()
        span = end - start
        if span <= 0:
            return {"pedal_down_share": 0.0, "pedal_changes_per_s": 0.0, "pedal_depth_mean": 0.0}
        times, values = notes.pedal_times, notes.pedal_values
        before = np.searchsorted(times, start, side="right") - 1
        initial = values[before] if before >= 0 else 0.0
        inside = (times > start) & (times < end)
        bounds = np.concatenate([[start], times[inside], [end]])
        levels = np.concatenate([[initial], values[inside]])  # v(t) on each interval between bounds
        lengths = np.diff(bounds)
        down = levels >= self.pedal_threshold
        states = np.concatenate([[initial], values[(times > start) & (times <= end)]]) >= self.pedal_threshold
        pressed = levels > 0
        pressed_time = lengths[pressed].sum()
        return {"pedal_down_share": lengths[down].sum() / span,
                "pedal_changes_per_s": np.count_nonzero(states[1:] != states[:-1]) / span,
                "pedal_depth_mean": (lengths[pressed] * levels[pressed]).sum() / 127.0 / pressed_time
                if pressed_time > 0 else 0.0}

    def _density(self, notes: Notes, chords: list[np.ndarray]) -> dict[str, float]:
        span = notes.offset.max() - notes.onset.min()
        rate = (lambda count: count / span) if span > 0 else (lambda count: 0.0)
        return {"notes_per_s": rate(len(notes)), "chords_per_s": rate(len(chords)),
                "chord_size_mean": len(notes) / len(chords),
                "polyphony_mean": rate((notes.offset - notes.onset).sum())}
