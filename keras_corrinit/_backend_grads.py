"""Gradients outside `fit`: the only backend-specific code in the package.

One function per backend computes the gradients of a scalar function of a
model's trainable variables; `gradients` picks the active backend's.
"""

import keras

__all__ = ["gradients"]


def _tensorflow(model, loss_of_model):
    import tensorflow as tf

    with tf.GradientTape() as tape:
        loss = loss_of_model()
    return tape.gradient(loss, model.trainable_variables)


def _jax(model, loss_of_model):
    import jax

    variables = model.trainable_variables
    values = [v.value for v in variables]

    def loss_of_values(new_values):
        with keras.StatelessScope(state_mapping=list(zip(variables, new_values))):
            return loss_of_model()

    return jax.grad(loss_of_values)(values)


def _torch(model, loss_of_model):
    import torch

    loss = loss_of_model()
    return list(torch.autograd.grad(loss, [v.value for v in model.trainable_variables]))


_BY_BACKEND = {"tensorflow": _tensorflow, "jax": _jax, "torch": _torch}


def gradients(model, loss_of_model):
    """Gradients of `loss_of_model()` w.r.t. `model.trainable_variables`.

    Args:
        model: A built Keras model (or layer).
        loss_of_model: A function without arguments returning a scalar tensor
            computed from the model's current variables.

    Returns:
        A list of backend tensors, one per trainable variable.
    """
    backend = keras.backend.backend()
    if backend not in _BY_BACKEND:
        raise ValueError(
            f"Gradients are implemented for the backends {sorted(_BY_BACKEND)}; "
            f"the active Keras backend is {backend!r}."
        )
    return _BY_BACKEND[backend](model, loss_of_model)
