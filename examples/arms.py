"""The comparison's arms: how each one initializes a network.

Arms (`--init`):

* Uncorrelated baselines: `uncorrelated` (CorrelatedHeNormal with R = I:
  Algorithm 1's exact baseline, untruncated He-normal), Keras's
  `he_normal` (truncated), `he_uniform`, `random_normal`, `random_uniform`
  (Keras defaults, the NFM poster's "normal"/"uniform"), `orthogonal`,
  `glorot_normal`.
* Correlated (the paper): `correlated` (Algorithm 1, filter-sum variance
  kept), `correlated_weight` (He's per-weight variance kept), both with
  `--alpha` and `--correlation`; `correlated_learned` (Table 4: the pooled R
  measured on a source network trained on the same training split);
  `correlated_layerwise` (footnote 2: each layer's R from the source layer
  at the same relative depth).
* Scale controls, `<arm>~var` and `<arm>~sum`: uncorrelated He-normal
  weights with exactly the per-weight variance (`~var`) or the filter-sum
  variance (`~sum`) that `<arm>` gives each kernel. For a filter-mode arm
  the `~sum` control is `uncorrelated` itself, for `correlated_weight` the
  `~var` control is; so the informative controls are `correlated~var`
  (He scaled down by P / sum(R)), `correlated_learned~var`,
  `correlated_layerwise~var` and `correlated_weight~sum` (He scaled up by
  sum(R) / P). If an arm beats `uncorrelated` but not its control, its gain
  comes from the scale, not from the correlation.
* The NFM poster: `nfm_kaiming`, `agop_kaiming` (Sigma = the source layer's
  NFM or AGOP, scaled to mean variance 2 / fan_in) and the unscaled
  `nfm`, `agop` (Sigma as it is). AGOPs are of the convolutions; Dense
  layers get their NFM (see `Source.agop`).
* `enhanced_gamma` (`--gamma-base`, `--gamma-granularity`); `lsuv`
  (orthonormal, then LSUV on one training batch).
* Depthwise filters (ConvMixer; Trockman et al. 2023). Every other kernel
  is He-normal (`uncorrelated`) in all of them; the depthwise kernels are
  `depthwise_default` (Keras's `glorot_uniform`, as built),
  `depthwise_he` (Keras's `he_normal`), `covariance_closed_form`
  (`ConstructedFilterCovariance` by relative depth) or
  `covariance_learned` (each layer's covariance from the source ConvMixer
  at the same relative depth, resampled to the kernel size). Their scale
  controls `covariance_closed_form~var` and `covariance_learned~var` draw
  independent weights with the same per-position variances (the diagonal
  of the arm's covariance): the arm differs from its control only in the
  off-diagonal covariance.
"""

import dataclasses
import functools
import hashlib
import json
import math
import os

import keras
import networks
import numpy as np

from keras_corrinit import (
    CorrelatedHeNormal,
    EnhancedGamma,
    NFMInit,
    SpatialCorrelation,
    agop_matrix,
    apply_initializers,
    correlation_from_model,
    depthwise_covariance_from_model,
    depthwise_layerwise_initializers,
    layer_seeds,
    lsuv_initialize,
    spatial_kernels,
)

