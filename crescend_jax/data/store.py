"""The embedding store: one tfds array_record dataset per (corpus content, encoder, render).

Layout of one store directory ``<store.root>/<corpus>/<encoder name>/<render id>-<identity digest>/``::

    store.json                      what wrote it: corpus, encoder, frame_rate, layers, dim, frames, input_layer
                                    (MuQ's layer-input frames, 0 = none), render, the full
                                    identity (`crescend_jax.data.identity`), the data root the items came from, and the
                                    names and version of the derived labels (`performance_labels.DERIVED_LABELS`)
    parts/<writer>-<ns>-<id>.keys.json   keys of one committed chunk, in record order (written first)
    parts/<writer>-<ns>-<id>.array_record  the chunk: serialized tfds examples (its arrival commits the chunk)
    1.0.0/                          the merged tfds dataset (split "train", every key once), built from parts/
    extract.lock, extract-*.lock    extraction locks (`crescend_jax.data.lock`)

The render id is a soundfont's `RenderSettings.settings_id`, or `SYMBOLIC_RENDER` for an encoder that reads the MIDI
itself. The identity digest covers everything else that decides the content (the corpus's settings or its label,
ratings and MIDI files, the encoder's code version, the store format), so a changed corpus seed or label file
finds a new, empty store instead of skipping every key of the old one.

Writers only ever add new part files (temp name, then ``os.replace``), each read back before it is committed, so a
run killed at any moment leaves no half-written item, concurrent ``--shard i/N`` workers never touch a shared file,
and a rerun skips every key found in ``parts/``. `merge_store` rebuilds ``1.0.0/`` from the parts (de-duplicated by
key, first write wins) whenever the parts changed; `read_store` merges first if needed and reads with
``tfds.builder_from_directory(...).as_data_source()``. A file that cannot be read or written is a `StoreError` that
names it and the way out, never a raw array_record/tfds/OS traceback.
"""

from __future__ import annotations

import dataclasses
import errno
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

from crescend_jax.data import identity as identity_lib
from crescend_jax.data.dimensions import NUM_DIMENSIONS
from crescend_jax.data.performance_labels import DERIVED_LABELS, LABELS_VERSION
from crescend_jax.data.performers import FACTOR_NAMES
from crescend_jax.data.segments import Segment
from crescend_jax.data.table import EmbeddingTable, TableFusionError, fuse_tables, input_view
from crescend_jax.errors import ConfigError, DataError
from crescend_jax.encoders import SYMBOLIC_RENDER, active_encoder_config, is_symbolic

if TYPE_CHECKING:
    import tensorflow_datasets as tfds

# 2: store.json holds the identity and the data root; directories end in the identity digest.
# 3: items hold "performer_factors" (the demo's simulated performer factors, `FACTOR_NAMES` order, NaN if unknown).
# 4: items hold "work" (text, "" = the composition's own), "derived" (float32 [len(DERIVED_LABELS)], NaN for a corpus
#    without derived labels) and "in_percepiano" (bool); store.json holds derived_labels and labels_version.
STORE_FORMAT = 4
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


class StoreError(DataError):
    """A store that is missing, unreadable, inconsistent, unwritable, or was written with different settings."""


_MERGE_HINT = "`crescend-jax merge --config <this config file>` (same --config.* overrides)"
_EXTRACT_HINT = "`crescend-jax extract --config <this config file>` (same --config.* overrides)"


def cannot_write(path: Path, err: BaseException) -> StoreError:
    """The one-line `StoreError` for a store file that cannot be written (disk full, read-only, ...)."""
    code = getattr(err, "errno", None)
    reason = os.strerror(code) if code else str(err)
    if code == errno.ENOSPC or "No space left" in str(err):
        way = "free space on that disk or set --config.store.root to another disk"
    elif code in (errno.EACCES, errno.EPERM, errno.EROFS) or "Permission denied" in str(err):
        way = "make it writable or set --config.store.root to a writable place"
    else:
        way = "fix that or set --config.store.root to another place"
    return StoreError(f"cannot write {path}: {reason}; {way}. Nothing partial was committed: rerun to continue")


