"""Spatial correlation structures for convolution kernels (pure numpy).

A k x k filter has P = k * k weight positions. Its spatial correlation is a
P x P matrix R whose entry (i, j) is the correlation of the weights at
positions i and j (positions are numbered in row-major order, the order in
which Keras lays out a kernel's spatial axes). `SpatialCorrelation` holds such
a structure in one of three forms:

* an explicit matrix, valid for kernels with exactly P positions;
* a tabulated distance profile: correlation as a function of the Euclidean
  distance between two positions, valid for any kernel shape (1D, 2D, 3D);
* a parametric decay `rho ** distance`, also valid for any kernel shape.

`SpatialCorrelation.matrix_for(spatial_shape, alpha)` turns any of them into a
valid correlation matrix for a concrete kernel.
"""

import json
import math
import warnings

import numpy as np

from keras_corrinit._core import validation as check
from keras_corrinit._core.config import Configurable

__all__ = [
    "SpatialCorrelation",
    "matrix_profile",
    "nearest_correlation_matrix",
    "position_distances",
    "psd_factor",
    "to_correlation",
]


# Asymmetry and negative eigenvalues below this are float noise, not errors.
_PSD_TOL = 1e-10


def position_distances(spatial_shape):
    """Euclidean distances between all positions of a kernel.

    Args:
        spatial_shape: Spatial kernel shape, e.g. `(3, 3)`, `(7,)`, `(3, 3, 3)`.

    Returns:
        A `(P, P)` float64 array, positions in row-major order.
    """
    shape = check.spatial_shape(spatial_shape)
    coords = np.stack([g.ravel() for g in np.indices(shape)], axis=-1).astype(np.float64)
    diff = coords[:, None, :] - coords[None, :, :]
    return np.sqrt((diff**2).sum(-1))


def _symmetric_eigh(matrix):
    values, vectors = np.linalg.eigh((matrix + matrix.T) / 2)
    return values, vectors


def nearest_correlation_matrix(matrix, max_iter=200, tol=1e-10):
    """Nearest positive semi-definite matrix with unit diagonal.

    Uses Higham's (2002) alternating projections with Dykstra's correction
    between the PSD cone and the unit-diagonal matrices, followed by an
    eigenvalue clip so that the result is PSD to working precision.

    Args:
        matrix: Symmetric `(P, P)` array with unit diagonal.
        max_iter: Maximum number of alternating projections. Default 200.
        tol: Stop when successive iterates differ by less than this
            (Frobenius). Default 1e-10.

    Returns:
        A `(P, P)` float64 correlation matrix.
    """
    y = np.array(matrix, dtype=np.float64)
    correction = np.zeros_like(y)
    for _ in range(max_iter):
        r = y - correction
        values, vectors = _symmetric_eigh(r)
        x = (vectors * np.clip(values, 0, None)) @ vectors.T
        correction = x - r
        y_next = x.copy()
        np.fill_diagonal(y_next, 1.0)
        converged = np.linalg.norm(y_next - y) < tol
        y = y_next
        if converged:
            break
    values, vectors = _symmetric_eigh(y)
    y = (vectors * np.clip(values, _PSD_TOL, None)) @ vectors.T
    scale = 1.0 / np.sqrt(np.diag(y))
    y = y * scale[:, None] * scale[None, :]
    return (y + y.T) / 2


def psd_factor(matrix):
    """A factor C with `C @ C.T == matrix` for a PSD matrix.

    Cholesky, as in the paper's Algorithm 1, when the matrix is positive
    definite; a symmetric square root (eigendecomposition with negative
    rounding noise clipped) when it is only semi-definite, where Cholesky
    fails. Both give samples `C @ z` with covariance `matrix`.
    """
    matrix = np.asarray(matrix, dtype=np.float64)
    try:
        return np.linalg.cholesky(matrix)
    except np.linalg.LinAlgError:
        values, vectors = _symmetric_eigh(matrix)
        return (vectors * np.sqrt(np.clip(values, 0, None))) @ vectors.T


def to_correlation(covariance):
    """The correlation matrix a covariance with a positive diagonal implies."""
    inv_std = 1.0 / np.sqrt(np.diag(covariance))
    m = (covariance + covariance.T) / 2 * inv_std[:, None] * inv_std[None, :]
    np.fill_diagonal(m, 1.0)
    return m


