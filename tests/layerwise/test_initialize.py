"""keras_corrinit.initialize: whitened first convolution, He, LSUV's scale, in one call."""

import math

import keras
import numpy as np
import pytest

from conftest import InjectedFailure, assert_weights_equal, fail_on_nth_assign, to_numpy, weights_of
from keras_corrinit import initialize
from keras_corrinit._core.layers import walk_layers
from keras_corrinit.experiments._suite import networks

RNG = np.random.default_rng(0)
# Spatially correlated images: smoothed noise.
_noise = RNG.normal(size=(96, 12, 12, 3))
IMAGES = ((_noise + np.roll(_noise, 1, axis=1) + np.roll(_noise, 1, axis=2)) / 3).astype("float32")


def scale_of(model, name):
    return float(to_numpy(model.get_layer(name).kernel)[1, 1, 0, 0])


def small_cnn(first_filters=8):
    return keras.Sequential(
        [
            keras.Input((12, 12, 3)),
            keras.layers.Conv2D(first_filters, 3, activation="relu", name="stem"),
            keras.layers.Conv2D(8, 3, activation="relu", name="conv"),
            keras.layers.GlobalAveragePooling2D(),
            keras.layers.Dense(4, name="head"),
        ]
    )


@pytest.mark.slow
def test_whitened_stem_he_rest_and_unit_variance_everywhere():
    model = small_cnn()
    report = initialize(model, IMAGES, rest="he", head="lsuv", batch_size=96, seed=0, verbose=0)
    assert [(e.name, e.what) for e in report] == [
        ("stem", "PatchWhitening (8 filters)"),
        ("conv", "He-normal"),
        ("head", "He-normal (output layer)"),
    ]
    for entry in report:
        assert abs(entry.variance_after - 1.0) <= 0.1 * 1.0 + 1e-6  # LSUV's default tolerance
        assert np.isfinite(entry.variance_before)
    kernel = to_numpy(model.get_layer("stem").kernel).reshape(27, 8)
    np.testing.assert_allclose(kernel[:, 1::2], -kernel[:, 0::2], rtol=1e-6)  # +/- pairs, one LSUV scale
    assert report.forward_pass_equivalents <= 3.0
    assert "| stem | PatchWhitening (8 filters) |" in str(report)


def test_the_whitened_layer_can_be_frozen():
    model = small_cnn()
    initialize(model, IMAGES, freeze_whitened=True, seed=0, verbose=0)
    assert [layer.trainable for layer in model.layers] == [False, True, True, True]


def test_more_filters_than_whitening_directions_are_he_normal():
    model = small_cnn(first_filters=64)  # 3x3x3 patches: 27 directions, 54 whitening filters
    report = initialize(model, IMAGES, batch_size=96, seed=0, verbose=0)
    assert report["stem"].what == "PatchWhitening (54 of 64 filters; 10 He-normal)"


@pytest.mark.slow
def test_identity_rest_passes_the_input_through_where_a_convolution_can():
    model = keras.Sequential(
        [
            keras.Input((12, 12, 3)),
            keras.layers.Conv2D(8, 3, padding="same", activation="relu", name="stem"),
            keras.layers.Conv2D(8, 3, padding="same", activation="relu", name="same_width"),
            keras.layers.Conv2D(12, 3, padding="same", activation="relu", name="wider"),
            keras.layers.Conv2D(6, 3, padding="same", activation="relu", name="narrower"),
            keras.layers.Conv2D(6, 2, padding="same", activation="relu", name="even"),
            keras.layers.GlobalAveragePooling2D(),
            keras.layers.Dense(4, name="head"),
        ]
    )
    report = initialize(model, IMAGES, batch_size=96, seed=0, verbose=0)  # rest="identity" is the default
    assert [(e.name, e.what) for e in report] == [
        ("stem", "PatchWhitening (8 filters)"),
        ("same_width", "identity (8 of 8 filters)"),
        ("wider", "identity (8 of 12 filters)"),
        ("narrower", "He-normal"),
        ("even", "He-normal"),
        ("head", "kept (output layer)"),
    ]
    for name, in_channels in (("same_width", 8), ("wider", 8)):
        kernel = to_numpy(model.get_layer(name).kernel)
        dirac = np.zeros((3, 3, in_channels, in_channels))
        dirac[1, 1] = np.eye(in_channels)
        scale = kernel[1, 1, 0, 0]  # LSUV's one factor for the whole kernel
        assert scale > 0
        np.testing.assert_allclose(kernel[..., :in_channels], scale * dirac, atol=1e-7)
        assert abs(report[name].variance_after - 1.0) <= 0.1  # LSUV's default tolerance
    assert np.all(to_numpy(model.get_layer("wider").kernel)[..., 8:] != 0)  # the extra filters: He-normal
    # the same-width layer passes its (non-negative) input through, scaled
    stem_out = keras.Sequential(model.layers[:1])(IMAGES)
    both = keras.Sequential(model.layers[:2])(IMAGES)
    np.testing.assert_allclose(to_numpy(both), scale_of(model, "same_width") * to_numpy(stem_out), rtol=1e-5, atol=1e-6)
    assert math.isnan(report["head"].variance_after)  # kept as built: LSUV does not scale it


def test_frozen_layers_nested_and_subclassed_models():
    inner = keras.Sequential([keras.Input((10, 10, 8)), keras.layers.Conv2D(8, 3, name="inner_conv")], name="inner")
    inner.trainable = False
    inputs = keras.Input((12, 12, 3))
    h = keras.layers.Conv2D(8, 3, name="stem")(inputs)
    outputs = keras.layers.Dense(2, name="head")(keras.layers.Flatten()(inner(h)))
    model = keras.Model(inputs, outputs)
    frozen = weights_of(inner)
    report = initialize(model, IMAGES[:32], seed=1, verbose=0)
    assert_weights_equal(inner, frozen)
    assert report.skipped == {"inner_conv": "frozen (trainable=False)"}
    assert [e.name for e in report] == ["stem", "head"]

    class Net(keras.Model):
        def __init__(self):
            super().__init__()
            self.stem = keras.layers.Conv2D(6, 3, name="sub_stem")
            self.head = keras.layers.Dense(2, name="sub_head")

        def call(self, x):
            return self.head(keras.ops.mean(self.stem(x), axis=(1, 2)))

    net = Net()
    net(IMAGES[:2])
    report = initialize(net, IMAGES[:32], seed=1, verbose=0)
    assert [e.what for e in report] == ["PatchWhitening (6 filters)", "kept (output layer)"]  # found in the pass


def test_nothing_changes_when_it_fails_half_way(monkeypatch):
    model = small_cnn()
    before = weights_of(model)
    # assigns: stem, conv and head set, then LSUV's rescaling of the stem (the 4th) fails
    fail_on_nth_assign(monkeypatch, model.get_layer("stem").kernel, 4)
    with pytest.raises(InjectedFailure):
        initialize(model, IMAGES, seed=0, verbose=0)
    monkeypatch.undo()
    assert_weights_equal(model, before)


