"""Build and train the coupled self-looping network (Pande & Banerjee, Neural Networks 164, 2023).

    python model.py --data data/houston2013.h5                   # the paper's hyperparameters
    python model.py --data data/demo.h5 --epochs 5 --lr 1e-3     # any hyperparameter below, by name
    python model.py --resume runs/houston2013-20261125-101500     # go on with an interrupted run

The patch file comes from DataPrepare.py; the run directory (rundir.py) then holds config.json,
state.json, history.csv, final.keras, selected.keras, curves.png and TensorBoard logs, which
evaluate.py reads. A non-empty --out is refused: --resume it, or --overwrite it.
"""
# ---------------------------------------------------------------------------------------------
# Hyperparameters: the paper's defaults. Edit them here, or override any on the command line by
# the same name (--epochs 5 --lr 1e-3 --coupled false).
data = "data/houston2013.h5"  # patch file written by DataPrepare.py
out = ""  # run directory; empty: runs/<dataset>-<date>-<time>
epochs = 500
batch_size = 64
lr = 6e-5  # Nadam
lr_constant_epochs = 20  # then lr is multiplied by exp(-lr_decay) every epoch
lr_decay = 0.005
lambda1 = 1.0  # weight of RMSE(second-modality patch, H -> L reconstruction)
lambda2 = 1.0  # weight of RMSE(HSI patch, L -> H reconstruction)
filters = 64  # channels of the stems and of the coupled blocks
bn_momentum = 0.99  # Keras' default, as the authors; lower (0.9) for runs of few steps such as the demo
fusion_units = 32  # Dense after concatenating a branch's HSI and second-modality vectors
kernel_sizes = "3,5"  # one coupled self-looping branch per kernel size
coupled = True  # ablation: False gives each stream its own kernels
self_loop = True  # ablation: False keeps the forward stage only
reconstruction = True  # ablation: False drops both decoders (lambda1 = lambda2 = 0)
spectral_stem = True  # the 3-D convolution over the band grid (Sec. 3); False, a study: the HSI's Conv2D stem alone
select = "last"  # checkpoint: last (honest) | val (best on the carved validation group) | authors (best on TEST)
precision = "auto"  # auto: mixed on a CPU with bfloat16 hardware (amx_bf16, avx512_bf16), else float32 | float32 | mixed (bfloat16 on CPUs, float16 on GPUs)
conv_algorithm = "auto"  # auto: winograd where the network computes in float32 on a CPU, else direct | direct | winograd (same result, fewer multiplications; winograd.py)
stacked_streams = True  # both streams through each shared convolution as one batch: same result, faster on a GPU
ema = 0.995  # keep and evaluate a moving average of the weights over ~1/(1-ema) steps (docs/ema-study.md); 0: off (the paper)
warmup = True  # the average and the batch-norm statistics decay by min(m, (1+t)/(10+t)) at step t (averaging.py): short runs keep no initial weights
trace_test = False  # studies only: log TEST accuracy after every epoch (raw and averaged); never selects
seed = 0
deterministic = "auto"  # auto | true | false; auto: on where every kernel is known to have a deterministic version
fast_path = "auto"  # auto: under JAX, each epoch runs as one compiled loop on the device (fastpath.py) | off
max_minutes = 0.0  # 0: no limit; else stop cleanly after the epoch that passes it (go on with --resume)
resume = ""  # run directory to continue; its config.json is used and other overrides are refused
overwrite = False  # --out names an existing run directory: delete it and start afresh
# ---------------------------------------------------------------------------------------------
DEFAULTS = {k: v for k, v in dict(globals()).items() if not k.startswith("_") and type(v) in (str, int, float, bool)}

import argparse  # noqa: E402  (the block above stays first, where users edit it)
import datetime  # noqa: E402
import os  # noqa: E402
import shlex  # noqa: E402
import sys  # noqa: E402

import keras  # noqa: E402

