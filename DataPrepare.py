"""
Turn a downloaded hyperspectral + LiDAR/SAR scene into the HDF5 patch file that model.py,
evaluate.py and baselines.py read (its layout is patchfile.py's).

It reads the files as they are distributed (MATLAB v5 and v7.3 .mat, structs included, GeoTIFF and
ENVI rasters through rasterio, .npy/.npz), checks them, min-max normalises every band of both
modalities (over the whole scene, the authors' protocol, or over the training pixels only with
--normalise train), and writes one file the size of the scene: the normalised scene, the per-band
statistics it was normalised with, the coordinates and labels of every split, and the training (and
validation) patches, P x P, centred on their pixel, zero outside the scene (the authors' P = 11).
Test patches are cut from the stored scene when they are read. Maps hold classes 1..C with 0 (or
-1) unlabelled; the file holds 0..C-1.

A scene comes with its split as two maps (train, test), as one ground truth with index arrays
(DCMNet's copies), or as one ground truth alone (MUUFL, Trento as tyust-dayu redistributes it):
then --train-per-class N or --train-fraction F draws a seeded, stratified split. --split blocks
draws a spatially disjoint one instead (whole B x B blocks to training or test, a buffer of 2 x (P // 2)
pixels between test and training pixels), from the one ground truth or from the union of the
distributed maps (then not the paper's split).

Rasters that carry georeferencing (GeoTIFF, ENVI with map info) must share one grid (same CRS and
transform); the file records it (crs_wkt, geotransform in GDAL order) so that maps can be written
as GeoTIFFs a GIS opens in place (geo.write_label_geotiff). --like TRAIN.h5 prepares a co-registered
scene without labels with a training file's normalisation statistics, patch size and classes.

Examples:
  python DataPrepare.py --dataset houston2013 --source data/houston2013.mat --out data/houston2013.h5
  python DataPrepare.py --dataset berlin --source data/Berlin/ --out data/berlin.h5
  python DataPrepare.py --dataset muufl --source data/muufl/ --train-per-class 100 --out data/muufl.h5
  python DataPrepare.py --dataset demo --out data/demo.h5
  python DataPrepare.py --dataset custom --hsi cube.mat:X --aux dsm.tif --train tr.npy \\
      --test te.mat:gt --class-names "Road,Tree,Roof" --out data/mine.h5
  python DataPrepare.py --dataset custom --hsi scene.mat:hsi.Data --aux scene.mat:hsi.Lidar.z \\
      --gt scene.mat:hsi.sceneLabels.labels --train-fraction 0.05 --out data/mine.h5
  python DataPrepare.py --dataset houston2013 --source data/houston2013.mat --split blocks \\
      --train-fraction 0.2 --block-size 32 --out data/houston2013-blocks.h5
  python DataPrepare.py --dataset custom --hsi next.tif --aux next_dsm.tif --like data/mine.h5 --out data/next.h5

The work is shared among modules that each own one concern, imported one way: readers.py (reading
the formats, DataError), geo.py (georeferencing), splits.py (the split rules), synthetic.py (every
synthetic scene), datasets.py (the presets and layouts, load_scene); this script normalises, checks
and writes.
"""
import argparse
import colorsys
import json
import os
import re
import shlex
import shutil
import sys
import time
import warnings

import numpy as np

import geo
import patchfile
from datasets import PRESETS, layout_help, load_scene
from fileio import sha256
from readers import DataError, as_channels, as_label_map
from normalise import NORMALISATIONS, Normalised, band_range
from splits import BLOCK_SIZE, block_maps, check_maps, check_sizes, make_splits, maps_from_index, split_ground_truth


