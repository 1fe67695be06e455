"""`AlignedEncoder`: what the performer did at each *score position*, one frame per position, read from the performance
MIDI aligned to its score MIDI (symbolic; no audio).

Two performances of the same music get frames at the same score positions, index by index: frame j of every
performance of a segment describes the same beat (or score chord) of the same score, so frames can be compared and
averaged across performers position by position (`crescend_jax.data.table.group_relative`).

**Alignment** (`crescend_jax.encoders.alignment`, shared with the `midi` encoder): performance chords (onsets within
``chord_window_s`` = 50 ms), score chords (onsets within ``score_chord_tolerance_s`` = 5 ms), the longest common
subsequence of the (chord, pitch)-ordered pitch sequences; matched notes are pairs (performance note i, score note k).
A segment in which no note matches is an error (the MIDI does not play this score).

**Positions** (``positions``): ``"beat"`` (default): the score's beats, [b_j, b_{j+1}) in score seconds, j = 0..J-1 -
for PercePiano the beat grid of the score MIDI (`alignment.score_beats`: time signatures, compound metres counted in
dotted beats), for an ASAP window its annotated score beats from the first to the last downbeat (the last one closes
the window). ``"chord"``: one position per score chord, [sigma_c, sigma_{c+1}) (the last one ends at the score's last
offset). A score chord (with its notes) belongs to the position its mean onset sigma_c falls in (5 ms early counts);
notes before the first beat belong to position 0.

**Tempo anchors** (score time s_a, performed time q_a), increasing in both: with beat annotations (an ASAP window)
the annotated beats, score against performance (the annotations give the anchors directly); otherwise the score
chords with matched notes, s_a = sigma_c, q_a = the median onset of the chord's matched notes, of which the longest
chain with strictly increasing q_a is kept (a chord whose matches run backwards in time is no anchor; its notes stay
matched). In position j: F = its first anchor; the local tempo ratio is the slope to the first anchor N of a later
position with s_N - s_F >= ``min_score_ioi_s`` (50 ms), r_j = (q_N - q_F) / (s_N - s_F); with no such N (the last
positions) N is the last anchor of position j itself that far from F, else the slope is taken from the last anchor B
with s_F - s_B >= ``min_score_ioi_s``. No F, or none of these: r_j is undefined. The position's performed span is [u_j, w_j) = q_F + r_j * ([b_j, b_{j+1}) - s_F).

**Features** of position j (``FEATURE_NAMES``, this order). M_j = the matched notes whose score note lies in j, with
performed onset o_i, offset f_i, velocity v_i and score duration d_k; v-bar = the mean velocity of every matched note
of the segment; the melody note of a score chord is its highest score note when matched (else the chord has none).
  tempo_log_ratio          log r_j (natural log): 0 = the score MIDI's own (notated) tempo, log 2 = twice as slow;
                           comparable across pieces.
  tempo_log_change_abs     |log r_j - log r_j'|, j' the previous position with a tempo: how much the tempo moved.
  tempo_log_dev_abs        |log r_j - mean_j log r_j| (mean over the segment's positions with a tempo): rubato extent.
  onset_deviation_ms       1000 x mean over the score chords c of j with matched notes of (q_c - (alpha + beta sigma_c)),
                           q_c their median performed onset, (alpha, beta) the least-squares line q = alpha + beta s
                           through the anchors of positions j - R .. j + R (R = ``fit_radius``, 1); needs two anchors
                           with distinct s. With note anchors only the chords kept as anchors count. > 0 = late.
  onset_deviation_abs_ms   the same mean of |q_c - (alpha + beta sigma_c)|.
  chord_async_ms           1000 x mean over the score chords of j with >= 2 matched notes of (latest - earliest onset).
  melody_lead_ms           1000 x mean over those chords of (mean onset of the other matched notes - onset of the
                           highest matched note); > 0 when the melody sounds first.
  velocity_melody          mean v_i of the melody notes of j (MIDI velocity 0..127).
  velocity_rest            mean v_i of the other matched notes of j.
  velocity_melody_rel      velocity_melody - v-bar (relative to the segment's mean: comparable across recordings).
  velocity_rest_rel        velocity_rest - v-bar.
  velocity_abs_dev         mean over M_j of |v_i - v-bar|: dynamic contrast at the position.
  articulation_log         mean over M_j (d_k > 0) of log((f_i - o_i) / (r_j d_k)): key-down duration against the
                           score duration at the local tempo; 0 = as notated, < 0 detached, > 0 held over.
  legato_overlap           mean over the melody notes i of j whose next score chord's melody note i' is matched and
                           later, of (f_i - o_i') / (o_i' - o_i): the key overlap ratio, > 0 legato, < 0 a gap.
  pedal_down_share         share of [u_j, w_j) with the sustain pedal (CC64) at or above ``pedal_threshold`` (64).
  pedal_depth              time mean of v(t) / 127 over [u_j, w_j) (v(t) the CC64 step function, 0 before its first
                           message).
  pedal_changes            pedal down/up transitions in (u_j, w_j].
  missing_share            1 - (matched score notes of j) / (score notes of j): skipped notes.
  extra_rate               (unmatched performance notes with onset in [u_j, w_j)) / (score notes of j): added notes.

**Masks.** A position with no matched note is masked: every feature is NaN but missing_share (1 where the score has
notes there; NaN where it has none, e.g. a held beat). A feature whose formula has nothing to work on at a valid
position is NaN too (no chord of >= 2 notes, no tempo, no melody note, ...): NaN means "undefined", never a guess.
Frames hold NaN as is (the store keeps them, bfloat16); a model reads the mask as ``isfinite``.

``Encoded``: ``frames`` float32 [1, J, len(FEATURE_NAMES)] (one layer; ``frame_rate`` 0: frames are indexed by score
position, not time); ``pooled`` float32 [len(FEATURE_NAMES)] = the mean over the positions where each feature is
defined (``nanmean``), with 0 for a feature defined nowhere (velocity_melody / velocity_rest: v-bar), so pooled-vector
models and the ridge reference read it unchanged.
"""

