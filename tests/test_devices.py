"""devices.py: TensorFlow data parallel (tf.distribute.MirroredStrategy) on the CPU's logical devices
computes what one device computes: the same weights, optimizer state and logs after two epochs at
the same global batch, an exact resume, the same predictions with each batch split over the devices.

The pytest process has started TensorFlow on one device, so the two-device checks run in a fresh
process (CPU_DEVICES=2, devices.split_cpu) that calls `scenario_*` of this file and asserts there.
A correctness check, not a speed claim: two logical devices share the same two cores.
"""
import json
import os
import subprocess
import sys

import numpy as np
import pytest

from runs import TINY, history
from scenarios import run_scenario

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))

def run_two_devices(scenario, out, *args):
    env = {**os.environ, "CPU_DEVICES": "2", "KERAS_BACKEND": "tensorflow", "CUDA_VISIBLE_DEVICES": ""}
    return run_scenario("test_devices", scenario, out, args, env)


def test_cpu_devices_must_be_a_count(monkeypatch):
    import devices
    monkeypatch.setenv("CPU_DEVICES", "two")
    with pytest.raises(devices.DeviceError, match="CPU_DEVICES must be a whole number of devices.*'two'"):
        devices.split_cpu()
    monkeypatch.setenv("CPU_DEVICES", "1")
    assert devices.split_cpu() == 1  # nothing to split: TensorFlow untouched


def test_two_tf_devices_train_resume_and_predict_as_one(tmp_path):
    """lr 1e-4 as in test_fastpath's JAX check: the cross-device sums round in another order than
    one device's, a few ulps; a per-replica statistic or loss is no rounding (batch-norm moments
    of half the batch end 0.07 away, the reconstruction RMSE taken per replica doubles in the logs)."""
    r = run_two_devices("mirrored_same_as_one_device", tmp_path)
    assert r["devices"] == 2 and r["replicas"] == 2
    assert r["max_weight_difference"] <= 1e-5
    assert r["resume_difference"] <= 1e-6
    assert r["predicted"] == 37  # predict_on_batch under the strategy would give each replica's copy: 74
    print(f"1 against 2 TF devices: largest weight difference {r['max_weight_difference']:.3g}, "
          f"largest relative log difference {r['max_log_difference']:.3g}; resumed against straight "
          f"{r['resume_difference']:.3g}")


@pytest.mark.slow
def test_model_py_killed_on_two_tf_devices_resumes_with_one_devices_columns(demo_h5, tmp_path):
    """model.py itself under CPU_DEVICES=2, killed after 1 epoch and resumed to 2: its history has
    one device's columns and its values to float rounding, and evaluate.py, splitting the test
    pixels over both devices, labels them as one device does. (That the resume is exact, to the
    last bit, the scenario above shows.)"""
    from runs import train
    args = ["--data", str(demo_h5), *TINY, "--seed", "3"]
    env = {**os.environ, "CPU_DEVICES": "2", "CUDA_VISIBLE_DEVICES": ""}
    script = lambda name, *a: subprocess.run([sys.executable, os.path.join(ROOT, name), *a], cwd=ROOT, env=env,  # noqa: E731
                                             capture_output=True, text=True, timeout=900)
    two, one = str(tmp_path / "two"), str(tmp_path / "one")
    for proc in (script("model.py", *args, "--epochs", "1", "--out", two),
                 script("model.py", "--resume", two, "--epochs", "2")):
        assert proc.returncode == 0, proc.stdout[-2000:] + proc.stderr[-4000:]
        assert "MirroredStrategy over 2 devices (CPU:0, CPU:1)" in proc.stdout
    train([*args, "--epochs", "2", "--out", one])  # this process: one device

    rows_two, rows_one = history(two), history(one)
    assert list(rows_two[0]) == list(rows_one[0]) and len(rows_two) == len(rows_one) == 2
    for row_two, row_one in zip(rows_two, rows_one):
        for key in row_one:
            if key != "epoch_seconds":
                assert float(row_two[key]) == pytest.approx(float(row_one[key]), rel=1e-4, abs=1e-6), key

    proc = script("evaluate.py", "--run", two)
    assert proc.returncode == 0, proc.stdout[-2000:] + proc.stderr[-4000:]
    sharded = np.load(os.path.join(two, "predictions.npy"))
    with open(os.path.join(two, "metrics.json")) as f:
        assert json.load(f)["devices"] == "MirroredStrategy over 2 devices (CPU:0, CPU:1)"
    import evaluate
    evaluate.main(["--run", two])  # again, on this process's one device: the same labels
    np.testing.assert_array_equal(np.load(os.path.join(two, "predictions.npy")), sharded)


