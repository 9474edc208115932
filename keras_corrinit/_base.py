"""Machinery the package's initializers share (private).

Keras's seed semantics: `seed` is an int (the same values on every call),
None (a random int seed picked once, at construction, as Keras does) or a
`keras.random.SeedGenerator` (new values on every call); configs are plain
JSON and `from_config` names unknown keys. Kernel shapes, spatial shapes and
dtypes are checked and normalized here once, for every initializer.
"""

import inspect
import json
import math
import operator
import random as python_random

import keras
import numpy as np
from keras import ops

_LOW_PRECISION = ("float16", "bfloat16")

# Largest kernel (spatial positions) handled: 32x32 or 10x10x10. Matrices
# are P x P and their eigendecompositions cost O(P^3), so a matrix from an
# untrusted config cannot make loading take minutes or gigabytes.
MAX_POSITIONS = 1024


def check_positions(p, what):
    if p > MAX_POSITIONS:
        raise ValueError(
            f"{what} has {p} spatial positions; this package "
            f"supports at most {MAX_POSITIONS} (a 32x32 or 10x10x10 kernel)."
        )


class SeededInitializer(keras.initializers.Initializer):
    """Keras's seed semantics for initializers (see module docstring)."""

    def __init__(self, seed=None):
        self._init_seed = seed
        if seed is None:
            # What Keras does for None: one random int seed per instance.
            seed = python_random.randint(1, int(1e9))
        elif isinstance(seed, dict):
            seed = seed_generator_from_config(seed)
        elif isinstance(seed, bool) or not isinstance(seed, (int, keras.random.SeedGenerator)):
            raise TypeError(f"`seed` must be an int, None or a keras.random.SeedGenerator; received {seed!r}.")
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
        shape = tuple(operator.index(d) for d in shape)
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


def spatial_shape_tuple(spatial_shape, name="spatial_shape"):
    try:
        if isinstance(spatial_shape, str):
            raise TypeError
        shape = tuple(operator.index(d) for d in spatial_shape)
    except (TypeError, ValueError):
        raise TypeError(
            f"`{name}` must be a tuple of positive ints such as (3, 3); received {spatial_shape!r}."
        ) from None
    if any(d < 1 for d in shape):
        raise ValueError(f"`{name}` must contain positive sizes; received {shape}.")
    return shape


def check_alpha(alpha):
    """Raises unless `alpha` is a finite number >= 0."""
    if isinstance(alpha, bool) or not isinstance(alpha, (int, float, np.floating)):
        raise TypeError(f"`alpha` must be a number >= 0; received {alpha!r}.")
    if not (math.isfinite(alpha) and alpha >= 0):
        raise ValueError(f"`alpha` must be a finite number >= 0; received {alpha}.")


# Derived int seeds stay below 2**31 - 1: valid on every backend, including
# those whose seed dtype is int32.
_SEED_MODULUS = 2**31 - 1


def layer_seeds(seed, count):
    """One seed per layer, derived from the user's `seed`.

    * An int gives `count` distinct ints: the first `count` distinct values
      of `numpy.random.SeedSequence(seed).generate_state(...)` modulo
      `2**31 - 1`. The derivation is deterministic (the same int seed gives
      the same layer seeds, hence the same model) and the per-layer streams
      do not collide, so same-shaped layers get independent weights.
    * A `keras.random.SeedGenerator` is shared: each layer's draw advances
      it, so every layer gets an independent draw (Keras's semantics).
    * None gives None to every layer: each initializer picks its own seed.

    Args:
        seed: An int >= 0, None or a `keras.random.SeedGenerator`.
        count: Number of layers.

    Returns:
        A list of `count` seeds.
    """
    if seed is None or isinstance(seed, keras.random.SeedGenerator):
        return [seed] * count
    if isinstance(seed, bool) or not isinstance(seed, int):
        raise TypeError(f"`seed` must be an int, None or a keras.random.SeedGenerator; received {seed!r}.")
    if seed < 0:
        raise ValueError(f"`seed` must be an int >= 0; received {seed}.")
    seeds, words = [], 0
    sequence = np.random.SeedSequence(seed)
    while len(seeds) < count:
        # generate_state(n) extends generate_state(m < n): drawing more
        # words only appends, so earlier layers keep their seeds.
        words = max(2 * words, count + 8)
        seeds = list(dict.fromkeys(int(w) % _SEED_MODULUS for w in sequence.generate_state(words)))
    return seeds[:count]


def per_layer(pairs, make_initializer, seed):
    """`{target: make_initializer(source, layer seed)}` with `layer_seeds`."""
    seeds = layer_seeds(seed, len(pairs))
    return {target: make_initializer(source, s) for (target, source), s in zip(pairs.items(), seeds)}


class JsonFile:
    """Mixin: `save(path)` and `load(path)` through `to_config`/`from_config`."""

    def save(self, path):
        """Writes `to_config()` to a JSON file."""
        with open(path, "w") as f:
            json.dump(self.to_config(), f)

    @classmethod
    def load(cls, path):
        """Reads a file written by `save`."""
        with open(path) as f:
            return cls.from_config(json.load(f))
