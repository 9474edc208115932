"""Depthwise filters drawn from a filter covariance (Trockman et al., 2023).

A depthwise convolution has one spatial filter per channel (ConvMixer,
ConvNeXt: 7x7 to 9x9). `FilterCovariance` draws every such filter from a
multivariate normal `N(0, Sigma)` over its `P = prod(kernel_size)`
positions with a given Sigma (e.g. measured on a trained model, see
`DepthwiseCovariance`); `ConstructedFilterCovariance` builds Sigma in closed
form, learning-free.

Reference:
    Trockman, Willmott and Kolter, "Understanding the Covariance Structure
    of Convolutional Filters", ICLR 2023 (arXiv:2210.03651).
"""

import math

import keras
import numpy as np

from keras_corrinit._core import validation as check
from keras_corrinit.correlation._covariance import resampled, validated_covariance
from keras_corrinit.correlation._spatial import psd_factor
from keras_corrinit.initializers._sampling import CorrelatedSampler

__all__ = ["DEFAULT_ENVELOPE", "DEFAULT_SIGMA", "ConstructedFilterCovariance", "FilterCovariance"]


# The closed form's parameters at relative depth 0 (first depthwise layer)
# and 1 (last); in between they are interpolated linearly. Lengths are in
# units of the kernel's radius, so the same values serve every kernel size.
DEFAULT_SIGMA = (0.5, 1.0)


DEFAULT_ENVELOPE = (0.5, 1.0)


class _CovarianceSampler(CorrelatedSampler):
    """Draws every filter of a kernel from N(0, `covariance_matrix(spatial)`)."""

    def covariance_matrix(self, spatial_shape):
        raise NotImplementedError

    def _factor_key(self, shape):
        if len(shape) < 3:
            raise ValueError(
                f"{type(self).__name__} initializes convolution kernels (*spatial, a, b); received {shape}."
            )
        return shape[:-2]

    def _compute_factor(self, spatial_shape):
        return psd_factor(self.covariance_matrix(spatial_shape))


@keras.saving.register_keras_serializable(package="keras_corrinit")
class FilterCovariance(_CovarianceSampler):
    """Filters drawn from `N(0, covariance)`: a learned covariance, transferred.

    Every spatial filter of the kernel (for `DepthwiseConv2D`, one per input
    channel and multiplier) is an independent draw. A kernel of another
    spatial shape gets the covariance resampled to its grid
    (`resample_covariance`: linear interpolation, trace kept).

    Args:
        covariance: `(P, P)` symmetric positive semi-definite matrix, e.g.
            from `filter_covariance` or `DepthwiseCovariance.covariance_at`.
        spatial_shape: Spatial shape the covariance refers to. Default
            None: square, `(sqrt(P), sqrt(P))`.
        seed: An int, None (default: a random seed picked once) or a
            `keras.random.SeedGenerator`.

    Examples:
        >>> layer = keras.layers.DepthwiseConv2D(
        ...     5, depthwise_initializer=FilterCovariance(np.eye(9) / 9, seed=0))
        >>> layer.build((None, 16, 16, 8))
        >>> tuple(layer.kernel.shape)
        (5, 5, 8, 1)

    Reference:
        Trockman, Willmott and Kolter, "Understanding the Covariance
        Structure of Convolutional Filters", ICLR 2023, Section 4.
    """

    _scale_parameters = "`covariance`"

    def __init__(self, covariance, spatial_shape=None, seed=None):
        p = int(np.shape(covariance)[0]) if np.ndim(covariance) == 2 else 0
        if spatial_shape is None:
            side = math.isqrt(p)
            if p < 1 or side * side != p:
                raise ValueError(f"`covariance` is {np.shape(covariance)}, not (k*k, k*k); pass `spatial_shape`.")
            spatial_shape = (side, side)
        self.spatial_shape = check.spatial_shape(spatial_shape)
        self.covariance = validated_covariance(covariance, self.spatial_shape)
        super().__init__(seed=seed)

    def covariance_matrix(self, spatial_shape):
        """The covariance used for kernels of `spatial_shape`."""
        return resampled(self.covariance, self.spatial_shape, spatial_shape)

    def get_config(self):
        return {
            "covariance": self.covariance.tolist(),
            "spatial_shape": list(self.spatial_shape),
            **super().get_config(),
        }


def _at_depth(value, default, relative_depth, name):
    if value is None:
        first, last = default
        return first + relative_depth * (last - first)
    return check.real(value, name, low=0, low_open=True, what="a finite number > 0 or None")


