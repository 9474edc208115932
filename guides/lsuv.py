"""
Title: LSUV on any model, in one forward pass
Author: keras_corrinit developers
Date created: 2026/11/25
Last modified: 2026/11/25
Description: Layer-sequential unit-variance initialization of Functional, nested and subclassed models.
"""

"""
## Introduction

`lsuv_initialize(model, data)` (Mishkin & Matas, *All you need is a good init*)
starts every Conv/Dense kernel from an orthonormal matrix, then, layer by layer
from input to output, rescales the kernel until the layer's output variance on
the batch is within `tol` (0.1) of the target (1). It does so in one forward
pass of the real model: each touched layer's `call` is intercepted, so when the
pass reaches a layer its input already reflects every upstream rescaling. A
layer called twice (shared) is rescaled at its first call; a touched layer the
pass never calls gets a warning naming it.

Rescaling a layer with a linear or ReLU output and a zero bias by c scales its
output by exactly c, so such layers cost no extra call; others (swish, tanh, a
fixed bias) are called again on their cached input. `forward_pass_equivalents`
counts the work done.

## Setup
"""

import keras
import numpy as np

from keras_corrinit import CorrelatedHeNormal, lsuv_initialize

keras.utils.set_random_seed(0)
x = np.random.rand(64, 32, 32, 3).astype("float32")

"""
## A Functional model with a residual add and batch norm
"""

inputs = keras.Input((32, 32, 3))
h = keras.layers.Conv2D(16, 3, padding="same", activation="relu", name="stem")(inputs)
r = keras.layers.Conv2D(16, 3, padding="same", name="branch")(h)
r = keras.layers.BatchNormalization()(r)
h = keras.layers.ReLU()(keras.layers.Add()([h, r]))
h = keras.layers.GlobalAveragePooling2D()(h)
outputs = keras.layers.Dense(10, name="head")(h)
functional = keras.Model(inputs, outputs)

report = lsuv_initialize(functional, x, verbose=0)
for entry in report:
    print(f"{entry.name:8s} {entry.initial_variance:8.3f} -> {entry.final_variance:.3f} converged={entry.converged}")
print("work, in forward passes:", round(report.forward_pass_equivalents, 2))

"""
## A subclassed model, several batches, name patterns

With `batches=N` the model runs once on N batches together and iteration j
measures batch j mod N (the paper's "next mini-batch"); `include` / `exclude`
pick layers by name; `target_variance` and `center_bias` change the target.
"""


class TwoConvs(keras.Model):
    def __init__(self):
        super().__init__()
        self.first = keras.layers.Conv2D(8, 3, activation="relu")
        self.second = keras.layers.Conv2D(8, 3, activation="swish")
        self.pool = keras.layers.GlobalAveragePooling2D()

    def call(self, inputs):
        return self.pool(self.second(self.first(inputs)))


subclassed = TwoConvs()
subclassed(x[:2])
report = lsuv_initialize(subclassed, x, batches=2, batch_size=32, target_variance=2.0, center_bias=True, verbose=0)
print([(entry.name, round(entry.final_variance, 3)) for entry in report])

"""
## On top of another initializer

Set the weights first, then skip the orthonormal start: LSUV only fixes the
scale, and the correlation stays.
"""

model = keras.Sequential(
    [
        keras.Input((32, 32, 3)),
        keras.layers.Conv2D(16, 3, activation="relu", kernel_initializer=CorrelatedHeNormal(seed=0)),
        keras.layers.GlobalAveragePooling2D(),
        keras.layers.Dense(10),
    ]
)
print([round(e.final_variance, 3) for e in lsuv_initialize(model, x, orthogonal=False, verbose=0)])
