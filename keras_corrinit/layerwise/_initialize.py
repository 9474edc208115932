"""`initialize(model, data)`: a data-aware initialization of a whole model in one call.

The recipe, on a sample of the training data streamed in batches:

1. Measure the input patches of the first `whiten` Conv2D layers (in model
   order) over the whole sample, batch by batch; each pass stops at the
   last whitened layer.
2. Whiten those convolutions: `PatchWhitening` filters of their measured
   patch covariance (+/- pairs; directions in which the data does not vary,
   such as a constant alpha channel, are left out; filters beyond twice the
   varying directions He-normal).
3. The model's output layer(s) (`head`): kept as built by default (zero,
   a uniform prediction at the start, with `head="zero"`).
4. Residual blocks (`residual`, read from the model's graph): by default
   each branch's end is scaled, once every other weight is set, so that the
   branch adds a share of its shortcut's variance (`_residual.py`);
   `"keep"` sets them like any other layer; `"zero_gamma"` starts each
   branch that ends in a normalization with its scale (gamma) at zero, so
   the block starts as its shortcut (Goyal et al. 2017); `"zero_last"` also
   zeroes the last kernel of branches without one (Fixup, SkipInit).
5. Every other kernel (`rest`): the identity where a convolution can pass
   its input through, untruncated He-normal elsewhere (by the layer's own
   fan-in: k*k for depthwise kernels), or as built.
6. Kernels whose one consumer is a batch, layer or group normalization
   (`normalized`, read from the graph): the normalization cancels their
   scale, which then only sets how far an optimizer's step turns them; by
   default they get the direction of 2 or 5 at the norm they were built
   with, and LSUV leaves them alone.
7. LSUV on the first batch (`orthogonal=False`): every other layer set in 2
   and 5 rescaled to unit pre-activation variance (the LSUV paper's
   convention: a fused softmax, sigmoid or tanh is never saturated); a layer
   whose factor would leave [1e-4, 100] times its He-normal scale keeps its
   scale, with a warning.
8. Batch normalization (`statistics`): every pass above measures with batch
   statistics, as training does; then each BatchNormalization's moving
   mean and variance are set from the first batch with every weight as set.

Which layer gets which rule, and why, is the planner's (`_plan.py`;
`dry_run=True` returns the plan); the rules are in `_rules.py`.

Layers are identified by object (two nested sub-models may each hold a
"conv"); in the report a layer is named by its name, or by its path where
the name repeats. Frozen layers (`trainable=False`, themselves or a parent)
are left alone unless `include_frozen=True`; on any error every weight is
as it was.
"""

import contextlib
import dataclasses
import itertools
import math
import warnings

import keras

from keras_corrinit._core import validation as check
from keras_corrinit._core.apply import layer_seeds
from keras_corrinit._core.data import batch_size_of, iter_samples
from keras_corrinit._core.layers import kernel_slots, unchanged_on_error, walk_layers
from keras_corrinit._core.model_pass import (
    display_names,
    patterns,
    run_model,
    run_until,
    select_layers,
    stop_pass,
    watching,
)
from keras_corrinit.correlation._patches import PatchAccumulator, layer_patches
from keras_corrinit.layerwise._head import HeadCap
from keras_corrinit.layerwise._lsuv import LayerEntries, _Settings, scale_layers
from keras_corrinit.layerwise._plan import InitializationPlan, _attention_layers, make_plan, whitened_layers
from keras_corrinit.layerwise._residual import ResidualScaler
from keras_corrinit.layerwise._rules import RULES, Step, set_mimetic
from keras_corrinit.normalization._statistics import batch_statistics, set_statistics
from keras_corrinit.normalization._whitening import ZCAWhitening

__all__ = ["InitializationPlan", "InitializationReport", "InitializedLayer", "initialize"]

_RESTS = ("he", "identity", "keep")
_HEADS = ("zero", "lsuv", "keep")
_RESIDUALS = ("zero_gamma", "zero_last", "keep", "scaled")
_STATISTICS = ("data", "keep")
_ATTENTIONS = ("keep", "mimetic")
_NORMALIZED = ("norm", "keep", "lsuv")


