"""The public copies of the scenes, on small files written here with their real keys, dtypes,
struct shapes and index conventions: DCMNet's folders (Houston 2018, Berlin, Augsburg), MUUFL's
struct file, Trento as tyust-dayu redistributes it, MATLAB struct paths in custom scenes; the
splits drawn from one ground truth; disks that fill up."""
import os
import subprocess
import sys

import h5py
import numpy as np
import pytest
import scipy.io as sio

import DataPrepare as dp
import readers
import synthetic
from conftest import reference_patches
from patchfile import PatchFile

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def read(path):
    with PatchFile(path) as pf:
        return dict(attrs=pf.attrs, train=pf.load("train"), test_coord=pf.coords("test"), test_label=pf.labels("test"),
                    scene={m: pf.f["scene"][m][()] for m in ("hsi", "aux")})


def normalised(x):
    x = np.asarray(x, np.float64)
    lo, hi = x.min((0, 1)), x.max((0, 1))
    return ((x - lo) / (hi - lo)).astype(np.float32)


def sorted_rows(coords):
    return coords[np.lexsort((coords[:, 1], coords[:, 0]))]


# -----------------------------------------------------------------------------
# DCMNet's copies

def dcmnet(name, parent, **size):
    """A small synthetic DCMNet copy, and its arrays as written."""
    folder = synthetic.make_dcmnet(name, str(parent), **size)
    p, aux = synthetic.SCENES[name]["prefix"], synthetic.SCENES[name]["aux"]
    load = lambda f, k: sio.loadmat(os.path.join(folder, f))[k]  # noqa: E731
    index = sio.loadmat(os.path.join(folder, f"{p}_index.mat"))
    return folder, dict(hsi=load(f"{p}_hsi.mat", f"{p}_hsi"), aux=load(f"{p}_{aux}.mat", f"{p}_{aux}"),
                        gt=load(f"{p}_gt.mat", f"{p}_gt"), train=index[f"{p}_train"], test=index[f"{p}_test"])


def test_dcmnet_houston2018_from_its_parent_folder_beside_houston2013(tmp_path):
    folder, a = dcmnet("houston2018", tmp_path, shape=(60, 80), train=60, test=2000)
    assert a["hsi"].dtype == np.uint16 and a["hsi"].shape == (60, 80, 50) and a["aux"].shape == (60, 80)
    assert a["train"].shape == (60, 2) and a["train"].dtype.kind == "i"
    # DCMNet's Houston 2013 copy uses the same file names: the preset must take Houston2018/
    other = tmp_path / "Houston2013"
    synthetic.write_dcmnet(str(other), "houston", "lidar", np.zeros((5, 5, 3), np.uint16), np.zeros((5, 5)),
                           np.ones((5, 5), np.uint8), np.array([[0, 0]]), np.array([[1, 1]]))
    out = tmp_path / "h18.h5"
    dp.prepare("houston2018", str(out), source=str(tmp_path))
    d = read(out)
    assert d["attrs"]["layout"] == "dcmnet" and d["attrs"]["hsi_channels"].startswith("1-48 of 50")
    assert d["train"]["hsi"].shape == (60, 11, 11, 48)  # the contest's 48 bands
    np.testing.assert_array_equal(d["train"]["coord"], sorted_rows(a["train"]))  # 0-based (row, col)
    np.testing.assert_array_equal(d["test_coord"], sorted_rows(a["test"]))
    rows, cols = d["test_coord"].T
    np.testing.assert_array_equal(d["test_label"] + 1, a["gt"][rows, cols])
    np.testing.assert_allclose(d["scene"]["hsi"], normalised(a["hsi"][..., :48]), atol=1e-6)
    np.testing.assert_array_equal(d["train"]["aux"], reference_patches(d["scene"]["aux"], d["train"]["coord"], 11))
    # the folder itself, and all 50 channels on request
    dp.prepare("houston2018", str(out), source=folder, keep_all_channels=True)
    d = read(out)
    assert d["train"]["hsi"].shape[-1] == 50 and d["attrs"]["hsi_channels"].startswith("all 50")


