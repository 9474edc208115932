"""Property-based tests: any kernel shape, strength and matrix.

Kernel shapes of rank 3-5 (1-3 spatial axes of size 1-7, 1-64 channels in
and out), alpha in [0, 3], and random valid and invalid correlation matrices.
Properties: weights are never NaN or Inf, every example finishes within the
deadline (no hang), and invalid input raises ValueError or TypeError with a
message naming the offending argument. Examples are derandomized, so CI runs
the same ones every time.
"""

import math
import warnings
from datetime import timedelta

import keras
import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from conftest import to_numpy
from keras_corrinit import CorrelatedHeNormal, EnhancedGamma, NFMInit, SpatialCorrelation
from keras_corrinit.correlation import nearest_correlation_matrix
from keras_corrinit.initializers import ConstructedFilterCovariance, FilterCovariance

PROPERTY_SETTINGS = settings(
    max_examples=25,
    derandomize=True,
    database=None,
    deadline=timedelta(seconds=60),
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.function_scoped_fixture],
)

# The draws over every dtype compile a kernel per (shape, dtype) on JAX:
# fewer examples keep the suite's time in bounds.
DTYPE_SETTINGS = settings(PROPERTY_SETTINGS, max_examples=12)

spatial_shapes = st.lists(st.integers(1, 7), min_size=1, max_size=3).map(tuple)
channels = st.integers(1, 64)


@st.composite
def kernel_shapes(draw):
    return (*draw(spatial_shapes), draw(channels), draw(channels))


def _random_correlation(seed, p, rank=None):
    """A random PSD correlation matrix of size p (singular when rank < p)."""
    rng = np.random.default_rng(seed)
    a = rng.normal(size=(p, rank or p))
    c = a @ a.T + 1e-12 * np.eye(p)
    d = 1 / np.sqrt(np.diag(c))
    r = c * d[:, None] * d[None, :]
    np.fill_diagonal(r, 1.0)
    return (r + r.T) / 2


@st.composite
def correlations(draw, p):
    kind = draw(st.sampled_from(["default", "exponential", "profile", "matrix", "singular_matrix"]))
    if kind == "default":
        return None
    if kind == "exponential":
        return SpatialCorrelation.exponential_decay(draw(st.floats(0, 1)))
    if kind == "profile":
        distances = draw(st.lists(st.floats(0.5, 10), min_size=1, max_size=6, unique=True))
        values = draw(st.lists(st.floats(-1, 1), min_size=len(distances), max_size=len(distances)))
        return dict(zip(sorted(distances), values))
    seed = draw(st.integers(0, 2**32 - 1))
    rank = draw(st.integers(1, p)) if kind == "singular_matrix" else None
    return _random_correlation(seed, p, rank)


def _assert_names(error, *names):
    assert any(f"`{name}`" in str(error) for name in names), str(error)


def _finite(weights, shape):
    w = to_numpy(keras.ops.convert_to_tensor(weights))
    assert w.shape == shape
    assert np.all(np.isfinite(w))


# ------------------------------------------- every initializer, any input
# The probes of the hostile-input review, kept running: every public
# initializer on random shapes, dtypes, seed forms and extreme finite
# parameters either returns finite values of the right shape and dtype or
# raises ValueError/TypeError naming one of its arguments.
DTYPES = ["float16", "bfloat16", "float32", "float64"]
extreme = st.builds(lambda mantissa, exponent: mantissa * 10.0**exponent, st.floats(1, 9.99), st.integers(-300, 300))
seeds = st.one_of(
    st.integers(0, 2**31 - 2),
    st.integers(0, 2**31 - 2).map(np.int64),
    st.none(),
    st.integers(0, 1000).map(keras.random.SeedGenerator),
)


def _expected_dtype(dtype):
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # JAX without x64 warns that float64 is float32
        return keras.backend.standardize_dtype(keras.ops.zeros((1,), dtype=dtype).dtype)


