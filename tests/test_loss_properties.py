"""One property battery over every loss of crescend_jax.losses (rax's discipline: where / weights / reduce_fn).

Every loss takes its core arrays, then keyword-only ``where`` (the valid rows, performances or pairs), ``weights``
and ``reduce_fn``, and returns (loss, diagnostics). For each of them, on small random inputs:

- masking equals removal: items outside ``where`` (holding junk: huge inputs, NaN labels, -1 ids) give the loss,
  diagnostics and gradients of the inputs with those items deleted, and no gradient. It holds for every reduce_fn
  that honours ``where``: `weighted_mean` and None (tested: the masked entries are 0, the others equal the deleted
  version's), hence `weighted_sum` (the sum of the unreduced values, tested below); a reduction that ignores
  ``where`` breaks it (checked, so the check can fail);
- all masked gives a loss of 0 with finite (zero) gradients and finite diagnostics;
- the reductions agree: the unreduced values sum to `weighted_sum`; weights of ones equal no weights; the weighted
  mean does not change when every weight is scaled; a weight of 0 equals masking (except InfoNCE, whose zero-weight
  rows stay keys of the other anchors);
- jax.vmap over a leading batch axis equals a Python loop (values, diagnostics, gradients);
- extreme inputs (inputs scaled by 1e4 and 1e-6, every item tied, constant labels) give finite values,
  diagnostics and gradients;
- InfoNCE: the tiled custom-VJP loss equals the dense B x B reference, and the sharded entry on a mesh of the 8 fake
  devices (tests/conftest.py) equals the one-device loss, for every reduction, with and without weights.
"""

from __future__ import annotations

import dataclasses
import functools
from collections.abc import Callable

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from jax.sharding import Mesh

from crescend_jax.losses.adversarial import (
    between_group_share,
    least_squares_adversary_loss,
    masked_cross_entropy,
    orthogonality_penalty,
    within_group_variance_hinge,
)
from crescend_jax.losses.comparison import block_comparison_loss, comparison_loss
from crescend_jax.losses.infonce import infonce_loss, naive_infonce_loss
from crescend_jax.losses.pointwise import masked_mse
from crescend_jax.losses.ranking import margin_ranking_loss
from crescend_jax.losses.reduction import weighted_mean, weighted_sum

B, D, P, K, E = 12, 3, 3, 4, 3  # rows, dimensions, group slots, members per slot, embedding width
RTOL, ATOL = 2e-5, 1e-6


@dataclasses.dataclass(frozen=True)
class Case:
    """One loss under test. ``loss(*arrays, where=, weights=, reduce_fn=)`` -> (loss, diagnostics).

    specs (one per array): "R" rows [B, ...], "S" slots [P, K, ...], "T" pair tiles [P, K, K, ...].
    roles (one per array): "input" (differentiable), "label" (float; anything, even NaN, off ``where``), "ids"
    (int; -1 off ``where``). layout: "rows" (where [B]) or "slots" (where [P, K]). weights: the weights' shape is
    where's shape + weights_suffix. output: the item axes of the unreduced values ("P": per slot only).
    """

    name: str
    loss: Callable
    arrays: Callable[[np.random.Generator], tuple]
    specs: tuple[str, ...]
    roles: tuple[str, ...]
    layout: str
    output: str
    weights_suffix: tuple[int, ...] = ()
    zero_weight_is_masking: bool = True


def _rows(rng, *shape):
    return rng.normal(size=(B,) + shape).astype(np.float32)


def _slots(rng, *shape):
    return rng.normal(size=(P, K) + shape).astype(np.float32)


def _labels(rng, shape):
    return rng.choice([0.1, 0.3, 0.32, 0.6, 0.9], size=shape).astype(np.float32)


def _ids(rng, classes):
    ids = np.arange(B, dtype=np.int32) % classes  # every class present, then shuffled
    return rng.permutation(ids).astype(np.int32)


def _std(rng, shape):
    return rng.uniform(0.05, 0.3, size=shape).astype(np.float32)