@pytest.mark.parametrize("name, classes, aux_bands", [("berlin", 8, 4), ("augsburg", 7, 4)])
def test_dcmnet_berlin_and_augsburg(tmp_path, name, classes, aux_bands):
    folder, a = dcmnet(name, tmp_path, shape=(30, 20), train=classes * 4, test=300)
    # MATLAB saves indices as doubles: whole-number floats are indices too
    p = synthetic.SCENES[name]["prefix"]
    sio.savemat(os.path.join(folder, f"{p}_index.mat"), {f"{p}_train": a["train"].astype(np.float64),
                                                          f"{p}_test": a["test"].astype(np.float64)})
    out = tmp_path / f"{name}.h5"
    counts = dp.prepare(name, str(out), source=folder)
    d = read(out)
    assert d["attrs"]["modalities"] == ["hsi", "sar"] and d["attrs"]["num_classes"] == classes
    assert d["train"]["aux"].shape[-1] == aux_bands and counts["train"].sum() == classes * 4
    assert counts["test"].sum() == 300
    np.testing.assert_allclose(d["scene"]["aux"], normalised(a["aux"]), atol=1e-6)


def test_bad_index_arrays(tmp_path):
    folder, a = dcmnet("augsburg", tmp_path, shape=(30, 20), train=28, test=100)
    path = os.path.join(folder, "augsburg_index.mat")
    n_train, n_test = len(a["train"]), len(a["test"])

    def with_index(train, test):
        sio.savemat(path, {"augsburg_train": train, "augsburg_test": test})
        dp.prepare("augsburg", str(tmp_path / "o.h5"), source=folder)

    outside = a["train"].copy()
    outside[3] = [30, 5]
    with pytest.raises(readers.DataError, match=rf"augsburg_index\.mat key 'augsburg_train' shape \({n_train}, 2\): 1 index\(es\) "
                                           r"outside the 30 x 20 scene, the first \(row 30, col 5\); indices are 0-based"):
        with_index(outside, a["test"])
    with pytest.raises(readers.DataError, match=r"these look 1-based \(MATLAB's\): subtract 1"):
        with_index(a["train"] + 1, a["test"])
    shared = np.concatenate([a["test"], a["train"][:2]])
    with pytest.raises(readers.DataError, match=r"augsburg_train'.*augsburg_test': the training and test indices share 2 "
                                           r"pixel\(s\), the first"):
        with_index(a["train"], shared)
    unlabelled = np.argwhere(a["gt"] == 0)[:1]
    with pytest.raises(readers.DataError, match=rf"augsburg_test': 1 of its {n_test + 1} pixels are unlabelled in .*augsburg_gt"):
        with_index(a["train"], np.concatenate([a["test"], unlabelled]))
    with pytest.raises(readers.DataError, match=r"an index array must be \(N, 2\) 0-based \(row, col\) pixel indices, got shape \(5, 3\)"):
        with_index(np.zeros((5, 3)), a["test"])
    assert sorted(os.listdir(tmp_path)) == ["Augsburg"]  # nothing half-written


# -----------------------------------------------------------------------------
# MUUFL as GatorSense publishes it, and MATLAB structs in custom scenes

MUUFL_NAMES = ["trees", "mostly grass", "mixed ground surface", "dirt and sand", "road", "water",
               "building shadow", "buildings", "sidewalk", "yellow curb", "cloth panels"]


def muufl_arrays(h=26, w=22, seed=0):
    rng = np.random.default_rng(seed)
    labels = np.full((h, w), -1, np.int16)  # -1 unlabelled, 1..11
    labels[:, :20] = (np.arange(h * 20).reshape(h, 20) % 11 + 1)[:, :20]
    labels[rng.random((h, w)) < 0.2] = -1
    return dict(data=rng.uniform(0, 1, (h, w, 64)).astype(np.float32),
                z=[rng.normal(10 + 5 * i, 3, (h, w, 2)) for i in range(2)], labels=labels)