def _finite_or_named_error(make, shape, dtype, *names):
    """Builds and calls the initializer; checks the property. Returns True if it drew."""
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            values = make()(shape, dtype=dtype)
    except (ValueError, TypeError) as error:
        _assert_names(error, *names)
        return False
    assert keras.backend.standardize_dtype(values.dtype) == _expected_dtype(dtype)
    w = to_numpy(values).astype(np.float64)
    assert w.shape == shape
    assert np.all(np.isfinite(w)), (shape, dtype)
    return True


# ------------------------------------------------------------ valid input
def _expected_failure(correlation, spatial, alpha, variance_mode):
    """The one error valid pieces can combine to, or None: computed here.

    alpha may push an off-diagonal correlation beyond [-1, 1]; and in
    "filter" mode negative correlations may cancel so that sum(R) (of the
    matrix after alpha and, when not PSD, its repair) is below 1e-4 P.
    """
    p = math.prod(spatial)
    if p == 1:
        return None
    structure = correlation if correlation is not None else SpatialCorrelation.exponential_decay(0.4)
    raw = structure.raw_matrix(spatial) if isinstance(structure, SpatialCorrelation) else np.array(structure)
    off = raw - np.diag(np.diag(raw))
    if alpha * np.abs(off).max() > 1 + 1e-10:
        return "alpha"
    scaled = off * alpha + np.eye(p)
    if np.linalg.eigvalsh(scaled)[0] < -1e-10 * p:
        scaled = nearest_correlation_matrix(scaled)
    if variance_mode == "filter" and scaled.sum() < 1e-4 * p:
        return "sum(R)"
    return None


@PROPERTY_SETTINGS
@given(
    data=st.data(), shape=kernel_shapes(), alpha=st.floats(0, 3), variance_mode=st.sampled_from(["filter", "weight"])
)
@pytest.mark.slow
def test_correlated_weights_are_finite_or_the_documented_error(data, shape, alpha, variance_mode):
    correlation = data.draw(correlations(math.prod(shape[:-2])))
    if isinstance(correlation, dict):
        correlation = SpatialCorrelation.from_profile(*zip(*correlation.items()))
    expected = _expected_failure(correlation, shape[:-2], alpha, variance_mode)
    init = CorrelatedHeNormal(correlation, alpha=alpha, variance_mode=variance_mode, seed=0)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # repairs of non-PSD matrices warn
        if expected is None:
            _finite(init(shape), shape)
            return
        with pytest.raises(ValueError) as info:
            init(shape)
    if expected == "alpha":
        assert str(info.value).startswith(f"`alpha`={alpha} scales off-diagonal correlations up to")
    else:
        assert str(info.value).startswith("sum(R) = ") and "variance_mode='weight'" in str(info.value)


@DTYPE_SETTINGS
@given(
    shape=kernel_shapes(),
    base=st.sampled_from(
        sorted(["he_normal", "he_uniform", "lecun_normal", "lecun_uniform", "glorot_normal", "glorot_uniform"])
    ),
    granularity=st.sampled_from(["filter", "spatial"]),
    seed=seeds,
    dtype=st.sampled_from(DTYPES),
)
@pytest.mark.slow
def test_enhanced_gamma_weights_are_finite(shape, base, granularity, seed, dtype):
    assert _finite_or_named_error(lambda: EnhancedGamma(base, granularity, seed=seed), shape, dtype)


@PROPERTY_SETTINGS
@given(
    data=st.data(),
    spatial=spatial_shapes,
    c_in=st.integers(1, 16),
    c_out=st.integers(1, 16),
    target_in=st.integers(1, 16),
    target_out=channels,
)
@pytest.mark.slow
def test_nfm_weights_are_finite_for_full_and_spatial_transfer(data, spatial, c_in, c_out, target_in, target_out):
    source = np.random.default_rng(data.draw(st.integers(0, 2**32 - 1))).normal(size=(*spatial, c_in, c_out))
    init = NFMInit.from_kernel(source, seed=0)
    _finite(init((*spatial, c_in, target_out)), (*spatial, c_in, target_out))
    _finite(init((*spatial, target_in, target_out)), (*spatial, target_in, target_out))