@dataclasses.dataclass
class InitializedLayer:
    """What `initialize` set in one layer; its pre-activation variance on the first batch before and after LSUV's scale.

    "Before" is with the kernel `initialize` set (NaN for a layer LSUV does
    not scale); "after" is 0 for a layer set to zero.
    """

    name: str
    layer_class: str
    what: str
    variance_before: float
    variance_after: float


def _number(value):
    """A variance for the report's table: "-" where there is none (a layer LSUV does not scale)."""
    return "-" if math.isnan(value) else f"{value:.4g}"


@dataclasses.dataclass
class InitializationReport(LayerEntries):
    """`initialize`'s report.

    Attributes:
        layers: `InitializedLayer`s in model order.
        skipped: `{layer name: reason}` of layers with weights left alone.
        forward_pass_equivalents: The work, in forward passes of the first
            batch, counted by the kernel layers' multiply-adds: the
            statistics passes (each up to the last whitened layer) and
            LSUV's pass.
        samples: The number of samples measured (patch statistics).
        lsuv_samples: The samples LSUV's pass used (the first batch).
        patches: `{whitened layer name: patches in its covariance}`.
        residual_ends: Names of the layers whose scale or kernel starts a
            residual branch at zero.
        heads: Names of the output layers found.
        normalization: `{BatchNormalization name: (mean of its moving
            mean, mean of its moving variance)}` as set from the first
            batch (`statistics="data"`); empty with `statistics="keep"`.
        unread: `{layer name: why}` of the Layer subclasses (a user's or a
            model library's blocks) whose inside has no graph to read: their
            kernels are set by the rules above, but heads, residual adds
            and kernels in front of a normalization inside them are not
            recognised as such.
    """

    layers: list
    skipped: dict
    forward_pass_equivalents: float
    samples: int = 0
    lsuv_samples: int = 0
    patches: dict = dataclasses.field(default_factory=dict)
    residual_ends: list = dataclasses.field(default_factory=list)
    heads: list = dataclasses.field(default_factory=list)
    normalization: dict = dataclasses.field(default_factory=dict)
    unread: dict = dataclasses.field(default_factory=dict)

    def __str__(self):
        rows = [f"| {e.name} | {e.what} | {_number(e.variance_before)} | {_number(e.variance_after)} |" for e in self]
        head = ["| layer | set | pre-activation variance before | after |", "|---|---|---|---|"]
        patches = ", ".join(f"{name}: {count}" for name, count in self.patches.items()) or "none"
        return (
            "\n".join(head + rows)
            + f"\n\n{self.samples} samples measured (patches per whitened layer: {patches}); LSUV on "
            + f"{self.lsuv_samples}; {self.forward_pass_equivalents:.2f} forward-pass equivalents"
            + (
                f"; moving statistics of {len(self.normalization)} BatchNormalization layer(s) set from the data"
                if self.normalization
                else ""
            )
        )


def _refuse_trained(model, overwrite_trained):
    """A model its optimizer has trained is not re-initialized unless asked (its weights would be lost)."""
    optimizer = getattr(model, "optimizer", None)
    steps = int(keras.ops.convert_to_numpy(optimizer.iterations)) if optimizer is not None and optimizer.built else 0
    if steps and not overwrite_trained:
        raise ValueError(
            f"`model` has been trained ({steps} optimizer steps): initialize would replace its trained weights "
            "(its optimizer state would no longer fit them). Initialize a freshly built model, or pass "
            "overwrite_trained=True to start this one over."
        )


def _nothing_selected(model, skipped, args):
    """No kernel layer to set: why, naming the argument that left them out."""
    if args["include"] is not None or args["exclude"]:
        chosen = select_layers(model, None, None, args["include_frozen"])[0]
        if chosen:
            raise ValueError(
                f"`include`/`exclude` leave no kernel layer to initialize (include={_texts(args['include'])}, "
                f"exclude={_texts(args['exclude'])}; the model's kernel layers are "
                f"{[layer.name for layer in chosen][:20]}). Loosen them."
            )
    raise ValueError(
        "The model has no Conv or Dense kernel to initialize" + (f"; skipped: {skipped}." if skipped else ".")
    )


