"""Simulated pianists with known latent factors: score segment -> performance MIDI -> noiseless labels -> raters.

The chain, every step documented and deterministic for a given ``np.random.Generator``:

1. `PerformerFactors`: one standard-normal z-score per latent quality (timing instability, tempo choice, dynamic
   range, loudness, articulation, pedal amount, pedal blur, skill).
2. `render_performance`: the factors, the piece's traits and the segment's notes give the rendition parameters
   (tempo, onset jitter, tempo drift, velocities, duration ratio, wrong notes, CC64 pedalling) and a MIDI file.
3. `Quantities`: what a listener hears, in z-units, computed from the same parameters (e.g. ``timing`` is the log
   onset jitter, which grows with the segment's difficulty for a weak player; ``pace`` is onsets per second).
4. `label_truth`: ``truth7 = 4 + 3 tanh((LABEL_WEIGHTS @ q + piece_offset) / 3)`` on the 1..7 rating scale, then /7.
5. `rate`: R raters with a fixed bias per dimension, rating noise and missing ratings give integer 1..7 ratings.
"""

from __future__ import annotations

import dataclasses
import io

import mido
import numpy as np

from crescend_jax.data.dimensions import DIMENSIONS, NUM_DIMENSIONS

FACTOR_NAMES: tuple[str, ...] = (
    "timing", "tempo", "dynamic_range", "loudness", "articulation", "pedal", "pedal_blur", "skill")
QUANTITY_NAMES: tuple[str, ...] = (
    "timing", "pace", "loudness", "dynamic_range", "articulation", "pedal", "pedal_blur", "skill", "darkness")

TICKS_PER_BEAT = 480
SECONDS_TO_TICKS = 2 * TICKS_PER_BEAT  # the file's tempo is 120 bpm: one beat is 0.5 s
BASE_JITTER_S = 0.010  # onset jitter sd of an average player on an easy segment
DIFFICULTY_GAIN = 1.5  # how much a hard segment multiplies a weak player's jitter
REFERENCE_ONSET_RATE = 2.5  # onsets per second heard as average pace (demo segments at natural tempo: median 2.3)
DIFFICULTY_ONSET_RATE = 4.0  # onsets per second at which a segment is of medium difficulty
TIMING_REFERENCE_S = 0.015  # jitter heard as average timing (an average player on the demo segments: median 14 ms)
QUANTITY_LIMIT = 3.0  # quantities are clipped to [-3, 3] before the label map

# Label map: truth on the 1..7 scale = 4 + 3 tanh((LABEL_WEIGHTS @ q + piece_offset) / 3), q = `Quantities`.
# Columns follow QUANTITY_NAMES; the sign says which end of each PercePiano dimension a quantity pushes to
# (e.g. Timing_Stable_Unstable rises with jitter, Music_Making_Fast_paced_Slow_paced falls with pace).
_W = {  # dimension: {quantity: weight}
    "Timing_Stable_Unstable": {"timing": 1.0},
    "Articulation_Long_Short": {"articulation": 1.0},
    "Articulation_Soft_cushioned_Hard_solid": {"loudness": 0.5, "articulation": 0.5},
    "Pedal_Sparse/dry_Saturated/wet": {"pedal": 1.0},
    "Pedal_Clean_Blurred": {"pedal_blur": 0.7, "pedal": 0.3},
    "Timbre_Even_Colorful": {"dynamic_range": 0.6, "skill": 0.3},
    "Timbre_Shallow_Rich": {"pedal": 0.4, "loudness": 0.3, "skill": 0.3},
    "Timbre_Bright_Dark": {"darkness": 0.7, "loudness": -0.3, "articulation": -0.3},
    "Timbre_Soft_Loud": {"loudness": 1.0},
    "Dynamic_Sophisticated/mellow_Raw/crude": {"loudness": 0.5, "skill": -0.5, "articulation": 0.3},
    "Dynamic_Little_dynamic_range_Large_dynamic_range": {"dynamic_range": 1.0},
    "Music_Making_Fast_paced_Slow_paced": {"pace": -1.0},
    "Music_Making_Flat_Spacious": {"dynamic_range": 0.5, "pace": -0.4, "pedal": 0.3},
    "Music_Making_Disproportioned_Balanced": {"skill": 0.7, "timing": -0.4},
    "Music_Making_Pure_Dramatic/expressive": {"dynamic_range": 0.6, "loudness": 0.3, "timing": 0.2},
    "Emotion_&_Mood_Optimistic/pleasant_Dark": {"darkness": 0.7, "pace": -0.3},
    "Emotion_&_Mood_Low_Energy_High_Energy": {"pace": 0.5, "loudness": 0.5, "articulation": 0.3},
    "Emotion_&_Mood_Honest_Imaginative": {"dynamic_range": 0.5, "timing": 0.2, "skill": 0.3},
    "Interpretation_Unsatisfactory/doubtful_Convincing": {"skill": 0.8, "timing": -0.4, "dynamic_range": 0.2},
}
assert tuple(_W) == DIMENSIONS
LABEL_WEIGHTS = np.array(
    [[row.get(q, 0.0) for q in QUANTITY_NAMES] for row in _W.values()], dtype=np.float64)  # [19, 9]


