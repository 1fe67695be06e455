"""The sequence trunk over score-aligned frames (`crescend_jax.models.sequence_trunk`) and its on-device augmentation
(`crescend_jax.models.sequence_augment`): masks and padding, what each transform moves, group-aligned crops, the
window sampler, refusals, 8 devices = 1, and every approach trained and evaluated on aligned tables with each trunk."""

import dataclasses
from pathlib import Path

import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
import pytest
from _distributed_worker import synthetic_table
from flax import nnx
from jax.sharding import Mesh

from crescend_jax.config import ConfigError, load_config
from crescend_jax.data.table import EmbeddingTable, group_relative
from crescend_jax.encoders.aligned import FEATURE_NAMES
from crescend_jax.evaluate.predict import predict_heldout
from crescend_jax.models import approach_for
from crescend_jax.models.sequence_augment import (TEMPO_SCALED, TEMPO_SHIFTED, VELOCITY_SHIFTED, Augmentation, augment,
                                                  crop_positions, sequence_lengths)
from crescend_jax.models.sequence_trunk import (MATCHED_FEATURE, SequenceEncoder, SequenceSampler,
                                                SequenceTrunkError, sequence_table)
from crescend_jax.runtime import distributed
from crescend_jax.train.input_pipeline import gather, host_table
from crescend_jax.train.trainer import TrainingError, train

ROOT = Path(__file__).resolve().parents[1]
F = {name: i for i, name in enumerate(FEATURE_NAMES)}
CONFIGS = {"baseline": "baseline.py", "contrastive": "approach_a.py", "siamese": "approach_b.py",
           "disentangled": "approach_c.py"}


def aligned_table(compositions: int = 3, groups: int = 2, performers: int = 4, seed: int = 0,
                  lengths: tuple[int, int] = (8, 20)) -> EmbeddingTable:
    """An `aligned`-like table: per group a score of T_g positions (every member the same T_g), frames [1, T_g, 19]
    with some positions unmatched (every feature NaN but missing_share = 1) and some features undefined (NaN); a
    performer quality q shapes the tempo curve position by position, labels are sigmoid(q)."""
    rng = np.random.default_rng(seed)
    table = synthetic_table(compositions=compositions, groups_per_composition=groups, performers=performers,
                            dim=len(FEATURE_NAMES), seed=seed)
    table.encoder = "aligned-v1-beat-f19-synthetic"
    table.renders = np.array(["symbolic"] * len(table))
    length = {g: int(rng.integers(*lengths)) for g in np.unique(table.groups)}
    quality = rng.normal(size=len(table))
    frames = []
    for q, g in zip(quality, table.groups):
        f = rng.normal(size=(1, length[g], len(FEATURE_NAMES))).astype(np.float32)
        f[0, :, F["tempo_log_ratio"]] = 0.3 * q * np.sin(np.arange(length[g]))
        f[0, rng.random((length[g], len(FEATURE_NAMES))) < 0.05] = np.nan
        f[0, :, F["missing_share"]] = 0.0
        unmatched = rng.random(length[g]) < 0.1
        f[0, unmatched] = np.nan
        f[0, unmatched, F["missing_share"]] = 1.0
        f[0, ~unmatched, F[MATCHED_FEATURE]] = np.abs(f[0, ~unmatched, F[MATCHED_FEATURE]])
        frames.append(f)
    table.frames, table.frame_rate = frames, 0.0
    table.pooled = np.stack([np.nan_to_num(np.nanmean(f[0], axis=0)) for f in frames]).astype(np.float32)
    table.label_mean = np.repeat((1 / (1 + np.exp(-quality)))[:, None], 19, axis=1).astype(np.float32)
    return table