@keras.saving.register_keras_serializable(package="keras_corrinit")
class ConstructedFilterCovariance(_CovarianceSampler):
    """Filters drawn from a closed-form, learning-free covariance.

    Positions `u` of a kernel are measured from its centre in units of its
    radius (`(k - 1) / 2` per axis), so one set of parameters fits every
    kernel size. The covariance of positions `u` and `v` is

        Sigma(u, v) = c * e(u) e(v) exp(-|u - v|^2 / (2 sigma^2)),
        e(u) = exp(-|u|^2 / (4 envelope^2)):

    neighbouring weights move together (a smooth filter, correlation length
    `sigma`) and the variance falls off from the centre (a Gaussian
    variance profile of width `envelope`). `c` makes the trace `gain`: the
    expected squared norm of a filter, its output variance on white input.
    Filters of learned depthwise layers are smooth, centred bumps and edges
    early and broader deeper (Trockman et al.'s Figures); the defaults grow
    both lengths with depth.

    Args:
        relative_depth: Where the layer sits among the model's depthwise
            layers, 0 (first) to 1 (last). Default 0.5. Sets `sigma` and
            `envelope` when they are None.
        sigma: Correlation length. Default None: `DEFAULT_SIGMA`
            interpolated at `relative_depth` (0.5 at depth 0, 1.0 at 1).
        envelope: Width of the variance profile. Default None:
            `DEFAULT_ENVELOPE` interpolated (0.5 at depth 0, 1.0 at 1).
        gain: Trace of the covariance. Default 1.0.
        seed: An int, None (default: a random seed picked once) or a
            `keras.random.SeedGenerator`.

    Examples:
        >>> init = ConstructedFilterCovariance(relative_depth=0.0, seed=0)
        >>> round(float(np.trace(init.covariance_matrix((7, 7)))), 6)
        1.0
        >>> kernel = init((7, 7, 16, 1))

    Reference:
        Trockman, Willmott and Kolter, "Understanding the Covariance
        Structure of Convolutional Filters", ICLR 2023, Section 5 (the
        idea of a closed-form covariance; this construction and its
        defaults are this package's, see the README).
    """

    _scale_parameters = "`gain`"

    def __init__(self, relative_depth=0.5, sigma=None, envelope=None, gain=1.0, seed=None):
        self.relative_depth = check.real(relative_depth, "relative_depth", low=0, high=1)
        self._sigma, self._envelope = sigma, envelope
        self.sigma = _at_depth(sigma, DEFAULT_SIGMA, self.relative_depth, "sigma")
        self.envelope = _at_depth(envelope, DEFAULT_ENVELOPE, self.relative_depth, "envelope")
        self.gain = check.real(gain, "gain", low=0, low_open=True)
        # The largest weight variance is at most the trace, `gain`.
        check.check_weight_scale(math.sqrt(self.gain), "float32", "`gain`")
        super().__init__(seed=seed)

    def covariance_matrix(self, spatial_shape):
        """The constructed `(P, P)` covariance for kernels of `spatial_shape`."""
        spatial_shape = check.spatial_shape(spatial_shape)
        axes = [np.arange(k) - (k - 1) / 2 for k in spatial_shape]
        axes = [a / max((k - 1) / 2, 1.0) for a, k in zip(axes, spatial_shape)]
        u = np.stack(np.meshgrid(*axes, indexing="ij"), axis=-1).reshape(-1, len(spatial_shape))
        # In logs and relative to the positions nearest the centre (whose
        # log-variance is then 0), with lengths divided before squaring: any
        # finite sigma and envelope give a finite matrix with trace >= 1 (a
        # tiny length: no correlation, or one central bump; a huge one:
        # constant filters), never 0 / 0.
        radius = np.linalg.norm(u, axis=-1)
        nearest = radius.min()
        with np.errstate(over="ignore"):
            log_envelope = np.where(
                radius == nearest, 0.0, -((radius - nearest) / self.envelope) * ((radius + nearest) / self.envelope) / 4
            )
            distance = np.linalg.norm(u[:, None, :] - u[None, :, :], axis=-1)
            sigma = np.exp(-np.square(distance / self.sigma) / 2 + log_envelope[:, None] + log_envelope[None, :])
        return sigma * (self.gain / np.trace(sigma))

    def get_config(self):
        return {
            "relative_depth": self.relative_depth,
            "sigma": self._sigma,
            "envelope": self._envelope,
            "gain": self.gain,
            **super().get_config(),
        }
