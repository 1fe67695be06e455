"""Offline MIDI -> waveform rendering with FluidSynth, a content-addressed render cache and a process pool.

Every item gets a fresh ``fluidsynth.Synth`` with reverb and chorus off, so the same MIDI and settings give
bit-identical audio in any process. Events are fed in file order and samples pulled with
``fluid_synth_write_float`` between them (float output: no int16 dither, whose table depends on the C ``rand()``
state of the process). FluidSynth applies events at 64-sample block boundaries (2.7 ms at 24 kHz).
"""

from __future__ import annotations

import ctypes
import dataclasses
import functools
import hashlib
import io
import multiprocessing
import os
import re
import tempfile
import warnings
from pathlib import Path
from typing import Iterator, Sequence

import fluidsynth
import mido
import ml_collections
import numpy as np
import soundfile

from crescend_jax.errors import ConfigError
from tqdm import tqdm

SOUNDFONTS = {
    "fluidr3": Path("/usr/share/sounds/sf2/FluidR3_GM.sf2"),
    "musescore": Path("/usr/share/sounds/sf3/MuseScore_General_Lite.sf3"),
}
# Bump when the rendering algorithm changes: it is part of every settings_id, so old cache entries stop matching.
RENDERER_VERSION = 1
MAX_MIDI_SECONDS = 3600.0  # longer means a corrupt delta time, not a performance segment
_BANK_SELECT_CONTROLLERS = (0, 32)  # ignored: the piano (bank 0, program 0) is forced on every channel
_MIDI_CHANNELS = 16
_POLYPHONY = 1024  # dense pedalled passages exceed FluidSynth's default 256 voices and would steal notes

_write_float = fluidsynth.cfunc(
    "fluid_synth_write_float", ctypes.c_int,
    ("synth", ctypes.c_void_p, 1), ("len", ctypes.c_int, 1),
    ("lbuf", ctypes.c_void_p, 1), ("loff", ctypes.c_int, 1), ("lincr", ctypes.c_int, 1),
    ("rbuf", ctypes.c_void_p, 1), ("roff", ctypes.c_int, 1), ("rincr", ctypes.c_int, 1))
_channel_pressure = fluidsynth.cfunc(
    "fluid_synth_channel_pressure", ctypes.c_int,
    ("synth", ctypes.c_void_p, 1), ("chan", ctypes.c_int, 1), ("val", ctypes.c_int, 1))
_key_pressure = fluidsynth.cfunc(
    "fluid_synth_key_pressure", ctypes.c_int,
    ("synth", ctypes.c_void_p, 1), ("chan", ctypes.c_int, 1), ("key", ctypes.c_int, 1), ("val", ctypes.c_int, 1))
_version_str = fluidsynth.cfunc("fluid_version_str", ctypes.c_char_p)


class RenderError(Exception):
    """A MIDI file that cannot be rendered (missing, empty, corrupt, no notes); the message names the file."""


class SoundfontError(ConfigError, FileNotFoundError):
    """A soundfont that is unknown or absent; the message names the file and how to install it."""


def resolve_soundfont(soundfont: str | Path) -> Path:
    """A soundfont name (``"fluidr3"``, ``"musescore"``) or a .sf2/.sf3 path -> the resolved existing file."""
    path = SOUNDFONTS.get(str(soundfont), Path(soundfont))
    if not path.is_file():
        known = ", ".join(f"{name!r} ({p})" for name, p in SOUNDFONTS.items())
        raise SoundfontError(
            f"soundfont {soundfont!r}: file {path} does not exist. Install the default soundfonts with `make setup` "
            f"(or `apt-get install fluid-soundfont-gm musescore-general-soundfont-small`), or pass the path of an "
            f"existing .sf2/.sf3 file. Known names: {known}")
    return path.resolve()


@functools.lru_cache(maxsize=16)
def _file_sha256(path: Path, size: int, mtime_ns: int) -> str:
    """sha256 of a file's bytes; size and mtime are in the cache key so an edited file is hashed again."""
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 22), b""):
            digest.update(block)
    return digest.hexdigest()


