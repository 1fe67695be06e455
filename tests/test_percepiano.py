"""PercePiano reader: key parsing, the shared checkout, and bad inputs on tiny fake checkouts."""

import json
from pathlib import Path

import numpy as np
import pytest

from crescend_jax.data.dimensions import DIMENSIONS, NUM_DIMENSIONS
from crescend_jax.data.percepiano import (
    CorpusError,
    KeyFormatError,
    RatingsWarning,
    UnratedWarning,
    content_identity,
    default_data_config,
    load_percepiano,
    parse_key,
    unrated_keys,
)


@pytest.mark.parametrize(
    "key, composition, bars, performer, segment",
    [
        ("Schubert_D960_mv3_8bars_3_12", "Schubert_D960_mv3", 8, "3", "12"),
        ("Schubert_D935_no.3_4bars_12_1", "Schubert_D935_no.3", 4, "12", "1"),
        ("Schubert_D960_mv2_16bars_Score_01", "Schubert_D960_mv2", 16, "Score", "01"),
        ("Schubert_D935_no.3_4bars_Score2_46", "Schubert_D935_no.3", 4, "Score2", "46"),
        ("Beethoven_WoO80_var_27_8bars_0_3", "Beethoven_WoO80_var_27", 8, "0", "3"),
        ("A_2bars_x_4bars_7_9", "A_2bars_x", 4, "7", "9"),
    ],
)
def test_parse_key_hand_cases(key, composition, bars, performer, segment):
    parsed = parse_key(key)
    assert (parsed.composition, parsed.bars, parsed.performer, parsed.segment) == (composition, bars, performer, segment)
    assert parsed.piece == f"{composition}_{bars}bars"
    assert parsed.group == f"{composition}_{bars}bars_{segment}"
    assert parsed.key == key


@pytest.mark.parametrize(
    "key", ["", "Schubert_D960_mv3_3_12", "Schubert_D960_mv3_8bars_3", "_8bars_3_12", "Schubert_8bars_3_12_", "x_bars_1_2"]
)
def test_parse_key_rejects_bad_keys(key):
    with pytest.raises(KeyFormatError, match=r"<composition>_<N>bars_<performer>_<segment>") as info:
        parse_key(key)
    assert repr(key) in str(info.value)


def test_default_data_config():
    config = default_data_config()
    assert config.root == "../shared/data/percepiano"
    assert (config.num_folds, tuple(config.test_compositions), config.fold_seed) == (0, (), 0)


def test_shared_checkout(percepiano_root: Path):
    with pytest.warns(RatingsWarning):  # no timing here: speed lives in benchmarks, not tests (a loaded CI fails)
        corpus = load_percepiano(percepiano_root)
    assert corpus.name == "percepiano"
    assert corpus.problems == []
    labels = json.loads(next((percepiano_root / "labels").glob("label_*_mean_*.json")).read_text())
    assert sorted(s.key for s in corpus.segments) == sorted(labels)
    for segment in corpus.segments:
        parsed = parse_key(segment.key)
        assert (segment.composition, segment.piece, segment.group, segment.performer) == (
            parsed.composition, parsed.piece, parsed.group, parsed.performer)
        assert segment.midi_path.is_file()
        assert segment.midi_path.stem.strip() == segment.key
        assert segment.label_mean.shape == segment.label_std.shape == (NUM_DIMENSIONS,)
        assert segment.ratings.dtype == np.float32 and segment.ratings.shape[1] == NUM_DIMENSIONS
        assert segment.ratings.shape[0] >= 1
        assert np.isnan(segment.label_truth).all()
        finite = segment.ratings[np.isfinite(segment.ratings)]
        assert ((finite >= 1 / 7 - 1e-6) & (finite <= 1 + 1e-6)).all()
    compositions = {s.composition for s in corpus.segments}
    assert {"Schubert_D960_mv3", "Schubert_D960_mv2", "Schubert_D935_no.3"} <= compositions
    # the MIDI file whose name starts with a space resolves to its key without the space
    spaced = [s for s in corpus.segments if s.midi_path.name.startswith(" ")]
    assert spaced and all(s.midi_path.name == f" {s.key}.mid" for s in spaced)
    # groups are (piece, segment): every member of a group has the same piece and a different performer
    by_group: dict[str, list] = {}
    for s in corpus.segments:
        by_group.setdefault(s.group, []).append(s)
    for members in by_group.values():
        assert len({m.piece for m in members}) == 1
        assert len({m.performer for m in members}) == len(members)
    assert sum(s.is_deadpan for s in corpus.segments) > 0


