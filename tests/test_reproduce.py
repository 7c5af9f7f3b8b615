"""reproduce.py: a paper table from one command; a second run of it does only what is left, and a run
directory made with other settings is refused before anything runs."""
import contextlib
import io
import json
import shlex
import shutil
import subprocess
import sys
from pathlib import Path

import h5py
import numpy as np
import pytest

import reproduce
import rundir
import slurmcluster
from slurmcluster import table_values, wait_for

ROOT = Path(reproduce.__file__).resolve().parent
cluster = slurmcluster.cluster  # the fixture: a one-node Slurm, or a skip (a failure in CI) saying why
# one branch, and whole batches of the demo's 4 x 120 patches: the training step is traced once
# (float32, direct convolutions: the same on every CI machine, whatever auto chooses there)
TINY = ["--ema", "0", "--precision", "float32", "--conv_algorithm", "direct", "--filters", "4", "--fusion_units", "4",
        "--kernel_sizes", "3", "--lr", "1e-3", "--batch_size", "40"]


def refused(argv):
    """The one-line error main exits with; nothing may have been run."""
    with pytest.raises(SystemExit) as e:
        reproduce.main(argv)
    assert str(e.value.code).startswith("reproduce.py: error: ")
    return str(e.value.code)


def quiet(argv):
    """reproduce.main's stdout and stderr, as text."""
    out, err = io.StringIO(), io.StringIO()
    with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
        reproduce.main(argv)
    return out.getvalue(), err.getvalue()


# ----------------------------------------------------------------------------- bad input, before anything runs
@pytest.mark.parametrize("extra, message", [
    (["--methods", "network,cnn"], "unknown method cnn; known: network, no_coupled, no_self_loop, "
                                   "no_reconstruction, svm, rf"),
    (["--methods", "rf,rf"], "method given twice: rf"),
    (["--seeds", "3,5,3"], "seed 3 given twice"),
    (["--epoch", "2"], "unknown flag --epoch (did you mean --epochs?)"),
    (["--epochs", "five"], "--epochs five: expected int"),
    (["--lr", "1e-3", "--lr", "2e-3"], "--lr is given twice"),
    (["--seed", "1"], "--seed is not passed on: the seeds come from --seeds"),
    (["--coupled", "false"], "--coupled is set by the methods"),
])
def test_bad_input_is_one_clear_error(demo_h5, tmp_path, extra, message):
    seeds = [] if "--seeds" in extra else ["--seeds", "2"]
    argv = ["--data", str(demo_h5), *seeds, "--out", str(tmp_path / "out"), *extra]
    assert message in refused([*argv, "--print-commands"])  # first: a missing check must not start runs
    assert message in refused(argv)
    assert not (tmp_path / "out").exists()


def test_seeds_and_flag_names():
    assert reproduce.parse_seeds("3") == [0, 1, 2]
    assert reproduce.parse_seeds("3,5,7") == [3, 5, 7]
    assert reproduce.parse_seeds("7,") == [7]
    settings = reproduce.model_settings()  # read from model.py's block, as text
    assert settings["epochs"] == 500 and settings["coupled"] is True and settings["kernel_sizes"] == "3,5"
    assert {"lr", "ema", "precision", "select", "max_minutes"} <= set(settings)
    typed = reproduce.parse_overrides(["--lr", "0.001", "--batch-size=32"], settings)
    assert typed == {"lr": ("0.001", 1e-3), "batch_size": ("32", 32)}


def test_data_without_the_splits_a_method_needs_is_refused(demo_h5, tmp_path):
    no_val = tmp_path / "no_val.h5"
    shutil.copy(demo_h5, no_val)
    with h5py.File(no_val, "a") as f:
        del f["val"]
    argv = ["--data", str(no_val), "--seeds", "1", "--out", str(tmp_path / "out"), "--print-commands"]
    assert "no val split" in refused([*argv, "--select", "val"])
    quiet([*argv, "--select", "val", "--methods", "rf"])  # the baselines monitor nothing
    unlabelled = tmp_path / "unlabelled.h5"
    shutil.copy(demo_h5, unlabelled)
    with h5py.File(unlabelled, "a") as f:
        f.attrs["labelled"] = False
    assert "has no labels" in refused(["--data", str(unlabelled), "--seeds", "1", "--out", str(tmp_path / "o")])


