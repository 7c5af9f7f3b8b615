"""Tests of evaluate.py, metrics.py and report.py: every figure against an independent computation,
the test predictions and the full-scene map against patches cut directly, the leakage report,
McNemar's test, the honest labelling of protocols, normalisation and synthetic data, and the errors.

The runs are tiny networks (8 filters) trained for a few epochs on DataPrepare's synthetic demo
scene (64 x 96 pixels), so that predictions are not constant. Making that run takes about 20 s, so
the tests that use it are marked slow; `-m "not slow"` keeps the metric and patch-cutting tests."""
import csv
import json
import os
import shutil

import h5py
import numpy as np
import pytest

import evaluate
import fileio
import metrics
import rundir
from patchfile import PatchFile
from conftest import reference_patches

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")


# -----------------------------------------------------------------------------
# Fixtures: a demo patch file and a trained run directory, as model.py writes them

@pytest.fixture(scope="module")
def trained_run(demo_h5, tmp_path_factory):
    """A run directory like model.py's, select 'last', with a small network fitted for 10 epochs."""
    import keras
    import network
    keras.utils.set_random_seed(0)
    with PatchFile(demo_h5) as pf:
        train = pf.load("train")
    arch = dict(hsi_bands=train["hsi"].shape[-1], aux_bands=train["aux"].shape[-1], num_classes=6,
                patch_size=11, filters=8, fusion_units=8)
    net = network.build_model(**arch)
    clf = network.classifier(net)  # shares its weights with net; decoders need no training here
    clf.compile(optimizer=keras.optimizers.Adam(3e-3), loss="sparse_categorical_crossentropy")
    clf.fit({"hsi": train["hsi"], "aux": train["aux"]}, train["label"], epochs=10, batch_size=32, verbose=0)
    run = tmp_path_factory.mktemp("runs") / "demo-run"
    run.mkdir()
    net.save(run / "final.keras")
    shutil.copyfile(run / "final.keras", run / "selected.keras")
    write_config(run, demo_h5, "last", arch)
    return run


def write_config(run, data, select, arch, epochs=10):
    config = dict(data=str(data), select=select, protocol=rundir.PROTOCOLS[select], architecture=arch,
                  precision="float32", epochs=epochs, dataset="demo", data_sha256=fileio.sha256(str(data)))
    (run / "config.json").write_text(json.dumps(config))
    (run / "state.json").write_text(json.dumps(dict(epochs_done=epochs, select=select, selected_epoch=epochs)))


def copy_run(run, dest, select=None):
    """A copy of a run without its evaluation files, optionally claiming another selection."""
    shutil.copytree(run, dest, ignore=shutil.ignore_patterns("metrics*", "confusion*", "map*", "ground*"))
    if select:
        config = json.loads((dest / "config.json").read_text())
        write_config(dest, config["data"], select, config["architecture"])
    return dest


@pytest.fixture(scope="module")
def evaluated(trained_run):
    """The run evaluated once with --map, as a user would: (metrics.json, printed output)."""
    import io
    from contextlib import redirect_stdout
    buf = io.StringIO()
    with redirect_stdout(buf):
        evaluate.main(["--run", str(trained_run), "--map", "--batch-size", "500"])
    return json.loads((trained_run / "metrics.json").read_text()), buf.getvalue()


# -----------------------------------------------------------------------------
# The accuracy measures

def direct_kappa(y_true, y_pred):
    """Cohen's kappa by counting: (observed - chance agreement) / (1 - chance agreement)."""
    classes = np.union1d(y_true, y_pred)
    po = np.mean(y_true == y_pred)
    pe = sum(np.mean(y_true == k) * np.mean(y_pred == k) for k in classes)
    return (po - pe) / (1 - pe)


