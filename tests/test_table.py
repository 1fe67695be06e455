"""EmbeddingTable: concat keeps where rows came from; fuse_tables pairs encoders' rows; unrated keys are counted;
performer factors, works, derived labels and PercePiano flags stay aligned with their rows through subset, concat
and fusion."""

import dataclasses

import numpy as np
import pytest

from crescend_jax.data.table import SYMBOLIC_RENDER, EmbeddingTable, TableFusionError, fuse_tables


def make_table(keys, renders, width, encoder, offset=0.0, sources=("s",), roots=("/data",), ratings=None):
    n = len(keys)
    index = np.array([int(k[1:]) for k in keys], np.float32)
    render_number = np.array([0.0 if r in ("rA", SYMBOLIC_RENDER) else 100.0 for r in renders], np.float32)
    return EmbeddingTable(
        keys=np.array(keys), compositions=np.array(["C"] * n), pieces=np.array(["C_8bars"] * n),
        performers=np.array([k[1:] for k in keys]), groups=np.array(["C_8bars_1"] * n), renders=np.array(renders),
        label_mean=np.repeat(index[:, None] / 10, 19, axis=1), label_std=np.full((n, 19), 0.1, np.float32),
        label_truth=np.full((n, 19), np.nan, np.float32),
        ratings=ratings if ratings is not None else [np.full((2, 19), 0.5, np.float32)] * n,
        pooled=np.repeat((offset + index + render_number)[:, None], width, axis=1), frames=None, encoder=encoder,
        frame_rate=10.0, sources=tuple(sources), data_roots=tuple(roots))


def test_audio_tables_pair_by_key_and_render_whatever_their_order():
    a = make_table(["k0", "k1", "k0", "k1"], ["rA", "rA", "rB", "rB"], 3, "audio-a", sources=("a1", "a2"))
    b = make_table(["k1", "k0", "k1", "k0"], ["rB", "rB", "rA", "rA"], 2, "audio-b", offset=0.5, sources=("b1", "b2"),
                   roots=("/data", "/copy"))
    fused = fuse_tables([a, b])
    assert fused.encoder == "fusion(audio-a+audio-b)" and fused.frames is None and fused.frame_rate == 0.0
    np.testing.assert_array_equal(fused.keys, a.keys)  # rows and order of the first audio table
    np.testing.assert_array_equal(fused.pooled[:, :3], a.pooled)
    np.testing.assert_array_equal(fused.pooled[:, 3:], a.pooled[:, :2] + 0.5)  # the partner of the same render
    assert fused.sources == ("a1", "a2", "b1", "b2") and fused.data_roots == ("/data", "/copy")


def test_a_symbolic_table_is_repeated_for_every_render():
    audio = make_table(["k0", "k1", "k2", "k0", "k1", "k2"], ["rA"] * 3 + ["rB"] * 3, 2, "audio")
    symbolic = make_table(["k2", "k0", "k1"], [SYMBOLIC_RENDER] * 3, 1, "midi", offset=1000.0)
    for order in ([symbolic, audio], [audio, symbolic]):
        fused = fuse_tables(order)
        np.testing.assert_array_equal(fused.keys, audio.keys)
        np.testing.assert_array_equal(fused.renders, audio.renders)
        symbolic_column = fused.pooled[:, 0] if order[0] is symbolic else fused.pooled[:, 2]
        np.testing.assert_array_equal(symbolic_column, [1000, 1001, 1002, 1000, 1001, 1002])


def test_symbolic_tables_alone_give_one_row_per_key():
    a = make_table(["k0", "k1"], [SYMBOLIC_RENDER] * 2, 1, "midi-a")
    b = make_table(["k1", "k0"], [SYMBOLIC_RENDER] * 2, 1, "midi-b", offset=0.5)
    fused = fuse_tables([a, b])
    np.testing.assert_array_equal(fused.pooled, [[0, 0.5], [1, 1.5]])


def test_audio_tables_of_other_renders_do_not_fuse():
    a = make_table(["k0", "k0"], ["rA", "rB"], 1, "audio-a")
    b = make_table(["k0"], ["rA"], 1, "audio-b")
    with pytest.raises(TableFusionError, match=r"cannot fuse 'audio-b' \(renders \['rA'\]\) with 'audio-a' "
                                               r"\(renders \['rA', 'rB'\]\).*same config.render settings"):
        fuse_tables([a, b])


