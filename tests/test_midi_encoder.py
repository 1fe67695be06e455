"""The symbolic MIDI encoder: every feature on hand-built MIDI with a known answer, edge cases, the store path."""

from pathlib import Path

import mido
import ml_collections
import numpy as np
import pytest
from _midi_files import TICKS, write_midi

from crescend_jax import encoders
from crescend_jax.encoders.midi import (FEATURE_NAMES, MidiEncoder, MidiFeatureError, default_encoder_config, lcs_pairs,
                                        read_notes)


def features(tmp_path, notes, pedal=(), score=None, **settings) -> dict[str, float]:
    performance = write_midi(tmp_path / "performance.mid", notes, pedal)
    score_path = write_midi(tmp_path / "score.mid", score) if score is not None else None
    return MidiEncoder(**settings).features(performance, score_path)


def metronome(count=8, ioi=0.5, duration=0.4, pitch=67, velocity=80):
    return [(i * ioi, duration, pitch + (i % 3), velocity) for i in range(count)]


def test_metronomic_performance_has_steady_tempo_and_known_ioi(tmp_path):
    values = features(tmp_path, metronome(count=9))  # 120 bpm: a note every 0.5 s
    assert values["ioi_median_s"] == pytest.approx(0.5, abs=2e-3)
    assert values["ioi_log_ratio_std"] == pytest.approx(0.0, abs=1e-2)
    assert values["duration_s"] == pytest.approx(8 * 0.5 + 0.4, abs=2e-3)
    assert values["notes_per_s"] == pytest.approx(9 / 4.4, rel=1e-3)
    assert values["chords_per_s"] == values["notes_per_s"]
    assert values["chord_size_mean"] == 1.0
    assert values["polyphony_mean"] == pytest.approx(9 * 0.4 / 4.4, rel=1e-3)


def test_uneven_onsets_raise_the_ioi_spread(tmp_path):
    onsets = [0.0, 0.5, 0.75, 1.5, 1.75, 2.5]  # IOIs 0.5, 0.25, 0.75, 0.25, 0.75
    values = features(tmp_path, [(t, 0.2, 60 + i, 70) for i, t in enumerate(onsets)])
    ioi = np.diff(onsets)
    assert values["ioi_median_s"] == pytest.approx(np.median(ioi), abs=2e-3)
    assert values["ioi_log_ratio_std"] == pytest.approx(np.std(np.diff(np.log(ioi))), abs=1e-2)


def test_constant_velocity(tmp_path):
    values = features(tmp_path, metronome(velocity=80))
    for name in ("velocity_mean", "velocity_mean_high", "velocity_mean_melody", "velocity_mean_low",
                 "velocity_mean_accompaniment"):
        assert values[name] == 80.0, name  # no low notes / no accompaniment: the overall level
    for name in ("velocity_std", "velocity_range", "velocity_high_minus_low", "melody_projection"):
        assert values[name] == 0.0, name


def test_velocity_by_register(tmp_path):
    notes = [(i * 0.5, 0.4, 48, 40) for i in range(4)] + [(i * 0.5 + 0.25, 0.2, 72, 90) for i in range(4)]
    values = features(tmp_path, notes)
    assert (values["velocity_mean_low"], values["velocity_mean_high"]) == (40.0, 90.0)
    assert values["velocity_high_minus_low"] == 50.0
    assert values["velocity_mean"] == 65.0 and values["velocity_std"] == 25.0
    assert values["velocity_range"] == pytest.approx(np.subtract(*np.percentile([90] * 4 + [40] * 4, [95, 5])))


def test_louder_melody_projects(tmp_path):
    chords = [(i * 0.5, 0.4, pitch, 90 if pitch == 76 else 50) for i in range(4) for pitch in (48, 60, 76)]
    values = features(tmp_path, chords)
    assert values["melody_projection"] == 40.0
    assert (values["velocity_mean_melody"], values["velocity_mean_accompaniment"]) == (90.0, 50.0)
    assert values["chord_size_mean"] == 3.0
    softer = features(tmp_path, [(t, d, p, 50 if p == 76 else 70) for t, d, p, _ in chords])
    assert softer["melody_projection"] == -20.0


