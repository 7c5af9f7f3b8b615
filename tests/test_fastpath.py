"""fastpath.py: the JAX training path against Keras' own fit, resumes, and patches and predictions
cut on the device against patchfile.cut_patches and network.py's host loops.

The test process runs TensorFlow, so each JAX check runs in a subprocess (KERAS_BACKEND=jax,
TensorFlow made unimportable) that calls one `scenario_*` function of this file and asserts there.
Tiny shapes: 5 x 5 patches, 6 + 1 bands, 3 classes, 42 patches (4 x 42 = 168 pairs: ten batches of
16 and a partial one of 8), filters 8. Data parallel runs use the CPU's virtual devices
(XLA_FLAGS=--xla_force_host_platform_device_count=2 in the subprocess). Compiled programs are kept in pytest's cache directory
(JAX's persistent compilation cache), so reruns skip most of XLA's compile time.
"""
import importlib.util
import json
import os

import numpy as np
import pytest

from scenarios import run_scenario

N, P, BANDS, AUX, CLASSES, BATCH, SEED = 42, 5, 6, 1, 3, 16, 7

needs_jax = pytest.mark.skipif(importlib.util.find_spec("jax") is None, reason="JAX is not installed")


@pytest.fixture(scope="module")
def jax_cache(request):
    return str(request.config.cache.mkdir("jax-compilation-cache"))


def run_jax(scenario, out, cache, *args, devices=1):
    """scenario_<name>(out, *args) of this file in a fresh JAX process; it asserts there. devices:
    the CPU's (virtual) devices, set in XLA_FLAGS before JAX starts its backend."""
    env = {**os.environ, "KERAS_BACKEND": "jax", "JAX_PLATFORMS": "cpu", "JAX_COMPILATION_CACHE_DIR": cache,
           "JAX_PERSISTENT_CACHE_MIN_COMPILE_TIME_SECS": "0", "JAX_PERSISTENT_CACHE_MIN_ENTRY_SIZE_BYTES": "0"}
    if devices > 1:
        env["XLA_FLAGS"] = f"{os.environ.get('XLA_FLAGS', '')} --xla_force_host_platform_device_count={devices}".strip()
    return run_scenario("test_fastpath", scenario, out, args, env, preamble="sys.modules['tensorflow'] = None; ")


# ----------------------------------------------------------------------------- tests (TensorFlow process)
def test_applies_only_under_jax_and_refuses_unknown_values():
    import fastpath
    assert fastpath.applies({}) is False  # this process runs TensorFlow
    assert fastpath.applies({"fast_path": "off"}) is False
    with pytest.raises(ValueError, match="fast_path must be one of auto, off"):
        fastpath.applies({"fast_path": "on"})


@needs_jax
@pytest.mark.parametrize("reconstruction,ema,scan", [(True, 0.0, True), (True, 0.0, False), (True, 0.9, True),
                                                     (False, 0.9, False)],
                         ids=["reconstruction-scan", "reconstruction-loop", "reconstruction-ema-scan",
                              "class-only-ema-loop"])
def test_fast_path_reaches_the_weights_and_logs_of_keras_fit(tmp_path, jax_cache, reconstruction, ema, scan):
    """scan: the epoch as one lax.scan (what a GPU runs); loop: a host loop of the jitted step (the CPU)."""
    r = run_jax("same_as_fit", tmp_path, jax_cache, int(reconstruction), ema, int(scan))
    want = {"loss", "accuracy", "learning_rate"} if not reconstruction else \
        {"loss", "class_loss", "rec_aux_loss", "rec_hsi_loss", "class_accuracy", "learning_rate"}
    assert set(r["fit_logs"]) == set(r["fast_logs"]) == want


