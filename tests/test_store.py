"""The embedding store: round trip, atomic resumable parts, merge, tfds readability, read speed."""

import json
import os
import time
from pathlib import Path

import ml_collections
import numpy as np
import pytest

from crescend_jax.data import store
from crescend_jax.data.segments import Segment

LAYERS, DIM = 2, 8


def make_segment(index: int, num_ratings: int = 3) -> Segment:
    rng = np.random.default_rng(index)
    piece = f"Comp{index % 3}_8bars"
    return Segment(
        key=f"{piece}_{index}_{index % 5}", composition=f"Comp{index % 3}", piece=piece, performer=str(index),
        group=f"{piece}_{index % 5}", midi_path=Path(f"/nonexistent/{index}.mid"),
        label_mean=rng.random(19, dtype=np.float32), label_std=np.full(19, np.nan, np.float32),
        ratings=rng.random((num_ratings, 19), dtype=np.float32), label_truth=np.full(19, np.nan, np.float32))


def make_info(frames: bool = False, render: str = "fluidr3-sr16000") -> store.StoreInfo:
    return store.StoreInfo(corpus="fake", encoder="fake-enc", frame_rate=10.0, num_layers=LAYERS, dim=DIM,
                           frames=frames, render=render)


def make_record(index: int, render: str = "fluidr3-sr16000", frames: bool = False) -> dict:
    rng = np.random.default_rng(1000 + index)
    frame_array = rng.normal(size=(LAYERS, 3 + index % 4, DIM)).astype(np.float32) if frames else None
    return store.item_record(make_segment(index, num_ratings=index % 3), render,
                             rng.normal(size=LAYERS * DIM).astype(np.float32), frame_array)


def write(store_dir: Path, indices, info=None, writer_id="all", chunk_size=4, **kw) -> None:
    info = info or make_info()
    with store.StoreWriter(store_dir, info, writer_id=writer_id, chunk_size=chunk_size) as writer:
        for i in indices:
            writer.add(make_record(i, render=info.render, **kw))


def test_round_trip_values_equal(tmp_path):
    write(tmp_path / "s", range(10))
    table = store.read_store([tmp_path / "s"])
    assert len(table) == 10 and table.encoder == "fake-enc" and table.frame_rate == 10.0
    assert sorted(table.keys) == sorted(make_record(i)["key"] for i in range(10))
    for i, key in enumerate(table.keys):
        expected = make_record(int(key.split("_")[2]))
        assert table.keys[i] == expected["key"] and table.groups[i] == expected["group"]
        assert table.performers[i] == expected["performer"] and table.renders[i] == "fluidr3-sr16000"
        np.testing.assert_array_equal(table.pooled[i], expected["pooled"])
        np.testing.assert_array_equal(table.label_mean[i], expected["label_mean"])
        assert np.isnan(table.label_std[i]).all() and np.isnan(table.label_truth[i]).all()
        np.testing.assert_array_equal(table.ratings[i], expected["ratings"])
    assert table.ratings[list(table.keys).index(make_record(0)["key"])].shape == (0, 19)
    assert table.frames is None


def test_rows_come_back_in_key_order_whatever_the_write_order(tmp_path):
    write(tmp_path / "a", [7, 2, 9, 0, 5, 3])  # extraction stores items in the order renders finish
    write(tmp_path / "b", [0, 9, 3, 2, 5, 7])
    a, b = store.read_store([tmp_path / "a"]), store.read_store([tmp_path / "b"])
    assert list(a.keys) == sorted(a.keys) == list(b.keys)
    np.testing.assert_array_equal(a.pooled, b.pooled)


def test_frames_round_trip_in_bfloat16(tmp_path):
    info = make_info(frames=True)
    write(tmp_path / "s", range(5), info=info, frames=True)
    table = store.read_store([tmp_path / "s"])
    for i, key in enumerate(table.keys):
        expected = make_record(int(key.split("_")[2]), frames=True)["frames"].astype(np.float32)
        assert table.frames[i].dtype == np.float32 and table.frames[i].shape == expected.shape
        np.testing.assert_allclose(table.frames[i], expected, rtol=1e-2, atol=1e-2)


def test_merged_store_is_a_tfds_dataset(tmp_path):
    import tensorflow_datasets as tfds

    write(tmp_path / "s", range(6))
    assert store.merge_store(tmp_path / "s") == 6
    source = tfds.builder_from_directory(tmp_path / "s" / store.DATASET_VERSION).as_data_source(split="train")
    assert len(source) == 6 and source[0]["pooled"].shape == (LAYERS * DIM,)


@pytest.mark.parametrize("text", ["{not json", json.dumps({"corpus": "demo", "unknown_field": 1})])
def test_unreadable_store_json_is_a_store_error(tmp_path, text):
    (tmp_path / "s").mkdir()
    (tmp_path / "s" / "store.json").write_text(text)
    with pytest.raises(store.StoreError, match="store.json is not a store description"):
        store.read_info(tmp_path / "s")


def test_merge_splits_a_large_store_over_several_files(tmp_path, monkeypatch):
    import tensorflow_datasets as tfds

    write(tmp_path / "s", range(6))
    monkeypatch.setattr(store, "_MERGED_FILE_BYTES", 1)  # every record starts a new file
    assert store.merge_store(tmp_path / "s") == 6
    merged = tmp_path / "s" / store.DATASET_VERSION
    assert len(list(merged.glob("*.array_record-*-of-00006"))) == 6
    source = tfds.builder_from_directory(merged).as_data_source(split="train")
    keys = sorted(source[i]["key"].decode() for i in range(len(source)))
    assert keys == sorted(make_record(i)["key"] for i in range(6))


