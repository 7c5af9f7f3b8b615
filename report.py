"""Every table, picture and printed line of an evaluation, shared by evaluate.py and baselines.py:
metrics.json/.md, the confusion matrix (CSV, PNG), the leakage plot, the per-pixel predictions, the
classification maps, the aggregate and comparison tables, and the headline.

Accuracies are fractions (0..1) in the JSON files and percentages with 2 decimals in the Markdown
tables and printed lines; kappa is a fraction everywhere. Predictions and maps hold classes 1..C
(0 unlabelled); metrics.py's functions take 0..C-1.
"""
import csv
import datetime
import hashlib
import os
import sys
import textwrap

import numpy as np

from fileio import replacing, sha256, write_json, write_text
from metrics import accuracy_metrics, leakage_report


# -----------------------------------------------------------------------------
# Numbers and labels as the tables show them

def pct(x):
    return "n/a" if x is None or np.isnan(x) else f"{100 * x:.2f}"


def kappa_text(k):
    return "n/a" if k is None or np.isnan(k) else f"{k:.4f}"


def pm(s, kappa=False):
    """'mean ± std' in the tables' units."""
    f = kappa_text if kappa else pct
    return f"{f(s['mean'])} ± {f(s['std'])}"


def p_text(p):
    return "< 1e-300" if p < 1e-300 else f"= {p:.3g}"  # chi-square's tail underflows to 0


def title_lines(*lines, width=110):
    """A figure's title, each line wrapped so that long protocol texts are not cut at the edge."""
    return "\n".join(textwrap.fill(line, width) for line in lines)


def bin_span(b):
    """A leakage bin's distances in pixels: '6-10', or '> 50' for the open last bin."""
    return f"{b['min']}-{b['max']}" if b["max"] is not None else f"> {b['min'] - 1}"


def dataset_label(dataset, synthetic, stand_in, data_label=""):
    """The data set's name as every output shows it: synthetic data is never passed off as real, nor
    derived real pixels (a preset's data_label) as a benchmark."""
    if stand_in:
        return f"{dataset} SYNTHETIC STAND-IN (not the real {dataset} data)"
    if synthetic:
        return f"{dataset} (SYNTHETIC data, not real)"
    return f"{dataset} ({data_label})" if data_label else dataset


def describe(m):
    """The lines that say where a table's numbers come from, shared by headers and titles."""
    return [f"protocol: {m['protocol']}", f"model: {m['model']}",
            f"data: {m['data']} (sha256 {m['data_sha256'][:16]}...), {m['n_test']} test pixels",
            f"normalisation: {m['normalisation']}", f"split: {m['split']}"]


def network_description(m):
    epoch = f"epoch {m['selected_epoch']} of {m['epochs_done']}" if m["selected_epoch"] else "epoch unknown"
    return (f"checkpoint {m['checkpoint']} ({epoch}), trained in {m['training_precision']}, "
            f"inferred in {m['precision']}")


# -----------------------------------------------------------------------------
# A test set's figures, whatever made its predictions

def test_pixels_digest(pf):
    """sha256 of the test split's coordinates and labels: two runs with the same digest were
    scored on the same pixels, whatever else differs in their patch files (the normalisation)."""
    h = hashlib.sha256()
    h.update(np.ascontiguousarray(pf.coords("test"), np.int64).tobytes())
    h.update(np.ascontiguousarray(pf.labels("test"), np.int64).tobytes())
    return h.hexdigest()


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
        dataset=info["dataset"], dataset_label=dataset_label(info["dataset"], synthetic, stand_in, info["data_label"]),
        data_note=info["data_note"],
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
        **leakage_report(pf.distance_to_train("test"), y_true, y_pred, info["num_classes"], pf.patch_size),
        evaluated_at=datetime.datetime.now().isoformat(timespec="seconds"), command=command)
    return m


# -----------------------------------------------------------------------------
# Markdown and CSV tables

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
# Pictures

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
    ax.set_title(title_lines(f"{m['dataset_label']}: confusion matrix, rows normalised", m["protocol"],
                             f"data normalised {m['normalisation']}",
                             f"OA {pct(m['OA'])} %, AA {pct(m['AA'])} %, kappa {m['kappa']:.4f}, "
                             f"{m['n_test']} test pixels"), fontsize=9)
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
    ax.set_title(title_lines(f"{m['dataset_label']}: accuracy by distance to the training pixels", m["protocol"],
                             f"data normalised {m['normalisation']}"), fontsize=9)
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8, loc="upper center", bbox_to_anchor=(0.5, -0.22), ncol=2, frameon=False)
    fig.tight_layout()
    with replacing(path) as tmp:
        fig.savefig(tmp, dpi=120)
    plt.close(fig)


# -----------------------------------------------------------------------------
# A run directory's files and the printed headline

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


