"""The patch file: the one module that knows its layout, writes it, opens and checks it, reads its
groups and cuts P x P patches from the scene it stores. DataPrepare.py writes it; model.py,
evaluate.py, baselines.py and benchmark.py read it, all through this module.

Layout (format_version 2); the file is the size of the scene, whatever the number of test pixels:

  scene/hsi (H, W, B), scene/aux (H, W, A)  float32, the normalised scene, chunked in row tiles
  scene/train_map, scene/test_map (H, W)    the maps as prepared (1..C, 0 unlabelled; the val
                                            pixels are still in train_map), uint8 or uint16
  train/, val/ (val only with --val-fraction > 0):
      coord (N, 2) int32 (row, col), label (N,) int32 0..C-1,
      hsi (N, P, P, B), aux (N, P, P, A) float32: the patch set, cut once (it is small)
  test/: coord and label only; its patches are cut from scene/ whenever they are read
  normalisation/hsi_min, hsi_max (B,), aux_min, aux_max (A,) float64: the raw per-band minimum and
      maximum each band was normalised with, x' = (x - min) / (max - min) (a constant band: x - min),
      so that another scene can be prepared with the same statistics (DataPrepare.py --like)
  root attributes: format_version, dataset, layout, modalities, class_names, num_classes, palette,
      patch_size, normalise, normalisation, split (how the split was made, in words), sources (JSON:
      path -> sha256), command, synthetic, val_fraction, seed, what the preparation chose
      (hsi_channels, split_method, block_size, buffer_px, ...), labelled, and the georeferencing:
      georeferenced (bool), crs_wkt (WKT, "" without one), geotransform (6 float64 in GDAL order: x
      origin, pixel width, row rotation, y origin, column rotation, pixel height; only when
      georeferenced) and georeferencing (in words: from which file, or "none: ...").

A scene prepared without labels (DataPrepare.py --like: labelled False) holds scene/hsi, scene/aux
and normalisation/ only: no maps and no splits; it can be mapped (scene_batches), not trained on or
scored. Files written before `labelled`, `normalisation/` and the georeferencing attributes existed
are still format 2 and read as labelled, without statistics and without georeferencing.

Patches are centred on their pixel and zero outside the scene (the authors' zero padding), cut by
`cut_patches`, the only function that cuts them, from bands of rows held in memory one at a time.
"""
import os

import numpy as np

from fileio import replacing

FORMAT_VERSION = 2
MODALITIES = ("hsi", "aux")
SPLITS = ("train", "val", "test")
PRECUT = ("train", "val")  # splits whose patches the file stores; the others are cut on reading
MAPS = ("train_map", "test_map")
STATS = ("hsi_min", "hsi_max", "aux_min", "aux_max")  # normalisation/: the statistics of every modality
REQUIRED_ATTRS = ("dataset", "class_names", "patch_size")  # in every file DataPrepare.py ever wrote
FORMAT_ATTRS = REQUIRED_ATTRS + ("palette", "normalise", "normalisation", "split")  # format 2
BAND_ROWS = 32  # scene rows held in memory at a time (plus P - 1 rows of context)
WRITE_ROWS = 64  # scene rows normalised and written per step
CUT_BATCH = 4096  # patches cut and written per step when the file is made


class PatchFileError(ValueError):
    """The patch file is missing, foreign, from an older version, or lacks what is asked of it."""


# -----------------------------------------------------------------------------
# Cutting patches

def cut_patches(scene, coords, patch_size):
    """(N, P, P, C) float32 patches of an (H, W, C) scene (a NumPy array or an HDF5 dataset),
    centred on coords (N, 2) (row, col), zero outside the scene. Reads only the rows the patches
    span; the zero border is added to that band alone, never to the whole scene."""
    coords = np.asarray(coords).reshape(-1, 2)
    h, w, c = scene.shape
    p, r = patch_size, patch_size // 2
    if not len(coords):
        return np.zeros((0, p, p, c), np.float32)
    # negative indices would silently wrap around, so refuse anything outside the scene
    if coords.min() < 0 or coords[:, 0].max() >= h or coords[:, 1].max() >= w:
        raise ValueError(f"coords outside the {h} x {w} scene")
    (top, left), (bottom, right) = coords.min(0), coords.max(0) + 1
    lo, hi, first, last = max(0, top - r), min(h, bottom + r), max(0, left - r), min(w, right + r)
    band = np.zeros((bottom - top + 2 * r, right - left + 2 * r, c), np.float32)
    band[lo - top + r:hi - top + r, first - left + r:last - left + r] = scene[lo:hi, first:last]
    windows = np.lib.stride_tricks.sliding_window_view(band, (p, p), axis=(0, 1))
    windows = np.moveaxis(windows, 2, -1)  # (rows, cols, C, P, P) view -> (rows, cols, P, P, C) view
    # the window starting at band (i, j) is centred on scene (top + i, left + j)
    return np.asarray(windows[coords[:, 0] - top, coords[:, 1] - left], np.float32)