def default_store_config() -> ml_collections.ConfigDict:
    """``config.store``: where stores live and what they hold."""
    config = ml_collections.ConfigDict()
    config.root = "stores"  # stores live at <root>/<corpus>/<encoder name>/<render settings_id>/
    config.frames = False  # also store frame-level features [layers, T, dim] (bfloat16 on disk)
    config.chunk_size = 32  # items per committed part file (a hard kill loses at most this many encodings)
    config.encode_batch = 8  # waveforms per encoder call during extraction
    config.lock_timeout = 3600.0  # seconds an extraction waits for another one writing the same store, then refuses
    # Encoder fusion: names of config.encoder sections whose stores are read and whose pooled vectors are concatenated
    # per key, in this order (e.g. ("features", "midi")); empty = the one store of encoder.name. See `load_table`.
    config.fuse = ()
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
    identity: dict[str, Any] | None = None  # `crescend_jax.data.identity.store_identity`: what decides the content
    data_root: str = ""  # where the items were read from (`identity.data_location`); not part of the identity
    # The columns of the items' "derived" vector and the version of their formulas (`performance_labels`). A corpus
    # whose labels a new version changes (ASAP) has the version in its identity, hence a new store; the others hold
    # NaN whatever the version.
    derived_labels: tuple[str, ...] = DERIVED_LABELS
    labels_version: int = LABELS_VERSION
    # K > 0: every item also holds "input_frames" [T, dim] (bfloat16), the frames entering conformer layer K
    # (MuQ's hidden_states[K - 1], `MuQEncoder.store_input_layer`); K is also in the encoder's name. 0 = none.
    input_layer: int = 0

    def __post_init__(self) -> None:
        object.__setattr__(self, "derived_labels", tuple(self.derived_labels))  # a list when read from JSON

    @property
    def pooled_dim(self) -> int:
        return self.num_layers * self.dim

    def same_content(self, other: "StoreInfo") -> bool:
        """Whether ``other`` describes the same store: everything but ``data_root`` (a copy of the data elsewhere
        holds the same content) and ``labels_version`` (where the labels decide the content, the identity holds
        their version)."""
        plain = lambda info: dataclasses.replace(info, data_root="", labels_version=0)
        return plain(self) == plain(other)


def store_features(info: StoreInfo) -> tfds.features.FeaturesDict:
    """The ``tfds.features.FeaturesDict`` of one stored item."""
    import tensorflow_datasets as tfds

    vector = lambda: tfds.features.Tensor(shape=(NUM_DIMENSIONS,), dtype=np.float32)
    features: dict[str, Any] = {name: tfds.features.Text() for name in _TEXT_FIELDS}
    features.update({name: vector() for name in _LABEL_FIELDS})
    features["ratings"] = tfds.features.Tensor(shape=(None, NUM_DIMENSIONS), dtype=np.float32)
    features["pooled"] = tfds.features.Tensor(shape=(info.pooled_dim,), dtype=np.float32)
    features["performer_factors"] = tfds.features.Tensor(shape=(len(FACTOR_NAMES),), dtype=np.float32)
    features["work"] = tfds.features.Text()
    features["derived"] = tfds.features.Tensor(shape=(len(info.derived_labels),), dtype=np.float32)
    features["in_percepiano"] = tfds.features.Tensor(shape=(), dtype=np.bool_)
    if info.frames:
        import ml_dtypes

        features["frames"] = tfds.features.Tensor(
            shape=(info.num_layers, None, info.dim), dtype=ml_dtypes.bfloat16,
            encoding=tfds.features.Encoding.BYTES)
    if info.input_layer:
        import ml_dtypes

        features["input_frames"] = tfds.features.Tensor(shape=(None, info.dim), dtype=ml_dtypes.bfloat16,
                                                        encoding=tfds.features.Encoding.BYTES)
    return tfds.features.FeaturesDict(features)


def item_record(segment: Segment, render: str, pooled: np.ndarray, frames: np.ndarray | None,
                input_frames: np.ndarray | None = None) -> dict[str, Any]:
    """One store item from a segment and its encoding (``frames`` [layers, T, dim] only when the store keeps them;
    ``input_frames`` [T, dim], the frames entering conformer layer K, only when the store's ``input_layer`` is K).

    ``performer_factors`` is ``segment.factors`` (float32 [len(FACTOR_NAMES)]), all NaN when the segment has none;
    ``derived`` is ``segment.derived`` (float32 [len(DERIVED_LABELS)]), all NaN when it has none; ``work`` and
    ``in_percepiano`` are the segment's.
    """
    factors = _fixed_vector(segment.factors, FACTOR_NAMES, f"segment {segment.key}: factors", "performers.FACTOR_NAMES")
    derived = _fixed_vector(segment.derived, DERIVED_LABELS, f"segment {segment.key}: derived",
                            "performance_labels.DERIVED_LABELS")
    record: dict[str, Any] = {
        "key": segment.key, "composition": segment.composition, "piece": segment.piece,
        "performer": segment.performer, "group": segment.group, "render": render,
        "label_mean": np.asarray(segment.label_mean, np.float32),
        "label_std": np.asarray(segment.label_std, np.float32),
        "label_truth": np.asarray(segment.label_truth, np.float32),
        "ratings": np.asarray(segment.ratings, np.float32).reshape(-1, NUM_DIMENSIONS),
        "pooled": np.asarray(pooled, np.float32),
        "performer_factors": factors,
        "work": segment.work,
        "derived": derived,
        "in_percepiano": np.bool_(segment.in_percepiano),
    }
    if frames is not None:
        import ml_dtypes

        record["frames"] = np.asarray(frames, np.float32).astype(ml_dtypes.bfloat16)
    if input_frames is not None:
        import ml_dtypes

        record["input_frames"] = np.asarray(input_frames, np.float32).astype(ml_dtypes.bfloat16)
    return record


