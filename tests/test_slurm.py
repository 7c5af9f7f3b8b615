"""reproduce.py --slurm without Slurm: the job array's script, the submission and its refusals (stand-ins
for sbatch and squeue on PATH). The sweep through a real one-node Slurm is in test_reproduce.py, where
it shares the local sweep it is compared with."""
import json
import os
import shlex
import subprocess
import sys

import pytest

import slurm
from test_reproduce import TINY, quiet, refused

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
