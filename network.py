"""The coupled self-looping network of Fig. 1, built from the layers of layers.py, and predicting with it.

- `build_model`: the multi-output network (class, and the two cross-modal reconstructions).
- `classifier`: the classification path alone, what inference and maps need.
- `load_classifier`: a checkpoint's classification path, in the precision asked for.
- `predict_labels`, `predict_split`, `predict_scene`: the one prediction loop, over patches, a
  patch file's split or every pixel of its scene, a bounded batch at a time.

Hyperparameters reach this module as arguments (`architecture(config, shapes)`), never by
importing model.py.
"""
import time

import keras
import numpy as np
from keras import layers

import devices
import hardware

# Registered here because a checkpoint's compile config names them (averaged_values loads it):
import averaging  # noqa: F401  (AveragedNadam)
import losses  # noqa: F401  (BatchRMSE)
from layers import KERNEL_INIT, Conv2D, CoupledSelfLoopingBlock, CrossModalDecoder, SpectralStem
from layers import conv_algorithm  # noqa: F401  (the process's choice: what a result records)
from layers import set_conv_algorithm as _use_algorithm

PRECISIONS = {
    "auto": "mixed where this machine computes bfloat16 in hardware (a CPU with amx_bf16 or avx512_bf16, "
            "TensorFlow), else float32",
    "float32": "float32 throughout",
    "mixed": "mixed precision: bfloat16 on CPUs, float16 with loss scaling on GPUs; outputs float32",
}
CONV_ALGORITHMS = {
    "auto": "winograd where the network computes in float32 on a CPU under TensorFlow, else direct",
    "direct": "the backend's convolutions (oneDNN on CPUs, cuDNN on GPUs)",
    "winograd": "the 3 x 3 and 5 x 5 'same' convolutions by Winograd's minimal filtering (winograd.py), in float32 "
                "only; direct under mixed precision",
}


def branch(hsi, aux, kernel_size, filters=64, fusion_units=32, coupled=True, self_loop=True, stacked=True,
           bn_momentum=0.99, bn_warmup=False, spectral_stem=True):
    """One coupled self-looping branch of kernel size k: returns (fused 32-vector, HSI 256, aux 256).
    spectral_stem=False (a study, not the paper): the HSI's Conv2D stem alone, as the second modality's."""
    k = kernel_size
    conv = lambda name: Conv2D(filters, k, padding="same", activation="relu",  # noqa: E731
                               kernel_initializer=KERNEL_INIT, name=name)
    x_hsi = conv(f"hsi_stem_k{k}")(SpectralStem(name=f"spectral_stem_k{k}")(hsi) if spectral_stem else hsi)
    x_aux = conv(f"aux_stem_k{k}")(aux)
    block = CoupledSelfLoopingBlock(filters, k, coupled=coupled, self_loop=self_loop, stacked=stacked,
                                    bn_momentum=bn_momentum, bn_warmup=bn_warmup, name=f"coupled_block_k{k}")
    v_hsi, v_aux = block([x_hsi, x_aux])
    fused = layers.Dense(fusion_units, activation="relu", kernel_initializer=KERNEL_INIT, name=f"fusion_k{k}")(
        layers.Concatenate(name=f"concat_k{k}")([v_hsi, v_aux]))
    return fused, v_hsi, v_aux


def build_model(hsi_bands, aux_bands, num_classes, patch_size=11, filters=64, fusion_units=32,
                kernel_sizes=(3, 5), coupled=True, self_loop=True, reconstruction=True, stacked=True, bn_momentum=0.99,
                bn_warmup=False, spectral_stem=True):
    """The network of Fig. 1: inputs {'hsi': (P, P, B), 'aux': (P, P, A)}, outputs
    {'class': softmax over C, 'rec_aux': second modality from HSI features (H -> L),
     'rec_hsi': HSI from second-modality features (L -> H)}; without reconstruction only 'class'."""
    p = patch_size
    hsi = keras.Input((p, p, hsi_bands), name="hsi")
    aux = keras.Input((p, p, aux_bands), name="aux")
    branches = [branch(hsi, aux, k, filters, fusion_units, coupled, self_loop, stacked, bn_momentum, bn_warmup,
                       spectral_stem) for k in kernel_sizes]
    join = lambda xs, name: layers.Concatenate(name=name)(xs) if len(xs) > 1 else xs[0]  # noqa: E731
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
                stacked=config["stacked_streams"], bn_momentum=config["bn_momentum"],
                bn_warmup=config.get("warmup", False), spectral_stem=config.get("spectral_stem", True))


def parse_kernel_sizes(text):
    sizes = tuple(int(k) for k in str(text).split(","))
    if not sizes or any(k < 1 or k % 2 == 0 for k in sizes):
        raise ValueError(f"kernel_sizes must be odd integers separated by commas, got {text!r}")
    return sizes


