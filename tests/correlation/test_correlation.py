import json
import math
import warnings

import numpy as np
import pytest

from keras_corrinit import SpatialCorrelation
from keras_corrinit.correlation import (
    filter_covariance,
    matrix_profile,
    nearest_correlation_matrix,
    position_distances,
    psd_factor,
)


def test_position_distances_row_major_2d():
    d = position_distances((3, 3))
    assert d.shape == (9, 9)
    # position 0 is (0, 0), 1 is (0, 1), 4 the centre (1, 1), 8 is (2, 2)
    assert d[0, 1] == 1.0
    assert d[0, 4] == pytest.approx(math.sqrt(2))
    assert d[0, 8] == pytest.approx(math.sqrt(8))
    assert d[1, 3] == pytest.approx(math.sqrt(2))


def test_position_distances_1d_and_3d():
    assert position_distances((1, 7))[0, 6] == 6.0
    d3 = position_distances((3, 3, 3))
    assert d3.shape == (27, 27)
    assert d3[0, 26] == pytest.approx(math.sqrt(12))


def test_exponential_decay_any_shape():
    r = SpatialCorrelation.exponential_decay(0.4)
    for shape in [(3,), (3, 3), (5, 5), (7, 7), (1, 7), (3, 3, 3)]:
        m = r.matrix_for(shape)
        np.testing.assert_allclose(m, 0.4 ** position_distances(shape))


def test_identity_is_identity():
    np.testing.assert_array_equal(SpatialCorrelation.identity().matrix_for((3, 3)), np.eye(9))


def test_single_position_is_one_for_any_structure():
    r = SpatialCorrelation.from_matrix(0.5 * np.ones((9, 9)) + 0.5 * np.eye(9))
    np.testing.assert_array_equal(r.matrix_for(()), [[1.0]])
    np.testing.assert_array_equal(r.matrix_for((1, 1)), [[1.0]])


def test_alpha_scales_off_diagonal_only():
    base = SpatialCorrelation.exponential_decay(0.4).matrix_for((3, 3))
    for alpha in [0.0, 0.25, 0.5, 1.0]:
        m = SpatialCorrelation.exponential_decay(0.4).matrix_for((3, 3), alpha=alpha)
        expected = base * alpha
        np.fill_diagonal(expected, 1.0)
        np.testing.assert_allclose(m, expected)


def test_covariance_converted_to_correlation():
    corr = SpatialCorrelation.exponential_decay(0.3).matrix_for((3, 3))
    std = np.linspace(0.5, 2.0, 9)
    cov = corr * std[:, None] * std[None, :]
    np.testing.assert_allclose(SpatialCorrelation.from_matrix(cov).matrix_for((3, 3)), corr, atol=1e-12)


def test_matrix_profile_and_transfer_to_larger_kernel():
    r3 = SpatialCorrelation.exponential_decay(0.5).matrix_for((3, 3))
    distances, values, counts = matrix_profile(r3, (3, 3))
    np.testing.assert_allclose(distances, np.sqrt([1, 2, 4, 5, 8]))
    np.testing.assert_allclose(values, 0.5**distances)
    # ordered off-diagonal pairs of a 3x3 grid at each distance
    np.testing.assert_array_equal(counts, [24, 16, 12, 16, 4])
    assert counts.sum() == 9 * 8
    profile = SpatialCorrelation.from_matrix(r3).to_profile()
    m5 = profile.matrix_for((5, 5))
    d5 = position_distances((5, 5))
    inside = d5 <= math.sqrt(8) + 1e-9
    # exact at tabulated distances, held beyond the largest (sqrt 8)
    np.testing.assert_allclose(m5[inside], 0.5 ** d5[inside], atol=1e-12)
    np.testing.assert_allclose(m5[~inside], 0.5 ** math.sqrt(8), atol=1e-12)


def test_profile_interpolates_linearly_and_adds_distance_zero():
    r = SpatialCorrelation.from_profile([1.0, 2.0], [0.4, 0.2])
    m = r.matrix_for((3, 3))
    assert m[0, 0] == 1.0
    assert m[0, 1] == pytest.approx(0.4)
    assert m[0, 4] == pytest.approx(0.4 + (math.sqrt(2) - 1) * -0.2)
    assert m[0, 2] == pytest.approx(0.2)