def test_kappa_variance_matches_a_hand_worked_example():
    # n = 50, p = [[.4, .1], [.2, .3]]; row sums p_i+ = (.5, .5), column sums p_+i = (.6, .4)
    # theta1 = .4 + .3 = .7;  theta2 = .5 * .6 + .5 * .4 = .5
    # theta3 = .4 (.5 + .6) + .3 (.5 + .4) = .44 + .27 = .71
    # theta4 = sum p_ij (p_j+ + p_+i)^2 = .4 (.5+.6)^2 + .1 (.5+.6)^2 + .2 (.5+.4)^2 + .3 (.5+.4)^2
    #        = .484 + .121 + .162 + .243 = 1.01
    # var = [.7 * .3 / .5^2 + 2 * .3 (2 * .7 * .5 - .71) / .5^3 + .3^2 (1.01 - 4 * .25) / .5^4] / 50
    #     = [.84 - .048 + .0144] / 50 = .8064 / 50 = .016128
    cm = np.array([[20, 5], [10, 15]])
    assert metrics.kappa_variance(cm) == pytest.approx(0.016128, rel=1e-12)
    # kappa of the same matrix: (.7 - .5) / (1 - .5) = .4
    y_true, y_pred = np.repeat([0, 0, 1, 1], [20, 5, 10, 15]), np.repeat([0, 1, 0, 1], [20, 5, 10, 15])
    assert metrics.accuracy_metrics(y_true, y_pred, 2)["kappa"] == pytest.approx(0.4, rel=1e-12)


def test_kappa_variance_agrees_with_the_spread_of_kappa_over_resampled_test_sets():
    """The formula is the large-sample variance of kappa: check it against the empirical variance
    of kappa over 4000 test sets of n pixels drawn from one confusion matrix's cell proportions."""
    rng = np.random.default_rng(1)
    cm = rng.integers(0, 40, (5, 5)) + np.diag([50, 60, 5, 30, 80])
    n = 2000
    p = cm.ravel() / cm.sum()
    draws = rng.multinomial(n, p, size=4000).reshape(-1, 5, 5) / n
    po = np.trace(draws, axis1=1, axis2=2)
    pe = np.sum(draws.sum(2) * draws.sum(1), axis=1)
    kappas = (po - pe) / (1 - pe)
    assert metrics.kappa_variance(cm * (n / cm.sum())) == pytest.approx(np.var(kappas, ddof=1), rel=0.08)


def test_metrics_match_direct_counting():
    rng = np.random.default_rng(0)
    c = 6
    y_true = rng.choice([0, 1, 2, 3, 5], 500)  # class 4 absent from the test set
    y_pred = np.where(rng.random(500) < 0.7, y_true, rng.integers(0, c, 500))
    y_pred[y_pred == 2] = 3  # class 2 never predicted: its user's accuracy is 0/0
    m = metrics.accuracy_metrics(y_true, y_pred, c)

    cm = np.zeros((c, c), int)
    np.add.at(cm, (y_true, y_pred), 1)
    np.testing.assert_array_equal(m["confusion_matrix"], cm)
    assert m["OA"] == pytest.approx(np.mean(y_true == y_pred), rel=1e-12)
    for k in range(c):
        true_k, pred_k = y_true == k, y_pred == k
        prod = np.sum(true_k & pred_k) / true_k.sum() if true_k.any() else np.nan
        user = np.sum(true_k & pred_k) / pred_k.sum() if pred_k.any() else np.nan
        np.testing.assert_allclose(m["producer"][k], prod, rtol=1e-12)
        np.testing.assert_allclose(m["user"][k], user, rtol=1e-12)
    assert np.isnan(m["producer"][4]) and np.isnan(m["user"][2])
    present = [0, 1, 2, 3, 5]
    assert m["AA"] == pytest.approx(np.mean([np.mean(y_pred[y_true == k] == k) for k in present]), rel=1e-12)
    assert m["kappa"] == pytest.approx(direct_kappa(y_true, y_pred), rel=1e-12)


def test_metrics_of_a_single_class_do_not_crash():
    m = metrics.accuracy_metrics(np.zeros(10, int), np.zeros(10, int), 3)
    assert m["OA"] == 1 and m["AA"] == 1 and np.isnan(m["kappa_var"])
    assert json.loads(json.dumps(fileio.jsonable(m)))["kappa_var"] is None


def test_result_files_appear_whole_or_not_at_all(tmp_path):
    path = tmp_path / "metrics.json"
    fileio.write_json(str(path), {"OA": np.float64(0.5), "kappa_var": float("nan"), "n": np.int64(3)})
    assert json.loads(path.read_text()) == {"OA": 0.5, "kappa_var": None, "n": 3}
    with pytest.raises(TypeError):  # fails half-way through json.dump: the old file stays as it was
        fileio.write_json(str(path), {"OA": 0.9, "bad": object()})
    assert json.loads(path.read_text())["OA"] == 0.5
    assert sorted(os.listdir(tmp_path)) == ["metrics.json"]  # no temporary file left behind
    with fileio.replacing(str(tmp_path / "map.npy")) as tmp:
        assert tmp.endswith(".npy") and os.path.dirname(tmp) == str(tmp_path)  # np.save keeps the name
        np.save(tmp, np.arange(3))
    np.testing.assert_array_equal(np.load(tmp_path / "map.npy"), np.arange(3))


