"""Build and train the coupled self-looping network (Pande & Banerjee, Neural Networks 164, 2023).

    python model.py --data data/houston2013.h5                   # the paper's hyperparameters
    python model.py --data data/demo.h5 --epochs 5 --lr 1e-3     # any hyperparameter below, by name
    python model.py --resume runs/houston2013-20261125-101500     # go on with an interrupted run

The patch file comes from DataPrepare.py; the run directory then holds config.json, final.keras,
selected.keras, history.csv, curves.png and TensorBoard logs, which evaluate.py reads.
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
select = "last"  # checkpoint: last (honest) | val (best on the carved validation group) | authors (best on TEST)
precision = "float32"  # float32 | mixed (bfloat16 on CPUs, float16 on GPUs; outputs stay float32)
stacked_streams = True  # both streams through each shared convolution as one batch: same result, faster on a GPU
seed = 0
max_minutes = 0.0  # 0: no limit; else stop cleanly after the epoch that passes it (go on with --resume)
resume = ""  # run directory to continue; its config.json is used and other overrides are refused
# ---------------------------------------------------------------------------------------------
DEFAULTS = {k: v for k, v in dict(globals()).items() if not k.startswith("_") and type(v) in (str, int, float, bool)}

import argparse  # noqa: E402  (the block above stays first, where users edit it)
import csv  # noqa: E402
import datetime  # noqa: E402
import json  # noqa: E402
import math  # noqa: E402
import os  # noqa: E402
import shlex  # noqa: E402
import shutil  # noqa: E402
import sys  # noqa: E402
import time  # noqa: E402

import keras  # noqa: E402
import numpy as np  # noqa: E402
from keras import layers  # noqa: E402

from fileio import replacing, sha256, write_json  # noqa: E402
from layers import KERNEL_INIT, CoupledSelfLoopingBlock, CrossModalDecoder, SpectralStem  # noqa: E402
from losses import BatchRMSE  # noqa: E402
from patchfile import PatchFile, PatchFileError  # noqa: E402

HELD_OUT = {"val": "val", "authors": "test"}  # the split whose accuracy each protocol monitors


def monitored(select):
    """The history column a protocol selects its checkpoint by (None for 'last')."""
    return f"{HELD_OUT[select]}_accuracy" if select in HELD_OUT else None

PROTOCOLS = {
    "last": "last epoch (no checkpoint selection)",
    "val": "best validation accuracy (validation pixels carved from the training set)",
    "authors": "best TEST accuracy (the authors' protocol: optimistic, the test set chose the checkpoint)",
}


# ----------------------------------------------------------------------------- the network
def branch(hsi, aux, kernel_size, filters=64, fusion_units=32, coupled=True, self_loop=True, stacked=True,
           bn_momentum=0.99):
    """One coupled self-looping branch of kernel size k: returns (fused 32-vector, HSI 256, aux 256)."""
    k = kernel_size
    conv = lambda name: layers.Conv2D(filters, k, padding="same", activation="relu",
                                      kernel_initializer=KERNEL_INIT, name=name)
    x_hsi = conv(f"hsi_stem_k{k}")(SpectralStem(name=f"spectral_stem_k{k}")(hsi))
    x_aux = conv(f"aux_stem_k{k}")(aux)
    block = CoupledSelfLoopingBlock(filters, k, coupled=coupled, self_loop=self_loop, stacked=stacked,
                                    bn_momentum=bn_momentum, name=f"coupled_block_k{k}")
    v_hsi, v_aux = block([x_hsi, x_aux])
    fused = layers.Dense(fusion_units, activation="relu", kernel_initializer=KERNEL_INIT, name=f"fusion_k{k}")(
        layers.Concatenate(name=f"concat_k{k}")([v_hsi, v_aux]))
    return fused, v_hsi, v_aux


def build_model(hsi_bands, aux_bands, num_classes, patch_size=11, filters=64, fusion_units=32,
                kernel_sizes=(3, 5), coupled=True, self_loop=True, reconstruction=True, stacked=True, bn_momentum=0.99):
    """The network of Fig. 1: inputs {'hsi': (P, P, B), 'aux': (P, P, A)}, outputs
    {'class': softmax over C, 'rec_aux': second modality from HSI features (H -> L),
     'rec_hsi': HSI from second-modality features (L -> H)}; without reconstruction only 'class'."""
    p = patch_size
    hsi = keras.Input((p, p, hsi_bands), name="hsi")
    aux = keras.Input((p, p, aux_bands), name="aux")
    branches = [branch(hsi, aux, k, filters, fusion_units, coupled, self_loop, stacked, bn_momentum)
                for k in kernel_sizes]
    join = lambda xs, name: layers.Concatenate(name=name)(xs) if len(xs) > 1 else xs[0]
    fused = join([b[0] for b in branches], "concat_branches")
    outputs = {"class": layers.Dense(num_classes, activation="softmax", kernel_initializer=KERNEL_INIT,
                                     dtype="float32", name="class")(fused)}
    if reconstruction:
        outputs["rec_aux"] = CrossModalDecoder(aux_bands, p, name="rec_aux")(join([b[1] for b in branches], "concat_hsi"))
        outputs["rec_hsi"] = CrossModalDecoder(hsi_bands, p, name="rec_hsi")(join([b[2] for b in branches], "concat_aux"))
    return keras.Model({"hsi": hsi, "aux": aux}, outputs, name="coupled_self_looping_net")


def classifier(model):
    """The classification path alone (shared weights): what inference and maps need, no decoders."""
    return keras.Model(model.inputs, model.get_layer("class").output, name="classifier")


def architecture(config, data_attrs):
    """Arguments of build_model for a configuration and a patch file's shapes (saved in config.json)."""
    return dict(hsi_bands=data_attrs["hsi_bands"], aux_bands=data_attrs["aux_bands"],
                num_classes=data_attrs["num_classes"], patch_size=data_attrs["patch_size"],
                filters=config["filters"], fusion_units=config["fusion_units"],
                kernel_sizes=parse_kernel_sizes(config["kernel_sizes"]), coupled=config["coupled"],
                self_loop=config["self_loop"], reconstruction=config["reconstruction"],
                stacked=config["stacked_streams"], bn_momentum=config["bn_momentum"])