def pooled_correlation(covariances, counts):
    """One correlation matrix from several layers' `(P, P)` covariances: each divided by its mean position
    variance (so no layer counts by its scale), weighted by its count of filters or patches."""
    total = sum(counts[name] for name in covariances)
    pooled = sum(counts[name] * c / np.mean(np.diag(c)) for name, c in covariances.items())
    return to_correlation(pooled / total)


def _validated_matrix(matrix, name="matrix"):
    """A square, finite, symmetric matrix with a positive diagonal, as a correlation matrix."""
    m = check.float_matrix(matrix, name)
    check.check_positions(m.shape[0], f"`{name}`")
    check.symmetric(m, name)
    diagonal = np.diag(m)
    if np.any(diagonal <= 0):
        raise ValueError(
            f"`{name}` has a non-positive diagonal entry ({diagonal.min():.3g}); "
            "a correlation matrix has ones on its diagonal and a covariance "
            "matrix positive variances."
        )
    return to_correlation(m)


def _distance_key(distances):
    # Distances are square roots of integers; grouping by the rounded square
    # avoids float ties such as sqrt(2) computed two ways.
    return np.rint(distances**2).astype(np.int64)


def _float_list(values, name):
    try:
        out = np.array(values, dtype=np.float64)
    except (TypeError, ValueError):
        raise TypeError(f"`{name}` must be a sequence of numbers; received {check.short(values)}.") from None
    if out.ndim != 1 or out.size == 0:
        raise ValueError(f"`{name}` must be a non-empty 1D sequence; received shape {out.shape}.")
    if not np.all(np.isfinite(out)):
        raise ValueError(f"`{name}` contains NaN or Inf; pass finite numbers.")
    return out