# -----------------------------------------------------------------------------
# The test split and the full scene, cut on the fly

@pytest.mark.slow  # uses the trained run (~20 s to make once)
def test_predictions_through_the_file_equal_those_on_patches_cut_directly(trained_run, evaluated, demo_h5):
    """The test set's predictions, made from patches cut from the stored scene in bounded batches,
    are identical to the network's predictions on patches cut pixel by pixel from the whole scene;
    so are the map's at the test pixels."""
    import network
    metrics, _ = evaluated
    config = json.loads((trained_run / "config.json").read_text())
    clf = network.load_classifier(config["architecture"], str(trained_run / "final.keras"))
    with h5py.File(demo_h5, "r") as f:
        scene = {m: f["scene"][m][()] for m in ("hsi", "aux")}
        coords, labels = f["test/coord"][()], f["test/label"][()]
    direct = {m: reference_patches(scene[m], coords, 11) for m in scene}
    pred = np.argmax(clf.predict(direct, batch_size=4400, verbose=0), -1)
    assert len(np.unique(pred)) > 1, "the fixture's network predicts one class: the test would be weak"
    np.testing.assert_array_equal(np.load(trained_run / "predictions.npy"), pred + 1)
    labels_map = np.load(trained_run / "map.npy")
    np.testing.assert_array_equal(labels_map[coords[:, 0], coords[:, 1]], pred + 1)
    assert labels_map.shape == scene["hsi"].shape[:2] and labels_map.min() >= 1 and labels_map.max() <= 6
    assert metrics["OA"] == pytest.approx(np.mean(pred == labels), rel=1e-12)
    assert metrics["map"]["accuracy_test_pixels"] == metrics["OA"] and metrics["map"]["agrees_with_OA"]
    assert metrics["map"]["test_pixels_agreeing_with_patch_predictions"] == 4400
    assert metrics["test_pixels_per_second"] > 0 and metrics["peak_rss_mb"] > 0


@pytest.mark.slow
def test_model_py_run_is_evaluated_as_trained(demo_h5, tmp_path):
    """The contract between the two scripts, with no hand-written config: a run written by
    model.main is read by evaluate.main, whose figures equal a direct prediction with the run's
    selected checkpoint on patches cut pixel by pixel."""
    import keras
    import model
    import network
    run = tmp_path / "run"
    model.main(["--data", str(demo_h5), "--out", str(run), "--epochs", "3", "--lr", "3e-3", "--filters", "8",
                "--fusion_units", "8", "--bn_momentum", "0.9", "--select", "val", "--ema", "0"])
    evaluate.main(["--run", str(run)])
    m = json.loads((run / "metrics.json").read_text())
    state = json.loads((run / "state.json").read_text())
    clf = network.classifier(keras.saving.load_model(run / "selected.keras"))
    with h5py.File(demo_h5, "r") as f:
        scene = {k: f["scene"][k][()] for k in ("hsi", "aux")}
        coords, labels = f["test/coord"][()], f["test/label"][()]
    pred = np.argmax(clf.predict({k: reference_patches(scene[k], coords, 11) for k in scene}, verbose=0), -1)
    assert m["OA"] == pytest.approx(np.mean(pred == labels), rel=1e-12)
    assert m["kappa"] == pytest.approx(metrics.accuracy_metrics(labels, pred, 6)["kappa"], rel=1e-12)
    np.testing.assert_array_equal(np.load(run / "predictions.npy"), pred + 1)
    assert m["protocol"] == rundir.PROTOCOLS["val"] and m["checkpoint"] == "selected.keras"
    assert m["selected_epoch"] == state["selected_epoch"] and m["epochs_done"] == 3
    assert m["data_sha256"] == fileio.sha256(str(demo_h5))


# -----------------------------------------------------------------------------
# The files a run's evaluation writes

