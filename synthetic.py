"""Synthetic scenes in the layout of DCMNet's public copies (oucailab/DCMNet: Houston2018/,
Berlin/, Augsburg/), at any size: small ones for the tests, the real sizes for benchmark.py.
They are noise shaped like a scene (class regions, a ground truth, a split), never real data, and
every figure made on them says so.

    python synthetic.py berlin /tmp/synthetic          # writes /tmp/synthetic/Berlin/berlin_*.mat
"""
import argparse
import os
import time

import numpy as np

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


def main():
    parser = argparse.ArgumentParser(description="Write a SYNTHETIC scene in a DCMNet copy's layout, at its real size.")
    parser.add_argument("name", choices=list(SCENES))
    parser.add_argument("parent", help="folder under which the scene's own folder (Berlin/, ...) is written")
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()
    t0 = time.time()
    folder = make_dcmnet(args.name, args.parent, args.seed)
    size = sum(os.path.getsize(os.path.join(folder, f)) for f in os.listdir(folder))
    print(f"wrote SYNTHETIC {args.name} in {folder} ({size / 1e9:.2f} GB) in {time.time() - t0:.1f} s")


if __name__ == "__main__":
    main()
