"""ASAP reader: same-music windows through the downbeats, bad input as problems, PercePiano overlap, shared data."""

from pathlib import Path

import mido
import numpy as np
import pandas as pd
import pytest

from crescend_jax.config import load_config
from crescend_jax.data import asap
from crescend_jax.data.asap import (
    ONSET_LEAD_SECONDS,
    AnnotationError,
    Annotations,
    AsapError,
    asap_catalogue,
    load_asap,
    percepiano_catalogue,
    percepiano_overlap,
    read_annotations,
    same_music_windows,
)
from crescend_jax.data.dimensions import NUM_DIMENSIONS
from crescend_jax.data.midi_events import read_midi
from crescend_jax.data.performance_labels import DERIVED_LABELS

REPO = Path(__file__).resolve().parents[1]
BEAT = 0.5  # score seconds per beat
BEATS_PER_BAR = 4


# ---------------------------------------------------------------------------------------------------------------
# A tiny ASAP checkout: one pickup beat, then bars of four beats; every beat plays one note whose pitch names its bar.


def bar_pitch(bar: int) -> int:
    return 48 + bar % 24


def score_beats(bars: int) -> tuple[np.ndarray, list[str]]:
    """Times (score seconds) and kinds of a pickup beat, ``bars`` bars and the closing downbeat."""
    count = 1 + bars * BEATS_PER_BAR + 1
    times = 0.5 + BEAT * np.arange(count)
    kinds = ["b"] + ["db" if i % BEATS_PER_BAR == 0 else "b" for i in range(count - 1)]
    return times, kinds


def write_midi(path: Path, onsets: np.ndarray, pitches: list[int], duration: np.ndarray, velocity: int) -> None:
    events = []
    for onset, pitch, length in zip(onsets, pitches, duration):
        events += [(onset, 1, mido.Message("note_on", note=pitch, velocity=velocity)),
                   (onset + length, 0, mido.Message("note_off", note=pitch, velocity=0))]
    events.sort(key=lambda e: (e[0], e[1]))
    track, now = mido.MidiTrack(), 0
    for time, _, message in events:
        tick = int(round(time * 960))  # 480 ticks a beat at 120 bpm
        track.append(message.copy(time=tick - now))
        now = tick
    midi = mido.MidiFile(ticks_per_beat=480)
    midi.tracks.append(track)
    midi.save(path)


def write_annotations(path: Path, times: np.ndarray, kinds: list[str]) -> None:
    path.write_text("".join(f"{t:.6f}\t{t:.6f}\t{k}\n" for t, k in zip(times, kinds)))