class RowCache:
    """One band of scene rows in memory, read as the patches asked for move down the scene: each
    row is read about once, and memory holds one band, whatever the number of patches."""

    def __init__(self, scene, patch_size, band_rows=BAND_ROWS):
        self.scene, self.patch_size, self.band_rows = scene, patch_size, band_rows
        self.rows, self.lo, self.hi = None, 0, 0

    def covers(self, row):
        h, r = self.scene.shape[0], self.patch_size // 2
        return self.rows is not None and self.lo <= max(0, row - r) and min(h, row + r + 1) <= self.hi

    def load(self, row):
        h, r = self.scene.shape[0], self.patch_size // 2
        self.lo, self.hi = max(0, row - r), min(h, row + self.band_rows + r)
        self.rows = np.asarray(self.scene[self.lo:self.hi], np.float32)

    def cut(self, coords):
        """Patches for coords (N, 2) sorted by row, in their order."""
        coords = np.asarray(coords).reshape(-1, 2)
        if (np.diff(coords[:, 0]) < 0).any():
            raise ValueError("RowCache.cut needs coords sorted by row (see sorted_batches)")
        h, p, r = self.scene.shape[0], self.patch_size, self.patch_size // 2
        out = np.empty((len(coords), p, p, self.scene.shape[-1]), np.float32)
        start = 0
        while start < len(coords):
            if not self.covers(coords[start, 0]):
                self.load(coords[start, 0])
            # rows further down are covered while their patches end inside the band (or the scene)
            last = self.hi - r - 1 if self.hi < h else h
            stop = max(start + 1, int(np.searchsorted(coords[:, 0], last, side="right")))
            # every row a patch needs is in the band or outside the scene, so the band's own zero
            # border is the scene's
            out[start:stop] = cut_patches(self.rows, coords[start:stop] - np.array([self.lo, 0]), p)
            start = stop
        return out


def row_major(coords):
    """The order that sorts (row, col) coordinates row by row: how patches are read, a band of rows
    at a time."""
    coords = np.asarray(coords).reshape(-1, 2)
    return np.lexsort((coords[:, 1], coords[:, 0]))


def sorted_batches(coords, batch_size):
    """Indices into coords, row-major, batch_size at a time."""
    order = row_major(coords)
    for i in range(0, len(order), batch_size):
        yield order[i:i + batch_size]


def chebyshev_distance(shape, sources, targets):
    """Chebyshev (chessboard) distance in pixels from each target (row, col) to the nearest source
    pixel; inf when there is no source. A distance d <= P // 2 puts a source inside the target's
    own P x P patch."""
    from scipy import ndimage
    targets = np.asarray(targets).reshape(-1, 2)
    sources = np.asarray(sources).reshape(-1, 2)
    if not len(sources):
        return np.full(len(targets), np.inf)
    far = np.ones(shape, bool)
    far[sources[:, 0], sources[:, 1]] = False
    d = ndimage.distance_transform_cdt(far, metric="chessboard")
    return d[targets[:, 0], targets[:, 1]].astype(np.float64)


# -----------------------------------------------------------------------------
# Writing

def scene_chunks(h, w, c):
    """HDF5 chunks of a stored scene: tiles of rows, all channels."""
    return min(h, 16), min(w, 128), c


