"""Step time of `fit` with GradientSignMonitor, as a ratio to without it.

Usage:

    KERAS_BACKEND=jax python benchmarks/bench_monitor.py
    python benchmarks/bench_monitor.py --all-backends

A small ResNet-like CNN (three residual stages, 32x32x3 inputs, batch 64) is
trained on random data with SGD + momentum and the default jit_compile, in
one process, one model per configuration (no monitor; the monitor with
per-epoch values; per layer; per layer every 10 steps). The configurations
are interleaved: each round trains every model for one epoch, in an order
that alternates between rounds (A B C D, then D C B A), so that a drift of
the machine or of the backend over the process's life (TensorFlow's steps
get slower the more models a process has traced) falls on all of them
alike. Step times are read per batch; the first batches of every `fit`
(which trace and compile: the monitor re-makes the train function at the
start of each `fit`) are left out. Reported: the median step time and its
ratio to the median without the monitor; a second model without the
monitor measures the noise floor (its ratio would be 1 on a perfectly
quiet machine). Goal: ratio <= 1.05 for per-epoch values.
"""

import argparse
import os
import statistics
import subprocess
import sys
import time


def _resnet_like(keras):
    inputs = keras.Input((32, 32, 3))
    x = keras.layers.Conv2D(32, 3, padding="same", activation="relu")(inputs)
    for filters in (32, 64, 128):
        shortcut = keras.layers.Conv2D(filters, 1, strides=2)(x)
        y = keras.layers.Conv2D(filters, 3, strides=2, padding="same", activation="relu")(x)
        y = keras.layers.BatchNormalization()(y)
        y = keras.layers.Conv2D(filters, 3, padding="same")(y)
        x = keras.layers.ReLU()(keras.layers.Add()([shortcut, y]))
    x = keras.layers.GlobalAveragePooling2D()(x)
    return keras.Model(inputs, keras.layers.Dense(10)(x))


def run(rounds, steps, warmup=3):
    import keras
    import numpy as np

    from keras_corrinit import GradientSignMonitor

    class BatchTimer(keras.callbacks.Callback):
        def __init__(self):
            super().__init__()
            self.times = []

        def on_train_batch_begin(self, batch, logs=None):
            self.start = time.perf_counter()

        def on_train_batch_end(self, batch, logs=None):
            if batch >= warmup:  # the first ones trace and compile
                self.times.append(time.perf_counter() - self.start)

    rng = np.random.default_rng(0)
    x = rng.normal(size=(64 * steps, 32, 32, 3)).astype("float32")
    y = rng.integers(0, 10, size=64 * steps)
    configs = {
        "no monitor": lambda: [],
        # A second model without the monitor: how far apart two identical
        # configurations measure (the noise floor of these ratios).
        "no monitor, again (A/A)": lambda: [],
        "monitor (per epoch)": lambda: [GradientSignMonitor()],
        "monitor per_layer": lambda: [GradientSignMonitor(per_layer=True)],
        "per_layer, every 10 steps": lambda: [GradientSignMonitor(per_layer=True, every_n_steps=10)],
    }
    models, timers, callbacks = {}, {}, {}
    for name, make in configs.items():
        keras.utils.set_random_seed(0)
        models[name] = _resnet_like(keras)
        models[name].compile(
            keras.optimizers.SGD(0.01, momentum=0.8), keras.losses.SparseCategoricalCrossentropy(from_logits=True)
        )
        timers[name], callbacks[name] = BatchTimer(), make()
    names = list(configs)
    for round_index in range(rounds):
        for name in names if round_index % 2 == 0 else names[::-1]:
            models[name].fit(x, y, batch_size=64, epochs=1, verbose=0, callbacks=callbacks[name] + [timers[name]])
    results = {name: statistics.median(timer.times) for name, timer in timers.items()}
    reference = results["no monitor"]
    print(f"backend={keras.backend.backend()} steps/epoch={steps} rounds={rounds} (interleaved)")
    for name, seconds in results.items():
        print(f"  {name:<28} {seconds * 1e3:8.2f} ms/step  ratio {seconds / reference:.3f}")


def main(script=__file__, run_one=None, default_rounds=6):
    """`--rounds`, `--steps`, `--all-backends` (each backend in its own process) for this script or `script`."""
    parser = argparse.ArgumentParser(description=sys.modules["__main__"].__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=default_rounds)
    parser.add_argument("--steps", type=int, default=20)
    parser.add_argument("--all-backends", action="store_true")
    args = parser.parse_args()
    if not args.all_backends:
        (run_one or run)(args.rounds, args.steps)
        return
    for backend in ("tensorflow", "jax", "torch"):
        subprocess.run(
            [sys.executable, script, "--rounds", str(args.rounds), "--steps", str(args.steps)],
            env={**os.environ, "KERAS_BACKEND": backend, "TF_CPP_MIN_LOG_LEVEL": "3"},
            check=True,
        )


if __name__ == "__main__":
    main()
