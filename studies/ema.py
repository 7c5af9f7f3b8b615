"""The weight-averaging study behind model.py's `ema` default (docs/ema-study.md).

    python studies/ema.py --data data/houston2013.h5 --seeds 3 --epochs 20 --precision mixed \
        --out runs/ema-study --doc docs/ema-study.md

The runs are the network runs of a reproduce.py sweep in OUT (OUT/network/seed<k>), made with
`--ema EMA --trace_test true` (the TEST split scored after every epoch with the raw and the averaged
weights, for this study only: no protocol selects by it). The script calls that sweep, which trains
what is missing and continues what is unfinished; `reproduce.py --out OUT --methods network,svm,rf`
with the same flags then tabulates the very same runs. It reports per seed and as mean ± std over seeds:
- the last epoch's OA, raw and averaged (what the honest 'last' protocol reports);
- the authors' best-on-test OA (the raw weights' best epoch, chosen on the test set);
- the standard deviation of OA over the last 20 % of epochs, raw and averaged;
- the averaged last epoch again after re-estimating batch-norm statistics on the training patches;
- the fewest epochs whose averaged OA (mean over seeds) is within 0.5 points of the last epoch's.
"""
import argparse
import json
import os
import subprocess
import sys

import numpy as np

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, ROOT)

import rundir  # noqa: E402
from fileio import write_text  # noqa: E402
from metrics import mean_std  # noqa: E402
from report import pm  # noqa: E402


def train(data, args):
    """The study's network runs, through the sweep (which refuses run directories of other settings)."""
    cmd = [sys.executable, os.path.join(ROOT, "reproduce.py"), "--data", data, "--seeds", str(args.seeds),
           "--methods", "network", "--out", args.out, "--epochs", str(args.epochs), "--ema", str(args.ema),
           "--precision", args.precision, "--trace_test", "true", *args.extra]
    print("+ " + " ".join(cmd), flush=True)
    subprocess.run(cmd, cwd=ROOT, check=True)


def curves(run):
    rows = rundir.read_history(run)
    return {k: np.array([float(r[k]) for r in rows]) for k in ("test_accuracy_raw", "test_accuracy_averaged",
                                                                "epoch_seconds")}


def refit_score(run, data):
    """Test OA of the last epoch's averaged weights after re-estimating batch-norm statistics."""
    import keras

    import network
    import training
    from patchfile import PatchFile
    config = rundir.read_config(run)
    path = rundir.checkpoint_path(run, "final")
    network.set_precision(rundir.training_precision(config))
    net = keras.saving.load_model(path)
    for var, value in zip(net.trainable_variables, network.averaged_values(path)):
        var.assign(value)
    network.set_precision(rundir.training_precision(config))
    with PatchFile(data) as pf:
        training.refit_batch_norm(net, pf.load("train"))
        clf = network.classifier(net)
        return float(np.mean(network.predict_split(clf, pf, "test") == pf.labels("test")))


def per_seed(c, refit):
    tail = max(1, round(0.2 * len(c["test_accuracy_raw"])))
    return dict(last_raw=c["test_accuracy_raw"][-1], last_averaged=c["test_accuracy_averaged"][-1],
                best_on_test=c["test_accuracy_raw"].max(), best_epoch=int(c["test_accuracy_raw"].argmax()) + 1,
                tail_std_raw=c["test_accuracy_raw"][-tail:].std(ddof=1) if tail > 1 else float("nan"),
                tail_std_averaged=c["test_accuracy_averaged"][-tail:].std(ddof=1) if tail > 1 else float("nan"),
                last_averaged_bn_refit=refit, tail_epochs=tail)


def shortest(all_curves, tolerance=0.005):
    mean = np.mean([c["test_accuracy_averaged"] for c in all_curves], axis=0)
    ok = np.flatnonzero(mean >= mean[-1] - tolerance)
    return int(ok[0]) + 1, mean


