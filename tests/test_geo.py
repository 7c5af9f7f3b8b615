"""Tests of geo.py and of the georeferencing DataPrepare.py records: a synthetic GeoTIFF scene in a
real CRS prepared with --dataset custom, the label GeoTIFF read back with rasterio, rasters on
another grid or CRS refused, ENVI rasters with map info, and sources without georeferencing."""
import json
import os

import h5py
import numpy as np
import pytest
import rasterio
from rasterio.transform import Affine
from rasterio.crs import CRS

import DataPrepare as dp
import geo
import readers
from patchfile import PatchFile

UTM15 = "EPSG:26915"  # NAD83 / UTM zone 15N, Houston's
GRID = Affine(2.5, 0.0, 271000.0, 0.0, -2.5, 3290000.0)  # 2.5 m pixels, north up
H, W = 20, 30


def write_raster(path, arr, crs=UTM15, transform=GRID, driver="GTiff"):
    """(H, W) or (H, W, B) as a raster (rasterio writes bands first); crs None: no georeferencing."""
    bands = arr[None] if arr.ndim == 2 else np.moveaxis(arr, -1, 0)
    profile = dict(driver=driver, width=bands.shape[2], height=bands.shape[1], count=bands.shape[0], dtype=bands.dtype)
    if crs is not None:
        profile.update(crs=crs, transform=transform)
    with readers.quiet_rasterio(), rasterio.open(path, "w", **profile) as ds:
        ds.write(bands)
    return str(path)


def scene_arrays(seed=0):
    rng = np.random.default_rng(seed)
    train = np.zeros((H, W), np.uint8)
    train[2:5, 2:5], train[10:12, 10:14], train[15:18, 20:22] = 1, 2, 3
    test = np.zeros((H, W), np.uint8)
    test[6:9, 2:5], test[13:14, 10:14], test[15:18, 25:28] = 1, 2, 3
    return dict(hsi=rng.uniform(0, 5, (H, W, 4)).astype(np.float32), aux=rng.normal(size=(H, W)).astype(np.float32),
                train=train, test=test)


def geotiff_scene(folder, **grids):
    """The scene as GeoTIFFs, each on GRID in UTM15 unless grids[role] = (crs, transform) says otherwise."""
    return {role: write_raster(folder / f"{role}.tif", arr, *grids.get(role, (UTM15, GRID)))
            for role, arr in scene_arrays().items()}


def test_geotiff_scene_records_crs_and_transform_and_the_label_geotiff_reads_back(tmp_path):
    custom = geotiff_scene(tmp_path)
    custom["class_names"] = ["Road", "Tree", "Roof"]
    out = tmp_path / "s.h5"
    dp.prepare("custom", str(out), custom=custom, patch_size=5)
    with rasterio.open(custom["hsi"]) as ds:
        source_crs, source_transform = ds.crs, ds.transform
    with h5py.File(out, "r") as f:
        a = f.attrs
        assert a["georeferenced"] and "GDAL order" in a["georeferencing"] and custom["hsi"] in a["georeferencing"]
        assert CRS.from_wkt(a["crs_wkt"]) == source_crs
        assert a["geotransform"].tolist() == list(source_transform.to_gdal())
    with PatchFile(out) as pf:
        georef, truth, palette, names = pf.georef, pf.label_map("test_map"), pf.palette, pf.class_names
    assert Affine.from_gdal(*georef["transform"]) == source_transform and CRS.from_wkt(georef["crs"]) == source_crs

    path = geo.write_label_geotiff(tmp_path / "map.tif", truth, georef, palette, names)
    with rasterio.open(path) as ds:
        assert ds.count == 1 and ds.dtypes == ("uint8",) and ds.shape == (H, W)
        assert ds.crs == source_crs and ds.transform == source_transform
        assert ds.nodata == 0
        np.testing.assert_array_equal(ds.read(1), truth)
        assert (truth == 0).any()  # unlabelled pixels: nodata
        colours = ds.colormap(1)
        assert [colours[c][:3] for c in (1, 2, 3)] == [tuple(p) for p in np.asarray(palette).tolist()]
        assert colours[0][3] == 0  # unlabelled: transparent
        tags = ds.tags()
        assert json.loads(tags["class_names"]) == ["Road", "Tree", "Roof"]
        assert (tags["CLASS_1"], tags["CLASS_2"], tags["CLASS_3"]) == ("Road", "Tree", "Roof")
    assert os.listdir(tmp_path).count("map.tif") == 1 and not [n for n in os.listdir(tmp_path) if n.startswith(".tmp")]