@dataclasses.dataclass(frozen=True)
class PerformerFactors:
    """Latent z-scores of one performer (0 = average; each ~N(0, 1) across performers).

    timing: onset jitter and tempo drift (higher = less stable). tempo: tempo choice (higher = faster).
    dynamic_range: spread of velocities. loudness: mean velocity. articulation: higher = shorter notes.
    pedal: share of pedalled spans. pedal_blur: share of missed pedal changes. skill: fewer wrong notes, even
    velocities, and timing that suffers less on hard segments.
    """

    timing: float = 0.0
    tempo: float = 0.0
    dynamic_range: float = 0.0
    loudness: float = 0.0
    articulation: float = 0.0
    pedal: float = 0.0
    pedal_blur: float = 0.0
    skill: float = 0.0

    def as_array(self) -> np.ndarray:
        """float64 [8] in FACTOR_NAMES order."""
        return np.array([getattr(self, n) for n in FACTOR_NAMES], dtype=np.float64)

    @staticmethod
    def from_array(values: np.ndarray) -> "PerformerFactors":
        return PerformerFactors(**{n: float(v) for n, v in zip(FACTOR_NAMES, values)})


@dataclasses.dataclass(frozen=True)
class PieceTraits:
    """What a piece brings to every performance of it.

    tempo_bpm: natural tempo in quarter notes per minute. loudness: natural loudness, -1 (soft) .. 1 (loud).
    minor: whether the piece is in a minor key (it sounds darker).
    """

    tempo_bpm: float
    loudness: float
    minor: bool


@dataclasses.dataclass(frozen=True)
class SegmentScore:
    """The notes of one segment, times in quarter notes from the segment start.

    onsets, durations: float64 [n]; pitches: int [n] MIDI numbers; bar_starts: float64 [bars + 1], the first 0 and
    the last the segment length.
    """

    onsets: np.ndarray
    durations: np.ndarray
    pitches: np.ndarray
    bar_starts: np.ndarray

    @property
    def length(self) -> float:
        return float(self.bar_starts[-1])

    def onset_rate(self, tempo_bpm: float) -> float:
        """Distinct onsets per second when played at ``tempo_bpm`` quarters per minute."""
        return len(np.unique(np.round(self.onsets, 4))) / (self.length * 60.0 / tempo_bpm)

    def difficulty(self, tempo_bpm: float) -> float:
        """In (0, 1): sigmoid(2 ln(onset_rate / 4) + 0.3 (notes per onset - 2.5)); faster and thicker is harder."""
        notes_per_onset = len(self.onsets) / max(1, len(np.unique(np.round(self.onsets, 4))))
        x = 2.0 * np.log(self.onset_rate(tempo_bpm) / DIFFICULTY_ONSET_RATE) + 0.3 * (notes_per_onset - 2.5)
        return float(1.0 / (1.0 + np.exp(-x)))

    def darkness(self, minor: bool) -> float:
        """0.8 (minor) or -0.8 (major), plus (64 - mean pitch) / 8: low registers and minor keys sound darker."""
        return (0.8 if minor else -0.8) + (64.0 - float(np.mean(self.pitches))) / 8.0


