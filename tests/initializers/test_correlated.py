import math
import warnings

import keras
import numpy as np
import pytest

from conftest import to_numpy
from keras_corrinit import CorrelatedHeNormal, EnhancedGamma, NFMInit, SpatialCorrelation
from keras_corrinit.correlation import matrix_profile
from keras_corrinit.initializers import DEFAULT_CORRELATION

# Sample statistics are checked at 5 standard errors: with the fixed seeds
# below a correct implementation passes; a wrong formula is off by far more.
Z = 5.0

stats = pytest.importorskip("scipy.stats", reason="needs scipy: pip install 'keras_corrinit[test]'")


def _filters(w):
    """(P, n_filters) view of a (*spatial, in, out) kernel."""
    return w.reshape(math.prod(w.shape[:-2]), -1)


# --------------------------------------------------------- CorrelatedHeNormal
def test_sampled_correlation_matches_r():
    shape = (3, 3, 128, 128)
    init = CorrelatedHeNormal(seed=11)
    w = to_numpy(init(shape))
    n = shape[2] * shape[3]
    r_hat = np.corrcoef(_filters(w))
    r = DEFAULT_CORRELATION.matrix_for((3, 3))
    # standard error of a sample correlation is (1 - r^2) / sqrt(n) <= 1 / sqrt(n)
    assert np.abs(r_hat - r).max() < Z / math.sqrt(n)
    np.testing.assert_allclose(init.correlation_matrix((3, 3)), r)


@pytest.mark.parametrize("variance_mode", ["filter", "weight"])
def test_per_weight_variance_formula(variance_mode):
    shape = (3, 3, 128, 128)
    r = SpatialCorrelation.exponential_decay(0.6).matrix_for((3, 3))
    init = CorrelatedHeNormal(r, variance_mode=variance_mode, seed=5)
    w = _filters(to_numpy(init(shape)))
    fan_in, p, n = 9 * 128, 9, 128 * 128
    expected = 2.0 * p / (r.sum() * fan_in) if variance_mode == "filter" else 2.0 / fan_in
    # each position's variance over n independent filters: relative s.e. sqrt(2 / n)
    per_position = (w**2).mean(axis=1)
    np.testing.assert_allclose(per_position, expected, rtol=Z * math.sqrt(2 / n))
    assert abs(w.mean()) < Z * math.sqrt(expected * r.sum() / p / n)
    if variance_mode == "filter":
        # eq. 17: the variance of a filter's sum equals the uncorrelated case
        sums = w.sum(axis=0)
        np.testing.assert_allclose(sums.var(), 2.0 * p / fan_in, rtol=Z * math.sqrt(2 / n))


def test_identity_equals_keras_untruncated_he_normal():
    he = keras.initializers.VarianceScaling(2.0, "fan_in", "untruncated_normal", seed=3)
    for correlation in [np.eye(9), SpatialCorrelation.identity()]:
        for mode in ["filter", "weight"]:
            init = CorrelatedHeNormal(correlation, variance_mode=mode, seed=3)
            np.testing.assert_array_equal(to_numpy(init((3, 3, 16, 8))), to_numpy(he((3, 3, 16, 8))))


def test_alpha_zero_is_he_and_alpha_scales_correlation():
    he = keras.initializers.VarianceScaling(2.0, "fan_in", "untruncated_normal", seed=4)
    np.testing.assert_array_equal(
        to_numpy(CorrelatedHeNormal(alpha=0.0, seed=4)((3, 3, 4, 4))),
        to_numpy(he((3, 3, 4, 4))),
    )
    w = to_numpy(CorrelatedHeNormal(alpha=0.5, seed=4)((3, 3, 128, 128)))
    r_hat = np.corrcoef(_filters(w))
    expected = DEFAULT_CORRELATION.matrix_for((3, 3), alpha=0.5)
    assert np.abs(r_hat - expected).max() < Z / 128