@pytest.mark.slow  # uses the trained run (~20 s to make once)
def test_metrics_json_says_what_made_the_numbers(evaluated, trained_run, demo_h5):
    m, printed = evaluated
    for key in ("OA", "AA", "kappa", "kappa_var", "per_class", "confusion_matrix", "protocol", "data",
                "data_sha256", "checkpoint", "epochs_done", "selected_epoch", "run", "n_test", "evaluated_at",
                "normalisation", "leakage", "leak_free", "predictions", "test_pixels_sha256"):
        assert key in m, key
    assert m["protocol"] == "last epoch (no checkpoint selection)" and m["checkpoint"] == "final.keras"
    assert m["data"] == "demo.h5" and m["data_sha256"] == fileio.sha256(str(demo_h5))
    assert m["normalisation"].startswith("min-max per band over the whole scene") and m["normalisation"] in printed
    assert m["n_test"] == 4400 == np.sum(m["confusion_matrix"])
    assert [c["name"] for c in m["per_class"]] == ["Grass", "Trees", "Bare soil", "Road", "Roof", "Water"]
    assert m["synthetic"] and "SYNTHETIC" in m["dataset_label"]
    cm = np.array(m["confusion_matrix"])
    assert m["OA"] == pytest.approx(np.trace(cm) / cm.sum(), rel=1e-12)
    assert [c["producer_accuracy"] for c in m["per_class"]] == pytest.approx(list(np.diag(cm) / cm.sum(1)))
    # the headline: figures, protocol, synthetic, where the files went
    assert f"OA {100 * m['OA']:.2f} %" in printed and m["protocol"] in printed and "SYNTHETIC" in printed
    assert str(trained_run / "metrics.json") in printed and str(trained_run / "map.png") in printed


@pytest.mark.slow  # uses the trained run (~20 s to make once)
def test_markdown_table_is_laid_out_like_the_paper(evaluated, trained_run):
    m, _ = evaluated
    md = (trained_run / "metrics.md").read_text()
    assert "SYNTHETIC" in md.splitlines()[0] and m["protocol"] in md
    per_class, leakage = md.split("## Accuracy by distance")
    rows = [line for line in per_class.splitlines() if line.startswith("| ")]
    assert rows[0].startswith("| No. | Class | Train | Test | Accuracy (%)")
    assert rows[1] == f"| 1 | Grass | 20 | {m['per_class'][0]['test']} | " \
                      f"{100 * m['per_class'][0]['producer_accuracy']:.2f} | " \
                      f"{100 * m['per_class'][0]['user_accuracy']:.2f} |"
    assert f"**{100 * m['OA']:.2f}**" in rows[-3] and "OA" in rows[-3]
    assert f"**{100 * m['AA']:.2f}**" in rows[-2] and f"**{m['kappa']:.4f}**" in rows[-1]
    bins = [line for line in leakage.splitlines() if line.startswith("| ")][1:]
    assert bins[0] == f"| 1-5 | inside the patch | {m['leakage']['bins'][0]['n']} | " \
                      f"{100 * m['leakage']['bins'][0]['n'] / m['n_test']:.2f} | " \
                      f"{100 * m['leakage']['bins'][0]['OA']:.2f} | {100 * m['leakage']['bins'][0]['AA']:.2f} |"


@pytest.mark.slow  # uses the trained run (~20 s to make once)
def test_confusion_csv_and_pictures(evaluated, trained_run):
    m, _ = evaluated
    with open(trained_run / "confusion_matrix.csv") as f:
        rows = list(csv.reader(f))
    assert rows[0][1:] == m["class_names"] and [r[0] for r in rows[1:]] == m["class_names"]
    assert [[int(v) for v in r[1:]] for r in rows[1:]] == m["confusion_matrix"]
    for name in ("confusion_matrix.png", "map.png", "ground_truth_train.png", "ground_truth_test.png", "leakage.png"):
        with open(trained_run / name, "rb") as f:
            assert f.read(8) == b"\x89PNG\r\n\x1a\n", name


# -----------------------------------------------------------------------------
# Protocols: which checkpoint, said plainly

@pytest.mark.slow  # uses the trained run (~20 s to make once)
def test_select_that_the_run_did_not_make_is_refused(trained_run):
    with pytest.raises(SystemExit, match="selected its checkpoint by 'last'.*--select val"):
        evaluate.main(["--run", str(trained_run), "--select", "val"])


