"""Depthwise covariance: FilterCovariance, ConstructedFilterCovariance, DepthwiseCovariance, transfer."""

import math

import keras
import numpy as np
import pytest

from conftest import InjectedFailure, assert_weights_equal, fail_on_nth_assign, weights_of
from keras_corrinit.correlation import filter_covariance, resample_covariance
from keras_corrinit.extraction import DepthwiseCovariance, depthwise_covariance_from_model
from keras_corrinit.initializers import ConstructedFilterCovariance, FilterCovariance
from keras_corrinit.layerwise import apply_initializers, depthwise_layerwise_initializers, reinitialize_depthwise


def to_numpy(x):
    return np.asarray(keras.ops.convert_to_numpy(x), dtype=np.float64)


def filters_of(kernel):
    """(n, P) matrix of a kernel's spatial filters."""
    k = to_numpy(kernel)
    return k.reshape(math.prod(k.shape[:-2]), -1).T


def assert_within_5_se(samples, sigma):
    """Second moments of zero-mean samples against sigma, entry by entry.

    For x ~ N(0, sigma), x_i x_j has variance sigma_ii sigma_jj + sigma_ij^2;
    its mean over n samples has that over n as its squared standard error.
    """
    n = samples.shape[0]
    estimate = samples.T @ samples / n
    se = np.sqrt((np.outer(np.diag(sigma), np.diag(sigma)) + sigma**2) / n)
    worst = np.max(np.abs(estimate - sigma) / se)
    assert worst < 5, f"an entry is {worst:.1f} standard errors from the constructed covariance"


def random_covariance(p, seed):
    a = np.random.default_rng(seed).normal(size=(p, p))
    return a @ a.T / p


def test_constructed_covariance_is_what_the_filters_have():
    init = ConstructedFilterCovariance(relative_depth=0.3, seed=1)
    sigma = init.covariance_matrix((7, 7))
    kernel = init((7, 7, 64, 32))  # 2048 filters
    assert_within_5_se(filters_of(kernel), sigma)


def test_constructed_covariance_formula():
    init = ConstructedFilterCovariance(sigma=0.7, envelope=0.9, gain=2.0, seed=0)
    sigma = init.covariance_matrix((5, 5))
    u = np.stack(np.meshgrid(*(np.arange(5) - 2.0,) * 2, indexing="ij"), -1).reshape(-1, 2) / 2.0
    expected = np.exp(-((u[:, None] - u[None]) ** 2).sum(-1) / (2 * 0.7**2))
    e = np.exp(-(u**2).sum(-1) / (4 * 0.9**2))
    expected = expected * np.outer(e, e)
    np.testing.assert_allclose(sigma, expected * 2.0 / np.trace(expected), rtol=1e-12)
    assert np.linalg.eigvalsh(sigma).min() > -1e-12


def test_defaults_grow_with_depth():
    first, last = ConstructedFilterCovariance(0.0), ConstructedFilterCovariance(1.0)
    middle = ConstructedFilterCovariance(0.5)
    assert (first.sigma, first.envelope, last.sigma, last.envelope) == (0.5, 0.5, 1.0, 1.0)
    assert (middle.sigma, middle.envelope) == (0.75, 0.75)
    assert ConstructedFilterCovariance(0.0, sigma=2.0).sigma == 2.0


def test_filter_covariance_samples_the_given_matrix_and_resamples_it():
    planted = random_covariance(25, seed=3)
    init = FilterCovariance(planted, seed=4)
    assert init.spatial_shape == (5, 5)
    assert_within_5_se(filters_of(init((5, 5, 96, 24))), planted)
    moved = init.covariance_matrix((7, 7))
    np.testing.assert_allclose(moved, resample_covariance(planted, (5, 5), (7, 7)))
    assert_within_5_se(filters_of(init((7, 7, 96, 24))), moved)


def test_resampling_moves_linear_filters_exactly_and_keeps_the_trace():
    # Linear interpolation reproduces a linear ramp exactly, so the covariance
    # of a ramp filter moves to the covariance of the same ramp on the new grid.
    def ramp(k):
        y, x = np.meshgrid(np.linspace(-1, 1, k), np.linspace(-1, 1, k), indexing="ij")
        return (0.3 + 2 * x - y).ravel()

    source = np.outer(ramp(5), ramp(5))
    moved = resample_covariance(source, (5, 5), (9, 9))
    expected = np.outer(ramp(9), ramp(9))
    np.testing.assert_allclose(moved, expected * np.trace(source) / np.trace(expected), atol=1e-12)
    planted = random_covariance(49, seed=0)
    down = resample_covariance(planted, (7, 7), (3, 3))
    assert math.isclose(np.trace(down), np.trace(planted), rel_tol=1e-12)
    assert np.linalg.eigvalsh(down).min() > -1e-10
    np.testing.assert_array_equal(resample_covariance(planted, (7, 7), (7, 7)), planted)