def tiny_config(name: str, trunk: str = "sequence", comparison: str = "concat", **augment) -> ml_collections.ConfigDict:
    """``name``'s config file made tiny: a 16-wide one-block trunk, small heads, 4 steps, no validation split."""
    config = load_config(ROOT / "configs" / CONFIGS[name])
    config.data.update({"num_folds": 0, "test_compositions": ("Comp0",)})
    config.train.update({"batch_size": 8, "num_steps": 4, "eval_every": 4, "log_every": 2, "val_fraction": 0.0,
                         "learning_rate": 1e-3})
    config.trunk.kind = trunk
    config.trunk.sequence.update({"width": 16, "num_layers": 1, "num_heads": 2, "mlp_dim": 16, "max_positions": 24,
                                  "max_distance": 4})
    config.trunk.augment.update(augment)
    model = config.model
    model.hidden_dim = 16
    if name in ("contrastive", "disentangled", "siamese"):
        model.sampler.group_size = 4
    if name == "contrastive":
        model.projection_dim = 8
    if name == "siamese":
        model.update({"comparison": comparison, "embedding_dim": 8})
        model.head.update({"hidden_dim": 8, "num_heads": 2})
    if name == "disentangled":
        model.update({"piece_dim": 8, "style_dim": 8})
        model.adversary.num_classes = 4
    return config


# ----------------------------------------------------------------------------------------------------- the encoder


def encoder(pooling: str = "attention", features: int = 3, **options) -> SequenceEncoder:
    settings = dict(width=8, num_layers=2, num_heads=2, mlp_dim=8, dropout=0.0, max_distance=3, pooling=pooling,
                    remat=False)
    settings.update(options)
    model = SequenceEncoder(features, rngs=nnx.Rngs(params=0, dropout=1), **settings)
    model.eval()
    return model


@pytest.mark.parametrize("pooling", ["attention", "mean"])
def test_masked_and_padded_positions_are_never_read(pooling):
    rng = np.random.default_rng(0)
    x = rng.normal(size=(3, 10, 3)).astype(np.float32)
    x[0, 7:] = np.nan  # padding
    x[1, [2, 5]] = np.nan  # masked positions
    x[2, :, 1] = np.nan  # a feature undefined everywhere
    model = encoder(pooling)
    pooled, sequence, mask = model(jnp.asarray(x))
    np.testing.assert_array_equal(np.asarray(mask[0]), [1] * 7 + [0] * 3)
    np.testing.assert_array_equal(np.asarray(mask[1]), [1, 1, 0, 1, 1, 0, 1, 1, 1, 1])
    assert np.isfinite(np.asarray(pooled)).all() and np.isfinite(np.asarray(sequence)).all()
    # the same rows with less padding, or other values hidden at the masked positions: same outputs where real
    shorter, _, _ = model(jnp.asarray(x[:1, :7]))
    np.testing.assert_allclose(np.asarray(shorter), np.asarray(pooled[:1]), rtol=1e-5, atol=1e-6)
    relative = model(jnp.asarray(np.concatenate([x[:1, :7], np.full((1, 30, 3), np.nan, np.float32)], axis=1)))[0]
    np.testing.assert_allclose(np.asarray(relative), np.asarray(pooled[:1]), rtol=1e-5, atol=1e-6)
    # a feature's indicator is part of the input: x with a NaN is not x with the mean (0) there
    filled = np.where(np.isnan(x), 0.0, x).astype(np.float32)
    filled[0, 7:] = np.nan
    filled[1, [2, 5]] = np.nan
    assert not np.allclose(np.asarray(model(jnp.asarray(filled))[0][2]), np.asarray(pooled[2]))


def test_a_row_with_no_real_position_pools_to_zero_and_the_gradient_is_finite():
    model = encoder()
    empty = jnp.full((2, 6, 3), jnp.nan).at[1, :2].set(1.0)
    pooled, _, mask = model(empty)
    assert float(mask[0].sum()) == 0 and np.abs(np.asarray(pooled[0])).max() == 0.0
    graphdef, params, rest = nnx.split(model, nnx.Param, ...)
    grads = jax.grad(lambda p: jnp.sum(nnx.merge(graphdef, p, rest)(empty)[0] ** 2))(params)
    assert all(np.isfinite(np.asarray(g)).all() for g in jax.tree.leaves(grads))


