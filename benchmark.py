"""Speed and memory on this machine: training and inference patches/s per mode, in one run; the
preparation of scenes and the evaluation of runs, timed whole with their peak memory.

    python benchmark.py --data data/houston2013.h5            # any DataPrepare.py file
    python benchmark.py --data data/berlin.h5 --modes stacked-mixed --steps 20 --batch-size 128
    python benchmark.py --data data/houston2013.h5 --floor    # + the coupled blocks' convolutions alone
    python benchmark.py --data data/houston2013.h5 --profile --rounds 1   # + where each step's time goes
    python benchmark.py --prepare houston2013=/tmp/houston2013.mat --prepare berlin=/tmp/synthetic
    python benchmark.py --evaluate runs/berlin --eval-precision mixed   # evaluate.py, whole test split
    python benchmark.py --data data/houston2013.h5 --fastpath   # JAX: Keras fit against fastpath.py
    python benchmark.py --data data/houston2013.h5 --isa AVX2,AVX512_CORE,ALL   # as three kinds of CPU

--prepare DATASET=SOURCE runs DataPrepare.py on a scene (python synthetic.py writes DCMNet-layout
scenes at the real sizes) and prints its wall time, peak memory and file size; --evaluate RUN runs
evaluate.py on a run and prints its wall time, peak memory and test-set pixels/s.

Modes (the default: keras, defaults, stacked-fp32, stacked-winograd, stacked-mixed; every figure
relative to the first): 'keras' is the authors' graph written in plain Keras (Keras layers only, fit
on NumPy arrays), the build a user without this project would write; 'defaults' is model.py's block
as it stands (precision and conv_algorithm auto, weight averaging, warm-up, op determinism), its
s/epoch with the checkpoint model.py writes each epoch. 'plain' runs the two streams of each coupled
block one after the other, 'stacked' both through each shared convolution as one batch (model.py's
stacked_streams); fp32 with direct convolutions, 'winograd' fp32 with Winograd's (winograd.py), or
mixed precision (bfloat16 on CPUs, float16 on GPUs); weight averaging off. --isa caps oneDNN's
instruction set per process (ONEDNN_MAX_CPU_ISA), so that one machine stands in for CPUs with less:
AVX2 for an AVX2-only CPU, AVX512_CORE for AVX-512 without bfloat16 (the other units, clock, caches
and memory stay this machine's). Training runs the whole
network (both decoders), inference the classification path alone, as evaluate.py does. --profile
adds TensorFlow's per-op profile of each mode's step. --floor times the
sixteen 64-channel convolutions of the coupled blocks alone: they carry most of the network's
FLOPs, so their time bounds what any build using the same convolution kernels can reach on the
machine. Outside the tests: it takes minutes.
"""
import argparse
import json
import os
import platform
import resource
import sys
import time

import keras
import numpy as np

import determinism
import fastbench
import hardware
import jobtimes
import network
import training
from fileio import sha256
from patchfile import PatchFile
from plainkeras import NumpyBatches, keras_reference
from report import dataset_label
from settings import model_settings

PROFILED_STEPS = 5

# keras: the authors' graph written in plain Keras (plainkeras.py), trained by fit on NumPy arrays,
# as a user without this project would; defaults: model.py's block as it stands (precision and
# convolution algorithm auto, weight averaging, warm-up, op determinism), trained through
# training.RotatedPatches. The others are our network in one build, precision and convolution
# algorithm each, weight averaging off.
MODES = {"keras": None, "defaults": None, "plain-fp32": (False, "float32", "direct"),
         "stacked-fp32": (True, "float32", "direct"), "stacked-winograd": (True, "float32", "winograd"),
         "plain-mixed": (False, "mixed", "direct"), "stacked-mixed": (True, "mixed", "direct")}
DEFAULT_MODES = "keras,defaults,stacked-fp32,stacked-winograd,stacked-mixed"
ISA_ENV = "ONEDNN_MAX_CPU_ISA"


def mode_config(name, batch_size):
    """model.py's settings for a mode: its block itself for 'defaults', else with the build,
    precision and convolution algorithm of the mode and averaging off."""
    config = {**model_settings(), "batch_size": batch_size}
    if name != "defaults":
        stacked, precision, algorithm = MODES.get(name) or (False, "float32", "direct")
        config.update(stacked_streams=stacked, precision=precision, conv_algorithm=algorithm, ema=0.0)
    return config


