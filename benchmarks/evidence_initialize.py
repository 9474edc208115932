"""Does `initialize(model, data)` cut the epochs to He's accuracy? A first measurement (issue 23).

    KERAS_BACKEND=torch python benchmarks/evidence_initialize.py examples/results/initialize-digits32

digits32 (the digits resized to 32x32 and shifted: spatially correlated
inputs), the small CNN, SGD (lr 0.005, momentum 0.8), 12 epochs, 5 seeds,
batch norm off and on, through `keras_corrinit.experiments.compare`. Arms:
`he` (untruncated He-normal, the baseline); `initialize` (the recipe:
whitened first convolution, He-normal elsewhere, LSUV's scale, measured on
512 training images); `whitening_control` (the same, with the whitened
filters replaced by random orthonormal directions in +/- pairs of the same
per-filter norms, then LSUV's scale again: structure vs scale); `lsuv`
(orthonormal + LSUV). Writes `results.md`, the curves and the results
store to the folder given. The committed run was made on an H200 GPU
(PyTorch 2.11, Keras 3.15.1): 40 runs in 6.6 minutes.
"""

import os
import sys

import keras
import numpy as np

from keras_corrinit import initialize
from keras_corrinit._benchmarks import datasets
from keras_corrinit._benchmarks.compare import NetworkBuilder, load_split
from keras_corrinit.experiments import compare


class Recipe:
    """initialize() on 512 training images."""

    def __init__(self, control=False):
        self.control = control

    def __call__(self, model, train, seed):
        x = train[0][:512]
        initialize(model, x, batch_size=512, seed=seed, verbose=0)
        if self.control:
            # Whitening's structure control: the whitened filters replaced by random orthonormal
            # directions in +/- pairs with the same per-filter norms, then LSUV's scale again.
            stem = [layer for layer in model.layers if isinstance(layer, keras.layers.Conv2D)][0]
            k = keras.ops.convert_to_numpy(stem.kernel)
            shape, flat = k.shape, k.reshape(-1, k.shape[-1])
            d = flat.shape[0]
            kept = min(flat.shape[1], 2 * d)
            q, _ = np.linalg.qr(np.random.default_rng(seed).normal(size=(d, d)))
            directions = np.repeat(q[:, : (kept + 1) // 2], 2, axis=1)[:, :kept] * np.tile([1.0, -1.0], d)[:kept]
            flat[:, :kept] = directions * np.linalg.norm(flat[:, :kept], axis=0)
            stem.kernel.assign(flat.reshape(shape))
            initialize(model, x, whiten=0, rest="keep", batch_size=512, seed=seed, verbose=0)


def main(out):
    data = datasets.load("digits32")
    (x_train, _), _, classes = data
    lines = []
    for bn in ("off", "on"):
        builder = NetworkBuilder(
            "small_cnn", tuple(x_train.shape[1:]), classes, bn == "on", 1.0, 0.0, "sgd", 0.005, 0.8
        )
        result = compare(
            builder,
            load_split("digits32", None, None, None),
            {"he": None, "initialize": Recipe(), "whitening_control": Recipe(control=True), "lsuv": None},
            seeds=5,
            epochs=12,
            baseline="he",
            controls=False,
            settings={"dataset": "digits32", "network": "small_cnn", "batch_norm": bn, "lr": 0.005, "momentum": 0.8},
            out=os.path.join(out, "store"),
            verbose=0,
        )
        lines += [
            f"## digits32, small_cnn, batch norm {bn}, SGD lr 0.005 momentum 0.8, 12 epochs",
            "",
            result.to_markdown(),
            "",
        ]
        result.plot(os.path.join(out, f"curves_bn-{bn}.png"))
        print("\n".join(lines[-4:]), flush=True)
    with open(os.path.join(out, "results.md"), "w") as f:
        f.write("\n".join(lines))


if __name__ == "__main__":
    main(sys.argv[1])