def _texts(compiled):
    return None if compiled is None else [p.pattern for p in compiled]


def _check_arguments(model, args):
    if not isinstance(model, keras.Model):
        raise TypeError(
            f"`model` must be a keras.Model (Sequential, Functional or subclassed); received "
            f"{type(model).__name__}. Wrap a layer in a model: keras.Sequential([keras.Input(shape), layer])."
        )
    args["whiten"] = check.integer(args["whiten"], "whiten", minimum=0)
    for name, choices in (
        ("rest", _RESTS),
        ("head", _HEADS),
        ("residual", _RESIDUALS),
        ("attention", _ATTENTIONS),
        ("normalized", _NORMALIZED),
        ("statistics", _STATISTICS),
    ):
        if args[name] not in choices:
            raise ValueError(f"`{name}` must be one of {list(choices)}; received {args[name]!r}.")
    args["residual_share"] = check.real(args["residual_share"], "residual_share", low=0, low_open=True)
    if args["eps"] is not None:
        args["eps"] = check.real(args["eps"], "eps", low=0, low_open=True)
    args["samples"] = check.integer(args["samples"], "samples", minimum=1)
    args["batch_size"] = check.integer(args["batch_size"], "batch_size", minimum=1)
    if args["max_patches_per_batch"] is not None:
        args["max_patches_per_batch"] = check.integer(args["max_patches_per_batch"], "max_patches_per_batch", minimum=2)
    for name in ("include_frozen", "freeze_whitened", "dry_run", "overwrite_trained"):
        args[name] = check.boolean(args[name], name)
    args["seed"] = check.seed(args["seed"], "seed")
    if args["verbose"] not in (0, 1) or isinstance(args["verbose"], bool):
        raise ValueError(f"`verbose` must be 0 or 1; received {args['verbose']!r}.")
    args["include"] = patterns(args["include"], "include")
    args["exclude"] = patterns(args["exclude"], "exclude")
    return args


class _Statistics:
    """The statistics passes' handler: the whitened layers' input patches; the pass ends after the last of them."""

    def __init__(self, whitened, max_patches_per_batch, seed):
        self.accumulators = {
            id(layer): PatchAccumulator(layer.kernel_size, layer.kernel.shape[-2], max_patches_per_batch, seed)
            for layer in whitened
        }
        self.waiting = set()

    def __call__(self, layer, inputs, forward):
        self.accumulators[id(layer)].add(layer_patches(layer, inputs))
        self.waiting.discard(id(layer))
        if not self.waiting:
            stop_pass()  # every whitened layer has this batch's patches: the rest of the pass is not needed
        return forward(inputs)

    def run(self, model, batch, training_statistics):
        self.waiting = set(self.accumulators)
        with batch_statistics(model) if training_statistics else contextlib.nullcontext():
            run_until(model, batch)


def _measure(model, first, batches, whitened, args):
    """`({id(layer): PatchStatistics}, samples measured)`: the statistics passes over the streamed sample."""
    if not whitened:
        return {}, batch_size_of(first)
    statistics = _Statistics(whitened, args["max_patches_per_batch"], args["seed"] or 0)
    bar = keras.utils.Progbar(args["samples"], unit_name="sample") if args["verbose"] else None
    count = 0
    with watching(whitened, statistics):
        for batch in itertools.chain([first], batches):
            statistics.run(model, batch, args["statistics"] == "data")
            count += batch_size_of(batch)
            if bar:
                bar.update(count)
    return {key: a.statistics() for key, a in statistics.accumulators.items() if a.count}, count


def _share_up_to(lsuv, whitened):
    """The multiply-adds of a pass up to the last whitened layer over a whole pass's (counted in LSUV's pass)."""
    costs, order = lsuv.layer_costs, lsuv.pass_order
    total = sum(costs.values())
    reached = [i for i, key in enumerate(order) if any(key == id(layer) for layer in whitened)]
    if not total or not reached:
        return 1.0
    return sum(costs[key] for key in order[: reached[-1] + 1]) / total


