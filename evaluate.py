"""
Turn a trained run into the paper's figures: accuracy tables, confusion matrix, classification maps.

    python evaluate.py --run runs/houston2013-20261125-101500            # tables + confusion matrix
    python evaluate.py --run runs/houston2013-20261125-101500 --map      # + full-scene maps
    python evaluate.py --run RUN --select last                           # last epoch of a val/authors run
    python evaluate.py --runs runs/a runs/b runs/c --out results/        # mean +- std over runs

From the confusion matrix of the test group (rows: true class, columns: predicted class):
overall accuracy (OA), average accuracy (AA, the mean producer's accuracy over the classes present
in the test set), Cohen's kappa and its large-sample variance, per-class producer's accuracy (the
"accuracy" column of the paper's per-class tables, n_ii / n_i+) and user's accuracy (n_ii / n_+i).

Files written into the run directory (SUFFIX is empty for the run's own checkpoint selection and
precision, "-last", "-mixed", "-last-float32" etc. for another, so that numbers made another way never
overwrite the run's own):
    metrics{SUFFIX}.json            every figure, the protocol, checkpoint and data file (name, sha256)
    metrics{SUFFIX}.md              the per-class table laid out like the paper's
    confusion_matrix{SUFFIX}.csv    counts; confusion_matrix{SUFFIX}.png row-normalised
    with --map: map{SUFFIX}.npy (H, W) labels 1..C, map{SUFFIX}.png, ground_truth_train.png,
                ground_truth_test.png
With --runs: aggregate.json and aggregate.md (mean +- sample standard deviation, ddof=1) in --out,
by default the parent folder of the first run.

Accuracies are fractions (0..1) in the JSON files and percentages with 2 decimals in the Markdown
tables and printed lines; kappa is a fraction everywhere.
"""
import argparse
import csv
import datetime
import json
import os
import resource
import shlex
import sys
import time
import warnings

import numpy as np

from DataPrepare import replacing, sha256, write_json

BATCH_SIZE = 256  # patches per inference step: on 2 CPU cores 256 is as fast as 1024 and peaks 0.9 GB lower
BAND_ROWS = 16  # scene rows whose patches are cut at a time for the map (DataPrepare's chunk height)
GROUP_KEYS = ("hsi", "aux", "label", "coord")
SCENE_KEYS = ("hsi", "aux", "train_map", "test_map")


def fail(msg):
    sys.exit(f"evaluate.py: error: {msg}")


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
# The run and the data file

def read_run(run_dir):
    """config.json and state.json of a run directory (state may be absent for an unfinished run)."""
    path = os.path.join(run_dir, "config.json")
    if not os.path.isdir(run_dir):
        fail(f"{run_dir}: no such run directory")
    if not os.path.isfile(path):
        fail(f"{run_dir}: no config.json: not a run directory written by model.py")
    with open(path) as f:
        config = json.load(f)
    for key in ("architecture", "select", "data"):
        if key not in config:
            fail(f"{path}: key '{key}' missing: not a config written by model.py")
    state = {}
    if os.path.isfile(os.path.join(run_dir, "state.json")):
        with open(os.path.join(run_dir, "state.json")) as f:
            state = json.load(f)
    return config, state


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


def file_suffix(config, select, precision):
    """'' for the run's own checkpoint selection and precision, else '-last', '-mixed', '-last-float32'...:
    numbers made another way never overwrite the run's own."""
    parts = [select] if select != config["select"] else []
    if precision != config.get("precision", "float32"):
        parts.append(precision)
    return "".join(f"-{part}" for part in parts)


def text(x):
    return x.decode() if isinstance(x, bytes) else str(x)


