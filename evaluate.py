"""
Turn a trained run into the paper's figures: accuracy tables, confusion matrix, classification maps,
and what a reviewer asks next: how accuracy depends on the distance to the training pixels, and
whether two runs differ significantly.

    python evaluate.py --run runs/houston2013-20261125-101500            # tables + confusion matrix
    python evaluate.py --run runs/houston2013-20261125-101500 --map      # + full-scene maps
    python evaluate.py --run RUN --select last                           # last epoch of a val/authors run
    python evaluate.py --runs runs/a runs/b runs/c --out results/        # mean +- std over runs
    python evaluate.py --compare runs/net runs/svm                       # McNemar's test, OA difference

From the confusion matrix of the test split (rows: true class, columns: predicted class):
overall accuracy (OA), average accuracy (AA, the mean producer's accuracy over the classes present
in the test set), Cohen's kappa and its large-sample variance, per-class producer's accuracy (the
"accuracy" column of the paper's per-class tables, n_ii / n_i+) and user's accuracy (n_ii / n_+i).

Leakage: the test pixels grouped by their Chebyshev distance d to the nearest training pixel, in
bins of the patch radius r = P // 2: d <= r (a training pixel lies inside the test pixel's own
patch), r < d <= 2r (the test patch overlaps a training patch), near (2r < d <= 4r), middle
(4r < d <= 10r) and far (d > 10r); each with its pixel count, OA and AA. The leak-free view is the same figures on the
test pixels whose patch holds no training pixel (d > r).

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
import csv
import datetime
import hashlib
import json
import os
import resource
import shlex
import sys
import time
import warnings

import numpy as np

from fileio import replacing, sha256, write_json, write_text
from patchfile import PatchFile, PatchFileError

BATCH_SIZE = 256  # patches per inference step: on 2 CPU cores 256 is as fast as 1024 and peaks 0.9 GB lower
LEAK_EDGES = (1, 2, 4, 10)  # leakage bin edges, in units of the patch radius r = P // 2
LEAK_NAMES = ("inside the patch", "patches overlap", "near", "middle", "far")
EXACT_BELOW = 25  # McNemar: exact binomial test when fewer discordant pixels than this


class EvaluationError(ValueError):
    """A run, data file or request that cannot be evaluated; main turns it into one line."""


def fail(msg):
    raise EvaluationError(msg)


# -----------------------------------------------------------------------------
# Accuracy measures

def kappa_variance(cm):
    """Large-sample (delta-method) variance of Cohen's kappa from a confusion matrix
    (Bishop, Fienberg & Holland 1975; Congalton & Green), rows = true class. NaN if undefined."""
    cm = np.asarray(cm, np.float64)
    n = cm.sum()
    p = cm / n
    rows, cols = p.sum(1), p.sum(0)  # p_i+ and p_+i
    t1 = np.trace(p)
    t2 = rows @ cols
    t3 = np.sum(np.diag(p) * (rows + cols))
    t4 = np.sum(p * (rows[None, :] + cols[:, None]) ** 2)  # element [i, j] pairs with p_j+ + p_+i
    if t2 >= 1:  # every pixel in one class: chance agreement is total, kappa has no variance
        return float("nan")
    return float((t1 * (1 - t1) / (1 - t2) ** 2
                  + 2 * (1 - t1) * (2 * t1 * t2 - t3) / (1 - t2) ** 3
                  + (1 - t1) ** 2 * (t4 - 4 * t2 ** 2) / (1 - t2) ** 4) / n)


def accuracy_metrics(y_true, y_pred, num_classes):
    """OA, AA, kappa, kappa_var, producer's and user's accuracy per class, confusion matrix."""
    from sklearn.metrics import cohen_kappa_score, confusion_matrix
    labels = np.arange(num_classes)
    cm = confusion_matrix(y_true, y_pred, labels=labels)
    with np.errstate(invalid="ignore", divide="ignore"), warnings.catch_warnings():
        warnings.simplefilter("ignore")  # 0/0 and an undefined kappa are reported as NaN (null in JSON)
        producer = np.diag(cm) / cm.sum(1)
        user = np.diag(cm) / cm.sum(0)
        kappa = float(cohen_kappa_score(y_true, y_pred, labels=labels))
    present = cm.sum(1) > 0
    return dict(OA=float(np.trace(cm) / cm.sum()), AA=float(producer[present].mean()), kappa=kappa,
                kappa_var=kappa_variance(cm), producer=producer, user=user, confusion_matrix=cm)


# -----------------------------------------------------------------------------
# Leakage and significance

def leakage_bins(distance, y_true, y_pred, num_classes, patch_size):
    """Test pixels by Chebyshev distance to the nearest training pixel: [{name, min, max, n, OA, AA}]
    with the bins of LEAK_EDGES (see the module's docstring); max is None for the last, open bin."""
    r = patch_size // 2
    edges = [0] + [e * r for e in LEAK_EDGES]
    bins = []
    for name, lo, hi in zip(LEAK_NAMES, edges, edges[1:] + [None]):
        sel = (distance > lo) & (distance <= hi if hi is not None else True)
        bins.append(dict(name=name, min=lo + 1, max=hi, **subset_figures(sel, y_true, y_pred, num_classes)))
    return bins


def subset_figures(sel, y_true, y_pred, num_classes):
    """n, OA, AA and kappa of the test pixels selected (NaN where there are none)."""
    n = int(sel.sum())
    if not n:
        return dict(n=0, OA=float("nan"), AA=float("nan"), kappa=float("nan"))
    acc = accuracy_metrics(y_true[sel], y_pred[sel], num_classes)
    return dict(n=n, OA=acc["OA"], AA=acc["AA"], kappa=acc["kappa"])


def leakage_report(pf, y_true, y_pred):
    """The leakage bins and the leak-free view of a test set, from the patch file's coordinates."""
    distance = pf.distance_to_train("test")
    r, p, c = pf.patch_size // 2, pf.patch_size, pf.info()["num_classes"]
    return dict(
        leakage=dict(
            distance="Chebyshev distance in pixels from each test pixel to the nearest training pixel "
                     "(train split; val pixels are not trained on)",
            patch_size=p, patch_radius=r, bins=leakage_bins(distance, y_true, y_pred, c, p)),
        leak_free=dict(definition=f"test pixels whose {p} x {p} patch holds no training pixel (distance > {r})",
                       **subset_figures(distance > r, y_true, y_pred, c)))


def mcnemar(correct_a, correct_b):
    """McNemar's test of two classifiers on the same pixels, and OA_A - OA_B with a 95 % Wald
    interval for paired proportions. Exact binomial test below EXACT_BELOW discordant pixels,
    else the continuity-corrected chi-square with one degree of freedom."""
    from scipy import stats
    a, b_ = np.asarray(correct_a, bool), np.asarray(correct_b, bool)
    n = len(a)
    b, c = int(np.sum(a & ~b_)), int(np.sum(~a & b_))
    if b + c < EXACT_BELOW:
        test, statistic = "exact binomial, two-sided", None
        p = float(stats.binomtest(b, b + c, 0.5).pvalue) if b + c else 1.0
    else:
        test, statistic = "chi-square with continuity correction, 1 degree of freedom", (abs(b - c) - 1) ** 2 / (b + c)
        p = float(stats.chi2.sf(statistic, 1))
    diff = (b - c) / n
    se = np.sqrt((b + c) - (b - c) ** 2 / n) / n
    z = float(stats.norm.ppf(0.975))
    return dict(n=n, both_correct=int(np.sum(a & b_)), only_a_correct=b, only_b_correct=c,
                both_wrong=int(np.sum(~a & ~b_)), test=test, statistic=statistic, p_value=p,
                OA_a=float(a.mean()), OA_b=float(b_.mean()), OA_difference=diff,
                OA_difference_ci95=[diff - z * se, diff + z * se])


# -----------------------------------------------------------------------------
# The run and the data file

BASELINE_PROTOCOL = "no checkpoint selection (classic baseline: hyperparameters by cross-validation on the training pixels)"


def read_run(run_dir):
    """config.json and state.json of a run directory (state may be absent for an unfinished run)."""
    path = os.path.join(run_dir, "config.json")
    if not os.path.isdir(run_dir):
        fail(f"{run_dir}: no such run directory")
    if not os.path.isfile(path):
        fail(f"{run_dir}: no config.json: not a run directory written by model.py or baselines.py")
    with open(path) as f:
        config = json.load(f)
    for key in ("select", "data") + (() if is_baseline(config) else ("architecture",)):
        if key not in config:
            fail(f"{path}: key '{key}' missing: not a config written by model.py")
    state = {}
    if os.path.isfile(os.path.join(run_dir, "state.json")):
        with open(os.path.join(run_dir, "state.json")) as f:
            state = json.load(f)
    return config, state


def is_baseline(config):
    return "method" in config  # written by baselines.py


def choose_checkpoint(run_dir, config, state, select):
    """(select, checkpoint file stem, epoch) for the requested protocol. 'last' is always there
    (final.keras); another selection only if the run itself selected that way during training."""
    run_select = config["select"]
    select = select or run_select
    if select == "last":
        checkpoint, epoch = "final", state.get("epochs_done")
    elif select == run_select:
        checkpoint, epoch = "selected", state.get("selected_epoch")
    else:
        fail(f"{run_dir}: the run selected its checkpoint by '{run_select}', so it has no '{select}' "
             f"checkpoint; retrain with model.py --select {select} (or evaluate --select last)")
    if not os.path.isfile(os.path.join(run_dir, f"{checkpoint}.keras")):
        fail(f"{run_dir}: no {checkpoint}.keras: has the training finished (or saved an epoch)?")
    return select, checkpoint, epoch


def file_suffix(config, select, precision, data=None):
    """'' for the run's own checkpoint selection, precision and data file, else '-last', '-mixed',
    '-last-float32', '-<data file's stem>'...: numbers made another way never overwrite the run's own."""
    parts = [select] if select != config["select"] else []
    if data and os.path.abspath(data) != os.path.abspath(config["data"]):
        parts.append(os.path.splitext(os.path.basename(data))[0])
    if precision != config.get("precision", "float32"):
        parts.append(precision)
    return "".join(f"-{part}" for part in parts)


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


def dataset_label(dataset, synthetic, stand_in):
    """The data set's name as every output shows it: synthetic data is never passed off as real."""
    if stand_in:
        return f"{dataset} SYNTHETIC STAND-IN (not the real {dataset} data)"
    if synthetic:
        return f"{dataset} (SYNTHETIC data, not real)"
    return dataset


def test_pixels_digest(pf):
    """sha256 of the test split's coordinates and labels: two runs with the same digest were
    scored on the same pixels, whatever else differs in their patch files (the normalisation)."""
    h = hashlib.sha256()
    h.update(np.ascontiguousarray(pf.coords("test"), np.int64).tobytes())
    h.update(np.ascontiguousarray(pf.labels("test"), np.int64).tobytes())
    return h.hexdigest()


# -----------------------------------------------------------------------------
# Inference: the classification path only (no reconstruction heads), bounded batches

def predict_test(clf, pf, batch_size):
    """Predicted labels 0..C-1 of the test split, its patches cut from the scene a batch at a time,
    with a progress bar and the time left; returns (labels, seconds)."""
    from tqdm import tqdm

    from model import predict_split
    t0 = time.time()
    with tqdm(total=len(pf.labels("test")), desc="test pixels", unit="px", unit_scale=True, mininterval=2,
              leave=False) as bar:
        labels = predict_split(clf, pf, "test", batch_size, progress=bar)
    return labels, time.time() - t0


def network_predictor(clf, batch_size):
    """predict(hsi patches, aux patches) -> labels 0..C-1 with the network's classifier."""
    from model import predict_labels
    return lambda hsi, aux: predict_labels(clf, hsi, aux, batch_size)


def predict_scene(pf, predict, patch_size, batch_size):
    """(H, W) map of predicted labels 1..C for every pixel, labelled or not; predict(hsi, aux) takes
    patches of patch_size (1 for the centre-pixel baselines)."""
    from tqdm import tqdm
    h, w = pf.shape
    out = np.zeros((h, w), np.uint8 if pf.info()["num_classes"] < 256 else np.int16)
    with tqdm(total=h * w, desc="map", unit="px", unit_scale=True, mininterval=5) as bar:
        for rows, cols, x in pf.scene_batches(batch_size, patch_size):
            out[rows, cols] = predict(x["hsi"], x["aux"]) + 1
            bar.update(len(rows))
    return out


# -----------------------------------------------------------------------------
# Writing the tables and figures

def pct(x):
    return "n/a" if x is None or np.isnan(x) else f"{100 * x:.2f}"


def describe(m):
    """The lines that say where a table's numbers come from, shared by headers and titles."""
    return [f"protocol: {m['protocol']}", f"model: {m['model']}",
            f"data: {m['data']} (sha256 {m['data_sha256'][:16]}...), {m['n_test']} test pixels",
            f"normalisation: {m['normalisation']}", f"split: {m['split']}"]


def network_description(m):
    epoch = f"epoch {m['selected_epoch']} of {m['epochs_done']}" if m["selected_epoch"] else "epoch unknown"
    return (f"checkpoint {m['checkpoint']} ({epoch}), trained in {m['training_precision']}, "
            f"inferred in {m['precision']}")


def leakage_lines(m):
    """The leakage table and the leak-free line, in Markdown."""
    lk, lf = m["leakage"], m["leak_free"]
    r = lk["patch_radius"]
    lines = [f"## Accuracy by distance to the nearest training pixel (patch {lk['patch_size']} x "
             f"{lk['patch_size']}, radius {r})", "",
             "| Distance (px) | Bin | Test pixels | Share (%) | OA (%) | AA (%) |", "|---|:---|---:|---:|---:|---:|"]
    for b in lk["bins"]:
        lines.append(f"| {bin_span(b)} | {b['name']} | {b['n']} | {pct(b['n'] / m['n_test'])} | {pct(b['OA'])} | {pct(b['AA'])} |")
    lines += ["", f"Leak-free view, {lf['definition']}: {lf['n']} of {m['n_test']} test pixels, "
                  f"OA {pct(lf['OA'])} %, AA {pct(lf['AA'])} %, kappa {kappa_text(lf['kappa'])}.", ""]
    return lines


def bin_span(b):
    """A leakage bin's distances in pixels: '6-10', or '> 50' for the open last bin."""
    return f"{b['min']}-{b['max']}" if b["max"] is not None else f"> {b['min'] - 1}"


def kappa_text(k):
    return "n/a" if k is None or np.isnan(k) else f"{k:.4f}"


def write_markdown(path, m):
    """The per-class table of the paper: class, train count, test count, accuracy; OA, AA, kappa;
    then the leakage table."""
    lines = [f"# {m['dataset_label']}: per-class accuracy", "",
             *[f"- {s}" for s in [f"run: `{m['run']}`"] + describe(m)],
             "- accuracies in %, 2 decimals (accuracy = producer's accuracy = per-class recall); "
             "kappa as a fraction", "",
             "| No. | Class | Train | Test | Accuracy (%) | User's accuracy (%) |",
             "|---:|:---|---:|---:|---:|---:|"]
    for c in m["per_class"]:
        lines.append(f"| {c['class']} | {c['name']} | {c['train']} | {c['test']} | "
                     f"{pct(c['producer_accuracy'])} | {pct(c['user_accuracy'])} |")
    train = sum(c["train"] for c in m["per_class"])
    lines += [f"| | **OA (%)** | {train} | {m['n_test']} | **{pct(m['OA'])}** | |",
              f"| | **AA (%)** | | | **{pct(m['AA'])}** | |",
              f"| | **Kappa** | | | **{m['kappa']:.4f}** | |",
              "", f"Kappa's large-sample variance: {m['kappa_var']:.3g}.", ""]
    lines += leakage_lines(m)
    if "map" in m:
        lines.append(f"Full-scene map: accuracy at the {m['map']['test_pixels']} labelled test pixels "
                     f"{pct(m['map']['accuracy_test_pixels'])} %; the map and the test predictions give the same "
                     f"class at {m['map']['test_pixels_agreeing_with_patch_predictions']} of {m['n_test']} "
                     f"test pixels.")
    write_text(path, "\n".join(lines) + "\n")


def write_confusion_csv(path, cm, names):
    with replacing(path) as tmp, open(tmp, "w", newline="") as f:
        w = csv.writer(f)
        w.writerow(["true \\ predicted"] + names)
        for name, row in zip(names, cm):
            w.writerow([name] + [int(v) for v in row])


def pyplot():
    import matplotlib
    matplotlib.use("Agg")  # files only, no display needed
    import matplotlib.pyplot as plt
    return plt


def plot_confusion(path, cm, names, m):
    """Row-normalised confusion matrix (each true class sums to 1), class names on both axes."""
    from sklearn.metrics import ConfusionMatrixDisplay
    plt = pyplot()
    with np.errstate(invalid="ignore", divide="ignore"):
        norm = np.nan_to_num(cm / cm.sum(1, keepdims=True))
    size = max(6.0, 0.5 * len(names) + 3)
    fig, ax = plt.subplots(figsize=(size + 1, size))
    ConfusionMatrixDisplay(norm, display_labels=names).plot(
        ax=ax, cmap="Blues", values_format=".2f", xticks_rotation="vertical", colorbar=True,
        text_kw={"fontsize": 7 if len(names) > 10 else 9})
    ax.set(xlabel="predicted class", ylabel="true class")
    ax.set_title(f"{m['dataset_label']}: confusion matrix, rows normalised\n{m['protocol']}\n"
                 f"data normalised {m['normalisation']}\n"
                 f"OA {pct(m['OA'])} %, AA {pct(m['AA'])} %, kappa {m['kappa']:.4f}, "
                 f"{m['n_test']} test pixels", fontsize=9)
    fig.tight_layout()
    with replacing(path) as tmp:
        fig.savefig(tmp, dpi=120)
    plt.close(fig)


def plot_labels(path, labels, palette, names, title):
    """A label map (0 unlabelled, 1..C) in the data set's colours, with a legend outside it."""
    from matplotlib.patches import Patch
    plt = pyplot()
    palette = np.asarray(palette, np.float64) / 255
    # unlabelled is black, unless a class already is (Houston's Railway): then a dark grey
    background = np.array([0.25, 0.25, 0.25]) if (palette.sum(1) == 0).any() else np.zeros(3)
    rgb = np.vstack([background, palette])[labels]
    h, w = labels.shape
    scale = -(-500 // w)  # whole screen pixels per scene pixel: exact for big scenes, >= 500 px wide
    dpi = 100
    wide = w >= 2 * h  # long thin scenes (Houston 349 x 1905) get their legend underneath
    fig = plt.figure(figsize=(w * scale / dpi, h * scale / dpi))
    ax = fig.add_axes((0, 0, 1, 1))  # the image fills the figure; title and legend lie outside it
    ax.imshow(rgb, interpolation="nearest")
    ax.set_axis_off()
    ax.set_title(title, fontsize=9)
    handles = [Patch(facecolor=c, edgecolor="black", label=f"{i + 1} {n}") for i, (c, n) in
               enumerate(zip(palette, names))]
    if (labels == 0).any():
        handles.append(Patch(facecolor=background, edgecolor="black", label="unlabelled"))
    if wide:
        ax.legend(handles=handles, loc="upper center", bbox_to_anchor=(0.5, -0.02), fontsize=8,
                  ncol=min(len(handles), 8), frameon=False)
    else:
        ax.legend(handles=handles, loc="upper left", bbox_to_anchor=(1.01, 1), fontsize=8, frameon=False)
    with replacing(path) as tmp:  # "tight" takes in the legend that lies outside the axes
        fig.savefig(tmp, dpi=dpi, bbox_inches="tight", pad_inches=0.1)
    plt.close(fig)


def plot_leakage(path, m):
    """OA and AA per distance bin over grey bars of each bin's pixel count, and the leak-free OA."""
    plt = pyplot()
    bins = m["leakage"]["bins"]
    x = np.arange(len(bins))
    fig, ax = plt.subplots(figsize=(7.5, 4.5))
    counts = ax.twinx()  # the counts behind, the accuracies in front
    counts.bar(x, [b["n"] for b in bins], width=0.6, color="0.88")
    for i, b in enumerate(bins):
        counts.annotate(f"{b['n']} px", (i, b["n"]), ha="center", va="bottom", fontsize=8, color="0.4")
    counts.set_ylabel("test pixels in the bin", color="0.4")
    ax.set_zorder(counts.get_zorder() + 1)
    ax.patch.set_visible(False)
    ax.plot(x, [100 * b["OA"] if b["n"] else np.nan for b in bins], "o-", label="OA")
    ax.plot(x, [100 * b["AA"] if b["n"] else np.nan for b in bins], "s--", label="AA")
    ax.axhline(100 * m["OA"], color="grey", lw=0.8, label=f"all test pixels: OA {pct(m['OA'])} %")
    if m["leak_free"]["n"]:
        ax.axhline(100 * m["leak_free"]["OA"], color="tab:red", lw=0.8, ls=":",
                   label=f"leak-free: OA {pct(m['leak_free']['OA'])} %")
    labels = [f"{bin_span(b)}\n{b['name']}" for b in bins]
    ax.set_xticks(x, labels, fontsize=8)
    ax.set(xlabel="Chebyshev distance to the nearest training pixel (pixels)", ylabel="accuracy (%)")
    ax.set_title(f"{m['dataset_label']}: accuracy by distance to the training pixels\n{m['protocol']}\n"
                 f"data normalised {m['normalisation']}", fontsize=9)
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8, loc="upper center", bbox_to_anchor=(0.5, -0.22), ncol=2, frameon=False)
    fig.tight_layout()
    with replacing(path) as tmp:
        fig.savefig(tmp, dpi=120)
    plt.close(fig)


# -----------------------------------------------------------------------------
# One run

def evaluate_run(run_dir, data=None, select=None, precision=None, batch_size=BATCH_SIZE,
                 make_map=False, stand_in=False, command=""):
    """Evaluate a run's checkpoint on the test split (and the scene); write the files; return metrics."""
    config, state = read_run(run_dir)
    if is_baseline(config):
        fail(f"{run_dir}: a baseline run of baselines.py ({config['method']}); it was evaluated when it was "
             f"made (metrics.json); run baselines.py again to remake it")
    select, checkpoint, epoch = choose_checkpoint(run_dir, config, state, select)
    data = data or config["data"]
    precision = precision or config.get("precision", "float32")
    with open_data(data) as pf:
        check_compatible(pf, data, config["architecture"], run_dir)
        clf = load_checkpoint(run_dir, checkpoint, precision)
        if state.get("epochs_done") is not None and state["epochs_done"] < config.get("epochs", 0):
            print(f"evaluate.py: warning: {run_dir} is unfinished: {state['epochs_done']} of "
                  f"{config['epochs']} epochs", file=sys.stderr)
        y_pred, seconds = predict_test(clf, pf, batch_size)
        m = test_report(pf, data, y_pred, stand_in, config, command)
        from model import PROTOCOLS
        m.update(run=run_dir, protocol=PROTOCOLS[select], select=select, run_select=config["select"],
                 checkpoint=f"{checkpoint}.keras", epochs_done=state.get("epochs_done"), selected_epoch=epoch,
                 epochs_planned=config.get("epochs"), precision=precision,
                 training_precision=config.get("precision", "float32"),
                 test_seconds=round(seconds, 1), test_pixels_per_second=round(len(y_pred) / max(seconds, 1e-9), 1),
                 batch_size=batch_size)
        m["model"] = network_description(m)
        suffix = file_suffix(config, select, precision, data)
        predict = network_predictor(clf, batch_size)
        maps = write_maps(pf, predict, pf.patch_size, batch_size, m, run_dir, suffix, y_pred) if make_map else []
    m["peak_rss_mb"] = round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024, 1)
    written = write_report(run_dir, suffix, m, y_pred) + maps
    print_headline(m, written)
    return m


