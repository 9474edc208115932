"""Layer-sequential unit-variance (LSUV) initialization for Keras 3 models.

Mishkin & Matas, "All you need is a good init" (2015): start every
convolution and dense kernel from an orthonormal matrix, then, from the first
layer to the last, forward a mini-batch, measure the variance of the layer's
output and divide the kernel by the square root of that variance until it is
within `tol` of the target (1).

One forward pass. LSUV needs each layer's input once, after every layer
upstream of it is final. So the model is run once on the batch, with each
touched layer's `call` intercepted on the instance: when the forward pass
reaches the layer, its input already reflects all upstream rescaling; the
layer is rescaled there, and the pass continues with its final output. This
works for any model whose forward pass calls its layers: Sequential,
Functional, nested and subclassed models alike.

Most rescalings cost no extra call and no host read: with a zero bias (or
a bias scaled with the kernel), scaling the kernel by c scales the
pre-activation output by exactly c, so one step computed on the device
reaches the target. Other layers, and iterations on a fresh batch, call the
layer again on its (cached) input. `LSUVReport.forward_pass_equivalents` counts the work:
one pass plus the extra layer calls, each weighted by its layer's share of
the touched layers' multiply-adds.

"Output" is the layer's pre-activation output, the paper's convention
(where the nonlinearity is a layer of its own): with a fused activation
(`Conv2D(..., activation="relu")`, `Dense(10, activation="softmax")`) the
variance is measured before the activation, which is applied to the
rescaled output. So a softmax, sigmoid or tanh is never driven into
saturation, and with a zero bias every rescaling is one exact step. A layer
whose result cannot be kept (a constant or non-finite output, a variance
not within `tol` after `max_iter` rescalings, or a kernel that would end
outside [1e-4, 100] times its He-normal scale) is reverted to its scale
before LSUV, with a warning that names it. The forward pass measures what
training sees: batch normalization normalizes by the batch's statistics
(its moving statistics are left as they were), while dropout, noise and
augmentation layers are off (the model is called with `training=False`).
"""

import contextlib
import dataclasses
import math
import warnings

import keras
import numpy as np
from keras import ops

from keras_corrinit._core import validation as check
from keras_corrinit._core.data import take_batches
from keras_corrinit._core.layers import kernel_slots, unchanged_on_error
from keras_corrinit._core.model_pass import display_names, patterns, run_model, select_layers, watching
from keras_corrinit.normalization._statistics import batch_statistics

__all__ = [
    "MAX_SCALE_OVER_HE",
    "MIN_SCALE_OVER_HE",
    "LSUVReport",
    "LayerReport",
    "he_std",
    "lsuv_initialize",
    "multiply_adds",
    "scale_layers",
]

_MIN_BATCH = 16  # the paper's minimum mini-batch size
_DEAD_VARIANCE = 1e-12
# LSUV's factor is kept only if the scaled kernel's RMS ends within these
# multiples of its He-normal standard deviation: inputs of any realistic
# scale (pixels in [0, 255] need about 1/200) fit; a softmax or sigmoid that
# cannot reach the target, or a near-constant input, cannot blow a kernel up.
MAX_SCALE_OVER_HE = 100.0
MIN_SCALE_OVER_HE = 1e-4


@dataclasses.dataclass
class LayerReport:
    """What LSUV did to one layer."""

    name: str
    layer_class: str
    initial_variance: float
    final_variance: float
    iterations: int
    converged: bool


class LayerEntries:
    """A report's per-layer entries (`self.layers`): iterated, counted and looked up by layer name."""

    _done = "initialized"

    def __iter__(self):
        return iter(self.layers)

    def __len__(self):
        return len(self.layers)

    def __getitem__(self, name):
        for entry in self.layers:
            if entry.name == name:
                return entry
        raise KeyError(f"No layer named {name!r} was {self._done}.")


@dataclasses.dataclass
class LSUVReport(LayerEntries):
    """Per-layer results in the order the forward pass reached the layers.

    Attributes:
        layers: `LayerReport`s.
        skipped: `{layer name: reason}` for the layers with kernels that
            were left as they were: frozen (`trainable=False`, itself or
            a parent), or never called by the forward pass. Default `{}`.
        layer_calls: Extra single-layer calls made for the iterations
            (beyond the forward pass itself). Default 0.
        forward_pass_equivalents: The work done, in forward passes of the
            data used (all `batches` together): 1 plus the extra calls, each
            weighted by its share of the touched layers' multiply-adds.
            Default 1.0.
    """

    layers: list
    skipped: dict = dataclasses.field(default_factory=dict)
    layer_calls: int = 0
    forward_pass_equivalents: float = 1.0

    _done = "initialized by LSUV"


