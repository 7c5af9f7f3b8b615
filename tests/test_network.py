"""The network of layers.py / network.py against SPEC.md: sizes, sharing, stage equations, ablations."""
import numpy as np
import pytest

import keras
import tensorflow as tf
from keras import ops

from layers import CoupledSelfLoopingBlock, CrossModalDecoder, SpectralStem, StreamBatchNorm, spectral_grid
from losses import BatchRMSE
from network import architecture, build_model, classifier, predict_labels


def count(weights):
    return sum(int(np.prod(w.shape)) for w in weights)


def randomise(layer, rng):
    """Random values in every variable (positive variances) so that no term of an equation hides."""
    for v in layer.weights:
        value = rng.normal(0, 0.3, v.shape)
        if "variance" in v.path:
            value = rng.uniform(0.5, 1.5, v.shape)
        if "gamma" in v.path:
            value = rng.uniform(0.5, 1.5, v.shape)
        v.assign(value.astype("float32"))


# ----------------------------------------------------------------------------- NumPy reference
def conv_same(x, kernel, bias):
    """Conv2D, stride 1, 'same' zero padding, ReLU: a direct NumPy computation."""
    r = kernel.shape[0] // 2
    padded = np.pad(x, [(0, 0), (r, r), (r, r), (0, 0)])
    windows = np.lib.stride_tricks.sliding_window_view(padded, kernel.shape[:2], axis=(1, 2))
    return np.maximum(np.einsum("nhwcij,ijcd->nhwd", windows, kernel) + bias, 0)


def batch_norm(x, norm, stream, eps=1e-3):
    g, b, m, v = (np.asarray(w)[stream] for w in (norm.gamma, norm.beta, norm.moving_mean, norm.moving_variance))
    return (x - m) / np.sqrt(v + eps) * g + b


def block_reference(block, x0, stream):
    """SPEC.md's stage equations for one stream, with the block's own (shared) kernels."""
    own = 0 if block.coupled else 4 * stream  # uncoupled: the second-modality stream has kernels 4..7
    kernels = [(np.asarray(c.kernel), np.asarray(c.bias)) for c in block.convs[own:own + 4]]
    f = lambda i, stage, z: batch_norm(conv_same(z, *kernels[i]), block.norms[4 * stage + i], stream)
    y1 = f(0, 0, x0)
    y2 = f(1, 0, x0 + y1)
    y3 = f(2, 0, x0 + y1 + y2)
    y4 = f(3, 0, x0 + y1 + y2 + y3)
    if block.self_loop:
        y1 = f(0, 1, y2 + y3 + y4)
        y2 = f(1, 1, y1 + y3 + y4)
        y3 = f(2, 1, y1 + y2 + y4)
        y4 = f(3, 1, y1 + y2 + y3)
    return np.concatenate([y1, y2, y3, y4], axis=-1).mean(axis=(1, 2))


def make_block(rng, stacked=True, self_loop=True, coupled=True, k=3, shape=(5, 7, 7, 8)):
    block = CoupledSelfLoopingBlock(8, k, coupled=coupled, self_loop=self_loop, stacked=stacked)
    block.build([shape, shape])
    randomise(block, rng)
    return block


# ----------------------------------------------------------------------------- sizes
def test_houston_shapes_give_the_authors_parameter_counts():
    net = build_model(144, 1, 15, patch_size=11)
    assert net.count_params() == 1_810_648
    assert count(net.trainable_weights) == 1_806_552
    assert classifier(net).count_params() == 923_143


def test_any_band_count_channel_count_class_count_and_odd_patch_size():
    net = build_model(48, 4, 20, patch_size=9, filters=8, fusion_units=8)
    x = {"hsi": np.zeros((2, 9, 9, 48), "float32"), "aux": np.zeros((2, 9, 9, 4), "float32")}
    out = net(x)
    assert out["class"].shape == (2, 20)
    assert out["rec_aux"].shape == (2, 9, 9, 4)
    assert out["rec_hsi"].shape == (2, 9, 9, 48)
    np.testing.assert_allclose(np.asarray(out["class"]).sum(-1), 1.0, rtol=1e-5)


