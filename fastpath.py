"""A fast training and prediction path under the JAX backend (one device, or data parallel over several).

Keras' `fit` under JAX is bound by host work on a fast accelerator: every step slices a batch on
the host, ships it, and returns to Python (`steps_per_execution` is a host loop too). Here:

- the training patches go to the device once per `fit` call; each epoch ships only its order
  (`rotations.epoch_order`, int32), and the batches are gathered and turned on the device;
- on an accelerator, an epoch's full batches run as ONE jitted `jax.lax.scan` over Keras' own
  stateless `train_step` (the very function `fit` jits: same losses, loss scaling, optimizer
  update, EMA, batch-norm statistics and metrics), the last partial batch as one more step in the
  same program. On the CPU the steps run as a host loop of that jitted step instead: XLA:CPU runs
  a loop body 1.5 to 3 times slower than the same step compiled alone (measured on 1 and 2 cores),
  and a CPU has no dispatch latency to hide;
- the state is written back into the Keras variables at the end of each epoch, so callbacks,
  `net.save` and `classifier(net)` see a normal model;
- data parallel on several devices, under Keras' own `keras.distribution.DataParallel`
  (devices.distribution_scope sets it): its mesh and layouts, not another. The training arrays
  and the order are replicated on every device (each gathers from all patches), each step's batch
  is split along its first axis over the mesh's data axis (the distribution's get_data_layout),
  and the variables keep the layouts the distribution gave them (replicated). jit compiles ONE
  global program over the mesh: batch-norm statistics, losses and gradients are of the global
  batch, the mathematics of one device (XLA adds the cross-device sums).

`fit(...)` is a drop-in for `net.fit(RotatedPatches(...), epochs=, initial_epoch=, callbacks=,
shuffle=False)`. Prediction: `cut_patches_device` (equal to `patchfile.cut_patches`),
`predict_pixels`, `predict_split_device` and `predict_scene_device` keep the scene on the device
(in bands of rows when it is over a byte budget) and cut the patches there.

JAX is imported only inside the functions: importing this module costs nothing under TensorFlow.
"""
import numpy as np

import keras

from rotations import epoch_order, rotation_index, steps_per_epoch

FAST_PATH = ("auto", "off")  # config["fast_path"]
SCENE_BUDGET = 1 << 30  # bytes of scene (both modalities) held on the device at a time
CALL_BATCHES = 64  # prediction batches per device call (one lax.map) where the loops run on the device


def applies(config):
    """Whether `fit` below replaces Keras' fit: the JAX backend, with no distribution (one device)
    or data parallel (keras.distribution.DataParallel; not ModelParallel, whose sharded variables
    this path does not lay out), and config["fast_path"] (default "auto") not "off"."""
    choice = config.get("fast_path", "auto")
    if choice not in FAST_PATH:
        raise ValueError(f"fast_path must be one of {', '.join(FAST_PATH)}, got {choice!r}")
    if choice == "off" or keras.backend.backend() != "jax":
        return False
    return keras.distribution.distribution() is None or data_parallel() is not None


# ----------------------------------------------------------------------------- layouts
def data_parallel():
    """The keras.distribution.DataParallel in force, or None (then everything is on one device)."""
    dist = keras.distribution.distribution()
    return dist if isinstance(dist, keras.distribution.DataParallel) else None


def replicated(value, dist):
    """`value` placed whole on every device of the distribution's mesh (on the default device
    without one): the training arrays and the epoch's order, which every device gathers from."""
    import jax
    if dist is None:
        return jax.device_put(value)
    return jax.device_put(value, keras.distribution.TensorLayout([None] * np.ndim(value), dist.device_mesh).backend_layout)


def batch_sharded(batch, dist):
    """Inside the step: each array of the batch split along its first (batch) axis over the mesh's
    data axis, as the distribution lays out data (get_data_layout; a sharding constraint under jit).
    A batch that does not divide by the devices is padded by XLA, not refused."""
    if dist is None:
        return batch
    import jax
    return jax.tree.map(lambda t: keras.distribution.distribute_tensor(t, dist.get_data_layout(t.shape)), batch)


