"""Group-relative inputs: each row minus its same-music group's mean, per score position, masks excluded, labels
never read; and the store path that applies it for training and the ridge reference alike."""

import dataclasses

import ml_collections
import numpy as np
import pytest

from crescend_jax.data.table import GROUP_RELATIVE_SUFFIX, EmbeddingTable, group_relative, input_view


def make_table(performers, groups, renders=None, frames_shape=(1, 5, 3), frame_rate=0.0, seed=0) -> EmbeddingTable:
    rng = np.random.default_rng(seed)
    n = len(performers)
    frames = []
    for _ in range(n):
        f = rng.normal(size=frames_shape).astype(np.float32) * 10
        f[rng.random(frames_shape) < 0.3] = np.nan  # masked positions / undefined features
        frames.append(f)
    return EmbeddingTable(
        keys=np.array([f"k{i}" for i in range(n)]), compositions=np.array([g.split("_")[0] for g in groups]),
        pieces=np.array(groups), performers=np.array(performers), groups=np.array(groups),
        renders=np.array(renders if renders is not None else ["symbolic"] * n),
        label_mean=rng.random((n, 19)).astype(np.float32), label_std=np.full((n, 19), 0.1, np.float32),
        label_truth=np.full((n, 19), np.nan, np.float32), ratings=[np.zeros((0, 19), np.float32)] * n,
        pooled=rng.normal(size=(n, 4)).astype(np.float32) * 5 + 50, frames=frames, encoder="aligned-test",
        frame_rate=frame_rate)


PERFORMERS = ["1", "2", "Score", "3", "4", "5", "Score2"]
GROUPS = ["A_1"] * 4 + ["B_1"] * 3


def test_group_relative_frames_sum_to_zero_per_position_over_valid_members():
    table = make_table(PERFORMERS, GROUPS)
    relative = group_relative(table)
    for group in ("A_1", "B_1"):
        rows = np.flatnonzero(table.groups == group)
        stacked = np.stack([relative.frames[i] for i in rows]).astype(np.float64)
        valid = np.isfinite(np.stack([table.frames[i] for i in rows]))
        np.testing.assert_array_equal(np.isfinite(stacked), valid)  # masks stay masks
        np.testing.assert_allclose(np.where(valid, stacked, 0).sum(axis=0), 0.0, atol=1e-4)
        np.testing.assert_allclose(relative.pooled[rows].sum(axis=0), 0.0, atol=1e-4)
        one = rows[0]  # by hand: the member minus the mean of the members with a value there
        own = table.frames[one][0, :, 0]
        others = np.stack([table.frames[i][0, :, 0] for i in rows])
        expected = own - np.nanmean(np.where(np.isfinite(others), others, np.nan), axis=0)
        np.testing.assert_allclose(relative.frames[one][0, :, 0], expected, atol=1e-5)
    np.testing.assert_array_equal(relative.label_mean, table.label_mean)  # inputs only: labels untouched
    assert relative.encoder == "aligned-test" + GROUP_RELATIVE_SUFFIX
    assert table.pooled.mean() > 40  # the original is not modified in place


def test_deadpan_renditions_can_be_left_out_of_the_mean():
    table = make_table(PERFORMERS, GROUPS)
    relative = group_relative(table, include_deadpan=False)
    humans = np.flatnonzero((table.groups == "A_1") & (table.performers != "Score"))
    np.testing.assert_allclose(relative.pooled[humans].sum(axis=0), 0.0, atol=1e-4)
    score = np.flatnonzero(table.performers == "Score")[0]
    np.testing.assert_allclose(relative.pooled[score], table.pooled[score] - table.pooled[humans].mean(axis=0),
                               rtol=1e-5)
    only_deadpan = make_table(["Score", "Score2"], ["C_1", "C_1"])  # no human member: every member is the reference
    np.testing.assert_allclose(group_relative(only_deadpan, include_deadpan=False).pooled.sum(axis=0), 0.0, atol=1e-4)


def test_each_render_is_its_own_group():
    table = make_table(["1", "2", "1", "2"], ["A_1"] * 4, renders=["rA", "rA", "rB", "rB"])
    table = dataclasses.replace(table, frames=None, frame_rate=10.0)
    table.pooled[2:] += 1000.0  # another soundfont, another level
    relative = group_relative(table)
    np.testing.assert_allclose(relative.pooled[:2].sum(axis=0), 0.0, atol=1e-3)
    np.testing.assert_allclose(relative.pooled[2:].sum(axis=0), 0.0, atol=1e-3)
    assert np.abs(relative.pooled).max() < 100


