"""P groups x K sampler: layout, padding, determinism, frame crops, bad settings."""

import itertools

import numpy as np
import pytest

from crescend_jax.data.table import EmbeddingTable
from crescend_jax.models.contrastive import ContrastiveRanking
from crescend_jax.models.functions import frame_window
from crescend_jax.models.sampler import GroupSampler
from crescend_jax.train.input_pipeline import gather, host_table


def group_batches(table, batch_size, group_size, rng, crop_frames=0):
    """The sampler's batches, gathered as the trainer gathers them (unstandardised), with "row"."""
    sampler = GroupSampler(table, batch_size, group_size, int(rng.integers(1 << 30)), crop_frames=crop_frames)
    width = table.pooled.shape[1]
    device = host_table(table, np.zeros(width, np.float32), np.ones(width, np.float32), crop_frames)
    for plan in sampler:
        arrays = {"rows": plan.rows} if plan.crop_start is None else {"rows": plan.rows, "crop_start": plan.crop_start}
        batch = {k: np.asarray(v) for k, v in gather(device, arrays).items()}
        batch["row"] = plan.rows
        yield batch


def make_table(group_sizes, dim=6, frames=False, frame_lengths=None):
    """Group g has ``group_sizes[g]`` rows; pooled row i is filled with i (so rows are recognisable)."""
    groups = np.array([f"piece_{g}" for g, n in enumerate(group_sizes) for _ in range(n)])
    n = len(groups)
    rng = np.random.default_rng(0)
    frame_list = None
    if frames:
        lengths = frame_lengths if frame_lengths is not None else [20] * n
        # frame t of row i, layer l, channel c holds i * 1000 + t (so crops are recognisable too)
        frame_list = [np.broadcast_to((i * 1000 + np.arange(t))[None, :, None], (2, t, dim // 2)).astype(np.float32)
                      for i, t in enumerate(lengths)]
    return EmbeddingTable(
        keys=np.array([f"k{i}" for i in range(n)]), compositions=np.array(["c"] * n), pieces=np.array(["p"] * n),
        performers=np.array([str(i) for i in range(n)]), groups=groups, renders=np.array(["r"] * n),
        label_mean=rng.uniform(size=(n, 19)).astype(np.float32),
        label_std=np.where(rng.uniform(size=(n, 19)) < 0.1, np.nan, 0.1).astype(np.float32),
        label_truth=np.full((n, 19), np.nan, np.float32), ratings=[np.zeros((0, 19), np.float32)] * n,
        pooled=np.repeat(np.arange(n, dtype=np.float32)[:, None], dim, axis=1), frames=frame_list,
        encoder="test", frame_rate=10.0)


def test_layout_and_padding():
    table = make_table([5, 2, 3, 1])  # the single-row group can never be drawn
    batch = next(group_batches(table, batch_size=12, group_size=4, rng=np.random.default_rng(0)))
    assert batch["x"].shape == (12, 6) and batch["x"].dtype == np.float32
    assert set(batch) == {"x", "label_mean", "label_std", "group", "composition", "mask", "row"}
    ids = table.group_ids()
    group = batch["group"].reshape(3, 4)
    mask = batch["mask"].reshape(3, 4)
    rows = batch["row"].reshape(3, 4)
    assert sorted(set(group[:, 0])) == sorted(ids[[0, 5, 7]])  # one slot per eligible group (3 slots, 3 groups)
    for p in range(3):
        real = mask[p] > 0
        size = int(np.sum(ids == group[p, 0]))
        assert real.sum() == min(4, size) and real[: real.sum()].all()  # real rows first, then padding
        assert (group[p, real] == group[p, 0]).all() and (group[p, ~real] == -1).all()
        assert len(set(rows[p, real])) == real.sum()  # distinct rows within a slot
        assert (ids[rows[p, real]] == group[p, 0]).all()
        assert (rows[p, ~real] == -1).all()
    real = batch["mask"] > 0
    np.testing.assert_array_equal(batch["x"][real, 0], batch["row"][real])
    np.testing.assert_array_equal(batch["label_mean"][real], table.label_mean[batch["row"][real]])
    assert (batch["x"][~real] == 0).all() and (batch["label_mean"][~real] == 0).all()
    assert np.isfinite(batch["label_std"]).all()  # NaN stds become 0


def test_every_group_once_per_pass_and_batches_larger_than_corpus():
    table = make_table([3] * 5)
    stream = group_batches(table, batch_size=6, group_size=3, rng=np.random.default_rng(1))
    slots = np.concatenate([next(stream)["group"][::3] for _ in range(5)])  # 10 slots = 2 passes over 5 groups
    assert sorted(slots[:5]) == sorted(slots[5:]) == list(range(5))
    big = next(group_batches(table, batch_size=36, group_size=3, rng=np.random.default_rng(1)))  # 12 slots > 5
    counts = np.bincount(big["group"][::3], minlength=5)
    assert counts.sum() == 12 and counts.min() >= 2


def test_deterministic_given_the_generator():
    table = make_table([4, 3, 6, 2])
    take = lambda seed: list(itertools.islice(group_batches(table, 8, 4, np.random.default_rng(seed)), 4))
    a, b, c = take(3), take(3), take(4)
    for x, y in zip(a, b):
        for name in x:
            np.testing.assert_array_equal(x[name], y[name])
    assert any((x["row"] != z["row"]).any() for x, z in zip(a, c))


def test_frame_crops_fill_small_groups():
    table = make_table([2, 4], frames=True, frame_lengths=[20, 20, 7, 20, 20, 20])
    batch = next(group_batches(table, batch_size=8, group_size=4, rng=np.random.default_rng(0), crop_frames=9))
    assert batch["x"].shape == (8, 9, 6)
    assert (batch["mask"] == 1).all()  # crops instead of padding
    group = batch["group"].reshape(2, 4)
    assert (group == group[:, :1]).all()
    for x, row in zip(batch["x"], batch["row"]):
        index = x[:, 0] - row * 1000  # frame numbers of this crop
        assert (x[:, 0] == x[:, -1]).all()  # layer-major concatenation of identical layers
        length = 20 if row != 2 else 7
        np.testing.assert_array_equal(index, (index[0] + np.arange(9)) % length)  # contiguous (wrapping if short)
    small_slot = np.flatnonzero(group[:, 0] == table.group_ids()[0])[0]
    rows = batch["row"].reshape(2, 4)[small_slot]
    assert set(rows) == {0, 1}  # both performances, then extra crops of them


def test_frame_window_layout():
    frames = np.arange(2 * 5 * 3, dtype=np.float32).reshape(2, 5, 3)
    crop = frame_window(frames, 0, 5)
    np.testing.assert_array_equal(crop, frames.transpose(1, 0, 2).reshape(5, 6))
    np.testing.assert_array_equal(crop.mean(axis=0), frames.mean(axis=1).reshape(-1))  # matches "pooled" layout
    np.testing.assert_array_equal(frame_window(frames, 3, 4), crop[[3, 4, 0, 1]])  # read cyclically


def test_state_restores_the_exact_stream():
    table = make_table([4, 3, 6, 2])
    sampler = GroupSampler(table, 8, 4, seed=5)
    next(sampler)
    state = sampler.state()
    ahead = [next(sampler).rows for _ in range(4)]
    resumed = GroupSampler(table, 8, 4, seed=99)
    resumed.restore(state)
    for expected in ahead:
        np.testing.assert_array_equal(next(resumed).rows, expected)
    assert GroupSampler(make_table([3, 1, 1]), 4, 2, seed=0).num_single_groups == 2


def _frames_config():
    import ml_collections

    from crescend_jax.models.contrastive import default_model_config

    config = ml_collections.ConfigDict({"model": default_model_config(), "train": {"batch_size": 8}})
    config.model.input = "frames"
    return config


def test_bad_settings():
    table = make_table([3, 3])
    with pytest.raises(ValueError, match="multiple of group_size"):
        next(group_batches(table, 10, 4, np.random.default_rng(0)))
    with pytest.raises(ValueError, match="group_size 1 >= 2"):
        next(group_batches(table, 10, 1, np.random.default_rng(0)))
    with pytest.raises(ValueError, match="need a store with frames"):
        ContrastiveRanking().sampler(table, _frames_config(), 0)
    with pytest.raises(ValueError, match="no group .* >= 2 performances"):
        next(group_batches(make_table([1, 1]), 8, 4, np.random.default_rng(0)))
