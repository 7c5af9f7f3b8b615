"""model.py as a training script: input pipeline, schedule, errors, the joint loss, saving, and weight
averaging and batch-norm statistics step by step."""
import json
import os
import shlex

import h5py
import numpy as np
import pytest

import keras

import DataPrepare
import model
import network
import training
from network import build_model
from patchfile import PatchFile
from runs import TINY, train
from training import RotatedPatches, lr_at


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
    assert training.averaging_note({**config, "warmup": True}, 32) is None  # the warm-up keeps no initial weights


def fit_recording_weights(net, config):
    """8 steps of batch 8 on random patches; returns the raw trainable weights after each step."""
    training.compile_model(net, config)
    rng = np.random.default_rng(0)
    x = {"hsi": rng.uniform(0, 1, (32, 5, 5, 6)).astype("float32"), "aux": rng.uniform(0, 1, (32, 5, 5, 1)).astype("float32")}
    y = {"class": rng.integers(0, 3, 32), "rec_aux": x["aux"], "rec_hsi": x["hsi"]}
    seen = []
    record = keras.callbacks.LambdaCallback(
        on_train_batch_end=lambda b, logs: seen.append([v.numpy().copy() for v in net.trainable_variables]))
    net.fit(x, y, batch_size=8, epochs=2, shuffle=False, verbose=0, callbacks=[record])
    assert len(seen) == 8
    return x, seen


@pytest.mark.parametrize("warmup", [False, True])
def test_weight_averaging_is_the_moving_average_of_the_raw_weights(tmp_path, warmup):
    """ema = m: after the first step the average is the weights; then avg = d avg + (1 - d) w after
    the step t (t = 1, 2, ...), with d = m, or with the warm-up d = min(m, (1 + t) / (10 + t)) as
    TensorFlow's ExponentialMovingAverage(num_updates=t). Computed here from the raw weights step by
    step, and read back from a saved checkpoint the way evaluate.py reads it
    (network.load_classifier(averaged=True))."""
    keras.utils.set_random_seed(0)
    arch = dict(hsi_bands=6, aux_bands=1, num_classes=3, patch_size=5, filters=4, fusion_units=4)
    net = build_model(**arch)
    x, seen = fit_recording_weights(net, {**model.DEFAULTS, "lr": 1e-2, "ema": 0.8, "warmup": warmup})
    average = seen[0]
    for t, weights in enumerate(seen[1:], start=1):
        d = min(0.8, (1 + t) / (10 + t)) if warmup else 0.8
        average = [d * a + (1 - d) * w for a, w in zip(average, weights)]
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


def test_batch_norm_statistics_warm_up_step_by_step():
    """StreamBatchNorm(warmup=True) in a compiled fit: after the t-th batch (t = 0, 1, ...) each
    stream's moving mean and variance are d m + (1 - d) batch statistic, d = min(0.99, (1 + t) / (10 + t)),
    the first batch mixing in a tenth of the initial zeros and ones."""
    from layers import StreamBatchNorm
    rng = np.random.default_rng(1)
    n, steps = 4, 6
    x = (rng.normal(size=(steps, 2 * n, 3, 3, 2)) * rng.uniform(1, 4, 2) + rng.uniform(-2, 2, 2)).astype("float32")
    inp = keras.Input((3, 3, 2))
    net = keras.Model(inp, StreamBatchNorm(2, 0.99, warmup=True, name="bn")(inp))
    net.compile(optimizer=keras.optimizers.SGD(0.0), loss="mse")
    net.fit(x.reshape(-1, 3, 3, 2), np.zeros((steps * 2 * n, 3, 3, 2), "float32"), batch_size=2 * n,
            shuffle=False, verbose=0)
    mean, var = np.zeros((2, 2)), np.ones((2, 2))
    for t in range(steps):
        d = min(0.99, (1 + t) / (10 + t))
        streams = x[t].reshape(2, n * 9, 2)  # stream 0 is the first half of each batch
        mean, var = d * mean + (1 - d) * streams.mean(1), d * var + (1 - d) * streams.var(1)
    bn = net.get_layer("bn")
    np.testing.assert_allclose(bn.moving_mean.numpy(), mean, rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(bn.moving_variance.numpy(), var, rtol=1e-5, atol=1e-6)
    np.testing.assert_array_equal(bn.updates.numpy(), [steps, steps])