def test_relative_positions_make_the_trunk_shift_invariant():
    """The same performance placed later in the window (NaN before it) gives the same pooled vector: only distances
    between positions enter the attention."""
    rng = np.random.default_rng(1)
    x = rng.normal(size=(1, 9, 3)).astype(np.float32)
    model = encoder(max_distance=2)
    shifted = np.concatenate([np.full((1, 5, 3), np.nan, np.float32), x], axis=1)
    np.testing.assert_allclose(np.asarray(model(jnp.asarray(shifted))[0]), np.asarray(model(jnp.asarray(x))[0]),
                               rtol=1e-5, atol=1e-6)


# ----------------------------------------------------------------------------------------------------- augmentation


def standardised_batch(rows: int = 6, length: int = 12, seed: int = 0):
    rng = np.random.default_rng(seed)
    raw = rng.normal(size=(rows, length, len(FEATURE_NAMES))) * 10 + 50
    raw[rng.random(raw.shape) < 0.1] = np.nan
    mean = rng.normal(size=len(FEATURE_NAMES)) * 5 + 50
    std = rng.uniform(1, 10, size=len(FEATURE_NAMES))
    return raw, mean.astype(np.float32), std.astype(np.float32), ((raw - mean) / std).astype(np.float32)


def test_a_tempo_scale_moves_exactly_the_features_it_should():
    raw, mean, std, x = standardised_batch()
    settings = Augmentation(tempo=True, tempo_range=0.2)
    out = np.asarray(augment(jnp.asarray(x), jnp.arange(6), jax.random.key(3), mean, std, settings), np.float64)
    moved = out * std + mean  # the augmented raw values
    assert (np.isnan(moved) == np.isnan(raw)).all()
    log_c = moved[..., F["tempo_log_ratio"]] - raw[..., F["tempo_log_ratio"]]
    per_row = np.nanmean(log_c, axis=1)
    np.testing.assert_allclose(np.where(np.isnan(log_c), per_row[:, None], log_c),
                               np.broadcast_to(per_row[:, None], log_c.shape), atol=1e-3)  # one c per row
    assert (np.abs(per_row) <= np.log(1.2) + 1e-4).all() and np.ptp(per_row) > 0.01
    for name in TEMPO_SCALED:
        np.testing.assert_allclose(moved[..., F[name]], np.exp(per_row)[:, None] * raw[..., F[name]], rtol=1e-4)
    others = [F[n] for n in FEATURE_NAMES if n not in TEMPO_SCALED + TEMPO_SHIFTED]
    np.testing.assert_allclose(moved[..., others], raw[..., others], rtol=1e-5)


def test_a_velocity_offset_moves_the_raw_velocities_only():
    raw, mean, std, x = standardised_batch(seed=1)
    settings = Augmentation(velocity=True, velocity_range=10.0)
    moved = np.asarray(augment(jnp.asarray(x), jnp.arange(6), jax.random.key(4), mean, std, settings)) * std + mean
    per_row = np.nanmean(moved[..., F["velocity_melody"]] - raw[..., F["velocity_melody"]], axis=1)
    for name in VELOCITY_SHIFTED:
        offset = moved[..., F[name]] - raw[..., F[name]]
        np.testing.assert_allclose(np.where(np.isnan(offset), per_row[:, None], offset),
                                   np.broadcast_to(per_row[:, None], offset.shape), atol=2e-3)
    assert (np.abs(per_row) <= 10.0 + 1e-3).all() and np.ptp(per_row) > 0.5
    others = [F[n] for n in FEATURE_NAMES if n not in VELOCITY_SHIFTED]
    np.testing.assert_allclose(moved[..., others], raw[..., others], rtol=1e-5)