def parse_kernel_sizes(text):
    sizes = tuple(int(k) for k in str(text).split(","))
    if not sizes or any(k < 1 or k % 2 == 0 for k in sizes):
        raise ValueError(f"kernel_sizes must be odd integers separated by commas, got {text!r}")
    return sizes


def set_precision(precision):
    """float32, or mixed precision: bfloat16 on CPUs (AMX/AVX-512 BF16), float16 on GPUs."""
    if precision not in ("float32", "mixed"):
        raise ValueError(f"precision must be 'float32' or 'mixed', got {precision!r}")
    policy = "float32" if precision == "float32" else ("mixed_float16" if gpu_count() else "mixed_bfloat16")
    keras.mixed_precision.set_dtype_policy(policy)
    return policy


def gpu_count():
    backend = keras.backend.backend()
    if backend == "tensorflow":
        import tensorflow as tf  # only under the TensorFlow backend: the network itself needs no tf
        return len(tf.config.list_physical_devices("GPU"))
    if backend == "jax":
        import jax
        return sum(d.platform == "gpu" for d in jax.devices())
    return 0


def load_classifier(run_dir, checkpoint="selected", precision="float32"):
    """The classification path of a trained run, rebuilt in `precision` with the checkpoint's weights.

    checkpoint: "selected" (the run's own protocol) or "final" (last epoch)."""
    config = read_config(run_dir)
    set_precision(precision)
    net = build_model(**config["architecture"])
    net.load_weights(os.path.join(run_dir, f"{checkpoint}.keras"))
    return classifier(net)


class RunError(ValueError):
    """A run directory that cannot be read or continued."""


def read_config(run_dir):
    """A run's config.json."""
    path = os.path.join(run_dir, "config.json")
    if not os.path.exists(path):
        raise RunError(f"{run_dir}: no config.json: not a run directory of model.py")
    with open(path) as f:
        return json.load(f)


