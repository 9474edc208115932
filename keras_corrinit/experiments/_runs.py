"""One run of `compare` as a picklable task (build, initialize, train, measure) and their execution.

A task returns its row; any `concurrent.futures.Executor` runs them, and only the caller writes the store.
"""

import concurrent.futures
import dataclasses
import hashlib
import math
import time

import keras
import numpy as np

from keras_corrinit._core import validation as check
from keras_corrinit._core.data import take_batches
from keras_corrinit.experiments._identity import is_arrays, split_data
from keras_corrinit.monitor._callback import GradientSignMonitor
from keras_corrinit.normalization._callback import RecalibrateNormalization

# The learning-rate schedules of a run: the compiled rate throughout, or decaying linearly to zero at the budget.
CONSTANT, LINEAR_DECAY = "constant", "linear-to-zero"
# `<arm>+recalibrate`'s runs recompute batch normalization's statistics on this many training samples.
RECALIBRATION_SAMPLES = 1024


@dataclasses.dataclass
class Task:
    """One run, everything it needs, picklable."""

    build_model: object
    data: object
    arm: object
    row: dict


class EpochTimes(keras.callbacks.Callback):
    def on_train_begin(self, logs=None):
        self.start, self.times = time.perf_counter(), []

    def on_epoch_end(self, epoch, logs=None):
        self.times.append(round(time.perf_counter() - self.start, 3))


def fit_run(model, train, test, row, callbacks):
    arrays = is_arrays(train)
    return model.fit(
        *(train if arrays else (train,)),
        batch_size=row["batch_size"] if arrays else None,
        shuffle=arrays,  # a dataset is shuffled (or not) by its maker
        epochs=row["epochs"],
        validation_data=tuple(test) if is_arrays(test) else test,
        callbacks=callbacks,
        verbose=0,
    ).history


def run_task(task):
    """Trains one run and returns its row (called in a worker or in-process)."""
    row = dict(task.row)
    train, test = split_data(task.data)
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
    start_weights = _weights_digest(model)
    if row["schedule"] == LINEAR_DECAY:
        decay_to_zero(model, steps_per_epoch(train, row["batch_size"]) * row["epochs"])
    times = EpochTimes()
    callbacks = [times] + ([GradientSignMonitor()] if row["monitor"] else [])
    if task.arm.recalibrate:
        callbacks.append(RecalibrateNormalization(train, samples=RECALIBRATION_SAMPLES, batch_size=row["batch_size"]))
    history = fit_run(model, train, test, row, callbacks)
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
        train={
            key: [float(v) for v in values] for key, values in history.items() if not key.startswith(("val_", "grad_"))
        },
        start=start_weights,
        epoch_seconds=times.times,
        seconds=round(time.perf_counter() - start, 3),
    )
    return row


def _weights_digest(model):
    """A digest of every weight a run starts training from (to tell arms that start alike)."""
    digest = hashlib.sha256()
    for weight in model.weights:
        digest.update(np.ascontiguousarray(keras.ops.convert_to_numpy(weight)).tobytes())
    return digest.hexdigest()[:16]


def steps_per_epoch(train, batch_size):
    if is_arrays(train):
        return math.ceil(len(train[0]) / batch_size)
    try:
        return len(train)  # a PyDataset, or a tf.data.Dataset of known cardinality
    except TypeError:
        raise ValueError(
            "`budgets` decay the learning rate to zero at the last training step, so they need the number of "
            "steps per epoch: pass array data, a keras.utils.PyDataset or a tf.data.Dataset of known length."
        ) from None


def decay_to_zero(model, steps):
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


def budget_list(budgets):
    values = budgets if isinstance(budgets, (list, tuple, range)) else None
    if values is None:
        raise TypeError(f"`budgets` must be a list of epoch counts, e.g. [1, 2, 4, 8]; received {budgets!r}.")
    values = [check.integer(b, "budgets", minimum=1) for b in values]
    if len(values) < 1 or len(set(values)) != len(values):
        raise ValueError(f"`budgets` must hold distinct epoch counts >= 1, at least one; received {list(budgets)}.")
    return sorted(values)


@dataclasses.dataclass
class Failed:
    """A run that raised: its task and the error (named by `name_failure`)."""

    task: Task
    error: Exception


def execute(tasks, executor):
    """Yields each task's row as it finishes, or a `Failed` for a run that raised; the other runs go on."""
    if executor is None:
        for task in tasks:
            try:
                yield run_task(task)
            except Exception as error:
                yield Failed(task, name_failure(task, error))
        return
    futures = {executor.submit(run_task, task): task for task in tasks}
    try:
        for future in concurrent.futures.as_completed(futures):
            if future.cancelled():
                continue
            if future.exception() is None:
                yield future.result()
            else:
                yield Failed(futures[future], name_failure(futures[future], future.exception()))
    finally:
        for future in futures:
            future.cancel()  # on an interruption: those not started


def name_failure(task, error):
    """`error`, with a note naming the run (Python 3.11+)."""
    note = f"(in the run of arm {task.row['arm']!r}, seed {task.row['seed']})"
    if hasattr(error, "add_note") and note not in getattr(error, "__notes__", ()):
        error.add_note(note)
    return error
