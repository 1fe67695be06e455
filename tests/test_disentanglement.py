"""Known answers for the disentanglement metrics: planted piece and style factors, exact variance shares, the
silhouette against a direct O(N^2) computation, the ridge path against a direct solve, and the group split."""

import itertools
import json
import sys
import types

import numpy as np
import pytest

from crescend_jax.evaluate import disentanglement as dis

NUM_COMPOSITIONS, GROUPS_PER_COMPOSITION, PERFORMERS = 6, 4, 10


def planted(seed=0, piece_dims=6, style_dims=6):
    """Rows of C compositions x G groups x P performers; the first ``piece_dims`` columns carry the composition
    (a centroid per composition, an offset per group, small noise), the next ``style_dims`` a per-row style factor
    that is independent of the music. Returns z [N, piece+style], compositions, groups, style factors [N, 2]."""
    rng = np.random.default_rng(seed)
    centroids = rng.standard_normal((NUM_COMPOSITIONS, piece_dims)) * 3.0
    mixing = rng.standard_normal((2, style_dims))
    z, comps, groups, factors = [], [], [], []
    for c in range(NUM_COMPOSITIONS):
        for g in range(GROUPS_PER_COMPOSITION):
            offset = rng.standard_normal(piece_dims) * 0.2
            for _ in range(PERFORMERS):
                style = rng.standard_normal(2)
                piece_part = centroids[c] + offset + rng.standard_normal(piece_dims) * 0.3
                style_part = style @ mixing + rng.standard_normal(style_dims) * 0.1
                z.append(np.concatenate([piece_part, style_part]))
                comps.append(f"comp{c}")
                groups.append(f"comp{c}_seg{g}")
                factors.append(style)
    return np.array(z), np.array(comps), np.array(groups), np.array(factors)


# ------------------------------------------------------------------------------------------------ split


def test_group_split_never_splits_a_group_and_keeps_compositions_in_both_parts():
    _, comps, groups, _ = planted()
    # one extra composition with a single group: it can only be in the training part
    comps = np.concatenate([comps, ["solo"] * 5])
    groups = np.concatenate([groups, ["solo_seg0"] * 5])
    split = dis.group_holdout_split(groups, comps, seed=3, holdout_share=0.5)
    assert sorted(np.concatenate([split.train, split.eval]).tolist()) == list(range(len(comps)))
    assert not set(groups[split.train]) & set(groups[split.eval])
    for c in set(comps) - {"solo"}:
        assert c in set(comps[split.train]) and c in set(comps[split.eval])
        held = {g for g in groups[split.eval] if g.startswith(c + "_")}
        assert len(held) == GROUPS_PER_COMPOSITION // 2  # round(0.5 * 4)
    assert "solo" in set(comps[split.train]) and "solo" not in set(comps[split.eval])


def test_group_split_is_seeded_clipped_and_independent_of_other_compositions():
    _, comps, groups, _ = planted()
    a = dis.group_holdout_split(groups, comps, seed=1)
    b = dis.group_holdout_split(groups, comps, seed=1)
    assert np.array_equal(a.train, b.train) and np.array_equal(a.eval, b.eval)
    seeds = {tuple(dis.group_holdout_split(groups, comps, seed=s).eval) for s in range(6)}
    assert len(seeds) > 1  # the seed changes the draw
    # a tiny share still holds out one group per composition, a large one keeps one in training
    for share, held in ((0.01, 1), (0.99, GROUPS_PER_COMPOSITION - 1)):
        split = dis.group_holdout_split(groups, comps, holdout_share=share)
        assert len(np.unique(groups[split.eval])) == held * NUM_COMPOSITIONS
    # dropping other compositions does not change which groups of comp0 are held out
    only = comps == "comp0"
    alone = dis.group_holdout_split(groups[only], comps[only], seed=1)
    assert set(groups[only][alone.eval]) == {g for g in groups[a.eval] if g.startswith("comp0_")}


def test_group_split_rejects_a_group_spanning_two_compositions():
    with pytest.raises(ValueError, match="spans several compositions"):
        dis.group_holdout_split(np.array(["g", "g", "h"]), np.array(["a", "b", "a"]))


# ------------------------------------------------------------------------------------------------ ridge


