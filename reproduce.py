"""One command for a paper table: every method over several seeds, each run its own process, then the
table laid out like the paper's (rows: classes, OA, AA, kappa; columns: methods; mean ± std over seeds).

    python reproduce.py --data data/houston2013.h5 --seeds 5                      # all six methods, seeds 0..4
    python reproduce.py --data data/demo.h5 --seeds 3,5,7 --methods network,rf --epochs 20 --lr 1e-3
    python reproduce.py --data data/houston2013.h5 --seeds 5 --gpus 0,1           # one run per GPU at a time
    python reproduce.py --data data/houston2013.h5 --seeds 5 --print-commands     # for a cluster's job array
    python reproduce.py --data data/houston2013.h5 --seeds 5 --slurm --gpus-per-task 1 --time 4:00:00

Methods (METHODS in sweeps.py): network (the full network), no_coupled, no_self_loop, no_reconstruction (its
ablations, model.py --coupled/--self_loop/--reconstruction false), svm and rf (baselines.py). Any other
--NAME VALUE is a hyperparameter of model.py's block and goes to the network runs only; the baselines
get the data file and the seed.

Each run lives in OUT/<method>/seed<k> (OUT: runs/reproduce-<data file's stem>). Running the same command
again does only what is left: a finished, evaluated run is kept; a run with fewer epochs is continued
(model.py --resume); a finished one without current metrics is evaluated; an empty or missing directory
is started. A run directory made with other settings (or on another data file) is refused, naming each
difference, before anything runs; the sweep never mixes runs of different settings into one table.

With --slurm the remaining runs are submitted as one Slurm job array (sbatch; slurm.py), one array task
per run, and nothing runs here; --partition, --gpus-per-task and --time become #SBATCH lines when given.
The same command again, once the array is done, writes the table (and submits what is still left); while
the array's tasks are pending or running, every call is refused, so that no run is done twice at once.

Written into OUT: table.md, table.csv, table.json (accuracies as fractions in JSON, in % in Markdown and
CSV; kappa a fraction everywhere).
"""
import argparse
import contextlib
import difflib
import os
import queue
import shlex
import subprocess
import sys
import threading
import time

import rundir
import settings as settings_module
import slurm
from fileio import sha256
from patchfile import PatchFile, PatchFileError
from sweeps import ACTIONS, METHOD_FLAGS, METHODS, MODEL, SweepError, plan, shell_line
from sweeptable import build_table, table_markdown, write_table

SET_BY_SWEEP = {"data": "give it as reproduce.py's own --data", "out": "give it as reproduce.py's own --out",
                "seed": "the seeds come from --seeds", "resume": "the sweep resumes unfinished runs itself",
                "overwrite": "the sweep never overwrites a run of other settings; choose another --out"}


# ----------------------------------------------------------------------------- model.py's settings
def model_settings():
    """model.py's defaults (settings.py); SweepError where its block cannot be read."""
    try:
        return settings_module.model_settings(MODEL)
    except (OSError, ValueError, SyntaxError) as e:
        raise SweepError(str(e)) from None


def parse_bool(text):
    """model.py's reading of a true/false flag."""
    if text.lower() in ("1", "true", "yes", "on"):
        return True
    if text.lower() in ("0", "false", "no", "off"):
        return False
    raise ValueError(f"expected true or false, got {text!r}")


def typed(name, text, default):
    """A flag's text as the type of its default in model.py's block (bool, int, float or str)."""
    try:
        if isinstance(default, bool):
            return parse_bool(text)
        return type(default)(text)
    except ValueError:
        raise SweepError(f"--{name} {text}: expected {type(default).__name__} (model.py's default is "
                         f"{default!r})") from None


