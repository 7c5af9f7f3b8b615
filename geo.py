"""Georeferencing: what a source raster says about where its pixels lie on the ground, the check
that a scene's rasters share one grid, the words the patch file records it with (patchfile.py
stores it: crs_wkt, geotransform), and the label GeoTIFF that a GIS opens in place (class numbers,
colour table, class names).

A georef is a dict {"crs": WKT text (or any CRS rasterio reads, such as "EPSG:26915") or None,
"transform": the affine transform as 6 numbers in GDAL's order (x origin, pixel width, row
rotation, y origin, column rotation, pixel height, the last negative for north-up rasters),
"source": the file it was read from}; None means the data
carries no georeferencing (.mat, .npy and .npz files never do; a TIFF without a CRS and with the
identity transform does not either). Rasters are read through rasterio (its bundled GDAL).

It imports readers.py (DataError, the raster file names) and nothing else of the project; rasterio
is imported where it is used.
"""
import json

import numpy as np

from readers import DataError, is_raster, quiet_rasterio, raster_data_path, warn

ORDER = "GDAL order: (x origin, pixel width, row rotation, y origin, column rotation, pixel height)"
NONE_TEXT = "none: the sources carry no georeferencing (.mat, .npy, .npz, or rasters without a CRS or transform)"
MODALITY_ROLES = ("hsi", "aux")


# -----------------------------------------------------------------------------
# Reading and comparing

def read_georef(path):
    """The georef of a raster file (GeoTIFF, ENVI .img/.hdr with map info, ...), or None when the
    file is not a raster or carries no CRS and no transform."""
    if not is_raster(path):
        return None
    import rasterio
    try:
        with quiet_rasterio(), rasterio.open(raster_data_path(path)) as ds:
            crs, transform = ds.crs, ds.transform
    except rasterio.errors.RasterioError as e:
        raise DataError(f"{path}: cannot read its georeferencing ({e})") from None
    if crs is None and transform.is_identity:
        return None
    return dict(crs=crs.to_wkt() if crs is not None else None,
                transform=tuple(float(v) for v in transform.to_gdal()), source=path)


def crs_text(georef):
    """A short name of the georef's CRS (EPSG:26915 where it has a code), for messages."""
    if georef is None:
        return "none"
    if not georef.get("crs"):
        return "no CRS"
    from rasterio.crs import CRS
    crs = CRS.from_user_input(georef["crs"])
    epsg = crs.to_epsg()
    return f"EPSG:{epsg}" if epsg else crs.to_string()


def transform_text(georef):
    return "(" + ", ".join(f"{v:.10g}" for v in georef["transform"]) + ")"


def describe(georef):
    """One line: the CRS and the transform (GDAL order), or 'no georeferencing'."""
    if georef is None:
        return "no georeferencing"
    return f"CRS {crs_text(georef)}, transform {transform_text(georef)}"


def note(georef):
    """The patch file's `georeferencing` text: where the georef came from and the order of the
    geotransform attribute, or that there is none."""
    if georef is None:
        return NONE_TEXT
    return (f"from {georef.get('source', 'the source rasters')}: {describe(georef)}; "
            f"geotransform attribute in {ORDER}")


def same_grid(a, b):
    """True when two georefs have the same CRS (compared as CRSs, not as text) and the same transform
    (to a ten-thousandth of a pixel)."""
    if (a is None) != (b is None):
        return False
    if a is None:
        return True
    if bool(a.get("crs")) != bool(b.get("crs")):
        return False
    if a.get("crs"):
        from rasterio.crs import CRS
        if CRS.from_user_input(a["crs"]) != CRS.from_user_input(b["crs"]):
            return False
    ta, tb = np.asarray(a["transform"], float), np.asarray(b["transform"], float)
    pixel = max(abs(ta[1]), abs(ta[5]), abs(ta[2]), abs(ta[4]), 1e-12)
    return bool(np.all(np.abs(ta - tb) <= 1e-4 * pixel))


