"""ASAP reader: performances of one score cut into same-music windows of whole bars, with performance-derived labels.

Layout under ``root`` (ASAP, CC BY-NC-SA 4.0)::

    metadata.csv                              one row per performance: composer, title, folder, midi_score,
                                              midi_performance, performance_annotations, midi_score_annotations, ...
    <folder>/midi_score.mid                   the score, quantised (one folder per score, e.g. Bach/Fugue/bwv_848)
    <folder>/midi_score_annotations.txt       its beats: "<seconds>\\t<seconds>\\t<b|db|bR>[,<time sig>,<key>]"
    <folder>/<performer>.mid                  a performance
    <folder>/<performer>_annotations.txt      the same beats in the performance

**Pieces.** The composition is the score folder; a folder with fewer than ``data.min_performances`` usable
performances is not read. The work is ``<composer>/<title>`` from the metadata: folders that differ only in repeats
(``17-1`` and ``17-1_no_repeat``) share it, so splits must not separate them.

**Windows.** A performance's annotated downbeats correspond one to one to its score's (checked: a performance whose
downbeat count differs is skipped). Window k covers downbeats ``k B .. (k + 1) B`` (``B = data.bars_per_window``):
in every performance of a piece it plays the same B score bars, found through the annotations, never by counting
time. The pickup before the first downbeat and the bars after the last whole window are not covered. A window's
audio is the performance cut to ``[d_kB - lead, d_(k+1)B - lead)`` with ``lead = ONSET_LEAD_SECONDS`` (performed
chords spread around the annotated beat: a note struck up to 50 ms before a downbeat belongs to it), written as its
own MIDI file (`crescend_jax.data.midi_events.write_time_range`: notes clipped, pedal state carried in) under
``data.cache_dir``; the score is cut the same way (``Segment.score_midi_path``). The window's annotated beats, paired
with the score's, travel with it in the time of those cut files (``Window.beats``, ``Window.score_beats``): the
`aligned` encoder's positions and tempo anchors. Derived labels
(`crescend_jax.data.performance_labels`) describe the same span, the tempo labels from the window's annotated beats
paired with the score's.

**Keys.** ``<composition>__<B>bars__w<k>__<performer>`` (k zero-padded to 3 digits, performer = the performance
MIDI's file stem); piece ``<composition>__<B>bars``; group ``<piece>__w<k>``: the same-music group.

**Bad input** becomes a `Problem` and never a misaligned window: a performance whose MIDI or annotations are missing
or unreadable, whose downbeat count differs from its score's, or whose annotations run past the end of its MIDI; a
window whose beats between its downbeats differ in number from the score's (a skipped or added beat), one shorter
than ``data.min_window_seconds``, one in which no note starts (a general rest: nothing to hear or to rank; e.g. window
112 of Liszt's Mephisto Waltz), or one left in a group with fewer than ``data.min_performances`` performances.

**PercePiano overlap.** ``Segment.in_percepiano`` flags compositions that may also be PercePiano compositions, by
catalogue number (`percepiano_overlap`). With ``data.exclude_in_percepiano`` (the default) the reader leaves those
compositions out altogether (they are not read, and are no problems: nothing is wrong with them), so pre-training on
ASAP never sees music of a PercePiano test fold. Which compositions exist is content: a store's identity names the
ones left out (`content_identity`), so it moves only when the setting actually leaves something out.

**Splits.** ``data.split_level = "work"`` by default: a score folder and its no-repeat twin are one work (the store's
``work`` column), never on both sides of a fold.

ASAP has no ratings: the 19 label dimensions are NaN, ``ratings`` is empty, and ``Segment.derived`` holds the
labels named by `crescend_jax.data.performance_labels.DERIVED_LABELS`.
"""

from __future__ import annotations

import contextlib
import dataclasses
import hashlib
import io
import json
import multiprocessing
import os
import re
import tempfile
from pathlib import Path
from typing import Iterable

import ml_collections
import numpy as np
import pandas as pd

from crescend_jax.data import midi_events, performance_labels
from crescend_jax.data.dimensions import NUM_DIMENSIONS
from crescend_jax.data.midi_events import MidiError, MidiPerformance
from crescend_jax.data.segments import Corpus, Problem, Segment, Window
from crescend_jax.errors import DataError

