"""Whole commands in child processes: timed with their peak memory (benchmark.py --prepare, --evaluate:
DataPrepare.py on a scene, evaluate.py on a run's whole test split), or read back by the figures they
print (benchmark.py's modes, fastbench.py's sides: each in a fresh process)."""
import json
import os
import shlex
import subprocess
import sys

import network
import report
import rundir
from patchfile import PatchFile

ROOT = os.path.dirname(os.path.abspath(__file__))
RESULT = "RESULT "  # the line on which a child prints its figures, as JSON


def print_result(figures):
    """In the child: its figures (a dict), for child_result in the parent."""
    print(RESULT + json.dumps(figures), flush=True)


def child_result(cmd, env, what):
    """Run a child that ends with print_result; its figures, or RuntimeError naming `what` with the
    child's stderr tail."""
    run = subprocess.run(cmd, capture_output=True, text=True, env=env)
    lines = [line for line in run.stdout.splitlines() if line.startswith(RESULT)]
    if run.returncode or not lines:
        raise RuntimeError(f"{what} failed:\n{run.stderr[-3000:]}")
    return json.loads(lines[-1][len(RESULT):])


def timed(cmd):
    """Run a command under /usr/bin/time -v: (wall seconds, peak resident GB); RuntimeError if it fails."""
    run = subprocess.run(["/usr/bin/time", "-v", *cmd], capture_output=True, text=True, cwd=ROOT)
    if run.returncode:
        raise RuntimeError(f"{' '.join(cmd)} failed:\n{run.stderr[-3000:]}")
    lines = {k.strip(): v.strip() for k, _, v in (line.partition(": ") for line in run.stderr.splitlines())}
    wall = lines["Elapsed (wall clock) time (h:mm:ss or m:ss)"].split(":")
    seconds = sum(float(x) * 60 ** i for i, x in enumerate(reversed(wall)))
    return seconds, int(lines["Maximum resident set size (kbytes)"]) / 1e6


def prepare(spec):
    """DataPrepare.py on 'DATASET=SOURCE [more DataPrepare flags]', into a temporary file removed
    afterwards."""
    dataset, _, rest = spec.partition("=")
    source, *flags = shlex.split(rest)
    out = f"/tmp/benchmark-prepare-{os.getpid()}.h5"
    try:
        seconds, peak = timed([sys.executable, "DataPrepare.py", "--dataset", dataset, "--source", source,
                               "--out", out, *flags])
        with PatchFile(out) as pf:
            counts = {s: len(pf.labels(s)) for s in pf.splits}
            (h, w), bands = pf.shape, pf.bands
        size = os.path.getsize(out)
    finally:
        if os.path.exists(out):
            os.remove(out)
    print(f"DataPrepare.py --dataset {dataset} --source {rest}: {h} x {w} pixels, {bands['hsi']} + {bands['aux']} "
          f"bands, {' / '.join(f'{n} {s}' for s, n in counts.items())} pixels: {seconds:.1f} s wall, "
          f"{peak:.2f} GB peak, file {size / 1e9:.2f} GB")


def evaluate(run_dir, precision):
    """evaluate.py on a run's whole test split (cut from the scene on the fly)."""
    cmd = [sys.executable, "evaluate.py", "--run", run_dir] + (["--precision", precision] if precision else [])
    seconds, peak = timed(cmd)
    config, _ = rundir.read_run(run_dir)
    suffix = rundir.result_suffix(config, config["select"],
                                  network.inference_precision(rundir.training_precision(config), precision))
    with open(report.run_file(run_dir, suffix)("metrics", "json")) as f:
        m = json.load(f)
    print(f"evaluate.py --run {run_dir}{f' --precision {precision}' if precision else ''}: {m['n_test']} test pixels "
          f"({m['dataset_label']}) in {m['test_seconds']} s, {m['test_pixels_per_second']} px/s; "
          f"{seconds:.1f} s wall in all, {peak:.2f} GB peak")
