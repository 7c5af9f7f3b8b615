"""Winograd's minimal filtering (winograd.py) computes the network's convolutions as Keras' Conv2D does,
values and gradients; the conv_algorithm choice, the checkpoints and oneDNN's ISA cap around it."""
import json

import keras
import numpy as np
import pytest
import tensorflow as tf

import hardware
import layers
import model
import network
import rundir
import winograd


ROUNDING = {3: 2e-5, 5: 1.5e-4}  # float32: F(6 x 6, 3 x 3) against F(6 x 6, 5 x 5)'s larger tiles


@pytest.fixture
def algorithm():
    """Set the process's convolution algorithm inside a test; the previous one comes back after it."""
    previous = layers.conv_algorithm()
    yield layers.set_conv_algorithm
    layers.set_conv_algorithm(previous)


@pytest.mark.parametrize("m, k", [(6, 3), (6, 5), (4, 5), (2, 3)])
def test_toom_cook_matrices_compute_a_1d_correlation(m, k):
    rng = np.random.default_rng(m * 10 + k)
    at, g, bt = winograd.toom_cook(m, k)
    d, w = rng.normal(size=m + k - 1), rng.normal(size=k)
    direct = np.array([d[i:i + k] @ w for i in range(m)])
    assert np.allclose(at @ ((g @ w) * (bt @ d)), direct, rtol=0, atol=1e-12)


@pytest.mark.parametrize("size, k", [(11, 5), (11, 3), (7, 5), (13, 3), (9, 5), (3, 3), (4, 5)])
def test_conv2d_same_equals_keras_conv_values_and_gradients(size, k):
    rng = np.random.default_rng(size * 10 + k)
    x = tf.constant(rng.normal(size=(6, size, size + 2, 7)), tf.float32)  # P != Q on purpose
    kernel = tf.constant(rng.normal(size=(k, k, 7, 5)) * 0.2, tf.float32)
    with tf.GradientTape(persistent=True) as tape:
        tape.watch([x, kernel])
        direct = keras.ops.conv(x, kernel, padding="same")
        fast = winograd.conv2d_same(x, kernel)
        loss_direct, loss_fast = (tf.reduce_sum(tf.sin(y)) for y in (direct, fast))
    scale, tolerance = float(tf.reduce_max(tf.abs(direct))), ROUNDING[k]
    assert fast.shape == direct.shape
    assert float(tf.reduce_max(tf.abs(fast - direct))) <= tolerance * scale
    for a, b in zip(tape.gradient(loss_fast, [x, kernel]), tape.gradient(loss_direct, [x, kernel])):
        assert float(tf.reduce_max(tf.abs(a - b))) <= tolerance * float(tf.reduce_max(tf.abs(b)))


def test_supports_only_what_it_computes():
    assert winograd.supports(3) and winograd.supports((5, 5))
    assert not winograd.supports(1) and not winograd.supports(7) and not winograd.supports((3, 5))
    assert not winograd.supports(3, strides=(2, 2)) and not winograd.supports(3, dilation_rate=(2, 2))
    assert not winograd.supports(3, padding="valid") and not winograd.supports(3, data_format="channels_first")


def test_the_layer_is_conv2d_in_float32_and_stays_direct_in_bfloat16(algorithm, monkeypatch):
    rng = np.random.default_rng(0)
    x = rng.normal(size=(4, 11, 11, 6)).astype("float32")
    conv = layers.Conv2D(8, 5, padding="same", activation="relu")
    algorithm("direct")
    direct = np.asarray(conv(x))
    algorithm("winograd")
    assert np.allclose(np.asarray(conv(x)), direct, rtol=0, atol=ROUNDING[5] * np.abs(direct).max())
    calls = []
    monkeypatch.setattr(winograd, "conv2d_same", lambda *a: calls.append(a) or keras.ops.conv(*a, padding="same"))
    conv(x)
    assert len(calls) == 1
    half = layers.Conv2D(8, 5, padding="same", dtype="mixed_bfloat16")
    half(x)
    assert len(calls) == 1  # bfloat16: direct


def test_the_whole_network_gives_the_same_outputs_and_gradients(algorithm):
    """Every gradient up to the decoders within Winograd's rounding. The decoders' own weights (no
    Winograd in them) are compared as a whole: their ReLUs see inputs that differ by that rounding,
    and a unit near zero can switch, which moves a near-cancelling gradient by a few percent."""
    keras.utils.set_random_seed(3)
    net = network.build_model(hsi_bands=7, aux_bands=2, num_classes=4, filters=8, fusion_units=4)
    rng = np.random.default_rng(1)
    x = {"hsi": rng.random((5, 11, 11, 7), dtype=np.float32), "aux": rng.random((5, 11, 11, 2), dtype=np.float32)}
    results = {}
    for name in ("direct", "winograd"):
        algorithm(name)
        with tf.GradientTape() as tape:
            out = net(x, training=True)
            loss = tf.reduce_sum(out["class"][:, 0]) + tf.reduce_mean(out["rec_hsi"])
        results[name] = [out["class"], *tape.gradient(loss, net.trainable_variables)]
    names = ["class"] + [v.path for v in net.trainable_variables]
    pairs = [(n, a, b) for n, a, b in zip(names, results["winograd"], results["direct"]) if b is not None]
    assert len(pairs) > 40 and all(a is not None for _, a, _ in pairs)  # rec_aux: no loss, no gradient
    decoders = [(a, b) for n, a, b in pairs if n.startswith("rec_")]
    assert len(decoders) == 18
    for name, a, b in pairs:
        scale = max(float(tf.reduce_max(tf.abs(b))), 1e-6)
        assert name.startswith("rec_") or float(tf.reduce_max(tf.abs(a - b))) <= 2 * ROUNDING[5] * scale, name
    difference = np.sqrt(sum(float(tf.reduce_sum((a - b) ** 2)) for a, b in decoders))
    assert difference <= 1e-3 * np.sqrt(sum(float(tf.reduce_sum(b ** 2)) for _, b in decoders))