# Bump when what the reader yields for the same files and settings changes (windows, keys, problems).
# 2: a window in which no note starts is dropped (a problem), not handed to the encoders.
READER_VERSION = 2
ONSET_LEAD_SECONDS = 0.05
METADATA = "metadata.csv"
METADATA_COLUMNS = ("composer", "title", "folder", "midi_score", "midi_performance", "performance_annotations",
                    "midi_score_annotations")
BEAT_KINDS = ("b", "db", "bR")  # beat, downbeat, beat whose exact position the score cannot tell
_PARSED_VERSION = 1  # of the cached note arrays


class AsapError(DataError):
    """A problem with the whole ASAP checkout or the config (no metadata, unknown composition, ...)."""


class AnnotationError(ValueError):
    """An annotation file that cannot be read or that does not match its score."""


def default_data_config() -> ml_collections.ConfigDict:
    """The ``config.data`` section of ASAP configs.

    root: the ASAP checkout (metadata.csv at its top).
    bars_per_window: B, bars per same-music window.
    min_performances: pieces (and windows) with fewer usable performances are left out.
    min_window_seconds: shorter windows are dropped (and counted).
    compositions: when non-empty, only these score folders (e.g. ("Bach/Fugue/bwv_848",)), for smoke runs.
    percepiano_root: the PercePiano checkout whose compositions are compared with ASAP's (``Segment.in_percepiano``);
      "" = no checkout (then only ``percepiano_compositions`` are compared).
    percepiano_compositions: further PercePiano composition names to compare (e.g. ("Beethoven_WoO80_var1",)).
    exclude_in_percepiano: leave out the compositions flagged ``in_percepiano`` (they may be PercePiano music, so
      pre-training on them would leak into a PercePiano test fold); False keeps them, flagged.
    cache_dir: parsed MIDI arrays and the windows' MIDI files.
    workers: processes reading pieces in parallel (1 = this process).
    num_folds, test_compositions, fold_seed, exclude_compositions: as PercePiano's data config.
    test_fraction: > 0 (and no test_compositions) holds out whole works holding about this share of the windows, as
      one fold drawn by fold_seed (`crescend_jax.data.splits.heldout_units`): the held-out works of ranking
      pre-training, never trained on. 0 = folds by num_folds.
    split_level: "work" (default: a score folder and its no-repeat twin stay on one side) or "composition".
    targets, target_transform, derived_labels: what a run ranks by (`crescend_jax.data.targets`): "ratings" (ASAP has
      none: label-free training), "derived" (the group-relative derived labels) or "both".
    """
    config = ml_collections.ConfigDict()
    config.root = "../shared/data/asap"
    config.bars_per_window = 4
    config.min_performances = 2
    config.min_window_seconds = 1.0
    config.compositions = ()
    config.percepiano_root = "../shared/data/percepiano"
    config.percepiano_compositions = ()
    config.exclude_in_percepiano = True
    config.cache_dir = "cache/asap"
    config.workers = 2
    config.num_folds = 5
    config.test_compositions = ()
    config.fold_seed = 0
    config.split_level = "work"
    config.exclude_compositions = ()
    config.test_fraction = 0.0
    config.targets = "ratings"
    config.target_transform = "pooled"
    config.derived_labels = ()
    return config


# ---------------------------------------------------------------------------------------------------------------
# Annotations and windows


@dataclasses.dataclass(frozen=True)
class Annotations:
    """Beat annotations of one MIDI file: times float64 [n] (increasing seconds) and kinds str [n] (`BEAT_KINDS`)."""

    times: np.ndarray
    kinds: np.ndarray

    @property
    def downbeat_indices(self) -> np.ndarray:
        """int64 [d]: positions of the downbeats among all beats."""
        return np.flatnonzero(self.kinds == "db")

    @property
    def downbeats(self) -> np.ndarray:
        return self.times[self.downbeat_indices]