# ---------------------------------------------------------------------------------------------- fake checkouts

GOOD_KEYS = ["Comp_A_8bars_1_1", "Comp_A_8bars_2_1", "Comp_A_8bars_Score_1", "Comp.B_4bars_1_2"]


def _questions(values):
    return [str(v) for v in values] + ["", "free text"]  # the 19 dimensions, then extra questions


def make_checkout(root: Path, keys=GOOD_KEYS, ratings_rows=None, midi_names=None) -> Path:
    labels = root / "labels"
    labels.mkdir(parents=True)
    rng = np.random.default_rng(0)
    mean = {k: list(rng.uniform(0, 1, NUM_DIMENSIONS)) + [i] for i, k in enumerate(keys)}
    std = {k: list(rng.uniform(0, 0.3, NUM_DIMENSIONS)) for k in keys}
    (labels / "label_2round_mean_reg_19_with0_rm_highstd0.json").write_text(json.dumps(mean))
    (labels / "label_2round_std_reg_19_with0_rm_highstd0.json").write_text(json.dumps(std))
    header = ["user", "dataID", "filename"] + [f"Question_{i}_1" for i in range(NUM_DIMENSIONS + 2)] + ["message"]
    if ratings_rows is None:
        ratings_rows = [[u, 0, f"{k}.wav", *_questions(rng.integers(1, 8, NUM_DIMENSIONS)), ""] for k in keys for u in (1, 2)]
        ratings_rows.append([3, 0, "Unlabelled_8bars_1_1.wav", *_questions([4] * NUM_DIMENSIONS), ""])
    lines = [",".join(header)] + [",".join(str(c) for c in row) for row in ratings_rows]
    (labels / "total_2rounds.csv").write_text("\n".join(lines) + "\n")
    midi_dir = root / "virtuoso" / "data" / "all_2rounds"
    midi_dir.mkdir(parents=True)
    (root / "virtuoso" / "data" / "score_midi").mkdir()
    for name in midi_names if midi_names is not None else [f"{k}.mid" for k in keys] + ["Unlabelled_8bars_1_1.mid"]:
        folder = midi_dir.parent / "score_midi" if "Score" in name else midi_dir
        (folder / name).write_bytes(b"MThd")
    return root


def test_fake_checkout_reads(tmp_path):
    root = make_checkout(tmp_path, midi_names=[" Comp_A_8bars_1_1.mid", "Comp_A_8bars_2_1.mid",
                                               "Comp_A_8bars_Score_1.mid", "Comp.B_4bars_1_2.mid"])
    corpus = load_percepiano(root)
    assert corpus.problems == []
    assert [s.key for s in corpus.segments] == sorted(GOOD_KEYS)
    by_key = {s.key: s for s in corpus.segments}
    assert by_key["Comp_A_8bars_1_1"].midi_path.name == " Comp_A_8bars_1_1.mid"
    assert by_key["Comp_A_8bars_Score_1"].midi_path.parent.name == "score_midi"
    assert by_key["Comp.B_4bars_1_2"].group == "Comp.B_4bars_2"
    assert all(s.ratings.shape == (2, NUM_DIMENSIONS) for s in corpus.segments)
    labels = json.loads((root / "labels" / "label_2round_mean_reg_19_with0_rm_highstd0.json").read_text())
    np.testing.assert_allclose(by_key["Comp_A_8bars_2_1"].label_mean, labels["Comp_A_8bars_2_1"][:NUM_DIMENSIONS], rtol=1e-6)


def test_ratings_missing_values_and_stray_text(tmp_path):
    key = GOOD_KEYS[0]
    row1 = [7, 0, f"{key}.wav", *_questions([7, 0, "", "oops", 8] + [1] * 14), ""]
    row2 = [8, 0, f" {key}.wav", *_questions([3.5 if i == 0 else 2 for i in range(NUM_DIMENSIONS)]), ""]
    rows = [row1, row2] + [[1, 0, f"{k}.wav", *_questions([4] * NUM_DIMENSIONS), ""] for k in GOOD_KEYS[1:]]
    root = make_checkout(tmp_path, ratings_rows=rows)
    with pytest.warns(RatingsWarning, match="1 rating cells holding text .1 rows. and 2 outside 1..7; dropped 1 "
                                            "rater rows with an answer above 7"):
        corpus = load_percepiano(root)
    ratings = {s.key: s.ratings for s in corpus.segments}[key]
    assert ratings.shape == (1, NUM_DIMENSIONS)  # row1 holds an 8: the label file's rule drops the whole row
    assert ratings[0, 1] == pytest.approx(2 / 7)
    assert np.isnan(ratings[0, 0])  # 3.5 is not on the 1..7 scale