@pytest.mark.parametrize("bands, side", [(144, 12), (48, 7), (49, 7), (244, 16), (1, 1), (63, 8)])
def test_spectral_grid_is_the_next_square(bands, side):
    assert spectral_grid(bands) == side


def stem_with_one_tap(bands, group_offset, filters=12):
    """A SpectralStem whose 3-D kernel copies channel c of the band group at `group_offset` (-1, 0, +1)
    from the centre pixel into filter c: output group g shows input group g + group_offset."""
    stem = SpectralStem(filters)
    stem.build((None, 5, 5, bands))
    side = spectral_grid(bands)
    kernel = np.zeros((3, 3, 3, side, filters), "float32")
    kernel[1, 1, 1 + group_offset] = np.eye(side, filters)
    stem.conv3d.kernel.assign(kernel)
    stem.conv3d.bias.assign(np.zeros(filters, "float32"))
    return stem


def expected_shift(x, group_offset, filters=12):
    """NumPy: bands zero-padded at the end to side * side, band b in group b // side, channel b % side;
    output group g, filter c = input group g + group_offset, channel c (zero outside the grid)."""
    n, p, q, bands = x.shape
    side = spectral_grid(bands)
    grid = np.concatenate([x, np.zeros((n, p, q, side * side - bands), x.dtype)], -1).reshape(n, p, q, side, side)
    out = np.zeros((n, p, q, side, filters), x.dtype)
    for g in range(side):
        if 0 <= g + group_offset < side:
            out[..., g, :side] = grid[..., g + group_offset, :]
    return out.reshape(n, p, q, side * filters)


def test_spectral_stem_groups_bands_as_the_paper():
    """144 bands -> (12, 12) grid: band b sits at group b // 12, channel b % 12; the 3-D kernel's third
    axis runs over groups, so an off-centre tap shows the neighbouring group."""
    stem = SpectralStem()
    stem.build((None, 5, 5, 144))
    assert tuple(stem.conv3d.kernel.shape) == (3, 3, 3, 12, 12)
    assert count(stem.weights) == 3 * 3 * 3 * 12 * 12 + 12
    x = np.random.default_rng(0).uniform(0.1, 1, (2, 5, 5, 144)).astype("float32")
    out = np.asarray(stem_with_one_tap(144, -1)(x))
    np.testing.assert_allclose(out, expected_shift(x, -1), rtol=1e-6)
    np.testing.assert_array_equal(out[..., :12], 0)  # group 0 sees the zero padding before the grid
    np.testing.assert_allclose(out[..., 12:24], x[..., :12], rtol=1e-6)  # group 1 shows bands 0..11


def test_spectral_stem_pads_a_non_square_band_count_at_the_end():
    """48 bands -> 7 x 7 = 49: one zero band after band 47, so group 6 holds bands 42..47 and the pad."""
    x = np.random.default_rng(1).uniform(0.1, 1, (2, 5, 5, 48)).astype("float32")
    stem = stem_with_one_tap(48, +1)
    out = np.asarray(stem(x))
    assert out.shape == (2, 5, 5, 7 * 12) == stem.compute_output_shape((2, 5, 5, 48))
    np.testing.assert_allclose(out, expected_shift(x, +1), rtol=1e-6)
    np.testing.assert_allclose(out[..., 5 * 12:5 * 12 + 6], x[..., 42:48], rtol=1e-6)  # group 5 shows group 6
    np.testing.assert_array_equal(out[..., 5 * 12 + 6], 0)  # ... whose last channel is the padding