def estimate_bytes(shape, bands, split_sizes, patch_size):
    """Upper bound of the file's size in bytes, before writing it."""
    h, w = shape
    rows, cols, _ = scene_chunks(h, w, 1)
    scene = -(-h // rows) * rows * -(-w // cols) * cols * sum(bands) * 4  # whole chunks
    precut = sum(n for s, n in split_sizes.items() if s in PRECUT)
    return (scene + precut * patch_size ** 2 * sum(bands) * 4
            + sum(split_sizes.values()) * 12 + 2 * h * w * 2 + (1 << 20))


def georef_attrs(georef, note):
    """The root attributes that record a georef ({"crs": WKT or None, "transform": 6 numbers in GDAL
    order}, or None) and `note`, the same in words."""
    if georef is None:
        return dict(georeferenced=False, crs_wkt="", georeferencing=note)
    return dict(georeferenced=True, crs_wkt=georef.get("crs") or "", georeferencing=note,
                geotransform=np.asarray(georef["transform"], np.float64).reshape(6))


def write(out, attrs, scene, splits, maps, patch_size, stats=None):
    """Write a patch file at `out`, under a temporary name renamed at the end: a failure leaves
    nothing behind. scene: {"hsi": rows, "aux": rows}, each with .shape (H, W, C) and [a:b] giving
    float32 rows a..b-1 of the normalised scene, so that no normalised copy of the whole scene need
    exist; splits: {split: (coords (N, 2), labels (N,) 0..C-1)}; maps: {"train_map", "test_map"};
    stats: {"hsi_min", "hsi_max", "aux_min", "aux_max"} per band. A scene without labels has no
    splits and no maps ({} and None): the file says labelled False."""
    import h5py
    with replacing(out) as tmp:
        f = h5py.File(tmp, "w")
        try:
            write_contents(f, attrs, scene, splits, maps, patch_size, stats)
        except BaseException:
            try:
                f.close()
            except Exception:  # a full disk fails the close too; the first error says why
                pass
            raise
        try:
            f.close()  # the last flush: it can fail like any write
        except RuntimeError as e:
            raise OSError(str(e)) from e


def write_contents(f, attrs, scene, splits, maps, patch_size, stats=None):
    f.attrs["format_version"] = FORMAT_VERSION
    f.attrs["labelled"] = maps is not None
    for k, v in attrs.items():
        f.attrs[k] = v
    if stats is not None:
        n = f.create_group("normalisation")
        for k in STATS:
            n[k] = np.asarray(stats[k], np.float64)
    g = f.create_group("scene")
    for m in MODALITIES:
        write_scene(g, m, scene[m])
    for name in MAPS if maps is not None else ():
        labels = maps[name]
        g.create_dataset(name, data=labels.astype(np.uint8 if labels.max() < 256 else np.uint16),
                         compression="gzip", shuffle=True)
    for split, (coords, labels) in splits.items():
        order = row_major(coords)
        coords, labels = coords[order], labels[order]
        s = f.create_group(split)
        s["coord"], s["label"] = coords.astype(np.int32), labels.astype(np.int32)
        if split in PRECUT:
            write_patches(s, g, coords, patch_size, split)


def write_scene(group, name, rows):
    from tqdm import tqdm
    h, w, c = rows.shape
    ds = group.create_dataset(name, (h, w, c), np.float32, chunks=scene_chunks(h, w, c))
    for top in tqdm(range(0, h, WRITE_ROWS), desc=f"writing scene/{name}", unit="block", leave=False):
        ds[top:top + WRITE_ROWS] = rows[top:min(top + WRITE_ROWS, h)]


def write_patches(split_group, scene_group, coords, patch_size, split):
    """Cut a split's patches from the scene just written; coords are row-major."""
    from tqdm import tqdm
    n, p = len(coords), patch_size
    out = {m: split_group.create_dataset(m, (n, p, p, scene_group[m].shape[-1]), np.float32) for m in MODALITIES}
    caches = {m: RowCache(scene_group[m], p) for m in MODALITIES}
    with tqdm(total=n, desc=f"cutting {split} patches", unit="patch", leave=False) as bar:
        for i in range(0, n, CUT_BATCH):
            for m in MODALITIES:
                out[m][i:i + CUT_BATCH] = caches[m].cut(coords[i:i + CUT_BATCH])
            bar.update(len(coords[i:i + CUT_BATCH]))


# -----------------------------------------------------------------------------
# Reading

def text(x):
    return x.decode() if isinstance(x, bytes) else str(x)


class PatchFile:
    """An open, checked patch file. Use as a context manager, or close() it."""

    def __init__(self, path):
        import h5py
        self.path = str(path)
        if not os.path.isfile(self.path):
            raise PatchFileError(f"{self.path}: no such file (make it with DataPrepare.py)")
        try:
            self.f = h5py.File(self.path, "r")
        except OSError as e:
            raise PatchFileError(f"{self.path}: not an HDF5 file ({e}); make it with DataPrepare.py") from None
        try:
            self.check()
        except BaseException:  # whatever failed, the file is not left open
            self.f.close()
            raise

    def check(self):
        a = self.f.attrs
        if "format_version" not in a:
            if all(k in a for k in REQUIRED_ATTRS):
                command = text(a.get("command", "")) or "python DataPrepare.py ..."
                raise PatchFileError(
                    f"{self.path}: made by an older DataPrepare.py, which stored every test patch pre-cut "
                    f"(a file many times the scene's size); prepare it again, it will be the size of the "
                    f"scene: {command}")
            missing = [k for k in REQUIRED_ATTRS if k not in a]
            raise PatchFileError(f"{self.path}: attributes {missing} missing: not a patch file written by "
                                 f"DataPrepare.py (it has attributes {sorted(a)})")
        if int(a["format_version"]) != FORMAT_VERSION:
            raise PatchFileError(f"{self.path}: patch file format {int(a['format_version'])}, this code reads "
                                 f"format {FORMAT_VERSION}; prepare it again with this DataPrepare.py")
        missing = [k for k in FORMAT_ATTRS if k not in a]
        if missing:
            raise PatchFileError(f"{self.path}: attributes {missing} missing: not a complete patch file written "
                                 f"by DataPrepare.py (it has attributes {sorted(a)})")
        if not self.labelled:
            self.group("scene", MODALITIES)
            return
        for group, keys in (("scene", MODALITIES + MAPS), ("train", ("coord", "label") + MODALITIES),
                            ("test", ("coord", "label"))):
            self.group(group, keys)

    def group(self, name, keys=("coord", "label")):
        if name in SPLITS and not self.labelled:
            self.no_labels(f"no '{name}' split")
        if name not in self.f:
            hint = (": carve one with DataPrepare.py --val-fraction 0.1" if name == "val" else
                    ": not a complete patch file written by DataPrepare.py")
            raise PatchFileError(f"{self.path}: group '{name}' missing (it has {sorted(self.f.keys())}){hint}")
        missing = [k for k in keys if k not in self.f[name]]
        if missing:
            raise PatchFileError(f"{self.path}: group '{name}' lacks {missing} (it has {sorted(self.f[name].keys())})")
        return self.f[name]

    def close(self):
        self.f.close()

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()

    def no_labels(self, what):
        like = text(self.f.attrs.get("like", "")) or "another file"
        raise PatchFileError(f"{self.path}: the file has no labels ({what}): a scene prepared without ground truth "
                             f"with the statistics of {like} (DataPrepare.py --like); it can be mapped "
                             "(scene_batches), not trained on or scored")

    # --- what the file says about itself
    @property
    def labelled(self):
        """False for a scene prepared without labels (DataPrepare.py --like): no maps, no splits."""
        return bool(self.f.attrs.get("labelled", True))

    @property
    def georef(self):
        """{"crs": WKT or None, "transform": 6 floats in GDAL order} when the sources were
        georeferenced (geo.write_label_geotiff takes it as it is), else None."""
        a = self.f.attrs
        if not bool(a.get("georeferenced", False)) or "geotransform" not in a:
            return None
        crs = text(a.get("crs_wkt", ""))
        return dict(crs=crs or None, transform=tuple(float(v) for v in np.asarray(a["geotransform"]).ravel()))

    @property
    def stats(self):
        """{"hsi_min", "hsi_max", "aux_min", "aux_max"}: the raw per-band range each band was
        normalised with (float64 arrays), or None in files written before they were stored."""
        if "normalisation" not in self.f or not all(k in self.f["normalisation"] for k in STATS):
            return None
        return {k: self.f["normalisation"][k][()] for k in STATS}

    @property
    def attrs(self):
        """The root attributes as plain Python values."""
        out = {}
        for k, v in self.f.attrs.items():
            if isinstance(v, np.ndarray):
                v = [text(x) for x in v] if v.dtype.kind in "OSU" else v.tolist()
            elif isinstance(v, (bytes, str)):
                v = text(v)
            elif isinstance(v, np.generic):
                v = v.item()
            out[k] = v
        return out

    @property
    def class_names(self):
        return [text(c) for c in self.f.attrs["class_names"]]

    @property
    def patch_size(self):
        return int(self.f.attrs["patch_size"])

    @property
    def shape(self):
        return tuple(self.f["scene/hsi"].shape[:2])

    @property
    def bands(self):
        return {m: int(self.f["scene"][m].shape[-1]) for m in MODALITIES}

    @property
    def splits(self):
        return [s for s in SPLITS if s in self.f]

    @property
    def palette(self):
        return self.f.attrs["palette"]

    def info(self):
        a = self.f.attrs
        return dict(dataset=text(a["dataset"]), class_names=self.class_names, num_classes=len(self.class_names),
                    patch_size=self.patch_size, hsi_bands=self.bands["hsi"], aux_bands=self.bands["aux"],
                    synthetic=bool(a.get("synthetic", False)),
                    data_label=text(a.get("data_label", "")), data_note=text(a.get("data_note", "")),
                    normalise=text(a["normalise"]), normalisation=text(a["normalisation"]))

    # --- the splits
    def labels(self, split):
        return self.group(split)["label"][()]

    def coords(self, split):
        return self.group(split)["coord"][()]

    def label_map(self, name):
        """'train_map' or 'test_map', (H, W), 1..C with 0 unlabelled."""
        if not self.labelled:
            self.no_labels(f"no {name}")
        return self.f["scene"][name][()].astype(np.int32)

    def distance_to_train(self, split="test"):
        """Chebyshev distance of each pixel of `split` to the nearest pixel of the train split (the
        pixels the network is trained on; val pixels are not among them)."""
        return chebyshev_distance(self.shape, self.coords("train"), self.coords(split))

    def batches(self, split, batch_size, stop=None, patch_size=None):
        """Yield (indices into the split, {"hsi": (n, P, P, B), "aux": (n, P, P, A)}) for the first
        `stop` pixels of a split (all by default), batch_size at a time: stored patches for train and
        val, patches cut from the scene for test. patch_size: the file's by default; a smaller odd
        size gives the centre of each patch (1: the pixel's own values). Memory: one batch and one
        band of rows."""
        g = self.group(split, ("coord", "label") + (MODALITIES if split in PRECUT else ()))
        n = len(g["label"]) if stop is None else min(stop, len(g["label"]))
        p = patch_size or self.patch_size
        if not 1 <= p <= self.patch_size or p % 2 == 0:
            raise ValueError(f"patch_size must be odd and at most the file's {self.patch_size}, got {p}")
        if split in PRECUT:
            crop = slice((self.patch_size - p) // 2, (self.patch_size + p) // 2)
            for i in range(0, n, batch_size):
                j = min(i + batch_size, n)
                yield np.arange(i, j), {m: g[m][i:j, crop, crop] for m in MODALITIES}
            return
        coords = g["coord"][:n]
        caches = {m: RowCache(self.f["scene"][m], p) for m in MODALITIES}
        for idx in sorted_batches(coords, batch_size):
            yield idx, {m: caches[m].cut(coords[idx]) for m in MODALITIES}

    def load(self, split, stop=None, patch_size=None):
        """The first `stop` pixels of a split in memory: {"hsi", "aux", "label", "coord"} (for the
        small train and val sets), patches of patch_size (the file's by default)."""
        g = self.group(split)
        n = len(g["label"]) if stop is None else min(stop, len(g["label"]))
        p = patch_size or self.patch_size
        out = {"label": g["label"][:n], "coord": g["coord"][:n]}
        out.update({m: np.zeros((n, p, p, b), np.float32) for m, b in self.bands.items()})
        for idx, patches in self.batches(split, CUT_BATCH, stop=n, patch_size=p):
            for m in MODALITIES:
                out[m][idx] = patches[m]
        return out

    def scene_batches(self, batch_size, patch_size=None):
        """Yield (rows, cols, {"hsi", "aux"}) for every pixel of the scene, row-major, batch_size
        patches of patch_size (the file's by default; 1 gives the pixels' own values) at a time."""
        h, w = self.shape
        caches = {m: RowCache(self.f["scene"][m], patch_size or self.patch_size) for m in MODALITIES}
        for start in range(0, h * w, batch_size):
            pixel = np.arange(start, min(start + batch_size, h * w))
            coords = np.stack([pixel // w, pixel % w], 1)
            yield coords[:, 0], coords[:, 1], {m: caches[m].cut(coords) for m in MODALITIES}

    def pixels(self, split):
        """The values of a split's own pixels: {"hsi": (N, B), "aux": (N, A)} (patches of size 1)."""
        one = self.load(split, patch_size=1)
        return {m: one[m][:, 0, 0] for m in MODALITIES}