def _fixed_vector(values: np.ndarray | None, names: Sequence[str], what: str, order: str) -> np.ndarray:
    """float32 [len(names)]: ``values``, or all NaN when None; another shape is a ValueError naming ``what``."""
    if values is None:
        return np.full(len(names), np.nan, np.float32)
    vector = np.asarray(values, np.float32)
    if vector.shape != (len(names),):
        raise ValueError(f"{what} must be [{len(names)}] in {order} order, got shape {vector.shape}")
    return vector


# ---------------------------------------------------------------------------------------------------------------
# Paths and the encoder-name registry


def _config_digest(config: ml_collections.ConfigDict) -> str:
    text = json.dumps(config.to_dict(), sort_keys=True, default=str)
    return hashlib.sha1(text.encode()).hexdigest()[:16]


def _registry_path(config: ml_collections.ConfigDict) -> Path:
    return Path(config.store.root) / config.corpus / "encoders" / f"{_config_digest(active_encoder_config(config.encoder))}.json"


def _read_registry(config: ml_collections.ConfigDict) -> dict[str, Any] | None:
    path = _registry_path(config)
    if not path.is_file():
        return None
    try:
        entry = json.loads(path.read_text())
        if isinstance(entry, dict) and isinstance(entry.get("name"), str):
            return entry
    except (OSError, ValueError):
        pass
    return None  # an unreadable entry is as good as none: extraction rebuilds the encoder and rewrites it


def remember_encoder_name(config: ml_collections.ConfigDict, name: str) -> None:
    """Records ``encoder.name`` for ``config.encoder`` so later runs find the store without building the encoder."""
    entry = _read_registry(config)
    if entry is not None and entry["name"] == name:
        return
    _atomic_write_text(_registry_path(config), json.dumps(
        {"name": name, "encoder_config": active_encoder_config(config.encoder).to_dict()},
        sort_keys=True, indent=1, default=str))


def known_encoder_name(config: ml_collections.ConfigDict) -> str | None:
    """The ``encoder.name`` recorded for ``config.encoder`` by an earlier extraction, or None."""
    entry = _read_registry(config)
    return None if entry is None else entry["name"]


def render_settings_ids(config: ml_collections.ConfigDict) -> list[str]:
    """The ``settings_id`` of every soundfont in ``config.render.soundfonts`` (raises ``SoundfontError``)."""
    from crescend_jax.data.render import RenderSettings

    return [RenderSettings.from_config(config.render, soundfont).settings_id for soundfont in config.render.soundfonts]


def render_ids(config: ml_collections.ConfigDict) -> list[str]:
    """The renders the stores of ``config.encoder`` are made from: one per soundfont, or `SYMBOLIC_RENDER` alone for
    a symbolic encoder (it reads the MIDI itself)."""
    return [SYMBOLIC_RENDER] if is_symbolic(config.encoder) else render_settings_ids(config)


def _corpus_identity(config: ml_collections.ConfigDict) -> dict[str, Any]:
    try:
        return identity_lib.corpus_identity(config)
    except ConfigError:  # e.g. a demo corpus setting out of range: the config's mistake, not the store's
        raise
    except (OSError, ValueError, DataError) as err:  # CorpusError, AsapError, an unreadable file
        raise StoreError(f"cannot tell which {config.corpus} store to use: {err}") from None


def store_identities(config: ml_collections.ConfigDict, encoder_name: str) -> list[dict[str, Any]]:
    """The full identity of each store of ``config`` for the encoder named ``encoder_name``, one per render (see
    `render_ids`)."""
    corpus = _corpus_identity(config)
    return [identity_lib.store_identity(config, encoder_name, render, STORE_FORMAT, corpus=corpus)
            for render in render_ids(config)]


def store_dir_of(root: str | Path, identity: dict[str, Any]) -> Path:
    """``<root>/<corpus>/<encoder name>/<render id>-<identity digest>``: readable, and unique per content."""
    return (Path(root) / identity["corpus"] / identity["encoder"]
            / f"{identity['render']}-{identity_lib.identity_digest(identity)}")


def store_id(store_dir: str | Path) -> str:
    """``<corpus>/<encoder name>/<render id>-<digest>``: a store's name wherever ``store.root`` lies."""
    return "/".join(Path(store_dir).parts[-3:])


