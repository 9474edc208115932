"""The arms of a comparison: how each one initializes a user's model.

An arm gives the user's `build_model` one Keras initializer (to pass to the
layers it should initialize) and may then change the built model with the
training data (LSUV does). Named arms come from one table, the registry
(`experiments/_registry.py`: how the model starts, what runs after it is
built, whether that reads data); this module turns an entry into a run.
Among them: `default` (the model as its builder writes it: Keras's
`glorot_uniform`, or the default of `build_model`'s `kernel_initializer`
parameter), `initialize` (the model as written, then
`keras_corrinit.initialize` with its defaults) and its ablations
(`initialize_<choice>`), `anyinit` (AnyInit's empirical mode, a peer
library, on 256 training samples), `he` (untruncated He-normal, Algorithm
1's own baseline), Keras's initializers by name (`he_normal`...),
`correlated`, `correlated_weight`, `enhanced_gamma`, `lsuv` (orthogonal,
then LSUV on one batch), `mimetic`. `register_arm(name, ArmSpec(...))` adds
one.

Scale controls: a correlated arm changes both the correlation and the scale
of the weights. `<arm>~var` draws independent He-normal weights with the
per-weight variance the arm gives each kernel, `<arm>~sum` with its
filter-sum variance; a filter-mode arm's informative control is `~var`, a
weight-mode arm's `~sum` (the other one is the He baseline itself). If an
arm beats the baseline but not its control, its gain is the scale.

Every arm travels to a worker as data (a Keras config, a name, or a
picklable callable), so a run can execute in another process or machine.
"""

import dataclasses
import importlib.metadata
import importlib.util
import itertools
import weakref

import keras
import numpy as np

from keras_corrinit._core.apply import layer_seeds
from keras_corrinit._core.data import take_batches
from keras_corrinit._core.layers import kernel_slots, walk_layers
from keras_corrinit.correlation._spatial import SpatialCorrelation
from keras_corrinit.experiments._identity import UnidentifiableError, callable_name
from keras_corrinit.experiments._registry import ARMS, canonical, suite_only
from keras_corrinit.initializers._controls import MATCHES as CONTROL_MATCHES
from keras_corrinit.initializers._controls import ScaleControl
from keras_corrinit.initializers._correlated import CorrelatedHeNormal
from keras_corrinit.initializers._gamma import EnhancedGamma
from keras_corrinit.layerwise._initialize import initialize, mimetic_attention
from keras_corrinit.layerwise._lsuv import lsuv_initialize

__all__ = [
    "BUILTIN_ARMS",
    "RECALIBRATE",
    "Arm",
    "resolve_arms",
    "split_recalibrate",
]

_IDENTITY = SpatialCorrelation.identity()
# How a registry arm's model starts (`ArmSpec.start`); any other start is a Keras initializer's name.
_STARTS = {
    "as_written": lambda: keras.initializers.GlorotUniform(),
    "he": lambda: CorrelatedHeNormal(_IDENTITY),
    "correlated": lambda: CorrelatedHeNormal(),
    "correlated_weight": lambda: CorrelatedHeNormal(variance_mode="weight"),
    "enhanced_gamma": lambda: EnhancedGamma(),
}
# The registry's arms that `compare` runs by name (the suite's own need the command's context).
BUILTIN_ARMS = tuple(sorted(name for name in ARMS if not suite_only(name)))
ANYINIT_SAMPLES = 256


def _start_initializer(start, as_written):
    if start == "as_written" and as_written is not None:
        return as_written
    if start in _STARTS:
        return _STARTS[start]()
    return keras.initializers.get(start)