@pytest.mark.slow  # uses the trained run (~20 s to make once)
def test_last_epoch_of_an_authors_run_is_labelled_and_kept_apart(trained_run, tmp_path, capsys):
    run = copy_run(trained_run, tmp_path / "authors-run", select="authors")
    evaluate.main(["--run", str(run)])
    own = json.loads((run / "metrics.json").read_text())
    assert own["checkpoint"] == "selected.keras" and "authors' protocol" in own["protocol"]
    assert "TEST" in own["protocol"] and own["protocol"] in capsys.readouterr().out
    evaluate.main(["--run", str(run), "--select", "last"])
    last = json.loads((run / "metrics-last.json").read_text())
    assert last["checkpoint"] == "final.keras" and last["protocol"] == "last epoch (no checkpoint selection)"
    assert json.loads((run / "metrics.json").read_text())["protocol"] == own["protocol"]  # not overwritten
    assert (run / "metrics-last.md").exists() and (run / "confusion_matrix-last.png").exists()


@pytest.mark.slow  # uses the trained run (~20 s to make once)
def test_stand_in_label_and_mixed_precision(trained_run, demo_h5, tmp_path, capsys):
    import keras
    data = tmp_path / "houston2013.h5"
    shutil.copyfile(demo_h5, data)
    with h5py.File(data, "r+") as f:
        f.attrs["synthetic"], f.attrs["dataset"] = False, "houston2013"
    run = copy_run(trained_run, tmp_path / "run")
    keras.mixed_precision.set_dtype_policy("float32")  # as a fresh process (a model.py run before may have left auto's)
    evaluate.main(["--run", str(run), "--data", str(data), "--stand-in", "--precision", "mixed"])
    # another data file and another precision: not the run's own metrics.json
    m = json.loads((run / "metrics-houston2013-mixed.json").read_text())
    assert not (run / "metrics.json").exists()
    assert m["stand_in"] and m["dataset_label"].startswith("houston2013 SYNTHETIC STAND-IN")
    assert m["precision"] == "mixed" and m["training_precision"] == "float32" and m["data_matches_training"] is False
    assert "trained in float32, inferred in mixed" in (run / "metrics-houston2013-mixed.md").read_text()
    assert "SYNTHETIC STAND-IN" in (run / "metrics-houston2013-mixed.md").read_text().splitlines()[0]
    assert "SYNTHETIC STAND-IN" in capsys.readouterr().out
    assert keras.mixed_precision.dtype_policy().name == "float32"  # not left mixed for the process


# -----------------------------------------------------------------------------
# Errors: one clear line

@pytest.mark.slow  # uses the trained run (~20 s to make once)
def test_errors_are_one_clear_message(trained_run, demo_h5, tmp_path):
    def error(argv):
        with pytest.raises(SystemExit) as e:
            evaluate.main(argv)
        assert str(e.value).startswith("evaluate.py: error: ")
        return str(e.value)

    assert "no config.json" in error(["--run", str(tmp_path)])
    run = copy_run(trained_run, tmp_path / "no-ckpt")
    os.remove(run / "final.keras")
    assert "no final.keras" in error(["--run", str(run)])

    no_test, no_scene = tmp_path / "no-test.h5", tmp_path / "no-scene.h5"
    for path, group in ((no_test, "test"), (no_scene, "scene")):
        shutil.copyfile(demo_h5, path)
        with h5py.File(path, "r+") as f:
            del f[group]
    assert "group 'test' missing" in error(["--run", str(trained_run), "--data", str(no_test)])
    assert "group 'scene' missing" in error(["--run", str(trained_run), "--data", str(no_scene)])
    assert "no such data file" in error(["--run", str(trained_run), "--data", str(tmp_path / "none.h5")])

    run = copy_run(trained_run, tmp_path / "seven")
    config = json.loads((run / "config.json").read_text())
    write_config(run, config["data"], "last", {**config["architecture"], "num_classes": 7, "hsi_bands": 40})
    msg = error(["--run", str(run)])
    assert "num_classes 6 in the data, 7 in the model" in msg and "hsi_bands 32 in the data, 40" in msg


# -----------------------------------------------------------------------------
# Several runs: mean +- sample std

def fake_runs(trained_run, tmp_path, oas, protocol=None):
    """Copies of the evaluated run whose metrics.json claim the given OAs (and AA = OA)."""
    base = json.loads((trained_run / "metrics.json").read_text())
    runs = []
    for i, oa in enumerate(oas):
        run = copy_run(trained_run, tmp_path / f"run{i}")
        m = dict(base, OA=oa, AA=oa, run=str(run))
        m["per_class"] = [dict(c, producer_accuracy=oa) for c in base["per_class"]]
        if protocol and i == len(oas) - 1:
            m["protocol"] = protocol
        (run / "metrics.json").write_text(json.dumps(m))
        runs.append(str(run))
    return runs


