"""Peak extra memory of initializing one large kernel, as a multiple of its size.

Usage:

    python benchmarks/bench_memory.py [--shape 7 7 2048 2048] [--backends tensorflow jax torch]

Each (backend, initializer) pair runs in a fresh process, since allocators
keep freed memory. The process warms the initializer up on a small kernel
(compilation, caches), resets the kernel's peak-RSS counter
(`/proc/self/clear_refs`, Linux), draws the large kernel, waits for it to be
computed, and reports `VmHWM - VmRSS before` over the kernel's bytes. The
result itself counts: 1.0 is the least possible. The goal is about 3x at
most; Keras's own HeNormal is measured the same way for comparison.
"""

import argparse
import json
import math
import os
import subprocess
import sys

INITIALIZERS = {
    "keras HeNormal": "keras.initializers.HeNormal(seed=1)",
    "CorrelatedHeNormal": "kc.CorrelatedHeNormal(seed=1)",
    "EnhancedGamma": "kc.EnhancedGamma(granularity='spatial', seed=1)",
    "EnhancedGamma uniform": "kc.EnhancedGamma('he_uniform', seed=1)",
    "NFMInit (spatial)": "kc.NFMInit.from_kernel(np.random.default_rng(0).normal(size=(*SHAPE[:-2], 8, 8)), seed=1)",
}


def _status_kib(field):
    with open("/proc/self/status") as f:
        for line in f:
            if line.startswith(field + ":"):
                return int(line.split()[1])
    raise RuntimeError(f"{field} not in /proc/self/status")


def measure(shape, expression):
    """Runs in the child process: prints a JSON line with the measurement."""
    import gc

    import keras
    import numpy as np

    import keras_corrinit as kc

    namespace = {"keras": keras, "kc": kc, "np": np, "SHAPE": shape}
    init = eval(expression, namespace)  # one of INITIALIZERS' fixed strings
    small = (*shape[:-2], 8, 8)
    keras.ops.convert_to_numpy(init(small))
    gc.collect()
    with open("/proc/self/clear_refs", "w") as f:
        f.write("5")  # reset VmHWM to the current RSS
    before = _status_kib("VmRSS")
    kernel = init(shape)
    keras.ops.convert_to_numpy(kernel[(0,) * len(shape)])  # wait for the whole draw
    peak = _status_kib("VmHWM")
    kernel_kib = math.prod(shape) * 4 / 1024
    print(json.dumps({"extra_gib": (peak - before) / 2**20, "ratio": (peak - before) / kernel_kib}))


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--shape", type=int, nargs="+", default=[7, 7, 2048, 2048])
    parser.add_argument("--backends", nargs="+", default=["tensorflow", "jax", "torch"])
    parser.add_argument("--child", help=argparse.SUPPRESS)
    args = parser.parse_args()
    shape = tuple(args.shape)
    if args.child:
        measure(shape, INITIALIZERS[args.child])
        return
    gib = math.prod(shape) * 4 / 2**30
    print(f"kernel {shape}, float32: {gib:.3f} GiB")
    print(f"{'backend':<11} {'initializer':<22} {'extra peak GiB':>14} {'x kernel':>9}")
    for backend in args.backends:
        for name in INITIALIZERS:
            result = subprocess.run(
                [sys.executable, __file__, "--child", name, "--shape", *map(str, shape)],
                env={**os.environ, "KERAS_BACKEND": backend, "TF_CPP_MIN_LOG_LEVEL": "3"},
                capture_output=True,
                text=True,
                check=True,
            )
            row = json.loads(result.stdout.strip().splitlines()[-1])
            print(f"{backend:<11} {name:<22} {row['extra_gib']:>14.2f} {row['ratio']:>9.2f}", flush=True)


if __name__ == "__main__":
    main()