def machine():
    gpus = network.gpu_count()
    return (f"{hardware.describe()}, {gpus} GPU(s); Python {platform.python_version()}, "
            f"Keras {keras.__version__}, backend {keras.backend.backend()}")


def peak_gb():
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1e6  # kB on Linux


class StepClock(keras.callbacks.Callback):
    """Seconds from the first step's start to the end of training (the last step's results read).
    What fit does after training is left out: it is no step of either build, and Keras' fit on NumPy
    arrays paused about 10 s after every other call on TensorFlow 2.21, whatever the step time."""

    def on_train_batch_begin(self, batch, logs=None):
        if batch == 0:
            self.start = time.perf_counter()

    def on_train_end(self, logs=None):
        self.seconds = time.perf_counter() - self.start


def train_speed(net, batches, steps, profile=None):
    """Patches/s of `steps` batches of fit after 3 that trace and warm up; `profile`: a folder for
    TensorFlow's profiler over PROFILED_STEPS more steps."""
    fit_steps(net, batches, 3)
    clock = StepClock()
    fit_steps(net, batches, steps, clock)
    speed = steps * batches.batch_size / clock.seconds
    if profile:
        import tensorflow as tf
        tf.profiler.experimental.start(profile)
        fit_steps(net, batches, PROFILED_STEPS)
        tf.profiler.experimental.stop()
    return speed


def fit_steps(net, batches, n, clock=None):
    callbacks = [clock] if clock else []
    if isinstance(batches, NumpyBatches):
        return batches.fit(net, n, callbacks)
    net.fit(batches, epochs=1, steps_per_epoch=n, verbose=0, shuffle=False, callbacks=callbacks)


def op_profile(folder):
    """[(op type, ms per step, share)] of the profiled steps' busy time (every thread's self time,
    idle left out), largest first; xprof (pip install tensorboard-plugin-profile) reads the trace."""
    import glob
    try:
        from xprof.convert import raw_to_tool_data
    except ImportError:
        sys.exit("benchmark.py --profile reads TensorFlow's trace with xprof: pip install tensorboard-plugin-profile")
    data, _ = raw_to_tool_data.xspace_to_tool_data(glob.glob(f"{folder}/**/*.xplane.pb", recursive=True),
                                                   "framework_op_stats", {})
    table = json.loads(data)[0]
    cols = [c["id"] for c in table["cols"]]
    busy = {}
    for row in table["rows"]:
        r = dict(zip(cols, [c.get("v") if isinstance(c, dict) else c for c in row["c"]]))
        if r["type"] != "IDLE":
            busy[r["type"]] = busy.get(r["type"], 0.0) + r["total_self_time"] / 1000 / PROFILED_STEPS
    total = sum(busy.values())
    return sorted(((t, ms, ms / total) for t, ms in busy.items()), key=lambda x: -x[1])


def infer_speed(net, x, batch_size):
    """Patches/s of network.predict_labels, the batch loop that evaluate.py and the held-out callback use."""
    network.predict_labels(net, x["hsi"][:batch_size], x["aux"][:batch_size], batch_size)  # trace and warm up
    start = time.perf_counter()
    network.predict_labels(net, x["hsi"], x["aux"], batch_size)
    return len(x["hsi"]) / (time.perf_counter() - start)


