"""The data's patch statistics (patch_statistics, correlation_from_data) and PatchWhitening."""

import math

import keras
import numpy as np
import pytest

from conftest import to_numpy
from keras_corrinit import CorrelatedHeNormal, PatchWhitening, correlation_from_data
from keras_corrinit.extraction import patch_statistics


def ar1_field(n, size, rho, channels, seed):
    """Stationary separable AR(1) images: corr between pixels (dy, dx) apart is rho**(|dy| + |dx|)."""
    rng = np.random.default_rng(seed)
    field = rng.normal(size=(n, size, size, channels))
    for axis in (1, 2):
        out = np.empty_like(field)
        first = [slice(None)] * 4
        first[axis] = 0
        out[tuple(first)] = field[tuple(first)]
        for i in range(1, size):
            here, before = [slice(None)] * 4, [slice(None)] * 4
            here[axis], before[axis] = i, i - 1
            out[tuple(here)] = rho * out[tuple(before)] + math.sqrt(1 - rho**2) * field[tuple(here)]
        field = out
    return field.astype("float32")


def conv_model(channels, filters=4):
    inputs = keras.Input((None, None, channels))
    h = keras.layers.Conv2D(filters, 3, name="first")(inputs)
    outputs = keras.layers.Conv2D(filters, 3, strides=2, padding="same", name="second")(keras.layers.ReLU()(h))
    return keras.Model(inputs, outputs)


def test_a_planted_spatial_correlation_is_recovered():
    rho, n = 0.6, 1500
    images = ar1_field(n, 8, rho, 2, seed=0)
    estimate = correlation_from_data(conv_model(2), images, layers=["first"], batch_size=n, max_patches_per_batch=None)
    grid = np.array([(i, j) for i in range(3) for j in range(3)])
    expected = rho ** np.abs(grid[:, None, :] - grid[None, :, :]).sum(axis=-1)
    # Patches of one image are dependent: count the images (n), not the patches, as independent samples;
    # a correlation r estimated from n samples has standard error (1 - r^2) / sqrt(n).
    tolerance = 5 * (1 - expected**2) / math.sqrt(n) + 1e-12
    np.testing.assert_array_less(np.abs(estimate.layer_matrices["first"] - expected), tolerance)
    assert estimate.layer_names == ["first"] and estimate.source == "data patches"
    # The data's R drives the correlated initializer directly.
    assert CorrelatedHeNormal(estimate, seed=0)((3, 3, 2, 4)).shape == (3, 3, 2, 4)


def test_a_planted_patch_covariance_is_recovered():
    d, n = 3 * 3 * 2, 20000
    rng = np.random.default_rng(1)
    a = rng.normal(size=(d, d)) / math.sqrt(d)
    sigma = a @ a.T + 0.1 * np.eye(d)
    # One patch per image: every patch is an independent draw of N(mu, sigma).
    mu = rng.normal(size=d)
    images = (rng.normal(size=(n, d)) @ np.linalg.cholesky(sigma).T + mu).reshape(n, 3, 3, 2).astype("float32")
    stats = patch_statistics(conv_model(2), images, layers="first", batch_size=n, max_patches_per_batch=None)
    s = stats["first"]
    assert s.count == n and s.covariance.shape == (d, d)
    # Var of a sample covariance entry: (sigma_ii sigma_jj + sigma_ij^2) / n.
    se = np.sqrt((np.outer(np.diag(sigma), np.diag(sigma)) + sigma**2) / n)
    np.testing.assert_array_less(np.abs(s.covariance - sigma), 5 * se)
    np.testing.assert_array_less(np.abs(s.mean - mu), 5 * np.sqrt(np.diag(sigma) / n) + 1e-4)


def test_every_conv_is_measured_on_what_it_sees_and_nothing_changes():
    images = ar1_field(8, 10, 0.5, 3, seed=2)
    model = conv_model(3)
    before = [to_numpy(w) for w in model.weights]
    stats = patch_statistics(model, images, batch_size=8, max_patches_per_batch=None)
    assert list(stats) == ["first", "second"]
    assert stats["first"].count == 8 * 8 * 8 and stats["second"].count == 8 * 4 * 4  # valid; stride 2, same
    assert stats["second"].in_channels == 4 and stats["second"].dimension == 36
    for w, b in zip(model.weights, before):
        np.testing.assert_array_equal(to_numpy(w), b)
    assert "call" not in vars(model.get_layer("first"))


