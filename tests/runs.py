"""What the tests of model.py runs share: a tiny network's flags, training in this process, and
reading or comparing what a run directory holds."""
import csv
import os

import keras
import numpy as np
import pytest

import model
import network

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
# A small network of one branch, batch 40: the demo's 4 x 120 (or 4 x 150) patches make whole
# batches, so TensorFlow traces the training step once, not again for a last, partial batch.
# Precision and convolution algorithm fixed: the same on every CI machine, whatever auto would choose
# there; direct convolutions, with which a tiny run takes about 3/4 of its time with Winograd's, most
# of it TensorFlow tracing the step (test_winograd.py checks that both compute the same).
TINY = ["--ema", "0", "--filters", "8", "--fusion_units", "8", "--kernel_sizes", "3", "--batch_size", "40",
        "--precision", "float32", "--conv_algorithm", "direct"]


def train(args):
    model.main(args)


def history(run):
    with open(os.path.join(run, "history.csv")) as f:
        return list(csv.DictReader(f))


def without_times(rows):
    return [{k: v for k, v in row.items() if k != "epoch_seconds"} for row in rows]


def assert_same_history(rows, want, where=""):
    """The same epochs and columns, each value within 1e-6 of the other's: an epoch's logged loss is a
    float32 running mean of the batches' total losses, and its last bit differed between two fresh runs of
    one seed in one process (2.2069483 against 2.2069485) while their weights were bit-identical
    (same_weights checks those exactly)."""
    rows, want = without_times(rows), without_times(want)
    assert [sorted(r) for r in rows] == [sorted(r) for r in want], where
    for r, w in zip(rows, want):
        assert r["epoch"] == w["epoch"], where
        for key in w:
            assert float(r[key]) == pytest.approx(float(w[key]), rel=1e-6, abs=1e-12), (where, r["epoch"], key)


def same_weights(run_a, run_b, name, averaged=False):
    """The two runs' checkpoint `name` holds the same weights, and with averaged=True the same
    averaged weights in its optimizer (each checkpoint loaded once)."""
    paths = [os.path.join(r, name) for r in (run_a, run_b)]
    a, b = (keras.saving.load_model(p) for p in paths)
    for wa, wb in zip(a.get_weights(), b.get_weights()):
        np.testing.assert_array_equal(wa, wb)
    if averaged:
        for va, vb in zip(*(network.averaged_values(p, saved) for p, saved in zip(paths, (a, b)))):
            np.testing.assert_array_equal(va, vb)
