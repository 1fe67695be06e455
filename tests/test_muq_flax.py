"""MuQ's conformer layers in Flax (muq_flax) against the PyTorch model, and the weight converter (muq_convert).

Every model here has random weights (MuQ weights cannot be downloaded here), with random layer/batch norm affine
parameters and batch norm statistics so that every converted tensor matters. The error measure is
max |flax - torch| / max |torch| per hidden state.
"""

import dataclasses
import json
from pathlib import Path

import numpy as np
import pytest

torch = pytest.importorskip("torch")

import jax  # noqa: E402
import jax.numpy as jnp  # noqa: E402
import optax  # noqa: E402
from flax import nnx  # noqa: E402

from crescend_jax.encoders.muq import MuQEncoded, MuQEncoder, import_muq, muq_config_dict  # noqa: E402
from crescend_jax.encoders.muq_convert import (  # noqa: E402
    ConversionError, convert_state, expected_shapes, load_muq_layers, read_source, to_torch_state_dict)
from crescend_jax.encoders.muq_flax import ConformerConfig, MuQLayers  # noqa: E402

TINY = dict(encoder_dim=32, depth=3, heads=4, ffn_dim=64, conv_dim=8, conv_kernel=5, codebook_size=64)
TOLERANCE = 1e-4  # relative, float32
SR = 24_000
SHAPE = (2, 37, 32)  # [B, T, H] of the tiny tests: one shape, so JAX compiles each op once for the whole file


def relative_error(ours, reference) -> float:
    ours, reference = np.asarray(ours, np.float64), np.asarray(reference, np.float64)
    return float(np.abs(ours - reference).max() / np.abs(reference).max())


def randomize_norms(module, seed: int) -> None:
    """Random layer/batch norm affine parameters, batch norm statistics and relative-position biases."""
    generator = torch.Generator().manual_seed(seed)
    uniform = lambda t, lo, hi: t.copy_(lo + (hi - lo) * torch.rand(t.shape, generator=generator))  # noqa: E731
    with torch.no_grad():
        for sub in module.modules():
            if isinstance(sub, (torch.nn.LayerNorm, torch.nn.BatchNorm1d, torch.nn.BatchNorm2d)):
                uniform(sub.weight, 0.5, 1.5)
                uniform(sub.bias, -0.3, 0.3)
            if isinstance(sub, (torch.nn.BatchNorm1d, torch.nn.BatchNorm2d)):
                uniform(sub.running_mean, -0.5, 0.5)
                uniform(sub.running_var, 0.5, 2.0)
            for name in ("pos_bias_u", "pos_bias_v"):
                if hasattr(sub, name):
                    uniform(getattr(sub, name), -0.5, 0.5)


def tiny_muq_config(position: str = "rotary", **overrides) -> dict:
    config = muq_config_dict(**{**TINY, **overrides})
    config["w2v2_config"]["position_embeddings_type"] = position
    return config


def tiny_muq(position: str = "rotary", seed: int = 0, **overrides):
    """A random-weight ``muq.MuQ`` with TINY dims (as the extraction tests build them), in eval mode."""
    MuQ, MuQConfig = import_muq()
    torch.manual_seed(seed)
    model = MuQ(MuQConfig(**tiny_muq_config(position, **overrides))).eval()
    randomize_norms(model, seed)
    return model


def torch_hidden_states(conformer, frames: np.ndarray) -> list[np.ndarray]:
    """MuQ's conformer on unpadded frames [B, T, H] (``hidden_states[0]`` in): hidden_states 0..depth."""
    with torch.inference_mode():
        states = conformer(torch.from_numpy(frames).clone(), output_hidden_states=True).hidden_states
    return [s.numpy() for s in states]


@pytest.fixture(scope="module")
def rotary_muq():
    return tiny_muq("rotary", seed=0)


@pytest.fixture(scope="module")
def relative_muq():
    return tiny_muq("relative", seed=1)