@pytest.mark.parametrize("shape", [(1, 1, 64, 64), (256, 128)])
def test_single_position_kernels_are_he_normal(shape):
    he = keras.initializers.VarianceScaling(2.0, "fan_in", "untruncated_normal", seed=9)
    init = CorrelatedHeNormal(np.full((9, 9), 0.5) + 0.5 * np.eye(9), seed=9)
    np.testing.assert_allclose(to_numpy(init(shape)), to_numpy(he(shape)), rtol=1e-6)


@pytest.mark.parametrize("shape", [(5, 16, 32), (5, 5, 8, 16), (1, 7, 8, 16), (3, 3, 3, 4, 8)])
def test_other_kernel_shapes_use_distance_structure(shape):
    init = CorrelatedHeNormal(seed=2)
    w = to_numpy(init(shape))
    assert w.shape == shape
    spatial = shape[:-2]
    r = DEFAULT_CORRELATION.matrix_for(spatial)
    fan_in = math.prod(spatial) * shape[-2]
    expected_var = 2.0 * len(r) / (r.sum() * fan_in)
    n = shape[-2] * shape[-1]
    np.testing.assert_allclose(w.var(), expected_var, rtol=Z * math.sqrt(2 / n))


@pytest.mark.slow
def test_layers_accept_initializer_and_depthwise_fan_in():
    init = CorrelatedHeNormal(seed=1)
    for layer, x in [
        (keras.layers.Conv1D(4, 3, kernel_initializer=init), np.zeros((1, 8, 2))),
        (keras.layers.Conv2D(4, 3, kernel_initializer=init), np.zeros((1, 8, 8, 2))),
        (keras.layers.Conv3D(4, 3, kernel_initializer=init), np.zeros((1, 5, 5, 5, 2))),
        (keras.layers.Conv2DTranspose(4, 3, kernel_initializer=init), np.zeros((1, 8, 8, 2))),
        (keras.layers.DepthwiseConv2D(3, depthwise_initializer=init), np.zeros((1, 8, 8, 2))),
        (keras.layers.Dense(4, kernel_initializer=init), np.zeros((1, 2))),
    ]:
        layer(x.astype("float32"))
        assert np.all(np.isfinite(to_numpy(layer.weights[0])))
    # DepthwiseConv2D kernel (3, 3, 2, 1): fan_in = 9 * 2 as Keras's he_normal has it
    dw = keras.layers.DepthwiseConv2D(
        3, depthwise_initializer=CorrelatedHeNormal(SpatialCorrelation.identity(), seed=1)
    )
    he = keras.layers.DepthwiseConv2D(
        3, depthwise_initializer=keras.initializers.VarianceScaling(2.0, "fan_in", "untruncated_normal", seed=1)
    )
    dw.build((None, 8, 8, 2))
    he.build((None, 8, 8, 2))
    np.testing.assert_array_equal(to_numpy(dw.kernel), to_numpy(he.kernel))


def test_int_seed_repeats_and_seed_generator_advances():
    init = CorrelatedHeNormal(seed=7)
    np.testing.assert_array_equal(to_numpy(init((3, 3, 4, 4))), to_numpy(init((3, 3, 4, 4))))
    np.testing.assert_array_equal(to_numpy(init((3, 3, 4, 4))), to_numpy(CorrelatedHeNormal(seed=7)((3, 3, 4, 4))))
    assert not np.allclose(to_numpy(init((3, 3, 4, 4))), to_numpy(CorrelatedHeNormal(seed=8)((3, 3, 4, 4))))
    gen_init = CorrelatedHeNormal(seed=keras.random.SeedGenerator(7))
    a, b = to_numpy(gen_init((3, 3, 4, 4))), to_numpy(gen_init((3, 3, 4, 4)))
    assert not np.allclose(a, b)
    again = CorrelatedHeNormal(seed=keras.random.SeedGenerator(7))
    np.testing.assert_array_equal(to_numpy(again((3, 3, 4, 4))), a)


@pytest.mark.parametrize("make", [CorrelatedHeNormal, EnhancedGamma])
def test_numpy_seeds_work_and_negative_seeds_are_named(make):
    np.testing.assert_array_equal(to_numpy(make(seed=np.int64(3))((3, 3, 2, 2))), to_numpy(make(seed=3)((3, 3, 2, 2))))
    assert make(seed=np.int64(3)).get_config()["seed"] == 3  # stored as a JSON int
    with pytest.raises(ValueError, match=r"`seed` must be None or an int in \[0, 2\*\*32\); received -1"):
        make(seed=-1)


