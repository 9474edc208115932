"""The data's own patch statistics, measured inside a model in one forward pass.

Every chosen Conv2D layer's `call` is intercepted on the instance (as LSUV
does), so the patches are those the layer really sees: the model's own
preprocessing, the outputs of the layers before it, its strides, padding
and dilation. Nothing in the model changes.

`correlation_from_data` turns the measured patch covariances into a
`CorrelationEstimate`, the form `correlation_from_model` gives for trained
filters, so that "the data's R" (the correlated-initialization paper's
premise, measured instead of assumed) initializes a network the same way:
`CorrelatedHeNormal(estimate)` or `estimate.layerwise_initializers(model)`.
"""

import warnings

import keras
import numpy as np

from keras_corrinit._core import validation as check
from keras_corrinit._core.data import take_batches
from keras_corrinit._core.layers import kernel_slots
from keras_corrinit._core.model_pass import display_names, patterns, run_model, select_layers, watching
from keras_corrinit.correlation._patches import PatchAccumulator, layer_patches
from keras_corrinit.extraction._estimates import CorrelationEstimate

__all__ = ["correlation_from_data", "patch_statistics"]


def _convolutions(model, layers):
    """The Conv2D layers (one group) to measure, by object: all, those matching a pattern, or those named."""
    chosen, _ = select_layers(model, include_frozen=True)  # measuring changes nothing: frozen layers too
    found = [
        layer
        for layer in chosen
        if isinstance(layer, keras.layers.Conv2D) and [slot.kind for slot in kernel_slots(layer)] == ["conv"]
    ]
    names = display_names(model)
    if isinstance(layers, str):
        pattern = patterns(layers, "layers")[0]
        found = [layer for layer in found if pattern.search(layer.name) or pattern.search(names[id(layer)])]
    elif layers is not None:
        if not isinstance(layers, (list, tuple)) or not all(isinstance(n, str) for n in layers):
            raise TypeError(
                f"`layers` must be None, a regular expression or a list of layer names; received {layers!r}."
            )
        known = {names[id(layer)] for layer in found} | {layer.name for layer in found}
        unknown = [n for n in layers if n not in known]
        if unknown:
            raise ValueError(
                f"`layers` names {unknown}, which are not Conv2D layers of the model; its Conv2D layers are "
                f"{sorted(names[id(layer)] for layer in found)}."
            )
        wanted = set(layers)
        found = [layer for layer in found if layer.name in wanted or names[id(layer)] in wanted]
    if not found:
        raise ValueError(
            "The model has no Conv2D layer to measure"
            + (f" matching `layers`={layers!r}." if layers is not None else ".")
        )
    return found


def patch_statistics(model, data, layers=None, batches=1, batch_size=32, max_patches_per_batch=4096, seed=0, verbose=0):
    """The covariance of each Conv2D layer's input patches on `data`.

    Args:
        model: A built Keras model (Sequential, Functional, nested, subclassed).
        data: Inputs as for `lsuv_initialize` (arrays, `(x, y)`, tf.data,
            PyDataset, a generator of batches).
        layers: None (default: every Conv2D with one group), a regular
            expression searched in layer names, or a list of names (each
            must be a Conv2D of the model; a path `outer/conv` where names
            repeat). Either data format.
        batches: How many batches of `data` to use. Default 1.
        batch_size: Batch size for array data. Default 32.
        max_patches_per_batch: Patches used per layer and batch, drawn
            uniformly without replacement; memory is D x D per layer
            (D = kh * kw * in_channels) whatever the data. None uses
            every patch. Default 4096.
        seed: Seed of that draw. Default 0.
        verbose: 1 shows progress over batches. Default 0.

    Returns:
        `{layer name: PatchStatistics}` in model order (a layer's path
        where its name repeats); layers the forward pass never called are
        left out with a warning.
    """
    if not isinstance(model, keras.Model):
        raise TypeError(f"`model` must be a keras.Model; received {type(model).__name__}.")
    check.integer(batches, "batches", minimum=1)
    check.integer(batch_size, "batch_size", minimum=1)
    if max_patches_per_batch is not None:
        check.integer(max_patches_per_batch, "max_patches_per_batch", minimum=2)
    seed = check.seed(seed, "seed") or 0
    chosen = _convolutions(model, layers)
    sample = take_batches(data, batches, batch_size)
    if not sample:
        raise ValueError("`data` holds no batch of samples.")
    names = display_names(model)
    accumulators = {
        id(layer): PatchAccumulator(layer.kernel_size, layer.kernel.shape[-2], max_patches_per_batch, seed)
        for layer in chosen
    }

    def measuring(layer, inputs, forward):
        accumulators[id(layer)].add(layer_patches(layer, inputs))
        return forward(inputs)

    bar = keras.utils.Progbar(len(sample), unit_name="batch") if verbose else None
    with watching(chosen, measuring):
        for x in sample:
            run_model(model, x)
            if bar:
                bar.add(1)
    unreached = [names[id(layer)] for layer in chosen if accumulators[id(layer)].count == 0]
    if unreached:
        warnings.warn(f"The forward pass never called {unreached}: no patch statistics for them.", stacklevel=2)
    return {names[id(layer)]: accumulators[id(layer)].statistics() for layer in chosen if accumulators[id(layer)].count}


def correlation_from_data(model, data, kernel_size=(3, 3), **measurement):
    """The spatial correlation of the data each k x k Conv2D sees, as a `CorrelationEstimate`.

    Per layer the `(P, P)` correlation of patch positions (same channel,
    averaged over channels); pooled like trained filters' estimates (each
    layer's covariance divided by its mean position variance, weighted by
    its patch count).

    Args:
        model: A built Keras model.
        data: As for `patch_statistics`.
        kernel_size: The kernel size of the layers measured. Default (3, 3).
        **measurement: `layers`, `batches`, `batch_size`,
            `max_patches_per_batch`, `seed`, `verbose` of `patch_statistics`.
    """
    kernel_size = check.kernel_size(kernel_size, rank=2)
    stats = {
        name: s for name, s in patch_statistics(model, data, **measurement).items() if s.kernel_size == kernel_size
    }
    if not stats:
        raise ValueError(f"No measured Conv2D layer has kernel size {kernel_size}.")
    covariances = {name: s.spatial_covariance() for name, s in stats.items()}
    constant = [name for name, c in covariances.items() if not np.all(np.diag(c) > 0)]
    if constant:
        raise ValueError(
            f"The input patches of {constant} do not vary (constant images, or a layer whose input is constant): "
            "a correlation needs varying data. Pass real samples of the data."
        )
    counts = {name: s.count for name, s in stats.items()}
    matrices = {name: s.correlation() for name, s in stats.items()}
    return CorrelationEstimate.pooled(kernel_size, matrices, covariances, counts, "data patches")
