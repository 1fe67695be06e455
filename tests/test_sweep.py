"""Sweeps: every shipped sweep expands; fields, grids, references and the learning-rate rule resolve; a two-point
sweep on tiny data runs end to end, is killed in its second point and resumed; seeds pool by pair outcomes."""

import json
import sys
from pathlib import Path

import ml_collections
import numpy as np
import pytest
from _distributed_worker import synthetic_table

from crescend_jax import cli
from crescend_jax import sweeps
from crescend_jax.sweeps import expand, language, results
from crescend_jax.sweeps import finished as finished_lib
from crescend_jax.config import ConfigError, load_config
from crescend_jax.data.dimensions import NUM_DIMENSIONS
from crescend_jax.evaluate import comparison, seed_pooling
from crescend_jax.models.contract import Predictions

REPO = Path(__file__).resolve().parents[1]
SHIPPED = sorted((REPO / "configs" / "sweeps").glob("*.py"))

TINY_CONFIG = '''
import ml_collections
from crescend_jax.evaluate.run import default_eval_config
from crescend_jax.models.baseline import default_model_config
from crescend_jax.train.trainer import default_train_config


def get_config():
    config = ml_collections.ConfigDict()
    config.data = ml_collections.ConfigDict({"num_folds": 0, "test_compositions": ("Comp0",), "fold_seed": 0})
    config.model = default_model_config()
    config.model.hidden_dim = 32
    config.train = default_train_config()
    config.train.batch_size = 8
    config.train.num_steps = 20
    config.train.eval_every = 5
    config.train.log_every = 5
    config.train.val_fraction = 0.3
    config.train.learning_rate = 1e-2
    config.eval = default_eval_config()
    config.eval.disentanglement = False
    config.eval.bootstrap_replicates = 200
    config.eval.ceiling_splits = 4
    config.experiment = ml_collections.ConfigDict({"name": "tiny", "hypothesis": "a test"})
    return config
'''


def rated_table():
    """`synthetic_table` with rater panels around the label means (so the noise ceiling is defined)."""
    table = synthetic_table(performers=5)
    rng = np.random.default_rng(0)
    table.ratings = [np.clip(m + rng.normal(0, 0.1, (6, NUM_DIMENSIONS)), 0, 1).astype(np.float32)
                     for m in table.label_mean]
    table.label_mean = np.stack([r.mean(axis=0) for r in table.ratings]).astype(np.float32)
    return table


def tiny_sweep(tmp_path: Path, **fields) -> ml_collections.ConfigDict:
    base = tmp_path / "tiny.py"
    base.write_text(TINY_CONFIG)
    config = sweeps.default_sweep_config()
    config.name = "tiny"
    config.base = str(base)
    config.baseline = "base"
    config.points = (sweeps.point("base"), sweeps.point("wide", fields={"model.hidden_dim": 48}))
    config.update(fields)
    return config


