"""The authors' graph (Fig. 1) written in plain Keras, as a user without this project would: Keras'
own layers and losses, fed NumPy arrays by fit. benchmark.py's reference for model.py's speed;
tests/test_benchmark.py checks it is our network (same kernels, parameter count, outputs) fed our
rotated batches."""
import keras
import numpy as np

import network
from layers import spectral_grid
from rotations import epoch_order


class NumpyBatches:
    """The first `batches` batches of epoch 0's four-rotation order, turned once into NumPy arrays, for
    keras_reference's fit (what a user's script feeds Keras); fit(x, y) slices them itself."""

    def __init__(self, train, batch_size, batches):
        picks = epoch_order(0, 0, len(train["label"]))[:batch_size * batches]
        patch, turns = picks // 4, picks % 4
        self.x = {m: np.stack([np.rot90(train[m][i], t) for i, t in zip(patch, turns)]) for m in ("hsi", "aux")}
        self.y = {"class": train["label"][patch].astype("int32"), "rec_aux": self.x["aux"], "rec_hsi": self.x["hsi"]}
        self.batch_size, self.used = batch_size, 0

    def fit(self, net, n, callbacks=()):
        """fit on the next n batches of the arrays."""
        part = slice(self.used * self.batch_size, (self.used + n) * self.batch_size)
        self.used += n
        net.fit({m: a[part] for m, a in self.x.items()}, {m: a[part] for m, a in self.y.items()},
                batch_size=self.batch_size, epochs=1, shuffle=False, verbose=0, callbacks=list(callbacks))


def keras_reference(info, config):
    """The authors' graph (Fig. 1) as a user writes it in plain Keras, without this project's layers:
    the spectral stem as Reshape and Conv3D, shared Conv2D layers called on each stream, a Keras
    BatchNormalization per application and stream, Add and Concatenate, Keras' own losses.
    Returns (compiled model, classification path)."""
    L, ops = keras.layers, keras.ops
    p, bands, k_aux, filters = info["patch_size"], info["hsi_bands"], info["aux_bands"], config["filters"]
    side = spectral_grid(bands)
    hsi, aux = keras.Input((p, p, bands), name="hsi"), keras.Input((p, p, k_aux), name="aux")
    cube = L.Reshape((p, p, side, side))(L.Lambda(lambda x: ops.pad(x, [[0, 0], [0, 0], [0, 0], [0, side * side - bands]]))(hsi))
    fused, v_hsi, v_aux = [], [], []
    for k in network.parse_kernel_sizes(config["kernel_sizes"]):  # each branch has its own spectral stem
        spectral = L.Reshape((p, p, side * 12))(L.Conv3D(12, 3, padding="same", activation="relu")(cube))
        conv = lambda: L.Conv2D(filters, k, padding="same", activation="relu")  # noqa: E731
        shared = [conv() for _ in range(4)]
        vectors = [coupled_stream(x0, shared, config["bn_momentum"]) for x0 in (conv()(spectral), conv()(aux))]
        v_hsi.append(vectors[0])
        v_aux.append(vectors[1])
        fused.append(L.Dense(config["fusion_units"], activation="relu")(L.Concatenate()(vectors)))
    join = lambda xs: L.Concatenate()(xs) if len(xs) > 1 else xs[0]  # noqa: E731
    label = L.Dense(info["num_classes"], activation="softmax", dtype="float32", name="class")(join(fused))
    outputs = {"class": label, "rec_aux": decoder(join(v_hsi), k_aux, p, "rec_aux"),
               "rec_hsi": decoder(join(v_aux), bands, p, "rec_hsi")}
    net = keras.Model({"hsi": hsi, "aux": aux}, outputs)
    rmse = lambda y, y_hat: ops.sqrt(ops.mean(ops.square(ops.cast(y, y_hat.dtype) - y_hat)))  # noqa: E731
    net.compile(keras.optimizers.Nadam(config["lr"]),
                loss={"class": "sparse_categorical_crossentropy", "rec_aux": rmse, "rec_hsi": rmse},
                loss_weights={"class": 1.0, "rec_aux": config["lambda1"], "rec_hsi": config["lambda2"]})
    return net, keras.Model(net.inputs, label)


def coupled_stream(x0, shared, momentum):
    """One stream through a coupled self-looping block: forward stage, then looped stage (layers.py's equations)."""
    L = keras.layers
    f = lambda i, z: L.BatchNormalization(momentum=momentum)(shared[i](z))  # noqa: E731
    y, acc = [], x0
    for i in range(4):
        y.append(f(i, acc))
        acc = L.Add()([acc, y[i]]) if i < 3 else acc
    for i in range(4):
        y[i] = f(i, L.Add()([y[j] for j in range(4) if j != i]))
    return L.GlobalAveragePooling2D()(L.Concatenate()(y))


def decoder(v, channels, p, name):
    """Cross-modal reconstruction: Dense(64), then 3x3 transposed convolutions up to P x P."""
    L = keras.layers
    x = L.Reshape((1, 1, 64))(L.Dense(64, activation="relu")(v))
    growths = (p - 1) // 2
    for i in range(growths - 1):
        x = L.Conv2DTranspose(64, 3, activation="relu")(x)
        if i < growths - 2:
            x = L.Concatenate()([x, L.Conv2DTranspose(64, 3, padding="same", activation="relu")(x)])
    return L.Conv2DTranspose(channels, 3, activation="sigmoid", dtype="float32", name=name)(x)