@needs_jax
@pytest.mark.parametrize("scan,ema", [(True, 0.0), (False, 0.9)], ids=["scan", "loop-ema"])
def test_three_fast_epochs_equal_two_then_save_reload_and_one_more(tmp_path, jax_cache, scan, ema):
    """With ema, the checkpoint holds the raw weights and the average (in the optimizer), and both
    go on exactly: variables() compares the optimizer's averaged copies too."""
    r = run_jax("resume", tmp_path, jax_cache, int(scan), ema)
    assert r["applies"] == [True, False]
    assert r["max_weight_difference"] <= 1e-6


@needs_jax
def test_mixed_float16_with_loss_scaling(tmp_path, jax_cache):
    """As a GPU trains (model.py's mixed precision there): Keras' LossScaleOptimizer scales the loss
    inside the same train_step; its state ends as fit's, the losses agree to float16's precision."""
    r = run_jax("mixed_float16", tmp_path, jax_cache)
    assert r["optimizer"] == "LossScaleOptimizer"


@needs_jax
def test_patches_and_predictions_cut_on_the_device(tmp_path, jax_cache):
    r = run_jax("device_prediction", tmp_path, jax_cache)
    assert r["bands"] > 2  # the small budget did stream the scene in bands


@needs_jax
def test_two_devices_train_data_parallel_to_the_weights_logs_and_predictions_of_one(tmp_path, jax_cache):
    """Two CPU devices under devices.distribution_scope (keras.distribution.DataParallel): the
    fast path runs with each batch split over both (the sharding XLA gave the batch inside the
    compiled step, recorded at compile time), and ends where one device does at the same global
    batch: weights, optimizer state (EMA included) and logs to float rounding; predictions split
    over the devices give one device's labels, through fastpath.predict_pixels and through
    network.predict_labels (evaluate.py's loop). The host loop, what a CPU runs."""
    r = run_jax("data_parallel_same_as_one_device", tmp_path, jax_cache, 0, 0.9, devices=2)
    assert r["devices"] == 2 and r["batch_shards"] and all(n == 2 for n in r["batch_shards"])
    assert r["patch_shards"] and all(n == 2 for n in r["patch_shards"])
    assert r["labels"] == 37 and r["label_shards"] and all(n == 2 for n in r["label_shards"])
    assert r["max_weight_difference"] <= 1e-5
    print(f"1 against 2 devices: largest weight difference {r['max_weight_difference']:.3g}, "
          f"largest relative log difference {r['max_log_difference']:.3g}")


@needs_jax
def test_a_killed_two_device_run_resumes_exactly(tmp_path, jax_cache):
    """Data parallel on two CPU devices: 2 epochs, save, reload (under the distribution), 1 more
    equals 3 epochs straight, as for one device; the epoch as one lax.scan, what a GPU runs."""
    r = run_jax("data_parallel_resume", tmp_path, jax_cache, 1, 0.0, devices=2)
    assert r["applies"] is True and r["variable_devices"] == [2]
    assert r["batch_shards"] and all(n == 2 for n in r["batch_shards"])
    assert r["max_weight_difference"] <= 1e-6


# ----------------------------------------------------------------------------- the JAX side (subprocess)
def tiny_data(n=N, seed=0):
    rng = np.random.default_rng(seed)
    return {"hsi": rng.random((n, P, P, BANDS), dtype=np.float32), "aux": rng.random((n, P, P, AUX), dtype=np.float32),
            "label": rng.integers(0, CLASSES, n)}


def tiny_config(reconstruction=True, ema=0.0):
    # The rate changes at each epoch: a path that read it before the scheduler set it would differ.
    # Training here is chaotic: Keras' fit itself, started from weights moved by one ulp, ends 1e-2
    # away after two epochs at lr 1e-3 (more at 3e-3), through Nadam's first steps, where a gradient
    # near zero that flips sign moves its weight by a whole step. The fast path and fit agree to a
    # few ulps because they run the same train_step; a larger rate would amplify their rare rounding
    # differences (XLA fuses the step inside a scan a little differently) past any tolerance.
    return dict(reconstruction=reconstruction, lambda1=1.0, lambda2=0.5, lr=1e-3, lr_constant_epochs=1,
                lr_decay=0.5, batch_size=BATCH, ema=ema)


