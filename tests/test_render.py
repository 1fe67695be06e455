"""FluidSynth rendering: musical controls reach the audio, determinism, the cache, bad inputs, the pool."""

from pathlib import Path

import mido
import numpy as np
import pytest

from crescend_jax.data import render
from crescend_jax.data.render import (
    RenderCache,
    RenderError,
    RenderSettings,
    SoundfontError,
    default_render_config,
    render_many,
    render_midi,
)

SR = 24000


def write_midi(path: Path, velocity: int = 80, pedal: bool = False, program: int | None = None,
               tempo: int = 500000, channel: int = 0) -> Path:
    """Four staccato quarter notes (0.1 s held at 120 bpm), optionally under the sustain pedal."""
    midi = mido.MidiFile(ticks_per_beat=480)
    track = mido.MidiTrack()
    midi.tracks.append(track)
    track.append(mido.MetaMessage("set_tempo", tempo=tempo, time=0))
    if program is not None:
        track.append(mido.Message("program_change", program=program, channel=channel, time=0))
    if pedal:
        track.append(mido.Message("control_change", control=64, value=127, channel=channel, time=0))
    for note in (60, 64, 67, 72):
        track.append(mido.Message("note_on", note=note, velocity=velocity, channel=channel, time=0))
        track.append(mido.Message("note_off", note=note, velocity=0, channel=channel, time=96))
        track.append(mido.Message("note_on", note=note, velocity=0, channel=channel, time=384))  # rest
    if pedal:
        track.append(mido.Message("control_change", control=64, value=0, channel=channel, time=0))
    midi.save(path)
    return path


def rms(audio: np.ndarray) -> float:
    return float(np.sqrt(np.mean(audio.astype(np.float64) ** 2)))


@pytest.fixture(scope="module")
def settings() -> RenderSettings:
    return RenderSettings("fluidr3")


def test_velocity_makes_louder_audio(tmp_path, settings):
    soft = render_midi(write_midi(tmp_path / "soft.mid", velocity=40), settings)
    loud = render_midi(write_midi(tmp_path / "loud.mid", velocity=100), settings)
    assert soft.shape == loud.shape
    assert rms(loud) > 2.0 * rms(soft)


def test_sustain_pedal_prolongs_the_notes(tmp_path, settings):
    dry = render_midi(write_midi(tmp_path / "dry.mid"), settings)
    pedalled = render_midi(write_midi(tmp_path / "pedal.mid", pedal=True), settings)
    # Between the release of the first note (0.1 s) and the second onset (0.5 s), only the pedal keeps it ringing.
    gap = slice(int(0.25 * SR), int(0.45 * SR))
    assert rms(pedalled[gap]) > 3.0 * rms(dry[gap])


def test_render_is_deterministic_and_finite(tmp_path, settings):
    path = write_midi(tmp_path / "a.mid", pedal=True)
    first, second = render_midi(path, settings), render_midi(path, settings)
    assert first.dtype == np.float32 and first.ndim == 1
    assert np.array_equal(first, second)
    assert np.all(np.isfinite(first)) and 0.0 < np.abs(first).max() < 1.0


@pytest.mark.parametrize("sample_rate,tail", [(16000, 0.5), (24000, 1.0), (44100, 0.0)])
def test_sample_rate_and_length(tmp_path, sample_rate, tail):
    path = write_midi(tmp_path / "a.mid")
    seconds = mido.MidiFile(path).length  # 4 notes x 480 ticks at 120 bpm = 2 s
    audio = render_midi(path, RenderSettings("fluidr3", sample_rate=sample_rate, tail_seconds=tail))
    assert len(audio) == round((seconds + tail) * sample_rate)


def test_tempo_changes_are_honoured(tmp_path, settings):
    normal = render_midi(write_midi(tmp_path / "normal.mid"), settings)
    slow = render_midi(write_midi(tmp_path / "slow.mid", tempo=1000000), settings)
    assert len(slow) == len(normal) + 2 * SR  # 2 s of music becomes 4 s; the 1 s tail stays


def test_piano_is_forced_whatever_the_program_or_channel(tmp_path, settings):
    piano = render_midi(write_midi(tmp_path / "piano.mid"), settings)
    violin = render_midi(write_midi(tmp_path / "violin.mid", program=40), settings)
    drums_channel = render_midi(write_midi(tmp_path / "ch9.mid", channel=9), settings)
    assert np.array_equal(piano, violin)
    assert np.allclose(piano, drums_channel, atol=1e-6)


def test_the_two_soundfonts_sound_different(tmp_path):
    path = write_midi(tmp_path / "a.mid")
    fluid = render_midi(path, RenderSettings("fluidr3"))
    musescore = render_midi(path, RenderSettings("musescore"))
    assert fluid.shape == musescore.shape and rms(musescore) > 0
    assert abs(np.corrcoef(fluid, musescore)[0, 1]) < 0.9


