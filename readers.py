"""Reading the arrays of a scene from the formats scenes come in: MATLAB .mat v5/v7 and v7.3
(HDF5), structs, struct arrays and cell arrays included, GeoTIFF and ENVI rasters (through rasterio,
its bundled GDAL), .npy and .npz; and the checks of
what was read (a label map, a cube or raster of channels, an index array). Every problem is a
DataError whose message names the file, the key and the shape.

This is the bottom of the data modules: datasets.py, splits.py, synthetic.py and DataPrepare.py
import it, and it imports none of them.
"""
import contextlib
import functools
import os
import re
import warnings

import numpy as np


class DataError(ValueError):
    """A problem with the input files; the message names the file, key and shape."""


class DataWarning(UserWarning):
    """Something unusual in the input that does not stop the preparation."""


def warn(msg):
    warnings.warn(msg, DataWarning, stacklevel=2)


# The key under which a .mat scene file says that it is a synthetic stand-in, not the real data (a
# short text saying how it was made; synthetic.py writes it, datasets.load_scene looks for it).
STAND_IN_KEY = "synthetic_stand_in"


# -----------------------------------------------------------------------------
# Reading arrays from the formats scenes come in

# Rasters read through rasterio: GeoTIFF, and ENVI (the data file, or its .hdr header)
RASTER_EXTS = (".tif", ".tiff", ".img", ".hdr", ".dat", ".bsq", ".bil", ".bip")
ENVI_DATA_EXTS = ("", ".img", ".dat", ".bsq", ".bil", ".bip", ".raw", ".bin")
KNOWN_EXTS = ".mat, .tif, .tiff, ENVI (.img/.dat/.bsq/.bil/.bip or its .hdr), .npy, .npz"


def is_raster(path):
    return os.path.splitext(path)[1].lower() in RASTER_EXTS


def raster_data_path(path):
    """The file GDAL opens: ENVI's data file when given its .hdr header (x.hdr beside x, x.img,
    x.dat, ... or x.img.hdr beside x.img), else the path itself."""
    stem, ext = os.path.splitext(path)
    if ext.lower() != ".hdr":
        return path
    if os.path.splitext(stem)[1] and os.path.isfile(stem):  # x.img.hdr
        return stem
    for e in ENVI_DATA_EXTS:
        for candidate in (stem + e, stem + e.upper()):
            if os.path.isfile(candidate):
                return candidate
    raise DataError(f"{path}: an ENVI header, but no data file beside it (looked for "
                    f"{', '.join(os.path.basename(stem) + e for e in ENVI_DATA_EXTS)})")


def companion_files(path):
    """The files a raster is read from: an ENVI header and its data file both, else the path."""
    if not is_raster(path):
        return [path]
    data = raster_data_path(path)
    stem = os.path.splitext(data)[0]
    headers = [h for h in (stem + ".hdr", data + ".hdr") if os.path.isfile(h)]
    return sorted({path, data, *headers})


@contextlib.contextmanager
def quiet_rasterio():
    """Rasterio warns about every raster without a geotransform (NotGeoreferencedWarning): such
    rasters are normal here (label maps, cubes written by MATLAB), so that warning is silenced."""
    from rasterio.errors import NotGeoreferencedWarning
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", NotGeoreferencedWarning)
        yield


def read_raster(path):
    """A raster's bands as (H, W) (one band) or (H, W, B): rasterio gives (B, H, W)."""
    import rasterio
    with quiet_rasterio(), rasterio.open(raster_data_path(path)) as ds:
        arr = ds.read()
    return arr[0] if arr.shape[0] == 1 else np.moveaxis(arr, 0, -1)

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
    if is_raster(path):
        import rasterio
        with quiet_rasterio(), rasterio.open(raster_data_path(path)) as ds:
            return {None: (ds.height, ds.width) + ((ds.count,) if ds.count > 1 else ())}
    if ext == ".npy":
        return {None: tuple(np.load(path, mmap_mode="r").shape)}
    if ext == ".npz":
        with np.load(path) as z:
            return {k: None for k in z.files}
    raise DataError(f"{path}: unknown file type '{ext}' (read: {KNOWN_EXTS})")


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
    if is_raster(path):
        return read_raster(path)
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
    except Exception as e:  # scipy, h5py and rasterio each fail in their own way on a bad file
        at = f" key '{key}'" if key else ""
        raise DataError(f"{path}{at}: cannot read it ({type(e).__name__}: {e}); "
                        "is the file complete (not truncated) and of the type its name says?") from None
    where = f"{path} key '{key}'" if key else path
    if not isinstance(arr, np.ndarray) or arr.dtype.kind not in "biuf":
        kind = arr.dtype if isinstance(arr, np.ndarray) else type(arr).__name__
        raise DataError(f"{where}: holds {kind} data, not a numeric array")
    return arr, where



def read_text(path, key):
    """The text held under `key` in a .mat file (a MATLAB char array), or None when the file is not
    a .mat file or holds no such key: how a scene file carries a note such as the marker of a
    synthetic stand-in. Reads that one variable only."""
    if os.path.splitext(path)[1].lower() != ".mat" or not os.path.isfile(path):
        return None
    try:
        if key not in list_arrays(path):
            return None
        value = load_array(path, key)
    except Exception as e:  # a file that cannot be read says so when its arrays are read
        raise DataError(f"{path} key '{key}': cannot read it ({type(e).__name__}: {e})") from None
    if isinstance(value, np.ndarray) and value.dtype.kind == "U":
        return "".join(value.ravel().tolist())
    if isinstance(value, np.ndarray) and value.dtype.kind in "iu" and value.ndim <= 2:  # v7.3: uint16 codes
        return "".join(map(chr, value.ravel(order="F").tolist()))
    raise DataError(f"{path} key '{key}': holds {getattr(value, 'dtype', type(value).__name__)} data, not text")


def split_spec(spec):
    """'FILE:KEY' -> (FILE, KEY); a path that exists as given keeps its colons (C:\\...)."""
    if os.path.exists(spec) or ":" not in spec:
        return spec, None
    path, key = spec.rsplit(":", 1)
    return path, key or None



# -----------------------------------------------------------------------------
# Checking what was read

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