def random_directions(model, seed):
    """Every kernel's output filters redrawn in random directions with their norms kept (zeros stay zero).

    `initialize`'s scale control: the filter norms `initialize` chose (after
    LSUV), none of its structure (whitening, identities).
    """
    rng = np.random.default_rng(seed)
    for layer in walk_layers(model):
        for slot in kernel_slots(layer):
            variable = getattr(layer, slot.attribute)
            kernel = keras.ops.convert_to_numpy(variable)
            filters = kernel.reshape(-1, kernel.shape[-1])
            directions = rng.standard_normal(filters.shape)
            directions /= np.linalg.norm(directions, axis=0, keepdims=True)
            redrawn = directions * np.linalg.norm(filters, axis=0, keepdims=True)
            variable.assign(redrawn.reshape(kernel.shape).astype(kernel.dtype))


@dataclasses.dataclass(frozen=True)
class Then:
    """What runs on a registry arm's built model (`ArmSpec.then` with its options); picklable."""

    then: str
    options: tuple = ()

    def __call__(self, model, train, seed):
        options = dict(self.options)
        if self.then == "initialize":
            initialize(model, train, seed=seed, verbose=0, **options)
        elif self.then == "initialize_scale":
            initialize(model, train, seed=seed, verbose=0, **options)
            random_directions(model, seed)
        elif self.then == "lsuv":
            lsuv_initialize(model, train, seed=seed, verbose=0)
        elif self.then == "mimetic":
            mimetic_attention(model, seed=seed)
        elif self.then == "anyinit":
            import anyinit

            anyinit.initialize(model, "empirical", take_batches(train, 1, ANYINIT_SAMPLES)[0], seed=seed)
        else:
            raise ValueError(f"No step {self.then!r}.")


def _check_available(name):
    if ARMS[name].then == "anyinit" and importlib.util.find_spec("anyinit") is None:
        raise ImportError(
            f"The {name!r} arm runs AnyInit (a peer library), which is not installed: "
            'pip install "keras_corrinit[anyinit]".'
        )


@dataclasses.dataclass(frozen=True)
class Arm:
    """One arm as data: what `build_model` gets and what runs after it.

    `initializer` is a serialized Keras initializer (None: the baseline's
    He), `prepare` a picklable `callable(model, train, seed)` or None,
    `control` `"var"`/`"sum"` for a scale control of `initializer` and
    `base` the name of the arm it controls, `recalibrate` whether its runs
    recompute batch normalization's statistics before each evaluation
    (`<arm>+recalibrate`), and `identity` a JSON-able description that
    changes whenever the arm does.
    """

    name: str
    initializer: dict = None
    prepare: object = None
    control: str = None
    base: str = None
    identity: str = ""
    recalibrate: bool = False

    def make_initializer(self, seed):
        """The initializer `build_model` gets: each call (each layer) draws with its own seed."""
        return _LayerSeeded(self, seed)

    def seeded(self):
        """`seed -> the arm's initializer with that int seed`; the arm's config is read once."""
        config = self.initializer or keras.saving.serialize_keras_object(_STARTS["he"]())
        reference = keras.saving.deserialize_keras_object(config)
        if self.control:  # a control's reference keeps its own seed
            return lambda seed: ScaleControl(reference, self.control, seed)
        settings = reference.get_config()
        if "seed" not in settings:
            return lambda seed: reference
        return lambda seed: type(reference).from_config({**settings, "seed": seed})


# More layers than any network here has; layer_seeds derives them all at once.
_MAX_LAYERS = 4096
_TOKENS = itertools.count()
_LIVE = weakref.WeakValueDictionary()  # token -> the live _LayerSeeded of a run


class _LayerSeeded(keras.initializers.Initializer):
    """An arm's initializer that gives each call its own int seed.

    The k-th call (the k-th layer built) draws with the k-th of
    `layer_seeds(seed, ...)`, as the layer-wise helpers seed layers: the
    same seed rebuilds the same model, and same-shaped layers never share
    a draw although they share this one object.
    """

    def __init__(self, arm, seed):
        self.seeded, self.seeds = arm.seeded(), iter(layer_seeds(seed, _MAX_LAYERS))
        self.token = next(_TOKENS)
        _LIVE[self.token] = self

    def __call__(self, shape, dtype=None):
        return self.seeded(next(self.seeds))(shape, dtype=dtype)

    def get_config(self):
        return {"run_initializer": self.token}

    @classmethod
    def from_config(cls, config):
        # Layers that clone their initializer (MultiHeadAttention, per kernel) get this same object back,
        # so each of their kernels still draws the run's next layer seed (a fresh copy would repeat them).
        live = _LIVE.get(config.get("run_initializer"))
        if live is None:
            raise ValueError(
                "This initializer is the per-run wrapper `experiments.compare` gives `build_model`; it exists only "
                "during its run. Rebuild the model with an initializer of its own."
            )
        return live


