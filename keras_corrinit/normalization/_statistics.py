"""Batch normalization's statistics, measured the way training sees them.

At initialization a BatchNormalization layer holds moving statistics
(mean 0, variance 1): in inference mode it is the identity, so a pass in
inference mode measures a network that training never runs. Training
normalizes each batch by its own statistics. So every measuring pass of
this package runs normalization layers in training mode (`batch_statistics`)
while dropout, noise and augmentation stay off (the model is called with
`training=False`), and leaves no trace in their moving statistics.

`recalibrate_normalization` then sets each layer's moving statistics to the
population statistics of its input on a sample (PreciseBN: Wu and Johnson
2021, "Rethinking 'Batch' in BatchNorm"): per batch the mean and the
biased variance (what training's update averages), pooled as
E[mean] and E[variance + mean^2] - E[mean]^2, in one pass per batch in
which every layer sees its predecessors' training-mode outputs.
"""

import contextlib
import dataclasses
import itertools

import keras
import numpy as np
from keras import ops

from keras_corrinit._core import validation as check
from keras_corrinit._core.backend import intercepted_call
from keras_corrinit._core.data import batch_size_of, iter_samples
from keras_corrinit._core.layers import frozen_layers, walk_layers
from keras_corrinit._core.model_pass import display_names, run_model

__all__ = ["NormalizationStatistics", "batch_normalizations", "batch_statistics", "recalibrate_normalization"]


def batch_normalizations(model):
    """The BatchNormalization layers below `model` that train (not frozen), in model order, each once."""
    frozen = frozen_layers(model)
    found = {}
    for layer in walk_layers(model):
        if isinstance(layer, keras.layers.BatchNormalization) and id(layer) not in frozen and layer.built:
            found.setdefault(id(layer), layer)
    return list(found.values())


def _reduction_axes(layer, inputs):
    rank = len(inputs.shape)
    axes = [layer.axis] if isinstance(layer.axis, int) else list(layer.axis)
    axes = [a % rank for a in axes]
    return [a for a in range(rank) if a not in axes]


class _Moments:
    """One layer's pooled input moments over the batches of a sample."""

    def __init__(self):
        self.count, self.mean, self.square = 0, 0.0, 0.0

    def add(self, layer, inputs):
        x = ops.cast(inputs, "float32")
        axes = _reduction_axes(layer, x)
        mean, variance = ops.moments(x, axes=axes)
        n = batch_size_of(inputs)
        # Read once per batch: the pooled sums live on the host, in float64.
        mean, variance = (np.asarray(ops.convert_to_numpy(v), "float64") for v in (mean, variance))
        self.mean = self.mean + n * mean
        self.square = self.square + n * (variance + mean**2)
        self.count += n

    def statistics(self):
        mean = self.mean / self.count
        return mean, np.maximum(self.square / self.count - mean**2, 0.0)


@contextlib.contextmanager
def batch_statistics(model, record=None):
    """Inside the block, `model`'s trainable BatchNormalization layers normalize by batch statistics.

    Each such layer is called with `training=True` whatever the model's
    call says (frozen ones keep inference mode, as in training), and its
    moving statistics are put back after the block, so measuring changes
    nothing. `record`, if given, is `{id(layer): _Moments}` filled with each
    layer's input moments.
    """
    layers = batch_normalizations(model)
    saved = [(v, ops.convert_to_numpy(v)) for layer in layers for v in (layer.moving_mean, layer.moving_variance)]

    def make(layer, original):
        def call(inputs, *args, training=None, **kwargs):
            if record is not None:
                record.setdefault(id(layer), _Moments()).add(layer, inputs)
            return original(inputs, *args, training=True, **kwargs)

        return call

    with contextlib.ExitStack() as stack:
        for layer in layers:
            stack.enter_context(intercepted_call(layer, lambda original, layer=layer: make(layer, original)))
        try:
            yield
        finally:
            for variable, value in saved:
                variable.assign(value)


