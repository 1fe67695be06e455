"""The ridge reference against a direct numpy solve, its inner selection, a planted linear signal, and the rows of a
run it fits."""

import json

import numpy as np
import pytest

from crescend_jax.evaluate import metrics, ridge


def direct_ridge(x_train, y_train, x_eval, alpha):
    """Standardise with the training rows, then per dimension on its finite rows: centre and solve
    (Xc^T Xc + alpha I) w = Xc^T yc; predict ybar + (z - xbar) w. Returns [m, K]."""
    mean, std = x_train.mean(axis=0), x_train.std(axis=0)
    std = np.where(std > 0, std, 1.0)
    xs, zs = (x_train - mean) / std, (x_eval - mean) / std
    out = np.empty((len(x_eval), y_train.shape[1]))
    for k in range(y_train.shape[1]):
        rows = np.isfinite(y_train[:, k])
        x, y = xs[rows], y_train[rows, k]
        xbar, ybar = x.mean(axis=0), y.mean()
        xc = x - xbar
        w = np.linalg.solve(xc.T @ xc + alpha * np.eye(x.shape[1]), xc.T @ (y - ybar))
        out[:, k] = ybar + (zs - xbar) @ w
    return out


@pytest.mark.parametrize("num_rows, num_features", [(40, 8), (12, 30)])  # primal (n > D) and dual (n <= D)
def test_ridge_path_equals_a_direct_solve(num_rows, num_features):
    rng = np.random.default_rng(0)
    x = rng.normal(2.0, 3.0, size=(num_rows, num_features))
    x[:, 1] = 5.0  # a constant feature
    y = rng.normal(size=(num_rows, 3)) + x[:, :1]
    y[::4, 1] = np.nan  # dimension 1 is fitted on fewer rows
    z = rng.normal(size=(7, num_features))
    alphas = np.array([1e-2, 0.3, 10.0, 1e4])
    path = ridge.ridge_path(x, y, z, alphas)
    assert path.shape == (4, 7, 3)
    for a, alpha in enumerate(alphas):
        np.testing.assert_allclose(path[a], direct_ridge(x, y, z, alpha), rtol=1e-7, atol=1e-9)


def test_ridge_path_rejects_bad_inputs():
    x = np.zeros((5, 3))
    with pytest.raises(ValueError, match="alphas"):
        ridge.ridge_path(x, np.zeros((5, 1)), x, np.array([0.0, 1.0]))
    with pytest.raises(ValueError, match="y_train"):
        ridge.ridge_path(x, np.zeros((4, 1)), x, np.array([1.0]))
    nothing = ridge.ridge_path(x, np.full((5, 2), np.nan), x, np.array([1.0]))
    assert np.isnan(nothing).all()


def planted(num_compositions=4, groups_per_composition=8, group_size=6, num_features=40, noise=0.3, seed=1):
    """Labels = x @ beta (+ a per-composition offset, which carries no within-group order) + noise."""
    rng = np.random.default_rng(seed)
    n_groups = num_compositions * groups_per_composition
    groups = np.repeat(np.arange(n_groups), group_size)
    compositions = np.repeat([f"c{c}" for c in range(num_compositions)], groups_per_composition * group_size)
    x = rng.normal(size=(len(groups), num_features))
    beta = rng.normal(size=(num_features, 2)) * (rng.random((num_features, 2)) < 0.3)
    offset = {c: rng.normal(size=2) * 3 for c in np.unique(compositions)}
    labels = x @ beta + np.stack([offset[c] for c in compositions]) + noise * rng.normal(size=(len(groups), 2))
    return x, labels, compositions, groups


def composition_masks(compositions):
    return [compositions == c for c in np.unique(compositions)]


def test_reference_ranks_a_planted_linear_signal():
    x, labels, compositions, groups = planted()
    masks = composition_masks(compositions)
    result = ridge.ridge_reference(x, labels, compositions, groups, masks)
    assert np.isfinite(result.predictions).all()  # every row is in one test fold
    accuracy = metrics.pairwise_accuracy(result.predictions, labels, groups).accuracy
    assert np.all(accuracy > 0.85)
    assert result.alphas.shape == (4, 2) and result.inner_scores.shape == (4, len(ridge.DEFAULT_ALPHAS), 2)
    assert all(s.startswith("leave-one-composition-out over 3") for s in result.inner_schemes)
    # The chosen alpha is the best inner score (ties to the larger alpha).
    for f in range(4):
        for k in range(2):
            best = np.flatnonzero(result.inner_scores[f, :, k] == result.inner_scores[f, :, k].max()).max()
            assert result.alphas[f, k] == result.alpha_grid[best]
    # Pure noise: no better than chance.
    noise = np.random.default_rng(9).normal(size=labels.shape)
    chance = ridge.ridge_reference(x, noise, compositions, groups, masks)
    assert np.all(np.abs(metrics.pairwise_accuracy(chance.predictions, noise, groups).accuracy - 0.5) < 0.08)


