"""``model.init_from=WORKDIR``: a fold's model starts from another run's trained parameters (warm start).

Used for "A then B" (contrastive pre-training, then Siamese fine-tuning), "B on C's style encoder" and pre-training on
another corpus (ASAP) before PercePiano. Which of the source's folds: the fold with the same index when the source
holds out exactly the same keys fold by fold (no test composition of the target was ever trained on), else the
source's single fold when it has one (a pre-training run, e.g. on another corpus, whose training data must not
contain the target's compositions: the source's config says how it excluded them); anything else is refused.

Which parameters: with ``model.init_from_prefix`` (e.g. ``"style/"``: C's style encoder) only the source's parameters
under that prefix are used, the prefix stripped; every parameter (``nnx.Param``) whose path exists in both with the
same shape is copied;
the others keep their fresh initialisation (e.g. a new comparison head). A path present in both with another shape
is refused (the encoders differ), and so is a warm start that copies nothing, except the heads of other label
columns: when the source ranked other targets than this run (``data.targets``, e.g. ASAP's 6 derived targets before
PercePiano's 19 ratings), a parameter whose last axis is the source's number of label columns there and this run's
here (a rank head's kernel and bias, a comparator's output layer) keeps its fresh initialisation ("fresh_heads" in the
record).
"""

from __future__ import annotations

import contextlib
import json
from pathlib import Path
from typing import Any

import jax
import ml_collections
import numpy as np
from flax import nnx
from jax.sharding import Mesh

from crescend_jax.config import ConfigError
from crescend_jax.data import fingerprint as fingerprint_lib
from crescend_jax.data.asap import percepiano_overlap
from crescend_jax.models import approach_for
from crescend_jax.models.functions import model_functions
from crescend_jax.models.targets import num_targets, target_names_of
from crescend_jax.runtime.checkpoint import FoldCheckpoints


def _path(path) -> str:
    """"mlp/linears/0/kernel" from a pytree key path (the trailing ".value" of a variable dropped)."""
    names = [str(getattr(k, "key", getattr(k, "idx", getattr(k, "name", k)))) for k in path]
    return "/".join(names[:-1] if names and names[-1] == "value" else names)


def _params(state: nnx.State) -> dict[str, Any]:
    """path -> array of the nnx.Param leaves of a model state."""
    return {_path(p): leaf for p, leaf in jax.tree_util.tree_flatten_with_path(nnx.filter_state(state, nnx.Param))[0]}


def source_fold(source: Path, fold: int, target_folds: list[dict[str, Any]]) -> tuple[int, dict[str, Any], bool]:
    """(the source fold whose parameters initialise target fold ``fold`` (see the module doc), its folds.json entry,
    whether the source holds out the target's folds exactly)."""
    _, source_folds = fingerprint_lib.read_record(source)
    if source_folds is None:
        raise ConfigError(f"model.init_from={source} is not a training workdir (no folds.json)")
    simplify = lambda folds: [(f["fold"], sorted(f["test_keys"])) for f in folds]
    if simplify(source_folds) == simplify(target_folds):
        return fold, next(f for f in source_folds if f["fold"] == fold), True
    if len(source_folds) == 1:
        return int(source_folds[0]["fold"]), source_folds[0], False
    raise ConfigError(f"model.init_from={source} holds out other folds than this run and has "
                      f"{len(source_folds)} folds: train it on the same data.* split, or as one pre-training fold")


def overlap_with_test_music(trained: dict[str, Any], source_corpus: str, tested: dict[str, Any],
                       target_corpus: str, target_level: str) -> list[str]:
    """The target's test music that the source trained on, as readable names ("composition X", "work W",
    "X (ASAP) may be Y"): ``trained`` is the source fold's folds.json entry (train_compositions, train_works),
    ``tested`` the target fold's (test_compositions, test_works); works count when the target splits by work."""
    compositions = set(trained.get("train_compositions", ()))
    overlap = [f"composition {name}" for name in sorted(compositions & set(tested.get("test_compositions", ())))]
    if target_level == "work" and source_corpus == target_corpus:
        works = set(trained.get("train_works", ())) & set(tested.get("test_works", ()))
        overlap += [f"work {name}" for name in sorted(works)]
    corpora = {source_corpus, target_corpus}
    if corpora == {"asap", "percepiano"}:  # different names for one piece: compare catalogue numbers
        asap, percepiano = ((compositions, tested.get("test_compositions", ())) if source_corpus == "asap"
                            else (tested.get("test_compositions", ()), compositions))
        overlap += [f"{a} (ASAP) may be {', '.join(p)} (PercePiano)"
                    for a, p in percepiano_overlap(asap, percepiano).items()]
    return overlap