def _comparison(kind):
    def loss(logits, gap, std_a, std_b, **kw):
        return comparison_loss(logits, gap, std_a=std_a, std_b=std_b, kind=kind, margin=0.5, min_label_gap=0.05,
                               label_smoothing=0.1, **kw)

    return Case(f"comparison_{kind}", loss,
                lambda rng: (_rows(rng, D) * 2, rng.choice([-0.4, -0.1, 0.0, 0.03, 0.1, 0.5], size=(B, D)).astype(
                    np.float32), _std(rng, (B, D)), _std(rng, (B, D))),
                ("R", "R", "R", "R"), ("input", "label", "label", "label"), "rows", "R", (1,))


def _orthogonality(kind):
    return Case(f"orthogonality_{kind}", functools.partial(orthogonality_penalty, kind=kind),
                lambda rng: (_rows(rng, E), _rows(rng, E) + 0.5 * _rows(rng, E)),
                ("R", "R"), ("input", "input"), "rows", "R")


CASES = [
    Case("mse", masked_mse, lambda rng: (rng.uniform(size=(B, D)).astype(np.float32), _labels(rng, (B, D))),
         ("R", "R"), ("input", "label"), "rows", "R", (1,)),
    Case("ranking",  # with agreement weights and per-dimension item weights: every path of the loss
         lambda s, y, std, **kw: margin_ranking_loss(s, y, label_std=std, margin=0.3, min_label_gap=0.05, **kw),
         lambda rng: (_slots(rng, D), _labels(rng, (P, K, D)), _std(rng, (P, K, D))),
         ("S", "S", "S"), ("input", "label", "label"), "slots", "T", (D,)),
    _comparison("logistic_margin"),  # the pair list; bce in the block case, hinge is max(0, margin - u)
    Case("block_comparison",
         lambda x, y, std, **kw: block_comparison_loss(x, y, label_std=std, kind="bce", min_label_gap=0.05, **kw),
         lambda rng: (rng.normal(size=(P, K, K, D)).astype(np.float32), _labels(rng, (P, K, D)),
                      _std(rng, (P, K, D))),
         ("T", "S", "S"), ("input", "label", "label"), "slots", "T"),
    Case("infonce",
         lambda z, group, **kw: infonce_loss(z, group, temperature=0.1, block_size=8, **kw),
         lambda rng: (_rows(rng, E), _ids(rng, 4)), ("R", "R"), ("input", "ids"), "rows", "R",
         zero_weight_is_masking=False),
    Case("cross_entropy", masked_cross_entropy, lambda rng: (_rows(rng, 4) * 3, _ids(rng, 4)),
         ("R", "R"), ("input", "ids"), "rows", "R"),
    Case("least_squares_adversary", functools.partial(least_squares_adversary_loss, num_classes=3),
         lambda rng: (_rows(rng, 2) + np.eye(3, 2, dtype=np.float32)[_ids(rng, 3)], _ids(rng, 3)),
         ("R", "R"), ("input", "ids"), "rows", "R"),
    *[_orthogonality(kind) for kind in ("cross_correlation", "cosine")],
    Case("between_group_share", between_group_share, lambda rng: (_slots(rng, E) + _slots(rng, E)[:, :1],),
         ("S",), ("input",), "slots", "S"),
    Case("within_group_variance_hinge", functools.partial(within_group_variance_hinge, target_std=1.5),
         lambda rng: (_slots(rng, E),), ("S",), ("input",), "slots", "P"),
]
IDS = [case.name for case in CASES]


# --------------------------------------------------------------------------------------------- masks and removal


def _where_shape(case):
    return (B,) if case.layout == "rows" else (P, K)


REMOVED_ROWS = np.array([1, 4, 9])
REMOVED_SLOT, REMOVED_MEMBER = 1, 2


def _removed(spec: str, shape: tuple[int, ...], layout: str) -> np.ndarray:
    """bool ``shape``: the entries of an array of item axes ``spec`` that belong to the removed items."""
    out = np.zeros(shape, bool)
    if layout == "rows":
        if spec == "R":
            out[REMOVED_ROWS] = True
        return out
    if spec in ("S", "T", "P"):
        out[REMOVED_SLOT] = True
    if spec in ("S", "T"):
        out[:, REMOVED_MEMBER] = True
    if spec == "T":
        out[:, :, REMOVED_MEMBER] = True
    return out