def tiny_net(config):
    import keras

    import network
    import training
    keras.utils.set_random_seed(0)  # the same initial weights each time
    net = network.build_model(BANDS, AUX, CLASSES, patch_size=P, filters=8, fusion_units=8, kernel_sizes=(3,),
                              reconstruction=config["reconstruction"], bn_momentum=0.9)
    training.compile_model(net, config)
    return net


def schedule(config):
    import keras

    import training
    return keras.callbacks.LearningRateScheduler(lambda e: training.lr_at(e, config))


def keras_fit_reference(net, data, config, initial_epoch, epochs):
    """Keras' own fit fed RotatedPatches' batches of epoch e in training epoch e. (Not fit on
    RotatedPatches itself: under JAX, fit calls the dataset's on_epoch_end once before the first
    epoch, and the two-worker prefetch of a fresh model drops the batch its build consumed, so the
    stream fit sees is shifted from epoch_order(seed, e); see the report of issue 20.)"""
    import keras

    import training

    class EpochBatches(keras.utils.PyDataset):
        def __init__(self, rotated):
            super().__init__(workers=1)  # no prefetch: each batch is made when fit asks for it
            self.rotated = rotated

        def __len__(self):
            return len(self.rotated)

        def __getitem__(self, i):
            return self.rotated[i]

    class SetEpoch(keras.callbacks.Callback):
        def on_epoch_begin(self, epoch, logs=None):
            batches.rotated.epoch = epoch

    batches = EpochBatches(training.RotatedPatches(data, config["batch_size"], SEED, epoch=initial_epoch,
                                                   reconstruction=config["reconstruction"]))
    return net.fit(batches, epochs=epochs, initial_epoch=initial_epoch, shuffle=False, verbose=0,
                   callbacks=[SetEpoch(), schedule(config)])


def variables(net):
    """Every variable fit changes, in order: weights (trainable and batch-norm statistics),
    optimizer (slots, iterations, learning rate, EMA), metrics; as (path, value) pairs."""
    return [(v.path, np.asarray(v.value)) for v in [*net.weights, *net.optimizer.variables, *net.metrics_variables]]


def assert_same_variables(a, b, atol, what, chaotic=None):
    """The largest absolute difference, after asserting each is within atol (and 1e-6 relative:
    the metrics' running totals are in the hundreds). chaotic: a substring of the variables (and
    their optimizer slots) where a few elements may differ by up to two of Nadam's steps (see
    tiny_config): at most 10 % of each one's elements beyond atol, none beyond 2e-3."""
    va, vb = variables(a), variables(b)
    assert len(va) == len(vb)
    worst = 0.0
    for (name, x), (_, y) in zip(va, vb):
        assert x.shape == y.shape and x.dtype == y.dtype, name
        gap = np.abs(x.astype(np.float64) - y)
        if chaotic and chaotic in name and x.size:
            assert np.mean(gap > atol + 1e-6 * np.abs(x)) <= 0.1 and gap.max() <= 2e-3, (what, name, gap.max())
        else:
            np.testing.assert_allclose(y, x, rtol=1e-6, atol=atol, err_msg=f"{what}: {name}")  # totals: ulps
            worst = max(worst, float(gap.max()) if x.size else 0.0)
    return worst


def write_result(out, **result):
    with open(os.path.join(out, "result.json"), "w") as f:
        json.dump(result, f)


def two_saved_then_one(config, data, out, scan):
    """A fresh tiny net trained 2 fast epochs, saved at the epoch's end as model.py's RunState saves
    (fit's end then puts the average into the model, which the checkpoint must not take for raw
    weights), reloaded, and trained 1 more epoch; returns it."""
    import keras

    import fastpath
    part = tiny_net(config)
    save = keras.callbacks.LambdaCallback(on_epoch_end=lambda e, logs: part.save(os.path.join(out, "two.keras")))
    fastpath.fit(part, data, config, 0, 2, [schedule(config), save], SEED, verbose=0, scan=scan)
    part = keras.saving.load_model(os.path.join(out, "two.keras"))
    history = fastpath.fit(part, data, config, 2, 3, [schedule(config)], SEED, verbose=0, scan=scan).history
    assert len(history["loss"]) == 1
    return part


