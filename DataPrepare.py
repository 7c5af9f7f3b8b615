"""
Turn a downloaded hyperspectral + LiDAR/SAR scene into the HDF5 patch set that model.py and
evaluate.py read.

It reads the files as they are distributed (MATLAB v5 and v7.3 .mat, GeoTIFF, .npy/.npz), checks
them, min-max normalises every band of both modalities over the whole scene, cuts P x P patches
centred on every labelled pixel of the train and test maps (zero padding at the border) and writes
one HDF5 file (authors' protocol: P = 11; maps hold classes 1..C with 0 unlabelled, the file
holds 0..C-1):

  train/, test/ and, with --val-fraction > 0, val/:
      hsi (N, P, P, B) float32, aux (N, P, P, A) float32, label (N,) int32, coord (N, 2) int32
  scene/: hsi (H, W, B) and aux (H, W, A) float32, the normalised full scene (chunked);
          train_map, test_map (H, W) int32, the maps as read (1..C, 0 unlabelled)
  root attributes: dataset, layout, modalities, class_names, num_classes, palette, patch_size,
          normalisation, sources (JSON: path -> sha256), command, synthetic, val_fraction, seed

Examples:
  python DataPrepare.py --dataset houston2013 --source data/houston2013.mat --out data/houston2013.h5
  python DataPrepare.py --dataset augsburg --source data/augsburg/ --out data/augsburg.h5
  python DataPrepare.py --dataset demo --out data/demo.h5
  python DataPrepare.py --dataset custom --hsi cube.mat:X --aux dsm.tif --train tr.npy \\
      --test te.mat:gt --class-names "Road,Tree,Roof" --out data/mine.h5
"""
import argparse
import colorsys
import contextlib
import hashlib
import json
import os
import shlex
import sys
import time
import warnings

import numpy as np

# -----------------------------------------------------------------------------
# The registry: what each data set is called, its classes, colours and the file layouts it is
# distributed in. Nothing here fixes a scene's size or band count; those come from the files.

# role -> list of (file name, keys to look for, required). Several "aux" files are stacked as
# channels of the second modality. "{dataset}" stands for the preset's name.
LAYOUTS = {
    # the authors' single file, e.g. houston2013.mat with keys hsi, lidar, train, test
    "single": {
        "hsi": [("{dataset}.mat", ["hsi"], True)],
        "aux": [("{dataset}.mat", ["lidar", "sar", "aux", "dsm"], True)],
        "train": [("{dataset}.mat", ["train", "TRLabel"], True)],
        "test": [("{dataset}.mat", ["test", "TSLabel"], True)],
    },
    # four files, one array each (Houston 2013, Trento, MUUFL as often redistributed)
    "four-file": {
        "hsi": [("HSI.mat", ["HSI"], True)],
        "aux": [("LiDAR.mat", ["LiDAR"], True)],
        "train": [("TRLabel.mat", ["TRLabel"], True)],
        "test": [("TSLabel.mat", ["TSLabel"], True)],
    },
    # the GeoTIFFs of the IEEE GRSS Data Fusion Contest 2013
    "grss2013-tif": {
        "hsi": [("2013_IEEE_GRSS_DF_Contest_CASI.tif", [], True)],
        "aux": [("2013_IEEE_GRSS_DF_Contest_LiDAR.tif", [], True)],
        "train": [("2013_IEEE_GRSS_DF_Contest_Samples_TR.tif", [], True)],
        "test": [("2013_IEEE_GRSS_DF_Contest_Samples_VA.tif", [], True)],
    },
    # the HSI-SAR(-DSM) sets published with Hong et al.'s work (Berlin, Augsburg)
    "hsi-sar": {
        "hsi": [("data_HS_LR.mat", ["data_HS_LR"], True)],
        "aux": [("data_SAR_HR.mat", ["data_SAR_HR"], True), ("data_DSM.mat", ["data_DSM"], False)],
        "train": [("TrainImage.mat", ["TrainImage"], True)],
        "test": [("TestImage.mat", ["TestImage"], True)],
    },
}

