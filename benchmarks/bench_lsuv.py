"""Cost of lsuv_initialize on ResNet50(weights=None), batch 32 at 64x64.

Usage:

    KERAS_BACKEND=torch python benchmarks/bench_lsuv.py
    python benchmarks/bench_lsuv.py --all-backends

Prints the wall time, the forward work LSUV did (`prefix_runs`: passes that
end at a layer's input; `layer_calls`: single-layer calls during the variance
iterations), the time of one full forward pass of the same batch measured in
the same process, and the naive method's count of full passes (one per layer
and measurement) for comparison.
"""

import argparse
import os
import subprocess
import sys
import time


def run():
    import keras
    import numpy as np

    from keras_corrinit import lsuv_initialize

    model = keras.applications.ResNet50(weights=None, input_shape=(64, 64, 3))
    x = np.random.default_rng(0).normal(size=(32, 64, 64, 3)).astype("float32")
    model(x, training=False)  # warm-up
    start = time.perf_counter()
    model(x, training=False)
    full_pass = time.perf_counter() - start

    start = time.perf_counter()
    report = lsuv_initialize(model, x, verbose=0)
    seconds = time.perf_counter() - start
    naive = sum(e.iterations + 1 for e in report)
    print(
        f"backend={keras.backend.backend()} layers={len(report)} "
        f"time={seconds:.1f}s full_forward={full_pass * 1e3:.0f}ms "
        f"time/full_forward={seconds / full_pass:.0f} prefix_runs={report.prefix_runs} "
        f"layer_calls={report.layer_calls} naive_full_passes={naive} "
        f"not_converged={[e.name for e in report if not e.converged]}"
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