@pytest.mark.parametrize("n, d", [(12, 30), (40, 5)])  # both branches: X X^T (n <= D) and X^T X (n > D)
def test_ridge_path_equals_direct_solve(n, d):
    rng = np.random.default_rng(0)
    x, y, x_eval = rng.standard_normal((n, d)) * 3 + 1, rng.standard_normal((n, 3)), rng.standard_normal((7, d))
    alphas = [0.01, 1.0]
    got = dis.ridge_predictions(x, y, x_eval, alphas)
    mean, std = x.mean(0), x.std(0)
    xs, xe = (x - mean) / std, (x_eval - mean) / std
    for k, alpha in enumerate(alphas):
        w = np.linalg.solve(xs.T @ xs + n * alpha * np.eye(d), xs.T @ (y - y.mean(0)))
        np.testing.assert_allclose(got[k], xe @ w + y.mean(0), rtol=1e-8, atol=1e-10)


def test_probe_features_keep_every_inner_product_when_reduced_to_the_training_span():
    rng = np.random.default_rng(2)
    x, x_eval = rng.standard_normal((15, 40)) * 2 + 1, rng.standard_normal((6, 40))
    reduced, reduced_eval = dis._probe_features(x, x_eval)
    assert reduced.shape == (15, 14)  # centred rows span n - 1 dimensions
    mean, std = x.mean(0), x.std(0)
    xs, xe = (x - mean) / std, (x_eval - mean) / std
    np.testing.assert_allclose(reduced @ reduced.T, xs @ xs.T, atol=1e-9)
    np.testing.assert_allclose(reduced_eval @ reduced.T, xe @ xs.T, atol=1e-9)


# ------------------------------------------------------------------------------------------------ probe


def test_probe_reads_the_piece_dimensions_and_not_the_style_dimensions():
    z, comps, groups, _ = planted()
    split = dis.group_holdout_split(groups, comps, seed=0)
    piece = dis.composition_probe(z[split.train, :6], comps[split.train], z[split.eval, :6], comps[split.eval],
                                  groups_train=groups[split.train])
    style = dis.composition_probe(z[split.train, 6:], comps[split.train], z[split.eval, 6:], comps[split.eval],
                                  groups_train=groups[split.train])
    assert piece.chance == style.chance == pytest.approx(1 / NUM_COMPOSITIONS)
    assert piece.majority == pytest.approx(1 / NUM_COMPOSITIONS)  # balanced held-out rows
    assert piece.num_eval == style.num_eval == NUM_COMPOSITIONS * 2 * PERFORMERS
    assert piece.accuracy >= 0.95
    assert style.accuracy < piece.chance + 0.12  # 120 held-out rows: chance +- 0.034 (sd)
    assert piece.alpha_source == style.alpha_source == "inner split"  # 2 training groups per composition
    assert piece.alpha in dis.PROBE_ALPHA_GRID and piece.converged


def test_probe_is_deterministic_and_uses_training_statistics():
    z, comps, groups, _ = planted(seed=1)
    split = dis.group_holdout_split(groups, comps, seed=2)
    args = (z[split.train], comps[split.train], z[split.eval], comps[split.eval])
    first = dis.composition_probe(*args, groups_train=groups[split.train])
    assert dis.composition_probe(*args, groups_train=groups[split.train]) == first
    # any per-feature affine change of all rows is undone by the training-statistics standardisation
    scale, shift = np.linspace(0.1, 50, z.shape[1]), np.linspace(-100, 100, z.shape[1])
    moved = z * scale + shift
    again = dis.composition_probe(moved[split.train], comps[split.train], moved[split.eval], comps[split.eval],
                                  groups_train=groups[split.train])
    assert again.accuracy == first.accuracy and again.alpha == first.alpha


def test_probe_fixed_alpha_when_no_inner_split_is_possible_and_majority_on_imbalanced_rows():
    rng = np.random.default_rng(0)
    centroids = np.array([[0.0, 0.0], [5.0, 0.0], [0.0, 5.0]])
    comp_train = np.repeat(["a", "b", "c"], 10)
    z_train = centroids[np.repeat([0, 1, 2], 10)] + rng.standard_normal((30, 2)) * 0.2
    comp_eval = np.array(["a"] * 6 + ["b"] * 3 + ["c"])
    z_eval = centroids[np.searchsorted(["a", "b", "c"], comp_eval)] + rng.standard_normal((10, 2)) * 0.2
    groups_train = np.char.add(comp_train, "_g0")  # one training group per composition: no inner split
    result = dis.composition_probe(z_train, comp_train, z_eval, comp_eval, groups_train=groups_train)
    assert result.alpha_source == "fixed" and result.alpha == dis.DEFAULT_PROBE_ALPHA
    assert result.accuracy == 1.0
    assert result.chance == pytest.approx(1 / 3) and result.majority == pytest.approx(0.6)
    given = dis.composition_probe(z_train, comp_train, z_eval, comp_eval, alpha=0.5)
    assert given.alpha_source == "given" and given.alpha == 0.5