@dataclasses.dataclass(frozen=True)
class Quantities:
    """What listeners hear, in z-units (QUANTITY_NAMES order), each a function of the rendition parameters.

    timing = ln(jitter / 15 ms) / 0.6; pace = ln(onsets per second / 2.5) / 0.4; loudness = (mean velocity - 64) / 10;
    dynamic_range = ln(velocity spread / 10) / 0.4; articulation = -ln(duration ratio / 0.9) / 0.3;
    pedal = logit(pedalled share) / 1.2; pedal_blur = logit(missed-change share) + 1; skill = the skill factor;
    darkness = `SegmentScore.darkness`. Values are clipped to [-3, 3] by `as_array`.
    """

    timing: float
    pace: float
    loudness: float
    dynamic_range: float
    articulation: float
    pedal: float
    pedal_blur: float
    skill: float
    darkness: float

    def as_array(self) -> np.ndarray:
        """float64 [9] in QUANTITY_NAMES order, clipped to [-3, 3]."""
        values = np.array([getattr(self, n) for n in QUANTITY_NAMES], dtype=np.float64)
        return np.clip(values, -QUANTITY_LIMIT, QUANTITY_LIMIT)


@dataclasses.dataclass(frozen=True)
class RenditionParameters:
    """The concrete playing instructions `render_performance` follows.

    tempo_bpm: quarters per minute; jitter_s: onset noise sd (s); drift_sd: sd of the per-quarter log-tempo
    innovation; duration_ratio: sounding / notated duration; velocity_mean, velocity_spread: MIDI velocity level and
    sd of the expressive shape; unevenness: sd of velocity noise; error_rate: per-note chance of a wrong or dropped
    note; pedal_share: chance a pedal span is pedalled; pedal_miss: chance a pedal change is skipped (blur);
    pedal_depth: CC64 value when down.
    """

    tempo_bpm: float
    jitter_s: float
    drift_sd: float
    duration_ratio: float
    velocity_mean: float
    velocity_spread: float
    unevenness: float
    error_rate: float
    pedal_share: float
    pedal_miss: float
    pedal_depth: int


def _sigmoid(x: float) -> float:
    return float(1.0 / (1.0 + np.exp(-x)))


def rendition_parameters(score: SegmentScore, piece: PieceTraits, f: PerformerFactors) -> RenditionParameters:
    """Factors + piece + segment -> playing parameters (the formulas are the code: one line each)."""
    tempo_bpm = piece.tempo_bpm * float(np.exp(0.15 * f.tempo))
    difficulty = score.difficulty(tempo_bpm)
    jitter_s = BASE_JITTER_S * float(np.exp(0.6 * f.timing)) * (1.0 + DIFFICULTY_GAIN * difficulty * float(np.exp(-0.7 * f.skill)))
    return RenditionParameters(
        tempo_bpm=tempo_bpm,
        jitter_s=jitter_s,
        drift_sd=0.02 * jitter_s / BASE_JITTER_S,
        duration_ratio=0.9 * float(np.exp(-0.3 * f.articulation)),
        velocity_mean=64.0 + 5.0 * piece.loudness + 10.0 * f.loudness,
        velocity_spread=10.0 * float(np.exp(0.4 * f.dynamic_range)),
        unevenness=3.0 + 5.0 * _sigmoid(-f.skill),
        error_rate=0.04 * _sigmoid(-1.5 * f.skill - 1.0) * (1.0 + difficulty),
        pedal_share=_sigmoid(1.2 * f.pedal),
        pedal_miss=_sigmoid(f.pedal_blur - 0.5 * f.skill - 1.0),
        pedal_depth=int(np.clip(round(96 + 31 * np.tanh(f.pedal)), 64, 127)),
    )


