"""studies/ema.py: the figures of docs/ema-study.md, computed from hand-made curves; studies/lr.py: the
learning-rate rule, its refusal of runs made otherwise, and its runner."""
import os
import sys

import numpy as np
import pytest

sys.path.insert(0, os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), "studies"))
import ema  # noqa: E402
import lr as lr_study  # noqa: E402


def curve(raw, averaged):
    return {"test_accuracy_raw": np.array(raw), "test_accuracy_averaged": np.array(averaged),
            "epoch_seconds": np.ones(len(raw))}


def test_per_seed_figures_of_a_ten_epoch_curve():
    raw = [0.1, 0.5, 0.8, 0.9, 0.95, 0.88, 0.93, 0.91, 0.94, 0.90]
    averaged = [0.1, 0.4, 0.7, 0.88, 0.92, 0.92, 0.93, 0.93, 0.935, 0.93]
    row = ema.per_seed(curve(raw, averaged), refit=0.931)
    assert row["last_raw"] == 0.90 and row["last_averaged"] == 0.93 and row["last_averaged_bn_refit"] == 0.931
    assert row["best_on_test"] == 0.95 and row["best_epoch"] == 5  # epochs count from 1
    assert row["tail_epochs"] == 2  # the last 20 % of 10 epochs
    assert row["tail_std_raw"] == pytest.approx(np.std([0.94, 0.90], ddof=1))
    assert row["tail_std_averaged"] == pytest.approx(np.std([0.935, 0.93], ddof=1))


def test_shortest_schedule_is_the_first_epoch_within_half_a_point_of_the_last_on_the_mean_curve():
    a = curve([0] * 6, [0.5, 0.80, 0.90, 0.90, 0.92, 0.92])
    b = curve([0] * 6, [0.5, 0.90, 0.90, 0.92, 0.93, 0.92])
    first, mean = ema.shortest([a, b])
    np.testing.assert_allclose(mean, [0.5, 0.85, 0.90, 0.91, 0.925, 0.92])
    assert first == 5  # 0.91 is 1 point short of the last epoch's 0.92; 0.925 is within 0.5


def test_the_learning_rate_of_the_best_last_validation_epoch_ties_to_the_smaller():
    curves = {6e-5: [0.30, 0.34], 2e-4: [0.33, 0.37], 6e-4: [0.38, 0.37], 2e-3: [0.20, 0.36]}
    assert lr_study.choose(curves) == 2e-4  # 6e-4's best epoch is higher, but the rule reads the last
    figures = lr_study.summary(curves)[6e-4]
    assert figures["best"] == 0.38 and figures["best_epoch"] == 1 and figures["mean_last_3"] == pytest.approx(0.375)


def test_a_run_made_with_other_settings_is_refused_and_an_unfinished_one_resumed(tmp_path, demo_h5):
    import json

    import rundir
    from fileio import sha256
    run = tmp_path / "lr0.0002"
    assert lr_study.check_run(str(run), str(demo_h5), 2e-4, 3) == "new"
    run.mkdir()
    (run / "config.json").write_text(json.dumps({"lr": 2e-4, "select": "val", "data_sha256": sha256(str(demo_h5))}))
    (run / "history.csv").write_text("epoch,val_accuracy\n1,0.5\n2,0.6\n")
    assert lr_study.check_run(str(run), str(demo_h5), 2e-4, 3) == "resume"
    assert lr_study.check_run(str(run), str(demo_h5), 2e-4, 2) == "done"
    assert lr_study.val_curve(str(run), 2) == [0.5, 0.6]
    with pytest.raises(rundir.RunError, match="lr: the run has 0.0002, wanted 0.0006"):
        lr_study.check_run(str(run), str(demo_h5), 6e-4, 3)


def test_the_runner_runs_every_command_and_reports_a_failure_after_the_others(tmp_path):
    import subprocess
    marks = [tmp_path / f"m{i}" for i in range(3)]
    ok = [[sys.executable, "-c", f"open({str(m)!r}, 'w')"] for m in marks]
    lr_study.train(ok, jobs=2)
    assert all(m.exists() for m in marks)
    late = tmp_path / "late"
    with pytest.raises(subprocess.CalledProcessError):
        lr_study.train([[sys.executable, "-c", "raise SystemExit(3)"], [sys.executable, "-c", f"open({str(late)!r}, 'w')"]],
                       jobs=1)
    assert late.exists()
