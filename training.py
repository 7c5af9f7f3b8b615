"""Training the network: the joint loss, the paper's learning-rate schedule, the four-rotation input
pipeline, and the callbacks that score a held-out split and time each epoch.

The run directory's files (history, checkpoints, state) are rundir.py's; model.py puts the pieces
together.
"""
import contextlib
import math
import os
import time

import keras
import numpy as np

import devices
import rundir
from averaging import AveragedNadam
from losses import BatchRMSE
from network import classifier, predict_split
from patchfile import PatchFile
from rotations import epoch_order, steps_per_epoch


def compile_model(net, config):
    """Nadam on the joint objective: cross-entropy + lambda1 RMSE(H -> L) + lambda2 RMSE(L -> H).
    With ema > 0 the optimizer also keeps an exponential moving average of the weights, warmed up
    (averaging.py) when config["warmup"] is on."""
    losses = {"class": keras.losses.SparseCategoricalCrossentropy()}
    weights = {"class": 1.0}
    if config["reconstruction"]:
        losses.update(rec_aux=BatchRMSE(), rec_hsi=BatchRMSE())
        weights.update(rec_aux=config["lambda1"], rec_hsi=config["lambda2"])
    ema = config.get("ema", 0.0)
    optimizer = AveragedNadam(config["lr"], use_ema=ema > 0, ema_momentum=ema or 0.99,
                              ema_warmup=bool(config.get("warmup", False)))
    net.compile(optimizer=optimizer, loss=losses, loss_weights=weights,
                metrics={"class": [keras.metrics.SparseCategoricalAccuracy(name="accuracy")]})


def lr_at(epoch, config):
    """The paper's schedule: constant for lr_constant_epochs, then times exp(-lr_decay) per epoch."""
    return config["lr"] * math.exp(-config["lr_decay"] * max(0, epoch - config["lr_constant_epochs"] + 1))


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
        self._order = (None, None)  # (epoch, its order), replaced whole: threads never see a mixed pair

    def __len__(self):
        return steps_per_epoch(len(self.label), self.batch_size)

    def order(self, epoch):
        cached = self._order
        if cached[0] != epoch:
            cached = self._order = (epoch, epoch_order(self.seed, epoch, len(self.label)))
        return cached[1]

    def __getitem__(self, i):
        return self.batch(self.epoch, i)

    def batch(self, epoch, i):
        """Batch i of epoch `epoch`: (x, y) as fit takes them."""
        picks = self.order(epoch)[i * self.batch_size:(i + 1) * self.batch_size]
        patch, turns = picks // 4, picks % 4
        hsi, aux = self.hsi[patch], self.aux[patch]  # fancy indexing: fresh arrays we may rotate in place
        for t in (1, 2, 3):
            sel = turns == t
            hsi[sel] = np.rot90(hsi[sel], t, axes=(1, 2))
            aux[sel] = np.rot90(aux[sel], t, axes=(1, 2))
        x = {"hsi": hsi, "aux": aux}
        y = {"class": self.label[patch]}
        if self.reconstruction:  # copies: targets sharing the inputs' buffers made two runs of one seed
            # differ under a MirroredStrategy (docs/performance.md)
            y.update(rec_aux=aux.copy(), rec_hsi=hsi.copy())
        return x, y

    def on_epoch_end(self):
        self.epoch += 1

    def as_tf_dataset(self):
        """The same batches as a tf.data pipeline, for several TensorFlow replicas (MirroredStrategy
        splits each global batch over them). Each pass is the epoch `self.epoch` held when it began:
        Keras reads one batch of a PyDataset to build a distributed model, which would shift the
        PyDataset's stream; a pass of this pipeline starts afresh at batch 0."""
        import tensorflow as tf

        def passes():
            epoch = self.epoch
            for i in range(len(self)):
                yield self.batch(epoch, i)

        spec = tf.nest.map_structure(lambda a: tf.TensorSpec((None, *a.shape[1:]), a.dtype), self.batch(self.epoch, 0))
        dataset = tf.data.Dataset.from_generator(passes, output_signature=spec)
        options = tf.data.Options()  # one worker: no sharding of the files between workers to rewrite
        options.experimental_distribute.auto_shard_policy = tf.data.experimental.AutoShardPolicy.OFF
        return dataset.apply(tf.data.experimental.assert_cardinality(len(self))).prefetch(2).with_options(options)


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
        with PatchFile(self.path) as pf, averaged_weights(self.model):
            labels = predict_split(self.classifier, pf, self.split, self.batch_size)
            logs[f"{self.split}_accuracy"] = float(np.mean(labels == pf.labels(self.split)))


class TestTrace(keras.callbacks.Callback):
    """For studies only (model.py's trace_test): the TEST accuracy after every epoch, of the raw
    weights ('test_accuracy_raw') and, with averaging on, of the averaged ones
    ('test_accuracy_averaged'). No protocol selects by these columns."""

    def __init__(self, path, batch_size=256):
        super().__init__()
        self.path, self.batch_size = path, batch_size

    def on_train_begin(self, logs=None):
        self.classifier = classifier(self.model)

    def on_epoch_end(self, epoch, logs=None):
        with PatchFile(self.path) as pf:
            truth = pf.labels("test")
            logs["test_accuracy_raw"] = self.score(pf, truth)
            with averaged_weights(self.model) as averaged:
                if averaged:
                    logs["test_accuracy_averaged"] = self.score(pf, truth)

    def score(self, pf, truth):
        return float(np.mean(predict_split(self.classifier, pf, "test", self.batch_size) == truth))


