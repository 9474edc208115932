"""Covariance initialization of depthwise filters (Trockman et al., 2023).

A depthwise convolution has one spatial filter per channel (ConvMixer,
ConvNeXt: 7x7 to 9x9). Here every such filter is drawn from a multivariate
normal `N(0, Sigma)` over its `P = prod(kernel_size)` positions, with Sigma

* measured on a trained model: `depthwise_covariance_from_model` returns a
  `DepthwiseCovariance` (one Sigma per depthwise layer, scale included),
  which transfers to a target of another depth (by relative depth) and
  another kernel size (by resampling the filters between grids), or
* built in closed form, learning-free: `ConstructedFilterCovariance`.

`reinitialize_depthwise(model)` re-initializes every depthwise kernel of a
model (e.g. `keras.applications.ConvNeXtTiny`) in one call.

Reference:
    Trockman, Willmott and Kolter, "Understanding the Covariance Structure
    of Convolutional Filters", ICLR 2023 (arXiv:2210.03651).
"""

import dataclasses
import math

import keras
import numpy as np

from keras_corrinit import _validation as check
from keras_corrinit._base import CorrelatedSampler, JsonFile
from keras_corrinit._layers import kernel_layers
from keras_corrinit.correlation import filter_covariance, psd_factor
from keras_corrinit.layerwise import apply_initializers, layer_seeds

__all__ = [
    "DEFAULT_ENVELOPE",
    "DEFAULT_SIGMA",
    "ConstructedFilterCovariance",
    "DepthwiseCovariance",
    "FilterCovariance",
    "depthwise_covariance_from_model",
    "depthwise_layerwise_initializers",
    "reinitialize_depthwise",
    "resample_covariance",
]

# The closed form's parameters at relative depth 0 (first depthwise layer)
# and 1 (last); in between they are interpolated linearly. Lengths are in
# units of the kernel's radius, so the same values serve every kernel size.
DEFAULT_SIGMA = (0.5, 1.0)
DEFAULT_ENVELOPE = (0.5, 1.0)


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
    return _resampled(_validated_covariance(covariance, from_shape), from_shape, to_shape)


def _resampled(covariance, from_shape, to_shape):
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


def _validated_covariance(matrix, spatial_shape):
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
        self.covariance = _validated_covariance(covariance, self.spatial_shape)
        super().__init__(seed=seed)

    def covariance_matrix(self, spatial_shape):
        """The covariance used for kernels of `spatial_shape`."""
        return _resampled(self.covariance, self.spatial_shape, spatial_shape)

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


@dataclasses.dataclass
class DepthwiseCovariance(JsonFile):
    """Per-layer filter covariances measured on a trained model.

    Attributes:
        layers: Depthwise layer names (`"name/depthwise_kernel"` for the
            depthwise part of a SeparableConv), in model order.
        spatial_shapes: Each layer's kernel spatial shape.
        covariances: Each layer's `(P, P)` filter covariance (float64).
        counts: Each layer's number of filters.
        source: Free text: where the covariances come from. Default "".

    Reference:
        Trockman, Willmott and Kolter, "Understanding the Covariance
        Structure of Convolutional Filters", ICLR 2023 (arXiv:2210.03651).
    """

    layers: list
    spatial_shapes: list
    covariances: list
    counts: list
    source: str = ""

    def covariance_at(self, relative_depth, spatial_shape=None):
        """The covariance at `relative_depth` in [0, 1], on `spatial_shape`.

        Source layer i sits at depth `i / (n - 1)`; between two layers the
        covariances (resampled to `spatial_shape`, default the first
        layer's) are interpolated linearly, which keeps them positive
        semi-definite.
        """
        relative_depth = check.real(relative_depth, "relative_depth", low=0, high=1)
        shape = check.spatial_shape(spatial_shape or self.spatial_shapes[0])
        where = relative_depth * (len(self.layers) - 1)
        low = min(int(math.floor(where)), max(len(self.layers) - 2, 0))
        high = min(low + 1, len(self.layers) - 1)
        frac = where - low
        at = lambda i: _resampled(self.covariances[i], self.spatial_shapes[i], shape)
        return (1 - frac) * at(low) + frac * at(high) if high != low else at(low)

    def initializer(self, relative_depth=0.5, seed=None):
        """A `FilterCovariance` with the covariance at `relative_depth`."""
        shape = self.spatial_shapes[0]
        return FilterCovariance(self.covariance_at(relative_depth, shape), shape, seed=seed)

    def get_config(self):
        return {
            "layers": list(self.layers),
            "spatial_shapes": [list(s) for s in self.spatial_shapes],
            "covariances": [np.asarray(c).tolist() for c in self.covariances],
            "counts": [int(n) for n in self.counts],
            "source": self.source,
        }

    @classmethod
    def from_config(cls, config):
        fields = {f.name for f in dataclasses.fields(cls)}
        if not isinstance(config, dict) or set(config) - fields or fields - {"source"} - set(config):
            raise ValueError(f"A DepthwiseCovariance config is a dict with the keys {sorted(fields)}.")
        lengths = {len(config[name]) for name in ("layers", "spatial_shapes", "covariances", "counts")}
        if len(lengths) != 1 or 0 in lengths:
            raise ValueError(
                "A DepthwiseCovariance config needs `layers`, `spatial_shapes`, `covariances` and `counts` "
                "of one length, at least 1, one entry per layer."
            )
        shapes = [check.spatial_shape(s, "spatial_shapes") for s in config["spatial_shapes"]]
        covariances = [_validated_covariance(c, s) for c, s in zip(config["covariances"], shapes)]
        return cls(list(config["layers"]), shapes, covariances, list(config["counts"]), config.get("source", ""))