@pytest.mark.parametrize(
    "kwargs, error, message",
    [
        ({"rest": "glorot"}, ValueError, r"`rest` must be one of \['he', 'identity', 'keep'\]; received 'glorot'"),
        ({"head": "softmax"}, ValueError, r"`head` must be one of \['zero', 'lsuv', 'keep'\]; received 'softmax'"),
        (
            {"residual": "zero"},
            ValueError,
            r"`residual` must be one of \['zero_gamma', 'zero_last', 'keep', 'scaled'\]; received 'zero'",
        ),
        (
            {"normalized": "he"},
            ValueError,
            r"`normalized` must be one of \['norm', 'keep', 'lsuv'\]; received 'he'",
        ),
        ({"whiten": -1}, ValueError, "`whiten` must be an int >= 0; received -1"),
        ({"eps": -1.0}, ValueError, r"`eps` must be a finite number > 0; received -1.0"),
        ({"eps": 1e80}, ValueError, r"`eps`=1e\+80 is at least 100 times the largest patch variance of layer 'stem'"),
        ({"freeze_whitened": "no"}, TypeError, r"`freeze_whitened` must be a bool \(True or False\); received 'no'"),
        ({"include_frozen": 1}, TypeError, "`include_frozen` must be a bool"),
        ({"batch_size": 0}, ValueError, "`batch_size` must be an int >= 1; received 0"),
        ({"samples": 0}, ValueError, "`samples` must be an int >= 1; received 0"),
        ({"max_patches_per_batch": -5}, ValueError, "`max_patches_per_batch` must be an int >= 2; received -5"),
        ({"seed": -3}, ValueError, r"`seed` must be None or an int in \[0, 2\*\*32\); received -3"),
        ({"seed": 2.5}, TypeError, "`seed` must be an int; received 2.5"),
        ({"verbose": 2}, ValueError, "`verbose` must be 0 or 1; received 2"),
        ({"include": 3}, TypeError, "`include` must be None, a regular expression or a list of them"),
        ({"exclude": "("}, ValueError, r"`exclude` holds an invalid regular expression '\('"),
        ({"model": keras.layers.Conv2D(4, 3)}, TypeError, r"`model` must be a keras.Model .*received Conv2D\. Wrap"),
        ({"data": np.full((8, 12, 12, 3), np.nan, "float32")}, ValueError, "`data` contains NaN or Inf"),
        ({"data": np.zeros((8, 12, 12, 5), "float32")}, ValueError, "`data` does not fit"),
    ],
)
def test_bad_arguments_are_named_before_any_work(kwargs, error, message):
    model = small_cnn()
    before = weights_of(model)
    args = {"model": model, "data": IMAGES, "verbose": 0, **kwargs}
    with pytest.raises(error, match=message):
        initialize(**args)
    assert_weights_equal(model, before)


def test_a_model_without_a_convolution_warns_and_gets_he_and_lsuv():
    dense = keras.Sequential([keras.Input((5,)), keras.layers.Dense(6, name="hidden"), keras.layers.Dense(3)])
    with pytest.warns(UserWarning, match="no Conv2D layer to whiten"):
        report = initialize(dense, RNG.normal(size=(64, 5)).astype("float32"), verbose=0)
    assert [e.what for e in report] == ["He-normal", "kept (output layer)"]


def test_an_unbuilt_model_is_built_on_the_data_and_unbatched_tf_data_gets_a_hint():
    model = keras.Sequential([keras.layers.Conv2D(4, 3, name="stem"), keras.layers.Flatten(), keras.layers.Dense(2)])
    report = initialize(model, IMAGES[:32], seed=0, verbose=0)
    assert [e.name for e in report][0] == "stem" and model.built
    import tensorflow as tf

    unbatched = tf.data.Dataset.from_tensor_slices(IMAGES)
    with pytest.raises(ValueError, match=r"no batch axis: batch a tf.data.Dataset with dataset.batch\(32\)"):
        initialize(small_cnn(), unbatched, verbose=0)


# --------------------------------------------------------------------------- models as users write them
def keras_io_convnet(head_units=10, activation="softmax"):
    """keras.io's "Simple MNIST convnet" as published (its head's activation changeable)."""
    return networks.keras_io_convnet(classes=head_units, activation=activation)


def residual_block_model(batch_norm=True, classes=10, input_shape=(12, 12, 3)):
    """A stem, an identity block and a projection block (strided), GAP, softmax head: Keras's ResNet style."""
    inputs = keras.Input(input_shape)
    x = keras.layers.Conv2D(8, 3, padding="same", activation="relu", name="stem")(inputs)

    def conv_bn(h, filters, strides, name, relu=True):
        h = keras.layers.Conv2D(filters, 3, strides=strides, padding="same", name=name)(h)
        if batch_norm:
            h = keras.layers.BatchNormalization(name=f"{name}_bn")(h)
        return keras.layers.ReLU()(h) if relu else h

    y = conv_bn(conv_bn(x, 8, 1, "a1"), 8, 1, "a2", relu=False)
    x = keras.layers.ReLU()(keras.layers.Add(name="add_a")([x, y]))
    shortcut = keras.layers.Conv2D(16, 1, strides=2, name="projection")(x)
    y = conv_bn(conv_bn(x, 16, 2, "b1"), 16, 1, "b2", relu=False)
    x = keras.layers.ReLU()(keras.layers.Add(name="add_b")([shortcut, y]))
    x = keras.layers.GlobalAveragePooling2D()(x)
    return keras.Model(inputs, keras.layers.Dense(classes, activation="softmax", name="predictions")(x))


def he_scale_ratios(model):
    """Each kernel's RMS over its He-normal standard deviation (by the layer's own fan-in)."""
    from keras_corrinit.layerwise._lsuv import he_std

    ratios = {}
    for layer in walk_layers(model):
        if hasattr(layer, "kernel") and len(layer.kernel.shape) >= 2:
            kernel = to_numpy(layer.kernel)
            ratios[layer.name] = float(np.sqrt(np.mean(kernel**2))) / he_std(layer)
    return ratios


def starting_loss(model, x, y, loss):
    return float(to_numpy(loss(y, model(x, training=False))))


DIGITS = RNG.normal(size=(64, 28, 28, 1)).astype("float32")
LABELS = RNG.integers(0, 10, 64)


@pytest.mark.parametrize(
    "build, loss, chance",
    [
        (lambda: keras_io_convnet(), keras.losses.SparseCategoricalCrossentropy(), math.log(10)),
        (
            lambda: keras_io_convnet(1, "sigmoid"),
            keras.losses.BinaryCrossentropy(),
            math.log(2),
        ),
        (
            lambda: keras_io_convnet(10, None),
            keras.losses.SparseCategoricalCrossentropy(from_logits=True),
            math.log(10),
        ),
    ],
    ids=["softmax", "sigmoid", "logits"],
)
@pytest.mark.slow
def test_output_heads_start_near_chance_and_no_kernel_is_blown_up(build, loss, chance):
    model = build()
    built = to_numpy(model.layers[-1].kernel)
    labels = LABELS if "Sparse" in type(loss).__name__ else (LABELS % 2).astype("float32")[:, None]
    report = initialize(model, DIGITS, seed=0, verbose=0)  # head="keep", the default: as built, or scaled down
    assert report.heads == [model.layers[-1].name]
    assert report[model.layers[-1].name].what.startswith("kept (output layer)")
    kept = to_numpy(model.layers[-1].kernel)
    factor = float(np.sum(kept * built) / np.sum(built * built))  # 1 unless it started hot (capped)
    assert 0 < factor <= 1 and ("capped" in report[model.layers[-1].name].what) == (factor < 1)
    np.testing.assert_allclose(kept, built * factor, rtol=1e-5, atol=1e-7)
    model = build()
    report = initialize(model, DIGITS, head="zero", seed=0, verbose=0)
    assert report[model.layers[-1].name].what == "zero (output layer)"
    assert starting_loss(model, DIGITS, labels, loss) == pytest.approx(chance, rel=1e-4)  # a uniform prediction
    assert max(he_scale_ratios(model).values()) <= 100
    if model.layers[-1].units > 1:
        # head="lsuv": unit pre-activation variance; within 1.5x of chance for a 10-way head (a single
        # sigmoid unit can start off-centre: LSUV sets a variance, not a mean)
        model = build()
        initialize(model, DIGITS, head="lsuv", seed=0, verbose=0)
        assert starting_loss(model, DIGITS, labels, loss) < 1.5 * chance
        assert max(he_scale_ratios(model).values()) <= 100


