"""EnhancedGamma: a random variance per filter (or per spatial position), the mean variance the base's."""

import math

import keras
from keras import ops

from keras_corrinit.initializers._sampling import SeededInitializer, cast, fan_in, kernel_shape, sampling_dtype

__all__ = ["EnhancedGamma"]

_BASES = {
    "he_normal": (2.0, "fan_in", "normal"),
    "he_uniform": (2.0, "fan_in", "uniform"),
    "lecun_normal": (1.0, "fan_in", "normal"),
    "lecun_uniform": (1.0, "fan_in", "uniform"),
    "glorot_normal": (1.0, "fan_avg", "normal"),
    "glorot_uniform": (1.0, "fan_avg", "uniform"),
}


@keras.saving.register_keras_serializable(package="keras_corrinit")
class EnhancedGamma(SeededInitializer):
    """Base initializer with a random variance per filter (or sub-vector).

    "Enhanced Gamma Initialization": instead of one variance sigma^2 for the
    whole layer, each group of weights draws its own variance, distributed
    like the square of one weight of the base distribution, so that the
    layer's mean variance is the base's while filters differ in scale.

    * Normal bases (eq. 3.1.5): `sigma'^2 ~ Gamma(1/2, scale=2 sigma^2)` (the
      law of `w^2` for `w ~ N(0, sigma^2)`), then the group's weights are
      `N(0, sigma'^2)` (untruncated). It is sampled as
      `sigma' = sigma * |z0|` with `z0 ~ N(0, 1)`, which has exactly that law.
    * Uniform bases (section 3.2): the paper writes `a' ~ U(-a, a)` and
      `U(-sqrt(3a'), sqrt(3a'))`, whose square root is undefined for
      negative `a'`. Applying the normal case's idea instead, the group's
      second moment is drawn as the square of one base weight,
      `m = u^2` with `u ~ U(-a, a)`, so `E[m] = a^2 / 3`, the base variance;
      the weights are then `U(-sqrt(3 m), sqrt(3 m))`, whose variance is `m`.

    Groups (`granularity`): `"filter"` gives one variance per output filter
    (all `prod(spatial) * in_channels` weights feeding one output channel);
    `"spatial"` (eq. 3.1.6) one per spatial position of each filter, shared
    by its `in_channels` sub-vector. For Dense kernels both are per column.

    Examples:
        >>> init = EnhancedGamma(base="he_normal", granularity="spatial", seed=1)
        >>> values = init(shape=(3, 3, 16, 32))
        >>> layer = keras.layers.Conv2D(32, 3, kernel_initializer=init)

    Args:
        base: `"he_normal"` (default), `"he_uniform"`, `"lecun_normal"`,
            `"lecun_uniform"`, `"glorot_normal"` or `"glorot_uniform"`: the
            distribution family and mean variance (as Keras computes it:
            `scale / fan_in`, or `2 / (fan_in + fan_out)` for Glorot).
        granularity: `"filter"` (default) or `"spatial"`, see above.
        seed: An int, None (default: a random int picked once) or a
            `keras.random.SeedGenerator`, as in Keras.

    Reference:
        Sharkansky, "Enhancing performance of deep Convolutional Neural
        Networks initialization methods" (student project; Section 3.1).
    """

    def __init__(self, base="he_normal", granularity="filter", seed=None):
        if base not in _BASES:
            raise ValueError(f"`base` must be one of {sorted(_BASES)}; received {base!r}.")
        if granularity not in ("filter", "spatial"):
            raise ValueError(
                "`granularity` must be 'filter' (one variance per output "
                "filter) or 'spatial' (one per spatial position of each "
                f"filter); received {granularity!r}."
            )
        self.base = base
        self.granularity = granularity
        super().__init__(seed=seed)

    def base_variance(self, shape):
        """The base distribution's per-weight variance for `shape`."""
        shape = kernel_shape(shape)
        fans = fan_in(shape), math.prod(shape[:-2]) * shape[-1]
        scale, mode, _ = _BASES[self.base]
        return scale / (fans[0] if mode == "fan_in" else sum(fans) / 2)

    def __call__(self, shape, dtype=None):
        shape = kernel_shape(shape)
        dtype, sample_dtype = sampling_dtype(dtype)
        positions, in_channels, out_channels = (math.prod(shape[:-2]), shape[-2], shape[-1])
        # Group layout as a broadcastable (P, 1, out) or (1, 1, out) array.
        group_shape = (positions, 1, out_channels) if self.granularity == "spatial" else (1, 1, out_channels)
        std = math.sqrt(self.base_variance(shape))
        weight_seed, group_seed = self._seeds()
        if _BASES[self.base][2] == "normal":
            weights = keras.random.normal(shape, dtype=sample_dtype, seed=weight_seed)
            draw = keras.random.normal(group_shape, dtype=sample_dtype, seed=group_seed)
            group_std = std * ops.abs(draw)
        else:
            weights = keras.random.uniform(shape, -1.0, 1.0, dtype=sample_dtype, seed=weight_seed)
            draw = keras.random.uniform(group_shape, -1.0, 1.0, dtype=sample_dtype, seed=group_seed)
            # u = a * draw ~ U(-a, a) with a = sqrt(3) std; bound sqrt(3) |u|.
            group_std = 3.0 * std * ops.abs(draw)
        weights = ops.reshape(weights, (positions, in_channels, out_channels)) * group_std
        return cast(ops.reshape(weights, shape), dtype)

    def _seeds(self):
        """Seeds of the weight draw and of the group-scale draw.

        A SeedGenerator simply advances between the two draws. An int seed
        gets a second, fixed stream for the group scales, derived from it by
        a multiplicative hash, so that the scales are independent of the
        weights and the same int seed always gives the same values.
        """
        if isinstance(self.seed, keras.random.SeedGenerator):
            return self.seed, self.seed
        return self.seed, (self.seed * 2654435761 + 97) % (2**31 - 1)

    def get_config(self):
        return {
            "base": self.base,
            "granularity": self.granularity,
            **super().get_config(),
        }
