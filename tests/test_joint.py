"""Joint tables of two corpora (PercePiano-like ratings + ASAP-like derived labels, one encoder): rows and columns
follow their corpus, names never collide, each corpus is split by its own rule and ASAP's held-out works are held
out in every fold; work-level held-out ASAP works on the real metadata."""

import dataclasses

import ml_collections
import numpy as np
import pytest

from crescend_jax.data import asap
from crescend_jax.data.groups import dense_ids
from crescend_jax.data.joint import (JointTableError, joint_fold_masks, joint_table, joint_validation_mask,
                                     corpus_config, default_joint_data_config)
from crescend_jax.data.performance_labels import DERIVED_LABELS
from crescend_jax.data.splits import SplitError, evaluation_splits, heldout_units, split_units
from crescend_jax.data.table import EmbeddingTable
from crescend_jax.data.targets import with_targets


def make(keys, compositions, groups, *, rated, works=None, encoder="features", width=3):
    n = len(keys)
    derived = None
    if not rated:
        derived = np.arange(n * len(DERIVED_LABELS), dtype=np.float32).reshape(n, -1) % 7
    return EmbeddingTable(
        keys=np.array(keys), compositions=np.array(compositions), pieces=np.array(compositions),
        performers=np.array([k.rsplit("_", 1)[-1] for k in keys]), groups=np.array(groups),
        renders=np.array(["r"] * n),
        label_mean=np.tile(np.linspace(0, 1, n, dtype=np.float32)[:, None], (1, 19)) if rated
        else np.full((n, 19), np.nan, np.float32),
        label_std=np.full((n, 19), 0.1 if rated else np.nan, np.float32),
        label_truth=np.full((n, 19), np.nan, np.float32),
        ratings=[np.full((2 if rated else 0, 19), 0.5, np.float32) for _ in range(n)],
        pooled=np.arange(n * width, dtype=np.float32).reshape(n, width), frames=None, encoder=encoder,
        frame_rate=0.0, works=None if works is None else np.array(works), derived=derived,
        derived_names=() if rated else DERIVED_LABELS, in_percepiano=None if rated else np.zeros(n, bool))


def percepiano_like():
    """3 compositions x 1 group x 3 performers (C2 and C3 two variations of one work)."""
    keys, compositions, groups = [], [], []
    for composition in ("Schubert_D1_mv1", "Beethoven_WoO8_var1", "Beethoven_WoO8_var2"):
        for performer in range(3):
            keys.append(f"{composition}_8bars_{performer}_1")
            compositions.append(composition)
            groups.append(f"{composition}_8bars_1")
    return make(keys, compositions, groups, rated=True)


def asap_like():
    """4 score folders (17-1 and its no-repeat twin are one work) x 2 windows x 2 performances."""
    keys, compositions, groups, works = [], [], [], []
    for folder, work in (("Beethoven/17-1", "Beethoven/Sonata_17-1"), ("Beethoven/17-1_no_repeat",
                          "Beethoven/Sonata_17-1"), ("Bach/bwv_848", "Bach/Fugue_848"), ("Chopin/op_10_1", "Chopin/E1")):
        for window in range(2):
            for performer in ("P1", "P2"):
                group = f"{folder}__4bars__w{window:03d}"
                keys.append(f"{group}__{performer}")
                compositions.append(folder)
                groups.append(group)
                works.append(work)
    return make(keys, compositions, groups, rated=False, works=works)


def joint_data(**asap_fields):
    percepiano = ml_collections.ConfigDict({"num_folds": 0, "test_compositions": (), "fold_seed": 0,
                                            "split_level": "composition", "exclude_compositions": ()})
    section = ml_collections.ConfigDict({"num_folds": 0, "test_compositions": ("Beethoven/Sonata_17-1",),
                                         "fold_seed": 0, "split_level": "work", "exclude_compositions": (),
                                         "test_fraction": 0.0})
    section.update(asap_fields)
    return default_joint_data_config({"percepiano": percepiano, "asap": section})