def _delete(a, spec: str, layout: str):
    """``a`` without the removed items."""
    a = np.asarray(a)
    if layout == "rows":
        return np.delete(a, REMOVED_ROWS, axis=0) if spec == "R" else a
    if spec in ("S", "T", "P"):
        a = np.delete(a, REMOVED_SLOT, axis=0)
    if spec in ("S", "T"):
        a = np.delete(a, REMOVED_MEMBER, axis=1)
    if spec == "T":
        a = np.delete(a, REMOVED_MEMBER, axis=2)
    return a


def _junk(a, role: str, where: np.ndarray):
    """``a`` with junk on the entries in ``where``: huge inputs, NaN labels, -1 ids."""
    a = np.array(a)
    a[where] = {"input": 1e3, "label": np.nan, "ids": -1}[role]
    return a


def _inputs(case):
    return [i for i, role in enumerate(case.roles) if role == "input"]


def _evaluate(case, arrays, reduce_fn=weighted_mean, cotangent=None, *, where=None, weights=None):
    """(loss, diagnostics, gradients of the inputs) of ``case``; for reduce_fn None the gradient is that of
    sum(values * cotangent) (default: ones). Jitted once per case, reduction and argument structure."""
    return _compiled(case, reduce_fn)(tuple(arrays), where, weights, cotangent)


@functools.cache
def _compiled(case, reduce_fn):
    def run(arrays, where, weights, cotangent):
        def scalar(*inputs):
            args = list(arrays)
            for i, x in zip(_inputs(case), inputs):
                args[i] = x
            value, diagnostics = case.loss(*args, where=where, weights=weights, reduce_fn=reduce_fn)
            reduced = value if reduce_fn is not None else jnp.sum(value * (1.0 if cotangent is None else cotangent))
            return reduced, (value, diagnostics)

        grads, (value, diagnostics) = jax.grad(scalar, argnums=tuple(range(len(_inputs(case)))), has_aux=True)(
            *[arrays[i] for i in _inputs(case)])
        return value, diagnostics, grads

    return jax.jit(run)


def _pattern(shape):
    return jnp.asarray(np.random.default_rng(99).uniform(0.5, 1.5, size=shape), jnp.float32)


def _close(got, want, what):
    np.testing.assert_allclose(np.asarray(got, np.float64), np.asarray(want, np.float64), rtol=RTOL, atol=ATOL,
                               err_msg=what)


def _random_weights(case, rng):
    return rng.uniform(0.2, 2.0, size=_where_shape(case) + case.weights_suffix).astype(np.float32)


# ----------------------------------------------------------------------------------------------------- properties


@pytest.mark.parametrize("reduce_fn", [weighted_mean, None], ids=["mean", "unreduced"])  # sum: test_reductions_agree
@pytest.mark.parametrize("case", CASES, ids=IDS)
def test_masking_equals_removal(case, reduce_fn):
    rng = np.random.default_rng(0)
    arrays = case.arrays(rng)
    weights = _random_weights(case, rng)
    where = ~_removed("R" if case.layout == "rows" else "S", _where_shape(case), case.layout)
    junked = [_junk(a, role, _removed(spec, a.shape, case.layout))
              for a, spec, role in zip(arrays, case.specs, case.roles)]
    cotangent = None  # for the unreduced values: a generic cotangent, and the same one without the removed entries
    if reduce_fn is None:
        cotangent = _pattern(jax.eval_shape(functools.partial(case.loss, where=where, weights=weights, reduce_fn=None),
                                            *arrays)[0].shape)
    masked = _evaluate(case, junked, reduce_fn, cotangent, where=where, weights=weights)
    deleted = _evaluate(case, [_delete(a, spec, case.layout) for a, spec in zip(arrays, case.specs)], reduce_fn,
                        None if cotangent is None else _delete(cotangent, case.output, case.layout),
                        weights=_delete(weights, "R" if case.layout == "rows" else "S", case.layout))
    value, diagnostics, grads = masked
    if reduce_fn is None:
        off = _removed(case.output, value.shape, case.layout)
        assert np.all(np.asarray(value)[off] == 0), "masked entries of the unreduced values must be 0"
        value = _delete(value, case.output, case.layout)
    _close(value, deleted[0], "loss")
    assert diagnostics.keys() == deleted[1].keys()
    for key in diagnostics:
        _close(diagnostics[key], deleted[1][key], key)
    for i, grad, want in zip(_inputs(case), grads, deleted[2]):
        off = _removed(case.specs[i], grad.shape, case.layout)
        assert np.all(np.asarray(grad)[off] == 0), "masked items must get no gradient"
        _close(_delete(grad, case.specs[i], case.layout), want, f"gradient of input {i}")


