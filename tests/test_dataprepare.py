"""Tests of DataPrepare.py and the modules it reads through (readers.py, datasets.py, splits.py,
synthetic.py): the presets on the real Houston 2013 maps, every public layout on small files written
with the real keys, dtypes, struct shapes and index conventions, the splits drawn from one ground
truth, the readers, the file written, the Houston 2013 stand-in built from the real pieces, and one
test per bad input. (The cutting itself is tested in test_patchfile.py.)"""
import json
import os
import re
import shutil

import h5py
import numpy as np
import pytest
import rasterio
import scipy.io as sio
from rasterio.transform import Affine
from rasterio.crs import CRS

import DataPrepare as dp
import geo
import patchfile
import readers
import splits
import synthetic
from conftest import CROP_COUNTS, CROP_SHA256, HOUSTON_TEST_COUNTS, HOUSTON_TRAIN_COUNTS, reference_patches
from patchfile import PatchFile, PatchFileError

H, W = 349, 1905  # Houston 2013


# -----------------------------------------------------------------------------
# helpers

@pytest.fixture(scope="module")
def real_maps(houston_dir):
    train = sio.loadmat(houston_dir / "TRLabel.mat")["TRLabel"]
    test = sio.loadmat(houston_dir / "TSLabel.mat")["TSLabel"]
    return train, test


def small_cube(shape, seed=0):
    return np.random.default_rng(seed).uniform(0, 5, shape).astype(np.float32)


def read_h5(path):
    """Everything in a prepared file, as plain numpy arrays and attributes."""
    with h5py.File(path, "r") as f:
        data = {f"{g}/{k}": f[g][k][()] for g in f for k in f[g]}
        data["attrs"] = dict(f.attrs)
    return data


def assert_houston_counts(out):
    with h5py.File(out, "r") as f:
        assert np.bincount(f["train/label"][()], minlength=15).tolist() == HOUSTON_TRAIN_COUNTS
        assert np.bincount(f["test/label"][()], minlength=15).tolist() == HOUSTON_TEST_COUNTS
        assert f["train/hsi"].shape[:3] == (2832, 11, 11) and f["test/coord"].shape == (12197, 2)
        # every patch's label is its centre pixel's class in the map
        for split in ("train", "test"):
            rows, cols = f[f"{split}/coord"][()].T
            assert np.array_equal(f[f"{split}/label"][()] + 1, f[f"scene/{split}_map"][()][rows, cols])
    return read_h5(out)


def write_v73(path, arrays):
    """A .mat file the way MATLAB -v7.3 writes it: HDF5 behind a 512-byte header, column-major."""
    with h5py.File(path, "w", userblock_size=512) as f:
        for k, v in arrays.items():
            f[k] = np.asarray(v).transpose()  # MATLAB's (H, W, B) is (B, W, H) to HDF5
    text = b"MATLAB 7.3 MAT-file, Platform: GLNXA64, Created on: Mon Jan  1 00:00:00 2024 HDF5 schema 1.00 ."
    with open(path, "r+b") as f:
        f.write(text.ljust(116) + b"\0" * 8 + b"\x00\x02IM")


def write_tif(path, arr, crs=None, transform=None, driver="GTiff", **options):
    """An (H, W) or (H, W, B) array as a raster (rasterio: bands first), with a CRS and transform if given."""
    bands = arr[None] if arr.ndim == 2 else np.moveaxis(arr, -1, 0)
    profile = dict(driver=driver, width=bands.shape[2], height=bands.shape[1], count=bands.shape[0],
                   dtype=bands.dtype, **options)
    if crs is not None:
        profile.update(crs=crs, transform=transform)
    with readers.quiet_rasterio(), rasterio.open(path, "w", **profile) as ds:  # no transform: rasterio warns
        ds.write(bands)


def custom_scene(tmp_path, hsi=None, aux=None, train=None, test=None):
    """A small custom scene in .npy files: 20 x 30 pixels, 4 bands, 3 classes, then overrides."""
    rng = np.random.default_rng(1)
    if hsi is None:
        hsi = small_cube((20, 30, 4))
    if aux is None:
        aux = rng.normal(size=(20, 30)).astype(np.float32)
    if train is None:
        train = np.zeros((20, 30), np.uint8)
        train[2:5, 2:5], train[10:12, 10:14], train[15:18, 20:22] = 1, 2, 3
    if test is None:
        test = np.zeros((20, 30), np.uint8)
        test[6:9, 2:5], test[13:14, 10:14], test[15:18, 25:28] = 1, 2, 3
    specs = {}
    for name, arr in dict(hsi=hsi, aux=aux, train=train, test=test).items():
        np.save(tmp_path / f"{name}.npy", arr)
        specs[name] = str(tmp_path / f"{name}.npy")
    return specs


def run_custom(tmp_path, **arrays):
    specs = custom_scene(tmp_path, **arrays)
    out = tmp_path / "out.h5"
    counts = dp.prepare("custom", str(out), custom=specs, patch_size=5)
    return out, counts


# -----------------------------------------------------------------------------
# the presets on the real Houston 2013 maps

def test_houston_four_file_layout_with_real_maps(houston_dir, tmp_path):
    for name in ("TRLabel.mat", "TSLabel.mat"):  # the real maps (float64 holding whole numbers)
        os.symlink(houston_dir / name, tmp_path / name)
    cube = small_cube((H, W, 3))
    sio.savemat(tmp_path / "HSI.mat", {"HSI": cube})
    sio.savemat(tmp_path / "LiDAR.mat", {"LiDAR": small_cube((H, W), seed=1)})
    out = tmp_path / "h.h5"
    dp.prepare("houston2013", str(out), source=str(tmp_path))
    data = assert_houston_counts(out)
    assert data["attrs"]["layout"] == "four-file"
    assert data["train/aux"].shape == (2832, 11, 11, 1)  # a 2-D LiDAR raster is one channel
    assert data["train/hsi"].shape == (2832, 11, 11, 3)  # the band count comes from the file
    sources = json.loads(data["attrs"]["sources"])
    assert len(sources) == 4 and all(len(v) == 64 for v in sources.values())


