"""Does `initialize(model, data)` cut the epochs to He's accuracy? (issue 23's evidence)

    python evidence/evidence_initialize.py photos32 evidence/results/initialize-photos32
    KERAS_BACKEND=torch python evidence/evidence_initialize.py digits32 evidence/results/initialize-digits32

Each grid is a list of cells (data set, network, width, batch norm, SGD
learning rate, arms), each cell one `keras_corrinit.experiments.compare`
call over 5 seeds against `he` (untruncated He-normal). The arms, every
data-aware one measured on 512 training images:

* `initialize`: the recipe (whitened first convolution, He-normal
  elsewhere, LSUV's scale).
* `initialize_identity`: the same with `rest="identity"` (convolutions
  that can pass their input through start as the identity: airbench's
  identity init of the later convolutions); `initialize()`'s default.
* `initialize_whiten2`, `identity_whiten2`: whitening the first two
  convolutions (the second measured on what the whitened first one gives
  it), with He-normal or the identity for the rest.
* `identity_frozen`: `initialize_identity` with the whitened layer frozen
  (airbench trains its whitening layer's bias only).
* `whitening_control`: `initialize` with the whitened filters replaced by
  random orthonormal directions in +/- pairs of the same per-filter norms,
  then LSUV's scale again (whitening's structure against its scale).
* `identity_r_lsuv`, `builtin_r_lsuv`, `data_r_lsuv`: correlated He-normal
  with R = I, with the package's built-in R, and with the data's own R
  (measured per layer at each convolution's input, `correlation_from_data`),
  each at LSUV's scale (no whitening).
* `lsuv`: orthonormal + LSUV (the LSUV paper).

Writes `results.md`, one plot of the curves per cell and the results store
(runs resume from it) to the folder given. The settings of every cell are
in the store's keys (the builder's fields, the arms' fields, the data).
The committed photos32 run (TensorFlow 2.21, Keras 3.15.1, 2 CPU cores):
180 runs in about 85 minutes.
"""

import dataclasses
import os
import sys

import keras
import numpy as np

from keras_corrinit import CorrelatedHeNormal, SpatialCorrelation, correlation_from_data, initialize
from keras_corrinit.experiments import compare
from keras_corrinit.experiments._suite import datasets
from keras_corrinit.experiments._suite.command import NetworkBuilder, load_split
from keras_corrinit.layerwise import apply_initializers, layer_seeds

SAMPLE = 512