def parse_overrides(tokens, settings):
    """The --NAME VALUE (or --NAME=VALUE) flags meant for model.py: {name: (text, typed value)}.
    Unknown names, flags the sweep sets itself and repeated flags are refused."""
    out = {}
    i = 0
    while i < len(tokens):
        token = tokens[i]
        if not token.startswith("--") or len(token) < 3:
            raise SweepError(f"unexpected argument {token!r}: hyperparameters are given as --NAME VALUE")
        name, eq, text = token[2:].partition("=")
        name = name.replace("-", "_")
        if name not in settings:
            passable = sorted(set(settings) - set(SET_BY_SWEEP) - set(METHOD_FLAGS))
            own = ["data", "seeds", "methods", "out", "gpus", "print-commands", "slurm", "partition",
                   "gpus-per-task", "time"]
            close = difflib.get_close_matches(name, passable + own + list(SET_BY_SWEEP), n=1)
            raise SweepError(f"unknown flag --{name}{f' (did you mean --{close[0]}?)' if close else ''}: neither "
                             f"reproduce.py's ({', '.join('--' + o for o in own)}) nor a hyperparameter of "
                             f"model.py ({', '.join(passable)})")
        if name in SET_BY_SWEEP:
            raise SweepError(f"--{name} is not passed on: {SET_BY_SWEEP[name]}")
        if name in METHOD_FLAGS:
            raise SweepError(f"--{name} is set by the methods (no_coupled, no_self_loop, no_reconstruction); "
                             f"choose them with --methods")
        if name in out:
            raise SweepError(f"--{name} is given twice")
        if eq:
            i += 1
        elif i + 1 < len(tokens) and not tokens[i + 1].startswith("--"):
            text, i = tokens[i + 1], i + 2
        elif isinstance(settings[name], bool):
            text, i = "true", i + 1  # --trace_test alone
        else:
            raise SweepError(f"--{name} needs a value")
        value = typed(name, text, settings[name])
        if name == "select" and value not in rundir.PROTOCOLS:
            raise SweepError(f"--select {value}: choose one of {', '.join(rundir.PROTOCOLS)}")
        if name == "epochs" and value < 1:
            raise SweepError(f"--epochs must be at least 1, got {value}")
        out[name] = (text, value)
    return out


# ----------------------------------------------------------------------------- methods, seeds, GPUs
def parse_methods(items):
    """'network,rf' or several words; unknown or repeated methods refused. Default: all, in METHODS' order."""
    if not items:
        return list(METHODS)
    names = [n.strip() for item in items for n in item.split(",") if n.strip()]
    unknown = [n for n in names if n not in METHODS]
    if unknown:
        raise SweepError(f"unknown method{'s' if len(unknown) > 1 else ''} {', '.join(unknown)}; "
                         f"known: {', '.join(METHODS)}")
    twice = sorted({n for n in names if names.count(n) > 1})
    if twice:
        raise SweepError(f"method given twice: {', '.join(twice)}")
    if not names:
        raise SweepError(f"--methods names none; known: {', '.join(METHODS)}")
    return names


def parse_seeds(text):
    """'5' means seeds 0..4; '3,5,7' (or '7,') those seeds. A seed given twice is refused."""
    text = text.strip()
    try:
        if "," not in text:
            n = int(text)
            if n < 1:
                raise SweepError(f"--seeds {text}: at least one seed (N means seeds 0..N-1)")
            return list(range(n))
        seeds = [int(s) for s in text.split(",") if s.strip()]
    except ValueError:
        raise SweepError(f"--seeds {text}: a count N (seeds 0..N-1) or a comma list of seeds such as 3,5,7") from None
    if not seeds or any(s < 0 for s in seeds):
        raise SweepError(f"--seeds {text}: seeds are whole numbers >= 0")
    twice = sorted({s for s in seeds if seeds.count(s) > 1})
    if twice:
        raise SweepError(f"--seeds {text}: seed {', '.join(map(str, twice))} given twice")
    return seeds