def convmixer_like(depth, kernel_size, channels=64):
    inputs = keras.Input((12, 12, channels))
    x = inputs
    for i in range(depth):
        x = keras.layers.DepthwiseConv2D(kernel_size, padding="same", name=f"dw{i}")(x)
        x = keras.layers.Conv2D(channels, 1, name=f"pw{i}")(x)
    return keras.Model(inputs, x)


def test_covariances_measured_on_a_model_with_planted_statistics():
    model = convmixer_like(3, 5, channels=512)
    planted = [random_covariance(25, seed=s) for s in range(3)]
    rng = np.random.default_rng(0)
    for i, sigma in enumerate(planted):
        filters = rng.normal(size=(512, 25)) @ np.linalg.cholesky(sigma).T
        model.get_layer(f"dw{i}").kernel.assign(filters.T.reshape(5, 5, 512, 1))
    estimate = depthwise_covariance_from_model(model, source="planted")
    assert estimate.layers == ["dw0", "dw1", "dw2"] and estimate.counts == [512] * 3
    assert estimate.spatial_shapes == [(5, 5)] * 3
    for measured, sigma in zip(estimate.covariances, planted):
        # centred estimator: same standard errors as above to first order
        se = np.sqrt((np.outer(np.diag(sigma), np.diag(sigma)) + sigma**2) / 512)
        assert np.max(np.abs(measured - sigma) / se) < 5
    direct, n = filter_covariance(model.get_layer("dw1").kernel)
    np.testing.assert_allclose(estimate.covariances[1], direct)
    assert n == 512


def test_transfer_by_relative_depth_and_kernel_size():
    covariances = [random_covariance(25, seed=s) for s in range(3)]
    estimate = DepthwiseCovariance(["a", "b", "c"], [(5, 5)] * 3, covariances, [10] * 3)
    target = convmixer_like(5, 7)
    initializers = depthwise_layerwise_initializers(target, estimate, seed=0)
    assert list(initializers) == [f"dw{i}" for i in range(5)]
    # target depths 0, .25, .5, .75, 1 -> source positions 0, .5, 1, 1.5, 2
    expected = [
        covariances[0],
        (covariances[0] + covariances[1]) / 2,
        covariances[1],
        (covariances[1] + covariances[2]) / 2,
        covariances[2],
    ]
    for init, sigma in zip(initializers.values(), expected):
        np.testing.assert_allclose(
            init.covariance_matrix((7, 7)), resample_covariance(sigma, (5, 5), (7, 7)), atol=1e-12
        )
    apply_initializers(target, initializers)
    layer = target.get_layer("dw2")
    assert layer.depthwise_initializer is initializers["dw2"]
    sample = filters_of(layer.kernel)
    assert sample.shape == (64, 49)


@pytest.mark.slow
def test_convnext_tiny_reinitialized_in_one_call():
    model = keras.applications.ConvNeXtTiny(weights=None, include_top=False, input_shape=(32, 32, 3))
    pointwise_before = to_numpy(model.get_layer("convnext_tiny_stage_0_block_0_pointwise_conv_1").kernel)
    initializers = reinitialize_depthwise(model, seed=0, gain=2.0)
    assert len(initializers) == 18  # 3 + 3 + 9 + 3 blocks, one 7x7 depthwise conv each
    depths = [init.relative_depth for init in initializers.values()]
    assert depths[0] == 0.0 and depths[-1] == 1.0 and depths == sorted(depths)
    for name, init in initializers.items():
        layer = model.get_layer(name)
        assert layer.kernel_initializer is init  # grouped Conv2D: its kernel_initializer
        filters = filters_of(layer.kernel)
        # mean squared norm of n filters, each with expected squared norm = trace = 2
        n = filters.shape[0]
        sigma = init.covariance_matrix((7, 7))
        se = math.sqrt(2 * np.sum(sigma**2) / n)
        assert abs((filters**2).sum(1).mean() - 2.0) < 5 * se
    np.testing.assert_array_equal(
        to_numpy(model.get_layer("convnext_tiny_stage_0_block_0_pointwise_conv_1").kernel), pointwise_before
    )


def test_separable_conv_depthwise_part():
    model = keras.Sequential([keras.Input((8, 8, 16)), keras.layers.SeparableConv2D(8, 5, name="sep")])
    initializers = reinitialize_depthwise(model, seed=1)
    assert list(initializers) == ["sep/depthwise_kernel"]
    assert model.get_layer("sep").depthwise_initializer is initializers["sep/depthwise_kernel"]
    with pytest.raises(
        ValueError,
        match=r"'sep': SeparableConv2D has the kernels \['sep/depthwise_kernel', "
        r"'sep/pointwise_kernel'\]; name one",
    ):
        apply_initializers(model, {"sep": initializers["sep/depthwise_kernel"]})