PRESETS = {
    "houston2013": dict(
        title="Houston 2013 (IEEE GRSS DFC 2013)", aux="lidar",
        layouts=["single", "four-file", "grss2013-tif"],
        class_names=["Healthy grass", "Stressed grass", "Synthetic grass", "Trees", "Soil", "Water",
                     "Residential", "Commercial", "Road", "Highway", "Railway", "Parking lot 1",
                     "Parking lot 2", "Tennis court", "Running track"],
        # the colours most Houston 2013 maps in the literature use
        palette=[[0, 205, 0], [127, 255, 0], [46, 139, 87], [0, 139, 0], [160, 82, 45],
                 [0, 255, 255], [255, 255, 255], [216, 191, 216], [255, 0, 0], [139, 0, 0],
                 [0, 0, 0], [255, 255, 0], [238, 154, 0], [85, 26, 139], [255, 127, 80]]),
    "houston2018": dict(
        title="Houston 2018 (IEEE GRSS DFC 2018)", aux="lidar",
        layouts=["single", "four-file"],
        class_names=["Healthy grass", "Stressed grass", "Artificial turf", "Evergreen trees",
                     "Deciduous trees", "Bare earth", "Water", "Residential buildings",
                     "Non-residential buildings", "Roads", "Sidewalks", "Crosswalks",
                     "Major thoroughfares", "Highways", "Railways", "Paved parking lots",
                     "Unpaved parking lots", "Cars", "Trains", "Stadium seats"],
        palette=[[50, 205, 50], [173, 255, 47], [0, 128, 128], [34, 139, 34], [107, 142, 35],
                 [160, 82, 45], [0, 0, 255], [255, 215, 0], [255, 140, 0], [128, 128, 128],
                 [211, 211, 211], [255, 255, 255], [220, 20, 60], [139, 0, 0], [75, 0, 130],
                 [255, 105, 180], [210, 180, 140], [0, 255, 255], [148, 0, 211], [255, 0, 255]]),
    "berlin": dict(
        title="Berlin (HSI-SAR)", aux="sar", layouts=["hsi-sar"],
        class_names=["Forest", "Residential area", "Industrial area", "Low plants", "Soil",
                     "Allotment", "Commercial area", "Water"],
        palette=[[0, 100, 0], [255, 0, 0], [128, 128, 128], [124, 252, 0], [160, 82, 45],
                 [255, 215, 0], [255, 0, 255], [0, 0, 255]]),
    "augsburg": dict(
        title="Augsburg (HSI-SAR-DSM)", aux="sar", layouts=["hsi-sar"],
        class_names=["Forest", "Residential area", "Industrial area", "Low plants", "Allotment",
                     "Commercial area", "Water"],
        palette=[[0, 100, 0], [255, 0, 0], [128, 128, 128], [124, 252, 0], [255, 215, 0],
                 [255, 0, 255], [0, 0, 255]]),
    "trento": dict(
        title="Trento", aux="lidar", layouts=["four-file", "single"],
        class_names=["Apple trees", "Buildings", "Ground", "Woods", "Vineyard", "Roads"],
        palette=[[34, 139, 34], [255, 0, 0], [210, 180, 140], [0, 100, 0], [148, 0, 211],
                 [128, 128, 128]]),
    "muufl": dict(
        title="MUUFL Gulfport", aux="lidar", layouts=["four-file", "single"],
        class_names=["Trees", "Mostly grass", "Mixed ground surface", "Dirt and sand", "Road",
                     "Water", "Building shadow", "Buildings", "Sidewalk", "Yellow curb",
                     "Cloth panels"],
        palette=[[0, 128, 0], [124, 252, 0], [0, 255, 255], [210, 180, 140], [255, 0, 0],
                 [0, 0, 255], [72, 61, 139], [255, 140, 0], [255, 0, 255], [255, 255, 0],
                 [255, 255, 255]]),
    "demo": dict(
        title="synthetic demo scene (not real data)", aux="lidar", layouts=["synthetic"],
        class_names=["Grass", "Trees", "Bare soil", "Road", "Roof", "Water"],
        palette=[[124, 252, 0], [0, 100, 0], [160, 82, 45], [128, 128, 128], [255, 0, 0],
                 [0, 0, 255]]),
    "custom": dict(
        title="custom scene", aux="aux", layouts=["files"], class_names=None, palette=None),
}

NORMALISATION = "min-max per band over the whole scene (authors' protocol)"
PATCH_CHUNK_BYTES = 64 << 20  # patches cut and written per step: bounds peak memory


class DataError(ValueError):
    """A problem with the input files; the message names the file, key and shape."""


class DataWarning(UserWarning):
    """Something unusual in the input that does not stop the preparation."""


def warn(msg):
    warnings.warn(msg, DataWarning, stacklevel=2)


# -----------------------------------------------------------------------------
# Reading arrays from the formats scenes come in

def is_matlab_v73(path):
    import h5py
    return h5py.is_hdf5(path)  # v7.3 files are HDF5 behind a 512-byte MATLAB header


def list_arrays(path):
    """Names and shapes of the arrays a file holds, read from its header only.
    Formats that hold one unnamed array (.npy, .tif) give {None: shape}."""
    ext = os.path.splitext(path)[1].lower()
    if ext == ".mat" and is_matlab_v73(path):
        import h5py
        with h5py.File(path, "r") as f:
            # MATLAB keeps its own bookkeeping under names starting with '#'
            return {k: tuple(reversed(v.shape)) for k, v in f.items()
                    if isinstance(v, h5py.Dataset) and not k.startswith(("#", "__"))}
    if ext == ".mat":
        import scipy.io
        return {name: tuple(shape) for name, shape, _ in scipy.io.whosmat(path)
                if not name.startswith("__")}
    if ext in (".tif", ".tiff"):
        import tifffile
        with tifffile.TiffFile(path) as tif:
            return {None: tuple(tif.series[0].shape)}
    if ext == ".npy":
        return {None: tuple(np.load(path, mmap_mode="r").shape)}
    if ext == ".npz":
        with np.load(path) as z:
            return {k: None for k in z.files}
    raise DataError(f"{path}: unknown file type '{ext}' (read: .mat, .tif, .tiff, .npy, .npz)")