def test_missing_and_extra_rows_are_named():
    a = make_table(["k0", "k1", "k2", "k3", "k4"], ["rA"] * 5, 1, "audio")
    short = make_table(["k0"], [SYMBOLIC_RENDER], 1, "midi")
    with pytest.raises(TableFusionError, match=r"'midi' has no row for 4 \(k1, k2, k3, \.\.\.\) of 'audio'"):
        fuse_tables([a, short])
    long = make_table(["k0", "k1", "k2", "k3", "k4", "k9"], [SYMBOLIC_RENDER] * 6, 1, "midi")
    with pytest.raises(TableFusionError, match=r"'audio' has no row for 1 \(k9\) of 'midi'"):
        fuse_tables([a, long])
    twice = make_table(["k0", "k0"], [SYMBOLIC_RENDER] * 2, 1, "midi")
    with pytest.raises(TableFusionError, match="holds some key twice"):
        fuse_tables([make_table(["k0"], ["rA"], 1, "audio"), twice])


def test_tables_that_disagree_on_labels_do_not_fuse():
    a = make_table(["k0", "k1"], ["rA"] * 2, 1, "audio")
    b = make_table(["k0", "k1"], [SYMBOLIC_RENDER] * 2, 1, "midi")
    b.label_mean[1, 3] += 0.01
    with pytest.raises(TableFusionError, match="disagree on the labels or groups .*different corpus content"):
        fuse_tables([a, b])
    with pytest.raises(TableFusionError, match="at least one table"):
        fuse_tables([])


def test_concat_keeps_sources_and_roots_once():
    a = make_table(["k0"], ["rA"], 1, "enc", sources=("s1",), roots=("/data",))
    b = make_table(["k0"], ["rB"], 1, "enc", sources=("s2",), roots=("/data",))
    both = EmbeddingTable.concat([a, b])
    assert both.sources == ("s1", "s2") and both.data_roots == ("/data",)
    assert both.subset(np.array([1])).sources == ("s1", "s2")


def test_unrated_keys_counts_each_key_once():
    ratings = [np.zeros((0, 19), np.float32), np.full((2, 19), np.nan, np.float32), np.full((1, 19), 0.5, np.float32)]
    table = make_table(["k0", "k1", "k2"], ["rA"] * 3, 1, "enc", ratings=ratings)
    assert table.unrated_keys() == ["k0", "k1"]
    twice = EmbeddingTable.concat([table, make_table(["k0", "k1", "k2"], ["rB"] * 3, 1, "enc", ratings=ratings)])
    assert twice.unrated_keys() == ["k0", "k1"]


NAMES = ("timing", "skill")


def with_factors(table: EmbeddingTable, offset: float = 0.0) -> EmbeddingTable:
    """``table`` with factors [k, -k] + offset for key ``k<k>`` (a row of key ``k0`` is a deadpan one: NaN)."""
    index = np.array([int(k[1:]) for k in table.keys], np.float32)
    factors = np.stack([index + offset, -index - offset], axis=1)
    factors[index == 0] = np.nan
    return dataclasses.replace(table, performer_factors=factors, factor_names=NAMES)


def test_subset_and_concat_keep_factors_aligned_with_their_rows():
    a = with_factors(make_table(["k0", "k1", "k2"], ["rA"] * 3, 1, "enc"))
    b = with_factors(make_table(["k3", "k4"], ["rB"] * 2, 1, "enc"))
    both = EmbeddingTable.concat([a, b])
    assert both.factor_names == NAMES and both.performer_factors.shape == (5, 2)
    np.testing.assert_array_equal(both.performer_factors, [[np.nan, np.nan], [1, -1], [2, -2], [3, -3], [4, -4]])
    picked = both.subset(np.array([4, 1]))
    np.testing.assert_array_equal(picked.keys, ["k4", "k1"])
    np.testing.assert_array_equal(picked.performer_factors, [[4, -4], [1, -1]])
    masked = both.subset(both.keys != "k2")
    np.testing.assert_array_equal(masked.performer_factors[:, 0], [np.nan, 1, 3, 4])


def test_concat_with_a_table_without_factors_gives_its_rows_nan():
    a = with_factors(make_table(["k1"], ["rA"], 1, "enc"))
    plain = make_table(["k2", "k3"], ["rA"] * 2, 1, "enc")
    both = EmbeddingTable.concat([plain, a])
    assert both.factor_names == NAMES
    np.testing.assert_array_equal(both.performer_factors, [[np.nan, np.nan], [np.nan, np.nan], [1, -1]])
    none = EmbeddingTable.concat([plain, plain])
    assert none.performer_factors is None and none.factor_names == ()
    renamed = dataclasses.replace(a, factor_names=("pace", "skill"))
    with pytest.raises(ValueError, match="performer factors differ"):
        EmbeddingTable.concat([a, renamed])


def test_factors_must_match_the_rows_and_names():
    table = make_table(["k1", "k2"], ["rA"] * 2, 1, "enc")
    with pytest.raises(ValueError, match=r"performer_factors must be \[2, 2\]"):
        dataclasses.replace(table, performer_factors=np.zeros((3, 2), np.float32), factor_names=NAMES)
    with pytest.raises(ValueError, match=r"performer_factors must be \[2, 0\]"):
        dataclasses.replace(table, performer_factors=np.zeros((2, 2), np.float32))


