"""The classic baselines of the paper's tables, on the same patch file as the network: an SVM (RBF
kernel) and a random forest on the centre pixel's values of both modalities (the HSI bands and the
LiDAR/SAR channels, as DataPrepare.py normalised them).

    python baselines.py --data data/houston2013.h5 --method svm            # run directory under runs/
    python baselines.py --data data/houston2013.h5 --method rf --out runs/h13-rf --seed 1

Hyperparameters come from a small grid search (GRIDS below) by stratified 5-fold cross-validation
on the training pixels only; the test pixels choose nothing. The output is a run directory like
model.py's (config.json, metrics.json and .md, confusion matrix, leakage plot, predictions, map),
so that evaluate.py --runs and --compare treat baselines as runs.
"""
import argparse
import datetime
import os
import shlex
import sys
import time

import numpy as np

import network
import rundir
from fileio import sha256
from patchfile import PatchFile, PatchFileError
from report import print_headline, test_report, write_map_files, write_report

# The grids searched. SVM: C, and gamma as a multiple of scikit-learn's 'scale' value
# 1 / (features x variance of the training features), so that the grid suits any band count.
GRIDS = {
    "svm": dict(C=[1, 10, 100, 1000], gamma_factor=[0.1, 1, 10]),
    "rf": dict(max_features=["sqrt", 0.2, 0.5], min_samples_leaf=[1, 3]),
}
NAMES = {"svm": "SVM (RBF kernel)", "rf": "random forest"}
FOLDS = 5
TREES = 300
PIXELS_PER_STEP = 65536  # pixels predicted at a time for the test split and the map
BASELINE_PROTOCOL = "no checkpoint selection (classic baseline: hyperparameters by cross-validation on the training pixels)"


class BaselineError(ValueError):
    """Training pixels a baseline cannot be fitted on."""


def features(hsi, aux):
    """The centre pixel's values of both modalities, (N, B + A)."""
    return np.concatenate([hsi.reshape(len(hsi), -1), aux.reshape(len(aux), -1)], axis=1)


def make_search(method, x, y, seed, jobs):
    """GridSearchCV over GRIDS[method] with stratified FOLDS-fold cross-validation on (x, y)."""
    from sklearn.ensemble import RandomForestClassifier
    from sklearn.model_selection import GridSearchCV, StratifiedKFold
    from sklearn.svm import SVC
    smallest = int(np.bincount(y)[np.bincount(y) > 0].min())
    if smallest < 2:
        raise BaselineError("a class has a single training pixel: cross-validation needs at least 2 per class")
    cv = StratifiedKFold(min(FOLDS, smallest), shuffle=True, random_state=seed)
    if method == "svm":
        scale = 1.0 / (x.shape[1] * x.var())
        grid = {"C": GRIDS["svm"]["C"], "gamma": [f * scale for f in GRIDS["svm"]["gamma_factor"]]}
        return GridSearchCV(SVC(kernel="rbf"), grid, cv=cv, n_jobs=jobs), scale
    forest = RandomForestClassifier(TREES, random_state=seed, n_jobs=1)
    return GridSearchCV(forest, GRIDS["rf"], cv=cv, n_jobs=jobs), None


def predictor(model, jobs):
    """predict(hsi, aux) -> labels 0..C-1 for patches of size 1, split over `jobs` processes."""
    from joblib import Parallel, delayed

    def predict(hsi, aux):
        x = features(hsi, aux)
        parts = np.array_split(x, jobs) if len(x) >= 1000 * jobs else [x]
        return np.concatenate(Parallel(n_jobs=len(parts))(delayed(model.predict)(p) for p in parts))
    return predict


def describe(method, search, scale, n_train, bands):
    params = dict(search.best_params_)
    if method == "svm":
        params["gamma"] = f"{params['gamma'] / scale:g} x scale ({params['gamma']:.4g})"
    shown = ", ".join(f"{k}={v}" for k, v in params.items())
    return (f"{NAMES[method]}{f' of {TREES} trees' if method == 'rf' else ''}, {shown}, on the centre pixel's "
            f"{bands['hsi']} + {bands['aux']} values; chosen by {search.n_splits_}-fold stratified cross-validation "
            f"on the {n_train} training pixels (accuracy {100 * search.best_score_:.2f} %)")


