"""Everything that leans on a backend's specifics or on Keras's internals.

The rest of the package is plain Keras 3; what it cannot do that way is
here, in one place:

* `gradients`: gradients of a scalar function with respect to Keras
  variables, outside `fit` (AGOP; the monitor's tests).
* `replica_sum` and `strategy_scope`: what `GradientSignMonitor` needs under
  a `tf.distribute` strategy, where the optimizer receives each replica's
  own gradients and variables must be made in the strategy's scope. Keras's
  JAX distribution hands the optimizer global arrays, and Keras has no
  multi-device `fit` on PyTorch, so both are no-ops there.
* `sync_training_state`: on JAX, `fit` keeps the training state outside the
  variables during an epoch; a callback must pull it in before reading.
* `intercepted_call`: replaces one layer instance's `call` for the length of
  a `with` block (the model-pass engine, AGOP's perturbed pre-activations)
  and restores the class's method after it.
* `activation_off`: a layer's fused activation switched off for a call, so
  that its `call` returns the pre-activation output (Keras's Conv, Dense
  and EinsumDense layers apply `self.activation` last in `call`).
* `HiddenFromSaving`: keeps attributes out of Keras's saving walk, which
  collects nested saveables from an object's `dir()`.
* `stored_dtype`: the dtype a backend really stores a requested one in
  (JAX keeps float64 as float32 unless x64 is enabled).
* `optimizer_swapped`: tells Keras's JAX trainer that the optimizer (and
  so the training state) changed after `fit` recorded its shardings, as
  older Keras (3.10 among them) needs.
"""

import contextlib

import keras

__all__ = [
    "HiddenFromSaving",
    "activation_off",
    "gradients",
    "intercepted_call",
    "optimizer_swapped",
    "replica_sum",
    "stored_dtype",
    "strategy_scope",
    "sublayers",
    "sync_training_state",
]


def _tensorflow_gradients(variables, scalar_fn):
    import tensorflow as tf

    with tf.GradientTape() as tape:
        tape.watch([v.value for v in variables])
        value = scalar_fn()
    return tape.gradient(value, [v.value for v in variables])


def _jax_gradients(variables, scalar_fn):
    import jax

    def of_values(values):
        with keras.StatelessScope(state_mapping=list(zip(variables, values))):
            return scalar_fn()

    return jax.grad(of_values)([v.value for v in variables])


def _torch_gradients(variables, scalar_fn):
    import torch

    return list(torch.autograd.grad(scalar_fn(), [v.value for v in variables]))


_GRADIENTS = {
    "tensorflow": _tensorflow_gradients,
    "jax": _jax_gradients,
    "torch": _torch_gradients,
}


def gradients(variables, scalar_fn):
    """Gradients of `scalar_fn()` with respect to `variables`.

    Args:
        variables: A list of trainable `keras.Variable`s that `scalar_fn` reads.
        scalar_fn: A function without arguments returning a scalar tensor.

    Returns:
        A list of backend tensors, one per variable.
    """
    backend = keras.backend.backend()
    if backend not in _GRADIENTS:
        raise ValueError(
            f"Gradients are implemented for the backends {sorted(_GRADIENTS)}; the active Keras backend is {backend!r}."
        )
    return _GRADIENTS[backend](list(variables), scalar_fn)


def _tensorflow_replica_sum(tensors):
    import tensorflow as tf

    context = tf.distribute.get_replica_context()
    if context is None or context.num_replicas_in_sync == 1:
        return tensors
    return context.all_reduce(tf.distribute.ReduceOp.SUM, tensors)


def replica_sum(tensors):
    """`tensors` summed over the replicas of a `tf.distribute` strategy.

    Keras scales each replica's loss by 1 / replicas, so the sum of the
    replicas' gradients is the global batch's gradient. Outside a
    multi-replica strategy (and on other backends) `tensors` come back as is.
    """
    if keras.backend.backend() == "tensorflow":
        return _tensorflow_replica_sum(tensors)
    return tensors


def strategy_scope(model):
    """Context in which variables used in `model`'s training step are made."""
    if keras.backend.backend() == "tensorflow":
        return model.distribute_strategy.scope()
    return contextlib.nullcontext()


def sync_training_state(model):
    """Writes JAX's in-flight training state back into `model`'s variables."""
    sync = getattr(model, "jax_state_sync", None)
    if sync is not None:
        sync()


@contextlib.contextmanager
def intercepted_call(layer, make_call):
    """`layer.call` is `make_call(original_call)` inside the block.

    Keras calls `self.call` from `Layer.__call__`, so an instance attribute
    shadows the class's method for this layer only; after the block the
    layer's own `call` is back: the class's method, or a `call` the user had
    set on the instance, also when the block raises.
    """
    missing = object()
    own = layer.__dict__.get("call", missing)
    layer.call = make_call(layer.call)
    try:
        yield
    finally:
        if own is missing:
            layer.__dict__.pop("call", None)
        else:
            layer.__dict__["call"] = own