def write_muufl_v5(path, arrays):
    """The struct `hsi` of muufl_gulfport_campus_1_hsi_220_label.mat (MATLAB v5 as scipy writes it)."""
    h, w = arrays["labels"].shape
    lidar = np.zeros((1, 2), dtype=[("x", "O"), ("y", "O"), ("z", "O"), ("info", "O")])  # a 1 x 2 struct array
    for i in range(2):
        lidar[0, i] = (np.arange(w, dtype=float), np.arange(h, dtype=float), arrays["z"][i], {"units": "m"})
    materials = np.empty((1, 11), dtype=object)
    materials[0, :] = MUUFL_NAMES
    sio.savemat(path, {"hsi": {
        "info": {"samples": w, "lines": h, "bands": 64, "wavelength": np.linspace(375, 1050, 64)},
        "Data": arrays["data"], "Lidar": lidar, "RGB": np.zeros((h, w, 3), np.uint8),
        "sceneLabels": {"Materials_Type": materials, "labels": arrays["labels"]}}})


def write_muufl_v73(path, arrays):
    """The same struct as MATLAB -v7.3 writes it: groups for structs, and a struct array's fields as
    datasets of references, one per element, into '#refs#'; arrays column-major."""
    with h5py.File(path, "w", userblock_size=512) as f:
        hsi = f.create_group("hsi")
        hsi["Data"] = arrays["data"].T
        lidar, refs = hsi.create_group("Lidar"), f.create_group("#refs#")
        for field in ("z", "x"):
            ds = lidar.create_dataset(field, (2, 1), dtype=h5py.ref_dtype)
            for i in range(2):
                value = arrays["z"][i] if field == "z" else np.arange(arrays["labels"].shape[1], dtype=float)
                refs[f"{field}{i}"] = np.asarray(value).T
                ds[i, 0] = refs[f"{field}{i}"].ref
        scene_labels = hsi.create_group("sceneLabels")
        scene_labels["labels"] = arrays["labels"].astype(np.float64).T


def write_muufl_v73_cell(path, arrays):
    """As write_muufl_v73, with Lidar a 1 x 2 cell array of structs (as GatorSense's own MATLAB code
    indexes it, hsi.Lidar{i}.z): one dataset of references, each to a struct's group."""
    with h5py.File(path, "w", userblock_size=512) as f:
        hsi, refs = f.create_group("hsi"), f.create_group("#refs#")
        hsi["Data"] = arrays["data"].T
        cell = hsi.create_dataset("Lidar", (2, 1), dtype=h5py.ref_dtype)
        for i in range(2):
            element = refs.create_group(f"lidar{i}")
            element["z"], element["x"] = arrays["z"][i].T, np.arange(arrays["labels"].shape[1], dtype=float)
            cell[i, 0] = element.ref
        hsi.create_group("sceneLabels")["labels"] = arrays["labels"].astype(np.float64).T


def test_muufl_struct_file_with_a_drawn_split(tmp_path):
    arrays = muufl_arrays()
    folder = tmp_path / "MUUFLGulfport-0.1" / "MUUFLGulfportSceneLabels"
    folder.mkdir(parents=True)
    write_muufl_v5(folder / "muufl_gulfport_campus_1_hsi_220_label.mat", arrays)
    with pytest.raises(readers.DataError, match=r"hsi\.sceneLabels\.labels.*one ground truth and no split: choose one "
                                           r"with --train-per-class N or --train-fraction F"):
        dp.prepare("muufl", str(tmp_path / "o.h5"), source=str(folder.parent))
    out = tmp_path / "m.h5"
    counts = dp.prepare("muufl", str(out), source=str(folder.parent), train_per_class=5, seed=3)
    d = read(out)
    labelled = arrays["labels"] > 0
    assert counts["train"].tolist() == [5] * 11  # stratified
    assert counts["train"].sum() + counts["test"].sum() == labelled.sum()  # -1 is unlabelled
    np.testing.assert_allclose(d["scene"]["aux"], normalised(arrays["z"][0]), atol=1e-6)  # Lidar(1).z, 2 rasters
    assert d["attrs"]["split"].startswith("drawn: 5 pixels per class") and "seed 3" in d["attrs"]["split"]
    assert d["attrs"]["seed"] == 3 and d["attrs"]["train_per_class"] == 5
    # the file itself as --source; the same seed draws the same split, another seed another
    dp.prepare("muufl", str(tmp_path / "again.h5"), source=str(folder / "muufl_gulfport_campus_1_hsi_220_label.mat"),
               train_per_class=5, seed=3)
    np.testing.assert_array_equal(read(tmp_path / "again.h5")["train"]["coord"], d["train"]["coord"])
    dp.prepare("muufl", str(tmp_path / "other.h5"), source=str(folder), train_per_class=5, seed=4)
    assert not np.array_equal(read(tmp_path / "other.h5")["train"]["coord"], d["train"]["coord"])