def run(data, method, out, seed=0, jobs=2, make_map=True, stand_in=False, command="", overwrite=False):
    """Fit, evaluate and write a baseline run directory; returns its metrics."""
    t0 = time.time()
    with PatchFile(data) as pf:
        info = pf.info()
        out = out or os.path.join("runs", f"{info['dataset']}-{method}-{datetime.datetime.now():%Y%m%d-%H%M%S}")
        rundir.prepare_new(out, overwrite)
        x, y = features(**pf.pixels("train")), pf.labels("train")
        search, scale = make_search(method, x, y, seed, jobs)
        print(f"{method}: grid search over {GRIDS[method]} on {len(y)} training pixels, {x.shape[1]} features", flush=True)
        search.fit(x, y)
        fit_seconds = time.time() - t0
        if method == "rf":
            search.best_estimator_.set_params(n_jobs=jobs)
        predict = predictor(search.best_estimator_, 1 if method == "rf" else jobs)
        config = dict(method=method, model=NAMES[method], grid=GRIDS[method], folds=search.n_splits_,
                      trees=TREES if method == "rf" else None, gamma_scale=scale, best_params=search.best_params_,
                      cv_accuracy=search.best_score_, select="last", protocol=BASELINE_PROTOCOL, seed=seed,
                      data=os.path.abspath(data), data_sha256=sha256(data), dataset=info["dataset"],
                      synthetic=info["synthetic"], out=out, command=command,
                      started=datetime.datetime.now().isoformat(timespec="seconds"))
        rundir.write_config(out, config)
        y_pred, seconds = network.predict_test_timed(predict, pf, PIXELS_PER_STEP, patch_size=1)
        m = test_report(pf, data, y_pred, stand_in, config, command)
        m.update(run=out, protocol=BASELINE_PROTOCOL, select="last", method=method,
                 model=describe(method, search, scale, len(y), pf.bands), best_params=search.best_params_,
                 cv_accuracy=search.best_score_, fit_seconds=round(fit_seconds, 1), test_seconds=round(seconds, 1),
                 test_pixels_per_second=round(len(y_pred) / max(seconds, 1e-9), 1))
        maps = []
        if make_map:
            labels, map_seconds = network.predict_scene_timed(predict, pf, 1, PIXELS_PER_STEP)
            maps = write_map_files(pf, labels, map_seconds, PIXELS_PER_STEP, m, out, "", y_pred)
    written = write_report(out, "", m, y_pred) + maps
    print_headline(m, written)
    print(f"done in {time.time() - t0:.0f} s; compare with a network run: python evaluate.py --compare RUN {out}")
    return m


def main(argv=None):
    argv = sys.argv[1:] if argv is None else list(argv)
    p = argparse.ArgumentParser(prog="baselines.py", description=__doc__.split("\n\n")[0])
    p.add_argument("--data", required=True, metavar="FILE.h5", help="patch file written by DataPrepare.py")
    p.add_argument("--method", required=True, choices=list(GRIDS), help="svm (RBF kernel) or rf (random forest)")
    p.add_argument("--out", metavar="RUN_DIR", help="run directory (default runs/<dataset>-<method>-<date>-<time>)")
    p.add_argument("--seed", type=int, default=0, help="seed of the cross-validation folds and of the forest")
    p.add_argument("--jobs", type=int, default=2, help="processes for the grid search and prediction (default 2)")
    p.add_argument("--overwrite", action="store_true", help="replace the run directory --out if it holds a run")
    p.add_argument("--no-map", action="store_true", help="skip the full-scene map (slow for the SVM on big scenes)")
    p.add_argument("--stand-in", action="store_true", help="label every output SYNTHETIC STAND-IN (see evaluate.py)")
    args = p.parse_args(argv)
    try:
        return run(args.data, args.method, args.out, args.seed, args.jobs, not args.no_map, args.stand_in,
                   command=shlex.join(["python", "baselines.py", *argv]), overwrite=args.overwrite)
    except (PatchFileError, BaselineError, rundir.RunError) as e:
        sys.exit(f"baselines.py: error: {e}")


if __name__ == "__main__":
    main()