def resolve_precision(choice, flags=None):
    """(float32 or mixed, why) for a precision choice; 'auto' by this machine (flags: the CPU's, for
    tests). Mixed pays where bfloat16 is computed in hardware, through TensorFlow's oneDNN kernels;
    on an AVX2-only CPU it is emulated and slower, and on the H200 float16 did not pay for the
    stacked build (docs/performance.md)."""
    if choice not in PRECISIONS:
        raise ValueError(f"precision must be one of {', '.join(PRECISIONS)}, got {choice!r}")
    if choice != "auto":
        return choice, "asked for"
    if gpu_count():
        return "float32", "auto on a GPU: float16 did not pay for the stacked build"
    if keras.backend.backend() != "tensorflow":
        return "float32", f"auto under {keras.backend.backend()} on a CPU: its bfloat16 kernels are not oneDNN's"
    unit = hardware.bf16_unit(flags)
    if unit:
        return "mixed", f"auto: this CPU computes bfloat16 in hardware ({unit})"
    return "float32", "auto: this CPU has no bfloat16 hardware (no amx_bf16, no avx512_bf16)"


def resolve_conv_algorithm(choice, precision):
    """(direct or winograd, why) for a convolution algorithm choice, given the precision resolved
    for this process. Winograd pays where float32 convolutions bound the step: on a CPU without
    bfloat16 hardware, oneDNN's are near its peak already and only fewer multiplications help
    (docs/performance.md); with bfloat16 or on a GPU the direct kernels are faster."""
    if choice not in CONV_ALGORITHMS:
        raise ValueError(f"conv_algorithm must be one of {', '.join(CONV_ALGORITHMS)}, got {choice!r}")
    if choice != "auto":
        return choice, "asked for"
    if precision != "float32":
        return "direct", "auto: mixed precision computes with the direct bfloat16/float16 kernels"
    if gpu_count():
        return "direct", "auto on a GPU: its direct kernels are faster"
    if keras.backend.backend() != "tensorflow":
        return "direct", f"auto under {keras.backend.backend()}: Winograd was measured with TensorFlow only"
    return "winograd", "auto: float32 on a CPU, where oneDNN's convolutions bound the step"


def set_conv_algorithm(choice, precision):
    """Make the network's Conv2D layers traced from now on compute as resolve_conv_algorithm
    chooses; returns the algorithm's name."""
    algorithm = resolve_conv_algorithm(choice, resolve_precision(precision)[0])[0]
    _use_algorithm(algorithm)
    return algorithm


def inference_precision(trained_in, asked=None):
    """The precision a checkpoint is scored in: the one asked for ('auto' chosen on this machine),
    else the one it trained in (rundir.training_precision)."""
    return resolve_precision(asked)[0] if asked else trained_in


def set_precision(precision):
    """float32, or mixed precision: bfloat16 on CPUs (AMX/AVX-512 BF16), float16 on GPUs; 'auto' as
    resolve_precision chooses. Returns the dtype policy's name."""
    precision = resolve_precision(precision)[0]
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


def load_classifier(arch, checkpoint_path, precision="float32", averaged=False, algorithm="auto"):
    """The classification path of the network `arch` (build_model's arguments), rebuilt in
    `precision` with the weights of the .keras checkpoint at checkpoint_path: the raw weights, or
    with averaged=True the moving average the optimizer kept beside them (ema > 0). The process's
    dtype policy is restored afterwards; its convolution algorithm is set for the classifier
    (set_conv_algorithm: `algorithm` on this machine, in `precision`)."""
    policy = keras.mixed_precision.dtype_policy()
    set_conv_algorithm(algorithm, precision)
    try:
        average = averaged_values(checkpoint_path) if averaged else None
        set_precision(precision)
        net = build_model(**arch)
        net.load_weights(checkpoint_path)
        if average is not None:
            for var, value in zip(net.trainable_variables, average):
                var.assign(value)
        return classifier(net)
    finally:
        keras.mixed_precision.set_dtype_policy(policy)


def averaged_values(checkpoint_path, saved=None):
    """The averaged weights a checkpoint's optimizer holds, in the order of trainable_variables;
    saved: the checkpoint already loaded."""
    saved = keras.saving.load_model(checkpoint_path) if saved is None else saved
    opt = getattr(saved.optimizer, "inner_optimizer", saved.optimizer)  # under loss scaling
    if not getattr(opt, "use_ema", False):
        raise ValueError(f"{checkpoint_path}: trained without weight averaging (ema 0): it holds no averaged weights")
    values = [np.asarray(keras.ops.convert_to_numpy(v)) for v in opt._model_variables_moving_average]
    keras.mixed_precision.set_dtype_policy("float32")  # load_model may have left the saved policy
    return values


