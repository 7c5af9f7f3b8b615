"""
Turn a downloaded hyperspectral + LiDAR/SAR scene into the HDF5 patch file that model.py,
evaluate.py and baselines.py read (its layout is patchfile.py's).

It reads the files as they are distributed (MATLAB v5 and v7.3 .mat, structs included, GeoTIFF,
.npy/.npz), checks them, min-max normalises every band of both modalities (over the whole scene, the
authors' protocol, or over the training pixels only with --normalise train), and writes one file
the size of the scene: the normalised scene, the coordinates and labels of every split, and the
training (and validation) patches, P x P, centred on their pixel, zero outside the scene (the
authors' P = 11). Test patches are cut from the stored scene when they are read. Maps hold classes
1..C with 0 (or -1) unlabelled; the file holds 0..C-1.

A scene comes with its split as two maps (train, test), as one ground truth with index arrays
(DCMNet's copies), or as one ground truth alone (MUUFL, Trento as tyust-dayu redistributes it):
then --train-per-class N or --train-fraction F draws a seeded, stratified split.

Examples:
  python DataPrepare.py --dataset houston2013 --source data/houston2013.mat --out data/houston2013.h5
  python DataPrepare.py --dataset berlin --source data/Berlin/ --out data/berlin.h5
  python DataPrepare.py --dataset muufl --source data/muufl/ --train-per-class 100 --out data/muufl.h5
  python DataPrepare.py --dataset demo --out data/demo.h5
  python DataPrepare.py --dataset custom --hsi cube.mat:X --aux dsm.tif --train tr.npy \\
      --test te.mat:gt --class-names "Road,Tree,Roof" --out data/mine.h5
  python DataPrepare.py --dataset custom --hsi scene.mat:hsi.Data --aux scene.mat:hsi.Lidar.z \\
      --gt scene.mat:hsi.sceneLabels.labels --train-fraction 0.05 --out data/mine.h5
"""
import argparse
import colorsys
import functools
import json
import os
import re
import shlex
import shutil
import sys
import time
import warnings

import numpy as np

import patchfile
from fileio import sha256

# -----------------------------------------------------------------------------
# The registry: what each data set is called, its classes, colours and the file layouts it is
# distributed in. Nothing here fixes a scene's size or band count; those come from the files.

# role -> list of (file name, keys to look for, required). Several "aux" files are stacked as
# channels of the second modality. In names and keys, "{dataset}" stands for the preset's name,
# "{prefix}" for its file prefix and "{aux}" for its second modality (lidar or sar). A key with
# dots is a path into a MATLAB struct.
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
    # the GeoTIFFs of the IEEE GRSS Data Fusion Contest 2013 (the maps: danfenghong/ISPRS_S2FL)
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
    # oucailab/DCMNet's copies (folders Houston2018/, Berlin/, Augsburg/, ...): the whole ground
    # truth, and the split as (N, 2) arrays of 0-based (row, col) indices into it
    "dcmnet": {
        "hsi": [("{prefix}_hsi.mat", ["{prefix}_hsi"], True)],
        "aux": [("{prefix}_{aux}.mat", ["{prefix}_{aux}"], True)],
        "gt": [("{prefix}_gt.mat", ["{prefix}_gt"], True)],
        "train_index": [("{prefix}_index.mat", ["{prefix}_train"], True)],
        "test_index": [("{prefix}_index.mat", ["{prefix}_test"], True)],
    },
    # GatorSense/MUUFLGulfport's scene-label file: one MATLAB struct, one ground truth (-1
    # unlabelled); the LiDAR rasters of the first of its two Lidar structs, as its owners' code and
    # rs-fusion-datasets use them
    "muufl-struct": {
        "hsi": [("muufl_gulfport_campus_1_hsi_220_label.mat", ["hsi.Data"], True)],
        "aux": [("muufl_gulfport_campus_1_hsi_220_label.mat", ["hsi.Lidar(1).z"], True)],
        "gt": [("muufl_gulfport_campus_1_hsi_220_label.mat", ["hsi.sceneLabels.labels"], True)],
    },
    # Trento as tyust-dayu/Trento redistributes it: one ground truth holding every labelled pixel
    "trento-tyust": {
        "hsi": [("Italy_hsi.mat", ["data"], True)],
        "aux": [("Italy_lidar.mat", ["data"], True)],
        "gt": [("allgrd.mat", ["mask_test"], True)],
    },
}

