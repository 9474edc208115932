"""Layer-wise initialization: pairing layers, per-layer seeds, applying.

The paper's footnote 2 (correlation from the source layer at the same
depth) and NFM transfer (each target layer from its source counterpart) both
build one initializer per target layer. What they share lives here, once:

* `pair_layers`: which source layer each target layer takes its statistics
  from (in model order, or by an explicit mapping);
* `layer_seeds`: one seed per layer derived from the user's seed, so that
  layers of the same kernel shape never share a random draw;
* `apply_initializers`: draw every kernel, then assign them.
"""

import keras
import numpy as np

__all__ = ["apply_initializers", "layer_seeds", "pair_layers"]

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
        raise TypeError(
            "`seed` must be an int, None or a keras.random.SeedGenerator; "
            f"received {seed!r}."
        )
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


def pair_layers(targets, sources, mapping=None, what="layers"):
    """`{target layer name: source layer name}`, in model order or by `mapping`.

    Args:
        targets: Target layer names, in model order.
        sources: Source layer names, in model order.
        mapping: None to pair `targets` and `sources` in order (they must be
            equally many), or a `{target name: source name}` dict.
        what: How the layers are described in error messages.
    """
    if mapping is None:
        if len(targets) != len(sources):
            raise ValueError(
                f"The target has {len(targets)} {what} but the source has "
                f"{len(sources)}; pass `mapping={{target layer: source layer}}`."
            )
        return dict(zip(targets, sources))
    if not isinstance(mapping, dict):
        raise TypeError(
            "`mapping` must be None or a {target layer name: source layer name} "
            f"dict; received {type(mapping).__name__}."
        )
    unknown = sorted(set(mapping.values()) - set(sources))
    if unknown:
        raise ValueError(
            f"`mapping` names source layers that do not exist: {unknown}. "
            f"The source's {what} are {list(sources)}."
        )
    return dict(mapping)


def layerwise(pairs, make_initializer, seed):
    """`{target: make_initializer(source, layer seed)}` with `layer_seeds`."""
    seeds = layer_seeds(seed, len(pairs))
    return {target: make_initializer(source, s) for (target, source), s in zip(pairs.items(), seeds)}


def walk_layers(model):
    """All layers below `model`, nested models flattened, in model order."""
    for sub in getattr(model, "layers", []):
        yield sub
        yield from walk_layers(sub)


def apply_initializers(model, initializers):
    """Re-initializes layers in place and records the initializer in them.

    Every kernel is drawn before any is assigned, so a failing initializer
    leaves the model untouched. Draws happen in the order of `initializers`,
    so a `keras.random.SeedGenerator` shared by them gives each layer its
    own draw.

    Args:
        model: A built Keras model (nested models are searched).
        initializers: `{layer name: initializer}`, e.g. from
            `CorrelationEstimate.layerwise_initializers` or
            `nfm_layerwise_initializers`. Each layer's kernel is set to
            `initializer(kernel shape)` and the layer's `kernel_initializer`
            becomes that initializer, so a saved model's config says how it
            was initialized.

    Example:

    >>> apply_initializers(target, estimate.layerwise_initializers(target, seed=3))
    """
    layers = {layer.name: layer for layer in walk_layers(model)}
    missing = sorted(set(initializers) - set(layers))
    if missing:
        raise ValueError(f"`initializers` names layers the model does not have: {missing}.")
    without_kernel = [name for name in initializers if not hasattr(layers[name], "kernel")]
    if without_kernel:
        raise ValueError(f"`initializers` names layers without a `kernel` to initialize: {without_kernel}.")
    values = {
        name: init(tuple(layers[name].kernel.shape), dtype=layers[name].kernel.dtype)
        for name, init in initializers.items()
    }
    for name, value in values.items():
        layers[name].kernel.assign(value)
        layers[name].kernel_initializer = initializers[name]