def test_probe_standardises_held_out_rows_with_the_training_statistics():
    # two compositions apart on feature 0; the held-out rows are all of "b": standardised with their own statistics
    # they would be centred on 0 (between the classes) and about half would be called "a"
    rng = np.random.default_rng(1)
    comp_train = np.repeat(["a", "b"], 20)
    z_train = np.stack([np.where(comp_train == "a", -1.0, 1.0), np.zeros(40)], 1) + rng.standard_normal((40, 2)) * 0.3
    z_eval = np.array([[1.0, 0.0]]) + rng.standard_normal((12, 2)) * 0.3
    result = dis.composition_probe(z_train, comp_train, z_eval, np.array(["b"] * 12), alpha=1e-3)
    assert result.accuracy == 1.0 and result.majority == 1.0 and result.chance == 0.5


def test_probe_refuses_compositions_it_never_saw():
    z = np.zeros((4, 2))
    with pytest.raises(ValueError, match="cannot name them"):
        dis.composition_probe(z, np.array(["a", "a", "b", "b"]), z[:1], np.array(["c"]))


# ------------------------------------------------------------------------------------------------ variance share


def test_variance_share_pure_piece_is_one_and_pure_within_group_noise_is_zero():
    z, comps, groups, _ = planted()
    _, index = np.unique(groups, return_inverse=True)
    means = np.stack([z[index == g].mean(0) for g in range(index.max() + 1)])
    assert dis.between_group_variance_share(means[index], groups) == pytest.approx(1.0, abs=1e-12)
    within = z - means[index]
    assert dis.between_group_variance_share(within, groups) == pytest.approx(0.0, abs=1e-12)
    # by composition: the piece columns are mostly between compositions, the style columns are not
    assert dis.between_group_variance_share(z[:, :6], comps) > 0.9
    assert dis.between_group_variance_share(z[:, 6:], comps) < 0.05
    assert np.isnan(dis.between_group_variance_share(np.ones((4, 3)), np.array([0, 0, 1, 1])))


def test_variance_share_matches_the_formula_and_its_permutation_null():
    rng = np.random.default_rng(4)
    z = rng.standard_normal((6, 3))
    groups = np.array([0, 0, 1, 1, 2, 2])
    mean = z.mean(0)
    between = sum(2 * np.sum((z[groups == g].mean(0) - mean) ** 2) for g in range(3))
    assert dis.between_group_variance_share(z, groups) == pytest.approx(between / np.sum((z - mean) ** 2))
    # averaged over every permutation of the labels, the share is exactly (G - 1) / (N - 1)
    shares = [dis.between_group_variance_share(z, groups[list(p)]) for p in itertools.permutations(range(6))]
    assert np.mean(shares) == pytest.approx(dis.variance_share_null(groups)) == pytest.approx(2 / 5)


# ------------------------------------------------------------------------------------------------ silhouette


def direct_silhouette(z, labels, metric="euclidean"):
    if metric == "cosine":
        u = z / np.linalg.norm(z, axis=1, keepdims=True)
        d = 1.0 - u @ u.T
    else:
        d = np.linalg.norm(z[:, None, :] - z[None, :, :], axis=-1)
    s = []
    for i in range(len(z)):
        same = (labels == labels[i]) & (np.arange(len(z)) != i)
        if not same.any():
            s.append(0.0)
            continue
        a = d[i, same].mean()
        b = min(d[i, labels == c].mean() for c in set(labels) if c != labels[i])
        s.append((b - a) / max(a, b))
    return float(np.mean(s))


def test_silhouette_by_hand():
    z = np.array([[0.0], [1.0], [10.0], [11.0]])
    expected = (9.5 / 10.5 + 8.5 / 9.5) / 2  # every point: a = 1, b = 10.5 (outer) or 9.5 (inner)
    assert dis.silhouette(z, np.array(["a", "a", "b", "b"])) == pytest.approx(expected, abs=1e-12)


@pytest.mark.parametrize("metric", ["euclidean", "cosine"])
@pytest.mark.parametrize("block_rows", [None, 1, 7])
def test_silhouette_equals_the_direct_computation_in_any_tiling(metric, block_rows):
    rng = np.random.default_rng(5)
    labels = rng.integers(0, 5, 61)
    labels[0] = 9  # a singleton cluster: s = 0
    z = rng.standard_normal((61, 4)) + labels[:, None] * 0.7 + 100.0  # far from the origin: tests cancellation
    got = dis.silhouette(z, labels, metric=metric, block_rows=block_rows)
    assert got == pytest.approx(direct_silhouette(z, labels, metric), abs=1e-9)


