"""
Title: Correlated initialization, and R from a trained network
Author: keras_corrinit developers
Date created: 2026/11/25
Last modified: 2026/11/25
Description: CorrelatedHeNormal in a layer, the correlation R measured on a trained model, layer-wise transfer.
"""

"""
## Introduction

`CorrelatedHeNormal` is Algorithm 1 of *Correlated Initialization for Correlated
Data*: every k x k filter is `w = C z` with `C C^T = R`, a spatial correlation
between the filter's positions, scaled so that the filter sum keeps He's
variance (`variance_mode="filter"`, default) or so that each weight does
(`variance_mode="weight"`). `alpha` scales R's off-diagonal. With R = identity
(or `alpha=0`, or 1x1 and Dense kernels) it is exactly Keras's untruncated
He-normal for the same seed.

R can be the built-in `rho ** distance` (rho = 0.4, a mean 3x3 off-diagonal
correlation of 0.25, close to the 0.26 the paper reports for ResNet filters),
an explicit P x P matrix, a `{distance: correlation}` profile that fits any
kernel size, or the correlation measured on a trained network (the paper's
Figure 1 and Table 4).

## Setup
"""

import os
import tempfile

import keras
import numpy as np
from sklearn.datasets import load_digits

from keras_corrinit import CorrelatedHeNormal, SpatialCorrelation, correlation_from_model
from keras_corrinit.layerwise import apply_initializers

keras.utils.set_random_seed(0)

"""
## An initializer like Keras's own

Seeds behave as in Keras: an int (or None, which picks one int per instance)
repeats its values on every call, a `keras.random.SeedGenerator` gives new values
on every call. Fan-in is Keras's, `prod(kernel_size) * shape[-2]`.
"""

init = CorrelatedHeNormal(seed=1)
kernel = keras.ops.convert_to_numpy(init((3, 3, 64, 64)))
filters = kernel.reshape(9, -1)
print("sample correlation of positions 0 and 1:", round(float(np.corrcoef(filters[0], filters[1])[0, 1]), 3))
print("R[0, 1] it was drawn with:           ", round(float(init.correlation_matrix((3, 3))[0, 1]), 3))

# an explicit matrix, weakened by alpha; a profile that fits any kernel size
r = SpatialCorrelation.exponential_decay(0.5).matrix_for((3, 3))
weaker = CorrelatedHeNormal(r, alpha=0.5, seed=1)
for_any_size = CorrelatedHeNormal(SpatialCorrelation.from_matrix(r).to_profile(), seed=1)
print("a 3x3 estimate used for a 7x7 kernel:", for_any_size.correlation_matrix((7, 7)).shape)

"""
`alpha` may exceed 1 (the paper's Table 5 uses 1.5) as long as every scaled
off-diagonal entry stays in [-1, 1]; beyond that it is a `ValueError` naming the
largest valid `alpha`. A scaled R that is not positive semi-definite is replaced
by the nearest correlation matrix with a warning (`strict=True` raises).

## R measured on a trained network

Train a small CNN briefly on scikit-learn's digits (shipped with the package,
offline), then measure the spatial correlation of its 3x3 filters. Each (in,
out) slice of a kernel is one observation of the P positions; a layer's matrix
is their Pearson correlation; the pooled matrix averages the layers'
scale-normalized covariances weighted by their observation counts.
"""

digits = load_digits()
x = (digits.images / 16.0).astype("float32")[..., None]
y = digits.target


def small_cnn(kernel_initializer="he_normal"):
    return keras.Sequential(
        [
            keras.Input((8, 8, 1)),
            keras.layers.Conv2D(32, 3, padding="same", activation="relu", kernel_initializer=kernel_initializer),
            keras.layers.Conv2D(32, 3, padding="same", activation="relu", kernel_initializer=kernel_initializer),
            keras.layers.Flatten(),
            keras.layers.Dense(10),
        ]
    )


trained = small_cnn()
trained.compile("adam", keras.losses.SparseCategoricalCrossentropy(from_logits=True), metrics=["accuracy"])
trained.fit(x, y, epochs=2, batch_size=64, verbose=0)

estimate = correlation_from_model(trained, kernel_size=3)
distances, correlations, counts = estimate.profile()
print("correlation by distance:", {round(float(d), 2): round(float(c), 3) for d, c in zip(distances, correlations)})

"""
`correlation_from_application("ResNet50")` does the same for Keras Applications
with ImageNet weights (cached as JSON under `~/.keras/corrinit`); without a
network it fails with an error naming the file to download and where Keras looks
for it. The command line does it too: `keras-corrinit extract RESNET50 --out
R.json --plot fig1.png`.

## Using it

The pooled matrix for every layer, or the paper's footnote 2: each layer's own R
(from the source layer at the same position), applied in place. With an int seed
layer i gets its own derived seed, so same-shaped layers never share a draw and
the same seed reproduces the model.
"""

target = small_cnn(CorrelatedHeNormal(estimate, seed=0))
apply_initializers(target, estimate.layerwise_initializers(target, seed=3))

"""
## Saving and loading

The initializers are registered (`keras_corrinit>CorrelatedHeNormal`); their
configs are plain JSON, and loading one never imports or calls anything it
names, so `safe_mode=True` works.
"""

path = os.path.join(tempfile.mkdtemp(), "target.keras")
target.save(path)
restored = keras.models.load_model(path, safe_mode=True)
print("round trip:", type(restored.layers[0].kernel_initializer).__name__)