def load_array(path, key):
    """The array `key` of `path`, in (H, W[, bands]) order."""
    ext = os.path.splitext(path)[1].lower()
    if ext == ".mat" and is_matlab_v73(path):
        import h5py
        with h5py.File(path, "r") as f:
            # MATLAB writes column-major, so h5py sees the axes reversed: (B, W, H) for (H, W, B)
            return f[key][()].transpose()
    if ext == ".mat":
        import scipy.io
        return scipy.io.loadmat(path, variable_names=[key])[key]
    if ext in (".tif", ".tiff"):
        import tifffile
        with tifffile.TiffFile(path) as tif:
            series = tif.series[0]
            arr, axes = series.asarray(), series.axes
        # band-sequential GeoTIFFs come as (bands, H, W); the file's axes string says so
        if arr.ndim == 3 and axes.endswith("YX"):
            arr = np.moveaxis(arr, 0, -1)
        return arr
    if ext == ".npy":
        return np.load(path, allow_pickle=False)
    with np.load(path, allow_pickle=False) as z:
        return z[key]


def choose_key(path, keys, key, candidates):
    """Pick the array to read: the key asked for; else the first candidate present (any case);
    else the file's only array."""
    names = [k for k in keys if k is not None]
    listing = ", ".join(f"'{k}' {keys[k]}" if keys[k] else f"'{k}'" for k in names) \
        or "none: it holds one unnamed array"
    if key is not None:
        if key in keys:
            return key
        raise DataError(f"{path}: no key '{key}'; the file holds {listing}")
    for want in candidates:
        for k in names:
            if k == want or k.lower() == want.lower():
                return k
    if len(keys) == 1:
        return next(iter(keys))
    if not keys:
        raise DataError(f"{path}: holds no numeric array")
    looked = f"none of {candidates} is there; " if candidates else ""
    raise DataError(f"{path}: {looked}the file holds {listing}; name one as FILE:KEY")


def read_array(path, key=None, candidates=()):
    """Return (array, where) with `where` naming the file and key for messages."""
    if not os.path.isfile(path):
        raise DataError(f"{path}: no such file")
    try:
        keys = list_arrays(path)
        key = choose_key(path, keys, key, candidates)
        arr = load_array(path, key)
    except DataError:
        raise
    except Exception as e:  # scipy, h5py and tifffile each fail in their own way on a bad file
        at = f" key '{key}'" if key else ""
        raise DataError(f"{path}{at}: cannot read it ({type(e).__name__}: {e}); "
                        "is the file complete (not truncated) and of the type its name says?") from None
    where = f"{path} key '{key}'" if key else path
    if not isinstance(arr, np.ndarray) or arr.dtype.kind not in "biuf":
        kind = arr.dtype if isinstance(arr, np.ndarray) else type(arr).__name__
        raise DataError(f"{where}: holds {kind} data, not a numeric array")
    return arr, where


def sha256(path):
    h = hashlib.sha256()
    with open(path, "rb") as f:
        while block := f.read(1 << 22):  # stream: a scene can be several GB
            h.update(block)
    return h.hexdigest()


# File helpers shared by the three scripts: every result file appears whole or not at all.

@contextlib.contextmanager
def replacing(path):
    """Yield a temporary name beside `path` (same extension, so savefig/np.save keep the format) and
    rename it to `path` only when the block ends without an error; a failed write leaves no file."""
    folder, name = os.path.split(path)
    tmp = os.path.join(folder, f".tmp-{os.getpid()}-{name}")
    try:
        yield tmp
        os.replace(tmp, path)
    finally:
        if os.path.exists(tmp):
            os.remove(tmp)


def jsonable(x):
    """numpy -> Python, NaN -> None (JSON has no NaN)."""
    if isinstance(x, dict):
        return {k: jsonable(v) for k, v in x.items()}
    if isinstance(x, (list, tuple, np.ndarray)):
        return [jsonable(v) for v in x]
    if isinstance(x, (np.integer, np.bool_)):
        return x.item()
    if isinstance(x, (float, np.floating)):
        return None if np.isnan(x) else float(x)
    return x


def write_json(path, obj):
    with replacing(path) as tmp, open(tmp, "w") as f:
        json.dump(jsonable(obj), f, indent=2)


# -----------------------------------------------------------------------------
# Finding the files of a preset's layout

def find_layout(dataset, source):
    """Return (layout name, {role: [(path, candidate keys), ...]}) for what exists at `source`."""
    preset = PRESETS[dataset]
    if os.path.isfile(source):
        if "single" not in preset["layouts"] or not source.lower().endswith(".mat"):
            raise DataError(f"{source}: the {dataset} preset reads a folder in one of the layouts "
                            f"{layout_help(dataset)}, not this single file")
        return "single", {role: [(source, keys)] for role, ((_, keys, _),) in LAYOUTS["single"].items()}
    if not os.path.isdir(source):
        raise DataError(f"{source}: no such file or folder")
    present = {name.lower(): name for name in os.listdir(source)}  # file names in any case
    for layout in preset["layouts"]:
        files, complete = {}, True
        for role, entries in LAYOUTS[layout].items():
            for name, keys, required in entries:
                found = present.get(name.format(dataset=dataset).lower())
                if found:
                    files.setdefault(role, []).append((os.path.join(source, found), keys))
                elif required:
                    complete = False
        if complete:
            return layout, files
    there = ", ".join(sorted(present.values())[:20]) or "nothing"
    raise DataError(f"{source}: found none of the {dataset} layouts {layout_help(dataset)}; "
                    f"the folder holds {there}")


