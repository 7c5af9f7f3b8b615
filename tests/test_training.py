"""model.py as a training script: input pipeline, schedule, run directory, resume, errors, backends."""
import csv
import importlib.util
import json
import os
import subprocess
import sys

import h5py
import numpy as np
import pytest

import keras

import DataPrepare
import model
from model import RotatedPatches, build_model, classifier, lr_at
from patchfile import PatchFile

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
TINY = ["--filters", "8", "--fusion_units", "8"]


@pytest.fixture(scope="module")
def demo(tmp_path_factory):
    path = str(tmp_path_factory.mktemp("demo") / "demo.h5")
    DataPrepare.main(["--dataset", "demo", "--out", path, "--val-fraction", "0.2"])
    return path


def train(args):
    model.main(args)


def history(run):
    with open(os.path.join(run, "history.csv")) as f:
        return list(csv.DictReader(f))


# ----------------------------------------------------------------------------- pipeline and schedule
def test_each_epoch_holds_every_patch_in_its_four_rotations_once():
    n, p = 10, 5
    hsi = np.random.default_rng(0).uniform(0, 1, (n, p, p, 3)).astype("float32")
    group = {"hsi": hsi, "aux": hsi[..., :1].copy(), "label": np.arange(n)}
    data = RotatedPatches(group, batch_size=8, seed=1)
    seen = []
    for i in range(len(data)):
        x, y = data[i]
        np.testing.assert_array_equal(y["rec_hsi"], x["hsi"])
        np.testing.assert_array_equal(x["aux"][..., 0], x["hsi"][..., 0])  # both modalities turned alike
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
    (["--resume", "runs/x", "--lr", "1e-3"], "only --epochs may change, not --lr"),
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


def test_select_val_needs_a_validation_group(tmp_path):
    path = str(tmp_path / "noval.h5")
    DataPrepare.main(["--dataset", "demo", "--out", path])
    with pytest.raises(SystemExit, match="group 'val' missing.*--val-fraction"):
        train(["--data", path, "--out", str(tmp_path / "run"), "--select", "val", *TINY])


# ----------------------------------------------------------------------------- saving
def test_saving_and_loading_round_trips_predictions_exactly(tmp_path):
    net = build_model(10, 2, 3, patch_size=5, filters=8, fusion_units=8)
    model.compile_model(net, {**model.DEFAULTS, "lr": 1e-3})
    rng = np.random.default_rng(0)
    x = {"hsi": rng.uniform(0, 1, (16, 5, 5, 10)).astype("float32"), "aux": rng.uniform(0, 1, (16, 5, 5, 2)).astype("float32")}
    net.fit(x, {"class": rng.integers(0, 3, 16), "rec_aux": x["aux"], "rec_hsi": x["hsi"]}, epochs=1, verbose=0)
    net.save(tmp_path / "m.keras")
    loaded = keras.saving.load_model(tmp_path / "m.keras")
    for key, value in net.predict(x, verbose=0).items():
        np.testing.assert_array_equal(loaded.predict(x, verbose=0)[key], value)


# ----------------------------------------------------------------------------- end to end
@pytest.mark.slow
def test_short_training_lowers_every_loss_and_beats_chance(demo, tmp_path):
    run = str(tmp_path / "run")
    train(["--data", demo, "--out", run, "--epochs", "6", "--lr", "1e-3", "--filters", "16", "--fusion_units", "16",
           "--bn_momentum", "0.9"])
    rows = history(run)
    for key in ("loss", "class_loss", "rec_aux_loss", "rec_hsi_loss"):
        assert float(rows[-1][key]) < float(rows[0][key]), key
    assert float(rows[-1]["class_loss"]) < 0.5 * float(rows[0]["class_loss"])
    for name in ("config.json", "state.json", "final.keras", "selected.keras", "curves.png", "tensorboard"):
        assert os.path.exists(os.path.join(run, name)), name
    with PatchFile(demo) as pf:
        info, test = pf.info(), pf.load("test")
    clf = classifier(keras.saving.load_model(os.path.join(run, "selected.keras")))
    pred = np.argmax(clf.predict({"hsi": test["hsi"], "aux": test["aux"]}, verbose=0), -1)
    accuracy = np.mean(pred == test["label"])
    assert accuracy > 4 / info["num_classes"], accuracy  # chance is 1/6 on the demo scene
    config = json.load(open(os.path.join(run, "config.json")))
    assert config["epochs"] == 6 and config["protocol"] == model.PROTOCOLS["last"] and config["synthetic"]


@pytest.mark.slow
def test_resumed_run_ends_where_an_uninterrupted_run_would_and_same_seed_same_metrics(demo, tmp_path):
    common = ["--data", demo, "--lr", "1e-3", *TINY, "--select", "val"]
    whole, again, cut = (str(tmp_path / n) for n in ("whole", "again", "cut"))
    train([*common, "--out", whole, "--epochs", "3"])
    train([*common, "--out", again, "--epochs", "3"])
    train([*common, "--out", cut, "--epochs", "2"])  # as if killed after epoch 2
    train(["--resume", cut, "--epochs", "3"])
    assert history(whole) == history(again)  # same seed, same metrics
    assert history(whole) == history(cut)  # the resumed run logged exactly the same epochs
    for name in ("final.keras", "selected.keras"):
        a, b = (keras.saving.load_model(os.path.join(r, name)) for r in (whole, cut))
        for wa, wb in zip(a.get_weights(), b.get_weights()):
            np.testing.assert_array_equal(wa, wb)
    state = json.load(open(os.path.join(cut, "state.json")))
    rows = history(whole)
    best = max(range(3), key=lambda e: float(rows[e]["val_accuracy"]))
    assert state["epochs_done"] == 3 and state["selected_epoch"] == best + 1


@pytest.mark.slow
@pytest.mark.skipif(importlib.util.find_spec("jax") is None, reason="JAX is not installed (CI installs it)")
def test_tiny_training_under_the_jax_backend(demo, tmp_path):
    env = {**os.environ, "KERAS_BACKEND": "jax"}
    run = str(tmp_path / "jax")
    # as if TensorFlow were not installed: any import of it fails
    code = ("import sys; sys.modules['tensorflow'] = None; import keras; "
            "assert keras.backend.backend() == 'jax'; import model; model.main(sys.argv[1:])")
    proc = subprocess.run([sys.executable, "-c", code, "--data", demo, "--out", run, "--epochs", "2", "--lr", "1e-3",
                           *TINY], cwd=ROOT, env=env, capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert len(history(run)) == 2 and json.load(open(os.path.join(run, "config.json")))["backend"] == "jax"