@pytest.mark.parametrize(
    "batch_norm, residual",
    [(True, "zero_gamma"), (False, "zero_last"), (True, "zero_last")],
    ids=["bn", "no-bn-zero-last", "bn-zero-last"],
)
@pytest.mark.slow
def test_residual_blocks_start_as_their_shortcut(batch_norm, residual):
    model = residual_block_model(batch_norm)
    report = initialize(model, IMAGES, residual=residual, head="zero", seed=0, verbose=0)
    if batch_norm:  # each branch's last batch-norm gamma is zero; the convolutions are set as usual
        assert report.residual_ends == ["a2_bn", "b2_bn"]
        for name in ("a2_bn", "b2_bn"):
            np.testing.assert_array_equal(to_numpy(model.get_layer(name).gamma), 0.0)
        assert report["a2"].what.startswith("identity")
    else:  # the branch's last convolution is zero
        assert report.residual_ends == ["a2", "b2"]
        assert report["a2"].what == "zero (residual branch end)" and report["b2"].variance_after == 0.0
    # the projection shortcut is not a branch; each block's output is its shortcut's
    assert report["projection"].what.startswith(("identity", "He-normal"))
    probe = keras.Model(model.inputs, [model.get_layer("add_a").input, model.get_layer("add_a").output])
    (shortcut, branch), added = probe(IMAGES, training=False)
    np.testing.assert_array_equal(to_numpy(branch), 0.0)
    np.testing.assert_allclose(to_numpy(added), to_numpy(shortcut), rtol=1e-6)
    assert starting_loss(model, IMAGES, LABELS[:1].repeat(96), keras.losses.SparseCategoricalCrossentropy()) == (
        pytest.approx(math.log(10), rel=1e-4)
    )


def _branch_shares(model, merges, x):
    """Each merge's branch variance over its shortcut's, as training computes them (batch statistics)."""
    saved = [(v, to_numpy(v)) for v in model.non_trainable_weights]
    probe = keras.Model(model.inputs, [model.get_layer(name).input for name in merges])
    outputs = probe(x, training=True)
    if len(merges) == 1:  # one merge: the model gives its two inputs, not a list of them
        outputs = [outputs]
    for variable, value in saved:
        variable.assign(value)

    def variance(t):
        t = to_numpy(t).astype("float64")
        return float(t.reshape(-1, t.shape[-1]).var(axis=0).mean())

    return [variance(branch) / variance(shortcut) for shortcut, branch in outputs]


@pytest.mark.parametrize("batch_norm", [True, False], ids=["bn", "no-bn"])
@pytest.mark.parametrize("share", [0.1, 0.5])
def test_scaled_residual_branches_add_the_chosen_share_of_their_shortcuts_variance(batch_norm, share):
    model = residual_block_model(batch_norm)
    report = initialize(model, IMAGES[:64], residual="scaled", residual_share=share, seed=0, verbose=0)
    # the identity block's branch is scaled; the projection block's ("b") is set like any other layer
    ends = ["a2_bn"] if batch_norm else ["a2"]
    assert report.residual_ends == ends
    assert f"({share:g} of its shortcut's variance)" in report[ends[0]].what
    assert "shortcut's variance" not in report["b2"].what
    # measured on the batch initialize used (its first 64 samples): the share exactly
    np.testing.assert_allclose(_branch_shares(model, ["add_a"], IMAGES[:64]), share, rtol=1e-3)
    if batch_norm:
        np.testing.assert_array_equal(to_numpy(model.get_layer("b2_bn").gamma), 1.0)
    if batch_norm:  # gamma and beta scaled together; beta was zero
        gamma = to_numpy(model.get_layer("a2_bn").gamma)
        assert np.all(gamma == gamma[0]) and 0 < gamma[0] < 1
        np.testing.assert_array_equal(to_numpy(model.get_layer("a2_bn").beta), 0.0)
    with pytest.raises(ValueError, match="`residual_share` must be a finite number > 0; received 0.0"):
        initialize(residual_block_model(batch_norm), IMAGES, residual="scaled", residual_share=0, verbose=0)


def test_residual_branches_are_scaled_by_default_and_keep_sets_them_like_any_layer():
    model = residual_block_model(batch_norm=True)
    report = initialize(model, IMAGES, seed=0, verbose=0)
    assert report.residual_ends == ["a2_bn"] and "(0.1 of its shortcut's variance)" in report["a2_bn"].what
    # "keep": the gammas stay as built (ones), the branch's kernels get the usual rule
    model = residual_block_model(batch_norm=True)
    report = initialize(model, IMAGES, residual="keep", seed=0, verbose=0)
    assert report.residual_ends == []
    for name in ("a2_bn", "b2_bn"):
        np.testing.assert_array_equal(to_numpy(model.get_layer(name).gamma), 1.0)
    assert report["a2"].what == "identity (8 of 8 filters); at its built norm (before a normalization)"


@pytest.mark.parametrize("batch_norm", [True, False], ids=["bn", "no-bn"])
def test_branches_without_a_normalization_and_residual_keep_are_set_like_any_layer(batch_norm):
    model = residual_block_model(batch_norm)
    # normalized="lsuv": the kernels in front of batch norm scaled like any other (the rule before 0.3.1)
    report = initialize(
        model, IMAGES, residual="keep" if batch_norm else "zero_gamma", normalized="lsuv", seed=0, verbose=0
    )
    assert report.residual_ends == []
    assert report["a2"].what == "identity (8 of 8 filters)"
    assert abs(report["a2"].variance_after - 1.0) < 0.1


def test_a_pre_norm_transformer_block_keeps_its_normalizations():
    # Add(x, attention(LayerNorm(x))): the layer norm is the branch's input, not its end. A zero gamma
    # there (0.3.0.dev0 walked through the attention to it) silenced the attention and its gradients.
    inputs = keras.Input((16, 32))
    y = keras.layers.LayerNormalization(name="pre_attention")(inputs)
    x = keras.layers.Add()([inputs, keras.layers.MultiHeadAttention(4, 8, name="attention")(y, y)])
    y = keras.layers.LayerNormalization(name="pre_mlp")(x)
    y = keras.layers.Dense(32, name="mlp_out")(keras.layers.Dense(64, activation="gelu", name="mlp_in")(y))
    x = keras.layers.Add()([x, y])
    outputs = keras.layers.Dense(3, name="head")(keras.layers.GlobalAveragePooling1D()(x))
    model = keras.Model(inputs, outputs)
    tokens = np.random.default_rng(0).normal(size=(64, 16, 32)).astype("float32")
    report = initialize(model, tokens, attention="mimetic", residual="zero_gamma", seed=0, verbose=0)
    assert report.residual_ends == []
    for name in ("pre_attention", "pre_mlp"):
        np.testing.assert_array_equal(to_numpy(model.get_layer(name).gamma), 1.0)
    attended = keras.Model(inputs, model.get_layer("attention").output)(tokens)
    assert float(np.std(to_numpy(attended))) > 0.1  # the mimetic attention is live at the start
    # zero_last silences the MLP branch through its last kernel (SkipInit), not the attention's normalization
    report = initialize(model, tokens, residual="zero_last", seed=0, verbose=0)
    assert report.residual_ends == ["mlp_out"]
    np.testing.assert_array_equal(to_numpy(model.get_layer("pre_attention").gamma), 1.0)


