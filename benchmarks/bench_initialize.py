"""The cost of `keras_corrinit.initialize` on ResNet50, in forward passes of its sample.

    KERAS_BACKEND=jax python benchmarks/bench_initialize.py

ResNet50 (`weights=None`, 64x64x3 inputs, batch 32 of random images): the
report's `forward_pass_equivalents` (the measuring pass plus LSUV's, as
LSUV's report counts them; goal: at most 3) and the wall time of
`initialize` against one forward pass of the same batch, in one process.
"""

import time

import keras
import numpy as np

from keras_corrinit import initialize


def main():
    model = keras.applications.ResNet50(weights=None, input_shape=(64, 64, 3))
    x = np.random.default_rng(0).normal(size=(32, 64, 64, 3)).astype("float32")
    model(x, training=False)  # build and warm up
    start = time.perf_counter()
    model(x, training=False)
    forward = time.perf_counter() - start
    start = time.perf_counter()
    report = initialize(model, x, batch_size=32, seed=0, verbose=0)
    seconds = time.perf_counter() - start
    print(f"backend={keras.backend.backend()} layers={len(report.layers)}")
    print(f"  forward_pass_equivalents {report.forward_pass_equivalents:.2f} (goal <= 3)")
    print(f"  initialize {seconds:.2f} s = {seconds / forward:.1f} forward passes of {forward:.3f} s (wall time)")
    print(f"  {report.layers[0].name}: {report.layers[0].what}")


if __name__ == "__main__":
    main()