def layout_help(dataset):
    """The file names each layout of a preset expects, for messages and --help."""
    out = []
    for layout in PRESETS[dataset]["layouts"]:
        if layout not in LAYOUTS:
            continue
        names = []
        for entries in LAYOUTS[layout].values():
            for name, _, required in entries:
                name = name.format(dataset=dataset) + ("" if required else " (optional)")
                if name not in names:
                    names.append(name)
        out.append(f"[{layout}: {', '.join(names)}]")
    return " ".join(out)


def split_spec(spec):
    """'FILE:KEY' -> (FILE, KEY); a path that exists as given keeps its colons (C:\\...)."""
    if os.path.exists(spec) or ":" not in spec:
        return spec, None
    path, key = spec.rsplit(":", 1)
    return path, key or None


def load_scene(dataset, source=None, custom=None, seed=0):
    """Read a scene's raw arrays. Returns a dict with hsi, aux (lists of (array, where)),
    train, test ((array, where)), layout, files, aux_name, class_names, palette, synthetic."""
    preset = PRESETS[dataset]
    scene = dict(aux_name=preset["aux"], class_names=preset["class_names"],
                 palette=preset["palette"], synthetic=False, files=[])
    if dataset == "demo":
        demo = make_demo_scene(seed)
        return dict(scene, layout="synthetic", synthetic=True, hsi=[(demo["hsi"], "demo hsi")],
                    aux=[(demo["aux"], "demo aux")], train=(demo["train"], "demo train map"),
                    test=(demo["test"], "demo test map"))
    if dataset == "custom":
        layout = "files"
        files = {role: [split_spec(custom[role])] for role in ("hsi", "aux", "train", "test")}
        scene.update(aux_name=custom.get("aux_name") or "aux", class_names=custom.get("class_names"))
        read = {}
        for role, entries in files.items():
            print(f"reading {entries[0][0]}", flush=True)
            read[role] = [read_array(path, key) for path, key in entries]
    else:
        layout, files = find_layout(dataset, source)
        read, seen = {}, set()
        for role, entries in files.items():
            read[role] = []
            for path, keys in entries:
                if path not in seen:
                    print(f"reading {path}", flush=True)
                    seen.add(path)
                read[role].append(read_array(path, candidates=keys))
    if len(files["aux"]) > 1:  # e.g. Augsburg's SAR with its DSM stacked as more channels
        scene["aux_name"] += "+" + "+".join(
            os.path.splitext(os.path.basename(p))[0].split("_")[-1].lower() for p, _ in files["aux"][1:])
    scene["files"] = sorted({os.path.abspath(path) for entries in files.values() for path, _ in entries})
    return dict(scene, layout=layout, hsi=read["hsi"], aux=read["aux"],
                train=read["train"][0], test=read["test"][0])


# -----------------------------------------------------------------------------
# Checks

def as_label_map(arr, where):
    """A 2-D int32 map of classes 1..C, 0 unlabelled; refuses anything else."""
    m = np.squeeze(arr) if arr.ndim > 2 else arr  # a (H, W, 1) map is still a map
    if m.ndim != 2:
        raise DataError(f"{where}: a label map must be a 2-D (H, W) integer array, got shape {arr.shape}")
    if m.dtype.kind == "f":
        if not np.isfinite(m).all():
            raise DataError(f"{where} shape {arr.shape}: the label map holds NaN or Inf values")
        fractional = m != np.round(m)
        if fractional.any():
            r, c = np.argwhere(fractional)[0]
            raise DataError(f"{where} shape {arr.shape}: a label map must hold whole numbers "
                            f"(classes 1..C, 0 unlabelled), found {m[r, c]} at row {r}, col {c}")
    elif m.dtype.kind not in "biu":
        raise DataError(f"{where} shape {arr.shape}: a label map must hold integers, not {m.dtype}")
    if m.size and m.min() < 0:
        raise DataError(f"{where} shape {arr.shape}: negative labels ({m.min()}); "
                        "classes are 1..C with 0 unlabelled")
    return m.astype(np.int32)


def as_channels(arr, where, name):
    """(H, W) -> (H, W, 1); (H, W, B) as it is."""
    if arr.ndim == 2:
        return arr[..., None]
    if arr.ndim != 3:
        raise DataError(f"{where}: the {name} must be (H, W) or (H, W, bands), got shape {arr.shape}")
    return arr