# ----------------------------------------------------------------------------- input pipeline
class RotatedPatches(keras.utils.PyDataset):
    """Every training patch in its four rotations (0, 90, 180, 270 degrees), shuffled anew each epoch.

    The order of epoch e is a pure function of (seed, e), so a resumed run sees the batches an
    uninterrupted run would. Rotations are views (np.rot90) gathered per batch: nothing is stored
    four times. Plain NumPy, so it runs without TensorFlow (JAX backend)."""

    def __init__(self, group, batch_size, seed, epoch=0, reconstruction=True, **kwargs):
        super().__init__(workers=2, max_queue_size=8, **kwargs)  # threads prefetch the next batches
        self.hsi, self.aux, self.label = group["hsi"], group["aux"], group["label"].astype("int32")
        self.batch_size, self.seed, self.epoch, self.reconstruction = batch_size, seed, epoch, reconstruction
        self._order_epoch, self._order = None, None

    def __len__(self):
        return math.ceil(4 * len(self.label) / self.batch_size)

    def order(self):
        if self._order_epoch != self.epoch:  # threads may race here; they compute the same order
            self._order = np.random.default_rng([self.seed, self.epoch]).permutation(4 * len(self.label))
            self._order_epoch = self.epoch
        return self._order

    def __getitem__(self, i):
        picks = self.order()[i * self.batch_size:(i + 1) * self.batch_size]
        patch, turns = picks // 4, picks % 4
        hsi, aux = self.hsi[patch], self.aux[patch]  # fancy indexing: fresh arrays we may rotate in place
        for t in (1, 2, 3):
            sel = turns == t
            hsi[sel] = np.rot90(hsi[sel], t, axes=(1, 2))
            aux[sel] = np.rot90(aux[sel], t, axes=(1, 2))
        x = {"hsi": hsi, "aux": aux}
        y = {"class": self.label[patch]}
        if self.reconstruction:
            y.update(rec_aux=aux, rec_hsi=hsi)
        return x, y

    def on_epoch_end(self):
        self.epoch += 1


def predict_labels(clf, hsi, aux, batch_size=256):
    """Class indices 0..C-1 of patches, batch_size at a time, from the classifier (or the whole model's
    'class' output). predict_on_batch, not predict(): on 2 CPU cores Keras' predict() on the same
    arrays ran 1.7x slower."""
    labels = [np.zeros(0, np.int64)]  # an empty group gives an empty array
    for i in range(0, len(hsi), batch_size):
        probs = clf.predict_on_batch({"hsi": hsi[i:i + batch_size], "aux": aux[i:i + batch_size]})
        labels.append(np.argmax(np.asarray(probs["class"] if isinstance(probs, dict) else probs), axis=-1))
    return np.concatenate(labels)


def predict_split(clf, pf, split, batch_size=256, progress=None):
    """Class indices 0..C-1 of every pixel of a split of an open PatchFile, its patches read (or, for
    the test split, cut from the scene) a batch at a time; progress: a tqdm-like bar, or None."""
    out = np.zeros(len(pf.labels(split)), np.int32)
    for idx, x in pf.batches(split, batch_size):
        out[idx] = predict_labels(clf, x["hsi"], x["aux"], batch_size)
        if progress is not None:
            progress.update(len(idx))
    return out


# ----------------------------------------------------------------------------- callbacks
class HeldOutAccuracy(keras.callbacks.Callback):
    """After each epoch, the classifier's accuracy on a held-out split of the patch file (val, or test
    for the authors' protocol), logged as '<split>_accuracy'. Test patches are cut from the scene a
    batch at a time, so memory does not grow with the test set."""

    def __init__(self, path, split, batch_size=256):
        super().__init__()
        self.path, self.split, self.batch_size = path, split, batch_size

    def on_train_begin(self, logs=None):
        self.classifier = classifier(self.model)  # built once: shares the model's weights

    def on_epoch_end(self, epoch, logs=None):
        with PatchFile(self.path) as pf:
            labels = predict_split(self.classifier, pf, self.split, self.batch_size)
            logs[f"{self.split}_accuracy"] = float(np.mean(labels == pf.labels(self.split)))