# ----------------------------------------------------------------------------- the two-device side
def scenario_mirrored_same_as_one_device(out):
    import devices
    assert devices.split_cpu() == 2  # before TensorFlow starts
    import keras

    import network
    import training
    from test_fastpath import BATCH, SEED, tiny_config, tiny_data, tiny_net
    import tensorflow as tf
    tf.config.experimental.enable_op_determinism()
    config = {**tiny_config(ema=0.9), "lr": 1e-4, "seed": SEED, "epochs": 2, "warmup": True}
    data = tiny_data(n=40)  # 160 pairs: 10 whole batches of 16, split 8 + 8

    def fit(net, start, stop, *callbacks):
        history = keras.callbacks.History()
        schedule = keras.callbacks.LearningRateScheduler(lambda e: training.lr_at(e, config))
        training.fit(net, data, {**config, "epochs": stop}, start, [schedule, *callbacks, history])
        return history.history

    one = tiny_net(config)  # no strategy: one device
    solo = fit(one, 0, 2)
    with devices.distribution_scope():
        two = tiny_net(config)
    assert devices.replicas_of(two) == 2 and devices.replicas_of(one) == 1
    assert devices.describe(two) == "MirroredStrategy over 2 devices (CPU:0, CPU:1)"
    parallel = fit(two, 0, 2)
    assert sorted(parallel) == sorted(solo)
    log_gap = 0.0
    for key in solo:
        np.testing.assert_allclose(parallel[key], solo[key], rtol=1e-4, err_msg=key)
        log_gap = max(log_gap, float(np.max(np.abs(np.subtract(parallel[key], solo[key]) / np.abs(solo[key])))))
    weight_gap = largest_gap(one, two, 1e-5)

    # killed after epoch 1, reloaded under the strategy, one more: as 2 epochs straight
    path = os.path.join(out, "one-epoch.keras")
    with devices.distribution_scope():
        part = tiny_net(config)
    fit(part, 0, 1, keras.callbacks.LambdaCallback(on_epoch_end=lambda e, logs: part.save(path)))
    with devices.distribution_scope():
        part = keras.saving.load_model(path)
    assert devices.replicas_of(part) == 2
    fit(part, 1, 2)
    resume_gap = largest_gap(two, part, 1e-6)

    # prediction with each batch split over the two devices: one device's labels and probabilities
    with devices.distribution_scope():  # as evaluate.py loads its classifier
        clf_two = network.classifier(two)
    assert devices.replicas_of(clf_two) == 2
    clf_one = network.classifier(tiny_net(config))
    clf_one.set_weights(clf_two.get_weights())
    hsi, aux = data["hsi"][:37], data["aux"][:37]  # 37: the last batch splits 3 + 2
    got = network.predict_labels(clf_two, hsi, aux, batch_size=BATCH)
    np.testing.assert_array_equal(got, network.predict_labels(clf_one, hsi, aux, batch_size=BATCH))
    np.testing.assert_allclose(clf_two.predict({"hsi": hsi, "aux": aux}, batch_size=BATCH, verbose=0),
                               clf_one.predict_on_batch({"hsi": hsi, "aux": aux}), rtol=1e-5, atol=1e-6)
    with open(os.path.join(out, "result.json"), "w") as f:
        json.dump(dict(devices=len(devices.tf_devices()), replicas=devices.replicas_of(two), predicted=len(got),
                       max_weight_difference=weight_gap, max_log_difference=log_gap,
                       resume_difference=resume_gap), f)


def largest_gap(a, b, atol):
    """The largest difference of every weight and optimizer variable (EMA copies included), after
    asserting each within atol."""
    worst = 0.0
    pairs = list(zip([*a.weights, *a.optimizer.variables], [*b.weights, *b.optimizer.variables]))
    assert len(pairs) == len(a.weights) + len(a.optimizer.variables) == len(b.weights) + len(b.optimizer.variables)
    for x, y in pairs:
        vx, vy = np.asarray(x.numpy()), np.asarray(y.numpy())
        np.testing.assert_allclose(vy, vx, rtol=1e-5, atol=atol, err_msg=x.path)
        worst = max(worst, float(np.max(np.abs(vx.astype(np.float64) - vy))) if vx.size else 0.0)
    return worst
