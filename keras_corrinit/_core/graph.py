"""What a model's graph says about its layers: output heads and residual branches.

Read from the model's public `get_config()` (Sequential and Functional
models, nested ones included); a subclassed model has no graph to read, so
its head is found in the forward pass instead (`initialize`: the kernel layer
whose output is the model's output).

* Output heads: the kernel layers whose output reaches a model output
  through nothing but activations, dropout, reshaping and global average
  pooling. A model whose output comes from a merge, a normalization or a
  convolution's feature map has no head.
* Residual branches: at every `Add` (the layer or the `+` operation) with two
  or more inputs, the shortcut is the input that is an ancestor of the others
  (an identity shortcut), or, where both sides start at a common fork (a
  projection shortcut), the side with fewer kernel layers; the others are
  residual branches. Walking back from the merge, a branch ends at the
  first layer with a scale weight `gamma` (batch, layer or group
  normalization, a layer scale as in ConvNeXt) or, before one, at the first
  kernel layer. Two sides with as many kernel layers each are not a residual block.
* Normalized kernels: kernel layers whose only consumer is a batch, layer or
  group normalization, with nothing but a linear or ReLU activation between
  (both positively homogeneous): the normalization cancels the kernel's
  scale, so the scale only sets how far an optimizer's step turns it.
"""

import contextlib
import dataclasses

import keras

from keras_corrinit._core.layers import kernel_slots

__all__ = ["BranchEnd", "has_graph", "normalized_kernels", "output_heads", "reading_graphs", "residual_branch_ends"]

# Layers between a head and the model's output that do not change what the
# head's output means.
_PASS_THROUGH = (
    keras.layers.Activation,
    keras.layers.Softmax,
    keras.layers.ReLU,
    keras.layers.LeakyReLU,
    keras.layers.ELU,
    keras.layers.Dropout,
    keras.layers.Reshape,
    keras.layers.Flatten,
    keras.layers.GlobalAveragePooling1D,
    keras.layers.GlobalAveragePooling2D,
    keras.layers.GlobalAveragePooling3D,
)


_NORMALIZATIONS = (
    keras.layers.BatchNormalization,
    keras.layers.LayerNormalization,
    keras.layers.GroupNormalization,
)


@dataclasses.dataclass(frozen=True)
class BranchEnd:
    """The last scaled layer of a residual branch: `kind` is "gamma" (a normalization) or "kernel".

    `merge` is the `Add` layer the branch ends in (None where the sum is an
    operation, not a layer), `side` the branch's position among its inputs
    and `projection` whether the other input (the shortcut) passes through a
    kernel layer of its own (a 1x1 projection) instead of being the identity.
    """

    layer: object
    kind: str
    merge: object = None
    side: int = None
    projection: bool = False


def _config(model):
    try:
        config = model.get_config()
    except Exception:  # a custom layer without a config: no graph to read
        config = None
    if isinstance(config, dict) and "output_layers" in config:
        return config
    return _rebuilt_functional_config(model)


def _rebuilt_functional_config(model):
    """The graph of a Functional subclass whose `get_config` gives its constructor's arguments instead
    (KerasHub's backbones and tasks): read from a plain `keras.Model` over its inputs and outputs, which
    holds the same layer objects and calls nothing. None for a model without a graph (subclassed)."""
    if not isinstance(model, keras.Model) or isinstance(model, keras.Sequential):
        return None
    try:
        inputs, outputs = model.inputs, model.outputs
    except (AttributeError, ValueError):
        return None
    if not inputs or not outputs:
        return None
    try:
        return keras.Model(inputs, outputs, name=model.name).get_config()
    except Exception:  # tensors Keras cannot trace back to the inputs: no graph to read
        return None


def _histories(value):
    """Every `keras_history` `[layer name, node, tensor]` inside an inbound node's arguments."""
    if isinstance(value, dict):
        if "keras_history" in value:
            yield value["keras_history"][0]
        for item in value.values():
            yield from _histories(item)
    elif isinstance(value, (list, tuple)):
        for item in value:
            yield from _histories(item)


_GRAPHS = None  # {id(model): (model, graph)} inside a `reading_graphs` block


@contextlib.contextmanager
def reading_graphs():
    """Inside the block each model's config is read once (a large model's `get_config()` takes a while)."""
    global _GRAPHS
    _GRAPHS = {}
    try:
        yield
    finally:
        _GRAPHS = None


def _functional_graph(model):
    """`(order, inputs, classes, outputs)` of a Functional model's config, or None."""
    if _GRAPHS is None:
        return _read_graph(model)
    key = id(model)
    if key not in _GRAPHS:
        _GRAPHS[key] = (model, _read_graph(model))  # the model is kept so that its id is not reused
    return _GRAPHS[key][1]


def _read_graph(model):
    config = _config(model)
    if not isinstance(config, dict) or "output_layers" not in config or "layers" not in config:
        return None
    order, inputs, classes = [], {}, {}
    for entry in config["layers"]:
        name = entry["name"]
        order.append(name)
        classes[name] = entry.get("class_name")
        inputs[name] = list(dict.fromkeys(_histories(entry.get("inbound_nodes", []))))
    outputs = config["output_layers"]
    if outputs and isinstance(outputs[0], str):
        outputs = [outputs]  # a single output is stored as one [name, node, tensor]
    outputs = [item[0] for item in outputs]
    return order, inputs, classes, outputs


def has_graph(model):
    """Whether `model`'s graph can be read from its config (Sequential or Functional)."""
    return isinstance(model, keras.Sequential) or _functional_graph(model) is not None


def _layers_by_name(model):
    return {layer.name: layer for layer in getattr(model, "layers", [])}


