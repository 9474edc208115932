"""The one engine that runs a model while watching its layers.

`initialize`, `lsuv_initialize`, `patch_statistics` and
`correlation_from_data` all need the same thing: run the real model
forward (its own preprocessing, strides, nesting and branches) and, when the
pass reaches a chosen layer, see its input and its pre-activation output,
and possibly change the layer there. Layers are always chosen and keyed by
object, never by name: two nested sub-models may each hold a layer named
"conv".

* `select_layers`: the kernel layers of a model, filtered by `include` /
  `exclude` patterns and frozen state, with the reason for each left out.
* `display_names`: a name per layer that is unique in the model (the layer's
  own name, or its path `outer/inner/conv` where the name repeats).
* `watching`: inside the block each chosen layer's call goes to
  `handler(layer, inputs, forward)`, where `forward(x)` is the layer's
  pre-activation output on `x`; the handler returns the pre-activation
  output the pass continues with, and the layer's activation is applied to
  it after.
* `run_model` / `run_until`: a forward pass with a clear error for data that
  does not fit; `run_until` ends the pass as soon as `done()` holds (the
  statistics of the first layers need no pass through the rest).
"""

import contextlib
import re
import warnings

import keras

from keras_corrinit._core import validation as check
from keras_corrinit._core.backend import activation_off, intercepted_call, sublayers
from keras_corrinit._core.data import describe
from keras_corrinit._core.layers import frozen_layers, kernel_slots, walk_layers

__all__ = ["display_names", "patterns", "run_model", "run_until", "select_layers", "stop_pass", "watching"]

# Layers with weights of two or more dimensions that no rule of this package
# covers; listed in reports' `skipped` instead of being left out silently.
_NO_RULE = "no rule for this layer kind: left as built"


class _PassDone(Exception):
    """Raised inside a watched call to end the forward pass early."""


def patterns(value, name):
    """`value` (None, a regular expression or a list of them) as compiled patterns."""
    if value is None:
        return None
    if isinstance(value, str):
        value = [value]
    if not isinstance(value, (list, tuple)) or not all(isinstance(v, str) for v in value):
        raise TypeError(f"`{name}` must be None, a regular expression or a list of them; received {value!r}.")
    compiled = []
    for v in value:
        try:
            compiled.append(re.compile(v))
        except re.error as error:
            raise ValueError(f"`{name}` holds an invalid regular expression {v!r}: {error}.") from None
    return compiled


def display_names(model):
    """`{id(layer): name}` for every layer below `model`: its name, or its path where the name repeats."""
    paths = {}

    def visit(layer, prefix):
        for sub in sublayers(layer):
            paths.setdefault(id(sub), f"{prefix}{sub.name}")
            visit(sub, f"{prefix}{sub.name}/")

    visit(model, "")
    counts = {}
    for layer in walk_layers(model):
        counts[layer.name] = counts.get(layer.name, 0) + 1
    return {id(layer): layer.name if counts[layer.name] == 1 else paths[id(layer)] for layer in walk_layers(model)}


def _unruled(layer):
    """Whether `layer` has weights of rank >= 2 that no kernel rule covers (MultiHeadAttention, Embedding).

    A layer that holds other layers (a model, a user's block) is not judged
    itself: its sublayers are, one by one; only weights of its own count.
    """
    if kernel_slots(layer):
        return False
    if sublayers(layer):
        own = {id(w) for w in layer.weights} - {id(w) for sub in sublayers(layer) for w in sub.weights}
        return any(len(w.shape) >= 2 for w in layer.weights if id(w) in own)
    return any(len(w.shape) >= 2 for w in layer.weights)


def _unruled_reason(layer):
    if not sublayers(layer):
        return _NO_RULE
    inner = {id(w) for sub in sublayers(layer) for w in sub.weights}
    own = [w.path.split("/")[-1] for w in layer.weights if id(w) not in inner and len(w.shape) >= 2]
    return f"its own weights ({', '.join(own)}) have no rule: left as built (its sublayers are reached)"