def read_annotations(path: Path) -> Annotations:
    """Reads an ASAP annotation TSV; raises `AnnotationError` naming the file and line when it cannot."""
    path = Path(path)
    if not path.is_file():
        raise AnnotationError(f"annotation file {path} does not exist")
    times, kinds = [], []
    for number, line in enumerate(path.read_text().splitlines(), start=1):
        if not line.strip():
            continue
        fields = line.split("\t")
        kind = fields[2].split(",")[0].strip() if len(fields) >= 3 else ""
        try:
            time = float(fields[0])
        except ValueError:
            time = float("nan")
        if kind not in BEAT_KINDS or not np.isfinite(time):
            raise AnnotationError(f"{path}:{number}: {line!r} is not '<seconds>\\t<seconds>\\t<b|db|bR>[,...]'")
        times.append(time)
        kinds.append(kind)
    times_array = np.asarray(times, np.float64)
    if len(times_array) and not np.all(np.diff(times_array) > 0):
        raise AnnotationError(f"{path}: beat times do not increase")
    return Annotations(times=times_array, kinds=np.asarray(kinds, dtype=str))


@dataclasses.dataclass(frozen=True)
class WindowBounds:
    """Window ``index`` of a performance: its downbeats ``first_downbeat .. first_downbeat + bars`` at ``start`` and
    ``end`` (performance seconds) and ``score_start``/``score_end`` (score seconds); ``beats``/``score_beats``: every
    annotated beat from ``start`` to ``end`` inclusive in each, or None when their numbers differ."""

    index: int
    first_downbeat: int
    bars: int
    start: float
    end: float
    score_start: float
    score_end: float
    beats: np.ndarray | None
    score_beats: np.ndarray | None