def _head_behind(layer, by_name, inputs, name):
    """The head layers found walking back from `name` (a layer of this model) through pass-through layers."""
    if layer is None:
        return []
    if kernel_slots(layer):
        return [layer]
    if isinstance(layer, keras.Model):
        return output_heads(layer)
    if isinstance(layer, _PASS_THROUGH) and inputs is not None:
        found = []
        for source in inputs.get(name, []):
            found += _head_behind(by_name.get(source), by_name, inputs, source)
        return found
    return []


def output_heads(model):
    """The output head layers of a Sequential or Functional model (nested models followed); [] if none found."""
    by_name = _layers_by_name(model)
    if isinstance(model, keras.Sequential):
        for layer in reversed(model.layers):
            if kernel_slots(layer):
                return [layer]
            if isinstance(layer, keras.Model):
                return output_heads(layer)
            if not isinstance(layer, _PASS_THROUGH):
                return []
        return []
    graph = _functional_graph(model)
    if graph is None:
        return []
    _, inputs, _, outputs = graph
    heads = []
    for name in outputs:
        for head in _head_behind(by_name.get(name), by_name, inputs, name):
            if all(head is not h for h in heads):
                heads.append(head)
    return heads


def _ancestors(inputs):
    memo = {}

    def of(name):
        if name not in memo:
            memo[name] = set()
            found = set()
            for source in inputs.get(name, []):
                found |= {source} | of(source)
            memo[name] = found
        return memo[name]

    return of


def _branch_end(start, members, by_name, inputs):
    """Walk back from `start` inside `members` to the branch's last gamma or kernel; None if there is none."""
    name = start
    while name in members:
        layer = by_name.get(name)
        if layer is not None and hasattr(getattr(layer, "gamma", None), "assign"):
            return BranchEnd(layer, "gamma")  # a normalization's scale, or a layer scale (ConvNeXt)
        if layer is not None and kernel_slots(layer):
            return BranchEnd(layer, "kernel")
        # Only weightless layers (activations, dropout, reshapes) are walked through: a branch that ends in
        # attention or an embedding ends there, and a normalization before it (a pre-norm transformer's) is
        # its input, not its end -- a zero gamma there would silence the attention and its gradients.
        if layer is not None and layer.weights:
            return None
        if isinstance(layer, keras.Model) or len(inputs.get(name, [])) != 1:
            return None
        name = inputs[name][0]
    return None


def residual_branch_ends(model):
    """`BranchEnd`s of every residual branch in a Functional model and the Functional models nested in it."""
    ends = []
    for layer in getattr(model, "layers", []):
        if isinstance(layer, keras.Model):
            ends += residual_branch_ends(layer)
    graph = _functional_graph(model) if not isinstance(model, keras.Sequential) else None
    if graph is None:
        return ends
    order, inputs, classes, _ = graph
    by_name, ancestors = _layers_by_name(model), _ancestors(inputs)
    position = {name: i for i, name in enumerate(order)}

    def with_self(name):
        return ancestors(name) | {name}

    def kernels_in(names):
        return sum(1 for n in names if by_name.get(n) is not None and kernel_slots(by_name[n]))

    for name in order:
        sides = inputs.get(name, [])
        if classes.get(name) != "Add" or len(sides) < 2:
            continue
        shortcut = next((s for s in sides if all(s in with_self(o) for o in sides)), None)
        if shortcut is not None:
            branches = [(s, with_self(s) - with_self(shortcut)) for s in sides if s != shortcut]
            projection = False  # the shortcut is the block's input itself
        else:
            common = set.intersection(*(with_self(s) for s in sides))
            if not common:
                continue
            fork = max(common, key=position.get)
            members = {s: with_self(s) - with_self(fork) for s in sides}
            depth = {s: kernels_in(m) for s, m in members.items()}
            if len(set(depth.values())) == 1:
                continue  # as deep as each other: parallel paths, not a shortcut
            shallowest = min(depth.values())
            branches = [(s, m) for s, m in members.items() if depth[s] > shallowest]
            projection = shallowest > 0
        for start, members in branches:
            end = _branch_end(start, members, by_name, inputs)
            if end is not None and all(end.layer is not e.layer for e in ends):
                merge, side = by_name.get(name), sides.index(start)
                ends.append(dataclasses.replace(end, merge=merge, side=side, projection=projection))
    return ends


def _scale_free_activation(layer):
    activation = getattr(layer, "activation", None)
    return activation is None or activation in (keras.activations.linear, keras.activations.relu)


def normalized_kernels(model):
    """Kernel layers of a Sequential or Functional model (nested ones followed) whose one consumer is a normalization.

    A kernel layer inside a nested model whose output leaves that model is
    not followed across the boundary (not found, so treated like any other).
    """
    found = []
    for layer in getattr(model, "layers", []):
        if isinstance(layer, keras.Model):
            found += normalized_kernels(layer)
    if isinstance(model, keras.Sequential):
        pairs = zip(model.layers, model.layers[1:])
        return found + [
            a for a, b in pairs if kernel_slots(a) and isinstance(b, _NORMALIZATIONS) and _scale_free_activation(a)
        ]
    graph = _functional_graph(model)
    if graph is None:
        return found
    order, inputs, _, outputs = graph
    by_name = _layers_by_name(model)
    consumers = {}
    for name in order:
        for source in inputs.get(name, []):
            consumers.setdefault(source, []).append(name)
    for name in order:
        layer, after = by_name.get(name), consumers.get(name, [])
        if layer is None or not kernel_slots(layer) or name in outputs or len(after) != 1:
            continue
        if isinstance(by_name.get(after[0]), _NORMALIZATIONS) and _scale_free_activation(layer):
            found.append(layer)
    return found