def test_houston_contest_geotiffs_with_real_maps(houston_dir, tmp_path, capsys):
    """The real sample maps (danfenghong/ISPRS_S2FL's GeoTIFFs) carry no georeferencing: no CRS, the
    identity transform. The CASI and LiDAR rasters here do (UTM 15N, 2.5 m, as the contest's do;
    the origin is made up): the file records theirs, and the maps without any are fine beside them."""
    for name in ("2013_IEEE_GRSS_DF_Contest_Samples_TR.tif", "2013_IEEE_GRSS_DF_Contest_Samples_VA.tif"):
        os.symlink(houston_dir / name, tmp_path / name)
        print(name, "georeferencing:", geo.read_georef(str(houston_dir / name)))
        assert geo.read_georef(str(houston_dir / name)) is None
    cube = small_cube((H, W, 3))
    grid = dict(crs="EPSG:26915", transform=Affine(2.5, 0, 268000.0, 0, -2.5, 3290000.0))
    write_tif(tmp_path / "2013_IEEE_GRSS_DF_Contest_CASI.tif", cube, interleave="band", **grid)  # band-sequential
    write_tif(tmp_path / "2013_IEEE_GRSS_DF_Contest_LiDAR.tif", small_cube((H, W), seed=1), **grid)
    out = tmp_path / "h.h5"
    dp.main(["--dataset", "houston2013", "--source", str(tmp_path), "--out", str(out)])
    data = assert_houston_counts(out)
    assert data["attrs"]["layout"] == "grss2013-tif"
    assert data["attrs"]["georeferenced"]
    assert data["attrs"]["geotransform"].tolist() == [268000.0, 2.5, 0, 3290000.0, 0, -2.5]  # GDAL order
    assert CRS.from_wkt(data["attrs"]["crs_wkt"]) == CRS.from_epsg(26915)
    with PatchFile(out) as pf:
        assert pf.georef["transform"] == grid["transform"].to_gdal()
    lo, hi = cube.min((0, 1)), cube.max((0, 1))
    np.testing.assert_allclose(data["scene/hsi"], (cube - lo) / (hi - lo), atol=1e-6)
    printed = capsys.readouterr().out
    assert "349 x 1905" in printed and re.search(r"total\s+2832\s+12197", printed)


@pytest.mark.parametrize("as_folder", [False, True])
def test_houston_authors_single_file_with_real_maps(real_maps, tmp_path, as_folder):
    train, test = real_maps
    sio.savemat(tmp_path / "houston2013.mat", {"hsi": small_cube((H, W, 2)), "lidar": small_cube((H, W)),
                                               "train": train.astype(np.uint8), "test": test.astype(np.uint8)})
    out = tmp_path / "h.h5"
    source = tmp_path if as_folder else tmp_path / "houston2013.mat"
    dp.prepare("houston2013", str(out), source=str(source))
    data = assert_houston_counts(out)
    assert data["attrs"]["layout"] == "single"
    assert list(data["attrs"]["modalities"]) == ["hsi", "lidar"]


def test_houston2018_crop_preset_reads_the_real_files_in_place(crop_dir, tmp_path, capsys):
    """The real crop (../shared, read where it lies): 300 x 300, 5 PCA bands + the 8-bit DSM, its
    README's per-class counts drawn 100 a class, and every output labelled real but derived."""
    out = tmp_path / "crop.h5"
    counts = dp.prepare("houston2018-crop", str(out), source=str(crop_dir), train_per_class=100)
    assert "REAL pixels, derived" in capsys.readouterr().out
    np.testing.assert_array_equal(counts["train"], [100] * 12)
    np.testing.assert_array_equal(counts["test"], np.array(CROP_COUNTS) - 100)
    with PatchFile(out) as pf:
        info, sources = pf.info(), json.loads(patchfile.text(pf.attrs["sources"]))
        assert pf.shape == (300, 300) and pf.bands == {"hsi": 5, "aux": 1}
        assert not info["synthetic"] and "not a benchmark" in info["data_label"]
        assert "principal components" in info["data_note"] and "not comparable" in info["data_note"]
        dsm = pf.f["scene/aux"][..., 0]
        raw = readers.read_array(str(crop_dir / "DATA_DSM.mat"), "DSM_300")[0].astype(np.float64)
        np.testing.assert_allclose(dsm, (raw - raw.min()) / (raw.max() - raw.min()), atol=1e-6)
    assert {os.path.basename(p): d for p, d in sources.items()} == CROP_SHA256
    from report import dataset_label
    assert dataset_label(info["dataset"], False, False, info["data_label"]).startswith("houston2018-crop (REAL pixels")


def test_hsi_sar_layout_stacks_the_dsm(tmp_path):
    rng = np.random.default_rng(0)
    train = np.zeros((20, 30), np.uint8)
    train[1:3, 1:8] = np.arange(1, 8)  # Augsburg's 7 classes
    test = np.zeros((20, 30), np.uint8)
    test[10:12, 1:8] = np.arange(1, 8)
    sio.savemat(tmp_path / "data_HS_LR.mat", {"data_HS_LR": small_cube((20, 30, 5))})
    sio.savemat(tmp_path / "data_SAR_HR.mat", {"data_SAR_HR": rng.normal(size=(20, 30, 4))})
    sio.savemat(tmp_path / "data_DSM.mat", {"data_DSM": rng.normal(size=(20, 30))})
    sio.savemat(tmp_path / "TrainImage.mat", {"TrainImage": train})
    sio.savemat(tmp_path / "TestImage.mat", {"TestImage": test})
    out = tmp_path / "a.h5"
    dp.prepare("augsburg", str(out), source=str(tmp_path))
    data = read_h5(out)
    assert data["train/aux"].shape == (14, 11, 11, 5)  # 4 SAR bands + the DSM
    assert list(data["attrs"]["modalities"]) == ["hsi", "sar+dsm"]
    # Berlin's 8 classes do not fit Augsburg's 7 labels
    with pytest.raises(readers.DataError, match=r"labels run 1\.\.7 but the berlin class list has 8 names"):
        dp.prepare("berlin", str(tmp_path / "b.h5"), source=str(tmp_path))


