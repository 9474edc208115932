"""`initialize(model, data)`: a data-aware initialization of a whole model in one call.

The recipe, in one forward pass of measurement and LSUV's pass:

1. Measure (one forward pass of the sample, intercepted): each touched
   layer's output variance as the model stands, and the input patches of
   the first `whiten` Conv2D layers (in model order).
2. Whiten those convolutions: `PatchWhitening` filters of their measured
   patch covariance (+/- pairs; filters beyond twice the patch dimension
   He-normal). Their biases stay as they are (zero as Keras builds them):
   LSUV's rescaling is exact for a zero bias.
3. Every other Conv/Dense kernel: the identity where a convolution can
   pass its input through and untruncated He-normal elsewhere
   (`rest="identity"`, the default: airbench's identity init of the later
   convolutions), He-normal everywhere (`rest="he"`), or as it is
   (`rest="keep"`).
4. LSUV on the same data (`orthogonal=False`): every touched layer,
   whitened ones included, rescaled to unit output variance, so no layer's
   scale rests on a formula's guess of its input's variance.

Frozen layers (`trainable=False`, themselves or a parent) are left alone
unless `include_frozen=True`; on any error every weight is as it was.
The default recipe (whiten the first convolution, identity for the rest)
is the one docs/evidence.md supports: on photos32 it reached He's final
accuracy in 0.23-0.38 of He's epochs in five of six settings (0.65 on VGG-8
without batch norm) and was never significantly below He.
"""

import contextlib
import dataclasses
import math
import re
import warnings

import keras
import numpy as np
from keras import ops

from keras_corrinit import _validation as check
from keras_corrinit._backend import intercepted_call
from keras_corrinit._correlated import CorrelatedHeNormal
from keras_corrinit._correlation import SpatialCorrelation
from keras_corrinit._data import take_batches
from keras_corrinit._layers import frozen_layers, kernel_slots, unchanged_on_error, walk_layers
from keras_corrinit._layerwise import layer_seeds
from keras_corrinit._lsuv import lsuv_initialize, run_model
from keras_corrinit._patches import PatchAccumulator, image_patches
from keras_corrinit._whitening import PatchWhitening

__all__ = ["InitializationReport", "InitializedLayer", "initialize"]

_RESTS = ("he", "identity", "keep")


@dataclasses.dataclass
class InitializedLayer:
    """What `initialize` set in one layer and its output variance on the sample, before and after."""

    name: str
    layer_class: str
    what: str
    variance_before: float
    variance_after: float


@dataclasses.dataclass
class InitializationReport:
    """`initialize`'s report.

    Attributes:
        layers: `InitializedLayer`s in model order.
        skipped: `{layer name: reason}` of layers with kernels left alone.
        forward_pass_equivalents: The work, in forward passes of the
            sample: the measuring pass plus LSUV's.
    """

    layers: list
    skipped: dict
    forward_pass_equivalents: float

    def __iter__(self):
        return iter(self.layers)

    def __getitem__(self, name):
        for entry in self.layers:
            if entry.name == name:
                return entry
        raise KeyError(f"No layer named {name!r} was initialized.")

    def __str__(self):
        rows = [f"| {e.name} | {e.what} | {e.variance_before:.4g} | {e.variance_after:.4g} |" for e in self.layers]
        head = ["| layer | set | output variance before | after |", "|---|---|---|---|"]
        return "\n".join(head + rows) + f"\n\n{self.forward_pass_equivalents:.2f} forward-pass equivalents"


def _targets(model, include_frozen):
    frozen = set() if include_frozen else frozen_layers(model)
    targets, skipped = [], {}
    for layer in walk_layers(model):
        if not kernel_slots(layer) or not hasattr(layer, "kernel"):
            continue
        if id(layer) in frozen:
            skipped[layer.name] = "frozen (trainable=False)"
        else:
            targets.append(layer)
    return targets, skipped


