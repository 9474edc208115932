"""CorrelatedHeNormal: Algorithm 1 of the correlated-initialization paper.

It follows Keras's own random initializers: `__call__(shape, dtype=None)`,
a `seed` that is an int (same values on every call), `None` (a random int
seed picked once, at construction, as Keras does) or a
`keras.random.SeedGenerator` (new values on every call), and a plain-JSON
`get_config()`.

Kernel shapes are Keras's: `(*spatial, in_channels, out_channels)` for
Conv1D/2D/3D, `(*spatial, in_channels, depth_multiplier)` for DepthwiseConv2D,
`(*spatial, filters, in_channels)` for Conv1D/2D/3DTranspose, `(in, out)` for
Dense. Fan-in is computed as Keras's `he_normal` computes it,
`fan_in = prod(spatial) * shape[-2]`, so each initializer is a drop-in
replacement: for DepthwiseConv2D that counts all input channels, though each
output sees only one (so weights are smaller than a per-channel fan-in would
give, exactly as with Keras's own `he_normal`); for transposed convolutions
`shape[-2]` is the layer's `filters`.
"""

import math

import keras

from keras_corrinit._core import validation as check
from keras_corrinit.correlation._spatial import SpatialCorrelation, psd_factor
from keras_corrinit.initializers._sampling import (
    CorrelatedSampler,
    fan_in,
)

__all__ = ["DEFAULT_CORRELATION", "CorrelatedHeNormal"]


# Mean off-diagonal correlation of a 3x3 filter under rho ** distance with
# rho = 0.4 is 0.254, close to the 0.26 the paper measured between positions
# of ResNet filters trained on CIFAR-10 (Section 6, Table 4 discussion), and
# correlation that falls with distance is what its Figure 1 shows.
DEFAULT_CORRELATION = SpatialCorrelation.exponential_decay(0.4)


# Algorithm 1 divides by sum(R); below this fraction of P the weights would
# grow more than 100x in standard deviation.
_MIN_SUM_FRACTION = 1e-4


def _as_correlation(correlation):
    """Accepted forms of `correlation` -> SpatialCorrelation."""
    if correlation is None:
        return DEFAULT_CORRELATION
    if isinstance(correlation, SpatialCorrelation):
        return correlation
    if hasattr(correlation, "to_correlation"):  # a CorrelationEstimate
        return correlation.to_correlation("matrix")
    if isinstance(correlation, dict):
        if "kind" in correlation:
            return SpatialCorrelation.from_config(correlation)
        try:
            items = sorted((float(d), float(v)) for d, v in correlation.items())
        except (TypeError, ValueError):
            raise TypeError(
                "A dict `correlation` must be a SpatialCorrelation config or "
                "a {distance: correlation} profile of numbers; received "
                f"{correlation!r}."
            ) from None
        return SpatialCorrelation.from_profile(*zip(*items))
    if isinstance(correlation, str):
        raise TypeError(
            "`correlation` must be a SpatialCorrelation, a (P, P) matrix, a "
            "{distance: correlation} dict or None; received a string."
        )
    return SpatialCorrelation._from_argument(correlation, None, "correlation")