# -----------------------------------------------------------------------------
# readers

def test_matlab_v73_is_read_in_matlab_orientation(tmp_path):
    cube = small_cube((6, 8, 3))
    write_v73(tmp_path / "scene.mat", {"HSI": cube, "other": np.ones((2, 2))})
    with pytest.raises(NotImplementedError):  # what scipy says about such a file
        sio.loadmat(tmp_path / "scene.mat")
    arr, where = readers.read_array(str(tmp_path / "scene.mat"), "HSI")
    assert arr.shape == (6, 8, 3) and np.array_equal(arr, cube) and "key 'HSI'" in where
    # a v7.3 scene through a whole preparation
    specs = custom_scene(tmp_path)
    write_v73(tmp_path / "gt.mat", {"TRLabel": np.load(specs["train"]).astype(np.float64)})
    specs["train"] = str(tmp_path / "gt.mat")
    counts = dp.prepare("custom", str(tmp_path / "o.h5"), custom=specs, patch_size=3)
    assert counts["train"].tolist() == [9, 8, 6]


def test_float_label_maps_holding_whole_numbers_are_accepted(tmp_path):
    train = np.zeros((20, 30), np.float32)
    train[2:5, 2:5], train[10:12, 10:14], train[15, 20] = 1.0, 2.0, 3.0
    out, counts = run_custom(tmp_path, train=train)
    assert counts["train"].tolist() == [9, 8, 1]


def test_second_modality_2d_becomes_one_channel_and_key_is_optional(tmp_path):
    specs = custom_scene(tmp_path)
    sio.savemat(tmp_path / "dsm.mat", {"whatever": np.load(specs["aux"])})  # one array: no KEY needed
    specs["aux"] = str(tmp_path / "dsm.mat")
    sio.savemat(tmp_path / "cube.mat", {"X": np.load(specs["hsi"]), "wavelengths": np.arange(4.0)})
    specs["hsi"] = str(tmp_path / "cube.mat") + ":X"
    specs["class_names"], specs["aux_name"] = ["Road", "Tree", "Roof"], "dsm"
    dp.prepare("custom", str(tmp_path / "o.h5"), custom=specs, patch_size=5)
    data = read_h5(tmp_path / "o.h5")
    assert data["train/aux"].shape == (17 + 6, 5, 5, 1) and data["scene/aux"].shape == (20, 30, 1)
    assert list(data["attrs"]["class_names"]) == ["Road", "Tree", "Roof"]
    assert list(data["attrs"]["modalities"]) == ["hsi", "dsm"]


def test_custom_without_class_names_gets_generic_names_and_palette(tmp_path):
    out, _ = run_custom(tmp_path)
    data = read_h5(out)
    assert list(data["attrs"]["class_names"]) == ["class 1", "class 2", "class 3"]
    assert data["attrs"]["palette"].shape == (3, 3)
    assert len({tuple(c) for c in data["attrs"]["palette"]}) == 3


# -----------------------------------------------------------------------------
# the file written

def test_hdf5_layout_attributes_and_dtypes(tmp_path):
    out = tmp_path / "demo.h5"
    dp.main(["--dataset", "demo", "--out", str(out)])
    demo = synthetic.make_demo_scene(0)
    data = read_h5(out)
    a = data["attrs"]
    assert a["dataset"] == "demo" and a["synthetic"] and a["patch_size"] == 11 and a["num_classes"] == 6
    assert list(a["class_names"]) == demo["class_names"] and list(a["modalities"]) == ["hsi", "lidar"]
    assert a["palette"].shape == (6, 3) and a["palette"].dtype.kind == "i"
    assert a["normalisation"].startswith("min-max per band")
    assert json.loads(a["sources"]) == {} and a["command"].startswith("python DataPrepare.py --dataset demo")
    assert data["train/hsi"].shape == (150, 11, 11, 32) and data["train/hsi"].dtype == np.float32
    assert data["train/aux"].shape == (150, 11, 11, 1) and data["train/aux"].dtype == np.float32
    for split in ("train", "test"):
        assert data[f"{split}/label"].dtype == np.int32 and data[f"{split}/coord"].dtype == np.int32
        assert data[f"{split}/label"].min() == 0 and data[f"{split}/label"].max() == 5
    assert "val" not in {k.split("/")[0] for k in data}
    scene = data["scene/hsi"]
    assert scene.shape == (64, 96, 32) and scene.dtype == np.float32
    assert np.array_equal(scene.min((0, 1)), np.zeros(32)) and np.array_equal(scene.max((0, 1)), np.ones(32))
    # patches are the normalised scene around their coordinate, unrotated
    rows, cols = data["train/coord"].T
    assert np.array_equal(data["train/hsi"][:, 5, 5], scene[rows, cols])
    assert np.array_equal(data["train/aux"], reference_patches(data["scene/aux"], data["train/coord"], 11))
    assert np.array_equal(data["train/hsi"], reference_patches(scene, data["train/coord"], 11))
    assert "test/hsi" not in data and data["test/coord"].shape == (4400, 2)  # cut when read
    assert np.array_equal(data["scene/test_map"], demo["test"]) and np.array_equal(data["scene/train_map"], demo["train"])
    with h5py.File(out, "r") as f:
        assert f["scene/hsi"].chunks is not None and f["train/hsi"].compression is None