def add_piece(root: Path, rows: list[dict], folder: str, title: str, performers: dict[str, dict], bars: int = 9):
    """Writes a score and its performances; each performer's dict: scale (tempo factor), velocity, and faults:
    drop_beat (index of an annotated beat left out), drop_downbeat, past_end, no_annotations, rest_bars (bars whose
    beats play no note)."""
    directory = root / folder
    directory.mkdir(parents=True)
    times, kinds = score_beats(bars)
    bar_of_beat = np.maximum(0, (np.arange(len(times)) - 1) // BEATS_PER_BAR)
    pitches = [bar_pitch(b) for b in bar_of_beat]
    write_midi(directory / "midi_score.mid", times, pitches, np.full(len(times), 0.8 * BEAT), 64)
    write_annotations(directory / "midi_score_annotations.txt", times, kinds)
    for name, spec in performers.items():
        scale = spec.get("scale", 1.0)
        performed = 1.0 + (times - times[0]) * scale
        playing = ~np.isin(bar_of_beat, list(spec.get("rest_bars", ())))  # the beats of these bars play no note
        write_midi(directory / f"{name}.mid", performed[playing], [p for p, keep in zip(pitches, playing) if keep],
                   np.full(int(playing.sum()), 0.8 * BEAT * scale), spec.get("velocity", 64))
        ann_times, ann_kinds = performed.copy(), list(kinds)
        for field in ("drop_beat", "drop_downbeat"):
            if field in spec:
                ann_times = np.delete(ann_times, spec[field])
                del ann_kinds[spec[field]]
        if spec.get("past_end"):
            ann_times = np.append(ann_times, ann_times[-1] + 30.0)
            ann_kinds.append("b")
        if not spec.get("no_annotations"):
            write_annotations(directory / f"{name}_annotations.txt", ann_times, ann_kinds)
        rows.append({"composer": folder.split("/")[0], "title": title, "folder": folder,
                     "xml_score": f"{folder}/xml_score.musicxml", "midi_score": f"{folder}/midi_score.mid",
                     "midi_performance": f"{folder}/{name}.mid",
                     "performance_annotations": f"{folder}/{name}_annotations.txt",
                     "midi_score_annotations": f"{folder}/midi_score_annotations.txt"})


@pytest.fixture(scope="module")
def tiny_root(tmp_path_factory) -> Path:
    root = tmp_path_factory.mktemp("asap")
    rows: list[dict] = []
    add_piece(root, rows, "Comp/Sonata_op_5/1", "Sonata_op_5_1", {
        "Slow01": {"scale": 1.25, "velocity": 50},
        "Even01": {"scale": 1.0, "velocity": 80},
        "Fast01": {"scale": 0.1},  # 4 bars in 0.8 s: every window too short
        "Skip01": {"drop_beat": 1 + 5 * BEATS_PER_BAR + 2},  # a beat missing inside window 1 (bars 4..7)
        "Past01": {"past_end": True},
        "NoAnn01": {"no_annotations": True},
    })
    add_piece(root, rows, "Comp/Sonata_op_5/2", "Sonata_op_5_2", {
        "Good02": {}, "Bar02": {"drop_downbeat": 1 + 2 * BEATS_PER_BAR}})  # leaves one usable performance
    add_piece(root, rows, "Comp/Sonata_op_5/2_no_repeat", "Sonata_op_5_2", {"A": {}, "B": {"scale": 1.1}}, bars=4)
    add_piece(root, rows, "Other/Alone", "Alone", {"Solo": {}})  # one performance: not a piece to rank
    pd.DataFrame(rows).to_csv(root / "metadata.csv", index=False)
    return root


def tiny_config(root: Path, cache: Path, **fields):
    config = asap.default_data_config()
    config.root, config.cache_dir, config.percepiano_root, config.workers = str(root), str(cache), "", 1
    config.percepiano_compositions = ("Comp_Op5_no.1",)
    config.exclude_in_percepiano = False  # keep the flagged piece: most tests look at it
    for name, value in fields.items():
        config[name] = value
    return config


@pytest.fixture(scope="module")
def tiny(tiny_root, tmp_path_factory):
    return load_asap(tiny_config(tiny_root, tmp_path_factory.mktemp("cache")))


def test_windows_keys_groups_and_fields(tiny):
    keys = {s.key for s in tiny.segments}
    piece1, piece3 = "Comp/Sonata_op_5/1__4bars", "Comp/Sonata_op_5/2_no_repeat__4bars"
    assert keys == {f"{piece1}__w000__Slow01", f"{piece1}__w001__Slow01", f"{piece1}__w000__Even01",
                    f"{piece1}__w001__Even01", f"{piece1}__w000__Skip01",
                    f"{piece3}__w000__A", f"{piece3}__w000__B"}
    assert [s.key for s in tiny.segments] == sorted(keys)
    slow = next(s for s in tiny.segments if s.key == f"{piece1}__w001__Slow01")
    assert slow.composition == "Comp/Sonata_op_5/1" and slow.piece == piece1 and slow.group == f"{piece1}__w001"
    assert slow.performer == "Slow01" and slow.work == "Comp/Sonata_op_5_1"
    assert slow.label_mean.shape == slow.label_std.shape == slow.label_truth.shape == (NUM_DIMENSIONS,)
    assert np.isnan(slow.label_mean).all() and slow.ratings.shape == (0, NUM_DIMENSIONS)
    # both no_repeat and repeat folders of one title share a work; splits must keep them together
    assert {s.work for s in tiny.segments if s.composition.startswith("Comp/Sonata_op_5/2")} == {"Comp/Sonata_op_5_2"}


def test_window_k_plays_the_same_score_bars_in_every_performance(tiny):
    times, kinds = score_beats(9)
    score_downbeats = times[[i for i, k in enumerate(kinds) if k == "db"]]
    for k in (0, 1):
        group = [s for s in tiny.segments if s.group == f"Comp/Sonata_op_5/1__4bars__w{k:03d}"]
        assert len(group) >= 2
        expected_bars = {bar_pitch(b) for b in range(4 * k, 4 * k + 4)}
        for segment in group:
            window = segment.window
            assert window.index == k and window.first_downbeat == 4 * k and window.bars == 4
            assert window.score_start_seconds == pytest.approx(score_downbeats[4 * k])
            assert window.score_end_seconds == pytest.approx(score_downbeats[4 * k + 4])
            scale = {"Slow01": 1.25, "Even01": 1.0, "Skip01": 1.0}[segment.performer]
            performed_downbeat = 1.0 + (score_downbeats[4 * k] - times[0]) * scale
            assert window.start_seconds == pytest.approx(performed_downbeat - ONSET_LEAD_SECONDS)
            cut = read_midi(segment.midi_path)
            assert set(cut.pitches.tolist()) == expected_bars  # exactly the four bars, nothing of their neighbours
            assert len(cut.pitches) == 16
            assert cut.length == pytest.approx(window.end_seconds - window.start_seconds, abs=2e-3)
            assert set(read_midi(segment.score_midi_path).pitches.tolist()) == expected_bars


def test_windows_carry_their_annotated_beats_for_the_aligned_encoder(tiny):
    from crescend_jax.encoders.aligned import FEATURE_NAMES, AlignedEncoder

    group = [s for s in tiny.segments if s.group == "Comp/Sonata_op_5/1__4bars__w000"]
    for segment in group:
        beats, score_beats = np.array(segment.window.beats), np.array(segment.window.score_beats)
        assert len(beats) == len(score_beats) >= 5 and np.all(np.diff(beats) > 0)
        assert beats[0] == pytest.approx(ONSET_LEAD_SECONDS)  # the first downbeat, in the cut file's own time
        assert beats[-1] == pytest.approx(segment.window.end_seconds - segment.window.start_seconds + ONSET_LEAD_SECONDS)
    items = AlignedEncoder().encode_midi([s.midi_path for s in group], [s.score_midi_path for s in group],
                                         [s.window for s in group])
    tempo = FEATURE_NAMES.index("tempo_log_ratio")
    for segment, item in zip(group, items):
        assert item.frames.shape[1] == len(segment.window.beats) - 1  # one frame per annotated beat
        scale = {"Slow01": 1.25, "Even01": 1.0, "Skip01": 1.0}[segment.performer]
        np.testing.assert_allclose(item.frames[0, :, tempo], np.log(scale), atol=5e-3)


def test_derived_labels_of_the_windows(tiny):
    by_key = {s.key: dict(zip(DERIVED_LABELS, s.derived)) for s in tiny.segments}
    slow, even = by_key["Comp/Sonata_op_5/1__4bars__w000__Slow01"], by_key["Comp/Sonata_op_5/1__4bars__w000__Even01"]
    assert slow["tempo_bpm"] == pytest.approx(120 / 1.25, rel=1e-4)
    assert even["tempo_bpm"] == pytest.approx(120, rel=1e-4)
    assert slow["tempo_instability"] == pytest.approx(0.0, abs=1e-4)
    assert slow["velocity_mean"] == 50 and even["velocity_mean"] == 80 and slow["velocity_range"] == 0
    assert slow["articulation"] == pytest.approx(-0.2, abs=2e-3)  # notes held 80% of the beat
    assert slow["pedal"] == 0.0


def test_bad_input_becomes_problems(tiny):
    messages = {p.item: p.message for p in tiny.problems}
    piece1 = "Comp/Sonata_op_5/1__4bars"
    assert "past the end of the MIDI" in messages["Comp/Sonata_op_5/1/Past01"]
    assert "annotation file" in messages["Comp/Sonata_op_5/1/NoAnn01"]
    assert "number of beats" in messages[f"{piece1}__w001__Skip01"]
    assert "lasts 0.80 s" in messages[f"{piece1}__w000__Fast01"] and f"{piece1}__w001__Fast01" in messages
    assert "downbeats against the score's" in messages["Comp/Sonata_op_5/2/Bar02"]
    # the one usable performance left of piece 2 makes groups of one: dropped, and said so
    assert "data.min_performances" in messages["Comp/Sonata_op_5/2__4bars__w000__Good02"]
    assert not any(p.item.startswith("Other/") for p in tiny.problems)  # one performance: simply not a piece
    assert len(messages) == len(tiny.problems)
    reasons = {p.item: p.reason for p in tiny.problems}
    assert reasons["Comp/Sonata_op_5/1/Past01"] == "performance skipped: annotations run past the end of the MIDI"
    assert reasons["Comp/Sonata_op_5/1/NoAnn01"] == "performance skipped: annotation file missing or unreadable"
    assert reasons["Comp/Sonata_op_5/2/Bar02"] == "performance skipped: downbeat count differs from the score's"
    assert reasons[f"{piece1}__w000__Fast01"] == reasons[f"{piece1}__w001__Fast01"] == (
        "window dropped: shorter than data.min_window_seconds")
    assert reasons[f"{piece1}__w001__Skip01"].startswith("window dropped: beats between")
    assert all(p.kind == p.reason != "" for p in tiny.problems)


def test_a_window_in_which_no_note_starts_is_dropped_as_bad_input(tmp_path):
    root, rows = tmp_path / "asap", []
    add_piece(root, rows, "Rest/Piece", "Piece", {"A": {"rest_bars": range(4, 8)}, "B": {}, "C": {"scale": 1.1}})
    pd.DataFrame(rows).to_csv(root / "metadata.csv", index=False)
    corpus = load_asap(tiny_config(root, tmp_path / "cache"))
    (problem,) = corpus.problems
    assert problem.item == "Rest/Piece__4bars__w001__A" and problem.reason == "window dropped: no note starts in it"
    assert sorted(s.key for s in corpus.segments if s.window.index == 1) == [
        "Rest/Piece__4bars__w001__B", "Rest/Piece__4bars__w001__C"]
    assert {s.performer for s in corpus.segments if s.window.index != 1} == {"A", "B", "C"}  # A's other windows


def test_percepiano_overlap_flags_the_same_movement_only(tiny):
    flagged = {s.composition for s in tiny.segments if s.in_percepiano}
    assert flagged == {"Comp/Sonata_op_5/1"}


def test_exclude_in_percepiano_leaves_the_flagged_compositions_out(tiny_root, tiny, tmp_path):
    kept = load_asap(tiny_config(tiny_root, tmp_path, exclude_in_percepiano=True))
    assert {s.composition for s in kept.segments} == {s.composition for s in tiny.segments} - {"Comp/Sonata_op_5/1"}
    assert not any(s.in_percepiano for s in kept.segments)
    assert not any(p.item.startswith("Comp/Sonata_op_5/1") for p in kept.problems)  # not read at all
    assert [s.key for s in kept.segments] == [s.key for s in tiny.segments if s.composition != "Comp/Sonata_op_5/1"]
    assert asap.default_data_config().exclude_in_percepiano is True


def test_exclude_in_percepiano_moves_the_identity_only_when_it_leaves_something_out(tiny_root, tmp_path):
    identity = lambda **fields: asap.content_identity(tiny_config(tiny_root, tmp_path, **fields))
    leaving_out = identity(exclude_in_percepiano=True)
    assert leaving_out["left_out_in_percepiano"] == ["Comp/Sonata_op_5/1"]
    assert leaving_out != identity(exclude_in_percepiano=False)
    nothing_flagged = {"percepiano_compositions": ()}
    assert identity(exclude_in_percepiano=True, **nothing_flagged) == identity(exclude_in_percepiano=False,
                                                                               **nothing_flagged)


def test_compositions_filter_and_config_errors(tiny_root, tmp_path):
    corpus = load_asap(tiny_config(tiny_root, tmp_path, compositions=("Comp/Sonata_op_5/2_no_repeat",)))
    assert {s.composition for s in corpus.segments} == {"Comp/Sonata_op_5/2_no_repeat"} and not corpus.problems
    with pytest.raises(AsapError, match="not in"):
        load_asap(tiny_config(tiny_root, tmp_path, compositions=("Comp/Nothing",)))
    with pytest.raises(AsapError, match="metadata.csv does not exist"):
        load_asap(tiny_config(tmp_path, tmp_path))
    with pytest.raises(AsapError, match="percepiano_root"):
        load_asap(tiny_config(tiny_root, tmp_path, percepiano_root=str(tmp_path / "nowhere")))


def test_bars_per_window_changes_keys_and_windows(tiny_root, tmp_path):
    corpus = load_asap(tiny_config(tiny_root, tmp_path, bars_per_window=2, compositions=("Comp/Sonata_op_5/1",)))
    even = sorted(s.key for s in corpus.segments if s.performer == "Even01")
    assert even == [f"Comp/Sonata_op_5/1__2bars__w{k:03d}__Even01" for k in range(4)]


def test_workers_give_the_same_corpus(tiny_root, tiny, tmp_path):
    pooled = load_asap(tiny_config(tiny_root, tmp_path, workers=2))
    assert [s.key for s in pooled.segments] == [s.key for s in tiny.segments]
    assert np.array_equal(np.stack([s.derived for s in pooled.segments]), np.stack([s.derived for s in tiny.segments]),
                          equal_nan=True)
    assert [str(p) for p in pooled.problems] == [str(p) for p in tiny.problems]


def test_content_identity_follows_files_and_settings(tiny_root, tmp_path):
    config = tiny_config(tiny_root, tmp_path)
    first = asap.content_identity(config)
    assert asap.content_identity(tiny_config(tiny_root, tmp_path / "elsewhere", workers=2)) == first
    assert asap.content_identity(tiny_config(tiny_root, tmp_path, split_level="composition", num_folds=2)) == first
    assert asap.content_identity(tiny_config(tiny_root, tmp_path, bars_per_window=2)) != first


def test_extract_loads_the_asap_config(tiny_root, tmp_path):
    from crescend_jax.data.extract import load_corpus

    config = load_config(REPO / "configs" / "asap.py", [
        f"--config.data.root={tiny_root}", f"--config.data.cache_dir={tmp_path}", "--config.data.percepiano_root=",
        "--config.data.workers=1"])
    corpus = load_corpus(config)
    assert corpus.name == "asap" and len(corpus.segments) == 7


def test_extract_of_asap_stores_works_derived_labels_and_flags_and_skipping_bad_input_is_ok(tiny_root, tiny, tmp_path,
                                                                                             capsys):
    from crescend_jax.data import extract, store

    config = load_config(REPO / "configs" / "asap.py", [
        f"--config.data.root={tiny_root}", f"--config.data.cache_dir={tmp_path / 'cache'}",
        "--config.data.percepiano_root=", "--config.data.percepiano_compositions=('Comp_Op5_no.1',)",
        "--config.data.exclude_in_percepiano=False", "--config.data.workers=1", "--config.encoder.name=midi",
        f"--config.store.root={tmp_path / 'stores'}"])
    assert extract.run_extract(config) == 0  # every problem of the tiny checkout is bad input, none a failure
    out = capsys.readouterr().out
    assert f"done {len(tiny.segments)} / skipped 0 (already stored) / failed 0 / skipped (bad input): " \
           f"{len(tiny.problems)}" in out
    assert "performance skipped: downbeat count differs from the score's: 1" in out
    table = store.load_table(config)
    by_key = {s.key: s for s in tiny.segments}
    assert sorted(table.keys) == sorted(by_key)
    assert table.works.tolist() == [by_key[k].work for k in table.keys]
    assert set(table.works) == {"Comp/Sonata_op_5_1", "Comp/Sonata_op_5_2"}
    assert table.in_percepiano.tolist() == [by_key[k].in_percepiano for k in table.keys] and table.in_percepiano.any()
    assert table.derived_names == DERIVED_LABELS
    np.testing.assert_array_equal(table.derived, np.stack([by_key[k].derived for k in table.keys]))
    assert np.isnan(table.label_mean).all()
    from crescend_jax.data.splits import split_units

    units = split_units(table.compositions, config.data.split_level, config.corpus, table.works)
    assert sorted(set(units)) == ["Comp/Sonata_op_5_1", "Comp/Sonata_op_5_2"]  # works, not score folders


# ---------------------------------------------------------------------------------------------------------------
# Annotations, windows and catalogue numbers without files


def annotations(times, kinds) -> Annotations:
    return Annotations(np.asarray(times, np.float64), np.asarray(kinds, dtype=str))


def test_same_music_windows_pair_downbeats_not_times():
    times, kinds = score_beats(9)
    score = annotations(times, kinds)
    rubato = annotations(np.cumsum(np.linspace(0.3, 0.9, len(times))), kinds)
    windows = same_music_windows(rubato, score, 4)
    assert [w.index for w in windows] == [0, 1]
    assert windows[1].start == pytest.approx(rubato.downbeats[4]) and windows[1].end == rubato.downbeats[8]
    assert windows[1].score_start == pytest.approx(score.downbeats[4])
    assert len(windows[1].beats) == len(windows[1].score_beats) == 17
    assert len(same_music_windows(rubato, score, 3)) == 3  # 10 downbeats: 3 whole windows of 3 bars
    with pytest.raises(AnnotationError, match="9 downbeats against the score's 10"):
        same_music_windows(annotations(np.delete(times, 5), np.delete(kinds, 5)), score, 4)


def test_read_annotations(tmp_path):
    good = tmp_path / "a.txt"
    good.write_text("0.5\t0.5\tb,,7\n1.0\t1.0\tdb,4/4\n1.5\t1.5\tbR\n")
    read = read_annotations(good)
    assert read.times == pytest.approx([0.5, 1.0, 1.5]) and list(read.kinds) == ["b", "db", "bR"]
    (tmp_path / "b.txt").write_text("0.5\t0.5\tb\n0.4\t0.4\tdb\n")
    with pytest.raises(AnnotationError, match="do not increase"):
        read_annotations(tmp_path / "b.txt")
    (tmp_path / "c.txt").write_text("0.5\t0.5\tbeat\n")
    with pytest.raises(AnnotationError, match=":1:"):
        read_annotations(tmp_path / "c.txt")
    with pytest.raises(AnnotationError, match="does not exist"):
        read_annotations(tmp_path / "none.txt")


def test_catalogue_numbers():
    assert asap_catalogue("Schubert/Impromptu_op142/3") == asap.Catalogue("schubert", frozenset({("d", 935),
                                                                                               ("op", 142)}), 3)
    assert asap_catalogue("Schubert/Impromptu_op.90_D.899/4_no_repeat").ids == {("op", 90), ("d", 899)}
    assert asap_catalogue("Beethoven/Piano_Sonatas/21-1_no_repeat") == asap.Catalogue("beethoven",
                                                                                      frozenset({("op", 53)}), 1)
    assert asap_catalogue("Beethoven/Piano_Sonatas/17-1").part is None  # Op. 31 holds three sonatas
    assert asap_catalogue("Bach/Fugue/bwv_848").ids == {("bwv", 848)}
    assert asap_catalogue("Liszt/Concert_Etude_S145/1") == asap.Catalogue("liszt", frozenset({("s", 145)}), 1)
    assert asap_catalogue("Liszt/Mephisto_Waltz").ids == frozenset()
    assert percepiano_catalogue("Schubert_D935_no.3") == asap.Catalogue("schubert", frozenset({("d", 935)}), 3)
    assert percepiano_catalogue("Beethoven_WoO80_var12") == asap.Catalogue("beethoven", frozenset({("woo", 80)}), 12)
    assert percepiano_catalogue("Chopin_Nocturne_in_E") == asap.Catalogue("chopin", frozenset(), None)


def test_percepiano_overlap_is_conservative():
    asap_names = ["Schubert/Impromptu_op142/3", "Schubert/Impromptu_op142/1", "Schubert/Wanderer_fantasie",
                  "Beethoven/Piano_Sonatas/23-1", "Liszt/Mephisto_Waltz", "Liszt/Concert_Etude_S145/1",
                  "Bach/Fugue/bwv_848"]
    overlap = percepiano_overlap(asap_names, ["Schubert_D935_no.3", "Schubert_D960_mv2", "Beethoven_WoO80_var1",
                                              "Liszt_Etude", "Schubert_D760"])
    assert overlap == {
        "Schubert/Impromptu_op142/3": ("Schubert_D935_no.3",),  # the same movement: flagged
        "Schubert/Wanderer_fantasie": ("Schubert_D760",),         # no part on either side: cannot tell, flagged
        "Liszt/Mephisto_Waltz": ("Liszt_Etude",),                 # no catalogue number: cannot tell, flagged
        "Liszt/Concert_Etude_S145/1": ("Liszt_Etude",),
    }


# ---------------------------------------------------------------------------------------------------------------
# The shared ASAP data


SHARED_PIECES = ("Bach/Prelude/bwv_858", "Rachmaninoff/Preludes_op_32/10")


@pytest.fixture(scope="module")
def shared(asap_root, tmp_path_factory):
    config = asap.default_data_config()
    config.root, config.cache_dir = str(asap_root), str(tmp_path_factory.mktemp("cache"))
    config.compositions, config.percepiano_root, config.workers = SHARED_PIECES, "", 1
    return load_asap(config), asap_root


def pitch_profile(path: Path) -> np.ndarray:
    return np.bincount(read_midi(path).pitches % 12, minlength=12).astype(np.float64)


def profile_match(a: np.ndarray, b: np.ndarray) -> float:
    """Histogram overlap of two pitch-class profiles (1 = the same distribution)."""
    return float(np.minimum(a / a.sum(), b / b.sum()).sum())


@pytest.mark.data
def test_shared_windows_cover_the_same_score_bars(shared):
    corpus, root = shared
    folder = SHARED_PIECES[0]
    score = read_annotations(root / folder / "midi_score_annotations.txt")
    performers = sorted({s.performer for s in corpus.segments if s.composition == folder})
    assert len(performers) == 2
    windows = {p: {s.window.index: s for s in corpus.segments if s.performer == p} for p in performers}
    common = sorted(set(windows[performers[0]]) & set(windows[performers[1]]))
    assert len(common) >= 5
    same, shifted = [], []
    for k in common:
        first, second = windows[performers[0]][k], windows[performers[1]][k]
        assert first.group == second.group
        for segment in (first, second):
            source = segment.window.source_midi
            performed = read_annotations(source.with_name(f"{source.stem}_annotations.txt"))
            assert segment.window.score_start_seconds == pytest.approx(score.downbeats[4 * k])
            assert segment.window.score_end_seconds == pytest.approx(score.downbeats[4 * k + 4])
            assert segment.window.start_seconds == pytest.approx(max(0.0, performed.downbeats[4 * k] -
                                                                     ONSET_LEAD_SECONDS))
        # the notes played agree with the score's bars, and less with the neighbouring bars
        score_profile = pitch_profile(first.score_midi_path)
        same += [profile_match(pitch_profile(s.midi_path), score_profile) for s in (first, second)]
        if k + 1 in windows[performers[0]]:
            neighbour = windows[performers[0]][k + 1]
            shifted.append(profile_match(pitch_profile(neighbour.midi_path), score_profile))
    assert np.mean(same) > 0.9 and np.min(same) > 0.7
    assert np.mean(same) > np.mean(shifted) + 0.05


@pytest.mark.data
def test_shared_bad_performance_is_a_problem(shared):
    corpus, _ = shared
    messages = {p.item: p.message for p in corpus.problems}
    assert "downbeats against the score's 61" in messages["Rachmaninoff/Preludes_op_32/10/FONG08"]
    # its only other performance has no one to be compared with
    assert not any(s.composition == "Rachmaninoff/Preludes_op_32/10" for s in corpus.segments)
    assert any(item.startswith("Rachmaninoff/Preludes_op_32/10__4bars__w") for item in messages)


@pytest.mark.data
def test_shared_derived_labels_are_plausible(shared):
    corpus, _ = shared
    derived = np.stack([s.derived for s in corpus.segments])
    named = dict(zip(DERIVED_LABELS, derived.T))
    assert np.isfinite(derived).all()
    assert np.all((named["tempo_bpm"] > 20) & (named["tempo_bpm"] < 400))
    assert np.all((named["velocity_mean"] >= 1) & (named["velocity_mean"] <= 127))
    assert np.all((named["pedal"] >= 0) & (named["pedal"] <= 1))
    assert np.all(named["tempo_instability"] >= 0)