def mimetic_attention(model, seed=None):
    """Mimetic kernels for every trainable self-attention layer of `model`, nothing else; returns them.

    What `initialize(..., attention="mimetic")` does to attention, alone: the
    control that separates it from the rest of `initialize`.
    """
    names = display_names(model)
    candidates = {
        names[id(layer)]: "" for layer in walk_layers(model) if isinstance(layer, keras.layers.MultiHeadAttention)
    }
    layers = _attention_layers(model, candidates, names, {"include_frozen": False})
    with unchanged_on_error(layers):
        for layer, layer_seed in zip(layers, layer_seeds(seed, len(layers))):
            set_mimetic(layer, layer_seed)
    return layers


def initialize(
    model,
    data,
    *,
    whiten=1,
    rest="identity",
    head="keep",
    residual="scaled",
    attention="mimetic",
    normalized="norm",
    statistics="data",
    residual_share=0.1,
    eps=None,
    samples=1024,
    batch_size=128,
    max_patches_per_batch=4096,
    include=None,
    exclude=None,
    include_frozen=False,
    freeze_whitened=False,
    seed=None,
    verbose=1,
    dry_run=False,
    overwrite_trained=False,
):
    """Initializes a model from its data: whitened first convolution, identity convolutions, LSUV's scale.

    What it does to each layer kind:

    - the first `whiten` Conv2D layers (one group, either data format,
      any stride or dilation): whitening filters of their input patches;
    - the output layer(s) (`head`): kept as built (or zero: a uniform
      prediction at the start);
    - residual blocks (`Add` of a branch and a shortcut, read from the
      graph of Functional models, nested ones included): set like any
      other layer, or the branch's last normalization scale (gamma) at
      zero (`residual="zero_gamma"`);
    - Conv1D/2D/3D: the identity where it can pass its input through (one
      group, odd kernel, filters >= input channels), else He-normal;
      grouped convolutions, Conv*Transpose and Dense: He-normal;
      DepthwiseConv and SeparableConv: He-normal with the depthwise
      kernel's own fan-in (k*k), the pointwise kernel's (input channels);
      EinsumDense: kept as built; all of these then LSUV's scale on their
      pre-activation output, except kernels in front of a normalization
      (`normalized`): they keep the norm they were built with;
    - MultiHeadAttention (self-attention): mimetic (query-key product near
      a positive multiple of the identity, value-output near a negative
      one), or kept with `attention="keep"`;
    - layers with weights no rule covers (Embedding, attention when kept),
      frozen layers and layers the pass never calls: left alone, listed in
      `report.skipped` with the reason.

    Args:
        model: A Keras model (Sequential, Functional, nested or
            subclassed); built on the first batch if it is not built yet.
        data: A sample of the training data: arrays, `(x, y)`, a batched
            tf.data.Dataset, a PyDataset or a generator of batches.
        whiten: How many Conv2D layers, first in model order, are whitened.
            Default 1; 0 whitens none.
        rest: The other kernels: `"identity"` (default), `"he"` (He-normal
            everywhere, no identity) or `"keep"` (as built; only LSUV's
            scale).
        head: The output layer(s): `"keep"` (default: as built, but its
            kernel scaled down, its bias kept, where its outputs' standard
            deviation (before its activation, its bias taken off) exceeds max(1.5, sqrt(ln C)) on the first batch, C its
            units:
            features that grew with depth), `"zero"` (a uniform prediction at the start) or
            `"lsuv"` (He-normal at unit pre-activation variance, LSUV's
            paper). Chosen by measurement (docs/evidence.md): kept heads
            end 5-13 points above zero heads at 4 epochs on four of five
            families (a zero head passes no gradient to the body until it
            has grown); on keras.io's convnet zero was 5 points better.
        residual: `"scaled"` (default: each residual branch's end, its
            normalization's gamma and beta or else its last kernel and
            bias, multiplied so that the branch adds `residual_share` of
            its shortcut's variance at the start, measured on the first
            batch as training sees it; a branch whose shortcut is a
            projection, a kernel layer of its own, is set like any other
            layer instead), `"keep"` (every branch initialized
            like any layer), `"zero_gamma"` (a branch that ends in a
            normalization starts with its gamma at zero, so the block
            starts as its shortcut) or `"zero_last"` (also the last kernel
            of a branch without a normalization at zero: Fixup's and
            SkipInit's choice). Chosen by measurement (docs/evidence.md):
            on ResNet-20 as written (Keras's batch-norm momentum), budget
            protocol, 5 paired seeds, scaled branches are best with SGD and
            tied best with Adam, where zero gammas lose (Adam grows a
            parameter that starts at zero by about its learning rate per
            step).
        attention: `"mimetic"` (default): self-attention layers get
            Trockman and Kolter's mimetic kernels, W_q W_k^T = 0.7 Z /
            sqrt(d) + 0.7 I and W_v W_o = 0.4 Z / sqrt(d) - 0.4 I summed
            over heads (Z standard normal, d the model dimension; biases
            zero), drawn from the layer's seed; not rescaled by LSUV.
            `"keep"`: MultiHeadAttention as built. Chosen by measurement
            (docs/evidence.md): on a small ViT, 4 epochs, 5 seeds,
            `initialize` ends +7.5 points [+2.2, +12.8] above the model as
            written with mimetic attention, +1.8 (n.s.) with it kept.
        normalized: Kernels whose only consumer is a batch, layer or
            group normalization (with a linear or ReLU activation between;
            found in Sequential and Functional graphs, nested ones
            included; not in subclassed models): `"norm"` (default: the
            rule's direction, whitening, identity or He-normal, at the
            Frobenius norm the kernel was built with; not rescaled by LSUV),
            `"keep"` (as built; a whitened layer is still whitened, at its
            built norm) or `"lsuv"` (like any other kernel). Chosen by
            measurement (docs/evidence.md): with LSUV's
            unit-variance scale in front of batch norm, MobileNet with
            settled batch norm ended 10 points below the model as written,
            with the built norm 4.5 above (Adam's step on a scale-invariant
            kernel turns it by about lr / its norm, and He-normal depthwise
            kernels are several times the norm of Keras's default).
        statistics: `"data"` (default): every measuring pass runs batch
            normalization as training does (by the batch's statistics, not
            its moving ones; dropout stays off), and each trainable
            BatchNormalization's moving mean and variance are then set to
            its input's statistics on the first batch, with every weight as
            set (see `recalibrate_normalization`); `"keep"`: the passes in
            inference mode, the moving statistics as built.
        residual_share: The share of its shortcut's variance a residual
            branch adds at the start with `residual="scaled"` (the default).
            Default 0.1.
        eps: `PatchWhitening`'s eps. Default None (1e-3 x the mean
            eigenvalue of each layer's patch covariance).
        samples: How many samples are measured for the patch statistics.
            Default 1024 (see the usage notes for how the whitening depends
            on it); fewer if `data` has fewer.
        batch_size: Samples per batch taken from array data; LSUV's pass
            uses the first batch. Default 128.
        max_patches_per_batch: Patches per batch for the covariances
            (memory D x D per whitened layer). Default 4096.
        include: None (default: every layer), or a regular expression (or
            a list) searched in layer names (and paths): only matching
            layers are touched.
        exclude: A regular expression (or list) of layer names to leave
            alone. Default None.
        include_frozen: Also set frozen layers. Default False.
        freeze_whitened: Set the whitened layers `trainable=False` after
            initializing them (a fixed whitening front end). Default False.
        seed: An int in [0, 2**32) (per-layer seeds derived from it) or
            None. Default None.
        verbose: 1 (default) shows progress; 0 is silent.
        overwrite_trained: Re-initialize a model its optimizer has already
            trained (its weights are lost). Default False: such a model is
            refused with a `ValueError`.
        dry_run: True returns the plan (`InitializationPlan`: each layer's
            role and why) and touches nothing. Default False.

    Returns:
        An `InitializationReport`: what each layer got, its pre-activation
        variance before and after, the samples and patches used; with
        `dry_run=True` an `InitializationPlan`.

    Examples:
        >>> model = keras.Sequential([keras.Input((8, 8, 3)), keras.layers.Conv2D(8, 3, activation="relu"),
        ...                           keras.layers.Flatten(), keras.layers.Dense(2, activation="softmax")])
        >>> x = np.random.default_rng(0).normal(size=(32, 8, 8, 3)).astype("float32")
        >>> report = initialize(model, x, seed=0, verbose=0)
        >>> [entry.what for entry in report]
        ['PatchWhitening (8 filters)', 'kept (output layer)']
    """
    args = _check_arguments(model, dict(locals()))
    batches = iter_samples(data, args["samples"], args["batch_size"])
    first = next(batches, None)
    if first is None:
        raise ValueError("`data` holds no batch of samples.")
    if not model.built:
        run_model(model, keras.tree.map_structure(lambda a: a[:1], first))
    _refuse_trained(model, args["overwrite_trained"])
    targets, skipped = select_layers(model, args["include"], args["exclude"], args["include_frozen"])
    if not targets:
        _nothing_selected(model, skipped, args)
    names = display_names(model)
    _fixed_whitening(model, names, skipped)
    whitened, any_convolution = whitened_layers(targets, args["whiten"], model)
    _warn_unwhitened(model, whitened, any_convolution, names, args["whiten"])
    if args["dry_run"]:
        return make_plan(model, first, targets, skipped, names, whitened, args).public()
    statistics, count = _measure(model, first, batches, whitened, args)
    for layer in whitened:
        if id(layer) not in statistics:
            skipped[names[id(layer)]] = "never called by the forward pass"
    reached = [layer for layer in whitened if id(layer) in statistics]
    plan = make_plan(model, first, targets, skipped, names, reached, args)
    # The attention layers' seeds follow the kernel layers': the kernels' draws do not depend on `attention`.
    seeds = dict(zip((id(layer) for layer in plan.layers), layer_seeds(args["seed"], len(plan.layers))))
    changed = plan.layers + [end.layer for end in plan.ends + plan.scaled_ends] + plan.normalizations
    with unchanged_on_error(changed):
        what, scaled = _apply_rules(plan, statistics, seeds, args)
        lsuv, extra_passes, moments = _finish(model, first, plan, scaled, what, args)
    if args["freeze_whitened"]:
        for layer in whitened:
            layer.trainable = False
    plan.skipped.update(lsuv.skipped)
    passes = (count / batch_size_of(first)) * _share_up_to(lsuv, whitened) if statistics else 0.0
    return InitializationReport(
        _entries(plan, what, lsuv),
        plan.skipped,
        passes + lsuv.forward_pass_equivalents + extra_passes,
        samples=count,
        lsuv_samples=batch_size_of(first),
        patches={names[key]: s.count for key, s in statistics.items()},
        residual_ends=[
            names[id(end.layer)] for end in plan.ends + plan.scaled_ends if names[id(end.layer)] not in plan.skipped
        ],
        heads=[names[id(layer)] for layer in plan.heads],
        normalization=moments,
        unread=plan.unread,
    )


