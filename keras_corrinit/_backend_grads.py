"""Gradients outside `fit`: the only backend-specific code in the package.

One function per backend computes the gradients of a scalar function with
respect to Keras variables; `gradients` picks the active backend's.
"""

import keras

__all__ = ["gradients"]


def _tensorflow(variables, scalar_fn):
    import tensorflow as tf

    with tf.GradientTape() as tape:
        tape.watch([v.value for v in variables])
        value = scalar_fn()
    return tape.gradient(value, [v.value for v in variables])


def _jax(variables, scalar_fn):
    import jax

    def of_values(values):
        with keras.StatelessScope(state_mapping=list(zip(variables, values))):
            return scalar_fn()

    return jax.grad(of_values)([v.value for v in variables])


def _torch(variables, scalar_fn):
    import torch

    return list(torch.autograd.grad(scalar_fn(), [v.value for v in variables]))


_BY_BACKEND = {"tensorflow": _tensorflow, "jax": _jax, "torch": _torch}


def gradients(variables, scalar_fn):
    """Gradients of `scalar_fn()` with respect to `variables`.

    Args:
        variables: A list of trainable `keras.Variable`s that `scalar_fn` reads.
        scalar_fn: A function without arguments returning a scalar tensor.

    Returns:
        A list of backend tensors, one per variable.
    """
    backend = keras.backend.backend()
    if backend not in _BY_BACKEND:
        raise ValueError(
            f"Gradients are implemented for the backends {sorted(_BY_BACKEND)}; "
            f"the active Keras backend is {backend!r}."
        )
    return _BY_BACKEND[backend](list(variables), scalar_fn)
