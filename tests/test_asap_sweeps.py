"""The shipped ASAP sweeps expand to the points the README names: a fixed budget of examples (not steps) per batch,
one run where the learning-rate rules agree, every fine-tuning point starting from its own pre-training point."""

import math

from crescend_jax.config import load_config
from crescend_jax.sweeps.expand import expand_sweep


def test_asap_ranking_sweep_points():
    points = {p.name: p for p in expand_sweep(load_config("configs/sweeps/asap_ranking.py"))}
    assert list(points) == ["a-scratch", "asap-rank", "asap-infonce", "a-from_rank", "a-from_infonce", "joint"]
    assert points["asap-rank"].config.data.targets == "derived" and points["asap-rank"].baseline is None
    assert points["asap-infonce"].config.model.loss.derived_weight == 0.0
    assert points["asap-infonce"].config.model.loss.lambda_piece == 1.0
    assert points["a-from_rank"].references == {"model.init_from": "asap-rank"}
    assert points["joint"].config.corpus == "joint" and points["joint"].baseline == "a-scratch"
    # the PercePiano folds of every PercePiano point are the joint run's PercePiano folds (paired comparisons)
    split = lambda data: {k: data[k] for k in ("num_folds", "test_compositions", "fold_seed", "split_level")}
    assert split(points["a-scratch"].config.data) == split(points["joint"].config.data.percepiano)


def test_asap_batch_size_sweep_keeps_the_budget_of_examples():
    sweep = load_config("configs/sweeps/asap_batch_size.py:256,1024,32768@1000000")
    points = {p.name: p for p in expand_sweep(sweep)}
    pretraining = [p for name, p in points.items() if not name.startswith("pp-")]
    assert sorted({p.config.train.batch_size for p in pretraining}) == [256, 1024, 32768]
    for p in pretraining:
        batch, steps = p.config.train.batch_size, p.config.train.num_steps
        assert steps == math.ceil(1_000_000 / batch)  # the same examples at every batch, not the same steps
        assert points[f"pp-{p.name}"].references == {"model.init_from": p.name}
        assert p.config.train.val_fraction == 0.0  # the last step: no early stopping to confound the budget
    assert "infonce-b256-linear" not in points and "rank-b256-none" in points  # the rules agree at the reference
    assert points["infonce-b1024-linear"].learning_rate["resolved"] == 4e-4
    assert points["infonce-b1024-sqrt"].learning_rate["resolved"] == 2e-4
    assert points["rank-b32768-none"].config.model.loss.lambda_piece == 0.0
    assert len(points) == 1 + 2 * 2 * (1 + 3 + 3)
