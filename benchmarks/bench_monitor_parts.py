"""Where GradientSignMonitor's time goes: its update alone, against a training step.

    KERAS_BACKEND=tensorflow python benchmarks/bench_monitor_parts.py
    python benchmarks/bench_monitor_parts.py --all-backends

On `bench_monitor.py`'s residual CNN (batch 64, 32x32x3), in one process:

* `train step`: one compiled training step without the monitor (median
  epoch time over steps, the first epoch, which compiles, left out);
* `monitored step`: the same with `GradientSignMonitor()` (its own fit:
  the monitor re-makes the train function at the start of every `fit`, a
  one-off compilation that is not part of the step);
* `update alone`: `GradientSignTracker.stateless_update` on the model's
  gradient shapes, compiled by the backend as the monitor's step compiles
  it (`tf.function(jit_compile=True)`, `jax.jit`, eager PyTorch), i.e. the
  formula's own cost without the optimizer wrapper and its state writes.

The difference `monitored - train - update alone` is what the wrapper adds
around the formula (state reads and writes, casts, the extra variables).
Last, the per-fit cost: a one-epoch `fit` with a new GradientSignMonitor
(a new wrapper: the train function traced and compiled again) against one
with the monitor of the previous fits (on TensorFlow it keeps its compiled
step), interleaved; the difference is the retrace a monitor saves per fit.
"""

import statistics
import time

import _harness
from bench_monitor import compiled_model


def _compiled_update(keras, tracker):
    backend = keras.backend.backend()
    if backend == "tensorflow":
        import tensorflow as tf

        return tf.function(tracker.stateless_update, jit_compile=True)
    if backend == "jax":
        import jax

        return jax.jit(tracker.stateless_update)
    return tracker.stateless_update


def run(args):
    rounds, steps = args.repeats, args.steps
    import keras
    import numpy as np

    from keras_corrinit import GradientSignMonitor, GradientSignTracker

    rng = np.random.default_rng(0)
    x = rng.normal(size=(64 * steps, 32, 32, 3)).astype("float32")
    y = rng.integers(0, 10, size=64 * steps)

    class EpochTimer(keras.callbacks.Callback):
        def on_epoch_begin(self, epoch, logs=None):
            self.start = time.perf_counter()

        def on_epoch_end(self, epoch, logs=None):
            self.times.append((time.perf_counter() - self.start) / steps)

    def step_times(callbacks):
        model = compiled_model(keras)
        timer = EpochTimer()
        timer.times = []
        model.fit(x, y, batch_size=64, epochs=rounds + 1, verbose=0, callbacks=callbacks + [timer])
        return timer.times[1:]

    train_times = step_times([])
    model = compiled_model(keras)
    tracker = GradientSignTracker(model.trainable_variables)
    update = _compiled_update(keras, tracker)
    grads = [keras.ops.convert_to_tensor(rng.normal(size=v.shape).astype("float32")) for v in model.trainable_variables]
    state = update(tracker.initial_state(), grads)

    def update_time():
        nonlocal state
        start = time.perf_counter()
        for _ in range(steps):
            state = update(state, grads)
        keras.ops.convert_to_numpy(state["sign_steps"])
        return (time.perf_counter() - start) / steps

    times = {"train step": train_times, "monitored step": step_times([GradientSignMonitor()])}
    times["update alone"] = [update_time() for _ in range(rounds)]
    median = {name: statistics.median(t) for name, t in times.items()}
    base = median["train step"]
    size = sum(int(np.prod(v.shape)) for v in model.trainable_variables)
    print(f"parameters {size}, variables {len(model.trainable_variables)}")
    median["wrapper"] = median["monitored step"] - base - median["update alone"]
    rows = [[name, f"{seconds * 1e3:.2f}", f"{seconds / base:.3f}"] for name, seconds in median.items()]
    kept = GradientSignMonitor()
    model = compiled_model(keras)
    fits = {
        "fit, the monitor of the previous fits": lambda: model.fit(x, y, batch_size=64, verbose=0, callbacks=[kept]),
        "fit, a new monitor": lambda: model.fit(x, y, batch_size=64, verbose=0, callbacks=[GradientSignMonitor()]),
    }
    fit_seconds = _harness.time_interleaved(fits, rounds)
    retrace = fit_seconds["fit, a new monitor"] - fit_seconds["fit, the monitor of the previous fits"]
    rows.append(
        ["retrace per fit, saved by keeping the compiled step", f"{retrace * 1e3:.2f}", f"{retrace / base:.3f}"]
    )
    return ["part", "median ms", "of a training step"], rows


def add_arguments(parser):
    parser.add_argument("--steps", type=int, default=20, help="steps per epoch (default 20)")


if __name__ == "__main__":
    _harness.main(run, __doc__, add_arguments, repeats=5)
