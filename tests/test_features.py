"""The librosa feature encoder: shapes, pooling, what each layer responds to, determinism, naming, resampling."""

import numpy as np
import pytest

from crescend_jax import encoders
from crescend_jax.encoders import build_encoder
from crescend_jax.encoders.base import resample
from crescend_jax.encoders.features import FeatureEncoder, default_encoder_config

SR = 24000


@pytest.fixture(scope="module")
def encoder() -> FeatureEncoder:
    return build_encoder(encoders.default_encoder_config())  # config.encoder as configs/ build it


def piano_like(seconds: float = 2.0, amplitude: float = 0.1, onsets_per_second: float = 2.0) -> np.ndarray:
    """Decaying harmonic tones (A3 + partials) struck at a regular rate: onsets, decays, a pitch."""
    t = np.arange(int(seconds * SR)) / SR
    tone = sum(np.sin(2 * np.pi * 220.0 * k * t) / k for k in (1, 2, 3, 4))
    envelope = np.exp(-6.0 * (t % (1.0 / onsets_per_second)))
    return (amplitude * tone * envelope).astype(np.float32)


def layer(encoded, encoder, name):
    return encoded.pooled.reshape(encoder.num_layers, encoder.dim)[encoder.layers.index(name)]


def test_default_encoder(encoder):
    assert isinstance(encoder, FeatureEncoder)
    assert encoder.sample_rate == SR and encoder.frame_rate == 25.0
    assert encoder.layers == ("level", "flux", "deviation") and encoder.num_layers == 3
    assert encoder.dim == 128 + 88
    assert encoder.name.startswith("features-mel128-cqt88-")


def test_shapes_for_any_length(encoder):
    lengths = [1, 959, 960, 961, 24000, 24001, 37 * 960 + 17]
    rng = np.random.default_rng(0)
    waveforms = [(0.05 * rng.standard_normal(n)).astype(np.float32) for n in lengths]
    for n, encoded in zip(lengths, encoder.encode(waveforms)):
        frames = 1 + n // 960
        assert encoded.frames.shape == (3, frames, encoder.dim) and encoded.frames.dtype == np.float32
        assert encoded.pooled.shape == (3 * encoder.dim,) and encoded.pooled.dtype == np.float32
        assert np.all(np.isfinite(encoded.frames))


def test_pooled_is_the_per_layer_time_mean(encoder):
    (encoded,) = encoder.encode([piano_like()])
    np.testing.assert_allclose(encoded.pooled, encoded.frames.mean(axis=1).reshape(-1), rtol=1e-6)
    first_frame_flux = encoded.frames[encoder.layers.index("flux"), 0]
    assert np.all(first_frame_flux == 0.0) and np.all(encoded.frames[1:] >= 0.0)


A3_CQT_BIN = 128 + 36  # CQT bins start after the 128 mel bins, at A0; A3 (220 Hz) is 36 semitones up


def test_louder_input_raises_the_level_layer_by_its_decibels(encoder):
    quiet, loud = encoder.encode([piano_like(amplitude=0.05), piano_like(amplitude=0.2)])
    rise = layer(loud, encoder, "level") - layer(quiet, encoder, "level")
    expected = 20 * np.log10(4.0) / encoder.db_scale  # +12 dB in standardised units
    quietest = quiet.frames[encoder.layers.index("level")].min(axis=0)
    audible = quietest > (-80.0 - encoder.db_center) / encoder.db_scale  # in every frame far above the -100 dB floor
    assert audible.sum() > 20 and audible[A3_CQT_BIN]
    np.testing.assert_allclose(rise[audible], expected, rtol=0.02)
    assert np.all(rise > -1e-5)  # bins at the -100 dB floor rise less, never fall
    # Gain does not change the shape over time: where the sound is, flux and deviation stay where they were.
    for name in ("flux", "deviation"):
        change = layer(loud, encoder, name) - layer(quiet, encoder, name)
        assert np.abs(change[audible]).max() < 0.02 * expected


