"""
Turn a trained run into the paper's figures: accuracy tables, confusion matrix, classification maps,
and what a reviewer asks next: how accuracy depends on the distance to the training pixels, and
whether two runs differ significantly.

    python evaluate.py --run runs/houston2013-20261125-101500            # tables + confusion matrix
    python evaluate.py --run runs/houston2013-20261125-101500 --map      # + full-scene maps
    python evaluate.py --run RUN --select last                           # last epoch of a val/authors run
    python evaluate.py --runs runs/a runs/b runs/c --out results/        # mean +- std over runs
    python evaluate.py --compare runs/net runs/svm                       # McNemar's test, OA difference

The figures (OA, AA, kappa, leakage bins, McNemar's test) are defined in metrics.py; the
tables, pictures and printed lines are report.py's.

Files written into the run directory (SUFFIX is empty for the run's own checkpoint selection, data
file and precision, "-last", "-mixed", "-<other data file>", "-last-float32" etc. for another, so
that numbers made another way never overwrite the run's own):
    metrics{SUFFIX}.json            every figure, the protocol, checkpoint, normalisation and data file
    metrics{SUFFIX}.md              the per-class table laid out like the paper's, the leakage table
    confusion_matrix{SUFFIX}.csv    counts; confusion_matrix{SUFFIX}.png row-normalised
    leakage{SUFFIX}.png             OA against the distance to the nearest training pixel, with counts
    predictions{SUFFIX}.npy         the predicted class (1..C) of every test pixel, in the file's order
    with --map: map{SUFFIX}.npy (H, W) labels 1..C, map{SUFFIX}.png, ground_truth_train.png,
                ground_truth_test.png
With --runs: aggregate.json and aggregate.md (mean +- sample standard deviation, ddof=1) in --out,
by default the parent folder of the first run. With --compare: compare-A-vs-B.json and .md there.

Accuracies are fractions (0..1) in the JSON files and percentages with 2 decimals in the Markdown
tables and printed lines; kappa is a fraction everywhere.
"""
import argparse
import datetime
import json
import os
import re
import resource
import shlex
import sys

import numpy as np

import devices
import network
import rundir
from fileio import sha256, write_json, write_text
from metrics import aggregate_metrics, mcnemar
from network import PRECISIONS
from patchfile import PatchFile, PatchFileError
from report import (compare_lines, map_figures, network_description, pm, print_headline, run_file,
                    test_pixels_digest, test_report, write_aggregate_markdown, write_map, write_map_files,
                    write_report)

BATCH_SIZE = 256  # patches per inference step: on 2 CPU cores 256 is as fast as 1024 and peaks 0.9 GB lower


class EvaluationError(ValueError):
    """A run, data file or request that cannot be evaluated; main turns it into one line."""


def fail(msg):
    raise EvaluationError(msg)


# -----------------------------------------------------------------------------
# The run and the data file

def read_run(run_dir):
    """(config, state) of a run directory; rundir's errors become this script's."""
    try:
        return rundir.read_run(run_dir)
    except rundir.RunError as e:
        fail(str(e))


def choose_checkpoint(run_dir, config, state, select):
    try:
        return rundir.choose_checkpoint(run_dir, config, state, select)
    except rundir.RunError as e:
        fail(str(e))


def open_data(path):
    """Open and check a patch file; a missing or foreign file is one clear error."""
    if not os.path.isfile(path):
        fail(f"{path}: no such data file (make it with DataPrepare.py, or name one with --data)")
    try:
        return PatchFile(path)
    except PatchFileError as e:
        fail(str(e))


def check_compatible(pf, path, arch, run_dir):
    """The network's input bands, patch size and class count must match the data file's."""
    info, arch = pf.info(), {"patch_size": 11, **arch}  # build_model's default patch size
    have = {k: info[k] for k in ("hsi_bands", "aux_bands", "patch_size", "num_classes")}
    wrong = [f"{k} {have[k]} in the data, {arch.get(k)} in the model" for k in have if have[k] != arch.get(k)]
    if wrong:
        fail(f"{path} does not fit the network of {run_dir}: " + "; ".join(wrong))


# -----------------------------------------------------------------------------
# One run