def open_data(path, need_scene):
    """Open a DataPrepare.py patch file and check that it has what evaluation needs."""
    import h5py
    if not os.path.isfile(path):
        fail(f"{path}: no such data file (make it with DataPrepare.py, or name one with --data)")
    try:
        f = h5py.File(path, "r")
    except OSError as e:
        fail(f"{path}: not an HDF5 file ({e})")
    for group, keys in [("test", GROUP_KEYS)] + ([("scene", SCENE_KEYS)] if need_scene else []):
        if group not in f or any(k not in f[group] for k in keys):
            has = sorted(f[group].keys()) if group in f else sorted(f.keys())
            fail(f"{path}: group '{group}' with {list(keys)} missing (found {has}): "
                 f"not a complete patch file written by DataPrepare.py")
    if "class_names" not in f.attrs:
        fail(f"{path}: attribute 'class_names' missing: not a patch file written by DataPrepare.py")
    return f


def check_compatible(f, path, arch, run_dir):
    """The network's input bands, patch size and class count must match the data file's."""
    test, arch = f["test"], {"patch_size": 11, **arch}  # build_model's default patch size
    have = dict(hsi_bands=test["hsi"].shape[-1], aux_bands=test["aux"].shape[-1],
                patch_size=test["hsi"].shape[1], num_classes=len(f.attrs["class_names"]))
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


# -----------------------------------------------------------------------------
# Inference: classifier only (no reconstruction heads), bounded batches

def predict_group(clf, group, batch_size):
    """Predicted labels 0..C-1 of a patch group, read from the file a batch at a time."""
    from tqdm import tqdm

    from model import predict_labels
    n = len(group["label"])
    out = np.empty(n, np.int32)
    for i in tqdm(range(0, n, batch_size), desc="test patches", unit="batch", leave=False):
        out[i:i + batch_size] = predict_labels(clf, group["hsi"][i:i + batch_size], group["aux"][i:i + batch_size],
                                               batch_size)
    return out


def read_band(ds, top, bottom, r):
    """Scene rows top..bottom-1 of an (H, W, C) dataset with r rows of context above and below and
    r columns either side, zero beyond the scene's border: the same values pad_scene would give."""
    h, w, c = ds.shape
    band = np.zeros((bottom - top + 2 * r, w + 2 * r, c), np.float32)
    lo, hi = max(0, top - r), min(h, bottom + r)
    band[lo - top + r:hi - top + r, r:r + w] = ds[lo:hi]
    return band


def scene_batches(scene, patch_size, batch_size, band_rows=BAND_ROWS):
    """Yield (rows, cols, hsi, aux) for every pixel of the scene, row-major, batch_size patches at
    a time. Only one band of rows and one batch of patches exist at once, whatever the scene size."""
    from DataPrepare import cut_patches
    r = patch_size // 2
    h, w = scene["test_map"].shape
    for top in range(0, h, band_rows):
        bottom = min(top + band_rows, h)
        hsi, aux = (read_band(scene[m], top, bottom, r) for m in ("hsi", "aux"))
        local = np.argwhere(np.ones((bottom - top, w), bool))  # band coordinates, row-major
        for i in range(0, len(local), batch_size):
            c = local[i:i + batch_size]
            yield c[:, 0] + top, c[:, 1], cut_patches(hsi, c, patch_size), cut_patches(aux, c, patch_size)


def predict_scene(clf, scene, patch_size, batch_size, band_rows=BAND_ROWS):
    """(H, W) map of predicted labels 1..C for every pixel, labelled or not."""
    from tqdm import tqdm

    from model import predict_labels
    h, w = scene["test_map"].shape
    out = np.zeros((h, w), np.uint8 if clf.output_shape[-1] < 256 else np.int16)
    with tqdm(total=h * w, desc="map", unit="px", unit_scale=True, mininterval=5) as bar:
        for rows, cols, hsi, aux in scene_batches(scene, patch_size, batch_size, band_rows):
            out[rows, cols] = predict_labels(clf, hsi, aux, batch_size) + 1
            bar.update(len(rows))
    return out


# -----------------------------------------------------------------------------
# Writing the tables and figures

def pct(x):
    return "n/a" if x is None or np.isnan(x) else f"{100 * x:.2f}"