def store_dirs(config: ml_collections.ConfigDict, encoder_name: str | None = None) -> list[Path]:
    """``<store.root>/<corpus>/<encoder name>/<render id>-<identity digest>/``, one per soundfont (one in all for a
    symbolic encoder).

    The encoder name comes from ``encoder_name``, else from the registry an earlier extraction wrote, else from
    building the encoder (cheap for "features" and "midi"; extraction records it so MuQ is never loaded just for a
    path). Raises `StoreError` when the corpus's identity cannot be computed (e.g. a PercePiano root without its
    label files).
    """
    if encoder_name is None:
        encoder_name = known_encoder_name(config)
    if encoder_name is None:
        from crescend_jax.encoders import build_encoder

        encoder_name = build_encoder(config.encoder).name
    return [store_dir_of(config.store.root, identity) for identity in store_identities(config, encoder_name)]


# ---------------------------------------------------------------------------------------------------------------
# Writing


def _atomic_write_text(path: Path, text: str) -> None:
    """Writes ``path`` through a temp file and ``os.replace``; any OS failure is a `cannot_write` `StoreError` and
    leaves no temp file behind."""
    temp = path.with_name(f"{_TEMP_PREFIX}{uuid.uuid4().hex}-{path.name}")
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        temp.write_text(text)
        os.replace(temp, path)
    except OSError as err:
        _unlink_quietly(temp)
        raise cannot_write(path, err) from None


def _unlink_quietly(path: Path) -> None:
    try:
        path.unlink(missing_ok=True)
    except OSError:
        pass


def read_info(store_dir: Path) -> StoreInfo:
    """The ``store.json`` of ``store_dir``; a missing, unreadable or foreign one is a `StoreError` with the way out."""
    store_dir = Path(store_dir)
    path = store_dir / "store.json"
    if not path.is_file():
        if _part_stems(store_dir):
            raise StoreError(
                f"{path} is missing but {store_dir / _PARTS} holds items: rerun {_EXTRACT_HINT}; it writes store.json "
                f"again and keeps every stored item")
        raise StoreError(f"{path} is missing: {store_dir} is not an embedding store (or was never written); create "
                         f"it with {_EXTRACT_HINT}")
    try:
        fields = json.loads(path.read_text())
        info = StoreInfo(**fields)
    except (OSError, ValueError, TypeError) as err:  # ValueError covers JSON and Unicode errors
        raise StoreError(f"{path} is not a store description this version can read ({err}); delete {store_dir} "
                         f"and rerun {_EXTRACT_HINT}") from None
    if info.format != STORE_FORMAT:
        raise StoreError(f"{path} is not a store description this version can read (store format {info.format}, this "
                         f"version reads {STORE_FORMAT}); delete {store_dir} and rerun {_EXTRACT_HINT}")
    return info


def open_store(store_dir: Path, info: StoreInfo) -> None:
    """Creates ``store_dir`` for ``info``, or checks that the store already there was written with the same settings
    (`StoreInfo.same_content`). A missing ``store.json`` beside stored parts is written again."""
    store_dir = Path(store_dir)
    if (store_dir / "store.json").is_file():
        existing = read_info(store_dir)
        if not existing.same_content(info):
            raise StoreError(
                f"{store_dir} holds a store written with {existing}, not {info}; delete that directory or set "
                f"--config.store.root to another place")
        return
    try:
        (store_dir / _PARTS).mkdir(parents=True, exist_ok=True)
    except OSError as err:
        raise cannot_write(store_dir / _PARTS, err) from None
    _atomic_write_text(store_dir / "store.json", json.dumps(dataclasses.asdict(info), indent=1, sort_keys=True))


