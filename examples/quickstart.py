"""Quickstart: He-normal vs CorrelatedHeNormal vs EnhancedGamma, offline.

Trains a small CNN (no batch norm) on scikit-learn's handwritten digits, a
real image data set (1,797 8x8 grey-scale scans from UCI) that ships inside
the scikit-learn package, so nothing is downloaded. Each initializer is run
with several seeds; the script prints test accuracy (mean +/- std over seeds)
and writes `results.csv` and, if matplotlib is installed, `curves.png` to
`--out`.

    python examples/quickstart.py                 # backend from KERAS_BACKEND
    python examples/quickstart.py --seeds 5 --epochs 20 --lr 0.005

The setting follows the correlated-initialization paper's low learning-rate,
no-L2 regime (SGD, momentum 0.8), where it reports the largest gains; with a
data set this small the differences are within a few seeds' noise, so read
the table as a working demonstration, not as evidence.
"""

import argparse
import csv
import os
import statistics
import time

import keras
import numpy as np

from keras_corrinit import CorrelatedHeNormal, EnhancedGamma

INITIALIZERS = {
    "he_normal": lambda seed: keras.initializers.HeNormal(seed=seed),
    "correlated": lambda seed: CorrelatedHeNormal(seed=seed),
    "correlated_weight": lambda seed: CorrelatedHeNormal(variance_mode="weight", seed=seed),
    "enhanced_gamma": lambda seed: EnhancedGamma(seed=seed),
}


def load_digits(seed=0, test_fraction=0.25):
    """Digits as (N, 8, 8, 1) float32 in [0, 1], split with a fixed seed."""
    from sklearn.datasets import load_digits as sklearn_digits

    data = sklearn_digits()
    x = (data.images / 16.0).astype("float32")[..., None]
    y = data.target.astype("int32")
    order = np.random.default_rng(seed).permutation(len(x))
    n_test = int(len(x) * test_fraction)
    test, train = order[:n_test], order[n_test:]
    return (x[train], y[train]), (x[test], y[test])


def small_cnn(initializer_factory, seed):
    # One initializer instance per layer, each with its own seed, so that
    # layers of equal shape do not get identical weights.
    def conv(filters, i):
        return keras.layers.Conv2D(
            filters, 3, padding="same", activation="relu",
            kernel_initializer=initializer_factory(seed * 100 + i),
        )

    return keras.Sequential(
        [
            keras.Input((8, 8, 1)),
            conv(32, 0),
            conv(32, 1),
            keras.layers.MaxPooling2D(),
            conv(64, 2),
            keras.layers.Flatten(),
            keras.layers.Dense(10, kernel_initializer=keras.initializers.HeNormal(seed=seed)),
        ]
    )


def run(args):
    (x_train, y_train), (x_test, y_test) = load_digits()
    os.makedirs(args.out, exist_ok=True)
    rows, curves = [], {}
    for name, factory in INITIALIZERS.items():
        for seed in range(args.seeds):
            keras.utils.set_random_seed(seed)
            model = small_cnn(factory, seed)
            model.compile(
                optimizer=keras.optimizers.SGD(args.lr, momentum=0.8),
                loss=keras.losses.SparseCategoricalCrossentropy(from_logits=True),
                metrics=["accuracy"],
            )
            start = time.perf_counter()
            history = model.fit(
                x_train, y_train, batch_size=args.batch_size, epochs=args.epochs,
                validation_data=(x_test, y_test), shuffle=True, verbose=0,
            )
            accuracy = history.history["val_accuracy"][-1]
            curves.setdefault(name, []).append(history.history["val_accuracy"])
            rows.append({"initializer": name, "seed": seed, "test_accuracy": accuracy})
            print(
                f"{name:<15} seed {seed}: test accuracy {accuracy:.4f} "
                f"({time.perf_counter() - start:.1f}s)", flush=True,
            )
    with open(os.path.join(args.out, "results.csv"), "w", newline="") as f:
        writer = csv.DictWriter(f, fieldnames=["initializer", "seed", "test_accuracy"])
        writer.writeheader()
        writer.writerows(rows)
    print(f"\nbackend {keras.backend.backend()}, {args.seeds} seeds, {args.epochs} epochs, lr {args.lr}")
    print("| initializer | test accuracy (mean +/- std) |\n|---|---|")
    for name in INITIALIZERS:
        accs = [r["test_accuracy"] for r in rows if r["initializer"] == name]
        spread = statistics.stdev(accs) if len(accs) > 1 else 0.0
        print(f"| {name} | {statistics.mean(accs):.4f} +/- {spread:.4f} |")
    plot_curves(curves, os.path.join(args.out, "curves.png"))


def plot_curves(curves, path):
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        print("matplotlib not installed: no plot (pip install 'keras_corrinit[plot]').")
        return
    fig, ax = plt.subplots(figsize=(6, 4))
    for name, runs in curves.items():
        runs = np.array(runs)
        epochs = np.arange(1, runs.shape[1] + 1)
        mean, std = runs.mean(0), runs.std(0)
        ax.plot(epochs, mean, label=name)
        ax.fill_between(epochs, mean - std, mean + std, alpha=0.2)
    ax.set_xlabel("epoch")
    ax.set_ylabel("test accuracy")
    ax.set_title(f"digits, small CNN, {keras.backend.backend()} (mean +/- std)")
    ax.legend()
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    print(f"wrote {path}")


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seeds", type=int, default=3)
    parser.add_argument("--epochs", type=int, default=10)
    parser.add_argument("--lr", type=float, default=0.005)
    parser.add_argument("--batch-size", type=int, default=32)
    parser.add_argument("--out", default="runs/quickstart")
    run(parser.parse_args(argv))


if __name__ == "__main__":
    main()