class EpochClock(keras.callbacks.Callback):
    """Logs each epoch's training time as 'epoch_seconds' (the first epoch of a process includes
    tracing and compilation) and stops the run cleanly after the epoch that passes max_minutes."""

    def __init__(self, max_minutes=0.0):
        super().__init__()
        self.max_seconds = 60 * max_minutes

    def on_train_begin(self, logs=None):
        self.started = time.perf_counter()

    def on_epoch_begin(self, epoch, logs=None):
        self.epoch_started = time.perf_counter()

    def on_epoch_end(self, epoch, logs=None):
        now = time.perf_counter()
        logs["epoch_seconds"] = now - self.epoch_started
        if self.max_seconds and now - self.started >= self.max_seconds:
            self.model.stop_training = True
            print(f"max_minutes={self.max_seconds / 60:g} reached: stopping after epoch {epoch + 1}")


class RunState(keras.callbacks.Callback):
    """Keeps the run directory resumable. After every epoch, in this order: a row of history.csv,
    final.keras, selected.keras when the monitored held-out accuracy improves (select val or
    authors), and state.json last, with final.keras's digest. A run killed part-way leaves at most
    a stray history row (dropped on resuming) or a final.keras one epoch ahead of state.json
    (rolled forward on resuming, see roll_forward)."""

    def __init__(self, run_dir, state, monitor=None):
        super().__init__()
        self.run_dir, self.state, self.monitor = run_dir, state, monitor

    def on_epoch_end(self, epoch, logs=None):
        append_history(os.path.join(self.run_dir, "history.csv"), epoch, logs)
        save_model(self.model, os.path.join(self.run_dir, "final.keras"))
        commit_epoch(self.run_dir, self.state, epoch + 1, logs[self.monitor] if self.monitor else None)


def commit_epoch(run_dir, state, epoch, score):
    """Once final.keras holds `epoch`: selected.keras (a copy of it) when the monitored score beats
    the best so far, then state.json, the commit, with final.keras's digest."""
    final = os.path.join(run_dir, "final.keras")
    if score is not None and score > state.get("best", -1.0):
        with replacing(os.path.join(run_dir, "selected.keras")) as tmp:
            shutil.copyfile(final, tmp)
        state.update(best=score, selected_epoch=epoch)
    state.update(epochs_done=epoch, final_sha256=sha256(final))
    write_json(os.path.join(run_dir, "state.json"), state)


def append_history(path, epoch, logs):
    keys = sorted(logs)
    new = not os.path.exists(path)
    with open(path, "a", newline="") as f:
        writer = csv.writer(f)
        if new:
            writer.writerow(["epoch", *keys])
        writer.writerow([epoch, *(float(logs[k]) for k in keys)])


def save_model(net, path):
    with replacing(path) as tmp:  # the temporary name keeps the .keras suffix Keras wants
        net.save(tmp)


def lr_at(epoch, config):
    """The paper's schedule: constant for lr_constant_epochs, then times exp(-lr_decay) per epoch."""
    return config["lr"] * math.exp(-config["lr_decay"] * max(0, epoch - config["lr_constant_epochs"] + 1))


# ----------------------------------------------------------------------------- configuration
def parse_bool(text):
    if text.lower() in ("1", "true", "yes", "on"):
        return True
    if text.lower() in ("0", "false", "no", "off"):
        return False
    raise argparse.ArgumentTypeError(f"expected true or false, got {text!r}")


def parse_config(argv):
    """The block at the top of this file, overridden by --NAME VALUE flags of the same names and types."""
    parser = argparse.ArgumentParser(allow_abbrev=False, description="Train the coupled self-looping network on a DataPrepare.py "
                                     "patch file. Every flag overrides the variable of the same name at the top "
                                     "of model.py.")
    choices = {"select": list(PROTOCOLS), "precision": ["float32", "mixed"]}
    for name, default in DEFAULTS.items():
        kind = parse_bool if isinstance(default, bool) else type(default)
        flags = [f"--{name}"] + ([f"--{name.replace('_', '-')}"] if "_" in name else [])
        parser.add_argument(*flags, dest=name, type=kind, default=None, choices=choices.get(name),
                            metavar=name.upper() if name not in choices else None, help=f"default: {default}")
    given = {k: v for k, v in vars(parser.parse_args(argv)).items() if v is not None}
    if given.get("resume"):
        extra = sorted(set(given) - {"resume", "epochs", "max_minutes"})
        if extra:
            parser.error(f"--resume continues a run with its own config.json; only --epochs and --max_minutes may change, "
                         f"not {', '.join('--' + k for k in extra)}")
        return given
    config = {**DEFAULTS, **given}
    try:
        parse_kernel_sizes(config["kernel_sizes"])
    except ValueError as e:
        parser.error(str(e))
    return config