def _read_records(path: Path) -> list[bytes]:
    """Every record of one array_record file; RuntimeError (array_record's only error) when it cannot be read whole."""
    from array_record.python.array_record_module import ArrayRecordReader

    reader = ArrayRecordReader(os.fspath(path))
    try:
        if not reader.ok():
            raise RuntimeError("not a readable array_record file (truncated or damaged)")
        count = reader.num_records()
        records = reader.read_all()
        if len(records) != count:
            raise RuntimeError(f"its index lists {count} records but {len(records)} could be read")
        return records
    finally:
        reader.close()  # raises RuntimeError too when the file went bad while reading


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
        self._failed = False  # a chunk could not be committed: closing must not try it again
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
        if "input_frames" in record and not self.info.input_layer:
            record = {k: v for k, v in record.items() if k != "input_frames"}
        if self.info.input_layer and "input_frames" not in record:
            raise StoreError(f"item {record['key']}: this store keeps the input frames of layer "
                             f"{self.info.input_layer} but the item has none")
        self._records.append(self._serializer.serialize_example(self._encode(record)))
        self._keys.append(record["key"])
        if len(self._records) >= self.chunk_size:
            self.flush()

    def flush(self) -> None:
        """Commits the buffered items as one part file: keys file first, then the records under a temp name, read
        back whole (every record equal) and only then renamed into place. A failure removes both files (nothing
        partial is committed) and raises `StoreError` naming the file and the way out."""
        if not self._records:
            return
        parts = self.store_dir / _PARTS
        stem = f"{self.writer_id}-{time.time_ns()}-{uuid.uuid4().hex[:8]}"
        keys_path = parts / f"{stem}{_KEYS_SUFFIX}"
        temp = parts / f"{_TEMP_PREFIX}{stem}{_RECORD_SUFFIX}"
        try:
            _atomic_write_text(keys_path, json.dumps(self._keys))
            _write_records(temp, self._records)
            if _read_records(temp) != self._records:
                raise StoreError(f"{temp} does not read back the {len(self._records)} records just written (a failing "
                                 f"disk?); check the disk or set --config.store.root to another one, then rerun")
            os.replace(temp, parts / f"{stem}{_RECORD_SUFFIX}")
        except BaseException as err:
            self._failed = True
            _unlink_quietly(temp)
            _unlink_quietly(keys_path)
            if isinstance(err, OSError):
                raise cannot_write(parts / f"{stem}{_RECORD_SUFFIX}", err) from None
            if isinstance(err, RuntimeError) and not isinstance(err, StoreError):  # array_record's write/read errors
                raise cannot_write(parts / f"{stem}{_RECORD_SUFFIX}", err) from None
            raise
        self.num_written += len(self._records)
        self._keys, self._records = [], []

    def close(self) -> None:
        if not self._failed:
            self.flush()

    def __enter__(self) -> "StoreWriter":
        return self

    def __exit__(self, *exc) -> None:
        self.close()  # a failed run still commits the items that finished


def _write_records(path: Path, records: Sequence[bytes]) -> None:
    """One array_record file of ``records`` (array_record reports I/O failures as RuntimeError)."""
    from array_record.python.array_record_module import ArrayRecordWriter

    writer = ArrayRecordWriter(os.fspath(path), "group_size:1")
    try:
        for record in records:
            writer.write(record)
    finally:
        writer.close()


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
        keys = json.loads(path.read_text())
        if not isinstance(keys, list) or not all(isinstance(key, str) for key in keys):
            raise ValueError("not a JSON list of keys")
        return keys
    except (OSError, ValueError) as err:
        raise StoreError(f"{path} is unreadable ({err}); delete it and {path.with_name(stem + _RECORD_SUFFIX)}, "
                         f"then rerun {_EXTRACT_HINT} to re-extract those items") from None


def stored_keys(store_dir: Path) -> set[str]:
    """Every key committed to ``store_dir`` (reads only the small keys files)."""
    return {key for stem in _part_stems(store_dir) for key in _part_keys(store_dir, stem)}


def _merged_dir(store_dir: Path) -> Path:
    return Path(store_dir) / DATASET_VERSION


def _merged_parts(store_dir: Path) -> list[str] | None:
    manifest = _merged_dir(store_dir) / "parts.json"
    try:
        return json.loads(manifest.read_text()) if manifest.is_file() else None
    except (OSError, ValueError):
        return None  # a damaged manifest: the merge is rebuilt


def is_merged(store_dir: Path) -> bool:
    """Whether ``<store_dir>/1.0.0`` is the merge of exactly the parts committed now."""
    return _merged_parts(store_dir) == _part_stems(store_dir)


def _remove_stale_temps(directory: Path) -> None:
    now = time.time()
    for path in directory.iterdir() if directory.is_dir() else ():
        if path.name.startswith(_TEMP_PREFIX) and now - path.stat().st_mtime > _STALE_TEMP_SECONDS:
            shutil.rmtree(path) if path.is_dir() else path.unlink(missing_ok=True)


def _part_records(store_dir: Path, stem: str) -> tuple[list[str], list[bytes]]:
    """(keys, records) of one committed part; a damaged part is a `StoreError` naming it and the way out."""
    path = store_dir / _PARTS / f"{stem}{_RECORD_SUFFIX}"
    keys = _part_keys(store_dir, stem)
    way_out = (f"delete it and {path.with_name(stem + _KEYS_SUFFIX).name}, then rerun {_EXTRACT_HINT} to re-extract "
               f"its {len(keys)} items")
    try:
        records = _read_records(path)
    except RuntimeError as err:
        raise StoreError(f"part file {path} is corrupt or truncated ({err}); {way_out}") from None
    if len(records) != len(keys):
        raise StoreError(f"part file {path} holds {len(records)} items but its keys file lists {len(keys)}; {way_out}")
    return keys, records


def _merged_count(store_dir: Path) -> int:
    """Items in the merged dataset, from its metadata; a damaged one is a `StoreError` saying how to rebuild it."""
    import tensorflow_datasets as tfds

    try:
        return sum(tfds.builder_from_directory(_merged_dir(store_dir)).info.splits[SPLIT].shard_lengths)
    except Exception as err:  # noqa: BLE001 - tfds raises many types for a damaged dataset_info/features file
        raise _merged_error(store_dir, err) from None


