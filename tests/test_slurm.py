"""reproduce.py --slurm: the job array's script (without Slurm), and a sweep through a real one-node
Slurm on this machine that gives the same table as the local sweep.

The cluster is started by .ci/slurm-up (munged, slurmctld, slurmd; CI installs the packages with
`.ci/slurm-up --install`). When it cannot be started the end-to-end test skips, saying why, or
fails when CI is set, as the tests of ../shared fail with REQUIRE_SHARED_DATA=1."""
import json
import os
import shlex
import subprocess
import sys
import time
from pathlib import Path

import pytest

import reproduce
import slurm
from test_reproduce import TINY, quiet, refused

ROOT = Path(reproduce.__file__).resolve().parent
SLURM_UP = ROOT / ".ci" / "slurm-up"
WAIT_S = 900  # the array's 3 runs on 2 CPUs that another job may share


def fake(bin_dir, name, body):
    """A stand-in for one of Slurm's commands on PATH: a shell script with `body`."""
    bin_dir.mkdir(exist_ok=True)
    path = bin_dir / name
    path.write_text(f"#!/bin/sh\n{body}\n")
    path.chmod(0o755)


@pytest.fixture
def no_slurm(tmp_path, monkeypatch):
    """A PATH whose sbatch and squeue are stand-ins: sbatch prints job id 4242 (its arguments in
    sbatch.args), squeue prints what the file squeue.out holds (nothing: the job is done)."""
    bin_dir = tmp_path / "bin"
    fake(bin_dir, "sbatch", f'echo "$@" > {bin_dir}/sbatch.args; echo 4242')
    fake(bin_dir, "squeue", f"cat {bin_dir}/squeue.out 2>/dev/null || true")
    monkeypatch.setenv("PATH", f"{bin_dir}{os.pathsep}{os.environ['PATH']}")
    return bin_dir


# ----------------------------------------------------------------------------- the script, without Slurm
def test_script_has_one_task_per_line_and_the_options_given_only(tmp_path):
    tasks = [("a", "echo first"), ("b", "echo second"), ("c", "echo third")]
    plain = slurm.job_script(tasks, tmp_path, "sweep")
    lines = plain.splitlines()
    assert "#SBATCH --array=0-2" in lines and "#SBATCH --job-name=sweep" in lines
    assert f"#SBATCH --output={tmp_path}/%A_%a.out" in lines
    assert not [line for line in lines if line.startswith(("#SBATCH --partition", "#SBATCH --gpus", "#SBATCH --time"))]
    full = slurm.job_script(tasks, tmp_path, "sweep", partition="gpu", gpus_per_task="a100:1", time="4:00:00")
    given = {"#SBATCH --partition=gpu", "#SBATCH --gpus-per-task=a100:1", "#SBATCH --time=4:00:00"}
    assert given <= set(full.splitlines())
    sbatch = [i for i, line in enumerate(lines) if line.startswith("#SBATCH")]
    assert sbatch == list(range(2, 2 + len(sbatch)))  # before the first command, or sbatch ignores them
    script = tmp_path / "sweep.sh"
    script.write_text(plain)
    for i, word in enumerate(["first", "second", "third"]):  # task i does the i-th line, and only it
        done = subprocess.run(["bash", script], env={**os.environ, "SLURM_ARRAY_TASK_ID": str(i)},
                              capture_output=True, text=True)
        assert done.returncode == 0 and done.stdout.splitlines() == [f"array task {i}: {tasks[i][0]}", word]
    outside = subprocess.run(["bash", script], env={**os.environ, "SLURM_ARRAY_TASK_ID": "3"}, capture_output=True)
    assert outside.returncode == 2 and b"has tasks 0-2" in outside.stderr


