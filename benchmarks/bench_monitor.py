"""Step time of `fit` with GradientSignMonitor, as a ratio to without it.

Usage:

    KERAS_BACKEND=jax python benchmarks/bench_monitor.py
    python benchmarks/bench_monitor.py --all-backends

A small ResNet-like CNN (three residual stages, 32x32x3 inputs, batch 64) is
trained on random data with SGD + momentum and the default jit_compile, in
one process: without the monitor, with it (per-epoch values), per layer,
and per layer with values every 10 steps. Each configuration gets its own
model; the first epoch (compilation) is discarded, and the median epoch time
of the rest is reported. Goal: ratio <= 1.10 for per-epoch values.
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


def run(epochs, steps):
    import keras
    import numpy as np

    from keras_corrinit import GradientSignMonitor

    class EpochTimer(keras.callbacks.Callback):
        def on_epoch_begin(self, epoch, logs=None):
            self.start = time.perf_counter()

        def on_epoch_end(self, epoch, logs=None):
            self.times.append(time.perf_counter() - self.start)

    rng = np.random.default_rng(0)
    x = rng.normal(size=(64 * steps, 32, 32, 3)).astype("float32")
    y = rng.integers(0, 10, size=64 * steps)
    configs = {
        "no monitor": [],
        "monitor (per epoch)": [GradientSignMonitor()],
        "monitor per_layer": [GradientSignMonitor(per_layer=True)],
        "per_layer, every 10 steps": [GradientSignMonitor(per_layer=True, every_n_steps=10)],
    }
    results = {}
    for name, callbacks in configs.items():
        keras.utils.set_random_seed(0)
        model = _resnet_like(keras)
        model.compile(
            keras.optimizers.SGD(0.01, momentum=0.8), keras.losses.SparseCategoricalCrossentropy(from_logits=True)
        )
        timer = EpochTimer()
        timer.times = []
        model.fit(x, y, batch_size=64, epochs=epochs, verbose=0, callbacks=callbacks + [timer])
        results[name] = statistics.median(timer.times[1:]) / steps
    reference = results["no monitor"]
    print(f"backend={keras.backend.backend()} steps/epoch={steps} epochs={epochs}")
    for name, seconds in results.items():
        print(f"  {name:<28} {seconds * 1e3:8.1f} ms/step  ratio {seconds / reference:.3f}")


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--epochs", type=int, default=5)
    parser.add_argument("--steps", type=int, default=20)
    parser.add_argument("--all-backends", action="store_true")
    args = parser.parse_args()
    if not args.all_backends:
        run(args.epochs, args.steps)
        return
    for backend in ("tensorflow", "jax", "torch"):
        subprocess.run(
            [sys.executable, __file__, "--epochs", str(args.epochs), "--steps", str(args.steps)],
            env={**os.environ, "KERAS_BACKEND": backend, "TF_CPP_MIN_LOG_LEVEL": "3"},
            check=True,
        )


if __name__ == "__main__":
    main()