def evaluate_run(run_dir, data=None, select=None, precision=None, batch_size=BATCH_SIZE,
                 make_map=False, stand_in=False, command=""):
    """Evaluate a run's checkpoint on the test split (and the scene); write the files; return metrics."""
    config, state = read_run(run_dir)
    if rundir.is_baseline(config):
        fail(f"{run_dir}: a baseline run of baselines.py ({config['method']}); it was evaluated when it was "
             f"made (metrics.json); run baselines.py again to remake it")
    select, checkpoint, epoch = choose_checkpoint(run_dir, config, state, select)
    data = data or config["data"]
    precision = inference_precision(config, precision)
    ema = config.get("ema", 0.0)
    with open_data(data) as pf:
        check_compatible(pf, data, config["architecture"], run_dir)
        digest = rundir.checkpoint_sha256(run_dir, checkpoint)  # before loading: the file scored is this one
        clf = load_checkpoint(run_dir, config, checkpoint, precision)
        if state.get("epochs_done") is not None and state["epochs_done"] < config.get("epochs", 0):
            print(f"evaluate.py: warning: {run_dir} is unfinished: {state['epochs_done']} of "
                  f"{config['epochs']} epochs", file=sys.stderr)
        if not pf.labelled:
            return map_unlabelled(pf, clf, data, run_dir, config, select, checkpoint, digest, precision, batch_size,
                                  make_map, command)
        y_pred, seconds = network.predict_test_timed(clf, pf, batch_size)
        m = test_report(pf, data, y_pred, stand_in, config, command)
        m.update(run=run_dir, protocol=rundir.protocol_text(select, config), select=select, run_select=config["select"],
                 checkpoint=f"{checkpoint}.keras", checkpoint_sha256=digest,
                 weights="averaged (ema {:g})".format(ema) if ema else "raw (no averaging)",
                 epochs_done=state.get("epochs_done"), selected_epoch=epoch,
                 epochs_planned=config.get("epochs"), precision=precision, conv_algorithm=network.conv_algorithm(),
                 training_precision=rundir.training_precision(config),
                 training_conv_algorithm=rundir.training_conv_algorithm(config),
                 test_seconds=round(seconds, 1), test_pixels_per_second=round(len(y_pred) / max(seconds, 1e-9), 1),
                 batch_size=batch_size, devices=devices.describe(clf))
        m["model"] = network_description(m)
        suffix = rundir.result_suffix(config, select, precision, data)
        maps = write_maps(pf, clf, batch_size, m, run_dir, suffix, y_pred) if make_map else []
    m["peak_rss_mb"] = round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024, 1)
    written = write_report(run_dir, suffix, m, y_pred) + maps
    print_headline(m, written)
    return m


def map_unlabelled(pf, clf, data, run_dir, config, select, checkpoint, digest, precision, batch_size, make_map,
                   command):
    """A scene without labels (DataPrepare.py --like): its map only, and a map*.json saying what made it."""
    if not make_map:
        fail(f"{data} has no labels, so there is nothing to score; add --map to classify its scene")
    labels, seconds = network.predict_scene_timed(clf, pf, pf.patch_size, batch_size)
    suffix = rundir.result_suffix(config, select, precision, data)
    title = (f"{pf.info()['dataset']}: classification map of {os.path.basename(data)} (no labels), run "
             f"{os.path.basename(os.path.normpath(run_dir))}\n{rundir.protocol_text(select, config)}")
    written = write_map(pf, labels, run_dir, suffix, title)
    m = dict(run=run_dir, data=os.path.basename(data), data_path=os.path.abspath(data), data_sha256=sha256(data),
             labelled=False, protocol=rundir.protocol_text(select, config), select=select,
             checkpoint=f"{checkpoint}.keras", checkpoint_sha256=digest, precision=precision,
             conv_algorithm=network.conv_algorithm(), normalisation=pf.info()["normalisation"],
             georeferenced=pf.georef is not None,
             map=map_figures(labels, seconds, batch_size, run_file(run_dir, suffix)), command=command,
             evaluated_at=datetime.datetime.now().isoformat(timespec="seconds"))
    write_json(os.path.join(run_dir, f"map{suffix}.json"), m)
    print(f"{data}: no labels, so no accuracy table; mapped {labels.size} pixels in {seconds:.1f} s")
    print("wrote " + ", ".join(written + [os.path.join(run_dir, f"map{suffix}.json")]))
    return m


def inference_precision(config, asked=None):
    return network.inference_precision(rundir.training_precision(config), asked)


def load_checkpoint(run_dir, config, checkpoint, precision):
    """The checkpoint's classification path; with weight averaging (ema > 0), its averaged weights."""
    try:
        with devices.distribution_scope():  # several devices: each batch split over them
            return network.load_classifier(config["architecture"], rundir.checkpoint_path(run_dir, checkpoint),
                                           precision, averaged=config.get("ema", 0.0) > 0)
    except Exception as e:  # a damaged or foreign .keras file fails in many ways
        fail(f"{run_dir}: cannot load {checkpoint}.keras ({type(e).__name__}: {e})")


