"""`ZCAWhitening`: the whitening formula, shape and formats kept, fixed in training, saved, refused input."""

import json
import re
import warnings

import keras
import numpy as np
import pytest

from conftest import to_numpy
from keras_corrinit import initialize
from keras_corrinit.normalization import ZCAWhitening

RNG = np.random.default_rng(0)
# Correlated across pixels and channels (natural images are), far from zero mean and unit scale.
_NOISE = RNG.normal(size=(96, 12, 12, 3)).astype("float32")
X = 5.0 + 2.0 * (_NOISE + np.roll(_NOISE, 1, axis=1) + np.roll(_NOISE, 1, axis=2) + 0.5 * _NOISE[..., [1, 2, 0]])


def patch_covariance(images, k=3):
    """Every valid k x k patch, in Keras's kernel order (row, column, channel), by numpy alone."""
    n, h, w, c = images.shape
    rows = [images[:, i : i + h - k + 1, j : j + w - k + 1, :] for i in range(k) for j in range(k)]
    patches = np.stack(rows, axis=3).reshape(-1, k * k * c).astype(np.float64)
    return np.cov(patches.T)


def expected_output_covariance(covariance, eps, k=3, c=3):
    """Var of the centre pixel's ZCA output: the centre block of U diag(lambda / (lambda + eps)) U^T."""
    values, vectors = np.linalg.eigh(covariance)
    values = np.clip(values, 0, None)
    kept = (vectors * (values / (values + eps))) @ vectors.T
    centre = (k // 2) * k + k // 2
    return kept[centre * c : (centre + 1) * c, centre * c : (centre + 1) * c]


@pytest.mark.parametrize("eps", [None, 0.05])
def test_output_covariance_is_the_formulas(eps):
    # Every patch read (no sampling), so the layer's covariance is the sample's own: the interior pixels'
    # output covariance equals the formula up to float32 rounding (1e-3 of unit variances).
    layer = ZCAWhitening(eps=eps)
    layer.adapt(X, max_patches_per_batch=10**6)
    covariance = patch_covariance(X)
    used_eps = 1e-2 * np.linalg.eigvalsh(covariance).clip(0).mean() if eps is None else eps
    output = to_numpy(layer(X))[:, 1:-1, 1:-1].reshape(-1, 3).astype(np.float64)
    np.testing.assert_allclose(np.cov(output.T), expected_output_covariance(covariance, used_eps), atol=1e-3)
    # and the whitening is real: the input's channels were far from white
    assert np.abs(np.cov(X[:, 1:-1, 1:-1].reshape(-1, 3).T) - np.eye(3)).max() > 1.0
    assert to_numpy(layer.patches) == len(X) * 10 * 10


def test_shape_is_kept_and_channels_first_is_the_same_whitening():
    last = ZCAWhitening.from_data(X, kernel_size=(3, 5), data_format="channels_last")
    first = ZCAWhitening.from_data(np.transpose(X, (0, 3, 1, 2)), kernel_size=(3, 5), data_format="channels_first")
    out_last = to_numpy(last(X))
    out_first = to_numpy(first(np.transpose(X, (0, 3, 1, 2))))
    assert out_last.shape == X.shape
    np.testing.assert_allclose(np.transpose(out_first, (0, 2, 3, 1)), out_last, atol=1e-4)


def in_front_of_a_model(layer):
    layers = [keras.Input((12, 12, 3)), layer, keras.layers.Conv2D(4, 3, name="c"), keras.layers.Flatten()]
    return keras.Sequential([*layers, keras.layers.Dense(2)])


def test_before_adapt_it_is_the_identity_and_initialize_says_so():
    layer = ZCAWhitening()
    np.testing.assert_array_equal(to_numpy(layer(X[:2])), X[:2])
    assert not layer.is_adapted
    model = in_front_of_a_model(layer)
    with pytest.warns(UserWarning, match=re.escape(f"The ZCAWhitening layer {layer.name!r} was never adapted")):
        report = initialize(model, X, seed=0, verbose=0)
    assert report.skipped[layer.name] == "ZCAWhitening: not adapted (passes its input unchanged)"


def test_initialize_keeps_an_adapted_layer_and_whitens_the_stem_behind_it():
    layer = ZCAWhitening.from_data(X)
    kernel = to_numpy(layer.kernel)
    model = in_front_of_a_model(layer)
    with warnings.catch_warnings():
        warnings.simplefilter("error", UserWarning)
        report = initialize(model, X, seed=0, verbose=0)
    np.testing.assert_array_equal(to_numpy(layer.kernel), kernel)
    assert report.skipped[layer.name] == "ZCAWhitening: a fixed whitening of its input, as adapted"
    assert [entry.what for entry in report][0].startswith("PatchWhitening")


def test_its_weights_do_not_train():
    layer = ZCAWhitening.from_data(X)
    model = keras.Sequential([keras.Input((12, 12, 3)), layer, keras.layers.Flatten(), keras.layers.Dense(2)])
    model.compile("sgd", "sparse_categorical_crossentropy")
    before = [to_numpy(w) for w in layer.weights]
    model.fit(X, RNG.integers(0, 2, size=len(X)), epochs=1, batch_size=32, verbose=0)
    assert layer.trainable_weights == []
    for weight, value in zip(layer.weights, before):
        np.testing.assert_array_equal(to_numpy(weight), value)


def test_keras_file_round_trip(tmp_path):
    layer = ZCAWhitening.from_data(X, kernel_size=5, eps=0.1, name="zca")
    model = keras.Sequential([keras.Input((12, 12, 3)), layer, keras.layers.Conv2D(2, 3)])
    path = str(tmp_path / "model.keras")
    model.save(path)
    loaded = keras.saving.load_model(path)
    np.testing.assert_array_equal(to_numpy(loaded(X[:4])), to_numpy(model(X[:4])))
    assert loaded.get_layer("zca").is_adapted
    config = json.loads(json.dumps(layer.get_config()))
    assert (config["kernel_size"], config["eps"], config["data_format"]) == ([5, 5], 0.1, "channels_last")
    assert ZCAWhitening.from_config(config).get_config() == layer.get_config()


def test_bad_input_is_refused_by_name():
    with pytest.raises(ValueError, match=re.escape("`kernel_size` must be odd (a patch has a centre pixel)")):
        ZCAWhitening(kernel_size=2)
    with pytest.raises(ValueError, match=re.escape("`data_format` must be 'channels_last' or 'channels_first'")):
        ZCAWhitening(data_format="nhwc")
    with pytest.raises(ValueError, match=re.escape("The data does not vary: there is nothing to whiten")):
        ZCAWhitening.from_data(np.ones((4, 8, 8, 3), "float32"))
    layer = ZCAWhitening.from_data(X)
    with pytest.raises(ValueError, match=re.escape("ZCAWhitening was built for 3 channels; the data has 1.")):
        layer.adapt(X[..., :1])
    with pytest.raises(ValueError, match=re.escape("ZCAWhitening adapts on images (n, height, width, channels)")):
        ZCAWhitening().adapt(X[:, :, :, 0])