def test_label_geotiff_without_georeferencing_and_with_many_classes(tmp_path):
    labels = np.arange(H * W, dtype=np.int32).reshape(H, W) % 300  # classes above 255: uint16
    palette = [[c % 256, (7 * c) % 256, (13 * c) % 256] for c in range(1, 300)]
    names = [f"class {c}" for c in range(1, 300)]
    geo.write_label_geotiff(tmp_path / "map.tif", labels, None, palette, names)
    with readers.quiet_rasterio(), rasterio.open(tmp_path / "map.tif") as ds:
        assert ds.dtypes == ("uint16",) and ds.crs is None and ds.transform.is_identity
        np.testing.assert_array_equal(ds.read(1), labels)
        assert ds.tags()["georeferencing"].startswith("none")
        assert ds.tags()["CLASS_299"] == "class 299" and ds.colormap(1)[299][:3] == tuple(palette[298])
    assert geo.read_georef(str(tmp_path / "map.tif")) is None


@pytest.mark.parametrize("what", ["transform", "crs", "label transform"])
def test_rasters_on_another_grid_or_crs_are_refused(tmp_path, what):
    shifted = Affine(2.5, 0.0, 271005.0, 0.0, -2.5, 3290000.0)  # two pixels east
    grids = {"transform": {"aux": (UTM15, shifted)}, "crs": {"aux": ("EPSG:32615", GRID)},
             "label transform": {"test": (UTM15, shifted)}}[what]
    custom = geotiff_scene(tmp_path, **grids)
    other = custom["test"] if what == "label transform" else custom["aux"]
    out = tmp_path / "s.h5"
    with pytest.raises(readers.DataError) as e:
        dp.prepare("custom", str(out), custom=custom, patch_size=5)
    message = str(e.value)
    assert message.startswith("rasters on different grids or CRSs: ")
    assert custom["hsi"] in message and other in message  # both files
    if what == "crs":
        assert "EPSG:26915" in message and "EPSG:32615" in message  # both values
    else:
        assert "(271000, 2.5, 0, 3290000, 0, -2.5)" in message and "(271005, 2.5, 0, 3290000, 0, -2.5)" in message
    assert not out.exists()


def test_labels_without_georeferencing_beside_georeferenced_rasters_are_fine(tmp_path):
    custom = geotiff_scene(tmp_path, train=(None, None), test=(None, None))
    dp.prepare("custom", str(tmp_path / "s.h5"), custom=custom, patch_size=5)
    with PatchFile(tmp_path / "s.h5") as pf:
        assert pf.georef["transform"] == GRID.to_gdal()
    # a modality without any beside one with it: taken to lie on that grid, with a warning
    custom = geotiff_scene(tmp_path, aux=(None, None))
    with pytest.warns(readers.DataWarning, match=r"aux\.tif \(aux\) carries no georeferencing; it is taken to lie on"):
        dp.prepare("custom", str(tmp_path / "s.h5"), custom=custom, patch_size=5)