def write_maps(pf, clf, batch_size, m, run_dir, suffix, y_pred):
    """Classify every pixel and write the maps (report.write_map_files); returns the paths written."""
    labels, seconds = network.predict_scene_timed(clf, pf, pf.patch_size, batch_size)
    return write_map_files(pf, labels, seconds, batch_size, m, run_dir, suffix, y_pred)


# -----------------------------------------------------------------------------
# Several runs: mean +- std, the way peers report "over N runs"

def run_metrics(run_dir, args):
    """A run's metrics for the requested protocol: its metrics file if it was computed from the very
    checkpoint file now in the run (same sha256) and the same data file, else evaluate again."""
    config, state = read_run(run_dir)
    if rundir.is_baseline(config):
        path = os.path.join(run_dir, "metrics.json")
        if not os.path.isfile(path):
            fail(f"{run_dir}: a baseline run without metrics.json: run baselines.py again")
        with open(path) as f:
            return json.load(f)
    select, checkpoint, _ = choose_checkpoint(run_dir, config, state, args.select)
    precision = inference_precision(config, args.precision)
    data = args.data or config["data"]
    path = os.path.join(run_dir, f"metrics{rundir.result_suffix(config, select, precision, data)}.json")
    if os.path.isfile(path):
        with open(path) as f:
            m = json.load(f)
        same_checkpoint = m.get("checkpoint_sha256") == rundir.checkpoint_sha256(run_dir, checkpoint)
        same_data = m.get("data_path") == os.path.abspath(data) and m.get("data_sha256") == sha256(data)
        if same_checkpoint and same_data and (m.get("stand_in") or not args.stand_in):
            return m
    return evaluate_run(run_dir, args.data, args.select, args.precision, args.batch_size, args.map,
                        args.stand_in, command=args.command)


def aggregate(runs, args):
    ms = [run_metrics(r, args) for r in runs]
    try:
        agg = aggregate_metrics(ms, runs)
    except ValueError as e:
        fail(str(e))
    out = args.out or os.path.dirname(os.path.abspath(runs[0]))
    os.makedirs(out, exist_ok=True)
    paths = [os.path.join(out, "aggregate.json"), os.path.join(out, "aggregate.md")]
    write_json(paths[0], agg)
    write_aggregate_markdown(paths[1], agg)
    print(f"{agg['dataset_label']}, over {len(ms)} runs (mean ± sample std): OA {pm(agg['OA'])} %, "
          f"AA {pm(agg['AA'])} %, kappa {pm(agg['kappa'], kappa=True)}; leak-free OA {pm(agg['leak_free']['OA'])} %")
    print(f"  protocol: {agg['protocol']}")
    print("wrote " + ", ".join(paths))
    return agg


# -----------------------------------------------------------------------------
# Two runs: are they different?

def compare(run_a, run_b, args):
    """McNemar's test on the per-pixel correctness of two runs scored on the same test pixels."""
    ms = [run_metrics(r, args) for r in (run_a, run_b)]
    if ms[0].get("test_pixels_sha256") is None or ms[0].get("test_pixels_sha256") != ms[1].get("test_pixels_sha256"):
        fail(f"{run_a} and {run_b} were scored on different test pixels (data {ms[0]['data']} and "
             f"{ms[1]['data']}); McNemar's test needs the same pixels")
    with open_data(ms[0]["data_path"]) as pf:
        if test_pixels_digest(pf) != ms[0]["test_pixels_sha256"]:
            fail(f"{ms[0]['data_path']} no longer holds the test pixels {run_a} was scored on (prepared again "
                 f"since?); evaluate both runs again")
        truth = pf.labels("test") + 1
    preds = []
    for r, m in zip((run_a, run_b), ms):
        path = os.path.join(r, m["predictions"])
        if not os.path.isfile(path):
            fail(f"{path}: missing; evaluate {r} again")
        preds.append(np.load(path))
        if preds[-1].shape != truth.shape:
            fail(f"{path}: {len(preds[-1])} predictions for {len(truth)} test pixels; evaluate {r} again")
    result = mcnemar(preds[0] == truth, preds[1] == truth)
    c = dict(dataset_label=ms[0]["dataset_label"], run_a=run_a, run_b=run_b,
             model_a=ms[0].get("model"), model_b=ms[1].get("model"),
             protocol_a=ms[0]["protocol"], protocol_b=ms[1]["protocol"],
             normalisation_a=ms[0].get("normalisation"), normalisation_b=ms[1].get("normalisation"),
             data_a=ms[0]["data"], data_b=ms[1]["data"], split=ms[0]["split"],
             test_pixels_sha256=ms[0]["test_pixels_sha256"],
             units="accuracies and their difference as fractions", **result,
             evaluated_at=datetime.datetime.now().isoformat(timespec="seconds"), command=args.command)
    out = args.out or os.path.dirname(os.path.abspath(run_a))
    os.makedirs(out, exist_ok=True)
    stem = os.path.join(out, f"compare-{compare_name(run_a)}-vs-{compare_name(run_b)}")
    refuse_other_comparison(stem + ".json", run_a, run_b)
    write_json(stem + ".json", c)
    write_text(stem + ".md", "\n".join(compare_lines(c)) + "\n")
    print("\n".join(compare_lines(c)[2:]))
    print(f"wrote {stem}.json, {stem}.md")
    return c