@pytest.mark.parametrize("path", SHIPPED, ids=[p.stem for p in SHIPPED])
def test_every_shipped_sweep_loads_and_expands(path, tmp_path):
    argument = ""
    if path.stem == "muq_finetune":  # needs a MuQ checkpoint: a tiny random one with MuQ-large's 12 layers
        pytest.importorskip("torch")
        sys.path.insert(0, str(Path(__file__).resolve().parent))
        from test_muq import save_tiny_muq

        argument = ":" + str(save_tiny_muq(tmp_path / "muq", depth=12))
    sweep = load_config(f"{path}{argument}")
    points = expand.expand_sweep(sweep)  # each approach's own config checks run too
    names = [p.name for p in points]
    assert len(names) == len(set(names)) >= 2
    by_name = {p.name: p for p in points}
    for item in points:  # what a point depends on runs before it
        assert all(names.index(d) < names.index(item.name) for d in item.depends)
        if item.baseline:
            base, own = by_name[item.baseline].config, item.config
            assert base.get("store").to_dict() == own.get("store").to_dict()  # baselines share the store
            assert base.encoder.name == own.encoder.name
    approaches = {p.config.model.name for p in points}
    if path.stem == "muq_finetune":  # fine-tuned minus frozen, paired: same approach, store and folds
        frozen, tuned = by_name["a-frozen"].config, by_name["a-finetune"].config
        assert by_name["a-finetune"].baseline == "a-frozen" and approaches == {"contrastive"}
        assert (frozen.trunk.kind, tuned.trunk.kind, tuned.model.input) == ("frozen", "finetune", "frames")
        assert frozen.encoder.to_dict() == tuned.encoder.to_dict() and tuned.encoder.muq.store_input_layer == 9
        assert frozen.data.to_dict() == tuned.data.to_dict()
        return
    if path.stem == "asap_pretraining":  # pre-trained minus scratch, paired: same approach, store and folds
        scratch, pretrained = by_name["a-scratch"].config, by_name["a-asap"].config
        assert by_name["a-asap"].baseline == "a-scratch" and approaches == {"contrastive"}
        assert scratch.model.init_from == "" and pretrained.model.init_from.endswith("runs/asap_pretrain")
        assert scratch.data.to_dict() == pretrained.data.to_dict() and pretrained.corpus == "percepiano"
        return
    if path.stem in ("asap_ranking", "asap_batch_size"):  # approach A throughout (tests/test_asap_sweeps.py)
        assert approaches == {"contrastive"}
        return
    if path.stem == "sequence_ablations":  # each ablation minus the full trunk, paired: same store and folds
        assert names[0] == "a-sequence" and all(p.baseline == "a-sequence" for p in points[1:])
        assert by_name["a-no_tempo"].config.trunk.augment.to_dict() == {
            **by_name["a-sequence"].config.trunk.augment.to_dict(), "tempo": False}
        assert not any(by_name["a-no_augmentation"].config.trunk.augment[n] for n in ("tempo", "velocity", "crop"))
        assert by_name["a-pooled"].config.trunk.kind == "frozen" and by_name["b-cross_attention"].config.model.name \
            == "siamese"
        assert all(p.config.encoder.name == "aligned" and p.config.store.frames for p in points)
        return
    assert {"baseline", "contrastive"} <= approaches
    if path.stem == "ablations":
        assert {"a-no_infonce", "a-no_agreement", "a-no_margin", "a-temperature=0.5", "a-projection_dim=64"} <= set(
            names)
        assert by_name["a-no_infonce"].config.model.loss.lambda_piece == 0.0
        assert by_name["a-temperature=0.05"].config.model.loss.temperature == 0.05
        assert sweep.seeds == (0, 1, 2)
    if path.stem == "batch_size":
        assert by_name["a-batch_size=64-rule=linear"].same_as == "a-batch_size=64-rule=none"
        assert by_name["a-batch_size=256-rule=linear"].config.train.learning_rate == pytest.approx(4e-4)
        assert by_name["a-batch_size=1024-rule=sqrt"].config.train.learning_rate == pytest.approx(4e-4)
        assert by_name["a-batch_size=4096-rule=none"].config.model.input == "frames"
        assert all(p.config.store.frames for p in points)
    if path.stem == "combined":  # every point, none silently dropped
        assert names == ["baseline", "approach_a", "approach_b", "a_then_b", "approach_c", "b_on_c_style"]
        assert not sweep.notes
        item = by_name["a_then_b"]
        assert item.references == {"model.init_from": "approach_a"} and "approach_a" in item.depends
        assert item.config.model.embedding_dim == by_name["approach_a"].config.model.projection_dim
        item, c = by_name["b_on_c_style"], by_name["approach_c"].config.model
        assert item.references == {"model.init_from": "approach_c"} and "approach_c" in item.depends
        assert item.config.model.init_from_prefix == "style/" and item.config.model.name == "siamese"
        assert (item.config.model.embedding_dim, item.config.model.hidden_dim) == (c.style_dim, c.hidden_dim)
    if path.stem == "percepiano_table":
        encoders = {language.encoder_label(p.config) for p in points}
        assert encoders == {"features", "midi", "features+midi", "aligned", "aligned, group-relative",
                            "aligned, sequence trunk", "aligned, group-relative, sequence trunk"}
        relative = {p.name for p in points if p.config.data.get("group_relative", False)}
        assert relative == {p.name for p in points if "-aligned_group_relative" in p.name} and relative
        sequence = {p.name for p in points if p.config.trunk.kind == "sequence"}
        assert sequence == {f"{a}-aligned{r}_sequence" for a in ("baseline", "approach_a", "approach_b", "approach_c")
                            for r in ("", "_group_relative")}
        for item in points:
            assert item.baseline == (None if item.name.startswith("baseline-") else
                                     "baseline-" + item.name.split("-", 1)[1])