def check_sizes(pieces, height, width):
    """All modalities and maps must cover the same H x W pixels."""
    if any(arr.shape[:2] != (height, width) for arr, _ in pieces):
        listing = "; ".join(f"{where} shape {arr.shape}" for arr, where in pieces)
        raise DataError(f"height/width differ between the inputs: {listing}")


def check_maps(train, test, train_where, test_where):
    """Number of classes C; refuses overlapping or empty maps, warns for classes without training."""
    overlap = (train > 0) & (test > 0)
    if overlap.any():
        r, c = np.argwhere(overlap)[0]
        raise DataError(f"train map {train_where} and test map {test_where} (shape {train.shape}) "
                        f"overlap at {int(overlap.sum())} pixel(s), the first at row {r}, col {c}; "
                        "a pixel may be in one of them only")
    for m, where in ((train, train_where), (test, test_where)):
        if not (m > 0).any():
            raise DataError(f"{where} shape {m.shape}: the map has no labelled pixels")
    n_classes = int(max(train.max(), test.max()))
    in_train, in_test = np.bincount(train.ravel(), minlength=n_classes + 1), np.bincount(test.ravel(), minlength=n_classes + 1)
    untrained = [c for c in range(1, n_classes + 1) if in_test[c] and not in_train[c]]
    if untrained:
        warn(f"class(es) {untrained} appear in the test map {test_where} but not in the training "
             f"map {train_where}: the model cannot learn them")
    missing = [c for c in range(1, n_classes + 1) if not in_test[c] and not in_train[c]]
    if missing:
        warn(f"class(es) {missing} appear in neither map (labels run 1..{n_classes})")
    return n_classes


def band_range(x, where, name):
    """Per-band min and max over the scene; refuses NaN/Inf (they would poison min-max)."""
    lo, hi = x.min(axis=(0, 1)), x.max(axis=(0, 1))  # NaN propagates, Inf shows as a bound
    bad = ~(np.isfinite(lo) & np.isfinite(hi))
    if bad.any():
        b = int(np.flatnonzero(bad)[0])
        n = int((~np.isfinite(x[..., b])).sum())
        raise DataError(f"{where} shape {x.shape}: {name} band {b} holds {n} NaN/Inf value(s) "
                        f"({int(bad.sum())} band(s) affected); fill or mask them first")
    return lo, hi


def resolve_classes(names, palette, n_classes, dataset, where):
    if names is None:
        names = [f"class {c}" for c in range(1, n_classes + 1)]
    if len(names) != n_classes:
        raise DataError(f"{where}: labels run 1..{n_classes} but the {dataset} class list has "
                        f"{len(names)} names ({', '.join(names)}); use --dataset custom "
                        "(with --class-names) for another class set")
    if palette is None:  # evenly spaced hues, one per class
        palette = [[round(255 * v) for v in colorsys.hsv_to_rgb(c / n_classes, 0.85, 0.95)]
                   for c in range(n_classes)]
    return list(names), np.asarray(palette, np.int32)


# -----------------------------------------------------------------------------
# Normalising, padding and cutting

def pad_scene(scene, patch_size):
    """Zero-pad an (H, W, C) scene by patch_size // 2 on both spatial sides -> float32."""
    r = patch_size // 2
    h, w, c = scene.shape
    padded = np.zeros((h + 2 * r, w + 2 * r, c), np.float32)
    padded[r:r + h, r:r + w] = scene
    return padded


def normalise_padded(raw, lo, hi, patch_size, where, name):
    """Min-max normalise each band of raw (H, W, B) into a zero-padded float32 copy.
    One pass over the data and one new array: the raw scene can be freed afterwards."""
    r = patch_size // 2
    h, w, b = raw.shape
    work = np.result_type(raw.dtype, np.float32)  # float64 data keeps its precision until the end
    lo = lo.astype(work)
    span = (hi.astype(work) - lo).astype(np.float32)
    for band in np.flatnonzero(span == 0):
        warn(f"{name} band {band} of {where} is constant ({lo[band]}); it becomes 0")
    span[span == 0] = 1  # a constant band gives (x - lo) / 1 = 0, no division by zero
    padded = np.zeros((h + 2 * r, w + 2 * r, b), np.float32)
    inner = padded[r:r + h, r:r + w]
    for j in range(0, w, 64):  # column blocks keep the (often column-major) transpose in cache
        np.subtract(raw[:, j:j + 64], lo, out=inner[:, j:j + 64], casting="same_kind")
    inner /= span  # division, not multiplication, so that the maximum becomes exactly 1
    return padded


def cut_patches(padded, coords, patch_size):
    """(N, P, P, C) patches of a scene zero-padded by P // 2 (see pad_scene), centred on coords
    (N, 2) (row, col) in unpadded scene coordinates. Vectorised: a strided view of every window,
    then one fancy-indexing copy."""
    coords = np.asarray(coords)
    r = patch_size // 2
    h, w = padded.shape[0] - 2 * r, padded.shape[1] - 2 * r
    # negative indices would silently wrap around, so refuse anything outside the scene
    if len(coords) and (coords.min() < 0 or coords[:, 0].max() >= h or coords[:, 1].max() >= w):
        raise ValueError(f"coords outside the {h} x {w} scene")
    windows = np.lib.stride_tricks.sliding_window_view(padded, (patch_size, patch_size), axis=(0, 1))
    windows = np.moveaxis(windows, 2, -1)  # (H, W, C, P, P) view -> (H, W, P, P, C) view
    # the window starting at padded (row, col) is centred on scene (row, col)
    return np.asarray(windows[coords[:, 0], coords[:, 1]], np.float32)