def test_none_seed_behaves_like_keras():
    # Keras: an unseeded initializer picks one seed per instance.
    init = CorrelatedHeNormal()
    np.testing.assert_array_equal(to_numpy(init((3, 3, 2, 2))), to_numpy(init((3, 3, 2, 2))))
    assert not np.allclose(to_numpy(init((3, 3, 2, 2))), to_numpy(CorrelatedHeNormal()((3, 3, 2, 2))))
    keras.utils.set_random_seed(123)
    first = to_numpy(CorrelatedHeNormal()((3, 3, 2, 2)))
    keras.utils.set_random_seed(123)
    np.testing.assert_array_equal(to_numpy(CorrelatedHeNormal()((3, 3, 2, 2))), first)


@pytest.mark.parametrize("dtype", [None, "float32", "float16", "bfloat16", "float64"])
@pytest.mark.parametrize("make", [lambda: CorrelatedHeNormal(seed=1), lambda: EnhancedGamma(seed=1)])
def test_dtypes_match_keras(make, dtype):
    ours = make()((3, 3, 8, 8), dtype=dtype)
    theirs = keras.initializers.HeNormal(seed=1)((3, 3, 8, 8), dtype=dtype)
    assert keras.backend.standardize_dtype(ours.dtype) == keras.backend.standardize_dtype(theirs.dtype)
    assert np.all(np.isfinite(to_numpy(keras.ops.cast(ours, "float32"))))


@pytest.mark.parametrize("policy", ["mixed_float16", "mixed_bfloat16"])
@pytest.mark.parametrize(
    "make",
    [
        lambda: CorrelatedHeNormal(seed=1),
        lambda: EnhancedGamma(granularity="spatial", seed=1),
        lambda: NFMInit.from_kernel(np.random.default_rng(0).normal(size=(3, 3, 32, 16)), seed=1),
    ],
)
def test_mixed_precision_policies_keep_float32_variables(policy, make):
    # Under a mixed policy Keras creates float32 variables and asks the
    # initializer for float32: the values are the float32 draw itself, so
    # every statistic tested above in float32 holds.
    keras.config.set_dtype_policy(policy)
    try:
        layer = keras.layers.Conv2D(64, 3, kernel_initializer=make())
        out = layer(np.ones((2, 5, 5, 32), "float32"))
    finally:
        keras.config.set_dtype_policy("float32")
    assert keras.backend.standardize_dtype(layer.kernel.dtype) == "float32"
    assert keras.backend.standardize_dtype(out.dtype) == policy.split("_")[1]
    np.testing.assert_array_equal(to_numpy(layer.kernel), to_numpy(make()((3, 3, 32, 64), "float32")))
    assert np.all(np.isfinite(to_numpy(keras.ops.cast(out, "float32"))))


def test_correlation_argument_forms_agree():
    r = SpatialCorrelation.exponential_decay(0.3)
    m = r.matrix_for((3, 3))
    distances, values, _ = matrix_profile(m, (3, 3))
    profile = dict(zip(distances.tolist(), values.tolist()))
    reference = to_numpy(CorrelatedHeNormal(r, seed=1)((3, 3, 4, 4)))
    for form in [m, m.tolist(), profile, r.get_config(), SpatialCorrelation.from_matrix(m)]:
        np.testing.assert_allclose(to_numpy(CorrelatedHeNormal(form, seed=1)((3, 3, 4, 4))), reference, atol=1e-6)


def test_non_psd_correlation_warns_once_or_raises():
    strong = SpatialCorrelation.exponential_decay(0.6)  # x 1.5: entries <= 0.9, not PSD
    init = CorrelatedHeNormal(strong, alpha=1.5, seed=1)
    with pytest.warns(UserWarning, match="not positive semi-definite"):
        w = to_numpy(init((3, 3, 64, 64)))
    assert np.all(np.isfinite(w))
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        init((3, 3, 2, 2))  # the repaired factor is cached: no second repair, no warning
    assert [str(w.message) for w in caught] == []
    strict = CorrelatedHeNormal(strong, alpha=1.5, strict=True, seed=1)
    with pytest.raises(ValueError, match="not positive semi-definite"):
        strict((3, 3, 4, 4))