def bench_mode(name, info, train, test, args):
    config = mode_config(name, args.batch_size)
    precision, why = network.resolve_precision(config["precision"])
    if name != "keras":  # as model.py runs: seeded, op determinism where it applies
        determinism.apply(config["deterministic"], 0)
    policy = network.set_precision(precision)
    algorithm = network.set_conv_algorithm(config["conv_algorithm"], precision)
    if name == "keras":
        net, clf = keras_reference(info, config)
        batches = NumpyBatches(train, config["batch_size"], 3 + args.steps + PROFILED_STEPS)
    else:
        net = network.build_model(**network.architecture(config, info))
        training.compile_model(net, config)
        clf = network.classifier(net)
        batches = training.RotatedPatches(train, config["batch_size"], seed=0)
    profile = f"/tmp/benchmark-profile-{os.getpid()}-{name}" if args.profile else None
    train_ps = train_speed(net, batches, args.steps, profile)
    epoch_extra = epoch_end_seconds(net) if name == "defaults" else 0.0
    infer_ps = infer_speed(clf, {"hsi": test["hsi"], "aux": test["aux"]}, args.infer_batch)
    floor = conv_floor(info, config, args.steps, args.infer_batch) if args.floor else (None, None)
    keras.mixed_precision.set_dtype_policy("float32")
    return dict(mode=name, policy=policy, why=why, algorithm="direct" if name == "keras" else algorithm, train=train_ps, infer=infer_ps, epoch_extra=epoch_extra,
                floor_train=floor[0], floor_infer=floor[1], profile=op_profile(profile) if profile else None)


def epoch_end_seconds(net):
    """What model.py adds once an epoch beside the steps: final.keras written and its sha256 taken."""
    path = f"/tmp/benchmark-checkpoint-{os.getpid()}.keras"
    try:
        start = time.perf_counter()
        net.save(path)
        sha256(path)
        return time.perf_counter() - start
    finally:
        if os.path.exists(path):
            os.remove(path)


def conv_floor(info, config, steps, infer_batch):
    """The coupled blocks' shared convolutions alone, at the model's shapes (both streams stacked,
    W1..W4 applied twice per block, bias and ReLU included), forward and backward, in the mode's
    precision and convolution algorithm: no build of the network that computes these convolutions
    that way trains or infers faster on this machine, whatever it saves elsewhere. Returns
    (training patches/s, inference patches/s)."""
    p, f = info["patch_size"], config["filters"]
    x = y = keras.Input((p, p, f))
    for k in network.parse_kernel_sizes(config["kernel_sizes"]):
        for _ in range(8):
            y = network.Conv2D(f, k, padding="same", activation="relu")(y)  # direct or Winograd, as the mode
    net = keras.Model(x, y)
    net.compile(optimizer="sgd", loss="mse")
    rng = np.random.default_rng(0)
    batch = rng.random((2 * config["batch_size"], p, p, f), dtype=np.float32)  # 2 streams per patch
    for _ in range(3):  # trace and warm up
        net.train_on_batch(batch, batch)
    start = time.perf_counter()
    for _ in range(steps):
        net.train_on_batch(batch, batch)
    train = steps * config["batch_size"] / (time.perf_counter() - start)
    batch = rng.random((2 * infer_batch, p, p, f), dtype=np.float32)
    net.predict_on_batch(batch)
    start = time.perf_counter()
    for _ in range(3):
        net.predict_on_batch(batch)
    return train, 3 * infer_batch / (time.perf_counter() - start)


def run_one(args):
    """One mode in this (fresh) process; prints its figures as JSON for the parent."""
    with PatchFile(args.data) as pf:
        info, train, test = pf.info(), pf.load("train"), pf.load("test", stop=args.infer_patches)
        pixels = pf.shape[0] * pf.shape[1]
    result = bench_mode(args.one, info, train, test, args)
    jobtimes.print_result({**result, "peak_gb": peak_gb(), "epoch_patches": 4 * len(train["label"]),
                           "scene_pixels": pixels})


def isa_env(isa, environ=None):
    """The environment of a mode's process: this one's for isa None (a cap the user set holds), no
    cap for ALL, else ONEDNN_MAX_CPU_ISA=isa."""
    env = dict(os.environ if environ is None else environ)
    if isa:
        env.pop(ISA_ENV, None)
        env.update({} if isa == "ALL" else {ISA_ENV: isa})
    return env