def test_pedal_down_half_the_time(tmp_path):
    notes = [(0.0, 2.0, 60, 70)]
    values = features(tmp_path, notes, pedal=[(0.0, 127), (1.0, 0)])
    assert values["pedal_down_share"] == pytest.approx(0.5, abs=2e-3)
    assert values["pedal_changes_per_s"] == pytest.approx(1 / 2.0, abs=1e-3)  # one release in 2 s
    assert values["pedal_depth_mean"] == pytest.approx(1.0)
    half = features(tmp_path, notes, pedal=[(0.5, 64), (1.0, 32), (1.5, 0)])
    assert half["pedal_down_share"] == pytest.approx(0.25, abs=2e-3)  # only 64 counts as down
    assert half["pedal_changes_per_s"] == pytest.approx(2 / 2.0, abs=1e-3)  # down at 0.5, up at 1.0
    assert half["pedal_depth_mean"] == pytest.approx((64 + 32) / 2 / 127, abs=1e-3)
    dry = features(tmp_path, notes)
    assert (dry["pedal_down_share"], dry["pedal_changes_per_s"], dry["pedal_depth_mean"]) == (0.0, 0.0, 0.0)


def test_chord_asynchrony(tmp_path):
    chord = [(0.0, 0.5, 48, 60), (0.02, 0.5, 55, 60), (0.04, 0.5, 64, 60), (1.0, 0.5, 60, 60)]
    values = features(tmp_path, chord)
    assert values["chord_async_ms"] == pytest.approx(40.0, abs=2.5)  # onsets 0 / 20 / 40 ms
    assert values["melody_lead_ms"] == pytest.approx(-30.0, abs=2.5)  # top note 40 ms, the others 10 ms on average
    assert values["chord_size_mean"] == 2.0  # the 40 ms spread is one chord (50 ms window)
    melody_first = features(tmp_path, [(0.0, 0.5, 72, 60), (0.03, 0.5, 48, 60), (0.03, 0.5, 60, 60)])
    assert melody_first["melody_lead_ms"] == pytest.approx(30.0, abs=2.5)


def test_staccato_and_legato_articulation(tmp_path):
    staccato = features(tmp_path, metronome(duration=0.25))  # half of the 0.5 s IOI
    assert staccato["articulation_melody"] == pytest.approx(0.5, abs=1e-2)
    assert staccato["articulation_all"] == pytest.approx(0.5, abs=1e-2)
    assert staccato["overlap_share"] == 0.0
    legato = features(tmp_path, metronome(duration=0.6))  # each note held 0.1 s into the next
    assert legato["articulation_melody"] == pytest.approx(1.2, abs=1e-2)
    assert legato["overlap_share"] == 1.0


def test_score_twice_as_slow(tmp_path):
    rhythm = [0.0, 0.5, 0.75, 1.0, 1.5, 2.0, 2.25, 2.5, 3.0]
    score = [(t, 0.2, 60 + 2 * i, 64) for i, t in enumerate(rhythm)]
    slow = [(2 * t, 2 * d, p, v) for t, d, p, v in score]
    values = features(tmp_path, slow, score=score)
    assert values["has_score"] == 1.0 and values["score_match_share"] == 1.0
    assert values["tempo_ratio"] == pytest.approx(2.0, abs=1e-2)  # performed / score duration
    assert values["tempo_log_std"] == pytest.approx(0.0, abs=1e-2)
    assert values["ioi_log_ratio_std"] > 0.3  # the rhythm alone looks unsteady without the score
    same = features(tmp_path, score, score=score)
    assert same["tempo_ratio"] == pytest.approx(1.0, abs=1e-3) and same["chord_async_ms"] == 0.0
    no_score = features(tmp_path, slow)
    assert (no_score["has_score"], no_score["score_match_share"], no_score["tempo_ratio"],
            no_score["tempo_log_std"]) == (0.0, 0.0, 1.0, 0.0)
    ignored = features(tmp_path, slow, score=score, use_score=False)
    assert ignored == no_score