@pytest.mark.parametrize("position", ["rotary", "relative"])
@pytest.mark.parametrize("first,last", [(1, 3), (2, 3), (2, 2)])
def test_tiny_layers_reproduce_torch_hidden_states(position, first, last, rotary_muq, relative_muq):
    model = rotary_muq if position == "rotary" else relative_muq
    frames = np.random.default_rng(first).standard_normal(SHAPE).astype(np.float32)
    states = torch_hidden_states(model.model.conformer, frames)
    layers = load_muq_layers(model, first, last)
    assert layers.indices == tuple(range(first, last + 1))
    outputs = layers(jnp.asarray(states[first - 1]))
    assert len(outputs) == last - first + 1
    for index, output in zip(layers.indices, outputs):
        error = relative_error(output, states[index])
        print(f"{position} layers {first}..{last}: hidden_states[{index}] relative error {error:.2e}")
        assert error < TOLERANCE, (index, error)


def padded_batch(items: list[np.ndarray], fill: float = 0.0) -> tuple[np.ndarray, np.ndarray]:
    """Right-padded [B, T_max, H] frames (padding = ``fill``) and their [B, T_max] mask."""
    longest = max(len(item) for item in items)
    frames = np.full((len(items), longest, items[0].shape[-1]), fill, np.float32)
    mask = np.zeros((len(items), longest), bool)
    for b, item in enumerate(items):
        frames[b, :len(item)], mask[b, :len(item)] = item, True
    return frames, mask


@pytest.mark.parametrize("position", ["rotary", "relative"])
def test_padded_batch_equals_each_item_alone(position, rotary_muq, relative_muq):
    """Padded frames never reach real ones: a padded batch gives each item's unpadded MuQ output."""
    model = rotary_muq if position == "rotary" else relative_muq
    rng = np.random.default_rng(3)
    inputs = [rng.standard_normal((1, length, 32)).astype(np.float32) for length in (29, 41, 8)]
    alone = [torch_hidden_states(model.model.conformer, x) for x in inputs]  # each item alone, no padding
    layers = load_muq_layers(model, 2)
    frames, mask = padded_batch([states[1][0] for states in alone], fill=1e3)  # loud garbage in the padding
    batched = layers(jnp.asarray(frames), jnp.asarray(mask))
    for b, states in enumerate(alone):
        length = inputs[b].shape[1]
        for index, output in zip(layers.indices, batched):
            error = relative_error(output[b, :length], states[index][0])
            print(f"{position} padded item {b} (T={length}): hidden_states[{index}] relative error {error:.2e}")
            assert error < TOLERANCE
            assert np.all(np.isfinite(np.asarray(output)))


def muq_conformer(config: dict):
    """MuQ's conformer (``MuQModel.conformer``) built exactly as MuQModel builds it, without the front end."""
    from easydict import EasyDict
    from transformers.models.wav2vec2_conformer.modeling_wav2vec2_conformer import Wav2Vec2ConformerEncoder

    w2v2 = EasyDict(config["w2v2_config"])
    w2v2.num_hidden_layers = config["encoder_depth"]
    w2v2.hidden_size = config["encoder_dim"]
    return Wav2Vec2ConformerEncoder(w2v2).eval()


def test_one_full_width_layer_reproduces_torch_with_and_without_padding():
    """MuQ-large's layer shape (1024 wide, 16 heads, FFN 4096, kernel 31, rotary), 3 s and 2 s of frames."""
    config = muq_config_dict(depth=1)
    torch.manual_seed(0)
    conformer = muq_conformer(config)
    randomize_norms(conformer, seed=0)
    rng = np.random.default_rng(0)
    inputs = [rng.standard_normal((1, length, 1024)).astype(np.float32) for length in (75, 50)]  # 25 fps
    alone = [torch_hidden_states(conformer, x) for x in inputs]
    layers = load_muq_layers(conformer.state_dict(), 1, config=ConformerConfig.from_muq_config(config))
    frames, mask = padded_batch([states[0][0] for states in alone])
    (unpadded,) = layers(jnp.asarray(alone[0][0]))
    (batched,) = layers(jnp.asarray(frames), jnp.asarray(mask))
    error = relative_error(unpadded[0], alone[0][1][0])
    print(f"full width, unpadded: hidden_states[1] relative error {error:.2e}")
    assert error < TOLERANCE
    for b, states in enumerate(alone):
        error = relative_error(batched[b, :inputs[b].shape[1]], states[1][0])
        print(f"full width, padded item {b}: hidden_states[1] relative error {error:.2e}")
        assert error < TOLERANCE


