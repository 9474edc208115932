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
import time
import warnings

import keras
import numpy as np

from keras_corrinit._core import validation as check
from keras_corrinit._version import __version__
from keras_corrinit.experiments._arms import resolve_arms, split_recalibrate
from keras_corrinit.experiments._comparison import Comparison
from keras_corrinit.experiments._identity import (
    builder_identity,
    check_batched,
    check_builder,
    fingerprint,
    is_arrays,
    settings_identity,
    split_data,
    written_default,
)
from keras_corrinit.experiments._runs import CONSTANT, LINEAR_DECAY, Failed, Task, budget_list, execute
from keras_corrinit.experiments._store import WAIT_SECONDS, Store, claim_state, describe_claim, heartbeats, run_key

__all__ = ["compare"]


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
    for name, part in zip(("train", "test"), split_data(data)):
        if is_arrays(part):
            x = np.asarray(keras.ops.convert_to_numpy(part[0]))
            if x.dtype.kind in "fc" and not np.all(np.isfinite(x)):
                raise ValueError(f"`data`'s {name} inputs contain NaN or Inf; pass finite inputs.")


def _report_failures(failed, baseline):
    """The arms left out because a run of theirs raised (each said in a warning); the baseline's error is raised."""
    by_arm = {}
    for failure in failed.values():
        by_arm.setdefault(failure.task.row["arm"], failure)
    if baseline in by_arm:
        raise by_arm[baseline].error
    for arm, failure in by_arm.items():
        error = failure.error
        warnings.warn(
            f"Arm {arm!r} failed (seed {failure.task.row['seed']}: {type(error).__name__}: "
            f"{check.clipped(error, 300)}); it is left out, and the other arms are compared without it. Its "
            "finished runs are stored: fix it and run again to train only what is missing.",
            stacklevel=3,
        )
    return set(by_arm)


def _warn_identical_starts(rows):
    """Arms whose runs started from the same weights as another arm's on every seed: a builder that ignores
    the initializer it is handed (published models take none) makes such arms the model as written."""
    starts = {}
    for row in rows:
        if row.get("start"):
            starts.setdefault(row["arm"], {})[(row["seed"], row["epochs"])] = row["start"]
    arms = list(starts)
    for i, arm in enumerate(arms):
        for other in arms[:i]:
            # `<arm>+recalibrate` is the same start evaluated another way: identical by design
            if split_recalibrate(arm)[0] == split_recalibrate(other)[0]:
                continue
            if starts[arm] == starts[other]:
                warnings.warn(
                    f"Arms {other!r} and {arm!r} started from identical weights on every seed: does `build_model` "
                    "pass its `kernel_initializer` to the layers? (A builder that ignores it trains every "
                    "initializer arm as written.) Or what tells the two arms apart does not apply to this model "
                    "(a residual rule on a network without residual blocks).",
                    stacklevel=3,
                )
                break


def _chance(data, metric):
    """The accuracy of always predicting the test split's most frequent class (None where it cannot be known)."""
    if metric != "accuracy":
        return None
    test = split_data(data)[1]
    if not is_arrays(test):
        return None
    labels = np.asarray(keras.ops.convert_to_numpy(test[1]))
    if labels.ndim > 1 and labels.shape[-1] > 1:
        labels = labels.argmax(-1)  # one-hot
    _, counts = np.unique(labels.reshape(len(labels), -1)[:, 0], return_counts=True)
    return float(counts.max() / counts.sum())


def _warn_at_chance(result, data, metric):
    """A baseline that ends at chance leaves nothing to compare with: said, with what to try."""
    chance = _chance(data, metric)
    if chance is None:
        return
    final = float(np.mean(list(result.final(result.baseline).values())))
    if final <= chance + 0.02:
        warnings.warn(
            f"The baseline {result.baseline!r} ends at accuracy {final:.3f}, chance level on this test "
            f"data ({chance:.3f}): the runs are too short (or the learning rate is off) for a comparison to mean "
            "much. Train longer; with batch normalization, add '<arm>+recalibrate' arms (moving statistics that "
            "lag the weights make a network test at chance although it trains).",
            stacklevel=3,
        )


def _wait(seconds):
    """Waits while other processes train the runs they claimed."""
    time.sleep(seconds)


