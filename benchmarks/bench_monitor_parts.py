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
"""

import statistics
import time

import bench_monitor
from bench_monitor import _resnet_like


def _compiled_update(keras, tracker):
    backend = keras.backend.backend()
    if backend == "tensorflow":
        import tensorflow as tf

        return tf.function(tracker.stateless_update, jit_compile=True)
    if backend == "jax":
        import jax

        return jax.jit(tracker.stateless_update)
    return tracker.stateless_update


def run(rounds, steps):
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
        keras.utils.set_random_seed(0)
        model = _resnet_like(keras)
        model.compile(keras.optimizers.SGD(0.01, momentum=0.8), keras.losses.SparseCategoricalCrossentropy(True))
        timer = EpochTimer()
        timer.times = []
        model.fit(x, y, batch_size=64, epochs=rounds + 1, verbose=0, callbacks=callbacks + [timer])
        return timer.times[1:]

    train_times = step_times([])
    model = _resnet_like(keras)
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
    print(f"backend={keras.backend.backend()} parameters={size} variables={len(model.trainable_variables)}")
    for name, seconds in median.items():
        print(f"  {name:<16} {seconds * 1e3:7.2f} ms   {seconds / base:5.3f} of a training step")
    wrapper = median["monitored step"] - base - median["update alone"]
    print(f"  {'wrapper':<16} {wrapper * 1e3:7.2f} ms   {wrapper / base:5.3f} of a training step")


if __name__ == "__main__":
    bench_monitor.main(__file__, run, default_rounds=5)
