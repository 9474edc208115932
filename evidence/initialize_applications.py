"""`initialize` on models as users get them: the starting loss, the kernels' scale, what was reached.

    KERAS_BACKEND=tensorflow python evidence/initialize_applications.py [Name ...]

Keras Applications as their authors built them (`weights=None, classes=10`:
softmax heads, batch norm, residual adds, depthwise and separable
convolutions) at 32x32 (Xception: 71x71, its smallest input), and the
keras.io examples, transformer blocks written as Layer subclasses and
KerasHub models of `evidence/published_models.py` (those take 0-255 pixels
and rescale them), on 256 photos32 crops (drawn at random) scaled to 0-255 pixels. Prints,
per model, the loss on the crops with the model's own initialization and
after `initialize`, in inference mode (moving statistics) and in training
mode (batch statistics) (a uniform prediction: log 10 = 2.303), the
largest kernel RMS over its He-normal standard deviation, the kernel layers
set over all kernel layers (attention counted as one), what was set, what
was skipped, the residual branch ends and heads found, how many layers LSUV
reverted, and `initialize`'s seconds.
"""

import contextlib
import math
import os
import sys
import time
import warnings

import keras
import numpy as np

from keras_corrinit import initialize
from keras_corrinit._core.layers import kernel_slots, walk_layers
from keras_corrinit._core.model_pass import display_names
from keras_corrinit.experiments._suite import datasets
from keras_corrinit.layerwise._lsuv import he_std
from keras_corrinit.normalization._statistics import batch_statistics

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from published_models import MAKERS  # noqa: E402 (beside this script)

NAMES = [
    "MobileNetV2",
    "MobileNetV3Small",
    "EfficientNetB0",
    "ConvNeXtTiny",
    "DenseNet121",
    "Xception",
    "ResNet50",
    "VGG16",
    *MAKERS,
]


def _training_loss(model, loss, images, labels):
    """The loss with batch norm on batch statistics (dropout on too), the moving statistics put back after."""
    saved = [(v, keras.ops.convert_to_numpy(v)) for v in model.non_trainable_weights]
    value = float(loss(labels, model(images, training=True)))
    for variable, array in saved:
        variable.assign(array)
    return value


def _make(name, x):
    """The model and the 256 crops at its input size, 0-255 pixels."""
    size = 71 if name == "Xception" else 32
    images = keras.ops.convert_to_numpy(keras.ops.image.resize(x * 255.0, (size, size)))
    keras.utils.set_random_seed(0)
    if name in MAKERS:
        return MAKERS[name](), images
    return getattr(keras.applications, name)(weights=None, classes=10, input_shape=(size, size, 3)), images


def _loss(model, images, labels, training):
    """The cross-entropy (of logits where the model gives them); training mode is batch normalization on
    batch statistics with dropout off (`batch_statistics`: what `initialize` measures), nothing changed."""
    with batch_statistics(model) if training else contextlib.nullcontext():
        outputs = keras.ops.convert_to_numpy(model(images, training=False))
    probabilities = bool(np.all(outputs >= 0) and np.allclose(outputs.sum(-1), 1, atol=1e-3))
    return float(keras.losses.SparseCategoricalCrossentropy(from_logits=not probabilities)(labels, outputs))


def _kernel_layers(model):
    return [
        layer
        for layer in walk_layers(model)
        if kernel_slots(layer) or isinstance(layer, keras.layers.MultiHeadAttention)
    ]


def main(names):
    (x, y), _, _ = datasets.load("photos32")
    # 256 crops drawn at random (the training set is ordered by class), the same for every model
    chosen = np.random.default_rng(0).choice(len(x), 256, replace=False)
    x, labels = x[chosen], y[chosen]
    print(f"backend {keras.backend.backend()}, Keras {keras.__version__}; a uniform prediction: {math.log(10):.3f}\n")
    print(
        "| model | loss, its own init (inference / training) | after initialize (inference / training) | "
        "largest kernel / He | kernel layers set / all | layers set | skipped | residual ends | heads | reverted "
        "| seconds |\n|---|---|---|---|---|---|---|---|---|---|---|"
    )
    for name in names:
        model, images = _make(name, x)
        before = (_loss(model, images, labels, False), _loss(model, images, labels, True))
        start = time.perf_counter()
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always")
            report = initialize(model, images, samples=256, seed=0, verbose=0)
        seconds = time.perf_counter() - start
        after = (_loss(model, images, labels, False), _loss(model, images, labels, True))
        ratios = [
            float(np.sqrt(np.mean(keras.ops.convert_to_numpy(layer.kernel) ** 2))) / he_std(layer)
            for layer in walk_layers(model)
            if hasattr(layer, "kernel") and len(layer.kernel.shape) >= 2
        ]
        kinds = {}
        for entry in report:
            kind = entry.what.split(" (")[0].split(";")[0]
            kinds[kind] = kinds.get(kind, 0) + 1
        names = display_names(model)
        kernel_names = {names[id(layer)] for layer in _kernel_layers(model)}
        set_names = {entry.name for entry in report}
        reverted = sum("did not converge" in str(w.message) for w in caught)
        skipped = "; ".join(f"{k}: {v}" for k, v in report.skipped.items()) or "0"
        print(
            f"| {name} | {before[0]:.3f} / {before[1]:.3f} | {after[0]:.3f} / {after[1]:.3f} | "
            f"{max(ratios):.3g} | {len(kernel_names & set_names)} / {len(kernel_names)} | "
            f"{', '.join(f'{k} {v}' for k, v in kinds.items())} | {skipped} | "
            f"{len(report.residual_ends)} | {', '.join(report.heads)} | {reverted} | {seconds:.1f} |",
            flush=True,
        )


if __name__ == "__main__":
    main(sys.argv[1:] or NAMES)
