"""Initializer speed as a ratio to Keras's own He-normal, in one process.

Usage (one backend per process, as Keras picks its backend at import):

    KERAS_BACKEND=jax python benchmarks/bench_initializers.py [--repeats 15]

or, for every backend in turn:

    python benchmarks/bench_initializers.py --all-backends

Two workloads: one 3x3x512x512 kernel, and every kernel of
keras.applications.ResNet50 (53 conv kernels plus the Dense head, 25.6M
weights) initialized once, which is what re-initializing that model costs.
Each timing includes moving the result to numpy, so asynchronous backends
(JAX) are measured to completion. The reference is Keras's untruncated
He-normal (`VarianceScaling(2, "fan_in", "untruncated_normal")`), the same
one normal draw the correlated initializers make before their (P x P)
matmul; Keras's default `HeNormal` (truncated) is listed too. The goal is a
ratio <= 1.3 for every correlated initializer.
"""

import _harness


def run(args):
    import keras
    import numpy as np

    from keras_corrinit import CorrelatedHeNormal, EnhancedGamma, NFMInit
    from keras_corrinit.initializers import ConstructedFilterCovariance, FilterCovariance

    resnet = keras.applications.ResNet50(weights=None, input_shape=(224, 224, 3))
    resnet_shapes = [tuple(w.shape) for w in resnet.weights if len(w.shape) >= 2]
    del resnet
    workloads = {"3x3x512x512": [(3, 3, 512, 512)], "ResNet50 kernels": resnet_shapes}
    initializers = {
        "untruncated He": keras.initializers.VarianceScaling(2.0, "fan_in", "untruncated_normal", seed=1),
        "keras HeNormal": keras.initializers.HeNormal(seed=1),
        "CorrelatedHeNormal": CorrelatedHeNormal(seed=1),
        "EnhancedGamma": EnhancedGamma(seed=1),
    }
    # Initializers that fit only some shapes: the 3x3 workload alone.
    three_by_three = {
        # a spatial transfer (other channel counts, same 3x3): one (9 x 9) factor
        "NFMInit (spatial)": NFMInit.from_kernel(np.random.default_rng(0).normal(size=(3, 3, 16, 16)), seed=1),
        "FilterCovariance": FilterCovariance(np.eye(9) / 9 + 0.01, seed=1),
        "ConstructedFilterCovariance": ConstructedFilterCovariance(seed=1),
    }
    rows = []
    for workload, shapes in workloads.items():
        timed = {**initializers, **(three_by_three if workload == "3x3x512x512" else {})}
        calls = {
            name: (lambda init=init: [keras.ops.convert_to_numpy(init(s)) for s in shapes])
            for name, init in timed.items()
        }
        seconds = _harness.time_interleaved(calls, args.repeats)
        columns, table = _harness.ratio_table(seconds, "untruncated He", label="initializer")
        rows += [[workload, *row] for row in table]
    return ["workload", *columns], rows


if __name__ == "__main__":
    _harness.main(run, __doc__, repeats=15)
