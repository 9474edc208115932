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

from keras_corrinit._base import layer_seeds
from keras_corrinit._layers import kernel_slots, walk_layers

__all__ = ["apply_initializers", "layer_seeds", "pair_layers"]


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

    Every kernel is drawn before any is assigned, so a failing initializer
    leaves the model untouched. Draws happen in the order of `initializers`,
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

    Example:

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
    for key, value in values.items():
        layer, slot = targets[key]
        getattr(layer, slot.attribute).assign(value)
        setattr(layer, slot.initializer, initializers[key])
