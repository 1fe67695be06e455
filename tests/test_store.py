"""The embedding store: round trip (performer factors, works, derived labels and PercePiano flags included), atomic
resumable parts, merge, tfds readability, read speed, identity in store.json, corrupt files, disk full / read-only,
and fusion of several encoders' stores."""

import dataclasses
import errno
import json
import os
import time
from pathlib import Path

import ml_collections
import numpy as np
import pytest

from crescend_jax.data import store
from crescend_jax.data.performance_labels import DERIVED_LABELS, LABELS_VERSION
from crescend_jax.data.performers import FACTOR_NAMES
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


def factor_segment(index: int) -> Segment:
    """Segment ``index`` with known factors (every third one a deadpan rendition: all NaN)."""
    values = np.full(len(FACTOR_NAMES), np.nan, np.float32) if index % 3 == 0 else (
        np.random.default_rng(500 + index).normal(size=len(FACTOR_NAMES)).astype(np.float32))
    return dataclasses.replace(make_segment(index), factors=values)


def test_performer_factors_round_trip_aligned_with_their_keys(tmp_path):
    write_segments = [factor_segment(i) for i in (7, 2, 9, 0, 5, 3, 1)]
    with store.StoreWriter(tmp_path / "s", make_info(), chunk_size=3) as writer:
        for segment in write_segments:
            writer.add(store.item_record(segment, "fluidr3-sr16000", np.zeros(LAYERS * DIM, np.float32), None))
    table = store.read_store([tmp_path / "s"])
    assert table.factor_names == FACTOR_NAMES and table.performer_factors.dtype == np.float32
    assert table.performer_factors.shape == (7, len(FACTOR_NAMES))
    by_key = {segment.key: segment.factors for segment in write_segments}
    for key, row in zip(table.keys, table.performer_factors):
        np.testing.assert_array_equal(row, by_key[key])  # NaN rows (deadpan) stay NaN
    assert np.isnan(table.performer_factors).all(axis=1).sum() == 3
    # rows a subset picks keep their own factors
    picked = table.subset(np.array([4, 0]))
    np.testing.assert_array_equal(picked.performer_factors, [by_key[k] for k in picked.keys])


def test_a_store_without_known_factors_reads_none(tmp_path):
    write(tmp_path / "s", range(4))  # make_segment leaves factors None (a corpus of real performances)
    table = store.read_store([tmp_path / "s"])
    assert table.performer_factors is None and table.factor_names == ()


def test_factors_of_the_wrong_width_are_refused():
    segment = dataclasses.replace(make_segment(1), factors=np.zeros(3, np.float32))
    with pytest.raises(ValueError, match=f"factors must be \\[{len(FACTOR_NAMES)}\\]"):
        store.item_record(segment, "r", np.zeros(LAYERS * DIM, np.float32), None)


def corpus_segment(index: int) -> Segment:
    """A segment with a work (every third: "" = its composition's own), derived labels (NaN for index 0) and the
    PercePiano flag (odd indices)."""
    derived = np.arange(len(DERIVED_LABELS), dtype=np.float32) + index
    if index == 0:
        derived[:] = np.nan
    return dataclasses.replace(make_segment(index), work="" if index % 3 == 0 else f"Work{index % 2}",
                               derived=derived, in_percepiano=bool(index % 2))


def test_works_derived_labels_and_percepiano_flags_round_trip_aligned_with_their_keys(tmp_path):
    segments = [corpus_segment(i) for i in (7, 2, 9, 0, 5, 3, 1)]
    with store.StoreWriter(tmp_path / "s", make_info(), chunk_size=3) as writer:
        for segment in segments:
            writer.add(store.item_record(segment, "fluidr3-sr16000", np.zeros(LAYERS * DIM, np.float32), None))
    table = store.read_store([tmp_path / "s"])
    by_key = {segment.key: segment for segment in segments}
    assert table.derived_names == DERIVED_LABELS and table.derived.dtype == np.float32
    assert table.works.tolist() == [by_key[k].work for k in table.keys]
    assert table.in_percepiano.dtype == bool and table.in_percepiano.tolist() == [by_key[k].in_percepiano
                                                                                  for k in table.keys]
    for key, row in zip(table.keys, table.derived):
        np.testing.assert_array_equal(row, by_key[key].derived)  # NaN stays NaN
    info = json.loads((tmp_path / "s" / "store.json").read_text())
    assert info["derived_labels"] == list(DERIVED_LABELS) and info["labels_version"] == LABELS_VERSION
    assert store.read_info(tmp_path / "s") == make_info()