def refit_batch_norm(net, data, batches=50, batch_size=256):
    """Re-estimate every batch-norm layer's moving statistics for the weights now in the model: the
    running mean of the statistics of `batches` batches of training patches (forward passes in
    training mode, momentum 1 - 1/(i + 1) at the i-th). Trainable weights are unchanged."""
    norms = [layer for layer in net._flatten_layers() if hasattr(layer, "moving_mean")]
    kept = [(layer.momentum, getattr(layer, "warmup", False)) for layer in norms]
    order = np.random.default_rng(0).permutation(len(data["label"]))
    try:
        for i in range(min(batches, -(-len(order) // batch_size))):
            pick = np.sort(order[i * batch_size:(i + 1) * batch_size])
            for layer in norms:
                layer.momentum, layer.warmup = i / (i + 1), False  # i = 0 takes the first batch's statistics whole
            net({"hsi": data["hsi"][pick], "aux": data["aux"][pick]}, training=True)
    finally:
        for layer, (momentum, warmup) in zip(norms, kept):
            layer.momentum, layer.warmup = momentum, warmup


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
    """Keeps the run directory resumable after every epoch (rundir.end_epoch)."""

    def __init__(self, run_dir, state, monitor=None):
        super().__init__()
        self.run_dir, self.state, self.monitor = run_dir, state, monitor

    def on_epoch_end(self, epoch, logs=None):
        rundir.end_epoch(self.run_dir, self.model, self.state, epoch, logs, self.monitor)


def averaging_note(config, n_patches):
    """A warning when the average spans too much of a short run: with ema m it reaches ~1/(1-m) steps
    back, and a run of fewer than five times that keeps much of its first, untrained weights. With the
    warm-up on (averaging.py) no run is too short."""
    ema = config.get("ema", 0.0)
    steps = config["epochs"] * steps_per_epoch(n_patches, config["batch_size"])
    if ema and not config.get("warmup", False) and steps < 5 / (1 - ema):
        return (f"note: ema {ema:g} averages over about {1 / (1 - ema):.0f} steps, but this run has only {steps}: "
                f"the average keeps much of the early weights; use more epochs or --ema 0 (off)")
    return None


@contextlib.contextmanager
def averaged_weights(net):
    """With weight averaging on (the optimizer's use_ema), the averaged weights in the model for the
    block, then the raw ones back; checkpoints keep the raw weights and the average beside them in
    the optimizer's state, so that a resumed run continues exactly."""
    opt = getattr(net, "optimizer", None)
    if not getattr(opt, "use_ema", False) or not getattr(opt, "built", False):
        yield False
        return
    raw = [v.numpy() for v in net.trainable_variables]
    for v, avg in zip(net.trainable_variables, opt._model_variables_moving_average):
        v.assign(avg.numpy())  # a copy: under JAX, predict donates the model's buffers, which must not be the average's
    try:
        yield True
    finally:
        for v, value in zip(net.trainable_variables, raw):
            v.assign(value)


def callbacks(config, held_out, max_minutes, monitor, state):
    """In this order: the clock, the schedule, the held-out score, then the run directory's commit
    (which records what the others logged)."""
    out = [EpochClock(max_minutes), keras.callbacks.LearningRateScheduler(lambda e: lr_at(e, config))]
    if held_out:
        out.append(HeldOutAccuracy(config["data"], held_out))
    if config.get("trace_test"):
        out.append(TestTrace(config["data"]))
    out.append(RunState(config["out"], state, monitor))
    if keras.backend.backend() == "tensorflow":
        out.append(keras.callbacks.TensorBoard(os.path.join(config["out"], "tensorboard")))
    return out


def fit(net, data, config, initial_epoch, callback_list):
    """Epochs initial_epoch..config['epochs'] of the four-rotation batches, epoch e in the order
    epoch_order(seed, e): under JAX through fastpath.py (one compiled epoch on the device), else
    through Keras' fit."""
    verbose = 2 if os.environ.get("CI") else "auto"
    if keras.backend.backend() == "jax":
        import fastpath
        if fastpath.applies(config):
            return fastpath.fit(net, data, config, initial_epoch, config["epochs"], callback_list, config["seed"],
                                verbose=verbose)
    batches = RotatedPatches(data, config["batch_size"], config["seed"], epoch=initial_epoch,
                             reconstruction=config["reconstruction"])
    stream = batches.as_tf_dataset() if devices.replicas_of(net) > 1 else batches
    net.fit(stream, epochs=config["epochs"], initial_epoch=initial_epoch,
            callbacks=[EpochOrder(batches), *callback_list], shuffle=False, verbose=verbose)



class EpochOrder(keras.callbacks.Callback):
    """Sets the batches' epoch at each epoch's start, before Keras starts reading them: fit also
    calls the dataset's on_epoch_end once before the first epoch, which would shift the order."""

    def __init__(self, batches):
        super().__init__()
        self.batches = batches

    def on_epoch_begin(self, epoch, logs=None):
        self.batches.epoch = epoch