@keras.saving.register_keras_serializable(package="keras_corrinit")
class CorrelatedHeNormal(CorrelatedSampler):
    """He-normal initializer with spatially correlated filter weights.

    Algorithm 1 of "Correlated Initialization for Correlated Data": for every
    (in, out) channel pair, the spatial filter's P = prod(kernel_size)
    weights are drawn as `w = s * C z` with `z ~ N(0, I)` and `C C^T = R`, so
    the weights within a filter have correlation matrix R, while different
    filters are independent.

    Two variance modes (paper Sections 4 and 5):

    * `variance_mode="filter"` (Algorithm 1, default): per-weight variance
      `s^2 = 2 * P / (sum(R) * fan_in)`. The variance of a filter's sum,
      `s^2 * sum(R)` (eq. 17), then equals the uncorrelated He case,
      `2 * P / fan_in`, so activations keep He's scale.
    * `variance_mode="weight"`: per-weight variance `2 / fan_in` as in He,
      so the filter sum's variance grows by the factor `sum(R) / P`.

    With R = identity both modes are plain (untruncated) He-normal, value for
    value: the same int seed gives the same weights as
    `keras.initializers.VarianceScaling(2.0, "fan_in", "untruncated_normal")`.
    Kernels with one spatial position (1x1 convolutions, Dense) have
    R = [[1]] and so are He-normal too.

    Examples:
        >>> init = CorrelatedHeNormal(alpha=0.5, seed=1)
        >>> values = init(shape=(3, 3, 16, 32))
        >>> layer = keras.layers.Conv2D(32, 3, kernel_initializer=init)

    Args:
        correlation: The spatial correlation R. A `SpatialCorrelation`; a
            `(P, P)` array or nested list (for kernels with P positions); a
            `{distance: correlation}` dict (a profile, any kernel size); a
            `SpatialCorrelation` config dict; a `CorrelationEstimate` (its
            pooled matrix); or None (default):
            `SpatialCorrelation.exponential_decay(0.4)`: correlation falling
            with distance as in trained CNNs, with a mean 3x3 off-diagonal
            correlation (0.25) close to the paper's ResNet estimate (0.26).
        alpha: Strength factor; off-diagonal entries of R are multiplied by it
            (paper Table 5). 0 gives He-normal. Values above 1 are fine while
            every scaled entry stays in [-1, 1]; beyond that the kernel's
            first call raises `ValueError`. Default 1.0.
        variance_mode: `"filter"` (default) or `"weight"`, see above. `"filter"`
            raises `ValueError` when `sum(R)` is nearly 0 (strong negative
            correlations), since it divides by it.
        strict: If True, an R (after `alpha`) that is not positive
            semi-definite raises `ValueError`; if False it is replaced by the
            nearest valid correlation matrix with a warning. Default False.
        seed: An int, None (default: a random int picked once) or a
            `keras.random.SeedGenerator`. An int or None gives the same
            values on every call; a SeedGenerator gives new values on every
            call.

    Reference:
        Schneider, "Correlated Initialization for Correlated Data"
        (Algorithm 1, Table 5).
    """

    def __init__(
        self,
        correlation=None,
        alpha=1.0,
        variance_mode="filter",
        strict=False,
        seed=None,
    ):
        if variance_mode not in ("filter", "weight"):
            raise ValueError(
                "`variance_mode` must be 'filter' (Algorithm 1: keep the "
                "filter sum's variance) or 'weight' (keep He's per-weight "
                f"variance); received {variance_mode!r}."
            )
        self.correlation = _as_correlation(correlation)
        self.alpha = check.real(alpha, "alpha", low=0)
        self.variance_mode = variance_mode
        self.strict = check.boolean(strict, "strict")
        self._matrices = {}
        super().__init__(seed=seed)

    def correlation_matrix(self, spatial_shape):
        """The R (after `alpha` and any repair) used for `spatial_shape`."""
        spatial_shape = check.spatial_shape(spatial_shape)
        self._factor(spatial_shape + (1, 1))
        return self._matrices[spatial_shape]

    def _factor_key(self, shape):
        return shape[:-2]

    def _compute_factor(self, spatial_shape):
        """C scaled for fan_in = 1 (R kept for `correlation_matrix`)."""
        r = self.correlation.matrix_for(spatial_shape, alpha=self.alpha, strict=self.strict)
        p = r.shape[0]
        # Per-weight variance times fan_in: 2 for He, 2 P / sum(R) for
        # Algorithm 1's filter-sum correction.
        if self.variance_mode == "filter" and r.sum() < _MIN_SUM_FRACTION * p:
            raise ValueError(
                f"sum(R) = {r.sum():.3g} for kernel spatial shape "
                f"{spatial_shape}: negative correlations cancel, so a "
                "filter's sum has (almost) no variance and "
                "variance_mode='filter' would scale weights by "
                "sqrt(P / sum(R)). Use variance_mode='weight', a lower "
                "`alpha` or a `correlation` with less negative correlation."
            )
        self._matrices[spatial_shape] = r
        gain = 2.0 * p / r.sum() if self.variance_mode == "filter" else 2.0
        return psd_factor(r) * math.sqrt(gain)

    def _scale(self, shape):
        return 1.0 / math.sqrt(fan_in(shape))

    def _draw_shape(self, shape, factor):
        # Sampling z in the kernel's own shape keeps R = I identical to
        # Keras's untruncated He-normal for the same seed.
        return shape

    def get_config(self):
        return {
            "correlation": self.correlation.get_config(),
            "alpha": self.alpha,
            "variance_mode": self.variance_mode,
            "strict": self.strict,
            **super().get_config(),
        }


# base name -> (scale, fan mode, distribution) as in keras.initializers.
