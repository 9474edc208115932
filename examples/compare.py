"""Compare initializers the way the correlated-initialization paper does.

Initializers x networks x data sets x batch norm (on/off) x seeds, trained
with SGD (momentum 0.8, no augmentation) and GradientSignMonitor on. Writes
to `--out`:

* `results.csv`: one row per finished run (the script is resumable: a run
  already in it is not repeated);
* `histories/<run>.json`: per-epoch logs (loss, accuracy, val_accuracy,
  grad_sign_change, grad_magnitude);
* `results.md`: test accuracy, mean +/- std over seeds, per configuration
  (the paper's Table 3 layout), also printed;
* `curves_<dataset>_<network>_bn-<on|off>.png`: sign changes, gradient
  magnitude and test accuracy per epoch, mean +/- std bands (Figures 4-6).

Default (no download needed, a couple of minutes on 2 CPU cores):
scikit-learn's handwritten digits (1,797 real 8x8 scans shipped with the
package; the only real image data set available offline here), a small CNN,
He vs CorrelatedHeNormal in both variance modes vs EnhancedGamma, with and
without batch norm, 3 seeds. The paper's setting, on a machine with the data:

    python examples/compare.py --dataset cifar10 cifar100 --network vgg8 resnet10 \\
        --width 0.5 --epochs 40 --lr 0.005 --batch-size 256 --seeds 5 \\
        --init he_normal correlated orthogonal glorot_normal --batch-norm on

CIFAR-10/100 and SVHN come from tensorflow-datasets (`--data-dir` points at
a TFDS data directory); if TFDS cannot download them the error says what to
fetch and where to put it.
"""

import argparse
import csv
import json
import os
import statistics
import sys
import time

import keras
import numpy as np

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

import networks  # noqa: E402

from keras_corrinit import (  # noqa: E402
    CorrelatedHeNormal,
    CorrelationEstimate,
    EnhancedGamma,
    GradientSignMonitor,
    lsuv_initialize,
    plot_training_curves,
)

TFDS_NAMES = {"cifar10": "cifar10", "cifar100": "cifar100", "svhn": "svhn_cropped"}
FIELDS = ["dataset", "network", "batch_norm", "init", "seed", "test_accuracy", "seconds"]


# ------------------------------------------------------------------ data
def load_digits(test_fraction=0.25, split_seed=0):
    from sklearn.datasets import load_digits as sklearn_digits

    data = sklearn_digits()
    x = (data.images / 16.0).astype("float32")[..., None]
    y = data.target.astype("int32")
    order = np.random.default_rng(split_seed).permutation(len(x))
    n_test = int(len(x) * test_fraction)
    return (x[order[n_test:]], y[order[n_test:]]), (x[order[:n_test]], y[order[:n_test]]), 10


def load_tfds(name, data_dir=None):
    import tensorflow_datasets as tfds

    tfds_name = TFDS_NAMES[name]
    try:
        splits = tfds.load(tfds_name, split=["train", "test"], as_supervised=True, data_dir=data_dir)
        # element-wise iteration: batch_size=-1 crashes under tfds.testing.mock_data
        (x_train, y_train), (x_test, y_test) = [
            tuple(np.stack(column) for column in zip(*tfds.as_numpy(split))) for split in splits
        ]
        classes = tfds.builder(tfds_name, data_dir=data_dir).info.features["label"].num_classes
    except Exception as error:  # TFDS raises several types for a failed download
        folder = data_dir or os.path.join(os.path.expanduser("~"), "tensorflow_datasets")
        raise ValueError(
            f"tensorflow-datasets could not load {tfds_name!r} ({type(error).__name__}: "
            f"{str(error)[:200]}). On a machine with internet run "
            f"`python -c \"import tensorflow_datasets as tfds; tfds.load('{tfds_name}')\"`, "
            f"copy the folder ~/tensorflow_datasets/{tfds_name} into {folder}, and "
            "pass that parent folder as --data-dir."
        ) from error
    scale = lambda x: x.astype("float32") / 255.0  # noqa: E731
    return (scale(x_train), y_train.astype("int32")), (scale(x_test), y_test.astype("int32")), classes