def test_decoder_grows_from_one_pixel_to_the_patch():
    dec = CrossModalDecoder(144, patch_size=11)
    out = dec(np.zeros((3, 512), "float32"))
    assert out.shape == (3, 11, 11, 144)
    # 'valid' growth 1->3->5->7->9->11, 'same' companions at 3, 5 and 7 only, as in the paper
    assert [tuple(layer.kernel.shape) for layer in dec.same] == [(3, 3, 64, 64)] * 3
    assert len(dec.grow) == 4
    assert float(ops.min(out)) >= 0 and float(ops.max(out)) <= 1
    assert CrossModalDecoder(2, patch_size=5)(np.zeros((1, 8), "float32")).shape == (1, 5, 5, 2)


# ----------------------------------------------------------------------------- coupling and self-loop
def test_block_streams_share_four_kernels_and_the_loop_reuses_them():
    block = make_block(np.random.default_rng(0))
    kernels = [w for w in block.trainable_weights if w.path.endswith("kernel")]
    assert len(kernels) == 4  # W1..W4, for both streams and both stages
    assert len(block.norms) == 2 * 4 and all(n.gamma.shape == (2, 8) for n in block.norms)  # BN per use, per stream
    separate = make_block(np.random.default_rng(0), coupled=False)
    assert len([w for w in separate.trainable_weights if w.path.endswith("kernel")]) == 8


@pytest.mark.parametrize("stacked, coupled", [(True, True), (False, True), (False, False)])
@pytest.mark.parametrize("self_loop", [True, False])
def test_block_matches_the_stage_equations(stacked, coupled, self_loop):
    rng = np.random.default_rng(1)
    block = make_block(rng, stacked=stacked, self_loop=self_loop, coupled=coupled)
    x_hsi, x_aux = (rng.normal(0, 1, (5, 7, 7, 8)).astype("float32") for _ in range(2))
    v_hsi, v_aux = block([x_hsi, x_aux], training=False)
    np.testing.assert_allclose(np.asarray(v_hsi), block_reference(block, x_hsi, 0), rtol=1e-4, atol=1e-4)
    np.testing.assert_allclose(np.asarray(v_aux), block_reference(block, x_aux, 1), rtol=1e-4, atol=1e-4)


def test_changing_one_shared_kernel_changes_both_streams():
    rng = np.random.default_rng(2)
    block = make_block(rng)
    x = [rng.normal(0, 1, (2, 7, 7, 8)).astype("float32") for _ in range(2)]
    before = [np.asarray(v) for v in block(x)]
    block.convs[2].kernel.assign(block.convs[2].kernel * 1.5)
    after = [np.asarray(v) for v in block(x)]
    assert all(np.abs(a - b).max() > 1e-3 for a, b in zip(after, before))


def test_stacked_streams_equal_the_plain_form_in_training_too():
    """One batch of 2N per shared convolution, BN per stream: same outputs, same moving statistics."""
    rng = np.random.default_rng(3)
    plain, stacked = make_block(rng, stacked=False, k=5), make_block(rng, stacked=True, k=5)
    stacked.set_weights(plain.get_weights())
    x = [rng.normal(0, 1, (6, 7, 7, 8)).astype("float32") for _ in range(2)]
    for training in (True, False):
        for a, b in zip(plain(x, training=training), stacked(x, training=training)):
            np.testing.assert_allclose(np.asarray(a), np.asarray(b), rtol=1e-4, atol=1e-5)
    for a, b in zip(plain.get_weights(), stacked.get_weights()):
        np.testing.assert_allclose(a, b, rtol=1e-5, atol=1e-6)