def test_crops_keep_the_members_of_a_group_aligned():
    """Feature 0 holds the score position: after a crop every member of a group starts at the same position and
    keeps the same contiguous run; groups of other lengths get their own crops; padding rows are left alone."""
    lengths = {0: 20, 1: 9, 2: 14}
    group = np.array([0, 1, 0, 2, 1, 0, 2, -1])
    x = np.full((len(group), 24, 3), np.nan, np.float32)
    for b, g in enumerate(group):
        if g >= 0:
            x[b, :lengths[g], 0] = np.arange(lengths[g])
            x[b, :lengths[g], 1:] = 1.0
    seen = []
    for step in range(5):
        out = np.asarray(crop_positions(jnp.asarray(x), jnp.asarray(group), jax.random.key(step), 0.5))
        for g, length in lengths.items():
            members = out[group == g, :, 0]
            assert (np.isnan(members) == np.isnan(members[0])).all()
            np.testing.assert_array_equal(np.nan_to_num(members, nan=-1), np.nan_to_num(members[:1], nan=-1)
                                          .repeat(len(members), 0))
            run = members[0][np.isfinite(members[0])]
            assert np.isnan(members[0, len(run):]).all() and (np.diff(run) == 1).all()
            assert np.ceil(0.5 * length) <= len(run) <= length and run[-1] < length
            seen.append((g, run[0], len(run)))
    assert len(set(seen)) > len(lengths)  # the crops move from step to step
    np.testing.assert_array_equal(np.asarray(sequence_lengths(jnp.asarray(x))), [20, 9, 20, 14, 9, 20, 14, 0])


def test_switches_off_are_the_identity():
    _, mean, std, x = standardised_batch()
    x = jnp.asarray(x)
    assert augment(x, jnp.arange(6), jax.random.key(0), mean, std, Augmentation()) is x
    config = tiny_config("contrastive", tempo=False, velocity=False, crop=False)
    approach = approach_for(config)
    assert not approach.objective(config).augment.active
    table = sequence_table(aligned_table(), config)
    model = approach.build_model(config, 19, nnx.Rngs(params=0, dropout=1))
    model.eval()  # no dropout: the loss is then a function of the batch alone
    device = host_table(table, np.zeros(19, np.float32), np.ones(19, np.float32), 24)
    batch = gather(device, {"rows": np.arange(8, dtype=np.int32), "crop_start": np.zeros(8, np.int32)})
    objective = approach.objective(config)
    losses = [float(approach.loss(objective, model, batch, jnp.int32(step), None)[0]) for step in (0, 1)]
    on = tiny_config("contrastive")
    augmented = [float(approach.loss(approach.objective(on), model, batch, jnp.int32(step), None)[0])
                 for step in (0, 1)]
    assert losses[0] == losses[1] and augmented[0] != augmented[1]


# ----------------------------------------------------------------------------------------------------- inputs


def test_the_table_masks_unmatched_positions_and_is_read_padded():
    config = tiny_config("baseline")
    table = aligned_table()
    prepared = sequence_table(table, config)
    f, g = table.frames[0][0], prepared.frames[0][0]
    unmatched = ~np.isfinite(f[:, F[MATCHED_FEATURE]])
    assert unmatched.any() and np.isfinite(f[unmatched, F["missing_share"]]).all()
    assert np.isnan(g[unmatched]).all() and np.array_equal(np.isnan(g[~unmatched]), np.isnan(f[~unmatched]))
    device = host_table(prepared, np.zeros(19, np.float32), np.ones(19, np.float32), 24)
    batch = gather(device, {"rows": np.array([0, -1], np.int32), "crop_start": np.zeros(2, np.int32)})
    x = np.asarray(batch["x"])
    np.testing.assert_array_equal(x[0, : g.shape[0]], g)  # the whole row, never wrapped
    assert np.isnan(x[0, g.shape[0]:]).all() and (x[1] == 0).all()