def test_joint_table_keeps_each_corpus_columns_on_its_rows():
    pp, aa = percepiano_like(), asap_like()
    joined = joint_table({"percepiano": pp, "asap": aa})
    assert len(joined) == len(pp) + len(aa)
    np.testing.assert_array_equal(joined.corpora, ["percepiano"] * len(pp) + ["asap"] * len(aa))
    np.testing.assert_array_equal(joined.keys[:len(pp)], pp.keys)  # names as each corpus wrote them
    assert np.isnan(joined.derived[:len(pp)]).all() and np.isfinite(joined.derived[len(pp):]).all()
    assert np.isnan(joined.label_mean[len(pp):]).all()
    targets = with_targets(joined, joint_data())
    assert targets.label_mean.shape == (len(joined), 19 + len(DERIVED_LABELS))
    ratings, derived = targets.label_mean[:, :19], targets.label_mean[:, 19:]
    assert np.isfinite(ratings[:len(pp)]).all() and np.isnan(ratings[len(pp):]).all()
    assert np.isnan(derived[:len(pp)]).all() and np.isfinite(derived[len(pp):]).any()
    picked = targets.subset(np.array([len(pp) + 1, 0]))
    np.testing.assert_array_equal(picked.corpora, ["asap", "percepiano"])
    # dense ids are computed from the names: no id is shared by rows of two corpora
    for column in ("groups", "compositions", "pieces"):
        ids = dense_ids(getattr(joined, column))
        assert not set(ids[:len(pp)]) & set(ids[len(pp):])


def test_corpora_that_share_a_name_or_may_leak_or_differ_in_encoder_are_refused():
    pp, aa = percepiano_like(), asap_like()
    clash = dataclasses.replace(aa, groups=np.where(aa.groups == aa.groups[0], pp.groups[0], aa.groups))
    with pytest.raises(JointTableError, match="share the group 'Schubert_D1_mv1_8bars_1'"):
        joint_table({"percepiano": pp, "asap": clash})
    flagged = dataclasses.replace(aa, in_percepiano=aa.compositions == "Bach/bwv_848")
    with pytest.raises(JointTableError, match="may also be PercePiano compositions .*'Bach/bwv_848'"):
        joint_table({"percepiano": pp, "asap": flagged})
    with pytest.raises(JointTableError, match="cannot join .*encoders"):
        joint_table({"percepiano": pp, "asap": dataclasses.replace(aa, encoder="midi")})
    with pytest.raises(JointTableError, match="at least two corpora"):
        joint_table({"percepiano": pp})


def test_each_corpus_is_split_by_its_own_rule_and_asap_held_out_works_are_never_trained_on():
    pp, aa = percepiano_like(), asap_like()
    joined = with_targets(joint_table({"percepiano": pp, "asap": aa}), joint_data())
    data = joint_data()
    masks, units = joint_fold_masks(joined, data)
    alone = evaluation_splits(pp.compositions, 0, (), 0, split_units(pp.compositions, "composition", "percepiano"))
    assert len(masks) == len(alone) == 3
    held_work = joined.works == "Beethoven/Sonata_17-1"
    assert held_work.sum() == 8  # both folders of the work
    for mask, own in zip(masks, alone):
        np.testing.assert_array_equal(mask[:len(pp)], own)  # the PercePiano-only folds, row for row (paired)
        np.testing.assert_array_equal(mask[len(pp):], held_work[len(pp):])  # held out in every fold
    assert set(units[len(pp):]) == {"asap:Beethoven/Sonata_17-1", "asap:Bach/Fugue_848", "asap:Chopin/E1"}
    assert set(units[:len(pp)]) == {f"percepiano:{c}" for c in set(pp.compositions)}
    data.percepiano.split_level = "work"  # the two WoO8 variations stay together: 2 folds
    assert len(joint_fold_masks(joined, data)[0]) == 2


def test_fold_counts_must_agree_and_validation_draws_inside_each_corpus():
    joined = joint_table({"percepiano": percepiano_like(), "asap": asap_like()})
    with pytest.raises(SplitError, match=r"one held-out set or the same number of folds; got \{'percepiano': 3, "
                                         r"'asap': 2\}"):
        joint_fold_masks(joined, joint_data(test_compositions=(), num_folds=2))
    masks, _ = joint_fold_masks(joined, joint_data(test_compositions=(), num_folds=0))  # 3 works: 3 folds each
    assert len(masks) == 3
    units = np.array([f"{c}:{u}" for c, u in zip(joined.corpora, joined.compositions)])
    val = joint_validation_mask(units, joined.corpora, 0.34, seed=0)
    assert val[joined.corpora == "percepiano"].any() and val[joined.corpora == "asap"].any()
    for corpus in ("percepiano", "asap"):  # whole units, never all of a corpus
        rows = joined.corpora == corpus
        assert not val[rows].all()
        assert not set(units[rows & val]) & set(units[rows & ~val])