from __future__ import annotations

import bisect
from pathlib import Path
from typing import Sequence

import ml_collections
import numpy as np

from crescend_jax.encoders.alignment import (Alignment, MidiFeatureError, Notes, align, group_onsets, read_notes,
                                             score_beats)
from crescend_jax.encoders.base import Encoded, set_symbolic_settings, symbolic_digest

# Bump by hand whenever a formula, the positions or the parsing change (part of the name and the store identity).
ENCODER_VERSION = 1

FEATURE_NAMES = (
    "tempo_log_ratio", "tempo_log_change_abs", "tempo_log_dev_abs",
    "onset_deviation_ms", "onset_deviation_abs_ms",
    "chord_async_ms", "melody_lead_ms",
    "velocity_melody", "velocity_rest", "velocity_melody_rel", "velocity_rest_rel", "velocity_abs_dev",
    "articulation_log", "legato_overlap",
    "pedal_down_share", "pedal_depth", "pedal_changes",
    "missing_share", "extra_rate",
)
POSITIONS = ("beat", "chord")
_INDEX = {name: i for i, name in enumerate(FEATURE_NAMES)}


def default_encoder_config() -> ml_collections.ConfigDict:
    """``config.encoder.aligned``: per-score-position performance features (``name="aligned"``); module docstring."""
    config = ml_collections.ConfigDict()
    config.name = "aligned"
    config.positions = "beat"  # "beat": one frame per score beat; "chord": one per score chord (onset)
    config.chord_window_s = 0.05  # performance onsets within this of a chord's first onset join the chord
    config.score_chord_tolerance_s = 0.005  # score onsets this close coincide
    config.min_score_ioi_s = 0.05  # shortest score interval a local tempo is measured over
    config.fit_radius = 1  # the onset deviation's tempo line is fitted over positions j - R .. j + R
    config.pedal_threshold = 64  # CC64 value from which the sustain pedal counts as down
    return config