def state_shardings(net, dist):
    """The shardings of the step's state (trainable, non-trainable, optimizer, metrics variables,
    _get_jax_state's order) as the distribution lays out each variable: under DataParallel
    replicated, or the variable's own layout where it has one. None without a distribution."""
    if dist is None:
        return None
    groups = (net.trainable_variables, net.non_trainable_variables, net.optimizer.variables, net.metrics_variables)
    return tuple([backend_layout(dist.get_variable_layout(v)) for v in vs] for vs in groups)


def backend_layout(layout):
    """A jax.sharding.Sharding for a Keras TensorLayout (a variable's layout may be one already)."""
    return layout.backend_layout if isinstance(layout, keras.distribution.TensorLayout) else layout


# ----------------------------------------------------------------------------- training
def gather_turned(patches, picks, index):
    """Patches `picks // 4` of (N, P, P, C) `patches`, each turned (picks % 4) x 90 degrees: one
    gather on the device. index: rotation_index(P)."""
    import jax.numpy as jnp
    n, p, _, c = patches.shape
    flat = jnp.reshape(patches, (n, p * p, c))
    out = flat[(picks // 4)[:, None], index[picks % 4]]  # (batch, P * P, C)
    return jnp.reshape(out, (picks.shape[0], p, p, c))


def device_batch(arrays, picks, reconstruction, dist=None):
    """The (x, y) batch RotatedPatches gives for these picks, built on the device; under a
    DataParallel `dist` split over its devices along the batch axis (batch_sharded)."""
    hsi, aux, label, index = arrays
    h, a = gather_turned(hsi, picks, index), gather_turned(aux, picks, index)
    y = {"class": label[picks // 4]}
    if reconstruction:
        y.update(rec_aux=a, rec_hsi=h)
    return batch_sharded(({"hsi": h, "aux": a}, y), dist)


def use_scan():
    """Whether the loops over batches run on the device (lax.scan, lax.map): not on the CPU, where
    XLA runs a loop body slower than the same step compiled alone."""
    import jax
    return jax.default_backend() != "cpu"


def epoch_function(net, batch_size, reconstruction, scan=True, dist=None):
    """(state, arrays, order) -> state: one epoch of Keras' train_step over the batches of `order`.
    scan: the full batches as one jitted lax.scan and the last partial batch (if any) as one more
    step, all one program; otherwise a host loop of one jitted step per batch. dist: a
    DataParallel: each batch sharded over its mesh, the state kept in the variables' layouts (as
    Keras' own jitted train_step keeps it, by out_shardings)."""
    import jax
    shardings = state_shardings(net, dist)

    def jit(function):
        return jax.jit(function, donate_argnums=0, out_shardings=shardings)

    def step(state, arrays, picks):
        _, new = net.train_step(state, device_batch(arrays, picks, reconstruction, dist))
        # the carry keeps its exact structure and dtypes (scan refuses a list turned tuple)
        return tuple([jax.lax.convert_element_type(v, old.dtype) for v, old in zip(vs, olds)]
                     for vs, olds in zip(new, state))

    def epoch(state, arrays, order):
        full = order.shape[0] // batch_size * batch_size
        if full:
            def body(carry, picks):
                return step(carry, arrays, picks), None
            state, _ = jax.lax.scan(body, state, order[:full].reshape(-1, batch_size))
        if full < order.shape[0]:
            state = step(state, arrays, order[full:])
        return state

    if scan:
        return jit(epoch)
    step_at = jit(lambda state, arrays, order, start: step(
        state, arrays, jax.lax.dynamic_slice_in_dim(order, start, batch_size)))
    tail = jit(lambda state, arrays, order: step(state, arrays, order[order.shape[0] // batch_size * batch_size:]))

    def loop(state, arrays, order):
        full = order.shape[0] // batch_size * batch_size
        for start in range(0, full, batch_size):
            state = step_at(state, arrays, order, start)
        return tail(state, arrays, order) if full < order.shape[0] else state

    return loop


def fit(net, data, config, initial_epoch, epochs, callbacks, seed, verbose="auto", scan=None):
    """Train the compiled Keras model `net` as net.fit(RotatedPatches(data, config["batch_size"],
    seed, epoch=initial_epoch, reconstruction=config["reconstruction"]), epochs=epochs,
    initial_epoch=initial_epoch, callbacks=callbacks, shuffle=False, verbose=verbose) is meant to:
    epoch e trains on the batches of rotations.epoch_order(seed, e) in order, with the same
    train_step, callbacks and logs. (Keras' fit on RotatedPatches itself is shifted from that order
    under JAX: it calls the dataset's on_epoch_end once before the first epoch, and the prefetching
    workers of a fresh model drop the batch its build consumed.) scan: see epoch_function; None
    chooses by device (use_scan). Under a keras.distribution.DataParallel (set before the model was
    built or loaded, as devices.distribution_scope does) the steps run data parallel over its
    mesh (see the module's docstring): the same mathematics as one device, to float rounding.
    Returns net.history."""
    import jax
    from keras.src.callbacks import CallbackList
    from keras.src.optimizers import Optimizer


    net._assert_compile_called("fit")
    batch_size, reconstruction = int(config["batch_size"]), bool(config.get("reconstruction", True))
    hsi = np.asarray(data["hsi"], np.float32)
    aux = np.asarray(data["aux"], np.float32)
    label = np.asarray(data["label"]).astype("int32")
    n, p = len(label), hsi.shape[1]
    steps = steps_per_epoch(n, batch_size)
    # build the model, its losses, metrics and optimizer as fit does (shapes only)
    first = {"hsi": hsi[:batch_size], "aux": aux[:batch_size]}
    y = {"class": label[:batch_size]}
    if reconstruction:
        y.update(rec_aux=first["aux"], rec_hsi=first["hsi"])
    net._symbolic_build(data_batch=(first, y))
    dist = data_parallel()
    arrays = tuple(replicated(a, dist) for a in (hsi, aux, label, rotation_index(p)))  # once
    run_epoch = epoch_function(net, batch_size, reconstruction, use_scan() if scan is None else scan, dist)
    shardings = state_shardings(net, dist)

    if not isinstance(callbacks, CallbackList):
        callbacks = CallbackList(callbacks, add_history=True, add_progbar=verbose != 0, verbose=verbose,
                                 epochs=epochs, steps=steps, model=net)
    net.stop_training = False
    training_logs, training_finished = {}, False
    callbacks.on_train_begin()
    initial_epoch = net._initial_epoch or initial_epoch
    try:
        for epoch in range(initial_epoch, epochs):
            net.reset_metrics()
            callbacks.on_epoch_begin(epoch)  # the learning-rate scheduler assigns the rate here
            callbacks.on_train_batch_begin(0)
            order = replicated(epoch_order(seed, epoch, n).astype(np.int32), dist)
            # the variables' current values (after the callbacks); the step donates these buffers
            state = net._get_jax_state(trainable_variables=True, non_trainable_variables=True,
                                       optimizer_variables=True, metrics_variables=True)
            if shardings is not None:  # in their layouts already when built under the distribution: no copy
                state = jax.device_put(state, shardings)
            net._jax_state_synced = False
            state = run_epoch(state, arrays, order)
            net._jax_state = dict(zip(("trainable_variables", "non_trainable_variables", "optimizer_variables",
                                       "metrics_variables"), state))
            net.jax_state_sync()  # back into the Keras variables
            net._jax_state = None  # (the next epoch donates these buffers: nothing may sync them again)
            logs = net.get_metrics_result()
            callbacks.on_train_batch_end(steps - 1, logs)
            epoch_logs = dict(net._get_metrics_result_or_logs(logs))
            callbacks.on_epoch_end(epoch, epoch_logs)
            training_logs = epoch_logs
            if net.stop_training:
                break
        training_finished = True
    finally:
        net.jax_state_sync()
        if isinstance(net.optimizer, Optimizer) and epochs > 0:
            net.optimizer.finalize_variable_values(net.trainable_weights)  # EMA weights in, as fit does
        if training_finished:
            callbacks.on_train_end(logs=training_logs)
        net._jax_state = None
    return net.history


# ----------------------------------------------------------------------------- prediction
def cut_patches_device(scene, coords, patch_size):
    """(N, P, P, C) float32 patches of an (H, W, C) scene, centred on coords (N, 2) (row, col),
    zero outside the scene: patchfile.cut_patches, on the device (a gather; no padded copy of the
    scene). Works inside jit; concrete coords outside the scene are refused as cut_patches does."""
    import jax.numpy as jnp
    if isinstance(coords, np.ndarray) or isinstance(coords, (list, tuple)):
        coords = np.asarray(coords).reshape(-1, 2)
        h, w = scene.shape[:2]
        if len(coords) and (coords.min() < 0 or coords[:, 0].max() >= h or coords[:, 1].max() >= w):
            raise ValueError(f"coords outside the {h} x {w} scene")
    scene, coords = jnp.asarray(scene), jnp.reshape(jnp.asarray(coords), (-1, 2))
    h, w = scene.shape[:2]
    offsets = jnp.arange(patch_size) - patch_size // 2
    rows, cols = coords[:, :1] + offsets, coords[:, 1:] + offsets  # (N, P) each
    inside = ((rows >= 0) & (rows < h))[:, :, None] & ((cols >= 0) & (cols < w))[:, None, :]
    patches = scene[jnp.clip(rows, 0, h - 1)[:, :, None], jnp.clip(cols, 0, w - 1)[:, None, :]]
    return jnp.where(inside[..., None], patches, 0).astype(jnp.float32)


def as_classifier(model):
    """The classification path: the model itself, or classifier(model) for the multi-output net."""
    if isinstance(model.output, dict):
        from network import classifier
        return classifier(model)
    return model


def label_function(clf, patch_size, probabilities=False, scan=True, dist=None):
    """jit(trainable, non_trainable, hsi, aux, coords (batches, batch, 2)) -> labels (batches, batch)
    (or the class probabilities, (batches, batch, C)), patches cut on the device: a lax.map over
    the batches, or (scan=False) one batch, coords (1, batch, 2). dist: a DataParallel: each
    batch's pixels split over its devices (the scene and weights replicated on each)."""
    import jax
    import jax.numpy as jnp

    def one(trainable, non_trainable, hsi, aux, c):
        c = batch_sharded(c, dist)  # each device cuts and classifies its share of the batch
        x = {"hsi": cut_patches_device(hsi, c, patch_size), "aux": cut_patches_device(aux, c, patch_size)}
        probs, _ = clf.stateless_call(trainable, non_trainable, x, training=False)
        return probs.astype(jnp.float32) if probabilities else jnp.argmax(probs, axis=-1).astype(jnp.int32)

    if scan:
        return jax.jit(lambda t, n, hsi, aux, coords: jax.lax.map(lambda c: one(t, n, hsi, aux, c), coords))
    return jax.jit(lambda t, n, hsi, aux, coords: one(t, n, hsi, aux, coords[0])[None])


def band_rows(shape, bands, patch_size, budget_bytes):
    """Scene rows per band (context rows excluded) for a band of both modalities within the budget;
    the whole height when the whole scene fits."""
    h, w = shape
    row_bytes = 4 * w * sum(bands)
    if h * row_bytes <= budget_bytes:
        return h
    return max(1, budget_bytes // row_bytes - 2 * (patch_size // 2))


def predict_pixels(clf, scene, coords, patch_size, batch_size=256, budget_bytes=SCENE_BUDGET, progress=None,
                   probabilities=False, scan=None):
    """Class indices 0..C-1 (or, with probabilities=True, the (N, C) float32 class probabilities) of
    the pixels at coords (N, 2) (row, col) of scene {"hsi": (H, W, B), "aux": (H, W, A)} (NumPy
    arrays or HDF5 datasets), patches of patch_size cut on the device.
    The scene goes to the device whole if it fits in budget_bytes, else one band of rows at a time
    (plus patch_size // 2 rows of context each side; the last band is zero-filled to the same
    shape, which is the scene's zero border, so every band runs the same compiled program).
    scan: see label_function; None chooses by device (use_scan). Under a DataParallel, each batch is
    split over its devices (label_function), whose weights may come from any device."""
    clf = as_classifier(clf)
    coords = np.asarray(coords).reshape(-1, 2)
    (h, w), r = scene["hsi"].shape[:2], patch_size // 2
    classes = clf.output.shape[-1]
    out = np.zeros((len(coords), classes), np.float32) if probabilities else np.zeros(len(coords), np.int32)
    if not len(coords):
        return out
    if coords.min() < 0 or coords[:, 0].max() >= h or coords[:, 1].max() >= w:
        raise ValueError(f"coords outside the {h} x {w} scene")
    rows = band_rows((h, w), [scene[m].shape[-1] for m in ("hsi", "aux")], patch_size, budget_bytes)
    height = min(h, rows + 2 * r) if rows < h else h
    scan = use_scan() if scan is None else scan
    dist = data_parallel()
    labels = label_function(clf, patch_size, probabilities, scan, dist)
    state = ([v.value for v in clf.trainable_variables], [v.value for v in clf.non_trainable_variables])
    if dist is not None:  # on every device (no copy where the distribution laid them out already)
        state = tuple([replicated(v, dist) for v in vs] for vs in state)
    order = np.argsort(coords[:, 0], kind="stable")
    starts = np.searchsorted(coords[order, 0], np.arange(0, h + rows, rows))
    for b, top in enumerate(range(0, h, rows)):
        idx = order[starts[b]:starts[b + 1]]
        if not len(idx):
            continue
        lo = max(0, top - r) if rows < h else 0
        band = {}
        for m in ("hsi", "aux"):
            block = np.asarray(scene[m][lo:min(h, lo + height)], np.float32)
            if len(block) < height:  # rows below the scene: its zero border
                block = np.concatenate([block, np.zeros((height - len(block), *block.shape[1:]), np.float32)])
            band[m] = replicated(block, dist)
        local = (coords[idx] - np.array([lo, 0])).astype(np.int32)
        # batches per call: CALL_BATCHES, fewer (a power of two: few compilations) for fewer pixels
        per_call = min(CALL_BATCHES, 1 << int(np.ceil(np.log2(-(-len(idx) // batch_size))))) if scan else 1
        got = []
        for start in range(0, len(idx), per_call * batch_size):  # dispatched asynchronously
            part = np.zeros((per_call * batch_size, 2), np.int32)  # the last call padded with pixel (0, 0)
            part[:len(local[start:start + per_call * batch_size])] = local[start:start + per_call * batch_size]
            got.append(labels(*state, band["hsi"], band["aux"], part.reshape(per_call, batch_size, 2)))
        out[idx] = np.concatenate([np.asarray(g).reshape(-1, *out.shape[1:]) for g in got])[:len(idx)]
        if progress is not None:
            progress.update(len(idx))
    return out


def predict_split_device(clf, pf, split, batch_size=256, budget_bytes=SCENE_BUDGET, progress=None):
    """network.predict_split on the device: class indices 0..C-1 of every pixel of a split of an
    open PatchFile, in the split's order, its patches cut from the scene on the device (the stored
    train and val patches were cut from the same scene, so they are the same patches)."""
    scene = {m: pf.f["scene"][m] for m in ("hsi", "aux")}
    return predict_pixels(clf, scene, pf.coords(split), pf.patch_size, batch_size, budget_bytes, progress)


def predict_scene_device(clf, pf, patch_size=None, batch_size=256, budget_bytes=SCENE_BUDGET, progress=None):
    """network.predict_scene on the device: the (H, W) map of predicted labels 1..C of every pixel."""
    h, w = pf.shape
    scene = {m: pf.f["scene"][m] for m in ("hsi", "aux")}
    pixel = np.arange(h * w)
    coords = np.stack([pixel // w, pixel % w], 1)
    labels = predict_pixels(clf, scene, coords, patch_size or pf.patch_size, batch_size, budget_bytes, progress)
    return (labels + 1).reshape(h, w).astype(np.uint8 if pf.info()["num_classes"] < 256 else np.int16)