def load_checkpoint(run_dir, checkpoint, precision):
    import keras

    from model import load_classifier
    policy = keras.mixed_precision.dtype_policy()
    try:
        return load_classifier(run_dir, checkpoint, precision)
    except Exception as e:  # a damaged or foreign .keras file fails in many ways
        fail(f"{run_dir}: cannot load {checkpoint}.keras ({type(e).__name__}: {e})")
    finally:
        keras.mixed_precision.set_dtype_policy(policy)  # load_classifier sets it for the whole process


def test_report(pf, data, y_pred, stand_in, config, command):
    """Every figure of a test set's predictions (0..C-1) that does not depend on how they were made:
    OA, AA, kappa, per-class accuracies, leakage bins, the leak-free view, and where the data came from."""
    info = pf.info()
    names, attrs = info["class_names"], pf.attrs
    synthetic = info["synthetic"] or bool(config.get("synthetic", False))
    y_true = pf.labels("test")
    acc = accuracy_metrics(y_true, y_pred, len(names))
    digest, trained_on = sha256(data), config.get("data_sha256")
    if trained_on and trained_on != digest:
        print(f"evaluate.py: warning: {data} is not the file the run was trained on "
              f"(sha256 {digest[:12]}... vs {trained_on[:12]}...)", file=sys.stderr)
    train_counts = np.bincount(pf.labels("train"), minlength=len(names))
    m = dict(
        dataset=info["dataset"], dataset_label=dataset_label(info["dataset"], synthetic, stand_in),
        synthetic=synthetic or stand_in, stand_in=stand_in,
        data=os.path.basename(data), data_path=os.path.abspath(data), data_sha256=digest,
        data_matches_training=None if not trained_on else trained_on == digest,
        normalise=info["normalise"], normalisation=info["normalisation"],
        split=attrs["split"], test_pixels_sha256=test_pixels_digest(pf),
        n_test=int(len(y_true)),
        units="OA, AA, producer's and user's accuracy as fractions (0..1); kappa as a fraction",
        OA=acc["OA"], AA=acc["AA"], kappa=acc["kappa"], kappa_var=acc["kappa_var"], class_names=names,
        per_class=[dict(**{"class": i + 1}, name=n, train=int(train_counts[i]), test=int(acc["confusion_matrix"][i].sum()),
                        producer_accuracy=acc["producer"][i], user_accuracy=acc["user"][i])
                   for i, n in enumerate(names)],
        confusion_matrix=acc["confusion_matrix"],
        confusion_matrix_axes="rows: true class, columns: predicted class, in class_names order",
        **leakage_report(pf, y_true, y_pred),
        evaluated_at=datetime.datetime.now().isoformat(timespec="seconds"), command=command)
    return m


