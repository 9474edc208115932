"""`compare`: does an initialization help on the user's model and data?

Every (arm, seed) pair is one run: build the user's model with the arm's
initializer, train it, record the per-epoch test metric (and the gradient
sign changes). A run is an independent, picklable task that returns its
row, so any `concurrent.futures.Executor` can spread a grid: a process pool
on one machine, a Dask cluster's executor, Ray or `mpi4py.futures` across
machines. Only the caller writes results: no two workers share a file.

A results store (`out`) makes a comparison resumable. A run's key is a hash
of every setting that changes its result (backend, Keras and package
versions, the builder, the data's fingerprint, the arm, the seed, epochs,
batch size, metric and the user's `settings`); a store written by another
package version or with other columns is refused, never mixed.

Identity by content: the builder is named by its name plus its settings,
a `functools.partial`'s arguments or a function's code and closure, and by
a digest of the models it builds for the seeds (every layer's config with
names normalized and initializers left out, the weights' shapes, the
compile configuration: optimizer, loss, metrics); array data by a hash of
the arrays (a data factory is called once to hash what it returns); an arm
by its initializer's config or its callable's name and content. What has no
stable description is refused, with the fix.
"""

import concurrent.futures
import contextlib
import dataclasses
import hashlib
import inspect
import json
import math
import os
import socket
import time
import warnings

import keras
import numpy as np

from keras_corrinit._core import validation as check
from keras_corrinit._core.data import take_batches
from keras_corrinit._core.layers import walk_layers
from keras_corrinit._version import __version__
from keras_corrinit.experiments._arms import UnidentifiableError, callable_name, resolve_arms
from keras_corrinit.experiments._comparison import Comparison
from keras_corrinit.monitor._callback import GradientSignMonitor

__all__ = ["compare"]

STORE_FORMAT = 2  # 2: the `schedule` column (the budget protocol)
# A run's learning rate: the compiled optimizer's as it is, or decaying linearly to zero at the run's end.
CONSTANT, LINEAR_DECAY = "constant", "linear-to-zero"
# A row's columns; the settings (every one part of the key) come first.
SETTING_COLUMNS = (
    "backend",
    "keras_version",
    "package_version",
    "builder",
    "data",
    "arm",
    "arm_identity",
    "seed",
    "epochs",
    "schedule",
    "batch_size",
    "metric",
    "monitor",
    "settings",
)
OUTCOME_COLUMNS = ("key", "final", "curve", "sign_change", "epoch_seconds", "seconds")
COLUMNS = SETTING_COLUMNS + OUTCOME_COLUMNS


# ------------------------------------------------------------------- data
def _split(data):
    """`(train, test)` from the `data` argument (a factory is called)."""
    if callable(data) and not isinstance(data, keras.utils.PyDataset):
        data = data()
    if not isinstance(data, (tuple, list)) or len(data) != 2:
        raise ValueError(
            "`data` must be `(train, test)` (each `(x, y)` arrays, a tf.data.Dataset or a "
            "keras.utils.PyDataset), or a function of no arguments returning it."
        )
    return data


def _is_arrays(part):
    return isinstance(part, (tuple, list)) and len(part) == 2 and all(hasattr(a, "shape") for a in part)


def _fingerprint(data):
    """What identifies the data in a run's key: a hash of arrays, else a description."""
    prefix = ""
    if callable(data) and not isinstance(data, keras.utils.PyDataset):
        # A factory is called here once: the arrays it returns are what identifies it.
        try:
            prefix = f"factory {callable_name(data)}: "
        except UnidentifiableError:
            prefix = f"factory {getattr(data, '__qualname__', type(data).__qualname__)}: "
    digest = hashlib.sha256()
    for part in _split(data):
        if not _is_arrays(part):
            return f"{prefix}{type(part).__name__} (not hashed: name it in `settings`)"
        for array in part:
            array = np.ascontiguousarray(keras.ops.convert_to_numpy(array))
            digest.update(f"{array.shape}{array.dtype}".encode())
            digest.update(array.tobytes())
    return prefix + "arrays sha256:" + digest.hexdigest()[:16]


# ------------------------------------------------------------------- runs
@dataclasses.dataclass
class _Task:
    """One run, everything it needs, picklable."""

    build_model: object
    data: object
    arm: object
    row: dict