def load(name, data_dir=None, max_train=None, max_test=None):
    if name == "digits":
        train, test, classes = load_digits()
    elif name in TFDS_NAMES:
        train, test, classes = load_tfds(name, data_dir)
    else:
        raise ValueError(f"Unknown data set {name!r}; choose from {['digits', *TFDS_NAMES]}.")
    cut = lambda pair, n: pair if n is None else (pair[0][:n], pair[1][:n])  # noqa: E731
    return cut(train, max_train), cut(test, max_test), classes


# ---------------------------------------------------------- initializers
def initializer_factory(name, seed, correlation=None, alpha=1.0):
    """Zero-argument factory giving each layer its own seeded initializer."""
    counter = iter(range(10**6))
    makers = {
        "he_normal": lambda s: keras.initializers.HeNormal(seed=s),
        "correlated": lambda s: CorrelatedHeNormal(correlation, alpha=alpha, seed=s),
        "correlated_weight": lambda s: CorrelatedHeNormal(correlation, alpha=alpha, variance_mode="weight", seed=s),
        "enhanced_gamma": lambda s: EnhancedGamma(seed=s),
        "orthogonal": lambda s: keras.initializers.Orthogonal(seed=s),
        "glorot_normal": lambda s: keras.initializers.GlorotNormal(seed=s),
        "lsuv": lambda s: keras.initializers.Orthogonal(seed=s),  # then lsuv_initialize
    }
    if name not in makers:
        raise ValueError(f"Unknown initializer {name!r}; choose from {sorted(makers)}.")
    return lambda: makers[name](seed * 1000 + next(counter))


INITIALIZERS = ["he_normal", "correlated", "correlated_weight", "enhanced_gamma", "orthogonal", "glorot_normal", "lsuv"]


# -------------------------------------------------------------- running
def run_key(row):
    return "_".join(str(row[f]) for f in FIELDS[:5])


def train_one(args, dataset, data, network, batch_norm, init, seed, correlation):
    (x_train, y_train), (x_test, y_test), classes = data
    keras.utils.set_random_seed(seed)
    model = networks.build(
        network, x_train.shape[1:], classes, initializer_factory(init, seed, correlation, args.alpha),
        batch_norm=batch_norm, width=args.width, l2=args.l2,
    )
    if init == "lsuv":
        lsuv_initialize(model, x_train[: args.batch_size], verbose=0, seed=seed)
    model.compile(
        optimizer=keras.optimizers.SGD(args.lr, momentum=0.8),
        loss=keras.losses.SparseCategoricalCrossentropy(from_logits=True),
        metrics=["accuracy"],
    )
    history = model.fit(
        x_train, y_train, batch_size=args.batch_size, epochs=args.epochs,
        validation_data=(x_test, y_test), callbacks=[GradientSignMonitor()], verbose=0,
    )
    return history.history


