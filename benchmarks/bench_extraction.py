"""Time of correlation_from_model on ResNet50 and DenseNet121 (weights=None).

    KERAS_BACKEND=jax python benchmarks/bench_extraction.py

Extraction reads the kernels once and does per-layer numpy matrix products,
so it is backend-independent; the model build is not timed.
"""

import math
import statistics
import time

import keras

from keras_corrinit import correlation_from_model

for name in ("ResNet50", "DenseNet121", "VGG16"):
    model = getattr(keras.applications, name)(weights=None, include_top=False)
    times = []
    for _ in range(5):
        start = time.perf_counter()
        estimate = correlation_from_model(model)
        times.append(time.perf_counter() - start)
    weights = sum(math.prod(w.shape) for w in model.weights)
    print(
        f"{name:<12} {len(estimate.layer_names):>3} 3x3 layers, {weights / 1e6:.1f}M weights in model: "
        f"median {statistics.median(times) * 1e3:.0f} ms"
    )