IDENTITY = SpatialCorrelation.identity()
CORRELATED = ("correlated", "correlated_weight", "correlated_learned", "correlated_layerwise")
LEARNED = (
    "correlated_learned",
    "correlated_layerwise",
    "nfm",
    "nfm_kaiming",
    "agop",
    "agop_kaiming",
    "covariance_learned",
)
DEPTHWISE = ("depthwise_default", "depthwise_he", "covariance_closed_form", "covariance_learned")
GAMMA_BASES = {"he_normal": "uncorrelated", "he_uniform": "he_uniform"}  # EnhancedGamma base -> its arm
PLAIN = {
    "uncorrelated": lambda s, ctx: CorrelatedHeNormal(IDENTITY, seed=s),
    "he_normal": lambda s, ctx: keras.initializers.HeNormal(seed=s),
    "he_uniform": lambda s, ctx: keras.initializers.HeUniform(seed=s),
    "random_normal": lambda s, ctx: keras.initializers.RandomNormal(seed=s),
    "random_uniform": lambda s, ctx: keras.initializers.RandomUniform(seed=s),
    "orthogonal": lambda s, ctx: keras.initializers.Orthogonal(seed=s),
    "glorot_normal": lambda s, ctx: keras.initializers.GlorotNormal(seed=s),
    "lsuv": lambda s, ctx: keras.initializers.Orthogonal(seed=s),  # then lsuv_initialize
    "correlated": lambda s, ctx: CorrelatedHeNormal(ctx.correlation, alpha=ctx.alpha, seed=s),
    "correlated_weight": lambda s, ctx: CorrelatedHeNormal(
        ctx.correlation, alpha=ctx.alpha, variance_mode="weight", seed=s
    ),
    "correlated_learned": lambda s, ctx: CorrelatedHeNormal(ctx.source.estimate, alpha=ctx.alpha, seed=s),
    "enhanced_gamma": lambda s, ctx: EnhancedGamma(ctx.gamma_base, ctx.gamma_granularity, seed=s),
}
POST_BUILD = ("correlated_layerwise", "nfm", "nfm_kaiming", "agop", "agop_kaiming", "lsuv") + DEPTHWISE
BASE_ARMS = sorted(set(PLAIN) | set(POST_BUILD))
CONTROLS = [f"{arm}~var" for arm in ("correlated", "correlated_learned", "correlated_layerwise")] + [
    "correlated_weight~sum",
    "covariance_closed_form~var",
    "covariance_learned~var",
]
ARMS = BASE_ARMS + CONTROLS


def split_control(name):
    """`"correlated~var"` -> `("correlated", "var")`; plain arms -> `(name, None)`."""
    arm, _, match = name.partition("~")
    return arm, (match or None)


def uses_alpha(name):
    return split_control(name)[0] in CORRELATED


def uses_correlation(name):
    return split_control(name)[0] in ("correlated", "correlated_weight")


def needs_depthwise(name):
    return split_control(name)[0] in DEPTHWISE


def uses_source(name):
    return split_control(name)[0] in LEARNED


@dataclasses.dataclass
class Context:
    """What an arm needs besides the seed."""

    alpha: float = 1.0
    correlation: object = None
    source: object = None
    gamma_base: str = "he_normal"
    gamma_granularity: str = "filter"


class MatchedScale(keras.initializers.Initializer):
    """Uncorrelated He-normal with a correlated initializer's variance.

    For each kernel shape it reads the R that `reference` (a
    CorrelatedHeNormal) uses and draws independent N(0, v) weights with
    `match="var"`: v = the reference's per-weight variance
    (2 P / (sum(R) fan_in) in filter mode, 2 / fan_in in weight mode);
    `match="sum"`: v = that variance times sum(R) / P, so that the filter
    sum's variance, P v, equals the reference's, v_ref sum(R).
    """

    def __init__(self, reference, match, seed=None):
        self.reference, self.match, self.seed = reference, match, seed

    def variance(self, shape):
        spatial = tuple(shape[:-2])
        p = math.prod(spatial)
        fan_in = p * shape[-2]
        r = self.reference.correlation_matrix(spatial)
        weight = 2.0 * p / (r.sum() * fan_in) if self.reference.variance_mode == "filter" else 2.0 / fan_in
        return weight if self.match == "var" else weight * r.sum() / p

    def __call__(self, shape, dtype=None):
        return keras.random.normal(tuple(shape), stddev=math.sqrt(self.variance(shape)), dtype=dtype, seed=self.seed)


