"""The four-rotation epoch, one rule for every training path: each training patch is seen once in
each of its four rotations (0, 90, 180, 270 degrees) per epoch, in an order that is a pure
function of (seed, epoch), so a resumed run sees the batches an uninterrupted one would.

Keras' fit reads the batches through training.RotatedPatches (NumPy, on the host); the JAX fast
path (fastpath.py) gathers and turns them on the device. Both take the order and the batch count
from here. NumPy only: this module imports nothing of the project.
"""
import math

import numpy as np

TURNS = 4  # rotations per patch and epoch


def steps_per_epoch(n_patches, batch_size):
    """Batches in an epoch of every patch in its four rotations (the last one may be partial)."""
    return math.ceil(TURNS * n_patches / batch_size)


def epoch_order(seed, epoch, n_patches):
    """The order of epoch `epoch`: a permutation of the 4 n (patch, rotation) pairs, pair q being
    patch q // 4 turned (q % 4) x 90 degrees."""
    return np.random.default_rng([seed, epoch]).permutation(TURNS * n_patches)


def rotation_index(patch_size):
    """(4, P * P) int32: row k holds, for each pixel of a patch turned k x 90 degrees as
    np.rot90(x, k, axes=(1, 2)) turns it, the flat index of its source pixel."""
    grid = np.arange(patch_size * patch_size).reshape(patch_size, patch_size)
    return np.stack([np.rot90(grid, k).ravel() for k in range(TURNS)]).astype(np.int32)
