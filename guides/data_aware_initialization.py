"""
Title: Data-aware initialization: patch whitening, the data's correlation, LSUV's scale
Author: keras_corrinit developers
Date created: 2026/11/30
Last modified: 2026/11/30
Description: Measure what each convolution sees, whiten the first one, and initialize a model in one call.
"""

"""
## Introduction

The correlated-initialization paper's Theorem 1 says gradient descent is slow
along directions in which a layer's inputs vary little, and spatially
correlated inputs (natural images: neighbouring pixels correlate at about
0.97) make most directions of a 3x3 patch such directions. Drawing correlated
weights does not remove that; **whitening the patches** the first
convolution sees does. This guide shows the three pieces and the one call
that combines them:

* `patch_statistics(model, data)` and `correlation_from_data(model, data)`:
  the covariance of every convolution's input patches, measured in one
  forward pass of the real model, and its spatial correlation R (the
  paper's premise, measured instead of assumed);
* `PatchWhitening`: a serializable initializer whose filters whiten a patch
  covariance, in +/- pairs;
* `initialize(model, data)`: whitened first convolution, the identity for
  every later convolution that can pass its input through (He-normal
  elsewhere), LSUV's data-driven scale for every layer not in front of a
  normalization, output layers as built, all or nothing, with a report.

What it buys, measured (the "Does it help?" page): on 32x32 crops of
photographs, the recipe reaches He's final test accuracy in a fraction of
He's epochs without batch norm; its scale control (the same filter norms in
random directions) does not, so the whitening's structure is what helps.

## Setup
"""

import tempfile

import keras
import numpy as np
from sklearn.datasets import load_sample_images

from keras_corrinit import PatchWhitening, correlation_from_data, initialize
from keras_corrinit.extraction import patch_statistics

keras.utils.set_random_seed(0)

"""
Natural images without a download: 32x32 crops of the two photographs that
ship with scikit-learn (china and flower); the label says which photograph
a crop comes from. Training crops come from the left 3/4 of each
photograph, test crops from the right quarter, so they never share a
pixel.
"""

rng = np.random.default_rng(0)


def crops(image, count, columns):
    tops = rng.integers(0, image.shape[0] - 32, count)
    lefts = rng.integers(columns[0], columns[1] - 32, count)
    return (
        np.stack([image[top : top + 32, left : left + 32] for top, left in zip(tops, lefts)]).astype("float32") / 255.0
    )


photographs = load_sample_images().images
x_train = np.concatenate([crops(p, 256, (0, 480)) for p in photographs])
y_train = np.repeat([0, 1], 256)
x_test = np.concatenate([crops(p, 64, (480, 640)) for p in photographs])
y_test = np.repeat([0, 1], 64)


def make_model():
    return keras.Sequential(
        [
            keras.Input((32, 32, 3)),
            keras.layers.Conv2D(24, 3, activation="relu", name="stem"),
            keras.layers.Conv2D(24, 3, activation="relu", name="same_width"),
            keras.layers.MaxPooling2D(),
            keras.layers.Conv2D(48, 3, activation="relu", name="wider"),
            keras.layers.GlobalAveragePooling2D(),
            keras.layers.Dense(2, name="head"),
        ]
    )


"""
## What each convolution sees

`patch_statistics` runs the model once on a sample, intercepting every
Conv2D's call, and returns per layer the covariance of its input patches
(`k*k*C_in` dimensions, from at most `max_patches_per_batch` patches per
batch drawn at random, so memory is one `D x D` matrix per layer whatever
the data set's size). `correlation_from_data` turns them into the package's
`CorrelationEstimate`: R (9 x 9 for 3x3 kernels, averaged over channels),
per layer and pooled, usable wherever a trained model's estimate is.
"""

model = make_model()
statistics = patch_statistics(model, x_train[:256], batch_size=256)
for name, s in statistics.items():
    print(f"{name}: {s.count} patches of dimension {s.dimension}")

estimate = correlation_from_data(model, x_train[:256], batch_size=256)
print("the data's R at the stem, centre row:")
print(np.round(estimate.layer_matrices["stem"][4].reshape(3, 3), 2))

"""
The neighbours of a pixel correlate at 0.9 and more with it: most of a 3x3
patch's variance lies in few directions. `estimate.layerwise_initializers(
model)` draws each layer's weights with its own measured R
(`CorrelatedHeNormal`), if you want the paper's method with the data's R.

## `PatchWhitening`: a whitened first convolution

`PatchWhitening.from_data(images, kernel_size)` measures the patch
covariance of the images and returns an initializer whose filters are its
eigenvectors scaled by `(eigenvalue + eps)^-1/2`, largest first, in +/-
pairs (a ReLU after the layer keeps both signs of each direction). On that
data the layer's outputs along the kept directions are uncorrelated with
unit variance, to the sampling error of the patches it measured (at most
`max_patches_per_batch` per batch of 256 images):
"""

whitening = PatchWhitening.from_data(x_train, kernel_size=3)
stem = keras.layers.Conv2D(24, 3, use_bias=False, kernel_initializer=whitening)
outputs = keras.ops.convert_to_numpy(stem(x_train)).reshape(-1, 24)
covariance = np.cov(outputs[:, 0::2], rowvar=False)  # the "+" half: 12 directions
print("output variances:", np.round(np.diag(covariance), 3))
print("largest correlation between directions:", np.abs(covariance - np.diag(np.diag(covariance))).max().round(4))