@pytest.mark.parametrize(
    "matrix, error, message",
    [
        (np.ones((3, 4)), ValueError, r"must be a square \(P, P\) matrix"),
        (np.ones(9), ValueError, r"must be a square \(P, P\) matrix"),
        (np.full((2, 2), np.nan), ValueError, "contains NaN or Inf"),
        ([[1.0, 0.5], [0.1, 1.0]], ValueError, "is not symmetric"),
        ([[1.0, 0.0], [0.0, -1.0]], ValueError, "non-positive diagonal"),
        ([["a", "b"], ["c", "d"]], TypeError, "must be a square numeric array"),
    ],
)
def test_bad_matrices(matrix, error, message):
    with pytest.raises(error, match=message):
        SpatialCorrelation.from_matrix(matrix)


def test_matrix_size_mismatch_names_the_fix():
    r = SpatialCorrelation.from_matrix(np.eye(9))
    with pytest.raises(ValueError, match=r"9x9.*has 25 positions.*to_profile"):
        r.matrix_for((5, 5))
    with pytest.raises(ValueError, match=r"`spatial_shape` \(2, 2\) has 4 positions"):
        SpatialCorrelation.from_matrix(np.eye(9), spatial_shape=(2, 2))


@pytest.mark.parametrize(
    "distances, values, message",
    [
        ([1, 1], [0.5, 0.2], "strictly increasing"),
        ([-1, 1], [0.5, 0.2], "non-negative"),
        ([1, 2], [0.5], "same length"),
        ([1, 2], [0.5, 1.5], r"lie in \[-1, 1\]"),
        ([0, 1], [0.9, 0.5], "distance 0 must be 1"),
        ([1, np.nan], [0.5, 0.2], "NaN or Inf"),
    ],
)
def test_bad_profiles(distances, values, message):
    with pytest.raises(ValueError, match=message):
        SpatialCorrelation.from_profile(distances, values)


@pytest.mark.parametrize("rho, error", [(1.5, ValueError), (-0.1, ValueError), ("x", TypeError), (True, TypeError)])
def test_bad_rho(rho, error):
    with pytest.raises(error, match="`rho`"):
        SpatialCorrelation.exponential_decay(rho)


@pytest.mark.parametrize("alpha, error", [(-1.0, ValueError), (float("nan"), ValueError), ("1", TypeError)])
def test_bad_alpha(alpha, error):
    with pytest.raises(error, match="`alpha`"):
        SpatialCorrelation.identity().matrix_for((3, 3), alpha=alpha)


def test_non_psd_repaired_with_warning_or_strict_error():
    strong = SpatialCorrelation.exponential_decay(0.6)  # x 1.5: entries <= 0.9, not PSD
    m = strong.raw_matrix((3, 3)) * 1.5
    np.fill_diagonal(m, 1.0)
    smallest = np.linalg.eigvalsh(m)[0]
    assert smallest < 0
    with pytest.warns(UserWarning, match=f"smallest eigenvalue {smallest:.4g}"):
        repaired = strong.matrix_for((3, 3), alpha=1.5)
    assert np.linalg.eigvalsh(repaired)[0] >= 0
    np.testing.assert_allclose(np.diag(repaired), 1.0)
    np.testing.assert_allclose(repaired, repaired.T)
    # the repair moves the matrix only as far as needed: closer than the
    # nearest trivially valid candidate, the identity
    assert np.linalg.norm(repaired - m) < np.linalg.norm(np.eye(9) - m)
    with pytest.raises(ValueError, match="not positive semi-definite.*Lower `alpha`"):
        strong.matrix_for((3, 3), alpha=1.5, strict=True)


def test_alpha_beyond_correlation_range_is_an_error():
    # rho 0.9 times 1.5 gives 1.35 between neighbours: not a correlation at
    # all, so it is refused even with strict=False, naming the largest alpha.
    with pytest.raises(
        ValueError,
        match=r"`alpha`=1.5 scales off-diagonal correlations up to 1.35, outside \[-1, 1\]\. "
        r"For this correlation use alpha <= 1.111",
    ):
        SpatialCorrelation.exponential_decay(0.9).matrix_for((3, 3), alpha=1.5)
    # exactly at the bound is allowed (entries of 1 are a valid, singular R)
    m = SpatialCorrelation.exponential_decay(0.5).matrix_for((1, 2), alpha=2.0)
    np.testing.assert_array_equal(m, np.ones((2, 2)))