def test_submission_lists_the_remaining_runs_and_refuses_while_they_are_queued(demo_h5, tmp_path, no_slurm):
    out = tmp_path / "out"
    argv = ["--data", str(demo_h5), "--methods", "network,rf", "--seeds", "2", "--out", str(out), "--epochs", "1",
            *TINY]
    listed, _ = quiet([*argv, "--print-commands"])
    log, _ = quiet([*argv, "--slurm", "--partition", "debug", "--time", "30"])
    script = (out / "slurm" / "sweep.sh").read_text()
    assert f"submitted Slurm job 4242: 4 array task(s) 0-3, script {out / 'slurm' / 'sweep.sh'}" in log
    assert (no_slurm / "sbatch.args").read_text().split() == ["--parsable", str(out / "slurm" / "sweep.sh")]
    assert "#SBATCH --array=0-3" in script and "#SBATCH --partition=debug" in script and "--gpus-per-task" not in script
    # the tasks' lines are --print-commands' lines (one rule for what a run does), with this interpreter
    ran = [line.strip() for line in script.splitlines() if line.strip().startswith("cd ")]
    assert [shlex.split(line) for line in ran] == [
        [sys.executable if w == "python" else w for w in shlex.split(line)] for line in listed.splitlines()]
    record = json.loads((out / "slurm" / "job.json").read_text())
    assert record["job_id"] == "4242" and [t["run"].split(":")[0] for t in record["tasks"]] == [
        "network seed 0", "network seed 1", "rf seed 0", "rf seed 1"]
    assert not list(out.glob("*/seed*/*")) and not (out / "table.json").exists()  # nothing ran here
    (no_slurm / "squeue.out").write_text("4242_0 RUNNING\n4242_[1-3] PENDING\n")
    for extra in (["--slurm"], [], ["--print-commands"]):  # no call may start the queued runs again
        message = refused([*argv, *extra])
        assert "job 4242 of an earlier --slurm submission" in message and "4242_[1-3] PENDING" in message
    (no_slurm / "squeue.out").unlink()  # the array is done: planning goes on
    assert quiet([*argv, "--print-commands"])[0] == listed


@pytest.mark.parametrize("extra, message", [
    (["--partition", "debug"], "--partition only with --slurm"),
    (["--time", "10", "--gpus-per-task", "1"], "--gpus-per-task, --time only with --slurm"),
    (["--slurm", "--gpus", "0,1"], "with --slurm ask for each array task's GPUs with --gpus-per-task"),
    (["--slurm", "--print-commands"], "--print-commands and --slurm: choose one"),
    (["--slurm", "--time", "soon"], "--time 'soon': expected Slurm's MINUTES, HH:MM:SS or D-HH:MM:SS"),
    (["--slurm", "--gpus-per-task", "0"], "--gpus-per-task '0': expected a count >= 1 or TYPE:COUNT"),
])
def test_bad_slurm_flags_are_one_clear_error(demo_h5, tmp_path, no_slurm, extra, message):
    argv = ["--data", str(demo_h5), "--seeds", "2", "--out", str(tmp_path / "out"), *extra]
    assert message in refused(argv)
    assert not (tmp_path / "out").exists()


def test_without_sbatch_on_path_slurm_is_not_installed(demo_h5, tmp_path, monkeypatch):
    monkeypatch.setenv("PATH", str(tmp_path))  # no sbatch, no squeue
    message = refused(["--data", str(demo_h5), "--seeds", "1", "--out", str(tmp_path / "out"), "--slurm"])
    assert "sbatch, squeue not found on PATH: Slurm is not installed here" in message


# ----------------------------------------------------------------------------- a real one-node Slurm
def unavailable(reason):
    """Skip, or fail where CI is set: there the cluster must come up."""
    if os.environ.get("CI", "").lower() not in ("", "0", "false"):
        pytest.fail(f"{reason} (CI is set, so this is an error, not a skip)")
    pytest.skip(reason)


