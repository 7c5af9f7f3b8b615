"""The named parts of the coupled self-looping network (Pande & Banerjee, Neural Networks 2023).

Each part is a small Keras layer with `build`/`call`/`get_config`, written with `keras.ops` only so
that the same code runs under the TensorFlow, JAX or PyTorch backends of Keras 3:

- `Conv2D`: Keras' Conv2D, computed by Winograd's minimal filtering (winograd.py) where the process's
  convolution algorithm says so (`set_conv_algorithm`); same weights, same result.
- `SpectralStem`: the 3-D convolution over bands grouped as a square grid (the "3D CNN" of Fig. 1).
- `StreamBatchNorm`: BatchNormalization with its own statistics per modality stream.
- `CoupledSelfLoopingBlock`: four convolutions shared by the HSI and second-modality streams
  (coupling), each applied twice per stream (forward stage, then looped stage).
- `CrossModalDecoder`: the self-supervised cross-modal reconstruction module (H -> L, L -> H).
"""
import math

import keras
from keras import layers, ops

import devices
import winograd
from averaging import warmup_decay

KERNEL_INIT = "glorot_normal"  # the authors' initialisation
PACKAGE = "coupled_self_looping"
CONV_ALGORITHMS = ("direct", "winograd")
_conv_algorithm = ["direct"]  # the process's choice, read when a layer is traced (like Keras' dtype policy)


def set_conv_algorithm(name):
    """How this module's Conv2D layers traced from now on compute: 'direct' (Keras' convolution) or
    'winograd' (winograd.py, in float32 only). Returns the previous choice."""
    if name not in CONV_ALGORITHMS:
        raise ValueError(f"conv algorithm must be one of {', '.join(CONV_ALGORITHMS)}, got {name!r}")
    previous, _conv_algorithm[0] = _conv_algorithm[0], name
    return previous


def conv_algorithm():
    return _conv_algorithm[0]


@keras.saving.register_keras_serializable(PACKAGE)
class Conv2D(layers.Conv2D):
    """Keras' Conv2D (same weights, names and result) whose convolution is Winograd's minimal filtering
    when the process's algorithm is 'winograd', the layer computes in float32 and its shape allows it
    (a 3 x 3 or 5 x 5 kernel, 'same', stride 1); a direct convolution otherwise. Under mixed precision
    it stays direct: the transforms would lose too much in bfloat16 or float16.

    Named Conv2D on purpose: a checkpoint stores a block's list of layers under their class names
    (conv2d, conv2d_1, ...), so this name keeps the checkpoints of Keras' Conv2D loadable."""

    def convolution_op(self, inputs, kernel):
        if (conv_algorithm() == "winograd" and self.compute_dtype == "float32"
                and winograd.supports(self.kernel_size, self.strides, self.dilation_rate, self.padding,
                                      self.data_format)):
            return winograd.conv2d_same(inputs, kernel)
        return super().convolution_op(inputs, kernel)


def spectral_grid(bands):
    """Side of the square band grid of the spectral stem: 144 bands -> 12 x 12, as in the paper.

    Our choice for other counts: the bands are zero-padded up to the next square (48 -> 7 x 7 = 49,
    244 -> 16 x 16 = 256), so the grid stays square like the paper's and the 3-D kernel always
    spans three neighbouring band groups of `side` adjacent bands each.
    """
    return math.isqrt(bands - 1) + 1


@keras.saving.register_keras_serializable(PACKAGE)
class SpectralStem(layers.Layer):
    """(P, P, B) -> (P, P, side * filters): Conv3D over (row, col, band group), channels = bands in a group."""

    def __init__(self, filters=12, **kwargs):
        super().__init__(**kwargs)
        self.filters = filters
        self.conv3d = layers.Conv3D(filters, 3, padding="same", activation="relu",
                                    kernel_initializer=KERNEL_INIT, name="conv3d")

    def build(self, input_shape):
        p, q, bands = input_shape[1:]
        self.side = spectral_grid(bands)
        self.pad = self.side * self.side - bands
        self.conv3d.build((None, p, q, self.side, self.side))

    def call(self, x):
        p, q = x.shape[1], x.shape[2]
        if self.pad:
            x = ops.pad(x, [[0, 0], [0, 0], [0, 0], [0, self.pad]])
        x = ops.reshape(x, (-1, p, q, self.side, self.side))  # band b = group * side + channel
        x = self.conv3d(x)
        return ops.reshape(x, (-1, p, q, self.side * self.filters))

    def compute_output_shape(self, input_shape):
        return (*input_shape[:3], spectral_grid(input_shape[3]) * self.filters)

    def get_config(self):
        return {**super().get_config(), "filters": self.filters}