def _initializer_arm(name, initializer):
    config = keras.saving.serialize_keras_object(initializer)
    return Arm(name, initializer=config, identity=repr(config))


def _started_arm(name, spec, as_written):
    """`(start, callable)`: the model built with `start` ("default": as written), then the callable."""
    start, prepare = spec
    if not callable(prepare) or isinstance(prepare, keras.initializers.Initializer):
        raise TypeError(
            f"Arm {name!r}: in a pair (start, callable) the second item must be a callable(model, train, seed); "
            f"received {type(prepare).__name__}."
        )
    if isinstance(start, str) and start == "default":
        start = _start_initializer("as_written", as_written)
    first = _user_arm(name, start, as_written)
    if first.initializer is None:
        raise TypeError(
            f"Arm {name!r}: in a pair (start, callable) the first item must be 'default' (the model as written), a "
            f"Keras initializer or its name; received {type(start).__name__}."
        )
    then = _user_arm(name, prepare, as_written)
    return Arm(name, initializer=first.initializer, prepare=prepare, identity=f"{first.identity} then {then.identity}")


def _user_arm(name, spec, as_written=None):
    if isinstance(spec, tuple) and len(spec) == 2:
        return _started_arm(name, spec, as_written)
    if isinstance(spec, str):
        try:
            spec = keras.initializers.get(spec)
        except ValueError:
            raise ValueError(
                f"Arm {name!r}: {spec!r} is not a Keras initializer name; pass an initializer, "
                "a name such as 'he_normal', or a callable(model, train, seed)."
            ) from None
    if isinstance(spec, keras.initializers.Initializer):
        return _initializer_arm(name, spec)
    if callable(spec):
        try:
            identity = callable_name(spec)
        except UnidentifiableError as error:
            raise TypeError(
                f"Arm {name!r} cannot be identified for the results store: it holds a {error} with no stable "
                "description (in its arguments or closure). Make it a module-level function or a dataclass "
                "whose fields say what it does."
            ) from None
        return Arm(name, prepare=spec, identity=identity)
    raise TypeError(
        f"Arm {name!r} must be a Keras initializer, an initializer name or a callable(model, train, seed); "
        f"received {type(spec).__name__}."
    )


# `<arm>+recalibrate`: the arm, its runs evaluated with batch normalization's statistics recomputed on training
# data before each evaluation (`RecalibrateNormalization`, PreciseBN).
RECALIBRATE = "+recalibrate"


def split_recalibrate(name):
    """`"default+recalibrate"` -> `("default", True)`; any other name -> `(name, False)`."""
    if isinstance(name, str) and name.endswith(RECALIBRATE) and len(name) > len(RECALIBRATE):
        return name[: -len(RECALIBRATE)], True
    return name, False


def split_control(name):
    """`"correlated~var"` -> `("correlated", "var")`; any other name -> `(name, None)`. The one place the
    `<arm>~var|sum` naming of scale controls is read; after it, `Arm.control` and `Arm.base` hold it."""
    base, _, match = name.rpartition("~")
    return (base, match) if base and match in CONTROL_MATCHES else (name, None)