SPLIT_METHODS = ("random", "blocks")


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
                    train_fraction, split=None, block_size=None, like=None):
    if dataset not in PRESETS:
        raise DataError(f"unknown dataset '{dataset}' (known: {', '.join(PRESETS)})")
    if patch_size is not None and (patch_size < 1 or patch_size % 2 == 0):
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
    if split is not None and split not in SPLIT_METHODS:
        raise DataError(f"--split must be one of {', '.join(SPLIT_METHODS)}, got {split!r}")
    if split is not None and train_per_class is None and train_fraction is None:
        raise DataError(f"--split {split} draws the training pixels: give --train-per-class N or --train-fraction F")
    if block_size is not None and split != "blocks":
        raise DataError("--block-size is for --split blocks")
    if block_size is not None and block_size < 1:
        raise DataError(f"--block-size must be at least 1, got {block_size}")
    if dataset not in ("demo", "custom") and source is None:
        raise DataError(f"--source is needed for {dataset}")
    if like is not None:
        check_like_arguments(dataset, custom, val_fraction, normalise, train_per_class, train_fraction, split)
    elif dataset == "custom":
        custom = custom or {}
        given = [k for k in ("train", "test", "gt") if custom.get(k)]
        if not (custom.get("hsi") and custom.get("aux")) or given not in (["train", "test"], ["gt"]):
            raise DataError("--dataset custom needs --hsi, --aux and either --train and --test (a split) "
                            "or --gt (one ground truth, split with --train-per-class or --train-fraction), "
                            "or --like FILE.h5 for a scene without labels")
    if not os.path.isdir(os.path.dirname(os.path.abspath(out))):
        raise DataError(f"{out}: its folder does not exist")


def scene_maps(scene, class_names, train_per_class, train_fraction, seed, split=None, block_size=None,
               patch_size=11):
    """(train map, test map, their 'where's, how the split was made, the split's attributes) from
    what the scene holds and the split asked for."""
    draw = train_per_class is not None or train_fraction is not None
    if split == "blocks":
        return block_maps(scene, class_names, train_per_class, train_fraction, seed, block_size, patch_size)
    given = dict(split_method="given", block_size=0, buffer_px=0)
    if "train" in scene or "train_index" in scene:
        if draw:
            raise DataError("this scene comes with its own train/test split; --train-per-class and "
                            "--train-fraction are for scenes with one ground truth and no split, or with "
                            "--split blocks (a spatially disjoint split drawn from the union of its maps)")
    if "train" in scene:
        (train, train_where), (test, test_where) = scene["train"], scene["test"]
        return (as_label_map(train, train_where), as_label_map(test, test_where), train_where, test_where,
                "given: the train and test maps as distributed", given)
    gt, gt_where = scene["gt"]
    gt = as_label_map(gt, gt_where)
    if "train_index" in scene:
        train, test = maps_from_index(gt, gt_where, scene["train_index"], scene["test_index"])
        return (train, test, scene["train_index"][1], scene["test_index"][1],
                "given: the train and test pixel indices as distributed", given)
    if not draw:
        raise DataError(f"{gt_where}: this scene comes with one ground truth and no split: choose one with "
                        "--train-per-class N or --train-fraction F (peers use 100 or 150 pixels per class, "
                        "or 0.05 of each class), or --split blocks for a spatially disjoint one")
    train, test = split_ground_truth(gt, gt_where, class_names, train_per_class, train_fraction, seed)
    rule = (f"{train_per_class} pixels per class" if train_per_class
            else f"round({train_fraction} x n) pixels of each class of n (at least 1)")
    return (train, test, f"{gt_where} (training part)", f"{gt_where} (test part)",
            f"drawn: {rule} for training, the rest for testing, stratified, seed {seed}",
            dict(split_method="random", block_size=0, buffer_px=0))


def modalities(scene, dataset, keep_all_channels):
    """((hsi, where), (aux, where), channels kept): the cube, and the second modality's files
    stacked as channels of one (H, W, A) array."""
    hsi, hsi_where = scene["hsi"][0]
    hsi, channels = select_channels(as_channels(hsi, hsi_where, "hyperspectral cube"), dataset, keep_all_channels)
    aux = [(as_channels(a, w, "second modality"), w) for a, w in scene["aux"]]
    stacked = aux[0][0] if len(aux) == 1 else np.concatenate([a for a, _ in aux], axis=-1)
    return (hsi, hsi_where), (stacked, " + ".join(w for _, w in aux)), channels