class DiagonalOf(keras.initializers.Initializer):
    """Independent normal weights with the per-position variances of `reference`'s covariance."""

    def __init__(self, reference, seed=None):
        self.reference, self.seed = reference, seed

    def __call__(self, shape, dtype=None):
        variances = np.diag(self.reference.covariance_matrix(tuple(shape[:-2])))
        stddev = keras.ops.reshape(keras.ops.sqrt(variances), tuple(shape[:-2]) + (1, 1))
        return keras.ops.cast(stddev, dtype or "float32") * keras.random.normal(
            tuple(shape), dtype=dtype, seed=self.seed
        )


def layer_factory(name, seed, ctx):
    """Zero-argument factory: one initializer per layer, each its own seed."""
    arm, match = split_control(name)
    maker = PLAIN["uncorrelated" if arm in POST_BUILD and arm != "lsuv" else arm]
    seeds = iter(layer_seeds(seed, 4096))

    def make():
        s = next(seeds)
        init = maker(s, ctx)
        return MatchedScale(init, match, seed=s) if match and arm not in POST_BUILD else init

    return make


def _kernel_layers(model, spatial_rank=None):
    layers = [layer for layer in model.layers if isinstance(layer, (keras.layers.Conv2D, keras.layers.Dense))]
    if spatial_rank is not None:
        layers = [layer for layer in layers if len(layer.kernel.shape) - 2 == spatial_rank]
    return layers


def depth_mapping(target_names, source_names):
    """Each target layer -> the source layer at the same relative depth."""
    if len(target_names) == len(source_names):
        return dict(zip(target_names, source_names))
    last_t, last_s = max(1, len(target_names) - 1), len(source_names) - 1
    return {name: source_names[round(i * last_s / last_t)] for i, name in enumerate(target_names)}


def _conv_mapping(target, source):
    def convs(model):
        return [layer.name for layer in _kernel_layers(model) if tuple(getattr(layer, "kernel_size", ())) == (3, 3)]

    return depth_mapping(convs(target), convs(source))


def _all_mapping(target, source):
    mapping = {}
    for rank in (2, 0):  # convolutions with convolutions, Dense with Dense
        mapping.update(
            depth_mapping(
                [layer.name for layer in _kernel_layers(target, rank)],
                [layer.name for layer in _kernel_layers(source, rank)],
            )
        )
    return mapping


def post_build(name, model, seed, ctx, x_train):
    """Applies the arms that need the built network (layer-wise, NFM/AGOP, LSUV)."""
    arm, match = split_control(name)
    if arm == "lsuv":
        lsuv_initialize(model, x_train[:32], verbose=0, seed=seed)
        return
    if arm not in POST_BUILD:
        return
    source = ctx.source
    if arm in DEPTHWISE:
        depthwise_post_build(arm, match, model, seed, ctx)
        return
    if arm == "correlated_layerwise":
        initializers = source.estimate.layerwise_initializers(
            model, mapping=_conv_mapping(model, source.model), seed=seed, alpha=ctx.alpha
        )
    else:
        scaling = "kaiming" if arm.endswith("_kaiming") else "none"
        mapping = _all_mapping(model, source.model)
        seeds = dict(zip(mapping, layer_seeds(seed, len(mapping))))
        agop = source.agop(x_train) if arm.startswith("agop") else {}
        initializers = {}
        for target, src in mapping.items():
            if src in agop:
                initializers[target] = NFMInit.from_covariance(
                    agop[src], source.spatial_shape(src), source.in_channels(src), scaling=scaling, seed=seeds[target]
                )
            else:
                initializers[target] = NFMInit.from_kernel(source.layers[src], scaling=scaling, seed=seeds[target])
    if match:
        initializers = {k: MatchedScale(v, match, seed=v.seed) for k, v in initializers.items()}
    apply_initializers(model, initializers)