def parse_gpus(text):
    if text is None:
        return None
    gpus = [g.strip() for g in text.split(",") if g.strip()]
    if not gpus:
        raise SweepError(f"--gpus {text!r}: name the GPUs, e.g. --gpus 0,1")
    twice = sorted({g for g in gpus if gpus.count(g) > 1})
    if twice:
        raise SweepError(f"--gpus {text}: GPU {', '.join(twice)} given twice")
    return gpus


# ----------------------------------------------------------------------------- the data file
def check_data(path, methods, select):
    """(info, splits, sha256) of the patch file, refusing one without the splits the methods need."""
    if not os.path.isfile(path):
        raise SweepError(f"{path}: no such data file (make it with DataPrepare.py)")
    try:
        with PatchFile(path) as pf:
            info, labelled, splits, split = pf.info(), pf.labelled, pf.splits, pf.attrs.get("split")
    except PatchFileError as e:
        raise SweepError(str(e)) from None
    if not labelled:
        raise SweepError(f"{path} has no labels (a scene prepared with DataPrepare.py --like): nothing to train "
                         f"or score; give a labelled patch file")
    needed = {"train", "test"}
    if any(METHODS[m]["kind"] == "network" for m in methods) and rundir.HELD_OUT.get(select):
        needed.add(rundir.HELD_OUT[select])
    missing = sorted(needed - set(splits))
    if missing:
        hint = " (--select val monitors it: carve one with DataPrepare.py --val-fraction 0.1)" if "val" in missing else ""
        raise SweepError(f"{path} has no {' / '.join(missing)} split{hint}; it has {', '.join(splits) or 'none'}")
    return dict(info, split=split), sha256(path)



# ----------------------------------------------------------------------------- running


def stream(cmd, env, label, say):
    """Run one child, its stdout and stderr streamed line by line with the run's label; its exit status."""
    proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, env=env, bufsize=0)
    pending = b""
    try:
        while True:
            chunk = proc.stdout.read(65536)
            if not chunk:
                break
            *lines, pending = (pending + chunk).split(b"\n")
            for line in lines:  # a progress bar's \r updates: keep what a terminal would show last
                text = line.rstrip(b"\r").split(b"\r")[-1].decode(errors="replace")
                say(f"[{label}] {text}")
        if pending.strip():
            say(f"[{label}] " + pending.split(b"\r")[-1].decode(errors="replace"))
    finally:
        proc.stdout.close()
        rc = proc.wait()
    return rc


def execute(runs, gpus=None):
    """Do the runs' commands: one after another, or with gpus one run per GPU at a time (a worker
    thread per GPU, CUDA_VISIBLE_DEVICES set for its children). After a failure no new run starts;
    raises SweepError naming the failed runs."""
    lock = threading.Lock()

    def say(text):
        with lock:
            print(text, flush=True)

    todo = queue.Queue()
    for i, run in enumerate(runs, 1):
        todo.put((i, run))
    failed, stop = [], threading.Event()

    def worker(gpu):
        while not stop.is_set():
            try:
                i, run = todo.get_nowait()
            except queue.Empty:
                return
            env = {**os.environ, "PYTHONUNBUFFERED": "1"}
            if gpu is not None:
                env["CUDA_VISIBLE_DEVICES"] = gpu
            label = f"{i}/{len(runs)} {run.method} seed{run.seed}"
            say(f"=== run {i} of {len(runs)}: {run.label}: {ACTIONS[run.action]} in {run.path}"
                f"{f' on GPU {gpu}' if gpu is not None else ''}")
            t0 = time.time()
            for cmd in run.commands:
                say(f"[{label}] $ {shlex.join(cmd)}")
                try:
                    rc = stream(cmd, env, label, say)
                except OSError as e:
                    rc = f"could not start ({e})"
                if rc:
                    failed.append(f"{run.label} ({run.path}): {os.path.basename(cmd[1])} exited with {rc}")
                    stop.set()
                    say(f"=== run {i} of {len(runs)}: {run.label} FAILED; no further run is started")
                    break
            else:
                say(f"=== run {i} of {len(runs)}: {run.label} done in {time.time() - t0:.0f} s")

    threads = [threading.Thread(target=worker, args=(g,), daemon=True) for g in (gpus or [None])]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    if failed:
        raise SweepError("failed: " + "; ".join(failed) + " (see its output above; fix it, then run the same "
                         "command again: finished runs are kept)")