# ----------------------------------------------------------------------------- the prediction loop
def predict_labels(clf, hsi, aux, batch_size=256):
    """Class indices 0..C-1 of patches, batch_size at a time, from the classifier (or the whole model's
    'class' output). predict_on_batch, not predict(): on 2 CPU cores Keras' predict() on the same
    arrays ran 1.7x slower."""
    if devices.replicas_of(clf) > 1:  # predict_on_batch: each batch whole on every TF replica, or unsplit (JAX)
        return predict_sharded(clf, hsi, aux, batch_size)
    labels = [np.zeros(0, np.int64)]  # an empty group gives an empty array
    for i in range(0, len(hsi), batch_size):
        probs = clf.predict_on_batch({"hsi": hsi[i:i + batch_size], "aux": aux[i:i + batch_size]})
        labels.append(np.argmax(np.asarray(probs["class"] if isinstance(probs, dict) else probs), axis=-1))
    return np.concatenate(labels)


def predict_sharded(clf, hsi, aux, batch_size):
    """predict_labels on several devices: Keras' predict splits each batch over them (a
    MirroredStrategy's replicas, a DataParallel's devices). JAX needs every batch to divide evenly,
    so the batch size is rounded up to a multiple of the devices and the patches padded with zeros
    to one; the padding's labels are dropped."""
    n, count = len(hsi), devices.replicas_of(clf)
    if n == 0:
        return np.zeros(0, np.int64)
    pad = -n % count
    if pad:
        hsi, aux = (np.concatenate([a, np.zeros((pad, *a.shape[1:]), a.dtype)]) for a in (hsi, aux))
    probs = clf.predict({"hsi": hsi, "aux": aux}, batch_size=-(-batch_size // count) * count, verbose=0)
    return np.argmax(np.asarray(probs["class"] if isinstance(probs, dict) else probs), axis=-1)[:n]


def predict_split(predict, pf, split, batch_size=256, progress=None, patch_size=None):
    """Class indices 0..C-1 of every pixel of a split of an open PatchFile, its patches read (or, for
    the test split, cut from the scene) a batch at a time. predict: a classifier, or a function
    (hsi, aux) -> labels (the centre-pixel baselines, patch_size 1); progress: a tqdm-like bar, or None."""
    predict = as_predictor(predict, batch_size)
    out = np.zeros(len(pf.labels(split)), np.int32)
    for idx, x in pf.batches(split, batch_size, patch_size=patch_size):
        out[idx] = predict(x["hsi"], x["aux"])
        if progress is not None:
            progress.update(len(idx))
    return out


def predict_scene(predict, pf, patch_size, batch_size=256, progress=None):
    """(H, W) map of predicted labels 1..C for every pixel of the patch file's scene, labelled or
    not; patches of patch_size (1 for the centre-pixel baselines)."""
    predict = as_predictor(predict, batch_size)
    h, w = pf.shape
    out = np.zeros((h, w), np.uint8 if pf.info()["num_classes"] < 256 else np.int16)
    for rows, cols, x in pf.scene_batches(batch_size, patch_size):
        out[rows, cols] = predict(x["hsi"], x["aux"]) + 1
        if progress is not None:
            progress.update(len(rows))
    return out


def predict_test_timed(predict, pf, batch_size=256, patch_size=None):
    """predict_split of the test split under a progress bar; returns (labels 0..C-1, seconds)."""
    run = lambda bar: predict_split(predict, pf, "test", batch_size, bar, patch_size)  # noqa: E731
    return timed(run, len(pf.labels("test")), "test pixels", mininterval=2, leave=False)


def predict_scene_timed(predict, pf, patch_size, batch_size=256):
    """predict_scene under a progress bar; returns ((H, W) labels 1..C, seconds)."""
    run = lambda bar: predict_scene(predict, pf, patch_size, batch_size, bar)  # noqa: E731
    return timed(run, pf.shape[0] * pf.shape[1], "map", mininterval=5, leave=True)


def timed(run, total, desc, mininterval, leave):
    """run(bar) under a tqdm bar counting `total` pixels (it shows the time left); (result, seconds)."""
    from tqdm import tqdm
    t0 = time.time()
    with tqdm(total=total, desc=desc, unit="px", unit_scale=True, mininterval=mininterval, leave=leave) as bar:
        out = run(bar)
    return out, time.time() - t0


def as_predictor(predict, batch_size):
    """A Keras classifier becomes (hsi, aux) -> labels; a function is used as it is."""
    if isinstance(predict, keras.Model):
        clf = predict
        return lambda hsi, aux: predict_labels(clf, hsi, aux, batch_size)
    return predict
