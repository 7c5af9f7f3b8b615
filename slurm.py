"""Slurm job arrays for reproduce.py --slurm: one sbatch script whose array task i does the i-th
remaining run, its submission, and whether an earlier submission still has tasks in the queue.

reproduce.py plans the sweep and hands over each run's shell line (its one rule for what a run
executes); this module only lays those lines out for Slurm. Plain Python, no Keras or NumPy: the
submitting machine needs neither. Everything lives in the sweep's OUT/slurm/:

    sweep.sh        the last script submitted (a case on $SLURM_ARRAY_TASK_ID)
    job.json        its job id, and which run each array task does
    JOB_TASK.out    each task's stdout and stderr (#SBATCH --output=%A_%a.out)
"""
import datetime
import json
import os
import re
import shlex
import shutil
import subprocess

SCRIPT, RECORD = "sweep.sh", "job.json"
# What sbatch accepts for these options (the subset worth checking before a submission fails)
GPUS = re.compile(r"^([A-Za-z0-9_.-]+:)?[1-9][0-9]*$")  # 1, or type:count such as a100:2
TIME = re.compile(r"^((\d+-)?\d+(:\d+){0,2}|infinite|unlimited)$", re.IGNORECASE)  # minutes, h:m:s, d-h[:m[:s]]
PARTITION = re.compile(r"^[A-Za-z0-9_.-]+(,[A-Za-z0-9_.-]+)*$")


class SlurmError(ValueError):
    """A job array that cannot be written, submitted or looked up; reproduce.py reports it as a SweepError."""


def check_options(partition=None, gpus_per_task=None, time=None):
    """Refuse option values sbatch would refuse, naming the flag and what it takes."""
    if partition is not None and not PARTITION.match(partition):
        raise SlurmError(f"--partition {partition!r}: expected a partition name (or a comma list), e.g. gpu")
    if gpus_per_task is not None and not GPUS.match(gpus_per_task):
        raise SlurmError(f"--gpus-per-task {gpus_per_task!r}: expected a count >= 1 or TYPE:COUNT, e.g. 1 or a100:1")
    if time is not None and not TIME.match(time):
        raise SlurmError(f"--time {time!r}: expected Slurm's MINUTES, HH:MM:SS or D-HH:MM:SS, e.g. 4:00:00")


def require(*commands):
    """The absolute paths of Slurm's client commands; a clear error when one is not on PATH."""
    paths = [shutil.which(c) for c in commands]
    missing = [c for c, p in zip(commands, paths) if p is None]
    if missing:
        raise SlurmError(f"{', '.join(missing)} not found on PATH: Slurm is not installed here (or its client "
                         f"commands are not on PATH); --slurm submits to a Slurm cluster from one of its login nodes")
    return paths


def directives(name, n_tasks, folder, partition=None, gpus_per_task=None, time=None):
    """The #SBATCH lines: one array task per run, each task's output in folder; the optional
    options only when given, so the cluster's defaults apply otherwise."""
    if n_tasks < 1:
        raise SlurmError("a job array needs at least one task")
    lines = [f"--job-name={name}", f"--array=0-{n_tasks - 1}",
             f"--output={os.path.join(os.path.abspath(folder), '%A_%a.out')}"]
    lines += [f"--{flag}={value}" for flag, value in
              (("partition", partition), ("gpus-per-task", gpus_per_task), ("time", time)) if value is not None]
    return [f"#SBATCH {shlex.quote(line)}" for line in lines]


def job_script(tasks, folder, name, partition=None, gpus_per_task=None, time=None):
    """The sbatch script's text. tasks: [(label, shell line)], task i doing the i-th; an index
    outside them (a hand-edited --array) fails that task instead of doing nothing."""
    head = ["#!/bin/bash", f"# reproduce.py --slurm: {len(tasks)} run(s), one array task each, written "
            f"{datetime.datetime.now().isoformat(timespec='seconds')}",
            *directives(name, len(tasks), folder, partition, gpus_per_task, time),
            "set -euo pipefail", 'case "${SLURM_ARRAY_TASK_ID:?submit this script with sbatch}" in']
    body = []
    for i, (label, line) in enumerate(tasks):
        body += [f"  {i})", f"    echo {shlex.quote(f'array task {i}: {label}')}", f"    {line}", "    ;;"]
    tail = [f'  *) echo "array task $SLURM_ARRAY_TASK_ID: this script has tasks 0-{len(tasks) - 1}" >&2; exit 2 ;;',
            "esac", ""]
    return "\n".join(head + body + tail)


def write_file(path, text):
    """Write whole or not at all (a rename), as fileio does, without its NumPy."""
    tmp = f"{path}.tmp-{os.getpid()}"
    with open(tmp, "w") as f:
        f.write(text)
    os.replace(tmp, path)


def submit(folder, tasks, name, partition=None, gpus_per_task=None, time=None):
    """Write folder/sweep.sh, submit it with sbatch and record the job in folder/job.json; returns
    (job id, script path)."""
    check_options(partition, gpus_per_task, time)
    sbatch, = require("sbatch")
    os.makedirs(folder, exist_ok=True)
    script = os.path.join(folder, SCRIPT)
    write_file(script, job_script(tasks, folder, name, partition, gpus_per_task, time))
    proc = subprocess.run([sbatch, "--parsable", script], capture_output=True, text=True)
    if proc.returncode:
        why = proc.stderr.strip() or proc.stdout.strip()
        raise SlurmError(f"sbatch {script} failed (exit {proc.returncode}): {why}")
    job = proc.stdout.strip().split(";")[0]  # --parsable: JOBID or JOBID;CLUSTER
    if not job.isdigit():
        raise SlurmError(f"sbatch {script}: expected a job id on its output, got {proc.stdout.strip()!r}")
    record = dict(job_id=job, script=os.path.abspath(script),
                  submitted=datetime.datetime.now().isoformat(timespec="seconds"),
                  tasks=[dict(task=i, run=label) for i, (label, _) in enumerate(tasks)])
    write_file(os.path.join(folder, RECORD), json.dumps(record, indent=2) + "\n")
    return job, script


def recorded_job(folder):
    """The job id of the last submission recorded in folder/job.json, or None."""
    path = os.path.join(folder, RECORD)
    if not os.path.isfile(path):
        return None
    try:
        with open(path) as f:
            job = str(json.load(f)["job_id"])
    except (ValueError, KeyError, TypeError):
        raise SlurmError(f"{path}: unreadable (expected the job id of the last --slurm submission); "
                         f"remove it if that job is gone") from None
    if not job.isdigit():
        raise SlurmError(f"{path}: job_id {job!r} is not a Slurm job id; remove the file if that job is gone")
    return job


def queued(job):
    """'TASK STATE' of each of the job's array tasks still pending or running (squeue); [] when the
    job is done, or when squeue is not on PATH (then nothing can be queued from here)."""
    squeue = shutil.which("squeue")
    if squeue is None:
        return []
    proc = subprocess.run([squeue, "-h", "-j", job, "-o", "%i %T"], capture_output=True, text=True)
    if proc.returncode:
        if "Invalid job id" in proc.stderr:  # finished long enough ago that the controller forgot it
            return []
        raise SlurmError(f"squeue -j {job} failed (exit {proc.returncode}): {proc.stderr.strip()}")
    return [line.strip() for line in proc.stdout.splitlines() if line.strip()]