def _kernels(layer):
    return [getattr(layer, slot.attribute) for slot in kernel_slots(layer)]


def _orthonormal_starts(layers, seed_generator):
    """`{id(layer): [orthonormal value per kernel]}`, drawn in model order.

    Drawn before the pass (so a seed gives the same values whatever the
    order of calls) and assigned when the pass reaches a layer (so a layer
    it never reaches keeps its weights).
    """
    starts = {}
    for layer in layers:
        init = keras.initializers.Orthogonal(seed=seed_generator)
        starts[id(layer)] = [init(tuple(k.shape), dtype=k.dtype) for k in _kernels(layer)]
    return starts


def _variance(x):
    return float(ops.convert_to_numpy(ops.var(ops.cast(x, "float32"))))


def multiply_adds(layer, output):
    """Multiply-adds of one call: each output value costs a kernel column."""
    per_output = sum(math.prod(k.shape[:-1]) for k in _kernels(layer))
    if [slot.kind for slot in kernel_slots(layer)] == ["depthwise"]:
        per_output = math.prod(layer.kernel.shape[:-2])
    return math.prod(output.shape) * per_output


def he_std(layer):
    """He-normal's standard deviation for the kernel LSUV scales (the last one of the layer)."""
    slot = kernel_slots(layer)[-1]
    shape = tuple(getattr(layer, slot.attribute).shape)
    fan_in = math.prod(shape[:-2]) if slot.kind == "depthwise" else math.prod(shape[:-1])
    return math.sqrt(2.0 / fan_in)


def _zero_bias(layers):
    """`{id(layer): whether its bias is absent or zero}`, read in one host transfer for all layers."""
    biased = [layer for layer in layers if getattr(layer, "bias", None) is not None]
    flags = [ops.any(ops.not_equal(layer.bias, 0)) for layer in biased]
    nonzero = ops.convert_to_numpy(ops.stack(flags)) if flags else []
    zero = {id(layer): True for layer in layers}
    zero.update({id(layer): not bool(flag) for layer, flag in zip(biased, nonzero)})
    return zero


def _start_rms(layers, starts):
    """`{id(layer): RMS of the kernel LSUV scales, as it starts}`, read in one host transfer."""
    values = [starts[id(layer)][-1] if id(layer) in starts else _kernels(layer)[-1] for layer in layers]
    rms = [ops.sqrt(ops.mean(ops.square(ops.cast(v, "float32")))) for v in values]
    read = ops.convert_to_numpy(ops.stack(rms)) if rms else []
    return {id(layer): float(r) for layer, r in zip(layers, read)}


@dataclasses.dataclass
class _Settings:
    tol: float
    max_iter: int
    target: float
    center_bias: bool
    batches: int


