"""The approach contract: comparator predictions through the evaluation, a scorer seen as a comparator, and a frame
model evaluated on what it trained on."""

import numpy as np
import pytest
from _distributed_worker import synthetic_table
from test_report import simulated_table

from crescend_jax.data.groups import within_group_pairs
from crescend_jax.evaluate.predict import predict_heldout
from crescend_jax.evaluate.summary import evaluate_predictions
from crescend_jax.models.contract import Predictions, mean_pairwise_accuracy, win_scores
from crescend_jax.models.contrastive import default_model_config
from crescend_jax.models.functions import evaluation_crops
from crescend_jax.train.trainer import default_train_config, train


def comparator_of(scores: np.ndarray, groups: np.ndarray) -> Predictions:
    i, j = within_group_pairs(groups)
    return Predictions(pairs=(i, j, 1.0 / (1.0 + np.exp(-(scores[i] - scores[j])))))


def test_comparator_on_a_planted_order_is_perfect():
    table, fold = simulated_table(num_compositions=3, raters=4)
    planted = comparator_of(10.0 * table.label_mean, table.groups)
    metrics = evaluate_predictions(table, planted, fold, ceiling_splits=3)
    assert metrics["pooled"]["pairwise_accuracy"]["mean"] == 1.0
    assert metrics["pooled"]["kendall_tau_b"]["mean"] == pytest.approx(1.0)
    reversed_ = comparator_of(-10.0 * table.label_mean, table.groups)
    assert evaluate_predictions(table, reversed_, fold, ceiling_splits=3)["pooled"]["pairwise_accuracy"]["mean"] == 0


def test_win_counts_recover_a_planted_order_inside_each_group():
    groups = np.repeat(["a", "b"], 5)
    truth = np.random.default_rng(0).normal(size=(10, 19))
    wins = win_scores(comparator_of(3.0 * truth, groups), groups)
    for g in ("a", "b"):
        rows = groups == g
        np.testing.assert_array_equal(np.argsort(wins[rows], axis=0), np.argsort(truth[rows], axis=0))
    i, j = within_group_pairs(groups)
    assert len(i) == 20 and (groups[i] == groups[j]).all()


def test_a_scorer_seen_as_a_comparator_gives_the_same_metrics():
    table, fold = simulated_table(num_compositions=3, raters=4)
    scores = table.label_truth + np.random.default_rng(1).normal(0, 0.1, table.label_truth.shape)
    as_scorer = evaluate_predictions(table, Predictions(scores=scores), fold, ceiling_splits=3)
    as_comparator = evaluate_predictions(table, comparator_of(scores, table.groups), fold, ceiling_splits=3)
    for name in ("pairwise_accuracy", "pairwise_accuracy_gap", "pairwise_accuracy_no_score", "kendall_tau_b",
                 "truth_accuracy", "num_pairs"):
        np.testing.assert_allclose(as_comparator["pooled"][name]["per_dimension"],
                                   as_scorer["pooled"][name]["per_dimension"], rtol=1e-12, err_msg=name)
    scorer = Predictions(scores=scores)
    i, j = within_group_pairs(table.groups)
    np.testing.assert_allclose(scorer.pair_probabilities(j, i), 1 - scorer.pair_probabilities(i, j))
    comparator = comparator_of(scores, table.groups)
    np.testing.assert_allclose(comparator.pair_probabilities(j, i), scorer.pair_probabilities(j, i), rtol=1e-12)
    assert mean_pairwise_accuracy(comparator, table.label_mean, table.groups) == pytest.approx(
        mean_pairwise_accuracy(scorer, table.label_mean, table.groups))


