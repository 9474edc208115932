"""`initialize` on Keras Applications as their authors built them: the starting loss and the kernels' scale.

    KERAS_BACKEND=tensorflow python evidence/initialize_applications.py [Name ...]

Each Application with `weights=None, classes=10` (softmax heads, batch norm,
residual adds, depthwise and separable convolutions as built) at 32x32
(Xception: 71x71, its smallest input) on 256 photos32 crops scaled to
0-255 pixels. Prints, per model, the loss on the crops with Keras's own
initialization and after `initialize`, in inference mode (moving
statistics) and in training mode (batch statistics) (a uniform prediction:
log 10 = 2.303), the largest kernel RMS over its He-normal standard deviation, what
was set, what was skipped, the residual branch ends and heads found, how
many layers LSUV reverted, and `initialize`'s seconds.
"""

import math
import sys
import time
import warnings

import keras
import numpy as np

from keras_corrinit import initialize
from keras_corrinit._core.layers import walk_layers
from keras_corrinit.experiments._suite import datasets
from keras_corrinit.layerwise._lsuv import he_std

NAMES = [
    "MobileNetV2",
    "MobileNetV3Small",
    "EfficientNetB0",
    "ConvNeXtTiny",
    "DenseNet121",
    "Xception",
    "ResNet50",
    "VGG16",
]


def _training_loss(model, loss, images, labels):
    """The loss with batch norm on batch statistics (dropout on too), the moving statistics put back after."""
    saved = [(v, keras.ops.convert_to_numpy(v)) for v in model.non_trainable_weights]
    value = float(loss(labels, model(images, training=True)))
    for variable, array in saved:
        variable.assign(array)
    return value


def main(names):
    (x, y), _, _ = datasets.load("photos32")
    loss = keras.losses.SparseCategoricalCrossentropy()
    print(f"backend {keras.backend.backend()}, Keras {keras.__version__}; a uniform prediction: {math.log(10):.3f}\n")
    print(
        "| model | loss, Keras's init (inference / training) | after initialize (inference / training) | "
        "largest kernel / He | layers set | skipped | residual ends | heads | reverted | seconds |\n"
        "|---|---|---|---|---|---|---|---|---|---|"
    )
    for name in names:
        size = 71 if name == "Xception" else 32
        images = keras.ops.convert_to_numpy(keras.ops.image.resize(x[:256] * 255.0, (size, size)))
        keras.utils.set_random_seed(0)
        model = getattr(keras.applications, name)(weights=None, classes=10, input_shape=(size, size, 3))
        before = float(loss(y[:256], model(images, training=False)))
        before_training = _training_loss(model, loss, images, y[:256])
        start = time.perf_counter()
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always")
            report = initialize(model, images, samples=256, seed=0, verbose=0)
        seconds = time.perf_counter() - start
        after = float(loss(y[:256], model(images, training=False)))
        after_training = _training_loss(model, loss, images, y[:256])
        ratios = [
            float(np.sqrt(np.mean(keras.ops.convert_to_numpy(layer.kernel) ** 2))) / he_std(layer)
            for layer in walk_layers(model)
            if hasattr(layer, "kernel") and len(layer.kernel.shape) >= 2
        ]
        kinds = {}
        for entry in report:
            kind = entry.what.split(" (")[0]
            kinds[kind] = kinds.get(kind, 0) + 1
        reverted = sum("did not converge" in str(w.message) for w in caught)
        print(
            f"| {name} | {before:.3f} / {before_training:.3f} | {after:.3f} / {after_training:.3f} | "
            f"{max(ratios):.3g} | {len(report.layers)} ({', '.join(f'{k} {v}' for k, v in kinds.items())}) | "
            f"{len(report.skipped)} | "
            f"{len(report.residual_ends)} | {', '.join(report.heads)} | {reverted} | {seconds:.1f} |",
            flush=True,
        )


if __name__ == "__main__":
    main(sys.argv[1:] or NAMES)