def describe(m):
    """The lines that say where a table's numbers come from, shared by headers and titles."""
    epoch = f"epoch {m['selected_epoch']} of {m['epochs_done']}" if m["selected_epoch"] else "epoch unknown"
    return [f"protocol: {m['protocol']}",
            f"checkpoint: {m['checkpoint']} ({epoch}), trained in {m.get('training_precision', '?')}, "
            f"inferred in {m['precision']}",
            f"data: {m['data']} (sha256 {m['data_sha256'][:16]}...), {m['n_test']} test pixels"]


def write_markdown(path, m):
    """The per-class table of the paper: class, train count, test count, accuracy; OA, AA, kappa."""
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
    if "map" in m:
        lines.append(f"Full-scene map: accuracy at the {m['map']['test_pixels']} labelled test pixels "
                     f"{pct(m['map']['accuracy_test_pixels'])} %; the map and the test patches give the same "
                     f"class at {m['map']['test_pixels_agreeing_with_patch_predictions']} of {m['n_test']} "
                     f"test pixels.")
    with replacing(path) as tmp, open(tmp, "w") as f:
        f.write("\n".join(lines) + "\n")


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


# -----------------------------------------------------------------------------
# One run

def evaluate_run(run_dir, data=None, select=None, precision=None, batch_size=BATCH_SIZE,
                 make_map=False, stand_in=False, band_rows=BAND_ROWS, command=""):
    """Evaluate a run's checkpoint on the test group (and the scene); write the files; return metrics."""
    config, state = read_run(run_dir)
    select, checkpoint, epoch = choose_checkpoint(run_dir, config, state, select)
    data = data or config["data"]
    precision = precision or config.get("precision", "float32")
    f = open_data(data, need_scene=make_map)
    check_compatible(f, data, config["architecture"], run_dir)
    from model import PROTOCOLS, load_classifier

    names = [text(c) for c in f.attrs["class_names"]]
    dataset = text(f.attrs.get("dataset", "unknown"))
    synthetic = bool(f.attrs.get("synthetic", False)) or bool(config.get("synthetic", False))
    digest = sha256(data)
    trained_on = config.get("data_sha256")
    if trained_on and trained_on != digest:
        print(f"evaluate.py: warning: {data} is not the file the run was trained on "
              f"(sha256 {digest[:12]}... vs {trained_on[:12]}...)", file=sys.stderr)
    if state.get("epochs_done") is not None and state["epochs_done"] < config.get("epochs", 0):
        print(f"evaluate.py: warning: {run_dir} is unfinished: {state['epochs_done']} of "
              f"{config['epochs']} epochs", file=sys.stderr)

    import keras
    policy = keras.mixed_precision.dtype_policy()
    try:
        clf = load_classifier(run_dir, checkpoint, precision)
    except Exception as e:  # a damaged or foreign .keras file fails in many ways
        fail(f"{run_dir}: cannot load {checkpoint}.keras ({type(e).__name__}: {e})")
    finally:
        keras.mixed_precision.set_dtype_policy(policy)  # load_classifier sets it for the whole process

    y_true = f["test"]["label"][()]
    y_pred = predict_group(clf, f["test"], batch_size)
    acc = accuracy_metrics(y_true, y_pred, len(names))
    train_counts = np.bincount(f["train"]["label"][()], minlength=len(names)) if "train" in f \
        else np.zeros(len(names), int)
    test_counts = acc["confusion_matrix"].sum(1)
    m = dict(
        dataset=dataset, dataset_label=dataset_label(dataset, synthetic, stand_in),
        synthetic=synthetic or stand_in, stand_in=stand_in,
        run=run_dir, protocol=PROTOCOLS[select], select=select, run_select=config["select"],
        checkpoint=f"{checkpoint}.keras", epochs_done=state.get("epochs_done"), selected_epoch=epoch,
        epochs_planned=config.get("epochs"), precision=precision,
        training_precision=config.get("precision", "float32"),
        data=os.path.basename(data), data_path=os.path.abspath(data), data_sha256=digest,
        data_matches_training=None if not trained_on else trained_on == digest,
        n_test=int(len(y_true)),
        units="OA, AA, producer's and user's accuracy as fractions (0..1); kappa as a fraction",
        OA=acc["OA"], AA=acc["AA"], kappa=acc["kappa"], kappa_var=acc["kappa_var"],
        class_names=names,
        per_class=[dict(**{"class": i + 1}, name=n, train=int(train_counts[i]), test=int(test_counts[i]),
                        producer_accuracy=acc["producer"][i], user_accuracy=acc["user"][i])
                   for i, n in enumerate(names)],
        confusion_matrix=acc["confusion_matrix"],
        confusion_matrix_axes="rows: true class, columns: predicted class, in class_names order",
        evaluated_at=datetime.datetime.now().isoformat(timespec="seconds"),
        command=command)

    suffix = file_suffix(config, select, precision)
    out = lambda name, ext: os.path.join(run_dir, f"{name}{suffix}.{ext}")
    maps = write_maps(clf, f, m, names, run_dir, out, batch_size, band_rows, y_pred) if make_map else []
    f.close()
    write_json(out("metrics", "json"), m)  # after the map: it records the map's accuracy too
    write_markdown(out("metrics", "md"), m)
    write_confusion_csv(out("confusion_matrix", "csv"), acc["confusion_matrix"], names)
    plot_confusion(out("confusion_matrix", "png"), acc["confusion_matrix"], names, m)
    written = [out("metrics", "json"), out("metrics", "md"), out("confusion_matrix", "csv"),
               out("confusion_matrix", "png")] + maps
    print_headline(m, written)
    return m