import determinism  # noqa: E402
import devices  # noqa: E402

import rundir  # noqa: E402
import training  # noqa: E402
from fileio import sha256  # noqa: E402
from network import (CONV_ALGORITHMS, PRECISIONS, architecture, build_model, gpu_count,  # noqa: E402
                     parse_kernel_sizes, resolve_conv_algorithm, resolve_precision, set_conv_algorithm,
                     set_precision)
from patchfile import PatchFile, PatchFileError  # noqa: E402
import report  # noqa: E402

CHOICES = {"select": list(rundir.PROTOCOLS), "precision": list(PRECISIONS), "conv_algorithm": list(CONV_ALGORITHMS),
           "deterministic": list(determinism.CHOICES), "fast_path": ["auto", "off"]}
RESUMABLE = ("epochs", "max_minutes")  # what a resumed job may set; everything else is the run's


# ----------------------------------------------------------------------------- configuration
def parse_bool(text):
    if text.lower() in ("1", "true", "yes", "on"):
        return True
    if text.lower() in ("0", "false", "no", "off"):
        return False
    raise argparse.ArgumentTypeError(f"expected true or false, got {text!r}")


def parse_config(argv):
    """The block at the top of this file, overridden by --NAME VALUE flags of the same names and types."""
    parser = argparse.ArgumentParser(allow_abbrev=False, description="Train the coupled self-looping network on a "
                                     "DataPrepare.py patch file. Every flag overrides the variable of the same name "
                                     "at the top of model.py.")
    for name, default in DEFAULTS.items():
        flags = [f"--{name}"] + ([f"--{name.replace('_', '-')}"] if "_" in name else [])
        if isinstance(default, bool):  # --overwrite alone, or --coupled false
            parser.add_argument(*flags, dest=name, type=parse_bool, nargs="?", const=True, default=None,
                                metavar="true|false", help=f"default: {default}")
            continue
        parser.add_argument(*flags, dest=name, type=type(default), default=None, choices=CHOICES.get(name),
                            metavar=name.upper() if name not in CHOICES else None, help=f"default: {default}")
    given = {k: v for k, v in vars(parser.parse_args(argv)).items() if v is not None}
    if given.get("resume"):
        extra = sorted(set(given) - {"resume", *RESUMABLE})
        if extra:
            parser.error(f"--resume continues a run with its own config.json; only --epochs and --max_minutes may change, "
                         f"not {', '.join('--' + k for k in extra)}")
        return given
    config = {**DEFAULTS, **given}
    try:
        parse_kernel_sizes(config["kernel_sizes"])
    except ValueError as e:
        parser.error(str(e))
    if not 0 <= config["ema"] < 1:
        parser.error(f"--ema must be in [0, 1) (0 turns averaging off), got {config['ema']}")
    return config


# ----------------------------------------------------------------------------- the run
def new_run(config, argv):
    """Check the patch file, make the run directory (refusing a non-empty one unless --overwrite),
    write config.json; returns (config, state)."""
    with PatchFile(config["data"]) as pf:
        info = pf.info()
    run_dir = config["out"] or os.path.join(
        "runs", f"{info['dataset']}-{datetime.datetime.now().strftime('%Y%m%d-%H%M%S')}")
    rundir.prepare_new(run_dir, config["overwrite"])
    config = {**config, "out": run_dir, "data": os.path.abspath(config["data"])}
    config.update(architecture=architecture(config, info), protocol=rundir.protocol_text(config["select"], config),
                  data_sha256=sha256(config["data"]), dataset=info["dataset"], synthetic=info["synthetic"],
                  command=shlex.join(["python", "model.py", *argv]), keras=keras.__version__,
                  backend=keras.backend.backend(), gpus=gpu_count(), started=rundir.now())
    config["precision_used"], config["precision_reason"] = resolve_precision(config["precision"])
    config["conv_algorithm_used"], config["conv_algorithm_reason"] = resolve_conv_algorithm(
        config["conv_algorithm"], config["precision_used"])
    rundir.write_config(run_dir, config)
    return config, {"epochs_done": 0}