def test_parallel_paths_of_equal_depth_are_not_residual_blocks():
    inputs = keras.Input((12, 12, 3))
    a = keras.layers.Conv2D(4, 3, padding="same", name="left")(inputs)
    b = keras.layers.Conv2D(4, 3, padding="same", name="right")(inputs)
    x = keras.layers.GlobalAveragePooling2D()(keras.layers.Add()([a, b]))
    model = keras.Model(inputs, keras.layers.Dense(2, name="out")(x))
    report = initialize(model, IMAGES, seed=0, verbose=0)
    assert report.residual_ends == [] and report.heads == ["out"]


@pytest.mark.slow
def test_every_layer_kind_is_set_or_listed_as_skipped():
    inputs = keras.Input((12, 12, 3))
    x = keras.layers.Conv2D(8, 3, strides=2, dilation_rate=1, padding="same", activation="relu", name="stem")(inputs)
    x = keras.layers.SeparableConv2D(12, 3, padding="same", activation="relu", name="separable")(x)
    x = keras.layers.DepthwiseConv2D(3, padding="same", activation="relu", name="depthwise")(x)
    x = keras.layers.Conv2D(12, 3, padding="same", dilation_rate=2, groups=3, name="grouped")(x)
    x = keras.layers.Conv2DTranspose(6, 3, strides=2, padding="same", name="transpose")(x)
    x = keras.layers.Reshape((144, 6))(x)
    x = keras.layers.Conv1D(6, 3, padding="same", activation="tanh", name="conv1d")(x)
    x = keras.layers.MultiHeadAttention(2, 4, name="attention")(x, x)
    x = keras.layers.EinsumDense("btc,cd->btd", output_shape=(None, 8), name="einsum")(x)
    x = keras.layers.GlobalAveragePooling1D()(x)
    outputs = keras.layers.Dense(3, activation="softmax", name="predictions")(x)
    model = keras.Model(inputs, outputs)
    report = initialize(model, IMAGES, seed=0, verbose=0)
    whats = {e.name: e.what for e in report}
    assert whats == {
        "stem": "PatchWhitening (8 filters)",
        "separable": "He-normal (depthwise_kernel, pointwise_kernel)",
        "depthwise": "He-normal",
        "grouped": "He-normal",
        "transpose": "He-normal",
        "conv1d": "identity (6 of 6 filters)",
        "einsum": "kept (EinsumDense: fan-in depends on the equation)",
        "predictions": "kept (output layer)",
        "attention": "mimetic attention (QK ~ 0.7 Z + 0.7 I, VO ~ 0.4 Z - 0.4 I)",  # by default
    }
    assert report.skipped == {}
    for entry in report:  # LSUV's unit pre-activation variance on every layer it scales
        if entry.name not in ("predictions", "attention"):  # (mimetic attention is not rescaled)
            assert abs(entry.variance_after - 1.0) < 0.1, entry
    # the depthwise kernel drawn with its own fan-in (k * k = 9), before LSUV scaled the pointwise one
    depthwise = to_numpy(model.get_layer("separable").depthwise_kernel)
    n = depthwise.size
    assert abs(depthwise.std() - math.sqrt(2 / 9)) < 5 * math.sqrt(2 / 9) / math.sqrt(2 * n)
    assert max(he_scale_ratios(model).values()) <= 100


def test_channels_first_is_whitened_like_channels_last():
    def build(data_format):
        shape = (3, 12, 12) if data_format == "channels_first" else (12, 12, 3)
        return keras.Sequential(
            [
                keras.Input(shape),
                keras.layers.Conv2D(8, 3, data_format=data_format, name="stem"),
                keras.layers.Flatten(),
                keras.layers.Dense(2),
            ]
        )

    last, first = build("channels_last"), build("channels_first")
    initialize(last, IMAGES, seed=0, verbose=0)
    initialize(first, np.transpose(IMAGES, (0, 3, 1, 2)), seed=0, verbose=0)
    np.testing.assert_allclose(
        to_numpy(first.get_layer("stem").kernel), to_numpy(last.get_layer("stem").kernel), rtol=1e-4, atol=1e-6
    )
    out = to_numpy(first.get_layer("stem")(np.transpose(IMAGES, (0, 3, 1, 2))))
    flat = np.transpose(out, (0, 2, 3, 1)).reshape(-1, 8)[:, 0::2]  # one filter of each +/- pair
    correlation = np.corrcoef(flat.T)
    assert np.abs(correlation - np.eye(4)).max() < 0.1


def test_layers_are_identified_by_object_not_by_name():
    def block():
        return keras.Sequential([keras.Input((12, 12, 3)), keras.layers.Conv2D(3, 3, padding="same", name="conv")])

    inputs = keras.Input((12, 12, 3))
    x = block()(inputs)
    x = block()(x)
    outputs = keras.layers.Dense(2, name="out")(keras.layers.Flatten()(x))
    model = keras.Model(inputs, outputs)
    report = initialize(model, IMAGES, whiten=0, rest="he", seed=0, verbose=0)
    first, second = [layer for layer in walk_layers(model) if layer.name == "conv"]
    assert [e.name for e in report] == [f"{model.layers[1].name}/conv", f"{model.layers[2].name}/conv", "out"]
    a, b = to_numpy(first.kernel).ravel(), to_numpy(second.kernel).ravel()
    assert abs(np.dot(a, b) / np.linalg.norm(a) / np.linalg.norm(b)) < 0.5  # independent draws
    # whitening statistics too: the second "conv" is measured on what the first gives it
    model = keras.Model(inputs, outputs)
    report = initialize(model, IMAGES, whiten=2, seed=0, verbose=0)
    assert set(report.patches) == {f"{model.layers[1].name}/conv", f"{model.layers[2].name}/conv"}


def test_a_constant_input_channel_does_not_starve_the_others():
    rgba = np.concatenate([IMAGES, np.ones_like(IMAGES[..., :1])], axis=-1)  # alpha = 1 everywhere
    model = keras.Sequential(
        [
            keras.Input((12, 12, 4)),
            keras.layers.Conv2D(64, 3, name="stem"),
            keras.layers.Flatten(),
            keras.layers.Dense(2),
        ]
    )
    report = initialize(model, rgba, seed=0, verbose=0)
    assert report["stem"].what == (
        "PatchWhitening (54 of 64 filters; 10 He-normal); 9 constant patch directions left out"
    )
    out = to_numpy(model.get_layer("stem")(rgba)).reshape(-1, 64)
    assert out[:, :54].var(axis=0).min() > 0.1  # every whitening filter carries signal (was 6e-4)