def test_scene_and_patches_written_in_many_blocks_equal_one_block(tmp_path, monkeypatch):
    """A scene taller than a write block, stored in many HDF5 chunks, and more patches than a cutting
    batch: the blocks, chunks and batches (3 rows, 4 x 7 pixels and 5 patches, against 20 x 30
    pixels and 23 training patches) tile without gaps or overlaps."""
    specs = custom_scene(tmp_path)
    dp.prepare("custom", str(tmp_path / "one.h5"), custom=specs, patch_size=5)
    monkeypatch.setattr(patchfile, "WRITE_ROWS", 3)
    monkeypatch.setattr(patchfile, "CUT_BATCH", 5)
    monkeypatch.setattr(patchfile, "scene_chunks", lambda h, w, c: (4, 7, c))  # HDF5 chunks across blocks
    dp.prepare("custom", str(tmp_path / "many.h5"), custom=specs, patch_size=5)
    one, many = read_h5(tmp_path / "one.h5"), read_h5(tmp_path / "many.h5")
    assert many["scene/hsi"].shape == (20, 30, 4) and len(many["train/label"]) == 23
    with h5py.File(tmp_path / "many.h5", "r") as f:
        assert f["scene/hsi"].chunks == (4, 7, 4)
    for key in ("scene/hsi", "scene/aux", "train/hsi", "train/aux", "train/coord", "test/coord"):
        np.testing.assert_array_equal(many[key], one[key], err_msg=key)
    np.testing.assert_array_equal(many["train/hsi"], reference_patches(many["scene/hsi"], many["train/coord"], 5))


def test_npz_archive_with_keys_reads_like_separate_npy_files(tmp_path):
    specs = custom_scene(tmp_path)
    arrays = {name: np.load(path) for name, path in specs.items()}
    np.savez(tmp_path / "scene.npz", cube=arrays["hsi"], dsm=arrays["aux"], tr=arrays["train"].astype(float),
             te=arrays["test"].astype(float), extra=np.arange(3))
    npz = {name: f"{tmp_path / 'scene.npz'}:{key}" for name, key in
           (("hsi", "cube"), ("aux", "dsm"), ("train", "tr"), ("test", "te"))}
    dp.prepare("custom", str(tmp_path / "npy.h5"), custom=specs, patch_size=5)
    dp.prepare("custom", str(tmp_path / "npz.h5"), custom=npz, patch_size=5)
    a, b = read_h5(tmp_path / "npy.h5"), read_h5(tmp_path / "npz.h5")
    for key in ("scene/hsi", "scene/aux", "train/label", "train/coord", "test/label", "test/coord"):
        np.testing.assert_array_equal(b[key], a[key], err_msg=key)
    with pytest.raises(readers.DataError, match=r"scene.npz.*'nope'.*cube"):
        dp.prepare("custom", str(tmp_path / "bad.h5"), custom={**npz, "hsi": f"{tmp_path / 'scene.npz'}:nope"},
                   patch_size=5)


def test_val_split_is_stratified_and_seeded(tmp_path):
    def split():
        out = tmp_path / "v.h5"
        dp.prepare("demo", str(out), val_fraction=0.2, seed=0)
        return read_h5(out)

    first = split()
    assert np.bincount(first["val/label"]).tolist() == [5] * 6  # round(0.2 * 25) per class
    assert np.bincount(first["train/label"]).tolist() == [20] * 6
    together = np.concatenate([first["train/coord"], first["val/coord"]])
    assert len({tuple(c) for c in together}) == 150  # disjoint, nothing lost
    again = split()
    assert np.array_equal(first["val/coord"], again["val/coord"])
    coords, labels = splits.make_splits(*[synthetic.make_demo_scene(0)[k] for k in ("train", "test")], 0.2, seed=1)["val"]
    assert not np.array_equal(coords, first["val/coord"])  # another seed, other pixels
    # small classes: at least one val pixel from two, none from one, never the whole class
    train = np.zeros((4, 4), np.int32)
    train[0, :2], train[1, 0], train[2, :] = 1, 2, 3
    val = splits.make_splits(train, (train == 0).astype(np.int32) * 4, 0.01, 0)["val"][1]
    assert np.bincount(val, minlength=3).tolist() == [1, 0, 1]
    val = splits.make_splits(train, (train == 0).astype(np.int32) * 4, 0.9, 0)["val"][1]
    assert np.bincount(val, minlength=3).tolist() == [1, 0, 3]


def test_failed_write_leaves_nothing_behind(tmp_path, monkeypatch):
    out = tmp_path / "demo.h5"
    out.write_bytes(b"an older file")

    def broken(*args):
        raise RuntimeError("disk full")

    monkeypatch.setattr(patchfile, "cut_patches", broken)
    with pytest.raises(RuntimeError, match="disk full"):
        dp.prepare("demo", str(out))
    assert out.read_bytes() == b"an older file"  # the old file is untouched
    assert sorted(p.name for p in tmp_path.iterdir()) == ["demo.h5"]  # and no temporary file