def scenario_same_as_fit(out, reconstruction, ema, scan):
    import keras

    import fastpath
    config, data, scan = tiny_config(bool(int(reconstruction)), float(ema)), tiny_data(), bool(int(scan))
    a, b = tiny_net(config), tiny_net(config)
    start = variables(a)
    fit = keras_fit_reference(a, data, config, 0, 2).history
    fast = fastpath.fit(b, data, config, 0, 2, [schedule(config)], SEED, verbose=0, scan=scan).history
    assert sorted(fast) == sorted(fit), (sorted(fast), sorted(fit))
    for key in fit:
        np.testing.assert_allclose(fast[key], fit[key], rtol=1e-5, err_msg=key)
    # The decoders' first layers see the blocks' pooled batch-normalised features, whose batch mean
    # is beta: their kernels' gradients nearly cancel, and a rounding apart can flip one's sign.
    assert_same_variables(a, b, 1e-5, "fast path against fit", chaotic="rec_")
    assert int(b.optimizer.iterations) == 2 * 11  # ten full batches and a partial one, per epoch
    moved = [k for (k, x), (_, y) in zip(start, variables(b)) if "moving_mean" in k and not np.array_equal(x, y)]
    assert moved, "batch-norm statistics never updated"
    keras.saving.save_model(b, os.path.join(out, "b.keras"))  # a normal model: it saves
    write_result(out, fit_logs=sorted(fit), fast_logs=sorted(fast))


def scenario_resume(out, scan, ema):
    import fastpath
    import network
    import training
    config, data, scan = tiny_config(ema=float(ema)), tiny_data(), bool(int(scan))
    applies = [fastpath.applies(config), fastpath.applies({**config, "fast_path": "off"})]
    whole = tiny_net(config)
    fastpath.fit(whole, data, config, 0, 3, [schedule(config)], SEED, verbose=0, scan=scan)

    part = two_saved_then_one(config, data, out, scan)
    worst = assert_same_variables(whole, part, 1e-6, "3 epochs against 2 + reload + 1")
    assert float(part.optimizer.learning_rate) == pytest.approx(training.lr_at(2, config), rel=1e-6)
    x = {"hsi": data["hsi"], "aux": data["aux"]}
    np.testing.assert_array_equal(network.predict_labels(network.classifier(part), **x),
                                  network.predict_labels(network.classifier(whole), **x))

    # stop_training is honoured: EpochClock stops after the first epoch
    stopped = tiny_net(config)
    history = fastpath.fit(stopped, data, config, 0, 3, [training.EpochClock(max_minutes=1e-9), schedule(config)],
                           SEED, verbose=0, scan=scan).history
    assert len(history["loss"]) == 1 and "epoch_seconds" in history and int(stopped.optimizer.iterations) == 11
    write_result(out, applies=applies, max_weight_difference=worst)


def scenario_mixed_float16(out):
    import keras

    import fastpath
    keras.mixed_precision.set_dtype_policy("mixed_float16")
    config, data = tiny_config(), tiny_data(8)  # 32 pairs: two steps (float16 drifts further over more)
    a, b = tiny_net(config), tiny_net(config)
    fit = keras_fit_reference(a, data, config, 0, 1).history
    fast = fastpath.fit(b, data, config, 0, 1, [schedule(config)], SEED, verbose=0, scan=True).history
    assert sorted(fast) == sorted(fit)
    for key in fit:
        np.testing.assert_allclose(fast[key], fit[key], rtol=1e-3, err_msg=key)
    for (name, x), (_, y) in zip(variables(a), variables(b)):
        if "loss_scale_optimizer" in name and x.dtype.kind in "iu" or name.endswith("dynamic_scale"):
            np.testing.assert_array_equal(y, x, err_msg=name)
    assert int(b.optimizer.step_counter) == 2 and b.get_layer("coupled_block_k3").compute_dtype == "float16"
    write_result(out, optimizer=type(b.optimizer).__name__)