def _warn_unwhitened(model, whitened, any_convolution, names, whiten):
    """Says where fewer convolutions than `whiten` are whitened: none in the selection, or the first ones
    the data meets left out (a later convolution sees features, not patches: it is not whitened instead)."""
    if whiten and not any_convolution:
        warnings.warn(
            "The model has no Conv2D layer to whiten (inside the layers selected): only He-normal and LSUV's "
            "scale are set.",
            stacklevel=3,
        )
    elif len(whitened) < whiten and any_convolution:
        meets_first = whitened_layers(list(walk_layers(model)), whiten, model)[0]
        left = [names[id(layer)] for layer in meets_first if all(layer is not w for w in whitened)]
        warnings.warn(
            f"The first Conv2D layer(s) the data meets, {left}, are excluded or frozen: they are not whitened, and "
            "no later convolution (which sees features, not the data's patches) is whitened in their place.",
            stacklevel=3,
        )


def _fixed_whitening(model, names, skipped):
    """`ZCAWhitening` layers stay as adapted (their reason in `skipped`); one never adapted is named in a warning."""
    for layer in walk_layers(model):
        if not isinstance(layer, ZCAWhitening):
            continue
        name = names[id(layer)]
        if layer.is_adapted:
            skipped[name] = "ZCAWhitening: a fixed whitening of its input, as adapted"
        else:
            skipped[name] = "ZCAWhitening: not adapted (passes its input unchanged)"
            warnings.warn(
                f"The ZCAWhitening layer {name!r} was never adapted: it passes its input unchanged. Call its "
                "`adapt(images)` (or build it with `ZCAWhitening.from_data`) before `initialize`.",
                stacklevel=3,
            )