def test_bad_input_is_named():
    model = conv_model(2)
    with pytest.raises(ValueError, match=r"`data` contains NaN or Inf \(in inputs of shape \(4, 6, 6, 2\)\)"):
        patch_statistics(model, np.full((4, 6, 6, 2), np.nan, "float32"))
    with pytest.raises(ValueError, match="no Conv2D layer to measure"):
        patch_statistics(keras.Sequential([keras.Input((4,)), keras.layers.Dense(2)]), np.zeros((4, 4)))
    with pytest.raises(ValueError, match="matching `layers`='nothing'"):
        patch_statistics(model, np.zeros((4, 6, 6, 2)), layers="nothing")
    with pytest.raises(ValueError, match="`data` does not fit|shape"):
        patch_statistics(model, np.zeros((4, 6, 6, 5), "float32"))
    with pytest.warns(UserWarning, match="3 patches for a 18-dimensional patch covariance: it is singular"):
        patch_statistics(model, np.zeros((3, 3, 3, 2), "float32") + np.arange(3)[:, None, None, None], layers="first")


# ------------------------------------------------------------ PatchWhitening
def test_whitened_outputs_have_identity_covariance_on_the_kept_directions():
    images = ar1_field(64, 10, 0.7, 3, seed=3).astype("float64")
    whitening = PatchWhitening.from_data(images, 3, max_patches_per_batch=None, eps=1e-6)
    layer = keras.layers.Conv2D(2 * 10, 3, use_bias=False, kernel_initializer=whitening, dtype="float32")
    out = to_numpy(layer(images.astype("float32"))).reshape(-1, 20).astype(np.float64)
    plus, minus = out[:, 0::2], out[:, 1::2]
    np.testing.assert_allclose(minus, -plus, rtol=0, atol=1e-6 * np.abs(plus).max())
    covariance = np.cov(plus, rowvar=False)
    expected = np.diag(whitening.eigenvalues[:10] / (whitening.eigenvalues[:10] + 1e-6))
    # float32 convolution of float64 filters: relative error about 1e-6 per product, summed over 27 terms
    np.testing.assert_allclose(covariance, expected, atol=1e-4)
    assert whitening.eigenvalues[0] >= whitening.eigenvalues[9]  # largest first


def test_filter_count_order_and_shape_are_checked():
    cov = np.diag(np.arange(1.0, 10.0))  # a 3x3 single-channel patch: D = 9, eigenvalues 1..9
    init = PatchWhitening(cov, 3, 1, eps=1.0)
    kernel = to_numpy(init((3, 3, 1, 3))).reshape(9, 3)
    # +w_1, -w_1, +w_2 with w_i = v_i / sqrt(lambda_i + eps): v_1 = e_9 (lambda 9), v_2 = e_8 (lambda 8)
    np.testing.assert_allclose(kernel[:, 0], np.eye(9)[8] / math.sqrt(10), rtol=1e-6)
    np.testing.assert_allclose(kernel[:, 1], -kernel[:, 0])
    np.testing.assert_allclose(kernel[:, 2], np.eye(9)[7] / 3.0, rtol=1e-6)
    with pytest.raises(ValueError, match=r"at most 2 \* 9 filters .* the layer asks for 19"):
        init((3, 3, 1, 19))
    with pytest.raises(ValueError, match=r"built for kernels \(3, 3, 1, 'filters'\); received shape \(3, 3, 2, 4\)"):
        init((3, 3, 2, 4))
    with pytest.raises(ValueError, match=r"`covariance` must be \(18, 18\)"):
        PatchWhitening(cov, 3, 2)
    with pytest.raises(ValueError, match="no positive eigenvalue"):
        PatchWhitening(np.zeros((9, 9)), 3, 1)
    with pytest.raises(ValueError, match="`images` must be"):
        PatchWhitening.from_data(np.zeros((4, 6, 6)), 3)


def test_channels_first_patches_are_those_of_the_kernel_layout():
    images = ar1_field(64, 8, 0.5, 3, seed=4)

    def model(data_format):
        shape = (3, 8, 8) if data_format == "channels_first" else (8, 8, 3)
        return keras.Sequential([keras.Input(shape), keras.layers.Conv2D(4, 3, data_format=data_format, name="c")])

    last = patch_statistics(model("channels_last"), images, batch_size=64, max_patches_per_batch=None)["c"]
    first = patch_statistics(
        model("channels_first"), np.transpose(images, (0, 3, 1, 2)), batch_size=64, max_patches_per_batch=None
    )["c"]
    np.testing.assert_allclose(first.covariance, last.covariance, rtol=1e-6, atol=1e-9)


