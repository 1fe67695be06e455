"""Composition splits: folds cover every composition once, no group crosses train/test, error cases."""

import numpy as np
import pytest

from crescend_jax.data.percepiano import load_percepiano
from crescend_jax.data.splits import (
    SplitError,
    check_split,
    composition_folds,
    evaluation_splits,
    holdout_split,
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