class _EpochTimes(keras.callbacks.Callback):
    def on_train_begin(self, logs=None):
        self.start, self.times = time.perf_counter(), []

    def on_epoch_end(self, epoch, logs=None):
        self.times.append(round(time.perf_counter() - self.start, 3))


def _fit(model, train, test, row, callbacks):
    arrays = _is_arrays(train)
    return model.fit(
        *(train if arrays else (train,)),
        batch_size=row["batch_size"] if arrays else None,
        shuffle=arrays,  # a dataset is shuffled (or not) by its maker
        epochs=row["epochs"],
        validation_data=tuple(test) if _is_arrays(test) else test,
        callbacks=callbacks,
        verbose=0,
    ).history


def run_task(task):
    """Trains one run and returns its row (called in a worker or in-process)."""
    row = dict(task.row)
    train, test = _split(task.data)
    keras.backend.clear_session()  # earlier runs' models would pile up in memory
    keras.utils.set_random_seed(row["seed"])
    start = time.perf_counter()
    model = task.build_model(task.arm.make_initializer(row["seed"]), row["seed"])
    if not isinstance(model, keras.Model):
        raise TypeError(f"`build_model` must return a keras.Model; it returned {type(model).__name__}.")
    if not model.compiled:
        raise ValueError(
            "`build_model` must return a compiled model (its optimizer, loss and "
            f"metrics=[{row['metric']!r}] are part of what is compared)."
        )
    if not model.built:
        # A subclassed model makes its weights at its first call; the
        # monitor (and an arm's prepare step) needs them before `fit`.
        model(take_batches(train, 1, row["batch_size"])[0], training=False)
    if task.arm.prepare is not None:
        task.arm.prepare(model, train, row["seed"])
    if row["schedule"] == LINEAR_DECAY:
        _decay_to_zero(model, _steps_per_epoch(train, row["batch_size"]) * row["epochs"])
    times = _EpochTimes()
    history = _fit(model, train, test, row, [times] + ([GradientSignMonitor()] if row["monitor"] else []))
    curve_key = f"val_{row['metric']}"
    if curve_key not in history:
        raise ValueError(
            f"The model logs no {curve_key!r} (it logs {sorted(history)}): compile it with "
            f"metrics=[{row['metric']!r}] or pass the `metric` it has."
        )
    row.update(
        curve=[float(v) for v in history[curve_key]],
        final=float(history[curve_key][-1]),
        sign_change=[float(v) for v in history.get("grad_sign_change", [])],
        epoch_seconds=times.times,
        seconds=round(time.perf_counter() - start, 3),
    )
    return row


def _steps_per_epoch(train, batch_size):
    if _is_arrays(train):
        return math.ceil(len(train[0]) / batch_size)
    try:
        return len(train)  # a PyDataset, or a tf.data.Dataset of known cardinality
    except TypeError:
        raise ValueError(
            "`budgets` decay the learning rate to zero at the last training step, so they need the number of "
            "steps per epoch: pass array data, a keras.utils.PyDataset or a tf.data.Dataset of known length."
        ) from None


def _decay_to_zero(model, steps):
    """The budget protocol's schedule: the compiled learning rate, decaying linearly to 0 over `steps`."""
    optimizer = model.optimizer
    peak = optimizer.get_config().get("learning_rate")
    if not isinstance(peak, (int, float)):
        raise ValueError(
            "`budgets` replace the optimizer's learning rate by one decaying from it to zero at each budget's "
            f"end, so the compiled optimizer ({type(optimizer).__name__}) needs a constant float learning rate; "
            f"its learning_rate is {peak!r}. Compile with a float rate (the schedule's peak)."
        )
    optimizer.learning_rate = keras.optimizers.schedules.PolynomialDecay(
        float(peak), decay_steps=steps, end_learning_rate=0.0, power=1.0
    )


def _budget_list(budgets):
    values = budgets if isinstance(budgets, (list, tuple, range)) else None
    if values is None:
        raise TypeError(f"`budgets` must be a list of epoch counts, e.g. [1, 2, 4, 8]; received {budgets!r}.")
    values = [check.integer(b, "budgets", minimum=1) for b in values]
    if len(values) < 1 or len(set(values)) != len(values):
        raise ValueError(f"`budgets` must hold distinct epoch counts >= 1, at least one; received {list(budgets)}.")
    return sorted(values)