def compare_name(run_dir):
    """A run's name in a comparison's file name: its folder's name, with the method in front for a
    sweep's seed folder (OUT/<method>/seed<k> -> '<method>-seed<k>')."""
    path = os.path.normpath(os.path.abspath(run_dir))
    name = os.path.basename(path)
    return f"{os.path.basename(os.path.dirname(path))}-{name}" if re.fullmatch(r"seed\d+", name) else name


def refuse_other_comparison(path, run_a, run_b):
    """A comparison file is overwritten only by the comparison of the same two runs."""
    if not os.path.isfile(path):
        return
    with open(path) as f:
        old = json.load(f)
    same = [os.path.abspath(old.get(k, "")) for k in ("run_a", "run_b")] == [os.path.abspath(r) for r in (run_a, run_b)]
    if not same:
        fail(f"{path} holds the comparison of {old.get('run_a')} with {old.get('run_b')}, not of {run_a} with "
             f"{run_b}; give another --out")


# -----------------------------------------------------------------------------

def build_parser():
    p = argparse.ArgumentParser(
        prog="evaluate.py", formatter_class=argparse.RawDescriptionHelpFormatter,
        description="Accuracy tables, confusion matrix, leakage report and classification maps of a run of "
                    "model.py (or baselines.py); mean ± std over runs; McNemar's test between two runs.",
        epilog="Accuracies are percentages with 2 decimals in tables and printed lines, fractions in "
               "JSON; kappa is a fraction. --runs reports mean ± sample standard deviation (ddof=1).")
    which = p.add_mutually_exclusive_group(required=True)
    which.add_argument("--run", metavar="RUN_DIR", help="run directory written by model.py")
    which.add_argument("--runs", nargs="+", metavar="RUN_DIR",
                       help="several runs of one protocol and data set: mean ± std per figure and class "
                            "(each run is evaluated first if it has no current metrics file)")
    which.add_argument("--compare", nargs=2, metavar=("RUN_A", "RUN_B"),
                       help="two runs scored on the same test pixels: McNemar's test on their per-pixel "
                            "correctness and the OA difference with a 95 %% confidence interval")
    p.add_argument("--data", metavar="FILE.h5", help="patch file (default: the one the run was trained on)")
    p.add_argument("--map", action="store_true", help="also classify every pixel of the scene and draw the maps")
    p.add_argument("--select", choices=list(rundir.PROTOCOLS),
                   help="checkpoint selection (default: the run's own); 'last' is always possible")
    p.add_argument("--precision", choices=list(PRECISIONS), help="inference precision (default: the run's)")
    p.add_argument("--batch-size", type=int, default=BATCH_SIZE, help=f"patches per step (default {BATCH_SIZE})")
    p.add_argument("--stand-in", action="store_true",
                   help="the data file is a synthetic stand-in for the data set it names: label every "
                        "output SYNTHETIC STAND-IN (files DataPrepare marks synthetic are labelled anyway)")
    p.add_argument("--out", metavar="DIR", help="with --runs or --compare: folder for their files "
                                                "(default: the parent folder of the first run)")
    return p


def main(argv=None):
    argv = sys.argv[1:] if argv is None else list(argv)
    args = build_parser().parse_args(argv)
    args.command = shlex.join(["python", "evaluate.py", *argv])  # recorded in metrics.json
    try:
        devices.split_cpu()  # CPU_DEVICES=N: before the backend starts
        if args.batch_size < 1:
            fail("--batch-size must be at least 1")
        if args.runs:
            return aggregate(args.runs, args)
        if args.compare:
            return compare(*args.compare, args)
        if args.out:
            fail("--out is for --runs and --compare; a single run's files go into its run directory")
        return evaluate_run(args.run, args.data, args.select, args.precision, args.batch_size, args.map,
                            args.stand_in, command=args.command)
    except (EvaluationError, devices.DeviceError) as e:
        sys.exit(f"evaluate.py: error: {e}")


if __name__ == "__main__":
    main()