def write_maps(clf, f, m, names, run_dir, out, batch_size, band_rows, y_pred):
    """Classify every pixel, check the map against the test patches' predictions (y_pred), write
    the PNGs and .npy."""
    scene = f["scene"]
    palette = f.attrs.get("palette")
    if palette is None:  # a file without colours: matplotlib's categorical ones
        palette = (np.array([pyplot().cm.tab20(i % 20)[:3] for i in range(len(names))]) * 255).astype(int)
    t0 = time.time()
    labels = predict_scene(clf, scene, int(f["test"]["hsi"].shape[1]), batch_size, band_rows)
    seconds = time.time() - t0
    test_map = scene["test_map"][()]
    at = test_map > 0
    accuracy = float(np.mean(labels[at] == test_map[at])) if at.any() else float("nan")
    coord = f["test"]["coord"][()]
    agree = int(np.sum(labels[coord[:, 0], coord[:, 1]] == y_pred + 1))  # same pixel, same class?
    m["map"] = dict(file=os.path.basename(out("map", "npy")), shape=list(labels.shape), pixels=int(labels.size),
                    test_pixels=int(at.sum()), accuracy_test_pixels=accuracy,
                    agrees_with_OA=bool(at.sum() == m["n_test"] and abs(accuracy - m["OA"]) < 1e-12),
                    test_pixels_agreeing_with_patch_predictions=agree,
                    seconds=round(seconds, 1), pixels_per_second=round(labels.size / seconds, 1),
                    batch_size=batch_size,
                    peak_rss_mb=round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024, 1))
    if not m["map"]["agrees_with_OA"] or agree != len(coord):
        print(f"evaluate.py: warning: the map differs from the test patches' predictions at "
              f"{len(coord) - agree} of {len(coord)} test pixels; its accuracy there is {pct(accuracy)} %, "
              f"OA on the test patches {pct(m['OA'])} %", file=sys.stderr)
    with replacing(out("map", "npy")) as tmp:
        np.save(tmp, labels)
    title = (f"{m['dataset_label']}: classification map, run {os.path.basename(os.path.normpath(m['run']))}\n"
             f"{m['protocol']}; "
             f"accuracy at the {int(at.sum())} test pixels {pct(accuracy)} %")
    plot_labels(out("map", "png"), labels, palette, names, title)
    gt = [os.path.join(run_dir, f"ground_truth_{s}.png") for s in ("train", "test")]
    for path, split in zip(gt, ("train", "test")):
        gt_map = scene[f"{split}_map"][()]
        plot_labels(path, gt_map, palette, names,
                    f"{m['dataset_label']}: {split} ground truth, {int((gt_map > 0).sum())} labelled pixels")
    return [out("map", "npy"), out("map", "png")] + gt