class SpatialCorrelation(Configurable):
    """Spatial correlation structure of convolution filter weights.

    Build one with a constructor below; `CorrelatedHeNormal` takes it as
    `correlation`. All forms serialize to plain JSON (`get_config`,
    `to_json`) and back with exact values.

    Examples:
        >>> r = SpatialCorrelation.exponential_decay(0.4)
        >>> r.matrix_for((3, 3)).shape
        (9, 9)
        >>> profile = SpatialCorrelation.from_matrix(r.matrix_for((3, 3))).to_profile()
        >>> profile.matrix_for((5, 5)).shape  # a 3x3 estimate used for 5x5
        (25, 25)

    Reference:
        Schneider, "Correlated Initialization for Correlated Data"
        (Algorithm 1; the correlation of trained filters, Figure 1).
    """

    def __init__(self, kind, **params):
        # Use the named constructors; this one only stores checked values.
        self.kind = kind
        self._params = params

    # ----------------------------------------------------------- constructors
    @classmethod
    def from_matrix(cls, matrix, spatial_shape=None):
        """From an explicit `(P, P)` correlation (or covariance) matrix.

        Args:
            matrix: Square, symmetric, finite array-like. A covariance matrix
                is converted to the correlation matrix it implies. It need
                not be positive semi-definite here: `matrix_for` repairs or
                rejects that, after the strength factor is applied.
            spatial_shape: Kernel shape the positions belong to, e.g. `(3, 3)`.
                Defaults to `(k, k)` when P is a perfect square, else `(P,)`.
        """
        return cls._from_argument(matrix, spatial_shape, "matrix")

    @classmethod
    def _from_argument(cls, matrix, spatial_shape, name):
        """`from_matrix`, with errors naming the caller's argument `name`."""
        m = _validated_matrix(matrix, name)
        p = m.shape[0]
        if spatial_shape is None:
            k = math.isqrt(p)
            spatial_shape = (k, k) if k * k == p else (p,)
        spatial_shape = check.spatial_shape(spatial_shape)
        if math.prod(spatial_shape) != p:
            raise ValueError(
                f"`spatial_shape` {spatial_shape} has "
                f"{math.prod(spatial_shape)} positions but `{name}` is "
                f"{p}x{p}; pass the kernel shape the matrix was estimated on."
            )
        return cls("matrix", matrix=m, spatial_shape=spatial_shape)

    @classmethod
    def from_profile(cls, distances, values):
        """From correlation tabulated at Euclidean distances between positions.

        Between tabulated distances the correlation is interpolated linearly;
        beyond the largest one it is held at the last value. Distance 0 has
        correlation 1 (added when missing).

        Args:
            distances: Increasing non-negative distances, e.g.
                `[1, 1.414, 2, 2.236, 2.828]`.
            values: Correlation at each distance, in [-1, 1].
        """
        d = _float_list(distances, "distances")
        v = _float_list(values, "values")
        if d.shape != v.shape:
            raise ValueError(f"`distances` and `values` must have the same length; received {d.size} and {v.size}.")
        if np.any(d < 0) or np.any(np.diff(d) <= 0):
            raise ValueError(
                f"`distances` must be non-negative and strictly increasing; received {check.short(d.tolist())}."
            )
        if np.any(np.abs(v) > 1):
            raise ValueError(f"`values` are correlations and must lie in [-1, 1]; received {check.short(v.tolist())}.")
        if d[0] == 0:
            if v[0] != 1:
                raise ValueError(f"The correlation at distance 0 must be 1 (a weight with itself); received {v[0]}.")
        else:
            d, v = np.concatenate([[0.0], d]), np.concatenate([[1.0], v])
        return cls("profile", distances=d, values=v)

    @classmethod
    def exponential_decay(cls, rho):
        """Correlation `rho ** distance`, for any kernel shape.

        Args:
            rho: Correlation of adjacent positions, in [0, 1].
        """
        return cls("exponential", rho=check.real(rho, "rho", low=0, high=1))

    @classmethod
    def identity(cls):
        """No correlation: R = I for every kernel (plain He-normal)."""
        return cls.exponential_decay(0.0)

    # ------------------------------------------------------------- conversion
    def to_profile(self):
        """The mean correlation at each distance, as a profile.

        A matrix becomes a tabulated profile (so that a 3x3 estimate can
        serve a 5x5 kernel); profiles are returned unchanged.
        """
        if self.kind != "matrix":
            return self
        distances, values, _ = matrix_profile(self._params["matrix"], self._params["spatial_shape"])
        return SpatialCorrelation.from_profile(distances, values)

    def raw_matrix(self, spatial_shape):
        """The structure's matrix for `spatial_shape`, before alpha or repair."""
        spatial_shape = check.spatial_shape(spatial_shape)
        p = math.prod(spatial_shape)
        if p == 1:
            # One position (1x1 conv, Dense): nothing to correlate.
            return np.ones((1, 1))
        if self.kind == "matrix":
            m = self._params["matrix"]
            if m.shape[0] != p:
                raise ValueError(
                    f"The `correlation` matrix is {m.shape[0]}x{m.shape[0]} (for "
                    f"kernel shape {self._params['spatial_shape']}) but the "
                    f"kernel's spatial shape {spatial_shape} has {p} positions. "
                    "Use a matrix of matching size, or `.to_profile()` to "
                    "transfer the structure by distance."
                )
            return m.copy()
        distances = position_distances(spatial_shape)
        if self.kind == "exponential":
            return np.power(self._params["rho"], distances)
        return np.interp(distances, self._params["distances"], self._params["values"])

    def matrix_for(self, spatial_shape, alpha=1.0, strict=False):
        """A valid correlation matrix for a kernel of `spatial_shape`.

        Args:
            spatial_shape: e.g. `(3, 3)`; P = product of its sizes.
            alpha: Strength factor; off-diagonal entries are multiplied by it,
                the diagonal stays 1 (paper Table 5).
            strict: If True, a matrix that is not positive semi-definite raises
                `ValueError`; otherwise it is replaced, with a warning, by the
                nearest valid correlation matrix (for kernels above 16x16
                the number of projections is capped to bound the work, so
                the result is valid and near, not always the nearest).

        Returns:
            A `(P, P)` float64 positive semi-definite matrix with unit diagonal.
        """
        alpha = check.real(alpha, "alpha", low=0)
        raw = self.raw_matrix(spatial_shape)
        np.fill_diagonal(raw, 0.0)
        strongest = float(np.abs(raw).max())
        if alpha * strongest > 1.0 + _PSD_TOL:
            raise ValueError(
                f"`alpha`={alpha} scales off-diagonal correlations up to "
                f"{alpha * strongest:.4g}, outside [-1, 1]. For this "
                f"correlation use alpha <= {1.0 / strongest:.4g}."
            )
        m = raw * alpha
        np.fill_diagonal(m, 1.0)
        smallest = float(np.linalg.eigvalsh(m)[0])
        if smallest >= -_PSD_TOL * m.shape[0]:
            return m
        message = (
            f"The correlation matrix for kernel shape {tuple(spatial_shape)} "
            f"with alpha={alpha} is not positive semi-definite (smallest "
            f"eigenvalue {smallest:.4g})."
        )
        if strict:
            raise ValueError(
                message + " Lower `alpha`, or pass strict=False to use the nearest valid correlation matrix instead."
            )
        warnings.warn(
            message + " Using the nearest valid correlation matrix instead; pass strict=True to raise.",
            stacklevel=3,
        )
        return nearest_correlation_matrix(m, max_iter=check.repair_iterations(m.shape[0]))

    # ---------------------------------------------------------- serialization
    def get_config(self):
        """Plain-JSON dict that `from_config` turns back into an equal object."""
        config = {"kind": self.kind}
        for key, value in self._params.items():
            if isinstance(value, np.ndarray):
                value = value.tolist()
            elif isinstance(value, tuple):
                value = list(value)
            config[key] = value
        return config

    @classmethod
    def from_config(cls, config):
        if not isinstance(config, dict):
            raise TypeError(
                f"A SpatialCorrelation config must be a dict from `get_config()`; received {type(config).__name__}."
            )
        params = dict(config)
        kind = params.pop("kind", None)
        builders = {
            "matrix": (cls.from_matrix, {"matrix", "spatial_shape"}),
            "profile": (cls.from_profile, {"distances", "values"}),
            "exponential": (cls.exponential_decay, {"rho"}),
        }
        if kind not in builders:
            raise ValueError(f"Unknown SpatialCorrelation kind {kind!r}; expected one of {sorted(builders)}.")
        builder, keys = builders[kind]
        if set(params) != keys:
            raise ValueError(
                f"A {kind!r} SpatialCorrelation config needs exactly the keys "
                f"{sorted(keys)}; received {sorted(params)}."
            )
        return builder(**params)

    def to_json(self):
        return json.dumps(self.get_config())

    @classmethod
    def from_json(cls, text):
        return cls.from_config(json.loads(text))

    def __eq__(self, other):
        return isinstance(other, SpatialCorrelation) and self.get_config() == other.get_config()

    def __repr__(self):
        if self.kind == "exponential":
            return f"SpatialCorrelation.exponential_decay({self._params['rho']})"
        if self.kind == "profile":
            return (
                "SpatialCorrelation.from_profile("
                f"{np.round(self._params['distances'], 3).tolist()}, "
                f"{np.round(self._params['values'], 3).tolist()})"
            )
        return (
            "SpatialCorrelation.from_matrix(<"
            f"{self._params['matrix'].shape[0]}x{self._params['matrix'].shape[0]}"
            f">, spatial_shape={self._params['spatial_shape']})"
        )


def matrix_profile(matrix, spatial_shape):
    """Mean off-diagonal correlation at each distance between positions.

    Args:
        matrix: `(P, P)` correlation matrix.
        spatial_shape: Kernel shape with P positions.

    Returns:
        `(distances, values, counts)`: increasing distances > 0, the mean of
        the matrix entries at each, and how many ordered pairs were averaged.
    """
    matrix = np.asarray(matrix, dtype=np.float64)
    distances = position_distances(spatial_shape)
    if distances.shape != matrix.shape:
        raise ValueError(
            f"`matrix` is {matrix.shape} but `spatial_shape` {spatial_shape} has {distances.shape[0]} positions."
        )
    keys = _distance_key(distances).ravel()
    off_diagonal = keys > 0
    keys, entries = keys[off_diagonal], matrix.ravel()[off_diagonal]
    unique, inverse, counts = np.unique(keys, return_inverse=True, return_counts=True)
    sums = np.bincount(inverse, weights=entries)
    return np.sqrt(unique.astype(np.float64)), sums / counts, counts