def test_kernels_beyond_max_positions_are_refused():
    with pytest.raises(
        ValueError, match=r"`spatial_shape` \(33, 33\) has 1089 spatial positions; this package supports at most 1024"
    ):
        SpatialCorrelation.exponential_decay(0.5).matrix_for((33, 33))
    with pytest.raises(ValueError, match=r"`matrix` has 1025 spatial positions"):
        SpatialCorrelation.from_matrix(np.eye(1025))


def test_psd_matrix_passes_without_warning():
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        SpatialCorrelation.exponential_decay(0.9).matrix_for((3, 3), alpha=1.0)


def test_nearest_correlation_matrix_keeps_valid_matrix():
    valid = SpatialCorrelation.exponential_decay(0.4).matrix_for((3, 3))
    np.testing.assert_allclose(nearest_correlation_matrix(valid), valid, atol=1e-8)


def test_psd_factor_positive_definite_and_singular():
    r = SpatialCorrelation.exponential_decay(0.4).matrix_for((3, 3))
    c = psd_factor(r)
    np.testing.assert_allclose(c @ c.T, r, atol=1e-12)
    assert np.allclose(c, np.tril(c))  # Cholesky as in Algorithm 1
    ones = np.ones((9, 9))  # rank 1: Cholesky fails, square root works
    c = psd_factor(ones)
    np.testing.assert_allclose(c @ c.T, ones, atol=1e-10)


@pytest.mark.parametrize(
    "structure",
    [
        SpatialCorrelation.exponential_decay(0.37),
        SpatialCorrelation.from_profile([1.0, 1.4142135623730951, 2.0], [0.31, 0.2, 0.1]),
        SpatialCorrelation.from_matrix(
            nearest_correlation_matrix(np.random.default_rng(0).uniform(-1, 1, (9, 9)) * 0.3 + np.eye(9))
        ),
    ],
)
def test_json_round_trip_exact(structure):
    text = structure.to_json()
    back = SpatialCorrelation.from_json(text)
    assert back == structure
    assert back.get_config() == json.loads(text)
    np.testing.assert_array_equal(back.matrix_for((3, 3)), structure.matrix_for((3, 3)))


@pytest.mark.parametrize(
    "config, error, message",
    [
        ({"kind": "wavelet"}, ValueError, "Unknown SpatialCorrelation kind 'wavelet'"),
        ({"kind": "exponential", "rho": 0.2, "extra": 1}, ValueError, r"exactly the keys \['rho'\]"),
        ([1, 2], TypeError, "must be a dict"),
    ],
)
def test_bad_configs(config, error, message):
    with pytest.raises(error, match=message):
        SpatialCorrelation.from_config(config)


@pytest.mark.slow
def test_the_repair_of_a_large_kernel_is_bounded_and_still_valid(monkeypatch):
    # A 32x32 profile far from PSD: the repair may take 10 projections (one
    # eigendecomposition each, plus the final clip), not 200.
    from keras_corrinit.correlation import _spatial as correlation_module

    calls = []
    original = correlation_module._symmetric_eigh
    monkeypatch.setattr(correlation_module, "_symmetric_eigh", lambda m: calls.append(1) or original(m))
    profile = SpatialCorrelation.from_profile([1, 2, 3], [0.95, 0.2, -0.9])
    with pytest.warns(UserWarning, match="not positive semi-definite"):
        r = profile.matrix_for((32, 32))
    assert len(calls) <= 11
    np.testing.assert_allclose(np.diag(r), 1.0, atol=1e-12)
    assert np.linalg.eigvalsh(r)[0] > -1e-9
    # kernels up to 16x16 keep the full repair (up to 200 projections)
    raw = profile.raw_matrix((5, 5))
    with pytest.warns(UserWarning, match="not positive semi-definite"):
        repaired = profile.matrix_for((5, 5))
    np.testing.assert_array_equal(repaired, nearest_correlation_matrix(raw, max_iter=200))


def test_filter_covariance_is_the_sample_covariance_with_divisor_n_minus_1():
    kernel = np.random.default_rng(3).normal(size=(3, 3, 4, 5))
    covariance, n = filter_covariance(kernel)
    assert n == 20
    np.testing.assert_allclose(covariance, np.cov(kernel.reshape(9, 20)), rtol=1e-12)
