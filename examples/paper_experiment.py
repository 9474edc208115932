"""The correlated-initialization paper's experiment, on your machine, with the public API.

    python examples/paper_experiment.py [--seeds 5] [--epochs 10] [--out runs/paper-experiment]

A small CNN on scikit-learn's 8x8 digits (shipped with it, no download),
trained with SGD from He-normal weights (`he`, Algorithm 1's exact
baseline: R = I) and from correlated ones (`correlated`, Algorithm 1), with
the correlated arm's scale control (`correlated~var`: independent weights
with its variance). Prints paired differences over seeds with 95%
intervals, the epochs each arm needs to reach He's final accuracy, and
whether a difference is the correlation or the scale; writes the curves of
test accuracy and gradient sign changes (the paper's Figures 4-6).

The package's own benchmarks, with every arm and grid behind
docs/evidence.md, are `keras-corrinit compare --help`.
"""

import argparse
import os

import keras
import numpy as np
from sklearn.datasets import load_digits

from keras_corrinit.experiments import compare


def small_cnn(kernel_initializer, seed):
    """Conv 32, conv 32, 2x2 max pooling, conv 64, dense 10; compiled with SGD (lr 0.005, momentum 0.8)."""
    model = keras.Sequential(
        [
            keras.Input((8, 8, 1)),
            keras.layers.Conv2D(32, 3, padding="same", activation="relu", kernel_initializer=kernel_initializer),
            keras.layers.Conv2D(32, 3, padding="same", activation="relu", kernel_initializer=kernel_initializer),
            keras.layers.MaxPooling2D(),
            keras.layers.Conv2D(64, 3, padding="same", activation="relu", kernel_initializer=kernel_initializer),
            keras.layers.Flatten(),
            keras.layers.Dense(10, kernel_initializer=kernel_initializer),
        ]
    )
    model.compile(
        keras.optimizers.SGD(0.005, momentum=0.8),
        keras.losses.SparseCategoricalCrossentropy(from_logits=True),
        metrics=["accuracy"],
    )
    return model


def digits():
    """75/25 split of the 1,797 scans, scaled to [0, 1]."""
    data = load_digits()
    x, y = (data.images / 16.0).astype("float32")[..., None], data.target.astype("int32")
    order = np.random.default_rng(0).permutation(len(x))
    cut = int(0.75 * len(x))
    return (x[order[:cut]], y[order[:cut]]), (x[order[cut:]], y[order[cut:]])


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seeds", type=int, default=5)
    parser.add_argument("--epochs", type=int, default=10)
    parser.add_argument("--out", default="runs/paper-experiment")
    args = parser.parse_args(argv)
    result = compare(
        small_cnn,
        digits(),
        ["correlated"],
        seeds=args.seeds,
        epochs=args.epochs,
        settings={"optimizer": "SGD(0.005, momentum=0.8)", "network": "small_cnn"},
        out=args.out,
    )
    print(result.to_markdown())
    print(f"wrote {result.plot(os.path.join(args.out, 'curves.png'))}")


if __name__ == "__main__":
    main()