def run_file(run_dir, suffix):
    """out(name, ext) -> the path of a result file in a run directory, with the protocol's suffix."""
    return lambda name, ext: os.path.join(run_dir, f"{name}{suffix}.{ext}")


def write_report(run_dir, suffix, m, y_pred):
    """metrics.json/.md, the confusion matrix (CSV, PNG), the leakage plot and the per-pixel
    predictions of a run; returns the paths written."""
    out = run_file(run_dir, suffix)
    m["predictions"] = os.path.basename(out("predictions", "npy"))
    with replacing(out("predictions", "npy")) as tmp:
        np.save(tmp, (np.asarray(y_pred) + 1).astype(np.int16))  # 1..C like the maps
    write_json(out("metrics", "json"), m)
    write_markdown(out("metrics", "md"), m)
    cm = np.asarray(m["confusion_matrix"])
    write_confusion_csv(out("confusion_matrix", "csv"), cm, m["class_names"])
    plot_confusion(out("confusion_matrix", "png"), cm, m["class_names"], m)
    plot_leakage(out("leakage", "png"), m)
    return [out("metrics", "json"), out("metrics", "md"), out("confusion_matrix", "csv"),
            out("confusion_matrix", "png"), out("leakage", "png"), out("predictions", "npy")]


def write_maps(pf, predict, patch_size, batch_size, m, run_dir, suffix, y_pred):
    """Classify every pixel, check the map against the test predictions (y_pred), write the PNGs and
    .npy; records the map's figures in m["map"]."""
    names = m["class_names"]
    out = run_file(run_dir, suffix)
    palette = pf.palette
    t0 = time.time()
    labels = predict_scene(pf, predict, patch_size, batch_size)
    seconds = time.time() - t0
    test_map = pf.label_map("test_map")
    at = test_map > 0
    accuracy = float(np.mean(labels[at] == test_map[at])) if at.any() else float("nan")
    coord = pf.coords("test")
    agree = int(np.sum(labels[coord[:, 0], coord[:, 1]] == y_pred + 1))  # same pixel, same class?
    m["map"] = dict(file=os.path.basename(out("map", "npy")), shape=list(labels.shape), pixels=int(labels.size),
                    test_pixels=int(at.sum()), accuracy_test_pixels=accuracy,
                    agrees_with_OA=bool(at.sum() == m["n_test"] and abs(accuracy - m["OA"]) < 1e-12),
                    test_pixels_agreeing_with_patch_predictions=agree,
                    seconds=round(seconds, 1), pixels_per_second=round(labels.size / seconds, 1),
                    batch_size=batch_size)
    if not m["map"]["agrees_with_OA"] or agree != len(coord):
        print(f"evaluate.py: warning: the map differs from the test predictions at "
              f"{len(coord) - agree} of {len(coord)} test pixels; its accuracy there is {pct(accuracy)} %, "
              f"OA on the test split {pct(m['OA'])} %", file=sys.stderr)
    with replacing(out("map", "npy")) as tmp:
        np.save(tmp, labels)
    title = (f"{m['dataset_label']}: classification map, run {os.path.basename(os.path.normpath(m['run']))}\n"
             f"{m['protocol']}; data normalised {m['normalisation']}; "
             f"accuracy at the {int(at.sum())} test pixels {pct(accuracy)} %")
    plot_labels(out("map", "png"), labels, palette, names, title)
    gt = [os.path.join(run_dir, f"ground_truth_{s}.png") for s in ("train", "test")]
    for path, split in zip(gt, ("train", "test")):
        gt_map = pf.label_map(f"{split}_map")
        plot_labels(path, gt_map, palette, names,
                    f"{m['dataset_label']}: {split} ground truth, {int((gt_map > 0).sum())} labelled pixels")
    return [out("map", "npy"), out("map", "png")] + gt