def test_the_sample_is_streamed_and_its_size_reported():
    x = np.concatenate([IMAGES] * 6)  # 576 images of 12x12: 100 patches each for a valid 3x3 convolution
    model = small_cnn()
    report = initialize(model, x, batch_size=100, max_patches_per_batch=None, seed=0, verbose=0)
    assert report.samples == 576 and report.lsuv_samples == 100
    assert report.patches == {"stem": 57600}
    assert "576 samples measured (patches per whitened layer: stem: 57600); LSUV on 100;" in str(report)
    report = initialize(small_cnn(), x, samples=250, batch_size=100, seed=0, verbose=0)
    assert report.samples == 250
    assert report.patches == {"stem": 4096 + 4096 + 4096}  # at most 4096 of each batch's 10,000, 5,000


def test_include_and_exclude_choose_layers():
    model = small_cnn()
    before = to_numpy(model.get_layer("conv").kernel)
    report = initialize(model, IMAGES, exclude="^conv$", seed=0, verbose=0)
    assert [e.name for e in report] == ["stem", "head"]
    np.testing.assert_array_equal(to_numpy(model.get_layer("conv").kernel), before)
    report = initialize(small_cnn(), IMAGES, include=["stem"], seed=0, verbose=0)
    assert [e.name for e in report] == ["stem"]


@pytest.mark.slow
def test_a_keras_application_as_built_starts_near_chance():
    # As its authors built it: a softmax head, batch norm, inverted residual blocks, depthwise
    # convolutions (evidence/initialize_applications.py measures eight Applications).
    keras.utils.set_random_seed(0)
    model = keras.applications.MobileNetV2(weights=None, classes=10, input_shape=(32, 32, 3), alpha=0.35)
    images = (RNG.uniform(size=(32, 32, 32, 3)) * 255).astype("float32")
    loss = keras.losses.SparseCategoricalCrossentropy()
    for residual in ("keep", "zero_gamma"):  # the default, and the inverted residual blocks' gammas at zero
        report = initialize(model, images, residual=residual, seed=0, verbose=0)
        assert report.heads == ["predictions"]
        assert bool(report.residual_ends) == (residual == "zero_gamma")
        assert starting_loss(model, images, LABELS[:32], loss) < 1.5 * math.log(10)
        assert max(he_scale_ratios(model).values()) <= 100
        assert not report.skipped


@pytest.mark.slow
def test_conv3d_and_a_strided_dilated_stem():
    volumes = RNG.normal(size=(32, 6, 6, 6, 2)).astype("float32")
    model = keras.Sequential(
        [
            keras.Input((6, 6, 6, 2)),
            keras.layers.Conv3D(4, 3, padding="same", activation="relu", name="c3d"),
            keras.layers.Conv3D(4, 3, padding="same", name="c3d_same"),
            keras.layers.GlobalAveragePooling3D(),
            keras.layers.Dense(3, activation="softmax", name="out"),
        ]
    )
    with pytest.warns(UserWarning, match="no Conv2D layer to whiten"):
        report = initialize(model, volumes, seed=0, verbose=0)
    assert [e.what for e in report] == ["identity (2 of 4 filters)", "identity (4 of 4 filters)", "kept (output layer)"]
    # a strided, dilated first Conv2D is whitened on the patches it sees
    strided = keras.Sequential(
        [
            keras.Input((12, 12, 3)),
            keras.layers.Conv2D(6, 3, strides=2, dilation_rate=1, name="s"),
            keras.layers.Conv2D(6, 3, dilation_rate=2, name="d"),
            keras.layers.Flatten(),
            keras.layers.Dense(2),
        ]
    )
    report = initialize(strided, IMAGES, whiten=2, max_patches_per_batch=None, seed=0, verbose=0)
    assert report.patches == {"s": 96 * 5 * 5, "d": 96 * 1 * 1}


