"""keras_corrinit.initialize: whitened first convolution, He, LSUV's scale, in one call."""

import keras
import numpy as np
import pytest

from conftest import InjectedFailure, assert_weights_equal, fail_on_nth_assign, to_numpy, weights_of
from keras_corrinit import initialize

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


def test_whitened_stem_he_rest_and_unit_variance_everywhere():
    model = small_cnn()
    report = initialize(model, IMAGES, rest="he", batch_size=96, seed=0, verbose=0)
    assert [(e.name, e.what) for e in report] == [
        ("stem", "PatchWhitening (8 filters)"),
        ("conv", "He-normal"),
        ("head", "He-normal"),
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
        ("head", "He-normal"),
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
    assert [e.what for e in report] == ["PatchWhitening (6 filters)", "He-normal"]


def test_nothing_changes_when_it_fails_half_way(monkeypatch):
    model = small_cnn()
    before = weights_of(model)
    # assigns: stem, conv and head set, then LSUV's rescaling of the stem (the 4th) fails
    fail_on_nth_assign(monkeypatch, model.get_layer("stem").kernel, 4)
    with pytest.raises(InjectedFailure):
        initialize(model, IMAGES, seed=0, verbose=0)
    monkeypatch.undo()
    assert_weights_equal(model, before)


def test_bad_input_is_named():
    model = small_cnn()
    with pytest.raises(ValueError, match="`data` contains NaN or Inf"):
        initialize(model, np.full((8, 12, 12, 3), np.nan, "float32"), verbose=0)
    with pytest.raises(ValueError, match="`data` does not fit"):
        initialize(model, np.zeros((8, 12, 12, 5), "float32"), verbose=0)
    with pytest.raises(ValueError, match=r"`rest` must be one of \['he', 'identity', 'keep'\]; received 'glorot'"):
        initialize(model, IMAGES, rest="glorot", verbose=0)
    with pytest.raises(ValueError, match="`whiten`"):
        initialize(model, IMAGES, whiten=-1, verbose=0)
    dense = keras.Sequential([keras.Input((5,)), keras.layers.Dense(3, name="only")])
    with pytest.warns(UserWarning, match="no Conv2D layer to whiten"):
        report = initialize(dense, RNG.normal(size=(64, 5)).astype("float32"), verbose=0)
    assert [e.what for e in report] == ["He-normal"]