def test_stream_batch_norm_equals_keras_batch_normalization_per_stream():
    rng = np.random.default_rng(4)
    x = rng.normal(2, 3, (2 * 16, 5, 5, 6)).astype("float32")
    ours = StreamBatchNorm(2)
    ours.build(x.shape)
    randomise(ours, rng)
    refs = []
    for s in range(2):
        ref = keras.layers.BatchNormalization()
        ref.build((16, 5, 5, 6))
        ref.set_weights([np.asarray(w)[s] for w in (ours.gamma, ours.beta, ours.moving_mean, ours.moving_variance)])
        refs.append(ref)
    for training in (True, False):
        out = np.asarray(ours(x, training=training))
        for s, ref in enumerate(refs):
            expected = np.asarray(ref(x[16 * s:16 * (s + 1)], training=training))
            np.testing.assert_allclose(out[16 * s:16 * (s + 1)], expected, rtol=1e-4, atol=1e-4)
    for s, ref in enumerate(refs):
        np.testing.assert_allclose(np.asarray(ours.moving_mean)[s], np.asarray(ref.moving_mean), rtol=1e-5)
        np.testing.assert_allclose(np.asarray(ours.moving_variance)[s], np.asarray(ref.moving_variance), rtol=1e-5)


@pytest.mark.parametrize("stream", [None, 1])
def test_stream_batch_norm_gradient_in_closed_form_equals_differentiating_the_moments(stream):
    """layers.normalise_by_batch gives dx, dgamma, dbeta by formula; automatic differentiation of
    gamma (x - mean) / sqrt(var + eps) + beta through the batch moments must agree."""
    rng = np.random.default_rng(6)
    x = tf.constant(rng.normal(2, 3, (2 * 16, 5, 5, 6)).astype("float32"))
    x = x if stream is None else x[:16]
    bn = StreamBatchNorm(2)
    bn.build((32, 5, 5, 6))
    randomise(bn, rng)
    weights = tf.constant(rng.normal(size=x.shape).astype("float32"))  # a loss with a different dy everywhere
    with tf.GradientTape(persistent=True) as tape:
        tape.watch(x)
        ours = bn(x, training=True, stream=stream)
        groups = tf.reshape(x, (2, 16, 5, 5, 6)) if stream is None else x[None]
        rows = slice(None) if stream is None else slice(stream, stream + 1)
        mean, variance = tf.nn.moments(groups, axes=(1, 2, 3), keepdims=True)
        gamma, beta = (tf.reshape(v[rows], (-1, 1, 1, 1, 6)) for v in (bn.gamma, bn.beta))
        textbook = tf.reshape(gamma * (groups - mean) / tf.sqrt(variance + bn.epsilon) + beta, x.shape)
        losses = [tf.reduce_sum(tf.sin(y) * weights) for y in (ours, textbook)]
    np.testing.assert_allclose(np.asarray(ours), np.asarray(textbook), rtol=1e-5, atol=1e-5)
    for a, b in zip(*(tape.gradient(loss, [x, bn.gamma, bn.beta]) for loss in losses)):
        np.testing.assert_allclose(np.asarray(a), np.asarray(b), rtol=1e-4, atol=1e-5 * np.abs(np.asarray(b)).max())


def test_whole_network_stacked_equals_plain_and_classifier_equals_class_output():
    rng = np.random.default_rng(5)
    kwargs = dict(hsi_bands=10, aux_bands=2, num_classes=4, patch_size=7, filters=8, fusion_units=8)
    plain, stacked = build_model(**kwargs, stacked=False), build_model(**kwargs, stacked=True)
    stacked.set_weights(plain.get_weights())
    x = {"hsi": rng.uniform(0, 1, (6, 7, 7, 10)).astype("float32"), "aux": rng.uniform(0, 1, (6, 7, 7, 2)).astype("float32")}
    a, b = plain(x, training=False), stacked(x, training=False)
    for key in ("class", "rec_aux", "rec_hsi"):
        np.testing.assert_allclose(np.asarray(a[key]), np.asarray(b[key]), rtol=1e-4, atol=1e-6)
    np.testing.assert_allclose(np.asarray(classifier(stacked)(x)), np.asarray(b["class"]), rtol=1e-5, atol=1e-7)
    expected = np.argmax(np.asarray(b["class"]), -1)
    for net in (classifier(stacked), stacked):  # the batch loop of evaluation and the benchmark; 6 = 4 + 2
        np.testing.assert_array_equal(predict_labels(net, x["hsi"], x["aux"], batch_size=4), expected)
    assert predict_labels(stacked, x["hsi"][:0], x["aux"][:0]).shape == (0,)