def test_silhouette_high_for_the_piece_columns_low_for_the_style_columns():
    z, comps, _, _ = planted()
    assert dis.silhouette(z[:, :6], comps) > 0.5
    assert dis.silhouette(z[:, 6:], comps) < 0.05
    with pytest.raises(ValueError, match="2 distinct"):
        dis.silhouette(z, np.zeros(len(z)))


# ------------------------------------------------------------------------------------------------ factor probe


def test_factor_probe_recovers_a_linear_factor_and_not_noise():
    rng = np.random.default_rng(6)
    n = 400
    known, noise = rng.standard_normal(n), rng.standard_normal(n)
    z = np.concatenate([np.outer(known, rng.standard_normal(5)) + 0.05 * rng.standard_normal((n, 5)),
                        rng.standard_normal((n, 10))], axis=1)
    factors = np.stack([known, noise], axis=1)
    factors[:7] = np.nan  # e.g. deadpan renditions: dropped
    result = dis.factor_probe_r2(z[:300], factors[:300], z[300:], factors[300:])
    assert result.num_train == 293 and result.num_eval == 100
    assert result.r2[0] > 0.98
    assert abs(result.r2[1]) < 0.1
    assert result.alpha_source == "fixed"


def test_factor_probe_picks_a_strong_penalty_for_noise_in_many_dimensions():
    # one group per composition (the demo's probe split): the inner split holds out whole groups of any composition
    rng = np.random.default_rng(9)
    groups = np.repeat([f"g{i}" for i in range(12)], 10)
    z, noise = rng.standard_normal((120, 300)), rng.standard_normal((150, 1))
    z_eval = rng.standard_normal((30, 300))
    fixed = dis.factor_probe_r2(z, noise[:120], z_eval, noise[120:])
    picked = dis.factor_probe_r2(z, noise[:120], z_eval, noise[120:], groups_train=groups)
    assert picked.alpha_source == "inner split" and picked.alpha[0] >= 1.0
    assert fixed.r2[0] < -0.2 < picked.r2[0] < 0.1  # a weak fixed penalty overfits 300 noise columns


def test_factor_probe_on_the_planted_style_factors_with_an_inner_split():
    z, comps, groups, factors = planted()
    split = dis.group_holdout_split(groups, comps)
    style = dis.factor_probe_r2(z[split.train, 6:], factors[split.train], z[split.eval, 6:], factors[split.eval],
                                groups_train=groups[split.train])
    piece = dis.factor_probe_r2(z[split.train, :6], factors[split.train], z[split.eval, :6], factors[split.eval],
                                groups_train=groups[split.train])
    assert style.alpha_source == "inner split" and set(style.alpha) <= set(dis.RIDGE_ALPHA_GRID)
    assert min(style.r2) > 0.95
    assert max(piece.r2) < 0.15


# ------------------------------------------------------------------------------------------------ pictures


def test_pca_2d_recovers_the_principal_axes_with_a_fixed_orientation():
    rng = np.random.default_rng(7)
    rotation, _ = np.linalg.qr(rng.standard_normal((5, 5)))
    latent = rng.standard_normal((300, 5)) * np.array([5.0, 2.0, 0.1, 0.1, 0.1])
    z = latent @ rotation.T + 3.0
    coords = dis.pca_2d(z)
    assert coords.shape == (300, 2)
    _, s, vt = np.linalg.svd(z - z.mean(0), full_matrices=False)
    np.testing.assert_allclose(np.abs(coords), np.abs((z - z.mean(0)) @ vt[:2].T), atol=1e-8)
    np.testing.assert_allclose(coords.var(0), s[:2] ** 2 / 300, rtol=1e-8)
    np.testing.assert_allclose(dis.pca_2d(-z), -coords, atol=1e-8)  # orientation follows the data
    wide = dis.pca_2d(z[:4])  # N < D branch
    np.testing.assert_allclose(np.abs(wide), np.abs((z[:4] - z[:4].mean(0)) @ np.linalg.svd(
        z[:4] - z[:4].mean(0))[2][:2].T), atol=1e-8)
    one_dim = dis.pca_2d(np.arange(5.0)[:, None])
    assert np.all(one_dim[:, 1] == 0) and np.allclose(np.abs(one_dim[:, 0]), np.abs(np.arange(5.0) - 2))


def test_plot_embeddings_writes_a_png_and_says_pca_without_umap(tmp_path, monkeypatch):
    z, comps, _, _ = planted()
    monkeypatch.setitem(sys.modules, "umap", None)  # import umap -> ImportError
    path = tmp_path / "embeddings.png"
    method = dis.plot_embeddings(path, {"z_piece": z[:, :6], "z_style": z[:, 6:]}, comps)
    assert method == "pca"
    assert path.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    many = np.repeat([f"c{i}" for i in range(30)], 8)  # no legend above 12 compositions; a constant embedding
    assert dis.plot_embeddings(tmp_path / "many.png", {"z": z[:240], "flat": np.ones((240, 2))}, many) == "pca"
    assert (tmp_path / "many.png").stat().st_size > 0