@pytest.mark.slow
@PROPERTY_SETTINGS
@given(data=st.data(), spatial=spatial_shapes, alpha=st.floats(0, 1))
def test_random_unit_diagonal_matrices_are_used_repaired_or_refused(data, spatial, alpha):
    # Symmetric, unit diagonal, entries in [-1, 1]: valid input, PSD or not.
    p = math.prod(spatial)
    rng = np.random.default_rng(data.draw(st.integers(0, 2**32 - 1)))
    upper = np.triu(rng.uniform(-1, 1, size=(p, p)) ** data.draw(st.sampled_from([1, 3, 9])), 1)
    matrix = upper + upper.T + np.eye(p)
    scaled = matrix * alpha
    np.fill_diagonal(scaled, 1.0)
    psd = np.linalg.eigvalsh(scaled)[0] >= -1e-10 * p  # the library's tolerance
    shape = (*spatial, 3, 5)
    try:
        _finite(CorrelatedHeNormal(matrix, alpha=alpha, strict=True, seed=0)(shape), shape)
    except ValueError as error:
        _assert_names(error, "alpha", "correlation")
        assert not psd or "sum(R)" in str(error)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        try:
            _finite(CorrelatedHeNormal(matrix, alpha=alpha, seed=0)(shape), shape)
        except ValueError as error:
            assert "sum(R)" in str(error)
            _assert_names(error, "alpha", "correlation")


# ---------------------------------------------------------- invalid input
@st.composite
def invalid_matrices(draw):
    p = draw(st.integers(2, 9))
    matrix = _random_correlation(draw(st.integers(0, 2**32 - 1)), p)
    i, j = draw(st.integers(0, p - 1)), draw(st.integers(0, p - 1))
    defect = draw(st.sampled_from(["nan", "inf", "asymmetric", "diagonal", "not_square", "vector", "text", "ragged"]))
    if defect in ("nan", "inf"):
        matrix[i, j] = float(defect)
    elif defect == "asymmetric":
        j = (i + 1) % p
        matrix[i, j] += draw(st.floats(0.01, 1))
    elif defect == "diagonal":
        matrix[i, i] = draw(st.floats(-5, 0))
    elif defect == "not_square":
        return matrix[:, : p - 1]
    elif defect == "vector":
        return matrix[0]
    elif defect == "text":
        return [["a"] * p] * p
    else:
        return [list(row[: k + 1]) for k, row in enumerate(matrix)]
    return matrix


@PROPERTY_SETTINGS
@given(matrix=invalid_matrices())
def test_invalid_matrices_are_errors_naming_correlation(matrix):
    with pytest.raises((ValueError, TypeError)) as info:
        CorrelatedHeNormal(matrix)
    _assert_names(info.value, "correlation")


@PROPERTY_SETTINGS
@given(
    alpha=st.one_of(
        st.floats(max_value=-1e-9),
        st.just(float("nan")),
        st.just(float("inf")),
        st.booleans(),
        st.text(max_size=3),
        st.none(),
    )
)
def test_invalid_alpha_is_an_error_naming_alpha(alpha):
    with pytest.raises((ValueError, TypeError)) as info:
        CorrelatedHeNormal(alpha=alpha)
    _assert_names(info.value, "alpha")


bad_shapes = st.one_of(
    st.lists(st.integers(1, 7), max_size=1).map(tuple),  # rank < 2
    st.tuples(st.integers(-3, 0), st.integers(1, 7), st.integers(1, 7)),  # a size < 1
    st.tuples(st.floats(0.5, 7.5).filter(lambda f: f != int(f)), st.integers(1, 7)),
    st.text(max_size=4),
    st.none(),
)


@PROPERTY_SETTINGS
@given(
    shape=bad_shapes,
    make=st.sampled_from(
        [
            lambda: CorrelatedHeNormal(seed=0),
            lambda: EnhancedGamma(seed=0),
            lambda: NFMInit.from_kernel(np.ones((3, 3, 2, 2)) + np.eye(2), seed=0),
        ]
    ),
)
def test_invalid_shapes_are_errors_naming_shape(shape, make):
    with pytest.raises((ValueError, TypeError)) as info:
        make()(shape)
    _assert_names(info.value, "shape")