@pytest.mark.parametrize("writer", [write_muufl_v5, write_muufl_v73, write_muufl_v73_cell])
def test_custom_reads_struct_fields_and_struct_arrays(tmp_path, writer):
    arrays = muufl_arrays()
    path = str(tmp_path / "scene.mat")
    writer(path, arrays)
    custom = dict(hsi=f"{path}:hsi.Data", aux=f"{path}:hsi.Lidar.z", gt=f"{path}:hsi.sceneLabels.labels")
    dp.prepare("custom", str(tmp_path / "a.h5"), custom=custom, train_fraction=0.2)
    d = read(tmp_path / "a.h5")
    both = np.concatenate(arrays["z"], -1)  # the struct array's two elements, stacked as channels
    np.testing.assert_allclose(d["scene"]["aux"], normalised(both), atol=1e-6)
    np.testing.assert_allclose(d["scene"]["hsi"], normalised(arrays["data"]), atol=1e-6)
    dp.prepare("custom", str(tmp_path / "b.h5"), custom=dict(custom, aux=f"{path}:hsi.Lidar(2).z"), train_fraction=0.2)
    np.testing.assert_allclose(read(tmp_path / "b.h5")["scene"]["aux"], normalised(arrays["z"][1]), atol=1e-6)
    with pytest.raises(readers.DataError, match=r"scene\.mat: 'hsi\.Lidar' has no field 'zz'; its fields are .*x"):
        dp.prepare("custom", str(tmp_path / "c.h5"), custom=dict(custom, aux=f"{path}:hsi.Lidar.zz"), train_fraction=0.2)
    with pytest.raises(readers.DataError, match=r"'hsi\.Lidar' has no element 3 \(it holds 2"):
        dp.prepare("custom", str(tmp_path / "c.h5"), custom=dict(custom, aux=f"{path}:hsi.Lidar(3).z"), train_fraction=0.2)
    with pytest.raises(readers.DataError, match=r"scene\.mat: 'hsi' has no field 'lidar'; its fields are .*Lidar"):
        dp.prepare("custom", str(tmp_path / "c.h5"), custom=dict(custom, aux=f"{path}:hsi.lidar.z"), train_fraction=0.2)
    with pytest.raises(readers.DataError, match=r"scene\.mat: no key 'HSI'; the file holds 'hsi' struct"):
        dp.prepare("custom", str(tmp_path / "c.h5"), custom=dict(custom, hsi=f"{path}:HSI.Data"), train_fraction=0.2)


# -----------------------------------------------------------------------------
# Trento as tyust-dayu/Trento redistributes it

