"""What the tests of model.py runs share: a tiny network's flags, training in this process, and
reading or comparing what a run directory holds."""
import csv
import os

import keras
import numpy as np

import model

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
# A small network of one branch, batch 40: the demo's 4 x 120 (or 4 x 150) patches make whole
# batches, so TensorFlow traces the training step once, not again for a last, partial batch.
TINY = ["--ema", "0", "--filters", "8", "--fusion_units", "8", "--kernel_sizes", "3", "--batch_size", "40",
        "--precision", "float32"]  # the same on every CI machine, whatever precision auto would choose there


def train(args):
    model.main(args)


def history(run):
    with open(os.path.join(run, "history.csv")) as f:
        return list(csv.DictReader(f))


def without_times(rows):
    return [{k: v for k, v in row.items() if k != "epoch_seconds"} for row in rows]


def same_weights(run_a, run_b, name):
    a, b = (keras.saving.load_model(os.path.join(r, name)) for r in (run_a, run_b))
    for wa, wb in zip(a.get_weights(), b.get_weights()):
        np.testing.assert_array_equal(wa, wb)
