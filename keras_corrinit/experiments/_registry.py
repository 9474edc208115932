"""The arm registry: every named arm of `compare`, the command line and the suite, one entry each.

Keras-free (plain data): the command's `--help` reads the names by this
file's path without importing Keras. An entry says how the model starts
and what runs after it is built; `experiments/_arms.py` turns it into a run.

* `start`: `"as_written"` (the builder's own initializer: Keras's
  `glorot_uniform` unless its `kernel_initializer` parameter has a default),
  `"he"` (untruncated He-normal: `CorrelatedHeNormal` with R = I, Algorithm
  1's own baseline), `"correlated"`, `"correlated_weight"`,
  `"enhanced_gamma"`, or the name of a Keras initializer (`"he_normal"`,
  `"orthogonal"`...).
* `then`: what runs on the built model: None, `"initialize"` (with
  `options`, `initialize`'s arguments), `"initialize_scale"` (`initialize`,
  then every filter redrawn in a random direction at its norm: the scale
  control of `initialize`), `"lsuv"`, `"anyinit"`, `"mimetic"` (mimetic
  attention alone), or `"suite"` (an arm that needs the command's context:
  a trained source network, a depthwise covariance; `keras-corrinit
  compare` only).
* `data`: whether `then` reads the training data.

Register an arm with `register(name, ArmSpec(...))`; it is then an arm of
`compare` by name (and of the command line when registered in this file).
"""

import dataclasses
import warnings

__all__ = ["ALIASES", "ARMS", "ArmSpec", "canonical", "register", "suite_only"]

STARTS = ("as_written", "he", "correlated", "correlated_weight", "enhanced_gamma")
THENS = (None, "initialize", "initialize_scale", "lsuv", "anyinit", "mimetic", "suite")


@dataclasses.dataclass(frozen=True)
class ArmSpec:
    """One arm: how the model starts, what runs after building it, whether that reads data, what it is."""

    start: str
    then: str = None
    options: tuple = ()
    data: bool = False
    note: str = ""

    def __post_init__(self):
        if self.then not in THENS:
            raise ValueError(f"`then` must be one of {list(THENS)}; received {self.then!r}.")
        if not isinstance(self.start, str) or not self.start:
            raise TypeError(f"`start` must be an initializer's name or one of {list(STARTS)}; received {self.start!r}.")
        if not isinstance(self.options, tuple) or not all(isinstance(o, tuple) and len(o) == 2 for o in self.options):
            raise TypeError(f"`options` must be a tuple of (name, value) pairs; received {self.options!r}.")


ARMS = {}
# Names of earlier versions, still read (stored results use them), each with a note naming today's.
ALIASES = {"uncorrelated": "he", "keras_he": "he_normal"}


def register(name, spec, replace=False):
    """Adds an arm by name (`ArmSpec`); an existing name needs `replace=True`. Returns the spec."""
    if not isinstance(name, str) or not name or any(c in name for c in "~+ "):
        raise ValueError(f"An arm's name must be a non-empty string without '~', '+' or spaces; received {name!r}.")
    if not isinstance(spec, ArmSpec):
        raise TypeError(f"An arm's spec must be an ArmSpec; received {type(spec).__name__}.")
    if (name in ARMS or name in ALIASES) and not replace:
        raise ValueError(f"Arm {name!r} is registered already; pass replace=True to replace it.")
    ARMS[name] = spec
    return spec


def canonical(name, say=True):
    """Today's name of an arm (an earlier version's name is replaced, with a note)."""
    if name in ALIASES:
        if say:
            warnings.warn(f"Arm {name!r} is now called {ALIASES[name]!r}.", UserWarning, stacklevel=3)
        return ALIASES[name]
    return name


def suite_only(name):
    """Whether an arm needs the command's context (`keras-corrinit compare` only)."""
    return name in ARMS and ARMS[name].then == "suite"


def _initialize_variant(note, **options):
    return ArmSpec("as_written", "initialize", tuple(sorted(options.items())), data=True, note=note)


for _name, _spec in {
    # the model as its builder writes it, and initializers
    "default": ArmSpec("as_written", note="the model as written"),
    "he": ArmSpec("he", note="untruncated He-normal (CorrelatedHeNormal with R = I)"),
    **{
        keras_name: ArmSpec(keras_name, note=f"Keras's {keras_name}")
        for keras_name in ("he_normal", "he_uniform", "random_normal", "random_uniform", "orthogonal", "glorot_normal")
    },
    "correlated": ArmSpec("correlated", note="Algorithm 1 (filter-sum variance kept)"),
    "correlated_weight": ArmSpec("correlated_weight", note="Algorithm 1 (per-weight variance kept)"),
    "enhanced_gamma": ArmSpec("enhanced_gamma", note="EnhancedGamma"),
    # data-aware and peers
    "initialize": ArmSpec("as_written", "initialize", data=True, note="keras_corrinit.initialize, its defaults"),
    "initialize_scale": ArmSpec(
        "as_written", "initialize_scale", data=True, note="initialize's filter norms in random directions"
    ),
    "lsuv": ArmSpec("orthogonal", "lsuv", data=True, note="orthogonal, then LSUV on one batch"),
    "anyinit": ArmSpec("as_written", "anyinit", data=True, note="AnyInit's empirical mode (a peer library)"),
    "mimetic": ArmSpec("he", "mimetic", note="He, then mimetic self-attention alone"),
    # initialize with one choice changed (its ablations)
    "initialize_keep_attention": _initialize_variant("attention kept", attention="keep"),
    "initialize_no_whitening": _initialize_variant("no whitening", whiten=0),
    "initialize_rest_keep": _initialize_variant("other kernels as built", rest="keep"),
    "initialize_rest_he": _initialize_variant("He-normal instead of identities", rest="he"),
    "initialize_residual_keep": _initialize_variant("residual branches kept", residual="keep"),
    "initialize_residual_zero_gamma": _initialize_variant("zero residual gammas", residual="zero_gamma"),
    "initialize_residual_scaled": _initialize_variant("residual branches scaled", residual="scaled"),
    "initialize_head_keep": _initialize_variant("head kept", head="keep"),
    "initialize_head_zero": _initialize_variant("zero head", head="zero"),
    "initialize_normalized_keep": _initialize_variant("kernels before a normalization kept", normalized="keep"),
    "initialize_normalized_lsuv": _initialize_variant(
        "kernels before a normalization at LSUV's scale", normalized="lsuv"
    ),
    "initialize_statistics_keep": _initialize_variant("0.3.2's passes and statistics", statistics="keep"),
    "initialize_freeze_whitened": _initialize_variant("whitened stem frozen", freeze_whitened=True),
    # the suite's, needing a trained source network or its depthwise context
    **{
        name: ArmSpec("he", "suite", data=True, note="the command's (needs its context)")
        for name in (
            "correlated_learned",
            "correlated_layerwise",
            "nfm",
            "nfm_kaiming",
            "agop",
            "agop_kaiming",
            "depthwise_default",
            "depthwise_he",
            "covariance_closed_form",
            "covariance_learned",
        )
    },
}.items():
    register(_name, _spec)
