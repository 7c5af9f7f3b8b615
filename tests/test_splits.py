"""Tests of the spatially disjoint split (--split blocks, splits.split_blocks): no test pixel within
2r of a training pixel (measured with the leakage report's distances), whole blocks, every class on
both sides, seeded, recorded in the file; too-big blocks and classes that cannot be split refused;
Houston 2013's distributed maps pooled (not the paper's split)."""
import os

import numpy as np
import pytest
import scipy.io as sio

import DataPrepare as dp
import readers
import splits
from patchfile import PatchFile, chebyshev_distance


def prepare_blocks(out, **kw):
    kw = dict(dict(split="blocks", train_fraction=0.1, block_size=16, seed=0), **kw)
    counts = dp.prepare("demo", str(out), **kw)
    with PatchFile(out) as pf:
        return counts, dict(train=pf.coords("train"), test=pf.coords("test"), attrs=pf.attrs,
                            distance=pf.distance_to_train("test"), p=pf.patch_size, shape=pf.shape)


def test_blocks_split_of_the_demo_scene_has_no_leakage(tmp_path):
    counts, d = prepare_blocks(tmp_path / "b.h5")
    r = d["p"] // 2
    # no test pixel within 2r of any training pixel: no test patch shares a pixel with a training patch
    assert d["distance"].min() > 2 * r
    assert chebyshev_distance(d["shape"], d["train"], d["test"]).min() == d["distance"].min()
    assert (counts["train"] > 0).all() and (counts["test"] > 0).all()  # every class on both sides
    # whole blocks: no 16 x 16 block holds both training and test pixels
    blocks = lambda c: set(map(tuple, c // 16))  # noqa: E731
    assert not blocks(d["train"]) & blocks(d["test"])
    a = d["attrs"]
    assert (a["split_method"], a["block_size"], a["buffer_px"], a["seed"]) == ("blocks", 16, 10, 0)
    assert a["train_fraction"] == 0.1
    assert "16 x 16 pixel blocks" in a["split"] and "seed 0" in a["split"]
    assert "Chebyshev distance 10 (2r, r = P // 2 = 5)" in a["split"]
    # the demo scene comes with its own maps: pooled, and said so
    assert "NOT the paper's split" in a["split"] and a["split_from_union"]


def test_blocks_split_is_seeded(tmp_path):
    _, first = prepare_blocks(tmp_path / "a.h5", seed=3)
    _, again = prepare_blocks(tmp_path / "b.h5", seed=3)
    _, other = prepare_blocks(tmp_path / "c.h5", seed=4)
    np.testing.assert_array_equal(first["train"], again["train"])
    np.testing.assert_array_equal(first["test"], again["test"])
    assert not np.array_equal(first["train"], other["train"])


def regions(h=64, w=64, size=8, classes=4):
    """A ground truth of size x size squares, class (i + j) % classes + 1: every class everywhere."""
    i, j = np.divmod(np.arange(h * w), w)
    return ((i // size + j // size) % classes + 1).reshape(h, w).astype(np.int32)


def test_split_blocks_aims_at_the_requested_counts():
    gt = regions()
    train, test, info = splits.split_blocks(gt, "gt", None, 16, 5, per_class=50, seed=0)
    per_class = np.bincount(train.ravel(), minlength=5)[1:]
    assert per_class.tolist() == [50] * 4  # training blocks' extra pixels are left out
    assert not ((train > 0) & (test > 0)).any() and (np.bincount(test.ravel(), minlength=5)[1:] > 0).all()
    assert chebyshev_distance(gt.shape, np.argwhere(train > 0), np.argwhere(test > 0)).min() > 4
    assert info["buffer_px"] == 4 and info["left_out_train"] == info["train_blocks"] * 256 - 200
    train, _, _ = splits.split_blocks(gt, "gt", None, 16, 5, fraction=0.25, seed=0)
    assert np.bincount(train.ravel(), minlength=5)[1:].tolist() == [256] * 4  # round(0.25 x 1024)


def test_too_big_a_block_is_refused(tmp_path):
    with pytest.raises(readers.DataError, match=r"--block-size 65 is larger than the 64 x 96 scene; choose at most 64"):
        dp.prepare("demo", str(tmp_path / "o.h5"), split="blocks", train_fraction=0.1, block_size=65)
    assert os.listdir(tmp_path) == []


def test_a_class_that_cannot_be_split_is_refused(tmp_path):
    gt = regions(classes=3)
    gt[gt == 3] = 1
    gt[40:44, 40:44] = 3  # class 3 lies in one 16 x 16 block only: no block for training and one for test
    np.save(tmp_path / "gt.npy", gt)
    np.save(tmp_path / "hsi.npy", np.random.default_rng(0).random((64, 64, 3)).astype(np.float32))
    np.save(tmp_path / "aux.npy", np.random.default_rng(1).random((64, 64)).astype(np.float32))
    custom = {k: str(tmp_path / f"{k}.npy") for k in ("hsi", "aux", "gt")}
    custom["class_names"] = ["Grass", "Road", "Pond"]
    with pytest.raises(readers.DataError, match=r"gt\.npy: the 16 x 16 block draw \(seed 0, --train-fraction 0\.1\) "
                                                r"leaves class 3 \(Pond\) without training pixels: its 16 labelled "
                                                r"pixel\(s\) lie in 1 block"):
        dp.prepare("custom", str(tmp_path / "o.h5"), custom=custom, split="blocks", train_fraction=0.1, block_size=16)
    # in two neighbouring blocks: one goes to training, the buffer takes every pixel of the other
    gt[40:44, 46:50] = 3
    np.save(tmp_path / "gt.npy", gt)
    with pytest.raises(readers.DataError, match=r"leaves class 3 \(Pond\) without test pixels: .* in 2 block\(s\), and "
                                                r"the 10-pixel buffer around the training pixels drops every test pixel"):
        dp.prepare("custom", str(tmp_path / "o.h5"), custom=custom, split="blocks", train_fraction=0.1, block_size=16)
    assert sorted(os.listdir(tmp_path)) == ["aux.npy", "gt.npy", "hsi.npy"]  # nothing half-written
    # a block draw from a small grid with a small patch works
    counts = dp.prepare("custom", str(tmp_path / "o.h5"), custom=custom, split="blocks", train_fraction=0.1,
                        block_size=4, patch_size=3)
    assert (counts["train"] > 0).all() and (counts["test"] > 0).all()


def test_split_options_are_checked(tmp_path):
    with pytest.raises(readers.DataError, match="--block-size is for --split blocks"):
        dp.prepare("demo", str(tmp_path / "o.h5"), block_size=8)
    with pytest.raises(readers.DataError, match="--split blocks draws the training pixels: give --train-per-class"):
        dp.prepare("demo", str(tmp_path / "o.h5"), split="blocks")
    with pytest.raises(readers.DataError, match="comes with its own train/test split.*--split blocks"):
        dp.prepare("demo", str(tmp_path / "o.h5"), train_fraction=0.1)
    with pytest.raises(SystemExit) as e:
        dp.main(["--dataset", "demo", "--split", "stripes", "--out", str(tmp_path / "o.h5")])
    assert e.value.code == 2
    assert os.listdir(tmp_path) == []


def test_houston_blocks_from_the_union_of_the_real_maps(houston_dir, tmp_path):
    train = sio.loadmat(houston_dir / "TRLabel.mat")["TRLabel"]
    test = sio.loadmat(houston_dir / "TSLabel.mat")["TSLabel"]
    for name in ("TRLabel.mat", "TSLabel.mat"):
        os.symlink(houston_dir / name, tmp_path / name)
    rng = np.random.default_rng(0)
    sio.savemat(tmp_path / "HSI.mat", {"HSI": rng.random(train.shape + (2,)).astype(np.float32)})
    sio.savemat(tmp_path / "LiDAR.mat", {"LiDAR": rng.random(train.shape).astype(np.float32)})
    out = tmp_path / "h.h5"
    counts = dp.prepare("houston2013", str(out), source=str(tmp_path), split="blocks", train_fraction=0.2, seed=0)
    union = np.maximum(train, test)
    n = np.bincount(union.ravel().astype(int), minlength=16)[1:]
    assert (counts["train"] > 0).all() and (counts["test"] > 0).all()
    assert (counts["train"] <= np.maximum(1, np.round(0.2 * n))).all()
    assert ((counts["train"] + counts["test"]) <= n).all()
    with PatchFile(out) as pf:
        split = pf.attrs["split"]
        assert pf.distance_to_train("test").min() > 10
        rows, cols = pf.coords("train").T
        assert (pf.labels("train") + 1 == union[rows, cols]).all()  # the classes as the maps say
    assert "drawn from the UNION of the train and test maps" in split and "NOT the paper's split" in split