def test_bad_key_and_missing_midi_are_problems(tmp_path):
    keys = GOOD_KEYS + ["not-a-key"]
    root = make_checkout(tmp_path, keys=keys, midi_names=[f"{k}.mid" for k in GOOD_KEYS[1:]])
    corpus = load_percepiano(root)
    assert [s.key for s in corpus.segments] == sorted(GOOD_KEYS[1:])
    problems = {p.item: p for p in corpus.problems}
    assert set(problems) == {"not-a-key", GOOD_KEYS[0]}
    assert "<composition>_<N>bars" in problems["not-a-key"].message
    assert "no MIDI file" in problems[GOOD_KEYS[0]].message
    assert GOOD_KEYS[0] in str(problems[GOOD_KEYS[0]])


def test_label_means_outside_the_label_scale_are_problems_naming_key_and_dimension(tmp_path):
    root = make_checkout(tmp_path)
    path = root / "labels" / "label_2round_mean_reg_19_with0_rm_highstd0.json"
    labels = json.loads(path.read_text())
    labels[GOOD_KEYS[0]][0] = 1e6
    labels[GOOD_KEYS[1]][3] = -5
    path.write_text(json.dumps(labels))
    corpus = load_percepiano(root)
    assert [s.key for s in corpus.segments] == sorted(GOOD_KEYS[2:])
    problems = {p.item: p for p in corpus.problems}
    assert set(problems) == set(GOOD_KEYS[:2])
    assert f"{DIMENSIONS[0]}=1e+06" in problems[GOOD_KEYS[0]].message
    assert f"{DIMENSIONS[3]}=-5" in problems[GOOD_KEYS[1]].message
    assert "outside the label scale [0, 1]" in problems[GOOD_KEYS[1]].message


def test_missing_root(tmp_path):
    with pytest.raises(CorpusError, match="does not exist.*data.root"):
        load_percepiano(tmp_path / "nowhere")


def test_missing_label_file(tmp_path):
    root = make_checkout(tmp_path)
    (root / "labels" / "label_2round_std_reg_19_with0_rm_highstd0.json").unlink()
    with pytest.raises(CorpusError, match=r"no label file .*label_\*std\*\.json"):
        load_percepiano(root)


def test_ambiguous_label_files(tmp_path):
    root = make_checkout(tmp_path)
    (root / "labels" / "label_other_mean.json").write_text("{}")
    with pytest.raises(CorpusError, match="several label files"):
        load_percepiano(root)


def test_malformed_json(tmp_path):
    root = make_checkout(tmp_path)
    (root / "labels" / "label_2round_mean_reg_19_with0_rm_highstd0.json").write_text("{not json")
    with pytest.raises(CorpusError, match="label_2round_mean.*not valid JSON"):
        load_percepiano(root)


def test_wrong_value_lengths(tmp_path):
    root = make_checkout(tmp_path)
    path = root / "labels" / "label_2round_std_reg_19_with0_rm_highstd0.json"
    std = json.loads(path.read_text())
    std[GOOD_KEYS[1]] = std[GOOD_KEYS[1]][:5]
    path.write_text(json.dumps(std))
    with pytest.raises(CorpusError, match=f"{GOOD_KEYS[1]}.*5 values, expected a list of 19"):
        load_percepiano(root)


def test_mean_and_std_key_mismatch(tmp_path):
    root = make_checkout(tmp_path)
    path = root / "labels" / "label_2round_std_reg_19_with0_rm_highstd0.json"
    std = json.loads(path.read_text())
    del std[GOOD_KEYS[2]]
    path.write_text(json.dumps(std))
    with pytest.raises(CorpusError, match="label different keys"):
        load_percepiano(root)


def test_missing_ratings_csv(tmp_path):
    root = make_checkout(tmp_path)
    (root / "labels" / "total_2rounds.csv").unlink()
    with pytest.raises(CorpusError, match="ratings file .*total_2rounds.csv is missing"):
        load_percepiano(root)


