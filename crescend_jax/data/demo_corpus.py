"""The built-in demo corpus: public-domain scores from music21, played by simulated performers with known factors.

``build_demo_corpus(config.data)`` needs no download. Each piece of `PIECES` is parsed once (note lists cached as JSON
under ``cache_dir/scores``, keyed by piece and music21 version), cut into ``segments_per_piece`` windows of whole bars,
and played by ``num_performers`` simulated pianists (`crescend_jax.data.performers`) plus, optionally, a deadpan
"Score" rendition. Labels are known functions of the performer factors and the piece, plus a random per-composition
offset on every dimension (the piece confound a model can exploit without hearing the performer). Raters add bias,
noise and missing ratings. Each segment keeps the factors its performance was played with (`Segment.factors`: the
performer's, jittered by ``performance_sd``; NaN for the Score rendition), the ground truth for probes. Everything is
drawn from generators seeded by ``(seed, name)``, so the same seed gives byte-identical MIDI files and identical
labels, whatever the build order.

Naming follows PercePiano: composition ``Joplin_MapleLeafRag``, piece ``Joplin_MapleLeafRag_6bars``,
group ``<piece>_<segment>``, key ``<piece>_<performer>_<segment>``, performers ``p00``, ``p01``, ... and ``Score``.
"""

from __future__ import annotations

import dataclasses
import hashlib
import importlib.metadata
import json
import os
import tempfile
import zlib
from pathlib import Path

import ml_collections
import numpy as np

from crescend_jax.data import performers as perf
from crescend_jax.data.dimensions import NUM_DIMENSIONS
from crescend_jax.data.segments import DEADPAN_PERFORMERS, Corpus, Problem, Segment
from crescend_jax.errors import ConfigError

RENDER_VERSION = 1  # bump when the performer model changes what is written
# ``config.data`` fields that do not change a single segment or label: where the corpus is cached and how it is split
# into folds. Every other field (seed, sizes, noise levels, ... and any field added later) is part of the corpus's
# identity, so changing it builds a new store instead of reusing one built with other settings.
NON_CONTENT_FIELDS = ("cache_dir", "num_folds", "test_compositions", "fold_seed", "split_level", "exclude_compositions")


@dataclasses.dataclass(frozen=True)
class DemoPiece:
    """A music21 corpus work: composition name, ``music21.corpus.parse`` path, natural tempo (quarters per minute)
    and natural loudness (-1 soft .. 1 loud). Mode and register are read from the score."""

    composition: str
    corpus_path: str
    tempo_bpm: float
    loudness: float