@pytest.mark.slow  # uses the trained run (~20 s to make once)
def test_aggregate_reports_mean_and_sample_std(trained_run, evaluated, tmp_path, capsys):
    runs = fake_runs(trained_run, tmp_path, [0.90, 0.92, 0.94])
    evaluate.main(["--runs", *runs, "--out", str(tmp_path / "agg")])
    agg = json.loads((tmp_path / "agg" / "aggregate.json").read_text())
    assert agg["n_runs"] == 3 and agg["OA"]["values"] == [0.90, 0.92, 0.94]
    assert agg["OA"]["mean"] == pytest.approx(0.92) and agg["OA"]["std"] == pytest.approx(0.02)  # ddof=1
    assert agg["per_class"][3]["producer_accuracy"]["std"] == pytest.approx(0.02)
    md = (tmp_path / "agg" / "aggregate.md").read_text()
    assert "92.00 ± 2.00" in md and "over 3 runs" in md and "SYNTHETIC" in md and agg["protocol"] in md
    assert agg["precision"] == ["float32"] and "trained in float32, inferred in float32" in md
    assert "OA 92.00 ± 2.00 %" in capsys.readouterr().out


@pytest.mark.slow  # uses the trained run (~20 s to make once)
def test_aggregate_refuses_to_mix_protocols(trained_run, evaluated, tmp_path):
    runs = fake_runs(trained_run, tmp_path, [0.90, 0.92], protocol="best TEST accuracy (the authors' ...)")
    with pytest.raises(SystemExit, match="differ in protocol"):
        evaluate.main(["--runs", *runs, "--out", str(tmp_path)])


@pytest.mark.slow  # uses the trained run (~20 s to make once)
def test_aggregate_evaluates_runs_without_metrics(trained_run, evaluated, tmp_path):
    fresh = copy_run(trained_run, tmp_path / "fresh")  # no metrics.json yet
    evaluate.main(["--runs", str(trained_run), str(fresh)])  # default --out: the first run's parent
    agg = json.loads((trained_run.parent / "aggregate.json").read_text())
    assert (fresh / "metrics.json").exists()
    assert agg["OA"]["values"][0] == agg["OA"]["values"][1] and agg["OA"]["std"] == 0


@pytest.mark.slow  # uses the trained run (~20 s to make once)
def test_cached_metrics_belong_to_the_exact_checkpoint(trained_run, evaluated, tmp_path):
    """A metrics.json is reused only while the checkpoint it names (by sha256) is the one in the
    run; a checkpoint replaced at the same epoch count is evaluated again."""
    import keras
    [run] = fake_runs(trained_run, tmp_path, [0.123])
    evaluate.main(["--runs", run, "--out", str(tmp_path / "agg")])
    assert json.loads((tmp_path / "agg" / "aggregate.json").read_text())["OA"]["values"] == [0.123]  # reused
    net = keras.saving.load_model(os.path.join(run, "final.keras"))
    net.set_weights([w * 0.5 for w in net.get_weights()])  # another network, same epochs_done in state.json
    net.save(os.path.join(run, "final.keras"))
    evaluate.main(["--runs", run, "--out", str(tmp_path / "agg")])
    m = json.loads((tmp_path / "run0" / "metrics.json").read_text())
    assert m["OA"] != 0.123 and m["checkpoint_sha256"] == fileio.sha256(os.path.join(run, "final.keras"))
    assert json.loads((tmp_path / "agg" / "aggregate.json").read_text())["OA"]["values"] == [m["OA"]]


# -----------------------------------------------------------------------------
# Leakage: accuracy by distance to the nearest training pixel