def print_headline(m, written):
    lf = m["leak_free"]
    print(f"{m['dataset_label']}: OA {pct(m['OA'])} %, AA {pct(m['AA'])} %, kappa {m['kappa']:.4f} "
          f"(variance {m['kappa_var']:.3g}) on {m['n_test']} test pixels")
    print(f"  leak-free ({lf['n']} test pixels whose patch holds no training pixel): OA {pct(lf['OA'])} %, "
          f"AA {pct(lf['AA'])} %, kappa {kappa_text(lf['kappa'])}")
    inside = m["leakage"]["bins"][0]
    print(f"  inside the patch ({inside['n']} test pixels with a training pixel in their patch): "
          f"OA {pct(inside['OA'])} %")
    for line in describe(m)[:2] + describe(m)[3:]:
        print("  " + line)
    if "test_pixels_per_second" in m:
        print(f"  test split: {m['n_test']} pixels in {m['test_seconds']} s ({m['test_pixels_per_second']} px/s)")
    if "map" in m:
        mp = m["map"]
        print(f"  map: {mp['pixels']} pixels in {mp['seconds']} s ({mp['pixels_per_second']} px/s), "
              f"accuracy at the test pixels {pct(mp['accuracy_test_pixels'])} %"
              f"{' (= OA)' if mp['agrees_with_OA'] else ' (DIFFERS from OA)'}; "
              f"{mp['test_pixels_agreeing_with_patch_predictions']} of {m['n_test']} test pixels agree "
              f"with the test predictions")
    print("wrote " + ", ".join(written))


