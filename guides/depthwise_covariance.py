"""
Title: Covariance initialization of depthwise filters (ConvMixer, ConvNeXt)
Author: keras_corrinit developers
Date created: 2026/11/25
Last modified: 2026/11/25
Description: Depthwise filters from a learned or closed-form covariance, across depths and kernel sizes.
"""

"""
## Introduction

Networks with large-kernel depthwise convolutions (ConvMixer, ConvNeXt: 7x7 to
9x9, one filter per channel) learn filters with a structured covariance.
Trockman, Willmott and Kolter (ICLR 2023) draw new filters from `N(0, Sigma)`
with Sigma (a) the covariance of a trained model's filters, transferred to other
depths and kernel sizes, or (b) a closed-form construction. Here:

* `depthwise_covariance_from_model(model)`: one covariance per depthwise layer,
  scale included (`DepthwiseCovariance`);
* `FilterCovariance(Sigma)`: an initializer from one covariance (resampled to
  another kernel size by linear interpolation of the filters, trace kept);
* `ConstructedFilterCovariance(relative_depth)`: a closed form, learning-free;
* `reinitialize_depthwise(model, covariance=None)`: every depthwise kernel of a
  model, by relative depth, in one call.

## Setup
"""

import keras
import numpy as np
from sklearn.datasets import load_digits

from keras_corrinit.extraction import depthwise_covariance_from_model
from keras_corrinit.initializers import ConstructedFilterCovariance, FilterCovariance
from keras_corrinit.layerwise import reinitialize_depthwise

keras.utils.set_random_seed(0)


def convmixer(depth, kernel_size, dim=32):
    inputs = keras.Input((8, 8, 1))
    x = keras.layers.Conv2D(dim, 1, activation="gelu")(inputs)
    for i in range(depth):
        y = keras.layers.DepthwiseConv2D(kernel_size, padding="same", name=f"depthwise_{i}")(x)
        x = keras.layers.Add()([x, keras.layers.BatchNormalization()(keras.layers.Activation("gelu")(y))])
        x = keras.layers.Conv2D(dim, 1, activation="gelu")(x)
    outputs = keras.layers.Dense(10)(keras.layers.GlobalAveragePooling2D()(x))
    return keras.Model(inputs, outputs)


"""
## The closed form

Positions are measured from the kernel's centre in units of its radius, so one
set of parameters fits every kernel size; the defaults widen with depth.
"""

first = ConstructedFilterCovariance(relative_depth=0.0)
print("variance profile of a 7x7 filter at depth 0:")
print(np.round(np.diag(first.covariance_matrix((7, 7))).reshape(7, 7), 3))
layer = keras.layers.DepthwiseConv2D(7, depthwise_initializer=ConstructedFilterCovariance(0.5, seed=1))
layer.build((None, 16, 16, 32))

"""
## A learned covariance, transferred

Train a ConvMixer of depth 2 with 5x5 kernels, measure its filters' covariances,
and initialize one of depth 4 with 7x7 kernels from them: layer i of the target
takes the covariance at its relative depth (interpolated between source layers),
resampled from the 5x5 grid to the 7x7 one.
"""

digits = load_digits()
x = (digits.images / 16.0).astype("float32")[..., None]
y = digits.target
source = convmixer(2, 5)
source.compile("adam", keras.losses.SparseCategoricalCrossentropy(from_logits=True))
source.fit(x, y, epochs=2, batch_size=64, verbose=0)
learned = depthwise_covariance_from_model(source, source="ConvMixer-2/5 on digits")
print("source layers:", learned.layers, learned.spatial_shapes)

target = convmixer(4, 7)
applied = reinitialize_depthwise(target, learned, seed=0)
print({key: type(init).__name__ for key, init in applied.items()})
one = FilterCovariance(learned.covariance_at(0.5), seed=0)  # as a `depthwise_initializer=`

"""
## ConvNeXt from Keras Applications, in one call

ConvNeXt's depthwise convolutions are `Conv2D` layers with one input channel per
group; they are found as depthwise kernels too.
"""

convnext = keras.applications.ConvNeXtTiny(weights=None, include_top=False, input_shape=(32, 32, 3))
print(len(reinitialize_depthwise(convnext, seed=0)), "depthwise kernels re-initialized")
