"""The benchmark arms: each name as an arm of `keras_corrinit.experiments.compare`.

* Uncorrelated baselines: `he` (CorrelatedHeNormal with R = I:
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
* Scale controls `<arm>~var` and `<arm>~sum` (see `compare`): uncorrelated
  weights with the per-weight (`~var`) or filter-sum (`~sum`) variance that
  `<arm>` gives each kernel. The informative ones are `correlated~var`,
  `correlated_learned~var`, `correlated_layerwise~var` and
  `correlated_weight~sum`.
* The NFM poster: `nfm_kaiming`, `agop_kaiming` (Sigma = the source layer's
  NFM or AGOP, scaled to mean variance 2 / fan_in) and the unscaled `nfm`,
  `agop`. AGOPs are of the convolutions; Dense layers get their NFM.
* `enhanced_gamma` (`--gamma-base`, `--gamma-granularity`).
* Attention (Trockman and Kolter 2023): `mimetic` (the He-built network,
  its self-attention layers then mimetic: the control of `he`); the
  ablations of `initialize`, each with one default changed:
  `initialize_keep_attention` (`attention="keep"`),
  `initialize_no_whitening` (`whiten=0`), `initialize_rest_keep`
  (`rest="keep"`), `initialize_rest_he` (`rest="he"`),
  `initialize_residual_keep` (`residual="keep"`, the default since 0.3.2),
  `initialize_residual_zero_gamma` (`residual="zero_gamma"`, 0.3.1's),
  `initialize_head_keep` (`head="keep"`, the default since 0.3.1),
  `initialize_head_zero` (`head="zero"`, 0.3.0's),
  `initialize_normalized_keep` and `initialize_normalized_lsuv`
  (`normalized="keep"`, `"lsuv"`: 0.3.0's rule for kernels in front of a
  normalization);
  `initialize_scale` (`initialize`, then every
  kernel's filters redrawn in random directions with the norms it chose:
  its scale without its structure, the scale control of `initialize`).
* `experiments.compare`'s own: `default` (the network as written: Keras's
  `glorot_uniform` kernels), `initialize` (the network as written, then
  `keras_corrinit.initialize` on the training data), `lsuv` (orthonormal,
  then LSUV on one training batch).
* Depthwise filters (ConvMixer; Trockman et al. 2023), every other kernel
  He-normal: `depthwise_default` (Keras's `glorot_uniform`, as built),
  `depthwise_he`, `covariance_closed_form`, `covariance_learned`, and the
  controls `covariance_closed_form~var`, `covariance_learned~var`
  (independent weights with the per-position variances of the arm's
  covariance).

Arms that need the built network (layer-wise, NFM/AGOP, LSUV's relatives,
depthwise) are picklable callables that load the source network from its
file, so they run in any executor's workers.
"""

import dataclasses
import functools
import hashlib
import json
import os

import keras
import numpy as np

from keras_corrinit.correlation import SpatialCorrelation
from keras_corrinit.experiments._arms import split_control as split_control
from keras_corrinit.experiments._arms import split_recalibrate
from keras_corrinit.experiments._registry import suite_only
from keras_corrinit.experiments._suite import networks
from keras_corrinit.experiments._suite.options import DEPTHWISE
from keras_corrinit.extraction import (
    agop_matrix,
    correlation_from_model,
    depthwise_covariance_from_model,
    spatial_kernels,
)
from keras_corrinit.initializers import CorrelatedHeNormal, EnhancedGamma, NFMInit, ScaleControl
from keras_corrinit.layerwise import apply_initializers, depthwise_layerwise_initializers, layer_seeds
from keras_corrinit.monitor import GradientSignMonitor

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
GAMMA_BASES = {"he_normal": "he", "he_uniform": "he_uniform"}  # EnhancedGamma base -> its arm


def gamma_base(name, ctx):
    """The initializer of EnhancedGamma's base `name`: its arm's (He is compare's built-in "he", R = I)."""
    arm = GAMMA_BASES[name]
    return CorrelatedHeNormal(IDENTITY) if arm == "he" else PLAIN[arm](ctx)


# The registry's arms whose initializer takes the suite's settings (alpha, R, the source network, Gamma's base);
# every other registry arm `compare` resolves by name.
PLAIN = {
    "correlated": lambda ctx: CorrelatedHeNormal(ctx.correlation, alpha=ctx.alpha),
    "correlated_weight": lambda ctx: CorrelatedHeNormal(ctx.correlation, alpha=ctx.alpha, variance_mode="weight"),
    "correlated_learned": lambda ctx: CorrelatedHeNormal(ctx.source.estimate, alpha=ctx.alpha),
    "enhanced_gamma": lambda ctx: EnhancedGamma(ctx.gamma_base, ctx.gamma_granularity),
    # Keras's own, by name (EnhancedGamma's bases)
    "he_uniform": lambda ctx: keras.initializers.HeUniform(),
}


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
    source_path: str = None
    gamma_base: str = "he_normal"
    gamma_granularity: str = "filter"


def arm_label(name, alpha, alphas):
    """The arm's name in a table: with its alpha when several are compared."""
    if len(alphas) < 2 or not uses_alpha(name):
        return name
    arm, match = split_control(name)
    return f"{arm} alpha={alpha}" + (f"~{match}" if match else "")


def comparison_arms(name, ctx):
    """`compare`'s spec of one arm: an initializer or a callable made with the suite's settings, or None (the
    registry's arm of that name, or a listed arm's control)."""
    arm, match = split_control(split_recalibrate(name)[0])
    if arm in PLAIN and arm != "he_uniform":
        return None if match else PLAIN[arm](ctx)
    if suite_only(arm):
        return PostBuild(arm, match, ctx.alpha, ctx.source_path)
    return None


