"""MuQ encoder: tiny random MuQ models saved with save_pretrained and loaded the way a user loads the real one."""

import json
from pathlib import Path

import librosa
import ml_collections
import mido
import numpy as np
import pytest
import soundfile

torch = pytest.importorskip("torch")

from crescend_jax import encoders  # noqa: E402
from crescend_jax.encoders import build_encoder  # noqa: E402
from crescend_jax.encoders.base import resample  # noqa: E402
from crescend_jax.encoders import _torchaudio_shim as shim  # noqa: E402
from crescend_jax.encoders.muq import (  # noqa: E402
    CheckpointError, MuQEncoder, import_muq, load_muq, muq_config_dict)

SR = 24_000
TINY = dict(encoder_dim=32, depth=3, heads=4, ffn_dim=64, conv_dim=8, conv_kernel=5, codebook_size=64)


def save_tiny_muq(directory: Path, seed: int = 0, **overrides) -> Path:
    """A random-weight MuQ with TINY dims (``overrides`` change them), saved like a downloaded checkpoint."""
    MuQ, MuQConfig = import_muq()
    torch.manual_seed(seed)
    model = MuQ(MuQConfig(**muq_config_dict(**{**TINY, **overrides}))).eval()
    with torch.no_grad():  # non-trivial batch-norm statistics, so the padding logic is really exercised
        for module in model.modules():
            if isinstance(module, (torch.nn.BatchNorm1d, torch.nn.BatchNorm2d)):
                module.running_mean.uniform_(-0.5, 0.5)
                module.running_var.uniform_(0.5, 2.0)
    model.save_pretrained(directory)
    return directory


@pytest.fixture(scope="module")
def tiny_dir(tmp_path_factory) -> Path:
    return save_tiny_muq(tmp_path_factory.mktemp("tiny-muq"))


def encoder_config(checkpoint: Path, **fields) -> ml_collections.ConfigDict:
    """A ``config.encoder`` section that picks MuQ, loaded from ``checkpoint``."""
    config = encoders.default_encoder_config()
    config.name = "muq"
    config.muq.checkpoint = str(checkpoint)
    config.muq.device = "cpu"
    config.muq.layers = (1, 3)  # the tiny model has 3 conformer layers
    config.muq.update(fields)
    return config


def noise(seconds: float, seed: int) -> np.ndarray:
    rng = np.random.default_rng(seed)
    tone = np.sin(2 * np.pi * 440 * np.arange(int(seconds * SR)) / SR)
    return (0.3 * tone + 0.05 * rng.standard_normal(int(seconds * SR))).astype(np.float32)


def direct_hidden_states(model, wave: np.ndarray) -> list[np.ndarray]:
    """MuQ's own forward on one unpadded waveform: hidden_states as float32 [T, dim] arrays."""
    with torch.inference_mode():
        return [h[0].numpy() for h in model(torch.from_numpy(wave)[None], output_hidden_states=True).hidden_states]


