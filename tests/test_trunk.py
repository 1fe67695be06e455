"""The fine-tuned MuQ trunk (`crescend_jax.models.trunk`): a store with layer-input frames made by a tiny random MuQ,
one step that moves the layers (and one that freezes them), refusals, and approach A fine-tuned end to end."""

import copy
import shutil
import sys
from pathlib import Path

import numpy as np
import pytest

torch = pytest.importorskip("torch")

import jax  # noqa: E402
import ml_collections  # noqa: E402
from flax import nnx  # noqa: E402

sys.path.insert(0, str(Path(__file__).resolve().parent))
from test_muq import save_tiny_muq  # noqa: E402

from crescend_jax.config import ConfigError, load_config  # noqa: E402
from crescend_jax.data import extract, store  # noqa: E402
from crescend_jax.data.demo_corpus import default_demo_data_config  # noqa: E402
from crescend_jax.models import approach_for  # noqa: E402
from crescend_jax.models import trunk as trunk_lib  # noqa: E402
from crescend_jax.models.contract import crop_frames, standardisation  # noqa: E402
from crescend_jax.models.functions import model_functions  # noqa: E402
from crescend_jax.runtime import distributed  # noqa: E402
from crescend_jax.train.input_pipeline import host_table, place_plan, place_table  # noqa: E402
from crescend_jax.train.optimizer import build_optimizer  # noqa: E402
from crescend_jax.train.step import build_train_step  # noqa: E402
from crescend_jax.train.trainer import TrainingError, train  # noqa: E402

ROOT = Path(__file__).resolve().parents[1]
K = 2  # the tiny MuQ has 3 conformer layers; pooled layers 2 and 3 are fine-tuned from hidden_states[1]


def tiny_config(root: Path, checkpoint: Path, **trunk) -> ml_collections.ConfigDict:
    """Approach A on a 4-piece demo corpus (3 s segments), encoded by the tiny MuQ with its layer-2 input frames."""
    config = load_config(ROOT / "configs" / "approach_a.py")
    config.corpus = "demo"
    config.data = default_demo_data_config()
    config.data.update(dict(num_pieces=4, segments_per_piece=1, num_performers=3, segment_seconds=3.0, num_folds=2,
                            cache_dir=str(root / "demo-cache")))
    config.render.soundfonts = ("fluidr3",)
    config.render.cache_dir = str(root / "render-cache")
    config.render.workers = 1
    config.encoder.name = "muq"
    config.encoder.muq.checkpoint = str(checkpoint)
    config.encoder.muq.device = "cpu"
    config.encoder.muq.layers = (2, 3)
    config.encoder.muq.store_input_layer = K
    config.store.root = str(root / "stores")
    config.trunk.kind = "finetune"
    config.trunk.first_layer = K
    config.trunk.learning_rate = 1e-3
    config.trunk.update(trunk)
    config.model.input = "frames"
    config.model.sampler.crop_seconds = 1.0
    config.train.batch_size = 8
    config.train.num_steps = 4
    config.train.eval_every = 2
    return config


@pytest.fixture(scope="module")
def stored(tmp_path_factory):
    """(root, tiny checkpoint, config, table) of an extracted store with layer-input frames."""
    root = tmp_path_factory.mktemp("trunk")
    checkpoint = save_tiny_muq(root / "tiny-muq")
    config = tiny_config(root, checkpoint)
    assert extract.run_extract(config) == 0
    return root, checkpoint, config, store.load_table(config)


def test_the_store_holds_the_frames_entering_layer_k(stored):
    _, _, config, table = stored
    assert table.input_layer == K and table.encoder.endswith(f"-in{K}") and len(table.input_frames) == len(table)
    for frames in table.input_frames:  # [T, hidden] bf16 at 25 frames/s (3 s segments and their release)
        assert frames.dtype.name == "bfloat16" and frames.shape[1] == 32 and frames.shape[0] >= 3 * 25
    # the stored pooled layers 2, 3 follow from the stored input frames through the converted layers (the Flax
    # port's equality with torch is test_muq_flax's); bf16 rounding of the frames costs well under 1%
    assert trunk_lib.check_weights(table, config) < 0.01


def _one_step(config, table):
    """(trunk layer parameters before, after, head parameters before, after) of one training step."""
    mesh = distributed.make_mesh()
    approach = approach_for(config)
    approach.check_config(config)
    table = approach.prepare_table(table, config, training=False)  # the contract's hooks, as the trainer calls them
    functions = model_functions(approach, config, table.pooled.shape[1], mesh)
    stats = approach.input_stats(table, config)
    np.testing.assert_array_equal(stats.mean, 0.0)  # the layer-input frames enter MuQ's layers as they are
    state = approach.initial_state(functions.init(0), config, stats)
    tx = build_optimizer(config.train, state, approach.param_groups(config))
    steps = build_train_step(functions, tx, mesh)
    opt_state = steps.init_optimizer(state)
    device_table = place_table(host_table(table, stats.mean, stats.std, crop_frames(config, table.frame_rate)), mesh)
    plan = next(iter(approach.sampler(table, config, [0, 0])))
    kept = nnx.Any(nnx.Param, trunk_lib.Statistic)  # not the RNG keys
    snapshot = lambda s: jax.tree.map(np.asarray, jax.device_get(nnx.to_pure_dict(nnx.filter_state(s, kept))))
    before = snapshot(state)
    state, _, metrics = steps.step(state, opt_state, device_table, place_plan(plan, mesh), np.int32(0))
    assert np.isfinite(float(metrics["loss"]))
    after = snapshot(state)
    return before, after