def test_leakage_bins_against_a_brute_force_count():
    rng = np.random.default_rng(5)
    shape, c, p = (40, 50), 4, 5  # r = 2: bins 1-2, 3-4, 5-8, 9-20, > 20
    labelled = np.argwhere(rng.random(shape) < 0.25)
    corner = np.flatnonzero((labelled < 12).all(1))  # training pixels in one corner: every bin has pixels
    is_train = np.zeros(len(labelled), bool)
    is_train[rng.choice(corner, 12, replace=False)] = True
    train, test = labelled[is_train], labelled[~is_train]
    y_true = rng.integers(0, c, len(test))
    y_pred = np.where(rng.random(len(test)) < 0.7, y_true, rng.integers(0, c, len(test)))
    from patchfile import chebyshev_distance
    bins = metrics.leakage_bins(chebyshev_distance(shape, train, test), y_true, y_pred, c, p)
    d = np.array([min(max(abs(t[0] - s[0]), abs(t[1] - s[1])) for s in train) for t in test])  # pair by pair
    edges = [(1, 2), (3, 4), (5, 8), (9, 20), (21, 10 ** 9)]
    assert [(b["min"], b["max"]) for b in bins] == [(1, 2), (3, 4), (5, 8), (9, 20), (21, None)]
    assert [b["name"] for b in bins] == ["inside the patch", "patches overlap", "near", "middle", "far"]
    for b, (lo, hi) in zip(bins, edges):
        sel = (d >= lo) & (d <= hi)
        assert b["n"] == sel.sum() > 0
        assert b["OA"] == pytest.approx(np.mean(y_true[sel] == y_pred[sel]), rel=1e-12)
        present = np.unique(y_true[sel])
        assert b["AA"] == pytest.approx(np.mean([np.mean(y_pred[sel][y_true[sel] == k] == k) for k in present]))
    assert sum(b["n"] for b in bins) == len(test)


@pytest.mark.slow  # uses the trained run (~20 s to make once)
def test_leakage_report_and_leak_free_view_of_a_run(evaluated, demo_h5, trained_run):
    m, printed = evaluated
    with PatchFile(demo_h5) as pf:
        train, test, truth = pf.coords("train"), pf.coords("test"), pf.labels("test")
    pred = np.load(trained_run / "predictions.npy") - 1
    inside = np.array([any(max(abs(t - s)) <= 5 for s in train) for t in test])  # a training pixel in the patch
    assert m["leak_free"]["n"] == (~inside).sum() and m["leakage"]["bins"][0]["n"] == inside.sum()
    assert m["leak_free"]["OA"] == pytest.approx(np.mean(pred[~inside] == truth[~inside]), rel=1e-12)
    assert m["leak_free"]["kappa"] == pytest.approx(direct_kappa(truth[~inside], pred[~inside]), rel=1e-9)
    assert f"leak-free ({(~inside).sum()} test pixels whose patch holds no training pixel): OA " \
           f"{100 * m['leak_free']['OA']:.2f} %" in printed
    md = (trained_run / "metrics.md").read_text()
    assert "| 1-5 | inside the patch | " in md and "Leak-free view" in md


# -----------------------------------------------------------------------------
# McNemar's test between two runs

def test_mcnemar_against_hand_worked_tables():
    # 100 pixels: both right 50, only A right 30, only B right 10, both wrong 10
    a = np.repeat([True, True, False, False], [50, 30, 10, 10])
    b = np.repeat([True, False, True, False], [50, 30, 10, 10])
    r = metrics.mcnemar(a, b)
    assert (r["both_correct"], r["only_a_correct"], r["only_b_correct"], r["both_wrong"]) == (50, 30, 10, 10)
    # chi2 = (|30 - 10| - 1)^2 / 40 = 361 / 40 = 9.025; p = P(chi2_1 > 9.025) = erfc(sqrt(9.025 / 2))
    assert r["statistic"] == pytest.approx(9.025) and "continuity" in r["test"]
    from math import erfc, sqrt
    assert r["p_value"] == pytest.approx(erfc(sqrt(9.025 / 2)), rel=1e-9)
    # OA_A - OA_B = (30 - 10) / 100 = 0.2; se = sqrt(40 - 20^2 / 100) / 100 = 0.06; 1.959964 * 0.06
    assert r["OA_difference"] == pytest.approx(0.2)
    assert r["OA_difference_ci95"] == pytest.approx([0.2 - 1.959964 * 0.06, 0.2 + 1.959964 * 0.06], abs=1e-6)
    # few discordant pixels: exact binomial, two-sided: 2 P(X <= 2 | 10, 1/2) = 2 (1 + 10 + 45) / 1024
    a = np.repeat([True, True, False], [80, 2, 8])
    b = np.repeat([True, False, True], [80, 2, 8])
    r = metrics.mcnemar(a, b)
    assert r["test"].startswith("exact") and r["statistic"] is None
    assert r["p_value"] == pytest.approx(112 / 1024, rel=1e-12)