def _key(row):
    text = json.dumps({name: row[name] for name in SETTING_COLUMNS}, sort_keys=True, default=str)
    return hashlib.sha256(text.encode()).hexdigest()[:16]


# ------------------------------------------------------------------ store
class _Store:
    """`out/store.json` (format, package version, columns) and `out/runs.jsonl` (one row per line)."""

    def __init__(self, out, version):
        self.out, self.version = os.fspath(out), version
        self.meta, self.runs = os.path.join(self.out, "store.json"), os.path.join(self.out, "runs.jsonl")

    def read(self):
        """`{key: row}` of the finished runs; refuses a store this version cannot read.

        A half-written last line (a writer stopped mid-row) is skipped with a
        warning, and cut off when the store is next written, so its run is
        redone; any other malformed line or metadata is a `ValueError` naming
        the file. A key stored twice counts once.
        """
        self.cut_at = None
        if not os.path.exists(self.meta):
            if os.path.exists(self.runs):
                raise ValueError(f"{self.runs} has no {self.meta}: not a store of this package; pass another `out`.")
            return {}
        meta = self._meta()
        if meta.get("package_version") != self.version or meta.get("format") != STORE_FORMAT:
            raise ValueError(
                f"The results store {self.out} was written by keras_corrinit {meta.get('package_version')} "
                f"(format {meta.get('format')}); this is {self.version} (format {STORE_FORMAT}). Results of "
                "different versions are never mixed: pass another `out`, or move that folder away."
            )
        missing = [c for c in COLUMNS if c not in meta.get("columns", [])]
        if missing:
            raise ValueError(
                f"The results store {self.out} lacks the columns {missing}, so its runs' settings cannot all "
                "be known; pass another `out`, or move that folder away."
            )
        return self._rows() if os.path.exists(self.runs) else {}

    def _meta(self):
        try:
            with open(self.meta) as f:
                meta = json.load(f)
        except (OSError, ValueError) as error:
            raise ValueError(
                f"{self.meta} is not a readable store description ({error}); pass another `out`."
            ) from None
        if not isinstance(meta, dict):
            raise ValueError(f"{self.meta} must hold a JSON object; it holds a {type(meta).__name__}.")
        return meta

    def _rows(self):
        rows, offset = {}, 0
        with open(self.runs, "rb") as f:
            lines = f.readlines()
        for number, raw in enumerate(lines, start=1):
            start, offset = offset, offset + len(raw)
            if not raw.strip():
                continue
            try:
                row = json.loads(raw)
            except ValueError:
                if number == len(lines):
                    warnings.warn(
                        f"{self.runs}: line {number} is half-written (a writer stopped mid-row); it is skipped and "
                        "its run will be redone.",
                        stacklevel=4,
                    )
                    self.cut_at = start
                    break
                raise ValueError(
                    f"{self.runs}: line {number} is not JSON; the store is damaged (move that folder away)."
                ) from None
            if not isinstance(row, dict) or not isinstance(row.get("key"), str):
                raise ValueError(f"{self.runs}: line {number} is not a run (a JSON object with a 'key').")
            rows.setdefault(row["key"], row)
        return rows

    def prepare(self):
        os.makedirs(self.out, exist_ok=True)
        if not os.path.exists(self.meta):
            with open(self.meta, "w") as f:
                json.dump({"format": STORE_FORMAT, "package_version": self.version, "columns": list(COLUMNS)}, f)
        if getattr(self, "cut_at", None) is not None:
            with open(self.runs, "r+b") as f:
                f.truncate(self.cut_at)  # the half-written line goes; its run is redone
            self.cut_at = None

    def _claim_path(self, key):
        return os.path.join(self.out, "claims", key)

    def claim(self, key):
        """Whether this process may train the run `key` (an exclusive claim file; a dead claimant's is taken over)."""
        os.makedirs(os.path.join(self.out, "claims"), exist_ok=True)
        path = self._claim_path(key)
        for _ in range(2):
            try:
                descriptor = os.open(path, os.O_CREAT | os.O_EXCL | os.O_WRONLY)
            except FileExistsError:
                if not _claimant_gone(path):
                    return False
                with contextlib.suppress(FileNotFoundError):
                    os.remove(path)  # its claimant died: the run is free again
                continue
            with os.fdopen(descriptor, "w") as f:
                f.write(f"{socket.gethostname()} {os.getpid()}")
            return True
        return False

    def release(self, key):
        with contextlib.suppress(FileNotFoundError):
            os.remove(self._claim_path(key))

    def append(self, row):
        with open(self.runs, "a") as f:
            f.write(json.dumps(row) + "\n")


