"""Min-max normalisation per band, the rule written once: over the whole scene (the authors'
protocol) or over the training pixels only; rows are normalised as they are read, so no normalised
copy of a scene is ever held whole."""
import numpy as np

from readers import DataError, warn

NORMALISATIONS = {
    "scene": "min-max per band over the whole scene (authors' protocol)",
    "train": "min-max per band over the training pixels only, other pixels clipped to [0, 1]",
}


class Normalised:
    """Rows of a raw (H, W, B) array, min-max normalised per band as they are asked for
    (rows[a:b] -> float32), so that no normalised copy of the whole scene is ever made."""

    def __init__(self, raw, lo, hi, clip, where, name, over="the scene"):
        self.raw, self.shape, self.clip = raw, raw.shape, clip
        work = np.result_type(raw.dtype, np.float32)  # float64 data is offset in float64, then stored as float32
        self.lo = lo.astype(work)
        self.span = (hi.astype(work) - self.lo).astype(np.float32)
        for band in np.flatnonzero(self.span == 0):
            warn(f"{name} band {band} of {where} is constant over {over} ({self.lo[band]}); it becomes 0 there")
        self.span[self.span == 0] = 1  # a constant band gives (x - lo) / 1 = 0, no division by zero

    def __getitem__(self, rows):
        block = self.raw[rows]
        out = np.empty(block.shape, np.float32)
        for j in range(0, block.shape[1], 64):  # column blocks keep a column-major transpose in cache
            np.subtract(block[:, j:j + 64], self.lo, out=out[:, j:j + 64], casting="same_kind")
        out /= self.span  # division, not multiplication, so that the maximum becomes exactly 1
        if self.clip:
            np.clip(out, 0, 1, out=out)
        return out


def band_range(x, where, name, pixels=None):
    """Per-band min and max over the scene, or over the (row, col) pixels given (--normalise train).
    Refuses NaN/Inf anywhere in the scene: they would poison the normalisation."""
    lo, hi = x.min(axis=(0, 1)), x.max(axis=(0, 1))  # NaN propagates, Inf shows as a bound
    bad = ~(np.isfinite(lo) & np.isfinite(hi))
    if bad.any():
        b = int(np.flatnonzero(bad)[0])
        n = int((~np.isfinite(x[..., b])).sum())
        raise DataError(f"{where} shape {x.shape}: {name} band {b} holds {n} NaN/Inf value(s) "
                        f"({int(bad.sum())} band(s) affected); fill or mask them first")
    if pixels is None:
        return lo, hi
    values = x[pixels[:, 0], pixels[:, 1]]
    return values.min(axis=0), values.max(axis=0)