def test_converter_round_trips_and_its_layout_is_torch_s(rotary_muq, relative_muq, tmp_path):
    """Flax -> torch state dict -> Flax is exact, and torch computes with the exported weights what Flax does."""
    for model, position in ((rotary_muq, "rotary"), (relative_muq, "relative")):
        config = ConformerConfig.from_muq_config(tiny_muq_config(position))
        layers = MuQLayers(config, 2, rngs=nnx.Rngs(7))  # random Flax weights, unrelated to the torch model's
        for layer in layers.layers:  # non-trivial batch norm statistics in Flax too
            layer.conv_module.batch_norm.mean[...] = jax.random.uniform(jax.random.key(1), (32,), minval=-0.5)
            layer.conv_module.batch_norm.var[...] = jax.random.uniform(jax.random.key(2), (32,), minval=0.5)
        layers.eval()
        exported = to_torch_state_dict(layers)
        assert set(exported) == {"model.conformer." + name for name in expected_shapes(config, 2)}
        back = convert_state(read_source(exported)[0] | _other_layers(model), config, 2)
        for (path, ours), (_, theirs) in zip(nnx.to_flat_state(nnx.state(layers)), nnx.to_flat_state(back)):
            assert type(ours) is type(theirs), path
            np.testing.assert_array_equal(np.asarray(ours.get_value()), np.asarray(theirs.get_value()), str(path))

        target = tiny_muq(position, seed=5)  # torch with the exported weights computes what Flax computes
        result = target.load_state_dict({k: torch.from_numpy(v) for k, v in exported.items()}, strict=False)
        assert not result.unexpected_keys
        frames = np.random.default_rng(0).standard_normal((1, 23, 32)).astype(np.float32)
        states = torch_hidden_states(target.model.conformer, frames)
        for index, output in zip(layers.indices, layers(jnp.asarray(states[1]))):
            assert relative_error(output, states[index]) < TOLERANCE

    safetensors = pytest.importorskip("safetensors.numpy")  # a bare weight file needs a config
    safetensors.save_file(exported, tmp_path / "layers.safetensors")
    with pytest.raises(ConversionError, match="without a config"):
        load_muq_layers(tmp_path / "layers.safetensors", 2)


def _other_layers(model) -> dict[str, np.ndarray]:
    """The conformer weights of ``model`` outside layers 2..3 (a real checkpoint holds every layer)."""
    weights, _ = read_source(model)
    return {k: v for k, v in weights.items() if not k.startswith(("layers.1.", "layers.2.", "layer_norm."))}


def test_checkpoint_directory_and_live_module_give_the_same_state(rotary_muq, tmp_path):
    rotary_muq.save_pretrained(tmp_path / "ckpt")
    from_dir = load_muq_layers(tmp_path / "ckpt", 3)
    from_module = load_muq_layers(rotary_muq, 3)
    from_inner = load_muq_layers(rotary_muq.model.conformer, 3, config=from_module.config)
    for a, b, c in zip(*(nnx.to_flat_state(nnx.state(m)) for m in (from_dir, from_module, from_inner))):
        np.testing.assert_array_equal(np.asarray(a[1].get_value()), np.asarray(b[1].get_value()))
        np.testing.assert_array_equal(np.asarray(a[1].get_value()), np.asarray(c[1].get_value()))
    assert from_dir.config == ConformerConfig.from_muq_config(tiny_muq_config())


