"""The record every corpus produces: one performance of one same-music segment."""

from __future__ import annotations

import dataclasses
from pathlib import Path

import numpy as np

DEADPAN_PERFORMERS = ("Score", "Score2")


@dataclasses.dataclass(frozen=True)
class Window:
    """A segment cut from a longer performance by bars (ASAP's same-music windows).

    Attributes:
      index: k, the window's number within the piece: windows k of all performances of a piece play the same bars.
      first_downbeat: index of its first annotated downbeat (window k spans downbeats k * bars .. (k + 1) * bars).
      bars: number of bars (annotated downbeat to downbeat).
      source_midi: the whole performance MIDI the segment was cut from.
      start_seconds, end_seconds: the cut [start, end) in ``source_midi``'s time.
      score_start_seconds, score_end_seconds: the same bars in the score MIDI's time (its annotated downbeats).
      beats, score_beats: every annotated beat from the window's first downbeat to its closing one (inclusive), in
        the time of the window's own MIDI files (seconds from the cut's start: the performance's and the score's), one
        to one: beats[b] was played where the score has score_beats[b]. Empty when not known.
    """

    index: int
    first_downbeat: int
    bars: int
    source_midi: Path
    start_seconds: float
    end_seconds: float
    score_start_seconds: float
    score_end_seconds: float
    beats: tuple[float, ...] = ()
    score_beats: tuple[float, ...] = ()


@dataclasses.dataclass(frozen=True)
class Segment:
    """One labelled performance segment.

    Attributes:
      key: unique id, e.g. ``Schubert_D960_mv3_8bars_3_12`` (PercePiano ``<piece>_<N>bars_<performer>_<segment>``).
      composition: the unit splits are made by (e.g. ``Schubert_D960_mv3``); never split below this.
      piece: the music excerpt family, ``<composition>_<N>bars`` for PercePiano.
      performer: performer id as a string; ``Score``/``Score2`` are deadpan score renditions.
      group: same-music group id ``<piece>_<segment>``: performances of identical music.
      midi_path: MIDI file of the performance.
      label_mean: float32 [19], mean rating per dimension scaled to [0, 1].
      label_std: float32 [19], rater standard deviation per dimension (NaN when unknown).
      ratings: float32 [R, 19], individual raters' ratings on the label scale, NaN = missing (R may be 0).
      label_truth: float32 [19], noiseless truth when the corpus is simulated, else all NaN.
      score_midi_path: MIDI file of the score this segment plays (a deadpan rendition), or None when the corpus
        has none; symbolic encoders align the performance against it.
      work: the musical work when it is coarser than ``composition`` (ASAP: ``<composer>/<title>``, shared by
        score folders that differ only in repeats, e.g. ``17-1`` and ``17-1_no_repeat``); "" = the composition.
      window: where the segment was cut from a longer performance (ASAP), None when ``midi_path`` is the whole item.
      derived: float32 [len(performance_labels.DERIVED_LABELS)] labels computed from the performance MIDI (NaN where
        undefined), or None when the corpus has none.
      in_percepiano: the composition is (conservatively) also a PercePiano composition: pre-training on it would
        leak into a PercePiano test fold.
      factors: float32 [F] the simulated performer's latent factors for this very performance, in
        `performers.FACTOR_NAMES` order (NaN for a deadpan rendition, which no performer played), or None when the
        corpus knows no factors (real performances).
    """

    key: str
    composition: str
    piece: str
    performer: str
    group: str
    midi_path: Path
    label_mean: np.ndarray
    label_std: np.ndarray
    ratings: np.ndarray
    label_truth: np.ndarray
    score_midi_path: Path | None = None
    work: str = ""
    window: Window | None = None
    derived: np.ndarray | None = None
    in_percepiano: bool = False
    factors: np.ndarray | None = None

    @property
    def is_deadpan(self) -> bool:
        return self.performer in DEADPAN_PERFORMERS


@dataclasses.dataclass(frozen=True)
class Problem:
    """One bad input: what it is, the file, and the fix, e.g. a key that does not parse or a corrupt MIDI.

    ``reason``: a short category shared by problems of one kind (e.g. "performance skipped: downbeat count differs
    from the score's"), by which summaries count them; "" = the message itself.
    """

    item: str
    path: Path | None
    message: str
    reason: str = ""

    @property
    def kind(self) -> str:
        """``reason``, or the message when there is none."""
        return self.reason or self.message

    def __str__(self) -> str:
        where = f" ({self.path})" if self.path is not None else ""
        return f"{self.item}{where}: {self.message}"


@dataclasses.dataclass
class Corpus:
    """What a corpus reader returns: the good segments and the problems met on the way."""

    name: str
    segments: list[Segment]
    problems: list[Problem]