def distribution_scope():
    """Several GPUs: data parallel (tf.distribute.MirroredStrategy, or keras.distribution under JAX)."""
    import contextlib
    if gpu_count() < 2:
        return contextlib.nullcontext()
    if keras.backend.backend() == "tensorflow":
        import tensorflow as tf
        return tf.distribute.MirroredStrategy().scope()
    keras.distribution.set_distribution(keras.distribution.DataParallel())
    return contextlib.nullcontext()


def make_deterministic(seed):
    """Same seed, same device: same metrics."""
    keras.utils.set_random_seed(seed)
    if keras.backend.backend() == "tensorflow":
        import tensorflow as tf
        tf.config.experimental.enable_op_determinism()


# ----------------------------------------------------------------------------- training
def compile_model(net, config):
    losses = {"class": keras.losses.SparseCategoricalCrossentropy()}
    weights = {"class": 1.0}
    if config["reconstruction"]:
        losses.update(rec_aux=BatchRMSE(), rec_hsi=BatchRMSE())
        weights.update(rec_aux=config["lambda1"], rec_hsi=config["lambda2"])
    net.compile(optimizer=keras.optimizers.Nadam(config["lr"]), loss=losses, loss_weights=weights,
                metrics={"class": [keras.metrics.SparseCategoricalAccuracy(name="accuracy")]})


def new_run(config, argv):
    with PatchFile(config["data"]) as pf:
        info = pf.info()
    run_dir = config["out"] or os.path.join(
        "runs", f"{info['dataset']}-{datetime.datetime.now().strftime('%Y%m%d-%H%M%S')}")
    os.makedirs(run_dir, exist_ok=True)
    config = {**config, "out": run_dir, "data": os.path.abspath(config["data"])}
    config.update(architecture=architecture(config, info), protocol=PROTOCOLS[config["select"]],
                  data_sha256=sha256(config["data"]), dataset=info["dataset"], synthetic=info["synthetic"],
                  command=shlex.join(["python", "model.py", *argv]), keras=keras.__version__,
                  backend=keras.backend.backend(), gpus=gpu_count(),
                  started=datetime.datetime.now().isoformat(timespec="seconds"))
    write_json(os.path.join(run_dir, "config.json"), config)
    return config, {"epochs_done": 0}


def resume_run(run_dir, epochs=None, max_minutes=None):
    config = {**read_config(run_dir), "out": run_dir}  # the directory as named now, wherever we run from
    state_path = os.path.join(run_dir, "state.json")
    if not os.path.exists(state_path) or not os.path.exists(os.path.join(run_dir, "final.keras")):
        raise RunError(f"{run_dir}: no state.json / final.keras yet: nothing to resume, start it again")
    with open(state_path) as f:
        state = json.load(f)
    changes = {k: v for k, v in (("epochs", epochs), ("max_minutes", max_minutes)) if v is not None}
    if changes:
        config.update(changes)
        write_json(os.path.join(run_dir, "config.json"), config)
    state = roll_forward(run_dir, config, state)
    truncate_history(os.path.join(run_dir, "history.csv"), state["epochs_done"])
    return config, state


def roll_forward(run_dir, config, state):
    """A run killed after saving an epoch's final.keras but before writing its state.json has a
    checkpoint one epoch ahead of its state. That epoch did finish (its history row is written
    first), so its state is completed from that row, selected.keras included."""
    final = os.path.join(run_dir, "final.keras")
    if state.get("final_sha256") in (None, sha256(final)):
        return state
    with open(os.path.join(run_dir, "history.csv")) as f:
        rows = list(csv.DictReader(f))
    done = state["epochs_done"]
    if len(rows) <= done:
        raise RunError(f"{run_dir}: final.keras is newer than state.json, but history.csv has no row for epoch "
                       f"{done + 1}: the run cannot be continued consistently; start it again")
    monitor = monitored(config["select"])
    commit_epoch(run_dir, state, done + 1, float(rows[done][monitor]) if monitor else None)
    print(f"{run_dir}: final.keras was saved for epoch {done + 1} but state.json was not: completed from history.csv")
    return state


