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

from keras_corrinit._core import validation as check
from keras_corrinit._core.layers import kernel_slots, unchanged_on_error, walk_layers

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
    try:
        seed = check.integer(seed, "seed", minimum=0)
    except TypeError:
        raise TypeError(
            f"`seed` must be an int, None or a keras.random.SeedGenerator; received {check.short(seed)}."
        ) from None
    seeds, words = [], 0
    sequence = np.random.SeedSequence(seed)
    while len(seeds) < count:
        # generate_state(n) extends generate_state(m < n): drawing more
        # words only appends, so earlier layers keep their seeds.
        words = max(2 * words, count + 8)
        seeds = list(dict.fromkeys(int(w) % _SEED_MODULUS for w in sequence.generate_state(words)))
    return seeds[:count]


def initializers_by_layer(pairs, make_initializer, seed):
    """`{target: make_initializer(source, layer seed)}` with `layer_seeds`."""
    seeds = layer_seeds(seed, len(pairs))
    return {target: make_initializer(source, s) for (target, source), s in zip(pairs.items(), seeds)}


def pair_layers(targets, sources, mapping=None, what="layers"):
    """`{target layer name: source layer name}`, in model order or by `mapping`.

    Args:
        targets: Target layer names, in model order.
        sources: Source layer names, in model order.
        mapping: None (default) to pair `targets` and `sources` in order
            (they must be equally many), or a `{target name: source name}`
            dict.
        what: How the layers are described in error messages. Default
            "layers".
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
            f"`mapping` names source layers that do not exist: {unknown}. The source's {what} are {list(sources)}."
        )
    return dict(mapping)


def _kernel_targets(model, names):
    """`{key: (layer, slot)}` for `names`: layer names, or "layer/attribute"."""
    layers = {layer.name: layer for layer in walk_layers(model)}
    targets, problems = {}, []
    for key in names:
        name, _, attribute = key.partition("/")
        layer = layers.get(name)
        slots = kernel_slots(layer) if layer is not None else ()
        if attribute:
            slots = tuple(slot for slot in slots if slot.attribute == attribute)
        if layer is None:
            problems.append(f"{key!r}: the model has no layer {name!r}")
        elif len(slots) != 1:
            options = [f"{name}/{slot.attribute}" for slot in kernel_slots(layer)]
            if len(slots) > 1:
                why = f"has the kernels {options}; name one"
            elif attribute:
                why = f"has no kernel {attribute!r}" + (f" (its kernels: {options})" if options else "")
            else:
                why = "has no kernel to initialize"
            problems.append(f"{key!r}: {type(layer).__name__} {why}")
        else:
            targets[key] = (layer, slots[0])
    if problems:
        raise ValueError("`initializers` names kernels the model does not have: " + "; ".join(problems) + ".")
    return targets


def apply_initializers(model, initializers):
    """Re-initializes kernels in place and records the initializer in the layer.

    All or nothing: every kernel is drawn (and its shape checked) before
    any is assigned, and if an assignment fails the layers are restored,
    so an error leaves every weight and initializer attribute as before. Draws happen in the order of `initializers`,
    so a `keras.random.SeedGenerator` shared by them gives each layer its
    own draw.

    Args:
        model: A built Keras model (nested models are searched).
        initializers: `{key: initializer}`, e.g. from
            `CorrelationEstimate.layerwise_initializers`,
            `nfm_layerwise_initializers` or `depthwise_layerwise_initializers`.
            A key is a layer name, or `"layer name/attribute"` for layers with
            two kernels (SeparableConv: `depthwise_kernel`,
            `pointwise_kernel`). Each kernel is set to
            `initializer(kernel shape)` and the layer's matching initializer
            attribute (`kernel_initializer`, `depthwise_initializer`, ...)
            becomes that initializer, so a saved model's config says how it
            was initialized.

    Examples:
        >>> model = keras.Sequential([keras.Input((8, 8, 3)), keras.layers.Conv2D(4, 3, name="c")])
        >>> apply_initializers(model, {"c": keras.initializers.Zeros()})
        >>> float(keras.ops.max(keras.ops.abs(model.get_layer("c").kernel)))
        0.0
    """
    targets = _kernel_targets(model, initializers)
    values = {}
    for key, init in initializers.items():
        layer, slot = targets[key]
        kernel = getattr(layer, slot.attribute)
        values[key] = init(tuple(kernel.shape), dtype=kernel.dtype)
        if tuple(values[key].shape) != tuple(kernel.shape):
            raise ValueError(
                f"The initializer for {key!r} returned shape {tuple(values[key].shape)}; "
                f"the kernel's shape is {tuple(kernel.shape)}. Nothing was changed."
            )
    finite = keras.ops.convert_to_numpy(
        keras.ops.stack([keras.ops.all(keras.ops.isfinite(v)) for v in values.values()])
    )
    bad = [key for key, ok in zip(values, finite) if not ok]
    if bad:
        raise ValueError(f"The initializers for {bad} returned NaN or Inf values. Nothing was changed.")
    with unchanged_on_error(layer for layer, _ in targets.values()):
        for key, value in values.items():
            layer, slot = targets[key]
            getattr(layer, slot.attribute).assign(value)
            setattr(layer, slot.initializer, initializers[key])