def test_layers_are_checked_and_a_users_own_call_survives():
    model = conv_model(2)
    images = ar1_field(16, 8, 0.5, 2, seed=5)
    with pytest.raises(ValueError, match=r"`layers` names \['typo'\], which are not Conv2D layers of the model; "):
        patch_statistics(model, images, layers=["first", "typo"])
    with pytest.raises(TypeError, match="`layers` must be None, a regular expression or a list of layer names"):
        patch_statistics(model, images, layers=3)
    with pytest.raises(ValueError, match="`max_patches_per_batch` must be an int >= 2; received -5"):
        patch_statistics(model, images, max_patches_per_batch=-5)
    with pytest.raises(ValueError, match=r"`seed` must be None or an int in \[0, 2\*\*32\); received -1"):
        patch_statistics(model, images, seed=-1)
    first = model.get_layer("first")
    calls = []
    original = first.call

    def counted(*args, **kwargs):
        calls.append(1)
        return original(*args, **kwargs)

    first.call = counted  # a user's own instance-level call
    patch_statistics(model, images, layers=["first"])
    assert first.__dict__["call"] is counted
    model(images)
    assert len(calls) >= 2  # used during the measurement and after it


@pytest.mark.parametrize(
    "scale, message",
    [(1e-300, r"largest eigenvalue is 1e-300, outside \[1e-30, 1e\+30\]"), (1e300, "largest eigenvalue is 1e\\+300")],
)
def test_patch_whitening_refuses_a_covariance_float32_cannot_whiten(scale, message):
    with pytest.raises(ValueError, match=message):
        PatchWhitening(np.eye(9) * scale, 3, 1)


def test_patch_whitening_refuses_a_covariance_that_is_not_positive_semi_definite_also_from_a_file():
    indefinite = np.diag([1.0, -0.5] + [1.0] * 7)
    with pytest.raises(ValueError, match=r"`covariance` is not positive semi-definite \(smallest eigenvalue -0.5"):
        PatchWhitening(indefinite, 3, 1)
    config = PatchWhitening(np.eye(9), 3, 1).get_config() | {"covariance": indefinite.tolist()}
    with pytest.raises(ValueError, match="not positive semi-definite"):
        keras.initializers.deserialize({"class_name": "keras_corrinit>PatchWhitening", "config": config})


@pytest.mark.parametrize(
    "kwargs, error, message",
    [
        ({"strides": 0}, ValueError, r"`strides` must be positive; received \(0, 0\)"),
        ({"strides": "2"}, TypeError, "`strides` must be an int or a tuple of two ints"),
        ({"padding": "full"}, ValueError, "`padding` must be 'valid' or 'same'"),
        ({"max_patches_per_batch": 1}, ValueError, "`max_patches_per_batch` must be an int >= 2"),
        ({"seed": -1}, ValueError, r"`seed` must be None or an int in \[0, 2\*\*32\)"),
    ],
)
def test_patch_whitening_from_data_checks_its_arguments(kwargs, error, message):
    with pytest.raises(error, match=message):
        PatchWhitening.from_data(ar1_field(4, 8, 0.5, 1, seed=0), 3, **kwargs)


def test_constant_images_uint8_and_a_kernel_larger_than_the_image_are_said():
    constant = np.full((8, 10, 10, 2), 0.5, "float32")
    with pytest.raises(ValueError, match=r"The input patches of \['first'\] do not vary"):
        correlation_from_data(conv_model(2), constant, layers=["first"])
    rng = np.random.default_rng(0)
    pixels = rng.integers(0, 256, size=(16, 8, 8, 3), dtype=np.uint8)  # images as loaded
    whitening = PatchWhitening.from_data(pixels, 3)
    reference = PatchWhitening.from_data(pixels.astype("float32"), 3)
    np.testing.assert_allclose(whitening.covariance, reference.covariance, rtol=1e-6)
    with pytest.raises(ValueError, match=r"`kernel_size` \(9, 9\) is larger than the images \(8x8\): no patch fits"):
        PatchWhitening.from_data(pixels, 9)
    with pytest.raises(TypeError, match="`images` must hold numbers; received dtype <U1"):
        PatchWhitening.from_data(np.full((2, 4, 4, 1), "a"), 3)