def depthwise_post_build(arm, match, model, seed, ctx):
    """Sets the depthwise kernels of the depthwise arms (see the module docstring)."""
    if arm == "depthwise_default":
        return  # as built: Keras's glorot_uniform under the run's global seed
    covariance = ctx.source.depthwise if arm == "covariance_learned" else None
    initializers = depthwise_layerwise_initializers(model, covariance, seed=seed)
    seeds = layer_seeds(seed, len(initializers))  # the ones depthwise_layerwise_initializers gave the layers
    if arm == "depthwise_he":
        initializers = {key: keras.initializers.HeNormal(seed=s) for key, s in zip(initializers, seeds)}
    if match:
        initializers = {key: DiagonalOf(init, seed=s) for (key, init), s in zip(initializers.items(), seeds)}
    apply_initializers(model, initializers)


# ------------------------------------------------------------- sources
def source_settings(run, args):
    """Identity of the source network a learned arm's run uses."""
    return dict(
        backend=run["backend"],
        dataset=run["dataset"],
        max_train=run["max_train"],
        network=args.source_network or run["network"],
        width=run["width"],
        batch_norm=run["batch_norm"],
        init="uncorrelated",
        optimizer="sgd",
        lr=args.source_lr,
        momentum=0.9,
        l2=0.0,
        batch_size=run["batch_size"],
        epochs=args.source_epochs,
        seed=10_007,
    )


def settings_id(settings):
    text = json.dumps({k: str(v) for k, v in settings.items()}, sort_keys=True)
    return hashlib.sha256(text.encode()).hexdigest()[:12]


class Source:
    """A source network trained on the training split, cached in `--out`."""

    def __init__(self, model, identity):
        self.model, self.id = model, identity
        self.layers = {layer.name: layer for layer in _kernel_layers(model)}
        self._agop = None

    @functools.cached_property
    def estimate(self):
        """The pooled 3x3 spatial correlation (`CorrelationEstimate`)."""
        return correlation_from_model(self.model, kernel_size=3)

    @functools.cached_property
    def depthwise(self):
        """Per-layer depthwise filter covariances (`DepthwiseCovariance`)."""
        return depthwise_covariance_from_model(self.model, source=f"source {self.id}")

    def spatial_shape(self, name):
        return tuple(self.layers[name].kernel.shape[:-2])

    def in_channels(self, name):
        return int(self.layers[name].kernel.shape[-2])

    def agop(self, x_train):
        """AGOP of every convolution, on the first 256 training samples.

        Dense layers are left out: their input is a whole flattened feature
        map (16,384 values for the small CNN on digits32), whose AGOP would
        not fit in memory; the AGOP arms give them their NFM, which for the
        output layer is its AGOP exactly (f = W^T x, so J^T J = W W^T).
        """
        if self._agop is None:
            self._agop = {
                name: agop_matrix(self.model, layer, x_train[:256])
                for name, layer in self.layers.items()
                if isinstance(layer, keras.layers.Conv2D)
            }
        return self._agop


def load_or_train_source(settings, data, out, compile_and_fit):
    """The source for `settings`: loaded from `out/sources/<id>.keras` or trained."""
    identity = settings_id(settings)
    folder = os.path.join(out, "sources")
    path = os.path.join(folder, identity + ".keras")
    if os.path.exists(path):
        return Source(keras.models.load_model(path), identity)
    (x_train, _), _, classes = data
    keras.utils.set_random_seed(settings["seed"])
    model = networks.build(
        settings["network"],
        x_train.shape[1:],
        classes,
        layer_factory("uncorrelated", settings["seed"], Context()),
        batch_norm=settings["batch_norm"] == "on",
        width=settings["width"],
    )
    # Trained on the training split only; the test split stays unseen.
    history = compile_and_fit(model, settings, data, validation=False)
    os.makedirs(folder, exist_ok=True)
    model.save(path)
    source = Source(model, identity)
    summary = {"settings": {k: str(v) for k, v in settings.items()}, "train_accuracy": history["accuracy"][-1]}
    if spatial_kernels(model, kernel_size=3):
        matrix = source.estimate.matrix
        summary["mean_offdiagonal_correlation"] = float(matrix[~np.eye(len(matrix), dtype=bool)].mean())
    with open(os.path.join(folder, identity + ".json"), "w") as f:
        json.dump(summary, f)
    return source