# Ordered so that every prefix mixes textures (chorales, keyboard works, songs, string quartets played on the piano).
PIECES: tuple[DemoPiece, ...] = (
    DemoPiece("Bach_Chorale_BWV66.6", "bach/bwv66.6", 72, 0.0),
    DemoPiece("Joplin_MapleLeafRag", "joplin/maple_leaf_rag", 100, 0.6),
    DemoPiece("Schoenberg_Op19_No6", "schoenberg/opus19/movement6", 40, -1.0),
    DemoPiece("Mozart_K545_mv1", "mozart/k545/movement1_exposition", 126, 0.2),
    DemoPiece("Bach_WTC1_Prelude_BWV846", "bach/bwv846", 66, -0.2),
    DemoPiece("CSchumann_Polonaise_Op1_No1", "schumann_clara/polonaise_op1n1", 104, 0.6),
    DemoPiece("Schubert_Lindenbaum", "schubert/Lindenbaum", 80, -0.3),
    DemoPiece("Mozart_K80_mv1", "mozart/k80/movement1", 58, -0.3),
    DemoPiece("Chopin_Mazurka_Op6_No2", "chopin/mazurka06-2", 138, 0.1),
    DemoPiece("Bach_Chorale_BWV269", "bach/bwv269", 84, 0.2),
    DemoPiece("CPEBach_H186", "cpebach/h186", 84, 0.3),
    DemoPiece("Beach_PrayerOfATiredChild", "beach/prayer_of_a_tired_child", 58, -0.7),
    DemoPiece("Haydn_Op74_No1_mv3", "haydn/opus74no1/movement3", 138, 0.5),
    DemoPiece("RSchumann_Dichterliebe_No2", "schumann_robert/dichterliebe_no2", 60, -0.5),
    DemoPiece("Schoenberg_Op19_No2", "schoenberg/opus19/movement2", 52, -0.6),
    DemoPiece("CSchumann_Polonaise_Op1_No2", "schumann_clara/polonaise_op1n2", 100, 0.4),
    DemoPiece("Handel_Rinaldo_LasciaChioPianga", "handel/rinaldo/Lascia_chio_pianga", 60, -0.4),
    DemoPiece("Beethoven_Op18_No1_mv2", "beethoven/opus18no1/movement2", 44, -0.4),
    DemoPiece("Bach_Chorale_BWV295", "bach/bwv295", 80, 0.0),
    DemoPiece("Mozart_K155_mv2", "mozart/k155/movement2", 72, -0.2),
    DemoPiece("Johnson_LiftEveryVoice", "johnson_j_r/lift_every_voice", 84, 0.5),
    DemoPiece("CSchumann_Polonaise_Op1_No3", "schumann_clara/polonaise_op1n3", 108, 0.5),
    DemoPiece("Corelli_Op3_No1_Grave", "corelli/opus3no1/1grave", 56, 0.0),
    DemoPiece("Haydn_Op1_No1_mv1", "haydn/opus1no1/movement1", 112, 0.3),
    DemoPiece("Bach_Chorale_BWV350", "bach/bwv350", 72, 0.1),
    DemoPiece("Liliuokalani_AlohaOe", "liliuokalani/aloha_oe", 76, -0.3),
    DemoPiece("Beethoven_Op18_No1_mv3", "beethoven/opus18no1/movement3", 240, 0.8),
    DemoPiece("Mozart_K156_mv2", "mozart/k156/movement2", 56, -0.5),
    DemoPiece("CSchumann_Polonaise_Op1_No4", "schumann_clara/polonaise_op1n4", 96, 0.3),
    DemoPiece("Bach_Chorale_BWV390", "bach/bwv390", 84, 0.0),
    DemoPiece("Monteverdi_Madrigal_3_1", "monteverdi/madrigal.3.1", 96, 0.1),
    DemoPiece("Mozart_K80_mv4", "mozart/k80/movement4", 150, 0.5),
    DemoPiece("Haydn_Op1_No1_mv3", "haydn/opus1no1/movement3", 54, -0.3),
    DemoPiece("CSchumann_PianoTrio_Op17_mv3", "schumann_clara/opus17/movement3", 96, 0.2),
    DemoPiece("Bach_Chorale_BWV403", "bach/bwv403", 80, -0.1),
    DemoPiece("Haydn_Op74_No1_mv1", "haydn/opus74no1/movement1", 126, 0.6),
)


class DemoCorpusError(ConfigError):
    """A demo data config that cannot be built."""


def default_demo_data_config() -> ml_collections.ConfigDict:
    """The ``config.data`` section of the demo.

    seed: every random draw (performers, piece offsets, renditions, raters) derives from it.
    num_pieces: the first num_pieces compositions of `PIECES` (at most len(PIECES)).
    segments_per_piece: same-music groups per composition (windows spread over the piece).
    bars_per_segment: bars per window; 0 = per piece, the bar count whose duration at the natural tempo is closest
      to segment_seconds (PercePiano also mixes 8- and 16-bar pieces).
    num_performers: simulated performers ``p00``.. (every one plays every segment); include_deadpan adds a
      ``Score`` rendition (notated timing, flat velocity, no pedal) to every group.
    performance_sd: sd of a performer's factor z-scores from one performance to the next.
    piece_offset_sd: sd (1..7 scale) of the per-composition offset on every dimension: the piece confound.
    num_raters, rater_bias_sd, rater_noise_sd (1..7 scale), missing_rate (chance a rater skips a performance).
    cache_dir: parsed scores and MIDI files. num_folds, test_compositions, fold_seed: as PercePiano's data config.
    """
    config = ml_collections.ConfigDict()
    config.seed = 0
    config.num_pieces = 36
    config.segments_per_piece = 2
    config.bars_per_segment = 0
    config.segment_seconds = 7.0
    config.num_performers = 8
    config.include_deadpan = True
    config.performance_sd = 0.25
    config.piece_offset_sd = 0.5
    config.num_raters = 8
    config.rater_bias_sd = 0.5
    config.rater_noise_sd = 1.2
    config.missing_rate = 0.15
    config.cache_dir = "cache/demo"
    config.num_folds = 0
    config.test_compositions = ()
    config.fold_seed = 0
    config.split_level = "composition"  # or "work": the compositions of one work stay together
    config.exclude_compositions = ()  # compositions (or works) left out of the run entirely (nested selection)
    return config


