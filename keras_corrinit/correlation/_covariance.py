"""Covariance of spatial filters: measured on kernels, moved between kernel grids.

A filter is the `(*spatial)` slice of a kernel for one channel pair; its
covariance over a layer's filters is what depthwise covariance transfer
carries (Trockman et al. 2023) and, normalized, what correlation extraction
measures (the correlated-initialization paper's Figure 1).

Reference:
    Trockman, Willmott and Kolter, "Understanding the Covariance Structure
    of Convolutional Filters", ICLR 2023 (arXiv:2210.03651).
"""

import math

import numpy as np

from keras_corrinit._core import validation as check

__all__ = ["filter_covariance", "resample_covariance", "resampled", "validated_covariance"]


def filter_covariance(kernel):
    """The `(P, P)` covariance of a kernel's spatial filters, and their count.

    Every `(*spatial)` slice of `kernel` (shape `(*spatial, a, b)`: an
    `(in, out)` channel pair of a convolution, or `(channels, multiplier)`
    of a depthwise one) is one observation of a P-vector. The covariance is
    the sample covariance about the filters' mean, with divisor n - 1 (as
    `numpy.cov`), and is not normalized: a filter's scale is part of what
    depthwise transfer carries. Correlation extraction (the paper's
    Figure 1) uses the same statistic and normalizes it.

    Args:
        kernel: A numpy-convertible kernel with at least 3 dimensions.

    Returns:
        `(covariance, n)`: a float64 `(P, P)` array and the number of filters.

    Reference:
        Trockman, Willmott and Kolter, "Understanding the Covariance
        Structure of Convolutional Filters", ICLR 2023 (arXiv:2210.03651).
    """
    kernel = np.asarray(kernel, dtype=np.float64)
    if kernel.ndim < 3:
        raise ValueError(f"`kernel` must be a convolution kernel (*spatial, a, b); received shape {kernel.shape}.")
    p = math.prod(kernel.shape[:-2])
    x = kernel.reshape(p, -1)
    n = x.shape[1]
    if n < 2:
        raise ValueError(f"`kernel` holds {n} filter; a covariance needs at least 2.")
    x = x - x.mean(axis=1, keepdims=True)
    return x @ x.T / (n - 1), n


def _interpolation(n_from, n_to):
    """`(n_to, n_from)` linear interpolation between grids of the same extent."""
    if n_from == 1:
        return np.ones((n_to, 1))
    # Corners aligned: the first and last positions map onto each other.
    where = np.linspace(0.0, n_from - 1.0, n_to) if n_to > 1 else np.array([(n_from - 1) / 2])
    low = np.minimum(np.floor(where).astype(int), n_from - 2)
    frac = where - low
    matrix = np.zeros((n_to, n_from))
    matrix[np.arange(n_to), low] = 1.0 - frac
    matrix[np.arange(n_to), low + 1] = frac
    return matrix


def resample_covariance(covariance, from_shape, to_shape):
    """A filter covariance moved from one kernel grid to another.

    Filters are resampled by (multi)linear interpolation over the same
    extent (corner positions map onto each other): with `A` that
    interpolation, filters `A w` have covariance `A Sigma A^T`, which stays
    positive semi-definite. It is then scaled to keep the trace, the
    expected squared norm of a filter (a depthwise filter's output
    variance on white input), so a 5x5 source does not hand a 9x9 target
    filters of 3.2x the energy.

    Args:
        covariance: `(P, P)` array for kernels of spatial shape `from_shape`.
        from_shape: Spatial shape of the source kernels, e.g. `(5, 5)`.
        to_shape: Spatial shape of the target kernels, e.g. `(7, 7)`.

    Returns:
        A float64 `(prod(to_shape), prod(to_shape))` array.

    Examples:
        >>> resample_covariance(np.eye(9), (3, 3), (5, 5)).shape
        (25, 25)
    """
    from_shape = check.spatial_shape(from_shape, "from_shape")
    return resampled(validated_covariance(covariance, from_shape), from_shape, to_shape)


def resampled(covariance, from_shape, to_shape):
    """`resample_covariance` of a covariance already validated for `from_shape`."""
    to_shape = check.spatial_shape(to_shape, "to_shape")
    if from_shape == to_shape:
        return covariance
    if len(from_shape) != len(to_shape):
        raise ValueError(
            f"`from_shape` {from_shape} and `to_shape` {to_shape} must have the same number of dimensions."
        )
    a = np.ones((1, 1))
    for n_from, n_to in zip(from_shape, to_shape):
        a = np.kron(a, _interpolation(n_from, n_to))
    out = a @ covariance @ a.T
    return (out + out.T) / 2 * (np.trace(covariance) / np.trace(out))


def validated_covariance(matrix, spatial_shape):
    m = check.float_matrix(matrix, "covariance")
    p = math.prod(spatial_shape)
    if m.shape != (p, p):
        raise ValueError(
            f"`covariance` must be ({p}, {p}) for kernels of spatial shape {spatial_shape}; received shape {m.shape}."
        )
    check.symmetric(m, "covariance", tolerance=1e-8)
    scale = float(np.abs(m).max())
    if np.linalg.eigvalsh(m).min() < -1e-8 * scale:
        raise ValueError("`covariance` must be positive semi-definite (it has a negative eigenvalue).")
    if np.trace(m) <= 0:
        raise ValueError("`covariance` must have a positive trace (filters with some variance).")
    # The largest standard deviation of a weight; checked against float32
    # here so that a config with an unusable scale is refused when loaded.
    check.check_weight_scale(math.sqrt(np.max(np.diag(m))), "float32", "`covariance`")
    return m
