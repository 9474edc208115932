"""
Title: NFM and AGOP transfer
Author: keras_corrinit developers
Date created: 2026/11/25
Last modified: 2026/11/25
Description: New weights drawn from a trained layer's Neural Feature Matrix or Average Gradient Outer Product.
"""

"""
## Introduction

A trained layer with kernel K (flattened to `F`, `fan_in x out`) has the Neural
Feature Matrix `W^T W = F F^T`. By the Neural Feature Ansatz (Beaglehole et al.,
2023) it is proportional to the Average Gradient Outer Product (AGOP) of the
model's output with respect to the layer's input patches. `NFMInit` draws new
weights from `N(0, s^2 Sigma)` with such a Sigma, `s^2 = 2 / trace(Sigma)`
(mean per-weight variance `2 / fan_in`, Kaiming; `scaling="none"` keeps Sigma as
it is). A target with the source's fan-in gets the full Sigma; other channel
counts with the same kernel size get its channel-averaged spatial block.

## Setup
"""

import keras
import numpy as np
from sklearn.datasets import load_digits

from keras_corrinit import NFMInit, agop_matrix
from keras_corrinit.correlation import nfm_matrix
from keras_corrinit.layerwise import apply_initializers, nfm_layerwise_initializers

keras.utils.set_random_seed(0)
digits = load_digits()
x = (digits.images / 16.0).astype("float32")[..., None]
y = digits.target


def cnn(width):
    return keras.Sequential(
        [
            keras.Input((8, 8, 1)),
            keras.layers.Conv2D(width, 3, padding="same", activation="relu", name="conv1"),
            keras.layers.Conv2D(width, 3, padding="same", activation="relu", name="conv2"),
            keras.layers.Flatten(),
            keras.layers.Dense(10, name="head"),
        ]
    )


source = cnn(16)
source.compile("adam", keras.losses.SparseCategoricalCrossentropy(from_logits=True))
source.fit(x, y, epochs=2, batch_size=64, verbose=0)

"""
## The matrices
"""

nfm = nfm_matrix(source.get_layer("conv2"))
print("NFM of conv2:", nfm.shape)
# exact for outputs up to `max_outputs`; random projections (unbiased) above
agop = agop_matrix(source, "conv2", x[:128], max_outputs=10)
print("AGOP of conv2:", agop.shape)
alignment = np.sum(nfm * agop) / (np.linalg.norm(nfm) * np.linalg.norm(agop))
print("cosine similarity of NFM and AGOP:", round(float(alignment), 3))

"""
## Initializers from them
"""

from_nfm = NFMInit.from_kernel(source.get_layer("conv2"), seed=0)
from_agop = NFMInit.from_covariance(agop, spatial_shape=(3, 3), in_channels=16, seed=0)
layer = keras.layers.Conv2D(16, 3, kernel_initializer=from_agop)
layer.build((None, 8, 8, 16))
print("per-weight variance, 2 / fan_in =", round(2 / 144, 4), ":", round(float(np.var(layer.kernel)), 4))

"""
## Layer by layer, to a wider target

Each target Conv/Dense layer from its source counterpart (in order, or by a
`mapping`); a wider target gets the spatial block of each source layer's NFM.
"""

target = cnn(32)
apply_initializers(target, nfm_layerwise_initializers(source, target, seed=1))
print([type(layer.kernel_initializer).__name__ for layer in target.layers if hasattr(layer, "kernel")])