def test_frames_that_are_not_score_positions_are_refused():
    with pytest.raises(ValueError, match="time frames"):
        group_relative(make_table(PERFORMERS, GROUPS, frame_rate=25.0))
    uneven = make_table(PERFORMERS, GROUPS)
    uneven.frames[1] = uneven.frames[1][:, :4]
    with pytest.raises(ValueError, match="not aligned by score position"):
        group_relative(uneven)
    fine_tuning = dataclasses.replace(make_table(PERFORMERS, GROUPS), input_frames=[np.zeros((3, 2))] * 7,
                                      input_layer=9)
    with pytest.raises(ValueError, match="layer-input frames"):
        group_relative(fine_tuning)


def test_input_view_follows_the_data_config():
    table = make_table(PERFORMERS, GROUPS)
    assert input_view(table, ml_collections.ConfigDict({"group_relative": False})) is table
    assert input_view(table, None) is table
    on = input_view(table, ml_collections.ConfigDict({"group_relative": True, "group_relative_deadpan": False}))
    np.testing.assert_array_equal(on.pooled, group_relative(table, include_deadpan=False).pooled)


def test_store_round_trip_and_load_table_applies_it(tmp_path, monkeypatch):
    """Aligned frames go through the store with their NaN masks; `load_table` hands training, its input statistics
    and the ridge reference the same group-relative inputs."""
    from crescend_jax import encoders
    from crescend_jax.data import extract, store
    from crescend_jax.data.render import default_render_config
    from crescend_jax.data.segments import Corpus, Segment
    from crescend_jax.data.table import default_input_config
    from crescend_jax.models.contract import standardisation
    from tests.test_aligned_encoder import played, score_notes, write_midi

    score = write_midi(tmp_path / "score.mid", score_notes(4))
    segments = []
    for i in range(4):
        music = [n for n in score_notes(4) if i < 3 or not 1.0 <= n[0] < 1.5]  # the last one skips beat 2
        notes = played(music, lambda s, i=i: 0.1 * i + (0.9 + 0.1 * i) * s)
        path = write_midi(tmp_path / f"Comp_8bars_{i}_1.mid", [(t, d, p, v + 5 * i) for t, d, p, v in notes])
        segments.append(Segment(
            key=f"Comp_8bars_{i}_1", composition="Comp", piece="Comp_8bars", performer=str(i), group="Comp_8bars_1",
            midi_path=path, label_mean=np.full(19, i / 10, np.float32), label_std=np.full(19, 0.1, np.float32),
            ratings=np.full((2, 19), i / 10, np.float32), label_truth=np.full(19, np.nan, np.float32),
            score_midi_path=score))
    monkeypatch.setattr(extract, "load_corpus", lambda config: Corpus("fake", segments, []))
    config = ml_collections.ConfigDict()
    config.corpus = "fake"
    config.data = ml_collections.ConfigDict({"root": str(tmp_path), **default_input_config()})
    config.render = default_render_config()
    config.render.cache_dir = str(tmp_path / "render-cache")
    config.encoder = encoders.default_encoder_config()
    config.encoder.name = "aligned"
    config.store = store.default_store_config()
    config.store.root = str(tmp_path / "stores")
    config.store.frames = True
    assert extract.run_extract(config) == 0

    stored = store.load_table(config)
    assert stored.frame_rate == 0 and {f.shape for f in stored.frames} == {(1, 4, stored.pooled.shape[1])}
    assert np.isnan(stored.frames[3][0, 2]).sum() >= stored.pooled.shape[1] - 1  # masked, kept through bfloat16
    config.data.group_relative = True
    relative = store.load_table(config)
    expected = group_relative(stored)
    np.testing.assert_array_equal(relative.pooled, expected.pooled)
    np.testing.assert_allclose(relative.pooled.sum(axis=0), 0.0, atol=1e-3)
    mean, _ = standardisation(relative.pooled, True)  # the fold's statistics are those of the transformed inputs
    np.testing.assert_allclose(mean, 0.0, atol=1e-3)
    assert relative.encoder.endswith(GROUP_RELATIVE_SUFFIX)  # the run's fingerprint tells the inputs apart