def write_map_files(pf, labels, seconds, batch_size, m, run_dir, suffix, y_pred):
    """Check a finished (H, W) map of labels 1..C (made in `seconds`) against the test predictions
    (y_pred, 0..C-1), write it (.npy, .png, GeoTIFF) with the ground truth beside it; records the
    map's figures in m["map"] and returns the paths written."""
    names = m["class_names"]
    test_map = pf.label_map("test_map")
    at = test_map > 0
    accuracy = float(np.mean(labels[at] == test_map[at])) if at.any() else float("nan")
    coord = pf.coords("test")
    agree = int(np.sum(labels[coord[:, 0], coord[:, 1]] == y_pred + 1))  # same pixel, same class?
    m["map"] = dict(map_figures(labels, seconds, batch_size, run_file(run_dir, suffix)),
                    test_pixels=int(at.sum()), accuracy_test_pixels=accuracy,
                    agrees_with_OA=bool(at.sum() == m["n_test"] and abs(accuracy - m["OA"]) < 1e-12),
                    test_pixels_agreeing_with_patch_predictions=agree)
    if not m["map"]["agrees_with_OA"] or agree != len(coord):
        print(f"evaluate.py: warning: the map differs from the test predictions at "
              f"{len(coord) - agree} of {len(coord)} test pixels; its accuracy there is {pct(accuracy)} %, "
              f"OA on the test split {pct(m['OA'])} %", file=sys.stderr)
    title = title_lines(f"{m['dataset_label']}: classification map, run {os.path.basename(os.path.normpath(m['run']))}",
                        f"{m['protocol']}; data normalised {m['normalisation']}; "
                        f"accuracy at the {int(at.sum())} test pixels {pct(accuracy)} %")
    written = write_map(pf, labels, run_dir, suffix, title)
    gt = [os.path.join(run_dir, f"ground_truth_{s}.png") for s in ("train", "test")]
    for path, split in zip(gt, ("train", "test")):
        gt_map = pf.label_map(f"{split}_map")
        plot_labels(path, gt_map, pf.palette, names,
                    f"{m['dataset_label']}: {split} ground truth, {int((gt_map > 0).sum())} labelled pixels")
    return written + gt


def map_figures(labels, seconds, batch_size, out):
    return dict(file=os.path.basename(out("map", "npy")), geotiff=os.path.basename(out("map", "tif")),
                shape=list(labels.shape), pixels=int(labels.size), seconds=round(seconds, 1),
                pixels_per_second=round(labels.size / max(seconds, 1e-9), 1), batch_size=batch_size)


def write_map(pf, labels, run_dir, suffix, title):
    """map{suffix}.npy, .png and .tif: one band of class numbers on the source's grid (its CRS and
    transform when the scene had them), the palette as colour table, the class names as tags."""
    import geo
    out = run_file(run_dir, suffix)
    with replacing(out("map", "npy")) as tmp:
        np.save(tmp, labels)
    plot_labels(out("map", "png"), labels, pf.palette, pf.class_names, title)
    geo.write_label_geotiff(out("map", "tif"), labels, pf.georef, pf.palette, pf.class_names)
    return [out("map", "npy"), out("map", "png"), out("map", "tif")]


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


def plot_curves(history_csv, png, config):
    plt = pyplot()
    with open(history_csv) as f:
        rows = list(csv.DictReader(f))
    if not rows:
        return
    epochs = [int(r["epoch"]) + 1 for r in rows]
    fig, (ax_loss, ax_acc) = plt.subplots(1, 2, figsize=(11, 4))
    for key in ("loss", "class_loss", "rec_aux_loss", "rec_hsi_loss"):
        if key in rows[0]:
            ax_loss.plot(epochs, [float(r[key]) for r in rows], label=key)
    labels = {"class_accuracy": "training patches", "val_accuracy": "validation pixels",
              "test_accuracy": "TEST pixels (authors' protocol: they choose the checkpoint)",
              "test_accuracy_raw": "TEST pixels, raw weights (trace_test: a study, selects nothing)",
              "test_accuracy_averaged": "TEST pixels, averaged weights (trace_test: a study, selects nothing)"}
    for key, label in labels.items():
        if key in rows[0]:
            ax_acc.plot(epochs, [float(r[key]) for r in rows], label=label)
    if "test_accuracy" in rows[0]:  # what the authors' protocol would report if stopped at each epoch
        best = np.maximum.accumulate([float(r["test_accuracy"]) for r in rows])
        ax_acc.plot(epochs, best, "--", label="best TEST accuracy so far (the authors' protocol reports this)")
    ax_loss.set(xlabel="epoch", ylabel="loss", yscale="log", title="training losses")
    ax_acc.set(xlabel="epoch", ylabel="accuracy", title="accuracy")
    ax_loss.legend()
    ax_acc.legend(loc="lower right", fontsize="small")
    for ax in (ax_loss, ax_acc):
        ax.grid(alpha=0.3)
    fig.suptitle(f"{config['dataset']}{' (synthetic)' if config.get('synthetic') else ''}: {config['out']}")
    fig.tight_layout()
    with replacing(png) as tmp:
        fig.savefig(tmp, dpi=120)
    plt.close(fig)