@dataclasses.dataclass(frozen=True)
class ParsedScore:
    """A whole piece as flat arrays, times in quarter notes from the start of the first measure.

    onsets, durations: float64 [n]; pitches: int64 [n] (sounding MIDI pitch); measure_starts: float64 [M + 1]
    (the last entry is the end of the last measure); minor: whether music21's key analysis says minor.
    """

    onsets: np.ndarray
    durations: np.ndarray
    pitches: np.ndarray
    measure_starts: np.ndarray
    minor: bool


def _music21_version() -> str:
    import music21

    return music21.__version__


def _atomic_write(path: Path, data: bytes) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        with os.fdopen(fd, "wb") as handle:
            handle.write(data)
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def _parse_with_music21(corpus_path: str) -> ParsedScore:
    from music21 import corpus, stream

    score = corpus.parse(corpus_path).toSoundingPitch()
    parts = list(score.parts) or [score]
    measures = list(parts[0].getElementsByClass(stream.Measure))
    if not measures:
        raise ValueError("the score has no measures")
    starts = [float(m.offset) for m in measures]
    starts.append(starts[-1] + float(measures[-1].duration.quarterLength))
    onsets, durations, pitches = [], [], []
    for part in parts:
        for element in part.stripTies().flatten().notes:
            length = float(element.quarterLength)
            if length <= 0:  # grace notes carry no notated time
                continue
            for pitch in (element.pitches if hasattr(element, "pitches") else [element.pitch]):
                onsets.append(float(element.offset))
                durations.append(length)
                pitches.append(int(pitch.midi))
    if not onsets:
        raise ValueError("the score has no pitched notes")
    order = np.lexsort((pitches, onsets))
    minor = score.analyze("key").mode == "minor"
    return ParsedScore(np.asarray(onsets)[order], np.asarray(durations)[order], np.asarray(pitches, np.int64)[order],
                       np.asarray(starts), bool(minor))


def load_score(piece: DemoPiece, cache_dir: Path) -> ParsedScore:
    """The parsed notes of ``piece``, from ``cache_dir/scores`` or parsed by music21 (slow) and cached."""
    version = _music21_version()
    path = cache_dir / "scores" / f"{piece.corpus_path.replace('/', '__')}-music21-{version}.json"
    if path.is_file():
        try:
            cached = json.loads(path.read_text())
            return ParsedScore(np.asarray(cached["onsets"], np.float64), np.asarray(cached["durations"], np.float64),
                               np.asarray(cached["pitches"], np.int64), np.asarray(cached["measure_starts"], np.float64),
                               bool(cached["minor"]))
        except (ValueError, KeyError, TypeError):
            pass  # a damaged cache entry is parsed again and overwritten
    parsed = _parse_with_music21(piece.corpus_path)
    payload = {"corpus_path": piece.corpus_path, "music21": version, "minor": parsed.minor,
               "onsets": parsed.onsets.tolist(), "durations": parsed.durations.tolist(),
               "pitches": parsed.pitches.tolist(), "measure_starts": parsed.measure_starts.tolist()}
    _atomic_write(path, json.dumps(payload).encode())
    return parsed


def bars_for(score: ParsedScore, tempo_bpm: float, bars_per_segment: int, segment_seconds: float) -> int:
    """``bars_per_segment``, or when 0 the bar count (1..16) closest to ``segment_seconds`` at ``tempo_bpm``."""
    if bars_per_segment > 0:
        return bars_per_segment
    bar_seconds = float(np.median(np.diff(score.measure_starts))) * 60.0 / tempo_bpm
    return int(np.clip(round(segment_seconds / bar_seconds), 1, 16))


