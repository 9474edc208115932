"""
Title: Gradient sign changes during training (Figures 4-6)
Author: keras_corrinit developers
Date created: 2026/11/25
Last modified: 2026/11/25
Description: GradientSignMonitor inside fit, the paper's figures, and GradientSignTracker in your own loop.
"""

"""
## Introduction

The correlated-initialization paper's evidence is the fraction of gradient sign
changes between consecutive updates ("zig-zag",
`sum_j |sign(g_j^(i)) - sign(g_j^(i+1))| / 2d`) and the gradient magnitude.
`GradientSignMonitor` measures both on the real gradients of every optimizer
step, inside the compiled step, on TensorFlow, JAX and PyTorch. It wraps the
model's optimizer for the length of `fit` (as Keras's `LossScaleOptimizer` wraps
one) and puts yours back at the end; if `fit` is interrupted, the wrapper saves
and loads exactly as your optimizer. The first step of each `fit` counts for
magnitude only; with `gradient_accumulation_steps` the applied updates are
measured; loss-scaled gradients are unscaled; NaN/Inf steps are counted, not
measured.

## Setup
"""

import os
import tempfile

import keras
import numpy as np
from sklearn.datasets import load_digits

from keras_corrinit import CorrelatedHeNormal, GradientSignMonitor, GradientSignTracker
from keras_corrinit.monitor import plot_training_curves

digits = load_digits()
x = (digits.images / 16.0).astype("float32")[..., None]
y = digits.target


def model_with(initializer, seed):
    keras.utils.set_random_seed(seed)
    model = keras.Sequential(
        [
            keras.Input((8, 8, 1)),
            keras.layers.Conv2D(16, 3, padding="same", activation="relu", kernel_initializer=initializer),
            keras.layers.Flatten(),
            keras.layers.Dense(10),
        ]
    )
    model.compile(
        keras.optimizers.SGD(0.01, momentum=0.8),
        keras.losses.SparseCategoricalCrossentropy(from_logits=True),
        metrics=["accuracy"],
    )
    return model


"""
## Inside `fit`

Per epoch the logs get `grad_sign_change`, `grad_magnitude` and
`grad_nonfinite_steps` (and, with `per_layer=True`, one of each per layer), so
`History`, `CSVLogger` and `TensorBoard` show them.
"""

histories = {"He": [], "correlated": []}
for seed in range(2):
    for name, init in (("He", keras.initializers.HeNormal(seed)), ("correlated", CorrelatedHeNormal(seed=seed))):
        model = model_with(init, seed)
        history = model.fit(
            x[:1200],
            y[:1200],
            epochs=3,
            batch_size=32,
            validation_data=(x[1200:], y[1200:]),
            callbacks=[GradientSignMonitor(per_layer=True)],
            verbose=0,
        )
        histories[name].append(history.history)
        print(name, seed, "sign changes per epoch:", np.round(history.history["grad_sign_change"], 3))

"""
Figures 4-6: several seeds per initializer, mean +/- std bands.
"""

figure = os.path.join(tempfile.mkdtemp(), "figure4.png")
plot_training_curves(histories, figure)
print("wrote", figure)

"""
## In your own training loop: `GradientSignTracker`

The monitor is built on `GradientSignTracker`, which you can call yourself:
`update(gradients)` once per optimizer step with the gradients you apply,
`result()` with the monitor's keys, `reset()` per epoch. The gradients come from
the backend (here one small function per backend); the tracker itself is plain
Keras. In a jitted JAX step use the stateless form:
`state = tracker.stateless_update(state, grads)` and `tracker.stateless_result(state)`.
"""

model = model_with("he_normal", 0)
optimizer = keras.optimizers.SGD(0.01, momentum=0.8)
optimizer.build(model.trainable_variables)
loss_fn = keras.losses.SparseCategoricalCrossentropy(from_logits=True)
tracker = GradientSignTracker(model.trainable_variables)


def gradients(xb, yb):
    backend = keras.backend.backend()
    if backend == "tensorflow":
        import tensorflow as tf

        with tf.GradientTape() as tape:
            loss = loss_fn(yb, model(xb, training=True))
        return tape.gradient(loss, model.trainable_variables)
    if backend == "torch":
        model.zero_grad()
        loss_fn(keras.ops.convert_to_tensor(yb), model(xb, training=True)).backward()
        return [v.value.grad for v in model.trainable_variables]
    import jax

    def loss_of(values):
        logits, _ = model.stateless_call(values, [v.value for v in model.non_trainable_variables], xb)
        return loss_fn(yb, logits)

    return jax.grad(loss_of)([v.value for v in model.trainable_variables])


for start in range(0, 1200, 32):
    grads = gradients(x[start : start + 32], y[start : start + 32])
    tracker.update(grads)
    optimizer.apply(grads, model.trainable_variables)
print({key: round(float(value), 4) for key, value in tracker.result().items()})