class _Rescaler:
    """LSUV's step for each touched layer, as the forward pass reaches it (a `watching` handler).

    A layer whose pre-activation output is proportional to its scaled
    variables (a zero bias, or the bias scaled with the kernel) is rescaled
    in one exact step computed on the device; its numbers are read once,
    after the pass. Other layers, and every layer when several batches are
    used (the paper's "next mini-batch"), iterate with host reads.
    """

    def __init__(self, layers, starts, settings, report, progress, names, counted=()):
        self.layers, self.starts, self.settings = layers, starts, settings
        self.counted = {id(layer) for layer in counted} - {id(layer) for layer in layers}
        self.report, self.progress, self.names = report, progress, names
        self.done, self.reached, self.costs, self.extra, self.pending = set(), [], {}, 0.0, []
        self.homogeneous = {key: settings.center_bias or zero for key, zero in _zero_bias(layers).items()}
        self.start_rms = _start_rms(layers, starts)

    def __call__(self, layer, inputs, forward):
        if id(layer) in self.counted:
            # Not scaled, only counted: its multiply-adds are part of the pass the work is measured in.
            output = forward(inputs)
            if id(layer) not in self.costs:  # a shared layer counts once, as a scaled one does
                self.costs[id(layer)] = multiply_adds(layer, output)
                self.reached.append(id(layer))
            return output
        if id(layer) in self.done:
            # A shared layer: rescaled at its first call, used as is after.
            return forward(inputs)
        self.done.add(id(layer))
        self.reached.append(id(layer))
        self.progress()
        for kernel, start in zip(_kernels(layer), self.starts.get(id(layer), ())):
            kernel.assign(start)
        return self._rescale(layer, forward, inputs)

    def _rescale(self, layer, forward, inputs):
        """Rescales `layer` on `inputs` (its input in this pass); returns its final pre-activation output."""
        center_bias = self.settings.center_bias and getattr(layer, "bias", None) is not None
        output = forward(inputs)
        self.costs[id(layer)] = multiply_adds(layer, output)
        scaled = [_kernels(layer)[-1]]
        if center_bias:
            output = self._center(layer, forward, inputs, output)
            scaled.append(layer.bias)  # scaled with the kernel: the mean stays 0
        homogeneous = self.homogeneous[id(layer)]
        if homogeneous and self.settings.batches == 1:
            return self._exact_step(layer, scaled, output)
        originals = [ops.convert_to_numpy(v) for v in scaled]
        variance_on, batches = self._measurement(layer, forward, inputs, output, homogeneous)
        initial, variance, iterations, total = self._iterate(layer, scaled, variance_on, batches)
        problem = self._problem(layer, variance, total, iterations)
        if problem is not None:
            for variable, value in zip(scaled, originals):
                variable.assign(value)
            total = 1.0
            output = self._call(layer, forward, inputs, 1.0) if iterations else output
        elif total != 1.0:
            output = output * ops.cast(total, output.dtype) if homogeneous else self._call(layer, forward, inputs, 1.0)
        self._finish(layer, initial, variance, iterations, total, problem)
        return output

    def _exact_step(self, layer, scaled, output):
        """One step to the target on the device; kept only if finite and inside the bound.

        The bound on the kernel's RMS is a bound on the variance (the RMS
        before the step is known on the host), so the check is two
        comparisons: NaN fails both, and so does a dead (constant) output.
        """
        s, rms, he = self.settings, self.start_rms[id(layer)], he_std(layer)
        lowest = max(_DEAD_VARIANCE, s.target * (rms / (MAX_SCALE_OVER_HE * he)) ** 2)
        highest = s.target * (rms / (MIN_SCALE_OVER_HE * he)) ** 2 if rms > 0 else 0.0
        variance = ops.var(ops.cast(output, "float32"))
        keep = ops.logical_and(variance > lowest, variance < highest)
        factor = ops.where(keep, ops.rsqrt(ops.maximum(variance, _DEAD_VARIANCE) / s.target), 1.0)
        for variable in scaled:
            variable.assign(variable * ops.cast(factor, variable.dtype))
        self.pending.append((layer, variance, factor))
        return output * ops.cast(factor, output.dtype)

    def flush(self):
        """Reads the device-side steps' numbers (one transfer) and reports them in pass order."""
        if not self.pending:
            return
        values = ops.convert_to_numpy(ops.stack([ops.stack([v, f]) for _, v, f in self.pending]))
        s = self.settings
        for (layer, *_), (variance, factor) in zip(self.pending, values.astype(float)):
            rms = self.start_rms[id(layer)]
            usable = math.isfinite(variance) and variance > _DEAD_VARIANCE
            applied = factor != 1.0 or abs(variance - s.target) < s.tol * s.target
            final = variance * factor**2
            problem = None
            if not usable:
                problem = self._problem(layer, variance, 1.0, 0)
            elif not applied or abs(final - s.target) >= s.tol * s.target:
                problem = self._bound_problem(layer, math.sqrt(s.target / variance), rms)
                final = variance
            self._finish(layer, variance, final, 1 if problem is None else 0, factor, problem)
        self.pending = []

    def _center(self, layer, forward, inputs, output):
        """Sets the bias so that each output channel has mean 0; returns the new output."""
        axes = tuple(range(len(output.shape) - 1))
        layer.bias.assign(layer.bias - ops.cast(ops.mean(output, axis=axes), layer.bias.dtype))
        return self._call(layer, forward, inputs, 1.0)

    def _measurement(self, layer, forward, inputs, output, homogeneous):
        """`(variance_on, number of batches)`: `variance_on(j, total)` is batch j's output variance now."""
        slices = _split(inputs, self.settings.batches)
        sizes = [int(x.shape[0]) for x in slices]
        ends = np.cumsum([0] + sizes)

        def variance_on(j, total):
            # The cached output times the total factor for homogeneous
            # layers (exact), else a call of the layer on batch j.
            if homogeneous or total == 1.0:
                return _variance(output[ends[j] : ends[j + 1]]) * total**2
            return _variance(self._call(layer, forward, slices[j], sizes[j] / ends[-1]))

        return variance_on, len(slices)

    def _iterate(self, layer, scaled, variance_on, batches):
        """LSUV's loop: scale `scaled` until the variance is near the target.

        Returns `(initial variance, final variance, iterations, total factor)`.
        """
        s = self.settings
        variance = initial = variance_on(0, 1.0)
        iterations, total = 0, 1.0
        # Centred bias and kernel scaled together: one exact step gives mean
        # 0 and the target variance, so take it.
        tol = 1e-6 if s.center_bias else s.tol
        while abs(variance - s.target) >= tol * s.target and iterations < s.max_iter:
            if not math.isfinite(variance) or variance <= _DEAD_VARIANCE:
                break
            factor = math.sqrt(s.target / variance)
            for variable in scaled:
                variable.assign(variable * factor)
            iterations, total = iterations + 1, total * factor
            variance = variance_on(iterations % batches, total)  # the paper's "next mini-batch"
        return initial, variance, iterations, total

    def _problem(self, layer, variance, total, iterations):
        """Why LSUV's result for `layer` is not kept (None if it is)."""
        s = self.settings
        if math.isfinite(variance) and variance <= _DEAD_VARIANCE:
            return "its output is constant (dead units, e.g. a ReLU with no active input, or a zero kernel)"
        if not math.isfinite(variance):
            return "its output is not finite"
        if abs(variance - s.target) >= s.tol * s.target:
            return (
                f"its output variance is {variance:.4g} after {iterations} rescalings, not within `tol` of the target"
            )
        rms = float(np.sqrt(np.mean(np.square(ops.convert_to_numpy(_kernels(layer)[-1]).astype(float)))))
        he = he_std(layer)
        if not MIN_SCALE_OVER_HE * he <= rms <= MAX_SCALE_OVER_HE * he:
            return self._bound_problem(layer, 1.0, rms)
        return None

    def _bound_problem(self, layer, factor, rms):
        ratio = rms * factor / he_std(layer)
        return (
            f"reaching the target would make its kernel {ratio:.3g} times its He-normal scale, outside "
            f"[{MIN_SCALE_OVER_HE:g}, {MAX_SCALE_OVER_HE:g}]"
        )

    def _call(self, layer, forward, x, share):
        """An extra call of the layer on `x`, a `share` of the full input."""
        self.report.layer_calls += 1
        self.extra += share * self.costs[id(layer)]
        return forward(x)

    def _finish(self, layer, initial, variance, iterations, total, problem):
        name = self.names[id(layer)]
        if problem is not None:
            warnings.warn(
                f"LSUV did not converge for layer {name!r}: {problem}. Its weights were reverted to their "
                f"scale before LSUV; check its inputs and its bias.",
                stacklevel=2,
            )
        entry = LayerReport(name, type(layer).__name__, initial, variance, iterations, problem is None)
        self.report.layers.append(entry)

    def extra_work(self):
        """The extra calls' multiply-adds over those of one pass through the touched layers."""
        total = sum(self.costs.values())
        return self.extra / total if total else 0.0


