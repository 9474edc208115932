"""Layer-sequential unit-variance (LSUV) initialization for Keras 3 models.

Mishkin & Matas, "All you need is a good init" (2015): start every
convolution and dense kernel from an orthonormal matrix, then, from the first
layer to the last, forward a mini-batch, measure the variance of the layer's
output and divide the kernel by the square root of that variance until it is
within `tol` of 1.

How the work is kept small: the input of each touched layer is computed once,
by a model that ends at that layer's input (built from the model's own
functional graph, so residual adds, concatenations and batch norm are the
real ones). The variance iterations then call only that layer on the cached
input. The report counts both: `prefix_runs` (forward passes that end at a
layer's input, each costing a fraction of a full pass) and `layer_calls`.

"Output" is the tensor the Keras layer returns: with a fused activation
(`Conv2D(..., activation="relu")`) that is after the activation, with a
separate `Activation`/`ReLU` layer it is before it. The forward pass runs in
inference mode (`training=False`): dropout is off and batch normalization
uses its moving statistics (the identity, at initialization).
"""

import dataclasses
import inspect
import math
import warnings

import keras
from keras import ops

from keras_corrinit._data import first_batch

__all__ = ["lsuv_initialize", "LSUVReport", "LayerReport", "SUPPORTED_LAYERS"]

# Layers LSUV touches; `_kernels` says which of their kernels are used.
SUPPORTED_LAYERS = (
    keras.layers.Conv1D,
    keras.layers.Conv2D,
    keras.layers.Conv3D,
    keras.layers.Conv1DTranspose,
    keras.layers.Conv2DTranspose,
    keras.layers.Conv3DTranspose,
    keras.layers.DepthwiseConv1D,
    keras.layers.DepthwiseConv2D,
    keras.layers.SeparableConv1D,
    keras.layers.SeparableConv2D,
    keras.layers.Dense,
)
_SEPARABLE = (keras.layers.SeparableConv1D, keras.layers.SeparableConv2D)
MIN_BATCH = 16  # the paper's minimum mini-batch size
_DEAD_VARIANCE = 1e-12


@dataclasses.dataclass
class LayerReport:
    """What LSUV did to one layer."""

    name: str
    layer_class: str
    initial_variance: float
    final_variance: float
    iterations: int
    converged: bool


@dataclasses.dataclass
class LSUVReport:
    """Per-layer results, in the order the layers were processed."""

    layers: list
    prefix_runs: int = 0
    layer_calls: int = 0

    def __iter__(self):
        return iter(self.layers)

    def __len__(self):
        return len(self.layers)

    def __getitem__(self, name):
        for entry in self.layers:
            if entry.name == name:
                return entry
        raise KeyError(f"No layer named {name!r} was initialized by LSUV.")


def _lsuv_batch(data, batch_size):
    x = first_batch(data, batch_size)
    n = keras.tree.flatten(x)[0].shape[0]
    if n < MIN_BATCH:
        warnings.warn(
            f"LSUV uses a batch of {n} samples; variance estimates need at "
            f"least {MIN_BATCH} (the paper's minimum). Pass more samples.",
            stacklevel=3,
        )
    return x


def _kernels(layer):
    if isinstance(layer, _SEPARABLE):
        return [layer.depthwise_kernel, layer.pointwise_kernel]
    return [layer.kernel]


def _orthonormal(layer, seed_generator):
    for kernel in _kernels(layer):
        init = keras.initializers.Orthogonal(seed=seed_generator)
        kernel.assign(init(tuple(kernel.shape), dtype=kernel.dtype))


def _variance(x):
    return float(ops.convert_to_numpy(ops.var(ops.cast(x, "float32"))))


def _center_bias(layer, outputs):
    channel_mean = ops.mean(outputs, axis=tuple(range(len(outputs.shape) - 1)))
    layer.bias.assign(layer.bias - ops.cast(channel_mean, layer.bias.dtype))


def _lsuv_layer(layer, x, tol, max_iter, center_bias, report):
    """Scales one layer's kernel until its output variance is within tol of 1."""
    def forward():
        report.layer_calls += 1
        return layer(x, training=False) if _takes_training(layer) else layer(x)

    scaled = [_kernels(layer)[-1]]
    if center_bias and getattr(layer, "bias", None) is not None:
        _center_bias(layer, forward())
        scaled.append(layer.bias)  # scaled with the kernel: mean stays 0
    variance = initial = _variance(forward())
    iterations, total_factor = 0, 1.0
    while abs(variance - 1.0) >= tol and iterations < max_iter:
        if not math.isfinite(variance) or variance <= _DEAD_VARIANCE:
            break
        factor = 1.0 / math.sqrt(variance)
        for variable in scaled:
            variable.assign(variable * factor)
        iterations += 1
        total_factor *= factor
        variance = _variance(forward())
    converged = abs(variance - 1.0) < tol
    if not converged:
        reason = (
            "its output is constant (dead units, e.g. ReLU with no active input)"
            if math.isfinite(variance) and variance <= _DEAD_VARIANCE
            else f"its output variance is {variance:.4g} after {iterations} iterations"
        )
        what_was_done = (
            "Its weights were not rescaled"
            if iterations == 0
            else f"Its weights keep the {iterations} rescalings applied (factor "
            f"{total_factor:.4g} in all; output variance {initial:.4g} -> {variance:.4g})"
        )
        warnings.warn(
            f"LSUV did not converge for layer {layer.name!r}: {reason}. "
            f"{what_was_done}; check its inputs, or raise `max_iter`.",
            stacklevel=4,
        )
    return LayerReport(
        layer.name, type(layer).__name__, initial, variance, iterations, converged
    )


