"""model.py as a training script: input pipeline, schedule, run directory, resume, errors, backends."""
import csv
import importlib.util
import json
import os
import shlex
import shutil
import subprocess
import sys

import h5py
import numpy as np
import pytest

import keras

import DataPrepare
import model
import network
import rundir
import training
from network import build_model, classifier
from patchfile import PatchFile
from training import RotatedPatches, lr_at

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
TINY = ["--ema", "0", "--filters", "8", "--fusion_units", "8"]


def train(args):
    model.main(args)


def history(run):
    with open(os.path.join(run, "history.csv")) as f:
        return list(csv.DictReader(f))


# ----------------------------------------------------------------------------- pipeline and schedule
def test_each_epoch_holds_every_patch_in_its_four_rotations_once():
    n, p = 10, 5
    hsi = np.random.default_rng(0).uniform(0, 1, (n, p, p, 3)).astype("float32")
    group = {"hsi": hsi, "aux": 7 - hsi[..., :1], "label": np.arange(n)}  # aux: unlike any HSI band
    data = RotatedPatches(group, batch_size=8, seed=1)
    seen = []
    for i in range(len(data)):
        x, y = data[i]
        np.testing.assert_array_equal(y["rec_hsi"], x["hsi"])
        np.testing.assert_array_equal(y["rec_aux"], x["aux"])  # each decoder's target is its own modality
        np.testing.assert_array_equal(x["aux"][..., 0], 7 - x["hsi"][..., 0])  # both modalities turned alike
        for patch, label in zip(x["hsi"], y["class"]):
            turns = [t for t in range(4) if np.array_equal(np.rot90(hsi[label], t), patch)]
            assert len(turns) == 1
            seen.append((int(label), turns[0]))
    assert sorted(seen) == [(i, t) for i in range(n) for t in range(4)]
    first = data[0][1]["class"].copy()
    data.on_epoch_end()
    assert not np.array_equal(first, data[0][1]["class"])  # reshuffled
    again = RotatedPatches(group, batch_size=8, seed=1, epoch=1)
    np.testing.assert_array_equal(again[0][1]["class"], data[0][1]["class"])  # a function of (seed, epoch)


def test_fit_trains_epoch_e_on_the_order_of_epoch_e(monkeypatch):
    """Keras' fit calls a dataset's on_epoch_end once before the first epoch; the batches must still
    be those of epoch_order(seed, e) in epoch e (resumed and uninterrupted runs, and the JAX fast
    path, all follow that order)."""
    seen = []
    original = RotatedPatches.__getitem__
    monkeypatch.setattr(RotatedPatches, "__getitem__", lambda self, i: seen.append((self.epoch, i)) or original(self, i))
    rng = np.random.default_rng(0)
    data = {"hsi": rng.uniform(0, 1, (12, 5, 5, 3)).astype("float32"),
            "aux": rng.uniform(0, 1, (12, 5, 5, 1)).astype("float32"), "label": rng.integers(0, 3, 12)}
    net = build_model(3, 1, 3, patch_size=5, filters=4, fusion_units=4)
    config = {**model.DEFAULTS, "epochs": 2, "batch_size": 16, "fast_path": "off"}
    training.compile_model(net, config)
    training.fit(net, data, config, 0, [])
    per_epoch = {e: sorted(i for ee, i in seen if ee == e) for e in {e for e, _ in seen}}
    assert set(per_epoch) <= {0, 1} and per_epoch[1] == [0, 1, 2], per_epoch  # 48 pairs in batches of 16


def test_learning_rate_is_constant_then_decays_exponentially():
    config = dict(lr=6e-5, lr_constant_epochs=20, lr_decay=0.005)
    assert [lr_at(e, config) for e in (0, 19)] == [6e-5, 6e-5]
    assert lr_at(20, config) == pytest.approx(6e-5 * np.exp(-0.005))
    assert lr_at(499, config) == pytest.approx(6e-5 * np.exp(-0.005 * 480))