def test_fields_grid_references_and_mistakes(tmp_path):
    config = tiny_sweep(tmp_path)
    config.points = (
        sweeps.point("base"),
        sweeps.point("g", fields={"model": {"dropout": 0.1}},
                        grid={"train.batch_size": (8, 32), "lr_scaling.rule": ("linear", "sqrt")}),
        sweeps.point("warm", fields={"model.init_from": "@base"}),
    )
    config.lr_scaling.reference_batch = 8
    points = expand.expand_sweep(config, ["--config.train.num_steps=7", "--config.model.dropout=0.2"])
    by_name = {p.name: p for p in points}
    assert set(by_name) == {"base", "g-batch_size=8-rule=linear", "g-batch_size=8-rule=sqrt",
                            "g-batch_size=32-rule=linear", "g-batch_size=32-rule=sqrt", "warm"}
    assert by_name["g-batch_size=32-rule=linear"].config.train.learning_rate == pytest.approx(4e-2)
    assert by_name["g-batch_size=32-rule=sqrt"].config.train.learning_rate == pytest.approx(2e-2)
    assert by_name["g-batch_size=8-rule=sqrt"].same_as == "g-batch_size=8-rule=linear"
    assert all(p.config.train.num_steps == 7 for p in points)  # --all.* reaches every point ...
    assert by_name["g-batch_size=8-rule=linear"].config.model.dropout == 0.1  # ... but a point's own field wins
    assert by_name["base"].config.model.dropout == 0.2
    warm = language.run_config(by_name["warm"], 3, tmp_path / "sweep", by_name)
    assert warm.model.init_from == str((tmp_path / "sweep" / "base" / "seed_3").resolve())
    assert warm.train.seed == 3 and warm.train.resume
    assert results.swept_fields(points) == ["model.dropout", "train.batch_size", "lr_scaling.rule"]

    def refused(match, **changes):
        bad = tiny_sweep(tmp_path, **changes)
        with pytest.raises(ConfigError, match=match):
            expand.expand_sweep(bad)

    refused(r"unknown config field 'model.hiden_dim'; did you mean model.hidden_dim",
            points=(sweeps.point("base"), sweeps.point("x", fields={"model.hiden_dim": 3})))
    refused(r"cannot set model.hidden_dim='wide'",
            points=(sweeps.point("base"), sweeps.point("x", fields={"model.hidden_dim": "wide"})))
    refused(r"refers to point 'nowhere'",
            points=(sweeps.point("base"), sweeps.point("x", fields={"model.init_from": "@nowhere"})))
    refused(r"lr_scaling.rule='cubic' must be one of", lr_scaling=ml_collections.ConfigDict(
        {"rule": "cubic", "reference_batch": 64}))
    refused(r"two sweep points are named 'base'", points=(sweeps.point("base"), sweeps.point("base")))
    refused(r"config.only names points the sweep does not have", only=("nope",))
    refused(r"base config .*missing.py does not exist", base=str(tmp_path / "missing.py"))
    refused(r"sweep point 'x': train.batch_size=12 is not a multiple of the 8 devices",
            points=(sweeps.point("base"), sweeps.point("x", fields={"train.batch_size": 12})))
    with pytest.raises(ConfigError, match=r"no sweep point has the config field --all.model.hiden_dim; did you mean "
                                          r"--all.model.hidden_dim"):
        expand.expand_sweep(tiny_sweep(tmp_path), ["--config.model.hiden_dim=3"])
    with pytest.raises(ConfigError, match=r"sweep point 'base': .*--all.model.hidden_dim"):
        expand.expand_sweep(tiny_sweep(tmp_path), ["--config.model.hidden_dim=wide"])
    mixed = tiny_sweep(tmp_path, points=(sweeps.point("base"),
                                         sweeps.point("a", base=REPO / "configs" / "approach_a.py")))
    a = {p.name: p for p in expand.expand_sweep(mixed, ["--config.model.loss.temperature=0.3"])}["a"]
    assert a.config.model.loss.temperature == 0.3  # --all.* on the points that have the field
    only = expand.expand_sweep(tiny_sweep(tmp_path, only=("wide",)))
    assert [p.name for p in only] == ["base", "wide"]  # the baseline comes along
    three = tiny_sweep(tmp_path, points=(*tiny_sweep(tmp_path).points, sweeps.point("deep", fields={
        "model.hidden_dim": 64})), only=("wide",))
    assert results.left_out_points(three, expand.expand_sweep(three)) == ["deep"]  # said in results.json
    assert results.left_out_points(tiny_sweep(tmp_path), expand.expand_sweep(tiny_sweep(tmp_path))) == []


