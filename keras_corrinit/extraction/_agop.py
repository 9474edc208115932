"""The AGOP of a layer, measured on data (its feature-matrix sibling, the NFM, is in `correlation`).

A trained layer with kernel K, flattened to `F` of shape `(fan_in, out)`
(rows in Keras's `(*spatial, in_channels)` order), has the Neural Feature
Matrix `W^T W = F F^T` (`fan_in x fan_in`, with `W = F^T` the usual
`out x fan_in` weight matrix). The Average Gradient Outer Product (AGOP) of
the model output with respect to the layer's input patches is, by the Neural
Feature Ansatz, proportional to it. Either is a covariance `NFMInit` draws
weights from.

Reference:
    Beaglehole et al., "Mechanism of feature learning in convolutional
    neural networks" (2023, arXiv:2309.00570), the Convolutional Neural
    Feature Ansatz.
"""

import keras
import numpy as np
from keras import ops

from keras_corrinit._core import validation as check
from keras_corrinit._core.backend import gradients, intercepted_call
from keras_corrinit._core.data import take_batches
from keras_corrinit._core.layers import kernel_slots, walk_layers

__all__ = ["agop_matrix"]


def agop_matrix(model, layer, data, batch_size=32, max_outputs=32, seed=0, steps=None, verbose=0):
    """Average Gradient Outer Product with respect to a layer's input patches.

    For a Conv/Dense layer with pre-activation `h = K^T patch + b` at each
    position, the model output's Jacobian with respect to a patch is
    `J = (df/dh) K^T`, and the AGOP (Beaglehole et al. 2023) is the mean of
    `J^T J` over samples and positions: `K G K^T` with `G` the mean outer
    product of `df/dh`. `df/dh` is obtained with a zero perturbation added
    to the layer's pre-activation, differentiated by the active backend.

    Args:
        model: A Keras model containing `layer`.
        layer: The layer (or its name).
        data: Inputs as for `lsuv_initialize` (array, `(x, y)`, tf.data,
            PyDataset, a generator of batches); every sample is used (see
            `steps`). Arrays are processed in batches of `batch_size`;
            other forms in their own batches. NaN or Inf inputs raise
            `ValueError`.
        batch_size: Batch size for array data. Default 32.
        max_outputs: Models with at most this many output units get the
            exact AGOP (one gradient per output). Larger outputs (e.g. a
            1000-class head) use `max_outputs` random Gaussian projections
            `v ~ N(0, I)` per batch instead, averaged: since
            `E[J^T v v^T J] = J^T J`, the estimate is unbiased. Its variance
            falls as `1 / max_outputs`: for one batch, the trace has variance
            `2 tr(B^2) / max_outputs` with `B` the batch mean of `J J^T`
            (a relative standard error of at most `sqrt(2 / max_outputs)`,
            0.25 for 32, much less when many outputs contribute), and each
            batch draws new projections, so more batches reduce it further.
            Default 32.
        seed: Int seed of those projections. Default 0.
        steps: None (default) to use every batch of `data`, or the number
            of batches to use (needed for an endless dataset such as
            `dataset.repeat()`).
        verbose: 1 shows progress over batches; 0 (default) is silent.

    Returns:
        `(fan_in, fan_in)` float64 numpy AGOP, usable as
        `NFMInit.from_covariance(agop, spatial_shape, in_channels)`.
    """
    layer = _agop_layer(model, layer, batch_size, max_outputs)
    if steps is not None:
        steps = check.integer(steps, "steps", minimum=1)
    batches = take_batches(data, steps, batch_size)
    if not batches:
        raise ValueError("`data` holds no batch of samples.")
    flat_kernel = keras.ops.convert_to_numpy(layer.kernel).astype(np.float64)
    flat_kernel = flat_kernel.reshape(-1, flat_kernel.shape[-1])
    rng = np.random.default_rng(seed)
    perturbation = _PreactivationPerturbation(layer)
    outer, count = 0.0, 0
    bar = keras.utils.Progbar(len(batches), unit_name="batch") if verbose else None
    with intercepted_call(layer, perturbation.wrap):
        for batch in batches:
            batch_outer, positions = _batch_gradient_outer(model, batch, perturbation, rng, max_outputs)
            outer, count = outer + batch_outer, count + positions
            if bar:
                bar.add(1)
    return flat_kernel @ (outer / count) @ flat_kernel.T


def _agop_layer(model, layer, batch_size, max_outputs):
    """`agop_matrix`'s arguments checked; the layer itself."""
    for name, value in (("batch_size", batch_size), ("max_outputs", max_outputs)):
        check.integer(value, name, minimum=1)
    if isinstance(layer, str):
        layer = model.get_layer(layer)
    if tuple(slot.kind for slot in kernel_slots(layer)) not in (("conv",), ("dense",)):
        raise ValueError(
            f"`layer` must be a Conv1D/2D/3D or Dense layer of the model; received {type(layer).__name__}."
        )
    if not any(candidate is layer for candidate in walk_layers(model)):
        raise ValueError(
            f"`layer` {layer.name!r} is not a layer of the model {model.name!r}; pass one of its layers or a name."
        )
    return layer


class _PreactivationPerturbation:
    """A layer call that adds `delta` to the pre-activation: `d output / d delta = df/dh`."""

    def __init__(self, layer):
        self.layer, self.delta, self.shape = layer, 0.0, None

    def wrap(self, original_call):
        layer, activation = self.layer, self.layer.activation

        def call(*args, **kwargs):
            layer.activation = keras.activations.linear
            try:
                pre = original_call(*args, **kwargs)
            finally:
                layer.activation = activation
            self.shape = tuple(pre.shape)
            return activation(pre + self.delta)

        return call


def _batch_gradient_outer(model, batch, perturbation, rng, max_outputs):
    """Sum over a batch's positions of `(df/dh)^T (df/dh)`, and the positions' count.

    Exact (one gradient per output unit) for at most `max_outputs` outputs,
    else the mean over `max_outputs` Gaussian projections of the output.
    """
    perturbation.delta = 0.0
    # a plain forward pass gives the pre-activation and output shapes
    out_dim = int(np.prod(model(batch, training=False).shape[1:]))
    shape = perturbation.shape
    delta = keras.Variable(np.zeros(shape, "float32"), trainable=True)
    perturbation.delta = delta
    if out_dim <= max_outputs:
        directions = np.eye(out_dim)
    else:
        # mean over projections: sum_k v_k v_k^T / m has expectation I
        directions = rng.normal(size=(max_outputs, out_dim)) / np.sqrt(max_outputs)
    outer = 0.0
    for v in directions:
        v_tensor = ops.convert_to_tensor(v.astype("float32"))

        def projected(v_tensor=v_tensor):
            out = ops.reshape(model(batch, training=False), (shape[0], -1))
            return ops.sum(out * v_tensor)

        (g,) = gradients([delta], projected)
        g = keras.ops.convert_to_numpy(g).astype(np.float64).reshape(-1, shape[-1])
        outer = outer + g.T @ g
    return outer, int(np.prod(shape[:-1]))
