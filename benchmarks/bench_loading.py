"""Time to load the most expensive `.keras` file a config can ask for, within the bound.

    KERAS_BACKEND=tensorflow python benchmarks/bench_loading.py [--repeats 3]

Loading a model builds its layers, which calls their initializers (the
saved weights then overwrite the draw), so an initializer's config decides
how much work loading does. Every config is bounded to kernels of at most
`MAX_POSITIONS` = 1024 spatial positions (32x32); the costliest configs
within that bound are

* `CorrelatedHeNormal` with a distance profile that is not positive
  semi-definite at 32x32: a 1024 x 1024 nearest-correlation repair
  (alternating projections, an eigendecomposition each);
* `NFMInit` used for a spatial transfer at 32x32: a 1024 x 1024
  factorization;
* `ConstructedFilterCovariance` and `FilterCovariance` resampled to 32x32.

The file holds three layers of the first kind and one of each other kind,
1 channel each (a file of a few kilobytes). Printed: the median load time
with `safe_mode=True`, and that of the same model with Keras's `HeNormal`
in every layer, loaded in the same process, interleaved.
"""

import os
import tempfile
import warnings

import _harness

K = 32  # the bound: 32 x 32 = 1024 positions


def _initializers():
    import numpy as np

    from keras_corrinit import CorrelatedHeNormal, NFMInit, SpatialCorrelation
    from keras_corrinit.initializers import ConstructedFilterCovariance, FilterCovariance

    # Correlation 0.95 at distance 1 and -0.9 at distance 3: far from PSD.
    profile = SpatialCorrelation.from_profile([1, 2, 3], [0.95, 0.2, -0.9])
    source = np.random.default_rng(0).normal(size=(K, K, 2, 2))
    return [
        CorrelatedHeNormal(profile, variance_mode="weight", seed=1),
        CorrelatedHeNormal(profile, variance_mode="weight", seed=2),
        CorrelatedHeNormal(profile, variance_mode="weight", seed=3),
        NFMInit.from_kernel(source, seed=4),  # 2 input channels: a spatial transfer to 1
        ConstructedFilterCovariance(seed=5),
        FilterCovariance(np.eye(9), seed=6),  # 3x3, resampled to 32x32
    ]


def _model(initializers):
    import keras

    inputs = keras.Input((K, K, 1))
    outputs = [keras.layers.Conv2D(1, K, kernel_initializer=init)(inputs) for init in initializers]
    return keras.Model(inputs, keras.layers.Concatenate()(outputs))


def _load(path):
    import keras

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # the non-PSD repair warns, as documented
        keras.saving.load_model(path, safe_mode=True)


def run(args):
    import keras

    folder = tempfile.mkdtemp()
    worst, plain = os.path.join(folder, "worst.keras"), os.path.join(folder, "plain.keras")
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        _model(_initializers()).save(worst)
    _model([keras.initializers.HeNormal(seed=i) for i in range(6)]).save(plain)
    print(f"file of {os.path.getsize(worst) / 1024:.0f} KiB")
    seconds = _harness.time_interleaved(
        {"HeNormal in every layer": lambda: _load(plain), "worst file within the bound": lambda: _load(worst)},
        args.repeats,
    )
    return _harness.ratio_table(seconds, "HeNormal in every layer", label="file", unit=1, unit_name="s")


if __name__ == "__main__":
    _harness.main(run, __doc__, repeats=3)