def _takes_training(layer):
    return "training" in inspect.signature(layer.call).parameters


def _graph_inputs(model, x):
    """The model's symbolic inputs, building a Sequential without Input first."""
    if isinstance(model, keras.Sequential) and not model.built:
        model(keras.tree.map_structure(lambda a: a[:1], x))
    inputs = getattr(model, "inputs", None)
    if inputs and len(inputs) == 1:
        return inputs[0]  # a single-input graph takes a tensor, not a list
    if not inputs:
        raise TypeError(
            f"lsuv_initialize needs a Functional or Sequential model (a graph "
            f"of layers it can read layer outputs from); {type(model).__name__} "
            "is a subclassed model without one. Build the model with the "
            "functional API, or run lsuv_initialize on its functional parts."
        )
    return inputs


def _run(model, x, tol, max_iter, center_bias, orthogonal, seed_generator, report, progress):
    inputs = _graph_inputs(model, x)
    for layer in model.layers:
        if isinstance(layer, keras.Model):
            # A nested model: compute its input, then treat it as a model.
            # `Model.input` is the nested graph's own Input; the base Layer
            # property gives the tensor that feeds it in this graph.
            feeding = keras.layers.Layer.input.fget(layer)
            sub_x = keras.Model(inputs, feeding)(x, training=False)
            report.prefix_runs += 1
            _run(layer, sub_x, tol, max_iter, center_bias, orthogonal, seed_generator, report, progress)
            continue
        if not isinstance(layer, SUPPORTED_LAYERS):
            continue
        if orthogonal:
            _orthonormal(layer, seed_generator)
        layer_input = keras.Model(inputs, layer.input)(x, training=False)
        report.prefix_runs += 1
        entry = _lsuv_layer(layer, layer_input, tol, max_iter, center_bias, report)
        report.layers.append(entry)
        progress(entry)


def _count_supported(model):
    return sum(
        _count_supported(layer) if isinstance(layer, keras.Model) else isinstance(layer, SUPPORTED_LAYERS)
        for layer in model.layers
    )


def lsuv_initialize(
    model,
    data,
    *,
    tol=0.1,
    max_iter=10,
    orthogonal=True,
    center_bias=False,
    batch_size=32,
    seed=None,
    verbose=1,
):
    """LSUV-initializes a model's conv and dense layers in place.

    Args:
        model: A Functional or Sequential Keras model (nested models inside
            it are handled). Touched layers: Conv1D/2D/3D and their
            transposes, DepthwiseConv1D/2D, SeparableConv1D/2D, Dense.
        data: An input array, an `(x, y)` tuple, a `tf.data.Dataset` or a
            `keras.utils.PyDataset`; one batch is used (the first
            `batch_size` samples of an array, else the first batch). Fewer
            than 16 samples gives a warning.
        tol: Stop when `|variance - 1| < tol`.
        max_iter: Maximum number of rescalings per layer.
        orthogonal: Start each kernel from an orthonormal matrix (the paper).
            Pass False to keep the current weights, e.g. CorrelatedHeNormal,
            EnhancedGamma or NFMInit weights, and only apply LSUV's scaling.
        center_bias: If True, first set each layer's bias so that its output
            has zero mean per channel, then scale kernel and bias together.
            If False (default) biases are left as they are (zero, for
            freshly built Keras layers) and only kernels are scaled.
        batch_size: Samples taken from an array `data`.
        seed: Int or None, for the orthonormal matrices.
        verbose: 1 shows a progress bar over layers, 0 is silent.

    Returns:
        An `LSUVReport`: per layer (by name) initial and final variance,
        iterations and whether it converged; `prefix_runs` and `layer_calls`.

    Example:

    >>> model = keras.Sequential([keras.Input((32, 32, 3)),
    ...     keras.layers.Conv2D(16, 3, activation="relu"),
    ...     keras.layers.Flatten(), keras.layers.Dense(10)])
    >>> report = lsuv_initialize(model, x_train[:64], verbose=0)
    >>> report.layers[0].final_variance  # within 0.1 of 1
    """
    if not (isinstance(tol, (int, float)) and 0 < tol < 1):
        raise ValueError(f"`tol` must be a number in (0, 1); received {tol!r}.")
    if not (isinstance(max_iter, int) and max_iter >= 1):
        raise ValueError(f"`max_iter` must be an int >= 1; received {max_iter!r}.")
    if not isinstance(model, keras.Model):
        raise TypeError(f"`model` must be a keras.Model; received {type(model).__name__}.")
    x = _lsuv_batch(data, batch_size)
    _graph_inputs(model, x)  # fails early for subclassed models
    report = LSUVReport(layers=[])
    if verbose:
        bar = keras.utils.Progbar(_count_supported(model), unit_name="layer")
        progress = lambda e: bar.add(1, [("variance", e.final_variance)])  # noqa: E731
    else:
        progress = lambda e: None  # noqa: E731
    _run(model, x, tol, max_iter, center_bias, orthogonal, keras.random.SeedGenerator(seed), report, progress)
    return report