@dataclasses.dataclass(frozen=True)
class Recipe:
    """`initialize()` on the first 512 training images; optionally whitening's structure control."""

    rest: str = "he"
    whiten: int = 1
    control: bool = False
    freeze_whitened = False  # a class attribute, not a field: FrozenRecipe sets it

    def __call__(self, model, train, seed):
        x = train[0][:SAMPLE]
        initialize(
            model,
            x,
            whiten=self.whiten,
            rest=self.rest,
            freeze_whitened=self.freeze_whitened,
            batch_size=SAMPLE,
            seed=seed,
            verbose=0,
        )
        if self.control:
            stem = [layer for layer in model.layers if isinstance(layer, keras.layers.Conv2D)][0]
            k = keras.ops.convert_to_numpy(stem.kernel)
            shape, flat = k.shape, k.reshape(-1, k.shape[-1])
            d = flat.shape[0]
            kept = min(flat.shape[1], 2 * d)
            q, _ = np.linalg.qr(np.random.default_rng(seed).normal(size=(d, d)))
            directions = np.repeat(q[:, : (kept + 1) // 2], 2, axis=1)[:, :kept] * np.tile([1.0, -1.0], d)[:kept]
            flat[:, :kept] = directions * np.linalg.norm(flat[:, :kept], axis=0)
            stem.kernel.assign(flat.reshape(shape))
            initialize(model, x, whiten=0, rest="keep", batch_size=SAMPLE, seed=seed, verbose=0)


@dataclasses.dataclass(frozen=True)
class FrozenRecipe(Recipe):
    """`Recipe` with the whitened layers frozen (a class of its own: Recipe's store keys stay as they were)."""

    freeze_whitened = True


@dataclasses.dataclass(frozen=True)
class CorrelatedAtLsuvScale:
    """Every 3x3 convolution correlated He-normal with R = `"identity"`, `"builtin"` or `"data"`, then LSUV's scale."""

    correlation: str

    def __call__(self, model, train, seed):
        x = train[0][:SAMPLE]
        if self.correlation == "data":
            estimate = correlation_from_data(model, x, batch_size=SAMPLE)
            apply_initializers(model, estimate.layerwise_initializers(model, seed=seed))
        else:
            convolutions = [layer for layer in model.layers if isinstance(layer, keras.layers.Conv2D)]
            reference = SpatialCorrelation.identity() if self.correlation == "identity" else None
            apply_initializers(
                model,
                {
                    layer.name: CorrelatedHeNormal(reference, seed=layer_seed)
                    for layer, layer_seed in zip(convolutions, layer_seeds(seed, len(convolutions)))
                },
            )
        initialize(model, x, whiten=0, rest="keep", batch_size=SAMPLE, seed=seed, verbose=0)


ARMS = {
    "he": None,
    "initialize": Recipe(),
    "initialize_identity": Recipe(rest="identity"),
    "initialize_whiten2": Recipe(whiten=2),
    "identity_whiten2": Recipe(rest="identity", whiten=2),
    "identity_frozen": FrozenRecipe(rest="identity"),
    "whitening_control": Recipe(control=True),
    "identity_r_lsuv": CorrelatedAtLsuvScale("identity"),
    "builtin_r_lsuv": CorrelatedAtLsuvScale("builtin"),
    "data_r_lsuv": CorrelatedAtLsuvScale("data"),
    "lsuv": None,
}
CORE = ["he", "initialize", "initialize_identity", "whitening_control", "lsuv"]
# (network, width, batch norm, learning rate, arms); SGD with momentum 0.8, batch 32.
GRIDS = {
    "photos32": dict(
        epochs=8,
        cells=[
            ("small_cnn", 1.0, "off", 0.005, list(ARMS)),
            ("vgg8", 0.25, "off", 0.005, CORE + ["identity_whiten2", "identity_frozen"]),
            ("vgg8", 0.25, "on", 0.005, CORE),
            ("small_cnn", 1.0, "on", 0.005, CORE),
            ("small_cnn", 1.0, "off", 0.02, ["he", "initialize", "initialize_identity", "lsuv"]),
            ("small_cnn", 1.0, "on", 0.02, ["he", "initialize", "initialize_identity", "lsuv"]),
        ],
    ),
    "digits32": dict(
        epochs=12,
        cells=[
            ("small_cnn", 1.0, "off", 0.005, ["he", "initialize", "whitening_control", "lsuv"]),
            ("small_cnn", 1.0, "on", 0.005, ["he", "initialize", "whitening_control", "lsuv"]),
        ],
    ),
}


def summary_rows(title, result, epochs):
    """One row per arm: final accuracy, paired difference to He, epochs and seconds to He's final mean."""
    rows = []
    for arm in result.arms():
        finals = np.array(list(result.final(arm).values()))
        reach = result.epochs_to_target(arm)
        if arm == result.baseline:
            difference = "-"
        else:
            d = result.difference(arm)
            significant = " *" if d["low"] > 0 or d["high"] < 0 else ""
            difference = f"{100 * d['mean']:+.1f} [{100 * d['low']:+.1f}, {100 * d['high']:+.1f}]{significant}"
        if reach["reached"]:
            epochs_to, fraction, seconds = (
                f"{reach['mean_epochs']:.1f}",
                f"{reach['mean_epochs'] / epochs:.2f}",
                f"{reach['mean_seconds']:.0f}",
            )
        else:
            epochs_to, fraction, seconds = "never", "-", "-"
        rows.append(
            f"| {title} | {arm} | {finals.mean():.3f} | {difference} | {epochs_to} | {fraction} | {seconds} | "
            f"{reach['reached']}/{reach['n']} |"
        )
    return rows


SUMMARY_HEAD = [
    "| setting | arm | final accuracy | difference to he, points (95% CI) | epochs to he's final | "
    "/ he's epochs | seconds to it | seeds reaching |",
    "|---|---|---|---|---|---|---|---|",
]


def main(dataset, out):
    grid = GRIDS[dataset]
    (x_train, _), _, classes = datasets.load(dataset)
    os.makedirs(out, exist_ok=True)
    lines, summary = [], list(SUMMARY_HEAD)
    for network, width, bn, lr, names in grid["cells"]:
        builder = NetworkBuilder(network, tuple(x_train.shape[1:]), classes, bn == "on", width, 0.0, "sgd", lr, 0.8)
        result = compare(
            builder,
            load_split(dataset, None, None, None),
            {name: ARMS[name] for name in names},
            seeds=5,
            epochs=grid["epochs"],
            baseline="he",
            controls=False,
            settings={"dataset": dataset},
            out=os.path.join(out, "store"),
            verbose=0,
        )
        title = f"{network}{'' if width == 1 else f' x{width}'}, batch norm {bn}, lr {lr}"
        lines += [f"## {dataset}, {title}, SGD momentum 0.8, {grid['epochs']} epochs", "", result.to_markdown(), ""]
        summary += summary_rows(title, result, grid["epochs"])
        result.plot(os.path.join(out, f"curves_{network}-w{width}_bn-{bn}_lr{lr}.png"))
        print("\n".join(lines[-4:]), flush=True)
        with open(os.path.join(out, "results.md"), "w") as f:
            f.write("\n".join(lines))
        with open(os.path.join(out, "summary.md"), "w") as f:
            f.write("\n".join(summary) + "\n")


if __name__ == "__main__":
    main(*sys.argv[1:])
