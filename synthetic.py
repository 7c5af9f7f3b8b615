"""Every synthetic scene of the project; none of them is real data, and every figure made on them
says so.

- make_demo_scene: the small demo scene DataPrepare.py --dataset demo prepares (no download).
- make_dcmnet: noise shaped like a scene (class regions, a ground truth, a split) in the layout of
  DCMNet's public copies (oucailab/DCMNet: Houston2018/, Berlin/, Augsburg/), at any size: small
  ones for the tests, the real sizes for benchmark.py.
- make_houston2013: a full-size Houston 2013 stand-in built from the real public pieces (the maps, the training pixels' spectra, the labelled pixels' LiDAR),
  written as the authors' single file houston2013.mat with a `synthetic_stand_in` note, so that
  DataPrepare.py marks the patch file synthetic.

    python synthetic.py berlin /tmp/synthetic          # writes /tmp/synthetic/Berlin/berlin_*.mat
    python synthetic.py houston2013 /tmp/h13 --pieces PIECES_DIR   # /tmp/h13/houston2013.mat
"""
import argparse
import os
import sys
import time

import numpy as np

from readers import STAND_IN_KEY, DataError, as_label_map, read_array


# -----------------------------------------------------------------------------
# The demo scene (DataPrepare.py --dataset demo)

DEMO_CLASS_NAMES = ["Grass", "Trees", "Bare soil", "Road", "Roof", "Water"]
DEMO_PALETTE = [[124, 252, 0], [0, 100, 0], [160, 82, 45], [128, 128, 128], [255, 0, 0], [0, 0, 255]]


def make_demo_scene(seed=0):
    """A small synthetic co-registered HSI + LiDAR scene (64 x 96 pixels, 32 bands, 6 classes),
    made here so that a new user can run the whole pipeline without a download. Classes are
    blob-shaped regions with their own smooth spectra and heights plus noise; grass/trees and
    road/roof look alike in the spectra and differ in height, so both modalities matter."""
    from scipy import ndimage
    rng = np.random.default_rng(seed)
    h, w, bands, n_classes = 64, 96, 32, 6

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
                train=train, test=test, class_names=list(DEMO_CLASS_NAMES),
                palette=[list(p) for p in DEMO_PALETTE])


# -----------------------------------------------------------------------------
# DCMNet's copies

# The real sizes and types of the DCMNet copies (read from rs-fusion-datasets 1.0.0's loaders; the
# Houston 2018 training count is ours: DCMNet's index file is not described anywhere we found).
SCENES = {
    "berlin": dict(folder="Berlin", prefix="berlin", aux="sar", shape=(1723, 476), hsi_bands=244,
                   hsi_dtype="float64", aux_bands=4, aux_dtype="float64", classes=8, train=2820, test=464671),
    "houston2018": dict(folder="Houston2018", prefix="houston", aux="lidar", shape=(1202, 4768), hsi_bands=50,
                        hsi_dtype="uint16", aux_bands=1, aux_dtype="float32", classes=20, train=10000,
                        test=2008000),
    "augsburg": dict(folder="Augsburg", prefix="augsburg", aux="sar", shape=(332, 485), hsi_bands=180,
                     hsi_dtype="uint16", aux_bands=4, aux_dtype="float64", classes=7, train=761, test=77533),
}