@pytest.mark.slow
@PROPERTY_SETTINGS
@given(matrix_spatial=spatial_shapes, kernel_spatial=spatial_shapes)
def test_matrix_for_another_kernel_size_is_an_error_naming_correlation(matrix_spatial, kernel_spatial):
    p, q = math.prod(matrix_spatial), math.prod(kernel_spatial)
    init = CorrelatedHeNormal(np.eye(p), seed=0)
    if p == q or q == 1:
        _finite(init((*kernel_spatial, 2, 2)), (*kernel_spatial, 2, 2))
        return
    with pytest.raises(ValueError) as info:
        init((*kernel_spatial, 2, 2))
    _assert_names(info.value, "correlation")


@DTYPE_SETTINGS
@given(
    spatial=spatial_shapes,
    c_in=st.integers(1, 16),
    multiplier=st.integers(1, 4),
    dtype=st.sampled_from(DTYPES),
    seed=seeds,
    relative_depth=st.floats(0, 1),
    sigma=st.one_of(st.none(), extreme),
    envelope=st.one_of(st.none(), extreme),
    gain=extreme,
)
def test_constructed_covariance_with_extreme_parameters(
    spatial, c_in, multiplier, dtype, seed, relative_depth, sigma, envelope, gain
):
    shape = (*spatial, c_in, multiplier)
    drew = _finite_or_named_error(
        lambda: ConstructedFilterCovariance(relative_depth, sigma, envelope, gain, seed=seed),
        shape,
        dtype,
        "gain",
    )
    # sigma and envelope never fail (any finite length gives a finite
    # covariance); a moderate gain fits every dtype (largest std between
    # sqrt(gain / P) and sqrt(gain))
    assert drew or not 1e-2 <= gain <= 1e2


@DTYPE_SETTINGS
@given(spatial=spatial_shapes, dtype=st.sampled_from(DTYPES), seed=seeds, scale=extreme, rank=st.integers(1, 4))
def test_filter_covariance_with_extreme_scales(spatial, dtype, seed, scale, rank):
    p = math.prod(spatial)
    a = np.random.default_rng(rank).normal(size=(p, rank))
    _finite_or_named_error(
        lambda: FilterCovariance(a @ a.T * scale, spatial, seed=seed), (*spatial, 3, 1), dtype, "covariance"
    )


@DTYPE_SETTINGS
@given(
    spatial=spatial_shapes,
    c_in=st.integers(1, 8),
    c_out=st.integers(1, 8),
    target_in=st.integers(1, 8),
    dtype=st.sampled_from(DTYPES),
    seed=seeds,
    scale=extreme,
    scaling=st.sampled_from(["kaiming", "none"]),
)
@pytest.mark.slow
def test_nfm_with_extreme_kernels(spatial, c_in, c_out, target_in, dtype, seed, scale, scaling):
    kernel = np.random.default_rng(c_in).normal(size=(*spatial, c_in, c_out)) * scale
    drew = _finite_or_named_error(
        lambda: NFMInit.from_kernel(kernel, scaling=scaling, seed=seed), (*spatial, target_in, 5), dtype, "factor"
    )
    assert drew or scaling == "none"  # Kaiming scaling fits any kernel's scale


@DTYPE_SETTINGS
@given(
    shape=kernel_shapes(),
    dtype=st.sampled_from(DTYPES),
    seed=seeds,
    alpha=st.one_of(st.floats(0, 1), extreme, st.integers(0, 2).map(np.int64), st.floats(0, 1).map(np.float32)),
    rho=st.floats(0, 1),
)
@pytest.mark.slow
def test_correlated_he_normal_with_any_dtype_seed_and_alpha(shape, dtype, seed, alpha, rho):
    _finite_or_named_error(
        lambda: CorrelatedHeNormal(SpatialCorrelation.exponential_decay(rho), alpha=alpha, seed=seed),
        shape,
        dtype,
        "alpha",
    )