def spawn(mode, args, isa=None):
    """Each mode in its own process, so that no mode inherits another's threads, caches or memory;
    isa: oneDNN's ISA cap for it (ONEDNN_MAX_CPU_ISA), ALL for none, None for this process's."""
    cmd = [sys.executable, os.path.abspath(__file__), "--one", mode, "--data", args.data, "--steps", str(args.steps),
           "--batch-size", str(args.batch_size), "--infer-patches", str(args.infer_patches),
           "--infer-batch", str(args.infer_batch)] + \
        (["--floor"] if args.floor else []) + (["--profile"] if args.profile else [])
    return jobtimes.child_result(cmd, isa_env(isa), f"benchmark of {mode}{f' ({ISA_ENV}={isa})' if isa else ''}")


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--data", help="patch file from DataPrepare.py")
    parser.add_argument("--modes", default=DEFAULT_MODES, help=f"comma-separated, of {', '.join(MODES)}; "
                        "the figures are relative to the first")
    parser.add_argument("--steps", type=int, default=20, help="timed training steps per mode")
    parser.add_argument("--batch-size", type=int, default=model_settings()["batch_size"],
                        help="training batch (default: model.py's, the paper's 64)")
    parser.add_argument("--rounds", type=int, default=2, help="each mode is timed this many times, interleaved; "
                        "the best is kept (the machine may be shared)")
    parser.add_argument("--infer-patches", type=int, default=4096, help="test patches timed for inference")
    parser.add_argument("--infer-batch", type=int, default=256)
    parser.add_argument("--floor", action="store_true", help="also time the coupled blocks' convolutions alone "
                        "in each mode's precision: the ceiling for the network with this backend's convolutions")
    parser.add_argument("--profile", action="store_true", help="also profile 5 training steps of each mode with "
                        "TensorFlow's profiler and print where the time goes, by op type (needs xprof: pip "
                        "install tensorboard-plugin-profile)")
    parser.add_argument("--prepare", action="append", metavar="DATASET=SOURCE", default=[],
                        help="time DataPrepare.py on a scene (repeatable), e.g. berlin=/tmp/synthetic, or "
                             "'muufl=data/muufl --train-per-class 100' with more DataPrepare flags")
    parser.add_argument("--evaluate", action="append", metavar="RUN_DIR", default=[],
                        help="time evaluate.py on a run's whole test split (repeatable)")
    parser.add_argument("--eval-precision", choices=list(network.PRECISIONS), help="with --evaluate: inference precision")
    parser.add_argument("--stand-in", action="store_true", help="label the figures: the data is the synthetic "
                        "Houston 2013 stand-in (synthetic.py houston2013)")
    parser.add_argument("--isa", metavar="CAP,CAP", help="run every mode under each of oneDNN's ISA caps "
                        f"({ISA_ENV}, e.g. AVX2,AVX512_CORE,ALL): one machine timed as several kinds of CPU, each "
                        "mode relative to the first under the same cap; ALL: the machine's own")
    parser.add_argument("--one", choices=list(MODES), help=argparse.SUPPRESS)
    parser.add_argument("--fastpath", action="store_true", help="under JAX: Keras' fit against fastpath.fit "
                        "(epochs/s) and scene prediction with patches cut on the host against on the device "
                        "(pixels/s), with peak device memory; needs --data")
    parser.add_argument("--fast-epochs", type=int, default=3, help="with --fastpath: timed epochs (after one more "
                        "that compiles)")
    parser.add_argument("--fast-pixels", type=int, default=0, help="with --fastpath: scene pixels predicted "
                        "(0: the whole scene)")
    parser.add_argument("--fast-filters", type=int, default=0, help="with --fastpath: filters of the network "
                        "(0: the paper's 64)")
    parser.add_argument("--one-fastpath", choices=["fit", "loop", "scan"], help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.one:
        return run_one(args)
    if args.one_fastpath:
        return fastbench.one_side(args, mode_config("stacked-fp32", args.batch_size))
    print(machine())
    try:
        for spec in args.prepare:
            jobtimes.prepare(spec)
        for run_dir in args.evaluate:
            jobtimes.evaluate(run_dir, args.eval_precision)
        if args.fastpath:
            return fastbench.compare(args, [sys.executable, os.path.abspath(__file__)])
        if args.data:
            compare_modes(args)
    except (ValueError, RuntimeError) as e:
        sys.exit(f"benchmark.py: {e}")


def compare_modes(args):
    """Every mode of --modes under every cap of --isa, each in its own process, interleaved rounds."""
    with PatchFile(args.data) as pf:
        info = pf.info()
    label = dataset_label(info["dataset"], info["synthetic"], args.stand_in, info.get("data_label", ""))
    print(f"{args.data}: {label}, {info['hsi_bands']} + {info['aux_bands']} bands, "
          f"{info['num_classes']} classes, patch {info['patch_size']}; batch {args.batch_size}, "
          f"{args.steps} timed steps; "
          f"inference on {args.infer_patches} test patches, batch {args.infer_batch}; best of {args.rounds} rounds")
    modes = args.modes.split(",")
    unknown = [m for m in modes if m not in MODES]
    if unknown:
        raise ValueError(f"unknown mode(s) {', '.join(unknown)}; known: {', '.join(MODES)}")
    caps = [c.strip().upper() for c in args.isa.split(",")] if args.isa else [None]
    best = {}
    for _ in range(args.rounds):
        for cap in caps:  # interleaved: a slow spell of a shared machine hits every cap and mode alike
            for name in modes:
                r = spawn(name, args, cap)
                old = best.setdefault(cap, {}).get(name, r)
                best[cap][name] = {**r, **{k: max(r[k], old[k]) for k in ("train", "infer", "peak_gb")},
                                   **{k: max(r[k], old[k]) for k in ("floor_train", "floor_infer") if r[k]},
                                   "epoch_extra": min(r["epoch_extra"], old["epoch_extra"])}
    for cap in caps:
        if cap:
            print(f"== {ISA_ENV}={cap}" + (" (the machine's own)" if cap == "ALL" else
                                          ": oneDNN's kernels use no unit above it; a stand-in for such a CPU"))
        print_modes(best[cap], modes, args)


def print_modes(best, modes, args):
    """The table of modes, the ratios to the first (s per epoch include model.py's checkpoint of each
    epoch for 'defaults'), and with --floor and --profile their extra tables."""
    def ms(patches_per_s):  # milliseconds per training batch
        return 1000 * args.batch_size / patches_per_s

    def epoch_s(r):
        return r["epoch_patches"] / r["train"] + r["epoch_extra"]

    for name in modes:
        r = best[name]
        print(f"  {name:16s} {r['policy']:15s} {r['algorithm']:8s} train {r['train']:6.1f} patches/s ({ms(r['train']):5.0f} ms/batch, "
              f"{epoch_s(r):5.1f} s/epoch)   infer {r['infer']:6.1f} patches/s "
              f"({r['scene_pixels'] / r['infer'] / 60:5.1f} min per full-scene map)   peak {r['peak_gb']:.2f} GB")
    if "defaults" in best:
        r = best["defaults"]
        print(f"  defaults: precision {r['policy']} ({r['why']}), {r['algorithm']} convolutions; its s/epoch include {r['epoch_extra']:.2f} s for "
              f"final.keras and its sha256 once an epoch")
    if args.floor:
        print("the coupled blocks' convolutions alone (forward + backward, both streams): the ceiling for any "
              "build of the network that uses this backend's convolutions on this machine:")
        for name in modes:
            r = best[name]
            print(f"  {name:16s} {r['policy']:15s} train {r['floor_train']:6.1f} patches/s "
                  f"({ms(r['floor_train']):5.0f} ms/batch, {r['epoch_patches'] / r['floor_train']:5.1f} s/epoch)   "
                  f"infer {r['floor_infer']:6.1f} patches/s ({r['scene_pixels'] / r['floor_infer'] / 60:5.1f} min "
                  f"per full-scene map)")
    if args.profile:
        for name in modes:
            ops_ = best[name]["profile"]
            conv = sum(ms_ for t, ms_, _ in ops_ if "Conv" in t)
            total = sum(ms_ for _, ms_, _ in ops_)
            print(f"where {name}'s training step goes ({PROFILED_STEPS} profiled steps, every thread's busy time, "
                  f"{total:.0f} ms per step in all; convolutions {100 * conv / total:.1f} %):")
            for t, ms_, share in ops_[:12]:
                print(f"  {t:44s} {ms_:8.1f} ms  {100 * share:5.1f} %")
    base = best[modes[0]]
    print(f"relative to {base['mode']} (training per epoch, inference per patch):")
    for name in modes:
        print(f"  {name:16s} train x{epoch_s(base) / epoch_s(best[name]):.2f}   "
              f"infer x{best[name]['infer'] / base['infer']:.2f}")

if __name__ == "__main__":
    main()