def longest_increasing_chain(values: np.ndarray) -> np.ndarray:
    """Indices (increasing) of a longest subsequence of ``values`` [A] that strictly increases (patience sorting,
    O(A log A))."""
    tails: list[float] = []  # tails[k]: the smallest last value of an increasing chain of length k + 1
    tail_index: list[int] = []
    previous = np.full(len(values), -1, np.int64)
    for i, value in enumerate(values):
        k = bisect.bisect_left(tails, value)
        if k == len(tails):
            tails.append(value)
            tail_index.append(i)
        else:
            tails[k], tail_index[k] = value, i
        previous[i] = tail_index[k - 1] if k else -1
    chain, i = [], tail_index[-1] if tail_index else -1
    while i >= 0:
        chain.append(i)
        i = previous[i]
    return np.array(chain[::-1], np.int64)


def _pedal_profile(times: np.ndarray, values: np.ndarray, start: float, end: float,
                   threshold: int) -> tuple[float, float, float]:
    """(share of [start, end) with v >= threshold, time mean of v / 127, down/up transitions in (start, end]) of the
    CC64 step function v(t) (0 before its first message)."""
    before = np.searchsorted(times, start, side="right") - 1
    initial = values[before] if before >= 0 else 0.0
    inside = (times > start) & (times < end)
    bounds = np.concatenate([[start], times[inside], [end]])
    levels = np.concatenate([[initial], values[inside]])
    lengths = np.diff(bounds)
    span = end - start
    states = np.concatenate([[initial], values[(times > start) & (times <= end)]]) >= threshold
    return (float(lengths[levels >= threshold].sum() / span), float((lengths * levels).sum() / 127.0 / span),
            float(np.count_nonzero(states[1:] != states[:-1])))


class AlignedEncoder:
    """Per-score-position performance features (module docstring); one frame per score beat or chord.

    ``symbolic = True``: extraction calls ``encode_midi`` with the corpus's MIDI files and score MIDI files;
    ``reads_windows = True``: it also passes each segment's `crescend_jax.data.segments.Window` (None for an uncut
    segment), whose annotated beats are the anchors and positions of an ASAP window.
    ``name`` is ``aligned-v<ENCODER_VERSION>-<positions>-f<features>-<hash of every setting and the mido version>``.
    """

    symbolic = True
    reads_windows = True
    sample_rate = 0
    frame_rate = 0.0  # frames are score positions, not times
    num_layers = 1
    feature_names = FEATURE_NAMES

    def __init__(self, *, positions: str = "beat", chord_window_s: float = 0.05, score_chord_tolerance_s: float = 0.005,
                 min_score_ioi_s: float = 0.05, fit_radius: int = 1, pedal_threshold: int = 64):
        if positions not in POSITIONS:
            raise ValueError(f"positions={positions!r}: must be one of {POSITIONS}")
        set_symbolic_settings(self, chord_window_s=chord_window_s, score_chord_tolerance_s=score_chord_tolerance_s,
                              min_score_ioi_s=min_score_ioi_s, pedal_threshold=pedal_threshold)
        if fit_radius < 0:
            raise ValueError(f"fit_radius={fit_radius} must be >= 0")
        self.positions = positions
        self.fit_radius = int(fit_radius)
        self.dim = len(FEATURE_NAMES)
        digest = symbolic_digest(self, ("positions", "fit_radius"), ENCODER_VERSION, FEATURE_NAMES)
        self.name = f"aligned-v{ENCODER_VERSION}-{positions}-f{self.dim}-{digest}"

    @classmethod
    def from_config(cls, config: ml_collections.ConfigDict) -> "AlignedEncoder":
        """From `default_encoder_config`'s fields (``name`` must be "aligned")."""
        if config.name != "aligned":
            raise ValueError(f"AlignedEncoder.from_config got encoder name {config.name!r}, expected 'aligned'")
        return cls(positions=config.positions, chord_window_s=config.chord_window_s,
                   score_chord_tolerance_s=config.score_chord_tolerance_s, min_score_ioi_s=config.min_score_ioi_s,
                   fit_radius=config.fit_radius, pedal_threshold=config.pedal_threshold)

    def encode_midi(self, midi_paths: Sequence[Path], score_paths: Sequence[Path | None] | None = None,
                    windows: Sequence | None = None) -> list[Encoded]:
        """One `Encoded` per performance MIDI: ``score_paths[i]`` is its score MIDI (required), ``windows[i]`` its
        `Window` or None. Raises `MidiFeatureError` naming the file for a missing score, an unreadable MIDI or a
        performance of which no note matches its score."""
        count = len(midi_paths)
        scores = list(score_paths) if score_paths is not None else [None] * count
        cuts = list(windows) if windows is not None else [None] * count
        if len(scores) != count or len(cuts) != count:
            raise ValueError(f"{count} performance MIDIs but {len(scores)} score paths and {len(cuts)} windows")
        encoded = []
        for path, score, window in zip(midi_paths, scores, cuts):
            features = self._features(path, score, window)
            frames = features.frames()
            encoded.append(Encoded(frames=frames[None].astype(np.float32),
                                   pooled=pool(frames, features.velocity_mean)))
        return encoded

    def frames(self, midi_path: Path, score_path: Path | None, window=None) -> np.ndarray:
        """float64 [J, len(FEATURE_NAMES)] of one performance against its score (NaN = masked; module docstring)."""
        return self._features(midi_path, score_path, window).frames()

    def _features(self, midi_path: Path, score_path: Path | None, window) -> "_PositionFeatures":
        if score_path is None:
            raise MidiFeatureError(f"{midi_path}: the aligned encoder needs the segment's score MIDI and the corpus "
                                   f"gives none")
        notes, score = read_notes(midi_path), read_notes(score_path)
        chords = group_onsets(notes.onset, self.chord_window_s)
        alignment = align(notes, chords, score, self.score_chord_tolerance_s)
        if len(alignment.performance) == 0:
            raise MidiFeatureError(f"{midi_path}: no note matches its score {score_path}; it does not play this score")
        annotated = window is not None
        if annotated:
            if len(getattr(window, "beats", ())) < 2 or len(window.beats) != len(window.score_beats):
                raise MidiFeatureError(f"{midi_path}: its window carries no paired beat annotations; re-read the corpus")
            grid = np.asarray(window.score_beats, np.float64)
        else:
            grid = score_beats(score_path) if self.positions == "beat" else None
        return _PositionFeatures(self, notes, score, alignment, grid,
                                 np.asarray(window.beats, np.float64) if annotated else None)