not_numbers = st.one_of(st.booleans(), st.text(max_size=3), st.just([1.0]), st.just(np.bool_(True)))


@PROPERTY_SETTINGS
@given(
    value=st.one_of(not_numbers, st.just(float("nan")), st.just(float("inf")), st.floats(-1e300, -1e-300)),
    argument=st.sampled_from(["alpha", "gain", "sigma", "envelope", "relative_depth", "rho", "seed"]),
)
def test_bad_numbers_are_errors_naming_the_argument(value, argument):
    build = {
        "alpha": lambda v: CorrelatedHeNormal(alpha=v),
        "gain": lambda v: ConstructedFilterCovariance(gain=v),
        "sigma": lambda v: ConstructedFilterCovariance(sigma=v),
        "envelope": lambda v: ConstructedFilterCovariance(envelope=v),
        "relative_depth": lambda v: ConstructedFilterCovariance(relative_depth=v),
        "rho": SpatialCorrelation.exponential_decay,
        "seed": lambda v: EnhancedGamma(seed=v),
    }[argument]
    with pytest.raises((ValueError, TypeError)) as info:
        build(value)
    _assert_names(info.value, argument)


# ------------------------------------------- seeds and the results store (issue 29's probes, as families)
@PROPERTY_SETTINGS
@given(st.integers(min_value=-(2**40), max_value=-1))
def test_every_negative_seed_is_refused_by_name(seed):
    from keras_corrinit import lsuv_initialize

    message = rf"`seed` must be None or an int in \[0, 2\*\*32\); received {seed}"
    with pytest.raises(ValueError, match=message):
        CorrelatedHeNormal(seed=np.int64(seed))
    with pytest.raises(ValueError, match=message):
        lsuv_initialize(keras.Sequential([keras.Input((2,)), keras.layers.Dense(2)]), np.ones((16, 2)), seed=seed)


@PROPERTY_SETTINGS
@given(st.integers(min_value=0, max_value=2**32 - 1), st.sampled_from([int, np.int32, np.int64, np.uint32]))
def test_every_seed_in_range_is_accepted_as_a_json_int(seed, kind):
    if kind is np.int32 and seed >= 2**31:
        seed -= 2**31
    init = CorrelatedHeNormal(seed=kind(seed))
    assert init.get_config()["seed"] == seed and type(init.get_config()["seed"]) is int


@PROPERTY_SETTINGS
@given(cut=st.integers(min_value=1, max_value=10_000), complete=st.integers(min_value=1, max_value=3))
def test_any_half_written_last_line_is_skipped_then_closed(tmp_path_factory, cut, complete):
    import json

    from keras_corrinit.experiments._store import COLUMNS, STORE_FORMAT, Store

    out = tmp_path_factory.mktemp("store")
    (out / "store.json").write_text(
        json.dumps({"format": STORE_FORMAT, "package_version": "x", "columns": list(COLUMNS)})
    )
    rows = [json.dumps({"key": f"k{i}", "final": 0.5, "curve": [0.5] * 7}) + "\n" for i in range(complete + 1)]
    last = rows[-1][: 1 + cut % (len(rows[-1]) - 2)]  # any proper prefix: never a whole row
    (out / "runs.jsonl").write_text("".join(rows[:-1]) + last)
    store = Store(out, "x")
    with pytest.warns(UserWarning, match=rf"line {complete + 1} is not a complete row"):
        finished = store.read()
    assert sorted(finished) == [f"k{i}" for i in range(complete)]
    store.prepare()
    store.append({"key": "next", "final": 0.5})
    # the open line is closed first: the next row has a line of its own, and nothing before it is lost
    assert (out / "runs.jsonl").read_text() == "".join(rows[:-1]) + last + '\n{"key": "next", "final": 0.5}\n'
    with pytest.warns(UserWarning, match=rf"line {complete + 1} is not a complete row"):
        assert sorted(store.read()) == sorted([f"k{i}" for i in range(complete)] + ["next"])