def segment_windows(score: ParsedScore, bars: int, count: int) -> list[tuple[int, int]]:
    """Up to ``count`` non-overlapping windows (first measure, end measure) of ``bars`` whole measures spread over the
    piece; an anacrusis (a first measure shorter than the second) is skipped."""
    lengths = np.diff(score.measure_starts)
    first = 1 if len(lengths) > 1 and lengths[0] < lengths[1] - 1e-6 else 0
    available = len(lengths) - first
    count = min(count, available // bars)
    if count <= 0:
        return []
    starts = first + np.round(np.linspace(0, available - bars, count)).astype(int) if count > 1 else np.array([first])
    # linspace can place windows closer than `bars` apart when the piece is barely long enough: pack them instead
    if count > 1 and np.any(np.diff(starts) < bars):
        starts = first + bars * np.arange(count)
    return [(int(s), int(s) + bars) for s in starts]


def cut_segment(score: ParsedScore, first: int, end: int) -> perf.SegmentScore:
    """The notes starting in measures [first, end), re-timed to the window start, held no longer than the window."""
    start_q, end_q = score.measure_starts[first], score.measure_starts[end]
    keep = (score.onsets >= start_q - 1e-9) & (score.onsets < end_q - 1e-9)
    onsets = score.onsets[keep] - start_q
    durations = np.minimum(score.durations[keep], (end_q - start_q) - onsets)
    return perf.SegmentScore(onsets, durations, score.pitches[keep], score.measure_starts[first:end + 1] - start_q)


def _rng(seed: int, *names: str) -> np.random.Generator:
    """A generator that depends only on ``seed`` and ``names`` (not on build order or corpus size)."""
    return np.random.default_rng([seed, *(zlib.crc32(n.encode()) for n in names)])


def _midi_dir(config: ml_collections.ConfigDict) -> Path:
    """``cache_dir/midi-<hash>``: the hash covers everything that changes a MIDI file's bytes."""
    fields = {"seed": config.seed, "segments_per_piece": config.segments_per_piece,
              "bars_per_segment": config.bars_per_segment, "segment_seconds": config.segment_seconds,
              "performance_sd": config.performance_sd, "music21": _music21_version(), "render": RENDER_VERSION}
    digest = hashlib.blake2b(json.dumps(fields, sort_keys=True).encode(), digest_size=5).hexdigest()
    return Path(config.cache_dir) / f"midi-{digest}"


def content_identity(config: ml_collections.ConfigDict) -> dict[str, object]:
    """What decides the segments and labels `build_demo_corpus` builds from ``config`` (a ``config.data``): every
    field but `NON_CONTENT_FIELDS`, the pieces used, `RENDER_VERSION` and the music21 version (it parses the
    scores). Needs no build: stores are found by it."""
    fields = {name: value for name, value in config.to_dict().items() if name not in NON_CONTENT_FIELDS}
    pieces = [dataclasses.astuple(piece) for piece in PIECES[: int(config.num_pieces)]]
    return {"fields": fields, "pieces": pieces, "performer_model": RENDER_VERSION,
            "music21": importlib.metadata.version("music21")}


def _write_if_changed(path: Path, data: bytes) -> None:
    if path.is_file() and path.stat().st_size == len(data) and path.read_bytes() == data:
        return
    _atomic_write(path, data)


def _check(config: ml_collections.ConfigDict) -> None:
    if not 1 <= config.num_pieces <= len(PIECES):
        raise DemoCorpusError(f"data.num_pieces={config.num_pieces}: the demo has {len(PIECES)} pieces; use 1..{len(PIECES)}")
    if config.num_performers < 1 and not config.include_deadpan:
        raise DemoCorpusError("data.num_performers=0 and data.include_deadpan=False leave no performances; use >= 1")
    if config.segments_per_piece < 1 or config.bars_per_segment < 0 or config.segment_seconds <= 0:
        raise DemoCorpusError("data.segments_per_piece must be >= 1, data.bars_per_segment >= 0 (0 = auto) and "
                              "data.segment_seconds > 0")
    if config.num_raters < 1 or not 0.0 <= config.missing_rate < 1.0:
        raise DemoCorpusError("data.num_raters must be >= 1 and data.missing_rate in [0, 1)")


def performer_factors(config: ml_collections.ConfigDict) -> dict[str, perf.PerformerFactors]:
    """The latent factors of performers ``p00``.. for ``config.seed`` (the ground truth the corpus was built from)."""
    names = [f"p{i:02d}" for i in range(config.num_performers)]
    return {name: perf.PerformerFactors.from_array(_rng(config.seed, "performer", name).standard_normal(len(perf.FACTOR_NAMES)))
            for name in names}


def piece_offsets(config: ml_collections.ConfigDict, composition: str) -> np.ndarray:
    """float64 [19]: the composition's offset on every dimension (1..7 scale), ~N(0, piece_offset_sd)."""
    return _rng(config.seed, "piece-offset", composition).standard_normal(NUM_DIMENSIONS) * config.piece_offset_sd


def build_demo_corpus(data_config: ml_collections.ConfigDict) -> Corpus:
    """Builds (or reuses from ``cache_dir``) the demo corpus described by ``data_config``; see the module docstring.

    A piece music21 cannot parse, or one too short for a single window, becomes a `Problem`, not an exception.
    """
    _check(data_config)
    cache_dir = Path(data_config.cache_dir)
    midi_dir = _midi_dir(data_config)
    players = list(performer_factors(data_config).items())  # (name, factors); None plays the deadpan rendition
    if data_config.include_deadpan:
        players.append((DEADPAN_PERFORMERS[0], None))
    rater_bias = _rng(data_config.seed, "raters").standard_normal((data_config.num_raters, NUM_DIMENSIONS)) * data_config.rater_bias_sd
    segments, problems = [], []
    for piece in PIECES[: data_config.num_pieces]:
        try:
            score = load_score(piece, cache_dir)
        except Exception as err:  # music21 raises many unrelated types on a bad file
            problems.append(Problem(piece.composition, None, f"music21 cannot parse {piece.corpus_path!r} ({err}); "
                                    "check the music21 installation or drop the piece with data.num_pieces"))
            continue
        bars = bars_for(score, piece.tempo_bpm, data_config.bars_per_segment, data_config.segment_seconds)
        windows = segment_windows(score, bars, data_config.segments_per_piece)
        if not windows:
            problems.append(Problem(piece.composition, None, f"{len(score.measure_starts) - 1} measures cannot hold a "
                                    f"{bars}-bar segment; lower data.bars_per_segment or data.segment_seconds"))
            continue
        traits = perf.PieceTraits(piece.tempo_bpm, piece.loudness, score.minor)
        offset = piece_offsets(data_config, piece.composition)
        piece_name = f"{piece.composition}_{bars}bars"
        for index, (first, end) in enumerate(windows):
            segment_score = cut_segment(score, first, end)
            if len(segment_score.onsets) == 0:
                problems.append(Problem(f"{piece_name}_{index}", None, f"measures {first}..{end - 1} hold no notes"))
                continue
            for name, factors in players:
                key = f"{piece_name}_{name}_{index}"
                rng = _rng(data_config.seed, "performance", key)
                played = None  # this performance's factors: the performer's, jittered from one performance to the next
                if factors is not None:
                    jitter = rng.standard_normal(len(perf.FACTOR_NAMES)) * data_config.performance_sd
                    played = perf.PerformerFactors.from_array(factors.as_array() + jitter)
                performance = perf.render_performance(segment_score, traits, played, offset, rng)
                midi_path = midi_dir / f"{key}.mid"
                _write_if_changed(midi_path, performance.midi_bytes)
                ratings = perf.rate(performance.truth, rater_bias, data_config.rater_noise_sd,
                                    data_config.missing_rate, _rng(data_config.seed, "ratings", key))
                segments.append(Segment(
                    key=key, composition=piece.composition, piece=piece_name, performer=name,
                    group=f"{piece_name}_{index}", midi_path=midi_path,
                    label_mean=np.nanmean(ratings, axis=0).astype(np.float32),
                    label_std=np.nanstd(ratings, axis=0).astype(np.float32),
                    ratings=ratings, label_truth=performance.truth.astype(np.float32),
                    factors=(np.full(len(perf.FACTOR_NAMES), np.nan, np.float32) if played is None
                             else played.as_array().astype(np.float32))))
    return Corpus(name="demo", segments=segments, problems=problems)
