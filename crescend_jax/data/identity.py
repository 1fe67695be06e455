"""A store's identity: everything that decides what an embedding store holds, and the short digest that names it.

A store is found by its identity, never by a name that stays the same while its content changes:

    corpus content   `corpus_identity`: the demo corpus's settings (seed, sizes, noise levels, ...: every
                     ``config.data`` field but where it is cached and how it is split into folds), a hash of
                     PercePiano's label, ratings and MIDI files, or ASAP's window settings, the compositions it
                     leaves out and a hash of the files it reads (`crescend_jax.data.asap.content_identity`); plus the
                     corpus reader's or generator's code version
    render           the render settings id (soundfont bytes, settings, FluidSynth and renderer versions), or
                     ``"symbolic"`` for an encoder that reads the MIDI itself
    encoder          the encoder's name (its settings) and the ``ENCODER_VERSION`` of its module (a constant bumped by
                     hand when its output changes; None for an encoder module without one)
    store format     `crescend_jax.data.store.STORE_FORMAT`

How a corpus is split into folds (``num_folds``, ``test_compositions``, ``fold_seed``, ``split_level``), where
files are cached and how many processes read them are not part of it: a new split reads the same store. The data root
is not part of it either (two copies of one checkout hold the same content); stores record it as where their items
came from.
"""

from __future__ import annotations

import hashlib
import importlib
import importlib.util
import json
from pathlib import Path
from typing import Any

import ml_collections

# ``config.data`` fields that say how a corpus is split, never what it holds.
SPLIT_FIELDS = ("num_folds", "test_compositions", "fold_seed", "split_level", "exclude_compositions")
# ``config.data`` fields that say how stored inputs are read (`crescend_jax.data.table.input_view`), never what a
# store holds.
VIEW_FIELDS = ("group_relative", "group_relative_deadpan")
DIGEST_LENGTH = 10  # hex characters of the identity digest in a store's directory name


def _data_section(config: ml_collections.ConfigDict) -> ml_collections.ConfigDict | None:
    return config.data if "data" in config else None


def corpus_identity(config: ml_collections.ConfigDict) -> dict[str, Any]:
    """What decides the segments and labels of ``config.corpus`` (JSON-able). Raises the corpus reader's error
    (`CorpusError`, `AsapError`, `DemoCorpusError`) when that cannot be told, e.g. a PercePiano root without its label
    files.

    A corpus without its own rule (e.g. one a test builds) is identified by its ``config.data`` fields but the split
    and view fields, root included.
    """
    data = _data_section(config)
    if config.corpus == "percepiano":
        from crescend_jax.data.percepiano import content_identity

        return content_identity(Path(data.root))
    if config.corpus == "demo":
        from crescend_jax.data.demo_corpus import content_identity

        return content_identity(data)
    if config.corpus == "asap":
        from crescend_jax.data.asap import content_identity

        return content_identity(data)
    if data is None:
        return {}
    return {name: value for name, value in data.to_dict().items() if name not in SPLIT_FIELDS + VIEW_FIELDS}


def data_location(config: ml_collections.ConfigDict) -> str:
    """Where the corpus's items are read from (absolute): PercePiano's and ASAP's ``data.root`` (ASAP's windows are cut
    from the files there; their cut MIDI files under ``data.cache_dir`` are derived), the demo's ``data.cache_dir``
    (its generated MIDI files), else ``data.root`` when there is one; "" when there is none."""
    data = _data_section(config)
    if data is None:
        return ""
    field = {"percepiano": "root", "asap": "root", "demo": "cache_dir"}.get(config.corpus, "root")
    return str(Path(data[field]).resolve()) if field in data else ""


def encoder_code_version(encoder_config: ml_collections.ConfigDict) -> int | None:
    """``ENCODER_VERSION`` of ``crescend_jax.encoders.<encoder_config.name>``; None when there is no such module
    (an encoder defined elsewhere, e.g. in a test) or the module defines none."""
    module_name = f"crescend_jax.encoders.{encoder_config.name}"
    try:
        spec = importlib.util.find_spec(module_name)
    except (ImportError, ValueError):
        spec = None
    if spec is None:
        return None
    return getattr(importlib.import_module(module_name), "ENCODER_VERSION", None)


def store_identity(config: ml_collections.ConfigDict, encoder_name: str, render_id: str, store_format: int,
                   corpus: dict[str, Any] | None = None) -> dict[str, Any]:
    """The full identity (JSON-able) of the store of ``config.corpus`` encoded by ``encoder_name`` (whose settings
    are ``config.encoder``) from the render ``render_id``. ``corpus`` is `corpus_identity` when already computed.
    A store that keeps frame-level features (``store.frames``) holds other content than one without: ``"frames":
    true`` is part of its identity, so the two live side by side (absent when False: older stores keep their name)."""
    identity = {
        "store_format": store_format,
        "corpus": config.corpus,
        "corpus_content": corpus_identity(config) if corpus is None else corpus,
        "render": render_id,
        "encoder": encoder_name,
        "encoder_version": encoder_code_version(config.encoder),
    }
    if config.get("store", {}).get("frames", False):
        identity["frames"] = True
    return identity


def canonical_json(value: Any) -> str:
    """One text per value: sorted keys, tuples as lists (a config read back from a workdir's JSON has lists)."""
    return json.dumps(value, sort_keys=True, separators=(",", ":"), default=str)


def identity_digest(identity: dict[str, Any]) -> str:
    """`DIGEST_LENGTH` hex characters of sha256 over `canonical_json` of ``identity``."""
    return hashlib.sha256(canonical_json(identity).encode()).hexdigest()[:DIGEST_LENGTH]
