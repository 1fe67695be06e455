"""Reading the nested result dicts the evaluation and the sweeps write (``metrics.json``, a sweep's ``results.json``)
by dotted path, where any level may be missing."""

from __future__ import annotations

from typing import Any, Mapping


def nested_get(node: Any, dotted: str) -> Any:
    """``node[a][b][c]`` for ``dotted`` = "a.b.c"; None as soon as a level is not a mapping or lacks the key.

    >>> nested_get({"pooled": {"pairwise_accuracy": {"mean": 0.61}}}, "pooled.pairwise_accuracy.mean")
    0.61
    >>> nested_get({"pooled": None}, "pooled.pairwise_accuracy.mean") is None
    True
    """
    for part in dotted.split("."):
        if not isinstance(node, Mapping) or part not in node:
            return None
        node = node[part]
    return node