def train(config, state, max_minutes=0.0):
    """Train from state["epochs_done"] to config["epochs"] (or until max_minutes of this job)."""
    run_dir = config["out"]
    held_out = rundir.HELD_OUT.get(config["select"])
    with PatchFile(config["data"]) as pf:
        info, data = pf.info(), pf.load("train")
        if held_out:
            pf.group(held_out)  # fail now, not after the first epoch
    print(f"{report.dataset_label(info['dataset'], info['synthetic'], False, info['data_label'])}: {len(data['label'])} training "
          f"patches x 4 rotations, {info['hsi_bands']} + {info['aux_bands']} bands, {info['num_classes']} classes; "
          f"checkpoint: {config['protocol']}")
    note = training.averaging_note(config, len(data["label"]))
    if note:
        print(note)
    deterministic = determinism.apply(config.get("deterministic", "auto"), config["seed"] + state["epochs_done"])
    policy = set_precision(rundir.training_precision(config))
    algorithm = set_conv_algorithm(rundir.training_conv_algorithm(config), rundir.training_precision(config))
    with devices.distribution_scope():
        if state["epochs_done"]:
            net = keras.saving.load_model(rundir.checkpoint_path(run_dir, "final"))  # weights and optimiser state
        else:
            net = build_model(**config["architecture"])
            training.compile_model(net, config)
    callbacks = training.callbacks(config, held_out, max_minutes, rundir.monitored(config["select"]), state)
    print(f"dtype policy {policy} ({config.get('precision_reason', 'asked for')}), {algorithm} convolutions, "
          f"backend {keras.backend.backend()}, "
          f"GPUs {gpu_count()}, {devices.describe(net)}, {deterministic}, "
          f"run directory {run_dir}")
    try:
        training.fit(net, data, config, state["epochs_done"], callbacks)
    except determinism.NO_KERNEL_ERRORS as e:
        raise rundir.RunError(f"{e}: an op has no deterministic kernel on this device; run again with "
                              f"--deterministic false") from None
    rundir.finish(run_dir, state, config["select"])
    report.plot_curves(os.path.join(run_dir, "history.csv"), os.path.join(run_dir, "curves.png"), config)
    print_done(run_dir, state, config)
    return net


def print_done(run_dir, state, config):
    done = f"done: {state.get('epochs_done', 0)} epochs"
    if state.get("epochs_done", 0) < config["epochs"]:
        done = (f"stopped after {state.get('epochs_done', 0)} of {config['epochs']} epochs (go on: "
                f"python model.py --resume {shlex.quote(run_dir)})")
    print(f"{done}; selected.keras is epoch {state.get('selected_epoch')} ({config['protocol']}); "
          f"files in {run_dir}; next: python evaluate.py --run {shlex.quote(run_dir)}")


def main(argv=None):
    argv = sys.argv[1:] if argv is None else argv
    config = parse_config(argv)
    try:
        devices.split_cpu()  # CPU_DEVICES=N: before the backend starts
        if config.get("resume"):
            overrides = {k: config[k] for k in ("epochs",) if k in config}
            config, state = rundir.resume(config["resume"], shlex.join(["python", "model.py", *argv]), overrides,
                                          config.get("max_minutes", 0.0))
            determinism.prepare(config.get("deterministic", "auto"))
            max_minutes = config["resumes"][-1]["max_minutes"]
        else:
            determinism.prepare(config["deterministic"])  # before new_run asks JAX for its devices
            config, state = new_run(config, argv)
            max_minutes = config["max_minutes"]
        train(config, state, max_minutes)
    except (PatchFileError, rundir.RunError, devices.DeviceError) as e:
        sys.exit(f"model.py: error: {e}")


if __name__ == "__main__":
    main()