def test_a_folder_that_is_not_a_run_is_refused(demo_h5, tmp_path):
    (tmp_path / "out" / "rf" / "seed1").mkdir(parents=True)
    (tmp_path / "out" / "rf" / "seed1" / "notes.txt").write_text("mine")
    argv = ["--data", str(demo_h5), "--seeds", "2", "--methods", "rf", "--out", str(tmp_path / "out")]
    assert "seed1 holds files but no config.json" in refused([*argv, "--print-commands"])
    message = refused(argv)
    assert "seed1 holds files but no config.json" in message and "nothing was run" in message
    assert not (tmp_path / "out" / "rf" / "seed0").exists()


# ----------------------------------------------------------------------------- a real sweep
@pytest.fixture(scope="module")
def sweep(demo_h5, tmp_path_factory):
    """network,rf over seeds 0 and 1 with --epochs 2, after the rf runs were swept alone and network/seed0
    was made by hand with one epoch (as by a sweep killed after that run's first epoch), both at once.
    Returns the folder, the sweep's arguments, the commands listed before it, its log and the
    modification times of the rf runs' files before it."""
    out = tmp_path_factory.mktemp("sweep") / "out"
    argv = ["--data", str(demo_h5), "--methods", "network,rf", "--seeds", "2", "--out", str(out), "--epochs", "2", *TINY]
    hand = subprocess.Popen([sys.executable, "model.py", "--data", str(demo_h5), "--out", str(out / "network" / "seed0"),
                             "--seed", "0", "--epochs", "1", *TINY], cwd=ROOT, stdout=subprocess.DEVNULL,
                            stderr=subprocess.PIPE)
    quiet(["--data", str(demo_h5), "--methods", "rf", "--seeds", "2", "--out", str(out), "--gpus", "0,1"])
    assert hand.wait() == 0, hand.stderr.read().decode()[-2000:]
    rf_mtimes = {f: f.stat().st_mtime_ns for f in out.glob("rf/seed*/*")}
    before, _ = quiet([*argv, "--print-commands"])
    log, _ = quiet([*argv, "--gpus", "0,1"])
    return dict(out=out, argv=argv, before=before, log=log, rf_mtimes=rf_mtimes)


def metrics(run):
    return json.loads((run / "metrics.json").read_text())


@pytest.mark.slow
def test_print_commands_lists_exactly_the_remaining_runs(sweep, tmp_path):
    out = sweep["out"]
    lines = [shlex.split(line) for line in sweep["before"].splitlines()]
    assert len(lines) == 2  # the rf runs were done
    resumed, new = lines
    assert resumed[resumed.index("--resume") + 1] == str(out / "network" / "seed0") and "--epochs" in resumed
    assert "--data" not in resumed and resumed[-3:] == ["evaluate.py", "--run", str(out / "network" / "seed0")]
    assert new[new.index("--out") + 1] == str(out / "network" / "seed1") and new[new.index("--seed") + 1] == "1"
    assert new[new.index("--epochs") + 1] == "2" and new[new.index("--lr") + 1] == "1e-3"
    stdout, stderr = quiet([*sweep["argv"], "--print-commands"])
    assert stdout == "" and "nothing left to do: all 4 runs" in stderr
    partial = tmp_path / "partial"  # a copy with one run unevaluated and one baseline never made
    shutil.copytree(out, partial)
    (partial / "network" / "seed1" / "metrics.json").unlink()
    shutil.rmtree(partial / "rf" / "seed0")
    argv = [*sweep["argv"], "--print-commands"]
    argv[argv.index("--out") + 1] = str(partial)
    stdout, _ = quiet(argv)
    lines = [shlex.split(line) for line in stdout.splitlines()]
    assert len(lines) == 2
    assert "model.py" not in lines[0] and lines[0][-3:] == ["evaluate.py", "--run", str(partial / "network" / "seed1")]
    rf0 = lines[1]
    assert "baselines.py" in rf0 and rf0[rf0.index("--seed") + 1] == "0" and "--no-map" in rf0 and "--lr" not in rf0
    assert rf0[rf0.index("--out") + 1] == str(partial / "rf" / "seed0")