def test_demo_scene_is_deterministic_and_learnable():
    a, b = synthetic.make_demo_scene(0), synthetic.make_demo_scene(0)
    assert all(np.array_equal(a[k], b[k]) for k in ("hsi", "aux", "train", "test"))
    assert not np.array_equal(a["hsi"], synthetic.make_demo_scene(1)["hsi"])
    assert a["hsi"].dtype == np.float32 and a["aux"].shape == (64, 96, 1)
    assert not ((a["train"] > 0) & (a["test"] > 0)).any()
    assert np.bincount(a["train"].ravel())[1:].tolist() == [25] * 6
    # a nearest-class-mean classifier on centre pixels is far above chance (1/6), not perfect
    x = np.concatenate([a["hsi"], 0.05 * (a["aux"] - a["aux"].mean()) / a["aux"].std()], -1)
    means = np.stack([x[a["train"] == c].mean(0) for c in range(1, 7)])
    test = a["test"] > 0
    pred = ((x[test][:, None] - means) ** 2).sum(-1).argmin(1) + 1
    assert 0.7 < (pred == a["test"][test]).mean() < 1.0


# -----------------------------------------------------------------------------
# the Houston 2013 stand-in (synthetic.py houston2013), built from the real pieces

@pytest.mark.slow
def test_houston2013_stand_in_from_the_real_pieces(houston_dir, tmp_path, capsys):
    synthetic.main(["houston2013", str(tmp_path), "--pieces", str(houston_dir)])
    assert "wrote SYNTHETIC houston2013 stand-in" in capsys.readouterr().out
    out = tmp_path / "h.h5"
    counts = dp.prepare("houston2013", str(out), source=str(tmp_path))
    assert counts["train"].tolist() == HOUSTON_TRAIN_COUNTS and counts["test"].tolist() == HOUSTON_TEST_COUNTS
    assert "SYNTHETIC scene" in capsys.readouterr().out
    with h5py.File(out, "r") as f:
        assert f.attrs["synthetic"] and f.attrs["layout"] == "single" and f["scene/hsi"].shape == (H, W, 144)
        assert np.bincount(f["train/label"][()], minlength=15).tolist() == HOUSTON_TRAIN_COUNTS
        assert np.bincount(f["test/label"][()], minlength=15).tolist() == HOUSTON_TEST_COUNTS

    scene = sio.loadmat(tmp_path / "houston2013.mat")
    assert scene["hsi"].shape == (H, W, 144) and scene["hsi"].dtype == np.float32
    assert scene["lidar"].shape == (H, W) and scene["lidar"].dtype == np.float32
    train, test = scene["train"], scene["test"]
    real_train = sio.loadmat(houston_dir / "TRLabel.mat")["TRLabel"]
    assert np.array_equal(train, real_train) and np.array_equal(test, sio.loadmat(houston_dir / "TSLabel.mat")["TSLabel"])
    # the training pixels' raw spectra have the real class statistics (rows: row-major map order)
    real = sio.loadmat(houston_dir / "HSI_TrSet.mat")["HSI_TrSet"]
    labels, spectra = train[train > 0], scene["hsi"][train > 0]
    rms = lambda v: np.sqrt(np.mean(np.square(v)))  # noqa: E731  (over the bands)
    for c in range(1, 16):
        want, got = real[labels == c], spectra[labels == c]
        spread = rms(want.std(0))
        # the class mean within 5 % of the real one and well inside the class's spread; the spread alike
        assert rms(got.mean(0) - want.mean(0)) < min(0.05 * rms(want.mean(0)), 0.3 * spread), f"class {c}"
        assert 0.6 < rms(got.std(0)) / spread < 1.6, f"class {c}"
    # the LiDAR elevation of every labelled pixel is the real one
    for m, name in ((train, "LiDAR_TrSet"), (test, "LiDAR_TeSet")):
        elevation = sio.loadmat(houston_dir / f"{name}.mat")[name][:, 20]
        np.testing.assert_array_equal(scene["lidar"][m > 0], elevation.astype(np.float32))


def tiny_pieces(folder, **shapes):
    """Files named as the Houston 2013 pieces, holding zeros of the shapes given."""
    for name, key in (("TRLabel.mat", "TRLabel"), ("TSLabel.mat", "TSLabel"), ("HSI_TrSet.mat", "HSI_TrSet"),
                      ("LiDAR_TrSet.mat", "LiDAR_TrSet"), ("LiDAR_TeSet.mat", "LiDAR_TeSet")):
        if key in shapes:
            sio.savemat(folder / name, {key: np.zeros(shapes[key])})


def test_houston2013_stand_in_bad_pieces_end_in_one_line(tmp_path):
    tiny_pieces(tmp_path, TRLabel=(H, W), TSLabel=(H, W), HSI_TrSet=(0, 144))
    with pytest.raises(SystemExit) as e:
        synthetic.main(["houston2013", str(tmp_path / "out"), "--pieces", str(tmp_path)])
    assert re.fullmatch(r"synthetic\.py: error: .*: LiDAR_TrSet\.mat, LiDAR_TeSet\.mat missing; the Houston 2013 "
                        r"stand-in is built from the real pieces .*", e.value.code)
    tiny_pieces(tmp_path, TRLabel=(H, W - 1), TSLabel=(H, W), LiDAR_TrSet=(0, 21), LiDAR_TeSet=(0, 21))
    with pytest.raises(readers.DataError, match=r"TRLabel\.mat key 'TRLabel': expected the standard training map, "
                                                r"shape \(349, 1905\), got shape \(349, 1904\)"):
        synthetic.make_houston2013(str(tmp_path))
    train = np.zeros((H, W), np.uint8)
    train[0, :3] = 1
    sio.savemat(tmp_path / "TRLabel.mat", {"TRLabel": train})
    with pytest.raises(readers.DataError, match=r"HSI_TrSet\.mat key 'HSI_TrSet': expected the 144-band spectra of "
                                                r"the training pixels, one row per labelled pixel of TRLabel\.mat, "
                                                r"shape \(3, 144\), got shape \(0, 144\)"):
        synthetic.make_houston2013(str(tmp_path))
    assert not (tmp_path / "out").exists()
    with pytest.raises(SystemExit) as e:  # argparse: houston2013 needs its pieces
        synthetic.main(["houston2013", str(tmp_path / "out")])
    assert e.value.code == 2