def write_file(out, attrs, rows, splits, maps, patch_size, stats):
    """Estimate the file's size, check the room for it, write it; returns the estimate. maps None:
    a scene without labels."""
    h, w = rows["hsi"].shape[:2]
    bands = (rows["hsi"].shape[-1], rows["aux"].shape[-1])
    estimate = patchfile.estimate_bytes((h, w), bands, {s: len(c) for s, (c, _) in splits.items()}, patch_size)
    check_room(out, estimate)
    try:
        patchfile.write(out, attrs, rows, splits, maps, patch_size, stats)
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


def scene_georef(scene):
    """The scene's georef (geo.check_grids: every raster on one grid, else refused) and its note."""
    georef = geo.check_grids(scene["georefs"])
    return georef, geo.note(georef)


def prepare(dataset, out, source=None, patch_size=None, val_fraction=0.0, seed=0, custom=None, command="",
            normalise="scene", train_per_class=None, train_fraction=None, keep_all_channels=False,
            split=None, block_size=None, like=None):
    """Read, check, normalise, cut and write; returns {split: per-class counts} ({} for a scene
    without labels, prepared with like=FILE.h5). patch_size: 11 (the authors') by default, the
    --like file's with like; split: None (the scene's own, or a random draw with train_per_class or
    train_fraction), 'random' or 'blocks' (spatially disjoint, block_size x block_size blocks)."""
    t0 = time.time()
    check_arguments(dataset, out, source, patch_size, val_fraction, custom, normalise, train_per_class,
                    train_fraction, split, block_size, like)
    if like is not None:
        return prepare_like(out, like, custom, patch_size, seed, command, t0)
    patch_size = 11 if patch_size is None else patch_size
    scene = load_scene(dataset, source, custom, seed)
    if scene["synthetic"]:
        print(scene["synthetic_note"], flush=True)
    if scene["data_note"]:
        print(scene["data_note"], flush=True)

    # checks, before any work
    georef, georef_note = scene_georef(scene)
    train, test, train_where, test_where, split_text, split_attrs = scene_maps(
        scene, scene["class_names"], train_per_class, train_fraction, seed, split, block_size, patch_size)
    height, width = train.shape
    check_sizes(scene["hsi"] + scene["aux"] + [(train, train_where), (test, test_where)], height, width)
    (hsi, hsi_where), (aux, aux_where), channels = modalities(scene, dataset, keep_all_channels)
    n_classes = check_maps(train, test, train_where, test_where)
    class_names, palette = resolve_classes(scene["class_names"], scene["palette"], n_classes,
                                           dataset, f"{train_where} / {test_where}")
    splits = make_splits(train, test, val_fraction, seed)
    pixels = splits["train"][0] if normalise == "train" else None
    over = "the training pixels" if normalise == "train" else "the scene"
    rows, stats = {}, {}
    for m, x, where, name in (("hsi", hsi, hsi_where, "hsi"), ("aux", aux, aux_where, scene["aux_name"])):
        lo, hi = band_range(x, where, name, pixels)
        rows[m] = Normalised(x, lo, hi, normalise == "train", where, name, over)
        stats[f"{m}_min"], stats[f"{m}_max"] = lo, hi

    attrs = dict(
        dataset=dataset, layout=scene["layout"], modalities=["hsi", scene["aux_name"]],
        class_names=class_names, num_classes=n_classes, palette=palette, patch_size=patch_size,
        normalise=normalise, normalisation=NORMALISATIONS[normalise], split=split_text, hsi_channels=channels,
        synthetic=scene["synthetic"], data_label=scene["data_label"], data_note=scene["data_note"],
        sources=json.dumps({path: sha256(path) for path in scene["files"]}),
        command=command, val_fraction=val_fraction, seed=seed,
        train_per_class=train_per_class or 0, train_fraction=train_fraction or 0.0, **split_attrs,
        **patchfile.georef_attrs(georef, georef_note))
    bands = (hsi.shape[-1], aux.shape[-1])
    estimate = write_file(out, attrs, rows, splits, {"train_map": train, "test_map": test}, patch_size, stats)
    notes = [f"split: {split_text}", f"normalisation: {NORMALISATIONS[normalise]}",
             f"hsi channels kept: {channels}", f"georeferencing: {georef_note}"]
    print_summary(PRESETS[dataset]["title"], scene["layout"], (height, width), bands, scene["aux_name"],
                  class_names, splits, notes, out, time.time() - t0, estimate)
    return {s: np.bincount(labels, minlength=n_classes) for s, (_, labels) in splits.items()}