# How often a process waits for runs another process on the same store claimed.
_WAIT_SECONDS = 1.0


def _claimant_gone(path):
    """Whether the process that wrote a claim file is gone (on this host; another host's claim is kept)."""
    try:
        with open(path) as f:
            host, pid = f.read().split()
        pid = int(pid)
    except (OSError, ValueError):
        return False  # being written, or not ours to judge
    if host != socket.gethostname():
        return False
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return True
    except PermissionError:
        return False
    return False


def read_runs(out):
    """`{key: row}` of a results store's runs, whatever version wrote it (for reading, never resuming)."""
    store = _Store(out, None)
    if not os.path.exists(store.runs):
        raise ValueError(f"{out} is not a results store: it has no runs.jsonl.")
    return store._rows()


# ---------------------------------------------------------------- compare
def _seed_list(seeds):
    if isinstance(seeds, (list, tuple, range)):
        values = [check.integer(s, "seeds") for s in seeds]
        if not values or len(set(values)) != len(values):
            raise ValueError(f"`seeds` must hold distinct ints, at least one; received {list(seeds)}.")
        return values
    return list(range(check.integer(seeds, "seeds", minimum=1)))


def _metric(metric):
    metric = check.text(metric, "metric")
    if metric.startswith("val_"):
        raise ValueError(
            f"`metric` names the compiled metric, which `compare` reads on the test data as val_<metric>: "
            f"pass metric={metric[4:]!r}, not {metric!r}."
        )
    return metric


def _check_finite(data):
    """NaN or Inf in array data is refused before any training."""
    if callable(data) and not isinstance(data, keras.utils.PyDataset):
        return
    for name, part in zip(("train", "test"), _split(data)):
        if _is_arrays(part):
            x = np.asarray(keras.ops.convert_to_numpy(part[0]))
            if x.dtype.kind in "fc" and not np.all(np.isfinite(x)):
                raise ValueError(f"`data`'s {name} inputs contain NaN or Inf; pass finite inputs.")


def _normalized(value, names):
    """A config with layer names replaced by their position; names (Keras numbers them per session:
    `sgd_1`, `conv2d_7`) and initializers (the arm's part) left out."""
    if isinstance(value, dict):
        return {k: _normalized(v, names) for k, v in value.items() if not k.endswith("initializer") and k != "name"}
    if isinstance(value, (list, tuple)):
        return [_normalized(v, names) for v in value]
    return names.get(value, value) if isinstance(value, str) else value


def _model_digest(model):
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
    text = json.dumps(_normalized(content, names), sort_keys=True, default=repr)
    return hashlib.sha256(text.encode()).hexdigest()[:16]


def _builder_identity(build_model, baseline, seeds, settings):
    """The builder's name (with its settings, arguments or code) and the content of the models it builds."""
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
    digests = []
    for seed in seeds:
        keras.utils.set_random_seed(seed)
        digests.append(_model_digest(build_model(baseline.make_initializer(seed), seed)))
    keras.backend.clear_session()
    return f"{name} models:{hashlib.sha256(''.join(digests).encode()).hexdigest()[:16]}"


def _written_default(build_model):
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


def _settings(settings):
    if settings is None:
        return {}
    if not isinstance(settings, dict):
        raise TypeError(f"`settings` must be a dict of JSON values; received {type(settings).__name__}.")
    try:
        return json.loads(json.dumps(settings, sort_keys=True))
    except (TypeError, ValueError):
        raise TypeError("`settings` must hold JSON values only (numbers, strings, lists, dicts).") from None