"""
It is an ordinary initializer: it serializes (its covariance is in its
config) and a `.keras` file reloads it exactly.
"""

keras_file = f"{tempfile.mkdtemp()}/whitened.keras"
whitened_model = keras.Sequential([keras.Input((32, 32, 3)), stem])
whitened_model.save(keras_file)
reloaded = keras.saving.load_model(keras_file)
print("round trip exact:", np.array_equal(reloaded.layers[0].get_weights()[0], stem.get_weights()[0]))

"""
## One call: `initialize(model, data)`

`initialize` measures once, whitens the first `whiten` convolutions (default
1), keeps the output layer as built, starts every other convolution that
can pass its input through as the identity (Dirac kernels on its first
in_channels filters; airbench's choice) and draws He-normal for the rest
(`rest="he"`: He-normal everywhere), then runs LSUV on the first batch so
that every layer's pre-activation output has unit variance: no layer's
scale rests on a formula's guess. A kernel whose one consumer is a batch,
layer or group normalization gets its rule's direction at the norm it was
built with instead (the normalization cancels its scale). It never half-modifies a model: on any
error every weight is as it was. The report says what it set, each layer's
pre-activation variance before and after, and how many samples and patches
it measured.
"""

model = make_model()
report = initialize(model, x_train, seed=0, verbose=0)
print(report)

he_model = make_model()
print([entry.what for entry in initialize(he_model, x_train, rest="he", seed=0, verbose=0)])

"""
## A model as keras.io publishes it

The keras.io "Simple MNIST convnet" ends in `Dense(10, activation="softmax")`.
`initialize` finds that output layer in the model's graph and starts it at
zero, so the model starts at the loss of a uniform prediction (log 10 =
2.303); LSUV's scale is taken before each layer's activation, so no
softmax is pushed into saturation. Here on 28x28 crops (the digits would do
the same):
"""

convnet = keras.Sequential(
    [
        keras.Input((28, 28, 1)),
        keras.layers.Conv2D(32, kernel_size=(3, 3), activation="relu"),
        keras.layers.MaxPooling2D(pool_size=(2, 2)),
        keras.layers.Conv2D(64, kernel_size=(3, 3), activation="relu"),
        keras.layers.MaxPooling2D(pool_size=(2, 2)),
        keras.layers.Flatten(),
        keras.layers.Dropout(0.5),
        keras.layers.Dense(10, activation="softmax"),
    ]
)
gray = x_train[:, 2:30, 2:30].mean(axis=-1, keepdims=True)
report = initialize(convnet, gray, seed=0, verbose=0)
print([(entry.name, entry.what) for entry in report])
loss = keras.losses.SparseCategoricalCrossentropy()(y_train, convnet(gray))
print("starting loss:", float(loss))

"""
## Fewer epochs?

The same model from Keras's He-normal and from `initialize`, trained for
three epochs with the same seed. (One seed is an anecdote: the evidence
with five seeds, paired intervals and controls is on the "Does it help?"
page, and `keras_corrinit.experiments.compare` runs it on your model, see
the "Does it help on my model?" guide.)
"""


for name, from_data in (("he_normal", False), ("initialize", True)):
    keras.utils.set_random_seed(1)
    model = make_model()
    if from_data:
        initialize(model, x_train, seed=1, verbose=0)
    model.compile(
        keras.optimizers.SGD(0.005, momentum=0.8),
        keras.losses.SparseCategoricalCrossentropy(from_logits=True),
        metrics=["accuracy"],
    )
    history = model.fit(x_train, y_train, validation_data=(x_test, y_test), epochs=3, batch_size=32, verbose=0)
    print(name, "test accuracy per epoch:", np.round(history.history["val_accuracy"], 3))

"""
## Options worth knowing

* `whiten=2` whitens the first two convolutions (each measured on what the
  previous, already whitened, layer gives it); `whiten=0` gives He-normal and
  LSUV's scale only.
* `freeze_whitened=True` keeps the whitening fixed during training (a
  whitening front end, as in airbench).
* `include_frozen=True` also sets layers with `trainable=False`, which are
  otherwise left alone (and listed in `report.skipped`).
* `samples=` (default 1,024: the whitening's error on held-out images
  changes by under 2% beyond it, see the evidence page) and `batch_size=`
  (default 128; LSUV's pass uses the first batch) choose the sample; it is
  streamed batch by batch, so memory is bounded by one batch and
  `max_patches_per_batch`, not by the data set.
* `head="zero"` starts the output layer at zero (a uniform prediction at
  the start, whatever its activation), `head="lsuv"` gives it LSUV's unit
  pre-activation variance; `residual="zero_gamma"` starts each residual
  branch that ends in a batch norm at zero gamma, `"zero_last"` also the
  last convolution of branches without one; `normalized="keep"` or
  `"lsuv"` leave the kernels in front of a normalization as built or let
  LSUV scale them.
* `include=` / `exclude=` (regular expressions searched in layer names, as
  for `lsuv_initialize`) choose the layers.
"""