def normalise(x, mean, variance, gamma, beta, epsilon):
    """gamma (x - mean) / sqrt(variance + epsilon) + beta, as one multiply-add in x's dtype (bfloat16
    under mixed precision); the statistics and parameters in float32, shaped to broadcast over x."""
    scale = gamma * ops.rsqrt(variance + epsilon)
    return x * ops.cast(scale, x.dtype) + ops.cast(beta - mean * scale, x.dtype)


def normalise_by_batch(x, mean, variance, gamma, beta, axes, epsilon):
    """`normalise` in training, with the batch's own statistics over the reduced `axes` of x, and its
    gradient in closed form (Ioffe & Szegedy 2015, Sec. 3):

        dx = s (dy - mean(dy) - xhat mean(dy xhat)),  s = gamma / sqrt(variance + epsilon)

    The same values as differentiating through the moments, in two reductions and one multiply-add
    pass over x where automatic differentiation takes a dozen element-wise passes (batch norm was a
    tenth of a training step on the CPU). mean and variance carry no gradient of their own: their
    dependence on x is in dx."""
    @ops.custom_gradient
    def normalised(x, mean, variance, gamma, beta):  # every tensor an argument: JAX refuses closed-over ones
        def grad(*args, upstream=None):
            dy = args[0] if upstream is None else upstream
            dy32, x32 = ops.cast(dy, "float32"), ops.cast(x, "float32")
            rstd = ops.rsqrt(variance + epsilon)
            scale = gamma * rstd
            count = ops.cast(ops.size(x32), "float32") / float(math.prod(mean.shape))
            sum_dy = ops.sum(dy32, axis=axes, keepdims=True)
            sum_dy_xhat = (ops.sum(dy32 * x32, axis=axes, keepdims=True) - mean * sum_dy) * rstd
            slope = -scale * rstd * sum_dy_xhat / count  # dx = s dy + slope x + intercept
            intercept = -scale * sum_dy / count - slope * mean
            dx = ops.cast(dy32 * scale + x32 * slope + intercept, x.dtype)  # float32 then x's dtype, as cuDNN
            return (dx, ops.zeros_like(mean), ops.zeros_like(variance), ops.reshape(sum_dy_xhat, gamma.shape),
                    ops.reshape(sum_dy, beta.shape))

        return normalise(x, mean, variance, gamma, beta, epsilon), grad

    return normalised(x, mean, variance, gamma, beta)