def test_a_reduction_that_ignores_where_breaks_masking_equals_removal():
    """The negative control: the property is not vacuous (a plain mean counts the masked entries' zeros)."""
    case = CASES[0]
    arrays = case.arrays(np.random.default_rng(0))
    where = ~_removed("R", (B,), "rows")
    plain_mean = lambda values, where, weights: jnp.mean(jnp.where(where, values, 0.0))
    masked, _, _ = _evaluate(case, arrays, plain_mean, where=where)
    deleted, _, _ = _evaluate(case, [_delete(a, "R", "rows") for a in arrays], plain_mean)
    assert abs(float(masked) - float(deleted)) > 1e-3


@pytest.mark.parametrize("reduce_fn", [weighted_mean, weighted_sum], ids=["mean", "sum"])
@pytest.mark.parametrize("case", CASES, ids=IDS)
def test_all_masked_gives_zero_with_finite_gradients(case, reduce_fn):
    arrays = case.arrays(np.random.default_rng(1))
    nothing = np.zeros(_where_shape(case), bool)
    junked = [_junk(a, role, np.ones(a.shape, bool)) if role != "input" else a for a, role in
              zip(arrays, case.roles)]
    value, diagnostics, grads = _evaluate(case, junked, reduce_fn, where=nothing)
    assert float(value) == 0.0
    for key, diagnostic in diagnostics.items():
        assert np.isfinite(np.asarray(diagnostic)).all(), key
    for grad in grads:
        assert np.all(np.asarray(grad) == 0.0)


@pytest.mark.parametrize("case", CASES, ids=IDS)
def test_reductions_agree(case):
    rng = np.random.default_rng(2)
    arrays = case.arrays(rng)
    weights = _random_weights(case, rng)
    where = ~_removed("R" if case.layout == "rows" else "S", _where_shape(case), case.layout)
    def value(reduce_fn=weighted_mean, **kw):
        return _evaluate(case, arrays, reduce_fn, **kw)[0]

    _close(jnp.sum(value(None, where=where, weights=weights)), value(weighted_sum, where=where, weights=weights),
           "sum of the unreduced values vs weighted_sum")
    mean = value(where=where, weights=weights)
    _close(value(where=where, weights=3.5 * weights), mean, "mean with every weight scaled")
    _close(value(where=where, weights=np.ones_like(weights)), value(where=where), "weights of ones")
    zeroed = np.where(where.reshape(where.shape + (1,) * len(case.weights_suffix)), weights, 0.0)
    by_weight = value(where=np.ones_like(where), weights=zeroed)
    if case.zero_weight_is_masking:
        _close(by_weight, mean, "a zero weight vs masking")
    else:  # InfoNCE: a zero-weight row is no anchor but still a key of the others
        assert abs(float(by_weight) - float(mean)) > 1e-4


