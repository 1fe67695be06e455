"""Store identity: what moves a store to a new directory (corpus content, encoder code) and what does not (splits,
caches, worker counts, where the data lies) for the demo corpus, PercePiano and ASAP."""

import json
import shutil

import ml_collections
import pytest

from crescend_jax.data import asap, demo_corpus, identity, store
from crescend_jax.data.demo_corpus import default_demo_data_config
from crescend_jax.data.dimensions import NUM_DIMENSIONS
from crescend_jax.data.percepiano import default_data_config
from crescend_jax.data.render import default_render_config
from crescend_jax.encoders import SYMBOLIC_RENDER, default_encoder_config


def demo_config(tmp_path) -> ml_collections.ConfigDict:
    config = ml_collections.ConfigDict()
    config.corpus = "demo"
    config.data = default_demo_data_config()
    config.render = default_render_config()
    config.encoder = default_encoder_config()
    config.store = store.default_store_config()
    config.store.root = str(tmp_path / "stores")
    return config


def dirs(config) -> list[str]:
    return [str(d) for d in store.store_dirs(config, encoder_name="enc-x")]


@pytest.mark.parametrize("field, value", [("seed", 1), ("num_pieces", 12), ("segments_per_piece", 3),
                                          ("rater_noise_sd", 0.9), ("missing_rate", 0.3), ("include_deadpan", False),
                                          ("performance_sd", 0.5), ("piece_offset_sd", 0.0), ("num_performers", 4)])
def test_every_demo_content_field_moves_the_store(tmp_path, field, value):
    config = demo_config(tmp_path)
    before = dirs(config)
    config.data[field] = value
    after = dirs(config)
    assert before[0] != after[0]
    # same readable place, another identity digest
    assert before[0].rsplit("-", 1)[0] == after[0].rsplit("-", 1)[0]


@pytest.mark.parametrize("field, value", [("num_folds", 4), ("test_compositions", ("Bach_Chorale_BWV66.6",)),
                                          ("fold_seed", 7), ("cache_dir", "elsewhere")])
def test_split_and_cache_fields_keep_the_store(tmp_path, field, value):
    config = demo_config(tmp_path)
    before = dirs(config)
    config.data[field] = value
    assert dirs(config) == before


def test_a_store_with_frames_lives_beside_the_one_without(tmp_path):
    config = demo_config(tmp_path)
    plain = dirs(config)
    config.store.frames = True
    framed = dirs(config)
    assert framed != plain and framed[0].rsplit("-", 1)[0] == plain[0].rsplit("-", 1)[0]
    config.store.frames = False
    assert dirs(config) == plain  # without frames the identity is what it always was (old stores keep their name)


def test_split_level_keeps_the_store(tmp_path):
    config = demo_config(tmp_path)
    before = dirs(config)
    with config.data.unlocked():
        config.data.split_level = "work"  # whether or not the data section declares it yet
    assert dirs(config) == before


def test_every_demo_data_field_is_classified():
    """A new demo data field counts as content unless listed: a split or cache field must be listed here."""
    fields = set(default_demo_data_config().keys())
    content = set(demo_corpus.content_identity(default_demo_data_config())["fields"])
    assert content == fields - set(demo_corpus.NON_CONTENT_FIELDS)
    assert set(identity.SPLIT_FIELDS) <= set(demo_corpus.NON_CONTENT_FIELDS)
    assert {"seed", "num_pieces", "rater_noise_sd", "missing_rate"} <= content


def test_the_performer_model_version_moves_the_store(tmp_path, monkeypatch):
    config = demo_config(tmp_path)
    before = dirs(config)
    monkeypatch.setattr(demo_corpus, "RENDER_VERSION", demo_corpus.RENDER_VERSION + 1)
    assert dirs(config) != before


def test_encoder_code_version_moves_the_store(tmp_path, monkeypatch):
    from crescend_jax.encoders import features

    config = demo_config(tmp_path)
    before = dirs(config)
    monkeypatch.setattr(features, "ENCODER_VERSION", 99, raising=False)
    assert identity.encoder_code_version(config.encoder) == 99
    assert dirs(config) != before