def summarize(rows):
    groups = {}
    for row in rows:
        groups.setdefault(tuple(row[f] for f in FIELDS[:4]), []).append(float(row["test_accuracy"]))
    lines = ["| dataset | network | batch norm | initializer | seeds | test accuracy |", "|---|---|---|---|---|---|"]
    for (dataset, network, bn, init), accs in sorted(groups.items()):
        spread = statistics.stdev(accs) if len(accs) > 1 else 0.0
        lines.append(f"| {dataset} | {network} | {bn} | {init} | {len(accs)} | {statistics.mean(accs):.4f} +/- {spread:.4f} |")
    return "\n".join(lines)


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--dataset", nargs="+", default=["digits"], choices=["digits", *TFDS_NAMES])
    parser.add_argument("--network", nargs="+", default=None, choices=sorted(networks.NETWORKS),
                        help="default: small_cnn for digits, vgg8 and resnet10 otherwise")
    parser.add_argument("--init", nargs="+", default=["he_normal", "correlated", "correlated_weight", "enhanced_gamma"],
                        choices=INITIALIZERS)
    parser.add_argument("--batch-norm", nargs="+", default=["off", "on"], choices=["off", "on"])
    parser.add_argument("--seeds", type=int, default=3)
    parser.add_argument("--epochs", type=int, default=10)
    parser.add_argument("--lr", type=float, default=0.005)
    parser.add_argument("--l2", type=float, default=0.0)
    parser.add_argument("--batch-size", type=int, default=32)
    parser.add_argument("--width", type=float, default=1.0)
    parser.add_argument("--alpha", type=float, default=1.0, help="CorrelatedHeNormal strength factor")
    parser.add_argument("--correlation", help="R source: a JSON file from `keras-corrinit extract` (default: built-in)")
    parser.add_argument("--data-dir", help="tensorflow-datasets data directory")
    parser.add_argument("--max-train", type=int, help="use only this many training samples")
    parser.add_argument("--max-test", type=int, help="use only this many test samples")
    parser.add_argument("--out", default="runs/compare")
    args = parser.parse_args(argv)

    correlation = CorrelationEstimate.load(args.correlation) if args.correlation else None
    os.makedirs(os.path.join(args.out, "histories"), exist_ok=True)
    csv_path = os.path.join(args.out, "results.csv")
    rows = list(csv.DictReader(open(csv_path))) if os.path.exists(csv_path) else []
    done = {run_key(r) for r in rows}
    plan = [
        dict(dataset=d, network=n, batch_norm=b, init=i, seed=s)
        for d in args.dataset
        for n in (args.network or (["small_cnn"] if d == "digits" else ["vgg8", "resnet10"]))
        for b in args.batch_norm for i in args.init for s in range(args.seeds)
    ]
    todo = [p for p in plan if run_key(p) not in done]
    print(f"{len(plan)} runs planned, {len(plan) - len(todo)} already in {csv_path}; "
          f"backend {keras.backend.backend()}", flush=True)
    data_cache = {}
    for number, run in enumerate(todo, 1):
        if run["dataset"] not in data_cache:
            data_cache[run["dataset"]] = load(run["dataset"], args.data_dir, args.max_train, args.max_test)
        start = time.perf_counter()
        history = train_one(args, run["dataset"], data_cache[run["dataset"]], run["network"],
                            run["batch_norm"] == "on", run["init"], run["seed"], correlation)
        row = {**run, "test_accuracy": history["val_accuracy"][-1], "seconds": round(time.perf_counter() - start, 1)}
        with open(os.path.join(args.out, "histories", run_key(run) + ".json"), "w") as f:
            json.dump(history, f)
        new_file = not os.path.exists(csv_path)
        with open(csv_path, "a", newline="") as f:
            writer = csv.DictWriter(f, fieldnames=FIELDS)
            if new_file:
                writer.writeheader()
            writer.writerow(row)
        rows.append({k: str(v) for k, v in row.items()})
        print(f"[{number}/{len(todo)}] {run_key(run)}: test accuracy {row['test_accuracy']:.4f}, "
              f"sign changes epoch 1 {history['grad_sign_change'][0]:.4f} ({row['seconds']}s)", flush=True)

    table = summarize(rows)
    with open(os.path.join(args.out, "results.md"), "w") as f:
        f.write(f"backend {keras.backend.backend()}, epochs {args.epochs}, lr {args.lr}, l2 {args.l2}, "
                f"batch {args.batch_size}, width {args.width}\n\n{table}\n")
    print(table)
    write_plots(rows, args.out)


def write_plots(rows, out):
    try:
        import matplotlib  # noqa: F401
    except ImportError:
        print("matplotlib not installed: no plots (pip install 'keras_corrinit[plot]').")
        return
    groups = {}
    for row in rows:
        with open(os.path.join(out, "histories", run_key(row) + ".json")) as f:
            history = json.load(f)
        key = (row["dataset"], row["network"], row["batch_norm"])
        groups.setdefault(key, {}).setdefault(row["init"], []).append(history)
    for (dataset, network, bn), runs in sorted(groups.items()):
        path = os.path.join(out, f"curves_{dataset}_{network}_bn-{bn}.png")
        plot_training_curves(runs, path)
        print(f"wrote {path}")


if __name__ == "__main__":
    main()
