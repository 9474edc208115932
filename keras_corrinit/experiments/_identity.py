"""What identifies a run's inputs by content: the data's fingerprint, the builder's models, the settings.

Every part of a run's key that is not a plain setting is described here; what has no stable
description is refused with the fix.
"""

import dataclasses
import functools
import hashlib
import inspect
import json

import keras
import numpy as np

from keras_corrinit._core.layers import walk_layers


class UnidentifiableError(TypeError):
    """A callable whose identity (what its results depend on) cannot be written down."""


def _stable(value):
    """`value` as JSON-able data that is the same in every process, or raise `UnidentifiableError`."""
    try:
        return json.loads(json.dumps(value, sort_keys=True))
    except (TypeError, ValueError):
        pass
    if hasattr(value, "get_config"):
        return {type(value).__qualname__: _stable(value.get_config())}
    if dataclasses.is_dataclass(value) and not isinstance(value, type):
        return {type(value).__qualname__: _stable(dataclasses.asdict(value))}
    if isinstance(value, (list, tuple)):
        return [_stable(v) for v in value]
    if isinstance(value, dict):
        return {str(k): _stable(v) for k, v in value.items()}
    if callable(value):
        return callable_name(value)
    if isinstance(value, np.ndarray):
        return f"array {value.shape} {value.dtype} sha256:{hashlib.sha256(value.tobytes()).hexdigest()[:16]}"
    raise UnidentifiableError(type(value).__name__)


def _code_digest(function):
    """A digest of a function's code, constants, defaults and closure: two lambdas at one place differ by them."""
    code = function.__code__
    cells = [cell.cell_contents for cell in function.__closure__ or ()]
    content = [code.co_code.hex(), repr(code.co_consts), _stable(function.__defaults__ or ()), _stable(cells)]
    return hashlib.sha256(json.dumps(content, sort_keys=True).encode()).hexdigest()[:12]


def callable_name(fn):
    """`module.qualname` of a function or a callable object's class, with what its behaviour depends on.

    A callable object's settings (its `get_config()`, or a dataclass's
    fields) are part of its name, a `functools.partial`'s arguments too, and
    a plain function's (a lambda's, a closure's) code, defaults and closure
    are part of it as a digest; so two arms or builders that differ in any
    of them never share a results-store key. Raises `UnidentifiableError`
    when one of those is an object with no stable description.
    """
    if isinstance(fn, functools.partial):
        arguments = {"args": _stable(list(fn.args)), "keywords": _stable(fn.keywords)}
        return f"partial({callable_name(fn.func)}){json.dumps(arguments, sort_keys=True)}"
    named = fn if hasattr(fn, "__qualname__") else type(fn)
    name = f"{getattr(named, '__module__', '?')}.{named.__qualname__}"
    if named is fn:
        return f"{name}#{_code_digest(fn)}" if hasattr(fn, "__code__") else name
    if hasattr(fn, "get_config"):
        config = fn.get_config()
    elif dataclasses.is_dataclass(fn):
        config = dataclasses.asdict(fn)
    else:
        return name
    return f"{name}{json.dumps(config, sort_keys=True, default=repr)}"


def split_data(data):
    """`(train, test)` from the `data` argument (a factory is called)."""
    if callable(data) and not isinstance(data, keras.utils.PyDataset):
        data = data()
    if not isinstance(data, (tuple, list)) or len(data) != 2:
        raise ValueError(
            "`data` must be `(train, test)` (each `(x, y)` arrays, a tf.data.Dataset or a "
            "keras.utils.PyDataset), or a function of no arguments returning it."
        )
    if all(hasattr(part, "shape") for part in data):
        raise ValueError(
            "`data` is one pair of arrays (x, y); compare trains on one split and tests on another: pass "
            "((x_train, y_train), (x_test, y_test))."
        )
    return data


def is_arrays(part):
    return isinstance(part, (tuple, list)) and len(part) == 2 and all(hasattr(a, "shape") for a in part)


def fingerprint(data):
    """What identifies the data in a run's key: a hash of arrays, else a description."""
    prefix = ""
    if callable(data) and not isinstance(data, keras.utils.PyDataset):
        # A factory is called here once: the arrays it returns are what identifies it.
        try:
            prefix = f"factory {callable_name(data)}: "
        except UnidentifiableError:
            prefix = f"factory {getattr(data, '__qualname__', type(data).__qualname__)}: "
    digest = hashlib.sha256()
    for part in split_data(data):
        if not is_arrays(part):
            return f"{prefix}{type(part).__name__} (not hashed: name it in `settings`)"
        for array in part:
            array = np.ascontiguousarray(keras.ops.convert_to_numpy(array))
            digest.update(f"{array.shape}{array.dtype}".encode())
            digest.update(array.tobytes())
    return prefix + "arrays sha256:" + digest.hexdigest()[:16]