def scenario_device_prediction(out):
    import keras

    import fastpath
    import network
    import patchfile
    rng = np.random.default_rng(3)
    h, w = 13, 11
    scene = {"hsi": rng.uniform(0, 1, (h, w, BANDS)).astype(np.float32),
             "aux": rng.uniform(0, 1, (h, w, AUX)).astype(np.float32)}
    every = np.argwhere(np.ones((h, w), bool))  # corners, borders and inside
    for p in (1, 3, 5, 9, 15):  # 15: wider than the scene
        for m in scene:
            np.testing.assert_array_equal(np.asarray(fastpath.cut_patches_device(scene[m], every, p)),
                                          patchfile.cut_patches(scene[m], every, p), err_msg=f"P={p}")
    assert fastpath.cut_patches_device(scene["hsi"], np.zeros((0, 2), int), P).shape == (0, P, P, BANDS)
    for bad in ([[-1, 0]], [[h, 0]], [[0, w]]):
        with pytest.raises(ValueError, match="outside"):
            fastpath.cut_patches_device(scene["hsi"], np.array(bad), P)

    # a tiny patch file: train pixels and a test split, the scene of above
    labels = rng.integers(0, CLASSES, (h, w))
    train, test = every[::5], every[2::3]
    attrs = dict(dataset="tiny", class_names=["a", "b", "c"], patch_size=P, palette=[[0, 0, 0]] * 4,
                 normalise="none", normalisation="none", split="given", synthetic=True)
    maps = {"train_map": np.zeros((h, w), np.uint8), "test_map": np.zeros((h, w), np.uint8)}
    path = os.path.join(out, "tiny.h5")
    splits = {"train": (train, labels[tuple(train.T)]), "test": (test, labels[tuple(test.T)])}
    patchfile.write(path, attrs, scene, splits, maps, P)
    keras.utils.set_random_seed(1)
    net = network.build_model(BANDS, AUX, CLASSES, patch_size=P, filters=8, fusion_units=8, kernel_sizes=(3,))
    clf = network.classifier(net)
    row_bytes = 4 * w * (BANDS + AUX)
    with patchfile.PatchFile(path) as pf:
        want_map = network.predict_scene(clf, pf, P, batch_size=32)
        want_test = network.predict_split(clf, pf, "test", batch_size=32)
        want_train = network.predict_split(clf, pf, "train", batch_size=32)
        for budget in (fastpath.SCENE_BUDGET, 7 * row_bytes):  # whole scene; bands of 3 rows + 4 of context
            np.testing.assert_array_equal(fastpath.predict_scene_device(net, pf, batch_size=32, budget_bytes=budget),
                                          want_map, err_msg=f"budget {budget}")
            np.testing.assert_array_equal(fastpath.predict_split_device(clf, pf, "test", 32, budget), want_test)
            np.testing.assert_array_equal(fastpath.predict_split_device(clf, pf, "train", 32, budget), want_train)
    # the probabilities themselves, against the host's patches: a wrong patch moves them
    want = np.asarray(clf.predict_on_batch({m: patchfile.cut_patches(scene[m], every, P) for m in scene}))
    for budget in (fastpath.SCENE_BUDGET, 7 * row_bytes, 1):  # whole scene; bands of 3 rows; of 1 row
        # lax.map over the batches (a GPU), in one call or in calls of 2 batches; a host loop (the CPU)
        for scan, per_call in ((True, 64), (True, 2), (False, 1)):
            fastpath.CALL_BATCHES = per_call
            got = fastpath.predict_pixels(clf, scene, every[::-1], P, 16, budget, probabilities=True, scan=scan)
            np.testing.assert_allclose(got[::-1], want, rtol=1e-5, atol=1e-6, err_msg=f"budget {budget}, {scan}")
    fastpath.CALL_BATCHES = 64
    assert fastpath.predict_pixels(clf, scene, np.zeros((0, 2), int), P).shape == (0,)
    bands = -(-h // fastpath.band_rows((h, w), (BANDS, AUX), P, 7 * row_bytes))
    write_result(out, bands=bands)


def spy_shardings(module, name, pick):
    """Wrap module.<name> so that, each time a compiled program that calls it is built, the
    sharding XLA gave pick(its result) is recorded (jax.debug.inspect_array_sharding: at compile
    time, so these programs skip the persistent cache). Returns the list of device counts."""
    import jax
    seen, original = [], getattr(module, name)

    def spied(*args, **kwargs):
        out = original(*args, **kwargs)
        jax.debug.inspect_array_sharding(pick(out), callback=lambda s: seen.append(
            0 if s.is_fully_replicated else len(s.device_set)))  # 0: on one device, or whole on each
        return out

    setattr(module, name, spied)
    return seen


def largest_differences(a, b, rtol=1e-4, atol=1e-5):
    """(largest absolute difference of every variable, of the weights alone) after asserting each
    within tolerance: 1 against 2 devices differ by the order of the cross-device sums."""
    worst = {"all": 0.0, "weights": 0.0}
    weights = {v.path for v in a.weights}
    for (name, x), (_, y) in zip(variables(a), variables(b)):
        assert x.shape == y.shape and x.dtype == y.dtype, name
        np.testing.assert_allclose(y, x, rtol=rtol, atol=atol, err_msg=name)
        gap = float(np.max(np.abs(x.astype(np.float64) - y))) if x.size else 0.0
        worst["all"] = max(worst["all"], gap)
        if name in weights:
            worst["weights"] = max(worst["weights"], gap)
    return worst


def scenario_data_parallel_same_as_one_device(out, scan, ema):
    import jax
    import keras

    import devices
    import fastpath
    assert jax.device_count() == 2, jax.devices()
    # lr 1e-5: two devices sum the batch's gradients and statistics in another order than one, a
    # few ulps apart after the first step; Nadam's first steps amplify that, by how much depends on
    # the CPU's kernels: at 1e-4 the weights stayed within 1e-6 on an AMD EPYC, but the moving
    # variances ended 1.7e-3 apart on an Intel Xeon with AMX; at 1e-5, 1e-6 there too. A per-device
    # statistic moves the moving statistics at once, whatever the rate, and a per-device loss
    # moves each step by about lr (2e-4 in 22 steps): neither is rounding.
    config, data, scan = {**tiny_config(ema=float(ema)), "lr": 1e-5}, tiny_data(), bool(int(scan))
    rng = np.random.default_rng(3)
    scene = {"hsi": rng.uniform(0, 1, (13, 11, BANDS)).astype(np.float32),
             "aux": rng.uniform(0, 1, (13, 11, AUX)).astype(np.float32)}
    every = np.argwhere(np.ones((13, 11), bool))

    one = tiny_net(config)  # no distribution yet: everything on the default device
    start = variables(one)
    assert fastpath.applies(config) and fastpath.data_parallel() is None
    solo = fastpath.fit(one, data, config, 0, 2, [schedule(config)], SEED, verbose=0, scan=scan).history
    want = fastpath.predict_pixels(one, scene, every, P, 16, probabilities=True, scan=scan)
    assert {d for v in one.weights for d in v.value.sharding.device_set} == {jax.devices()[0]}

    with devices.distribution_scope():  # model.py's: DataParallel over the CPU's two devices
        two = tiny_net(config)
    dist = keras.distribution.distribution()
    assert isinstance(dist, keras.distribution.DataParallel) and dist.device_mesh.shape == (2,)
    assert fastpath.applies(config)
    for (name, x), (_, y) in zip(start, variables(two)):  # the same start, now on both devices
        np.testing.assert_array_equal(y, x, err_msg=name)
    batch_shards = spy_shardings(fastpath, "device_batch", lambda xy: xy[0]["hsi"])
    parallel = fastpath.fit(two, data, config, 0, 2, [schedule(config)], SEED, verbose=0, scan=scan).history
    assert all(len(v.value.sharding.device_set) == 2 and v.value.sharding.is_fully_replicated
               for v in [*two.weights, *two.optimizer.variables]), "variables not replicated as DataParallel lays them"
    worst = largest_differences(one, two)
    assert int(two.optimizer.iterations) == 2 * 11
    assert sorted(parallel) == sorted(solo)
    log_gap = 0.0
    for key in solo:
        np.testing.assert_allclose(parallel[key], solo[key], rtol=1e-4, err_msg=key)
        log_gap = max(log_gap, float(np.max(np.abs(np.subtract(parallel[key], solo[key]) / np.abs(solo[key])))))

    # prediction split over the two devices: one's weights, its one-device labels and probabilities
    patch_shards = spy_shardings(fastpath, "cut_patches_device", lambda patches: patches)
    got = fastpath.predict_pixels(one, scene, every, P, 16, probabilities=True, scan=scan)
    np.testing.assert_allclose(got, want, rtol=1e-5, atol=1e-6)
    np.testing.assert_array_equal(fastpath.predict_pixels(one, scene, every, P, 16, scan=scan), want.argmax(-1))

    # network.predict_labels (evaluate.py's loop) on the classifier under the distribution: each
    # batch split over both devices (37 patches: padded to 38, the padding's label dropped)
    import network
    from keras.src.backend.jax import distribution_lib
    label_shards, unspied = [], distribution_lib.distribute_data_input
    distribution_lib.distribute_data_input = lambda *a, **k: record(label_shards, unspied(*a, **k))
    hsi, aux = data["hsi"][:37], data["aux"][:37]
    split = network.predict_labels(network.classifier(two), hsi, aux, batch_size=16)
    distribution_lib.distribute_data_input = unspied
    clf_one = network.classifier(tiny_net(config))
    clf_one.set_weights(network.classifier(two).get_weights())
    np.testing.assert_array_equal(split, network.predict_labels(clf_one, hsi, aux, batch_size=16))
    write_result(out, devices=jax.device_count(), batch_shards=batch_shards, patch_shards=patch_shards,
                 label_shards=label_shards, labels=len(split),
                 max_weight_difference=worst["weights"], max_variable_difference=worst["all"], max_log_difference=log_gap)


def record(shards, array):
    shards.append(len(array.sharding.device_set))
    return array


def scenario_data_parallel_resume(out, scan, ema):
    import keras

    import devices
    import fastpath
    import training
    config, data, scan = tiny_config(ema=float(ema)), tiny_data(), bool(int(scan))
    with devices.distribution_scope():
        whole = tiny_net(config)
    assert isinstance(keras.distribution.distribution(), keras.distribution.DataParallel)
    unspied = fastpath.device_batch
    batch_shards = spy_shardings(fastpath, "device_batch", lambda xy: xy[0]["hsi"])  # in the scan's body too
    fastpath.fit(whole, data, config, 0, 3, [schedule(config)], SEED, verbose=0, scan=scan)
    fastpath.device_batch = unspied  # the runs below compare with this one: the persistent cache may serve them

    part = two_saved_then_one(config, data, out, scan)  # under the process's distribution: on both devices too
    worst = assert_same_variables(whole, part, 1e-6, "3 epochs against 2 + reload + 1, on two devices")
    assert float(part.optimizer.learning_rate) == pytest.approx(training.lr_at(2, config), rel=1e-6)
    write_result(out, applies=fastpath.applies(config), max_weight_difference=worst, batch_shards=batch_shards,
                 variable_devices=sorted({len(v.value.sharding.device_set) for v in part.weights}))