def merged_problem(store_dir: Path, batch: int = 256) -> str | None:
    """None when the merged dataset of ``store_dir`` reads back whole -- its metadata, one shard file per listed
    shard, each shard's index listing the metadata's record count, and every record decompressed (streamed,
    ``batch`` records at a time) -- else a line saying what is wrong."""
    import tensorflow_datasets as tfds
    from array_record.python.array_record_module import ArrayRecordReader

    merged = _merged_dir(store_dir)
    try:
        lengths = list(tfds.builder_from_directory(merged).info.splits[SPLIT].shard_lengths)
        shards = sorted(merged.glob(f"{DATASET_NAME}-{SPLIT}.array_record-*"))
        if len(shards) != len(lengths):
            return f"{len(shards)} shard files but its metadata lists {len(lengths)}"
        for path, expected in zip(shards, lengths):
            reader = ArrayRecordReader(os.fspath(path))
            try:
                if not reader.ok() or reader.num_records() != expected:
                    return f"{path.name} does not hold the {expected} records its metadata lists"
                for start in range(0, expected, batch):
                    stop = min(expected, start + batch)
                    if len(reader.read(start, stop)) != stop - start:
                        return f"{path.name}: records {start}-{stop - 1} cannot be read"
            finally:
                reader.close()
    except Exception as err:  # noqa: BLE001 - array_record and tfds raise many types for a damaged file
        return f"{type(err).__name__}: {str(err).strip().splitlines()[0] if str(err).strip() else ''}"
    return None


def _merged_error(store_dir: Path, err: BaseException) -> StoreError:
    return StoreError(f"the merged dataset {_merged_dir(store_dir)} is unreadable ({type(err).__name__}: {err}); "
                      f"rebuild it from its parts with {_MERGE_HINT}")


def merge_store(store_dir: Path, rebuild: bool = False) -> int:
    """Builds ``<store_dir>/1.0.0`` (tfds, split "train") from every committed part, each key once; returns the item
    count.

    Does nothing when the merge is of exactly the committed parts, unless ``rebuild`` (what `crescend-jax merge`
    asks for, so it also repairs a damaged merged dataset). Atomic: built aside, every file read back, then swapped
    in. A damaged part is a `StoreError` naming it; a full or read-only disk is one too, and leaves the old merge.
    """
    store_dir = Path(store_dir)
    info = read_info(store_dir)
    stems = _part_stems(store_dir)
    if not stems:
        raise StoreError(f"{store_dir / _PARTS} holds no items yet; run {_EXTRACT_HINT} first")
    if not rebuild and _merged_parts(store_dir) == stems:
        return _merged_count(store_dir)
    building = store_dir / f"{_TEMP_PREFIX}merge-{uuid.uuid4().hex[:8]}"
    try:
        _remove_stale_temps(store_dir)
        _remove_stale_temps(store_dir / _PARTS)
        building.mkdir()
        count = _build_merge(store_dir, info, stems, building)
        _swap_in(store_dir, building)
    except OSError as err:
        shutil.rmtree(building, ignore_errors=True)
        raise cannot_write(_merged_dir(store_dir), err) from None
    except BaseException:
        shutil.rmtree(building, ignore_errors=True)
        raise
    return count


def _build_merge(store_dir: Path, info: StoreInfo, stems: list[str], building: Path) -> int:
    """Writes the merged dataset of ``stems`` into ``building`` (one part in memory at a time, streamed into files of
    about `_MERGED_FILE_BYTES`, each file's record count checked when closed); returns its item count."""
    import tensorflow_datasets as tfds
    from array_record.python.array_record_module import ArrayRecordReader, ArrayRecordWriter

    seen: set[str] = set()
    shard_lengths, shard_bytes, num_bytes = [0], 0, 0

    def close(writer, index: int) -> None:
        path = building / str(index)
        try:
            writer.close()
            reader = ArrayRecordReader(os.fspath(path))
            written = reader.num_records() if reader.ok() else -1
            reader.close()
        except RuntimeError as err:  # array_record's I/O errors (e.g. no space left)
            raise cannot_write(path, err) from None
        if written != shard_lengths[index]:
            raise StoreError(f"{path} reads back {written} of the {shard_lengths[index]} records just written (a "
                             f"failing disk?); check the disk, then rerun {_MERGE_HINT}")

    # Records stream into numbered files; the names get "-of-N" once N is known.
    writer = ArrayRecordWriter(os.fspath(building / "0"), "group_size:1")
    try:
        for stem in stems:
            keys, records = _part_records(store_dir, stem)
            for key, record in zip(keys, records):
                if key in seen:
                    continue
                seen.add(key)
                if shard_bytes + len(record) > _MERGED_FILE_BYTES and shard_lengths[-1]:
                    close(writer, len(shard_lengths) - 1)
                    writer = ArrayRecordWriter(os.fspath(building / str(len(shard_lengths))), "group_size:1")
                    shard_lengths.append(0)
                    shard_bytes = 0
                writer.write(record)
                shard_lengths[-1] += 1
                shard_bytes += len(record)
                num_bytes += len(record)
    except BaseException as err:
        try:
            writer.close()
        except RuntimeError:
            pass
        if isinstance(err, RuntimeError) and not isinstance(err, StoreError):  # array_record's I/O errors
            raise cannot_write(building / str(len(shard_lengths) - 1), err) from None
        raise
    close(writer, len(shard_lengths) - 1)
    for index in range(len(shard_lengths)):
        name = f"{DATASET_NAME}-{SPLIT}.array_record-{index:05d}-of-{len(shard_lengths):05d}"
        os.replace(building / str(index), building / name)
    tfds.folder_dataset.write_metadata(
        data_dir=building, features=store_features(info), version=DATASET_VERSION, check_data=False,
        split_infos=[tfds.core.SplitInfo(name=SPLIT, shard_lengths=shard_lengths, num_bytes=num_bytes)],
        description=f"crescend-jax embedding store: {info}")
    (building / "parts.json").write_text(json.dumps(stems))
    return len(seen)