def _changed(before, after) -> bool:
    return any(not np.array_equal(a, b) for a, b in zip(jax.tree.leaves(before), jax.tree.leaves(after)))


def test_a_finetuning_step_moves_the_layers_and_frozen_layers_stay(stored):
    _, _, config, table = stored
    before, after = _one_step(config, table)
    assert _changed(before["trunk"]["layers"]["layers"], after["trunk"]["layers"]["layers"])
    assert _changed(before["head"], after["head"])
    for name in ("mean", "std"):  # the pooled statistics are fixed
        np.testing.assert_array_equal(before["trunk"][name], after["trunk"][name])

    frozen = copy.deepcopy(config)
    frozen.trunk.frozen_layers = (2, 3)
    before, after = _one_step(frozen, table)
    for a, b in zip(jax.tree.leaves(before["trunk"]["layers"]["layers"]),
                    jax.tree.leaves(after["trunk"]["layers"]["layers"])):
        np.testing.assert_array_equal(a, b)
    assert _changed(before["head"], after["head"])


def test_at_initialisation_a_whole_track_gives_the_frozen_input(stored):
    """The trunk on a crop that is a whole track returns that row's standardised stored pooled vector."""
    _, _, config, table = stored
    mesh = distributed.make_mesh()
    approach = approach_for(config)
    trunked = trunk_lib.trunk_table(table, config)
    functions = model_functions(approach, config, table.pooled.shape[1], mesh)
    mean, std = standardisation(table.pooled, True)
    state = trunk_lib.initial_state(functions.init(0), config, mean, std)
    model = nnx.merge(functions.graphdef, state)
    model.eval()
    row = 3
    out = np.asarray(model.trunk(np.asarray(trunked.frames[row][0], np.float32)[None]))[0]
    expected = (table.pooled[row] - mean) / std
    assert np.linalg.norm(out - expected) / np.linalg.norm(expected) < 0.02


def test_bad_settings_are_refused_with_the_fix(stored):
    root, checkpoint, config, table = stored
    approach = approach_for(config)
    for field, value, message in (
            ("trunk.first_layer", 13, r"MuQ's conformer layers are 1\.\.12"),
            ("trunk.first_layer", 0, r"MuQ's conformer layers are 1\.\.12"),
            ("trunk.first_layer", 3, r"store_input_layer=3"),  # the store holds layer 2's input
            ("encoder.muq.store_input_layer", 0, r"--config\.encoder\.muq\.store_input_layer=2"),
            ("model.input", "pooled", r"--config\.model\.input=frames"),
            ("trunk.frozen_layers", (1,), r"not among the fine-tuned layers 2\.\.3")):
        bad = copy.deepcopy(config)
        section, name = field.rsplit(".", 1)
        target = bad
        for part in section.split("."):
            target = target[part]
        target[name] = value
        with pytest.raises(ConfigError, match=message):
            approach.check_config(bad)
    deep = copy.deepcopy(config)
    deep.trunk.first_layer = deep.encoder.muq.store_input_layer = 4
    with pytest.raises(ConfigError, match=r"has 3 layers"):
        approach.check_config(deep)


def test_a_store_without_input_frames_and_foreign_weights_are_refused(stored, tmp_path):
    root, checkpoint, config, table = stored
    bare = trunk_lib.dataclasses.replace(table, input_frames=None, input_layer=0)
    with pytest.raises(TrainingError, match=r"holds none: extract a store with them: `crescend-jax extract .*"
                                            r"--config\.encoder\.muq\.store_input_layer=2`"):
        train(config, tmp_path / "bare", table=bare)
    safetensors = pytest.importorskip("safetensors.numpy")
    foreign = shutil.copytree(checkpoint, tmp_path / "other-muq")  # the same model, its layers 2-3 retrained
    weights = safetensors.load_file(foreign / "model.safetensors")
    rng = np.random.default_rng(1)
    for name, value in weights.items():
        if ".layers.1." in name or ".layers.2." in name:
            if value.dtype.kind == "f" and "running" not in name:
                weights[name] = (value + rng.normal(0, 0.5, value.shape)).astype(value.dtype)
    safetensors.save_file(weights, foreign / "model.safetensors")
    other = copy.deepcopy(config)
    other.trunk.weights = str(foreign)
    with pytest.raises(TrainingError, match=r"do not reproduce the store .* fine-tune from the store's own "
                                            r"checkpoint"):
        train(other, tmp_path / "other", table=table)
    assert not (tmp_path / "bare").exists() and not (tmp_path / "other").exists()  # refused before any workdir


def test_approach_a_finetunes_and_evaluates_end_to_end(stored, tmp_path):
    from crescend_jax.evaluate.run import evaluate_workdir

    _, _, config, table = stored
    records = train(config, tmp_path / "run")
    assert [r["steps"] for r in records] == [4, 4]
    metrics = evaluate_workdir(str(tmp_path / "run"))
    assert metrics["num_rows"] == len(table)  # every performance held out once, predicted from its crops
    accuracy = metrics["interval"]["mean"]["estimate"]
    assert 0.0 < accuracy < 1.0 and len(metrics["interval"]["per_dimension"]["estimate"]) == 19
    assert (tmp_path / "run" / "metrics.json").is_file() and "reference" in metrics
    shutil.rmtree(tmp_path / "run")