def test_weights_that_do_not_fit_are_refused(rotary_muq, tmp_path):
    weights, config = read_source(rotary_muq)
    with pytest.raises(ConversionError, match=r"1 missing \(e\.g\. layers\.2\.self_attn\.linear_q\.weight\)"):
        convert_state({k: v for k, v in weights.items() if k != "layers.2.self_attn.linear_q.weight"}, config, 2)
    with pytest.raises(ConversionError, match=r"shape mismatches.*layers\.1\.ffn1\.intermediate_dense\.bias "
                                              r"\(64,\) vs \(96,\)"):
        convert_state(weights, dataclasses.replace(config, ffn_dim=96), 2)
    extra = weights | {"layers.1.self_attn.linear_pos.weight": np.zeros((32, 32), np.float32)}
    with pytest.raises(ConversionError, match=r"1 unexpected \(e\.g\. layers\.1\.self_attn\.linear_pos\.weight\)"):
        convert_state(extra, config, 2)
    with pytest.raises(ConversionError, match=r"hold conformer layers 0\.\.2 but the config has 4"):
        convert_state(weights, dataclasses.replace(config, depth=4), 2)
    with pytest.raises(ConversionError, match="rotary frequencies"):
        convert_state(weights, dataclasses.replace(config, rotary_base=500.0), 2)
    with pytest.raises(ValueError, match=r"need 1 <= first <= last <= depth \(3\)"):
        convert_state(weights, config, 0)
    with pytest.raises(ValueError, match=r"need 1 <= first <= last <= depth \(3\)"):
        load_muq_layers(rotary_muq, 2, 4)
    with pytest.raises(ConversionError, match="expected one MuQ conformer.*found none"):
        read_source({"encoder.weight": np.zeros(3)})
    with pytest.raises(ConversionError, match="differs from the given"):
        load_muq_layers(rotary_muq, 2, config=dataclasses.replace(config, activation="gelu"))
    with pytest.raises(ConversionError, match="no such file or directory"):
        load_muq_layers(tmp_path / "absent", 2)
    with pytest.raises(ValueError, match="not a MuQ config"):
        ConformerConfig.from_muq_config({"encoder_dim": 32})


def test_a_gradient_step_changes_the_weights_and_frozen_ones_stay(rotary_muq):
    """Adam on the Flax layers: every parameter moves; labels 'frozen' (optax.set_to_zero via multi_transform)
    keep a whole layer exactly; batch norm statistics are never trained."""
    frames = jnp.asarray(np.random.default_rng(0).standard_normal(SHAPE), jnp.float32)
    mask = jnp.asarray(np.arange(SHAPE[1])[None] < np.array([[SHAPE[1]], [25]]))

    def loss_fn(model):
        pooled = [(h * mask[..., None]).sum(1) / mask.sum(1, keepdims=True) for h in model(frames, mask)]
        return sum(jnp.mean((p - 1.0) ** 2) for p in pooled)

    grads = nnx.grad(loss_fn)(load_muq_layers(rotary_muq, 2))  # every model below starts from these weights

    def step(tx):
        model = load_muq_layers(rotary_muq, 2)
        before = {path: np.asarray(v.get_value()) for path, v in nnx.to_flat_state(nnx.state(model))}
        nnx.Optimizer(model, tx, wrt=nnx.Param).update(model, grads)
        after = {path: np.asarray(v.get_value()) for path, v in nnx.to_flat_state(nnx.state(model))}
        return {path for path in before if not np.array_equal(before[path], after[path])}, before.keys()

    changed, paths = step(optax.adam(1e-3))
    stats = {p for p in paths if p[-1] in ("mean", "var")}
    assert stats and not changed & stats
    assert changed == set(paths) - stats  # every parameter moved (Adam: any non-zero gradient)

    frozen = lambda path: path[:2] == ("layers", 0)  # noqa: E731 - freeze layer 2 (the first one), train layer 3
    labels = lambda params: jax.tree_util.tree_map_with_path(  # noqa: E731
        lambda path, _: "frozen" if frozen(tuple(getattr(k, "key", getattr(k, "idx", k)) for k in path)) else "train",
        params)
    tx = optax.multi_transform({"train": optax.adam(1e-3), "frozen": optax.set_to_zero()}, labels)
    changed, paths = step(tx)
    assert changed and not any(frozen(p) for p in changed)
    assert changed == {p for p in paths if not frozen(p) and p not in stats}

    changed, _ = step(optax.set_to_zero())  # a fully frozen trunk
    assert not changed