def test_plot_embeddings_uses_umap_when_it_imports(tmp_path, monkeypatch):
    calls = []

    class FakeUMAP:
        def __init__(self, n_components, random_state):
            calls.append((n_components, random_state))

        def fit_transform(self, z):
            return z[:, :2]

    monkeypatch.setitem(sys.modules, "umap", types.SimpleNamespace(UMAP=FakeUMAP))
    z, comps, _, _ = planted()
    method = dis.plot_embeddings(tmp_path / "u.png", {"z": z}, comps, seed=3)
    assert method == "umap" and calls == [(2, 3)]
    assert (tmp_path / "u.png").stat().st_size > 0


# ------------------------------------------------------------------------------------------------ all at once


def test_disentanglement_metrics_is_json_ready_and_agrees_with_the_parts():
    z, comps, groups, factors = planted()
    factors = factors.copy()
    factors[::PERFORMERS] = np.nan  # one "deadpan" row per group
    named = {"z_piece": z[:, :6], "z_style": z[:, 6:], "input": z}
    metrics = dis.disentanglement_metrics(named, comps, groups, factors=factors, factor_names=["a", "b"], seed=0)
    text = json.dumps(metrics, allow_nan=False)
    assert json.loads(text) == metrics
    split = dis.group_holdout_split(groups, comps, seed=0)
    piece = metrics["embeddings"]["z_piece"]
    style = metrics["embeddings"]["z_style"]
    direct = dis.composition_probe(z[split.train, :6], comps[split.train], z[split.eval, :6], comps[split.eval],
                                   groups_train=groups[split.train])
    assert piece["composition_probe"]["accuracy"] == direct.accuracy
    assert piece["variance_share"]["group"] == pytest.approx(dis.between_group_variance_share(z[:, :6], groups))
    assert piece["silhouette"]["composition"] == pytest.approx(dis.silhouette(z[:, :6], comps))
    assert metrics["variance_share_null"]["group"] == pytest.approx(23 / 239)
    assert piece["composition_probe"]["accuracy"] > 0.95 > style["composition_probe"]["accuracy"]
    assert style["factor_r2"]["mean"] > 0.9 > piece["factor_r2"]["mean"]
    assert set(style["factor_r2"]["per_factor"]) == {"a", "b"}
    assert style["factor_r2"]["num_train"] == len(split.train) - len(split.train) // PERFORMERS  # deadpan dropped
    # a separate factor split (here: hold out performers 0-2 of every group instead of groups)
    performer = np.tile(np.arange(PERFORMERS), len(z) // PERFORMERS)
    by_performer = dis.ProbeSplit(train=np.flatnonzero(performer >= 3), eval=np.flatnonzero(performer < 3))
    other = dis.disentanglement_metrics({"z_style": z[:, 6:]}, comps, groups, factors=factors,
                                        factor_split=by_performer)
    assert other["embeddings"]["z_style"]["factor_r2"]["num_eval"] == 2 * len(z) // PERFORMERS
    assert other["embeddings"]["z_style"]["composition_probe"] == style["composition_probe"]

    lines = dis.disentanglement_table(metrics)
    assert all(line.startswith("|") for line in lines if line)
    assert [line.split(" | ")[0] for line in lines[2:5]] == ["| z_piece", "| z_style", "| input"]
    assert len(lines) == 2 + 3 + 1 + 2 + 3  # main table, blank line, per-factor table
    assert f"{direct.accuracy:.3f}" in lines[2]


def test_disentanglement_metrics_without_a_possible_probe_and_with_a_silhouette_subset():
    rng = np.random.default_rng(8)
    z = rng.standard_normal((30, 3))
    comps = np.array(["a"] * 30)  # one composition: no probe, no silhouette by composition
    groups = np.repeat(["g0", "g1", "g2"], 10)
    metrics = dis.disentanglement_metrics({"z": z}, comps, groups, silhouette_max_rows=12)
    entry = metrics["embeddings"]["z"]
    assert entry["composition_probe"] is None and entry["silhouette"]["composition"] is None
    assert metrics["silhouette_rows"] == 12 and entry["silhouette"]["group"] is not None
    assert "factor_r2" not in entry and metrics["factor_names"] is None
    assert "–" in dis.disentanglement_table(metrics)[2]