PRESETS = {
    "houston2013": dict(
        title="Houston 2013 (IEEE GRSS DFC 2013)", aux="lidar", prefix="houston", folders=["Houston2013"],
        layouts=["single", "four-file", "grss2013-tif", "dcmnet"],
        class_names=["Healthy grass", "Stressed grass", "Synthetic grass", "Trees", "Soil", "Water",
                     "Residential", "Commercial", "Road", "Highway", "Railway", "Parking lot 1",
                     "Parking lot 2", "Tennis court", "Running track"],
        # the colours most Houston 2013 maps in the literature use
        palette=[[0, 205, 0], [127, 255, 0], [46, 139, 87], [0, 139, 0], [160, 82, 45],
                 [0, 255, 255], [255, 255, 255], [216, 191, 216], [255, 0, 0], [139, 0, 0],
                 [0, 0, 0], [255, 255, 0], [238, 154, 0], [85, 26, 139], [255, 127, 80]]),
    "houston2018": dict(
        title="Houston 2018 (IEEE GRSS DFC 2018)", aux="lidar", prefix="houston", folders=["Houston2018"],
        layouts=["dcmnet", "single", "four-file"],
        # the contest's 48 bands (380-1050 nm), as the paper uses them; copies with 50 channels
        # (DCMNet's) carry two more, which DeepHyperX also drops
        hsi_channels=48,
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
        title="Berlin (HSI-SAR)", aux="sar", prefix="berlin", folders=["Berlin"],
        layouts=["hsi-sar", "dcmnet"],
        class_names=["Forest", "Residential area", "Industrial area", "Low plants", "Soil",
                     "Allotment", "Commercial area", "Water"],
        palette=[[0, 100, 0], [255, 0, 0], [128, 128, 128], [124, 252, 0], [160, 82, 45],
                 [255, 215, 0], [255, 0, 255], [0, 0, 255]]),
    "augsburg": dict(
        title="Augsburg (HSI-SAR-DSM)", aux="sar", prefix="augsburg", folders=["Augsburg"],
        layouts=["hsi-sar", "dcmnet"],
        class_names=["Forest", "Residential area", "Industrial area", "Low plants", "Allotment",
                     "Commercial area", "Water"],
        palette=[[0, 100, 0], [255, 0, 0], [128, 128, 128], [124, 252, 0], [255, 215, 0],
                 [255, 0, 255], [0, 0, 255]]),
    "trento": dict(
        title="Trento", aux="lidar", prefix="trento", folders=["Trento"],
        layouts=["four-file", "single", "trento-tyust", "dcmnet"],
        class_names=["Apple trees", "Buildings", "Ground", "Woods", "Vineyard", "Roads"],
        palette=[[34, 139, 34], [255, 0, 0], [210, 180, 140], [0, 100, 0], [148, 0, 211],
                 [128, 128, 128]]),
    "muufl": dict(
        title="MUUFL Gulfport", aux="lidar", prefix="muufl", folders=["MUUFLGulfportSceneLabels"],
        layouts=["muufl-struct", "four-file", "single"],
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

NORMALISATIONS = {
    "scene": "min-max per band over the whole scene (authors' protocol)",
    "train": "min-max per band over the training pixels only, other pixels clipped to [0, 1]",
}


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
    """What a file holds, read from its header only: {name: shape, or 'struct'}. Formats that hold
    one unnamed array (.npy, .tif) give {None: shape}."""
    ext = os.path.splitext(path)[1].lower()
    if ext == ".mat" and is_matlab_v73(path):
        import h5py
        with h5py.File(path, "r") as f:
            # MATLAB keeps its own bookkeeping under names starting with '#'; a struct is a group
            return {k: tuple(reversed(v.shape)) if isinstance(v, h5py.Dataset) else "struct"
                    for k, v in f.items() if not k.startswith(("#", "__"))}
    if ext == ".mat":
        import scipy.io
        return {name: "struct" if kind == "struct" else tuple(shape)
                for name, shape, kind in scipy.io.whosmat(path) if not name.startswith("__")}
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


def struct_path(key):
    """'hsi.Lidar(1).z' -> [('hsi', None), ('Lidar', 1), ('z', None)] (MATLAB's 1-based element)."""
    parts = []
    for part in key.split("."):
        m = re.fullmatch(r"([A-Za-z_]\w*)(?:\((\d+)\))?", part)
        if not m or (m.group(2) is not None and int(m.group(2)) < 1):
            raise DataError(f"key '{key}': '{part}' is not a field name (optionally with a 1-based element, as in Lidar(1))")
        parts.append((m.group(1), None if m.group(2) is None else int(m.group(2))))
    return parts


def load_array(path, key):
    """The array `key` of `path`, in (H, W[, bands]) order. A key with dots (or an element such as
    Lidar(1)) is a path into a MATLAB struct; through a struct array it gives one array per
    element, stacked as channels."""
    ext = os.path.splitext(path)[1].lower()
    if ext == ".mat" and key is not None and re.search(r"[.(]", key):
        reader = struct_arrays_v73 if is_matlab_v73(path) else struct_arrays_v5
        return stack_channels(reader(path, struct_path(key)), f"{path} key '{key}'")
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


@functools.lru_cache(maxsize=1)
def load_struct_v5(path, top):
    """A top-level variable of a MATLAB v5/v7 file as scipy's mat_struct objects; kept while the
    scene's other fields are read from the same struct (load_scene clears it)."""
    import scipy.io
    return scipy.io.loadmat(path, variable_names=[top], squeeze_me=True, struct_as_record=False)[top]


def struct_arrays_v5(path, parts):
    """The arrays at a struct path of a MATLAB v5/v7 file (scipy's mat_struct objects)."""
    from scipy.io.matlab import mat_struct

    def elements(value):  # a struct, or a struct array, as a list of structs (MATLAB's order)
        if isinstance(value, mat_struct):
            return [value]
        if isinstance(value, np.ndarray) and value.dtype == object and value.size \
                and all(isinstance(v, mat_struct) for v in value.ravel()):
            return list(value.ravel(order="F"))
        return None

    top, index = parts[0]
    nodes, where = [load_struct_v5(path, top)], top
    for name, next_index in parts[1:] + [(None, None)]:
        if index is not None:
            picked = elements(nodes[0]) if len(nodes) == 1 else None
            if picked is None or index > len(picked):
                raise DataError(f"{path}: '{where}' has no element {index} (it holds {len(picked or [])} struct(s))")
            nodes = [picked[index - 1]]
        if name is None:
            return nodes
        children = []
        for node in nodes:
            structs = elements(node)
            if structs is None:
                raise DataError(f"{path}: '{where}' is not a struct, so it has no field '{name}'")
            for s in structs:
                if name not in s._fieldnames:
                    raise DataError(f"{path}: '{where}' has no field '{name}'; its fields are "
                                    f"{', '.join(s._fieldnames)}")
                children.append(getattr(s, name))
        nodes, where, index = children, f"{where}.{name}", next_index


def struct_arrays_v73(path, parts):
    """The arrays at a struct path of a MATLAB v7.3 (HDF5) file. A struct is a group; a struct
    array's fields, and a cell array, are datasets of references, one per element. So an element
    index on a struct array (Lidar(1) of a group) waits for the field's references; on a cell array
    (Lidar(1) of a dataset of references) it picks at once."""
    import h5py
    with h5py.File(path, "r") as f:
        nodes, where, pending = [f], path, None
        for name, index in parts:
            children, consumed = [], False
            for node in nodes:
                if not isinstance(node, h5py.Group):
                    raise DataError(f"{path}: '{where}' is not a struct, so it has no field '{name}'")
                if name not in node:
                    fields = [k for k in node.keys() if not k.startswith("#")]
                    raise DataError(f"{path}: '{where}' has no field '{name}'; its fields are {', '.join(fields)}")
                child = node[name]
                if isinstance(child, h5py.Dataset) and h5py.check_dtype(ref=child.dtype):
                    refs = list(child[()].ravel())  # C order of the reversed axes = MATLAB's order
                    pick = pending if pending is not None else index
                    consumed = consumed or (pending is None and index is not None)
                    if pick is not None:
                        if pick > len(refs):
                            owner = where if pending is not None else f"{where}.{name}"  # struct array or cell
                            raise DataError(f"{path}: '{owner}' has no element {pick} (it holds {len(refs)})")
                        refs = [refs[pick - 1]]
                    children.extend(f[ref] for ref in refs)
                elif pending not in (None, 1):
                    raise DataError(f"{path}: '{where}' has no element {pending} (it is a single struct)")
                else:
                    children.append(child)
            nodes, where = children, name if where == path else f"{where}.{name}"
            pending = None if consumed else index
        if pending not in (None, 1) or not all(isinstance(n, h5py.Dataset) for n in nodes):
            raise DataError(f"{path}: '{where}' is not a numeric array (a struct, or an element of one)")
        return [n[()].transpose() for n in nodes]


def stack_channels(arrays, where):
    """One array, or several (a field of a struct array) stacked as channels of one (H, W, C)."""
    for a in arrays:
        if not isinstance(a, np.ndarray) or a.dtype.kind not in "biuf":
            kind = a.dtype if isinstance(a, np.ndarray) else type(a).__name__
            raise DataError(f"{where}: holds {kind} data, not a numeric array")
    if len(arrays) == 1:
        return arrays[0]
    shapes = {a.shape[:2] for a in arrays}
    if len(shapes) > 1 or any(a.ndim not in (2, 3) for a in arrays):
        raise DataError(f"{where}: the struct array's {len(arrays)} elements differ in shape "
                        f"({', '.join(str(a.shape) for a in arrays)}); name one element, as in Lidar(1)")
    return np.concatenate([a[..., None] if a.ndim == 2 else a for a in arrays], axis=-1)


def choose_key(path, keys, key, candidates):
    """Pick the array to read: the key asked for; else the first candidate present (any case);
    else the file's only array. A struct path is looked up by its first name."""
    names = [k for k in keys if k is not None]
    listing = ", ".join(f"'{k}' {keys[k]}" if keys[k] else f"'{k}'" for k in names) \
        or "none: it holds one unnamed array"
    top = lambda k: re.split(r"[.(]", k)[0]  # noqa: E731
    if key is not None:
        if top(key) in keys:
            return key
        raise DataError(f"{path}: no key '{top(key)}'; the file holds {listing}")
    for want in candidates:
        for k in names:
            if k == top(want) or k.lower() == top(want).lower():
                return k + want[len(top(want)):]
    if len(keys) == 1 and next(iter(keys.values())) != "struct":
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


# -----------------------------------------------------------------------------
# Finding the files of a preset's layout

def layout_files(dataset, layout):
    """{role: [(file name, candidate keys, required)]} of a layout, with the preset's names filled in."""
    preset = PRESETS[dataset]
    fill = lambda text: text.format(dataset=dataset, prefix=preset.get("prefix", dataset), aux=preset["aux"])  # noqa: E731
    return {role: [(fill(name), [fill(k) for k in keys], required) for name, keys, required in entries]
            for role, entries in LAYOUTS[layout].items()}


def match_layout(dataset, folder):
    """(layout, {role: [(path, keys)]}) for the first of the preset's layouts complete in `folder`."""
    present = {name.lower(): name for name in os.listdir(folder)}  # file names in any case
    for layout in PRESETS[dataset]["layouts"]:
        if layout not in LAYOUTS:
            continue
        files, complete = {}, True
        for role, entries in layout_files(dataset, layout).items():
            for name, keys, required in entries:
                found = present.get(name.lower())
                if found:
                    files.setdefault(role, []).append((os.path.join(folder, found), keys))
                elif required:
                    complete = False
        if complete:
            return layout, files
    return None


def find_layout(dataset, source):
    """Return (layout name, {role: [(path, candidate keys), ...]}) for what exists at `source`: the
    folder itself, else one of its subfolders (those named as the preset's usual folder first), or
    a single file that a layout names (or any .mat file for the 'single' layout)."""
    preset = PRESETS[dataset]
    if os.path.isfile(source):
        return single_file_layout(dataset, source)
    if not os.path.isdir(source):
        raise DataError(f"{source}: no such file or folder")
    subfolders = sorted((e.name for e in os.scandir(source) if e.is_dir()),
                        key=lambda n: (n.lower() not in [f.lower() for f in preset.get("folders", [])], n))
    for folder in [source] + [os.path.join(source, n) for n in subfolders]:
        found = match_layout(dataset, folder)
        if found:
            return found
    there = ", ".join(sorted(os.listdir(source))[:20]) or "nothing"
    raise DataError(f"{source}: found none of the {dataset} layouts {layout_help(dataset)} in it or in its "
                    f"subfolders; the folder holds {there}")


def single_file_layout(dataset, source):
    name = os.path.basename(source).lower()
    for layout in PRESETS[dataset]["layouts"]:
        if layout not in LAYOUTS:
            continue
        roles = layout_files(dataset, layout)
        names = {n.lower() for entries in roles.values() for n, _, _ in entries}
        if names == {name} or (layout == "single" and name.endswith(".mat")):
            return layout, {role: [(source, keys)] for role, ((_, keys, _),) in roles.items()}
    raise DataError(f"{source}: the {dataset} preset reads a folder in one of the layouts "
                    f"{layout_help(dataset)}, not this single file")


def layout_help(dataset):
    """The file names each layout of a preset expects, for messages and --help."""
    out = []
    for layout in PRESETS[dataset]["layouts"]:
        if layout not in LAYOUTS:
            continue
        names = []
        for entries in layout_files(dataset, layout).values():
            for name, _, required in entries:
                name = name + ("" if required else " (optional)")
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
    """Read a scene's raw arrays. Returns a dict with hsi, aux (lists of (array, where)), the split
    as train and test maps, or gt with train_index and test_index, or gt alone ((array, where)
    each), and layout, files, aux_name, class_names, palette, synthetic."""
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
        files = {role: [split_spec(custom[role])] for role in ("hsi", "aux", "train", "test", "gt") if custom.get(role)}
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
    load_struct_v5.cache_clear()
    scene["files"] = sorted({os.path.abspath(path) for entries in files.values() for path, _ in entries})
    return dict(scene, layout=layout, hsi=read["hsi"], aux=read["aux"],
                **{role: read[role][0] for role in ("train", "test", "gt", "train_index", "test_index") if role in read})


# -----------------------------------------------------------------------------
# Checks

def as_label_map(arr, where):
    """A 2-D int32 map of classes 1..C, 0 unlabelled (-1 is read as unlabelled too, as MUUFL
    stores it); refuses anything else."""
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
    if m.size and m.min() < -1:
        raise DataError(f"{where} shape {arr.shape}: negative labels ({m.min()}); "
                        "classes are 1..C with 0 (or -1) unlabelled")
    return np.maximum(m, 0).astype(np.int32)


def as_channels(arr, where, name):
    """(H, W) -> (H, W, 1); (H, W, B) as it is."""
    if arr.ndim == 2:
        return arr[..., None]
    if arr.ndim != 3:
        raise DataError(f"{where}: the {name} must be (H, W) or (H, W, bands), got shape {arr.shape}")
    return arr


def as_coords(arr, where, shape):
    """An index array as (N, 2) int64 0-based (row, col) inside an H x W scene."""
    if arr.ndim == 2 and arr.shape[0] == 2 and arr.shape[1] != 2:
        arr = arr.T  # (2, N), as some MATLAB code saves them
    if arr.ndim != 2 or arr.shape[1] != 2:
        raise DataError(f"{where}: an index array must be (N, 2) 0-based (row, col) pixel indices, "
                        f"got shape {arr.shape}")
    if arr.dtype.kind == "f" and (~np.isfinite(arr) | (arr != np.round(arr))).any():
        raise DataError(f"{where} shape {arr.shape}: pixel indices must be whole numbers")
    coords = arr.astype(np.int64)
    h, w = shape
    outside = (coords < 0).any(1) | (coords[:, 0] >= h) | (coords[:, 1] >= w)
    if outside.any():
        r, c = coords[outside][0]
        one_based = coords.min() >= 1 and (coords[:, 0].max() == h or coords[:, 1].max() == w)
        raise DataError(f"{where} shape {arr.shape}: {int(outside.sum())} index(es) outside the {h} x {w} scene, "
                        f"the first (row {r}, col {c}); indices are 0-based (row, col)"
                        + ("; these look 1-based (MATLAB's): subtract 1" if one_based else ""))
    unique = np.unique(coords, axis=0)
    if len(unique) < len(coords):
        warn(f"{where}: {len(coords) - len(unique)} pixel index(es) repeated; each pixel is used once")
    return unique


def maps_from_index(gt, gt_where, train, test):
    """Train and test maps from the whole ground truth and two index arrays ((array, where) each)."""
    maps, sets = [], []
    for arr, where in (train, test):
        coords = as_coords(arr, where, gt.shape)
        labels = gt[coords[:, 0], coords[:, 1]]
        if (labels == 0).any():
            r, c = coords[labels == 0][0]
            raise DataError(f"{where}: {int((labels == 0).sum())} of its {len(coords)} pixels are unlabelled in "
                            f"{gt_where} (shape {gt.shape}), the first (row {r}, col {c}); indices are 0-based (row, col)")
        m = np.zeros_like(gt)
        m[coords[:, 0], coords[:, 1]] = labels
        maps.append(m)
        sets.append(coords)
    shared = (maps[0] > 0) & (maps[1] > 0)
    if shared.any():
        r, c = np.argwhere(shared)[0]
        raise DataError(f"{train[1]} and {test[1]}: the training and test indices share {int(shared.sum())} "
                        f"pixel(s), the first (row {r}, col {c}); a pixel may be in one of them only")
    return maps


def split_ground_truth(gt, where, class_names, per_class=None, fraction=None, seed=0):
    """Train and test maps drawn from one ground truth: per_class pixels of each class (or
    round(fraction * n), at least 1) for training, the rest for testing; stratified, seeded with
    numpy's default_rng((seed, 1)). Refuses a split that leaves a class without test pixels."""
    def count(c, n):
        k = per_class if per_class else max(1, int(round(fraction * n)))
        if k >= n:
            name = class_names[c - 1] if class_names and c <= len(class_names) else f"class {c}"
            rule = f"--train-per-class {per_class}" if per_class else f"--train-fraction {fraction}"
            raise DataError(f"{where}: class {c} ({name}) has {n} labelled pixel(s): {rule} takes {k} for "
                            "training and leaves none for testing; ask for fewer")
        return k

    labelled = np.flatnonzero(gt > 0)  # row-major
    chosen = draw_per_class(gt.flat[labelled], count, np.random.default_rng([seed, 1]))
    train = np.zeros_like(gt)
    train.flat[labelled[chosen]] = gt.flat[labelled[chosen]]
    return train, np.where(train > 0, 0, gt)


def draw_per_class(labels, count, rng):
    """Boolean mask over labels: count(c, n) of the n pixels of each class c, drawn without
    replacement, classes in increasing order."""
    chosen = np.zeros(len(labels), bool)
    for c in np.unique(labels):
        idx = np.flatnonzero(labels == c)
        chosen[rng.choice(idx, count(c, len(idx)), replace=False)] = True
    return chosen


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
# Normalising and splitting

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
        is_val = draw_per_class(labels, lambda c, n: min(max(int(round(val_fraction * n)), 1), n - 1),
                                np.random.default_rng(seed))
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

def check_room(out, nbytes):
    """Refuse before writing when the output folder (or the process's file-size limit) cannot take
    the file: a disk that fills up half-way helps nobody."""
    import resource
    folder = os.path.dirname(os.path.abspath(out))
    free = shutil.disk_usage(folder).free
    if nbytes > free:
        raise DataError(f"{out}: the patch file needs about {size_text(nbytes)} but {folder} has "
                        f"{size_text(free)} free; free some space or choose another --out")
    limit = resource.getrlimit(resource.RLIMIT_FSIZE)[0]
    if limit != resource.RLIM_INFINITY and nbytes > limit:
        raise DataError(f"{out}: the patch file needs about {size_text(nbytes)} but this process may write "
                        f"files of at most {size_text(limit)} (ulimit -f); raise the limit")


def size_text(nbytes):
    return f"{nbytes / 1e9:.2f} GB" if nbytes >= 1e8 else f"{nbytes / 1e6:.1f} MB"


def write_error(out, e):
    """One line for a failed write: HDF5 buries the system's reason in a long message."""
    reason = re.search(r"error message = '([^']*)'", str(e))
    reason = reason.group(1) if reason else (e.strerror if getattr(e, "strerror", None) else str(e))
    return DataError(f"{out}: writing the patch file failed ({reason}); nothing was left behind")


def print_summary(title, layout, shape, bands, aux_name, class_names, splits, notes, out, seconds, estimate):
    print(f"{title}, layout {layout}: {shape[0]} x {shape[1]} pixels; hsi {bands[0]} bands, "
          f"{aux_name} {bands[1]} channel(s)")
    for note in notes:
        print(f"  {note}")
    names = [s for s in ("train", "val", "test") if s in splits]
    counts = {s: np.bincount(splits[s][1], minlength=len(class_names)) for s in names}
    width = max(len(n) for n in class_names + ["class"])
    print(f"  {'#':>3}  {'class':<{width}}" + "".join(f"{s:>9}" for s in names))
    for c, name in enumerate(class_names):
        print(f"  {c + 1:>3}  {name:<{width}}" + "".join(f"{counts[s][c]:>9}" for s in names))
    print(f"  {'':>3}  {'total':<{width}}" + "".join(f"{counts[s].sum():>9}" for s in names))
    print(f"wrote {out} ({os.path.getsize(out) / 1e9:.2f} GB, estimated {estimate / 1e9:.2f} GB) in {seconds:.1f} s")


# -----------------------------------------------------------------------------
# The whole preparation

def check_arguments(dataset, out, source, patch_size, val_fraction, custom, normalise, train_per_class,
                    train_fraction):
    if dataset not in PRESETS:
        raise DataError(f"unknown dataset '{dataset}' (known: {', '.join(PRESETS)})")
    if patch_size < 1 or patch_size % 2 == 0:
        raise DataError(f"--patch-size must be a positive odd number (patches are centred), got {patch_size}")
    if not 0 <= val_fraction < 1:
        raise DataError(f"--val-fraction must be in [0, 1), got {val_fraction}")
    if normalise not in NORMALISATIONS:
        raise DataError(f"--normalise must be one of {', '.join(NORMALISATIONS)}, got {normalise!r}")
    if train_per_class is not None and train_fraction is not None:
        raise DataError("give --train-per-class or --train-fraction, not both")
    if train_per_class is not None and train_per_class < 1:
        raise DataError(f"--train-per-class must be at least 1, got {train_per_class}")
    if train_fraction is not None and not 0 < train_fraction < 1:
        raise DataError(f"--train-fraction must be in (0, 1), got {train_fraction}")
    if dataset not in ("demo", "custom") and source is None:
        raise DataError(f"--source is needed for {dataset}")
    if dataset == "custom":
        custom = custom or {}
        given = [k for k in ("train", "test", "gt") if custom.get(k)]
        if not (custom.get("hsi") and custom.get("aux")) or given not in (["train", "test"], ["gt"]):
            raise DataError("--dataset custom needs --hsi, --aux and either --train and --test (a split) "
                            "or --gt (one ground truth, split with --train-per-class or --train-fraction)")
    if not os.path.isdir(os.path.dirname(os.path.abspath(out))):
        raise DataError(f"{out}: its folder does not exist")


def scene_maps(scene, class_names, train_per_class, train_fraction, seed):
    """(train map, test map, their 'where's, how the split was made) from what the scene holds."""
    draw = train_per_class is not None or train_fraction is not None
    if "train" in scene or "train_index" in scene:
        if draw:
            raise DataError("this scene comes with its own train/test split; --train-per-class and "
                            "--train-fraction are for scenes with one ground truth and no split")
    if "train" in scene:
        (train, train_where), (test, test_where) = scene["train"], scene["test"]
        return (as_label_map(train, train_where), as_label_map(test, test_where), train_where, test_where,
                "given: the train and test maps as distributed")
    gt, gt_where = scene["gt"]
    gt = as_label_map(gt, gt_where)
    if "train_index" in scene:
        train, test = maps_from_index(gt, gt_where, scene["train_index"], scene["test_index"])
        return (train, test, scene["train_index"][1], scene["test_index"][1],
                "given: the train and test pixel indices as distributed")
    if not draw:
        raise DataError(f"{gt_where}: this scene comes with one ground truth and no split: choose one with "
                        "--train-per-class N or --train-fraction F (peers use 100 or 150 pixels per class, "
                        "or 0.05 of each class)")
    train, test = split_ground_truth(gt, gt_where, class_names, train_per_class, train_fraction, seed)
    rule = (f"{train_per_class} pixels per class" if train_per_class
            else f"round({train_fraction} x n) pixels of each class of n (at least 1)")
    return (train, test, f"{gt_where} (training part)", f"{gt_where} (test part)",
            f"drawn: {rule} for training, the rest for testing, stratified, seed {seed}")


def modalities(scene, dataset, keep_all_channels):
    """((hsi, where), (aux, where), channels kept): the cube, and the second modality's files
    stacked as channels of one (H, W, A) array."""
    hsi, hsi_where = scene["hsi"][0]
    hsi, channels = select_channels(as_channels(hsi, hsi_where, "hyperspectral cube"), dataset, keep_all_channels)
    aux = [(as_channels(a, w, "second modality"), w) for a, w in scene["aux"]]
    stacked = aux[0][0] if len(aux) == 1 else np.concatenate([a for a, _ in aux], axis=-1)
    return (hsi, hsi_where), (stacked, " + ".join(w for _, w in aux)), channels


def write_file(out, attrs, rows, splits, maps, patch_size):
    """Estimate the file's size, check the room for it, write it; returns the estimate."""
    h, w = maps["train_map"].shape
    bands = (rows["hsi"].shape[-1], rows["aux"].shape[-1])
    estimate = patchfile.estimate_bytes((h, w), bands, {s: len(c) for s, (c, _) in splits.items()}, patch_size)
    check_room(out, estimate)
    try:
        patchfile.write(out, attrs, rows, splits, maps, patch_size)
    except OSError as e:  # h5py reports HDF5's failed writes (disk full, file too large) as OSError
        raise write_error(out, e) from None
    return estimate


def select_channels(hsi, dataset, keep_all):
    """The preset's HSI channels (Houston 2018: the contest's 48 bands of the 50 some copies hold)."""
    want = PRESETS[dataset].get("hsi_channels")
    have = hsi.shape[-1]
    if not want or have <= want:
        return hsi, f"all {have}"
    if keep_all:
        return hsi, f"all {have} (--keep-all-channels; the paper uses the first {want})"
    return hsi[..., :want], f"1-{want} of {have} (the contest's {want} bands; --keep-all-channels keeps all {have})"


def prepare(dataset, out, source=None, patch_size=11, val_fraction=0.0, seed=0, custom=None, command="",
            normalise="scene", train_per_class=None, train_fraction=None, keep_all_channels=False):
    """Read, check, normalise, cut and write; returns {split: per-class counts}."""
    t0 = time.time()
    check_arguments(dataset, out, source, patch_size, val_fraction, custom, normalise, train_per_class,
                    train_fraction)
    scene = load_scene(dataset, source, custom, seed)
    if scene["synthetic"]:
        print("SYNTHETIC demo scene made by DataPrepare.make_demo_scene: not real data, for trying "
              "the pipeline only", flush=True)

    # checks, before any work
    train, test, train_where, test_where, split = scene_maps(scene, scene["class_names"], train_per_class,
                                                             train_fraction, seed)
    height, width = train.shape
    check_sizes(scene["hsi"] + scene["aux"] + [(train, train_where), (test, test_where)], height, width)
    (hsi, hsi_where), (aux, aux_where), channels = modalities(scene, dataset, keep_all_channels)
    n_classes = check_maps(train, test, train_where, test_where)
    class_names, palette = resolve_classes(scene["class_names"], scene["palette"], n_classes,
                                           dataset, f"{train_where} / {test_where}")
    splits = make_splits(train, test, val_fraction, seed)
    pixels = splits["train"][0] if normalise == "train" else None
    over = "the training pixels" if normalise == "train" else "the scene"
    rows = {m: Normalised(x, *band_range(x, where, name, pixels), normalise == "train", where, name, over)
            for m, x, where, name in (("hsi", hsi, hsi_where, "hsi"), ("aux", aux, aux_where, scene["aux_name"]))}

    attrs = dict(
        dataset=dataset, layout=scene["layout"], modalities=["hsi", scene["aux_name"]],
        class_names=class_names, num_classes=n_classes, palette=palette, patch_size=patch_size,
        normalise=normalise, normalisation=NORMALISATIONS[normalise], split=split, hsi_channels=channels,
        synthetic=scene["synthetic"], sources=json.dumps({path: sha256(path) for path in scene["files"]}),
        command=command, val_fraction=val_fraction, seed=seed,
        train_per_class=train_per_class or 0, train_fraction=train_fraction or 0.0)
    bands = (hsi.shape[-1], aux.shape[-1])
    estimate = write_file(out, attrs, rows, splits, {"train_map": train, "test_map": test}, patch_size)
    notes = [f"split: {split}", f"normalisation: {NORMALISATIONS[normalise]}", f"hsi channels kept: {channels}"]
    print_summary(PRESETS[dataset]["title"], scene["layout"], (height, width), bands, scene["aux_name"],
                  class_names, splits, notes, out, time.time() - t0, estimate)
    return {s: np.bincount(labels, minlength=n_classes) for s, (_, labels) in splits.items()}


def build_parser():
    layouts = "\n".join(f"  {name:<12} {layout_help(name)}" for name in PRESETS
                        if name not in ("demo", "custom"))
    parser = argparse.ArgumentParser(
        prog="DataPrepare.py", formatter_class=argparse.RawDescriptionHelpFormatter,
        description="Prepare a co-registered HSI + LiDAR/SAR scene as an HDF5 patch file for\n"
                    "model.py and evaluate.py: min-max per band, the normalised scene, P x P training\n"
                    "patches centred on their pixels, zero padding at the border.",
        epilog=f"layouts each preset finds under --source (the folder holding the files, or its parent;\n"
               f"a one-file layout, such as 'single' or 'muufl-struct', may also be the .mat file itself):\n"
               f"{layouts}\n"
               "  demo         no files: a small synthetic scene made on the spot\n"
               "  custom       any files, named with --hsi, --aux and --train/--test or --gt")
    parser.add_argument("--dataset", required=True, choices=list(PRESETS),
                        help="preset that knows the files, class names and colours of a data set")
    parser.add_argument("--source", help="the downloaded scene: a folder or its parent (or the single .mat "
                                         "file); not used by demo and custom")
    parser.add_argument("--out", required=True, help="HDF5 file to write (replaced atomically)")
    parser.add_argument("--patch-size", type=int, default=11,
                        help="odd side P of the square patches in pixels (default 11, the authors')")
    parser.add_argument("--normalise", choices=list(NORMALISATIONS), default="scene",
                        help="min-max statistics over the whole 'scene' (the authors', default) or over the "
                             "'train' pixels only (nothing of the test pixels leaks in; the rest is clipped to [0, 1])")
    parser.add_argument("--val-fraction", type=float, default=0.0,
                        help="fraction of each class's training pixels moved to a 'val' split "
                             "(default 0: the paper's training set whole)")
    parser.add_argument("--train-per-class", type=int, metavar="N",
                        help="scenes with one ground truth and no split (MUUFL, Trento, custom --gt): "
                             "N training pixels per class, the rest for testing")
    parser.add_argument("--train-fraction", type=float, metavar="F",
                        help="as --train-per-class, with round(F x n) pixels of each class of n")
    parser.add_argument("--keep-all-channels", action="store_true",
                        help="houston2018: keep all the cube's channels, not the contest's 48 bands")
    parser.add_argument("--seed", type=int, default=0,
                        help="seed of the drawn train/test and validation splits and of the demo scene")
    group = parser.add_argument_group(
        "custom scenes (--dataset custom); KEY may be left out when the file holds one array; a KEY "
        "with dots reads a MATLAB struct field, e.g. hsi.Data or hsi.Lidar.z (a struct array's "
        "elements stacked as channels) or hsi.Lidar(1).z (its first element)")
    group.add_argument("--hsi", metavar="FILE[:KEY]", help="hyperspectral cube (H, W, B)")
    group.add_argument("--aux", metavar="FILE[:KEY]", help="second modality (H, W) or (H, W, A)")
    group.add_argument("--train", metavar="FILE[:KEY]", help="training label map (H, W), 1..C, 0 or -1 unlabelled")
    group.add_argument("--test", metavar="FILE[:KEY]", help="test label map (H, W), 1..C, 0 or -1 unlabelled")
    group.add_argument("--gt", metavar="FILE[:KEY]", help="one ground truth (H, W) instead of --train/--test; "
                                                          "split with --train-per-class or --train-fraction")
    group.add_argument("--class-names", help="comma-separated class names in label order "
                                             "(default 'class 1', 'class 2', ...)")
    group.add_argument("--aux-name", default="aux", help="name of the second modality, e.g. lidar or sar (default aux)")
    return parser


def main(argv=None):
    argv = sys.argv[1:] if argv is None else list(argv)
    parser = build_parser()
    args = parser.parse_args(argv)
    custom_flags = [f for f in ("hsi", "aux", "train", "test", "gt", "class_names") if getattr(args, f)]
    if args.dataset != "custom" and custom_flags:
        parser.error(f"--{custom_flags[0].replace('_', '-')} is for --dataset custom only")
    custom = None
    if args.dataset == "custom":
        names = [n.strip() for n in args.class_names.split(",")] if args.class_names else None
        custom = dict(hsi=args.hsi, aux=args.aux, train=args.train, test=args.test, gt=args.gt,
                      class_names=names, aux_name=args.aux_name)
    with warnings.catch_warnings():
        warnings.showwarning = lambda message, *_, **__: print(f"DataPrepare.py: warning: {message}",
                                                               file=sys.stderr)
        try:
            prepare(args.dataset, args.out, args.source, args.patch_size, args.val_fraction, args.seed, custom,
                    command=shlex.join(["python", "DataPrepare.py", *argv]), normalise=args.normalise,
                    train_per_class=args.train_per_class, train_fraction=args.train_fraction,
                    keep_all_channels=args.keep_all_channels)
        except DataError as e:
            sys.exit(f"DataPrepare.py: error: {e}")


if __name__ == "__main__":
    main()
