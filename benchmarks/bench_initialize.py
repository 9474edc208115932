"""The cost of `keras_corrinit.initialize` on ResNet50, in forward passes of its sample.

    KERAS_BACKEND=jax python benchmarks/bench_initialize.py

ResNet50 (`weights=None`, 64x64x3 inputs, batch 32 of random images): the
report's `forward_pass_equivalents` (the measuring pass plus LSUV's, as
LSUV's report counts them; goal: at most 3) and the wall time of
`initialize` against a forward pass of the same batch, in one process:
the median of 5 forward passes and of 3 calls of `initialize` (each call
re-initializes the whole model, so each costs the same).
"""

import time

import keras
import numpy as np

from keras_corrinit import initialize


def median_seconds(fn, repeats):
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        fn()
        times.append(time.perf_counter() - start)
    return float(np.median(times))


def main():
    model = keras.applications.ResNet50(weights=None, input_shape=(64, 64, 3))
    x = np.random.default_rng(0).normal(size=(32, 64, 64, 3)).astype("float32")
    model(x, training=False)  # build and warm up
    forward = median_seconds(lambda: keras.ops.convert_to_numpy(model(x, training=False)), 5)
    reports = []
    seconds = median_seconds(lambda: reports.append(initialize(model, x, batch_size=32, seed=0, verbose=0)), 3)
    report = reports[-1]
    print(f"backend={keras.backend.backend()} layers={len(report.layers)}")
    print(f"  forward_pass_equivalents {report.forward_pass_equivalents:.2f} (goal <= 3)")
    print(f"  initialize {seconds:.2f} s = {seconds / forward:.1f} forward passes of {forward:.3f} s (wall time)")
    print(f"  {report.layers[0].name}: {report.layers[0].what}")


if __name__ == "__main__":
    main()