def test_a_stand_in_marker_makes_the_file_synthetic(tmp_path):
    specs = custom_scene(tmp_path)
    sio.savemat(tmp_path / "cube.mat", {"hsi": np.load(specs["hsi"]), readers.STAND_IN_KEY: "made up for a test"})
    dp.prepare("custom", str(tmp_path / "plain.h5"), custom=specs, patch_size=3)
    dp.prepare("custom", str(tmp_path / "marked.h5"), custom=dict(specs, hsi=f"{tmp_path / 'cube.mat'}:hsi"),
               patch_size=3)
    assert not read_h5(tmp_path / "plain.h5")["attrs"]["synthetic"]
    assert read_h5(tmp_path / "marked.h5")["attrs"]["synthetic"]
    assert readers.read_text(str(tmp_path / "cube.mat"), readers.STAND_IN_KEY) == "made up for a test"
    assert readers.read_text(specs["hsi"], readers.STAND_IN_KEY) is None


# -----------------------------------------------------------------------------
# bad inputs: each fails (or warns) with a message naming the file, key and shape

def test_bad_sizes(tmp_path):
    with pytest.raises(readers.DataError, match=r"height/width differ.*aux\.npy shape \(20, 29\)"):
        run_custom(tmp_path, aux=np.zeros((20, 29), np.float32))


def test_bad_nan_in_hsi(tmp_path):
    hsi = small_cube((20, 30, 4))
    hsi[3, 4, 2] = np.nan
    with pytest.raises(readers.DataError, match=r"hsi\.npy shape \(20, 30, 4\): hsi band 2 holds 1 NaN/Inf"):
        run_custom(tmp_path, hsi=hsi)


def test_bad_inf_in_aux(tmp_path):
    aux = small_cube((20, 30))
    aux[0, 0] = np.inf
    with pytest.raises(readers.DataError, match=r"aux\.npy shape \(20, 30, 1\): aux band 0 holds 1 NaN/Inf"):
        run_custom(tmp_path, aux=aux)


def test_bad_label_map_not_2d(tmp_path):
    with pytest.raises(readers.DataError, match=r"train\.npy: a label map must be a 2-D \(H, W\) integer array, got shape \(20, 30, 2\)"):
        run_custom(tmp_path, train=np.zeros((20, 30, 2), np.uint8))


def test_label_map_with_singleton_axis_is_fine(tmp_path):
    train = np.zeros((20, 30, 1), np.int64)
    train[0, :3, 0] = [1, 2, 3]
    _, counts = run_custom(tmp_path, train=train)
    assert counts["train"].tolist() == [1, 1, 1]


def test_bad_label_map_not_integer(tmp_path):
    train = np.zeros((20, 30))
    train[4, 7] = 1.5
    with pytest.raises(readers.DataError, match=r"train\.npy shape \(20, 30\): a label map must hold whole numbers.*1\.5 at row 4, col 7"):
        run_custom(tmp_path, train=train)


def test_bad_label_map_negative(tmp_path):
    train = np.zeros((20, 30), np.int16)
    train[0, 0], train[1, 1] = -2, 1
    with pytest.raises(readers.DataError, match=r"train\.npy shape \(20, 30\): negative labels \(-2\)"):
        run_custom(tmp_path, train=train)


def test_minus_one_is_unlabelled(tmp_path):
    train = np.full((20, 30), -1, np.int16)  # as MUUFL stores its labels
    train[2:5, 2:5], train[10:12, 10:14], train[15, 20] = 1, 2, 3
    _, counts = run_custom(tmp_path, train=train)
    assert counts["train"].tolist() == [9, 8, 1]


def test_bad_overlap(tmp_path):
    test = np.zeros((20, 30), np.uint8)
    test[2:5, 2] = 1  # three pixels also in the training map
    test[6, 6] = 2
    with pytest.raises(readers.DataError, match=r"train\.npy and test map .*test\.npy \(shape \(20, 30\)\) overlap at 3 pixel"):
        run_custom(tmp_path, test=test)


def test_bad_missing_key_lists_the_keys(tmp_path):
    specs = custom_scene(tmp_path)
    sio.savemat(tmp_path / "cube.mat", {"cube": small_cube((20, 30, 4)), "bands": np.arange(4.0)})
    specs["hsi"] = str(tmp_path / "cube.mat") + ":HSI"
    with pytest.raises(readers.DataError, match=r"cube\.mat: no key 'HSI'; the file holds 'cube' \(20, 30, 4\), 'bands' \(1, 4\)"):
        dp.prepare("custom", str(tmp_path / "o.h5"), custom=specs)
    specs["hsi"] = str(tmp_path / "cube.mat")  # two arrays and no key: say which
    with pytest.raises(readers.DataError, match=r"cube\.mat: the file holds 'cube'.*name one as FILE:KEY"):
        dp.prepare("custom", str(tmp_path / "o.h5"), custom=specs)
    # a preset expecting HSI in HSI.mat, which holds two other arrays
    shutil.copy(tmp_path / "cube.mat", tmp_path / "HSI.mat")
    for name in ("LiDAR", "TRLabel", "TSLabel"):
        sio.savemat(tmp_path / f"{name}.mat", {name: np.zeros((20, 30))})
    with pytest.raises(readers.DataError, match=r"HSI\.mat: none of \['HSI'\] is there; the file holds 'cube'"):
        dp.prepare("trento", str(tmp_path / "o.h5"), source=str(tmp_path))