def test_score_alignment_survives_wrong_and_extra_notes_and_rubato(tmp_path):
    score = [(0.5 * i, 0.4, 60 + (5 * i) % 12, 64) for i in range(12)]
    scale = np.r_[np.full(6, 1.0), np.full(5, 1.5)]  # first half at the score tempo, then 1.5 times slower
    onsets = np.r_[0.0, np.cumsum(0.5 * scale)]
    performance = [(onsets[i], 0.4, p, 64) for i, (_, _, p, _) in enumerate(score)]
    performance[4] = (performance[4][0], 0.4, 99, 64)  # a wrong note
    performance.append((onsets[7] + 0.2, 0.1, 30, 64))  # an extra note
    values = features(tmp_path, performance, score=score)
    assert values["score_match_share"] == pytest.approx(11 / 13)
    assert values["tempo_ratio"] == pytest.approx((onsets[-1] - onsets[0]) / 5.5, abs=1e-2)
    ratios = np.diff(onsets[[i for i in range(12) if i != 4]]) / np.diff([0.5 * i for i in range(12) if i != 4])
    assert values["tempo_log_std"] == pytest.approx(np.std(np.log(ratios)), abs=1e-2)


def test_score_chords_group_asynchrony_beyond_the_window(tmp_path):
    score = [(0.0, 0.5, 48, 64), (0.0, 0.5, 60, 64), (0.0, 0.5, 72, 64), (1.0, 0.5, 62, 64)]
    rolled = [(0.0, 0.5, 48, 64), (0.08, 0.5, 60, 64), (0.16, 0.5, 72, 64), (1.0, 0.5, 62, 64)]
    with_score = features(tmp_path, rolled, score=score)
    assert with_score["chord_async_ms"] == pytest.approx(160.0, abs=2.5)  # one score chord, rolled over 160 ms
    assert with_score["melody_lead_ms"] == pytest.approx(-120.0, abs=2.5)
    without = features(tmp_path, rolled)
    assert without["chord_async_ms"] == 0.0  # 80 ms apart: no two onsets share a 50 ms chord


def test_lcs_pairs_matches_the_most_notes_in_order():
    a, b = np.array([1, 2, 3, 9, 4, 5]), np.array([1, 3, 4, 7, 5])
    ia, ib = lcs_pairs(a, b)
    assert a[ia].tolist() == b[ib].tolist() == [1, 3, 4, 5]
    assert lcs_pairs(np.array([1]), np.array([2]))[0].size == 0


def test_edge_cases_are_finite(tmp_path):
    single = features(tmp_path, [(0.0, 0.5, 60, 70)], score=[(0.0, 0.5, 60, 64)])
    assert all(np.isfinite(v) for v in single.values())
    assert single["articulation_melody"] == 1.0 and single["tempo_ratio"] == 1.0 and single["velocity_range"] == 0.0
    silent_note = features(tmp_path, [(0.0, 0.0, 60, 70)])  # zero length: no span
    assert all(np.isfinite(v) for v in silent_note.values())
    assert silent_note["notes_per_s"] == 0.0 and silent_note["pedal_down_share"] == 0.0
    unison = features(tmp_path, [(0.0, 0.5, 60, 70), (0.0, 0.5, 64, 70)])
    assert unison["chord_async_ms"] == 0.0 and unison["ioi_median_s"] == 0.0


def test_unterminated_and_restruck_notes(tmp_path):
    track = mido.MidiTrack([mido.Message("note_on", note=60, velocity=70, time=0),
                            mido.Message("note_on", note=60, velocity=90, time=TICKS),  # re-strike after 0.5 s
                            mido.Message("note_on", note=64, velocity=10, time=TICKS)])  # never released
    midi = mido.MidiFile(ticks_per_beat=TICKS)
    midi.tracks.append(track)
    midi.save(tmp_path / "odd.mid")
    values = MidiEncoder().features(tmp_path / "odd.mid")
    assert values["notes_per_s"] == pytest.approx(3 / 1.0)  # three notes, all ending at the file's end (1 s)
    assert values["velocity_mean"] == pytest.approx((70 + 90 + 10) / 3)


def test_doubled_voice_counts_once(tmp_path):
    track = mido.MidiTrack([mido.Message("note_on", note=74, velocity=80, time=0),  # score export of two voices
                            mido.Message("note_on", note=74, velocity=0, time=0),
                            mido.Message("note_on", note=74, velocity=80, time=0),
                            mido.Message("note_on", note=74, velocity=0, time=TICKS)])
    midi = mido.MidiFile(ticks_per_beat=TICKS)
    midi.tracks.append(track)
    midi.save(tmp_path / "doubled.mid")
    notes = read_notes(tmp_path / "doubled.mid")
    assert len(notes) == 1 and notes.offset[0] == pytest.approx(0.5)