def test_envi_rasters_with_map_info(tmp_path):
    arrays = scene_arrays()
    hsi = write_raster(tmp_path / "cube.img", arrays["hsi"], driver="ENVI")
    aux = write_raster(tmp_path / "dsm.img", arrays["aux"], driver="ENVI")
    assert "map info" in (tmp_path / "cube.hdr").read_text()  # what ENVI files carry
    np.save(tmp_path / "train.npy", arrays["train"])
    np.save(tmp_path / "test.npy", arrays["test"])
    out = tmp_path / "e.h5"
    dp.main(["--dataset", "custom", "--hsi", str(tmp_path / "cube.hdr"), "--aux", aux, "--train",
             str(tmp_path / "train.npy"), "--test", str(tmp_path / "test.npy"), "--patch-size", "3", "--out", str(out)])
    with PatchFile(out) as pf:
        assert CRS.from_wkt(pf.georef["crs"]) == CRS.from_string(UTM15)
        assert pf.georef["transform"] == GRID.to_gdal()
        np.testing.assert_allclose(pf.f["scene/hsi"][()], (arrays["hsi"] - arrays["hsi"].min((0, 1)))
                                   / np.ptp(arrays["hsi"], (0, 1)), atol=1e-6)
        sources = json.loads(pf.attrs["sources"])
    assert {os.path.basename(p) for p in sources} >= {"cube.hdr", "cube.img", "dsm.img", "dsm.hdr"}
    assert hsi in sources
    (tmp_path / "cube.img").unlink()
    with pytest.raises(readers.DataError, match=r"cube\.hdr: an ENVI header, but no data file beside it"):
        dp.prepare("custom", str(out), custom=dict(hsi=str(tmp_path / "cube.hdr"), aux=aux,
                                                   train=str(tmp_path / "train.npy"), test=str(tmp_path / "test.npy")))


def test_sources_without_georeferencing_say_so(tmp_path):
    for role, arr in scene_arrays().items():
        np.save(tmp_path / f"{role}.npy", arr)
    custom = {role: str(tmp_path / f"{role}.npy") for role in ("hsi", "aux", "train", "test")}
    dp.prepare("custom", str(tmp_path / "n.h5"), custom=custom, patch_size=3)
    with PatchFile(tmp_path / "n.h5") as pf:
        assert pf.georef is None
        assert not pf.attrs["georeferenced"] and pf.attrs["georeferencing"].startswith("none")
        assert "geotransform" not in pf.attrs and pf.attrs["crs_wkt"] == ""


@pytest.mark.slow
def test_a_georeferenced_scene_trained_and_mapped_and_an_unlabelled_scene_mapped_by_the_run(tmp_path):
    """End to end: GeoTIFFs -> DataPrepare -> model.py -> evaluate.py --map gives a map.tif on the
    source's grid; a second scene without labels, prepared --like the first, is mapped by the run,
    with no accuracy table."""
    import evaluate
    import model
    custom = geotiff_scene(tmp_path)
    data, run = tmp_path / "s.h5", tmp_path / "run"
    dp.main(["--dataset", "custom", "--hsi", custom["hsi"], "--aux", custom["aux"], "--train", custom["train"],
             "--test", custom["test"], "--patch-size", "5", "--class-names", "Road,Tree,Roof", "--out", str(data)])
    model.main(["--data", str(data), "--out", str(run), "--epochs", "1", "--filters", "4", "--fusion_units", "4",
                "--ema", "0"])
    evaluate.main(["--run", str(run), "--map"])
    with rasterio.open(custom["hsi"]) as src, rasterio.open(run / "map.tif") as ds:
        assert (ds.crs, ds.transform, ds.shape) == (src.crs, src.transform, (H, W))
        np.testing.assert_array_equal(ds.read(1), np.load(run / "map.npy"))
        assert json.loads(ds.tags()["class_names"]) == ["Road", "Tree", "Roof"]

    other = scene_arrays(seed=1)
    shifted = Affine(2.5, 0.0, 271075.0, 0.0, -2.5, 3290000.0)  # the next tile east
    hsi, aux = (write_raster(tmp_path / f"new_{k}.tif", other[k], UTM15, shifted) for k in ("hsi", "aux"))
    new = tmp_path / "new.h5"
    dp.main(["--dataset", "custom", "--hsi", hsi, "--aux", aux, "--like", str(data), "--out", str(new)])
    evaluate.main(["--run", str(run), "--data", str(new), "--map"])
    with rasterio.open(run / "map-new.tif") as ds:
        assert (ds.crs, ds.transform) == (CRS.from_string(UTM15), shifted)
        labels = ds.read(1)
    assert labels.min() >= 1 and labels.max() <= 3  # every pixel classified
    m = json.loads((run / "map-new.json").read_text())
    assert m["labelled"] is False and m["checkpoint_sha256"] and not (run / "metrics-new.json").exists()
    with pytest.raises(SystemExit, match="no labels, so there is nothing to score; add --map"):
        evaluate.main(["--run", str(run), "--data", str(new)])