def test_selection_never_reads_the_test_rows():
    x, labels, compositions, groups = planted(noise=1.5)
    masks = composition_masks(compositions)
    first = ridge.ridge_reference(x, labels, compositions, groups, masks[:1])
    # Plant a strong signal in the test rows only (labels = a feature), and scramble their inputs.
    rng = np.random.default_rng(3)
    planted_x, planted_labels = x.copy(), labels.copy()
    test = masks[0]
    planted_x[test] = rng.normal(size=planted_x[test].shape) * 10
    planted_labels[test] = planted_x[test][:, :2] * 100
    second = ridge.ridge_reference(planted_x, planted_labels, compositions, groups, masks[:1])
    np.testing.assert_array_equal(first.alphas, second.alphas)
    np.testing.assert_array_equal(first.inner_scores, second.inner_scores)
    assert np.all(np.isnan(second.predictions[~test]))
    # The test rows' predictions depend on their own inputs only (the model is the same).
    again = ridge.ridge_reference(x, planted_labels, compositions, groups, masks[:1])
    np.testing.assert_allclose(again.predictions[test], first.predictions[test])


def test_single_training_composition_falls_back_to_group_folds():
    x, labels, compositions, groups = planted(num_compositions=2, groups_per_composition=10)
    result = ridge.ridge_reference(x, labels, compositions, groups, composition_masks(compositions))
    assert all("folds of same-music groups" in s and "only one training composition" in s
               for s in result.inner_schemes)
    accuracy = metrics.pairwise_accuracy(result.predictions, labels, groups).accuracy
    assert np.all(accuracy > 0.8)
    one_group = np.array(["g"] * len(groups))
    with pytest.raises(ValueError, match="inner cross-validation needs at least two"):
        ridge.ridge_reference(x, labels, compositions, one_group, composition_masks(compositions))


def test_missing_labels_and_bad_folds():
    x, labels, compositions, groups = planted()
    labels[::3, 1] = np.nan
    masks = composition_masks(compositions)
    result = ridge.ridge_reference(x, labels, compositions, groups, masks)
    assert np.isfinite(result.predictions).all()  # predictions exist even where the label is unknown
    assert np.all(metrics.pairwise_accuracy(result.predictions, labels, groups).accuracy > 0.8)
    unlabelled = labels.copy()
    unlabelled[:, 1] = np.nan
    result = ridge.ridge_reference(x, unlabelled, compositions, groups, masks)
    assert np.isnan(result.alphas[:, 1]).all() and np.isnan(result.predictions[:, 1]).all()
    with pytest.raises(ValueError, match="overlap"):
        ridge.ridge_reference(x, labels, compositions, groups, [masks[0], masks[0] | masks[1]])
    with pytest.raises(ValueError, match="non-finite"):
        ridge.ridge_reference(np.where(x > 2.5, np.nan, x), labels, compositions, groups, masks)
    with pytest.raises(ValueError, match="both are needed"):
        ridge.ridge_reference(x, labels, compositions, groups, [np.ones(len(x), bool)])


def test_the_reference_fits_the_rows_the_network_fits_and_selects_on_its_validation_rows():
    """With the run's validation compositions: fitted on the other training rows only, alpha chosen by within-group
    pairwise accuracy on the validation rows; the test predictions are that model's."""
    x, labels, compositions, groups = planted(noise=1.0)
    test, validation = compositions == "c0", compositions == "c1"
    result = ridge.ridge_reference(x, labels, compositions, groups, [test], fit_masks=[~validation],
                                   selection_masks=[validation])
    fit = ~test & ~validation
    on_validation = ridge.ridge_path(x[fit], labels[fit], x[validation], result.alpha_grid)
    for a, alpha in enumerate(result.alpha_grid):
        np.testing.assert_array_equal(result.inner_scores[0, a], metrics.pairwise_accuracy(
            on_validation[a], labels[validation], groups[validation]).accuracy)
    best = ridge._select(result.inner_scores[0])
    path = ridge.ridge_path(x[fit], labels[fit], x[test], result.alpha_grid)
    np.testing.assert_array_equal(result.predictions[test], np.take_along_axis(path, best[None, None], axis=0)[0])
    assert result.inner_schemes[0].startswith("chosen on the run's 1 validation composition(s)")
    # the validation rows' labels reach the model through the choice of alpha only
    moved = labels.copy()
    moved[validation] += 1.0  # the same within-group order: the same alphas
    again = ridge.ridge_reference(x, moved, compositions, groups, [test], fit_masks=[~validation],
                                  selection_masks=[validation])
    np.testing.assert_array_equal(again.predictions, result.predictions)


def test_the_reference_of_a_run_fits_exactly_its_fit_rows(tmp_path):
    from _distributed_worker import synthetic_table, tiny_config

    from crescend_jax.evaluate.predict import predict_heldout
    from crescend_jax.evaluate.reference import reference_predictions
    from crescend_jax.train.trainer import train

    table = synthetic_table()
    config = tiny_config(num_steps=5, eval_every=5)
    config.data.num_folds, config.data.test_compositions = 0, ("Comp0",)  # 3 training compositions: 1 validates
    (done,) = train(config, tmp_path, table=table)
    (entry,) = json.loads((tmp_path / "folds.json").read_text())
    assert len(entry["validation_compositions"]) == 1 and done["val_rows"] > 0
    held = predict_heldout(tmp_path, table=table)
    predictions, summary = reference_predictions(held.source, [entry], held.table)
    assert summary["fit_rows"] == [done["fit_rows"]] and summary["rows_as_the_run"]
    assert summary["inner_schemes"][0].startswith("chosen on the run's 1 validation composition(s)")
    assert np.isfinite(predictions.scores).all() and len(predictions.scores) == len(held.table)
    del entry["validation_compositions"]  # a run made before folds.json recorded them: said, not hidden
    _, old = reference_predictions(held.source, [entry], held.table)
    assert not old["rows_as_the_run"] and "predates" in old["note"] and old["fit_rows"][0] > done["fit_rows"]