# -----------------------------------------------------------------------------
# Several runs: mean +- std, the way peers report "over N runs"

def run_metrics(run_dir, args):
    """A run's metrics for the requested protocol: its metrics file if it is current, else evaluate."""
    config, state = read_run(run_dir)
    if is_baseline(config):
        path = os.path.join(run_dir, "metrics.json")
        if not os.path.isfile(path):
            fail(f"{run_dir}: a baseline run without metrics.json: run baselines.py again")
        with open(path) as f:
            return json.load(f)
    select = args.select or config["select"]
    precision = args.precision or config.get("precision", "float32")
    data = args.data or config["data"]
    path = os.path.join(run_dir, f"metrics{file_suffix(config, select, precision, data)}.json")
    if os.path.isfile(path):
        with open(path) as f:
            m = json.load(f)
        # evaluate again if the run went on training since, or the data file changed, or the labelling
        # asked for differs, or the file predates the leakage report
        current = m.get("epochs_done") == state.get("epochs_done") and "leakage" in m and "predictions" in m
        same_data = m.get("data_path") == os.path.abspath(data) and m.get("data_sha256") == sha256(data)
        if current and same_data and (m.get("stand_in") or not args.stand_in):
            return m
    return evaluate_run(run_dir, args.data, args.select, args.precision, args.batch_size, args.map,
                        args.stand_in, command=args.command)