def test_ratings_csv_without_questions(tmp_path):
    root = make_checkout(tmp_path)
    (root / "labels" / "total_2rounds.csv").write_text("user,dataID,filename,Question_1\n1,0,x.wav,3\n")
    with pytest.raises(CorpusError, match="at least 19 Question_"):
        load_percepiano(root)


def test_truncated_ratings_csv_counts_and_names_the_unrated_keys(tmp_path):
    root = make_checkout(tmp_path)
    csv = root / "labels" / "total_2rounds.csv"
    lines = csv.read_text().splitlines()
    csv.write_text("\n".join(lines[:4]) + "\n")  # header + 3 rows: keys 0 (twice) and 1 (once) keep ratings
    with pytest.warns(UnratedWarning, match=r"2 of 4 labelled segments have no rating \(Comp.B_4bars_1_2, "
                                            r"Comp_A_8bars_Score_1\).*ceiling rests on the other 2") as record:
        corpus = load_percepiano(root)
    assert len([w for w in record if w.category is UnratedWarning]) == 1  # one line, not one per key
    assert unrated_keys(corpus.segments) == ["Comp.B_4bars_1_2", "Comp_A_8bars_Score_1"]
    assert len(corpus.segments) == 4  # unrated segments are still trained on
    by_key = {s.key: s for s in corpus.segments}
    assert by_key["Comp_A_8bars_1_1"].ratings.shape == (2, NUM_DIMENSIONS)
    assert by_key["Comp.B_4bars_1_2"].ratings.shape == (0, NUM_DIMENSIONS)


def test_a_key_whose_ratings_are_all_missing_counts_as_unrated(tmp_path):
    rows = [[1, 0, f"{GOOD_KEYS[0]}.wav", *_questions([0] * NUM_DIMENSIONS), ""]]
    rows += [[1, 0, f"{k}.wav", *_questions([4] * NUM_DIMENSIONS), ""] for k in GOOD_KEYS[1:]]
    root = make_checkout(tmp_path, ratings_rows=rows)
    with pytest.warns(UnratedWarning, match=f"1 of 4 labelled segments have no rating \\({GOOD_KEYS[0]}\\)"):
        corpus = load_percepiano(root)
    assert unrated_keys(corpus.segments) == [GOOD_KEYS[0]]


def test_a_complete_ratings_file_warns_nothing_about_unrated_keys(tmp_path):
    import warnings

    root = make_checkout(tmp_path)
    with warnings.catch_warnings():
        warnings.simplefilter("error", UnratedWarning)
        corpus = load_percepiano(root)
    assert unrated_keys(corpus.segments) == []


def test_content_identity_follows_the_files_not_the_location(tmp_path):
    import shutil

    root = make_checkout(tmp_path / "a")
    first = content_identity(root)
    shutil.copytree(root, tmp_path / "b")
    assert content_identity(tmp_path / "b") == first  # the same checkout elsewhere is the same content
    csv = root / "labels" / "total_2rounds.csv"
    csv.write_text(csv.read_text().replace(",4,", ",5,", 1))
    changed_ratings = content_identity(root)
    assert changed_ratings["ratings"] != first["ratings"] and changed_ratings["labels"] == first["labels"]
    mean = root / "labels" / "label_2round_mean_reg_19_with0_rm_highstd0.json"
    mean.write_text(mean.read_text().replace("0.", "0.1", 1))
    assert content_identity(root)["labels"] != first["labels"]
    midi = root / "virtuoso" / "data" / "all_2rounds" / "Comp_A_8bars_1_1.mid"
    midi.write_bytes(b"MThd changed")
    changed_midi = content_identity(root)["midi"]
    assert changed_midi != first["midi"]
    # a score MIDI counts even where a performance file of the same name shadows it in the reader's MIDI index
    (root / "virtuoso" / "data" / "all_2rounds" / "Comp_A_8bars_Score_1.mid").write_bytes(b"MThd")
    shadowed = content_identity(root)["midi"]
    (root / "virtuoso" / "data" / "score_midi" / "Comp_A_8bars_Score_1.mid").write_bytes(b"MThd other score")
    assert len({changed_midi, shadowed, content_identity(root)["midi"]}) == 3
    with pytest.raises(CorpusError, match="does not exist"):
        content_identity(tmp_path / "nowhere")