# ----------------------------------------------------------------------------- errors
REFUSED_OVERRIDES = [
    (["--epoch", "5"], "unrecognized arguments: --epoch 5"),
    (["--epochs", "five"], "argument --epochs: invalid int value: 'five'"),
    (["--coupled", "maybe"], "expected true or false"),
    (["--kernel_sizes", "3,4"], "kernel_sizes must be odd integers separated by commas, got '3,4'"),
    (["--resume", "runs/x", "--lr", "1e-3"], "only --epochs and --max_minutes may change, not --lr"),
]


def test_unknown_override_and_wrong_type_are_refused(capsys):
    for argv, message in REFUSED_OVERRIDES:
        with pytest.raises(SystemExit):
            model.parse_config(argv)
        assert message in capsys.readouterr().err
    config = model.parse_config(["--epochs", "7", "--batch-size", "32", "--coupled", "false", "--lr", "1e-3"])
    assert (config["epochs"], config["batch_size"], config["coupled"], config["lr"]) == (7, 32, False, 1e-3)


def test_a_file_not_made_by_dataprepare_is_refused(tmp_path):
    bad = tmp_path / "other.h5"
    with h5py.File(bad, "w") as f:
        f.create_dataset("x", data=np.zeros(3))
    with pytest.raises(SystemExit, match=r"other.h5: attributes \['dataset', 'class_names', 'patch_size'\] missing"):
        train(["--data", str(bad), "--out", str(tmp_path / "run")])
    with h5py.File(bad, "a") as f:
        f.attrs.update(dataset="x", class_names=["a", "b"], patch_size=5)
    with pytest.raises(SystemExit, match=r"other.h5: made by an older DataPrepare.py.*prepare it again"):
        train(["--data", str(bad), "--out", str(tmp_path / "run")])
    with h5py.File(bad, "a") as f:
        f.attrs["format_version"] = 2
    with pytest.raises(SystemExit, match=r"other.h5: attributes \['palette', 'normalise', 'normalisation', 'split'\] "
                                         r"missing: not a complete patch file"):
        train(["--data", str(bad), "--out", str(tmp_path / "run")])
    with h5py.File(bad, "a") as f:
        f.attrs.update(palette=[[0, 0, 0], [9, 9, 9]], normalise="scene", normalisation="x", split="given")
    with pytest.raises(SystemExit, match=r"other.h5: group 'scene' missing \(it has \['x'\]\): not a complete patch"):
        train(["--data", str(bad), "--out", str(tmp_path / "run")])


def test_recorded_command_reruns_as_written(demo_h5, tmp_path):
    """config.json's command, split as a shell would, gives back the arguments: paths with spaces too."""
    argv = ["--data", str(demo_h5), "--out", str(tmp_path / "a run with spaces"), "--epochs", "1", "--lr", "1e-3"]
    config, state = model.new_run(model.parse_config(argv), argv)
    recorded = json.load(open(tmp_path / "a run with spaces" / "config.json"))["command"]
    assert shlex.split(recorded) == ["python", "model.py", *argv] and state == {"epochs_done": 0}


def test_a_non_empty_out_is_refused_and_left_untouched(demo_h5, tmp_path):
    run = tmp_path / "run"
    run.mkdir()
    (run / "notes.txt").write_text("mine")
    with pytest.raises(SystemExit, match=rf"{run} is not empty: continue the run there with --resume {run}, "
                                         r"or start it afresh with --overwrite"):
        train(["--data", str(demo_h5), "--out", str(run), "--epochs", "1", *TINY])
    with pytest.raises(SystemExit, match="no config.json, so it is not a run directory: --overwrite only replaces runs"):
        train(["--data", str(demo_h5), "--out", str(run), "--epochs", "1", "--overwrite", *TINY])
    assert os.listdir(run) == ["notes.txt"] and (run / "notes.txt").read_text() == "mine"


