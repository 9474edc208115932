"""Time of correlation_from_model on ResNet50, DenseNet121 and VGG16 (weights=None).

    KERAS_BACKEND=jax python benchmarks/bench_extraction.py [--repeats 5]

Extraction reads the kernels once and does per-layer numpy matrix products,
so it is backend-independent; the model build is not timed.
"""

import math

import _harness


def run(args):
    import keras

    from keras_corrinit import correlation_from_model

    rows = []
    for name in ("ResNet50", "DenseNet121", "VGG16"):
        model = getattr(keras.applications, name)(weights=None, include_top=False)
        estimates = []
        call = {name: lambda: estimates.append(correlation_from_model(model))}
        seconds = _harness.time_interleaved(call, args.repeats)
        weights = sum(math.prod(w.shape) for w in model.weights)
        rows.append([name, len(estimates[-1].layer_names), f"{weights / 1e6:.1f}M", f"{seconds[name] * 1e3:.0f}"])
    return ["model", "3x3 layers", "weights", "median ms"], rows


if __name__ == "__main__":
    _harness.main(run, __doc__, repeats=5)
