"""Cost of lsuv_initialize against one forward pass, in the same process.

Usage:

    KERAS_BACKEND=torch python benchmarks/bench_lsuv.py
    python benchmarks/bench_lsuv.py --all-backends

For ResNet50, DenseNet121 and EfficientNetB0 (weights=None, batch 32 at
64x64) prints: the median time of one forward pass (training=False); the
time of `lsuv_initialize(model, x, orthogonal=False)` as a multiple of it
(the goal: at most 2); the report's own count of the work
(`forward_pass_equivalents`, from the multiply-adds of the extra layer
calls) and extra `layer_calls`; and the orthonormal pre-step's cost
(`orthogonal=True` minus `orthogonal=False`), also in forward passes.
"""

import argparse
import os
import statistics
import subprocess
import sys
import time

MODELS = ("ResNet50", "DenseNet121", "EfficientNetB0")


def _median_time(fn, repeats=3):
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        fn()
        times.append(time.perf_counter() - start)
    return statistics.median(times)


def run():
    import keras
    import numpy as np

    from keras_corrinit import lsuv_initialize

    x = np.random.default_rng(0).normal(size=(32, 64, 64, 3)).astype("float32")
    for name in MODELS:
        model = getattr(keras.applications, name)(weights=None, input_shape=(64, 64, 3))
        model(x, training=False)  # warm-up
        forward = _median_time(lambda: keras.ops.convert_to_numpy(model(x, training=False)))
        lsuv_initialize(model, x, orthogonal=False, verbose=0)  # warm-up of the eager paths
        reports = []
        scaled_only = _median_time(lambda: reports.append(lsuv_initialize(model, x, orthogonal=False, verbose=0)))
        with_orthonormal = _median_time(lambda: lsuv_initialize(model, x, seed=0, verbose=0))
        report = reports[-1]
        print(
            f"backend={keras.backend.backend()} model={name} layers={len(report)} "
            f"forward={forward * 1e3:.0f}ms lsuv/forward={scaled_only / forward:.2f} "
            f"forward_pass_equivalents={report.forward_pass_equivalents:.2f} layer_calls={report.layer_calls} "
            f"orthonormal_prestep/forward={(with_orthonormal - scaled_only) / forward:.2f} "
            f"not_converged={[e.name for e in report if not e.converged]}",
            flush=True,
        )


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--all-backends", action="store_true")
    args = parser.parse_args()
    if not args.all_backends:
        run()
        return
    for backend in ("tensorflow", "jax", "torch"):
        subprocess.run(
            [sys.executable, __file__],
            env={**os.environ, "KERAS_BACKEND": backend, "TF_CPP_MIN_LOG_LEVEL": "3"},
            check=True,
        )


if __name__ == "__main__":
    main()
