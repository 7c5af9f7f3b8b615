"""A real one-node Slurm for the tests that submit sweeps to it (test_reproduce.py), and reading
what a sweep wrote.

The cluster is started by .ci/slurm-up (munged, slurmctld, slurmd; CI installs the packages with
`.ci/slurm-up --install`). When it cannot be started the tests that need it skip, saying why, or
fail when CI is set, as the tests of ../shared fail with REQUIRE_SHARED_DATA=1."""
import json
import os
import subprocess
import time
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
SLURM_UP = ROOT / ".ci" / "slurm-up"
WAIT_S = 900  # the array's 3 runs on 2 CPUs that another job may share


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