def test_encoder_without_a_module_has_no_code_version():
    assert identity.encoder_code_version(ml_collections.ConfigDict({"name": "no_such_encoder"})) is None


def test_a_config_read_back_from_json_finds_the_same_stores(tmp_path):
    config = demo_config(tmp_path)
    config.data.test_compositions = ("A", "B")
    from_json = ml_collections.ConfigDict(json.loads(json.dumps(config.to_dict())))  # a workdir's config.json
    assert dirs(from_json) == dirs(config)


def test_one_store_per_soundfont_and_one_symbolic_store(tmp_path):
    config = demo_config(tmp_path)
    config.render.soundfonts = ("fluidr3", "musescore")
    audio = store.store_dirs(config, encoder_name="enc-x")
    assert [d.name.split("-")[0] for d in audio] == ["fluidr3", "musescore"]
    assert all(d.parent == tmp_path / "stores" / "demo" / "enc-x" for d in audio)
    config.encoder.name = "midi"
    (symbolic,) = store.store_dirs(config, encoder_name="midi-y")
    assert symbolic.name.startswith(f"{SYMBOLIC_RENDER}-") and symbolic.parent.name == "midi-y"
    config.render.soundfonts = ("no-such-soundfont.sf2",)  # a symbolic store needs no soundfont
    assert store.store_dirs(config, encoder_name="midi-y") == [symbolic]


def test_identity_records_what_decides_the_content(tmp_path):
    config = demo_config(tmp_path)
    (ident,) = store.store_identities(config, "enc-x")
    assert ident["corpus"] == "demo" and ident["encoder"] == "enc-x" and ident["store_format"] == store.STORE_FORMAT
    assert ident["render"].startswith("fluidr3-24k-")
    assert ident["corpus_content"]["fields"]["seed"] == 0
    assert "num_folds" not in ident["corpus_content"]["fields"]
    assert store.store_dir_of(config.store.root, ident) == store.store_dirs(config, encoder_name="enc-x")[0]


def _checkout(root):
    labels = root / "labels"
    labels.mkdir(parents=True)
    keys = ["Comp_8bars_1_1", "Comp_8bars_2_1"]
    (labels / "label_2round_mean_reg_19.json").write_text(json.dumps({k: [0.5] * NUM_DIMENSIONS + [0] for k in keys}))
    (labels / "label_2round_std_reg_19.json").write_text(json.dumps({k: [0.1] * NUM_DIMENSIONS for k in keys}))
    header = "user,dataID,filename," + ",".join(f"Question_{i}" for i in range(NUM_DIMENSIONS))
    rows = [f"1,0,{k}.wav," + ",".join(["4"] * NUM_DIMENSIONS) for k in keys]
    (labels / "total_2rounds.csv").write_text("\n".join([header, *rows]) + "\n")
    midi = root / "virtuoso" / "data" / "all_2rounds"
    midi.mkdir(parents=True)
    for k in keys:
        (midi / f"{k}.mid").write_bytes(b"MThd" + k.encode())
    return root


def percepiano_config(tmp_path, root) -> ml_collections.ConfigDict:
    config = demo_config(tmp_path)
    config.corpus = "percepiano"
    config.data = default_data_config()
    config.data.root = str(root)
    return config


def test_percepiano_store_follows_the_label_and_ratings_files(tmp_path):
    root = _checkout(tmp_path / "pp")
    config = percepiano_config(tmp_path, root)
    before = dirs(config)
    config.data.num_folds = 3
    assert dirs(config) == before  # a new split reads the same store
    shutil.copytree(root, tmp_path / "copy")
    config.data.root = str(tmp_path / "copy")
    assert dirs(config) == before  # the same files elsewhere are the same content
    csv = tmp_path / "copy" / "labels" / "total_2rounds.csv"
    csv.write_text("\n".join(csv.read_text().splitlines()[:2]) + "\n")  # a truncated ratings file
    assert dirs(config) != before
    config.data.root = str(root)
    mean = root / "labels" / "label_2round_mean_reg_19.json"
    mean.write_text(mean.read_text().replace("0.5", "0.6", 1))
    assert dirs(config) != before