def mean_std(values):
    """Mean and sample standard deviation (ddof=1) of the non-null values; std is NaN for one run."""
    v = np.array([np.nan if x is None else x for x in values], np.float64)
    v = v[~np.isnan(v)]
    if not len(v):
        return dict(mean=float("nan"), std=float("nan"), n=0)
    return dict(mean=float(v.mean()), std=float(v.std(ddof=1)) if len(v) > 1 else float("nan"), n=int(len(v)))


def aggregate(runs, args):
    ms = [run_metrics(r, args) for r in runs]
    for key in ("protocol", "dataset_label", "class_names", "n_test", "normalisation"):
        seen = {json.dumps(m.get(key)) for m in ms}
        if len(seen) > 1:
            listing = "; ".join(f"{r}: {m.get(key)}" for r, m in zip(runs, ms))
            fail(f"the runs differ in {key} ({listing}); aggregate only runs of one protocol and one "
                 f"normalisation on one data set (use --select to pick one protocol)")
    first = ms[0]
    same = len({m.get("test_pixels_sha256") for m in ms}) == 1  # else drawn splits differ between runs
    count = lambda get: get(first) if same else None  # noqa: E731  (per-run counts differ otherwise)
    agg = dict(
        dataset=first["dataset"], dataset_label=first["dataset_label"], synthetic=first["synthetic"],
        protocol=first["protocol"], select=first.get("select"), normalisation=first.get("normalisation"),
        split=sorted({str(m.get("split")) for m in ms}), same_test_pixels=same,
        n_runs=len(ms), runs=list(runs), models=[m.get("model", "?") for m in ms],
        precision=sorted({str(m.get("precision", "n/a")) for m in ms}),
        training_precision=sorted({str(m.get("training_precision", "n/a")) for m in ms}),
        std="sample standard deviation over runs (ddof=1); null for a single run",
        units=first["units"], n_test=first["n_test"],
        data=sorted({m["data"] for m in ms}), data_sha256=sorted({m["data_sha256"] for m in ms}),
        checkpoints=[f"{m.get('checkpoint')} epoch {m.get('selected_epoch')}" for m in ms],
        **{k: dict(mean_std([m[k] for m in ms]), values=[m[k] for m in ms]) for k in ("OA", "AA", "kappa")},
        per_class=[dict(**{"class": i + 1}, name=n, train=count(lambda m: m["per_class"][i]["train"]),
                        test=count(lambda m: m["per_class"][i]["test"]),
                        producer_accuracy=mean_std([m["per_class"][i]["producer_accuracy"] for m in ms]),
                        user_accuracy=mean_std([m["per_class"][i]["user_accuracy"] for m in ms]))
                   for i, n in enumerate(first["class_names"])],
        leakage=dict(first["leakage"], bins=[
            dict(name=b["name"], min=b["min"], max=b["max"], n=count(lambda m: m["leakage"]["bins"][i]["n"]),
                 OA=mean_std([m["leakage"]["bins"][i]["OA"] for m in ms]),
                 AA=mean_std([m["leakage"]["bins"][i]["AA"] for m in ms]))
            for i, b in enumerate(first["leakage"]["bins"])]),
        leak_free=dict(definition=first["leak_free"]["definition"], n=count(lambda m: m["leak_free"]["n"]),
                       **{k: mean_std([m["leak_free"][k] for m in ms]) for k in ("OA", "AA", "kappa")}),
        evaluated_at=datetime.datetime.now().isoformat(timespec="seconds"))
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