def test_seed_semantics():
    a = to_numpy(ConstructedFilterCovariance(seed=7)((5, 5, 4, 2)))
    b = to_numpy(ConstructedFilterCovariance(seed=7)((5, 5, 4, 2)))
    np.testing.assert_array_equal(a, b)
    generator = ConstructedFilterCovariance(seed=keras.random.SeedGenerator(3))
    assert not np.array_equal(to_numpy(generator((5, 5, 4, 2))), to_numpy(generator((5, 5, 4, 2))))
    target = convmixer_like(2, 5)
    first, second = (
        to_numpy(init((5, 5, 64, 1))) for init in depthwise_layerwise_initializers(target, seed=3).values()
    )
    # the two layers' int seeds are derived and differ: their draws are independent
    assert abs(np.corrcoef(first.ravel(), second.ravel())[0, 1]) < 5 / math.sqrt(first.size)


@pytest.mark.parametrize(
    "make",
    [
        lambda: ConstructedFilterCovariance(relative_depth=0.2, sigma=0.8, gain=1.5, seed=5),
        lambda: FilterCovariance(random_covariance(25, seed=1), seed=5),
    ],
)
def test_keras_round_trip(tmp_path, make):
    init = make()
    model = keras.Sequential(
        [
            keras.Input((10, 10, 6)),
            keras.layers.DepthwiseConv2D(5, depthwise_initializer=init, name="dw"),
        ]
    )
    path = str(tmp_path / "m.keras")
    model.save(path)
    loaded = keras.models.load_model(path)
    np.testing.assert_array_equal(to_numpy(loaded.get_layer("dw").kernel), to_numpy(model.get_layer("dw").kernel))
    restored = loaded.get_layer("dw").depthwise_initializer
    assert type(restored) is type(init) and restored.get_config() == init.get_config()
    np.testing.assert_array_equal(to_numpy(restored((5, 5, 6, 1))), to_numpy(init((5, 5, 6, 1))))


def test_depthwise_covariance_save_load(tmp_path):
    estimate = depthwise_covariance_from_model(convmixer_like(2, 3), source="x")
    estimate.save(str(tmp_path / "cov.json"))
    loaded = DepthwiseCovariance.load(str(tmp_path / "cov.json"))
    assert loaded.layers == estimate.layers and loaded.source == "x"
    for a, b in zip(loaded.covariances, estimate.covariances):
        np.testing.assert_array_equal(a, b)
    config = estimate.get_config()
    with pytest.raises(ValueError, match=r"config is a dict with the keys \['counts', 'covariances', 'layers'"):
        DepthwiseCovariance.from_config({k: v for k, v in config.items() if k != "counts"})
    with pytest.raises(ValueError, match="of one length, at least 1, one entry per layer"):
        DepthwiseCovariance.from_config({**config, "counts": config["counts"][:1]})


def _dense():
    return keras.Sequential([keras.Input((4,)), keras.layers.Dense(2)])


@pytest.mark.parametrize(
    "call, error, message",
    [
        (lambda: FilterCovariance(-np.eye(9)), ValueError, r"`covariance` must be positive semi-definite"),
        (
            lambda: FilterCovariance(np.eye(9) + np.triu(np.ones((9, 9)), 1)),
            ValueError,
            r"`covariance` is not symmetric",
        ),
        (
            lambda: FilterCovariance(np.eye(10)),
            ValueError,
            r"`covariance` is \(10, 10\), not \(k\*k, k\*k\); pass `spatial_shape`",
        ),
        (
            lambda: FilterCovariance(np.eye(10), spatial_shape=(3, 3)),
            ValueError,
            r"`covariance` must be \(9, 9\) for kernels of spatial shape \(3, 3\)",
        ),
        (
            lambda: ConstructedFilterCovariance(relative_depth=1.5),
            ValueError,
            r"`relative_depth` must be a number in \[0, 1\]; received 1.5",
        ),
        (lambda: ConstructedFilterCovariance(gain=0), ValueError, r"`gain` must be a finite number > 0; received 0.0"),
        (
            lambda: ConstructedFilterCovariance(sigma=-1),
            ValueError,
            r"`sigma` must be a finite number > 0 or None; received -1.0",
        ),
        (
            lambda: ConstructedFilterCovariance()((4, 4)),
            ValueError,
            r"initializes convolution kernels \(\*spatial, a, b\); received \(4, 4\)",
        ),
        (
            lambda: depthwise_layerwise_initializers(
                convmixer_like(1, 3), DepthwiseCovariance(["a"], [(3, 3)], [np.eye(9)], [4]), gain=2.0
            ),
            ValueError,
            r"\['gain'\] apply to the closed form only; pass `covariance=None`",
        ),
        (
            lambda: depthwise_layerwise_initializers(convmixer_like(1, 3), np.eye(9)),
            TypeError,
            "`covariance` must be None or a DepthwiseCovariance; received ndarray",
        ),
        (lambda: reinitialize_depthwise(_dense()), ValueError, "`target` has no depthwise kernels to initialize"),
        (lambda: depthwise_covariance_from_model(_dense()), ValueError, "The model has no depthwise kernels"),
    ],
    ids=[
        "not-psd",
        "not-symmetric",
        "not-square-grid",
        "wrong-size",
        "relative-depth",
        "gain",
        "sigma",
        "not-a-conv-kernel",
        "construction-with-covariance",
        "covariance-type",
        "reinitialize-no-depthwise",
        "measure-no-depthwise",
    ],
)
def test_bad_input(call, error, message):
    with pytest.raises(error, match=message):
        call()