def test_a_checkpoint_of_keras_own_conv2d_layers_still_loads(algorithm, tmp_path, monkeypatch):
    """Checkpoints made before layers.Conv2D existed hold Keras' Conv2D in each block's list; the
    list's weights are stored under the class's name, which ours keeps."""
    arch = dict(hsi_bands=7, aux_bands=2, num_classes=4, filters=8, fusion_units=4)
    with monkeypatch.context() as patch:
        patch.setattr(layers, "Conv2D", keras.layers.Conv2D)
        patch.setattr(network, "Conv2D", keras.layers.Conv2D)
        keras.utils.set_random_seed(4)
        old = network.build_model(**arch)
        assert type(old.get_layer("coupled_block_k3").convs[0]) is keras.layers.Conv2D
        old.save(tmp_path / "old.keras")
    x = {"hsi": np.ones((2, 11, 11, 7), "float32"), "aux": np.ones((2, 11, 11, 2), "float32")}
    algorithm("winograd")
    loaded = keras.saving.load_model(tmp_path / "old.keras")
    assert np.allclose(np.asarray(loaded(x)["class"]), np.asarray(old(x)["class"]), atol=1e-6)
    clf = network.load_classifier({**arch, "patch_size": 11}, str(tmp_path / "old.keras"), algorithm="winograd")
    assert type(clf.get_layer("hsi_stem_k3")) is layers.Conv2D
    assert np.allclose(np.asarray(clf(x)), np.asarray(old(x)["class"]), atol=1e-5)


@pytest.mark.parametrize("choice, precision, expected", [
    ("auto", "float32", "winograd"), ("auto", "mixed", "direct"), ("direct", "float32", "direct"),
    ("winograd", "mixed", "winograd"),  # asked for; the layers still compute bfloat16 directly
])
def test_auto_chooses_winograd_for_float32_on_a_cpu(choice, precision, expected):
    assert network.gpu_count() == 0 and keras.backend.backend() == "tensorflow"
    assert network.resolve_conv_algorithm(choice, precision)[0] == expected
    with pytest.raises(ValueError, match="conv_algorithm must be one of auto, direct, winograd, got 'fft'"):
        network.resolve_conv_algorithm("fft", "float32")


def test_a_new_run_records_its_algorithm_and_an_old_run_reads_as_direct(demo_h5, tmp_path):
    config = model.parse_config(["--data", str(demo_h5), "--out", str(tmp_path / "run"), "--precision", "float32"])
    assert config["conv_algorithm"] == "auto"  # model.py's block
    model.new_run(config, [])
    saved = json.loads((tmp_path / "run" / "config.json").read_text())
    assert saved["conv_algorithm_used"] == "winograd" and "float32 on a CPU" in saved["conv_algorithm_reason"]
    assert rundir.training_conv_algorithm(saved) == "winograd"
    old = {k: v for k, v in saved.items() if not k.startswith("conv_algorithm")}
    assert rundir.training_conv_algorithm(old) == "direct"
    assert rundir.differences(old, {"conv_algorithm": "direct"}) == []
    assert rundir.differences(old, {"conv_algorithm": "auto"}) == ["conv_algorithm: the run has 'direct', wanted 'auto'"]


def test_onednn_isa_cap_hides_the_units_above_it(monkeypatch):
    amx = frozenset({"avx2", "avx512f", "avx512_bf16", "amx_bf16", "amx_tile", "fma"})
    assert hardware.usable_flags(amx, None) == amx
    assert hardware.usable_flags(amx, "AVX2") == {"avx2", "fma"}
    assert hardware.usable_flags(amx, "AVX512_CORE") == {"avx2", "avx512f", "fma"}
    assert hardware.usable_flags(amx, "AVX512_CORE_BF16") == {"avx2", "avx512f", "avx512_bf16", "fma"}
    assert hardware.isa_cap({"ONEDNN_MAX_CPU_ISA": "avx2"}) == "AVX2"
    assert hardware.isa_cap({"DNNL_MAX_CPU_ISA": "AVX10_1_512_AMX"}) == "AVX512_CORE_AMX"
    assert hardware.isa_cap({"ONEDNN_MAX_CPU_ISA": "ALL"}) is None and hardware.isa_cap({}) is None
    monkeypatch.setattr(hardware, "_cpuinfo", lambda: ("Xeon", amx))
    monkeypatch.setenv("ONEDNN_MAX_CPU_ISA", "AVX2")
    assert network.resolve_precision("auto")[0] == "float32"
    assert "oneDNN capped at AVX2" in hardware.describe()
    monkeypatch.delenv("ONEDNN_MAX_CPU_ISA")
    assert network.resolve_precision("auto") == ("mixed", "auto: this CPU computes bfloat16 in hardware (amx_bf16)")
