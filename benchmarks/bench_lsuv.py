"""Cost of lsuv_initialize against one forward pass, in the same process.

Usage:

    KERAS_BACKEND=torch python benchmarks/bench_lsuv.py [--repeats 3]
    python benchmarks/bench_lsuv.py --all-backends

For ResNet50, DenseNet121 and EfficientNetB0 (weights=None, batch 32 at
64x64): the median time of one forward pass (training=False); the time of
`lsuv_initialize(model, x, orthogonal=False)` as a multiple of it (the
goal: at most 2); the report's own count of the work
(`forward_pass_equivalents`, from the multiply-adds of the extra layer
calls) and extra `layer_calls`; and the orthonormal pre-step's cost
(`orthogonal=True` minus `orthogonal=False`), also in forward passes.
"""

import _harness

MODELS = ("ResNet50", "DenseNet121", "EfficientNetB0")


def run(args):
    import keras
    import numpy as np

    from keras_corrinit import lsuv_initialize

    x = np.random.default_rng(0).normal(size=(32, 64, 64, 3)).astype("float32")
    rows = []
    for name in MODELS:
        model = getattr(keras.applications, name)(weights=None, input_shape=(64, 64, 3))
        reports = []
        seconds = _harness.time_interleaved(
            {
                "forward": lambda: keras.ops.convert_to_numpy(model(x, training=False)),
                "scaled": lambda: reports.append(lsuv_initialize(model, x, orthogonal=False, verbose=0)),
                "orthonormal": lambda: lsuv_initialize(model, x, seed=0, verbose=0),
            },
            args.repeats,
        )
        report, forward = reports[-1], seconds["forward"]
        rows.append(
            [
                name,
                len(report),
                f"{forward * 1e3:.0f}",
                f"{seconds['scaled'] / forward:.2f}",
                f"{report.forward_pass_equivalents:.2f}",
                report.layer_calls,
                f"{(seconds['orthonormal'] - seconds['scaled']) / forward:.2f}",
                [e.name for e in report if not e.converged] or "-",
            ]
        )
    columns = ["model", "layers", "forward ms", "lsuv / forward", "forward-pass equivalents", "layer calls"]
    return columns + ["orthonormal pre-step / forward", "not converged"], rows


if __name__ == "__main__":
    _harness.main(run, __doc__, repeats=3)