@keras.saving.register_keras_serializable(PACKAGE)
class StreamBatchNorm(layers.Layer):
    """BatchNormalization that keeps separate statistics and scale/offset for each modality stream.

    `call(x, stream=s)` normalises one stream's tensor with stream s's parameters (the plain form).
    `call(x)` takes all streams stacked along the batch axis, stream 0 first, in equal parts, and
    normalises each part with its own parameters in one pass: a reshape, not a split and a copy.
    Both forms compute the same thing with the same variables, as a separate
    `keras.layers.BatchNormalization` per stream would (same momentum, epsilon and biased variance).
    warmup=True: the moving statistics of a stream's t-th update decay by
    averaging.warmup_decay(momentum, t) instead of the fixed momentum, so that those of a short run
    are not still near their initial zeros and ones (training itself uses batch statistics either way).
    """

    def __init__(self, streams=2, momentum=0.99, epsilon=1e-3, warmup=False, **kwargs):
        # Statistics stay in float32 under mixed precision, like Keras' own BatchNormalization.
        super().__init__(autocast=False, **kwargs)
        self.streams, self.momentum, self.epsilon, self.warmup = streams, momentum, epsilon, warmup

    def build(self, input_shape):
        shape = (self.streams, input_shape[-1])  # one row per stream
        self.gamma = self.add_weight(shape, initializer="ones", name="gamma")
        self.beta = self.add_weight(shape, initializer="zeros", name="beta")
        self.moving_mean = self.add_weight(shape, initializer="zeros", name="moving_mean", trainable=False)
        self.moving_variance = self.add_weight(shape, initializer="ones", name="moving_variance", trainable=False)
        if self.warmup:  # updates made to each stream's statistics
            self.updates = self.add_weight((self.streams,), initializer="zeros", name="updates", trainable=False)

    def call(self, x, training=False, stream=None):
        if stream is None:  # (S * N, ...) -> (S, N, ...): each stream's part gets its own row of parameters
            grouped = ops.reshape(x, (self.streams, -1, *x.shape[1:]))
            return ops.reshape(self._normalise(grouped, slice(None), training), ops.shape(x))
        return self._normalise(x, stream, training)

    def _normalise(self, x, rows, training):
        """x: one stream's tensor (rows = its index) or all streams (rows = slice(None), leading stream axis)."""
        grouped = isinstance(rows, slice)
        axes = tuple(range(1 if grouped else 0, len(x.shape) - 1))
        # (S, C) -> (S, 1, ..., 1, C) to broadcast over each stream's part
        shape = (self.streams,) + (1,) * (len(x.shape) - 2) + (x.shape[-1],) if grouped else (x.shape[-1],)
        gamma, beta = ops.reshape(self.gamma[rows], shape), ops.reshape(self.beta[rows], shape)
        # Over every replica's share of the batch under several TF replicas (Keras' synchronized
        # moments): 2 devices then train the network 1 device trains at the same global batch.
        synced = training and devices.replicas_in_step() > 1
        if training:
            moments_of = ops.cast(x, "float32") if synced else ops.stop_gradient(ops.cast(x, "float32"))
            mean, variance = ops.moments(moments_of, axes=axes, synchronized=synced)
            momentum = self._momentum(rows)
            self._update(self.moving_mean, mean, rows, momentum)
            self._update(self.moving_variance, variance, rows, momentum)
        else:
            mean, variance = self.moving_mean[rows], self.moving_variance[rows]
        mean, variance = ops.reshape(mean, shape), ops.reshape(variance, shape)
        if training and not synced:
            return normalise_by_batch(x, mean, variance, gamma, beta, axes, self.epsilon)
        return normalise(x, mean, variance, gamma, beta, self.epsilon)

    def _momentum(self, rows):
        """The decay of this update: the fixed momentum, or its warm-up ((S, 1) for all streams), counted."""
        if not self.warmup:
            return self.momentum
        t = self.updates[rows]
        if isinstance(rows, slice):
            self.updates.assign(t + 1.0)
            return ops.expand_dims(warmup_decay(self.momentum, t), -1)
        self.updates.assign(ops.slice_update(self.updates.value, (rows,), ops.expand_dims(t + 1.0, 0)))
        return warmup_decay(self.momentum, t)

    def _update(self, moving, batch_value, rows, momentum):
        new = moving[rows] * momentum + batch_value * (1 - momentum)
        if not isinstance(rows, slice):  # one stream's row of the (streams, C) variable; .value: JAX needs a tensor
            new = ops.slice_update(moving.value, (rows, 0), ops.expand_dims(new, 0))
        moving.assign(new)

    def get_config(self):
        return {**super().get_config(), "streams": self.streams, "momentum": self.momentum,
                "epsilon": self.epsilon, "warmup": self.warmup}


@keras.saving.register_keras_serializable(PACKAGE)
class CoupledSelfLoopingBlock(layers.Layer):
    """The coupled self-looping block of one kernel size: ([x0_hsi, x0_aux]) -> [v_hsi, v_aux] (N, 4 * filters).

    Four convolutions W1..W4 (Conv2D, 'same', ReLU) are shared by the two streams (coupling) and
    each is applied twice per stream (self-loop); every application has its own batch norm,
    f_i(z) = BN(W_i(z)). With x0 a stream's stem output:
      stage 1 (forward): y1 = f1(x0); y2 = f2(x0 + y1); y3 = f3(x0 + y1 + y2); y4 = f4(x0 + y1 + y2 + y3)
      stage 2 (looped):  y_i = f_i(sum of the other three), in order i = 1..4, using the newest values.
    The stream's output is concat(y1..y4) of the last stage, globally average-pooled.

    Ablations: coupled=False gives each stream its own four kernels; self_loop=False stops after
    the forward stage. stacked=True (coupled only) runs both streams through each shared
    convolution as one batch of 2N: the same mathematics with half the kernel launches.
    """

    def __init__(self, filters=64, kernel_size=3, coupled=True, self_loop=True, stacked=True, bn_momentum=0.99,
                 bn_warmup=False, **kwargs):
        super().__init__(**kwargs)
        self.filters, self.kernel_size, self.bn_momentum, self.bn_warmup = filters, kernel_size, bn_momentum, bn_warmup
        self.coupled, self.self_loop, self.stacked = coupled, self_loop, stacked
        kernel_sets = 1 if coupled else 2
        self.convs = [Conv2D(filters, kernel_size, padding="same", activation="relu", kernel_initializer=KERNEL_INIT,
                             name=f"W{i % 4 + 1}" + ("" if coupled else f"_s{i // 4}"))
                      for i in range(4 * kernel_sets)]
        stages = 2 if self_loop else 1
        self.norms = [StreamBatchNorm(2, bn_momentum, warmup=bn_warmup, name=f"bn_stage{i // 4 + 1}_W{i % 4 + 1}") for i in range(4 * stages)]

    def build(self, input_shapes):
        shape = input_shapes[0]
        for conv in self.convs:
            conv.build(shape)
        for norm in self.norms:
            norm.build((*shape[:-1], self.filters))

    def f(self, i, stage, z, stream, training):
        """One application f_i = BN(W_i(z)); stream None means both streams stacked in z."""
        conv = self.convs[i + (4 * stream if not self.coupled else 0)]
        return self.norms[4 * stage + i](conv(z), training=training, stream=stream)

    def stages(self, x0, stream, training):
        y, acc = [], x0
        for i in range(4):  # stage 1 (forward): each W_i sees the stem output plus all earlier outputs
            y.append(self.f(i, 0, acc, stream, training))
            if i < 3:
                acc = acc + y[i]
        if self.self_loop:  # stage 2 (looped): the same W_i again, fed by the other three outputs
            for i in range(4):
                y[i] = self.f(i, 1, sum(y[j] for j in range(4) if j != i), stream, training)
        return ops.mean(ops.concatenate(y, axis=-1), axis=(1, 2))

    def call(self, inputs, training=False):
        # Both streams follow the paper's symmetric equations. The authors' release differs in
        # stage 1 of the second-modality stream, where it overwrites x0 with x0 + y1 and so adds
        # y1 twice from y2 on; we build what the paper describes for both streams.
        x_hsi, x_aux = inputs
        if self.stacked and self.coupled:
            both = self.stages(ops.concatenate([x_hsi, x_aux], axis=0), None, training)
            v_hsi, v_aux = ops.split(both, 2, axis=0)
            return [v_hsi, v_aux]
        return [self.stages(x_hsi, 0, training), self.stages(x_aux, 1, training)]

    def compute_output_shape(self, input_shapes):
        return [(input_shapes[0][0], 4 * self.filters), (input_shapes[1][0], 4 * self.filters)]

    def get_config(self):
        return {**super().get_config(), "filters": self.filters, "kernel_size": self.kernel_size,
                "coupled": self.coupled, "self_loop": self.self_loop, "stacked": self.stacked,
                "bn_momentum": self.bn_momentum, "bn_warmup": self.bn_warmup}