def test_loud_input_is_clipped_with_a_warning(tmp_path):
    path = write_midi(tmp_path / "loud.mid", velocity=127, pedal=True)
    with pytest.warns(UserWarning, match="clipped"):
        audio = render_midi(path, RenderSettings("fluidr3", gain=10.0))
    assert np.abs(audio).max() <= 1.0


def test_settings_id_is_stable_and_tracks_every_setting():
    base = RenderSettings("fluidr3")
    assert base.settings_id == RenderSettings(render.SOUNDFONTS["fluidr3"]).settings_id
    assert base.settings_id.startswith("fluidr3-24k-")
    others = {RenderSettings("fluidr3", gain=0.4).settings_id, RenderSettings("fluidr3", tail_seconds=2.0).settings_id,
              RenderSettings("fluidr3", sample_rate=22050).settings_id, RenderSettings("musescore").settings_id}
    assert len(others) == 4 and base.settings_id not in others


def test_config_builds_settings():
    config = default_render_config()
    assert config.soundfonts == ("fluidr3",) and config.workers == 2 and config.sample_rate == 24000
    settings = RenderSettings.from_config(config, config.soundfonts[0])
    assert settings == RenderSettings("fluidr3", gain=config.gain, tail_seconds=config.tail_seconds)


def test_cache_hit_returns_identical_audio_without_rendering(tmp_path, settings, monkeypatch):
    path = write_midi(tmp_path / "a.mid", pedal=True)
    cache = RenderCache(tmp_path / "cache")
    first = cache.render(path, settings)
    assert np.abs(first - render_midi(path, settings)).max() <= 2.0 ** -23  # 24-bit FLAC storage
    entry = cache.path(path.read_bytes(), settings)
    assert entry.is_file() and entry.parent.name == settings.settings_id
    assert not list(entry.parent.glob("*.tmp"))

    def fail(*args):
        raise AssertionError("rendered despite a cache hit")

    monkeypatch.setattr(render, "render_midi", fail)
    assert np.array_equal(cache.render(path, settings), first)
    copy = tmp_path / "renamed.mid"
    copy.write_bytes(path.read_bytes())  # the key is the content, not the name
    assert np.array_equal(cache.render(copy, settings), first)
    with pytest.raises(AssertionError):
        cache.render(path, RenderSettings("fluidr3", gain=0.4))  # other settings: a miss


def test_missing_midi(tmp_path, settings):
    with pytest.raises(RenderError, match=r"missing\.mid does not exist"):
        render_midi(tmp_path / "missing.mid", settings)
    with pytest.raises(RenderError, match="does not exist"):
        RenderCache(tmp_path / "cache").render(tmp_path / "missing.mid", settings)


def test_empty_midi(tmp_path, settings):
    (tmp_path / "empty.mid").write_bytes(b"")
    with pytest.raises(RenderError, match=r"empty\.mid is empty"):
        render_midi(tmp_path / "empty.mid", settings)


def test_corrupt_midi(tmp_path, settings):
    (tmp_path / "junk.mid").write_bytes(b"this is not a midi file at all")
    truncated = write_midi(tmp_path / "truncated.mid").read_bytes()[:30]
    (tmp_path / "truncated.mid").write_bytes(truncated)
    for name in ("junk.mid", "truncated.mid"):
        with pytest.raises(RenderError, match=rf"{name} is corrupt"):
            render_midi(tmp_path / name, settings)


def test_midi_without_notes(tmp_path, settings):
    midi = mido.MidiFile()
    midi.tracks.append(mido.MidiTrack([mido.Message("control_change", control=64, value=127, time=100)]))
    midi.save(tmp_path / "silent.mid")
    with pytest.raises(RenderError, match=r"silent\.mid has no notes"):
        render_midi(tmp_path / "silent.mid", settings)


def test_absent_soundfont_names_file_and_fix(tmp_path):
    with pytest.raises(SoundfontError, match=r"nope\.sf2 does not exist.*make setup.*apt-get install"):
        RenderSettings(tmp_path / "nope.sf2")
    with pytest.raises(SoundfontError, match="Known names"):
        RenderSettings("steinway")


def test_unreadable_soundfont(tmp_path):
    (tmp_path / "garbage.sf2").write_bytes(b"not a RIFF file")
    settings = RenderSettings(tmp_path / "garbage.sf2")
    with pytest.raises(SoundfontError, match=r"cannot load soundfont .*garbage\.sf2"):
        render_midi(write_midi(tmp_path / "a.mid"), settings)


def test_render_many_returns_errors_as_values(tmp_path, settings):
    good = [write_midi(tmp_path / f"{v}.mid", velocity=v) for v in (50, 90)]
    paths = [good[0], tmp_path / "missing.mid", good[1]]
    for workers in (1, 2):
        results = dict(render_many(paths, settings, RenderCache(tmp_path / f"cache{workers}"), workers=workers))
        assert sorted(results) == [0, 1, 2]
        assert isinstance(results[1], RenderError) and "missing.mid" in str(results[1])
        for index in (0, 2):
            assert np.abs(results[index] - render_midi(paths[index], settings)).max() <= 2.0 ** -23