def make_splits(train, test, val_fraction, seed):
    """{split: (coords (N, 2), labels (N,) 0..C-1)}, pixels in row-major order. The val split
    takes round(f * n_c) pixels of each class c from training (at least 1 when n_c >= 2, never
    all of them), drawn with numpy's default_rng(seed)."""
    splits = {}
    for name, m in (("train", train), ("test", test)):
        coords = np.argwhere(m > 0).astype(np.int32)
        splits[name] = (coords, (m[coords[:, 0], coords[:, 1]] - 1).astype(np.int32))
    if val_fraction > 0:
        coords, labels = splits["train"]
        rng = np.random.default_rng(seed)
        is_val = np.zeros(len(labels), bool)
        for c in np.unique(labels):
            idx = np.flatnonzero(labels == c)
            k = min(max(int(round(val_fraction * len(idx))), 1), len(idx) - 1)
            is_val[rng.choice(idx, k, replace=False)] = True
        splits["train"] = (coords[~is_val], labels[~is_val])
        splits["val"] = (coords[is_val], labels[is_val])
    return splits


# -----------------------------------------------------------------------------
# The synthetic demo scene

def make_demo_scene(seed=0):
    """A small synthetic co-registered HSI + LiDAR scene (64 x 96 pixels, 32 bands, 6 classes),
    made here so that a new user can run the whole pipeline without a download. Classes are
    blob-shaped regions with their own smooth spectra and heights plus noise; grass/trees and
    road/roof look alike in the spectra and differ in height, so both modalities matter."""
    from scipy import ndimage
    rng = np.random.default_rng(seed)
    h, w, bands, n_classes = 64, 96, 32, 6
    preset = PRESETS["demo"]

    def smooth(shape, sigma):  # spatially smooth noise with unit standard deviation
        f = ndimage.gaussian_filter(rng.standard_normal(shape), sigma)
        return f / f.std()

    # regions: nearest of 24 random seed points, with wobbly borders
    n_seeds = 24
    points = rng.uniform((0, 0), (h, w), size=(n_seeds, 2))
    seed_class = rng.permutation(np.arange(n_seeds) % n_classes)
    rows, cols = np.mgrid[0:h, 0:w]
    dist = np.hypot(rows[..., None] - points[:, 0], cols[..., None] - points[:, 1])
    dist += 4 * smooth((h, w, n_seeds), (4, 4, 0))
    classes = seed_class[dist.argmin(-1)]

    # class spectra: vegetation with a red edge (grass, trees), soil, two greys, dark water
    t = np.linspace(0, 1, bands)
    red_edge = 1 / (1 + np.exp(-(t - 0.45) / 0.03))
    green = np.exp(-((t - 0.2) / 0.05) ** 2)
    spectra = np.stack([0.05 + 0.05 * green + 0.45 * red_edge,   # grass
                        0.04 + 0.04 * green + 0.40 * red_edge,   # trees
                        0.15 + 0.25 * t,                          # bare soil
                        0.12 + 0.06 * t,                          # road
                        0.14 + 0.06 * t,                          # roof
                        0.09 * np.exp(-3 * t)])                   # water
    heights = np.array([0.2, 9.0, 0.0, 0.0, 8.0, -0.5])

    # light varies smoothly over the scene and from pixel to pixel; the sensor adds noise
    gain = 1 + 0.1 * smooth((h, w), 8) + 0.06 * rng.standard_normal((h, w))
    hsi = spectra[classes] * gain[..., None] + 0.015 * rng.standard_normal((h, w, bands))
    tall = heights[classes] > 1
    lidar = heights[classes] + 1.5 * smooth((h, w), 3) * tall + 0.6 * rng.standard_normal((h, w))

    # ground truth as surveyed: region interiors only (borders are mixed pixels); 25 training
    # pixels per class, the rest for testing
    interior = ndimage.minimum_filter(classes, 3) == ndimage.maximum_filter(classes, 3)
    labelled = np.where(interior, classes + 1, 0)
    train = np.zeros((h, w), np.int32)
    for c in range(1, n_classes + 1):
        idx = np.flatnonzero(labelled == c)
        train.flat[rng.choice(idx, min(25, len(idx) // 2), replace=False)] = c
    test = np.where(train > 0, 0, labelled).astype(np.int32)
    return dict(hsi=hsi.astype(np.float32), aux=lidar[..., None].astype(np.float32),
                train=train, test=test, class_names=list(preset["class_names"]),
                palette=[list(p) for p in preset["palette"]])


# -----------------------------------------------------------------------------
# Writing

def write_h5(out, attrs, padded, splits, maps, ranges, patch_size):
    """Write everything under a temporary name beside `out` and rename it at the end (replacing),
    so that a failure never leaves a half-written file under the real name."""
    import h5py
    from tqdm import tqdm
    r = patch_size // 2
    with replacing(out) as tmp, h5py.File(tmp, "w") as f:
        for k, v in attrs.items():
            f.attrs[k] = v
        for split, (coords, labels) in splits.items():
            g = f.create_group(split)
            g["label"], g["coord"] = labels, coords
            per_patch = patch_size * patch_size * sum(p.shape[-1] for p in padded.values()) * 4
            step = max(1, PATCH_CHUNK_BYTES // per_patch)
            datasets = {m: g.create_dataset(m, (len(coords), patch_size, patch_size, p.shape[-1]), np.float32)
                        for m, p in padded.items()}
            with tqdm(total=len(coords), desc=f"cutting {split}", unit="patch", leave=False) as bar:
                for i in range(0, len(coords), step):
                    for m, p in padded.items():
                        datasets[m][i:i + step] = cut_patches(p, coords[i:i + step], patch_size)
                    bar.update(len(coords[i:i + step]))
        g = f.create_group("scene")
        for m, p in padded.items():
            h, w, c = p.shape[0] - 2 * r, p.shape[1] - 2 * r, p.shape[2]
            ds = g.create_dataset(m, (h, w, c), np.float32, chunks=(min(h, 16), min(w, 128), c))
            ds.attrs["raw_min"], ds.attrs["raw_max"] = ranges[m]
            for i in range(0, h, 64):  # row blocks: no full-size contiguous copy
                ds[i:i + 64] = p[r + i:r + min(i + 64, h), r:r + w]
        for name, m in maps.items():
            g[name] = m


def print_summary(dataset, layout, shape, bands, aux_name, class_names, splits, out, seconds):
    title = PRESETS[dataset]["title"]
    print(f"{title}, layout {layout}: {shape[0]} x {shape[1]} pixels; hsi {bands[0]} bands, "
          f"{aux_name} {bands[1]} channel(s)")
    names = [s for s in ("train", "val", "test") if s in splits]
    counts = {s: np.bincount(splits[s][1], minlength=len(class_names)) for s in names}
    width = max(len(n) for n in class_names + ["class"])
    print(f"  {'#':>3}  {'class':<{width}}" + "".join(f"{s:>8}" for s in names))
    for c, name in enumerate(class_names):
        print(f"  {c + 1:>3}  {name:<{width}}" + "".join(f"{counts[s][c]:>8}" for s in names))
    print(f"  {'':>3}  {'total':<{width}}" + "".join(f"{counts[s].sum():>8}" for s in names))
    print(f"wrote {out} ({os.path.getsize(out) / 1e9:.2f} GB) in {seconds:.1f} s")


# -----------------------------------------------------------------------------
# The whole preparation

def prepare(dataset, out, source=None, patch_size=11, val_fraction=0.0, seed=0, custom=None,
            command=""):
    """Read, check, normalise, cut and write; returns {split: per-class counts}."""
    t0 = time.time()
    if dataset not in PRESETS:
        raise DataError(f"unknown dataset '{dataset}' (known: {', '.join(PRESETS)})")
    if patch_size < 1 or patch_size % 2 == 0:
        raise DataError(f"--patch-size must be a positive odd number (patches are centred), got {patch_size}")
    if not 0 <= val_fraction < 1:
        raise DataError(f"--val-fraction must be in [0, 1), got {val_fraction}")
    if dataset not in ("demo", "custom") and source is None:
        raise DataError(f"--source is needed for {dataset}")
    if dataset == "custom" and not all((custom or {}).get(k) for k in ("hsi", "aux", "train", "test")):
        raise DataError("--dataset custom needs --hsi, --aux, --train and --test")
    if not os.path.isdir(os.path.dirname(os.path.abspath(out))):
        raise DataError(f"{out}: its folder does not exist")

    scene = load_scene(dataset, source, custom, seed)
    if scene["synthetic"]:
        print("SYNTHETIC demo scene made by DataPrepare.make_demo_scene: not real data, for trying "
              "the pipeline only", flush=True)

    # checks, before any work
    train_arr, train_where = scene.pop("train")
    test_arr, test_where = scene.pop("test")
    train, test = as_label_map(train_arr, train_where), as_label_map(test_arr, test_where)
    height, width = train.shape
    hsi, aux = scene.pop("hsi"), scene.pop("aux")
    check_sizes(hsi + aux + [(train, train_where), (test, test_where)], height, width)
    hsi = [(as_channels(a, w, "hyperspectral cube"), w) for a, w in hsi]
    aux = [(as_channels(a, w, "second modality"), w) for a, w in aux]
    n_classes = check_maps(train, test, train_where, test_where)
    class_names, palette = resolve_classes(scene["class_names"], scene["palette"], n_classes,
                                           dataset, f"{train_where} / {test_where}")
    hsi, hsi_where = hsi[0]
    aux_where = " + ".join(w for _, w in aux)
    aux = aux[0][0] if len(aux) == 1 else np.concatenate([a for a, _ in aux], axis=-1)
    ranges = {"hsi": band_range(hsi, hsi_where, "hsi"), "aux": band_range(aux, aux_where, scene["aux_name"])}
    splits = make_splits(train, test, val_fraction, seed)

    # normalise into padded copies, letting each raw array go as soon as it is copied
    bands = (hsi.shape[-1], aux.shape[-1])
    padded = {"hsi": normalise_padded(hsi, *ranges["hsi"], patch_size, hsi_where, "hsi")}
    del hsi
    padded["aux"] = normalise_padded(aux, *ranges["aux"], patch_size, aux_where, scene["aux_name"])
    del aux

    attrs = dict(
        dataset=dataset, layout=scene["layout"], modalities=["hsi", scene["aux_name"]],
        class_names=class_names, num_classes=n_classes, palette=palette, patch_size=patch_size,
        normalisation=NORMALISATION, synthetic=scene["synthetic"],
        sources=json.dumps({path: sha256(path) for path in scene["files"]}),
        command=command, val_fraction=val_fraction, seed=seed)
    write_h5(out, attrs, padded, splits, {"train_map": train, "test_map": test},
             {m: (np.asarray(lo, np.float64), np.asarray(hi, np.float64)) for m, (lo, hi) in ranges.items()},
             patch_size)
    print_summary(dataset, scene["layout"], (height, width), bands, scene["aux_name"], class_names,
                  splits, out, time.time() - t0)
    return {s: np.bincount(labels, minlength=n_classes) for s, (_, labels) in splits.items()}


def build_parser():
    layouts = "\n".join(f"  {name:<12} {layout_help(name)}" for name in PRESETS
                        if name not in ("demo", "custom"))
    parser = argparse.ArgumentParser(
        prog="DataPrepare.py", formatter_class=argparse.RawDescriptionHelpFormatter,
        description="Prepare a co-registered HSI + LiDAR/SAR scene as an HDF5 patch set for\n"
                    "model.py and evaluate.py: min-max per band over the scene, P x P patches\n"
                    "centred on labelled pixels, zero padding at the border.",
        epilog=f"layouts each preset finds under --source (a folder; 'single' may also be the "
               f".mat file itself):\n{layouts}\n"
               "  demo         no files: a small synthetic scene made on the spot\n"
               "  custom       any files, named with --hsi, --aux, --train, --test")
    parser.add_argument("--dataset", required=True, choices=list(PRESETS),
                        help="preset that knows the files, class names and colours of a data set")
    parser.add_argument("--source", help="the downloaded scene: a folder (or the single .mat file); "
                                         "not used by demo and custom")
    parser.add_argument("--out", required=True, help="HDF5 file to write (replaced atomically)")
    parser.add_argument("--patch-size", type=int, default=11,
                        help="odd side P of the square patches in pixels (default 11, the authors')")
    parser.add_argument("--val-fraction", type=float, default=0.0,
                        help="fraction of each class's training pixels moved to a 'val' split "
                             "(default 0: the paper's training set whole)")
    parser.add_argument("--seed", type=int, default=0, help="seed of the validation split and of the demo scene")
    group = parser.add_argument_group("custom scenes (--dataset custom); KEY may be left out when "
                                      "the file holds one array")
    group.add_argument("--hsi", metavar="FILE[:KEY]", help="hyperspectral cube (H, W, B)")
    group.add_argument("--aux", metavar="FILE[:KEY]", help="second modality (H, W) or (H, W, A)")
    group.add_argument("--train", metavar="FILE[:KEY]", help="training label map (H, W), 1..C, 0 unlabelled")
    group.add_argument("--test", metavar="FILE[:KEY]", help="test label map (H, W), 1..C, 0 unlabelled")
    group.add_argument("--class-names", help="comma-separated class names in label order "
                                             "(default 'class 1', 'class 2', ...)")
    group.add_argument("--aux-name", default="aux", help="name of the second modality, e.g. lidar or sar (default aux)")
    return parser


def main(argv=None):
    argv = sys.argv[1:] if argv is None else list(argv)
    parser = build_parser()
    args = parser.parse_args(argv)
    custom_flags = [f for f in ("hsi", "aux", "train", "test", "class_names") if getattr(args, f)]
    if args.dataset != "custom" and custom_flags:
        parser.error(f"--{custom_flags[0].replace('_', '-')} is for --dataset custom only")
    custom = None
    if args.dataset == "custom":
        names = [n.strip() for n in args.class_names.split(",")] if args.class_names else None
        custom = dict(hsi=args.hsi, aux=args.aux, train=args.train, test=args.test,
                      class_names=names, aux_name=args.aux_name)
    with warnings.catch_warnings():
        warnings.showwarning = lambda message, *_, **__: print(f"DataPrepare.py: warning: {message}",
                                                               file=sys.stderr)
        try:
            prepare(args.dataset, args.out, args.source, args.patch_size, args.val_fraction,
                    args.seed, custom, command=shlex.join(["python", "DataPrepare.py", *argv]))
        except DataError as e:
            sys.exit(f"DataPrepare.py: error: {e}")


if __name__ == "__main__":
    main()