def ground_truth(shape, classes, labelled, rng):
    """(H, W) uint8 map with exactly `labelled` pixels in class regions (1..classes), 0 elsewhere;
    regions are given to classes so that every class gets a fair share of the labelled pixels."""
    from scipy import ndimage
    h, w = shape
    n_seeds = max(classes * 4, h * w // 4000)
    seeds = np.zeros(shape, np.int32)
    seeds.flat[rng.choice(h * w, n_seeds, replace=False)] = np.arange(1, n_seeds + 1)
    nearest = ndimage.distance_transform_edt(seeds == 0, return_distances=False, return_indices=True)
    region = seeds[nearest[0], nearest[1]] - 1
    del nearest
    field = ndimage.gaussian_filter(rng.standard_normal(shape, np.float32), 6)
    keep = np.argpartition(field.ravel(), h * w - labelled)[h * w - labelled:]
    sizes = np.bincount(region.flat[keep], minlength=n_seeds)
    region_class, totals = np.zeros(n_seeds, np.uint8), np.zeros(classes)
    for r in np.argsort(-sizes, kind="stable"):  # largest regions first, each to the emptiest class
        c = int(np.argmin(totals))
        region_class[r], totals[c] = c + 1, totals[c] + sizes[r]
    gt = np.zeros(shape, np.uint8)
    gt.flat[keep] = region_class[region.flat[keep]]
    return gt


def split_indices(gt, n_train, rng):
    """(train, test) (N, 2) 0-based (row, col) index arrays: n_train pixels spread evenly over the
    classes (each keeps some for testing), the remaining labelled pixels for testing."""
    classes = np.unique(gt[gt > 0])
    train = []
    for i, c in enumerate(classes):
        idx = np.flatnonzero(gt == c)
        k = min(n_train // len(classes) + (i < n_train % len(classes)), len(idx) // 2)
        train.append(rng.choice(idx, k, replace=False))
    train = np.sort(np.concatenate(train))
    test = np.setdiff1d(np.flatnonzero(gt > 0), train)
    w = gt.shape[1]
    return [np.stack([i // w, i % w], 1).astype(np.int64) for i in (train, test)]


def cube(shape, bands, dtype, gt, rng, block=64):
    """(H, W, bands) noise around a per-class spectrum, built in row blocks (bounded memory)."""
    h, w = shape
    means = rng.uniform(0.2, 0.8, (int(gt.max()) + 1, bands)).astype(np.float32)
    out = np.empty((h, w, bands), dtype)
    scale = 4000 if np.dtype(dtype).kind == "u" else 1.0
    for top in range(0, h, block):
        rows = means[gt[top:top + block]] + 0.1 * rng.standard_normal((min(block, h - top), w, bands), np.float32)
        out[top:top + block] = np.clip(rows, 0, None) * scale
    return out


def write_dcmnet(folder, prefix, aux_name, hsi, aux, gt, train, test):
    """The files of a DCMNet copy: {p}_hsi.mat, {p}_{aux}.mat, {p}_gt.mat and {p}_index.mat holding
    {p}_train, {p}_test and {p}_all ((N, 2) 0-based (row, col) indices into the ground truth)."""
    import scipy.io
    os.makedirs(folder, exist_ok=True)
    every = np.argwhere(np.ones(gt.shape, bool)).astype(train.dtype)
    scipy.io.savemat(os.path.join(folder, f"{prefix}_hsi.mat"), {f"{prefix}_hsi": hsi})
    scipy.io.savemat(os.path.join(folder, f"{prefix}_{aux_name}.mat"), {f"{prefix}_{aux_name}": aux})
    scipy.io.savemat(os.path.join(folder, f"{prefix}_gt.mat"), {f"{prefix}_gt": gt})
    scipy.io.savemat(os.path.join(folder, f"{prefix}_index.mat"),
                     {f"{prefix}_train": train, f"{prefix}_test": test, f"{prefix}_all": every})


def make_dcmnet(name, parent, seed=0, shape=None, train=None, test=None):
    """Write a synthetic DCMNet copy of `name` (real size unless shape/train/test say otherwise)
    under parent/<its folder>; returns that folder."""
    s = dict(SCENES[name])
    shape, n_train, n_test = shape or s["shape"], train or s["train"], test or s["test"]
    rng = np.random.default_rng(seed)
    gt = ground_truth(shape, s["classes"], n_train + n_test, rng)
    train_idx, test_idx = split_indices(gt, n_train, rng)
    hsi = cube(shape, s["hsi_bands"], s["hsi_dtype"], gt, rng)
    aux = cube(shape, s["aux_bands"], s["aux_dtype"], gt, rng)
    if s["aux_bands"] == 1:
        aux = aux[..., 0]  # a LiDAR raster is stored as (H, W)
    folder = os.path.join(parent, s["folder"])
    write_dcmnet(folder, s["prefix"], s["aux"], hsi, aux, gt, train_idx, test_idx)
    return folder


# -----------------------------------------------------------------------------
# The Houston 2013 stand-in, built from the real public pieces

HOUSTON_SHAPE, HOUSTON_BANDS = (349, 1905), 144
HOUSTON_PIECES = dict(  # role: (file, key, what it holds); all of them needed
    train=("TRLabel.mat", "TRLabel", "the standard training map"),
    test=("TSLabel.mat", "TSLabel", "the standard test map"),
    spectra=("HSI_TrSet.mat", "HSI_TrSet", "the 144-band spectra of the training pixels"),
    lidar_train=("LiDAR_TrSet.mat", "LiDAR_TrSet", "the LiDAR features of the training pixels"),
    lidar_test=("LiDAR_TeSet.mat", "LiDAR_TeSet", "the LiDAR features of the test pixels"))
HOUSTON_LABELS = dict(train=("TrLabel.mat", "TrLabel"), test=("TeLabel.mat", "TeLabel"))  # checked when present
ELEVATION = 20  # the column of the LiDAR features holding the normalised elevation
COMPONENTS = 8  # principal directions of each class's real spectra
COEFF_SIGMA = 2.0  # pixels: the spatial correlation of the coefficients
ILLUMINATION = (0.03, 100.0)  # the smooth illumination field's relative amplitude and scale (pixels)
SHADOW = (1500, 1780, 0.5)  # the cloud shadow's columns and how much light it takes
LIDAR_NOISE = 0.01  # in the units of the normalised elevation (std 0.26 over the labelled pixels)
STAND_IN_NOTE = ("SYNTHETIC stand-in for houston2013.mat, not the real scene: the real standard maps and the "
                 "real LiDAR elevation of the labelled pixels; every pixel takes the class of its nearest "
                 "labelled pixel, its spectrum the real class mean plus the class's first "
                 f"{COMPONENTS} principal directions with spatially correlated coefficients plus sensor "
                 "noise, darkened by a smooth illumination field and a cloud shadow (columns "
                 f"{SHADOW[0]}-{SHADOW[1]}); unlabelled pixels take the nearest labelled pixel's elevation "
                 "plus noise. Made by synthetic.py houston2013")


def read_piece(folder, name, key, shape, what):
    """One real piece, checked against the shape it must have; DataError naming file and shape."""
    arr, where = read_array(os.path.join(folder, name), key)
    if arr.shape != shape:
        raise DataError(f"{where}: expected {what}, shape {shape}, got shape {arr.shape}")
    return arr


def houston_pieces(folder):
    """The real pieces in `folder`, checked: the two maps, the training spectra, the labelled
    pixels' elevation; the rows of the pixel tables are the maps' pixels in row-major order."""
    names = [name for name, _, _ in HOUSTON_PIECES.values()]
    if not os.path.isdir(folder):
        raise DataError(f"{folder}: no such folder; the Houston 2013 stand-in is built from the real pieces "
                        f"{', '.join(names)} in one folder (see data/README.md)")
    missing = [name for name in names if not os.path.isfile(os.path.join(folder, name))]
    if missing:
        raise DataError(f"{folder}: {', '.join(missing)} missing; the Houston 2013 stand-in is built from the "
                        f"real pieces {', '.join(names)} (see data/README.md)")
    maps = {}
    for role in ("train", "test"):
        name, key, what = HOUSTON_PIECES[role]
        arr = read_piece(folder, name, key, HOUSTON_SHAPE, what)
        maps[role] = as_label_map(arr, f"{os.path.join(folder, name)} key '{key}'").astype(np.uint8)
    if ((maps["train"] > 0) & (maps["test"] > 0)).any():
        raise DataError(f"{folder}: {HOUSTON_PIECES['train'][0]} and {HOUSTON_PIECES['test'][0]} overlap; "
                        "they must be the disjoint standard maps")
    counts = {role: int((m > 0).sum()) for role, m in maps.items()}
    tables = {}
    for role, split, width in (("spectra", "train", HOUSTON_BANDS), ("lidar_train", "train", ELEVATION + 1),
                               ("lidar_test", "test", ELEVATION + 1)):
        name, key, what = HOUSTON_PIECES[role]
        where = f"{what}, one row per labelled pixel of {HOUSTON_PIECES[split][0]}"
        tables[role] = read_piece(folder, name, key, (counts[split], width), where).astype(np.float64)
    for role, (name, key) in HOUSTON_LABELS.items():  # the row order, where the labels are at hand
        if os.path.isfile(os.path.join(folder, name)):
            rows = read_piece(folder, name, key, (counts[role], 1), "one label per row").ravel()
            if not np.array_equal(rows, maps[role][maps[role] > 0]):
                raise DataError(f"{os.path.join(folder, name)} key '{key}': its labels are not those of "
                                f"{HOUSTON_PIECES[role][0]} in row-major order, the order the pixel tables "
                                "are read in")
    return maps, tables


def class_statistics(spectra, labels, classes, components):
    """Per class: the mean spectrum, the first principal directions and the standard deviations
    along them, and the per-band standard deviation of what they leave (the sensor noise)."""
    bands = spectra.shape[1]
    mean = np.zeros((classes, bands), np.float32)
    dirs = np.zeros((classes, components, bands), np.float32)
    sd = np.zeros((classes, components), np.float32)
    noise = np.zeros((classes, bands), np.float32)
    for c in range(classes):
        x = spectra[labels == c + 1]
        if len(x) < 2:
            raise DataError(f"class {c + 1} has {len(x)} training spectra; its statistics need at least 2")
        centred = x - x.mean(0)
        _, s, vt = np.linalg.svd(centred, full_matrices=False)
        k = min(components, len(x) - 1)
        rest = centred - centred @ vt[:k].T @ vt[:k]
        mean[c], dirs[c, :k], sd[c, :k] = x.mean(0), vt[:k], s[:k] / np.sqrt(len(x) - 1)
        noise[c] = np.sqrt((rest ** 2).sum(0) / (len(x) - 1))
    return mean, dirs, sd, noise


def smooth_field(shape, sigma, rng):
    """Spatially correlated noise, zero mean and unit standard deviation."""
    from scipy import ndimage
    f = ndimage.gaussian_filter(rng.standard_normal(shape, np.float32), sigma)
    return (f - f.mean()) / f.std()


def light_field(shape, rng):
    """The light reaching each pixel: a smooth illumination field times a cloud shadow over the
    shadow's columns, its edges soft and wandering from row to row."""
    from scipy.special import expit
    h, w = shape
    amplitude, scale = ILLUMINATION
    light = 1 + amplitude * smooth_field(shape, scale, rng)
    first, last, depth = SHADOW
    wander = 10 * smooth_field((h, 1), 20, rng)  # pixels, per row
    cols = np.arange(w, dtype=np.float32)[None, :]
    inside = expit((cols - first - wander) / 6) * expit((last + wander - cols) / 6)
    return (light * (1 - depth * inside)).astype(np.float32)


def make_houston2013(pieces_dir, seed=0, block=16):
    """A full-size SYNTHETIC Houston 2013 scene from the real pieces in `pieces_dir`: dict with hsi
    (349, 1905, 144) float32, lidar (349, 1905) float32, train and test (349, 1905) uint8 (the real
    maps) and note (how it was made). STAND_IN_NOTE says the recipe; the spectra are in the
    pieces' units (normalised to [0, 1]) and built a block of rows at a time."""
    from scipy import ndimage
    t0 = time.time()
    print(f"reading the real Houston 2013 pieces in {pieces_dir}", flush=True)
    maps, tables = houston_pieces(pieces_dir)
    rng = np.random.default_rng(seed)
    h, w = HOUSTON_SHAPE
    labelled = maps["train"] + maps["test"]
    classes = int(labelled.max())

    print("classes: each pixel takes the class of its nearest labelled pixel", flush=True)
    nearest = ndimage.distance_transform_edt(labelled == 0, return_distances=False, return_indices=True)
    flat_nearest = (nearest[0].astype(np.int64) * w + nearest[1]).ravel()
    del nearest
    cls = labelled.ravel()[flat_nearest].reshape(h, w).astype(np.intp) - 1

    print("elevation: the real LiDAR at the labelled pixels, the nearest one's plus noise elsewhere", flush=True)
    elevation = np.zeros(h * w, np.float32)
    for split, table in (("train", "lidar_train"), ("test", "lidar_test")):
        elevation[np.flatnonzero(maps[split].ravel())] = tables[table][:, ELEVATION]
    lidar = elevation[flat_nearest] + LIDAR_NOISE * rng.standard_normal(h * w, np.float32)
    real = elevation[labelled.ravel() > 0]
    lidar = np.clip(lidar, real.min(), real.max())  # the real range: the noise makes no new extremes
    lidar[labelled.ravel() > 0] = real
    lidar = lidar.reshape(h, w)
    del flat_nearest, elevation

    print(f"spectra: {classes} class statistics from {len(tables['spectra'])} real training spectra", flush=True)
    labels = maps["train"][maps["train"] > 0]
    mean, dirs, sd, noise = class_statistics(tables["spectra"], labels, classes, COMPONENTS)
    coeff = np.stack([smooth_field((h, w), COEFF_SIGMA, rng) for _ in range(COMPONENTS)])
    # centred over each class's training pixels, so that those have the real class mean: the
    # training pixels of a class lie in a few patches, over which correlated noise need not average out
    train_idx = np.flatnonzero(maps["train"].ravel())
    offset = np.stack([coeff.reshape(COMPONENTS, -1)[:, train_idx[labels == c + 1]].mean(1)
                       for c in range(classes)]).astype(np.float32)  # (classes, components)
    light = light_field((h, w), rng)
    hsi = np.empty((h, w, HOUSTON_BANDS), np.float32)
    for top in range(0, h, block):
        rows = slice(top, min(top + block, h))
        c = cls[rows]
        x = mean[c]
        for k in range(COMPONENTS):
            x += ((coeff[k, rows] - offset[c, k]) * sd[c, k])[..., None] * dirs[c, k]
        x += noise[c] * rng.standard_normal(x.shape, np.float32)
        x *= light[rows, :, None]
        hsi[rows] = np.maximum(x, 0)  # no negative reflectance
        if top // block % 8 == 7 or rows.stop == h:
            print(f"  rows {rows.stop} / {h} ({time.time() - t0:.1f} s)", flush=True)
    return dict(hsi=hsi, lidar=lidar, train=maps["train"], test=maps["test"], note=STAND_IN_NOTE)


def write_houston2013(folder, scene):
    """Write the scene as the authors' single file, folder/houston2013.mat (MATLAB v5, uncompressed,
    keys hsi, lidar, train, test) with the stand-in note under readers.STAND_IN_KEY; the file appears
    whole or not at all. Returns its path."""
    import scipy.io
    from fileio import replacing
    os.makedirs(folder, exist_ok=True)
    path = os.path.join(folder, "houston2013.mat")
    arrays = {k: scene[k] for k in ("hsi", "lidar", "train", "test")}
    with replacing(path) as tmp:
        scipy.io.savemat(tmp, {**arrays, STAND_IN_KEY: scene["note"]}, do_compression=False)
    return path


# -----------------------------------------------------------------------------

def main(argv=None):
    parser = argparse.ArgumentParser(
        prog="synthetic.py", description="Write a SYNTHETIC scene: a DCMNet copy's layout at its real size "
                                         "(berlin, houston2018, augsburg), or the Houston 2013 stand-in built "
                                         "from the real public pieces (houston2013, with --pieces).")
    parser.add_argument("name", choices=list(SCENES) + ["houston2013"])
    parser.add_argument("parent", help="folder under which the scene's own folder (Berlin/, ...) is written; "
                                       "houston2013: the folder that gets houston2013.mat")
    parser.add_argument("--pieces", metavar="DIR", help="houston2013: the folder of the real pieces "
                                                        "(see data/README.md)")
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args(argv)
    if (args.name == "houston2013") != (args.pieces is not None):
        parser.error("--pieces DIR is needed for houston2013, and for it only")
    t0 = time.time()
    if args.name == "houston2013":
        try:
            path = write_houston2013(args.parent, make_houston2013(args.pieces, args.seed))
        except DataError as e:
            sys.exit(f"synthetic.py: error: {e}")
        print(f"wrote SYNTHETIC houston2013 stand-in {path} ({os.path.getsize(path) / 1e9:.2f} GB) "
              f"in {time.time() - t0:.1f} s")
        return
    folder = make_dcmnet(args.name, args.parent, args.seed)
    size = sum(os.path.getsize(os.path.join(folder, f)) for f in os.listdir(folder))
    print(f"wrote SYNTHETIC {args.name} in {folder} ({size / 1e9:.2f} GB) in {time.time() - t0:.1f} s")


if __name__ == "__main__":
    main()