def plot(all_curves, seeds, png, title):
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    fig, ax = plt.subplots(figsize=(8, 4.5))
    for i, (c, seed) in enumerate(zip(all_curves, seeds)):
        e = np.arange(1, len(c["test_accuracy_raw"]) + 1)
        ax.plot(e, 100 * c["test_accuracy_raw"], color=f"C{i}", lw=0.8, alpha=0.6, label=f"seed {seed}, raw")
        ax.plot(e, 100 * c["test_accuracy_averaged"], color=f"C{i}", lw=2, label=f"seed {seed}, averaged")
    ax.set(xlabel="epoch", ylabel="test OA (%)", title=title)
    lo = min(100 * min(c["test_accuracy_raw"][2:].min(), c["test_accuracy_averaged"][2:].min()) for c in all_curves)
    ax.set_ylim(max(lo - 1, 0), 100)
    ax.grid(alpha=0.3)
    ax.legend(fontsize=7, ncol=2)
    fig.tight_layout()
    fig.savefig(png, dpi=120)
    plt.close(fig)


def report(rows, seeds, all_curves, args, machine):
    first, mean = shortest(all_curves)
    seconds = np.median(np.concatenate([c["epoch_seconds"][1:] for c in all_curves]))
    keys = [("last_raw", "last epoch, raw weights"), ("last_averaged", "last epoch, averaged weights"),
            ("last_averaged_bn_refit", "last epoch, averaged, batch norm re-estimated"),
            ("best_on_test", "best epoch on TEST, raw (the authors' protocol)"),
            ("tail_std_raw", f"std over the last {rows[0]['tail_epochs']} epochs, raw (points)"),
            ("tail_std_averaged", f"std over the last {rows[0]['tail_epochs']} epochs, averaged (points)")]
    lines = ["| | " + " | ".join(f"seed {s}" for s in seeds) + " | mean ± std |", "|---|" + "---:|" * (len(seeds) + 1)]
    for key, name in keys:
        lines.append(f"| {name} | " + " | ".join(f"{100 * r[key]:.2f}" for r in rows) + f" | {pm(mean_std([r[key] for r in rows]))} |")
    lines.append("| best epoch on TEST | " + " | ".join(str(r["best_epoch"]) for r in rows) + " | |")
    return lines, first, mean, seconds


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--data", required=True)
    p.add_argument("--seeds", type=int, default=3)
    p.add_argument("--epochs", type=int, default=20)
    p.add_argument("--ema", type=float, default=0.995)
    p.add_argument("--precision", default="mixed")
    p.add_argument("--out", default="runs/ema-study", help="the sweep folder (reproduce.py --out)")
    p.add_argument("--doc", default="docs/ema-study.md")
    p.add_argument("--machine", default="", help="the CPU/GPU and its flags, stated beside the figures")
    args, args.extra = p.parse_known_args(argv)
    args.out = os.path.abspath(args.out)
    data = os.path.abspath(args.data)
    seeds = list(range(args.seeds))
    runs = [os.path.join(args.out, "network", f"seed{s}") for s in seeds]
    train(data, args)
    all_curves = [curves(r) for r in runs]
    rows = [per_seed(c, refit_score(r, data)) for c, r in zip(all_curves, runs)]
    table, first, mean, seconds = report(rows, seeds, all_curves, args, args.machine)
    png = os.path.splitext(args.doc)[0] + ".png"
    config = rundir.read_config(runs[0])
    warmup = bool(config.get("warmup", False))  # runs made before the warm-up existed had none
    plot(all_curves, seeds, png, f"SYNTHETIC stand-in: test OA per epoch, ema {args.ema:g}"
         f"{', warmed up' if warmup else ', fixed decay'}")
    result = dict(rows=rows, seeds=seeds, shortest_epochs=first, mean_averaged_curve=mean.tolist(),
                  median_epoch_seconds=float(seconds), ema=args.ema, warmup=warmup, epochs=args.epochs,
                  precision=args.precision,
                  data=os.path.basename(data), data_sha256=config["data_sha256"], lr=config["lr"],
                  machine=args.machine, command=" ".join(["python", "studies/ema.py", *(argv or sys.argv[1:])]))
    write_text(os.path.splitext(args.doc)[0] + ".json", json.dumps(result, indent=2, default=float) + "\n")
    print("\n".join(table))
    print(f"fewest epochs within 0.5 points of epoch {args.epochs} (averaged, mean over seeds): {first}; "
          f"median epoch {seconds:.0f} s")


if __name__ == "__main__":
    main()