@dataclasses.dataclass(frozen=True)
class RenderSettings:
    """How a MIDI becomes audio.

    soundfont: the .sf2/.sf3 file; a name ("fluidr3", "musescore") or path is accepted and stored resolved.
    sample_rate: Hz of the returned audio.
    gain: FluidSynth's linear master gain. 0.5 keeps a pedalled fortissimo 10-note chord below full scale
      (measured peaks at gain 1: 1.17 for one chord, 1.57 for four overlapping ones, FluidR3); PercePiano
      segments then peak at <= ~0.3.
    tail_seconds: audio kept after the last MIDI event (release of held notes and pedal).
    """

    soundfont: Path
    sample_rate: int = 24000
    gain: float = 0.5
    tail_seconds: float = 1.0

    def __post_init__(self) -> None:
        object.__setattr__(self, "soundfont", resolve_soundfont(self.soundfont))
        if self.sample_rate < 8000 or self.sample_rate > 96000:
            raise ValueError(f"RenderSettings.sample_rate={self.sample_rate}: FluidSynth renders 8000..96000 Hz")
        if not 0.0 < self.gain <= 10.0:
            raise ValueError(f"RenderSettings.gain={self.gain}: must be in (0, 10]")
        if self.tail_seconds < 0:
            raise ValueError(f"RenderSettings.tail_seconds={self.tail_seconds}: must be >= 0")

    @classmethod
    def from_config(cls, config: ml_collections.ConfigDict, soundfont: str | Path) -> "RenderSettings":
        """Settings for one of ``config.soundfonts`` (``config`` is `default_render_config`'s shape)."""
        return cls(soundfont=soundfont, sample_rate=int(config.sample_rate),
                   gain=float(config.gain), tail_seconds=float(config.tail_seconds))

    @property
    def soundfont_name(self) -> str:
        """The alias when the soundfont is a known one, else a slug of the file name."""
        for name, path in SOUNDFONTS.items():
            if path.is_file() and path.resolve() == self.soundfont:
                return name
        return re.sub(r"[^a-z0-9]+", "_", self.soundfont.stem.lower()).strip("_")

    @property
    def settings_id(self) -> str:
        """``<soundfont>-<sr/1000>k-<hash>``; the hash covers the soundfont's bytes, every setting, the FluidSynth
        version and `RENDERER_VERSION`, so any change that can change the audio changes the id."""
        stat = self.soundfont.stat()
        content = "|".join([
            _file_sha256(self.soundfont, stat.st_size, stat.st_mtime_ns), str(self.sample_rate), repr(self.gain),
            repr(self.tail_seconds), _version_str().decode(), str(RENDERER_VERSION)])
        digest = hashlib.sha256(content.encode()).hexdigest()[:10]
        return f"{self.soundfont_name}-{self.sample_rate / 1000:g}k-{digest}"


def default_render_config() -> ml_collections.ConfigDict:
    """``config.render``: soundfonts to render each MIDI with (one store per soundfont), settings, pool, cache."""
    config = ml_collections.ConfigDict()
    config.soundfonts = ("fluidr3",)  # add "musescore" for a second piano timbre (augmentation)
    config.sample_rate = 24000
    config.gain = 0.5
    config.tail_seconds = 1.0
    config.workers = 2
    config.cache_dir = "cache/render"
    return config


def _read_events(midi_path: Path) -> tuple[list[tuple[float, mido.Message]], float]:
    """(seconds from the start, message) for every channel message, tempo changes applied; and the file length."""
    if not midi_path.is_file():
        raise RenderError(f"MIDI {midi_path} does not exist; check the corpus path")
    if midi_path.stat().st_size == 0:
        raise RenderError(f"MIDI {midi_path} is empty (0 bytes); re-export or re-download it")
    try:
        midi = mido.MidiFile(midi_path)
        events, now = [], 0.0
        for message in midi:  # merged tracks, ``time`` = seconds since the previous message
            now += message.time
            if not message.is_meta and message.type != "sysex":
                events.append((now, message))
    except Exception as err:  # mido raises OSError, EOFError, ValueError, KeyError, TypeError on bad files
        raise RenderError(f"MIDI {midi_path} is corrupt: {type(err).__name__}: {err}; re-export it") from None
    if not any(m.type == "note_on" and m.velocity > 0 for _, m in events):
        raise RenderError(f"MIDI {midi_path} has no notes (no note_on with velocity > 0); nothing to render")
    if now > MAX_MIDI_SECONDS:
        raise RenderError(f"MIDI {midi_path} lasts {now:.0f} s (> {MAX_MIDI_SECONDS:.0f} s): corrupt delta times")
    return events, now