@pytest.mark.slow
def test_overwrite_starts_afresh_and_resume_checks_the_data_and_records_each_job(demo_h5, tmp_path):
    data, run = str(tmp_path / "demo.h5"), str(tmp_path / "run")
    shutil.copyfile(demo_h5, data)
    common = ["--data", data, "--out", run, "--lr", "1e-3", *TINY]
    train([*common, "--epochs", "1"])
    train([*common, "--epochs", "1", "--overwrite"])
    assert [r["epoch"] for r in history(run)] == ["0"]  # the first run's rows are gone with it
    # max_minutes belongs to the job that set it: this one stops after its first epoch ...
    train([*common, "--epochs", "3", "--overwrite", "--max_minutes", "1e-6"])
    assert len(history(run)) == 1
    train(["--resume", run, "--epochs", "2"])  # ... and this one runs to its end
    train(["--resume", run, "--epochs", "3", "--max_minutes", "0"])
    assert [r["epoch"] for r in history(run)] == ["0", "1", "2"]
    config = json.load(open(os.path.join(run, "config.json")))
    assert shlex.split(config["command"])[-2:] == ["--max_minutes", "1e-6"]  # the first job's command stays
    assert [(j["overrides"], j["max_minutes"], j["from_epoch"]) for j in config["resumes"]] == \
        [({"epochs": 2}, 0.0, 1), ({"epochs": 3}, 0.0, 2)]
    assert shlex.split(config["resumes"][0]["command"]) == ["python", "model.py", "--resume", run, "--epochs", "2"]
    recorded = config["data_sha256"]
    with h5py.File(data, "a") as f:  # the same path, prepared again
        f.attrs["seed"] = 99
    before = sorted(os.listdir(run)), open(os.path.join(run, "config.json")).read()
    with pytest.raises(SystemExit, match=rf"demo.h5: sha256 [0-9a-f]{{16}}\.\.\. is not {recorded[:16]}\.\.\., the file "
                                         rf"{run} was trained on"):
        train(["--resume", run, "--epochs", "4"])
    assert (sorted(os.listdir(run)), open(os.path.join(run, "config.json")).read()) == before


def test_select_val_needs_a_validation_group(tmp_path):
    path = str(tmp_path / "noval.h5")
    DataPrepare.main(["--dataset", "demo", "--out", path])
    with pytest.raises(SystemExit, match="group 'val' missing.*--val-fraction"):
        train(["--data", path, "--out", str(tmp_path / "run"), "--select", "val", *TINY])


# ----------------------------------------------------------------------------- the joint loss
def test_logged_losses_are_ce_plus_lambda1_rmse_aux_plus_lambda2_rmse_hsi(demo_h5):
    """On one fixed batch, with lambda1 != lambda2: the loss Keras reports is the paper's sum."""
    keras.utils.set_random_seed(0)
    with PatchFile(demo_h5) as pf:
        data = pf.load("train", stop=32)
    arch = dict(hsi_bands=data["hsi"].shape[-1], aux_bands=data["aux"].shape[-1], num_classes=6, filters=8,
                fusion_units=8)
    net = build_model(**arch)
    training.compile_model(net, {**model.DEFAULTS, "lambda1": 0.3, "lambda2": 2.5})
    x = {"hsi": data["hsi"], "aux": data["aux"]}
    logged = net.evaluate(x, {"class": data["label"], "rec_aux": x["aux"], "rec_hsi": x["hsi"]}, batch_size=32,
                          return_dict=True, verbose=0)
    out = {k: np.asarray(v, np.float64) for k, v in net(x, training=False).items()}
    ce = -np.mean(np.log(out["class"][np.arange(32), data["label"]]))
    rmse_aux = np.sqrt(np.mean((out["rec_aux"] - x["aux"]) ** 2))
    rmse_hsi = np.sqrt(np.mean((out["rec_hsi"] - x["hsi"]) ** 2))
    assert logged["class_loss"] == pytest.approx(ce, rel=1e-4)
    assert logged["rec_aux_loss"] == pytest.approx(rmse_aux, rel=1e-4)
    assert logged["rec_hsi_loss"] == pytest.approx(rmse_hsi, rel=1e-4)
    assert logged["loss"] == pytest.approx(ce + 0.3 * rmse_aux + 2.5 * rmse_hsi, rel=1e-4)