@pytest.mark.slow
def test_table_holds_the_runs_own_figures(sweep):
    out = sweep["out"]
    table = json.loads((out / "table.json").read_text())
    rows = {r["row"]: r["values"] for r in table["rows"]}
    assert [m["method"] for m in table["methods"]] == ["network", "rf"] and table["seeds"] == [0, 1]
    oa = {m: [metrics(out / m / f"seed{s}")["OA"] for s in (0, 1)] for m in ("network", "rf")}
    for m, values in oa.items():
        assert rows["OA"][m]["mean"] == pytest.approx(np.mean(values), abs=1e-12)
        assert rows["OA"][m]["std"] == pytest.approx(np.std(values, ddof=1), abs=1e-12)
        first = [metrics(out / m / f"seed{s}")["per_class"][0]["producer_accuracy"] for s in (0, 1)]
        assert rows["1 Grass"][m]["mean"] == pytest.approx(np.mean(first), abs=1e-12)
        leak = [metrics(out / m / f"seed{s}")["leak_free"]["OA"] for s in (0, 1)]
        assert rows["leak-free OA"][m]["mean"] == pytest.approx(np.mean(leak), abs=1e-12)
    assert list(rows)[-4:] == ["OA", "AA", "kappa", "leak-free OA"] and len(rows) == 6 + 4
    md = (out / "table.md").read_text()
    assert md.startswith("# ") and "SYNTHETIC" in md.splitlines()[0]
    assert table["data_sha256"] in md and "seeds: 2 (0, 1)" in md and "last epoch (no checkpoint selection)" in md
    assert "normalisation: min-max per band" in md and "checkpoint selected on the test set" in md
    assert "- network trained in: float32" in md.splitlines()  # the network runs' precision, not the baselines'
    assert f"| **OA (%)** | {100 * np.mean(oa['network']):.2f} ± {100 * np.std(oa['network'], ddof=1):.2f} |" in md
    csv_lines = (out / "table.csv").read_text().splitlines()
    assert csv_lines[0] == "row,unit,network mean,network std,rf mean,rf std" and len(csv_lines) == 11
    assert "on GPU 0" in sweep["log"] and "on GPU 1" in sweep["log"] and "2 done, 2 to do" in sweep["log"]
    assert "run 1 of 2: network seed 0: continue" in sweep["log"] and "run 2 of 2: network seed 1: start" in sweep["log"]


@pytest.mark.slow
def test_a_killed_sweep_is_continued_and_finished_runs_are_not_redone(sweep):
    out = sweep["out"]
    seed0, seed1 = out / "network" / "seed0", out / "network" / "seed1"
    assert len((seed0 / "history.csv").read_text().splitlines()) == 1 + 2
    config = json.loads((seed0 / "config.json").read_text())
    assert config["epochs"] == 2 and [r["from_epoch"] for r in config["resumes"]] == [1]
    assert "resumes" not in json.loads((seed1 / "config.json").read_text())
    assert metrics(seed0)["epochs_done"] == metrics(seed1)["epochs_done"] == 2
    assert {f: f.stat().st_mtime_ns for f in out.glob("rf/seed*/*")} == sweep["rf_mtimes"]  # done: not redone
    files = sorted(out.glob("*/seed*/metrics.json")) + sorted(out.glob("*/seed*/final.keras"))
    assert len(files) == 6
    mtimes = [f.stat().st_mtime_ns for f in files]
    log, _ = quiet(sweep["argv"])
    assert "4 done, 0 to do" in log
    assert [f.stat().st_mtime_ns for f in files] == mtimes


def with_flag(argv, flag, value):
    """argv with flag's value replaced (TINY gives --batch_size already; the sweep refuses a flag given twice)."""
    i = argv.index(flag)
    return [*argv[:i + 1], value, *argv[i + 2:]]