def deadpan_parameters(piece: PieceTraits) -> RenditionParameters:
    """The "Score" rendition: notated timing at the natural tempo, velocity 64, notated durations, no pedal."""
    return RenditionParameters(
        tempo_bpm=piece.tempo_bpm, jitter_s=0.0, drift_sd=0.0, duration_ratio=1.0, velocity_mean=64.0,
        velocity_spread=0.0, unevenness=0.0, error_rate=0.0, pedal_share=0.0, pedal_miss=0.0, pedal_depth=127)


def _log_or_floor(x: float) -> float:
    return float(np.log(x)) if x > 0 else -np.inf


def _logit(p: float) -> float:
    return float(np.log(p) - np.log1p(-p)) if 0 < p < 1 else (-np.inf if p <= 0 else np.inf)


def heard_quantities(score: SegmentScore, piece: PieceTraits, p: RenditionParameters, skill: float) -> Quantities:
    """Rendition parameters -> `Quantities` (see its docstring; zero jitter/spread/pedal clip to -3)."""
    return Quantities(
        timing=_log_or_floor(p.jitter_s / TIMING_REFERENCE_S) / 0.6,
        pace=float(np.log(score.onset_rate(p.tempo_bpm) / REFERENCE_ONSET_RATE)) / 0.4,
        loudness=(p.velocity_mean - 64.0) / 10.0,
        dynamic_range=_log_or_floor(p.velocity_spread / 10.0) / 0.4,
        articulation=-float(np.log(p.duration_ratio / 0.9)) / 0.3,
        pedal=_logit(p.pedal_share) / 1.2,
        pedal_blur=_logit(p.pedal_miss) + 1.0,
        skill=skill,
        darkness=score.darkness(piece.minor),
    )


DEADPAN_SKILL = -1.0  # a mechanical rendition is heard as musically unskilled (there are no errors to measure)


def label_truth(quantities: Quantities, piece_offset: np.ndarray) -> np.ndarray:
    """float64 [19] in [1/7, 1]: (4 + 3 tanh((LABEL_WEIGHTS [19, 9] @ q [9] + piece_offset [19]) / 3)) / 7."""
    linear = LABEL_WEIGHTS @ quantities.as_array() + piece_offset
    return (4.0 + 3.0 * np.tanh(linear / 3.0)) / 7.0


@dataclasses.dataclass(frozen=True)
class Performance:
    """One rendition: the MIDI bytes, the parameters it was played with, what is heard and the noiseless labels."""

    midi_bytes: bytes
    parameters: RenditionParameters
    quantities: Quantities
    truth: np.ndarray  # float64 [19] on the /7 scale


def _seconds_of(score: SegmentScore, p: RenditionParameters, rng: np.random.Generator):
    """A function quarter-note position -> seconds, with an AR(1) log-tempo drift per quarter note."""
    num_quarters = int(np.ceil(score.length)) + 2
    log_tempo = np.zeros(num_quarters)
    innovations = rng.standard_normal(num_quarters) * p.drift_sd
    for k in range(1, num_quarters):
        log_tempo[k] = 0.8 * log_tempo[k - 1] + innovations[k]
    seconds_per_quarter = 60.0 / (p.tempo_bpm * np.exp(log_tempo))
    grid_seconds = np.concatenate([[0.0], np.cumsum(seconds_per_quarter)])
    grid = np.arange(num_quarters + 1, dtype=np.float64)
    return lambda q: np.interp(q, grid, grid_seconds)


