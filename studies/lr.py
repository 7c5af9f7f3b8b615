"""Choose the learning rate on the validation group carved from the training pixels, never on the test.

    python DataPrepare.py ... --val-fraction 0.2 --out data/crop100-val.h5
    python studies/lr.py --data data/crop100-val.h5 --lrs 6e-5,2e-4,6e-4,2e-3 --epochs 10 \
        --out runs/lr --png docs/crop/lr-val.png [--jobs 4]

One model.py run per learning rate, OUT/lr<LR>, with `--select val`: each epoch scores the
validation group with the weights the run keeps (the average, where averaging is on). A missing
run is trained, one of fewer epochs resumed, a finished one read; one made with another data file or
learning rate, or without --select val, is refused. Any other --NAME VALUE goes to every run.

The rule, fixed before any run: the rate whose LAST epoch scores highest on the validation group
(what protocol 'last' then reports), ties to the smaller rate. The best epoch and the mean of the
last three are printed beside it, to show how far the rule is from noise. OUT/lr-study.json holds
every figure; --png draws the validation curves. The test split is not read.
"""
import argparse
import json
import os
import subprocess
import sys

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, ROOT)

import rundir  # noqa: E402
from fileio import sha256, write_text  # noqa: E402


def run_dir(out, lr):
    return os.path.join(out, f"lr{lr:g}")


def check_run(path, data, lr, epochs):
    """'new', 'resume' or 'done' for the run of one learning rate; RunError for one made otherwise."""
    if not os.path.isfile(os.path.join(path, "config.json")):
        return "new"
    config = rundir.read_config(path)
    wanted = {"lr": lr, "select": "val", "data_sha256": sha256(data)}
    wrong = [f"{k}: the run has {config.get(k)!r}, wanted {v!r}" for k, v in wanted.items() if config.get(k) != v]
    if wrong:
        raise rundir.RunError(f"{path}: made with other settings ({'; '.join(wrong)}); use another --out")
    return "done" if len(rundir.read_history(path)) >= epochs else "resume"


def command(path, action, data, lr, epochs, extra):
    model = os.path.join(ROOT, "model.py")
    if action == "resume":
        return [sys.executable, model, "--resume", os.path.abspath(path), "--epochs", str(epochs)]
    return [sys.executable, model, "--data", os.path.abspath(data), "--out", os.path.abspath(path),
            "--epochs", str(epochs), "--lr", repr(lr), "--select", "val", *extra]


def train(commands, jobs):
    """Run the model.py commands, `jobs` at a time (each its own process; a GPU holds several of this
    network); CalledProcessError for the first that fails, after the others have finished."""
    failed, running, todo = [], [], list(commands)
    while todo or running:
        while todo and len(running) < jobs:
            cmd = todo.pop(0)
            print("+ " + " ".join(cmd), flush=True)
            running.append((cmd, subprocess.Popen(cmd)))
        cmd, proc = running.pop(0)
        if proc.wait():
            failed.append(subprocess.CalledProcessError(proc.returncode, cmd))
    if failed:
        raise failed[0]


def val_curve(path, epochs):
    rows = rundir.read_history(path)[:epochs]
    if not rows or "val_accuracy" not in rows[0]:
        raise rundir.RunError(f"{path}/history.csv: no val_accuracy column: not a --select val run")
    return [float(r["val_accuracy"]) for r in rows]


def choose(curves):
    """The rate of the highest last-epoch validation accuracy; ties to the smaller rate."""
    return min(curves, key=lambda lr: (-curves[lr][-1], lr))


def summary(curves):
    return {lr: {"last": c[-1], "best": max(c), "best_epoch": c.index(max(c)) + 1,
                 "mean_last_3": sum(c[-3:]) / len(c[-3:])} for lr, c in curves.items()}


def data_label(path):
    """What the data is, as every figure says it (real, derived, synthetic)."""
    from patchfile import PatchFile
    from report import dataset_label
    with PatchFile(path) as pf:
        info = pf.info()
    return dataset_label(info["dataset"], info["synthetic"], False, info.get("data_label", ""))


def plot(curves, chosen, png, title):
    from report import pyplot, title_lines
    plt = pyplot()
    fig, ax = plt.subplots(figsize=(7, 4))
    for lr, c in sorted(curves.items()):
        ax.plot(range(1, len(c) + 1), [100 * v for v in c], marker="o", lw=2.5 if lr == chosen else 1,
                label=f"lr {lr:g}" + (" (chosen)" if lr == chosen else ""))
    ax.set(xlabel="epoch", ylabel="validation accuracy, %")
    ax.set_title(title_lines(*title, width=70), fontsize=10)
    ax.grid(alpha=0.3)
    ax.legend()
    fig.tight_layout()
    fig.savefig(png, dpi=120)
    plt.close(fig)


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--data", required=True, help="patch file with a validation group (DataPrepare.py --val-fraction)")
    p.add_argument("--lrs", required=True, help="comma list of learning rates")
    p.add_argument("--epochs", type=int, required=True)
    p.add_argument("--out", required=True, help="folder of the runs, one per learning rate")
    p.add_argument("--png", help="picture of the validation curves")
    p.add_argument("--jobs", type=int, default=1, help="runs at a time (default 1; several share a GPU well)")
    args, extra = p.parse_known_args(argv)
    try:
        lrs = sorted(float(x) for x in args.lrs.split(","))
        actions = {lr: check_run(run_dir(args.out, lr), args.data, lr, args.epochs) for lr in lrs}
        train([command(run_dir(args.out, lr), a, args.data, lr, args.epochs, extra)
               for lr, a in actions.items() if a != "done"], max(args.jobs, 1))
        curves = {lr: val_curve(run_dir(args.out, lr), args.epochs) for lr in lrs}
    except (rundir.RunError, ValueError, subprocess.CalledProcessError) as e:
        print(f"studies/lr.py: {e}", file=sys.stderr)  # model.py has printed its own reason above
        return 1
    chosen, figures = choose(curves), summary(curves)
    print(f"{'lr':>8} {'last':>7} {'best':>7} {'at':>3} {'last 3':>7}   validation accuracy, %")
    for lr, f in figures.items():
        print(f"{lr:>8g} {100 * f['last']:7.2f} {100 * f['best']:7.2f} {f['best_epoch']:3d} "
              f"{100 * f['mean_last_3']:7.2f}" + ("   <- chosen (last epoch)" if lr == chosen else ""))
    result = {"data": os.path.abspath(args.data), "epochs": args.epochs, "rule": "highest last-epoch val accuracy",
              "chosen_lr": chosen, "curves": {f"{lr:g}": c for lr, c in curves.items()},
              "figures": {f"{lr:g}": f for lr, f in figures.items()}, "runs": [run_dir(args.out, lr) for lr in lrs]}
    write_text(os.path.join(args.out, "lr-study.json"), json.dumps(result, indent=1) + "\n")
    if args.png:
        plot(curves, chosen, args.png, [f"learning rate on the validation group of {os.path.basename(args.data)}",
                                         data_label(args.data)])
        print(f"wrote {args.png}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
