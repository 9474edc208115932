"""Batch normalization's statistics: measured as training sees them, set from data, recalibrated in `fit`."""

import keras
import numpy as np
import pytest

from conftest import to_numpy
from keras_corrinit import initialize
from keras_corrinit.normalization import NormalizationStatistics, RecalibrateNormalization, recalibrate_normalization

RNG = np.random.default_rng(0)
# Inputs far from what batch norm's starting moving statistics (0, 1) assume.
X = RNG.normal(3.0, 2.0, size=(256, 8, 8, 3)).astype("float32")
Y = RNG.integers(0, 4, size=256)


def statistics_of(model, name):
    layer = model.get_layer(name)
    return [to_numpy(layer.moving_mean), to_numpy(layer.moving_variance)]


def bn_model(momentum=0.99, channels_first=False):
    data_format = "channels_first" if channels_first else "channels_last"
    axis = 1 if channels_first else -1
    shape = (3, 8, 8) if channels_first else (8, 8, 3)
    return keras.Sequential(
        [
            keras.Input(shape),
            keras.layers.Conv2D(6, 3, data_format=data_format, name="c1"),
            keras.layers.BatchNormalization(axis=axis, momentum=momentum, name="bn1"),
            keras.layers.ReLU(),
            keras.layers.Dropout(0.5),
            keras.layers.SeparableConv2D(5, 3, data_format=data_format, name="sep"),
            keras.layers.BatchNormalization(axis=axis, momentum=momentum, name="bn2"),
            keras.layers.GlobalAveragePooling2D(data_format=data_format),
            keras.layers.Dense(4, activation="softmax", name="head"),
        ]
    )


def moments_of(model, name, x, axis=-1):
    """The exact population mean and (biased) variance of layer `name`'s input, computed the long way."""
    layer = model.get_layer(name)
    # The input of `name` with every earlier batch norm normalizing by the whole sample's statistics.
    h = x
    for other in model.layers:
        if other is layer:
            break
        if isinstance(other, keras.layers.BatchNormalization):
            h = to_numpy(h)
            axes = tuple(a for a in range(h.ndim) if a != axis % h.ndim)
            mean, var = h.mean(axes, keepdims=True), h.var(axes, keepdims=True)
            gamma, beta = (to_numpy(v).reshape(mean.shape) for v in (other.gamma, other.beta))
            h = (h - mean) / np.sqrt(var + other.epsilon) * gamma + beta
        else:
            h = other(h, training=False)
    h = to_numpy(h).astype("float64")
    axes = tuple(a for a in range(h.ndim) if a != axis % h.ndim)
    return h.mean(axes), h.var(axes)


@pytest.mark.parametrize("channels_first", [False, True])
def test_recalibration_sets_the_population_statistics_of_each_input(channels_first):
    model = bn_model(channels_first=channels_first)
    x = np.transpose(X, (0, 3, 1, 2)) if channels_first else X
    axis = 1 if channels_first else -1
    before = {w.path: to_numpy(w) for w in model.trainable_weights}
    # one batch: the pooled statistics are the sample's exactly, and every layer sees the sample's statistics
    stats = recalibrate_normalization(model, x, batch_size=256)
    assert isinstance(stats, NormalizationStatistics) and stats.samples == 256
    assert list(stats.layers) == ["bn1", "bn2"]
    for name in ("bn1", "bn2"):
        mean, var = moments_of(model, name, x, axis)
        layer = model.get_layer(name)
        np.testing.assert_allclose(to_numpy(layer.moving_mean), mean, rtol=1e-4, atol=1e-4)
        np.testing.assert_allclose(to_numpy(layer.moving_variance), var, rtol=1e-4, atol=1e-4)
    for w in model.trainable_weights:  # only the moving statistics change
        np.testing.assert_array_equal(to_numpy(w), before[w.path])


