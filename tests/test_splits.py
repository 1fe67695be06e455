"""Composition splits: folds cover every composition once, no group crosses train/test, error cases; work-level
units from the table's works column."""

import numpy as np
import pytest

from crescend_jax.data.percepiano import load_percepiano
from crescend_jax.data.splits import (
    SplitError,
    check_split,
    composition_folds,
    evaluation_splits,
    heldout_units,
    holdout_split,
    kept_rows,
    split_units,
)


def toy_rows(sizes: dict[str, int], performers_per_group: int = 3):
    """Rows for compositions with ``sizes[c]`` groups of ``performers_per_group`` performers each."""
    compositions, groups, performers = [], [], []
    for comp, num_groups in sizes.items():
        for g in range(num_groups):
            for p in range(performers_per_group):
                compositions.append(comp)
                groups.append(f"{comp}_{g}")
                performers.append(str(p))
    return np.array(compositions), np.array(groups), np.array(performers)


def assert_partition(compositions, masks):
    cover = np.sum(masks, axis=0)
    assert (cover == 1).all(), "every row must be tested exactly once"
    for mask in masks:
        assert mask.any()
        assert not set(compositions[mask]) & set(compositions[~mask])


def test_leave_one_composition_out():
    compositions, groups, performers = toy_rows({"b": 2, "a": 3, "c.1_x": 1})
    masks = composition_folds(compositions, 0, seed=0)
    assert [sorted(set(compositions[m])) for m in masks] == [["a"], ["b"], ["c.1_x"]]
    assert_partition(compositions, masks)
    for i, mask in enumerate(masks):
        check_split(groups, performers, mask, compositions=compositions, name=f"fold {i}")


@pytest.mark.parametrize("seed", [0, 1, 7])
def test_k_folds_balanced_and_deterministic(seed):
    sizes = {f"c{i}": n for i, n in enumerate([9, 1, 4, 4, 3, 3, 2, 2, 1, 1])}
    compositions, groups, performers = toy_rows(sizes)
    masks = composition_folds(compositions, 3, seed=seed)
    assert len(masks) == 3
    assert_partition(compositions, masks)
    rows = sorted(int(m.sum()) for m in masks)
    assert rows[-1] - rows[0] <= 3 * 3  # largest-first greedy stays within 3 groups of a perfect 10/10/10 here
    again = composition_folds(compositions, 3, seed=seed)
    assert all((a == b).all() for a, b in zip(masks, again))


def test_fold_count_errors():
    compositions, _, _ = toy_rows({"a": 1, "b": 1})
    with pytest.raises(SplitError, match="only 2 compositions"):
        composition_folds(compositions, 3, seed=0)
    with pytest.raises(SplitError, match="use 0 .* or at least 2"):
        composition_folds(compositions, 1, seed=0)


def test_holdout_split():
    compositions, groups, performers = toy_rows({"a": 2, "b": 2, "c": 1})
    mask = holdout_split(compositions, ("b", "c"))
    assert set(compositions[mask]) == {"b", "c"} and set(compositions[~mask]) == {"a"}
    check_split(groups, performers, mask, compositions=compositions)
    with pytest.raises(SplitError, match=r"\['zz'\] are not in the data; known compositions: a, b, c"):
        holdout_split(compositions, ("a", "zz"))
    with pytest.raises(SplitError, match="empty"):
        holdout_split(compositions, ())


def test_evaluation_splits_follows_the_config_fields():
    compositions, _, _ = toy_rows({"a": 2, "b": 2, "c": 1})
    assert len(evaluation_splits(compositions, 0, (), 0)) == 3
    assert len(evaluation_splits(compositions, 2, (), 0)) == 2
    (only,) = evaluation_splits(compositions, 0, ("a",), 0)
    assert set(compositions[only]) == {"a"}


def test_check_split_rejects_crossing_group():
    compositions, groups, performers = toy_rows({"a": 2, "b": 2})
    mask = compositions == "a"
    mask[np.flatnonzero(compositions == "b")[0]] = True  # one performance of a 'b' group moves to test
    with pytest.raises(SplitError, match="fold 3: 1 group.* both train and test.*'b_0'"):
        check_split(groups, performers, mask, name="fold 3")


def test_check_split_rejects_crossing_composition():
    compositions, groups, performers = toy_rows({"a": 2, "b": 2})
    mask = groups == "a_0"
    with pytest.raises(SplitError, match="composition.*'a'"):
        check_split(groups, performers, mask, compositions=compositions)


def test_check_split_needs_rankable_groups_on_both_sides():
    compositions, groups, performers = toy_rows({"a": 2, "b": 2})
    single = compositions == "b"
    performers = np.where(single, "0", performers)  # b's groups hold one performer (renders of the same take)
    with pytest.raises(SplitError, match="the test side .* no group with >= 2 performers"):
        check_split(groups, performers, single)
    with pytest.raises(SplitError, match="the train side"):
        check_split(groups, performers, ~single)
    with pytest.raises(SplitError, match="the test side \\(0 rows\\)"):
        check_split(groups, performers, np.zeros(len(groups), bool))
    with pytest.raises(SplitError, match="equal lengths"):
        check_split(groups, performers[:-1], single)