def _record(row, store, finished, bar):
    """A finished run's row, recorded (and appended to the store) as it comes."""
    finished[row["key"]] = row
    if store:
        store.append(row)
        store.release(row["key"])
    if bar:
        bar.add(1)


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
            initializer name, callable(model, train, seed) or pair
            (start, callable)}`: a callable gets the model built with
            He-normal and changes it in place; a pair builds it with
            `start` (`"default"`: the model as written, as `"initialize"`
            does; or an initializer or its name), then calls the callable;
            in a dict, None is the built-in arm of that name, and
            `"<arm>~var": None` or `"<arm>~sum": None` the scale control of
            a `CorrelatedHeNormal` arm listed before it. Named arms come
            from the registry (`BUILTIN_ARMS`; `register_arm` adds one):
            `"default"` (the model as written: the default of
            `build_model`'s first parameter if it has one, else Keras's
            `glorot_uniform`), `"initialize"` (the model as written, then
            `keras_corrinit.initialize` on the training data) and its
            ablations `"initialize_<choice>"`, `"anyinit"`, `"he"`
            (untruncated He-normal), Keras's initializers by name
            (`"he_normal"`...), `"correlated"`, `"correlated_weight"`,
            `"enhanced_gamma"`, `"lsuv"` (orthogonal, then
            `lsuv_initialize`), `"mimetic"`. `"<arm>+recalibrate"` is the
            arm evaluated with batch normalization's statistics recomputed
            before each evaluation.
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
    check_builder(build_model)
    if isinstance(arms, (list, tuple, dict)) and not arms:
        raise ValueError("`arms` is empty: name at least one arm to compare with the baseline, e.g. ['lsuv'].")
    resolved = resolve_arms(arms, baseline, controls, as_written=written_default(build_model))
    seeds = _seed_list(seeds)
    _check_finite(data)
    common = {
        "backend": keras.backend.backend(),
        "keras_version": keras.__version__,
        "package_version": __version__,
        "data": fingerprint(data),
        "batch_size": check.integer(batch_size, "batch_size", minimum=1),
        "metric": _metric(metric),
        "monitor": check.boolean(monitor, "monitor"),
        "settings": settings_identity(settings),
    }
    if budgets is not None and epochs is not None:
        raise ValueError(
            "Pass `epochs` (runs at the compiled learning rate) or `budgets` (each run decays it to zero at its "
            "budget), not both: with `budgets`, each run trains for its budget's epochs."
        )
    lengths = (
        [(check.integer(10 if epochs is None else epochs, "epochs", minimum=1), CONSTANT)]
        if budgets is None
        else [(budget, LINEAR_DECAY) for budget in budget_list(budgets)]
    )
    if executor is not None and not isinstance(executor, concurrent.futures.Executor):
        raise TypeError(f"`executor` must be a concurrent.futures.Executor or None; received {type(executor)}.")
    builder_name, models, input_ranks = builder_identity(build_model, resolved[0], seeds, settings)
    check_batched(data, input_ranks)
    tasks = []
    for arm in resolved:
        for seed in seeds:
            for length, schedule in lengths:
                row = {**common, "builder": f"{builder_name} model:{models[seed]}"}
                row.update(arm=arm.name, arm_identity=arm.identity, seed=seed)
                row.update(epochs=length, schedule=schedule)
                row["key"] = run_key(row)
                tasks.append(Task(build_model, data, arm, row))
    store = Store(out, __version__) if out is not None else None
    finished = store.read() if store else {}
    todo = [task for task in tasks if task.row["key"] not in finished]
    bar = keras.utils.Progbar(len(tasks), unit_name="run") if verbose else None
    if bar and len(tasks) > len(todo):
        bar.add(len(tasks) - len(todo))
    if store:
        store.prepare()
    announced, failed = False, {}
    while todo:
        # Another process writing to the same `out` claims its runs; this one
        # trains the runs nobody has claimed and waits for the others' rows.
        mine = [task for task in todo if store is None or store.claim(task.row["key"])]
        try:
            with heartbeats(store, [task.row["key"] for task in mine]):
                for row in execute(mine, executor):
                    if isinstance(row, Failed):
                        failed[row.task.row["key"]] = row
                    else:
                        _record(row, store, finished, bar)
        finally:
            if store:
                for task in mine:
                    store.release(task.row["key"])
        todo = [task for task in todo if task.row["key"] not in finished and task.row["key"] not in failed]
        if todo and not announced:
            announced = True
            waiting = [t for t in todo if claim_state(store.claim_path(t.row["key"]), store.lease_seconds) == "held"]
            if waiting:
                warnings.warn(
                    f"Waiting for {len(waiting)} run(s) that another process is training into {store.out}: "
                    f"{describe_claim(store.claim_path(waiting[0].row['key']))}. A claim whose heartbeat is older "
                    f"than {store.lease_seconds:g} s is taken over.",
                    stacklevel=2,
                )
        if todo:
            _wait(WAIT_SECONDS)
            others = store.read()
            for task in todo:
                if task.row["key"] in others:
                    finished[task.row["key"]] = others[task.row["key"]]
                    if bar:
                        bar.add(1)
            todo = [task for task in todo if task.row["key"] not in finished]
    left_out = _report_failures(failed, baseline)
    rows = [finished[task.row["key"]] for task in tasks if task.row["arm"] not in left_out]
    _warn_identical_starts(rows)
    result = Comparison(
        rows=rows,
        baseline=baseline,
        metric=metric,
        budgets=None if budgets is None else [length for length, _ in lengths],
        controls={arm.base: arm.name for arm in resolved if arm.control},
    )
    _warn_at_chance(result, data, metric)
    return result