def _apply_rules(plan, statistics, seeds, args):
    """Each layer's rule (`RULES[role]`); `({id: what}, layers LSUV scales)`."""
    what, scaled = {}, []
    for layer in plan.layers:
        key = id(layer)
        step = Step(statistics.get(key), seeds[key], args, key in plan.normalized)
        what[key], lsuv = RULES[plan.roles[key]](layer, step)
        if lsuv:
            scaled.append(layer)
    for end in plan.ends:
        if end.kind == "gamma":
            end.layer.gamma.assign(keras.ops.zeros(end.layer.gamma.shape, end.layer.gamma.dtype))
    return what, scaled


def _finish(model, first, plan, scaled, what, args):
    """LSUV's pass, the residual branches' scale, the kept heads' cap and the normalization statistics, in
    that order."""
    settings = _Settings(tol=0.1, max_iter=10, target=1.0, center_bias=False, batches=1)
    # The layers not scaled are counted too: the statistics pass's share is measured against them all.
    counted = [layer for layer in walk_layers(model) if kernel_slots(layer)]
    training = args["statistics"] == "data"
    lsuv = scale_layers(
        model,
        first,
        scaled,
        settings,
        verbose=args["verbose"],
        names=plan.names,
        counted=counted,
        training_statistics=training,
    )
    extra_passes, moments = 0, {}
    capping = args["head"] == "keep" and plan.heads
    if plan.scaled_ends or capping:
        # One pass in training mode: the residual merges are scaled as the pass reaches them, and the heads,
        # which it reaches after every merge, are capped on what the scaled body gives them.
        scaler, cap = ResidualScaler(plan.scaled_ends, args["residual_share"]), HeadCap()
        with contextlib.ExitStack() as stack:
            if training:
                stack.enter_context(batch_statistics(model))
            scaler.intercept(stack, plan.scaled_ends)
            if capping:
                stack.enter_context(watching(plan.heads, cap.handler))
            run_model(model, first)
        extra_passes += 1
        for end in plan.scaled_ends:
            key, factor = id(end.layer), scaler.factors.get(id(end.layer))
            if factor is None:
                plan.skipped.setdefault(plan.names[key], "residual branch end: no variance to scale on the batch")
                continue
            share = f"residual branch end x{factor:.3g} ({args['residual_share']:g} of its shortcut's variance)"
            what[key] = f"{what[key]}; {share}" if key in what else share
        for key, (std, factor, limit) in cap.scaled.items():
            what[key] = f"{what[key]}; x{factor:.3g}: its outputs' std {std:.3g} capped at {limit:.3g}"
    if plan.normalizations:
        moments = set_statistics(model, [first], plan.names).layers
        extra_passes += 1
    return lsuv, extra_passes, moments


def _entries(plan, what, lsuv):
    """The report's rows: each layer set, with LSUV's variances where it scaled the layer."""
    entries = {entry.name: entry for entry in lsuv}
    layers = []
    for layer in plan.layers:
        name = plan.names[id(layer)]
        entry = entries.get(name)
        zero = what[id(layer)].startswith("zero")
        before = entry.initial_variance if entry else math.nan
        after = entry.final_variance if entry else (0.0 if zero else math.nan)
        layers.append(InitializedLayer(name, type(layer).__name__, what[id(layer)], before, after))
    for end in plan.scaled_ends:  # a scaled gamma: its normalization's entry
        if end.kind == "gamma" and id(end.layer) in what:
            name = plan.names[id(end.layer)]
            layers.append(InitializedLayer(name, type(end.layer).__name__, what[id(end.layer)], math.nan, math.nan))
    return layers