def normalized(value, names):
    """A config with layer names replaced by their position; names (Keras numbers them per session:
    `sgd_1`, `conv2d_7`) and initializers (the arm's part) left out."""
    if isinstance(value, dict):
        return {k: normalized(v, names) for k, v in value.items() if not k.endswith("initializer") and k != "name"}
    if isinstance(value, (list, tuple)):
        return [normalized(v, names) for v in value]
    return names.get(value, value) if isinstance(value, str) else value


def model_digest(model):
    """What a built model is: its normalized config, every layer's, its weights' shapes and its compile config."""
    layers = list(walk_layers(model))
    names = {name: f"layer{i}" for i, name in enumerate(dict.fromkeys([model.name] + [x.name for x in layers]))}

    def config_of(obj):
        try:
            return obj.get_config()
        except Exception:  # a custom layer without a config: its class and weights say what they can
            return None

    content = {
        "model": [type(model).__qualname__, config_of(model)],
        "layers": [[type(x).__qualname__, config_of(x)] for x in layers],
        "weights": [list(w.shape) for w in model.weights],
        "compile": model.get_compile_config() if model.compiled else None,
    }
    text = json.dumps(normalized(content, names), sort_keys=True, default=repr)
    return hashlib.sha256(text.encode()).hexdigest()[:16]


def check_builder(build_model):
    """`build_model` must be callable with `(kernel_initializer, seed)`: refused before any training."""
    if not callable(build_model):
        raise TypeError(f"`build_model` must be callable(kernel_initializer, seed); received {type(build_model)}.")
    try:
        signature = inspect.signature(build_model)
    except (TypeError, ValueError):  # a builtin or C callable: no signature to read
        return
    try:
        signature.bind(None, 0)
    except TypeError:
        raise TypeError(
            f"`build_model` must take (kernel_initializer, seed); its signature is {signature}. Each arm hands "
            "the builder its initializer: pass it to the layers it should initialize (a builder that ignores it "
            "trains every initializer arm as written)."
        ) from None


def builder_identity(build_model, baseline, seeds, settings):
    """The builder's name (with its settings, arguments or code) and `{seed: content of the model it builds}`.

    A run's key holds its own seed's model only: listing more seeds reuses the finished runs.
    """
    try:
        name = callable_name(build_model)
    except UnidentifiableError as error:
        if settings is None:
            raise TypeError(
                f"`build_model` cannot be identified for the results store: it holds a {error} with no stable "
                "description (in its arguments or closure). Pass `settings=` naming what it builds, or make it a "
                "module-level function or a dataclass."
            ) from None
        name = f"{getattr(build_model, '__qualname__', type(build_model).__qualname__)} (named by `settings`)"
    digests, ranks = {}, None
    for seed in seeds:
        keras.utils.set_random_seed(seed)
        model = build_model(baseline.make_initializer(seed), seed)
        if not isinstance(model, keras.Model):
            raise TypeError(f"`build_model` must return a keras.Model; it returned {type(model).__name__}.")
        digests[seed] = model_digest(model)
        if ranks is None:
            try:
                ranks = [len(t.shape) for t in model.inputs]
            except (AttributeError, ValueError):  # a subclassed model: no declared inputs
                ranks = []
    keras.backend.clear_session()
    return name, digests, ranks


def check_batched(data, ranks):
    """Training data of other forms than arrays must hold batches: one batch is read and its rank checked."""
    if not ranks or (callable(data) and not isinstance(data, keras.utils.PyDataset)):
        return
    train = split_data(data)[0]
    if is_arrays(train):
        return
    from keras_corrinit._core.data import take_batches

    batch = take_batches(train, 1)
    if not batch:
        raise ValueError("`data`'s training part holds no batch.")
    received = [a.ndim for a in keras.tree.flatten(batch[0])]
    if len(received) == len(ranks) and all(r == e - 1 for r, e in zip(received, ranks)):
        raise ValueError(
            f"`data`'s training part gives single samples (rank {received[0]}; the model takes rank {ranks[0]}, "
            "a batch axis first): batch it, e.g. dataset.batch(32) for a tf.data.Dataset."
        )


def written_default(build_model):
    """The default of `build_model`'s first parameter (its kernel initializer) as an initializer, or None."""
    try:
        parameters = list(inspect.signature(build_model).parameters.values())
    except (TypeError, ValueError):  # a builtin or C callable: no signature to read
        return None
    if not parameters or parameters[0].default in (inspect.Parameter.empty, None):
        return None
    default = parameters[0].default
    try:
        return keras.initializers.get(default)
    except (ValueError, TypeError):
        raise ValueError(
            f"`build_model`'s first parameter defaults to {default!r}, which is not a Keras initializer; the "
            "'default' arm passes that default to the builder. Give it an initializer (or name) as default, or none."
        ) from None


def settings_identity(settings):
    if settings is None:
        return {}
    if not isinstance(settings, dict):
        raise TypeError(f"`settings` must be a dict of JSON values; received {type(settings).__name__}.")
    try:
        return json.loads(json.dumps(settings, sort_keys=True))
    except (TypeError, ValueError):
        raise TypeError("`settings` must hold JSON values only (numbers, strings, lists, dicts).") from None