def test_remat_gives_the_same_gradients(rotary_muq):
    frames = jnp.asarray(np.random.default_rng(0).standard_normal(SHAPE), jnp.float32)
    loss_fn = lambda model: sum(jnp.mean(jnp.sin(h)) for h in model(frames))  # noqa: E731
    grads = nnx.grad(loss_fn)(load_muq_layers(rotary_muq, 2))
    remat_grads = nnx.grad(loss_fn)(load_muq_layers(rotary_muq, 2, remat=True))
    for (path, g), (_, r) in zip(nnx.to_flat_state(grads), nnx.to_flat_state(remat_grads)):
        np.testing.assert_allclose(np.asarray(r.get_value()), np.asarray(g.get_value()), rtol=1e-5, atol=1e-7,
                                   err_msg=str(path))


def test_dropout_only_in_train_mode(rotary_muq):
    layers = load_muq_layers(rotary_muq, 2)
    frames = jnp.asarray(np.random.default_rng(0).standard_normal(SHAPE), jnp.float32)
    evaluated = layers(frames)[-1]
    layers.train()
    trained = layers(frames, rngs=nnx.Rngs(dropout=0))[-1]
    assert not np.allclose(trained, evaluated)
    plain = load_muq_layers(rotary_muq, 2, config=layers.config.without_dropout())  # dropout may differ
    plain.train()  # no dropout rates: training mode computes what eval does
    np.testing.assert_array_equal(plain(frames)[-1], evaluated)


# --- extraction side: MuQEncoder(store_input_layer=K) -----------------------------------------------------------
def noise(seconds: float, seed: int) -> np.ndarray:
    rng = np.random.default_rng(seed)
    tone = np.sin(2 * np.pi * 330 * np.arange(int(seconds * SR)) / SR)
    return (0.3 * tone + 0.05 * rng.standard_normal(int(seconds * SR))).astype(np.float32)


def test_encoder_returns_the_input_of_layer_k_and_flax_continues_it_exactly(rotary_muq):
    """Extraction with store_input_layer=2 then the Flax layers 2..3 give the encoder's own layers 2..3 (padded
    batch of unequal clips), and the input frames are MuQ's hidden_states[1]."""
    encoder = MuQEncoder(rotary_muq, checkpoint_name="tiny", layers=(2, 3), batch_size=2, store_input_layer=2)
    assert encoder.name == "muq-tiny-l2-3-w30s-o4.96s-in2"
    assert MuQEncoder(rotary_muq, checkpoint_name="tiny", layers=(2, 3)).name == "muq-tiny-l2-3-w30s-o4.96s"
    waves = [noise(2.0, 0), noise(1.3, 1)]
    encoded = encoder.encode(waves)
    layers = load_muq_layers(rotary_muq, 2)
    for wave, item in zip(waves, encoded):
        assert isinstance(item, MuQEncoded) and item.frames.shape[0] == 2 and item.pooled.shape == (64,)
        with torch.inference_mode():
            direct = rotary_muq(torch.from_numpy(wave)[None], output_hidden_states=True).hidden_states
        np.testing.assert_allclose(item.input_frames, direct[1][0].numpy(), atol=2e-5)
        outputs = layers(jnp.asarray(item.input_frames)[None])
        for row, output in enumerate(outputs):
            assert relative_error(output[0], item.frames[row]) < TOLERANCE
    with pytest.raises(ValueError, match=r"store_input_layer=4: 0 \(off\) or a conformer layer K in 1\.\.3"):
        MuQEncoder(rotary_muq, checkpoint_name="tiny", layers=(3,), store_input_layer=4)


def test_store_input_layer_comes_from_the_encoder_config(tmp_path, rotary_muq):
    from crescend_jax import encoders

    rotary_muq.save_pretrained(tmp_path / "ckpt")
    config = encoders.default_encoder_config()
    assert config.muq.store_input_layer == 0
    config.name, config.muq.checkpoint, config.muq.device, config.muq.layers = "muq", str(tmp_path / "ckpt"), "cpu", (3,)
    config.muq.store_input_layer = 3
    encoder = encoders.build_encoder(config)
    assert encoder.store_input_layer == 3 and encoder.name.endswith("-l3-w30s-o4.96s-in3")
    assert json.loads(Path(tmp_path / "ckpt" / "config.json").read_text())["encoder_depth"] == 3