@pytest.mark.slow  # uses the trained run (~20 s to make once)
def test_compare_two_runs(trained_run, evaluated, tmp_path, capsys):
    other = copy_run(trained_run, tmp_path / "other")
    evaluate.main(["--run", str(other), "--select", "last"])  # the same network: no discordant pixel
    # make B differ: flip its prediction at the first 40 test pixels to a wrong class
    m = json.loads((trained_run / "metrics.json").read_text())
    pred = np.load(other / "predictions.npy")
    with PatchFile(m["data_path"]) as pf:
        truth = pf.labels("test") + 1
    pred[:40] = np.where(truth[:40] == 1, 2, 1)
    np.save(other / "predictions.npy", pred)
    evaluate.main(["--compare", str(trained_run), str(other), "--out", str(tmp_path / "cmp")])
    c = json.loads((tmp_path / "cmp" / "compare-demo-run-vs-other.json").read_text())
    a_right = np.load(trained_run / "predictions.npy") == truth
    assert c["only_a_correct"] == int(a_right[:40].sum()) and c["only_b_correct"] == 0
    assert c["n"] == 4400 and c["OA_a"] == pytest.approx(m["OA"])
    assert "McNemar's test" in capsys.readouterr().out
    md = (tmp_path / "cmp" / "compare-demo-run-vs-other.md").read_text()
    assert "| **A correct** |" in md and "95 % confidence interval" in md


@pytest.mark.slow  # uses the trained run (~20 s to make once)
def test_compare_refuses_runs_on_other_test_pixels(trained_run, evaluated, tmp_path):
    other = copy_run(trained_run, tmp_path / "other")
    evaluate.main(["--run", str(other)])
    m = json.loads((other / "metrics.json").read_text())
    (other / "metrics.json").write_text(json.dumps(dict(m, test_pixels_sha256="0" * 64)))
    with pytest.raises(SystemExit, match="scored on different test pixels"):
        evaluate.main(["--compare", str(trained_run), str(other)])
    # both claim the same pixels, but the patch file on disk now holds others (prepared again)
    same = copy_run(trained_run, tmp_path / "same")
    shutil.copy(other / "metrics.json", same / "metrics.json")
    shutil.copy(other / "predictions.npy", same / "predictions.npy")
    with pytest.raises(SystemExit, match="no longer holds the test pixels .* was scored on"):
        evaluate.main(["--compare", str(other), str(same)])


def test_the_curves_show_a_study_s_test_trace(tmp_path, monkeypatch):
    """trace_test's columns (raw and averaged TEST accuracy per epoch) are drawn, labelled as a study's."""
    import matplotlib.pyplot as plt
    import report
    shown = []
    monkeypatch.setattr(plt, "close", lambda fig: shown.append(fig))
    history = tmp_path / "history.csv"
    history.write_text("epoch,loss,class_accuracy,test_accuracy_raw,test_accuracy_averaged\n"
                       "0,2.0,0.3,0.40,0.38\n1,1.5,0.5,0.55,0.52\n")
    report.plot_curves(str(history), str(tmp_path / "curves.png"), {"dataset": "demo", "out": "runs/x"})
    lines = {line.get_label(): list(line.get_ydata()) for line in shown[0].axes[1].get_lines()}
    assert lines["TEST pixels, raw weights (trace_test: a study, selects nothing)"] == [0.40, 0.55]
    assert lines["TEST pixels, averaged weights (trace_test: a study, selects nothing)"] == [0.38, 0.52]
    assert (tmp_path / "curves.png").stat().st_size > 0


def test_comparisons_of_a_sweeps_runs_get_their_own_files_and_never_overwrite_another(tmp_path):
    """OUT/network/seed0 against OUT/svm/seed0 and against OUT/rf/seed0 were both written to
    compare-seed0-vs-seed0.json, the second over the first."""
    assert evaluate.compare_name("runs/x/network/seed0") == "network-seed0"
    assert evaluate.compare_name("runs/demo-run/") == "demo-run"
    path = tmp_path / "compare-a-vs-b.json"
    path.write_text(json.dumps({"run_a": "runs/x/network/seed0", "run_b": "runs/x/svm/seed0"}))
    evaluate.refuse_other_comparison(str(path), "runs/x/network/seed0", "runs/x/svm/seed0")  # the same: again
    with pytest.raises(evaluate.EvaluationError, match="holds the comparison of runs/x/network/seed0 with "
                                                       "runs/x/svm/seed0, not of .* with runs/x/rf/seed0"):
        evaluate.refuse_other_comparison(str(path), "runs/x/network/seed0", "runs/x/rf/seed0")
