"""The cost of `keras_corrinit.initialize` on ResNet50, in forward passes of its sample.

    KERAS_BACKEND=jax python benchmarks/bench_initialize.py

ResNet50 (`weights=None`, 64x64x3 inputs, batch 32 of random images): the
report's `forward_pass_equivalents` (the measuring pass plus LSUV's, as
LSUV's report counts them; goal: at most 3) and the wall time of
`initialize` against a forward pass of the same batch, in one process:
the median of 5 forward passes and of 3 calls of `initialize` (each call
re-initializes the whole model, so each costs the same). Then where the
time goes: one more call under cProfile, its cumulative seconds split into
the measuring pass, reading the graph (heads, residual branches), setting
the kernels, LSUV's pass and the all-or-nothing copy of the weights.
"""

import cProfile
import pstats
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
    profile(model, x)


PARTS = {
    "measuring pass": "run",
    "graph (heads, residual branches)": ("output_heads", "residual_branch_ends"),
    "kernels (whitening, identity, He-normal)": ("_whitening_kernel", "_rest_kernels"),
    "LSUV's pass": "scale_layers",
    "weights copied (all or nothing)": "__enter__",
}


def profile(model, x):
    profiler = cProfile.Profile()
    profiler.enable()
    initialize(model, x, batch_size=32, seed=0, verbose=0)
    profiler.disable()
    stats = pstats.Stats(profiler).stats
    total = max(cumulative for (_, _, _, cumulative, _) in stats.values())
    print(f"  where the time goes (one call under cProfile, {total:.2f} s):")
    for part, names in PARTS.items():
        names = (names,) if isinstance(names, str) else names
        seconds = sum(
            cumulative
            for (path, _, function), (_, _, _, cumulative, _) in stats.items()
            if function in names
            and ("_initialize" in path or "_lsuv" in path or "_graph" in path or "contextlib" in path)
            and not (function == "__enter__" and "contextlib" not in path)
        )
        print(f"    {part}: {seconds:.2f} s")


if __name__ == "__main__":
    main()