def test_each_decoder_reconstructs_from_the_other_modality():
    """rec_aux (H -> L) sees HSI features only and rec_hsi (L -> H) second-modality features only:
    changing one input moves only the reconstruction made from it."""
    rng = np.random.default_rng(0)
    net = build_model(6, 2, 3, patch_size=5, filters=8, fusion_units=8)
    x = {"hsi": rng.uniform(0, 1, (4, 5, 5, 6)).astype("float32"), "aux": rng.uniform(0, 1, (4, 5, 5, 2)).astype("float32")}
    base = {k: np.asarray(v) for k, v in net(x, training=False).items()}
    for changed, moves, stays in (("hsi", "rec_aux", "rec_hsi"), ("aux", "rec_hsi", "rec_aux")):
        other = {**x, changed: rng.uniform(0, 1, x[changed].shape).astype("float32")}
        out = {k: np.asarray(v) for k, v in net(other, training=False).items()}
        np.testing.assert_array_equal(out[stays], base[stays])
        assert np.abs(out[moves] - base[moves]).max() > 1e-6


# ----------------------------------------------------------------------------- saving
def test_saving_and_loading_round_trips_predictions_exactly(tmp_path):
    net = build_model(10, 2, 3, patch_size=5, filters=8, fusion_units=8)
    training.compile_model(net, {**model.DEFAULTS, "lr": 1e-3})
    rng = np.random.default_rng(0)
    x = {"hsi": rng.uniform(0, 1, (16, 5, 5, 10)).astype("float32"), "aux": rng.uniform(0, 1, (16, 5, 5, 2)).astype("float32")}
    net.fit(x, {"class": rng.integers(0, 3, 16), "rec_aux": x["aux"], "rec_hsi": x["hsi"]}, epochs=1, verbose=0)
    net.save(tmp_path / "m.keras")
    loaded = keras.saving.load_model(tmp_path / "m.keras")
    for key, value in net.predict(x, verbose=0).items():
        np.testing.assert_array_equal(loaded.predict(x, verbose=0)[key], value)


# ----------------------------------------------------------------------------- weight averaging
def test_a_run_too_short_for_its_average_is_warned():
    config = {"ema": 0.995, "epochs": 8, "batch_size": 64}  # 8 epochs of 2 steps: 16 steps, horizon 200
    assert "only 16" in training.averaging_note(config, 32) and "--ema 0" in training.averaging_note(config, 32)
    assert training.averaging_note({**config, "epochs": 20}, 2832) is None  # the stand-in: 3,540 steps
    assert training.averaging_note({**config, "ema": 0.0}, 32) is None


def test_weight_averaging_is_the_moving_average_of_the_raw_weights(tmp_path):
    """ema = m: after the first step the average is the weights; then avg = m avg + (1 - m) w after
    every step. Computed here from the raw weights step by step, and read back from a saved
    checkpoint the way evaluate.py reads it (network.load_classifier(averaged=True))."""
    keras.utils.set_random_seed(0)
    arch = dict(hsi_bands=6, aux_bands=1, num_classes=3, patch_size=5, filters=4, fusion_units=4)
    net = build_model(**arch)
    training.compile_model(net, {**model.DEFAULTS, "lr": 1e-2, "ema": 0.8})
    rng = np.random.default_rng(0)
    x = {"hsi": rng.uniform(0, 1, (32, 5, 5, 6)).astype("float32"), "aux": rng.uniform(0, 1, (32, 5, 5, 1)).astype("float32")}
    y = {"class": rng.integers(0, 3, 32), "rec_aux": x["aux"], "rec_hsi": x["hsi"]}
    seen = []
    record = keras.callbacks.LambdaCallback(
        on_train_batch_end=lambda b, logs: seen.append([v.numpy().copy() for v in net.trainable_variables]))
    net.fit(x, y, batch_size=8, epochs=2, shuffle=False, verbose=0, callbacks=[record])
    assert len(seen) == 8
    average = seen[0]
    for weights in seen[1:]:
        average = [0.8 * a + 0.2 * w for a, w in zip(average, weights)]
    net.save(tmp_path / "final.keras")  # fit's end put the average into the model; the optimizer keeps it too
    stored = network.averaged_values(str(tmp_path / "final.keras"))
    for want, got in zip(average, stored):
        np.testing.assert_allclose(got, want, rtol=1e-5, atol=1e-6)
    assert not np.allclose(seen[-1][0], average[0])  # the average is not the last weights
    clf = network.load_classifier(arch, str(tmp_path / "final.keras"), averaged=True)
    direct = build_model(**arch)
    direct.set_weights(net.get_weights())
    for var, value in zip(direct.trainable_variables, average):
        var.assign(value)
    np.testing.assert_allclose(np.asarray(clf.predict(x, verbose=0)),
                               np.asarray(direct.predict(x, verbose=0)["class"]), rtol=1e-5, atol=1e-6)