def test_trento_tyust_dayu_with_a_fraction_per_class(tmp_path):
    rng = np.random.default_rng(0)
    h, w = 30, 40
    gt = np.zeros((h, w), np.uint8)
    gt[2:28, 2:38] = np.repeat(np.arange(1, 7), 26 * 36 // 6 + 1)[:26 * 36].reshape(26, 36)
    folder = tmp_path / "Trento-b4afc449ce5d6936ddc04fe267d86f9f35536afd"
    folder.mkdir()
    sio.savemat(folder / "Italy_hsi.mat", {"data": rng.uniform(0, 1, (h, w, 63))})
    sio.savemat(folder / "Italy_lidar.mat", {"data": rng.normal(200, 5, (h, w, 2))})
    sio.savemat(folder / "allgrd.mat", {"mask_test": gt})
    out = tmp_path / "t.h5"
    counts = dp.prepare("trento", str(out), source=str(tmp_path), train_fraction=0.05)
    per_class = np.bincount(gt.ravel(), minlength=7)[1:]
    assert counts["train"].tolist() == [max(1, round(0.05 * n)) for n in per_class]
    assert (counts["train"] + counts["test"]).tolist() == per_class.tolist()
    d = read(out)
    assert d["attrs"]["layout"] == "trento-tyust" and d["train"]["aux"].shape[-1] == 2
    assert d["attrs"]["train_fraction"] == 0.05


def test_split_options_are_checked(tmp_path):
    gt = np.zeros((20, 30), np.int16)
    gt[:5, :] = 1
    gt[10, :3] = 2  # class 2 has 3 pixels
    np.save(tmp_path / "gt.npy", gt)
    np.save(tmp_path / "hsi.npy", np.random.default_rng(0).random((20, 30, 4)).astype(np.float32))
    np.save(tmp_path / "aux.npy", np.random.default_rng(1).random((20, 30)).astype(np.float32))
    custom = {k: str(tmp_path / f"{k}.npy") for k in ("hsi", "aux", "gt")}
    with pytest.raises(readers.DataError, match=r"gt\.npy: class 2 \(class 2\) has 3 labelled pixel\(s\): --train-per-class 3 "
                                           r"takes 3 for training and leaves none for testing"):
        dp.prepare("custom", str(tmp_path / "o.h5"), custom=custom, train_per_class=3)
    counts = dp.prepare("custom", str(tmp_path / "o.h5"), custom=custom, train_per_class=2)
    assert counts["train"].tolist() == [2, 2] and counts["test"].tolist() == [148, 1]
    with pytest.raises(readers.DataError, match="give --train-per-class or --train-fraction, not both"):
        dp.prepare("custom", str(tmp_path / "o.h5"), custom=custom, train_per_class=2, train_fraction=0.1)
    with pytest.raises(readers.DataError, match="comes with its own train/test split"):
        dp.prepare("demo", str(tmp_path / "o.h5"), train_per_class=2)
    with pytest.raises(readers.DataError, match="either --train and --test .* or --gt"):
        dp.prepare("custom", str(tmp_path / "o.h5"), custom=dict(custom, train=custom["gt"]), train_per_class=2)


# -----------------------------------------------------------------------------
# disks that fill up

def test_not_enough_room_is_refused_before_writing(tmp_path, monkeypatch):
    import shutil
    usage = shutil.disk_usage(tmp_path)
    monkeypatch.setattr(shutil, "disk_usage", lambda path: usage._replace(free=100_000))
    with pytest.raises(readers.DataError, match=r"o\.h5: the patch file needs about \d\.\d MB but .* has 0\.1 MB free"):
        dp.prepare("demo", str(tmp_path / "o.h5"))
    assert os.listdir(tmp_path) == []


def test_file_size_limit_refused_and_a_failing_write_ends_in_one_line(tmp_path):
    """A process limited to 1 MB files (ulimit -f): refused from the estimate; and with the estimate
    bypassed, the write itself fails half-way: one clear line, nothing left behind."""
    out = str(tmp_path / "o.h5")
    limit = "import resource; resource.setrlimit(resource.RLIMIT_FSIZE, (1 << 20, resource.getrlimit(resource.RLIMIT_FSIZE)[1]))"
    run = lambda code: subprocess.run([sys.executable, "-c", f"{limit}; {code}"], cwd=ROOT,  # noqa: E731
                                      capture_output=True, text=True, timeout=300)
    proc = run(f"import DataPrepare; DataPrepare.main(['--dataset', 'demo', '--out', {out!r}])")
    assert proc.returncode == 1, proc.stderr
    assert proc.stderr.strip().endswith("may write files of at most 1.0 MB (ulimit -f); raise the limit")
    proc = run("import DataPrepare; DataPrepare.check_room = lambda *a: None; "
               f"DataPrepare.main(['--dataset', 'demo', '--out', {out!r}])")
    assert proc.returncode == 1, proc.stderr
    last = proc.stderr.strip().splitlines()[-1]
    assert last.startswith("DataPrepare.py: error: ") and "writing the patch file failed (File too large)" in last
    assert "Traceback" not in proc.stderr and os.listdir(tmp_path) == []
