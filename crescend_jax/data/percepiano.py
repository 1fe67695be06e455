"""PercePiano reader: labelled performance segments, their raters' ratings and MIDI files.

Upstream layout under ``root``::

    labels/label_*mean*.json     key -> 19 mean ratings (rating / 7, in [0, 1]) then a pianist index
    labels/label_*std*.json      key -> 19 rater standard deviations
    labels/total_2rounds.csv     one row per (rater, key): user, dataID, filename (= <key>.wav), Question_* ...
    virtuoso/data/all_2rounds/<key>.mid    performances (and most Score renditions)
    virtuoso/data/score_midi/<key>.mid     Score / Score2 renditions

Keys are ``<composition>_<N>bars_<performer>_<segment>``; performances of the same (composition, N, segment) play
identical music and form one group. A segment's score MIDI (``Segment.score_midi_path``, a deadpan rendition of the
score at its notated tempo) is ``score_midi/<composition>_<N>bars_Score_<segment>.mid``, else ``..._Score2_...``;
the segment field is matched as written (``01`` is not ``1``).
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import re
import warnings
from pathlib import Path

import ml_collections
import numpy as np
import pandas as pd

from crescend_jax.data.dimensions import DIMENSIONS, NUM_DIMENSIONS
from crescend_jax.data.segments import Corpus, Problem, Segment
from crescend_jax.errors import DataError

RATING_SCALE = 7.0  # raters answered on 1..7; labels are rating / 7
LABEL_RANGE = (0.0, 1.0)  # the label scale: a label mean outside it is not a rating / 7 (the segment is skipped)
READER_VERSION = 2  # bump by hand when this reader changes what it returns for the same files (part of store ids)
RATINGS_CSV = "total_2rounds.csv"
MIDI_DIRS = ("virtuoso/data/all_2rounds", "virtuoso/data/score_midi")  # searched in this order
SCORE_MIDI_DIR = "virtuoso/data/score_midi"
SCORE_RENDITIONS = ("Score", "Score2")  # performers whose rendition is the score, in order of preference
KEY_FORMAT = "<composition>_<N>bars_<performer>_<segment>, e.g. Schubert_D960_mv3_8bars_3_12"
_KEY_PATTERN = re.compile(r"^(?P<composition>.+)_(?P<bars>\d+)bars_(?P<performer>[^_]+)_(?P<segment>[^_]+)$")


class KeyFormatError(ValueError):
    """A PercePiano key that is not ``<composition>_<N>bars_<performer>_<segment>``."""


class CorpusError(DataError):
    """A problem with the whole PercePiano checkout (missing or malformed label/rating files)."""


class RatingsWarning(UserWarning):
    """Rating cells in the ratings CSV that are neither blank/0 (missing) nor 1..7; they are read as missing."""


class UnratedWarning(UserWarning):
    """Labelled keys with no usable rating in the ratings CSV (e.g. a truncated file): the noise ceiling, which is
    computed from individual ratings, rests on fewer segments than training does."""


@dataclasses.dataclass(frozen=True)
class PercePianoKey:
    """The fields of one key; ``piece`` = ``<composition>_<N>bars``, ``group`` = ``<piece>_<segment>``."""

    key: str
    composition: str
    bars: int
    performer: str
    segment: str
    piece: str
    group: str


def parse_key(key: str) -> PercePianoKey:
    """Splits a key from the right, so compositions may contain underscores and dots (``Schubert_D935_no.3``)."""
    match = _KEY_PATTERN.match(key)
    if match is None:
        raise KeyFormatError(f"PercePiano key {key!r} does not have the form {KEY_FORMAT}")
    composition, bars, performer, segment = match.group("composition", "bars", "performer", "segment")
    piece = f"{composition}_{int(bars)}bars"
    return PercePianoKey(
        key=key,
        composition=composition,
        bars=int(bars),
        performer=performer,
        segment=segment,
        piece=piece,
        group=f"{piece}_{segment}",
    )


def default_data_config() -> ml_collections.ConfigDict:
    """The ``config.data`` section of PercePiano configs.

    root: the upstream PercePiano checkout.
    num_folds: 0 = one test fold per composition (leave-one-composition-out); k >= 2 = k folds of whole
      compositions, balanced by segment count.
    test_compositions: when non-empty, one fixed hold-out split (these compositions are the test set) instead of folds.
    fold_seed: seed of the composition-to-fold assignment when num_folds >= 2.
    split_level: "composition" (default) or "work" (folds keep the compositions of one work together, and
      test_compositions may name a work, e.g. "Beethoven_WoO80").
    exclude_compositions: compositions (or works) left out of a run entirely, e.g. an outer test fold while
      hyperparameters are selected by folds of the remaining compositions (nested selection).
    """
    config = ml_collections.ConfigDict()
    config.root = "../shared/data/percepiano"
    config.num_folds = 0
    config.test_compositions = ()
    config.fold_seed = 0
    config.split_level = "composition"  # or "work": the compositions of one work stay together
    config.exclude_compositions = ()
    return config


def _find_label_file(labels_dir: Path, kind: str) -> Path:
    # "std" also occurs inside "rm_highstd0", so match it as a whole "_"-separated field of the name.
    matches = sorted(p for p in labels_dir.glob(f"label_*{kind}*.json") if kind in p.stem.split("_"))
    if not matches:
        raise CorpusError(
            f"no label file {labels_dir}/label_*{kind}*.json; point data.root at an upstream PercePiano checkout "
            f"(labels/label_2round_{kind}_reg_19_with0_rm_highstd0.json)"
        )
    if len(matches) > 1:
        names = ", ".join(p.name for p in matches)
        raise CorpusError(f"several label files match {labels_dir}/label_*{kind}*.json ({names}); keep exactly one")
    return matches[0]


def _read_label_file(path: Path, length: int) -> dict[str, np.ndarray]:
    """key -> float64 [length]; whole-file problems raise `CorpusError`."""
    try:
        raw = json.loads(path.read_text())
    except (json.JSONDecodeError, UnicodeDecodeError) as err:
        raise CorpusError(f"label file {path} is not valid JSON ({err}); restore it from the upstream checkout") from None
    if not isinstance(raw, dict) or not raw:
        raise CorpusError(f"label file {path} must be a non-empty JSON object key -> list of numbers")
    values = {}
    for key, row in raw.items():
        if not isinstance(row, list) or len(row) != length:
            got = f"{len(row)} values" if isinstance(row, list) else type(row).__name__
            raise CorpusError(
                f"label file {path}: {key!r} has {got}, expected a list of {length} numbers; "
                "restore the file from the upstream checkout"
            )
        try:
            values[key] = np.asarray(row, dtype=np.float64)
        except (TypeError, ValueError):
            raise CorpusError(f"label file {path}: {key!r} holds non-numbers {row!r}; expected {length} numbers") from None
    return values


def _read_ratings(path: Path, keys: set[str]) -> dict[str, np.ndarray]:
    """key -> float32 [R, 19] ratings / 7 for the labelled ``keys`` (NaN = missing: blank, 0, text or out of 1..7).

    The rule the label file was built with (`crescend_jax.evaluate.ceiling.label_file_ratings`, reproduced on the
    shared files: 962 of 963 label means exact): a rater row holding any answer above 7 is dropped whole, so the
    ratings the noise ceiling uses are the ones the labels average."""
    if not path.is_file():
        raise CorpusError(f"ratings file {path} is missing; point data.root at an upstream PercePiano checkout")
    frame = pd.read_csv(path, dtype=str, keep_default_na=False)
    questions = [c for c in frame.columns if c.startswith("Question_")]
    if "filename" not in frame.columns or len(questions) < NUM_DIMENSIONS:
        raise CorpusError(
            f"ratings file {path} needs a 'filename' column and at least {NUM_DIMENSIONS} Question_* columns "
            f"(found {len(questions)}); restore it from the upstream checkout"
        )
    row_keys = frame["filename"].str.strip().str.removesuffix(".wav").to_numpy()
    keep = np.isin(row_keys, list(keys))
    cells = frame.loc[keep, questions[:NUM_DIMENSIONS]]
    values = cells.apply(pd.to_numeric, errors="coerce").to_numpy(dtype=np.float64, copy=True)
    text = np.isnan(values) & (cells.apply(lambda column: column.str.strip()) != "").to_numpy()
    out_of_range = ~np.isnan(values) & (values != 0) & ~np.isin(values, np.arange(1, RATING_SCALE + 1))
    dropped = (values > RATING_SCALE).any(axis=1)  # the label file's rule: such a rater row is not used at all
    if text.any() or out_of_range.any():
        warnings.warn(
            f"{path}: read as missing {int(text.sum())} rating cells holding text "
            f"({int(text.any(axis=1).sum())} rows) and {int(out_of_range.sum())} outside 1..7; dropped "
            f"{int(dropped.sum())} rater rows with an answer above 7 (as the label file does)",
            RatingsWarning,
            stacklevel=3,
        )
    values[text | out_of_range | (values == 0)] = np.nan
    ratings = (values[~dropped] / RATING_SCALE).astype(np.float32)
    kept_keys = row_keys[keep][~dropped]
    order = np.argsort(kept_keys, kind="stable")
    sorted_keys, wanted = kept_keys[order], sorted(keys)
    starts = np.searchsorted(sorted_keys, wanted, side="left")
    ends = np.searchsorted(sorted_keys, wanted, side="right")
    return {key: ratings[order[s:e]] for key, s, e in zip(wanted, starts, ends)}


def unrated_keys(segments) -> list[str]:
    """Keys (sorted) of ``segments`` without a single finite rating: no row in the ratings CSV, or only missing
    cells. They keep their label means (training uses them) but add nothing to the noise ceiling."""
    return sorted(s.key for s in segments if not np.isfinite(s.ratings).any())


def _warn_unrated(segments, ratings_path: Path) -> None:
    unrated = unrated_keys(segments)
    if unrated:
        shown = ", ".join(unrated[:3]) + (", ..." if len(unrated) > 3 else "")
        warnings.warn(
            f"{ratings_path}: {len(unrated)} of {len(segments)} labelled segments have no rating ({shown}); they are "
            f"trained on but the noise ceiling rests on the other {len(segments) - len(unrated)} (a truncated ratings "
            f"file? restore it from the upstream checkout)",
            UnratedWarning,
            stacklevel=3,
        )


def _sha256(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def content_identity(root: Path) -> dict[str, object]:
    """What decides the segments `load_percepiano` reads under ``root``: sha256 of the two label files, of the
    ratings CSV and of every MIDI file of `MIDI_DIRS` (name and bytes), plus `READER_VERSION`. The location of
    ``root`` is not part of it: two copies of one checkout give the same identity. Whole-checkout problems raise
    `CorpusError`."""
    root = Path(root)
    if not root.is_dir():
        raise CorpusError(f"PercePiano root {root} does not exist; set --config.data.root to the upstream checkout")
    labels_dir = root / "labels"
    label_files = [_find_label_file(labels_dir, "mean"), _find_label_file(labels_dir, "std")]
    ratings_path = labels_dir / RATINGS_CSV
    if not ratings_path.is_file():
        raise CorpusError(f"ratings file {ratings_path} is missing; point data.root at an upstream PercePiano checkout")
    _midi_index(root)  # no MIDI folder at all is a CorpusError
    midi = hashlib.sha256()
    for folder in MIDI_DIRS:  # every file of both folders: performances and the score MIDIs segments align to
        for path in sorted((root / folder).glob("*.mid")):
            midi.update(f"{folder}/{path.name}\0{path.stat().st_size}\0".encode())
            midi.update(path.read_bytes())
    return {"reader": READER_VERSION, "labels": {p.name: _sha256(p) for p in label_files},
            "ratings": _sha256(ratings_path), "midi": midi.hexdigest()}


def _midi_index(root: Path) -> dict[str, Path]:
    """Stripped file stem -> MIDI path; earlier ``MIDI_DIRS`` win (one upstream filename starts with a space)."""
    dirs = [root / d for d in MIDI_DIRS if (root / d).is_dir()]
    if not dirs:
        raise CorpusError(f"no MIDI folder under {root} (expected {' or '.join(MIDI_DIRS)}); check data.root")
    index: dict[str, Path] = {}
    for directory in reversed(dirs):
        for path in directory.glob("*.mid"):
            index[path.stem.strip()] = path
    return index


def score_midi_path(parsed: PercePianoKey, scores: dict[str, Path]) -> Path | None:
    """The score MIDI of the segment ``parsed``: ``<piece>_Score_<segment>``, else ``<piece>_Score2_<segment>``, from
    ``scores`` (stripped stem -> path of ``SCORE_MIDI_DIR``); None when neither exists."""
    for rendition in SCORE_RENDITIONS:
        path = scores.get(f"{parsed.piece}_{rendition}_{parsed.segment}")
        if path is not None:
            return path
    return None


def _outside_label_scale(mean: np.ndarray) -> str:
    """"dimension=value, ..." of the finite label means outside `LABEL_RANGE` ("" when none is)."""
    low, high = LABEL_RANGE
    bad = np.flatnonzero(np.isfinite(mean) & ((mean < low) | (mean > high)))
    return ", ".join(f"{DIMENSIONS[d]}={mean[d]:g}" for d in bad[:4]) + (", ..." if len(bad) > 4 else "")


def load_percepiano(root: Path) -> Corpus:
    """Reads every labelled PercePiano segment under ``root`` (sorted by key).

    Whole-checkout problems raise `CorpusError`; a key that does not parse, has no MIDI file or has a label mean
    outside the label scale `LABEL_RANGE` (e.g. 1e6 or -5: not a rating / 7) becomes a `Problem` in
    ``Corpus.problems`` naming the key and its dimensions, and the other segments are still read. Segments without any rating (`unrated_keys`) are
    kept and counted in one `UnratedWarning`.
    """
    root = Path(root)
    if not root.is_dir():
        raise CorpusError(f"PercePiano root {root} does not exist; set --config.data.root to the upstream checkout")
    labels_dir = root / "labels"
    mean_path = _find_label_file(labels_dir, "mean")
    std_path = _find_label_file(labels_dir, "std")
    means = _read_label_file(mean_path, NUM_DIMENSIONS + 1)
    stds = _read_label_file(std_path, NUM_DIMENSIONS)
    if means.keys() != stds.keys():
        odd = sorted(means.keys() ^ stds.keys())
        raise CorpusError(
            f"{mean_path.name} and {std_path.name} label different keys ({len(odd)} differ, e.g. {odd[:3]}); "
            "use the mean and std files of the same upstream release"
        )
    ratings = _read_ratings(labels_dir / RATINGS_CSV, set(means))
    midi = _midi_index(root)
    score_dir = root / SCORE_MIDI_DIR
    scores = {path.stem.strip(): path for path in score_dir.glob("*.mid")} if score_dir.is_dir() else {}

    segments, problems = [], []
    for key in sorted(means):
        try:
            parsed = parse_key(key)
        except KeyFormatError as err:
            problems.append(Problem(item=key, path=mean_path, message=f"{err}; the segment is skipped",
                                    reason="segment skipped: its key does not parse"))
            continue
        midi_path = midi.get(key)
        if midi_path is None:
            problems.append(
                Problem(item=key, path=root / MIDI_DIRS[0] / f"{key}.mid",
                        message="labelled but no MIDI file in " + " or ".join(MIDI_DIRS) + "; the segment is skipped",
                        reason="segment skipped: no MIDI file")
            )
            continue
        if (outside := _outside_label_scale(means[key][:NUM_DIMENSIONS])):
            problems.append(Problem(item=key, path=mean_path,
                                    message=f"label means outside the label scale [{LABEL_RANGE[0]:g}, "
                                            f"{LABEL_RANGE[1]:g}] (ratings 1..7 / 7): {outside}; the segment is skipped",
                                    reason="segment skipped: label means outside the label scale"))
            continue
        segments.append(
            Segment(
                key=key,
                composition=parsed.composition,
                piece=parsed.piece,
                performer=parsed.performer,
                group=parsed.group,
                midi_path=midi_path,
                label_mean=means[key][:NUM_DIMENSIONS].astype(np.float32),
                label_std=stds[key].astype(np.float32),
                ratings=ratings[key],
                label_truth=np.full(NUM_DIMENSIONS, np.nan, dtype=np.float32),
                score_midi_path=score_midi_path(parsed, scores),
            )
        )
    _warn_unrated(segments, labels_dir / RATINGS_CSV)
    return Corpus(name="percepiano", segments=segments, problems=problems)