@pytest.mark.slow
def test_a_killed_run_with_weight_averaging_resumes_exactly_and_is_scored_averaged(demo_h5, tmp_path):
    import evaluate
    common = ["--data", str(demo_h5), "--lr", "1e-3", *TINY, "--ema", "0.9", "--select", "val"]
    whole, resumed = str(tmp_path / "whole"), str(tmp_path / "resumed")
    train([*common, "--out", whole, "--epochs", "3"])
    train([*common, "--out", resumed, "--epochs", "2"])
    train(["--resume", resumed, "--epochs", "3"])
    assert without_times(history(resumed)) == without_times(history(whole))
    same_weights(whole, resumed, "final.keras")
    for a, b in zip(*(network.averaged_values(os.path.join(r, "final.keras")) for r in (whole, resumed))):
        np.testing.assert_array_equal(a, b)
    evaluate.main(["--run", whole])
    m = json.load(open(os.path.join(whole, "metrics.json")))
    assert "averaged" in m["weights"] and "moving average, ema=0.9" in m["protocol"]
    config = json.load(open(os.path.join(whole, "config.json")))
    clf = network.load_classifier(config["architecture"], os.path.join(whole, "selected.keras"), averaged=True)
    with PatchFile(demo_h5) as pf:
        assert m["OA"] == pytest.approx(np.mean(network.predict_split(clf, pf, "test") == pf.labels("test")), abs=1e-12)


# ----------------------------------------------------------------------------- end to end
@pytest.mark.slow
def test_short_training_lowers_every_loss_and_beats_chance(demo_h5, tmp_path):
    run = str(tmp_path / "run")
    train(["--data", str(demo_h5), "--out", run, "--epochs", "6", "--lr", "1e-3", "--filters", "16", "--fusion_units", "16",
           "--bn_momentum", "0.9", "--ema", "0"])
    rows = history(run)
    for key in ("loss", "class_loss", "rec_aux_loss", "rec_hsi_loss"):
        assert float(rows[-1][key]) < float(rows[0][key]), key
    assert float(rows[-1]["class_loss"]) < 0.5 * float(rows[0]["class_loss"])
    for name in ("config.json", "state.json", "final.keras", "selected.keras", "curves.png", "tensorboard"):
        assert os.path.exists(os.path.join(run, name)), name
    with PatchFile(demo_h5) as pf:
        info, test = pf.info(), pf.load("test")
    clf = classifier(keras.saving.load_model(os.path.join(run, "selected.keras")))
    pred = np.argmax(clf.predict({"hsi": test["hsi"], "aux": test["aux"]}, verbose=0), -1)
    accuracy = np.mean(pred == test["label"])
    assert accuracy > 4 / info["num_classes"], accuracy  # chance is 1/6 on the demo scene
    config = json.load(open(os.path.join(run, "config.json")))
    assert config["epochs"] == 6 and config["protocol"] == rundir.PROTOCOLS["last"] and config["synthetic"]