def test_flux_follows_onsets_and_deviation_follows_dynamics(encoder):
    sparse, dense = encoder.encode([piano_like(onsets_per_second=1.0), piano_like(onsets_per_second=4.0)])
    assert layer(dense, encoder, "flux").mean() > 1.5 * layer(sparse, encoder, "flux").mean()
    t = np.arange(2 * SR) / SR
    steady = (0.1 * np.sin(2 * np.pi * 220.0 * t)).astype(np.float32)
    swelling = (steady * (0.1 + 0.9 * (t / t[-1]))).astype(np.float32)  # crescendo, 20 dB
    flat, crescendo = encoder.encode([steady, swelling])
    flat_spread = layer(flat, encoder, "deviation")[A3_CQT_BIN]
    crescendo_spread = layer(crescendo, encoder, "deviation")[A3_CQT_BIN]
    assert crescendo_spread > 5.0 * flat_spread
    assert crescendo_spread == pytest.approx(5.0 / encoder.db_scale, rel=0.25)  # mean |dB - mean| of a 20 dB ramp


def test_deterministic_and_independent_of_the_batch(encoder):
    a, b = piano_like(), piano_like(seconds=1.3, onsets_per_second=3.0)
    together = encoder.encode([a, b])
    alone = encoder.encode([b])
    again = encoder.encode([a, b])
    assert np.array_equal(together[1].frames, alone[0].frames)
    assert all(np.array_equal(x.frames, y.frames) for x, y in zip(together, again))


def test_name_changes_with_every_setting():
    base = default_encoder_config()
    names = {FeatureEncoder.from_config(base).name}
    for field, value in [("n_mels", 64), ("cqt_bins", 84), ("hop_length", 480), ("db_scale", 20.0),
                         ("layers", ("level", "flux"))]:
        config = default_encoder_config()
        config[field] = value
        names.add(FeatureEncoder.from_config(config).name)
    assert len(names) == 6
    assert FeatureEncoder.from_config(base).name == FeatureEncoder().name  # stable across instances
    assert "features-mel64-" in FeatureEncoder(n_mels=64).name


def test_layer_subset_sets_the_widths():
    encoder = FeatureEncoder(layers=("level",), n_mels=32, cqt_bins=48, cqt_fmin=65.4)
    (encoded,) = encoder.encode([piano_like(seconds=0.5)])
    assert encoder.dim == 80 and encoded.frames.shape == (1, 13, 80) and encoded.pooled.shape == (80,)


def test_bad_settings_and_inputs_raise(encoder):
    with pytest.raises(ValueError, match="layers"):
        FeatureEncoder(layers=("level", "chroma"))
    with pytest.raises(ValueError, match="Nyquist"):
        FeatureEncoder(sample_rate=8000)
    config = default_encoder_config()
    config.name = "muq"
    with pytest.raises(ValueError, match="expected 'features'"):
        FeatureEncoder.from_config(config)
    with pytest.raises(ValueError, match="waveform 1: expected mono"):
        encoder.encode([piano_like(0.2), np.zeros((2, 4800), np.float32)])
    with pytest.raises(ValueError, match="waveform 0: expected mono"):
        encoder.encode([np.zeros(0, np.float32)])
    with pytest.raises(ValueError, match="waveform 0: contains NaN"):
        encoder.encode([np.full(4800, np.nan, np.float32)])


def test_resample_keeps_pitch_and_duration(encoder):
    t = np.arange(48000) / 48000
    tone_48k = np.sin(2 * np.pi * 440.0 * t).astype(np.float32)
    tone_24k = resample(tone_48k, 48000, SR)
    assert tone_24k.dtype == np.float32 and len(tone_24k) == SR
    spectrum = np.abs(np.fft.rfft(tone_24k))
    assert np.argmax(spectrum) * SR / len(tone_24k) == pytest.approx(440.0, abs=1.0)
    assert resample(tone_24k, SR, SR) is tone_24k
