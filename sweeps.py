"""A sweep's runs: the methods of the paper's tables, one run directory per (method, seed), what is
left to do in each (start, continue, evaluate, nothing) and the commands that do it. reproduce.py plans
with it, runs the commands here or hands their shell lines to a Slurm job array (slurm.py), and tabulates
what finished (sweeptable.py)."""
import json
import os
import shlex
import sys

import rundir

HERE = os.path.dirname(os.path.abspath(__file__))
MODEL, EVALUATE, BASELINES = (os.path.join(HERE, f) for f in ("model.py", "evaluate.py", "baselines.py"))

# The methods of the paper's tables: a network run with these model.py settings, or a baseline.
METHODS = {
    "network": dict(kind="network", flags={}, title="the full network (coupled, self-looping, reconstruction)"),
    "no_coupled": dict(kind="network", flags={"coupled": False}, title="without coupling (--coupled false)"),
    "no_self_loop": dict(kind="network", flags={"self_loop": False}, title="without self-loop (--self_loop false)"),
    "no_reconstruction": dict(kind="network", flags={"reconstruction": False},
                              title="without reconstruction (--reconstruction false)"),
    "svm": dict(kind="baseline", title="SVM (RBF kernel), baselines.py"),
    "rf": dict(kind="baseline", title="random forest, baselines.py"),
}
METHOD_FLAGS = sorted({k for m in METHODS.values() for k in m.get("flags", {})})
# run.action (assess below), as the sweep says it
ACTIONS = {"new": "start", "restart": "start again (killed before its first epoch)", "resume": "continue",
           "evaluate": "evaluate (trained, not evaluated)"}


class SweepError(ValueError):
    """A sweep that cannot be planned, run or tabulated; main turns it into one message."""


class Run:
    """One method and seed: its directory, what is left to do (action) and the commands that do it."""

    def __init__(self, method, seed, path):
        self.method, self.seed, self.path = method, seed, path
        self.action, self.commands = None, []

    @property
    def label(self):
        return f"{self.method} seed {self.seed}"


def wanted_settings(method, seed, settings, overrides):
    """The full model.py configuration a network run of this method and seed must have been made with."""
    return {**settings, **{k: v for k, (_, v) in overrides.items()}, **METHODS[method].get("flags", {}), "seed": seed}


def run_differences(config, run, wanted, epochs, data_sha):
    """'name: the run has X, wanted Y' for each setting the run directory was made with otherwise."""
    kind = METHODS[run.method]["kind"]
    diffs = []
    if config.get("data_sha256") != data_sha:
        diffs.append(f"data: the run was made on {config.get('data')} (sha256 {str(config.get('data_sha256'))[:16]}...), "
                     f"wanted sha256 {data_sha[:16]}...")
    if kind == "baseline":
        if not rundir.is_baseline(config):
            return diffs + [f"method: the run is a network run, wanted the {run.method} baseline"]
        diffs += [f"{k}: the run has {config.get(k)!r}, wanted {v!r}" for k, v in
                  (("method", run.method), ("seed", run.seed)) if config.get(k) != v]
        return diffs
    if rundir.is_baseline(config):
        return diffs + [f"method: the run is a {config['method']} baseline, wanted a network run ({run.method})"]
    diffs += rundir.differences(config, {k: v for k, v in wanted.items() if k != "epochs"})
    if not isinstance(config.get("epochs"), int) or config["epochs"] > epochs:
        diffs.append(f"epochs: the run has {config.get('epochs')!r}, wanted {epochs} (a sweep continues a run "
                     f"to more epochs, never cuts one short)")
    return diffs