def _check_no_test_music(source: Path, k: int, entry: dict[str, Any], same_folds: bool,
                         source_config: ml_collections.ConfigDict, config: ml_collections.ConfigDict, fold: int,
                         target_folds: list[dict[str, Any]]) -> None:
    """Raises `ConfigError` (one line naming the overlap) when source fold ``k`` trained on the music that target
    fold ``fold`` tests, or cannot be checked (a single-fold source without the record of its training music)."""
    if "train_compositions" not in entry:
        if same_folds:
            return  # held out exactly the target's folds: it never trained on the target's test rows
        raise ConfigError(f"model.init_from={source}: its folds.json does not list what fold {k} trained on (made "
                          "by an older version), so it cannot be checked against this run's test music; retrain it")
    tested = next((f for f in target_folds if f["fold"] == fold), {})
    overlap = overlap_with_test_music(entry, source_config.get("corpus", ""), tested, config.get("corpus", ""),
                                 config.data.get("split_level", "composition"))
    if overlap:
        shown = "; ".join(overlap[:4]) + (f"; and {len(overlap) - 4} more" if len(overlap) > 4 else "")
        raise ConfigError(f"model.init_from={source} (fold {k}) trained on music that fold {fold} of this run tests: "
                          f"{shown}; hold it out of the source (its data.test_compositions / "
                          "data.exclude_compositions) or start this run from scratch")


def warm_start(model_state: Any, config: ml_collections.ConfigDict, fold: int, target_folds: list[dict[str, Any]],
               mesh: Mesh) -> tuple[Any, dict[str, Any]]:
    """``model_state`` with the parameters of ``config.model.init_from``'s selected checkpoint copied in; returns
    (state, a JSON record: source, fold, step, copied and fresh parameter paths)."""
    source = Path(config.model.init_from)
    config_path = source / "config.json"
    if not config_path.is_file():
        raise ConfigError(f"model.init_from={source} has no config.json: point it at a finished training workdir")
    source_config = ml_collections.ConfigDict(json.loads(config_path.read_text()))
    k, entry, same_folds = source_fold(source, fold, target_folds)
    _check_no_test_music(source, k, entry, same_folds, source_config, config, fold, target_folds)
    fold_dir = source / f"fold_{k}"
    stats = fold_dir / "input_stats.npz"
    if not stats.is_file():
        raise ConfigError(f"model.init_from={source}: fold {k} was never trained ({stats} is missing)")
    saved = np.load(stats)
    input_dim = int(saved["pooled_mean" if "pooled_mean" in saved else "mean"].shape[0])
    functions = model_functions(approach_for(source_config), source_config, input_dim, mesh)
    with contextlib.closing(FoldCheckpoints(fold_dir / "checkpoints")) as checkpoints:
        step = checkpoints.selected_step(fold_dir)
        if step is None:
            raise ConfigError(f"model.init_from={source}: {fold_dir} has no checkpoint")
        items, _ = checkpoints.restore(step, {"model": functions.init(k)})
    prefix = config.model.get("init_from_prefix", "")
    source_params = {p[len(prefix):]: v for p, v in _params(items["model"]).items() if p.startswith(prefix)}
    target_params = _params(model_state)
    heads = []
    if target_names_of(source_config) != target_names_of(config):  # other label columns: their heads start fresh
        wanted = (num_targets(source_config), num_targets(config))
        heads = sorted(p for p, leaf in target_params.items() if p in source_params and np.ndim(leaf) >= 1
                       and (np.shape(source_params[p])[-1], np.shape(leaf)[-1]) == wanted
                       and np.shape(source_params[p])[:-1] == np.shape(leaf)[:-1])
        source_params = {p: v for p, v in source_params.items() if p not in heads}
    mismatched = [f"{p}: {source_params[p].shape} -> {leaf.shape}" for p, leaf in target_params.items()
                  if p in source_params and source_params[p].shape != leaf.shape]
    if mismatched:
        raise ConfigError(f"model.init_from={source}: the encoders differ ({'; '.join(mismatched[:4])}); build both "
                          "with the same widths")
    copied = sorted(p for p in target_params if p in source_params)
    if not copied:
        raise ConfigError(f"model.init_from={source}: no parameter of this model exists in the source "
                          f"(source parameters look like {sorted(source_params)[:3]})")

    def replace(path, leaf):
        name = _path(path)
        return source_params[name] if name in source_params else leaf

    params = jax.tree_util.tree_map_with_path(replace, nnx.filter_state(model_state, nnx.Param))
    state = nnx.merge_state(model_state, params)  # the non-parameter variables (e.g. RNG state) stay fresh
    record = {"source": str(source), "source_prefix": prefix, "source_fold": k, "source_step": int(step),
              "copied": copied,
              "fresh": sorted(p for p in target_params if p not in source_params), "fresh_heads": heads}
    return state, record