# One synth per soundfont kept alive in each process: FluidSynth shares loaded sample data between synths of a
# process, so a fresh per-item synth loads the soundfont in ~0.02 s instead of 0.1-1.5 s (sf3 = Vorbis decoding).
_SAMPLE_HOLDERS: dict[Path, fluidsynth.Synth] = {}


def _new_synth(settings: RenderSettings) -> fluidsynth.Synth:
    """A fresh synth with effects off and the piano (bank 0, program 0) on every channel."""
    options = {"synth.reverb.active": 0, "synth.chorus.active": 0, "synth.dynamic-sample-loading": 1,
               "synth.polyphony": _POLYPHONY}
    if settings.soundfont not in _SAMPLE_HOLDERS:
        holder = fluidsynth.Synth(gain=settings.gain, samplerate=settings.sample_rate, channels=_MIDI_CHANNELS,
                                  **options)
        holder_id = holder.sfload(str(settings.soundfont))
        if holder_id < 0:
            holder.delete()
            raise SoundfontError(f"FluidSynth cannot load soundfont {settings.soundfont} (see its error above); "
                                 f"pass a valid .sf2/.sf3 file")
        holder.program_select(0, holder_id, 0, 0)
        _SAMPLE_HOLDERS[settings.soundfont] = holder
    synth = fluidsynth.Synth(gain=settings.gain, samplerate=settings.sample_rate, channels=_MIDI_CHANNELS, **options)
    sfid = synth.sfload(str(settings.soundfont))
    for channel in range(_MIDI_CHANNELS):
        if synth.program_select(channel, sfid, 0, 0) != fluidsynth.FLUID_OK:
            synth.delete()
            raise SoundfontError(f"soundfont {settings.soundfont} has no piano preset (bank 0, program 0); "
                                 f"pass a General MIDI soundfont")
    return synth


def _send(synth: fluidsynth.Synth, message: mido.Message) -> None:
    kind = message.type
    if kind == "note_on":
        synth.noteon(message.channel, message.note, message.velocity)
    elif kind == "note_off":
        synth.noteoff(message.channel, message.note)
    elif kind == "control_change" and message.control not in _BANK_SELECT_CONTROLLERS:
        synth.cc(message.channel, message.control, message.value)
    elif kind == "pitchwheel":
        synth.pitch_bend(message.channel, message.pitch)
    elif kind == "aftertouch":
        _channel_pressure(synth.synth, message.channel, message.value)
    elif kind == "polytouch":
        _key_pressure(synth.synth, message.channel, message.note, message.value)
    # program_change is ignored: the piano stays forced on every channel.


def render_midi(midi_path: Path, settings: RenderSettings) -> np.ndarray:
    """Renders a MIDI file: float32 [round((length + tail) * sample_rate)] mono (mean of stereo), no normalisation.

    Sustain pedal and all controllers, pitch bend, aftertouch and tempo changes are honoured; program changes,
    bank selects and sysex are ignored (piano forced). Samples beyond full scale are clipped with a warning.
    """
    midi_path = Path(midi_path)
    events, length = _read_events(midi_path)
    sr = settings.sample_rate
    stereo = np.zeros((int(round((length + settings.tail_seconds) * sr)), 2), np.float32)
    base = stereo.ctypes.data
    synth = _new_synth(settings)
    try:
        done = 0
        for seconds, message in events:
            target = min(int(round(seconds * sr)), len(stereo))
            if target > done:
                _write_float(synth.synth, target - done, base, 2 * done, 2, base, 2 * done + 1, 2)
                done = target
            _send(synth, message)
        if len(stereo) > done:
            _write_float(synth.synth, len(stereo) - done, base, 2 * done, 2, base, 2 * done + 1, 2)
    finally:
        synth.delete()
    audio = stereo.mean(axis=1, dtype=np.float32)
    clipped = int(np.count_nonzero(np.abs(audio) > 1.0))
    if clipped:
        warnings.warn(f"rendering {midi_path}: {clipped} samples beyond full scale were clipped; "
                      f"lower render gain (now {settings.gain})", stacklevel=2)
        np.clip(audio, -1.0, 1.0, out=audio)
    return audio