@pytest.fixture(scope="module")
def cluster():
    """A one-node Slurm: .ci/slurm-up returns at once when sinfo shows it up, else starts it."""
    try:
        up = subprocess.run(["bash", str(SLURM_UP)], capture_output=True, text=True, timeout=180)
    except subprocess.TimeoutExpired:
        unavailable(f"{SLURM_UP} did not bring Slurm up within 180 s")
    if up.returncode:
        unavailable(f"no Slurm here: {SLURM_UP} failed: {(up.stderr or up.stdout).strip()[-500:]}")


def wait_for(job, folder):
    """Poll squeue until the array is gone (pending, running and completing tasks are listed)."""
    deadline = time.time() + WAIT_S
    while time.time() < deadline:
        q = subprocess.run(["squeue", "-h", "-j", job, "-o", "%i %T"], capture_output=True, text=True)
        if (q.returncode == 0 and not q.stdout.strip()) or "Invalid job id" in q.stderr:
            return
        time.sleep(3)
    subprocess.run(["scancel", job])
    tails = {p.name: p.read_text()[-1000:] for p in sorted(folder.glob(f"{job}_*.out"))}
    pytest.fail(f"job {job} still in the queue after {WAIT_S} s (cancelled); its output: {tails}")


def table_values(out):
    """{row: {method: (mean, std, n)}} of a sweep's table.json: classes, OA, AA, kappa, leak-free OA."""
    table = json.loads((out / "table.json").read_text())
    return {r["row"]: {m: (v["mean"], v["std"], v["n"]) for m, v in r["values"].items()} for r in table["rows"]}


@pytest.mark.slow
def test_a_sweep_through_slurm_gives_the_local_sweeps_table(cluster, demo_h5, tmp_path, request):
    out, local = tmp_path / "via-slurm", tmp_path / "local"
    argv = ["--data", str(demo_h5), "--methods", "network,rf", "--seeds", "2", "--epochs", "1", *TINY]
    subprocess.run([sys.executable, "baselines.py", "--data", str(demo_h5), "--method", "rf", "--seed", "0", "--out",
                    str(out / "rf" / "seed0"), "--no-map"], cwd=ROOT, check=True, capture_output=True)  # by hand
    log, _ = quiet([*argv, "--out", str(out), "--slurm"])
    job = json.loads((out / "slurm" / "job.json").read_text())["job_id"]
    request.addfinalizer(lambda: subprocess.run(["scancel", job], capture_output=True))  # a failed test leaves none
    assert "1 done, 3 to do" in log and f"submitted Slurm job {job}: 3 array task(s) 0-2" in log
    script = (out / "slurm" / "sweep.sh").read_text()
    assert "#SBATCH --array=0-2" in script and str(out / "network" / "seed0") in script
    assert str(out / "rf" / "seed0") not in script and str(out / "rf" / "seed1") in script
    assert not (out / "table.json").exists()
    message = refused([*argv, "--out", str(out), "--slurm"])  # its runs take tens of seconds: still queued
    assert f"job {job} of an earlier --slurm submission" in message and "still in the queue" in message
    wait_for(job, out / "slurm")
    logs = sorted((out / "slurm").glob(f"{job}_*.out"))
    assert [p.name for p in logs] == [f"{job}_{i}.out" for i in range(3)]
    log, _ = quiet([*argv, "--out", str(out), "--slurm"])  # all done: the table, as the local sweep writes it
    assert "4 done, 0 to do" in log, {p.name: p.read_text()[-1500:] for p in logs}
    assert "submitted" not in log and (out / "table.md").exists()
    quiet([*argv, "--out", str(local)])
    via, here = table_values(out), table_values(local)
    assert list(via) == list(here) and {"OA", "AA", "kappa"} <= set(via) and len(via) == 6 + 4
    for row, values in here.items():
        for method, (mean, std, n) in values.items():
            assert via[row][method] == (pytest.approx(mean, abs=1e-12), pytest.approx(std, abs=1e-12), n), (row, method)