@keras.saving.register_keras_serializable(PACKAGE)
class CrossModalDecoder(layers.Layer):
    """Cross-modal reconstruction module: a feature vector -> a (P, P, out_channels) patch in [0, 1].

    Dense(64) -> (1, 1, 64), then 'valid' 3x3 transposed convolutions grow it by 2 pixels each up
    to P x P. After each growth but the last two, a 'same' transposed convolution is concatenated
    with its input, as in the paper (for P = 11: 3x3, 5x5 and 7x7 get one, 9x9 and 11x11 do not).
    The last layer (sigmoid) runs in float32 under mixed precision.
    """

    def __init__(self, out_channels, patch_size=11, units=64, filters=64, **kwargs):
        super().__init__(**kwargs)
        if patch_size < 3 or patch_size % 2 == 0:
            raise ValueError(f"patch_size must be odd and >= 3, got {patch_size}")
        self.out_channels, self.patch_size, self.units, self.filters = out_channels, patch_size, units, filters
        growths = (patch_size - 1) // 2
        conv = lambda n, pad, **kw: layers.Conv2DTranspose(n, 3, padding=pad, kernel_initializer=KERNEL_INIT, **kw)
        self.dense = layers.Dense(units, activation="relu", kernel_initializer=KERNEL_INIT, name="dense")
        self.grow = [conv(filters, "valid", activation="relu", name=f"grow{i + 1}") for i in range(growths - 1)]
        self.same = [conv(filters, "same", activation="relu", name=f"same{i + 1}") for i in range(max(growths - 2, 0))]
        self.out = conv(out_channels, "valid", activation="sigmoid", dtype="float32", name="out")

    def build(self, input_shape):
        self.dense.build(input_shape)
        size, channels = 1, self.units
        for i, grow in enumerate(self.grow):
            grow.build((None, size, size, channels))
            size, channels = size + 2, self.filters
            if i < len(self.same):
                self.same[i].build((None, size, size, channels))
                channels = 2 * self.filters
        self.out.build((None, size, size, channels))

    def call(self, v):
        x = ops.reshape(self.dense(v), (-1, 1, 1, self.units))
        for i, grow in enumerate(self.grow):
            x = grow(x)
            if i < len(self.same):
                x = ops.concatenate([x, self.same[i](x)], axis=-1)
        return self.out(x)

    def compute_output_shape(self, input_shape):
        return (input_shape[0], self.patch_size, self.patch_size, self.out_channels)

    def get_config(self):
        return {**super().get_config(), "out_channels": self.out_channels, "patch_size": self.patch_size,
                "units": self.units, "filters": self.filters}
