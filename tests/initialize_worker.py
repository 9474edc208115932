"""`initialize` under Keras's JAX `DataParallel` on 8 forced CPU devices (run by test_distributed.py).

    python tests/initialize_worker.py OUT_DIR

Builds the same model (same seed) on one device and under `DataParallel`
over 8 devices, runs `initialize` on the same data (the distributed run's
batches sharded over the devices along the batch axis), and writes both
models' weights to `OUT_DIR/initialize.npz`.
"""

import os
import sys

os.environ["KERAS_BACKEND"] = "jax"
os.environ["XLA_FLAGS"] = "--xla_force_host_platform_device_count=8"

import keras  # noqa: E402
import numpy as np  # noqa: E402

from keras_corrinit import initialize  # noqa: E402

X = np.random.default_rng(0).normal(size=(256, 12, 12, 3)).astype("float32")


def build():
    keras.utils.set_random_seed(0)
    inputs = keras.Input((12, 12, 3))
    x = keras.layers.Conv2D(16, 3, padding="same", activation="relu", name="stem")(inputs)
    y = keras.layers.Conv2D(16, 3, padding="same", name="branch")(x)
    y = keras.layers.BatchNormalization(name="branch_bn")(y)
    x = keras.layers.ReLU()(keras.layers.Add()([x, y]))
    x = keras.layers.GlobalAveragePooling2D()(x)
    return keras.Model(inputs, keras.layers.Dense(10, activation="softmax", name="head")(x))


def weights(model):
    return {
        f"{layer.name}/{i}": keras.ops.convert_to_numpy(w)
        for layer in model.layers
        for i, w in enumerate(layer.weights)
    }


single = build()
initialize(single, X, batch_size=64, residual="zero_gamma", seed=3, verbose=0)

devices = keras.distribution.list_devices("cpu")
assert len(devices) == 8, devices
distribution = keras.distribution.DataParallel(devices=devices)
keras.distribution.set_distribution(distribution)
parallel = build()


def sharded_batches():
    for start in range(0, len(X), 64):
        batch = X[start : start + 64]
        yield keras.distribution.distribute_tensor(batch, distribution.get_data_layout(batch.shape))


initialize(parallel, sharded_batches(), residual="zero_gamma", seed=3, verbose=0)
out = sys.argv[1]
np.savez(
    os.path.join(out, "initialize.npz"),
    **{f"single/{k}": v for k, v in weights(single).items()},
    **{f"parallel/{k}": v for k, v in weights(parallel).items()},
)