def test_pooled_over_batches_the_first_layers_statistics_are_the_samples():
    # The first batch norm's input does not depend on other batch norms: pooled over 4 batches of 64 its
    # statistics are those of the whole sample (mean of means, and E[var + mean^2] - mean^2).
    model = bn_model()
    recalibrate_normalization(model, X, batch_size=64)
    mean, var = moments_of(model, "bn1", X)
    np.testing.assert_allclose(to_numpy(model.get_layer("bn1").moving_mean), mean, rtol=1e-4, atol=1e-4)
    np.testing.assert_allclose(to_numpy(model.get_layer("bn1").moving_variance), var, rtol=1e-4, atol=1e-4)


def test_inference_then_matches_training_mode_and_frozen_layers_keep_theirs():
    model = bn_model()
    model.get_layer("bn2").trainable = False
    stats = recalibrate_normalization(model, X, batch_size=256)
    assert list(stats.layers) == ["bn1"] and "bn2" in stats.skipped
    np.testing.assert_array_equal(to_numpy(model.get_layer("bn2").moving_mean), 0.0)
    unfrozen = bn_model()
    recalibrate_normalization(unfrozen, X, batch_size=256)
    no_dropout = keras.Sequential([layer for layer in unfrozen.layers if not isinstance(layer, keras.layers.Dropout)])
    np.testing.assert_allclose(
        to_numpy(unfrozen(X, training=False)), to_numpy(no_dropout(X, training=True)), rtol=1e-3, atol=1e-5
    )


def test_bad_arguments():
    with pytest.raises(TypeError, match="`model` must be a keras.Model; received Dense"):
        recalibrate_normalization(keras.layers.Dense(2), X)
    with pytest.raises(ValueError, match="`samples` must be an int >= 1; received 0"):
        recalibrate_normalization(bn_model(), X, samples=0)
    with pytest.raises(ValueError, match="`data` holds no batch of samples"):
        recalibrate_normalization(bn_model(), X[:0])
    with pytest.raises(ValueError, match="`batch_size` must be an int >= 1; received 0"):
        RecalibrateNormalization(X, batch_size=0)


def test_the_callback_recalibrates_before_each_evaluation_and_at_the_end():
    model = bn_model()
    model.compile("adam", "sparse_categorical_crossentropy", metrics=["accuracy"])
    callback = RecalibrateNormalization(X, samples=128, batch_size=64)
    history = model.fit(X, Y, validation_data=(X, Y), epochs=2, batch_size=32, verbose=0, callbacks=[callback])
    assert callback.recalibrations == 3  # two validations, then the end of fit
    # at the end the moving statistics are the sample's with the trained weights
    expected = bn_model()
    expected.set_weights(model.get_weights())
    recalibrate_normalization(expected, X[:128], batch_size=64)
    for a, b in zip(statistics_of(model, "bn2"), statistics_of(expected, "bn2")):
        np.testing.assert_allclose(a, b, rtol=1e-5, atol=1e-6)
    assert len(history.history["val_accuracy"]) == 2


def test_initialize_sets_the_statistics_and_keep_leaves_them():
    model = bn_model()
    report = initialize(model, X, seed=0, verbose=0)
    assert list(report.normalization) == ["bn1", "bn2"]
    probe = bn_model()
    probe.set_weights(model.get_weights())
    # the statistics initialize set are those of its first batch (128 samples) with the weights it set
    recalibrate_normalization(probe, X[:128], batch_size=128)
    for name in ("bn1", "bn2"):
        for a, b in zip(statistics_of(model, name), statistics_of(probe, name)):
            np.testing.assert_allclose(a, b, rtol=1e-4, atol=1e-5)
    kept = bn_model()
    report = initialize(kept, X, statistics="keep", seed=0, verbose=0)
    assert report.normalization == {}
    np.testing.assert_array_equal(to_numpy(kept.get_layer("bn2").moving_variance), 1.0)
    with pytest.raises(ValueError, match=r"`statistics` must be one of \['data', 'keep'\]; received 'moving'"):
        initialize(bn_model(), X, statistics="moving", verbose=0)