def test_a_percepiano_root_without_labels_is_a_store_error(tmp_path):
    config = percepiano_config(tmp_path, tmp_path / "nowhere")
    with pytest.raises(store.StoreError, match="cannot tell which percepiano store to use: .*nowhere"):
        store.store_dirs(config, encoder_name="enc-x")


def _asap_checkout(root):
    """metadata.csv and stand-in files of two score folders (the identity hashes files, it does not parse them)."""
    rows = ["composer,title,folder,midi_score,midi_performance,performance_annotations,midi_score_annotations"]
    for folder in ("Bach/Fugue/bwv_848", "Beethoven/Piano_Sonatas/17-1"):
        (root / folder).mkdir(parents=True)
        for name in ("midi_score.mid", "midi_score_annotations.txt", "A.mid", "A_annotations.txt", "B.mid",
                     "B_annotations.txt"):
            (root / folder / name).write_text(f"{folder}/{name}")
        composer, title = folder.split("/")[0], "_".join(folder.split("/")[1:])
        rows += [f"{composer},{title},{folder},{folder}/midi_score.mid,{folder}/{p}.mid,{folder}/{p}_annotations.txt,"
                 f"{folder}/midi_score_annotations.txt" for p in ("A", "B")]
    (root / "metadata.csv").write_text("\n".join(rows) + "\n")
    return root


def asap_config(tmp_path, root) -> ml_collections.ConfigDict:
    config = demo_config(tmp_path)
    config.corpus = "asap"
    config.data = asap.default_data_config()
    config.data.root, config.data.percepiano_root = str(root), ""
    config.data.cache_dir = str(tmp_path / "asap-cache")
    return config


def test_asap_store_follows_its_content_not_workers_caches_splits_or_location(tmp_path):
    root = _asap_checkout(tmp_path / "asap")
    config = asap_config(tmp_path, root)
    (ident,) = store.store_identities(config, "enc-x")
    assert ident["corpus_content"] == asap.content_identity(config.data)
    before = dirs(config)
    for field, value in (("workers", 7), ("cache_dir", str(tmp_path / "other-cache")), ("num_folds", 2),
                         ("split_level", "composition"), ("fold_seed", 3), ("exclude_compositions", ("X",))):
        config.data[field] = value
    assert dirs(config) == before
    shutil.copytree(root, tmp_path / "copy")
    config.data.root = str(tmp_path / "copy")
    assert dirs(config) == before  # the same files elsewhere are the same content
    config.data.exclude_in_percepiano = False  # nothing is flagged without PercePiano names: the same content
    assert dirs(config) == before
    config.data.percepiano_compositions = ("Beethoven_Op31_no.1",)  # sonata 17 is in Op. 31: flagged, to be safe
    flagged = dirs(config)
    assert flagged != before  # the flags are content
    config.data.exclude_in_percepiano = True  # and now 17-1 is left out
    assert asap.content_identity(config.data)["left_out_in_percepiano"] == ["Beethoven/Piano_Sonatas/17-1"]
    assert dirs(config) not in (before, flagged)
    config.data.percepiano_compositions, config.data.bars_per_window = (), 2
    assert dirs(config) != before
    config.data.bars_per_window = 4
    (tmp_path / "copy" / "Bach/Fugue/bwv_848" / "A.mid").write_text("another performance")
    assert dirs(config) != before


def test_data_location(tmp_path):
    config = percepiano_config(tmp_path, tmp_path / "pp")
    assert identity.data_location(config) == str((tmp_path / "pp").resolve())
    config = asap_config(tmp_path, tmp_path / "asap")
    assert identity.data_location(config) == str((tmp_path / "asap").resolve())
    config = demo_config(tmp_path)
    config.data.cache_dir = str(tmp_path / "demo-cache")  # the demo's MIDI files are generated there
    assert identity.data_location(config) == str(tmp_path / "demo-cache")
    del config["data"]
    assert identity.data_location(config) == ""
