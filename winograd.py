"""Winograd's minimal filtering for the network's 'same' convolutions: the same result as a direct
convolution, to float32's rounding, with a fraction of its multiplications.

A k x k correlation of an input tile of n x n pixels gives an m x m output tile (n = m + k - 1) as
A^T [(G g G^T) * (B^T d B)] A (Lavin & Gray, "Fast algorithms for convolutional neural networks",
CVPR 2016): the kernel g and the tile d are carried to n x n points, multiplied there point by
point (summed over input channels: one matrix product per point), and carried back. The matrices
come from the Toom-Cook construction on n - 1 finite points and infinity. Both kernel sizes use 6 x 6
output tiles, two per axis of an 11 x 11 patch: F(6 x 6, 3 x 3) on tiles of 8 x 8 points (64 products
per tile where a direct convolution takes 324) and F(6 x 6, 5 x 5) on tiles of 10 x 10 (100 against
900). Larger tiles save multiplications but lose float32 precision; F(4 x 4, 5 x 5), used before,
needed 3 x 3 tiles of 8 x 8 on such a patch, 44 % more products than F(6 x 6, 5 x 5).

Why here: on a CPU without bfloat16 hardware the network is bound by oneDNN's float32 convolutions,
already near the CPU's peak, so only fewer multiplications make it faster (docs/performance.md).
The tiles of a whole P x Q patch are handled by two constant matrices per axis that fold the tiling,
the 'same' zero padding and the transform into one product each, so that every step is a plain
matrix product and no tile is copied out. In float32 the result differs from a direct convolution by
about 1e-5 (3 x 3) and 1e-4 (5 x 5) of its largest value (tests/test_winograd.py), where bfloat16
rounds each value by up to 4e-3; in bfloat16 or float16 the transforms would lose too much, so
callers use it in float32 only.

keras.ops only: it runs under every backend; `conv2d_same(x, kernel)` takes channels-last x
(N, P, Q, C) and a (k, k, C, K) kernel.
"""
import functools

import numpy as np
from keras import ops

# The finite points of a tile of n points (infinity is the last). For n = 10, one of the sets of the
# smallest float32 error on random patches among {0, 1, -1} and three pairs of +-2, 1/2, 3/2, 2/3, 3/4, 4/3,
# 5/4, 4/5, 3, 1/3, 5/2, 2/5: 1e-4 of the largest output at most, about 8 times F(4 x 4, 5 x 5)'s.
TILE_POINTS = {8: (0.0, 1.0, -1.0, 2.0, -2.0, 0.5, -0.5),
               10: (0.0, 1.0, -1.0, 1.25, -1.25, 2.5, -2.5, 0.4, -0.4)}
OUTPUT_TILE = {3: 6, 5: 6}  # kernel size k -> output tile m; tiles of n = m + k - 1 points


def supports(kernel_size, strides=(1, 1), dilation_rate=(1, 1), padding="same", data_format="channels_last"):
    """Whether conv2d_same computes this convolution: a square kernel of 3 or 5, stride and dilation
    1, 'same' padding, channels last."""
    k = tuple(kernel_size) if isinstance(kernel_size, (tuple, list)) else (kernel_size, kernel_size)
    return (k[0] == k[1] and k[0] in OUTPUT_TILE and tuple(strides) == (1, 1) and tuple(dilation_rate) == (1, 1)
            and padding == "same" and data_format == "channels_last")


def toom_cook(m, k, points=None):
    """(A^T, G, B^T) of F(m, k) on n = m + k - 1 points (n - 1 finite ones and infinity), float64;
    points: TILE_POINTS[n], or the first of TILE_POINTS[8] for a smaller n.
    Each row of B^T is scaled to a largest entry of 1, its inverse scale moved to G's row."""
    n = m + k - 1
    points = TILE_POINTS.get(n, TILE_POINTS[8]) if points is None else points
    if len(points) < n - 1:
        raise ValueError(f"F({m}, {k}) needs {n - 1} finite points, got {len(points)}")

    def evaluation(columns):  # rows: the polynomial of `columns` coefficients at each point, then its top one
        rows = [[p ** j for j in range(columns)] for p in points[:n - 1]]
        return np.array(rows + [[0.0] * (columns - 1) + [1.0]])

    bt = np.linalg.inv(evaluation(n)).T
    scale = np.abs(bt).max(axis=1, keepdims=True)
    return evaluation(m).T, evaluation(k) * scale, bt / scale