def test_refusals_name_the_fix():
    config = tiny_config("contrastive")
    table = aligned_table()
    with pytest.raises(SequenceTrunkError, match="store.frames=True"):
        sequence_table(dataclasses.replace(table, frames=None), config)
    with pytest.raises(SequenceTrunkError, match="encoder.name=aligned"):
        sequence_table(dataclasses.replace(table, frame_rate=25.0), config)
    with pytest.raises(SequenceTrunkError, match="augment.tempo=False"):
        sequence_table(dataclasses.replace(table, encoder="midi-v1"), config)
    untouched = sequence_table(dataclasses.replace(table, encoder="midi-v1"),
                               tiny_config("contrastive", tempo=False, velocity=False))
    assert untouched.frames[0] is table.frames[0]  # another position-indexed store is read as it is
    for field, value in (("num_heads", 3), ("max_distance", 0), ("pooling", "max"), ("cross_window", -2)):
        bad = tiny_config("contrastive")
        bad.trunk.sequence[field] = value
        with pytest.raises(ConfigError, match=f"trunk.sequence.{field}"):
            approach_for(bad).check_config(bad)
    bad = tiny_config("contrastive", crop_min_fraction=0.0)
    with pytest.raises(ConfigError, match="crop_min_fraction"):
        approach_for(bad).check_config(bad)
    with pytest.raises(TrainingError, match="store.frames=True"):
        train(config, Path("/nonexistent/never-made"), table=dataclasses.replace(table, frames=None))


def test_the_sampler_places_long_rows_alike_within_a_group_and_restores():
    table = aligned_table(lengths=(30, 40))
    config = tiny_config("contrastive")
    approach = approach_for(config)
    sampler = approach.sampler(table, config, [0, 0])
    assert isinstance(sampler, SequenceSampler) and sampler.window == 24
    lengths = np.array([f.shape[1] for f in table.frames])
    plans = [next(sampler) for _ in range(3)]
    state = sampler.state()
    following = [next(sampler) for _ in range(3)]
    for plan in plans:
        real = plan.rows >= 0
        starts, rows = plan.crop_start[real], plan.rows[real]
        assert ((starts >= 0) & (starts <= lengths[rows] - 24)).all()
        for group in np.unique(table.groups[rows]):
            assert len(set(starts[table.groups[rows] == group])) == 1  # same lengths, same fraction: same start
    assert len({int(s) for plan in plans for s in plan.crop_start}) > 2
    sampler.restore(state)
    for plan, again in zip(following, (next(sampler) for _ in range(3))):
        np.testing.assert_array_equal(plan.rows, again.rows)
        np.testing.assert_array_equal(plan.crop_start, again.crop_start)
    short = approach.sampler(aligned_table(), config, [0, 0])
    assert all((next(short).crop_start == 0).all() for _ in range(3))  # every row fits: read whole from 0


# ----------------------------------------------------------------------------------------------------- sharding


@pytest.mark.slow
@pytest.mark.parametrize("name,comparison", [("contrastive", "concat"), ("siamese", "cross_attention")])
def test_sharded_step_matches_one_device(name, comparison):
    """Loss and gradients of the trunk + head with dropout and every augmentation on: 8 devices = 1 device."""
    assert jax.device_count() == 8
    config = tiny_config(name, comparison=comparison)
    config.train.batch_size = 16
    config.trunk.sequence.dropout = 0.2
    approach = approach_for(config)
    table = sequence_table(aligned_table(), config)
    mean, std = approach.input_stats(table, config).mean, approach.input_stats(table, config).std
    plan = next(approach.sampler(table, config, [0, 0]))
    batch = {k: np.array(v) for k, v in jax.device_get(gather(host_table(table, mean, std, 24), {
        "rows": plan.rows, "crop_start": plan.crop_start})).items()}
    batch["mask"][-2:] = 0.0  # padding rows are ignored identically
    objective = approach.objective(config)

    def loss_and_grads(mesh):
        model = approach.build_model(config, 19, nnx.Rngs(params=0, dropout=1))
        graphdef, state = nnx.split(model)

        @jax.jit
        def step(state, batch):
            return nnx.value_and_grad(lambda m: approach.loss(objective, m, batch, jnp.int32(7), mesh),
                                      has_aux=True)(nnx.merge(graphdef, state))

        (loss, _), grads = step(distributed.replicate(state, mesh), distributed.shard_batch(batch, mesh))
        return float(loss), jax.tree.map(np.asarray, nnx.state(grads, nnx.Param))

    one_loss, one_grads = loss_and_grads(Mesh(np.asarray(jax.devices()[:1]), ("data",)))
    eight_loss, eight_grads = loss_and_grads(distributed.make_mesh())
    assert np.isfinite(one_loss)
    np.testing.assert_allclose(eight_loss, one_loss, rtol=1e-5)
    jax.tree.map(lambda a, b: np.testing.assert_allclose(a, b, rtol=1e-4, atol=1e-6), eight_grads, one_grads)


