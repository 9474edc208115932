"""
Title: Distributed training and mixed precision
Author: keras_corrinit developers
Date created: 2026/11/25
Last modified: 2026/11/25
Description: The initializers and GradientSignMonitor under Keras's distribution engines.
"""

"""
## Introduction

The initializers and `GradientSignMonitor` work with Keras's own distribution
engines; nothing here replaces them.

* **JAX**: `keras.distribution.DataParallel` and `ModelParallel`. Build, compile
  and fit with the distribution active, so that the monitor's per-parameter
  state gets the same layout as its parameter.
* **TensorFlow**: `tf.distribute.MirroredStrategy` (build and compile in
  `strategy.scope()`). The optimizer receives each replica's own gradients
  there, so the monitor sums them across replicas before measuring: it measures
  the global batch's gradient, as one device would.
* **PyTorch**: Keras has no distribution API on this backend; multi-GPU training
  is `DistributedDataParallel` around the Keras model in your own loop, where
  `GradientSignTracker` measures the averaged gradient (`tests/distributed_worker.py`
  runs a two-process DDP loop).

With an int seed every replica draws identical kernels. This guide runs on two
devices made from this machine's CPU.

## Setup
"""

import os

os.environ.setdefault("XLA_FLAGS", "--xla_force_host_platform_device_count=2")  # JAX: 2 CPU devices

import keras
import numpy as np

from keras_corrinit import CorrelatedHeNormal, GradientSignMonitor

x = np.random.rand(256, 16, 16, 3).astype("float32")
y = np.random.randint(0, 4, 256)


def build():
    model = keras.Sequential(
        [
            keras.Input((16, 16, 3)),
            keras.layers.Conv2D(8, 3, activation="relu", kernel_initializer=CorrelatedHeNormal(seed=1), name="conv"),
            keras.layers.GlobalAveragePooling2D(),
            keras.layers.Dense(4),
        ]
    )
    model.compile("sgd", keras.losses.SparseCategoricalCrossentropy(from_logits=True))
    return model


"""
## Data parallel, on the active backend
"""

backend = keras.backend.backend()
if backend == "jax":
    devices = keras.distribution.list_devices()
    distribution = keras.distribution.DataParallel(devices=devices)
    scope = distribution.scope()
elif backend == "tensorflow":
    import tensorflow as tf

    cpu = tf.config.list_physical_devices("CPU")[0]
    tf.config.set_logical_device_configuration(cpu, [tf.config.LogicalDeviceConfiguration()] * 2)
    strategy = tf.distribute.MirroredStrategy(["/cpu:0", "/cpu:1"])
    scope = strategy.scope()
else:
    import contextlib

    print("PyTorch: one device in fit; see GradientSignTracker for DDP loops")
    scope = contextlib.nullcontext()

with scope:
    model = build()
    history = model.fit(x, y, batch_size=64, epochs=2, callbacks=[GradientSignMonitor()], verbose=0)
print("sign changes per epoch:", np.round(history.history["grad_sign_change"], 3))

"""
## Mixed precision

Under `mixed_float16` or `mixed_bfloat16` Keras keeps variables in float32 and
asks the initializer for float32, so the weights are the float32 draw; called
directly with a half dtype, the initializers sample in float32 and cast. With
`mixed_float16` Keras wraps the optimizer in a `LossScaleOptimizer`; the monitor
measures the unscaled gradients.
"""

keras.mixed_precision.set_dtype_policy("mixed_bfloat16")
model = build()
print("kernel dtype under mixed_bfloat16:", model.get_layer("conv").kernel.dtype)
keras.mixed_precision.set_dtype_policy("float32")