def _depthwise_keys(model):
    """`(key, layer)` of each depthwise kernel, keyed as `apply_initializers` expects."""
    found = []
    for layer, slot in kernel_layers(model, ("depthwise",)):
        key = layer.name if slot.attribute == "kernel" else f"{layer.name}/{slot.attribute}"
        found.append((key, getattr(layer, slot.attribute)))
    return found


def depthwise_covariance_from_model(model, source=""):
    """`DepthwiseCovariance` of every depthwise kernel of a trained model.

    Depthwise kernels are those of DepthwiseConv1D/2D, the depthwise part of
    SeparableConv1D/2D and convolutions with one input channel per group
    (ConvNeXt's), searched in nested models too.

    Args:
        model: A built Keras model.
        source: Free text stored with the result. Default "".
    """
    found = _depthwise_keys(model)
    if not found:
        raise ValueError("The model has no depthwise kernels (DepthwiseConv, SeparableConv, or groups == channels).")
    covariances, counts = zip(*(filter_covariance(keras.ops.convert_to_numpy(kernel)) for _, kernel in found))
    shapes = [tuple(int(d) for d in kernel.shape[:-2]) for _, kernel in found]
    return DepthwiseCovariance([key for key, _ in found], shapes, list(covariances), list(counts), source)


def depthwise_layerwise_initializers(target, covariance=None, seed=None, **construction):
    """One initializer per depthwise kernel of `target`, by relative depth.

    Args:
        target: A built Keras model.
        covariance: None (default) for `ConstructedFilterCovariance` at each
            layer's relative depth, or a `DepthwiseCovariance` measured on
            another model (transferred by relative depth and resampled to
            each layer's kernel size).
        seed: An int (per-layer seeds derived from it), None (default) or a
            `keras.random.SeedGenerator` shared by the layers.
        **construction: `sigma`, `envelope`, `gain` of the closed form.

    Returns:
        `{key: initializer}` for `apply_initializers`.
    """
    if covariance is not None and not isinstance(covariance, DepthwiseCovariance):
        raise TypeError(f"`covariance` must be None or a DepthwiseCovariance; received {type(covariance).__name__}.")
    if covariance is not None and construction:
        raise ValueError(f"{sorted(construction)} apply to the closed form only; pass `covariance=None`.")
    keys = [key for key, _ in _depthwise_keys(target)]
    if not keys:
        raise ValueError("`target` has no depthwise kernels to initialize.")
    initializers = {}
    for i, (key, s) in enumerate(zip(keys, layer_seeds(seed, len(keys)))):
        depth = i / (len(keys) - 1) if len(keys) > 1 else 0.0
        initializers[key] = (
            ConstructedFilterCovariance(depth, seed=s, **construction)
            if covariance is None
            else covariance.initializer(depth, seed=s)
        )
    return initializers


def reinitialize_depthwise(model, covariance=None, seed=None, **construction):
    """Re-initializes every depthwise kernel of `model` in place, in one call.

    Args:
        model: A built Keras model, e.g. `keras.applications.ConvNeXtTiny`.
        covariance: None (default) for the closed form, or a
            `DepthwiseCovariance` (see `depthwise_layerwise_initializers`).
        seed: An int, None (default) or a `keras.random.SeedGenerator`.
        **construction: `sigma`, `envelope`, `gain` of the closed form.

    Returns:
        The `{key: initializer}` applied.

    Examples:
        >>> model = keras.Sequential([keras.Input((16, 16, 8)), keras.layers.DepthwiseConv2D(7, name="dw")])
        >>> sorted(reinitialize_depthwise(model, seed=0))
        ['dw']
    """
    initializers = depthwise_layerwise_initializers(model, covariance, seed, **construction)
    apply_initializers(model, initializers)
    return initializers
