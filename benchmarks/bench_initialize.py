"""The cost of `keras_corrinit.initialize` on ResNet50, in forward passes of its sample.

    KERAS_BACKEND=jax python benchmarks/bench_initialize.py [--repeats 3]
    python benchmarks/bench_initialize.py --all-backends

ResNet50 (`weights=None`, 64x64x3 inputs, batch 32 of random images): the
report's `forward_pass_equivalents` (the measuring pass plus LSUV's, as
LSUV's report counts them; goal: at most 3) and the wall time of
`initialize` against a forward pass of the same batch, in one process:
the medians of forward passes and of calls of `initialize`, interleaved
(each call re-initializes the whole model, so each costs the same). Then where the
time goes: one more call under cProfile, its cumulative seconds split into
the measuring pass, reading the graph (heads, residual branches), setting
the kernels, LSUV's pass and the all-or-nothing copy of the weights.
"""

import cProfile
import pstats

import _harness


def run(args):
    import keras
    import numpy as np

    from keras_corrinit import initialize

    model = keras.applications.ResNet50(weights=None, input_shape=(64, 64, 3))
    x = np.random.default_rng(0).normal(size=(32, 64, 64, 3)).astype("float32")
    reports = []
    seconds = _harness.time_interleaved(
        {
            "forward pass": lambda: keras.ops.convert_to_numpy(model(x, training=False)),
            "initialize": lambda: reports.append(initialize(model, x, batch_size=32, seed=0, verbose=0)),
        },
        args.repeats,
    )
    report = reports[-1]
    print(f"{len(report.layers)} layers; {report.layers[0].name}: {report.layers[0].what}")
    print(f"forward_pass_equivalents {report.forward_pass_equivalents:.2f} (goal <= 3)")
    profile(model, x, initialize)
    return _harness.ratio_table(seconds, "forward pass", label="call")


PARTS = {
    "measuring pass": "run",
    "graph (heads, residual branches)": ("output_heads", "residual_branch_ends"),
    "kernels (whitening, identity, He-normal)": ("_whitening_kernel", "_rest_kernels"),
    "LSUV's pass": "scale_layers",
    "weights copied (all or nothing)": "__enter__",
}


def profile(model, x, initialize):
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
            and ("_initialize" in path or "_lsuv" in path or "graph" in path or "contextlib" in path)
            and not (function == "__enter__" and "contextlib" not in path)
        )
        print(f"    {part}: {seconds:.2f} s")


if __name__ == "__main__":
    _harness.main(run, __doc__, repeats=3)
