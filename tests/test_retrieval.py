"""Same-window retrieval on hand-built embeddings: hits, misses, ties, chance, and the within-composition scope."""

import numpy as np
import pytest

from crescend_jax.evaluate.retrieval import retrieval_top1


def test_hits_misses_and_chance_by_hand():
    # groups g (rows 0, 1) and h (rows 2, 3); row 4 alone (not a query, still a candidate)
    e = np.array([[1, 0], [0.9, 0.1], [0, 1], [0.8, 0.2], [0.1, 1.0]])
    groups = np.array(["g", "g", "h", "h", "x"])
    result = retrieval_top1(e, groups)
    # 0 -> 1 hit; 1 -> 0 hit; 2 -> 4 miss (row 4 is closer than row 3); 3 -> 1 miss
    assert result == {"top1": 0.5, "chance": pytest.approx(0.25), "num_queries": 4}


def test_a_tie_with_a_non_member_is_a_miss_and_scale_does_not_matter():
    e = np.array([[1.0, 0], [2.0, 0], [3.0, 0]])  # all the same direction
    assert retrieval_top1(e, np.array(["g", "g", "x"]))["top1"] == 0.0
    assert retrieval_top1(e[:2], np.array(["g", "g"]))["top1"] == 1.0


def test_the_composition_scope_only_searches_the_querys_piece():
    e = np.array([[1, 0], [0.8, 0.6], [0.95, 0.05], [0, 1]])
    groups = np.array(["a1", "a1", "b1", "a2"])
    compositions = np.array(["A", "A", "B", "A"])
    assert retrieval_top1(e, groups)["top1"] == 0.0  # row 0 finds row 2 of another piece; row 1 finds row 2 too
    within = retrieval_top1(e, groups, compositions, scope="composition")
    assert within["top1"] == 1.0 and within["chance"] == pytest.approx(0.5)  # 1 member among 2 candidates
    with pytest.raises(ValueError, match="needs the compositions"):
        retrieval_top1(e, groups, scope="composition")


def test_blocks_give_the_same_answer_and_bad_input_is_refused():
    rng = np.random.default_rng(0)
    groups = np.repeat(np.arange(30), 4)
    e = rng.normal(size=(120, 8)) + np.repeat(rng.normal(size=(30, 8)), 4, axis=0)
    assert retrieval_top1(e, groups, block=7) == retrieval_top1(e, groups, block=1000)
    result = retrieval_top1(e, groups)
    assert result["top1"] > 10 * result["chance"]  # shared group offsets: far above 3 members among 119
    with pytest.raises(ValueError, match="non-finite"):
        retrieval_top1(np.array([[np.nan, 1.0], [1.0, 0.0]]), np.array(["g", "g"]))
    assert np.isnan(retrieval_top1(e[:2], np.array(["g", "h"]))["top1"])