@pytest.mark.parametrize(
    "kwargs, error, message",
    [
        ({"variance_mode": "sum"}, ValueError, "`variance_mode` must be 'filter'"),
        ({"alpha": -0.5}, ValueError, "`alpha` must be a finite number >= 0"),
        ({"alpha": "big"}, TypeError, "`alpha` must be a finite number >= 0"),
        ({"strict": "yes"}, TypeError, "`strict` must be a bool"),
        ({"seed": 1.5}, TypeError, "`seed` must be an int, None or a keras.random.SeedGenerator"),
        ({"correlation": "resnet"}, TypeError, "`correlation` must be a SpatialCorrelation"),
        ({"correlation": {"a": "b"}}, TypeError, "A dict `correlation` must be"),
        ({"correlation": np.full((9, 9), np.nan)}, ValueError, "NaN or Inf"),
    ],
)
def test_bad_arguments(kwargs, error, message):
    with pytest.raises(error, match=message):
        CorrelatedHeNormal(**kwargs)


@pytest.mark.parametrize(
    "shape, dtype, error, message",
    [
        ((5,), None, ValueError, "at least 2 positive dimensions"),
        ((3, 0, 2, 2), None, ValueError, "at least 2 positive dimensions"),
        ("3x3", None, TypeError, "`shape` must be a tuple of ints"),
        ((5, 5, 2, 2), None, ValueError, "has 25 positions"),
        ((3, 3, 2, 2), "int32", ValueError, "`dtype` must be a floating dtype"),
    ],
)
def test_bad_calls(shape, dtype, error, message):
    with pytest.raises(error, match=message):
        CorrelatedHeNormal(np.eye(9), seed=1)(shape, dtype=dtype)


# -------------------------------------------------------------- EnhancedGamma
def _group_variances(w, granularity):
    p = math.prod(w.shape[:-2])
    x = w.reshape(p, w.shape[-2], w.shape[-1])
    if granularity == "filter":
        return (x**2).mean(axis=(0, 1)), p * w.shape[-2]
    return (x**2).mean(axis=1).ravel(), w.shape[-2]


@pytest.mark.parametrize(
    "base, granularity, shape",
    [
        ("he_normal", "filter", (3, 3, 16, 16384)),
        ("he_normal", "spatial", (3, 3, 64, 4096)),
        ("he_uniform", "filter", (3, 3, 16, 16384)),
        ("glorot_normal", "spatial", (3, 3, 64, 4096)),
        ("lecun_uniform", "filter", (256, 16384)),
    ],
)
def test_enhanced_gamma_mean_variance_is_base_variance(base, granularity, shape):
    init = EnhancedGamma(base=base, granularity=granularity, seed=3)
    w = to_numpy(init(shape))
    receptive = math.prod(shape[:-2])
    fan_in, fan_out = receptive * shape[-2], receptive * shape[-1]
    expected = {
        "he_normal": 2 / fan_in,
        "he_uniform": 2 / fan_in,
        "lecun_uniform": 1 / fan_in,
        "glorot_normal": 2 / (fan_in + fan_out),
    }[base]
    assert init.base_variance(shape) == pytest.approx(expected)
    group_vars, _ = _group_variances(w, granularity)
    # group variances are sigma^2 * chi2(1) (normal; relative s.d. sqrt 2) or
    # 3 sigma^2 U(0,1)^2 (uniform; relative s.d. 2/sqrt 5)
    rel_sd = math.sqrt(2) if base.endswith("normal") else 2 / math.sqrt(5)
    np.testing.assert_allclose(w.var(), expected, rtol=Z * rel_sd / math.sqrt(group_vars.size))
    assert abs(w.mean()) < Z * math.sqrt(expected / w.size) * 3