@pytest.mark.slow
def test_a_run_made_with_other_settings_is_refused_naming_each_difference(sweep, demo_h5, tmp_path):
    out = sweep["out"]
    files = sorted(out.glob("*/seed*/*.json"))
    mtimes = [f.stat().st_mtime_ns for f in files]
    argv = [*sweep["argv"], "--print-commands"]  # a missing check must not start runs
    message = refused(with_flag(argv, "--batch_size", "32"))
    assert message.count("batch_size: the run has 40, wanted 32") == 2 and "rf/seed" not in message
    assert "2 run directories are refused, nothing was run" in message
    assert refused(with_flag(sweep["argv"], "--batch_size", "32")) == message
    message = refused([a if a != "2" else "1" for a in argv])  # --seeds 1 --epochs 1
    assert "epochs: the run has 2, wanted 1" in message
    other = tmp_path / "other.h5"
    shutil.copy(demo_h5, other)
    with h5py.File(other, "a") as f:
        f.attrs["note"] = "changed"
    message = refused([a if a != str(demo_h5) else str(other) for a in argv])
    assert message.count("data: the run was made on") == 4
    # the same settings spelled otherwise are the same settings: nothing is left to do
    stdout, stderr = quiet([*sweep["argv"][:-4], "--lr", "0.0010", "--batch-size", "40", "--stacked_streams", "yes",
                            "--print-commands"])
    assert stdout == "" and "nothing left to do" in stderr
    assert [f.stat().st_mtime_ns for f in files] == mtimes


@pytest.mark.slow
def test_the_same_sweep_through_slurm_gives_the_same_table(sweep, cluster, tmp_path, request):
    """reproduce.py --slurm submits what is left as one sbatch array (seed 0 of each method was done
    before), refuses while it is queued, then writes the table, equal to the local sweep's: 2 seeds x
    2 methods."""
    out = tmp_path / "via-slurm"
    argv = with_flag(sweep["argv"], "--out", str(out))
    for method in ("network", "rf"):
        shutil.copytree(sweep["out"] / method / "seed0", out / method / "seed0")
    log, _ = quiet([*argv, "--slurm"])
    job = json.loads((out / "slurm" / "job.json").read_text())["job_id"]
    request.addfinalizer(lambda: subprocess.run(["scancel", job], capture_output=True))  # a failed test leaves none
    assert "2 done, 2 to do" in log and f"submitted Slurm job {job}: 2 array task(s) 0-1" in log
    script = (out / "slurm" / "sweep.sh").read_text()
    assert "#SBATCH --array=0-1" in script and str(out / "network" / "seed1") in script
    assert str(out / "network" / "seed0") not in script and str(out / "rf" / "seed0") not in script
    assert str(out / "rf" / "seed1") in script
    assert not (out / "table.json").exists()
    message = refused([*argv, "--slurm"])  # its runs take tens of seconds: still queued
    assert f"job {job} of an earlier --slurm submission" in message and "still in the queue" in message
    wait_for(job, out / "slurm")
    logs = sorted((out / "slurm").glob(f"{job}_*.out"))
    assert [p.name for p in logs] == [f"{job}_{i}.out" for i in range(2)]
    log, _ = quiet([*argv, "--slurm"])  # all done: the table, as the local sweep writes it
    assert "4 done, 0 to do" in log, {p.name: p.read_text()[-1500:] for p in logs}
    assert "submitted" not in log and (out / "table.md").exists()
    via, here = table_values(out), table_values(sweep["out"])
    assert list(via) == list(here) and {"OA", "AA", "kappa"} <= set(via) and len(via) == 6 + 4
    for row, values in here.items():
        for method, (mean, std, n) in values.items():
            assert via[row][method] == (pytest.approx(mean, abs=1e-12), pytest.approx(std, abs=1e-12), n), (row, method)


def test_a_run_made_before_the_warm_up_existed_counts_as_without_it():
    """Its config.json lacks 'warmup': it averaged with fixed decays, so only --warmup false adopts it."""
    assert rundir.differences({"lr": 1e-3}, {"lr": 1e-3, "warmup": True}) == ["warmup: the run has False, wanted True"]
    assert rundir.differences({"lr": 1e-3}, {"lr": 1e-3, "warmup": False}) == []


def test_a_run_made_before_the_spectral_stem_switch_counts_as_with_the_stem():
    """It was built with the 3-D band-grid stem, the only stem then (network.architecture reads it so too)."""
    assert rundir.differences({"lr": 1e-3}, {"lr": 1e-3, "spectral_stem": True}) == []
    assert rundir.differences({"lr": 1e-3}, {"lr": 1e-3, "spectral_stem": False}) == [
        "spectral_stem: the run has True, wanted False"]