def pm(s, kappa=False):
    """'mean ± std' in the tables' units."""
    f = kappa_text if kappa else pct
    return f"{f(s['mean'])} ± {f(s['std'])}"


def write_aggregate_markdown(path, agg):
    lines = [f"# {agg['dataset_label']}: per-class accuracy over {agg['n_runs']} runs", "",
             f"- protocol: {agg['protocol']}",
             f"- precision: trained in {', '.join(agg['training_precision'])}, "
             f"inferred in {', '.join(agg['precision'])}",
             f"- runs: {', '.join(f'`{r}`' for r in agg['runs'])}",
             f"- data: {', '.join(agg['data'])}, {agg['n_test']} test pixels",
             f"- normalisation: {agg['normalisation']}",
             f"- split: {'; '.join(agg['split'])}" + ("" if agg["same_test_pixels"] else
                                                    " (the runs' test pixels differ: pixel counts vary)"),
             "- mean ± sample standard deviation (ddof=1) over runs; accuracies in %, kappa as a fraction", "",
             "| No. | Class | Train | Test | Accuracy (%) | User's accuracy (%) |",
             "|---:|:---|---:|---:|---:|---:|"]
    shown = lambda n: "varies" if n is None else n  # noqa: E731
    for c in agg["per_class"]:
        lines.append(f"| {c['class']} | {c['name']} | {shown(c['train'])} | {shown(c['test'])} | "
                     f"{pm(c['producer_accuracy'])} | {pm(c['user_accuracy'])} |")
    lines += [f"| | **OA (%)** | | {agg['n_test']} | **{pm(agg['OA'])}** | |",
              f"| | **AA (%)** | | | **{pm(agg['AA'])}** | |",
              f"| | **Kappa** | | | **{pm(agg['kappa'], kappa=True)}** | |", "",
              "## Accuracy by distance to the nearest training pixel", "",
              "| Distance (px) | Bin | Test pixels | OA (%) | AA (%) |", "|---|:---|---:|---:|---:|"]
    for b in agg["leakage"]["bins"]:
        lines.append(f"| {bin_span(b)} | {b['name']} | {shown(b['n'])} | {pm(b['OA'])} | {pm(b['AA'])} |")
    lf = agg["leak_free"]
    lines += ["", f"Leak-free view, {lf['definition']}: {shown(lf['n'])} test pixels, OA {pm(lf['OA'])} %, "
                  f"AA {pm(lf['AA'])} %, kappa {pm(lf['kappa'], kappa=True)}.", ""]
    write_text(path, "\n".join(lines) + "\n")


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
    stem = os.path.join(out, f"compare-{os.path.basename(os.path.normpath(run_a))}-vs-"
                             f"{os.path.basename(os.path.normpath(run_b))}")
    write_json(stem + ".json", c)
    write_text(stem + ".md", "\n".join(compare_lines(c)) + "\n")
    print("\n".join(compare_lines(c)[2:]))
    print(f"wrote {stem}.json, {stem}.md")
    return c