# ----------------------------------------------------------------------------- a Slurm job array
SLURM_ONLY = ("partition", "gpus_per_task", "time")


@contextlib.contextmanager
def slurm_errors():
    """slurm.py's errors as SweepErrors: main reports those as one message."""
    try:
        yield
    except slurm.SlurmError as e:
        raise SweepError(str(e)) from None


def check_slurm_flags(args):
    """--partition, --gpus-per-task and --time go with --slurm; --gpus and --print-commands do not.
    With --slurm, sbatch and squeue must be on PATH before anything is planned."""
    given = [f"--{k.replace('_', '-')}" for k in SLURM_ONLY if getattr(args, k) is not None]
    if not args.slurm:
        if given:
            raise SweepError(f"{', '.join(given)} only with --slurm (they become #SBATCH lines of its job array)")
        return
    if args.gpus is not None:
        raise SweepError("--gpus places runs on this machine's GPUs; with --slurm ask for each array task's GPUs "
                         "with --gpus-per-task")
    if args.print_commands:
        raise SweepError("--print-commands and --slurm: choose one (the first prints the remaining runs' shell "
                         "lines, the second submits them)")
    with slurm_errors():
        slurm.check_options(args.partition, args.gpus_per_task, args.time)
        slurm.require("sbatch", "squeue")


def refuse_while_queued(out):
    """Refuse while the job array of an earlier --slurm submission (OUT/slurm/job.json) still has
    tasks pending or running: its runs would otherwise be done twice at once."""
    folder = os.path.join(out, "slurm")
    with slurm_errors():
        job = slurm.recorded_job(folder)
        tasks = slurm.queued(job) if job else []
    if tasks:
        shown = ", ".join(tasks[:4]) + (f" and {len(tasks) - 4} more" if len(tasks) > 4 else "")
        raise SweepError(f"job {job} of an earlier --slurm submission ({os.path.join(folder, slurm.RECORD)}) is "
                         f"still in the queue ({shown}): nothing was submitted or run; wait until `squeue -j {job}` "
                         f"lists nothing (or `scancel {job}`), then run the same command again")


def submit_array(todo, out, args):
    """The remaining runs as one job array, task i doing todo[i] by its shell_line; prints the job
    id and the script's path. Runs nothing here."""
    folder = os.path.join(out, "slurm")
    tasks = [(f"{r.label}: {ACTIONS[r.action]} in {r.path}", shell_line(r, python=sys.executable)) for r in todo]
    with slurm_errors():
        job, script = slurm.submit(folder, tasks, f"reproduce-{os.path.basename(os.path.normpath(out))}",
                                   args.partition, args.gpus_per_task, args.time)
    print(f"submitted Slurm job {job}: {len(tasks)} array task(s) 0-{len(tasks) - 1}, script {script}, each task's "
          f"output in {os.path.join(folder, f'{job}_<task>.out')}", flush=True)
    print(f"when `squeue -j {job}` lists nothing, run the same command again: it writes the table, or submits "
          f"what is left")