@pytest.mark.parametrize("kind", ["truncated .mat", "truncated v7.3 .mat", "garbage .tif"])
def test_bad_unreadable_or_truncated_file(tmp_path, kind):
    specs = custom_scene(tmp_path)
    path = tmp_path / ("cube.tif" if "tif" in kind else "cube.mat")
    if kind == "truncated .mat":
        sio.savemat(path, {"cube": small_cube((20, 30, 4))})
    elif kind == "truncated v7.3 .mat":
        write_v73(path, {"cube": small_cube((20, 30, 4))})
    if "truncated" in kind:
        data = path.read_bytes()
        path.write_bytes(data[: len(data) // 2])
    else:
        path.write_bytes(b"this is not an image" * 10)
    specs["hsi"] = str(path)
    with pytest.raises(readers.DataError, match=re.escape(str(path)) + r".*cannot read it.*truncated"):
        dp.prepare("custom", str(tmp_path / "o.h5"), custom=specs)


def test_bad_missing_files_say_what_a_layout_needs(tmp_path):
    (tmp_path / "HSI.mat").write_bytes(b"")
    with pytest.raises(readers.DataError, match=r"found none of the houston2013 layouts.*four-file: HSI\.mat, LiDAR\.mat, "
                                           r"TRLabel\.mat, TSLabel\.mat.*the folder holds HSI\.mat"):
        dp.prepare("houston2013", str(tmp_path / "o.h5"), source=str(tmp_path))
    with pytest.raises(readers.DataError, match=r"nowhere: no such file or folder"):
        dp.prepare("houston2013", str(tmp_path / "o.h5"), source=str(tmp_path / "nowhere"))


def test_constant_band_warns_and_becomes_zero(tmp_path):
    hsi = small_cube((20, 30, 4))
    hsi[..., 1] = 7.0
    with pytest.warns(readers.DataWarning, match=r"hsi band 1 of .*hsi\.npy is constant"):
        out, _ = run_custom(tmp_path, hsi=hsi)
    scene = read_h5(out)["scene/hsi"]
    assert np.isfinite(scene).all() and not scene[..., 1].any() and scene[..., 0].max() == 1


def test_test_class_missing_from_training_warns(tmp_path):
    train = np.zeros((20, 30), np.uint8)
    train[2:5, 2:5], train[10:12, 10:14] = 1, 2  # class 3 only in the test map
    with pytest.warns(readers.DataWarning, match=r"class\(es\) \[3\] appear in the test map .*test\.npy but not in the training"):
        _, counts = run_custom(tmp_path, train=train)
    assert counts["train"].tolist() == [9, 8, 0] and counts["test"][2] == 9


def test_bad_arguments(tmp_path):
    with pytest.raises(readers.DataError, match=r"--val-fraction must be in \[0, 1\), got 1\.0"):
        dp.prepare("demo", str(tmp_path / "o.h5"), val_fraction=1.0)
    with pytest.raises(readers.DataError, match="--patch-size must be a positive odd number"):
        dp.prepare("demo", str(tmp_path / "o.h5"), patch_size=10)
    with pytest.raises(readers.DataError, match="--source is needed for trento"):
        dp.prepare("trento", str(tmp_path / "o.h5"))
    with pytest.raises(readers.DataError, match="no-such-folder/o.h5: its folder does not exist"):
        dp.prepare("demo", str(tmp_path / "no-such-folder" / "o.h5"))


def test_main_fails_with_one_clean_line(tmp_path):
    with pytest.raises(SystemExit) as e:
        dp.main(["--dataset", "houston2013", "--source", str(tmp_path / "nowhere"), "--out", str(tmp_path / "o.h5")])
    assert re.fullmatch(r"DataPrepare\.py: error: .*nowhere: no such file or folder", e.value.code)
    with pytest.raises(SystemExit) as e:
        dp.main(["--dataset", "demo", "--hsi", "x.mat", "--out", str(tmp_path / "o.h5")])
    assert e.value.code == 2  # argparse: --hsi is for custom only


def test_training_only_normalisation_against_a_direct_computation(tmp_path):
    hsi = small_cube((20, 30, 4))
    hsi[0, 0, 1] = 100.0  # a test-region outlier: it must not stretch the training range
    specs = custom_scene(tmp_path, hsi=hsi)
    out = tmp_path / "t.h5"
    dp.prepare("custom", str(out), custom=specs, patch_size=5, normalise="train")
    data = read_h5(out)
    train = np.load(specs["train"]) > 0
    for m, raw in (("hsi", hsi), ("aux", np.load(specs["aux"])[..., None])):
        lo, hi = raw[train].min(0), raw[train].max(0)  # per band, over the training pixels only
        want = np.clip((raw.astype(np.float64) - lo) / (hi - lo), 0, 1)
        np.testing.assert_allclose(data[f"scene/{m}"], want, atol=1e-6)
        assert np.array_equal(data[f"scene/{m}"][train].min(0), np.zeros(raw.shape[-1]))
        assert np.array_equal(data[f"scene/{m}"][train].max(0), np.ones(raw.shape[-1]))
    assert data["scene/hsi"][0, 0, 1] == 1.0  # clipped
    assert data["attrs"]["normalise"] == "train"
    assert data["attrs"]["normalisation"] == "min-max per band over the training pixels only, other pixels clipped to [0, 1]"
    with pytest.raises(readers.DataError, match="--normalise must be one of scene, train"):
        dp.prepare("custom", str(out), custom=specs, normalise="test")


# -----------------------------------------------------------------------------
# a scene without labels, prepared like a training file (--like)

def test_like_prepares_an_unlabelled_scene_with_the_training_statistics(tmp_path):
    specs = custom_scene(tmp_path)
    train_file = tmp_path / "train.h5"
    dp.prepare("custom", str(train_file), custom=dict(specs, class_names=["Road", "Tree", "Roof"], aux_name="dsm"),
               patch_size=5)
    raw_hsi, raw_aux = np.load(specs["hsi"]), np.load(specs["aux"])
    with PatchFile(train_file) as pf:  # the statistics stored are the raw per-band range
        stats, palette = pf.stats, pf.palette
    np.testing.assert_array_equal(stats["hsi_min"], raw_hsi.min((0, 1)))
    np.testing.assert_array_equal(stats["aux_max"], [raw_aux.max()])

    rng = np.random.default_rng(7)
    new_hsi = rng.uniform(-1, 6, (12, 16, 4)).astype(np.float32)  # another scene, partly outside the range
    np.save(tmp_path / "new_hsi.npy", new_hsi)
    np.save(tmp_path / "new_aux.npy", rng.normal(size=(12, 16)).astype(np.float32))
    out = tmp_path / "new.h5"
    dp.main(["--dataset", "custom", "--hsi", str(tmp_path / "new_hsi.npy"), "--aux", str(tmp_path / "new_aux.npy"),
             "--like", str(train_file), "--out", str(out)])
    with PatchFile(out) as pf:
        assert not pf.labelled and pf.splits == [] and pf.patch_size == 5 and pf.shape == (12, 16)
        assert pf.class_names == ["Road", "Tree", "Roof"] and np.array_equal(pf.palette, palette)
        assert pf.attrs["modalities"] == ["hsi", "dsm"] and pf.attrs["normalise"] == "like"
        assert "clipped to [0, 1]" in pf.attrs["normalisation"] and str(train_file) in pf.attrs["normalisation"]
        assert pf.attrs["split"].startswith("none: a scene without labels")
        np.testing.assert_array_equal(pf.stats["hsi_max"], stats["hsi_max"])  # carried on
        # one pixel by hand: (x - min) / (max - min) with the training scene's range, clipped
        lo, hi = raw_hsi[..., 2].min(), raw_hsi[..., 2].max()
        for row, col in ((3, 4), *np.argwhere(new_hsi[..., 2] > hi)[:1], *np.argwhere(new_hsi[..., 2] < lo)[:1]):
            want = min(max((float(new_hsi[row, col, 2]) - lo) / (hi - lo), 0.0), 1.0)
            assert pf.f["scene/hsi"][row, col, 2] == pytest.approx(want, abs=1e-6)
        n = sum(len(rows) for rows, _, _ in pf.scene_batches(50))  # it can be mapped
        assert n == 12 * 16
        for read in (lambda: pf.labels("test"), lambda: pf.coords("train"), lambda: pf.label_map("test_map"),
                     lambda: next(pf.batches("test", 10)), lambda: pf.distance_to_train("test")):
            with pytest.raises(PatchFileError, match=r"new\.h5: the file has no labels .*DataPrepare\.py --like"):
                read()


def test_like_refuses_what_does_not_match(tmp_path):
    specs = custom_scene(tmp_path)
    train_file = tmp_path / "train.h5"
    dp.prepare("custom", str(train_file), custom=specs, patch_size=5)
    rng = np.random.default_rng(0)
    np.save(tmp_path / "h5b.npy", rng.random((12, 16, 5)).astype(np.float32))  # 5 bands, not 4
    np.save(tmp_path / "h4b.npy", rng.random((12, 16, 4)).astype(np.float32))
    np.save(tmp_path / "a2.npy", rng.random((12, 16, 2)).astype(np.float32))  # 2 channels, not 1
    np.save(tmp_path / "a1.npy", rng.random((12, 16)).astype(np.float32))
    out = tmp_path / "new.h5"
    like = lambda hsi, aux, **kw: dp.prepare("custom", str(out), like=str(train_file), custom=dict(  # noqa: E731
        hsi=str(tmp_path / hsi), aux=str(tmp_path / aux)), **kw)
    with pytest.raises(readers.DataError, match=r"h5b\.npy: the hsi has 5 band\(s\), the --like file .*train\.h5 has 4"):
        like("h5b.npy", "a1.npy")
    with pytest.raises(readers.DataError, match=r"a2\.npy: the aux has 2 channel\(s\), the --like file .*train\.h5 has 1"):
        like("h4b.npy", "a2.npy")
    with pytest.raises(readers.DataError, match=r"--patch-size 7 does not match the --like file .*train\.h5, patch size 5"):
        like("h4b.npy", "a1.npy", patch_size=7)
    with pytest.raises(readers.DataError, match="--like prepares a scene without labels; --gt gives labels"):
        dp.prepare("custom", str(out), like=str(train_file), custom=dict(hsi="x", aux="y", gt="z"))
    with pytest.raises(readers.DataError, match="--like prepares a scene without labels: it takes no split options"):
        like("h4b.npy", "a1.npy", train_fraction=0.1)
    # a file of another format version, and one made before the statistics were stored
    other = tmp_path / "other.h5"
    shutil.copy(train_file, other)
    with h5py.File(other, "r+") as f:
        f.attrs["format_version"] = 3
    with pytest.raises(readers.DataError, match=r"--like .*other\.h5: .*patch file format 3, this code reads format 2"):
        dp.prepare("custom", str(out), like=str(other), custom=dict(hsi=str(tmp_path / "h4b.npy"),
                                                                    aux=str(tmp_path / "a1.npy")))
    with h5py.File(other, "r+") as f:
        f.attrs["format_version"] = 2
        del f["normalisation"]
    with pytest.raises(readers.DataError, match=r"other\.h5: made before patch files stored their normalisation "
                                                r"statistics .*prepare it again"):
        dp.prepare("custom", str(out), like=str(other), custom=dict(hsi=str(tmp_path / "h4b.npy"),
                                                                    aux=str(tmp_path / "a1.npy")))
    assert not out.exists()
    like("h4b.npy", "a1.npy")  # what matches is prepared
    assert out.exists()