def p_text(p):
    return "< 1e-300" if p < 1e-300 else f"= {p:.3g}"  # chi-square's tail underflows to 0


def compare_lines(c):
    lo, hi = c["OA_difference_ci95"]
    stat = f"chi-square {c['statistic']:.3f}, " if c["statistic"] is not None else ""
    return [f"# {c['dataset_label']}: A against B on the same {c['n']} test pixels", "",
            f"- A: `{c['run_a']}`: {c['model_a']}; {c['protocol_a']}; data {c['data_a']} normalised "
            f"{c['normalisation_a']}",
            f"- B: `{c['run_b']}`: {c['model_b']}; {c['protocol_b']}; data {c['data_b']} normalised "
            f"{c['normalisation_b']}",
            f"- split: {c['split']}",
            "", "| | B correct | B wrong |", "|---|---:|---:|",
            f"| **A correct** | {c['both_correct']} | {c['only_a_correct']} |",
            f"| **A wrong** | {c['only_b_correct']} | {c['both_wrong']} |", "",
            f"McNemar's test ({c['test']}): {stat}p {p_text(c['p_value'])}.",
            f"OA: A {pct(c['OA_a'])} %, B {pct(c['OA_b'])} %; A - B = {100 * c['OA_difference']:+.2f} points, "
            f"95 % confidence interval [{100 * lo:+.2f}, {100 * hi:+.2f}] (Wald interval for paired proportions)."]


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
    p.add_argument("--select", choices=["last", "val", "authors"],
                   help="checkpoint selection (default: the run's own); 'last' is always possible")
    p.add_argument("--precision", choices=["float32", "mixed"], help="inference precision (default: the run's)")
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
    except EvaluationError as e:
        sys.exit(f"evaluate.py: error: {e}")


if __name__ == "__main__":
    main()