def test_reinitialize_depthwise_is_all_or_nothing(monkeypatch):
    model = keras.Sequential(
        [keras.Input((12, 12, 4))] + [keras.layers.DepthwiseConv2D(5, padding="same", name=f"dw{i}") for i in range(3)]
    )
    before = weights_of(model)
    fail_on_nth_assign(monkeypatch, model.layers[0].kernel, 2)
    with pytest.raises(InjectedFailure):
        reinitialize_depthwise(model, seed=0)
    assert_weights_equal(model, before)
    assert all(not isinstance(layer.depthwise_initializer, ConstructedFilterCovariance) for layer in model.layers)


@pytest.mark.parametrize(
    "kwargs, message",
    [
        ({"gain": 1e300}, "`gain` give weights with a standard deviation of 1e\\+150, beyond what float32 holds"),
        ({"gain": float("inf")}, "`gain` must be a finite number > 0"),
        ({"sigma": -1.0}, "`sigma` must be a finite number > 0 or None"),
        ({"relative_depth": 2}, r"`relative_depth` must be a number in \[0, 1\]"),
    ],
)
def test_constructed_covariance_refuses_unusable_parameters(kwargs, message):
    with pytest.raises(ValueError, match=message):
        ConstructedFilterCovariance(**kwargs)


@pytest.mark.parametrize("kwargs", [{"sigma": 1e-300}, {"envelope": 1e-300}, {"sigma": 1e300}, {"envelope": 1e300}])
@pytest.mark.parametrize("kernel", [(7, 7), (4, 4), (3,)])
def test_extreme_lengths_give_finite_covariances_and_weights(kwargs, kernel):
    init = ConstructedFilterCovariance(seed=0, **kwargs)
    covariance = init.covariance_matrix(kernel)
    assert np.all(np.isfinite(covariance))
    assert np.trace(covariance) == pytest.approx(1.0, rel=1e-12)
    weights = keras.ops.convert_to_numpy(init((*kernel, 8, 1)))
    assert np.all(np.isfinite(weights)) and np.any(weights != 0)


def test_tiny_lengths_are_their_limits():
    # sigma -> 0: no correlation between positions; envelope -> 0: all
    # variance at the centre; sigma -> inf: one constant filter (rank 1).
    no_correlation = ConstructedFilterCovariance(sigma=1e-300, envelope=1e300).covariance_matrix((3, 3))
    np.testing.assert_allclose(no_correlation, np.eye(9) / 9, atol=1e-12)
    centre = ConstructedFilterCovariance(envelope=1e-300).covariance_matrix((3, 3))
    np.testing.assert_allclose(centre, np.diag(np.eye(9)[4]), atol=1e-12)
    constant = ConstructedFilterCovariance(sigma=1e300, envelope=1e300).covariance_matrix((3, 3))
    np.testing.assert_allclose(constant, np.full((9, 9), 1 / 9), atol=1e-12)


def test_filter_covariance_refuses_a_scale_float32_cannot_hold():
    with pytest.raises(ValueError, match="`covariance` give weights with a standard deviation of 1e\\+150"):
        FilterCovariance(np.eye(9) * 1e300)
    with pytest.raises(ValueError, match="which is 0 in float32"):
        FilterCovariance(np.eye(9) * 1e-300)
    # float16 holds less: checked when the kernel is drawn
    with pytest.raises(ValueError, match="beyond what float16 holds"):
        FilterCovariance(np.eye(9) * 1e10, seed=0)((3, 3, 4, 1), dtype="float16")