# -----------------------------------------------------------------------------
# A scene without labels, prepared like a training file (--like)

def check_like_arguments(dataset, custom, val_fraction, normalise, train_per_class, train_fraction, split):
    custom = custom or {}
    if dataset != "custom" or not (custom.get("hsi") and custom.get("aux")):
        raise DataError("--like prepares a scene without labels: use it with --dataset custom --hsi FILE --aux FILE")
    given = [k for k in ("train", "test", "gt") if custom.get(k)]
    if given:
        raise DataError(f"--like prepares a scene without labels; --{given[0]} gives labels: leave it out")
    if train_per_class is not None or train_fraction is not None or split is not None or val_fraction:
        raise DataError("--like prepares a scene without labels: it takes no split options "
                        "(--train-per-class, --train-fraction, --split, --val-fraction)")
    if normalise != "scene":
        raise DataError("--like normalises with the --like file's statistics; --normalise does not apply")


def read_like(like):
    """What a scene without labels takes from the training file: its statistics, patch size, class
    list, palette, modality names and normalisation; refuses a file of another format version or one
    made before the statistics were stored."""
    try:
        with patchfile.PatchFile(like) as pf:
            stats, a = pf.stats, pf.attrs
            info = dict(path=os.path.abspath(like), patch_size=pf.patch_size, bands=pf.bands,
                        class_names=pf.class_names, palette=np.asarray(pf.palette, np.int32),
                        modalities=list(a.get("modalities", ["hsi", "aux"])), normalisation=a["normalisation"],
                        dataset=a["dataset"], synthetic=bool(a.get("synthetic", False)))
    except patchfile.PatchFileError as e:
        raise DataError(f"--like {like}: {e}") from None
    if stats is None:
        raise DataError(f"--like {like}: made before patch files stored their normalisation statistics "
                        f"(normalisation/hsi_min ...); prepare it again with this DataPrepare.py: "
                        f"{a.get('command') or 'python DataPrepare.py ...'}")
    info["stats"] = stats
    return info


