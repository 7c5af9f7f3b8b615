"""Whole model.py runs: a short training that must learn, the defaults after one epoch, the authors'
protocol, mixed precision, and training under the JAX backend without TensorFlow."""
import importlib.util
import json
import os

import numpy as np
import pytest

import keras

import network
import rundir
from network import classifier
from patchfile import PatchFile
from runs import TINY, history, train
from scenarios import run_python


@pytest.mark.slow
def test_a_one_epoch_run_with_the_defaults_scores_its_average_at_least_as_its_raw_weights(demo_h5, tmp_path):
    """The defaults (ema 0.995 with its warm-up, batch norm 0.99 warmed up) after one epoch of 12
    steps: the averaged weights evaluate.py scores are within 3 points of the raw ones or above (the
    warmed-up average lags the last step or two of a fast first epoch; docs/warmup.md has the
    stand-in's one-epoch figures). With a fixed decay the average would keep most of the initial
    weights (12 steps of 0.995) and score near chance; with fixed batch-norm statistics the raw
    weights too."""
    run = str(tmp_path / "run")
    train(["--data", str(demo_h5), "--out", run, "--epochs", "1", "--filters", "16", "--fusion_units", "16",
           "--batch_size", "40"])
    config = json.load(open(os.path.join(run, "config.json")))
    assert config["ema"] == 0.995 and config["warmup"] and config["bn_momentum"] == 0.99
    path = os.path.join(run, "selected.keras")
    with PatchFile(demo_h5) as pf:
        truth = pf.labels("test")
        raw, averaged = (np.mean(network.predict_split(network.load_classifier(config["architecture"], path,
                                                                               averaged=a), pf, "test") == truth)
                         for a in (False, True))
    assert raw > 1.5 / 6, raw  # chance is 1/6: the raw weights did learn something
    assert averaged >= raw - 0.03, (averaged, raw)


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


@pytest.fixture(scope="module")
def small_demo_h5(tmp_path_factory):
    """The demo scene with 5 training pixels per class: 3 batches of 40 an epoch, for runs whose every
    step is slow on a CPU."""
    import DataPrepare
    out = tmp_path_factory.mktemp("data") / "demo-small.h5"
    DataPrepare.prepare("demo", str(out), train_per_class=5, split="blocks")
    return out


@pytest.mark.slow
@pytest.mark.parametrize("gpu", [False, True], ids=["bfloat16", "float16-loss-scaled"])
def test_mixed_precision_training(small_demo_h5, tmp_path, monkeypatch, gpu):
    """Mixed precision trains, saves and resumes: bfloat16 as on a CPU, and float16 with loss scaling
    as on a GPU (the policy model.py picks when it sees one, forced here on the CPU). The float16 case
    runs in processes without oneDNN: on a CPU with avx512_fp16 oneDNN takes float16 and trained the
    tiny network 4-5x slower than TensorFlow's own kernels, a path no user meets (float16 is chosen
    only beside a GPU)."""
    run = str(tmp_path / "run")
    first = ["--data", str(small_demo_h5), "--out", run, "--epochs", "1", "--lr", "1e-3", *TINY, "--precision", "mixed"]
    code = "import sys, network; network.gpu_count = lambda: 1; import model; model.main(sys.argv[1:])"
    monkeypatch.setattr(network, "gpu_count", lambda: 0)
    for args in (first, ["--resume", run, "--epochs", "2"]):
        if gpu:
            run_python(code, args, {**os.environ, "TF_ENABLE_ONEDNN_OPTS": "0"}, timeout=600)
        else:
            try:
                train(args)
            finally:
                keras.mixed_precision.set_dtype_policy("float32")
    want = "float16" if gpu else "bfloat16"
    keras.mixed_precision.set_dtype_policy(f"mixed_{want}")  # as model.py's --resume loads it
    try:
        net = keras.saving.load_model(os.path.join(run, "final.keras"))
    finally:
        keras.mixed_precision.set_dtype_policy("float32")
    assert net.get_layer("coupled_block_k3").compute_dtype == want
    assert isinstance(net.optimizer, keras.optimizers.LossScaleOptimizer) == gpu
    rows = history(run)
    assert len(rows) == 2 and all(np.isfinite(float(r["loss"])) for r in rows)
    assert float(net.optimizer.learning_rate) == pytest.approx(1e-3)
    assert json.load(open(os.path.join(run, "config.json")))["precision"] == "mixed"


@pytest.mark.slow
@pytest.mark.skipif(importlib.util.find_spec("jax") is None, reason="JAX is not installed (CI installs it)")
@pytest.mark.parametrize("stacked", ["true", "false"])
def test_tiny_training_under_the_jax_backend(demo_h5, tmp_path, tmp_path_factory, stacked):
    """Both builds of the coupled block train under JAX without TensorFlow (the plain build's
    per-stream batch-norm update once failed there), with weight averaging on, and the second epoch
    resumes; evaluate.py then scores the averaged weights under JAX too. The processes share JAX's
    persistent compilation cache, as a user's jobs may: the resumed job's programs are the first's."""
    cache = tmp_path_factory.getbasetemp() / "jax-compilation-cache"
    env = {**os.environ, "KERAS_BACKEND": "jax", "JAX_COMPILATION_CACHE_DIR": str(cache),
           "JAX_PERSISTENT_CACHE_MIN_COMPILE_TIME_SECS": "0", "JAX_PERSISTENT_CACHE_MIN_ENTRY_SIZE_BYTES": "0"}
    run = str(tmp_path / "jax")
    # as if TensorFlow were not installed: any import of it fails
    code = ("import sys; sys.modules['tensorflow'] = None; import keras; "
            "assert keras.backend.backend() == 'jax'; import model; model.main(sys.argv[1:])")
    for args in (["--data", str(demo_h5), "--out", run, "--epochs", "1", "--lr", "1e-3", "--stacked_streams", stacked,
                  "--select", "val", *TINY, "--ema", "0.9"], ["--resume", run, "--epochs", "2"]):
        run_python(code, args, env, timeout=600)
    config = json.load(open(os.path.join(run, "config.json")))
    assert len(history(run)) == 2 and config["backend"] == "jax" and config["stacked_streams"] == (stacked == "true")
    if stacked == "true":
        code = "import sys; sys.modules['tensorflow'] = None; import evaluate; evaluate.main(sys.argv[1:])"
        run_python(code, ["--run", run], env, timeout=600)
        m = json.load(open(os.path.join(run, "metrics.json")))
        assert "averaged" in m["weights"] and "ema=0.9" in m["protocol"]
        clf = network.load_classifier(config["architecture"], os.path.join(run, "selected.keras"), averaged=True)
        with PatchFile(demo_h5) as pf:  # the JAX-trained checkpoint's average, scored here under TensorFlow
            assert m["OA"] == pytest.approx(np.mean(network.predict_split(clf, pf, "test") == pf.labels("test")),
                                            abs=0.01)