def assess(run, wanted, epochs, data_sha):
    """Set run.action: 'done', 'new', 'restart' (made, but killed before its first epoch), 'resume',
    'evaluate'; baselines 'done', 'new' or 'restart'. Raises SweepError for a directory that is not
    a run of these settings."""
    path = run.path
    if os.path.exists(path) and not os.path.isdir(path):
        raise SweepError(f"{path} is a file, not a run directory")
    if not os.path.isdir(path) or not os.listdir(path):
        run.action = "new"
        return run
    if not os.path.isfile(os.path.join(path, "config.json")):
        raise SweepError(f"{path} holds files but no config.json: not a run directory; move it away")
    try:
        config = rundir.read_config(path)
    except (rundir.RunError, ValueError) as e:
        raise SweepError(f"{path}: unreadable config.json ({e})") from None
    diffs = run_differences(config, run, wanted, epochs, data_sha)
    if diffs:
        raise SweepError(f"{path} was made with other settings: " + "; ".join(diffs))
    metrics = read_metrics(path)
    if METHODS[run.method]["kind"] == "baseline":
        run.action = "done" if metrics and metrics.get("data_sha256") == data_sha else "restart"
        return run
    state = rundir.read_state(path)
    done = state.get("epochs_done", 0)
    if not done or not os.path.isfile(rundir.checkpoint_path(path, "final")):
        run.action = "restart"
    elif done > epochs:
        raise SweepError(f"{path} was made with other settings: epochs: the run has done {done}, wanted {epochs}")
    elif done < epochs:
        run.action = "resume"
    else:
        try:
            _, checkpoint, _ = rundir.choose_checkpoint(path, config, state)
        except rundir.RunError as e:
            raise SweepError(str(e)) from None
        current = (metrics and metrics.get("checkpoint_sha256") == rundir.checkpoint_sha256(path, checkpoint)
                   and metrics.get("data_sha256") == data_sha)
        run.action = "done" if current else "evaluate"
    return run


def read_metrics(path):
    file = os.path.join(path, "metrics.json")
    if not os.path.isfile(file):
        return None
    try:
        with open(file) as f:
            return json.load(f)
    except ValueError:
        return None  # a damaged file is made again


def commands(run, data, overrides, epochs):
    """The argv lists (script paths absolute, run with sys.executable) that do what run.action says."""
    py = sys.executable
    if run.action == "done":
        return []
    if METHODS[run.method]["kind"] == "baseline":
        return [[py, BASELINES, "--data", data, "--method", run.method, "--seed", str(run.seed), "--out", run.path,
                 "--no-map", *(["--overwrite"] if run.action == "restart" else [])]]
    evaluate = [py, EVALUATE, "--run", run.path]
    if run.action == "evaluate":
        return [evaluate]
    job = [f"--max_minutes={overrides['max_minutes'][0]}"] if "max_minutes" in overrides else []
    if run.action == "resume":
        return [[py, MODEL, "--resume", run.path, "--epochs", str(epochs), *job], evaluate]
    flags = [a for k, v in METHODS[run.method].get("flags", {}).items() for a in (f"--{k}", str(v).lower())]
    passed = [a for k, (text, _) in overrides.items() for a in (f"--{k}", text)]
    return [[py, MODEL, "--data", data, "--out", run.path, "--seed", str(run.seed), *flags, *passed,
             *(["--overwrite"] if run.action == "restart" else [])], evaluate]


def plan(data, out, methods, seeds, settings, overrides, data_sha):
    """Every run of the sweep, assessed; one SweepError naming every run directory that is refused."""
    epochs = overrides["epochs"][1] if "epochs" in overrides else settings["epochs"]
    runs, refused = [], []
    for method in methods:
        for seed in seeds:
            run = Run(method, seed, os.path.join(out, method, f"seed{seed}"))
            try:
                assess(run, wanted_settings(method, seed, settings, overrides), epochs, data_sha)
            except SweepError as e:
                refused.append(str(e))
                continue
            run.commands = commands(run, data, overrides, epochs)
            runs.append(run)
    if refused:
        raise SweepError(f"{len(refused)} run director{'y is' if len(refused) == 1 else 'ies are'} refused, "
                         f"nothing was run:\n  " + "\n  ".join(refused))
    return runs


def shell_line(run, python="python"):
    """One complete shell command doing a run (and its evaluation), for a job array. `python` is the
    interpreter it names: --slurm gives sys.executable, as a batch job's PATH may find another."""
    def show(argv):
        script = argv[1]
        shown = os.path.basename(script) if os.path.abspath(os.getcwd()) == HERE else script
        return shlex.join([python, shown, *argv[2:]])
    return f"cd {shlex.quote(os.getcwd())} && " + " && ".join(show(c) for c in run.commands)