@pytest.mark.parametrize("case", CASES, ids=IDS)
def test_vmap_over_a_leading_batch_axis_equals_a_loop(case):
    examples = [case.arrays(np.random.default_rng(10 + b)) for b in range(2)]
    wheres = [np.random.default_rng(20 + b).uniform(size=_where_shape(case)) > 0.25 for b in range(2)]
    stacked = [np.stack(parts) for parts in zip(*examples)]
    got = jax.vmap(lambda arrays, where: _evaluate(case, arrays, where=where))(stacked, np.stack(wheres))
    for b in range(2):
        want = _evaluate(case, examples[b], where=wheres[b])
        for got_leaf, want_leaf in zip(jax.tree.leaves(got), jax.tree.leaves(want)):
            _close(got_leaf[b], want_leaf, f"example {b}")


def _extreme(case, arrays, regime):
    out = []
    for a, spec, role in zip(arrays, case.specs, case.roles):
        a = np.array(a)
        first = a[(0,) * {"R": 1, "S": 2, "T": 3}[spec]]
        if role == "input" and regime in ("huge", "tiny"):
            a = a * np.float32(1e4 if regime == "huge" else 1e-6)
        elif (role == "input" and regime == "ties") or (role != "input" and regime == "constant_labels"):
            a = np.broadcast_to(first, a.shape).copy()
        out.append(a)
    return out


@pytest.mark.parametrize("regime", ["huge", "tiny", "ties", "constant_labels"])
@pytest.mark.parametrize("case", CASES, ids=IDS)
def test_extreme_inputs_give_finite_values_and_gradients(case, regime):
    arrays = _extreme(case, case.arrays(np.random.default_rng(3)), regime)
    value, diagnostics, grads = _evaluate(case, arrays, where=np.ones(_where_shape(case), bool))
    assert np.isfinite(float(value))
    for key, diagnostic in diagnostics.items():
        assert np.isfinite(np.asarray(diagnostic)).all(), key
    for grad in grads:
        assert np.isfinite(np.asarray(grad)).all()


# ------------------------------------------------------------------------------------ InfoNCE: three implementations


def _infonce_batch():
    rng = np.random.default_rng(4)
    z = rng.normal(size=(40, 8))
    z = (z / np.linalg.norm(z, axis=1, keepdims=True)).astype(np.float32)
    group = rng.integers(0, 7, size=40).astype(np.int32)
    group[:3] = [100, 101, 102]  # rows without a positive: no anchors
    where = np.ones(40, bool)
    where[-5:] = False
    return z, group, where, rng.uniform(0.2, 2.0, size=40).astype(np.float32)


@pytest.mark.parametrize("reduce_fn, weighted", [(weighted_mean, False), (None, True)],
                         ids=["mean", "weighted_unreduced"])  # any other reduction: test_reductions_agree
def test_infonce_tiled_and_sharded_equal_the_dense_reference(reduce_fn, weighted):
    z, group, where, weights = _infonce_batch()
    mesh = Mesh(np.array(jax.devices()[:8]), ("data",))
    kw = {"where": where, "weights": weights if weighted else None, "reduce_fn": reduce_fn}
    implementations = {
        "dense": functools.partial(naive_infonce_loss, **kw),
        "tiled": functools.partial(infonce_loss, block_size=16, **kw),  # 40 rows: two whole blocks and a ragged one
        "sharded": functools.partial(infonce_loss, block_size=8, mesh=mesh, strategy="ring", **kw),
    }

    def value_and_grads(fn):
        def scalar(z, t):
            value, diagnostics = fn(z, jnp.asarray(group), temperature=t)
            reduced = value if reduce_fn is not None else jnp.sum(value * _pattern(value.shape))
            return reduced, (value, diagnostics)

        grads, aux = jax.jit(jax.grad(scalar, argnums=(0, 1), has_aux=True))(jnp.asarray(z), jnp.float32(0.1))
        return aux, grads

    want = value_and_grads(implementations.pop("dense"))
    for name, fn in implementations.items():
        got = value_and_grads(fn)
        for got_leaf, want_leaf in zip(jax.tree.leaves(got), jax.tree.leaves(want)):
            scale = np.abs(np.asarray(want_leaf)).max()
            np.testing.assert_allclose(np.asarray(got_leaf), np.asarray(want_leaf), rtol=1e-5, atol=1e-6 * scale,
                                       err_msg=name)