def test_a_corpus_without_works_or_derived_labels_reads_empty_works_and_no_derived(tmp_path):
    write(tmp_path / "s", range(4))  # make_segment: no work, no derived labels, not flagged
    table = store.read_store([tmp_path / "s"])
    assert table.works.tolist() == [""] * 4 and table.in_percepiano.tolist() == [False] * 4
    assert table.derived is None and table.derived_names == ()


def test_derived_labels_of_the_wrong_width_are_refused():
    segment = dataclasses.replace(make_segment(1), derived=np.zeros(len(DERIVED_LABELS) + 1, np.float32))
    with pytest.raises(ValueError, match=f"derived must be \\[{len(DERIVED_LABELS)}\\]"):
        store.item_record(segment, "r", np.zeros(LAYERS * DIM, np.float32), None)


def test_a_new_labels_version_joins_the_store_but_other_label_names_do_not(tmp_path):
    write(tmp_path / "s", range(2))
    write(tmp_path / "s", range(2, 4), info=dataclasses.replace(make_info(), labels_version=LABELS_VERSION + 1))
    assert len(store.read_store([tmp_path / "s"])) == 4
    with pytest.raises(store.StoreError, match="delete that directory"):
        store.StoreWriter(tmp_path / "s", dataclasses.replace(make_info(), derived_labels=("tempo_bpm",)))


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


def test_reading_1000_wide_items_keeps_every_row(tmp_path):
    info = store.StoreInfo(corpus="fake", encoder="wide", frame_rate=1.0, num_layers=4, dim=1024, frames=False,
                           render="r")
    rng = np.random.default_rng(0)
    pooled = rng.normal(size=(1000, 4096)).astype(np.float32)
    with store.StoreWriter(tmp_path / "w", info, chunk_size=128) as writer:
        for i in range(1000):
            writer.add(store.item_record(make_segment(i), "r", pooled[i], None))
    store.merge_store(tmp_path / "w")
    table = store.read_store([tmp_path / "w"])
    assert len(table) == 1000 and table.pooled.shape == (1000, 4096)
    row_of = {make_segment(i).key: i for i in range(1000)}
    np.testing.assert_array_equal(table.pooled, pooled[[row_of[k] for k in table.keys]])


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


# ---------------------------------------------------------------------------------------------------------------
# store.json, corrupt files, disk full / read-only


def test_store_json_records_identity_and_data_root(tmp_path):
    info = dataclasses.replace(make_info(), identity={"corpus": "fake", "render": "r"}, data_root="/data/x")
    write(tmp_path / "s", range(3), info=info)
    assert store.read_info(tmp_path / "s") == info
    table = store.read_store([tmp_path / "s"])
    assert table.sources == (str((tmp_path / "s").resolve()),) and table.data_roots == ("/data/x",)
    assert store.store_id(table.sources[0]).endswith("/s")


def test_a_writer_from_another_data_root_joins_the_same_store(tmp_path):
    info = dataclasses.replace(make_info(), identity={"corpus": "fake"}, data_root="/data/x")
    write(tmp_path / "s", range(2), info=info)
    write(tmp_path / "s", range(2, 4), info=dataclasses.replace(info, data_root="/copy/of/x"))
    assert len(store.read_store([tmp_path / "s"])) == 4
    with pytest.raises(store.StoreError, match="delete that directory"):
        store.StoreWriter(tmp_path / "s", dataclasses.replace(info, identity={"corpus": "other"}))


@pytest.mark.parametrize("text, match", [
    ("[1, 2]", "not a store description"),
    (json.dumps({**dataclasses.asdict(make_info()), "format": 1}), f"store format 1, this version reads {store.STORE_FORMAT}"),
    # a store written before the items held works, derived labels and the PercePiano flag
    (json.dumps({**dataclasses.asdict(make_info()), "format": 3}),
     f"store format 3, this version reads {store.STORE_FORMAT}"),
])
def test_foreign_store_json_is_a_store_error_with_the_way_out(tmp_path, text, match):
    write(tmp_path / "s", range(2))
    (tmp_path / "s" / "store.json").write_text(text)
    with pytest.raises(store.StoreError, match=match) as err:
        store.read_store([tmp_path / "s"])
    assert "crescend-jax extract" in str(err.value) and str(tmp_path / "s") in str(err.value)