# ------------------------------------------------------------ mimetic attention
def _attention_model(d=32, heads=4, cross=False, context=24):
    tokens = keras.Input((16, d))
    other = keras.Input((16, context)) if cross else tokens
    x = keras.layers.MultiHeadAttention(heads, d // heads, name="attention")(tokens, other)
    outputs = keras.layers.Dense(3)(keras.layers.GlobalAveragePooling1D()(x))
    return keras.Model([tokens, other] if cross else tokens, outputs)


def test_mimetic_factors_are_the_target_exactly_or_its_best_low_rank_approximation():
    from keras_corrinit.layerwise._mimetic import mimetic_factors

    d = 16
    left, right = mimetic_factors(d, 24, 0.7, 0.7, 1.0, np.random.default_rng(5))
    target = 0.7 * np.random.default_rng(5).standard_normal((d, d)) / np.sqrt(d) + 0.7 * np.eye(d)
    assert left.shape == (16, 24) and right.shape == (24, 16)
    np.testing.assert_allclose(left @ right, target, atol=1e-12)
    low_left, low_right = mimetic_factors(d, 8, 0.7, 0.7, 1.0, np.random.default_rng(5))
    s = np.linalg.svd(target, compute_uv=False)
    # Eckart-Young: the rank-8 error's spectral norm is the 9th singular value.
    assert np.linalg.norm(target - low_left @ low_right, 2) == pytest.approx(s[8], rel=1e-9)


def test_mimetic_attention_products_follow_the_paper():
    d = 32
    model = _attention_model(d)
    x = np.random.default_rng(0).normal(size=(64, 16, d)).astype("float32")
    report = initialize(model, x, seed=3, verbose=0)  # mimetic by default
    layer = model.get_layer("attention")
    (entry,) = [e for e in report if e.name == "attention"]
    assert entry.what.startswith("mimetic attention") and "attention" not in report.skipped
    q, k, v, o = (to_numpy(getattr(layer, f"{n}_dense").kernel) for n in ("query", "key", "value", "output"))
    query_key = q.reshape(d, d) @ k.reshape(d, d).T  # summed over the 4 heads
    value_output = v.reshape(d, d) @ o.reshape(d, d)
    off = ~np.eye(d, dtype=bool)
    # diagonal: beta + alpha Z_ii / sqrt(d), its mean's standard error alpha / d: 0.022 and 0.0125 (tolerance 5 se)
    assert np.diag(query_key).mean() == pytest.approx(0.7, abs=5 * 0.7 / d)
    assert np.diag(value_output).mean() == pytest.approx(-0.4, abs=5 * 0.4 / d)
    # off the diagonal: alpha Z / sqrt(d), std alpha / sqrt(d); 992 values estimate it within 10% (> 4 se)
    assert query_key[off].std() == pytest.approx(0.7 / math.sqrt(d), rel=0.1)
    assert value_output[off].std() == pytest.approx(0.4 / math.sqrt(d), rel=0.1)
    assert all(np.all(to_numpy(getattr(layer, f"{n}_dense").bias) == 0) for n in ("query", "key", "value", "output"))
    again = _attention_model(d)
    initialize(again, x, attention="mimetic", seed=3, verbose=0)
    assert np.array_equal(to_numpy(again.get_layer("attention").query_dense.kernel), q)


def test_attention_is_kept_on_request_and_cross_attention_is_named():
    model = _attention_model()
    before = [to_numpy(w) for w in model.get_layer("attention").weights]
    report = initialize(model, np.ones((8, 16, 32), "float32"), attention="keep", seed=0, verbose=0)
    assert all(np.array_equal(to_numpy(w), b) for w, b in zip(model.get_layer("attention").weights, before))
    assert report.skipped["attention"].startswith("MultiHeadAttention")
    # told by the call's arguments (the value is not the query), whatever the widths
    for context in (24, 32):
        cross = _attention_model(cross=True, context=context)
        before = [to_numpy(w) for w in cross.get_layer("attention").weights]
        data = [np.ones((8, 16, 32), "float32"), RNG.normal(size=(8, 16, context)).astype("float32")]
        report = initialize(cross, data, attention="mimetic", seed=0, verbose=0)
        assert report.skipped["attention"] == (
            "MultiHeadAttention called on a context other than its query (cross-attention): mimetic "
            "initialization is for self-attention"
        )
        assert all(np.array_equal(to_numpy(w), b) for w, b in zip(cross.get_layer("attention").weights, before))
    # without data (mimetic_attention alone), by widths
    from keras_corrinit.layerwise._initialize import mimetic_attention

    assert mimetic_attention(_attention_model(cross=True, context=24)) == []
    with pytest.raises(ValueError, match=r"`attention` must be one of \['keep', 'mimetic'\]; received 'yes'"):
        initialize(model, np.ones((8, 16, 32), "float32"), attention="yes")


def normalized_cnn(data_format="channels_last"):
    """Conv -> BN -> ReLU twice (the second a separable convolution), a Conv with a ReLU before BN, one whose output
    also feeds a shortcut (two consumers), and one with a sigmoid before BN: Keras users' conv-BN blocks."""
    axis = -1 if data_format == "channels_last" else 1
    shape = (12, 12, 3) if data_format == "channels_last" else (3, 12, 12)
    conv = dict(padding="same", data_format=data_format)
    inputs = keras.Input(shape)
    x = keras.layers.Conv2D(8, 3, use_bias=False, name="stem", **conv)(inputs)
    x = keras.layers.ReLU()(keras.layers.BatchNormalization(axis=axis, name="stem_bn")(x))
    x = keras.layers.SeparableConv2D(8, 3, use_bias=False, name="separable", **conv)(x)
    x = keras.layers.BatchNormalization(axis=axis)(x)
    x = keras.layers.Conv2D(8, 3, activation="relu", name="relu_then_bn", **conv)(x)
    x = keras.layers.BatchNormalization(axis=axis)(x)
    forked = keras.layers.Conv2D(8, 3, name="forked", **conv)(x)
    x = keras.layers.Add()([forked, keras.layers.BatchNormalization(axis=axis)(forked)])
    x = keras.layers.Conv2D(8, 3, activation="sigmoid", name="sigmoid_then_bn", **conv)(x)
    x = keras.layers.BatchNormalization(axis=axis)(x)
    x = keras.layers.GlobalAveragePooling2D(data_format=data_format)(x)
    return keras.Model(inputs, keras.layers.Dense(10, activation="softmax", name="predictions")(x))


def kernel_norms(model, names):
    return {
        name: [float(np.linalg.norm(to_numpy(w))) for w in model.get_layer(name).weights if len(w.shape) > 1]
        for name in names
    }


@pytest.mark.parametrize("data_format", ["channels_last", "channels_first"])
def test_kernels_in_front_of_a_normalization_keep_their_built_norm(data_format):
    images = IMAGES if data_format == "channels_last" else np.transpose(IMAGES, (0, 3, 1, 2))
    model = normalized_cnn(data_format)
    normalized = ["stem", "separable", "relu_then_bn"]
    built = kernel_norms(model, normalized)
    report = initialize(model, images, seed=0, verbose=0)  # normalized="norm", the default
    # the rule's direction (whitening, identity, He) at the norm the layer was built with; LSUV does not scale them
    assert report["stem"].what == "PatchWhitening (8 filters); at its built norm (before a normalization)"
    assert (
        report["separable"].what
        == "He-normal (depthwise_kernel, pointwise_kernel); at its built norm (before a normalization)"
    )
    assert report["relu_then_bn"].what == "identity (8 of 8 filters); at its built norm (before a normalization)"
    for name in normalized:
        np.testing.assert_allclose(kernel_norms(model, [name])[name], built[name], rtol=1e-5)
        assert math.isnan(report[name].variance_before)
    # two consumers, or an activation that is not positively homogeneous: set like any other layer
    for name in ("forked", "sigmoid_then_bn"):
        assert report[name].what == "identity (8 of 8 filters)"
        assert abs(report[name].variance_after - 1.0) <= 0.1


def test_the_work_counts_the_statistics_pass_up_to_a_stem_in_front_of_batch_norm():
    # A whitened stem in front of batch norm is not scaled by LSUV; the statistics pass still costs only its
    # share of a forward pass (it stops there), measured against every kernel layer's multiply-adds.
    model = keras.Sequential(
        [
            keras.Input((12, 12, 3)),
            keras.layers.Conv2D(8, 3, use_bias=False, name="stem"),  # 10x10x8 outputs of 27 each
            keras.layers.BatchNormalization(),
            keras.layers.ReLU(),
            keras.layers.Conv2D(16, 3, activation="relu", name="conv"),  # 8x8x16 outputs of 72 each
            keras.layers.GlobalAveragePooling2D(),
            keras.layers.Dense(4, name="head"),  # 4 outputs of 16 each
        ]
    )
    report = initialize(model, IMAGES[:32], batch_size=32, seed=0, verbose=0)
    assert report["stem"].what.endswith("at its built norm (before a normalization)")
    per_sample = {"stem": 10 * 10 * 8 * 27, "conv": 8 * 8 * 16 * 72, "head": 4 * 16}
    share = per_sample["stem"] / sum(per_sample.values())
    # one statistics pass (32 samples, one batch) up to the stem, LSUV's one pass (no extra calls: no bias),
    # the pass that measures the kept head (its cap) and the pass that sets batch norm's moving statistics
    assert report.forward_pass_equivalents == pytest.approx(share + 1.0 + 1.0 + 1.0, rel=1e-9)
    assert list(report.normalization) == ["batch_normalization"]


def test_normalized_keep_leaves_them_as_built_and_lsuv_scales_them():
    model = normalized_cnn()
    before = {name: to_numpy(model.get_layer(name).kernel) for name in ("relu_then_bn", "forked")}
    stem_norm = kernel_norms(model, ["stem"])["stem"]
    report = initialize(model, IMAGES, normalized="keep", seed=0, verbose=0)
    np.testing.assert_array_equal(to_numpy(model.get_layer("relu_then_bn").kernel), before["relu_then_bn"])
    assert report["relu_then_bn"].what == "kept (before a normalization)"
    assert report["separable"].what == "kept (before a normalization)"
    # a whitened layer is whitened whatever `normalized` says, at its built norm
    np.testing.assert_allclose(kernel_norms(model, ["stem"])["stem"], stem_norm, rtol=1e-5)
    assert not np.array_equal(to_numpy(model.get_layer("forked").kernel), before["forked"])
    report = initialize(normalized_cnn(), IMAGES, normalized="lsuv", seed=0, verbose=0)
    assert report["relu_then_bn"].what == "identity (8 of 8 filters)"
    assert abs(report["relu_then_bn"].variance_after - 1.0) <= 0.1


def test_nested_blocks_with_repeated_names_each_keep_their_built_norm():
    def block(name):
        layers = [keras.layers.Conv2D(8, 3, padding="same", use_bias=False, name="conv")]
        layers += [keras.layers.BatchNormalization(name="bn"), keras.layers.ReLU()]
        return keras.Sequential([keras.Input((12, 12, 8)), *layers], name=name)

    inputs = keras.Input((12, 12, 3))
    x = keras.layers.Conv2D(8, 3, padding="same", activation="relu", name="stem")(inputs)
    x = block("block_2")(block("block_1")(x))
    outputs = keras.layers.Dense(10, activation="softmax")(keras.layers.GlobalAveragePooling2D()(x))
    model = keras.Model(inputs, outputs)
    built = {
        name: float(np.linalg.norm(to_numpy(model.get_layer(name).get_layer("conv").kernel)))
        for name in ("block_1", "block_2")
    }
    report = initialize(model, IMAGES, seed=0, verbose=0)
    for name in ("block_1", "block_2"):
        assert report[f"{name}/conv"].what == "identity (8 of 8 filters); at its built norm (before a normalization)"
        kernel = to_numpy(model.get_layer(name).get_layer("conv").kernel)
        assert float(np.linalg.norm(kernel)) == pytest.approx(built[name], rel=1e-5)
    assert abs(report["stem"].variance_after - 1.0) <= 0.1  # no normalization after it: LSUV's scale


# ------------------------------------------------ reach: users' Layer subclasses
class PatchEmbedding(keras.layers.Layer):
    """keras.io's way: a patch embedding as a Layer holding a Conv2D and a LayerNormalization."""

    def __init__(self, patch, dim, **kwargs):
        super().__init__(**kwargs)
        self.proj = keras.layers.Conv2D(dim, patch, strides=patch, name="proj")
        self.norm = keras.layers.LayerNormalization(name="norm")

    def call(self, x):
        h = self.proj(x)
        return self.norm(keras.ops.reshape(h, (-1, h.shape[1] * h.shape[2], h.shape[3])))


class EncoderBlock(keras.layers.Layer):
    """A pre-norm transformer block as a Layer: attention and an MLP kept in a list."""

    def __init__(self, dim, heads, **kwargs):
        super().__init__(**kwargs)
        self.ln1 = keras.layers.LayerNormalization(name="ln1")
        self.att = keras.layers.MultiHeadAttention(heads, dim // heads, name="att")
        self.ln2 = keras.layers.LayerNormalization(name="ln2")
        self.mlp = [keras.layers.Dense(2 * dim, activation="gelu", name="fc1"), keras.layers.Dense(dim, name="fc2")]

    def call(self, x):
        h = self.ln1(x)
        x = x + self.att(h, h)
        h = self.ln2(x)
        for layer in self.mlp:
            h = layer(h)
        return x + h


def custom_layer_vit():
    inputs = keras.Input((16, 16, 3))
    x = PatchEmbedding(4, 16, name="embed")(inputs)
    for i in range(2):
        x = EncoderBlock(16, 2, name=f"block{i}")(x)
    x = keras.layers.LayerNormalization(name="final_norm")(x)  # as keras.io's ViT, before the head
    x = keras.layers.GlobalAveragePooling1D()(x)
    return keras.Model(inputs, keras.layers.Dense(10, activation="softmax", name="head")(x))


def test_kernels_inside_users_layer_subclasses_are_reached_by_path():
    model = custom_layer_vit()
    kernels = {w.path: to_numpy(w).copy() for w in model.weights if w.path.endswith("kernel")}
    assert len(kernels) == 1 + 2 * (4 + 2) + 1  # proj; per block query, key, value, output, fc1, fc2; head
    pixels = RNG.uniform(0, 255, size=(64, 16, 16, 3)).astype("float32")  # 0-255 images, as loaded
    report = initialize(model, pixels, seed=0, verbose=0)
    after = {w.path: to_numpy(w) for w in model.weights if w.path in kernels}
    assert [path for path in kernels if np.array_equal(kernels[path], after[path])] == ["head/kernel"]  # kept
    assert [entry.name for entry in report] == [
        "proj",
        "block0/fc1",
        "block0/fc2",
        "block1/fc1",
        "block1/fc2",
        "head",
        "block0/att",
        "block1/att",
    ]
    assert report["proj"].what == "PatchWhitening (16 filters)"  # the first convolution the input meets
    assert report["block0/att"].what.startswith("mimetic attention")
    assert report.skipped == {}
    assert sorted(report.unread) == ["block0", "block1", "embed"]
    loss = keras.losses.SparseCategoricalCrossentropy()
    labels = RNG.integers(0, 10, 64)
    for training in (False, True):
        assert float(to_numpy(loss(labels, model(pixels, training=training)))) <= 1.5 * math.log(10)
    assert max(he_scale_ratios(model).values()) <= 100


def test_lsuv_and_frozen_layers_reach_inside_users_layers_too():
    from keras_corrinit import lsuv_initialize

    model = custom_layer_vit()
    model.get_layer("block1").trainable = False  # a frozen block: its sublayers are frozen too
    report = lsuv_initialize(model, RNG.normal(size=(32, 16, 16, 3)).astype("float32"), verbose=0)
    assert [entry.name for entry in report] == ["proj", "block0/fc1", "block0/fc2", "head"]
    assert report.skipped["block1/fc1"] == "frozen (trainable=False)"


def test_dry_run_returns_each_layers_role_and_why_and_touches_nothing():
    model = residual_block_model(batch_norm=True)
    before = weights_of(model)
    plan = initialize(model, IMAGES, residual="zero_gamma", dry_run=True, verbose=0)
    assert_weights_equal(model, before)
    roles = {entry.name: entry.role for entry in plan}
    assert roles == {
        "stem": "whiten",
        "a1": "normalized",
        "a2": "normalized",
        "projection": "rest",
        "b1": "normalized",
        "b2": "normalized",
        "predictions": "head",
        "a2_bn": "residual_end",
        "b2_bn": "residual_end",
    }
    assert plan["stem"].reason == "Conv2D 1 of the 1 the data meets first (whiten=1)"
    assert plan["a2_bn"].reason == "the normalization that ends a residual branch: its gamma at zero"
    assert plan["a1"].reason == "its one consumer is a normalization, which cancels its scale"
    assert plan.residual_ends == ["a2_bn", "b2_bn"] and plan.heads == ["predictions"]
    assert plan.normalization == ["a1_bn", "a2_bn", "b1_bn", "b2_bn"]
    assert "| stem | Conv2D | whiten |" in str(plan)
    # the plan is what initialize then does
    report = initialize(model, IMAGES, residual="zero_gamma", seed=0, verbose=0)
    assert [e.name for e in report][:7] == [e.name for e in plan][:7]
    assert report.residual_ends == plan.residual_ends and list(report.normalization) == plan.normalization
    with pytest.raises(TypeError, match=r"`dry_run` must be a bool \(True or False\); received 1"):
        initialize(model, IMAGES, dry_run=1)


def test_what_was_silent_is_said():
    # include/exclude that leave nothing name themselves
    with pytest.raises(
        ValueError, match=r"`include`/`exclude` leave no kernel layer to initialize \(include=\['nomatch'\]"
    ):
        initialize(small_cnn(), IMAGES, include="nomatch", verbose=0)
    with pytest.raises(ValueError, match=r"`include`/`exclude` leave no kernel layer .*exclude=\['\.'\]"):
        initialize(small_cnn(), IMAGES, exclude=".", verbose=0)
    # an excluded first convolution is not replaced by the next one, and that is said
    model = residual_block_model(batch_norm=True)
    with pytest.warns(
        UserWarning, match=r"The first Conv2D layer\(s\) the data meets, \['stem'\], are excluded or frozen"
    ):
        report = initialize(model, IMAGES, exclude="^stem$", seed=0, verbose=0)
    assert not any(entry.what.startswith("PatchWhitening") for entry in report)
    # a trained model is refused unless asked
    trained = small_cnn()
    trained.compile("sgd", keras.losses.SparseCategoricalCrossentropy(from_logits=True))
    trained.fit(IMAGES[:16], np.zeros(16, "int32"), epochs=1, verbose=0)
    before = weights_of(trained)
    with pytest.raises(ValueError, match=r"`model` has been trained \(1 optimizer steps\).*overwrite_trained=True"):
        initialize(trained, IMAGES, verbose=0)
    assert_weights_equal(trained, before)
    initialize(trained, IMAGES, overwrite_trained=True, seed=0, verbose=0)


def test_list_batches_of_a_torch_style_loader_give_their_inputs_with_a_warning():
    def loader():  # yields [x, y] lists, as a torch DataLoader over a TensorDataset does
        for start in range(0, 64, 32):
            yield [IMAGES[start : start + 32], np.zeros(32, "int32")]

    expected = small_cnn()
    model = small_cnn()
    model.set_weights(expected.get_weights())
    initialize(expected, IMAGES[:64], batch_size=32, seed=0, verbose=0)
    with pytest.warns(UserWarning, match=r"batches are lists of 2 arrays for a model with 1 input\(s\)"):
        initialize(model, loader(), batch_size=32, seed=0, verbose=0)
    for a, b in zip(weights_of(model), weights_of(expected)):
        np.testing.assert_allclose(a, b, rtol=1e-5, atol=1e-6)


def _head_model(stddev, units=10, bias=True):
    return keras.Sequential(
        [
            keras.Input((12, 12, 3)),
            keras.layers.Conv2D(8, 3, activation="relu", name="stem"),
            keras.layers.BatchNormalization(name="bn"),
            keras.layers.GlobalAveragePooling2D(),
            keras.layers.Dense(
                units,
                activation="softmax" if units > 1 else "sigmoid",
                use_bias=bias,
                kernel_initializer=keras.initializers.RandomNormal(stddev=stddev, seed=0),
                bias_initializer=keras.initializers.RandomNormal(stddev=stddev, seed=1),
                name="head",
            ),
        ]
    )


def _head_logits(model, x):
    from keras_corrinit.normalization._statistics import batch_statistics

    head = model.get_layer("head")
    features = keras.Model(model.inputs, model.get_layer("head").input)
    with batch_statistics(features):
        inputs = features(x, training=False)
    return to_numpy(keras.ops.matmul(inputs, head.kernel) + (head.bias if head.bias is not None else 0))


@pytest.mark.parametrize("units", [10, 1])
def test_a_hot_kept_head_is_scaled_down_to_sqrt_log_classes(units):
    # Features after batch norm and a ReLU are about unit size: a head of std 10 per weight gives logits
    # far above the cap (sqrt(ln 10) = 1.52; for one unit the floor 1.5).
    model = _head_model(10.0, units)
    bias = to_numpy(model.get_layer("head").bias)
    cap = max(1.5, math.sqrt(math.log(max(units, 2))))
    report = initialize(model, IMAGES[:64], batch_size=64, seed=0, verbose=0)
    # the data's part of the logits (the bias is not counted and is kept: a class prior)
    after = float(np.std(_head_logits(model, IMAGES[:64]) - to_numpy(model.get_layer("head").bias)))
    np.testing.assert_array_equal(to_numpy(model.get_layer("head").bias), bias)
    # the factor is measured on this very batch, as training sees it, once the body is set: the cap is met
    # to float32 rounding
    assert after == pytest.approx(cap, rel=1e-3)
    what = report["head"].what
    before = float(what.split("its outputs' std ")[1].split(" ")[0])
    assert before > 2 * cap
    assert what.startswith("kept (output layer); x") and what.endswith(f"capped at {cap:.3g}")
    assert float(what.split(" x")[1].split(":")[0]) == pytest.approx(cap / before, rel=1e-2)  # 3 digits


def test_a_kept_head_at_or_below_the_cap_is_exactly_as_built():
    model = _head_model(0.05)
    kernel, bias = to_numpy(model.get_layer("head").kernel), to_numpy(model.get_layer("head").bias)
    report = initialize(model, IMAGES[:64], batch_size=64, seed=0, verbose=0)
    assert report["head"].what == "kept (output layer)"
    np.testing.assert_array_equal(to_numpy(model.get_layer("head").kernel), kernel)
    np.testing.assert_array_equal(to_numpy(model.get_layer("head").bias), bias)


class _LibraryBackbone(keras.Model):
    """A Functional subclass whose get_config gives its constructor's arguments (KerasHub's way)."""

    def __init__(self, width=8, **kwargs):
        inputs = keras.Input((12, 12, 3))
        x = keras.layers.Conv2D(width, 3, padding="same", name="stem")(inputs)
        y = keras.layers.Conv2D(width, 3, padding="same", name="branch_conv")(keras.layers.ReLU()(x))
        y = keras.layers.BatchNormalization(name="branch_bn")(y)
        outputs = keras.layers.Add(name="merge")([x, y])
        super().__init__(inputs, outputs, **kwargs)
        self.width = width

    def get_config(self):
        return {"width": self.width, "name": self.name}


class _LibraryClassifier(keras.Model):
    def __init__(self, backbone, classes=4, **kwargs):
        inputs = keras.Input((12, 12, 3))
        x = keras.layers.GlobalAveragePooling2D()(backbone(inputs))
        outputs = keras.layers.Dense(classes, activation="softmax", name="predictions")(x)
        super().__init__(inputs, outputs, **kwargs)
        self.backbone, self.classes = backbone, classes

    def get_config(self):
        return {"backbone": keras.saving.serialize_keras_object(self.backbone), "classes": self.classes}


def test_heads_and_residual_adds_are_read_in_functional_subclasses_with_their_own_config():
    model = _LibraryClassifier(_LibraryBackbone())
    assert "layers" not in model.get_config()  # the graph is not in its config
    report = initialize(model, IMAGES[:32], batch_size=32, seed=0, verbose=0)
    assert report.heads == ["predictions"]
    assert report.residual_ends == ["branch_bn"]
    assert report["predictions"].what.startswith("kept (output layer)")
    assert report["branch_bn"].what.startswith("residual branch end x")


def test_a_layer_whose_own_weights_have_no_rule_is_named_with_them():
    class WithToken(keras.layers.Layer):
        def __init__(self, **kwargs):
            super().__init__(**kwargs)
            self.projection = keras.layers.Conv2D(8, 3, name="projection")

        def build(self, input_shape):
            self.token = self.add_weight(shape=(1, 8), name="token")

        def call(self, x):
            return self.projection(x) + self.token[None, None]

    model = keras.Sequential(
        [keras.Input((12, 12, 3)), WithToken(name="embed"), keras.layers.Flatten(), keras.layers.Dense(2)]
    )
    report = initialize(model, IMAGES[:32], batch_size=32, seed=0, verbose=0)
    assert report.skipped["embed"] == (
        "WithToken: its own weights (token) have no rule: left as built (its sublayers are reached)"
    )
    assert report["projection"].what.startswith("PatchWhitening")


def test_a_branch_beside_a_projection_shortcut_is_told_apart_from_one_beside_the_identity():
    from keras_corrinit._core.graph import residual_branch_ends

    ends = {end.layer.name: end.projection for end in residual_branch_ends(residual_block_model(batch_norm=True))}
    assert ends == {"a2_bn": False, "b2_bn": True}