def pool(frames: np.ndarray, velocity_mean: float) -> np.ndarray:
    """float32 [D] of ``frames`` [J, D]: per feature the mean over the positions where it is defined; where it is
    defined nowhere, 0 (velocity_melody and velocity_rest: ``velocity_mean``, v-bar)."""
    finite = np.isfinite(frames)
    counts = finite.sum(axis=0)
    pooled = np.where(counts > 0, np.where(finite, frames, 0.0).sum(axis=0) / np.maximum(counts, 1), 0.0)
    for name in ("velocity_melody", "velocity_rest"):
        if counts[_INDEX[name]] == 0:
            pooled[_INDEX[name]] = velocity_mean
    return pooled.astype(np.float32)


class _PositionFeatures:
    """The computation of one segment's frames (module docstring), position by position."""

    def __init__(self, encoder: AlignedEncoder, notes: Notes, score: Notes, alignment: Alignment,
                 grid: np.ndarray | None, performed_beats: np.ndarray | None):
        self.encoder, self.notes, self.score, self.alignment = encoder, notes, score, alignment
        tolerance = encoder.score_chord_tolerance_s
        chord_times = alignment.score_chord_times
        if encoder.positions == "beat":
            self.starts, self.ends = grid[:-1], grid[1:]
            self.chord_position = self.position_of(chord_times)
        else:
            self.starts = chord_times
            self.ends = np.r_[chord_times[1:], max(score.offset.max(), chord_times[-1] + tolerance)]
            self.chord_position = np.arange(len(chord_times))
        # tempo anchors (s_a, q_a) and, with note anchors, which score chords they are
        chord_ids, anchor_score, anchor_played = alignment.anchors(notes)
        if performed_beats is not None:
            self.anchor_score, self.anchor_played = grid, performed_beats
            self.anchor_chords = chord_ids  # every matched chord enters the onset deviations
        else:
            kept = longest_increasing_chain(anchor_played)
            self.anchor_score, self.anchor_played = anchor_score[kept], anchor_played[kept]
            self.anchor_chords = chord_ids[kept]
        self.anchor_set = set(self.anchor_chords.tolist())
        self.anchor_position = self.position_of(self.anchor_score, beyond=True)
        self.chord_onset = dict(zip(chord_ids.tolist(), anchor_played.tolist()))  # q_c of every matched chord
        self.partner = np.full(len(score), -1, np.int64)  # performance note of each score note (-1: missed)
        self.partner[alignment.score] = alignment.performance
        self.velocity_mean = float(notes.velocity[alignment.performance].mean())

    def position_of(self, times: np.ndarray, beyond: bool = False) -> np.ndarray:
        """Position index of score times (5 ms early counts; before the first position -> 0). At or after the end of
        the last position: the last one, or J with ``beyond`` (an ASAP window's closing beat is no position of it)."""
        early = times + self.encoder.score_chord_tolerance_s
        index = np.maximum(np.searchsorted(self.starts, early, side="right") - 1, 0)
        if beyond:
            return np.where(early >= self.ends[-1], len(self.starts), index)
        return np.minimum(index, len(self.starts) - 1)

    def tempo(self, j: int) -> tuple[float, float, float]:
        """(r_j, s_F, q_F), NaN when undefined (module docstring)."""
        gap = self.encoder.min_score_ioi_s - 1e-9
        inside = np.flatnonzero(self.anchor_position == j)
        if not len(inside):
            return np.nan, np.nan, np.nan
        first = inside[0]
        s_f, q_f = self.anchor_score[first], self.anchor_played[first]
        ahead = self.anchor_score - s_f >= gap
        later = np.flatnonzero((self.anchor_position > j) & ahead)
        within = np.flatnonzero((self.anchor_position == j) & ahead)
        earlier = np.flatnonzero(s_f - self.anchor_score >= gap)
        if len(later):
            other = later[0]
        elif len(within):
            other = within[-1]
        elif len(earlier):
            other = earlier[-1]
        else:
            return np.nan, s_f, q_f
        ratio = (self.anchor_played[other] - q_f) / (self.anchor_score[other] - s_f)
        return (float(ratio) if ratio > 0 else np.nan), s_f, q_f

    def frames(self) -> np.ndarray:
        """float64 [J, len(FEATURE_NAMES)]: every position's features, NaN where masked or undefined."""
        notes, alignment = self.notes, self.alignment
        count = len(self.starts)
        out = np.full((count, len(FEATURE_NAMES)), np.nan)
        chords_at = [np.flatnonzero(self.chord_position == j) for j in range(count)]
        matched_performance = np.zeros(len(notes), bool)
        matched_performance[alignment.performance] = True
        unmatched_onsets = notes.onset[~matched_performance]
        tempos = [self.tempo(j) for j in range(count)]
        for j in range(count):
            score_notes = np.concatenate([alignment.score_chords[c] for c in chords_at[j]]) if len(chords_at[j]) \
                else np.zeros(0, np.int64)
            matched = score_notes[self.partner[score_notes] >= 0]
            if len(score_notes):
                out[j, _INDEX["missing_share"]] = 1.0 - len(matched) / len(score_notes)
            if not len(matched):
                continue  # masked: nothing of this position was played
            ratio, s_f, q_f = tempos[j]
            self._timing(out[j], j, chords_at[j], ratio)
            self._dynamics(out[j], chords_at[j], matched)
            self._articulation(out[j], chords_at[j], matched, ratio)
            if np.isfinite(ratio):
                start = q_f + ratio * (self.starts[j] - s_f)
                end = q_f + ratio * (self.ends[j] - s_f)
                if end > start:
                    out[j, _INDEX["pedal_down_share"]:_INDEX["pedal_changes"] + 1] = _pedal_profile(
                        notes.pedal_times, notes.pedal_values, start, end, self.encoder.pedal_threshold)
                    extra = np.count_nonzero((unmatched_onsets >= start) & (unmatched_onsets < end))
                    out[j, _INDEX["extra_rate"]] = extra / len(score_notes)
        logs = out[:, _INDEX["tempo_log_ratio"]]
        finite = np.flatnonzero(np.isfinite(logs))
        if len(finite):
            out[finite, _INDEX["tempo_log_dev_abs"]] = np.abs(logs[finite] - logs[finite].mean())
            out[finite[1:], _INDEX["tempo_log_change_abs"]] = np.abs(np.diff(logs[finite]))
        return out

    def _timing(self, row: np.ndarray, j: int, chords: np.ndarray, ratio: float) -> None:
        if np.isfinite(ratio):
            row[_INDEX["tempo_log_ratio"]] = np.log(ratio)
        radius = self.encoder.fit_radius
        near = np.abs(self.anchor_position - j) <= radius
        s, q = self.anchor_score[near], self.anchor_played[near]
        deviating = [c for c in chords if c in self.anchor_set]
        if len(np.unique(s)) >= 2 and deviating:
            beta, alpha = np.polyfit(s, q, 1)
            times = self.alignment.score_chord_times[deviating]
            residual = np.array([self.chord_onset[c] for c in deviating]) - (alpha + beta * times)
            row[_INDEX["onset_deviation_ms"]] = 1000.0 * residual.mean()
            row[_INDEX["onset_deviation_abs_ms"]] = 1000.0 * np.abs(residual).mean()
        spreads, leads = [], []
        for c in chords:
            played = self.partner[self.alignment.score_chords[c]]
            played = played[played >= 0]
            if len(played) < 2:
                continue
            onsets = self.notes.onset[played]
            top = int(np.argmax(self.notes.pitch[played]))
            spreads.append(onsets.max() - onsets.min())
            leads.append(np.delete(onsets, top).mean() - onsets[top])
        if spreads:
            row[_INDEX["chord_async_ms"]] = 1000.0 * np.mean(spreads)
            row[_INDEX["melody_lead_ms"]] = 1000.0 * np.mean(leads)

    def melody_note(self, chord: int) -> int:
        """Performance index of the chord's melody note (its highest score note), -1 when that note was missed."""
        members = self.alignment.score_chords[chord]
        return int(self.partner[members[np.argmax(self.score.pitch[members])]])

    def _dynamics(self, row: np.ndarray, chords: np.ndarray, matched: np.ndarray) -> None:
        velocity = self.notes.velocity.astype(np.float64)
        melody = [m for m in (self.melody_note(c) for c in chords) if m >= 0]
        rest = np.setdiff1d(self.partner[matched], melody)
        if melody:
            row[_INDEX["velocity_melody"]] = velocity[melody].mean()
            row[_INDEX["velocity_melody_rel"]] = row[_INDEX["velocity_melody"]] - self.velocity_mean
        if len(rest):
            row[_INDEX["velocity_rest"]] = velocity[rest].mean()
            row[_INDEX["velocity_rest_rel"]] = row[_INDEX["velocity_rest"]] - self.velocity_mean
        row[_INDEX["velocity_abs_dev"]] = np.abs(velocity[self.partner[matched]] - self.velocity_mean).mean()

    def _articulation(self, row: np.ndarray, chords: np.ndarray, matched: np.ndarray, ratio: float) -> None:
        notes = self.notes
        if np.isfinite(ratio):
            performed = notes.offset[self.partner[matched]] - notes.onset[self.partner[matched]]
            notated = self.score.offset[matched] - self.score.onset[matched]
            usable = (performed > 0) & (notated > 0)
            if usable.any():
                row[_INDEX["articulation_log"]] = np.mean(np.log(performed[usable] / (ratio * notated[usable])))
        overlaps = []
        for c in chords:
            if c + 1 >= len(self.alignment.score_chords):
                continue
            first, second = self.melody_note(c), self.melody_note(c + 1)
            if first >= 0 and second >= 0 and notes.onset[second] > notes.onset[first]:
                overlaps.append((notes.offset[first] - notes.onset[second]) / (notes.onset[second] - notes.onset[first]))
        if overlaps:
            row[_INDEX["legato_overlap"]] = np.mean(overlaps)