def test_missing_store_json_says_how_to_recover(tmp_path):
    write(tmp_path / "s", range(2))
    (tmp_path / "s" / "store.json").unlink()
    with pytest.raises(store.StoreError, match="store.json is missing but .*parts holds items: rerun "
                                               "`crescend-jax extract.*keeps every stored item"):
        store.read_store([tmp_path / "s"])
    with pytest.raises(store.StoreError, match="not an embedding store .*create it with `crescend-jax extract"):
        store.read_info(tmp_path / "empty")


def _one_part(store_dir: Path) -> Path:
    (part,) = (store_dir / "parts").glob("*.array_record")
    return part


@pytest.mark.parametrize("damage", ["truncate", "garbage", "empty"])
def test_corrupt_part_is_a_store_error_naming_the_file_and_the_way_out(tmp_path, damage):
    write(tmp_path / "s", range(5), chunk_size=8)
    part = _one_part(tmp_path / "s")
    data = part.read_bytes()
    part.write_bytes({"truncate": data[: len(data) // 2], "garbage": b"x" * 100, "empty": b""}[damage])
    with pytest.raises(store.StoreError) as err:
        store.read_store([tmp_path / "s"])
    message = str(err.value)
    assert f"part file {part} is corrupt or truncated" in message
    assert f"delete it and {part.name.replace('.array_record', '.keys.json')}" in message
    assert "re-extract its 5 items" in message and "crescend-jax extract" in message
    assert "\n" not in message and not list((tmp_path / "s").glob(".tmp-merge-*"))


def test_part_with_fewer_records_than_keys_is_a_store_error(tmp_path):
    write(tmp_path / "s", range(3), chunk_size=8)
    keys = next((tmp_path / "s" / "parts").glob("*.keys.json"))
    keys.write_text(json.dumps(json.loads(keys.read_text()) + ["extra_key"]))
    with pytest.raises(store.StoreError, match="holds 3 items but its keys file lists 4; delete it"):
        store.merge_store(tmp_path / "s")


def test_unreadable_keys_file_is_a_store_error(tmp_path):
    write(tmp_path / "s", range(3), chunk_size=8)
    next((tmp_path / "s" / "parts").glob("*.keys.json")).write_text('{"not": "a list"}')
    with pytest.raises(store.StoreError, match="keys.json is unreadable .*re-extract those items"):
        store.read_store([tmp_path / "s"])


@pytest.mark.parametrize("damage", ["truncate", "garbage", "missing", "metadata"])
def test_corrupt_merged_dataset_says_rebuild_and_merge_rebuilds_it(tmp_path, damage):
    write(tmp_path / "s", range(40), chunk_size=16)
    expected = store.read_store([tmp_path / "s"])
    merged = tmp_path / "s" / store.DATASET_VERSION
    (shard,) = merged.glob("*.array_record-*")
    data = shard.read_bytes()
    if damage == "truncate":
        shard.write_bytes(data[: len(data) // 2])
    elif damage == "garbage":
        shard.write_bytes(b"y" * 1000)
    elif damage == "missing":
        shard.unlink()
    else:
        (merged / "dataset_info.json").write_text("{broken")
    with pytest.raises(store.StoreError) as err:
        store.read_store([tmp_path / "s"])
    assert f"the merged dataset {merged} is unreadable" in str(err.value)
    assert "rebuild it from its parts with `crescend-jax merge --config" in str(err.value)
    assert store.merge_store(tmp_path / "s", rebuild=True) == 40  # what `crescend-jax merge` does
    table = store.read_store([tmp_path / "s"])
    assert list(table.keys) == list(expected.keys)
    np.testing.assert_array_equal(table.pooled, expected.pooled)


def _enospc(*args, **kwargs):
    raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))


def test_disk_full_while_writing_a_part_commits_nothing_and_says_so_in_one_line(tmp_path, monkeypatch):
    write(tmp_path / "s", range(4), chunk_size=4)  # one committed part before the disk fills
    monkeypatch.setattr(store, "_write_records", _enospc)
    writer = store.StoreWriter(tmp_path / "s", make_info(), chunk_size=4)
    for i in range(4, 7):
        writer.add(make_record(i))
    with pytest.raises(store.StoreError) as err:
        writer.add(make_record(7))  # the chunk fills and is committed
    message = str(err.value)
    assert message.startswith(f"cannot write {tmp_path / 's' / 'parts'}/all-") and "No space left on device" in message
    assert "free space on that disk or set --config.store.root" in message and "\n" not in message
    writer.close()  # closing after the failure does not try again
    parts = sorted(p.name for p in (tmp_path / "s" / "parts").iterdir())
    assert len(parts) == 2 and not any(p.startswith(".tmp-") for p in parts)  # the first part, nothing partial
    monkeypatch.undo()
    assert store.stored_keys(tmp_path / "s") == {make_record(i)["key"] for i in range(4)}


def test_array_record_write_errors_become_one_line(tmp_path, monkeypatch):
    from array_record.python import array_record_module

    class FullWriter:
        def __init__(self, path, options):
            self.path = path

        def write(self, record):
            raise RuntimeError("Writing failed: No space left on device")

        def close(self):
            pass

    monkeypatch.setattr(array_record_module, "ArrayRecordWriter", FullWriter)
    with pytest.raises(store.StoreError, match=r"cannot write .*: .*No space left on device; free space"):
        write(tmp_path / "s", range(2))
    assert not [p for p in (tmp_path / "s" / "parts").iterdir()]


def test_read_only_store_is_one_line_naming_the_path(tmp_path, monkeypatch):
    def read_only(*args, **kwargs):
        raise PermissionError(errno.EACCES, os.strerror(errno.EACCES))

    monkeypatch.setattr(store.os, "replace", read_only)
    with pytest.raises(store.StoreError) as err:
        write(tmp_path / "s", range(2))
    assert str(err.value).startswith(f"cannot write {tmp_path / 's' / 'store.json'}: Permission denied; make it "
                                     f"writable or set --config.store.root")
    assert not list((tmp_path / "s").glob(".tmp-*"))


def test_a_store_root_that_is_a_file_is_one_line(tmp_path):
    (tmp_path / "file").write_text("")
    with pytest.raises(store.StoreError, match=r"cannot write .*file/s/parts: Not a directory"):
        write(tmp_path / "file" / "s", range(2))


def test_a_part_that_does_not_read_back_is_not_committed(tmp_path, monkeypatch):
    real = store._read_records
    monkeypatch.setattr(store, "_read_records", lambda path: real(path)[:-1])
    with pytest.raises(store.StoreError, match="does not read back the 2 records just written"):
        write(tmp_path / "s", range(2))
    assert not list((tmp_path / "s" / "parts").iterdir())


def test_disk_full_during_merge_keeps_the_old_merge(tmp_path, monkeypatch):
    import tensorflow_datasets as tfds

    write(tmp_path / "s", range(4))
    assert store.merge_store(tmp_path / "s") == 4
    write(tmp_path / "s", range(4, 6))
    monkeypatch.setattr(tfds.folder_dataset, "write_metadata", _enospc)
    with pytest.raises(store.StoreError, match=f"cannot write {tmp_path / 's' / '1.0.0'}: No space left"):
        store.merge_store(tmp_path / "s")
    assert not list((tmp_path / "s").glob(".tmp-*"))
    monkeypatch.undo()
    assert len(store.read_store([tmp_path / "s"])) == 6


# ---------------------------------------------------------------------------------------------------------------
# Fusion: load_table over the stores of several encoders


def _fusion_config(root: Path) -> ml_collections.ConfigDict:
    from crescend_jax.data.render import default_render_config

    config = ml_collections.ConfigDict()
    config.corpus = "fake"
    config.data = ml_collections.ConfigDict({"root": str(root / "data")})
    config.render = default_render_config()
    config.render.soundfonts = ("fluidr3", "musescore")
    config.encoder = ml_collections.ConfigDict({"name": "features", "features": {"n_mels": 8}, "midi": {"v": 1}})
    config.store = store.default_store_config()
    config.store.root = str(root / "stores")
    return config


def _fill(config, encoder: str, name: str, indices_per_store, width: int, offset: float) -> list[Path]:
    """Writes the stores of ``encoder`` (registered as ``name``): pooled[i] = offset + index + render number."""
    config = ml_collections.ConfigDict(config.to_dict())
    config.encoder.name = encoder
    store.remember_encoder_name(config, name)
    dirs = store.store_dirs(config)
    for number, (store_dir, indices) in enumerate(zip(dirs, indices_per_store)):
        render = store_dir.name.rsplit("-", 1)[0]
        info = store.StoreInfo(corpus="fake", encoder=name, frame_rate=1.0, num_layers=1, dim=width, frames=False,
                               render=render, data_root=str(Path(config.data.root).resolve()))
        with store.StoreWriter(store_dir, info) as writer:
            for i in indices:
                pooled = np.full(width, offset + i + 100 * number, np.float32)
                writer.add(store.item_record(make_segment(i), render, pooled, None))
    return dirs


def test_fused_table_pairs_audio_rows_by_render_and_repeats_the_symbolic_vector(tmp_path):
    config = _fusion_config(tmp_path)
    audio = _fill(config, "features", "feat-a", [range(6), range(6)], width=3, offset=0.0)
    (symbolic,) = _fill(config, "midi", "midi-b", [range(6)], width=2, offset=0.5)
    assert symbolic.name.startswith("symbolic-")
    config.store.fuse = ("features", "midi")
    table = store.load_table(config)
    assert table.encoder == "fusion(feat-a+midi-b)" and table.frames is None
    assert len(table) == 12 and table.pooled.shape == (12, 5)
    assert table.sources == tuple(str(d.resolve()) for d in [*audio, symbolic])
    assert table.data_roots == (str((tmp_path / "data").resolve()),)
    for row in range(12):
        index = int(table.keys[row].split("_")[2])
        render_number = 0 if table.renders[row].startswith("fluidr3") else 100
        np.testing.assert_array_equal(table.pooled[row, :3], index + render_number)  # its own render's audio row
        np.testing.assert_array_equal(table.pooled[row, 3:], 0.5 + index)  # the one symbolic row of its key
        np.testing.assert_array_equal(table.label_mean[row], make_segment(index).label_mean)
    config.store.fuse = ("midi", "features")  # order of fuse = order of the columns
    np.testing.assert_array_equal(store.load_table(config).pooled[:, :2], table.pooled[:, 3:])


def test_fusion_refuses_stores_whose_keys_differ_naming_them(tmp_path):
    config = _fusion_config(tmp_path)
    _fill(config, "features", "feat-a", [range(6), range(5)], width=3, offset=0.0)
    _fill(config, "midi", "midi-b", [range(1, 6)], width=2, offset=0.5)
    config.store.fuse = ("features", "midi")
    with pytest.raises(store.StoreError) as err:
        store.load_table(config)
    message = str(err.value)
    assert message.startswith("cannot fuse stores whose keys differ: ")
    missing_5, missing_0 = make_segment(5).key, make_segment(0).key
    assert "fake/feat-a/musescore-" in message and f"(encoder 'features') lacks 1 keys: {missing_5}" in message
    assert "fake/midi-b/symbolic-" in message and f"(encoder 'midi') lacks 1 keys: {missing_0}" in message
    assert "fluidr3" not in message  # the complete store is not blamed
    assert "crescend-jax extract" in message


def test_fusion_names_an_unknown_encoder_and_a_missing_store(tmp_path):
    config = _fusion_config(tmp_path)
    _fill(config, "features", "feat-a", [range(3), range(3)], width=3, offset=0.0)
    config.store.fuse = ("features", "mert")
    with pytest.raises(store.StoreError, match="store.fuse names encoder 'mert' but config.encoder has no such "
                                               r"section; known encoders: \['features', 'midi'\]"):
        store.load_table(config)
    config.store.fuse = ("features", "midi")
    with pytest.raises(store.StoreError, match="no store under .* for encoder 'midi'.*crescend-jax extract"):
        store.load_table(config)


def test_an_empty_fuse_reads_encoder_name_alone(tmp_path):
    config = _fusion_config(tmp_path)
    _fill(config, "features", "feat-a", [range(3), range(3)], width=3, offset=0.0)
    config.store.fuse = ()
    table = store.load_table(config)
    assert table.encoder == "feat-a" and table.pooled.shape == (6, 3) and len(table.sources) == 2


def test_a_changed_corpus_finds_no_store_and_names_the_stores_beside_it(tmp_path):
    config = _fusion_config(tmp_path)
    _fill(config, "features", "feat-a", [range(3), range(3)], width=3, offset=0.0)
    config.data.root = str(tmp_path / "other-data")  # another corpus content for this (generic) corpus
    with pytest.raises(store.StoreError, match="is missing or empty .*holds this encoder's stores of other corpus "
                                               "content: fluidr3-"):
        store.load_table(config)
