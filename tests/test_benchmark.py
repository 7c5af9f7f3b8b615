"""benchmark.py's reference: the authors' graph in plain Keras is the same network as ours (same
trainable weights, same outputs) and is fed the same rotated batches, so its speed is comparable;
the whole-command timer of --prepare and --evaluate."""
import sys

import numpy as np
import pytest

import benchmark
import jobtimes
import plainkeras
import network
import training
from patchfile import PatchFile


def test_the_plain_keras_build_has_our_networks_weights_and_outputs(demo_h5):
    with PatchFile(demo_h5) as pf:
        info = pf.info()
    config = {**benchmark.mode_config("plain-fp32", 40), "filters": 8, "fusion_units": 8}
    ours = network.build_model(**network.architecture(config, info))
    plain, clf = plainkeras.keras_reference(info, config)
    kernels = [sorted(tuple(w.shape) for w in net.trainable_weights if len(w.shape) >= 4) for net in (plain, ours)]
    assert kernels[0] == kernels[1] and len(kernels[0]) == 2 * (1 + 2 + 4) + 2 * 8  # per branch: Conv3D, 2 stems, W1..W4; 8 per decoder
    assert plain.count_params() - sum(int(np.prod(w.shape)) for w in plain.non_trainable_weights) == \
        ours.count_params() - sum(int(np.prod(w.shape)) for w in ours.non_trainable_weights)
    assert {k: tuple(v.shape) for k, v in plain.output.items()} == {k: tuple(v.shape) for k, v in ours.output.items()}
    assert clf.output.shape == (None, info["num_classes"])


def test_its_numpy_batches_are_the_rotated_batches_of_our_pipeline(demo_h5):
    with PatchFile(demo_h5) as pf:
        train = pf.load("train")
    ours = training.RotatedPatches(train, 40, seed=0)
    plain = plainkeras.NumpyBatches(train, 40, 3)
    for i in range(3):
        x, y = ours[i]
        part = slice(40 * i, 40 * (i + 1))
        for m in ("hsi", "aux"):
            np.testing.assert_array_equal(plain.x[m][part], x[m])
        np.testing.assert_array_equal(plain.y["class"][part], y["class"])


def test_defaults_mode_is_model_pys_block():
    config = benchmark.mode_config("defaults", 64)
    assert config["precision"] == "auto" and config["ema"] > 0 and config["warmup"] is True
    assert config["stacked_streams"] is True and config["deterministic"] == "auto"
    assert benchmark.mode_config("stacked-mixed", 64)["precision"] == "mixed"
    assert benchmark.mode_config("stacked-mixed", 64)["ema"] == 0.0
    assert config["conv_algorithm"] == "auto"
    assert benchmark.mode_config("stacked-winograd", 64)["conv_algorithm"] == "winograd"
    assert benchmark.mode_config("stacked-fp32", 64)["conv_algorithm"] == "direct"


def test_each_mode_runs_under_the_isa_cap_asked_for():
    user = {"PATH": "/bin", "ONEDNN_MAX_CPU_ISA": "AVX512_CORE"}
    assert benchmark.isa_env(None, user) == user  # no --isa: the user's own cap holds
    assert benchmark.isa_env("AVX2", user) == {"PATH": "/bin", "ONEDNN_MAX_CPU_ISA": "AVX2"}
    assert benchmark.isa_env("ALL", user) == {"PATH": "/bin"}


def test_a_whole_command_is_timed_with_its_peak_memory_and_a_failure_raises_with_its_message():
    seconds, peak = jobtimes.timed([sys.executable, "-c", "import time; b = bytearray(200_000_000); time.sleep(0.3)"])
    assert 0.3 <= seconds < 30 and 0.2 <= peak < 2  # GB: the 200 MB it held, and Python itself
    with pytest.raises(RuntimeError, match=r"-c import sys; sys.exit\('no such scene'\) failed:\nno such scene"):
        jobtimes.timed([sys.executable, "-c", "import sys; sys.exit('no such scene')"])


def test_a_child_s_figures_are_read_from_its_last_result_line_and_a_failure_names_it():
    code = "import jobtimes; print('noise'); jobtimes.print_result({'n': 1}); jobtimes.print_result({'n': 2})"
    assert jobtimes.child_result([sys.executable, "-c", code], None, "two results") == {"n": 2}
    with pytest.raises(RuntimeError, match=r"mode x failed:\n.*boom"):
        jobtimes.child_result([sys.executable, "-c", "import sys; sys.exit('boom')"], None, "mode x")
    with pytest.raises(RuntimeError, match="silent failed"):  # exit 0 but no figures printed
        jobtimes.child_result([sys.executable, "-c", "print('no result')"], None, "silent")