def _swap_in(store_dir: Path, building: Path) -> None:
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


# ---------------------------------------------------------------------------------------------------------------
# Reading


def _read_one(store_dir: Path) -> EmbeddingTable:
    import tensorflow_datasets as tfds

    store_dir = Path(store_dir)
    info = read_info(store_dir)
    if not is_merged(store_dir):
        merge_store(store_dir)
    try:
        source = tfds.builder_from_directory(_merged_dir(store_dir)).as_data_source(split=SPLIT)
        items = source.__getitems__(range(len(source))) if len(source) else []
        unreadable = sum(item is None for item in items)
        if unreadable:
            raise RuntimeError(f"{unreadable} of {len(items)} records are missing (a truncated file)")
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
            encoder=info.encoder, frame_rate=info.frame_rate,
            sources=(str(store_dir.resolve()),), data_roots=(info.data_root,) if info.data_root else (),
            **_factor_columns(stack("performer_factors", len(FACTOR_NAMES))),
            works=text("work"), in_percepiano=np.array([bool(item["in_percepiano"]) for item in items], bool),
            **_derived_columns(stack("derived", len(info.derived_labels)), info.derived_labels),
            input_frames=[np.asarray(item["input_frames"]) for item in items] if info.input_layer else None,
            input_layer=info.input_layer)
    except Exception as err:  # noqa: BLE001 - array_record and tfds raise many types for a damaged file
        raise _merged_error(store_dir, err) from None
    # Rows sorted by key: items are stored in the order renders finished, which varies from run to run, and the
    # training batches (hence the results) must not.
    return table.subset(np.argsort(table.keys, kind="stable"))


def _factor_columns(factors: np.ndarray) -> dict[str, Any]:
    """The table's ``performer_factors`` and ``factor_names`` from the stored column: None and () when no row of the
    store knows a factor (a corpus of real performances)."""
    if not np.isfinite(factors).any():
        return {"performer_factors": None, "factor_names": ()}
    return {"performer_factors": factors, "factor_names": FACTOR_NAMES}


def _derived_columns(derived: np.ndarray, names: tuple[str, ...]) -> dict[str, Any]:
    """The table's ``derived`` and ``derived_names`` from the stored column: None and () when no row of the store has
    a derived label (a corpus with ratings)."""
    if not np.isfinite(derived).any():
        return {"derived": None, "derived_names": ()}
    return {"derived": derived, "derived_names": names}


def read_store(dirs: Sequence[Path]) -> EmbeddingTable:
    """One `EmbeddingTable` of the stores ``dirs`` (e.g. one per soundfont; ``renders`` tells them apart): each
    store's rows sorted by key (never in write order), the stores in the order of ``dirs``. The table's ``sources``
    are ``dirs`` (absolute) and its ``data_roots`` where their items were read from (``store.json``). Its
    ``performer_factors`` are the stored factors (``factor_names`` = `FACTOR_NAMES`), or None when no item knows any;
    its ``derived`` the stored derived labels (``derived_names`` from ``store.json``), or None when no item has any;
    its ``works`` (str, "" = the composition's own) and ``in_percepiano`` (bool) the stored ones.

    Merges a store's parts first when they changed since the last merge. A damaged file is a `StoreError` naming it
    and the way out.
    """
    if not dirs:
        raise StoreError("read_store needs at least one store directory")
    return EmbeddingTable.concat([_read_one(Path(d)) for d in dirs])