@functools.lru_cache(maxsize=None)
def axis_matrices(size, k):
    """For one axis of `size` pixels and kernel k: (B, A, tiles), where B (n * tiles, size) carries the
    axis to the points of every tile, the 'same' padding's zeros left out, and A (size, n * tiles)
    carries the points back to the outputs, the last tile's overhang dropped. Rows of B and columns of
    A are ordered (point, tile)."""
    m = OUTPUT_TILE[k]
    n, pad = m + k - 1, (k - 1) // 2
    at, _, bt = toom_cook(m, k)
    tiles = -(-size // m)
    b, a = np.zeros((n, tiles, size)), np.zeros((size, n, tiles))
    for t in range(tiles):
        first = t * m - pad  # the tile's first input pixel, before the padding
        for x in range(max(first, 0), min(first + n, size)):
            b[:, t, x] = bt[:, x - first]
        for p in range(min(m, size - t * m)):
            a[t * m + p, :, t] = at[p, :]
    return b.reshape(n * tiles, size), a.reshape(size, n * tiles), tiles


@functools.lru_cache(maxsize=None)
def kernel_matrix(k):
    return toom_cook(OUTPUT_TILE[k], k)[1]


def conv2d_same(x, kernel):
    """A 'same', stride-1 correlation of x (N, P, Q, C) with kernel (k, k, C, K), as Keras' Conv2D
    computes it (no bias, no activation), through F(m x m, k x k) tiles."""
    k, channels, filters = kernel.shape[0], kernel.shape[2], kernel.shape[3]
    p, q = x.shape[1], x.shape[2]
    n = OUTPUT_TILE[k] + k - 1
    bp, ap, tp = (ops.convert_to_tensor(v, x.dtype) if i < 2 else v for i, v in enumerate(axis_matrices(p, k)))
    bq, aq, tq = (ops.convert_to_tensor(v, x.dtype) if i < 2 else v for i, v in enumerate(axis_matrices(q, k)))
    g = ops.convert_to_tensor(kernel_matrix(k), kernel.dtype)
    # the input to the points: rows first, then columns, the batch and channels carried along
    v = ops.matmul(bp, ops.reshape(ops.transpose(x, (1, 2, 0, 3)), (p, -1)))  # (n tp, q N C)
    v = ops.matmul(bq, ops.reshape(v, (n * tp, q, -1)))  # (n tp, n tq, N C), bq broadcast
    v = ops.reshape(v, (n, tp, n, -1, channels))  # (a, t, b, (s N), C)
    # the kernel to the points: U[a, b] = G g G^T per channel pair, as two products (an einsum of
    # three operands cost as much as the convolutions' own forward pass here)
    u = ops.matmul(g, ops.reshape(kernel, (k, -1)))  # (a, j C K)
    u = ops.matmul(g, ops.reshape(u, (n, k, -1)))  # (a, b, C K), g broadcast
    u = ops.reshape(u, (n, 1, n, channels, filters))
    # one product per point (a, b), summed over channels, for every tile of every patch
    y = ops.matmul(v, u)  # (a, t, b, (s N), K)
    # back to the outputs: rows, then columns
    y = ops.matmul(ap, ops.reshape(y, (n * tp, -1)))  # (P, b s N K)
    y = ops.matmul(aq, ops.reshape(y, (p, n * tq, -1)))  # (P, Q, N K), aq broadcast
    return ops.transpose(ops.reshape(y, (p, q, -1, filters)), (2, 0, 1, 3))