# ------------------------------------------------------ post-build arms
class _DiagonalOf(keras.initializers.Initializer):
    """Independent normal weights with the per-position variances of `reference`'s covariance."""

    def __init__(self, reference, seed=None):
        self.reference, self.seed = reference, seed

    def __call__(self, shape, dtype=None):
        variances = np.diag(self.reference.covariance_matrix(tuple(shape[:-2])))
        stddev = keras.ops.reshape(keras.ops.sqrt(variances), tuple(shape[:-2]) + (1, 1))
        return keras.ops.cast(stddev, dtype or "float32") * keras.random.normal(
            tuple(shape), dtype=dtype, seed=self.seed
        )


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


@dataclasses.dataclass(frozen=True)
class PostBuild:
    """An arm that sets the built network's kernels: `callable(model, train, seed)`, picklable."""

    arm: str
    match: str = None
    alpha: float = 1.0
    source_path: str = None

    def __call__(self, model, train, seed):
        source = load_source(self.source_path) if self.source_path else None
        if self.arm in DEPTHWISE:
            self._depthwise(model, seed, source)
            return
        if self.arm == "correlated_layerwise":
            initializers = source.estimate.layerwise_initializers(
                model, mapping=_conv_mapping(model, source.model), seed=seed, alpha=self.alpha
            )
        else:
            scaling = "kaiming" if self.arm.endswith("_kaiming") else "none"
            mapping = _all_mapping(model, source.model)
            seeds = dict(zip(mapping, layer_seeds(seed, len(mapping))))
            agop = source.agop(train[0]) if self.arm.startswith("agop") else {}
            initializers = {}
            for target, src in mapping.items():
                if src in agop:
                    initializers[target] = NFMInit.from_covariance(
                        agop[src], source.spatial_shape(src), source.in_channels(src), scaling, seed=seeds[target]
                    )
                else:
                    initializers[target] = NFMInit.from_kernel(source.layers[src], scaling=scaling, seed=seeds[target])
        if self.match:
            initializers = {k: ScaleControl(v, self.match, v.seed) for k, v in initializers.items()}
        apply_initializers(model, initializers)

    def _depthwise(self, model, seed, source):
        if self.arm == "depthwise_default":
            return  # as built: Keras's glorot_uniform under the run's global seed
        covariance = source.depthwise if self.arm == "covariance_learned" else None
        initializers = depthwise_layerwise_initializers(model, covariance, seed=seed)
        seeds = layer_seeds(seed, len(initializers))  # the ones depthwise_layerwise_initializers gave the layers
        if self.arm == "depthwise_he":
            initializers = {key: keras.initializers.HeNormal(seed=s) for key, s in zip(initializers, seeds)}
        if self.match:
            initializers = {key: _DiagonalOf(init, seed=s) for (key, init), s in zip(initializers.items(), seeds)}
        apply_initializers(model, initializers)


# ------------------------------------------------------------- sources
def source_settings(cell, args):
    """Identity of the source network a learned arm's cell uses."""
    return dict(
        backend=keras.backend.backend(),
        dataset=cell["dataset"],
        max_train=args.max_train,
        network=args.source_network or cell["network"],
        width=cell["width"],
        batch_norm=cell["batch_norm"],
        init="he",
        optimizer="sgd",
        lr=args.source_lr,
        momentum=0.9,
        l2=0.0,
        batch_size=args.batch_size,
        epochs=args.source_epochs,
        seed=10_007,
    )


def settings_id(settings):
    text = json.dumps({k: str(v) for k, v in settings.items()}, sort_keys=True)
    return hashlib.sha256(text.encode()).hexdigest()[:12]


class Source:
    """A source network trained on the training split, cached in the results folder."""

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


@functools.cache
def load_source(path):
    """The source network saved at `path` (loaded once per process)."""
    return Source(keras.models.load_model(path), os.path.splitext(os.path.basename(path))[0])


def train_source(settings, data, out):
    """The file of the source for `settings`: `out/sources/<id>.keras`, trained if missing."""
    identity = settings_id(settings)
    folder = os.path.join(out, "sources")
    path = os.path.join(folder, identity + ".keras")
    if os.path.exists(path):
        return path
    (x_train, y_train), _, classes = data
    keras.backend.clear_session()
    keras.utils.set_random_seed(settings["seed"])
    seeds = iter(layer_seeds(settings["seed"], 4096))
    model = networks.build(
        settings["network"],
        x_train.shape[1:],
        classes,
        lambda: CorrelatedHeNormal(IDENTITY, seed=next(seeds)),
        batch_norm=settings["batch_norm"] == "on",
        width=settings["width"],
    )
    model.compile(
        keras.optimizers.SGD(settings["lr"], momentum=settings["momentum"]),
        keras.losses.SparseCategoricalCrossentropy(from_logits=True),
        metrics=["accuracy"],
    )
    # Trained on the training split only; the test split stays unseen.
    history = model.fit(
        x_train,
        y_train,
        batch_size=settings["batch_size"],
        epochs=settings["epochs"],
        callbacks=[GradientSignMonitor()],  # as every run of the comparison (it changes no number)
        verbose=0,
    ).history
    os.makedirs(folder, exist_ok=True)
    model.save(path)
    source = Source(model, identity)
    summary = {"settings": {k: str(v) for k, v in settings.items()}, "train_accuracy": history["accuracy"][-1]}
    if spatial_kernels(model, kernel_size=3):
        matrix = source.estimate.matrix
        summary["mean_offdiagonal_correlation"] = float(matrix[~np.eye(len(matrix), dtype=bool)].mean())
    with open(os.path.join(folder, identity + ".json"), "w") as f:
        json.dump(summary, f)
    return path