def check_grids(rasters):
    """The scene's georef from [(role, path, georef or None)] (role: hsi, aux, train, test, gt, ...):
    every modality and every label raster that carries georeferencing must share one grid (same CRS,
    same transform), else one DataError naming both files and both values. A modality without
    georeferencing beside one with it is taken to lie on that grid (with a warning); label rasters
    without it (the Houston 2013 contest's sample maps) are fine. Returns None when nothing carries
    any."""
    carrying = [(role, path, g) for role, path, g in rasters if g is not None]
    if not carrying:
        return None
    # the modalities' georef first: the grid the pixels were measured on
    carrying.sort(key=lambda r: r[0] not in MODALITY_ROLES)
    role0, path0, ref = carrying[0]
    for role, path, g in carrying[1:]:
        if path != path0 and not same_grid(ref, g):
            raise DataError(f"rasters on different grids or CRSs: {path0} ({role0}) has {describe(ref)}; "
                            f"{path} ({role}) has {describe(g)} (transforms in {ORDER}); resample them onto one "
                            "grid first")
    for role, path, g in rasters:
        if g is None and role in MODALITY_ROLES:
            warn(f"{path} ({role}) carries no georeferencing; it is taken to lie on the grid of {path0} "
                 f"({describe(ref)})")
    if role0 not in MODALITY_ROLES:
        warn(f"neither modality carries georeferencing; the file records that of the label raster {path0}")
    return dict(ref)


# -----------------------------------------------------------------------------
# The label GeoTIFF

def write_label_geotiff(path, labels, georef=None, palette=None, class_names=None, nodata=0):
    """Write a map of class numbers (H, W) (1..C; 0 unlabelled) as a one-band GeoTIFF a GIS opens in
    place: uint8 where the classes fit, else uint16; the georef's CRS and transform (none without a
    georef, and a tag saying so); `palette` (C x 3 RGB, class c's colour in row c - 1) as its colour
    table, 0 transparent; 0 as nodata (None: no nodata value); the class names in its metadata tags
    (`class_names` as JSON, and CLASS_1=..., CLASS_2=...). Written under a temporary name and renamed,
    so a failure leaves no file. georef: a dict {"crs": WKT or None, "transform": 6 numbers in GDAL
    order}, as PatchFile.georef gives it."""
    import rasterio
    from rasterio.transform import Affine
    from fileio import replacing
    labels = np.asarray(labels)
    if labels.ndim != 2:
        raise ValueError(f"a label map is (H, W), got shape {labels.shape}")
    if labels.size and labels.min() < 0:
        raise ValueError(f"class numbers are 1..C with 0 unlabelled, found {labels.min()}")
    top = int(labels.max()) if labels.size else 0
    if top > 65535:
        raise ValueError(f"class numbers up to 65535 fit a GeoTIFF colour table, found {top}")
    dtype = np.uint8 if top < 256 else np.uint16
    h, w = labels.shape
    profile = dict(driver="GTiff", width=w, height=h, count=1, dtype=dtype, compress="deflate")
    if nodata is not None:
        profile["nodata"] = nodata
    if georef is not None:
        profile["transform"] = Affine.from_gdal(*georef["transform"])
        if georef.get("crs"):
            profile["crs"] = georef["crs"]
    names = list(class_names or [])
    tags = dict(class_names=json.dumps(names, ensure_ascii=False),
                classes="pixel values 1..C are classes (CLASS_c tags); 0 is unlabelled",
                **{f"CLASS_{c}": str(n) for c, n in enumerate(names, 1)})
    tags["georeferencing"] = (f"{crs_text(georef)}; transform {transform_text(georef)} in {ORDER}"
                              if georef is not None else "none: the source data carried no georeferencing")
    if palette is not None:
        palette = np.asarray(palette, int).reshape(-1, 3)
        tags["palette"] = json.dumps(palette.tolist())
        profile["photometric"] = "palette"
    with quiet_rasterio(), replacing(str(path)) as tmp:
        with rasterio.open(tmp, "w", **profile) as ds:
            ds.write(labels.astype(dtype, copy=False), 1)
            ds.update_tags(**tags)
            if palette is not None:
                colours = {0: (0, 0, 0, 0)}
                colours.update({c: (*map(int, rgb), 255) for c, rgb in enumerate(palette, 1)})
                ds.write_colormap(1, colours)
    return str(path)