# ----------------------------------------------------------------------------------------------------- end to end


CASES = [(name, trunk, comparison, relative)
         for name, comparison in (("baseline", "concat"), ("contrastive", "concat"), ("siamese", "concat"),
                                  ("siamese", "cross_attention"), ("disentangled", "concat"))
         for trunk in ("frozen", "sequence") for relative in (False,)
         if not (trunk == "frozen" and comparison == "cross_attention")]  # cross_attention reads sequences only
CASES.append(("contrastive", "sequence", "concat", True))


@pytest.mark.slow
@pytest.mark.parametrize("name,trunk,comparison,relative", CASES)
def test_every_approach_trains_and_evaluates_on_aligned_inputs(tmp_path, name, trunk, comparison, relative):
    """frozen = the aligned pooled vectors; sequence = the frames through the trunk; group-relative frames too."""
    config = tiny_config(name, trunk=trunk, comparison=comparison)
    table = aligned_table()
    if relative:
        table = group_relative(table)
    records = train(config, tmp_path, table=table)
    assert records[0]["steps"] == 4
    held = predict_heldout(tmp_path, table=table)
    predictions = held.predictions
    values = predictions.scores if predictions.scores is not None else predictions.pairs[2]
    assert len(held.table) == (held.table.compositions == "Comp0").sum() > 0 and np.isfinite(values).all()
    assert all(np.isfinite(v).all() for v in predictions.embeddings.values())


def test_aligned_cross_attention_reads_position_t_of_the_other():
    """B's cross_attention head with window 0 (sequences aligned index by index): its shortcut (the other's value at
    t, 0 where masked) is what the masked softmax attention within the window reads; window 1 reads neighbours too."""
    from crescend_jax.models.comparators import CrossAttentionComparator

    rng = np.random.default_rng(0)
    q, k, v = (jnp.asarray(rng.normal(size=(3, 7, 2, 4)), jnp.float32) for _ in range(3))
    mask = jnp.asarray(rng.random((3, 7)) > 0.3, jnp.float32)
    head = CrossAttentionComparator(8, num_heads=2, window=0, rngs=nnx.Rngs(0))
    direct = v * (mask > 0)[..., None, None]
    np.testing.assert_allclose(np.asarray(head._attend(q, k, v, mask)), np.asarray(direct), atol=1e-6)
    head.window = 1
    assert not np.allclose(np.asarray(head._attend(q, k, v, mask)), np.asarray(direct), atol=1e-3)
    h = jnp.asarray(rng.normal(size=(2, 2, 7, 8)), jnp.float32)
    frame_mask = jnp.asarray(rng.random((2, 2, 7)) > 0.3, jnp.float32)
    for window in (0, 2, -1):
        head.window = window
        logits = np.asarray(head.block_logits(h, frame_mask))
        np.testing.assert_allclose(logits, -np.swapaxes(logits, 1, 2), atol=1e-5)  # still antisymmetric
