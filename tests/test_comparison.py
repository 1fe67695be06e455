"""Intervals of held-out predictions: the run's bootstrap options, works as the resampled unit, the no-Score twin,
and seeds pooled as a further stage (`comparison`, `seed_pooling`)."""

import dataclasses

import ml_collections
import numpy as np
import pytest
from _distributed_worker import synthetic_table

from crescend_jax.evaluate import comparison, seed_pooling
from crescend_jax.evaluate.run import default_eval_config, eval_settings
from crescend_jax.models.contract import Predictions


def scored(table, noise, seed):
    rng = np.random.default_rng(seed)
    return Predictions(scores=table.label_mean + rng.normal(0, noise, table.label_mean.shape))


def test_bootstrap_options_come_from_the_run_config():
    config = ml_collections.ConfigDict({"corpus": "percepiano", "data": {"split_level": "work"},
                                        "eval": default_eval_config()})
    options = comparison.bootstrap_options(config, eval_settings(config))
    assert options == {"scheme": "two_stage", "num_replicates": 2000, "seed": 0, "split_level": "work",
                       "corpus": "percepiano"}
    old = ml_collections.ConfigDict({"eval": {"min_gap": 0.05}})  # a run saved before the field existed
    assert comparison.bootstrap_options(old, eval_settings(old))["scheme"] == "two_stage"
    config.eval.bootstrap = "within_composition"
    assert comparison.bootstrap_options(config, eval_settings(config))["scheme"] == "within_composition"
    config.eval.bootstrap = "stratified"
    with pytest.raises(ValueError, match="eval.bootstrap='stratified' is not one of"):
        comparison.bootstrap_options(config, eval_settings(config))


def test_works_are_the_resampled_unit_with_split_level_work():
    """Eight compositions in two works: resampling works sees 2 units and says the interval cannot speak for new
    music; resampling compositions sees 8."""
    table = synthetic_table(compositions=8, groups_per_composition=2, performers=4)
    table = dataclasses.replace(table, works=np.where(np.isin(table.compositions, ["Comp0", "Comp1", "Comp2",
                                                                                   "Comp3"]), "W1", "W2"))
    run = scored(table, 0.1, 0)
    by_composition = comparison.accuracy_interval(run, table, num_replicates=300)
    by_work = comparison.accuracy_interval(run, table, num_replicates=300, split_level="work")
    assert by_composition["num_units"] == 8 and by_composition["warnings"] == []
    assert by_work["num_units"] == 2 and by_work["unit"] == "work"
    assert by_work["warnings"][0].startswith("2 held-out works: this interval cannot speak for new music")
    assert by_work["mean"]["estimate"] == by_composition["mean"]["estimate"]
    fixed = comparison.accuracy_interval(run, table, num_replicates=300, split_level="work",
                                         scheme="within_composition")
    assert fixed["unit"] == "composition" and fixed["num_units"] == 8  # the fixed set keeps compositions


def test_no_score_interval_leaves_out_pairs_with_score_renditions():
    table = synthetic_table(compositions=6, groups_per_composition=2, performers=5)
    table = dataclasses.replace(table, performers=np.where(table.performers == "0", "Score", table.performers))
    run = scored(table, 0.2, 1)
    result = comparison.accuracy_interval(run, table, num_replicates=300)
    outcomes = comparison.pair_outcomes(run, table)
    deadpan = comparison.no_score_mask(outcomes, table)
    assert deadpan.sum() == 6 * 2 * 4  # every group: the Score rendition against 4 performers
    kept = outcomes.correct[~deadpan]
    assert result["no_score"]["mean"]["estimate"] == pytest.approx(np.nanmean(np.nanmean(kept, axis=0)))
    assert result["no_score"]["mean"]["estimate"] != result["mean"]["estimate"]
    without_score = synthetic_table(compositions=6, groups_per_composition=2, performers=5)
    assert comparison.accuracy_interval(scored(without_score, 0.2, 1), without_score,
                                        num_replicates=50)["no_score"] is None


def test_pooled_seeds_resample_seeds_and_a_system_against_itself_is_zero():
    table = synthetic_table(compositions=6, groups_per_composition=3, performers=5)
    runs = [scored(table, noise, seed) for seed, noise in enumerate((0.05, 0.3, 0.15))]
    pooled = seed_pooling.pooled_interval(runs, table, num_replicates=400)
    each = [comparison.accuracy_interval(r, table, num_replicates=400)["mean"]["estimate"] for r in runs]
    assert pooled["mean"]["estimate"] == pytest.approx(np.mean(each)) and pooled["num_seeds"] == 3
    assert pooled["mean"]["low"] < pooled["mean"]["estimate"] < pooled["mean"]["high"]
    assert pooled["warnings"] == [] and "new music" in pooled["scope"]
    same = seed_pooling.pooled_difference(runs, runs, table, num_replicates=200)
    assert same["mean"]["low"] == same["mean"]["high"] == 0.0 and same["real"] is False
    assert any("zero-width" in w for w in same["warnings"])
    better = seed_pooling.pooled_difference(runs[:1], runs[1:], table, num_replicates=400)
    assert better["mean"]["estimate"] == pytest.approx(each[0] - np.mean(each[1:]))
    assert tuple(better["num_seeds"]) == (1, 2)
    assert better["real"]