def test_shared_corpus_folds(percepiano_root):
    with pytest.warns(UserWarning):
        corpus = load_percepiano(percepiano_root)
    compositions = np.array([s.composition for s in corpus.segments])
    groups = np.array([s.group for s in corpus.segments])
    performers = np.array([s.performer for s in corpus.segments])
    for num_folds in (0, 2):
        masks = composition_folds(compositions, num_folds, seed=0)
        assert_partition(compositions, masks)
        for i, mask in enumerate(masks):
            check_split(groups, performers, mask, compositions=compositions, name=f"fold {i}")


def asap_like_rows():
    """Rows of four ASAP-like score folders: 17-1 and 17-1_no_repeat are one work, Bach has no shared work ("")."""
    compositions, groups, performers = toy_rows({"Beethoven/17-1": 2, "Beethoven/17-1_no_repeat": 1,
                                                 "Bach/bwv_848": 2, "Bach/bwv_858": 1})
    works = np.array(["Beethoven/Sonata_17-1" if c.startswith("Beethoven") else "" for c in compositions])
    return compositions, groups, performers, works


def test_works_drive_work_level_units_and_folds():
    compositions, groups, performers, works = asap_like_rows()
    units = split_units(compositions, "work", "asap", works)
    assert sorted(set(units)) == ["Bach/bwv_848", "Bach/bwv_858", "Beethoven/Sonata_17-1"]  # "" = the composition
    np.testing.assert_array_equal(split_units(compositions, "composition", "asap", works), compositions)
    np.testing.assert_array_equal(split_units(compositions, "work", "asap"), compositions)  # no works: its own
    masks = evaluation_splits(compositions, 0, (), seed=0, units=units)
    assert len(masks) == 3
    for i, mask in enumerate(masks):  # the no-repeat twin is never on the other side of its work
        check_split(groups, performers, mask, compositions=units, name=f"fold {i}")
        assert len(set(works[mask & (works != "")])) <= 1 and (mask[works != ""].all() or not mask[works != ""].any())
    with pytest.raises(SplitError, match="works has 2 rows"):
        split_units(compositions, "work", "asap", works[:2])


def test_an_empty_work_falls_back_to_the_percepiano_rule():
    compositions = np.array(["Beethoven_WoO80_var1", "Beethoven_WoO80_var2", "Schubert_D960_mv3"])
    expected = ["Beethoven_WoO80", "Beethoven_WoO80", "Schubert_D960"]
    assert split_units(compositions, "work", "percepiano", np.array(["", "", ""])).tolist() == expected
    assert split_units(compositions, "work", "percepiano").tolist() == expected


def test_kept_rows_leaves_out_a_whole_work_named_by_the_works_column():
    compositions, _, _, works = asap_like_rows()
    data = {"exclude_compositions": ("Beethoven/Sonata_17-1",), "split_level": "work"}
    kept = kept_rows(compositions, data, "asap", works)
    np.testing.assert_array_equal(kept, works == "")
    with pytest.raises(SplitError, match="not in the data"):
        kept_rows(compositions, data, "asap")  # without the works column that work is unknown
    data = {"exclude_compositions": ("Bach/bwv_858",), "split_level": "work"}
    np.testing.assert_array_equal(kept_rows(compositions, data, "asap", works), compositions != "Bach/bwv_858")


def test_the_trainer_folds_by_the_tables_works():
    import ml_collections

    from crescend_jax.data.table import EmbeddingTable
    from crescend_jax.train.trainer import fold_masks

    compositions, groups, performers, works = asap_like_rows()
    n = len(compositions)
    table = EmbeddingTable(
        keys=np.array([f"k{i}" for i in range(n)]), compositions=compositions, pieces=compositions,
        performers=performers, groups=groups, renders=np.array(["r"] * n), label_mean=np.zeros((n, 19), np.float32),
        label_std=np.zeros((n, 19), np.float32), label_truth=np.zeros((n, 19), np.float32),
        ratings=[np.zeros((0, 19), np.float32)] * n, pooled=np.zeros((n, 2), np.float32), frames=None, encoder="e",
        frame_rate=0.0, works=works)
    config = ml_collections.ConfigDict({"corpus": "asap", "data": {"num_folds": 0, "split_level": "work"}})
    masks, units = fold_masks(table, config)
    assert len(masks) == 3 and sorted(set(units)) == ["Bach/bwv_848", "Bach/bwv_858", "Beethoven/Sonata_17-1"]
    config.data.split_level = "composition"
    assert len(fold_masks(table, config)[0]) == 4


def test_a_held_out_fraction_of_whole_units():
    compositions, groups, performers = toy_rows({f"c{i}": 1 + i % 3 for i in range(10)})
    (mask,) = evaluation_splits(compositions, 5, (), seed=3, test_fraction=0.25)
    assert 0.15 <= mask.mean() <= 0.35
    assert not set(compositions[mask]) & set(compositions[~mask])
    np.testing.assert_array_equal(mask, heldout_units(compositions, 0.25, 3))
    (named,) = evaluation_splits(compositions, 5, ("c1",), seed=3, test_fraction=0.25)  # names come first
    assert set(compositions[named]) == {"c1"}
    with pytest.raises(SplitError, match=r"test_fraction=1.5 must be in \(0, 1\)"):
        heldout_units(compositions, 1.5, 0)
    with pytest.raises(SplitError, match="needs at least 10 split units; there are 2"):
        heldout_units(np.array(["a", "a", "b"]), 0.1, 0)