def test_seed_pooling_averages_pair_outcomes():
    table = rated_table()
    rng = np.random.default_rng(3)
    runs = [Predictions(scores=table.label_mean + rng.normal(0, s, table.label_mean.shape)) for s in (0.05, 0.3)]
    pooled = seed_pooling.pooled_interval(runs, table, num_replicates=300)
    each = [comparison.accuracy_interval(r, table, num_replicates=300)["mean"]["estimate"] for r in runs]
    assert pooled["mean"]["estimate"] == pytest.approx(np.mean(each))
    assert pooled["mean"]["low"] < pooled["mean"]["estimate"] < pooled["mean"]["high"]
    same = seed_pooling.pooled_difference(runs, runs, table, num_replicates=100)
    assert same["mean"]["low"] == same["mean"]["high"] == 0.0
    better = seed_pooling.pooled_difference(runs[:1], runs[1:], table, num_replicates=300)
    assert better["mean"]["estimate"] == pytest.approx(each[0] - each[1]) and better["excludes_zero"]
    assert seed_pooling.seed_spread([0.6, 0.7, None]) == pytest.approx(np.std([0.6, 0.7], ddof=1))
    assert seed_pooling.seed_spread([0.6]) is None


def test_a_two_point_sweep_killed_in_its_second_point_resumes(tmp_path, monkeypatch, capsys):
    import crescend_jax.data.store as store
    from crescend_jax.train import trainer
    from crescend_jax.train.trainer import TrainingStopped

    table = rated_table()
    monkeypatch.setattr(store, "load_table", lambda config: table)
    sweep_file = tmp_path / "two.py"
    sweep_file.write_text(f'''
from crescend_jax.sweeps import default_sweep_config, point

def get_config():
    config = default_sweep_config()
    config.base = {str(tmp_path / "tiny.py")!r}
    config.baseline = "base"
    config.seeds = (0, 1)
    config.points = (point("base"), point("wide", fields={{"model.hidden_dim": 48}}))
    return config
''')
    (tmp_path / "tiny.py").write_text(TINY_CONFIG)
    real_train, calls = trainer.train, []

    def killed_in_wide(config, workdir, *args, **kwargs):
        calls.append(Path(workdir).parent.name)
        if Path(workdir).parent.name == "wide" and Path(workdir).name == "seed_0":
            config.train.stop_after_steps = 12  # a kill after step 12; the step-10 checkpoint survives
        return real_train(config, workdir, *args, **kwargs)

    monkeypatch.setattr(trainer, "train", killed_in_wide)
    out = tmp_path / "sweep"
    argv = ["sweep", f"--config={sweep_file}", f"--workdir={out}", "--all.train.num_steps=20"]
    with pytest.raises(TrainingStopped):
        cli.main(argv)
    base_metrics = out / "base" / "seed_0" / "metrics.json"
    written = base_metrics.stat().st_mtime_ns
    assert calls == ["base", "base", "wide"] and not (out / "wide" / "seed_0" / "metrics.json").exists()
    assert (out / "wide" / "seed_0" / "fold_0" / "checkpoints").is_dir()

    calls.clear()
    monkeypatch.setattr(trainer, "train", lambda config, workdir, *a, **k: (calls.append(Path(workdir).parent.name),
                                                                           real_train(config, workdir, *a, **k))[1])
    assert cli.main(argv) == 0
    assert calls == ["wide", "wide"]  # the finished point is skipped ...
    assert base_metrics.stat().st_mtime_ns == written
    done = json.loads((out / "wide" / "seed_0" / "fold_0" / "done.json").read_text())
    assert done["steps"] == 20
    steps = [json.loads(line)["step"] for line in
             (out / "wide" / "seed_0" / "fold_0" / "metrics.jsonl").read_text().splitlines()]
    assert steps[-1] == 20
    results = json.loads((out / "results.json").read_text())
    wide = results["points"]["wide"]
    assert wide["status"] == "done" and wide["values"] == {"model.hidden_dim": 48}
    seeds = [json.loads((out / "wide" / f"seed_{s}" / "metrics.json").read_text()) for s in (0, 1)]
    # pooled over seeds: the mean of the seeds' own numbers, the spread beside it
    accuracy = [m["pooled"]["pairwise_accuracy"]["mean"] for m in seeds]
    assert wide["pooled"]["interval"]["mean"]["estimate"] == pytest.approx(np.mean(accuracy))
    assert wide["pooled"]["seed_std"]["pairwise_accuracy"] == pytest.approx(np.std(accuracy, ddof=1))
    assert [row["accuracy"] for row in wide["per_seed"]] == pytest.approx(accuracy)
    assert wide["pooled"]["versus_baseline"]["mean"]["estimate"] == pytest.approx(
        np.mean([m["versus_baseline"]["mean"]["estimate"] for m in seeds]))
    assert wide["pooled"]["reference"]["difference"]["mean"]["estimate"] == pytest.approx(
        np.mean([m["reference"]["difference"]["mean"]["estimate"] for m in seeds]))
    markdown = (out / "results.md").read_text()
    assert "| wide | baseline |" in markdown and "Regenerate: `crescend-jax sweep" in markdown
    # one held-out composition: every interval is degenerate, said in the table and on the console, never real
    assert "no Score [95% CI]" in markdown and "eval.bootstrap='two_stage'" in markdown
    assert "Degenerate intervals (no difference on them is called real):" in markdown
    assert "- 1 held-out composition: this interval cannot speak for new music" in markdown
    printed = capsys.readouterr().err
    assert "[sweep] warning: 1 held-out composition: this interval cannot speak for new music" in printed
    assert "(!)" in markdown and wide["pooled"]["interval"]["num_seeds"] == 2
    assert wide["pooled"]["versus_baseline"]["real"] is False
    header = (out / "results.csv").read_text().splitlines()[0].split(",")
    assert header[:4] == ["point", "approach", "encoder", "model.hidden_dim"]
    assert (out / "plot_model_hidden_dim.png").is_file()  # base (32) and wide (48) on one line
    assert (out / "dimensions.md").is_file() and (out / "dimensions.png").is_file()

    # a third run does nothing but the table; `analyze` reads the sweep
    calls.clear()
    assert cli.main(argv) == 0 and calls == []
    capsys.readouterr()
    assert cli.main(["analyze", f"--workdir={out}", f"--out={tmp_path / 'analysis'}"]) == 0
    printed = capsys.readouterr().out
    assert "wide: " in printed and "base: no baseline comparison" in printed
    assert (tmp_path / "analysis" / "dimensions.png").is_file()
    assert cli.main(["analyze"]) == 2

    # an eval-only change re-evaluates every point with the new settings, without training a step more; then it
    # is finished again
    steps_before = (out / "wide" / "seed_0" / "fold_0" / "metrics.jsonl").read_text()
    eval_argv = argv + ["--all.eval.bootstrap_replicates=150"]
    assert cli.main(eval_argv) == 0
    assert (out / "wide" / "seed_0" / "fold_0" / "metrics.jsonl").read_text() == steps_before
    assert base_metrics.stat().st_mtime_ns > written
    assert json.loads(base_metrics.read_text())["eval_config"]["bootstrap_replicates"] == 150
    calls.clear()
    assert cli.main(eval_argv) == 0 and calls == []
    capsys.readouterr()

    # a point changed after it ran is not taken as finished: the trainer refuses to resume it, the sweep says so
    sweep_file.write_text(sweep_file.read_text().replace('"model.hidden_dim": 48', '"model.hidden_dim": 64'))
    assert cli.main(argv) == 1
    assert "cannot resume" in capsys.readouterr().err
    results = json.loads((out / "results.json").read_text())
    assert results["points"]["wide"]["status"] == "failed" and results["points"]["base"]["status"] == "done"
    assert "cannot resume" in results["points"]["wide"]["error"]
    assert cli.main(["analyze", "--runs", str(tmp_path / "nowhere")]) == 1