def _encoder_section(config: ml_collections.ConfigDict, name: str) -> ml_collections.ConfigDict:
    """A copy of ``config`` whose ``encoder.name`` is ``name`` (one of the fused encoders)."""
    sections = [key for key, value in config.encoder.items() if isinstance(value, ml_collections.ConfigDict)]
    if name not in sections:
        raise StoreError(f"--config.store.fuse names encoder {name!r} but config.encoder has no such section; "
                         f"known encoders: {sections}")
    copy = ml_collections.ConfigDict(config.to_dict())
    copy.encoder.name = name
    return copy


def _other_contents(store_dir: Path) -> list[str]:
    """Stores beside ``store_dir`` of the same encoder and render but other content (e.g. another demo seed)."""
    render = store_dir.name.rsplit("-", 1)[0]
    parent = store_dir.parent
    return sorted(p.name for p in parent.iterdir() if p.is_dir() and p != store_dir
                  and p.name.rsplit("-", 1)[0] == render) if parent.is_dir() else []


def encoder_store_dirs(config: ml_collections.ConfigDict) -> list[Path]:
    """The stores `load_table` reads for ``config.encoder`` (one per render), each checked to hold items; a missing
    one is a `StoreError` naming it and the command that makes it."""
    name = known_encoder_name(config)
    if name is None:
        raise StoreError(
            f"no store under {Path(config.store.root) / config.corpus} for encoder {config.encoder.name!r} with "
            f"settings {active_encoder_config(config.encoder).to_dict()}; create it with {_EXTRACT_HINT}")
    from crescend_jax.data.render import SoundfontError

    try:
        dirs = store_dirs(config, encoder_name=name)
    except SoundfontError as err:
        raise StoreError(f"cannot tell which store to read: {err}") from None
    for store_dir in dirs:
        if not _part_stems(store_dir):
            others = _other_contents(store_dir)
            beside = (f" ({store_dir.parent} holds this encoder's stores of other corpus content: {', '.join(others)}; "
                      f"each store.json says what it holds)" if others else "")
            raise StoreError(f"store {store_dir} is missing or empty{beside}; create it with {_EXTRACT_HINT}")
    return dirs


def load_table(config: ml_collections.ConfigDict) -> EmbeddingTable:
    """The table a run trains on: `read_store` of the stores of ``config.encoder`` (one per render), or, when
    ``config.store.fuse`` names several encoders, their stores fused side by side (`fuse_tables`: pooled vectors
    concatenated per key in the order of ``fuse``, a symbolic encoder's vector repeated for every render, frames
    dropped). Fusion refuses stores whose keys differ, naming per store how many keys it lacks and the first few.

    The table's ``sources`` and ``data_roots`` say which stores it came from and where their items were read
    (`crescend_jax.data.fingerprint` records them; `store_id` names a source independently of ``store.root``).
    ``data.group_relative`` makes every row relative to its same-music group (`crescend_jax.data.table.input_view`),
    here, so that training, its standardisation and the ridge reference read the same inputs. Errors are
    `StoreError` with the way out (e.g. the extract command for a missing store).
    """
    table = _stored_table(config)
    try:
        return input_view(table, config.get("data"))
    except ValueError as err:  # inputs that cannot be made group-relative
        raise StoreError(f"cannot make the inputs group-relative (data.group_relative): {err}") from None


def _stored_table(config: ml_collections.ConfigDict) -> EmbeddingTable:
    """`load_table` before `input_view`: the stores as stored (fused when ``store.fuse`` says so)."""
    fuse = tuple(config.store.get("fuse", ()) or ())
    if not fuse:
        return read_store(encoder_store_dirs(config))
    stores = [(name, encoder_store_dirs(_encoder_section(config, name))) for name in fuse]
    tables = {store_dir: _read_one(store_dir) for _, dirs in stores for store_dir in dirs}
    all_keys = set().union(*(set(table.keys.tolist()) for table in tables.values()))
    lacking = []
    for name, dirs in stores:
        for store_dir in dirs:
            missing = sorted(all_keys - set(tables[store_dir].keys.tolist()))
            if missing:
                shown = ", ".join(missing[:3]) + (", ..." if len(missing) > 3 else "")
                lacking.append(f"{store_id(store_dir)} (encoder {name!r}) lacks {len(missing)} keys: {shown}")
    if lacking:
        raise StoreError(f"cannot fuse stores whose keys differ: {'; '.join(lacking)}. Extract the missing items "
                         f"with {_EXTRACT_HINT} --config.encoder.name=<that encoder>, or fuse other encoders")
    try:
        return fuse_tables([EmbeddingTable.concat([tables[d] for d in dirs]) for _, dirs in stores])
    except TableFusionError as err:
        raise StoreError(f"cannot fuse the stores of {list(fuse)}: {err}") from None


def pending_segments(segments: Iterable[Segment], store_dir: Path) -> list[Segment]:
    """The ``segments`` whose key ``store_dir`` does not hold yet."""
    done = stored_keys(store_dir)
    return [s for s in segments if s.key not in done]