def test_ablations():
    kwargs = dict(hsi_bands=10, aux_bands=1, num_classes=4, patch_size=7, filters=8, fusion_units=8)
    full = build_model(**kwargs)
    no_coupling = build_model(**kwargs, coupled=False)
    no_loop = build_model(**kwargs, self_loop=False)
    no_rec = build_model(**kwargs, reconstruction=False)
    conv = 3 * 3 * 8 * 8 + 8 + 5 * 5 * 8 * 8 + 8  # one W_i of each branch
    assert no_coupling.count_params() - full.count_params() == 4 * conv
    assert full.count_params() - no_loop.count_params() == 2 * 4 * 4 * 2 * 8  # 4 BN x 4 vars x 2 streams x 2 branches
    assert list(no_rec.output) == ["class"] and set(full.output) == {"class", "rec_aux", "rec_hsi"}


def test_without_the_spectral_stem_the_hsi_enters_its_conv2d_stem_directly():
    kwargs = dict(hsi_bands=5, aux_bands=1, num_classes=4, patch_size=7, filters=8, fusion_units=8, kernel_sizes=(3,))
    full, plain = build_model(**kwargs), build_model(**kwargs, spectral_stem=False)
    # 5 bands pad to a 3 x 3 grid: Conv3D 3*3*3*3*12 + 12, then the Conv2D sees 3 * 12 channels, not 5
    stem3d = 3 * 3 * 3 * 3 * 12 + 12
    assert full.count_params() - plain.count_params() == stem3d + 3 * 3 * (36 - 5) * 8
    assert not [layer for layer in plain.layers if layer.name.startswith("spectral_stem")]
    assert tuple(plain.get_layer("hsi_stem_k3").kernel.shape) == (3, 3, 5, 8)
    shapes = dict(hsi_bands=5, aux_bands=1, num_classes=4, patch_size=7)
    config = dict(filters=8, fusion_units=8, kernel_sizes="3", coupled=True, self_loop=True, reconstruction=True,
                  stacked_streams=True, bn_momentum=0.99)  # a run saved before the knob existed
    assert architecture(config, shapes)["spectral_stem"] is True
    assert architecture({**config, "spectral_stem": False}, shapes)["spectral_stem"] is False


def test_batch_rmse_is_the_root_of_the_whole_batch_mean():
    rng = np.random.default_rng(6)
    y, p = rng.uniform(0, 1, (4, 3, 3, 2)), rng.uniform(0, 1, (4, 3, 3, 2))
    expected = np.sqrt(np.mean((y - p) ** 2))
    assert abs(float(BatchRMSE()(y.astype("float32"), p.astype("float32"))) - expected) < 1e-6
    per_patch_mean = np.mean(np.sqrt(np.mean((y - p) ** 2, axis=(1, 2, 3))))
    assert abs(expected - per_patch_mean) > 1e-4  # it is not the mean of per-patch RMSEs


def test_mixed_precision_keeps_outputs_in_float32():
    keras.mixed_precision.set_dtype_policy("mixed_bfloat16")
    try:
        net = build_model(10, 1, 4, patch_size=7, filters=8, fusion_units=8)
        out = net({"hsi": np.zeros((2, 7, 7, 10), "float32"), "aux": np.zeros((2, 7, 7, 1), "float32")})
        assert all(keras.backend.standardize_dtype(out[k].dtype) == "float32" for k in out)
        assert net.get_layer("coupled_block_k3").compute_dtype == "bfloat16"
    finally:
        keras.mixed_precision.set_dtype_policy("float32")