def test_bad_files_raise_naming_the_file(tmp_path):
    encoder = MidiEncoder()
    with pytest.raises(MidiFeatureError, match="does not exist"):
        encoder.features(tmp_path / "missing.mid")
    (tmp_path / "corrupt.mid").write_bytes(b"MThd not a MIDI file")
    with pytest.raises(MidiFeatureError, match="corrupt.mid is corrupt"):
        encoder.features(tmp_path / "corrupt.mid")
    empty = mido.MidiFile()
    empty.tracks.append(mido.MidiTrack([mido.Message("control_change", control=64, value=127)]))
    empty.save(tmp_path / "empty.mid")
    with pytest.raises(MidiFeatureError, match="no notes"):
        encoder.features(tmp_path / "empty.mid")


def test_encode_midi_shapes_and_name(tmp_path):
    path = write_midi(tmp_path / "p.mid", metronome())
    encoder = MidiEncoder()
    (item,) = encoder.encode_midi([path], [None])
    assert item.pooled.dtype == np.float32 and item.pooled.shape == (len(FEATURE_NAMES),) == (encoder.dim,)
    assert item.frames.shape == (1, 1, encoder.dim)
    np.testing.assert_array_equal(item.frames.mean(axis=1).reshape(-1), item.pooled)
    values = encoder.features(path)
    np.testing.assert_allclose(item.pooled, [values[name] for name in FEATURE_NAMES], rtol=1e-6)
    assert encoder.name.startswith(f"midi-v1-f{len(FEATURE_NAMES)}-")
    assert MidiEncoder(chord_window_s=0.03).name != encoder.name  # a setting is a new store
    assert len(set(FEATURE_NAMES)) == len(FEATURE_NAMES)
    with pytest.raises(ValueError, match="score paths"):
        encoder.encode_midi([path], [None, None])


def test_registered_in_the_encoder_config():
    config = encoders.default_encoder_config()
    assert config.midi.to_dict() == default_encoder_config().to_dict()
    config.name = "midi"
    assert encoders.is_symbolic(config) and not encoders.is_symbolic(encoders.default_encoder_config())
    encoder = encoders.build_encoder(config)
    assert isinstance(encoder, MidiEncoder) and encoder.symbolic
    config.midi.chord_window_s = 0.03
    assert encoders.build_encoder(config).name == MidiEncoder(chord_window_s=0.03).name
    with pytest.raises(ValueError, match="expected 'midi'"):
        MidiEncoder.from_config(ml_collections.ConfigDict({**default_encoder_config().to_dict(), "name": "x"}))


def test_percepiano_score_midi_path():
    from crescend_jax.data.percepiano import parse_key, score_midi_path

    stems = ("Op1_8bars_Score2_3", "Op1_8bars_Score_3", "Op1_8bars_Score2_4", "Op1_8bars_Score_05")
    scores = {stem: Path(f"{stem}.mid") for stem in stems}
    assert score_midi_path(parse_key("Op1_8bars_7_3"), scores) == Path("Op1_8bars_Score_3.mid")  # Score first
    assert score_midi_path(parse_key("Op1_8bars_7_4"), scores) == Path("Op1_8bars_Score2_4.mid")
    assert score_midi_path(parse_key("Op1_8bars_7_5"), scores) is None  # "05" is not "5"
    assert score_midi_path(parse_key("Op1_16bars_7_3"), scores) is None