def test_corpus_config_is_the_joint_config_seen_from_one_corpus():
    config = ml_collections.ConfigDict({"corpus": "joint", "data": joint_data(), "encoder": {"name": "features"}})
    section = corpus_config(config, "asap")
    assert section.corpus == "asap" and section.data.split_level == "work" and section.encoder.name == "features"
    assert config.corpus == "joint"  # a copy


@pytest.mark.data
def test_asap_held_out_works_on_the_real_metadata(asap_root):
    works = asap.folder_works(asap.read_metadata(asap_root))
    frame = asap.read_metadata(asap_root)
    folders = frame["folder"].to_numpy().astype(str)  # one row per performance
    row_works = np.array([works[f] for f in folders])
    units = split_units(folders, "work", "asap", row_works)
    twins = {w for w in set(row_works) if len(set(folders[row_works == w])) > 1}
    assert "Beethoven/Piano_Sonatas_17-1" in twins  # 17-1 and 17-1_no_repeat
    for seed in range(5):
        held = heldout_units(units, 0.2, seed)
        assert 0.15 <= held.mean() <= 0.25
        assert not set(row_works[held]) & set(row_works[~held])  # no work on both sides, twins included
        np.testing.assert_array_equal(held, heldout_units(units, 0.2, seed))
    assert not np.array_equal(heldout_units(units, 0.2, 0), heldout_units(units, 0.2, 1))
    # by folder, some draw would cut a work in two: the work-level rule is what keeps them whole
    cut = any(set(row_works[m]) & set(row_works[~m]) for m in (heldout_units(folders, 0.2, s) for s in range(20)))
    assert cut
    folds = evaluation_splits(folders, 5, (), 0, units)
    assert (np.sum(folds, axis=0) == 1).all()
    for mask in folds:
        assert not set(row_works[mask]) & set(row_works[~mask])


def test_run_table_and_folds_of_a_joint_and_a_single_corpus_config():
    from crescend_jax.data.run_table import run_folds, run_table, run_validation_mask

    joined = joint_table({"percepiano": percepiano_like(), "asap": asap_like()})
    config = ml_collections.ConfigDict({"corpus": "joint", "data": joint_data()})
    config.data.asap.exclude_compositions = ("Chopin/E1",)  # a work, by ASAP's own split level
    config.data.percepiano.exclude_compositions = ("Schubert_D1_mv1",)
    table = run_table(config, joined)
    assert set(table.compositions) == {"Beethoven_WoO8_var1", "Beethoven_WoO8_var2", "Beethoven/17-1",
                                       "Beethoven/17-1_no_repeat", "Bach/bwv_848"}
    assert table.label_names[19:] == DERIVED_LABELS
    masks, units = run_folds(table, config)
    assert len(masks) == 2 and all(m[table.works == "Beethoven/Sonata_17-1"].all() for m in masks)
    train = ~masks[0]  # one PercePiano composition and one ASAP work left to fit: no validation split
    assert run_validation_mask(table.subset(train), units[train], 0.5, seed=0) is None
    assert run_validation_mask(table, units, 0.5, seed=0)[table.corpora == "asap"].any()
    # one corpus: ASAP alone ranking its derived targets, a held-out share of whole works
    single = ml_collections.ConfigDict({"corpus": "asap", "data": joint_data().asap})
    single.data.update({"test_compositions": (), "test_fraction": 0.3, "targets": "derived",
                        "target_transform": "pooled", "derived_labels": ()})
    alone = run_table(single, asap_like())
    assert alone.label_names == DERIVED_LABELS and alone.corpora is None
    (held,), units = run_folds(alone, single)
    assert held.any() and not held.all() and not set(alone.works[held]) & set(alone.works[~held])
    with pytest.raises(JointTableError, match="needs a joint table"):
        run_table(config, asap_like())
