"""The registry of data sets, as data: the file layouts scenes are distributed in (LAYOUTS) and
the presets (PRESETS: each data set's name, classes, colours and the layouts it is found in);
finding a preset's layout under --source, and reading a scene (load_scene, through readers.py).

To add a scene: give it a preset here, and a layout if its files are laid out in a new way.

It imports readers.py, geo.py (the rasters' georeferencing) and synthetic.py (the demo scene),
never DataPrepare.py.
"""
import os

import geo
import readers
import synthetic
from readers import DataError, read_array, split_spec

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
    # the small real Houston 2018 crop as ShoupingShan/Data_fusion_HSI_LiDAR commits it: PCA-5 of the
    # HSI with the ground truth in one file, the 8-bit DSM (and the same ground truth) in another
    "pca5-dsm": {
        "hsi": [("DATA_pca_5.mat", ["HSI_pca"], True)],
        "aux": [("DATA_DSM.mat", ["DSM_300"], True)],
        "gt": [("DATA_pca_5.mat", ["GT_pca"], True)],
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
    # Real pixels, but derived and relabelled: never to be set beside a published Houston 2018 figure.
    # Its source names neither its 12 classes nor where the 300 x 300 crop lies.
    "houston2018-crop": dict(
        title="Houston 2018 crop (REAL pixels, derived)", aux="dsm", prefix="houston", folders=["houston2018-crop"],
        layouts=["pca5-dsm"], class_names=[f"class {c}" for c in range(1, 13)], palette=None,
        data_label="REAL pixels, derived: PCA-5, 8-bit DSM, relabelled; not a benchmark",
        data_note="REAL pixels, derived: 300 x 300 crop of the DFC 2018 campus, the first 5 principal components "
                  "of the 48-band HSI, its DSM rescaled to 8 bits, 12 classes of the source's own relabelling; "
                  "not one of the paper's benchmarks, not comparable with any published Houston 2018 figure"),
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
        # the scene, its classes and colours are synthetic.py's
        class_names=synthetic.DEMO_CLASS_NAMES, palette=synthetic.DEMO_PALETTE),
    "custom": dict(
        title="custom scene", aux="aux", layouts=["files"], class_names=None, palette=None),
}


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


# -----------------------------------------------------------------------------
# Reading a scene

def load_scene(dataset, source=None, custom=None, seed=0):
    """Read a scene's raw arrays. Returns a dict with hsi, aux (lists of (array, where)), the split
    as train and test maps, or gt with train_index and test_index, or gt alone ((array, where)
    each), and layout, files, aux_name, class_names, palette, synthetic and, for a synthetic scene,
    synthetic_note (what it is); data_label and data_note (a preset's short and full word on real
    but derived pixels, or ""); georefs: [(role, path, georef or None)] for every file read
    (geo.read_georef: a raster's CRS and transform). A .mat file holding readers.STAND_IN_KEY (a
    synthetic stand-in written by synthetic.py) makes the scene synthetic, whatever preset reads it."""
    preset = PRESETS[dataset]
    scene = dict(aux_name=preset["aux"], class_names=preset["class_names"],
                 palette=preset["palette"], synthetic=False, files=[], data_label=preset.get("data_label", ""),
                 data_note=preset.get("data_note", ""))
    if dataset == "demo":
        demo = synthetic.make_demo_scene(seed)
        note = "SYNTHETIC demo scene made by synthetic.make_demo_scene: not real data, for trying the pipeline only"
        return dict(scene, layout="synthetic", synthetic=True, synthetic_note=note, georefs=[],
                    hsi=[(demo["hsi"], "demo hsi")], aux=[(demo["aux"], "demo aux")],
                    train=(demo["train"], "demo train map"), test=(demo["test"], "demo test map"))
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
    readers.load_struct_v5.cache_clear()
    scene["files"] = sorted({os.path.abspath(f) for entries in files.values() for path, _ in entries
                             for f in readers.companion_files(path)})
    scene["georefs"] = [(role, path, geo.read_georef(path)) for role, entries in files.items() for path, _ in entries]
    for path in scene["files"]:
        note = readers.read_text(path, readers.STAND_IN_KEY)
        if note is not None:
            scene.update(synthetic=True, synthetic_note=f"SYNTHETIC scene ({path}, key '{readers.STAND_IN_KEY}'): {note}")
    return dict(scene, layout=layout, hsi=read["hsi"], aux=read["aux"],
                **{role: read[role][0] for role in ("train", "test", "gt", "train_index", "test_index") if role in read})