def truncate_history(path, rows):
    """Drop rows logged after the last saved epoch, so the resumed history has each epoch once."""
    if os.path.exists(path):
        with open(path) as f:
            lines = f.readlines()
        with replacing(path) as tmp, open(tmp, "w") as f:
            f.writelines(lines[:rows + 1])


def train(config, state):
    run_dir = config["out"]
    held_out = HELD_OUT.get(config["select"])
    with PatchFile(config["data"]) as pf:
        info, data = pf.info(), pf.load("train")
        if held_out:
            pf.group(held_out)  # fail now, not after the first epoch
    print(f"{info['dataset']}{' (synthetic)' if info['synthetic'] else ''}: {len(data['label'])} training "
          f"patches x 4 rotations, {info['hsi_bands']} + {info['aux_bands']} bands, {info['num_classes']} classes; "
          f"checkpoint: {PROTOCOLS[config['select']]}")
    make_deterministic(config["seed"] + state["epochs_done"])
    policy = set_precision(config["precision"])
    with distribution_scope():
        if state["epochs_done"]:
            net = keras.saving.load_model(os.path.join(run_dir, "final.keras"))  # weights and optimiser state
        else:
            net = build_model(**config["architecture"])
            compile_model(net, config)
    batches = RotatedPatches(data, config["batch_size"], config["seed"], epoch=state["epochs_done"],
                             reconstruction=config["reconstruction"])
    callbacks = [EpochClock(config.get("max_minutes", 0.0)),
                 keras.callbacks.LearningRateScheduler(lambda e: lr_at(e, config))]
    if held_out:
        callbacks.append(HeldOutAccuracy(config["data"], held_out))
    callbacks.append(RunState(run_dir, state, monitored(config["select"])))
    if keras.backend.backend() == "tensorflow":
        callbacks.append(keras.callbacks.TensorBoard(os.path.join(run_dir, "tensorboard")))
    print(f"dtype policy {policy}, backend {keras.backend.backend()}, GPUs {gpu_count()}, run directory {run_dir}")
    net.fit(batches, epochs=config["epochs"], initial_epoch=state["epochs_done"], callbacks=callbacks,
            shuffle=False, verbose=2 if os.environ.get("CI") else "auto")
    finish(run_dir, state, config)
    return net


def finish(run_dir, state, config):
    if config["select"] == "last":
        shutil.copyfile(os.path.join(run_dir, "final.keras"), os.path.join(run_dir, "selected.keras"))
        state["selected_epoch"] = state["epochs_done"]
    write_json(os.path.join(run_dir, "state.json"), state)
    plot_curves(os.path.join(run_dir, "history.csv"), os.path.join(run_dir, "curves.png"), config)
    done = f"done: {state['epochs_done']} epochs"
    if state["epochs_done"] < config["epochs"]:
        done = (f"stopped at max_minutes after {state['epochs_done']} of {config['epochs']} epochs (go on: "
                f"python model.py --resume {shlex.quote(run_dir)})")
    print(f"{done}; selected.keras is epoch {state.get('selected_epoch')} ({PROTOCOLS[config['select']]}); "
          f"files in {run_dir}; next: python evaluate.py --run {shlex.quote(run_dir)}")


def plot_curves(history_csv, png, config):
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
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
              "test_accuracy": "TEST pixels (authors' protocol: they choose the checkpoint)"}
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


def main(argv=None):
    argv = sys.argv[1:] if argv is None else argv
    config = parse_config(argv)
    try:
        if config.get("resume"):
            config, state = resume_run(config["resume"], config.get("epochs"), config.get("max_minutes"))
        else:
            config, state = new_run(config, argv)
        train(config, state)
    except (PatchFileError, RunError) as e:
        sys.exit(f"model.py: error: {e}")


if __name__ == "__main__":
    main()