def without_times(rows):
    return [{k: v for k, v in row.items() if k != "epoch_seconds"} for row in rows]


def same_weights(run_a, run_b, name):
    a, b = (keras.saving.load_model(os.path.join(r, name)) for r in (run_a, run_b))
    for wa, wb in zip(a.get_weights(), b.get_weights()):
        np.testing.assert_array_equal(wa, wb)


@pytest.mark.slow
def test_killed_runs_resume_to_exactly_the_uninterrupted_run(demo_h5, tmp_path):
    """The learning rate decays every epoch here, so a resumed run on the wrong rate would differ.
    Two kills: one after an epoch's history row only (a stray row), one after its final.keras but
    before its state.json (a checkpoint ahead of the state)."""
    common = ["--data", str(demo_h5), "--lr", "1e-3", "--lr_constant_epochs", "1", "--lr_decay", "0.7", *TINY,
              "--select", "val"]
    whole, stray, ahead = (str(tmp_path / n) for n in ("whole", "stray", "ahead"))
    train([*common, "--out", whole, "--epochs", "4"])
    rate = keras.saving.load_model(os.path.join(whole, "final.keras")).optimizer.learning_rate
    assert float(rate) == pytest.approx(1e-3 * np.exp(-0.7 * 3), rel=1e-5)  # epoch 4's rate

    train([*common, "--out", stray, "--epochs", "2"])
    with open(os.path.join(stray, "history.csv")) as f:
        last = f.read().splitlines()[-1]
    with open(os.path.join(stray, "history.csv"), "a") as f:  # epoch 3's row, logged just before a kill
        f.write("2," + last.split(",", 1)[1] + "\n")
    train(["--resume", stray, "--epochs", "4"])

    train([*common, "--out", ahead, "--epochs", "2"])
    state_after_2 = open(os.path.join(ahead, "state.json")).read()
    train(["--resume", ahead, "--epochs", "3"])
    with open(os.path.join(ahead, "state.json"), "w") as f:  # killed before epoch 3's state.json
        f.write(state_after_2)
    train(["--resume", ahead, "--epochs", "4"])

    want = json.load(open(os.path.join(whole, "state.json")))
    for run in (stray, ahead):
        assert without_times(history(run)) == without_times(history(whole)), run
        for name in ("final.keras", "selected.keras"):
            same_weights(whole, run, name)
        state = json.load(open(os.path.join(run, "state.json")))
        assert {k: state[k] for k in ("epochs_done", "selected_epoch", "best")} == \
            {k: want[k] for k in ("epochs_done", "selected_epoch", "best")}
    rows = history(whole)
    assert want["selected_epoch"] == 1 + max(range(4), key=lambda e: float(rows[e]["val_accuracy"]))


@pytest.mark.slow
def test_authors_protocol_without_reconstruction(demo_h5, tmp_path):
    """--select authors monitors the TEST split and keeps its best epoch; --reconstruction false
    trains the classification path alone."""
    run = str(tmp_path / "run")
    train(["--data", str(demo_h5), "--out", run, "--epochs", "3", "--lr", "3e-3", *TINY, "--select", "authors",
           "--reconstruction", "false", "--bn_momentum", "0.9"])
    rows = history(run)
    assert "test_accuracy" in rows[0] and not any(k.startswith("rec_") for k in rows[0])
    state = json.load(open(os.path.join(run, "state.json")))
    accs = [float(r["test_accuracy"]) for r in rows]
    assert state["selected_epoch"] == 1 + int(np.argmax(accs)) and state["best"] == max(accs)
    net = keras.saving.load_model(os.path.join(run, "selected.keras"))
    assert list(net.output) == ["class"]
    with PatchFile(demo_h5) as pf:
        test = pf.load("test")
    pred = network.predict_labels(net, test["hsi"], test["aux"])
    assert np.mean(pred == test["label"]) == pytest.approx(state["best"], abs=1e-9)  # the logged TEST accuracy
    config = json.load(open(os.path.join(run, "config.json")))
    assert config["protocol"] == rundir.PROTOCOLS["authors"] and config["lambda1"] == 1.0