def prepare_like(out, like, custom, patch_size, seed, command, t0):
    """A co-registered scene without ground truth, normalised with the --like file's per-band
    statistics (values outside its range clipped to [0, 1]), with its patch size, class list and
    palette: a file to map, not to train on or score."""
    ref = read_like(like)
    if patch_size is not None and patch_size != ref["patch_size"]:
        raise DataError(f"--patch-size {patch_size} does not match the --like file {like}, patch size "
                        f"{ref['patch_size']}")
    if custom.get("class_names") and list(custom["class_names"]) != ref["class_names"]:
        raise DataError(f"--class-names {','.join(custom['class_names'])} do not match the --like file {like}, "
                        f"classes {','.join(ref['class_names'])}")
    scene = load_scene("custom", None, dict(custom, train=None, test=None, gt=None), seed)
    georef, georef_note = scene_georef(scene)
    (hsi, hsi_where), (aux, aux_where), channels = modalities(scene, "custom", False)
    check_sizes([(hsi, hsi_where), (aux, aux_where)], *hsi.shape[:2])
    for m, x, where, what in (("hsi", hsi, hsi_where, "band(s)"), ("aux", aux, aux_where, "channel(s)")):
        if x.shape[-1] != ref["bands"][m]:
            raise DataError(f"{where}: the {ref['modalities'][MODALITY_INDEX[m]]} has {x.shape[-1]} {what}, the --like "
                            f"file {like} has {ref['bands'][m]}; the scene must have the training file's bands")
    over = f"the training file {like}"
    rows = {}
    for m, x, where, name in (("hsi", hsi, hsi_where, "hsi"), ("aux", aux, aux_where, ref["modalities"][1])):
        band_range(x, where, name)  # refuses NaN/Inf
        rows[m] = Normalised(x, ref["stats"][f"{m}_min"], ref["stats"][f"{m}_max"], True, where, name, over)
    normalisation = (f"min-max per band with the statistics of the training file {ref['path']} (there: "
                     f"{ref['normalisation']}); values outside its range clipped to [0, 1]")
    attrs = dict(
        dataset="custom", layout="files", modalities=ref["modalities"], class_names=ref["class_names"],
        num_classes=len(ref["class_names"]), palette=ref["palette"], patch_size=ref["patch_size"],
        normalise="like", normalisation=normalisation,
        split=f"none: a scene without labels, prepared with the statistics of {ref['path']}",
        hsi_channels=channels, synthetic=scene["synthetic"],
        sources=json.dumps({path: sha256(path) for path in scene["files"]}), command=command,
        val_fraction=0.0, seed=seed, train_per_class=0, train_fraction=0.0, split_method="none",
        block_size=0, buffer_px=0, like=ref["path"], like_sha256=sha256(like),
        **patchfile.georef_attrs(georef, georef_note))
    estimate = write_file(out, attrs, rows, {}, None, ref["patch_size"], ref["stats"])
    h, w = hsi.shape[:2]
    print(f"custom scene without labels, like {like}: {h} x {w} pixels; hsi {hsi.shape[-1]} bands, "
          f"{ref['modalities'][1]} {aux.shape[-1]} channel(s)")
    for note in (f"normalisation: {normalisation}", f"patch size: {ref['patch_size']}",
                 f"georeferencing: {georef_note}"):
        print(f"  {note}")
    print(f"wrote {out} ({os.path.getsize(out) / 1e9:.2f} GB, estimated {estimate / 1e9:.2f} GB) in "
          f"{time.time() - t0:.1f} s")
    return {}


MODALITY_INDEX = {"hsi": 0, "aux": 1}


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
    parser.add_argument("--patch-size", type=int,
                        help="odd side P of the square patches in pixels (default 11, the authors'; with --like, "
                             "the --like file's)")
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
    parser.add_argument("--split", choices=SPLIT_METHODS,
                        help="how --train-per-class/--train-fraction draw the training pixels: 'random' pixels "
                             "(the default for scenes with one ground truth), or 'blocks': whole B x B blocks "
                             "to training or test, test pixels within 2 x (P // 2) of a training pixel dropped "
                             "(spatially disjoint; on a scene distributed with a split, drawn from the union "
                             "of its maps: not the paper's split)")
    parser.add_argument("--block-size", type=int, metavar="B",
                        help=f"side of the --split blocks blocks in pixels (default {BLOCK_SIZE})")
    parser.add_argument("--like", metavar="TRAIN.h5",
                        help="prepare a co-registered scene WITHOUT labels (--dataset custom --hsi --aux) with "
                             "the normalisation statistics, patch size, classes and palette of this patch file, "
                             "values outside its range clipped to [0, 1]: a file to map, with no splits")
    parser.add_argument("--keep-all-channels", action="store_true",
                        help="houston2018: keep all the cube's channels, not the contest's 48 bands")
    parser.add_argument("--seed", type=int, default=0,
                        help="seed of the drawn train/test and validation splits and of the demo scene")
    group = parser.add_argument_group(
        "custom scenes (--dataset custom); KEY may be left out when the file holds one array; a KEY "
        "with dots reads a MATLAB struct field, e.g. hsi.Data or hsi.Lidar.z (a struct array's "
        "elements stacked as channels) or hsi.Lidar(1).z (its first element)")
    group.add_argument("--hsi", metavar="FILE[:KEY]", help="hyperspectral cube (H, W, B); a GeoTIFF or ENVI raster "
                                                           "(.img or its .hdr) is read with its georeferencing")
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
                    keep_all_channels=args.keep_all_channels, split=args.split, block_size=args.block_size,
                    like=args.like)
        except DataError as e:
            sys.exit(f"DataPrepare.py: error: {e}")


if __name__ == "__main__":
    main()