def select_layers(model, include=None, exclude=None, include_frozen=False):
    """`(layers, skipped)`: the kernel layers to touch in model order, and `{name: reason}` for the others.

    `include` / `exclude` are compiled patterns (see `patterns`) searched in
    a layer's name and in its display name (its path where names repeat).
    """
    names = display_names(model)
    frozen = set() if include_frozen else frozen_layers(model)

    def matches(compiled, layer):
        return any(p.search(layer.name) or p.search(names[id(layer)]) for p in compiled)

    chosen, skipped, seen = [], {}, set()
    for layer in walk_layers(model):
        if id(layer) in seen:
            continue
        seen.add(id(layer))
        name = names[id(layer)]
        if include is not None and not matches(include, layer):
            continue
        if exclude and matches(exclude, layer):
            continue
        if _unruled(layer):
            skipped[name] = f"{type(layer).__name__}: {_unruled_reason(layer)}"
        elif not kernel_slots(layer):
            continue
        elif id(layer) in frozen:
            skipped[name] = "frozen (trainable=False)"
        elif not layer.built:
            skipped[name] = "never called by the forward pass"
        else:
            chosen.append(layer)
    return chosen, skipped


@contextlib.contextmanager
def watching(layers, handler):
    """Inside the block each of `layers` calls `handler(layer, inputs, forward)`; see the module docstring."""

    def make(layer, original):
        def call(inputs, *args, **kwargs):
            with activation_off(layer) as activation:

                def forward(x):
                    return original(x, *args, **kwargs)

                output = handler(layer, inputs, forward)
            return output if activation is None else activation(output)

        return call

    with contextlib.ExitStack() as stack:
        for layer in layers:
            stack.enter_context(intercepted_call(layer, lambda original, layer=layer: make(layer, original)))
        yield


def _declared_inputs(model):
    try:
        return len(model.inputs)
    except (AttributeError, ValueError, TypeError):  # a subclassed model: no declared inputs
        return None


def model_inputs(model, x):
    """`x` as `model`'s inputs: a list batch `[x, y]` (a torch DataLoader's) for a model with fewer inputs
    gives its first item(s), with a warning, instead of reaching the model as extra inputs."""
    declared = _declared_inputs(model)
    if isinstance(x, list) and declared and len(x) > declared:
        warnings.warn(
            f"The data's batches are lists of {len(x)} arrays for a model with {declared} input(s) (a torch "
            f"DataLoader yields [x, y]): the first {declared} are taken as the inputs, the rest as targets.",
            stacklevel=3,
        )
        return x[0] if declared == 1 else x[:declared]
    return x


def run_model(model, x):
    """`model(x)` in inference mode, with an error that says how `x` does not fit `model`."""
    x = model_inputs(model, x)
    try:
        return model(x, training=False)
    except (ValueError, TypeError) as error:
        hint = _unbatched_hint(model, x)
        raise ValueError(
            f"`data` does not fit the model {model.name!r}: calling it on {describe(x)} raised "
            f"{type(error).__name__}: {check.clipped(error, 500)}{hint}"
        ) from None


def _unbatched_hint(model, x):
    try:
        expected = [len(t.shape) for t in model.inputs]
    except (AttributeError, ValueError):
        return ""
    received = [len(a.shape) for a in keras.tree.flatten(x)]
    if len(expected) == len(received) and all(r == e - 1 for r, e in zip(received, expected)):
        return " The samples have no batch axis: batch a tf.data.Dataset with dataset.batch(32)."
    return ""


def stop_pass():
    """Ends the forward pass run by `run_until` (call it from a handler)."""
    raise _PassDone


def run_until(model, x):
    """`run_model(model, x)`, ended early (returning None) where a handler calls `stop_pass()`."""
    try:
        return run_model(model, x)
    except _PassDone:
        return None
