"""The accuracy measures of the paper's tables and of what a reviewer asks next; pure functions of
labels and counts (no files, no printing). Classes are 0..C-1 here.

From the confusion matrix of the test split (rows: true class, columns: predicted class):
overall accuracy (OA), average accuracy (AA, the mean producer's accuracy over the classes present
in the test set), Cohen's kappa and its large-sample variance, per-class producer's accuracy (the
"accuracy" column of the paper's per-class tables, n_ii / n_i+) and user's accuracy (n_ii / n_+i).

Leakage: the test pixels grouped by their Chebyshev distance d to the nearest training pixel, in
bins of the patch radius r = P // 2: d <= r (a training pixel lies inside the test pixel's own
patch), r < d <= 2r (the test patch overlaps a training patch), near (2r < d <= 4r), middle
(4r < d <= 10r) and far (d > 10r); each with its pixel count, OA and AA. The leak-free view is the same figures on the
test pixels whose patch holds no training pixel (d > r).

Significance: McNemar's test on the per-pixel correctness of two classifiers on the same test
pixels; over several runs, the mean and the sample standard deviation (ddof=1).
"""
import datetime
import json
import warnings

import numpy as np

LEAK_EDGES = (1, 2, 4, 10)  # leakage bin edges, in units of the patch radius r = P // 2
LEAK_NAMES = ("inside the patch", "patches overlap", "near", "middle", "far")
EXACT_BELOW = 25  # McNemar: exact binomial test when fewer discordant pixels than this


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



def leakage_report(distance, y_true, y_pred, num_classes, patch_size):
    """The leakage bins and the leak-free view of a test set, from each test pixel's distance to
    the nearest training pixel (PatchFile.distance_to_train("test"))."""
    r, p, c = patch_size // 2, patch_size, num_classes
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
# Several runs

def mean_std(values):
    """Mean and sample standard deviation (ddof=1) of the non-null values; std is NaN for one run."""
    v = np.array([np.nan if x is None else x for x in values], np.float64)
    v = v[~np.isnan(v)]
    if not len(v):
        return dict(mean=float("nan"), std=float("nan"), n=0)
    return dict(mean=float(v.mean()), std=float(v.std(ddof=1)) if len(v) > 1 else float("nan"), n=int(len(v)))



AGREE_ON = ("protocol", "dataset_label", "class_names", "n_test", "normalisation")  # else runs do not aggregate


def aggregate_metrics(ms, runs):
    """Mean ± sample std (ddof=1) over several runs' metrics of every figure, per class and per
    leakage bin. Runs that differ in protocol, data set, class list, test-set size or normalisation
    are refused (ValueError naming each run's value)."""
    for key in AGREE_ON:
        if len({json.dumps(m.get(key)) for m in ms}) > 1:
            listing = "; ".join(f"{r}: {m.get(key)}" for r, m in zip(runs, ms))
            raise ValueError(f"the runs differ in {key} ({listing}); aggregate only runs of one protocol and one "
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
    return agg