def print_headline(m, written):
    print(f"{m['dataset_label']}: OA {pct(m['OA'])} %, AA {pct(m['AA'])} %, kappa {m['kappa']:.4f} "
          f"(variance {m['kappa_var']:.3g}) on {m['n_test']} test pixels")
    for line in describe(m)[:2]:
        print("  " + line)
    if "map" in m:
        mp = m["map"]
        print(f"  map: {mp['pixels']} pixels in {mp['seconds']} s ({mp['pixels_per_second']} px/s), "
              f"accuracy at the test pixels {pct(mp['accuracy_test_pixels'])} %"
              f"{' (= OA)' if mp['agrees_with_OA'] else ' (DIFFERS from OA)'}; "
              f"{mp['test_pixels_agreeing_with_patch_predictions']} of {m['n_test']} test pixels agree "
              f"with the predictions from the test patches")
    print("wrote " + ", ".join(written))


# -----------------------------------------------------------------------------
# Several runs: mean +- std, the way peers report "over N runs"

def run_metrics(run_dir, args):
    """A run's metrics for the requested protocol: its metrics file if it is current, else evaluate."""
    config, state = read_run(run_dir)
    select = args.select or config["select"]
    precision = args.precision or config.get("precision", "float32")
    path = os.path.join(run_dir, f"metrics{file_suffix(config, select, precision)}.json")
    if os.path.isfile(path):
        with open(path) as f:
            m = json.load(f)
        # evaluate again if the run went on training since, or the data or labelling asked for differ
        current = m.get("epochs_done") == state.get("epochs_done")
        same_data = not args.data or m.get("data_path") == os.path.abspath(args.data)
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
    for key in ("protocol", "dataset_label", "class_names", "n_test"):
        seen = {json.dumps(m[key]) for m in ms}
        if len(seen) > 1:
            listing = "; ".join(f"{r}: {m[key]}" for r, m in zip(runs, ms))
            fail(f"the runs differ in {key} ({listing}); aggregate only runs of one protocol on one data set "
                 f"(use --select to pick one protocol)")
    first = ms[0]
    agg = dict(
        dataset=first["dataset"], dataset_label=first["dataset_label"], synthetic=first["synthetic"],
        protocol=first["protocol"], select=first["select"], n_runs=len(ms), runs=list(runs),
        precision=sorted({m["precision"] for m in ms}),
        training_precision=sorted({m.get("training_precision", "?") for m in ms}),
        std="sample standard deviation over runs (ddof=1); null for a single run",
        units=first["units"], n_test=first["n_test"],
        data=sorted({m["data"] for m in ms}), data_sha256=sorted({m["data_sha256"] for m in ms}),
        checkpoints=[f"{m['checkpoint']} epoch {m['selected_epoch']}" for m in ms],
        **{k: dict(mean_std([m[k] for m in ms]), values=[m[k] for m in ms]) for k in ("OA", "AA", "kappa")},
        per_class=[dict(**{"class": i + 1}, name=n, train=first["per_class"][i]["train"],
                        test=first["per_class"][i]["test"],
                        producer_accuracy=mean_std([m["per_class"][i]["producer_accuracy"] for m in ms]),
                        user_accuracy=mean_std([m["per_class"][i]["user_accuracy"] for m in ms]))
                   for i, n in enumerate(first["class_names"])],
        evaluated_at=datetime.datetime.now().isoformat(timespec="seconds"))
    out = args.out or os.path.dirname(os.path.abspath(runs[0]))
    os.makedirs(out, exist_ok=True)
    paths = [os.path.join(out, "aggregate.json"), os.path.join(out, "aggregate.md")]
    write_json(paths[0], agg)
    write_aggregate_markdown(paths[1], agg)
    print(f"{agg['dataset_label']}, over {len(ms)} runs (mean ± sample std): OA {pm(agg['OA'])} %, "
          f"AA {pm(agg['AA'])} %, kappa {pm(agg['kappa'], kappa=True)}")
    print(f"  protocol: {agg['protocol']}")
    print("wrote " + ", ".join(paths))
    return agg


