"""Scale controls: independent weights with a correlated initializer's scale and none of its structure.

A correlated arm can help by its correlation or merely by the scale it gives
the weights; its control keeps the scale and drops the correlation, so the
difference between the two is the correlation's alone.
"""

import math

import keras

from keras_corrinit.initializers._sampling import SeededInitializer, cast, fan_in, kernel_shape, sampling_dtype

__all__ = ["MATCHES", "ScaleControl"]

# What a control keeps of its reference: the per-weight variance, or the variance of a filter's sum.
MATCHES = ("var", "sum")


@keras.saving.register_keras_serializable(package="keras_corrinit")
class ScaleControl(SeededInitializer):
    """Independent normal weights with a `CorrelatedHeNormal`'s variance.

    With R the reference's spatial correlation over P positions:

    - `match="var"`: the reference's per-weight variance, 2 P / (sum(R)
      fan_in) in its `"filter"` variance mode, 2 / fan_in in `"weight"`
      mode;
    - `match="sum"`: that variance times sum(R) / P, so each filter's sum
      has the reference's variance.

    Fan-in is Keras's (`prod(spatial) * in_channels`), the one every
    initializer here uses.

    Args:
        reference: The `CorrelatedHeNormal` (or its config) whose scale is
            kept.
        match: `"var"` (default) or `"sum"`, see above.
        seed: An int, None (default: a random int picked once) or a
            `keras.random.SeedGenerator`, as in Keras.

    Examples:
        >>> correlated = CorrelatedHeNormal(SpatialCorrelation.exponential_decay(0.9), seed=0)
        >>> control = ScaleControl(correlated, "var", seed=0)
        >>> layer = keras.layers.Conv2D(16, 3, kernel_initializer=control)

    Reference:
        The scale controls of the correlated-initialization evidence
        (docs/evidence.md); Algorithm 1 of "Correlated Initialization".
    """

    def __init__(self, reference, match="var", seed=None):
        if isinstance(reference, dict):
            reference = keras.saving.deserialize_keras_object(reference)
        if not hasattr(reference, "correlation_matrix") or not hasattr(reference, "variance_mode"):
            raise TypeError(
                "`reference` must be a CorrelatedHeNormal (or its serialized config); "
                f"received {type(reference).__name__}."
            )
        if match not in MATCHES:
            raise ValueError(f"`match` must be one of {list(MATCHES)}; received {match!r}.")
        self.reference, self.match = reference, match
        super().__init__(seed=seed)

    def variance(self, shape):
        """The per-weight variance for a kernel of `shape`."""
        shape = kernel_shape(shape)
        spatial = tuple(shape[:-2])
        positions = math.prod(spatial)
        r_sum = float(self.reference.correlation_matrix(spatial).sum()) if spatial else 1.0
        if self.reference.variance_mode == "filter":
            variance = 2.0 * positions / (r_sum * fan_in(shape))
        else:
            variance = 2.0 / fan_in(shape)
        return variance * r_sum / positions if self.match == "sum" else variance

    def __call__(self, shape, dtype=None):
        shape = kernel_shape(shape)
        dtype, sample_dtype = sampling_dtype(dtype)
        stddev = math.sqrt(self.variance(shape))
        return cast(keras.random.normal(shape, stddev=stddev, dtype=sample_dtype, seed=self.seed), dtype)

    def get_config(self):
        return {
            "reference": keras.saving.serialize_keras_object(self.reference),
            "match": self.match,
            **super().get_config(),
        }