def test_interrupted_write_leaves_no_half_item_and_rerun_fills_the_rest(tmp_path):
    store_dir = tmp_path / "s"
    write(store_dir, range(8))  # two committed chunks
    # A writer killed mid-chunk leaves a temp records file and possibly an orphan keys file, never a committed part.
    parts = store_dir / "parts"
    (parts / ".tmp-killed-123-abc.array_record").write_bytes(b"half written")
    (parts / "all-999-deadbeef.keys.json").write_text(json.dumps([make_record(8)["key"]]))
    assert store.stored_keys(store_dir) == {make_record(i)["key"] for i in range(8)}
    segments = [make_segment(i) for i in range(12)]
    pending = store.pending_segments(segments, store_dir)
    assert [s.key for s in pending] == [s.key for s in segments[8:]]
    write(store_dir, range(8, 12))
    table = store.read_store([store_dir])
    assert sorted(table.keys) == sorted(s.key for s in segments)


def test_duplicates_from_reruns_and_shards_merge_to_one_dataset(tmp_path):
    store_dir = tmp_path / "s"
    write(store_dir, range(0, 6), writer_id="shard-0-of-2")
    write(store_dir, range(6, 10), writer_id="shard-1-of-2")
    write(store_dir, range(4, 8), writer_id="all")  # a rerun that stored some keys again
    assert store.merge_store(store_dir) == 10
    assert store.is_merged(store_dir)
    first = sorted(store.read_store([store_dir]).keys)
    assert first == sorted(make_record(i)["key"] for i in range(10))
    assert store.merge_store(store_dir) == 10  # idempotent
    write(store_dir, [10])
    assert not store.is_merged(store_dir)
    assert len(store.read_store([store_dir])) == 11  # the reader merges the new part


def test_stores_of_two_soundfonts_concatenate(tmp_path):
    write(tmp_path / "a", range(4), info=make_info(render="sfA"))
    write(tmp_path / "b", range(3), info=make_info(render="sfB"))
    table = store.read_store([tmp_path / "a", tmp_path / "b"])
    assert len(table) == 7 and sorted(set(table.renders)) == ["sfA", "sfB"]


def test_writer_refuses_a_store_with_other_settings(tmp_path):
    write(tmp_path / "s", range(2))
    with pytest.raises(store.StoreError, match="delete that directory"):
        store.StoreWriter(tmp_path / "s", make_info(frames=True))


def test_stale_temp_files_are_removed_by_merge(tmp_path):
    write(tmp_path / "s", range(2))
    stale = tmp_path / "s" / "parts" / ".tmp-old.array_record"
    fresh = tmp_path / "s" / "parts" / ".tmp-new.array_record"
    stale.write_bytes(b"x")
    fresh.write_bytes(b"x")
    old = time.time() - 3600
    os.utime(stale, (old, old))
    store.merge_store(tmp_path / "s")
    assert not stale.exists() and fresh.exists()


def _config(root: Path) -> ml_collections.ConfigDict:
    config = ml_collections.ConfigDict()
    config.corpus = "fake"
    config.encoder = ml_collections.ConfigDict({"name": "features", "features": {"n_mels": 64}})
    config.store = store.default_store_config()
    config.store.root = str(root)
    return config


def test_load_table_names_the_missing_store_and_the_command(tmp_path):
    with pytest.raises(store.StoreError, match="crescend-jax extract --config"):
        store.load_table(_config(tmp_path))


def test_encoder_name_registry(tmp_path):
    config = _config(tmp_path)
    assert store.known_encoder_name(config) is None
    store.remember_encoder_name(config, "logmel-64")
    assert store.known_encoder_name(config) == "logmel-64"
    from_json = ml_collections.ConfigDict(json.loads(json.dumps(config.to_dict())))  # as a workdir's config.json
    assert store.known_encoder_name(from_json) == "logmel-64"
    config.encoder.features.n_mels = 128
    assert store.known_encoder_name(config) is None


def test_reading_1000_wide_items_is_fast(tmp_path):
    info = store.StoreInfo(corpus="fake", encoder="wide", frame_rate=1.0, num_layers=4, dim=1024, frames=False,
                           render="r")
    rng = np.random.default_rng(0)
    pooled = rng.normal(size=(1000, 4096)).astype(np.float32)
    with store.StoreWriter(tmp_path / "w", info, chunk_size=128) as writer:
        for i in range(1000):
            writer.add(store.item_record(make_segment(i), "r", pooled[i], None))
    store.merge_store(tmp_path / "w")
    start = time.perf_counter()
    table = store.read_store([tmp_path / "w"])
    elapsed = time.perf_counter() - start
    assert len(table) == 1000 and table.pooled.shape == (1000, 4096)
    row_of = {make_segment(i).key: i for i in range(1000)}
    np.testing.assert_array_equal(table.pooled, pooled[[row_of[k] for k in table.keys]])
    assert elapsed < 2.0, f"reading 1000 x 4096 took {elapsed:.2f} s"


def test_switching_encoder_by_name_switches_the_store(tmp_path):
    from crescend_jax.encoders import default_encoder_config

    config = _config(tmp_path)
    config.encoder = default_encoder_config()
    store.remember_encoder_name(config, "features-x")
    config.encoder.name = "muq"  # the one field a training config changes
    assert store.known_encoder_name(config) is None
    store.remember_encoder_name(config, "muq-y")
    config.encoder.muq.batch_size = 2  # settings of the other encoder do not move the features store
    config.encoder.name = "features"
    assert store.known_encoder_name(config) == "features-x"