@pytest.mark.parametrize("granularity, shape", [("filter", (3, 3, 256, 2048)), ("spatial", (3, 3, 512, 256))])
def test_enhanced_gamma_normal_group_variances_follow_gamma(granularity, shape):
    init = EnhancedGamma(granularity=granularity, seed=8)
    w = to_numpy(init(shape))
    sigma2 = init.base_variance(shape)
    group_vars, n = _group_variances(w, granularity)
    # Gamma(1/2, scale=2 sigma^2); each estimate from n weights, noise sqrt(2/n) << spread
    result = stats.kstest(group_vars, "gamma", args=(0.5, 0, 2 * sigma2))
    assert result.pvalue > 1e-3, result
    # the test has power: a fixed variance per group is rejected
    fixed = to_numpy(keras.initializers.VarianceScaling(2.0, "fan_in", "untruncated_normal", seed=8)(shape))
    fixed_vars, _ = _group_variances(fixed, granularity)
    assert stats.kstest(fixed_vars, "gamma", args=(0.5, 0, 2 * sigma2)).pvalue < 1e-6


def test_enhanced_gamma_uniform_group_second_moments():
    shape = (3, 3, 256, 2048)
    init = EnhancedGamma(base="he_uniform", seed=8)
    w = to_numpy(init(shape))
    sigma2 = init.base_variance(shape)
    x = w.reshape(-1, shape[-1])
    bounds = np.abs(x).max(axis=0)  # sqrt(3 m) = 3 sigma |u0|
    # |u0| ~ U(0, 1); the max of 2304 uniform draws reaches the bound within ~1/2304
    result = stats.kstest(bounds / (3 * math.sqrt(sigma2)), "uniform")
    assert result.pvalue > 1e-3, result
    assert np.all(np.abs(x) <= 3 * math.sqrt(sigma2))


def test_enhanced_gamma_spatial_granularity_varies_within_filter():
    shape = (3, 3, 512, 64)
    for granularity, varies in [("filter", False), ("spatial", True)]:
        w = to_numpy(EnhancedGamma(granularity=granularity, seed=2)(shape))
        per_position = (w.reshape(9, 512, 64) ** 2).mean(axis=1)  # (P, out)
        spread = (per_position / per_position.mean(axis=0)).std()
        # same variance within a filter: spread is sampling noise sqrt(2/512) = 0.0625
        assert (spread > 0.5) == varies, spread


def test_enhanced_gamma_seeds():
    init = EnhancedGamma(seed=3)
    np.testing.assert_array_equal(to_numpy(init((3, 3, 4, 4))), to_numpy(init((3, 3, 4, 4))))
    gen = EnhancedGamma(seed=keras.random.SeedGenerator(3))
    assert not np.allclose(to_numpy(gen((3, 3, 4, 4))), to_numpy(gen((3, 3, 4, 4))))


@pytest.mark.parametrize(
    "kwargs, message",
    [
        ({"base": "orthogonal"}, "`base` must be one of"),
        ({"granularity": "channel"}, "`granularity` must be 'filter'"),
    ],
)
def test_enhanced_gamma_bad_arguments(kwargs, message):
    with pytest.raises(ValueError, match=message):
        EnhancedGamma(**kwargs)


def test_numpy_numbers_are_accepted_as_python_numbers():
    for seed in (np.int64(7), np.int32(7), np.uint8(7)):
        init = CorrelatedHeNormal(alpha=np.int64(1), seed=seed)
        assert init.get_config()["seed"] == 7 and type(init.get_config()["seed"]) is int
        np.testing.assert_array_equal(
            to_numpy(init((3, 3, 2, 2))), to_numpy(CorrelatedHeNormal(alpha=1.0, seed=7)((3, 3, 2, 2)))
        )
    assert CorrelatedHeNormal(alpha=np.float32(0.5)).alpha == 0.5
    assert EnhancedGamma(seed=np.int64(3)).get_config()["seed"] == 3
    with pytest.raises(TypeError, match="`seed` must be an int, None or a keras.random.SeedGenerator"):
        CorrelatedHeNormal(seed=np.float64(3))
    with pytest.raises(TypeError, match="`seed` must be an int, None or a keras.random.SeedGenerator"):
        CorrelatedHeNormal(seed=np.True_)
