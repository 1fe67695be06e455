"""The embedding store: one tfds array_record dataset per (corpus, encoder, render settings).

Layout of one store directory ``<store.root>/<corpus>/<encoder name>/<render settings_id>/``::

    store.json                      what wrote it: corpus, encoder, frame_rate, layers, dim, frames, render
    parts/<writer>-<ns>-<id>.keys.json   keys of one committed chunk, in record order (written first)
    parts/<writer>-<ns>-<id>.array_record  the chunk: serialized tfds examples (its arrival commits the chunk)
    1.0.0/                          the merged tfds dataset (split "train", every key once), built from parts/

Writers only ever add new part files (temp name, then ``os.replace``), so a run killed at any moment leaves no
half-written item, concurrent ``--shard i/N`` workers never touch a shared file, and a rerun skips every key found in
``parts/``. `merge_store` rebuilds ``1.0.0/`` from the parts (de-duplicated by key, first write wins) whenever the parts
changed; `read_store` merges first if needed and reads with ``tfds.builder_from_directory(...).as_data_source()``.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import os
import shutil
import time
import uuid
from pathlib import Path
from typing import TYPE_CHECKING, Any, Iterable, Sequence

import ml_collections
import numpy as np

from crescend_jax.encoders import active_encoder_config
from crescend_jax.data.dimensions import NUM_DIMENSIONS
from crescend_jax.data.segments import Segment
from crescend_jax.data.table import EmbeddingTable

if TYPE_CHECKING:
    import tensorflow_datasets as tfds

STORE_FORMAT = 1
DATASET_NAME = "crescend_store"
DATASET_VERSION = "1.0.0"
SPLIT = "train"
_PARTS = "parts"
_RECORD_SUFFIX = ".array_record"
_KEYS_SUFFIX = ".keys.json"
_TEMP_PREFIX = ".tmp-"
_STALE_TEMP_SECONDS = 600.0  # a temp file this old belongs to a killed writer (a chunk takes well under a second)
_MERGED_FILE_BYTES = 1 << 30  # split the merged dataset into array_record files of about this size
_TEXT_FIELDS = ("key", "composition", "piece", "performer", "group", "render")
_LABEL_FIELDS = ("label_mean", "label_std", "label_truth")


class StoreError(RuntimeError):
    """A store that is missing, inconsistent, or was written with different settings."""


def default_store_config() -> ml_collections.ConfigDict:
    """``config.store``: where stores live and what they hold."""
    config = ml_collections.ConfigDict()
    config.root = "stores"  # stores live at <root>/<corpus>/<encoder name>/<render settings_id>/
    config.frames = False  # also store frame-level features [layers, T, dim] (bfloat16 on disk)
    config.chunk_size = 32  # items per committed part file (a hard kill loses at most this many encodings)
    config.encode_batch = 8  # waveforms per encoder call during extraction
    return config


@dataclasses.dataclass(frozen=True)
class StoreInfo:
    """What one store holds; saved as ``store.json`` and checked by every writer that joins the store."""

    corpus: str
    encoder: str
    frame_rate: float
    num_layers: int
    dim: int
    frames: bool
    render: str
    format: int = STORE_FORMAT

    @property
    def pooled_dim(self) -> int:
        return self.num_layers * self.dim


def store_features(info: StoreInfo) -> tfds.features.FeaturesDict:
    """The ``tfds.features.FeaturesDict`` of one stored item."""
    import tensorflow_datasets as tfds

    vector = lambda: tfds.features.Tensor(shape=(NUM_DIMENSIONS,), dtype=np.float32)
    features: dict[str, Any] = {name: tfds.features.Text() for name in _TEXT_FIELDS}
    features.update({name: vector() for name in _LABEL_FIELDS})
    features["ratings"] = tfds.features.Tensor(shape=(None, NUM_DIMENSIONS), dtype=np.float32)
    features["pooled"] = tfds.features.Tensor(shape=(info.pooled_dim,), dtype=np.float32)
    if info.frames:
        import ml_dtypes

        features["frames"] = tfds.features.Tensor(
            shape=(info.num_layers, None, info.dim), dtype=ml_dtypes.bfloat16,
            encoding=tfds.features.Encoding.BYTES)
    return tfds.features.FeaturesDict(features)


def item_record(segment: Segment, render: str, pooled: np.ndarray, frames: np.ndarray | None) -> dict[str, Any]:
    """One store item from a segment and its encoding (``frames`` [layers, T, dim] only when the store keeps them)."""
    record: dict[str, Any] = {
        "key": segment.key, "composition": segment.composition, "piece": segment.piece,
        "performer": segment.performer, "group": segment.group, "render": render,
        "label_mean": np.asarray(segment.label_mean, np.float32),
        "label_std": np.asarray(segment.label_std, np.float32),
        "label_truth": np.asarray(segment.label_truth, np.float32),
        "ratings": np.asarray(segment.ratings, np.float32).reshape(-1, NUM_DIMENSIONS),
        "pooled": np.asarray(pooled, np.float32),
    }
    if frames is not None:
        import ml_dtypes

        record["frames"] = np.asarray(frames, np.float32).astype(ml_dtypes.bfloat16)
    return record


# ---------------------------------------------------------------------------------------------------------------
# Paths and the encoder-name registry


def _config_digest(config: ml_collections.ConfigDict) -> str:
    text = json.dumps(config.to_dict(), sort_keys=True, default=str)
    return hashlib.sha1(text.encode()).hexdigest()[:16]


def _registry_path(config: ml_collections.ConfigDict) -> Path:
    return Path(config.store.root) / config.corpus / "encoders" / f"{_config_digest(active_encoder_config(config.encoder))}.json"


def remember_encoder_name(config: ml_collections.ConfigDict, name: str) -> None:
    """Records ``encoder.name`` for ``config.encoder`` so later runs find the store without building the encoder."""
    path = _registry_path(config)
    if path.is_file() and json.loads(path.read_text())["name"] == name:
        return
    _atomic_write_text(path, json.dumps({"name": name, "encoder_config": active_encoder_config(config.encoder).to_dict()},
                                        sort_keys=True, indent=1, default=str))


def known_encoder_name(config: ml_collections.ConfigDict) -> str | None:
    """The ``encoder.name`` recorded for ``config.encoder`` by an earlier extraction, or None."""
    path = _registry_path(config)
    return json.loads(path.read_text())["name"] if path.is_file() else None


def render_settings_ids(config: ml_collections.ConfigDict) -> list[str]:
    """The ``settings_id`` of every soundfont in ``config.render.soundfonts`` (raises ``SoundfontError``)."""
    from crescend_jax.data.render import RenderSettings

    return [RenderSettings.from_config(config.render, soundfont).settings_id for soundfont in config.render.soundfonts]


def store_dirs(config: ml_collections.ConfigDict, encoder_name: str | None = None) -> list[Path]:
    """``<store.root>/<corpus>/<encoder name>/<settings_id>/``, one per soundfont.

    The encoder name comes from ``encoder_name``, else from the registry an earlier extraction wrote, else from
    building the encoder (cheap for "features"; extraction records it so MuQ is never loaded just for a path).
    """
    if encoder_name is None:
        encoder_name = known_encoder_name(config)
    if encoder_name is None:
        from crescend_jax.encoders import build_encoder

        encoder_name = build_encoder(config.encoder).name
    base = Path(config.store.root) / config.corpus / encoder_name
    return [base / settings_id for settings_id in render_settings_ids(config)]


# ---------------------------------------------------------------------------------------------------------------
# Writing


def _atomic_write_text(path: Path, text: str) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    temp = path.with_name(f"{_TEMP_PREFIX}{uuid.uuid4().hex}-{path.name}")
    temp.write_text(text)
    os.replace(temp, path)


def read_info(store_dir: Path) -> StoreInfo:
    """The ``store.json`` of ``store_dir``."""
    path = Path(store_dir) / "store.json"
    if not path.is_file():
        raise StoreError(f"{path} is missing: {store_dir} is not an embedding store (or was never written)")
    try:
        return StoreInfo(**json.loads(path.read_text()))
    except (json.JSONDecodeError, UnicodeDecodeError, TypeError) as err:
        raise StoreError(f"{path} is not a store description this version can read ({err}); delete {store_dir} "
                         f"and rerun `crescend-jax extract`") from None


def open_store(store_dir: Path, info: StoreInfo) -> None:
    """Creates ``store_dir`` for ``info``, or checks that the store already there was written with the same settings."""
    store_dir = Path(store_dir)
    if (store_dir / "store.json").is_file():
        existing = read_info(store_dir)
        if existing != info:
            raise StoreError(
                f"{store_dir} holds a store written with {existing}, not {info}; delete that directory or set "
                f"--config.store.root to another place")
        return
    (store_dir / _PARTS).mkdir(parents=True, exist_ok=True)
    _atomic_write_text(store_dir / "store.json", json.dumps(dataclasses.asdict(info), indent=1, sort_keys=True))


class StoreWriter:
    """Appends items to one store in committed chunks of ``chunk_size`` (a context manager; closing flushes).

    ``writer_id`` names this writer's part files (e.g. ``shard-0-of-4``); each chunk is a new file, so writers never
    share a mutable file.
    """

    def __init__(self, store_dir: Path, info: StoreInfo, writer_id: str = "all", chunk_size: int = 32):
        open_store(store_dir, info)
        self.store_dir = Path(store_dir)
        self.info = info
        self.writer_id = writer_id
        self.chunk_size = chunk_size
        self.num_written = 0
        features = store_features(info)
        from tensorflow_datasets.core import example_serializer

        self._encode = features.encode_example
        self._serializer = example_serializer.ExampleSerializer(features.get_serialized_info())
        self._keys: list[str] = []
        self._records: list[bytes] = []

    def add(self, record: dict[str, Any]) -> None:
        """Buffers one item (see `item_record`); commits a part file when ``chunk_size`` items are buffered."""
        if "frames" in record and not self.info.frames:
            record = {k: v for k, v in record.items() if k != "frames"}
        if self.info.frames and "frames" not in record:
            raise StoreError(f"item {record['key']}: this store keeps frames but the item has none")
        self._records.append(self._serializer.serialize_example(self._encode(record)))
        self._keys.append(record["key"])
        if len(self._records) >= self.chunk_size:
            self.flush()

    def flush(self) -> None:
        """Commits the buffered items as one part file: keys file first, then the records (temp name + rename)."""
        if not self._records:
            return
        from array_record.python.array_record_module import ArrayRecordWriter

        parts = self.store_dir / _PARTS
        stem = f"{self.writer_id}-{time.time_ns()}-{uuid.uuid4().hex[:8]}"
        _atomic_write_text(parts / f"{stem}{_KEYS_SUFFIX}", json.dumps(self._keys))
        temp = parts / f"{_TEMP_PREFIX}{stem}{_RECORD_SUFFIX}"
        writer = ArrayRecordWriter(os.fspath(temp), "group_size:1")
        for record in self._records:
            writer.write(record)
        writer.close()
        os.replace(temp, parts / f"{stem}{_RECORD_SUFFIX}")
        self.num_written += len(self._records)
        self._keys, self._records = [], []

    def close(self) -> None:
        self.flush()

    def __enter__(self) -> "StoreWriter":
        return self

    def __exit__(self, *exc) -> None:
        self.close()  # a failed run still commits the items that finished


# ---------------------------------------------------------------------------------------------------------------
# Parts, keys, merging


def _part_stems(store_dir: Path) -> list[str]:
    """Committed parts, oldest first (a part is committed once its records file is in place)."""
    parts = Path(store_dir) / _PARTS
    if not parts.is_dir():
        return []
    stems = [p.name[: -len(_RECORD_SUFFIX)] for p in parts.iterdir()
             if p.name.endswith(_RECORD_SUFFIX) and not p.name.startswith(_TEMP_PREFIX)]
    return sorted(stems, key=lambda s: (int(s.rsplit("-", 2)[1]), s))


def _part_keys(store_dir: Path, stem: str) -> list[str]:
    path = Path(store_dir) / _PARTS / f"{stem}{_KEYS_SUFFIX}"
    try:
        return json.loads(path.read_text())
    except (OSError, json.JSONDecodeError) as err:
        raise StoreError(f"{path} is unreadable ({err}); delete it and {path.with_name(stem + _RECORD_SUFFIX)}, "
                         f"then rerun extract to recompute those items") from None


def stored_keys(store_dir: Path) -> set[str]:
    """Every key committed to ``store_dir`` (reads only the small keys files)."""
    return {key for stem in _part_stems(store_dir) for key in _part_keys(store_dir, stem)}


def _merged_dir(store_dir: Path) -> Path:
    return Path(store_dir) / DATASET_VERSION


def _merged_parts(store_dir: Path) -> list[str] | None:
    manifest = _merged_dir(store_dir) / "parts.json"
    return json.loads(manifest.read_text()) if manifest.is_file() else None


def is_merged(store_dir: Path) -> bool:
    """Whether ``<store_dir>/1.0.0`` is the merge of exactly the parts committed now."""
    return _merged_parts(store_dir) == _part_stems(store_dir)


def _remove_stale_temps(directory: Path) -> None:
    now = time.time()
    for path in directory.iterdir() if directory.is_dir() else ():
        if path.name.startswith(_TEMP_PREFIX) and now - path.stat().st_mtime > _STALE_TEMP_SECONDS:
            shutil.rmtree(path) if path.is_dir() else path.unlink(missing_ok=True)


def merge_store(store_dir: Path) -> int:
    """Rebuilds ``<store_dir>/1.0.0`` (tfds, split "train") from every committed part, each key once.

    Idempotent (does nothing when already merged) and atomic (built aside, then swapped in). Returns the item count.
    """
    import tensorflow_datasets as tfds
    from array_record.python.array_record_module import ArrayRecordReader, ArrayRecordWriter

    store_dir = Path(store_dir)
    info = read_info(store_dir)
    stems = _part_stems(store_dir)
    if not stems:
        raise StoreError(f"{store_dir / _PARTS} holds no items yet; run `crescend-jax extract` first")
    _remove_stale_temps(store_dir)
    _remove_stale_temps(store_dir / _PARTS)
    if _merged_parts(store_dir) == stems:
        return sum(tfds.builder_from_directory(_merged_dir(store_dir)).info.splits[SPLIT].shard_lengths)

    building = store_dir / f"{_TEMP_PREFIX}merge-{uuid.uuid4().hex[:8]}"
    building.mkdir()
    seen: set[str] = set()
    # Records stream into numbered files (one part in memory at a time); the names get "-of-N" once N is known.
    shard_lengths, shard_bytes, num_bytes = [0], 0, 0
    writer = ArrayRecordWriter(os.fspath(building / "0"), "group_size:1")
    for stem in stems:
        keys = _part_keys(store_dir, stem)
        reader = ArrayRecordReader(os.fspath(store_dir / _PARTS / f"{stem}{_RECORD_SUFFIX}"))
        records = reader.read_all()
        reader.close()
        if len(records) != len(keys):
            writer.close()
            shutil.rmtree(building)
            raise StoreError(f"{store_dir / _PARTS / stem}{_RECORD_SUFFIX} holds {len(records)} items but its keys "
                             f"file lists {len(keys)}; delete both files and rerun extract")
        for key, record in zip(keys, records):
            if key in seen:
                continue
            seen.add(key)
            if shard_bytes + len(record) > _MERGED_FILE_BYTES and shard_lengths[-1]:
                writer.close()
                writer = ArrayRecordWriter(os.fspath(building / str(len(shard_lengths))), "group_size:1")
                shard_lengths.append(0)
                shard_bytes = 0
            writer.write(record)
            shard_lengths[-1] += 1
            shard_bytes += len(record)
            num_bytes += len(record)
    writer.close()
    for index in range(len(shard_lengths)):
        name = f"{DATASET_NAME}-{SPLIT}.array_record-{index:05d}-of-{len(shard_lengths):05d}"
        os.replace(building / str(index), building / name)
    tfds.folder_dataset.write_metadata(
        data_dir=building, features=store_features(info), version=DATASET_VERSION, check_data=False,
        split_infos=[tfds.core.SplitInfo(name=SPLIT, shard_lengths=shard_lengths, num_bytes=num_bytes)],
        description=f"crescend-jax embedding store: {info}")
    (building / "parts.json").write_text(json.dumps(stems))

    target = _merged_dir(store_dir)
    retired = store_dir / f"{_TEMP_PREFIX}retired-{uuid.uuid4().hex[:8]}"
    try:
        os.replace(target, retired)
    except FileNotFoundError:
        pass  # first merge, or a concurrent merger is mid-swap
    try:
        os.replace(building, target)
    except OSError:  # a concurrent merger swapped its (equally complete) view in first
        shutil.rmtree(building)
    shutil.rmtree(retired, ignore_errors=True)
    return len(seen)


# ---------------------------------------------------------------------------------------------------------------
# Reading


def _read_one(store_dir: Path) -> EmbeddingTable:
    import tensorflow_datasets as tfds

    store_dir = Path(store_dir)
    info = read_info(store_dir)
    if not is_merged(store_dir):
        merge_store(store_dir)
    source = tfds.builder_from_directory(_merged_dir(store_dir)).as_data_source(split=SPLIT)
    items = source.__getitems__(range(len(source))) if len(source) else []
    text = lambda name: np.array([item[name].decode() for item in items], dtype=str)
    stack = lambda name, width: (np.stack([item[name] for item in items]).astype(np.float32) if items
                                 else np.zeros((0, width), np.float32))
    table = EmbeddingTable(
        keys=text("key"), compositions=text("composition"), pieces=text("piece"),
        performers=text("performer"), groups=text("group"), renders=text("render"),
        label_mean=stack("label_mean", NUM_DIMENSIONS), label_std=stack("label_std", NUM_DIMENSIONS),
        label_truth=stack("label_truth", NUM_DIMENSIONS),
        ratings=[np.asarray(item["ratings"], np.float32) for item in items],
        pooled=stack("pooled", info.pooled_dim),
        frames=[np.asarray(item["frames"], np.float32) for item in items] if info.frames else None,
        encoder=info.encoder, frame_rate=info.frame_rate)
    # Rows sorted by key: items are stored in the order renders finished, which varies from run to run, and the
    # training batches (hence the results) must not.
    return table.subset(np.argsort(table.keys, kind="stable"))


def read_store(dirs: Sequence[Path]) -> EmbeddingTable:
    """One `EmbeddingTable` of the stores ``dirs`` (e.g. one per soundfont; ``renders`` tells them apart): each
    store's rows sorted by key (never in write order), the stores in the order of ``dirs``.

    Merges a store's parts first when they changed since the last merge.
    """
    if not dirs:
        raise StoreError("read_store needs at least one store directory")
    return EmbeddingTable.concat([_read_one(Path(d)) for d in dirs])


def load_table(config: ml_collections.ConfigDict) -> EmbeddingTable:
    """`read_store` of ``store_dirs(config)``, with an error naming the missing store and the command that makes it."""
    name = known_encoder_name(config)
    if name is None:
        raise StoreError(
            f"no store under {Path(config.store.root) / config.corpus} for encoder config {active_encoder_config(config.encoder).to_dict()}; "
            f"create it with `crescend-jax extract --config <this config file>` (same --config.* overrides)")
    dirs = store_dirs(config, encoder_name=name)
    for store_dir in dirs:
        if not _part_stems(store_dir):
            raise StoreError(f"store {store_dir} is missing or empty; create it with "
                             f"`crescend-jax extract --config <this config file>` (same --config.* overrides)")
    return read_store(dirs)


def pending_segments(segments: Iterable[Segment], store_dir: Path) -> list[Segment]:
    """The ``segments`` whose key ``store_dir`` does not hold yet."""
    done = stored_keys(store_dir)
    return [s for s in segments if s.key not in done]
