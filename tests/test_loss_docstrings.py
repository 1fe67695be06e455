"""Every loss of crescend_jax.losses has rax's signature shape and a docstring example that runs (doctest, so that CI
runs them: the same as ``python -m pytest --doctest-modules crescend_jax/losses``)."""

import doctest
import importlib
import inspect
from pathlib import Path

import pytest

from crescend_jax.losses.reduction import weighted_mean

MODULES = ["reduction", "pointwise", "ranking", "comparison", "infonce", "adversarial"]
LOSSES = {
    "pointwise": ["masked_mse"],
    "ranking": ["margin_ranking_loss"],
    "comparison": ["comparison_loss", "block_comparison_loss"],
    "infonce": ["infonce_loss", "sharded_infonce_loss", "naive_infonce_loss"],
    "adversarial": ["masked_cross_entropy", "least_squares_adversary_loss", "orthogonality_penalty",
                    "between_group_share", "within_group_variance_hinge"],
}


@pytest.mark.parametrize("name", MODULES)
def test_docstring_examples_run(name):
    module = importlib.import_module(f"crescend_jax.losses.{name}")
    result = doctest.testmod(module, optionflags=doctest.NORMALIZE_WHITESPACE)
    assert result.attempted > 0, f"{name} has no docstring example"
    assert result.failed == 0, f"{result.failed} of {result.attempted} docstring examples of {name} failed (above)"


def test_every_loss_has_one_signature_shape_and_an_example():
    """Core arrays first, then keyword-only where=None, weights=None, reduce_fn=weighted_mean; (loss, diagnostics);
    and the list above is every function of the loss modules with a ``reduce_fn``, so a new loss cannot skip it."""
    package = importlib.import_module("crescend_jax.losses")
    assert sorted(p.stem for p in Path(package.__file__).parent.glob("*.py") if p.stem != "__init__") == sorted(MODULES)
    for name in MODULES[1:]:  # reduction.py holds the reductions themselves
        module = importlib.import_module(f"crescend_jax.losses.{name}")
        found = sorted(function for function, value in vars(module).items()
                       if inspect.isfunction(value) and value.__module__ == module.__name__
                       and "reduce_fn" in inspect.signature(value).parameters)
        assert found == sorted(LOSSES.get(name, [])), name
    for name, functions in LOSSES.items():
        module = importlib.import_module(f"crescend_jax.losses.{name}")
        for function in functions:
            loss = getattr(module, function)
            parameters = list(inspect.signature(loss).parameters.values())
            keyword = [p.name for p in parameters if p.kind is inspect.Parameter.KEYWORD_ONLY]
            assert keyword[:3] == ["where", "weights", "reduce_fn"], function
            assert all(p.kind is inspect.Parameter.POSITIONAL_OR_KEYWORD for p in parameters[:parameters.index(
                next(p for p in parameters if p.name == "where"))]), function
            defaults = {p.name: p.default for p in parameters}
            assert (defaults["where"], defaults["weights"], defaults["reduce_fn"]) == (None, None, weighted_mean)
            assert "tuple[jax.Array, dict[str, jax.Array]]" in str(inspect.signature(loss).return_annotation), function
            assert ">>>" in (loss.__doc__ or ""), f"{function}: no example"