def _measure(model, sample, targets, whitened, max_patches_per_batch, seed):
    """One pass: every target's output variance, and the patches of the layers to whiten."""
    variances = {layer.name: [] for layer in targets}
    accumulators = {
        layer.name: PatchAccumulator(layer.kernel_size, layer.kernel.shape[-2], max_patches_per_batch, seed)
        for layer in whitened
    }

    def measuring(layer, original):
        def call(inputs, *args, **kwargs):
            if layer.name in accumulators:
                accumulators[layer.name].add(
                    image_patches(inputs, layer.kernel_size, layer.strides, layer.padding, layer.dilation_rate)
                )
            output = original(inputs, *args, **kwargs)
            variances[layer.name].append(ops.var(output))  # read after the pass: no host sync per layer
            return output

        return call

    with contextlib.ExitStack() as stack:
        for layer in targets:
            stack.enter_context(intercepted_call(layer, lambda original, layer=layer: measuring(layer, original)))
        for x in sample:
            run_model(model, x)
    before = {
        name: float(np.mean([ops.convert_to_numpy(value) for value in v])) if v else math.nan
        for name, v in variances.items()
    }
    return before, {name: a.statistics() for name, a in accumulators.items()}


def _whitening_kernel(layer, statistics, eps, seed):
    """The kernel: whitening filters, He-normal beyond twice the patch dimension."""
    whitening = PatchWhitening(statistics.covariance, statistics.kernel_size, statistics.in_channels, eps)
    shape = tuple(layer.kernel.shape)
    d, filters = whitening.filters.shape[0], shape[-1]
    kept = min(filters, 2 * d)
    kernel = ops.convert_to_numpy(whitening((*shape[:-1], kept), "float32"))
    what = f"PatchWhitening ({kept} filters)"
    if filters > kept:
        kernel = np.concatenate([kernel, _he_normal((*shape[:-1], filters - kept), seed)], axis=-1)
        what = f"PatchWhitening ({kept} of {filters} filters; {filters - kept} He-normal)"
    return kernel, what


def _he_normal(shape, seed, dtype=None):
    """An untruncated He-normal kernel as numpy."""
    return ops.convert_to_numpy(CorrelatedHeNormal(SpatialCorrelation.identity(), seed=seed)(shape, dtype))