def _split(inputs, count):
    if count == 1:
        return [inputs]
    n = inputs.shape[0]
    size = -(-n // count)
    return [inputs[i : i + size] for i in range(0, n, size)]


def _check_arguments(model, tol, max_iter, target_variance, batches, batch_size, include_frozen):
    if not isinstance(model, keras.Model):
        raise TypeError(f"`model` must be a keras.Model; received {type(model).__name__}.")
    check.real(tol, "tol", low=0, high=1, low_open=True, high_open=True)
    check.integer(max_iter, "max_iter", minimum=1)
    check.real(target_variance, "target_variance", low=0, low_open=True)
    check.integer(batches, "batches", minimum=1)
    check.integer(batch_size, "batch_size", minimum=1)
    check.boolean(include_frozen, "include_frozen")


def scale_layers(
    model, x, layers, settings, starts=None, verbose=0, names=None, skipped=None, counted=(), training_statistics=True
):
    """LSUV's pass over `layers` (objects) on the input `x`: an `LSUVReport`.

    Batch normalization runs as in training (by batch statistics), the rest
    of the model in inference mode: the variances are those training sees
    (`training_statistics=False`: all in inference mode, as before 0.4.0).

    `counted`: other kernel layers, left alone, whose multiply-adds count in
    the pass the work is measured in (`initialize`'s whitened and normalized
    kernels). Changes the layers in place: call it inside `unchanged_on_error`.
    """
    names = names or display_names(model)
    report = LSUVReport(layers=[], skipped=dict(skipped or {}))
    rescaler = _Rescaler(layers, starts or {}, settings, report, _progress(layers, verbose), names, counted)
    watched = [*layers, *(layer for layer in counted if id(layer) in rescaler.counted)]
    with batch_statistics(model) if training_statistics else contextlib.nullcontext(), watching(watched, rescaler):
        run_model(model, x)
    rescaler.flush()
    # In the order the pass reached the layers (device-side steps are reported after the pass).
    position = {names[key]: i for i, key in enumerate(rescaler.reached) if key not in rescaler.counted}
    report.layers.sort(key=lambda entry: position[entry.name])
    report.forward_pass_equivalents = 1.0 + rescaler.extra_work()
    report.layer_costs, report.pass_order = rescaler.costs, rescaler.reached  # for initialize's accounting
    _report_unreached(report, layers, names)
    return report


def lsuv_initialize(
    model,
    data,
    *,
    tol=0.1,
    max_iter=10,
    orthogonal=True,
    center_bias=False,
    target_variance=1.0,
    include=None,
    exclude=None,
    include_frozen=False,
    batches=1,
    batch_size=32,
    seed=None,
    verbose=1,
):
    """LSUV-initializes a model's conv and dense layers in place, in one forward pass.

    All or nothing: if anything fails (bad data, a layer that raises,
    an interrupt), every weight of the touched layers is as before. Frozen
    layers (`trainable=False`, or inside a frozen model, such as a
    pretrained backbone) are left alone unless `include_frozen=True`, and
    so are layers the forward pass never calls; both are listed in the
    report's `skipped`, and the latter in a warning.

    Args:
        model: Any Keras model whose forward pass calls its layers:
            Sequential, Functional, nested or subclassed. Touched layers:
            Conv1D/2D/3D and their transposes, DepthwiseConv1D/2D,
            SeparableConv1D/2D (the pointwise kernel is scaled), Dense,
            EinsumDense; each is scaled on its pre-activation output.
            Layers with weights no rule covers (MultiHeadAttention) are
            listed in `skipped`. A layer called more than once (shared) is
            rescaled at its first call, on the input it gets there, and
            used as is afterwards. Layers are chosen by object: nested
            sub-models may repeat names (reported by path).
        data: An input array (or a nested list of numbers), an `(x, y)`
            tuple, a batched `tf.data.Dataset` or a `keras.utils.PyDataset`.
            The first `batches` batches are used (`batch_size` samples each
            from an array). Fewer than 16 samples per batch gives a
            warning; NaN or Inf inputs raise `ValueError`.
        tol: Stop when `|variance - target_variance| < tol * target_variance`.
            Default 0.1.
        max_iter: Maximum number of rescalings per layer. Default 10.
        orthogonal: Start each touched kernel from an orthonormal matrix
            (the paper; default True). Pass False to keep the current
            weights, e.g. CorrelatedHeNormal, EnhancedGamma or NFMInit
            weights, and only apply LSUV's scaling.
        center_bias: If True, first set each layer's bias so that its output
            has zero mean per channel, then scale kernel and bias together.
            For a linear output this gives mean 0 and the target variance
            exactly (one step, whatever `tol`); for ReLU the variance is
            exact too. If False (default) biases are left as they are (zero,
            for freshly built Keras layers).
        target_variance: The output variance to reach. Default 1.
        include: None (default: every supported layer), or a regular
            expression (or list of them) searched in layer names: only
            matching layers are touched.
        exclude: A regular expression (or list) of layer names to leave
            untouched. Default None.
        include_frozen: Also initialize frozen layers. Default False.
        batches: Number of batches. With more than one, the model runs once
            on all of them together and each iteration measures a layer on
            the next batch (the paper's "next mini-batch"). Default 1.
        batch_size: Samples per batch taken from an array `data`. Default 32.
        seed: An int in [0, 2**32) (Python or numpy) or None, for the
            orthonormal matrices. Default None.
        verbose: 1 (default) shows a progress bar over layers, 0 is silent.

    Returns:
        An `LSUVReport`: per layer (by name) initial and final variance,
        iterations and whether it converged, in the order the forward pass
        reached them; `layer_calls` and `forward_pass_equivalents`.

    Examples:
        >>> model = keras.Sequential([keras.Input((32, 32, 3)),
        ...     keras.layers.Conv2D(16, 3, activation="relu"),
        ...     keras.layers.Flatten(), keras.layers.Dense(10)])
        >>> report = lsuv_initialize(model, np.random.rand(64, 32, 32, 3), verbose=0)
        >>> all(abs(entry.final_variance - 1.0) < 0.1 for entry in report)
        True

    Reference:
        Mishkin & Matas, "All you need is a good init", ICLR 2016
        (arXiv 1511.06422).
    """
    _check_arguments(model, tol, max_iter, target_variance, batches, batch_size, include_frozen)
    check.boolean(orthogonal, "orthogonal")
    check.boolean(center_bias, "center_bias")
    seed = check.seed(seed, "seed")
    include, exclude = patterns(include, "include"), patterns(exclude, "exclude")
    x, count = _sample(data, batches, batch_size)
    if not model.built:
        run_model(model, keras.tree.map_structure(lambda a: a[:1], x))
    layers, skipped = select_layers(model, include, exclude, include_frozen)
    if not layers:
        _warn_nothing_to_do(include or exclude, skipped)
        return LSUVReport(layers=[], skipped=skipped)
    starts = _orthonormal_starts(layers, keras.random.SeedGenerator(seed)) if orthogonal else {}
    settings = _Settings(tol, max_iter, float(target_variance), center_bias, count)
    with unchanged_on_error(layers):
        return scale_layers(model, x, layers, settings, starts, verbose, skipped=skipped)


def _sample(data, batches, batch_size):
    """The inputs LSUV runs on (the batches concatenated), and the number of batches."""
    chunks = take_batches(data, batches, batch_size)
    if not chunks:
        raise ValueError("`data` holds no batch of samples.")
    smallest = min(keras.tree.flatten(c)[0].shape[0] for c in chunks)
    if smallest < _MIN_BATCH:
        warnings.warn(
            f"LSUV uses a batch of {smallest} samples; variance estimates need at "
            f"least {_MIN_BATCH} (the paper's minimum). Pass more samples.",
            stacklevel=3,
        )
    x = chunks[0] if len(chunks) == 1 else keras.tree.map_structure(lambda *a: np.concatenate(a), *chunks)
    return x, len(chunks)


def _warn_nothing_to_do(filtered, skipped):
    what = "no layer matches `include`/`exclude`" if filtered else "the model has no layer to initialize"
    warnings.warn(
        f"LSUV changed nothing: {what} (LSUV initializes trainable Conv, Dense, DepthwiseConv and "
        f"SeparableConv layers){'; skipped: ' + str(skipped) if skipped else ''}.",
        stacklevel=3,
    )


def _progress(layers, verbose):
    """The per-layer progress callback (no values: they are read after the pass): a Progbar, or nothing."""
    if not verbose:
        return lambda: None
    bar = keras.utils.Progbar(len(layers), unit_name="layer")
    return lambda: bar.add(1)


def _report_unreached(report, layers, names):
    """Adds the layers the pass never called to `report.skipped`, with a warning."""
    reached = {entry.name for entry in report}
    unreached = [names[id(layer)] for layer in layers if names[id(layer)] not in reached]
    unreached += [name for name, reason in report.skipped.items() if reason.startswith("never")]
    report.skipped.update({name: "never called by the forward pass" for name in unreached})
    if unreached:
        warnings.warn(
            f"LSUV's forward pass never called the layers {unreached}; they were left as they were.",
            stacklevel=3,
        )
