"""Labels computed from a performance MIDI, for corpora without human ratings (ASAP's same-music windows).

A window is the time span ``[start, end)`` of the performance, its notes are those with onset in it, and its beats
are the annotated beat times ``b_0 < ... < b_m`` of the performance from the window's first downbeat to the next
window's first downbeat (inclusive), paired one to one with the score's annotated beats ``s_0 < ... < s_m`` (the
same beats in the score MIDI). In the order of `DERIVED_LABELS`:

``tempo_bpm``
    beats per minute over the window: ``60 m / (b_m - b_0)`` (ASAP's beats: e.g. 2 per bar in 6/8).
``tempo_instability``
    spread of the inter-beat intervals around a smoothed tempo curve. With ``x_i = log((b_{i+1} - b_i) /
    (s_{i+1} - s_i))`` (the log of the performed against the notated duration of beat i, so notated tempo changes
    are not counted) and ``u_i = (s_i + s_{i+1}) / 2`` (the beat's centre in score time), the smoothed curve is the
    least-squares line ``a + c u`` through the ``x_i`` (a steady accelerando or ritardando is stable), and the label is
    the root mean square of the residuals ``x_i - a - c u_i``: 0 for a tempo that follows the score at a constant (or
    steadily changing) speed; 0.05 means beats about 5% off the smoothed tempo. NaN with fewer than 4 beats (a line
    through 2 intervals fits them exactly).
``velocity_mean``
    dynamic level: mean MIDI note-on velocity (1..127) of the window's notes.
``velocity_range``
    dynamic range: 90th minus 10th percentile of those velocities (numpy's linear interpolation).
``articulation``
    key overlap of consecutive notes of the top voice. Onsets less than `CHORD_SECONDS` after the previous onset
    join its chord; the top voice is the highest note of every chord. For consecutive top-voice notes i, i+1
    (onsets o, offsets f = key release, the sustain pedal ignored) the overlap ratio is
    ``(f_i - o_{i+1}) / (o_{i+1} - o_i)``: 0 when a key is released exactly as the next is struck (legato), > 0
    overlapping (legatissimo), -0.5 for notes held half their inter-onset interval (staccato), near -1 very short.
    The label is the median over the window's pairs (robust to a note held across a rest); NaN with no pair.
``pedal``
    share of ``[start, end)`` during which the sustain pedal (controller 64) is at or above `SUSTAIN_THRESHOLD` on
    any channel, the pedal's state at ``start`` carried in from the events before it.

Velocity and articulation are NaN for a window without notes. None of these is a rating: a ranking loss that uses
them must mask NaN and set its own per-label scale (their units differ: bpm, log ratio, velocity, ratio, share).
`RELATED_DIMENSIONS` names the PercePiano dimension each one speaks to and the sign that relates them.
"""

from __future__ import annotations

import numpy as np

from crescend_jax.data.midi_events import SUSTAIN_CONTROL, MidiPerformance

DERIVED_LABELS: tuple[str, ...] = (
    "tempo_bpm", "tempo_instability", "velocity_mean", "velocity_range", "articulation", "pedal")
# Bump when a formula or a constant below changes: stored derived labels of an older version are stale.
LABELS_VERSION = 1
CHORD_SECONDS = 0.03
SUSTAIN_THRESHOLD = 64
MIN_INSTABILITY_BEATS = 4

# label -> (PercePiano dimension, +1 when both grow together, -1 when one grows as the other falls). For evaluation
# (does an embedding rank performances by the label within a group?), never to fill the 19 rating dimensions.
RELATED_DIMENSIONS: dict[str, tuple[str, int]] = {
    "tempo_bpm": ("Music_Making_Fast_paced_Slow_paced", -1),
    "tempo_instability": ("Timing_Stable_Unstable", +1),
    "velocity_mean": ("Timbre_Soft_Loud", +1),
    "velocity_range": ("Dynamic_Little_dynamic_range_Large_dynamic_range", +1),
    "articulation": ("Articulation_Long_Short", -1),
    "pedal": ("Pedal_Sparse/dry_Saturated/wet", +1),
}


def tempo_bpm(beats: np.ndarray) -> float:
    """``60 m / (b_m - b_0)`` for beat times ``beats`` [m + 1] (seconds, increasing); NaN with fewer than 2 beats."""
    beats = np.asarray(beats, np.float64)
    if len(beats) < 2:
        return float("nan")
    return float(60.0 * (len(beats) - 1) / (beats[-1] - beats[0]))