def test_fusion_keeps_factors_on_the_fused_rows_and_checks_they_agree():
    audio = with_factors(make_table(["k0", "k1", "k2", "k0", "k1", "k2"], ["rA"] * 3 + ["rB"] * 3, 2, "audio"))
    symbolic = with_factors(make_table(["k2", "k0", "k1"], [SYMBOLIC_RENDER] * 3, 1, "midi"))
    for order in ([symbolic, audio], [audio, symbolic]):
        fused = fuse_tables(order)
        assert fused.factor_names == NAMES
        np.testing.assert_array_equal(fused.performer_factors[:, 0], [np.nan, 1, 2, np.nan, 1, 2])
    plain_symbolic = make_table(["k2", "k0", "k1"], [SYMBOLIC_RENDER] * 3, 1, "midi")
    fused = fuse_tables([plain_symbolic, audio])  # the factors come from the table that has them
    np.testing.assert_array_equal(fused.performer_factors[:, 1], [np.nan, -1, -2, np.nan, -1, -2])
    assert fuse_tables([plain_symbolic, make_table(["k0", "k1", "k2"], ["rA"] * 3, 1, "a")]).performer_factors is None
    with pytest.raises(TableFusionError, match="disagree on the performer factors"):
        fuse_tables([audio, with_factors(symbolic, offset=0.5)])


def with_corpus_columns(table: EmbeddingTable, work: str = "W") -> EmbeddingTable:
    """``table`` with works (``work`` for even keys, "" for odd), derived labels [k, 2k] (NaN for k0) and
    in_percepiano (key k1 only)."""
    index = np.array([int(k[1:]) for k in table.keys], np.float32)
    derived = np.stack([index, 2 * index], axis=1)
    derived[index == 0] = np.nan
    return dataclasses.replace(table, works=np.where(index % 2 == 0, work, ""), derived=derived,
                               derived_names=("tempo_bpm", "pedal"), in_percepiano=index == 1)


def test_works_derived_and_in_percepiano_follow_their_rows():
    a = with_corpus_columns(make_table(["k0", "k1", "k2"], ["rA"] * 3, 1, "enc"))
    plain = make_table(["k3", "k4"], ["rA"] * 2, 1, "enc")
    both = EmbeddingTable.concat([a, plain])
    np.testing.assert_array_equal(both.works, ["W", "", "W", "", ""])
    np.testing.assert_array_equal(both.derived, [[np.nan, np.nan], [1, 2], [2, 4], [np.nan] * 2, [np.nan] * 2])
    assert both.derived_names == ("tempo_bpm", "pedal") and both.derived.dtype == np.float32
    np.testing.assert_array_equal(both.in_percepiano, [False, True, False, False, False])
    picked = both.subset(np.array([2, 1]))
    np.testing.assert_array_equal(picked.works, ["W", ""])
    np.testing.assert_array_equal(picked.derived, [[2, 4], [1, 2]])
    np.testing.assert_array_equal(picked.in_percepiano, [False, True])
    none = EmbeddingTable.concat([plain, plain])
    assert none.works is None and none.derived is None and none.derived_names == () and none.in_percepiano is None
    with pytest.raises(ValueError, match="derived labels differ"):
        EmbeddingTable.concat([a, dataclasses.replace(a, derived_names=("a", "b"))])
    with pytest.raises(ValueError, match=r"works must be \[3\]"):
        dataclasses.replace(a, works=np.array(["W"]))
    with pytest.raises(ValueError, match=r"derived must be \[3, 2\]"):
        dataclasses.replace(a, derived=np.zeros((3, 3), np.float32))


def test_fusion_keeps_works_derived_and_flags_and_checks_they_agree():
    audio = with_corpus_columns(make_table(["k0", "k1", "k2", "k0", "k1", "k2"], ["rA"] * 3 + ["rB"] * 3, 2, "audio"))
    symbolic = with_corpus_columns(make_table(["k2", "k0", "k1"], [SYMBOLIC_RENDER] * 3, 1, "midi"))
    plain_symbolic = make_table(["k2", "k0", "k1"], [SYMBOLIC_RENDER] * 3, 1, "midi")
    for order in ([symbolic, audio], [audio, symbolic], [plain_symbolic, audio]):
        fused = fuse_tables(order)
        np.testing.assert_array_equal(fused.works, ["W", "", "W"] * 2)
        np.testing.assert_array_equal(fused.derived[:, 1], [np.nan, 2, 4] * 2)
        np.testing.assert_array_equal(fused.in_percepiano, [False, True, False] * 2)
    with pytest.raises(TableFusionError, match="disagree on the works"):
        fuse_tables([audio, with_corpus_columns(symbolic, work="V")])
    with pytest.raises(TableFusionError, match="disagree on the PercePiano overlap flags"):
        fuse_tables([audio, dataclasses.replace(symbolic, in_percepiano=~symbolic.in_percepiano)])
