"""baselines.py: the classic SVM and random-forest rows, as run directories that evaluate.py reads."""
import json

import numpy as np
import pytest

import DataPrepare
import baselines
import evaluate
from patchfile import PatchFile

RUN_FILES = ["config.json", "metrics.json", "metrics.md", "confusion_matrix.csv", "confusion_matrix.png",
             "leakage.png", "predictions.npy", "map.npy", "map.png", "map.tif", "ground_truth_train.png",
             "ground_truth_test.png"]


@pytest.fixture(scope="module")
def runs(demo_h5, tmp_path_factory):
    root = tmp_path_factory.mktemp("runs")
    for method, seed in (("svm", 0), ("rf", 0), ("rf", 1)):
        baselines.main(["--data", str(demo_h5), "--method", method, "--out", str(root / f"{method}{seed}"),
                        "--seed", str(seed)])
    return root


@pytest.mark.parametrize("method", ["svm0", "rf0"])
def test_baselines_beat_chance_by_far_and_write_a_complete_run(runs, demo_h5, method):
    run = runs / method
    assert sorted(p.name for p in run.iterdir()) == sorted(RUN_FILES)
    import rasterio
    with rasterio.open(run / "map.tif") as ds:  # the baselines' maps are GeoTIFFs too
        np.testing.assert_array_equal(ds.read(1), np.load(run / "map.npy"))
    m = json.loads((run / "metrics.json").read_text())
    assert m["OA"] > 0.8 and m["AA"] > 0.8  # chance is 1/6 on the demo scene
    with PatchFile(demo_h5) as pf:
        truth, n_train, normalisation = pf.labels("test"), len(pf.labels("train")), pf.attrs["normalisation"]
    pred = np.load(run / "predictions.npy") - 1
    assert m["OA"] == pytest.approx(np.mean(pred == truth), rel=1e-12)
    assert m["map"]["agrees_with_OA"] and m["protocol"] == baselines.BASELINE_PROTOCOL
    assert m["normalisation"] == normalisation  # the data file's, whatever it is
    config = json.loads((run / "config.json").read_text())
    grid = baselines.GRIDS[config["method"]]
    for k, v in config["best_params"].items():  # chosen inside the documented grid
        if k == "gamma":
            assert any(np.isclose(v, f * config["gamma_scale"]) for f in grid["gamma_factor"])
        else:
            assert v in grid[k]
    assert 0 < config["cv_accuracy"] <= 1 and config["folds"] == 5
    md = (run / "metrics.md").read_text()
    assert f"cross-validation on the {n_train} training pixels" in md and normalisation in md


def test_evaluate_treats_baselines_as_runs(runs, tmp_path, capsys):
    evaluate.main(["--runs", str(runs / "rf0"), str(runs / "rf1"), "--out", str(tmp_path)])
    agg = json.loads((tmp_path / "aggregate.json").read_text())
    oas = [json.loads((runs / r / "metrics.json").read_text())["OA"] for r in ("rf0", "rf1")]
    assert agg["OA"]["values"] == oas and agg["n_runs"] == 2
    first = json.loads((runs / "rf0" / "metrics.json").read_text())["leakage"]["bins"][0]["OA"]
    second = json.loads((runs / "rf1" / "metrics.json").read_text())["leakage"]["bins"][0]["OA"]
    assert agg["leakage"]["bins"][0]["OA"]["mean"] == pytest.approx((first + second) / 2)
    assert "Leak-free view" in (tmp_path / "aggregate.md").read_text()
    evaluate.main(["--compare", str(runs / "svm0"), str(runs / "rf0"), "--out", str(tmp_path)])
    c = json.loads((tmp_path / "compare-svm0-vs-rf0.json").read_text())
    assert c["n"] == 4400 and c["both_correct"] + c["only_a_correct"] + c["only_b_correct"] + c["both_wrong"] == 4400
    with pytest.raises(SystemExit, match="baseline run of baselines.py"):
        evaluate.main(["--run", str(runs / "svm0")])


def test_a_class_with_one_training_pixel_is_a_clear_error(tmp_path):
    train = np.zeros((20, 30), np.uint8)
    train[2:5, 2:5], train[10, 10] = 1, 2
    test = np.zeros((20, 30), np.uint8)
    test[6:9, 2:5], test[12, 12] = 1, 2
    rng = np.random.default_rng(0)
    for name, arr in dict(hsi=rng.random((20, 30, 3)), aux=rng.random((20, 30)), train=train, test=test).items():
        np.save(tmp_path / f"{name}.npy", arr)
    DataPrepare.prepare("custom", str(tmp_path / "o.h5"), custom={k: str(tmp_path / f"{k}.npy") for k in
                                                                  ("hsi", "aux", "train", "test")}, patch_size=3)
    with pytest.raises(SystemExit, match="baselines.py: error: a class has a single training pixel"):
        baselines.main(["--data", str(tmp_path / "o.h5"), "--method", "svm", "--out", str(tmp_path / "run")])