def _identity_kernel(layer, seed):
    """Dirac (centre tap = identity) on the first in_channels filters, He-normal on the rest; None if it cannot."""
    shape = tuple(layer.kernel.shape)
    spatial, in_channels, filters = shape[:-2], shape[-2], shape[-1]
    if (
        not isinstance(layer, keras.layers.Conv2D | keras.layers.Conv1D | keras.layers.Conv3D)
        or getattr(layer, "groups", 1) != 1
        or filters < in_channels
        or any(size % 2 == 0 for size in spatial)
    ):
        return None
    kernel = np.array(_he_normal(shape, seed))
    kernel[..., :in_channels] = 0.0
    kernel[tuple(size // 2 for size in spatial)][:, :in_channels] = np.eye(in_channels)
    return kernel


def initialize(
    model,
    data,
    *,
    whiten=1,
    rest="identity",
    eps=None,
    batches=1,
    batch_size=32,
    max_patches_per_batch=4096,
    include_frozen=False,
    freeze_whitened=False,
    seed=None,
    verbose=1,
):
    """Initializes a model from its data: whitened first convolution(s), He, LSUV's scale.

    Args:
        model: A built Keras model (Sequential, Functional, nested or
            subclassed).
        data: A sample of the training data: arrays, `(x, y)`, tf.data,
            PyDataset or a generator of batches (as for `lsuv_initialize`).
        whiten: How many Conv2D layers (with one group), first in model
            order, are whitened. Default 1; 0 whitens none.
        rest: The other Conv/Dense kernels: `"identity"` (default: a
            Conv1D/2D/3D with one group, odd kernel sizes and at least as
            many filters as input channels passes its input through, its
            first in_channels filters Dirac kernels and the others
            He-normal; other layers He-normal), `"he"` (untruncated
            He-normal everywhere) or `"keep"` (as they are).
        eps: `PatchWhitening`'s eps. Default None (1e-3 x the mean
            eigenvalue of each layer's patch covariance).
        batches: Batches of `data` used (measurement and LSUV). Default 1.
        batch_size: Batch size for array data. Default 32.
        max_patches_per_batch: Patches per batch for the covariances
            (memory D x D per whitened layer). Default 4096.
        include_frozen: Also set frozen layers. Default False.
        freeze_whitened: Set the whitened layers `trainable=False` after
            initializing them (a fixed whitening front end). Default False.
        seed: An int (per-layer seeds derived from it) or None. Default None.
        verbose: 1 (default) shows LSUV's progress; 0 is silent.

    Returns:
        An `InitializationReport`.

    Examples:
        >>> model = keras.Sequential([keras.Input((8, 8, 3)), keras.layers.Conv2D(8, 3, activation="relu"),
        ...                           keras.layers.Flatten(), keras.layers.Dense(2)])
        >>> x = np.random.default_rng(0).normal(size=(32, 8, 8, 3)).astype("float32")
        >>> report = initialize(model, x, seed=0, verbose=0)
        >>> [entry.what for entry in report]
        ['PatchWhitening (8 filters)', 'He-normal']
    """
    whiten = check.integer(whiten, "whiten", minimum=0)
    if rest not in _RESTS:
        raise ValueError(f"`rest` must be one of {list(_RESTS)}; received {rest!r}.")
    if seed is not None:
        seed = check.integer(seed, "seed")
    targets, skipped = _targets(model, include_frozen)
    if not targets:
        raise ValueError(
            "The model has no Conv or Dense kernel to initialize" + (" that is not frozen." if skipped else ".")
        )
    convolutions = [
        layer for layer in targets if isinstance(layer, keras.layers.Conv2D) and getattr(layer, "groups", 1) == 1
    ]
    if whiten and not convolutions:
        warnings.warn("The model has no Conv2D layer to whiten: only He-normal and LSUV's scale are set.", stacklevel=2)
    whitened = convolutions[:whiten]
    sample = take_batches(data, batches, batch_size)
    if not sample:
        raise ValueError("`data` holds no batch of samples.")
    before, statistics = _measure(model, sample, targets, whitened, max_patches_per_batch, seed or 0)
    seeds = dict(zip((layer.name for layer in targets), layer_seeds(seed, len(targets))))
    what = {}
    names = [f"^{re.escape(layer.name)}$" for layer in targets]
    with unchanged_on_error(targets):
        for layer in targets:
            if layer.name in statistics:
                kernel, what[layer.name] = _whitening_kernel(layer, statistics[layer.name], eps, seeds[layer.name])
                layer.kernel.assign(kernel)
            elif rest == "keep":
                what[layer.name] = "kept"
            else:
                shape = tuple(layer.kernel.shape)
                kernel = _identity_kernel(layer, seeds[layer.name]) if rest == "identity" else None
                if kernel is None:
                    kernel, what[layer.name] = _he_normal(shape, seeds[layer.name], layer.kernel.dtype), "He-normal"
                else:
                    what[layer.name] = f"identity ({shape[-2]} of {shape[-1]} filters)"
                layer.kernel.assign(kernel)
        lsuv = lsuv_initialize(
            model,
            (x for x in sample),  # the measured batches again (a generator of them)
            orthogonal=False,
            include=names,
            include_frozen=include_frozen,
            batches=len(sample),
            batch_size=batch_size,
            verbose=verbose,
        )
    if freeze_whitened:
        for layer in whitened:
            layer.trainable = False
    after = {entry.name: entry.final_variance for entry in lsuv}
    layers = [
        InitializedLayer(
            layer.name,
            type(layer).__name__,
            what[layer.name],
            before[layer.name],
            after.get(layer.name, math.nan),
        )
        for layer in targets
    ]
    skipped.update(lsuv.skipped)
    return InitializationReport(layers, skipped, 1.0 + lsuv.forward_pass_equivalents)