def same_music_windows(performance: Annotations, score: Annotations, bars_per_window: int) -> list[WindowBounds]:
    """The windows of ``bars_per_window`` bars of a performance, mapped through its score's downbeats (module doc).

    Raises `AnnotationError` when the downbeat counts differ (the downbeats cannot be paired one to one).
    """
    if bars_per_window < 1:
        raise ValueError(f"bars_per_window={bars_per_window}: must be >= 1")
    performed, notated = performance.downbeat_indices, score.downbeat_indices
    if len(performed) != len(notated):
        raise AnnotationError(f"{len(performed)} downbeats against the score's {len(notated)} (bars skipped, "
                              f"repeated or annotated differently): its windows could not be matched to the score's")
    windows = []
    for index in range((len(performed) - 1) // bars_per_window):
        first, last = index * bars_per_window, (index + 1) * bars_per_window
        beats = performance.times[performed[first]:performed[last] + 1]
        score_beats = score.times[notated[first]:notated[last] + 1]
        agree = len(beats) == len(score_beats)
        windows.append(WindowBounds(
            index=index, first_downbeat=first, bars=bars_per_window,
            start=float(performance.times[performed[first]]), end=float(performance.times[performed[last]]),
            score_start=float(score.times[notated[first]]), score_end=float(score.times[notated[last]]),
            beats=beats if agree else None, score_beats=score_beats if agree else None))
    return windows


# ---------------------------------------------------------------------------------------------------------------
# PercePiano overlap by catalogue number

# Beethoven's piano sonatas (ASAP folders Piano_Sonatas/<number>-<movement>) -> opus (26 = Op. 81a).
_BEETHOVEN_SONATA_OPUS = {1: 2, 2: 2, 3: 2, 4: 7, 5: 10, 6: 10, 7: 10, 8: 13, 9: 14, 10: 14, 11: 22, 12: 26, 13: 27,
                          14: 27, 15: 28, 16: 31, 17: 31, 18: 31, 19: 49, 20: 49, 21: 53, 22: 54, 23: 57, 24: 78,
                          25: 79, 26: 81, 27: 90, 28: 101, 29: 106, 30: 109, 31: 110, 32: 111}
_SHARED_OPUS = {2, 10, 14, 27, 31, 49}  # several sonatas in one opus: a movement number does not name the music
# ASAP folders whose catalogue numbers are not in their names: (folder pattern, catalogue ids, part group).
_ALIASES: tuple[tuple[str, frozenset[tuple[str, int]], int | None], ...] = (
    (r"^Schubert/Impromptu_op142/(\d+)$", frozenset({("d", 935), ("op", 142)}), 1),
    (r"^Schubert/Moment_[Mm]usical_no_(\d+)$", frozenset({("d", 780), ("op", 94)}), 1),
    (r"^Schubert/Piano_Sonatas/664-(\d+)", frozenset({("d", 664), ("op", 120)}), 1),
    (r"^Schubert/Piano_Sonatas/894-(\d+)", frozenset({("d", 894), ("op", 78)}), 1),
    (r"^Schubert/Wanderer_fantasie$", frozenset({("d", 760), ("op", 15)}), None),
    (r"^Bach/Italian_concerto$", frozenset({("bwv", 971)}), None),
)
_CATALOGUE_IN_NAME = (  # (pattern, system) searched case-insensitively in an ASAP folder
    (r"bwv_?(\d+)", "bwv"), (r"(?<![a-z])op[_.]?(\d+)", "op"), (r"(?<![a-z])d\.(\d+)", "d"),
    (r"(?<![a-z])s(\d{2,3})(?![a-z0-9])", "s"))
_PERCEPIANO_CATALOGUE = re.compile(r"^(bwv|woo|op|kv|k|hob|d|s)\.?(\d+)", re.IGNORECASE)


@dataclasses.dataclass(frozen=True)
class Catalogue:
    """What a composition name says about its music: composer (lower case), catalogue ids {(system, number)} (empty
    when unknown) and part (movement or number within the work; None when unknown or several)."""

    composer: str
    ids: frozenset[tuple[str, int]]
    part: int | None


def asap_catalogue(composition: str) -> Catalogue:
    """The catalogue of an ASAP score folder (e.g. ``Schubert/Impromptu_op142/3`` -> D 935 / Op. 142, part 3)."""
    composer = composition.split("/")[0].lower()
    sonata = re.match(r"^Beethoven/Piano_Sonatas/(\d+)-(\d+)(.*)$", composition)
    if sonata and int(sonata.group(1)) in _BEETHOVEN_SONATA_OPUS:
        opus = _BEETHOVEN_SONATA_OPUS[int(sonata.group(1))]
        several = opus in _SHARED_OPUS or re.match(r"^_\d", sonata.group(3))
        return Catalogue(composer, frozenset({("op", opus)}), None if several else int(sonata.group(2)))
    for pattern, ids, part_group in _ALIASES:
        match = re.match(pattern, composition)
        if match:
            return Catalogue(composer, ids, int(match.group(part_group)) if part_group else None)
    ids = frozenset((system, int(m)) for pattern, system in _CATALOGUE_IN_NAME
                    for m in re.findall(pattern, composition, flags=re.IGNORECASE))
    last = re.match(r"^(\d+)(?:_[A-Za-z].*)?$", composition.split("/")[-1])
    return Catalogue(composer, ids, int(last.group(1)) if ids and last else None)


def percepiano_catalogue(composition: str) -> Catalogue:
    """The catalogue of a PercePiano composition ``<Composer>_<catalogue>[_<part>]`` (e.g. ``Schubert_D935_no.3``
    -> D 935, part 3; ``Beethoven_WoO80_var1`` -> WoO 80, part 1); no ids when no field is a catalogue number."""
    fields = composition.split("_")
    for position, field in enumerate(fields[1:], start=1):
        match = _PERCEPIANO_CATALOGUE.match(field)
        if match:
            system = {"kv": "k"}.get(match.group(1).lower(), match.group(1).lower())
            numbers = re.findall(r"\d+", "_".join(fields[position + 1:]))
            part = int(numbers[0]) if len(numbers) == 1 else None
            return Catalogue(fields[0].lower(), frozenset({(system, int(match.group(2)))}), part)
    return Catalogue(fields[0].lower(), frozenset(), None)


def may_be_same_music(asap: Catalogue, percepiano: Catalogue) -> bool:
    """Conservative: True unless the names tell the music apart. Different composers differ; when either side has
    no catalogue number they may be the same; disjoint catalogue numbers differ; one work differs only when both
    name a single part and the parts differ (movement 1 vs 3)."""
    if asap.composer != percepiano.composer:
        return False
    if not asap.ids or not percepiano.ids:
        return True
    if not asap.ids & percepiano.ids:
        return False
    return asap.part is None or percepiano.part is None or asap.part == percepiano.part


def percepiano_overlap(asap_compositions: Iterable[str], percepiano_compositions: Iterable[str]
                       ) -> dict[str, tuple[str, ...]]:
    """ASAP composition -> the PercePiano compositions it may be (`may_be_same_music`), for those with any."""
    percepiano = sorted(set(percepiano_compositions))
    catalogues = [percepiano_catalogue(name) for name in percepiano]
    overlap = {}
    for composition in sorted(set(asap_compositions)):
        ours = asap_catalogue(composition)
        matches = tuple(name for name, theirs in zip(percepiano, catalogues) if may_be_same_music(ours, theirs))
        if matches:
            overlap[composition] = matches
    return overlap


def read_percepiano_compositions(root: Path) -> set[str]:
    """The compositions of a PercePiano checkout: of every key in its label files and every MIDI file name."""
    from crescend_jax.data.percepiano import MIDI_DIRS, KeyFormatError, parse_key

    root = Path(root)
    if not root.is_dir():
        raise AsapError(f"data.percepiano_root {root} does not exist: the PercePiano overlap cannot be checked; point "
                        f"it at the PercePiano checkout, or set --config.data.percepiano_root='' to skip the check")
    names = set()
    for label_file in sorted((root / "labels").glob("label_*.json")):
        with contextlib.suppress(json.JSONDecodeError, UnicodeDecodeError, AttributeError):
            names.update(json.loads(label_file.read_text()).keys())
    for directory in MIDI_DIRS:
        names.update(p.stem.strip() for p in (root / directory).glob("*.mid"))
    compositions = set()
    for name in names:
        with contextlib.suppress(KeyFormatError):
            compositions.add(parse_key(name).composition)
    if not compositions:
        raise AsapError(f"no PercePiano key under {root} (labels/label_*.json, {', '.join(MIDI_DIRS)}): the overlap "
                        f"cannot be checked; fix data.percepiano_root or set it to '' to skip the check")
    return compositions


# ---------------------------------------------------------------------------------------------------------------
# Reading


def _sha256(path: Path) -> str:
    return hashlib.sha256(Path(path).read_bytes()).hexdigest()


def _atomic_write_bytes(path: Path, data: bytes) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, temp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    with os.fdopen(fd, "wb") as f:
        f.write(data)
    os.replace(temp, path)


def _performance(path: Path, cache_dir: Path) -> tuple[MidiPerformance, str]:
    """`read_midi` of ``path`` through a cache of its arrays keyed by the file's sha256; and that sha256."""
    path = Path(path)
    if not path.is_file():
        raise MidiError(f"MIDI {path} does not exist")
    digest = _sha256(path)
    entry = cache_dir / "parsed" / digest[:2] / f"{digest}.v{_PARSED_VERSION}.npz"
    fields = [f.name for f in dataclasses.fields(MidiPerformance)]
    if entry.is_file():
        with np.load(entry) as saved:
            values = {name: saved[name] for name in fields}
        values["length"] = float(values["length"])
        return MidiPerformance(**values), digest
    performance = midi_events.read_midi(path)
    buffer = io.BytesIO()
    np.savez_compressed(buffer, **{name: np.asarray(getattr(performance, name)) for name in fields})
    _atomic_write_bytes(entry, buffer.getvalue())
    return performance, digest


def _window_midi(performance: MidiPerformance, digest: str, start: float, end: float, cache_dir: Path) -> Path:
    name = f"{digest[:24]}_{round(start * 1000)}_{round(end * 1000)}_v{midi_events.CUT_VERSION}.mid"
    return midi_events.write_time_range(performance, start, end, cache_dir / "windows" / digest[:2] / name)


@dataclasses.dataclass(frozen=True)
class _PerformanceRow:
    performer: str
    midi: Path
    annotations: Path | None


@dataclasses.dataclass(frozen=True)
class _PieceJob:
    """One score folder and its performances, read in one worker."""

    composition: str
    work: str
    score_midi: Path
    score_annotations: Path | None
    performances: tuple[_PerformanceRow, ...]
    bars_per_window: int
    min_performances: int
    min_window_seconds: float
    cache_dir: Path
    in_percepiano: bool


def _nan_labels() -> dict[str, np.ndarray]:
    return {"label_mean": np.full(NUM_DIMENSIONS, np.nan, np.float32),
            "label_std": np.full(NUM_DIMENSIONS, np.nan, np.float32),
            "ratings": np.zeros((0, NUM_DIMENSIONS), np.float32),
            "label_truth": np.full(NUM_DIMENSIONS, np.nan, np.float32)}


def _cut(first_downbeat: float, last_downbeat: float) -> tuple[float, float]:
    """The [start, end) seconds a window between two downbeats is cut at (module doc: ``ONSET_LEAD_SECONDS`` early)."""
    return max(0.0, first_downbeat - ONSET_LEAD_SECONDS), last_downbeat - ONSET_LEAD_SECONDS


def _starts_a_note(performance: MidiPerformance, start: float, end: float) -> bool:
    """Whether a note of ``performance`` starts in [start, end) (the notes the window's MIDI file plays)."""
    return bool(np.any((performance.onsets >= start) & (performance.onsets < end)))


def _read_piece(job: _PieceJob) -> tuple[list[Segment], list[Problem]]:
    """The windows of every performance of one score folder and the problems met (never raises for bad input)."""
    problems: list[Problem] = []
    piece = f"{job.composition}__{job.bars_per_window}bars"
    skip_all = None
    try:
        if job.score_annotations is None:
            raise AnnotationError("metadata names no score annotation file")
        score_annotations = read_annotations(job.score_annotations)
        score, score_digest = _performance(job.score_midi, job.cache_dir)
    except (AnnotationError, MidiError) as err:
        skip_all = f"its score cannot be read ({err}); every performance of the piece is skipped"
    if skip_all is not None:
        return [], [Problem(f"{job.composition}/{row.performer}", row.midi, skip_all,
                            reason="performance skipped: its score or the score's annotations cannot be read")
                    for row in job.performances]

    candidates: list[tuple[_PerformanceRow, WindowBounds, MidiPerformance, str]] = []
    for row in job.performances:
        item = f"{job.composition}/{row.performer}"
        try:  # each step first says what it skips the performance for if it raises
            reason = "performance skipped: no annotation file named in the metadata"
            if row.annotations is None:
                raise AnnotationError("metadata names no annotation file")
            reason = "performance skipped: annotation file missing or unreadable"
            annotations = read_annotations(row.annotations)
            reason = "performance skipped: MIDI missing or unreadable"
            performance, digest = _performance(row.midi, job.cache_dir)
            reason = "performance skipped: annotations run past the end of the MIDI"
            if len(annotations.times) and annotations.times[-1] > performance.length:
                raise AnnotationError(f"annotations run to {annotations.times[-1]:.2f} s, past the end of the MIDI "
                                      f"({performance.length:.2f} s): they belong to another file")
            reason = "performance skipped: downbeat count differs from the score's"
            windows = same_music_windows(annotations, score_annotations, job.bars_per_window)
        except (AnnotationError, MidiError) as err:
            problems.append(Problem(item, row.midi, f"{err}; the performance is skipped", reason=reason))
            continue
        for bounds in windows:
            key = f"{piece}__w{bounds.index:03d}__{row.performer}"
            if bounds.beats is None:
                problems.append(Problem(key, row.midi, "the number of beats between its downbeats differs from the "
                                        "score's (a beat skipped or added): the window is dropped",
                                        reason="window dropped: beats between its downbeats differ from the score's"))
            elif bounds.end - bounds.start < job.min_window_seconds:
                problems.append(Problem(key, row.midi, f"the window lasts {bounds.end - bounds.start:.2f} s (< "
                                        f"data.min_window_seconds = {job.min_window_seconds:g}): dropped",
                                        reason="window dropped: shorter than data.min_window_seconds"))
            elif not _starts_a_note(performance, *_cut(bounds.start, bounds.end)):
                problems.append(Problem(key, row.midi, "no note starts in the window (a rest in the music, or notes "
                                        "missing from the performance): nothing to hear or rank; dropped",
                                        reason="window dropped: no note starts in it"))
            else:
                candidates.append((row, bounds, performance, digest))

    per_window: dict[int, int] = {}
    for _, bounds, _, _ in candidates:
        per_window[bounds.index] = per_window.get(bounds.index, 0) + 1
    segments: list[Segment] = []
    score_windows: dict[int, Path] = {}
    for row, bounds, performance, digest in candidates:
        group = f"{piece}__w{bounds.index:03d}"
        key = f"{group}__{row.performer}"
        if per_window[bounds.index] < job.min_performances:
            problems.append(Problem(key, row.midi, f"only {per_window[bounds.index]} performance(s) of this window "
                                    f"are usable (< data.min_performances = {job.min_performances}): dropped",
                                    reason="window dropped: fewer usable performances than data.min_performances"))
            continue
        start, end = _cut(bounds.start, bounds.end)
        score_start, score_end = _cut(bounds.score_start, bounds.score_end)
        if bounds.index not in score_windows:
            score_windows[bounds.index] = _window_midi(score, score_digest, score_start, score_end, job.cache_dir)
        segments.append(Segment(
            key=key, composition=job.composition, piece=piece, performer=row.performer, group=group,
            midi_path=_window_midi(performance, digest, start, end, job.cache_dir), **_nan_labels(),
            score_midi_path=score_windows[bounds.index], work=job.work,
            window=Window(index=bounds.index, first_downbeat=bounds.first_downbeat, bars=bounds.bars,
                          source_midi=row.midi, start_seconds=start, end_seconds=end,
                          score_start_seconds=bounds.score_start, score_end_seconds=bounds.score_end,
                          beats=tuple((bounds.beats - start).tolist()),
                          score_beats=tuple((bounds.score_beats - score_start).tolist())),
            derived=performance_labels.window_labels(performance, start, end, bounds.beats, bounds.score_beats),
            in_percepiano=job.in_percepiano))
    return segments, problems


def read_metadata(root: Path) -> pd.DataFrame:
    """``metadata.csv`` as strings (blank = ""); a missing file or column raises `AsapError`."""
    path = Path(root) / METADATA
    if not path.is_file():
        raise AsapError(f"{path} does not exist; point --config.data.root at an ASAP checkout")
    frame = pd.read_csv(path, dtype=str, keep_default_na=False)
    missing = [c for c in METADATA_COLUMNS if c not in frame.columns]
    if missing:
        raise AsapError(f"{path} lacks the columns {missing}; restore it from the ASAP release")
    return frame


def folder_works(frame: pd.DataFrame) -> dict[str, str]:
    """Score folder -> its work ``<composer>/<title>`` (of the folder's first metadata row), for the rows of
    ``frame`` (`read_metadata`): folders that differ only in repeats (``17-1``, ``17-1_no_repeat``) share a work."""
    firsts = frame.drop_duplicates("folder")
    return {row.folder: f"{row.composer}/{row.title}" for row in firsts.itertuples()}


def percepiano_compositions(data_config: ml_collections.ConfigDict) -> set[str]:
    """The PercePiano compositions ASAP is compared with: of ``data.percepiano_root`` (unless "") and
    ``data.percepiano_compositions``."""
    names = set(data_config.percepiano_compositions)
    if data_config.percepiano_root:
        names |= read_percepiano_compositions(Path(data_config.percepiano_root))
    return names


def _piece_jobs(data_config: ml_collections.ConfigDict) -> tuple[list[_PieceJob], list[str]]:
    """(one job per score folder to read: in ``data.compositions`` when given, with at least ``data.min_performances``
    performances, and not flagged ``in_percepiano`` when ``data.exclude_in_percepiano``; the folders left out for that
    flag, sorted)."""
    root = Path(data_config.root)
    frame = read_metadata(root)
    wanted = tuple(data_config.compositions)
    unknown = sorted(set(wanted) - set(frame["folder"]))
    if unknown:
        raise AsapError(f"data.compositions names folders that are not in {root / METADATA}: {unknown}")
    if wanted:
        frame = frame[frame["folder"].isin(wanted)]
    bars, min_performances = int(data_config.bars_per_window), int(data_config.min_performances)
    if bars < 1:
        raise AsapError(f"data.bars_per_window={bars}: must be >= 1")
    if min_performances < 1:
        raise AsapError(f"data.min_performances={min_performances}: must be >= 1")
    counts = frame.groupby("folder")["midi_performance"].count()
    kept = sorted(counts.index[counts >= min_performances])
    overlap = percepiano_overlap(kept, percepiano_compositions(data_config))
    left_out = [folder for folder in kept if folder in overlap] if data_config.get("exclude_in_percepiano") else []
    kept = [folder for folder in kept if folder not in left_out]
    jobs = []
    optional = lambda text: root / text if text else None
    works = folder_works(frame)
    for folder in kept:
        rows = frame[frame["folder"] == folder]
        first = rows.iloc[0]
        performances = tuple(_PerformanceRow(performer=Path(r.midi_performance).stem, midi=root / r.midi_performance,
                                             annotations=optional(r.performance_annotations))
                             for r in rows.itertuples())
        jobs.append(_PieceJob(
            composition=folder, work=works[folder], score_midi=root / first["midi_score"],
            score_annotations=optional(first["midi_score_annotations"]), performances=performances,
            bars_per_window=bars, min_performances=min_performances,
            min_window_seconds=float(data_config.min_window_seconds), cache_dir=Path(data_config.cache_dir),
            in_percepiano=folder in overlap))
    return jobs, left_out


def load_asap(data_config: ml_collections.ConfigDict) -> Corpus:
    """Every same-music window of ASAP (see module doc), sorted by key, and the problems met.

    Whole-checkout problems raise `AsapError`. The first read parses every MIDI file (cached under
    ``data.cache_dir``: later reads take seconds) over ``data.workers`` processes.
    """
    jobs, _ = _piece_jobs(data_config)
    jobs.sort(key=lambda job: -len(job.performances))  # the largest first: the pool finishes together
    workers = min(int(data_config.workers), len(jobs))
    if workers <= 1:
        results = [_read_piece(job) for job in jobs]
    else:
        # spawn, not fork: the caller may already run JAX threads, which fork would copy in an undefined state.
        with multiprocessing.get_context("spawn").Pool(workers) as pool:
            results = pool.map(_read_piece, jobs, chunksize=1)
    segments = sorted((s for found, _ in results for s in found), key=lambda s: s.key)
    problems = sorted((p for _, found in results for p in found), key=lambda p: p.item)
    keys = [s.key for s in segments]
    if len(set(keys)) != len(keys):
        raise AsapError(f"{len(keys) - len(set(keys))} duplicate keys (two performances of one folder share a file "
                        f"stem?); fix {Path(data_config.root) / METADATA}")
    return Corpus(name="asap", segments=segments, problems=problems)


def content_identity(data_config: ml_collections.ConfigDict) -> dict[str, object]:
    """What decides the segments `load_asap` yields: the reader, cut and label versions, the settings that shape
    windows, the PercePiano compositions compared with, the compositions left out as possibly PercePiano's
    (``data.exclude_in_percepiano``: the list, so the setting moves the store only when it leaves something out), and
    sha256 of the metadata and of every file it names for the pieces read. Neither the location of ``root`` nor
    ``cache_dir`` nor ``workers`` nor the split fields are part of it."""
    root = Path(data_config.root)
    files = hashlib.sha256(_sha256(root / METADATA).encode())
    jobs, left_out = _piece_jobs(data_config)
    for job in jobs:
        paths = [job.score_midi, job.score_annotations]
        paths += [p for row in job.performances for p in (row.midi, row.annotations)]
        for path in paths:
            name = "-" if path is None else path.relative_to(root).as_posix()
            files.update(f"{name}\0{_sha256(path) if path is not None and path.is_file() else '-'}\0".encode())
    return {"reader": READER_VERSION, "cut": midi_events.CUT_VERSION, "labels": performance_labels.LABELS_VERSION,
            "bars_per_window": int(data_config.bars_per_window),
            "min_performances": int(data_config.min_performances),
            "min_window_seconds": float(data_config.min_window_seconds),
            "compositions": sorted(data_config.compositions),
            "percepiano": sorted(percepiano_compositions(data_config)), "left_out_in_percepiano": left_out,
            "files": files.hexdigest()}


def performance_counts(corpus: Corpus) -> dict[str, int]:
    """Pieces, performances, groups and windows of a corpus `load_asap` read."""
    return {"pieces": len({s.composition for s in corpus.segments}),
            "performances": len({(s.composition, s.performer) for s in corpus.segments}),
            "groups": len({s.group for s in corpus.segments}), "windows": len(corpus.segments)}