def _identity(x):
    return x


@contextlib.contextmanager
def activation_off(layer):
    """Inside the block `layer` applies no activation; yields the activation it had (None if none).

    Keras's kernel layers end their `call` with `self.activation(outputs)`
    (the linear activation when none was given), so replacing the
    attribute on the instance for one call gives the pre-activation output.
    """
    activation = getattr(layer, "activation", None)
    if activation is None or activation is keras.activations.linear:
        yield None
        return
    layer.activation = _identity
    try:
        yield activation
    finally:
        layer.activation = activation


class HiddenFromSaving:
    """Mixin: the names in `_hidden_from_saving` are left out of `dir()`.

    Keras's saving walks an object's attributes (`dir`) for nested
    saveables (layers, optimizers); an attribute saved in another way must
    not be saved a second time under its own name.
    """

    _hidden_from_saving = ()

    def __dir__(self):
        return [name for name in super().__dir__() if name not in self._hidden_from_saving]


def optimizer_swapped(model):
    """Call after replacing `model.optimizer` inside `fit` (a callback).

    Older Keras JAX trainers (3.10 among them) record the shardings of the training
    state (optimizer variables included) when `fit` starts, and checks the
    state against them at every step; a wrapper that adds variables makes
    that record too short. Recording it again fixes that; newer Keras has no
    such record, and other backends need nothing.
    """
    record = getattr(model, "_record_training_state_sharding_spec", None)
    if keras.backend.backend() == "jax" and record is not None:
        record()


def keeps_plain_train_function():
    """Whether a callback may hold a model's own (plain) train function and set it back after its `fit`.

    On TensorFlow each train function is its own `tf.function`: setting the
    plain one back spares the next plain `fit` a retrace. Not on JAX: Keras
    jits the bound `model.train_step`, and JAX's trace cache is keyed by that
    function (bound methods of one model compare equal), so while an old
    plain train function is alive, a model recompiled with another loss
    silently reuses the old trace (Keras 3.15). PyTorch runs steps eagerly by
    default: there is nothing to keep.
    """
    return keras.backend.backend() == "tensorflow"


def make_own_train_function(model):
    """`model.make_train_function(force=True)`, its compiled step shared with no other train function.

    On JAX the step is jitted from a function object of its own (a closure
    over the bound `train_step`) instead of the bound method: its trace cache
    is its own, so keeping it alive across fits (the GradientSignMonitor
    does) never lends its trace to another train function of the same model,
    and no other can lend it a stale one. Elsewhere a plain re-make.
    """
    if keras.backend.backend() != "jax":
        model.make_train_function(force=True)
        return
    step = model.train_step
    object.__setattr__(model, "train_step", lambda state, data: step(state, data))
    try:
        model.make_train_function(force=True)
    finally:
        object.__delattr__(model, "train_step")


def stored_dtype(dtype):
    """The dtype arrays requested as `dtype` (a standardized name) really have."""
    if dtype == "float64" and keras.backend.backend() == "jax":
        import jax

        if not jax.config.jax_enable_x64:
            return "float32"
    return dtype


def _is_users_layer(layer):
    """A Layer subclass written outside Keras (a user's or a model library's block, encoder, patch embedding)."""
    return not type(layer).__module__.startswith("keras.")


def sublayers(layer):
    """The layers `layer` holds directly, in the order it assigned them.

    A Model's (Sequential, Functional, subclassed) are its public `layers`.
    A Layer subclass written outside Keras (how model libraries and keras.io
    write encoder blocks and patch embeddings) is entered through Keras's
    own layer tracking, which has no public accessor in Keras 3
    (`_flatten_layers`, read here and nowhere else). Keras's built-in
    layers that hold layers (MultiHeadAttention's projections, wrappers)
    are not entered: each has a rule of its own, or none.
    """
    if isinstance(layer, keras.Model):
        return list(layer.layers)
    if not _is_users_layer(layer):
        return []
    flatten = getattr(layer, "_flatten_layers", None)
    return list(flatten(include_self=False, recursive=False)) if flatten is not None else []


def attention_projections(layer):
    """A MultiHeadAttention's query, key, value and output EinsumDense layers.

    Keras exposes them as properties (`query_dense`...) since 3.x; older
    releases only as private attributes, read here and nowhere else.
    """
    names = ("query_dense", "key_dense", "value_dense", "output_dense")
    return tuple(getattr(layer, name, None) or getattr(layer, f"_{name}") for name in names)
