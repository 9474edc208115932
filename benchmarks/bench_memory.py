"""Peak extra memory of initializing one large kernel, as a multiple of its size.

Usage:

    KERAS_BACKEND=jax python benchmarks/bench_memory.py [--shape 7 7 2048 2048]
    python benchmarks/bench_memory.py --all-backends

Each initializer runs in a fresh process, since allocators
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

import _harness

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


def run(args):
    shape = tuple(args.shape)
    if args.child:
        measure(shape, INITIALIZERS[args.child])
        return None
    import keras

    print(f"kernel {shape}, float32: {math.prod(shape) * 4 / 2**30:.3f} GiB")
    rows = []
    for name in INITIALIZERS:
        result = subprocess.run(
            [sys.executable, __file__, "--child", name, "--shape", *map(str, shape)],
            env={**os.environ, "KERAS_BACKEND": keras.backend.backend(), "TF_CPP_MIN_LOG_LEVEL": "3"},
            capture_output=True,
            text=True,
            check=True,
        )
        row = json.loads(result.stdout.strip().splitlines()[-1])
        rows.append([name, f"{row['extra_gib']:.2f}", f"{row['ratio']:.2f}"])
    return ["initializer", "extra peak GiB", "x kernel"], rows


def add_arguments(parser):
    parser.add_argument("--shape", type=int, nargs="+", default=[7, 7, 2048, 2048])
    parser.add_argument("--child", help=argparse.SUPPRESS)


if __name__ == "__main__":
    _harness.main(run, __doc__, add_arguments)