def _control_of(arm, match=None):
    """The scale control of an arm whose initializer is a CorrelatedHeNormal (None if it has none).

    Without `match`, the informative one: `~var` for a filter-mode arm,
    `~sum` for a weight-mode one; none for R = I (the arm is its own control).
    """
    if arm.initializer is None or arm.control:
        return None
    reference = keras.saving.deserialize_keras_object(arm.initializer)
    if not isinstance(reference, CorrelatedHeNormal):
        return None
    if match is None:
        try:
            if abs(float(reference.correlation_matrix((3, 3)).sum()) - 9.0) < 1e-9:
                return None
        except ValueError:
            pass  # an R for another kernel size: not the identity
        match = "var" if reference.variance_mode == "filter" else "sum"
    return dataclasses.replace(
        arm, name=f"{arm.name}~{match}", control=match, base=arm.name, identity=f"{arm.identity}~{match}"
    )


def _resolve(name, spec, resolved, as_written):
    """One arm from a name and its spec (None: built-in, or an explicit control `<arm>~var|sum`)."""
    if spec is not None:
        return _user_arm(name, spec, as_written)
    name = canonical(name)
    if name in ARMS and suite_only(name):
        raise ValueError(
            f"Arm {name!r} needs the command's context (a trained source network or a depthwise covariance): "
            f"run it with `keras-corrinit compare --init {name}`, or pass it as a callable."
        )
    if name in ARMS:
        _check_available(name)
        spec = ARMS[name]
        arm = _initializer_arm(name, _start_initializer(spec.start, as_written))
        if spec.then is None:
            return arm
        then = Then(spec.then, spec.options)
        identity = f"{arm.identity} then {spec.then}{dict(spec.options) if spec.options else ''}"
        if spec.then == "anyinit":  # a peer's results depend on its version, which this package's does not fix
            identity += f" anyinit {importlib.metadata.version('anyinit')}"
        return dataclasses.replace(arm, prepare=then, identity=identity)
    base, match = split_control(name)
    if match and base in resolved:
        control = _control_of(resolved[base], match)
        if control is None:
            raise ValueError(f"Arm {name!r}: a scale control needs {base!r} to be a CorrelatedHeNormal arm.")
        return control
    raise ValueError(
        f"Unknown arm {name!r}; the registered arms are {list(BUILTIN_ARMS)} (add one with "
        "keras_corrinit.experiments.register_arm), and `<arm>~var` or `<arm>~sum` names the scale control of an "
        "arm listed before it."
    )


def resolve_arms(arms, baseline, controls, as_written=None):
    """`[Arm]` for `compare`: the baseline first, each arm then its scale control.

    `as_written`: the initializer the builder gives its layers when not
    told otherwise (None: Keras's `glorot_uniform`), for `default` and
    `initialize`.
    """
    if isinstance(arms, str) or not isinstance(arms, (list, tuple, dict)):
        raise TypeError(
            "`arms` must be a list of built-in arm names (e.g. ['he', 'correlated']) or a dict "
            f"{{name: initializer or callable(model, train, seed)}}; received {type(arms).__name__}."
        )
    items = list(arms.items()) if isinstance(arms, dict) else [(name, None) for name in arms]
    names = [name for name, _ in items]
    for name in names:
        if not isinstance(name, str) or not name:
            raise ValueError(f"Arm names must be non-empty strings; received {name!r}.")
    if len(set(names)) != len(names):
        raise ValueError(f"Arm names must be unique; received {names}.")
    if baseline not in names:
        if canonical(split_recalibrate(baseline)[0], say=False) not in ARMS:
            raise ValueError(f"`baseline` {baseline!r} is neither one of the arms {names} nor a built-in arm.")
        items.insert(0, (baseline, None))
    resolved = {}
    for name, spec in items:
        base, recalibrate = split_recalibrate(name)
        arm = _resolve(base, spec, resolved, as_written)
        if recalibrate:
            arm = dataclasses.replace(arm, name=name, recalibrate=True, identity=f"{arm.identity} {RECALIBRATE}")
        resolved[name] = arm
    ordered = sorted(resolved.values(), key=lambda arm: arm.name != baseline)
    if not controls:
        return ordered
    with_controls = []
    for arm in ordered:
        with_controls.append(arm)
        control = _control_of(arm) if arm.name != baseline else None
        if control is not None and control.name not in resolved:
            with_controls.append(control)
    return with_controls