class RenderCache:
    """Rendered audio by content: ``<directory>/<settings_id>/<sha256 of the MIDI bytes>.flac``.

    Stored as FLAC PCM_24: lossless up to the 24-bit quantisation (max error 2^-24 ~ 6e-8 of full scale,
    -144 dBFS, far below the synth's own noise), at ~1/3-1/2 of float32 .npy on disk. A miss returns the
    decoded 24-bit audio, so a miss and a later hit give identical arrays. Writes are atomic (temp file +
    ``os.replace``), so concurrent workers and interrupted runs never leave a partial entry.
    """

    def __init__(self, directory: str | Path):
        self.directory = Path(directory)

    def path(self, midi_bytes: bytes, settings: RenderSettings) -> Path:
        """Where the rendering of these MIDI bytes with ``settings`` is stored."""
        return self.directory / settings.settings_id / f"{hashlib.sha256(midi_bytes).hexdigest()}.flac"

    def render(self, midi_path: Path, settings: RenderSettings) -> np.ndarray:
        """The cached audio for ``midi_path`` under ``settings``, rendering and storing it on a miss."""
        midi_path = Path(midi_path)
        try:
            midi_bytes = midi_path.read_bytes()
        except OSError:
            return render_midi(midi_path, settings)  # raises the RenderError that names the problem
        entry = self.path(midi_bytes, settings)
        if entry.is_file():
            audio, sr = soundfile.read(entry, dtype="float32")
            if sr != settings.sample_rate:
                raise RenderError(f"render cache entry {entry} has {sr} Hz, expected {settings.sample_rate}; "
                                  f"delete it")
            return audio
        audio = render_midi(midi_path, settings)
        encoded = io.BytesIO()
        soundfile.write(encoded, audio, settings.sample_rate, format="FLAC", subtype="PCM_24")
        entry.parent.mkdir(parents=True, exist_ok=True)
        with tempfile.NamedTemporaryFile(dir=entry.parent, suffix=".tmp", delete=False) as f:
            f.write(encoded.getvalue())
        os.replace(f.name, entry)
        encoded.seek(0)
        return soundfile.read(encoded, dtype="float32")[0]


def _render_job(job: tuple[int, Path, RenderSettings, RenderCache | None]) -> tuple[int, np.ndarray | Exception]:
    index, path, settings, cache = job
    try:
        audio = cache.render(path, settings) if cache is not None else render_midi(path, settings)
    except RenderError as err:
        return index, err
    except Exception as err:  # anything else comes back as a value too (and always pickles)
        return index, RenderError(f"rendering {path} failed: {type(err).__name__}: {err}")
    return index, audio


def render_many(paths: Sequence[Path], settings: RenderSettings, cache: RenderCache | None,
                workers: int) -> Iterator[tuple[int, np.ndarray | Exception]]:
    """Renders ``paths`` over ``workers`` processes, yielding ``(index into paths, audio or the error)`` as each
    finishes (unordered), so the caller can encode while rendering goes on. ``workers <= 1`` renders in this
    process. Errors are returned as values; the pool keeps going."""
    jobs = [(i, Path(p), settings, cache) for i, p in enumerate(paths)]
    progress = tqdm(total=len(jobs), desc=f"render {settings.settings_id}", unit="seg")
    try:
        if workers <= 1 or len(jobs) <= 1:
            for job in jobs:
                yield _render_job(job)
                progress.update()
            return
        # spawn, not fork: the caller may already run JAX threads, which fork would copy in an undefined state.
        with multiprocessing.get_context("spawn").Pool(min(workers, len(jobs))) as pool:
            for result in pool.imap_unordered(_render_job, jobs, chunksize=1):
                yield result
                progress.update()
    finally:
        progress.close()
