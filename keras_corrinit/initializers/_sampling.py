"""Machinery the package's initializers share (private).

Keras's seed semantics: `seed` is an int (the same values on every call),
None (a random int seed picked once, at construction, as Keras does) or a
`keras.random.SeedGenerator` (new values on every call); configs are plain
JSON and `from_config` names unknown keys. Kernel shapes, spatial shapes and
dtypes are checked and normalized here once, for every initializer.
"""

import inspect
import math
import random as python_random

import keras
import numpy as np
from keras import ops

from keras_corrinit._core import validation as check
from keras_corrinit._core.backend import stored_dtype

__all__ = ["CorrelatedSampler", "SeededInitializer", "cast", "fan_in", "kernel_shape", "sampling_dtype"]


_LOW_PRECISION = ("float16", "bfloat16")


class SeededInitializer(keras.initializers.Initializer):
    """Keras's seed semantics for initializers (see module docstring)."""

    def __init__(self, seed=None):
        self._init_seed = seed
        if seed is None:
            # What Keras does for None: one random int seed per instance.
            seed = python_random.randint(1, int(1e9))
        elif isinstance(seed, dict):
            seed = seed_generator_from_config(seed)
        elif not isinstance(seed, keras.random.SeedGenerator):
            try:
                seed = self._init_seed = check.seed(seed, "seed")
            except TypeError:
                raise TypeError(
                    f"`seed` must be an int, None or a keras.random.SeedGenerator; received {check.short(seed)}."
                ) from None
        self.seed = seed

    def get_config(self):
        return {"seed": keras.saving.serialize_keras_object(self._init_seed)}

    @classmethod
    def from_config(cls, config):
        # A config may come from a file someone else wrote: unknown keys get
        # a clear error, not Python's unexpected-keyword one.
        if not isinstance(config, dict):
            raise TypeError(
                f"A {cls.__name__} config must be a dict from get_config(); received {type(config).__name__}."
            )
        allowed = set(inspect.signature(cls.__init__).parameters) - {"self"}
        unknown = sorted(set(config) - allowed)
        if unknown:
            raise ValueError(f"Unknown keys {unknown} in a {cls.__name__} config; the keys are {sorted(allowed)}.")
        return cls(**config)


def seed_generator_from_config(config):
    """A serialized SeedGenerator, rebuilt without importing anything.

    Only `keras.random.SeedGenerator` configs are accepted, so a config
    cannot name another class or function to be imported and called.
    """
    inner = config.get("config")
    if (
        config.get("class_name") != "SeedGenerator"
        or not isinstance(inner, dict)
        or set(inner) - {"seed", "name"}
        or isinstance(inner.get("seed"), bool)
        or not isinstance(inner.get("seed"), (int, type(None)))
    ):
        raise TypeError(
            "A dict `seed` must be a serialized keras.random.SeedGenerator "
            "({'class_name': 'SeedGenerator', 'config': {'seed': int}}); "
            f"received {config!r}."
        )
    return keras.random.SeedGenerator(**inner)


def kernel_shape(shape):
    try:
        if isinstance(shape, str):
            raise TypeError
        shape = tuple(check.integer(d, "shape") for d in shape)
    except (TypeError, ValueError):
        raise TypeError(f"`shape` must be a tuple of ints; received {shape!r}.") from None
    if len(shape) < 2 or any(d < 1 for d in shape):
        raise ValueError(
            "`shape` must be a kernel shape with at least 2 positive "
            "dimensions, (*spatial, in_channels, out_channels) or "
            f"(in_features, out_features); received {shape}."
        )
    return shape


def sampling_dtype(dtype):
    """Dtype to sample in: float32 for half precision, else `dtype` itself."""
    dtype = keras.backend.standardize_dtype(dtype or keras.config.floatx())
    if not keras.backend.is_float_dtype(dtype):
        raise ValueError(f"`dtype` must be a floating dtype; received {dtype!r}.")
    return dtype, ("float32" if dtype in _LOW_PRECISION else dtype)


def cast(x, dtype):
    # A same-dtype cast still copies on some backends.
    return x if keras.backend.standardize_dtype(x.dtype) == dtype else ops.cast(x, dtype)


def fan_in(shape):
    """Keras's fan-in of a kernel shape: `prod(spatial) * shape[-2]`."""
    return math.prod(shape[:-1])


class CorrelatedSampler(SeededInitializer):
    """Kernels drawn as `scale * F @ z`: one factor `F` per kernel layout.

    The sampling step every correlated initializer shares, written once:
    check the shape and dtype, take the (cached, checked) factor for the
    shape, draw `z ~ N(0, I)` in the sampling dtype, multiply, cast.
    Subclasses give only the factor:

    * `_factor_key(shape)`: what the factor depends on (e.g. the spatial
      shape); it is computed once per key;
    * `_compute_factor(key)`: a float64 `(rows, K)` array `F`, with
      `rows * columns == prod(shape)`;
    * `_scale(shape)`: a float multiplying `F` for this shape (default 1);
    * `_draw_shape(shape, factor)`: the shape `z` is drawn in before it is
      seen as `(K, columns)` (default `(K, columns)` itself);
    * `_scale_parameters`: the arguments that set the weights' scale,
      named in the error raised when the weights would not fit the dtype.

    The factor is checked to be finite when it is computed, and the
    weights' largest standard deviation (the largest row norm of the scaled
    factor) to fit the dtype at every call, so no draw is ever Inf, NaN or
    all zeros.
    """

    _scale_parameters = "The initializer's parameters"

    def __init__(self, seed=None):
        self._factors = {}
        super().__init__(seed=seed)

    def _factor_key(self, shape):
        raise NotImplementedError

    def _compute_factor(self, key):
        raise NotImplementedError

    def _scale(self, shape):
        return 1.0

    def _draw_shape(self, shape, factor):
        return (factor.shape[1], math.prod(shape) // factor.shape[0])

    def _factor(self, shape):
        """`(F, largest row norm of F)` for `shape`, computed once per key."""
        key = self._factor_key(shape)
        if key not in self._factors:
            factor = self._compute_factor(key)
            largest = float(np.sqrt(np.max(np.sum(np.square(factor), axis=1))))
            if not (np.all(np.isfinite(factor)) and math.isfinite(largest)):
                raise ValueError(f"{self._scale_parameters} give a non-finite covariance; pass smaller values.")
            self._factors[key] = (factor, largest)
        return self._factors[key]

    def __call__(self, shape, dtype=None):
        shape = kernel_shape(shape)
        dtype, sample_dtype = sampling_dtype(dtype)
        factor, largest = self._factor(shape)
        scale = self._scale(shape)
        check.check_weight_scale(largest * scale, stored_dtype(dtype), self._scale_parameters)
        z = keras.random.normal(self._draw_shape(shape, factor), dtype=sample_dtype, seed=self.seed)
        weights = ops.matmul(
            ops.convert_to_tensor(factor * scale, dtype=sample_dtype),
            ops.reshape(z, (factor.shape[1], -1)),
        )
        return cast(ops.reshape(weights, shape), dtype)