def _velocity_shape(score: SegmentScore, onsets: np.ndarray, pitches: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """Unit-sd expressive shape [n]: phrase arch + random crescendo/diminuendo, top-voice and downbeat emphasis."""
    x = onsets / max(score.length, 1e-9)
    arch = rng.uniform(0.5, 1.5) * np.sin(np.pi * x) + rng.uniform(-1.0, 1.0) * (x - 0.5)
    rounded = np.round(onsets, 4)
    chord = np.unique(rounded, return_inverse=True)[1]
    highest = np.full(chord.max() + 1, np.iinfo(np.int64).min)
    np.maximum.at(highest, chord, pitches)
    top = pitches == highest[chord]
    downbeat = np.isin(rounded, np.round(score.bar_starts, 4))
    shape = arch + 0.8 * top + 0.5 * downbeat + 0.3 * (pitches - 60) / 12.0
    shape = shape - shape.mean()
    sd = shape.std()
    return shape / sd if sd > 0 else shape


def _pedal_events(score: SegmentScore, p: RenditionParameters, seconds, rng: np.random.Generator) -> list[tuple[float, int]]:
    """(time s, CC64 value) events: spans at bars and half bars (bars of 4+ quarters), clean or blurred changes."""
    points = []
    for start, end in zip(score.bar_starts[:-1], score.bar_starts[1:]):
        points.append(start)
        if end - start >= 4.0:
            points.append(start + (end - start) / 2.0)
    points.append(score.bar_starts[-1])
    used = rng.random(len(points) - 1) < p.pedal_share
    missed = rng.random(len(points) - 1) < p.pedal_miss
    events, down = [], False
    for i, pedalled in enumerate(used):
        change_at = float(seconds(points[i]))
        if down and not (pedalled and missed[i]):  # a clean change lifts at the new harmony; a missed one holds on
            events.append((change_at, 0))
            down = False
        if pedalled and not down:
            events.append((change_at + rng.uniform(0.06, 0.14), p.pedal_depth))  # legato pedal: press after the onset
            down = True
    if down:
        events.append((float(seconds(points[-1])) + 0.2, 0))
    return events


def _midi_bytes(notes: list[tuple[float, float, int, int]], pedal: list[tuple[float, int]]) -> bytes:
    """A type-0 MIDI file (480 ticks per beat, 120 bpm, piano) of (onset s, offset s, pitch, velocity) notes."""
    to_ticks = lambda t: int(round(max(t, 0.0) * SECONDS_TO_TICKS))
    events = []  # (tick, order, type, number, value); at equal ticks: note-offs, then pedal, then note-ons
    by_pitch: dict[int, list[tuple[int, int, int]]] = {}
    for onset, offset, pitch, velocity in notes:
        by_pitch.setdefault(pitch, []).append((to_ticks(onset), max(to_ticks(offset), to_ticks(onset) + 1), velocity))
    for pitch, items in by_pitch.items():
        items.sort()
        for k, (on, off, velocity) in enumerate(items):
            if k + 1 < len(items):  # a repeated key must be released before it is struck again
                off = min(off, max(on + 1, items[k + 1][0]))
            events.append((on, 2, "note_on", pitch, velocity))
            events.append((off, 0, "note_off", pitch, 0))
    for time_s, value in pedal:
        events.append((to_ticks(time_s), 1, "control_change", 64, value))
    events.sort()
    track = mido.MidiTrack([mido.MetaMessage("set_tempo", tempo=500000, time=0), mido.Message("program_change", program=0, time=0)])
    now = 0
    for tick, _, kind, number, value in events:
        if kind == "control_change":
            track.append(mido.Message(kind, control=number, value=value, time=tick - now))
        else:
            track.append(mido.Message(kind, note=number, velocity=value, time=tick - now))
        now = tick
    track.append(mido.MetaMessage("end_of_track", time=TICKS_PER_BEAT))
    buffer = io.BytesIO()
    mido.MidiFile(type=0, ticks_per_beat=TICKS_PER_BEAT, tracks=[track]).save(file=buffer)
    return buffer.getvalue()


def render_performance(
    score: SegmentScore,
    piece: PieceTraits,
    factors: PerformerFactors | None,
    piece_offset: np.ndarray,
    rng: np.random.Generator,
) -> Performance:
    """Plays ``score`` as ``factors`` (None = the deadpan "Score" rendition) and returns MIDI, quantities, truth.

    Onsets follow the drifting tempo plus N(0, jitter) per chord and N(0, jitter/4) per note; a wrong note is moved
    by +-1 or +-2 semitones or dropped; velocities are mean + spread * shape + N(0, unevenness), clipped to 1..127.
    """
    deadpan = factors is None
    p = deadpan_parameters(piece) if deadpan else rendition_parameters(score, piece, factors)
    seconds = _seconds_of(score, p, rng)
    onsets_q, durations_q, pitches = score.onsets, score.durations, score.pitches.astype(np.int64)
    rounded = np.round(onsets_q, 4)
    chord_ids = np.unique(rounded, return_inverse=True)[1]
    chord_jitter = rng.standard_normal(chord_ids.max() + 1) * p.jitter_s
    start_s = seconds(onsets_q) + chord_jitter[chord_ids] + rng.standard_normal(len(onsets_q)) * p.jitter_s / 4
    notated_s = seconds(onsets_q + durations_q) - seconds(onsets_q)
    end_s = start_s + np.maximum(notated_s * p.duration_ratio, 0.03)
    shape = _velocity_shape(score, onsets_q, pitches, rng)
    velocities = p.velocity_mean + p.velocity_spread * shape + rng.standard_normal(len(pitches)) * p.unevenness
    velocities = np.clip(np.round(velocities), 1, 127).astype(np.int64)
    errors = rng.random(len(pitches)) < p.error_rate
    slips = rng.choice(np.array([-2, -1, 1, 2, 0]), size=len(pitches))  # 0 = the note is dropped
    lead_in = max(0.0, -float(start_s.min())) if len(start_s) else 0.0
    notes = []
    for i in range(len(pitches)):
        pitch = int(pitches[i])
        if errors[i]:
            if slips[i] == 0:
                continue
            pitch = int(np.clip(pitch + slips[i], 21, 108))
        notes.append((start_s[i] + lead_in, end_s[i] + lead_in, pitch, int(velocities[i])))
    pedal = [] if deadpan else [(t + lead_in, v) for t, v in _pedal_events(score, p, seconds, rng)]
    skill = DEADPAN_SKILL if deadpan else factors.skill
    quantities = heard_quantities(score, piece, p, skill)
    return Performance(_midi_bytes(notes, pedal), p, quantities, label_truth(quantities, piece_offset))


def rate(truth: np.ndarray, rater_bias: np.ndarray, noise_sd: float, missing_rate: float, rng: np.random.Generator) -> np.ndarray:
    """float32 [R, 19] ratings on the /7 scale: clip(round(7 truth + bias_r + N(0, noise_sd)), 1, 7) / 7.

    truth: [19] on the /7 scale; rater_bias: [R, 19] on the 1..7 scale. A rater misses the whole segment with
    probability ``missing_rate`` (a NaN row); at least one rater always rates.
    """
    num_raters = rater_bias.shape[0]
    scores = 7.0 * truth[None, :] + rater_bias + rng.standard_normal((num_raters, NUM_DIMENSIONS)) * noise_sd
    ratings = np.clip(np.round(scores), 1, 7) / 7.0
    missing = rng.random(num_raters) < missing_rate
    if missing.all():
        missing[rng.integers(num_raters)] = False
    ratings[missing] = np.nan
    return ratings.astype(np.float32)