def test_a_point_compared_with_another_baseline_is_not_finished(tmp_path):
    """`finished` checks which baseline a run was compared with: changing a point's baseline re-evaluates it."""
    from crescend_jax.data import fingerprint

    run, first, second = tmp_path / "run", tmp_path / "first", tmp_path / "second"
    for workdir in (run, first, second):
        workdir.mkdir()
        (workdir / "heldout.npz").write_bytes(b"saved")
    fingerprint.write_record(run, {}, [{"fold": 0, "test_keys": []}])
    (run / "fold_0").mkdir()
    (run / "fold_0" / "done.json").write_text("{}")
    (run / "metrics.json").write_text(json.dumps({"versus_baseline": {"baseline": str(first.resolve())}}))
    assert finished_lib.finished(run, first) and not finished_lib.finished(run, second)
    (run / "metrics.json").write_text(json.dumps({"versus_baseline": {}}))  # an older evaluation: which is unknown
    assert not finished_lib.finished(run, first) and finished_lib.finished(run)
    (run / "heldout.npz").write_bytes(b"")  # an empty file (a full disk, before writes were atomic): not finished
    assert not finished_lib.finished(run)
    (run / "heldout.npz").write_bytes(b"saved")
    (run / "metrics.json").write_text('{"versus_baseline": {"bas')  # half-written
    assert not finished_lib.finished(run)


def test_table_only_trains_nothing_and_lists_what_did_not_run(tmp_path, monkeypatch):
    from crescend_jax.sweeps import run as run_lib

    monkeypatch.setattr(run_lib, "run_point", lambda *a, **k: pytest.fail("table_only must not train"))
    sweep = tiny_sweep(tmp_path, table_only=True)
    command = "crescend-jax sweep --config=tiny.py --workdir=w --config.table_only=True"
    assert run_lib.run_sweep(sweep, tmp_path / "w", command=command) == 0
    written = json.loads((tmp_path / "w" / "results.json").read_text())
    assert {name: p["status"] for name, p in written["points"].items()} == {"base": "not run", "wide": "not run"}
    assert written["command"] == "crescend-jax sweep --config=tiny.py --workdir=w"  # the command that trains them