def test_shim_matches_librosa_formulas():
    """Mel filters, power spectrogram and dB of the shim equal librosa's HTK/unnormalised/centred versions."""
    fb = shim.melscale_fbanks(1025, 0.0, 12000.0, 128, SR).numpy()
    np.testing.assert_allclose(fb.T, librosa.filters.mel(sr=SR, n_fft=2048, n_mels=128, htk=True, norm=None),
                               atol=2e-5)  # torchaudio computes the points in float32, librosa in float64
    wave = noise(1.0, seed=1)
    mel = shim.MelSpectrogram(sample_rate=SR, n_fft=2048, hop_length=240, n_mels=128)
    db = shim.AmplitudeToDB()(mel(torch.from_numpy(wave))).numpy()
    power = np.abs(librosa.stft(wave, n_fft=2048, hop_length=240, window="hann", center=True,
                                pad_mode="reflect")) ** 2
    expected = librosa.power_to_db(librosa.filters.mel(sr=SR, n_fft=2048, n_mels=128, htk=True, norm=None) @ power,
                                   ref=1.0, amin=1e-10, top_db=None)
    assert db.shape == expected.shape == (128, len(wave) // 240 + 1)
    np.testing.assert_allclose(db, expected, atol=2e-3)  # dB of float32 spectra (values span about -100..40)


def test_batched_encoding_equals_direct_forward_and_layer_indexing(tiny_dir):
    encoder = build_encoder(encoder_config(tiny_dir, layers=(0, 1, 3), batch_size=4))
    waves = [noise(s, seed=i) for i, s in enumerate((2.0, 3.37, 1.04, 2.5))]  # unequal: padded batch
    encoded = encoder.encode(waves)
    inner = encoder.model.model
    for wave, item in zip(waves, encoded):
        states = direct_hidden_states(encoder.model, wave)
        assert len(states) == 3 + 1
        expected = np.stack([states[0], states[1], states[3]])
        assert item.frames.shape == expected.shape == (3, encoder.num_frames(len(wave)), 32)
        np.testing.assert_allclose(item.frames, expected, atol=2e-5)
        np.testing.assert_allclose(item.pooled, expected.mean(axis=1).reshape(-1), atol=2e-5)
        with torch.inference_mode():  # hidden_states[0] is the front end: normalised mel -> conv subsampling
            mel = inner.normalize(inner.preprocessing(torch.from_numpy(wave)[None], features=["melspec_2048"]))
            np.testing.assert_allclose(item.frames[0], inner.conv(mel["melspec_2048"])[0].numpy(), atol=2e-5)
    one_by_one = MuQEncoder(encoder.model, checkpoint_name="tiny", layers=(0, 1, 3), batch_size=1)
    for single, batched in zip(one_by_one.encode(waves), encoded):
        np.testing.assert_allclose(single.pooled, batched.pooled, atol=1e-5)
    assert encoder.frame_rate == 25.0 and encoder.num_layers == 3 and encoder.dim == 32


def test_windows_match_a_single_pass_where_they_do_not_cut_context(tmp_path):
    """With attention switched off every frame sees +-10 frames, less than half the 2 s overlap: windows are exact."""
    model = load_muq(save_tiny_muq(tmp_path / "local"))
    with torch.no_grad():
        for layer in model.model.conformer.layers:
            layer.self_attn.linear_out.weight.zero_()
            layer.self_attn.linear_out.bias.zero_()
    encoder = MuQEncoder(model, checkpoint_name="local", layers=(0, 2, 3), window_seconds=4.0,
                         window_overlap_seconds=2.0, batch_size=3)
    wave = noise(13.3, seed=5)
    windows = encoder.plan_windows(0, len(wave))
    assert len(windows) > 3 and windows[-1].stop == len(wave)
    assert sum(w.keep_stop - w.keep_start for w in windows) == encoder.num_frames(len(wave))
    (item,) = encoder.encode([wave])
    states = direct_hidden_states(model, wave)
    np.testing.assert_allclose(item.frames, np.stack([states[0], states[2], states[3]]), atol=5e-5)


def test_windows_with_full_attention_stay_close_to_a_single_pass(tiny_dir):
    """Global attention sees only its window: bounded, measured difference (random weights), exact front end."""
    encoder = MuQEncoder(load_muq(tiny_dir), checkpoint_name="tiny", layers=(0, 3), window_seconds=4.0,
                         window_overlap_seconds=1.0)
    wave = noise(9.5, seed=7)
    (item,) = encoder.encode([wave])
    states = direct_hidden_states(encoder.model, wave)
    np.testing.assert_allclose(item.frames[0], states[0], atol=2e-5)
    single = states[3].mean(axis=0)
    windowed = item.pooled[32:]
    cosine = single @ windowed / np.linalg.norm(single) / np.linalg.norm(windowed)
    assert cosine > 0.99, cosine


def test_encode_file_resamples_to_24k(tiny_dir, tmp_path):
    encoder = build_encoder(encoder_config(tiny_dir))
    audio_16k = noise(2.0, seed=3)[: 2 * 16000]
    soundfile.write(tmp_path / "clip.wav", audio_16k, 16000, subtype="FLOAT")
    from_file = encoder.encode_file(tmp_path / "clip.wav")
    resampled = librosa.resample(audio_16k, orig_sr=16000, target_sr=SR, res_type="soxr_hq")
    assert from_file.frames.shape[1] == encoder.num_frames(len(resampled)) == 50
    np.testing.assert_allclose(from_file.pooled, encoder.encode([resampled])[0].pooled, atol=1e-5)


def test_bad_waveforms_are_clear_errors(tiny_dir):
    encoder = build_encoder(encoder_config(tiny_dir))
    with pytest.raises(ValueError, match="waveform 1: shape .* expected mono"):
        encoder.encode([noise(1.0, 0), np.zeros((2, SR), np.float32)])
    with pytest.raises(ValueError, match="waveform 0: 100 samples; MuQ needs >= 2048"):
        encoder.encode([np.zeros(100, np.float32)])
    with pytest.raises(ValueError, match="waveform 0: contains NaN"):
        encoder.encode([np.full(SR, np.nan, np.float32)])


def test_name_identifies_checkpoint_layers_and_windows(tiny_dir):
    name = build_encoder(encoder_config(tiny_dir, layers=(1, 2, 3), window_seconds=20.0)).name
    assert name == f"muq-{tiny_dir.name.lower()}-l1-3-w20s-o4.96s"
    assert build_encoder(encoder_config(tiny_dir, layers=(0, 3))).name.startswith(f"muq-{tiny_dir.name.lower()}-l0.3-")
    with pytest.raises(ValueError, match="hidden states are 0 .front end. .. 3"):
        build_encoder(encoder_config(tiny_dir, layers=(4,)))


def test_bad_checkpoint_dirs_are_clear_errors(tmp_path, tiny_dir):
    with pytest.raises(CheckpointError, match="no such directory"):
        load_muq(tmp_path / "absent")
    with pytest.raises(CheckpointError, match="not in the local Hugging Face cache"):
        load_muq("no-such-org/no-such-muq")
    empty = tmp_path / "empty"
    empty.mkdir()
    (empty / "config.json").write_text((tiny_dir / "config.json").read_text())
    with pytest.raises(CheckpointError, match=r"lacks model.safetensors or pytorch_model.bin"):
        load_muq(empty)
    (empty / "config.json").unlink()
    (empty / "model.safetensors").write_bytes((tiny_dir / "model.safetensors").read_bytes())
    with pytest.raises(CheckpointError, match="lacks config.json"):
        load_muq(empty)


def test_weights_that_do_not_fit_the_config_are_refused(tmp_path, tiny_dir):
    from safetensors.torch import load_file, save_file

    wider = tmp_path / "wider"
    wider.mkdir()
    (wider / "model.safetensors").write_bytes((tiny_dir / "model.safetensors").read_bytes())
    config = json.loads((tiny_dir / "config.json").read_text())
    config["w2v2_config"]["intermediate_size"] = 96
    (wider / "config.json").write_text(json.dumps(config))
    with pytest.raises(CheckpointError, match=r"shape mismatches.*ffn1\.intermediate_dense\.bias \(64,\) vs \(96,\)"):
        load_muq(wider)

    pruned = tmp_path / "pruned"
    pruned.mkdir()
    (pruned / "config.json").write_text((tiny_dir / "config.json").read_text())
    state = load_file(tiny_dir / "model.safetensors")
    state["model.conformer.extra.weight"] = state.pop("model.conformer.layers.2.self_attn.linear_q.weight")
    save_file(state, pruned / "model.safetensors")
    with pytest.raises(CheckpointError, match=r"1 missing \(e\.g\. model\.conformer\.layers\.2\.self_attn\.linear_q"
                                              r"\.weight\), 1 unexpected \(e\.g\. model\.conformer\.extra\.weight\)"):
        load_muq(pruned)


def _midi(path: Path, pitch: int) -> Path:
    midi = mido.MidiFile(ticks_per_beat=480)
    track = mido.MidiTrack()
    track += [mido.Message("note_on", note=pitch, velocity=90, time=0),
              mido.Message("note_off", note=pitch, velocity=0, time=int(mido.second2tick(0.6, 480, 500000)))]
    midi.tracks.append(track)
    midi.save(path)
    return path


def test_run_extract_stores_what_the_encoder_computes(tiny_dir, tmp_path, monkeypatch):
    """A tiny MuQ through `crescend-jax extract`: stored pooled vectors and bf16 frames equal direct encodings."""
    from crescend_jax.data import extract, store
    from crescend_jax.data.render import RenderCache, RenderSettings, default_render_config
    from crescend_jax.data.segments import Corpus, Segment

    segments = [Segment(key=f"Comp_8bars_{i}_1", composition="Comp", piece="Comp_8bars", performer=str(i),
                        group="Comp_8bars_1", midi_path=_midi(tmp_path / f"{i}.mid", 60 + 3 * i),
                        label_mean=np.full(19, 0.5, np.float32), label_std=np.full(19, 0.1, np.float32),
                        ratings=np.zeros((0, 19), np.float32), label_truth=np.full(19, np.nan, np.float32))
                for i in range(3)]
    monkeypatch.setattr(extract, "load_corpus", lambda config: Corpus("fake", segments, []))
    config = ml_collections.ConfigDict()
    config.corpus = "fake"
    config.render = default_render_config()
    config.render.cache_dir = str(tmp_path / "render-cache")
    config.render.workers = 1
    config.encoder = encoder_config(tiny_dir, layers=(2, 3))
    config.store = store.default_store_config()
    config.store.root = str(tmp_path / "stores")
    config.store.frames = True
    assert extract.run_extract(config) == 0
    table = store.load_table(config)
    encoder = build_encoder(config.encoder)
    assert table.encoder == encoder.name and table.frame_rate == 25.0 and table.pooled.shape == (3, 64)
    settings = RenderSettings.from_config(config.render, config.render.soundfonts[0])
    cache = RenderCache(config.render.cache_dir)  # the audio extract encoded (24-bit FLAC)
    for segment in segments:
        audio = resample(cache.render(segment.midi_path, settings), settings.sample_rate, SR)
        (expected,) = encoder.encode([audio])
        row = list(table.keys).index(segment.key)
        np.testing.assert_allclose(table.pooled[row], expected.pooled, atol=1e-5)
        np.testing.assert_allclose(table.frames[row], expected.frames, rtol=1e-2, atol=1e-2)  # bf16 on disk