def test_checkpoint_selection_scores_exactly_what_the_report_reports():
    """One outcome rule (`data.pairs`): label ties and NaN labels left out, predicted ties 1/2, even a margin of one
    ulp ordered; the trainer's selection metric equals the reported mean pairwise accuracy of the same rows."""
    from crescend_jax.data.pairs import pair_outcome
    from crescend_jax.evaluate.comparison import pair_outcomes

    table, _ = simulated_table(num_compositions=3, raters=4)
    rng = np.random.default_rng(2)
    scores = np.round(table.label_truth + rng.normal(0, 0.3, table.label_truth.shape), 1)  # many exact ties
    scores[:, 1] = 1.0 + np.where(rng.random(len(scores)) < 0.5, 0.0, 2.0 ** -52)  # one ulp apart: ordered
    labels = table.label_mean.astype(np.float64).copy()
    labels[::7, 2] = np.nan
    labels[1::5, 3] = labels[0::5, 3][: len(labels[1::5, 3])]  # label ties
    table.label_mean = labels
    for predictions in (Predictions(scores=scores), comparator_of(scores, table.groups)):
        reported = pair_outcomes(predictions, table).accuracy().accuracy
        assert mean_pairwise_accuracy(predictions, labels, table.groups) == np.nanmean(reported)
    assert np.isfinite(reported[1]) and reported[1] != 0.5  # the one-ulp margins count as orders, not ties
    np.testing.assert_array_equal(pair_outcome(np.array([[0.0, 1.0, -2.0, 1.0, np.nan]]),
                                               np.array([[1.0, 0.5, 0.5, 0.0, 1.0]])),
                                  [[0.5, 1.0, 0.0, np.nan, np.nan]])


def test_model_functions_are_cached_a_few_at_a_time():
    """The folds of a run share one compilation; a long sweep keeps at most MAX_CACHED models' functions."""
    from _distributed_worker import tiny_config

    from crescend_jax.models import functions
    from crescend_jax.models.baseline import PointwiseBaseline
    from crescend_jax.runtime import distributed

    mesh = distributed.make_mesh()
    config = tiny_config()
    first = functions.model_functions(PointwiseBaseline(), config, 16, mesh)
    renamed = tiny_config()
    renamed.experiment = {"name": "another"}  # not a model field: the same functions
    assert functions.model_functions(PointwiseBaseline(), renamed, 16, mesh) is first
    for width in range(functions.MAX_CACHED + 2):
        config.model.hidden_dim = 8 + width
        functions.model_functions(PointwiseBaseline(), config, 16, mesh)
    assert len(functions._CACHE) == functions.MAX_CACHED


def test_evaluation_crops_cover_the_whole_track():
    assert list(evaluation_crops(25, 10)) == [0, 10, 15]
    assert list(evaluation_crops(20, 10)) == [0, 10]
    assert list(evaluation_crops(7, 10)) == [0]


def frame_signal_table(seed: int = 0):
    """Only the frame sequence tells performers apart: frames [1, T, 4] with feature 0 a +-1 square wave and feature
    1 = quality x the wave, so every pooled (time-mean) vector is the same; a model must attend to the frames where
    the wave is up to see the quality. Labels are the quality (all 19 dimensions)."""
    rng = np.random.default_rng(seed)
    table = synthetic_table(compositions=4, groups_per_composition=3, performers=4, dim=4, seed=seed)
    quality = rng.normal(size=len(table))
    frames = []
    for q in quality:
        length = int(rng.integers(24, 40)) // 2 * 2
        wave = np.tile([1.0, -1.0], length // 2)
        x = np.stack([wave, q * wave, rng.normal(0, 0.05, length), np.zeros(length)], axis=1)
        frames.append(x[None].astype(np.float32))
    table.frames, table.frame_rate = frames, 10.0
    table.pooled = np.stack([f[0].mean(axis=0) for f in frames]).astype(np.float32)
    table.label_mean = np.repeat((1 / (1 + np.exp(-quality)))[:, None], 19, axis=1).astype(np.float32)
    return table


@pytest.mark.slow
def test_a_frame_model_is_evaluated_on_its_frames(tmp_path):
    table = frame_signal_table()
    assert np.ptp(table.pooled[:, 1]) < 1e-6  # the pooled view holds no quality at all
    config = default_train_config()
    config.update({"batch_size": 16, "num_steps": 150, "eval_every": 50, "log_every": 50, "learning_rate": 3e-3,
                   "val_fraction": 0.3})
    import ml_collections

    full = ml_collections.ConfigDict({"data": {"num_folds": 0, "test_compositions": ("Comp0",), "fold_seed": 0},
                                      "model": default_model_config(), "train": config})
    full.model.update({"input": "frames", "pooling": "attention", "hidden_dim": 32, "projection_dim": 16,
                       "dropout": 0.0})
    full.model.loss.lambda_piece = 0.0
    full.model.sampler.crop_seconds = 1.0
    train(full, tmp_path, table=table)
    held = predict_heldout(tmp_path, table=table)
    metrics = evaluate_predictions(held.table, held.predictions, held.fold, ceiling_splits=2)
    assert metrics["pooled"]["pairwise_accuracy"]["mean"] > 0.85