@pytest.mark.filterwarnings("ignore::UserWarning")
def test_percepiano_segments_play_their_score(percepiano_root):
    from crescend_jax.data.percepiano import load_percepiano

    corpus = load_percepiano(percepiano_root)
    assert all(s.score_midi_path is not None and s.score_midi_path.is_file() for s in corpus.segments)
    for segment in corpus.segments:
        stem = segment.score_midi_path.stem.strip()
        assert stem in (f"{segment.piece}_Score_{segment.group.rsplit('_', 1)[1]}",
                        f"{segment.piece}_Score2_{segment.group.rsplit('_', 1)[1]}")
    encoder = MidiEncoder()
    deadpan = next(s for s in corpus.segments if s.performer == "Score")
    values = encoder.features(deadpan.midi_path, deadpan.score_midi_path)
    assert values["score_match_share"] == 1.0 and values["tempo_ratio"] == pytest.approx(1.0, abs=1e-3)
    played = [encoder.features(s.midi_path, s.score_midi_path) for s in corpus.segments
              if s.group == deadpan.group and not s.is_deadpan]
    assert len(played) >= 5 and all(np.isfinite(v) for values in played for v in values.values())
    # the alignment finds the music in human performances (ornaments and wrong notes stay unmatched)
    assert np.median([values["score_match_share"] for values in played]) > 0.85


def test_extract_stores_midi_features_without_rendering(tmp_path, monkeypatch, capsys):
    """The extract path on a tiny corpus with the real encoder: no soundfont, no render, one "symbolic" store."""
    from crescend_jax.data import extract, store
    from crescend_jax.data.render import default_render_config
    from crescend_jax.data.segments import Corpus, Segment

    score = write_midi(tmp_path / "score.mid", metronome(count=6))
    segments = []
    for i in range(4):
        path = write_midi(tmp_path / f"Comp_8bars_{i}_1.mid",
                                 metronome(count=6, ioi=0.5 + 0.1 * i, velocity=60 + 5 * i))
        segments.append(Segment(
            key=f"Comp_8bars_{i}_1", composition="Comp", piece="Comp_8bars", performer=str(i), group="Comp_8bars_1",
            midi_path=path, label_mean=np.full(19, i / 10, np.float32), label_std=np.full(19, 0.1, np.float32),
            ratings=np.full((2, 19), i / 10, np.float32), label_truth=np.full(19, np.nan, np.float32),
            score_midi_path=score if i < 3 else None))
    (tmp_path / "corrupt.mid").write_bytes(b"MThd not a MIDI file")
    segments.append(Segment(**{**segments[0].__dict__, "key": "Comp_8bars_9_1", "midi_path": tmp_path / "corrupt.mid"}))
    monkeypatch.setattr(extract, "load_corpus", lambda config: Corpus("fake", segments, []))
    config = ml_collections.ConfigDict()
    config.corpus = "fake"
    config.data = ml_collections.ConfigDict({"root": str(tmp_path)})
    config.render = default_render_config()
    config.render.soundfonts = (str(tmp_path / "no-such.sf2"),)  # never looked at: nothing is rendered
    config.render.cache_dir = str(tmp_path / "render-cache")
    config.encoder = encoders.default_encoder_config()
    config.encoder.name = "midi"
    config.store = store.default_store_config()
    config.store.root = str(tmp_path / "stores")

    assert extract.run_extract(config) == 1  # the corrupt MIDI fails alone
    out = capsys.readouterr().out
    assert "done 4 / skipped 0 (already stored) / failed 1" in out and "Comp_8bars_9_1" in out
    assert not (tmp_path / "render-cache").exists()
    table = store.load_table(config)
    encoder = MidiEncoder()
    assert table.encoder == encoder.name and set(table.renders) == {encoders.SYMBOLIC_RENDER}
    assert sorted(table.keys) == [f"Comp_8bars_{i}_1" for i in range(4)]
    for row, key in enumerate(table.keys):
        segment = next(s for s in segments if s.key == key)
        np.testing.assert_array_equal(table.pooled[row], encoder.feature_vector(segment.midi_path,
                                                                                 segment.score_midi_path))
    tempo = table.pooled[:, FEATURE_NAMES.index("tempo_ratio")]
    np.testing.assert_allclose(tempo, [1.0, 1.2, 1.4, 1.0], atol=1e-2)  # the last one has no score
    (store_dir,) = store.store_dirs(config)
    assert store_dir.parent.name == encoder.name and store_dir.name.startswith(encoders.SYMBOLIC_RENDER)
    assert extract.run_extract(config) == 1  # a rerun skips what is stored (the corrupt item fails again)
    assert "done 0 / skipped 4 (already stored) / failed 1" in capsys.readouterr().out