def tempo_instability(beats: np.ndarray, score_beats: np.ndarray) -> float:
    """RMS of the log inter-beat-interval ratios (performed / notated) around their least-squares line over score
    time (see module doc). ``beats``, ``score_beats``: [m + 1] increasing seconds; NaN when m + 1 < 4."""
    beats, score_beats = np.asarray(beats, np.float64), np.asarray(score_beats, np.float64)
    if beats.shape != score_beats.shape:
        raise ValueError(f"{len(beats)} performed beats cannot pair with {len(score_beats)} score beats")
    if len(beats) < MIN_INSTABILITY_BEATS:
        return float("nan")
    x = np.log(np.diff(beats) / np.diff(score_beats))
    u = (score_beats[1:] + score_beats[:-1]) / 2
    design = np.stack([np.ones_like(u), u - u.mean()], axis=1)
    coefficients, *_ = np.linalg.lstsq(design, x, rcond=None)
    residuals = x - design @ coefficients
    return float(np.sqrt(np.mean(residuals**2)))


def velocity_mean(velocities: np.ndarray) -> float:
    """Mean velocity; NaN for no notes."""
    velocities = np.asarray(velocities, np.float64)
    return float(velocities.mean()) if len(velocities) else float("nan")


def velocity_range(velocities: np.ndarray) -> float:
    """90th minus 10th percentile of the velocities; NaN for no notes."""
    velocities = np.asarray(velocities, np.float64)
    if not len(velocities):
        return float("nan")
    high, low = np.percentile(velocities, [90, 10])
    return float(high - low)


def top_voice(onsets: np.ndarray, pitches: np.ndarray, chord_seconds: float = CHORD_SECONDS) -> np.ndarray:
    """int64 [k]: indices of the top-voice notes (the highest note of each chord, see module doc), in time order."""
    onsets, pitches = np.asarray(onsets, np.float64), np.asarray(pitches, np.int64)
    order = np.argsort(onsets, kind="stable")
    if not len(order):
        return order.astype(np.int64)
    chord = np.cumsum(np.concatenate([[True], np.diff(onsets[order]) >= chord_seconds]))
    by_chord_then_pitch = order[np.lexsort((-pitches[order], chord))]
    firsts = np.concatenate([[True], np.diff(np.sort(chord)) > 0])
    return by_chord_then_pitch[firsts].astype(np.int64)


def articulation(onsets: np.ndarray, offsets: np.ndarray, pitches: np.ndarray,
                 chord_seconds: float = CHORD_SECONDS) -> float:
    """Median key-overlap ratio ``(f_i - o_{i+1}) / (o_{i+1} - o_i)`` of consecutive top-voice notes; NaN without
    two top-voice notes."""
    top = top_voice(onsets, pitches, chord_seconds)
    if len(top) < 2:
        return float("nan")
    onsets, offsets = np.asarray(onsets, np.float64)[top], np.asarray(offsets, np.float64)[top]
    ratios = (offsets[:-1] - onsets[1:]) / (onsets[1:] - onsets[:-1])
    return float(np.median(ratios))


def pedal_share(times: np.ndarray, channels: np.ndarray, values: np.ndarray, start: float, end: float,
                threshold: int = SUSTAIN_THRESHOLD) -> float:
    """Share of ``[start, end)`` with the sustain pedal down (value >= ``threshold``) on any channel.

    ``times``, ``channels``, ``values``: the sustain controller's events [c] in file order; each channel's pedal is
    up until its first event.
    """
    if not end > start:
        raise ValueError(f"pedal_share needs start < end, got [{start}, {end})")
    times, channels, values = np.asarray(times, np.float64), np.asarray(channels), np.asarray(values)
    before = times < start
    state: dict[int, bool] = {}
    for channel in np.unique(channels[before]):  # each channel's last value before the window
        state[int(channel)] = bool(values[before & (channels == channel)][-1] >= threshold)
    down_since: float | None = start if any(state.values()) else None
    total = 0.0
    inside = ~before & (times < end)
    for time, channel, value in zip(times[inside], channels[inside], values[inside]):
        state[int(channel)] = bool(value >= threshold)
        now_down = any(state.values())
        if now_down and down_since is None:
            down_since = float(time)
        elif not now_down and down_since is not None:
            total += float(time) - down_since
            down_since = None
    if down_since is not None:
        total += end - down_since
    return total / (end - start)


def window_labels(performance: MidiPerformance, start: float, end: float, beats: np.ndarray | None,
                  score_beats: np.ndarray | None) -> np.ndarray:
    """float32 [len(DERIVED_LABELS)]: the labels of ``[start, end)`` of ``performance`` (see module doc).

    ``beats``/``score_beats``: the window's performed and notated beat times [m + 1]; None (tempo labels NaN) when
    they cannot be paired.
    """
    inside = (performance.onsets >= start) & (performance.onsets < end)
    velocities = performance.velocities[inside]
    times, channels, values = performance.controller(SUSTAIN_CONTROL)
    paired = beats is not None and score_beats is not None
    return np.array([
        tempo_bpm(beats) if beats is not None else np.nan,
        tempo_instability(beats, score_beats) if paired else np.nan,
        velocity_mean(velocities),
        velocity_range(velocities),
        articulation(performance.onsets[inside], performance.offsets[inside], performance.pitches[inside]),
        pedal_share(times, channels, values, start, end),
    ], np.float32)