# ----------------------------------------------------------------------------- the sweep
def build_parser():
    p = argparse.ArgumentParser(
        prog="reproduce.py", allow_abbrev=False, formatter_class=argparse.RawDescriptionHelpFormatter,
        description=__doc__.split("\n\n")[0],
        epilog="Any other --NAME VALUE is a hyperparameter of model.py (its block of settings at the top) and "
               "goes to the network runs, e.g. --epochs 20 --precision mixed --ema 0 --lr 1e-3.")
    p.add_argument("--data", required=True, metavar="FILE.h5", help="patch file written by DataPrepare.py")
    p.add_argument("--seeds", required=True, metavar="N|S1,S2,...",
                   help="N: seeds 0..N-1; or a comma list of seeds, e.g. 3,5,7")
    p.add_argument("--methods", nargs="+", metavar="M", help=f"comma list (default all): {', '.join(METHODS)}")
    p.add_argument("--out", metavar="DIR", help="sweep folder (default runs/reproduce-<data file's stem>)")
    p.add_argument("--gpus", metavar="0,1", help="run one run per GPU at a time (CUDA_VISIBLE_DEVICES per run)")
    p.add_argument("--print-commands", "--print_commands", action="store_true",
                   help="print the remaining runs' shell commands, one per line, and run nothing")
    p.add_argument("--slurm", action="store_true",
                   help="submit the remaining runs as one Slurm job array (sbatch) and run nothing here; the same "
                        "command again, once the array is done, writes the table")
    p.add_argument("--partition", metavar="P", help="with --slurm: the partition (#SBATCH --partition)")
    p.add_argument("--gpus-per-task", "--gpus_per_task", metavar="G",
                   help="with --slurm: each array task's GPUs, e.g. 1 or a100:1 (#SBATCH --gpus-per-task)")
    p.add_argument("--time", metavar="T",
                   help="with --slurm: each array task's time limit, e.g. 4:00:00 (#SBATCH --time)")
    return p


def sweep(argv):
    """Plan, run (or submit, with --slurm) and tabulate; returns the table (None with --print-commands
    or after a submission). Raises SweepError."""
    args, extra = build_parser().parse_known_args(argv)
    check_slurm_flags(args)
    methods = parse_methods(args.methods)
    seeds = parse_seeds(args.seeds)
    gpus = parse_gpus(args.gpus)
    settings = model_settings()
    overrides = parse_overrides(extra, settings)
    select = overrides["select"][1] if "select" in overrides else settings["select"]
    info, data_sha = check_data(args.data, methods, select)
    out = args.out or os.path.join("runs", f"reproduce-{os.path.splitext(os.path.basename(args.data))[0]}")
    refuse_while_queued(out)
    runs = plan(args.data, out, methods, seeds, settings, overrides, data_sha)
    todo = [r for r in runs if r.action != "done"]
    if args.print_commands:
        for run in todo:
            print(shell_line(run))
        if not todo:
            print(f"nothing left to do: all {len(runs)} runs in {out} are done", file=sys.stderr)
        return None
    print(f"{info['dataset']}{' (SYNTHETIC)' if info['synthetic'] else ''}: {len(methods)} method(s) x "
          f"{len(seeds)} seed(s) = {len(runs)} runs in {out}; {len(runs) - len(todo)} done, {len(todo)} to do"
          f"{f' on GPUs {args.gpus}' if gpus and todo else ''}", flush=True)
    if todo and args.slurm:
        submit_array(todo, out, args)
        return None
    if todo:
        execute(todo, gpus)
        runs = plan(args.data, out, methods, seeds, settings, overrides, data_sha)  # what the jobs left
        left = [r for r in runs if r.action != "done"]
        if left:
            listing = "; ".join(f"{r.path}: left to {ACTIONS[r.action]}" for r in left)
            raise SweepError(f"{len(left)} run(s) not finished ({listing}; stopped by --max_minutes?): run the same "
                             f"command again to go on; no table written")
    table = build_table(runs, methods, seeds, info, args.data, data_sha, overrides, settings)
    paths = write_table(out, table)
    print(table_markdown(table))
    print("wrote " + ", ".join(paths))
    return table


def main(argv=None):
    argv = sys.argv[1:] if argv is None else list(argv)
    try:
        return sweep(argv)
    except SweepError as e:
        sys.exit(f"reproduce.py: error: {e}")


if __name__ == "__main__":
    main()