def compare(
    build_model,
    data,
    arms,
    *,
    seeds=5,
    epochs=None,
    budgets=None,
    baseline="default",
    controls=True,
    batch_size=32,
    metric="accuracy",
    settings=None,
    out=None,
    executor=None,
    monitor=True,
    verbose=1,
):
    """Trains the user's model under each arm and seed; paired statistics to a baseline.

    Each arm is trained once per seed; the seed fixes everything else
    (`keras.utils.set_random_seed` before building, the arm's draws), so
    two arms on the same seed differ only in their initialization and the
    differences are paired.

    Args:
        build_model: `build_model(kernel_initializer, seed)` returns a
            compiled `keras.Model` (Sequential, Functional or subclassed).
            Pass `kernel_initializer` to every layer the arm should
            initialize: each call (each layer built) draws with its own
            seed, derived from the run's seed as `layer_seeds` derives
            them. With an `executor`, it must be picklable (a module-level
            function or a picklable object).
        data: `(train, test)`, each `(x, y)` arrays, a `tf.data.Dataset`
            or a `keras.utils.PyDataset`; or a function of no arguments
            that returns it (what an executor's workers call, so that the
            data need not travel). Arrays are fingerprinted into each run's
            key; other data are not, so name them in `settings`.
        arms: Built-in arm names or a dict `{name: initializer,
            initializer name or callable(model, train, seed)}` (a callable
            gets the model built with He-normal and changes it in place);
            in a dict, None is the built-in arm of that name, and
            `"<arm>~var": None` or `"<arm>~sum": None` the scale control of
            a `CorrelatedHeNormal` arm listed before it. Built in:
            `"default"` (the model as written: the default of
            `build_model`'s first parameter if it has one, else Keras's
            `glorot_uniform`), `"initialize"` (the model as written, then
            `keras_corrinit.initialize` on the training data), `"he"`
            (untruncated He-normal), `"keras_he"`, `"correlated"`,
            `"correlated_weight"`, `"enhanced_gamma"`, `"lsuv"`
            (orthogonal, then `lsuv_initialize`).
        seeds: The number of seeds (0, 1, ...) or a list of ints. Default 5.
        epochs: Epochs per run, at the compiled optimizer's learning rate.
            Default 10 (without `budgets`).
        budgets: The budget protocol: a list of epoch counts such as
            `[1, 2, 4, 8]`. Each (arm, seed, budget) is a run that trains
            for `budget` epochs with the learning rate decaying linearly
            from the compiled optimizer's (a float) to zero at its last
            step (`keras.optimizers.schedules.PolynomialDecay`, power 1;
            the same for every arm), so every budget ends annealed, as
            a user with a schedule would train. The result's
            `budget_to_target` is then the smallest budget whose mean
            final metric reaches the baseline's at the largest budget.
            Not together with `epochs`. Default None.
        baseline: The arm the others are compared with (added if not in
            `arms`). Default `"default"`: the model as its builder writes it.
        controls: Add the scale control of every arm whose initializer is a
            `CorrelatedHeNormal` (see the guide). Default True.
        batch_size: Batch size for array data. Default 32.
        metric: The compiled metric compared, read as `val_<metric>` on the
            test data. Default `"accuracy"`.
        settings: A dict of JSON values that change results and that this
            function cannot see (the data set's name, a module-level
            constant...); part of every run's key. A callable object's own
            settings (`build_model`'s or an arm's `get_config()`, or a
            dataclass's fields) are in the key already, so adding a field
            to such a class re-runs its runs. Default None.
        out: A folder for the results store (resumable); None (default)
            keeps nothing.
        executor: A `concurrent.futures.Executor` the runs are submitted
            to; None (default) runs them here, one after the other.
        monitor: Record gradient sign changes with `GradientSignMonitor`.
            Default True.
        verbose: 1 (default) shows a progress bar over the runs; 0 is
            silent.

    Returns:
        A `Comparison`: the rows, paired differences, epochs to the
        baseline's final metric, verdicts, Markdown and plots.

    Examples:
        >>> def build(kernel_initializer, seed):
        ...     model = keras.Sequential([
        ...         keras.Input((8, 8, 1)),
        ...         keras.layers.Conv2D(4, 3, activation="relu", kernel_initializer=kernel_initializer),
        ...         keras.layers.GlobalAveragePooling2D(),
        ...         keras.layers.Dense(2, kernel_initializer=kernel_initializer),
        ...     ])
        ...     model.compile("sgd", keras.losses.SparseCategoricalCrossentropy(from_logits=True), metrics=["accuracy"])
        ...     return model
        >>> x, y = np.random.default_rng(0).normal(size=(32, 8, 8, 1)), np.arange(32) % 2
        >>> result = compare(build, ((x, y), (x, y)), ["correlated"], seeds=2, epochs=1, verbose=0)
        >>> sorted(result.arms())
        ['correlated', 'correlated~var', 'default']
    """
    if not callable(build_model):
        raise TypeError(f"`build_model` must be callable(kernel_initializer, seed); received {type(build_model)}.")
    if isinstance(arms, (list, tuple, dict)) and not arms:
        raise ValueError("`arms` is empty: name at least one arm to compare with the baseline, e.g. ['lsuv'].")
    resolved = resolve_arms(arms, baseline, controls, as_written=_written_default(build_model))
    seeds = _seed_list(seeds)
    _check_finite(data)
    common = {
        "backend": keras.backend.backend(),
        "keras_version": keras.__version__,
        "package_version": __version__,
        "data": _fingerprint(data),
        "batch_size": check.integer(batch_size, "batch_size", minimum=1),
        "metric": _metric(metric),
        "monitor": check.boolean(monitor, "monitor"),
        "settings": _settings(settings),
    }
    if budgets is not None and epochs is not None:
        raise ValueError(
            "Pass `epochs` (runs at the compiled learning rate) or `budgets` (each run decays it to zero at its "
            "budget), not both: with `budgets`, each run trains for its budget's epochs."
        )
    lengths = (
        [(check.integer(10 if epochs is None else epochs, "epochs", minimum=1), CONSTANT)]
        if budgets is None
        else [(budget, LINEAR_DECAY) for budget in _budget_list(budgets)]
    )
    if executor is not None and not isinstance(executor, concurrent.futures.Executor):
        raise TypeError(f"`executor` must be a concurrent.futures.Executor or None; received {type(executor)}.")
    common["builder"] = _builder_identity(build_model, resolved[0], seeds, settings)
    tasks = []
    for arm in resolved:
        for seed in seeds:
            for length, schedule in lengths:
                row = {**common, "arm": arm.name, "arm_identity": arm.identity, "seed": seed}
                row.update(epochs=length, schedule=schedule)
                row["key"] = _key(row)
                tasks.append(_Task(build_model, data, arm, row))
    store = _Store(out, __version__) if out is not None else None
    finished = store.read() if store else {}
    todo = [task for task in tasks if task.row["key"] not in finished]
    bar = keras.utils.Progbar(len(tasks), unit_name="run") if verbose else None
    if bar and len(tasks) > len(todo):
        bar.add(len(tasks) - len(todo))
    if store:
        store.prepare()
    while todo:
        # Another process writing to the same `out` claims its runs; this one
        # trains the runs nobody has claimed and waits for the others' rows.
        mine = [task for task in todo if store is None or store.claim(task.row["key"])]
        try:
            for row in _execute(mine, executor):
                finished[row["key"]] = row
                if store:
                    store.append(row)
                    store.release(row["key"])
                if bar:
                    bar.add(1)
        finally:
            if store:
                for task in mine:
                    store.release(task.row["key"])
        todo = [task for task in todo if task.row["key"] not in finished]
        if todo:
            time.sleep(_WAIT_SECONDS)
            others = store.read()
            for task in todo:
                if task.row["key"] in others:
                    finished[task.row["key"]] = others[task.row["key"]]
                    if bar:
                        bar.add(1)
            todo = [task for task in todo if task.row["key"] not in finished]
    return Comparison(
        rows=[finished[task.row["key"]] for task in tasks],
        baseline=baseline,
        metric=metric,
        budgets=None if budgets is None else [length for length, _ in lengths],
        controls={arm.base: arm.name for arm in resolved if arm.control},
    )


def _execute(tasks, executor):
    """Yields each task's row as it finishes.

    A failed run names itself and is raised after the runs already under way
    have finished and been yielded (so they are stored); runs not started
    are cancelled.
    """
    if executor is None:
        for task in tasks:
            yield _named_failure(task, lambda t=task: run_task(t))
        return
    futures = {executor.submit(run_task, task): task for task in tasks}
    failure = None
    try:
        for future in concurrent.futures.as_completed(futures):
            if future.cancelled():
                continue
            if future.exception() is None:
                yield future.result()
            elif failure is None:
                failure = future
                for other in futures:
                    other.cancel()  # those not started; those running finish and are kept
    finally:
        for future in futures:
            future.cancel()
    if failure is not None:
        _named_failure(futures[failure], failure.result)


def _named_failure(task, get):
    try:
        return get()
    except Exception as error:
        if hasattr(error, "add_note"):  # Python 3.11+: the same error, naming the run
            error.add_note(f"(in the run of arm {task.row['arm']!r}, seed {task.row['seed']})")
        raise