@pytest.mark.slow
@pytest.mark.parametrize("gpu", [False, True], ids=["bfloat16", "float16-loss-scaled"])
def test_mixed_precision_training(demo_h5, tmp_path, monkeypatch, gpu):
    """Mixed precision trains, saves and resumes: bfloat16 as on a CPU, and float16 with loss scaling
    as on a GPU (the policy model.py picks when it sees one, forced here on the CPU)."""
    monkeypatch.setattr(network, "gpu_count", lambda: int(gpu))
    run = str(tmp_path / "run")
    try:
        train(["--data", str(demo_h5), "--out", run, "--epochs", "1", "--lr", "1e-3", *TINY, "--precision", "mixed"])
        train(["--resume", run, "--epochs", "2"])
        net = keras.saving.load_model(os.path.join(run, "final.keras"))
    finally:
        keras.mixed_precision.set_dtype_policy("float32")
    want = "float16" if gpu else "bfloat16"
    assert net.get_layer("coupled_block_k3").compute_dtype == want
    assert isinstance(net.optimizer, keras.optimizers.LossScaleOptimizer) == gpu
    rows = history(run)
    assert len(rows) == 2 and all(np.isfinite(float(r["loss"])) for r in rows)
    assert float(net.optimizer.learning_rate) == pytest.approx(1e-3)


@pytest.mark.slow
@pytest.mark.skipif(importlib.util.find_spec("jax") is None, reason="JAX is not installed (CI installs it)")
@pytest.mark.parametrize("stacked", ["true", "false"])
def test_tiny_training_under_the_jax_backend(demo_h5, tmp_path, stacked):
    """Both builds of the coupled block train under JAX without TensorFlow (the plain build's
    per-stream batch-norm update once failed there), with weight averaging on, and the second epoch
    resumes; evaluate.py then scores the averaged weights under JAX too."""
    env = {**os.environ, "KERAS_BACKEND": "jax"}
    run = str(tmp_path / "jax")
    # as if TensorFlow were not installed: any import of it fails
    code = ("import sys; sys.modules['tensorflow'] = None; import keras; "
            "assert keras.backend.backend() == 'jax'; import model; model.main(sys.argv[1:])")
    for args in (["--data", str(demo_h5), "--out", run, "--epochs", "1", "--lr", "1e-3", "--stacked_streams", stacked,
                  "--select", "val", *TINY, "--ema", "0.9"], ["--resume", run, "--epochs", "2"]):
        proc = subprocess.run([sys.executable, "-c", code, *args], cwd=ROOT, env=env, capture_output=True, text=True,
                              timeout=600)
        assert proc.returncode == 0, proc.stderr[-3000:]
    config = json.load(open(os.path.join(run, "config.json")))
    assert len(history(run)) == 2 and config["backend"] == "jax" and config["stacked_streams"] == (stacked == "true")
    if stacked == "true":
        code = "import sys; sys.modules['tensorflow'] = None; import evaluate; evaluate.main(sys.argv[1:])"
        proc = subprocess.run([sys.executable, "-c", code, "--run", run], cwd=ROOT, env=env, capture_output=True,
                              text=True, timeout=600)
        assert proc.returncode == 0, proc.stderr[-3000:]
        m = json.load(open(os.path.join(run, "metrics.json")))
        assert "averaged" in m["weights"] and "ema=0.9" in m["protocol"]
        clf = network.load_classifier(config["architecture"], os.path.join(run, "selected.keras"), averaged=True)
        with PatchFile(demo_h5) as pf:  # the JAX-trained checkpoint's average, scored here under TensorFlow
            assert m["OA"] == pytest.approx(np.mean(network.predict_split(clf, pf, "test") == pf.labels("test")),
                                            abs=0.01)
