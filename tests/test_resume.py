"""model.py's run directory over several jobs: --overwrite, --resume checking the data and recording
each job, and killed runs, with weight averaging, resumed to exactly the uninterrupted run."""
import json
import os
import shlex
import shutil

import h5py
import numpy as np
import pytest

import keras

import network
from patchfile import PatchFile
from runs import TINY, assert_same_history, history, same_weights, train


@pytest.mark.slow
def test_overwrite_starts_afresh_and_resume_checks_the_data_and_records_each_job(demo_h5, tmp_path):
    data, run = str(tmp_path / "demo.h5"), str(tmp_path / "run")
    shutil.copyfile(demo_h5, data)
    common = ["--data", data, "--out", run, "--lr", "1e-3", *TINY]
    train([*common, "--epochs", "2"])
    # max_minutes belongs to the job that set it: this one stops after its first epoch ...
    train([*common, "--epochs", "4", "--overwrite", "--max_minutes", "1e-6"])
    assert [r["epoch"] for r in history(run)] == ["0"]  # ... and the first run's rows are gone with it
    train(["--resume", run, "--epochs", "3"])  # this one runs its two epochs to the end
    assert [r["epoch"] for r in history(run)] == ["0", "1", "2"]
    train(["--resume", run, "--epochs", "4", "--max_minutes", "0"])
    assert len(history(run)) == 4
    config = json.load(open(os.path.join(run, "config.json")))
    assert shlex.split(config["command"])[-2:] == ["--max_minutes", "1e-6"]  # the first job's command stays
    assert [(j["overrides"], j["max_minutes"], j["from_epoch"]) for j in config["resumes"]] == \
        [({"epochs": 3}, 0.0, 1), ({"epochs": 4}, 0.0, 3)]
    assert shlex.split(config["resumes"][0]["command"]) == ["python", "model.py", "--resume", run, "--epochs", "3"]
    recorded = config["data_sha256"]
    with h5py.File(data, "a") as f:  # the same path, prepared again
        f.attrs["seed"] = 99
    before = sorted(os.listdir(run)), open(os.path.join(run, "config.json")).read()
    with pytest.raises(SystemExit, match=rf"demo.h5: sha256 [0-9a-f]{{16}}\.\.\. is not {recorded[:16]}\.\.\., the file "
                                         rf"{run} was trained on"):
        train(["--resume", run, "--epochs", "5"])
    assert (sorted(os.listdir(run)), open(os.path.join(run, "config.json")).read()) == before


@pytest.mark.slow
def test_killed_runs_resume_to_exactly_the_uninterrupted_run(demo_h5, tmp_path):
    """The learning rate decays every epoch here, so a resumed run on the wrong rate would differ, and
    the moving average of the weights (ema 0.9) must resume with them. Two kills: one after an epoch's
    history row only (a stray row), one after its final.keras but before its state.json (a checkpoint
    ahead of the state). The uninterrupted run is then scored with its averaged weights."""
    import evaluate
    common = ["--data", str(demo_h5), "--lr", "1e-3", "--lr_constant_epochs", "1", "--lr_decay", "0.7", *TINY,
              "--ema", "0.9", "--select", "val"]
    whole, stray, ahead = (str(tmp_path / n) for n in ("whole", "stray", "ahead"))
    train([*common, "--out", whole, "--epochs", "4"])
    rate = keras.saving.load_model(os.path.join(whole, "final.keras")).optimizer.learning_rate
    assert float(rate) == pytest.approx(1e-3 * np.exp(-0.7 * 3), rel=1e-5)  # epoch 4's rate

    train([*common, "--out", stray, "--epochs", "2"])
    with open(os.path.join(stray, "history.csv")) as f:
        last = f.read().splitlines()[-1]
    with open(os.path.join(stray, "history.csv"), "a") as f:  # epoch 3's row, logged just before a kill
        f.write("2," + last.split(",", 1)[1] + "\n")
    train(["--resume", stray, "--epochs", "4"])

    train([*common, "--out", ahead, "--epochs", "2"])
    state_after_2 = open(os.path.join(ahead, "state.json")).read()
    train(["--resume", ahead, "--epochs", "3"])
    with open(os.path.join(ahead, "state.json"), "w") as f:  # killed before epoch 3's state.json
        f.write(state_after_2)
    train(["--resume", ahead, "--epochs", "4"])

    want = json.load(open(os.path.join(whole, "state.json")))
    for run in (stray, ahead):
        assert_same_history(history(run), history(whole), run)
        same_weights(whole, run, "final.keras", averaged=True)
        same_weights(whole, run, "selected.keras")
        state = json.load(open(os.path.join(run, "state.json")))
        assert {k: state[k] for k in ("epochs_done", "selected_epoch", "best")} == \
            {k: want[k] for k in ("epochs_done", "selected_epoch", "best")}
    rows = history(whole)
    assert want["selected_epoch"] == 1 + max(range(4), key=lambda e: float(rows[e]["val_accuracy"]))

    evaluate.main(["--run", whole])
    m = json.load(open(os.path.join(whole, "metrics.json")))
    assert "averaged" in m["weights"] and "moving average, ema=0.9" in m["protocol"]
    config = json.load(open(os.path.join(whole, "config.json")))
    clf = network.load_classifier(config["architecture"], os.path.join(whole, "selected.keras"), averaged=True)
    with PatchFile(demo_h5) as pf:
        assert m["OA"] == pytest.approx(np.mean(network.predict_split(clf, pf, "test") == pf.labels("test")), abs=1e-12)