@dataclasses.dataclass
class NormalizationStatistics:
    """What `recalibrate_normalization` set.

    Attributes:
        layers: `{layer name: (mean of its moving mean, mean of its moving
            variance)}` as set, in model order (a name is the layer's path
            where names repeat).
        samples: The number of samples measured.
        skipped: `{layer name: reason}` of BatchNormalization layers left
            as they were (frozen, or never called by the pass).
    """

    layers: dict
    samples: int
    skipped: dict = dataclasses.field(default_factory=dict)

    def __str__(self):
        return f"moving statistics of {len(self.layers)} BatchNormalization layer(s) set on {self.samples} samples"


def set_statistics(model, batches, names=None):
    """Sets every trainable BatchNormalization's moving statistics from `batches`; `(statistics, samples)`."""
    record, count = {}, 0
    layers = batch_normalizations(model)
    with batch_statistics(model, record):
        for batch in batches:
            run_model(model, batch)
            count += batch_size_of(batch)
    names = names or display_names(model)
    layers_set, skipped = {}, {}
    for layer in layers:
        if id(layer) not in record:
            skipped[names[id(layer)]] = "never called by the forward pass"
            continue
        mean, variance = record[id(layer)].statistics()
        layer.moving_mean.assign(mean.reshape(tuple(layer.moving_mean.shape)).astype("float32"))
        layer.moving_variance.assign(variance.reshape(tuple(layer.moving_variance.shape)).astype("float32"))
        layers_set[names[id(layer)]] = (float(mean.mean()), float(variance.mean()))
    frozen = frozen_layers(model)
    for layer in walk_layers(model):
        if isinstance(layer, keras.layers.BatchNormalization) and id(layer) in frozen:
            skipped.setdefault(names[id(layer)], "frozen (trainable=False): its statistics are kept")
    return NormalizationStatistics(layers_set, count, skipped)


def recalibrate_normalization(model, data, *, samples=1024, batch_size=128):
    """Sets every BatchNormalization's moving statistics to its input's statistics on `data` (PreciseBN).

    The model is run in inference mode except its trainable batch
    normalizations, which normalize by each batch's statistics as in
    training (dropout and augmentation stay off); each layer's input mean
    and variance are pooled over the sample and become its moving mean and
    variance. Use it after training (or before evaluating) when the moving
    averages lag the weights: with Keras's momentum 0.99 they need hundreds
    of steps to forget their start, so a short training tests near chance
    although it has learned. Frozen layers keep their statistics.

    Args:
        model: A built Keras model.
        data: Training data: arrays, `(x, y)`, a batched tf.data.Dataset, a
            PyDataset or a generator of batches.
        samples: How many samples to measure. Default 1024 (fewer if
            `data` has fewer).
        batch_size: Samples per batch taken from array data (the batch
            size you train with gives the statistics training sees).
            Default 128.

    Returns:
        A `NormalizationStatistics`: the layers set and the samples used.

    Examples:
        >>> model = keras.Sequential([keras.Input((4,)), keras.layers.Dense(3), keras.layers.BatchNormalization()])
        >>> x = np.random.default_rng(0).normal(3.0, 2.0, size=(256, 4)).astype("float32")
        >>> recalibrate_normalization(model, x, batch_size=64).samples
        256

    Reference:
        Wu and Johnson, "Rethinking 'Batch' in BatchNorm" (2021), PreciseBN.
    """
    if not isinstance(model, keras.Model):
        raise TypeError(f"`model` must be a keras.Model; received {type(model).__name__}.")
    samples = check.integer(samples, "samples", minimum=1)
    batch_size = check.integer(batch_size, "batch_size", minimum=1)
    if not model.built:
        raise ValueError("`model` is not built: call it on a batch (or fit it) before recalibrating its statistics.")
    batches = iter_samples(data, samples, batch_size)
    first = next(batches, None)
    if first is None:
        raise ValueError("`data` holds no batch of samples.")
    return set_statistics(model, itertools.chain([first], batches))