def pm(s, kappa=False):
    """'mean ± std' in the tables' units."""
    f = (lambda x: "n/a" if np.isnan(x) else f"{x:.4f}") if kappa else pct
    return f"{f(s['mean'])} ± {f(s['std'])}"


def write_aggregate_markdown(path, agg):
    lines = [f"# {agg['dataset_label']}: per-class accuracy over {agg['n_runs']} runs", "",
             f"- protocol: {agg['protocol']}",
             f"- precision: trained in {', '.join(agg['training_precision'])}, "
             f"inferred in {', '.join(agg['precision'])}",
             f"- runs: {', '.join(f'`{r}`' for r in agg['runs'])}",
             f"- data: {', '.join(agg['data'])}, {agg['n_test']} test pixels",
             "- mean ± sample standard deviation (ddof=1) over runs; accuracies in %, kappa as a fraction", "",
             "| No. | Class | Train | Test | Accuracy (%) | User's accuracy (%) |",
             "|---:|:---|---:|---:|---:|---:|"]
    for c in agg["per_class"]:
        lines.append(f"| {c['class']} | {c['name']} | {c['train']} | {c['test']} | "
                     f"{pm(c['producer_accuracy'])} | {pm(c['user_accuracy'])} |")
    lines += [f"| | **OA (%)** | | {agg['n_test']} | **{pm(agg['OA'])}** | |",
              f"| | **AA (%)** | | | **{pm(agg['AA'])}** | |",
              f"| | **Kappa** | | | **{pm(agg['kappa'], kappa=True)}** | |", ""]
    with replacing(path) as tmp, open(tmp, "w") as f:
        f.write("\n".join(lines) + "\n")


# -----------------------------------------------------------------------------

def build_parser():
    p = argparse.ArgumentParser(
        prog="evaluate.py", formatter_class=argparse.RawDescriptionHelpFormatter,
        description="Accuracy tables, confusion matrix and classification maps of a run of model.py.",
        epilog="Accuracies are percentages with 2 decimals in tables and printed lines, fractions in "
               "JSON; kappa is a fraction. --runs reports mean ± sample standard deviation (ddof=1).")
    which = p.add_mutually_exclusive_group(required=True)
    which.add_argument("--run", metavar="RUN_DIR", help="run directory written by model.py")
    which.add_argument("--runs", nargs="+", metavar="RUN_DIR",
                       help="several runs of one protocol and data set: mean ± std per figure and class "
                            "(each run is evaluated first if it has no current metrics file)")
    p.add_argument("--data", metavar="FILE.h5", help="patch file (default: the one the run was trained on)")
    p.add_argument("--map", action="store_true", help="also classify every pixel of the scene and draw the maps")
    p.add_argument("--select", choices=["last", "val", "authors"],
                   help="checkpoint selection (default: the run's own); 'last' is always possible")
    p.add_argument("--precision", choices=["float32", "mixed"], help="inference precision (default: the run's)")
    p.add_argument("--batch-size", type=int, default=BATCH_SIZE, help=f"patches per step (default {BATCH_SIZE})")
    p.add_argument("--stand-in", action="store_true",
                   help="the data file is a synthetic stand-in for the data set it names: label every "
                        "output SYNTHETIC STAND-IN (files DataPrepare marks synthetic are labelled anyway)")
    p.add_argument("--out", metavar="DIR", help="with --runs: folder for aggregate.json and aggregate.md "
                                                "(default: the parent folder of the first run)")
    return p


def main(argv=None):
    argv = sys.argv[1:] if argv is None else list(argv)
    args = build_parser().parse_args(argv)
    args.command = shlex.join(["python", "evaluate.py", *argv])  # recorded in metrics.json
    if args.batch_size < 1:
        fail("--batch-size must be at least 1")
    if args.runs:
        return aggregate(args.runs, args)
    if args.out:
        fail("--out is for --runs; a single run's files go into its run directory")
    return evaluate_run(args.run, args.data, args.select, args.precision, args.batch_size, args.map,
                        args.stand_in, command=args.command)


if __name__ == "__main__":
    main()
