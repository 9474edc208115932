"""How `initialize` treats output heads, residual blocks and its sample size: the measurements behind its rules.

    python evidence/evidence_initialize_rules.py heads evidence/results/initialize-rules
    python evidence/evidence_initialize_rules.py residual evidence/results/initialize-rules
    python evidence/evidence_initialize_rules.py sample evidence/results/initialize-rules

* `heads`: the keras.io "Simple MNIST convnet" exactly as published (two
  ReLU convolutions, max pooling, dropout, `Dense(10, activation="softmax")`,
  Adam, batch 128) on scikit-learn's digits upsampled to 28x28; 5 paired
  seeds, 8 epochs; the model as written (`default`, Keras's
  glorot_uniform) against `initialize` with each head rule: `zero`, `small`
  (unit pre-activation variance, then x 0.1) and `lsuv` (unit
  pre-activation variance). Also each arm's loss before training.
* `residual`: ResNet-10 at width 0.25 (basic blocks, identity and
  projection shortcuts) on photos32, batch norm on and off, Adam 1e-3,
  batch 64; 5 paired seeds, 6 epochs; `default` against `initialize` with
  `residual="zero"` (each branch's last batch-norm gamma, or without batch
  norm its last convolution, at zero) and `residual="keep"` (the branch's
  convolutions start as the identity like any other).
* `sample`: how the first convolution's whitening depends on the number of
  images measured: the whitened outputs' covariance on photos32's test
  crops against the identity (relative Frobenius error), for 32 to 2,048
  training images, 5 draws each.

Writes Markdown (and the results store, which resumes) to the folder given.
"""

import dataclasses
import os
import sys

import keras
import numpy as np

from keras_corrinit import PatchWhitening, initialize
from keras_corrinit.correlation._patches import image_patches
from keras_corrinit.experiments import compare
from keras_corrinit.experiments._suite import datasets, networks
from keras_corrinit.experiments._suite.command import NetworkBuilder

sys.path.insert(0, os.path.dirname(__file__))
from evidence_initialize import SUMMARY_HEAD, summary_rows  # noqa: E402

SAMPLE = 1024


def digits28():
    (x_train, y_train), (x_test, y_test), _ = datasets.load_digits()
    return (datasets.resize_bilinear(x_train, 28), y_train), (datasets.resize_bilinear(x_test, 28), y_test)


@dataclasses.dataclass(frozen=True)
class KerasIoConvnet:
    """keras.io's "Simple MNIST convnet" as published (softmax head), `kernel_initializer` passed to every kernel."""

    def __call__(self, kernel_initializer, seed):
        model = networks.keras_io_convnet(kernel_initializer=kernel_initializer)
        # keras.io's one-hot categorical cross-entropy, on integer labels
        model.compile(loss="sparse_categorical_crossentropy", optimizer="adam", metrics=["accuracy"])
        return model


@dataclasses.dataclass(frozen=True)
class Initialize:
    """`initialize()` on the first 1,024 training images with one rule changed; `head_scale` scales the head after."""

    head: str = "zero"
    residual: str = "zero_last"
    head_scale: float = 1.0

    def __call__(self, model, train, seed):
        initialize(model, train[0][:SAMPLE], head=self.head, residual=self.residual, seed=seed, verbose=0)
        if self.head_scale != 1.0:
            head = [layer for layer in model.layers if isinstance(layer, keras.layers.Dense)][-1]
            head.kernel.assign(head.kernel * self.head_scale)


def _head():
    return [row.replace("he's", "default's").replace("to he,", "to default,") for row in SUMMARY_HEAD]


DEFAULT = keras.initializers.GlorotUniform()  # what Keras's Conv2D and Dense use when none is given


def initial_losses(build, arms, data, seeds):
    """Each arm's mean test loss before training, over the seeds."""
    (train, test) = data
    losses = {}
    for name, arm in arms.items():
        values = []
        for seed in range(seeds):
            keras.utils.set_random_seed(seed)
            if isinstance(arm, keras.initializers.Initializer):
                model = build(arm, seed)
            else:
                model = build(keras.initializers.HeNormal(seed), seed)
                arm(model, train, seed)
            values.append(model.evaluate(test[0], test[1], verbose=0, return_dict=True)["loss"])
        losses[name] = float(np.mean(values))
    return losses


def against_default(build, data, arms, epochs, batch_size, settings, out, folder):
    """5 paired seeds of `arms` against the model as written, stored (and resumed) in `out/folder`."""
    return compare(
        build,
        data,
        arms,
        seeds=5,
        epochs=epochs,
        baseline="default",
        controls=False,
        batch_size=batch_size,
        settings=settings,
        out=os.path.join(out, folder),
        monitor=False,
    )


def run_heads(out):
    data = digits28()
    arms = {
        "default": DEFAULT,
        "zero": Initialize(head="zero"),
        "small": Initialize(head="lsuv", head_scale=0.1),
        "lsuv": Initialize(head="lsuv"),
    }
    build = KerasIoConvnet()
    losses = initial_losses(build, arms, data, 5)
    result = against_default(build, data, arms, 8, 128, {"experiment": "heads", "data": "digits28"}, out, "heads")
    rows = summary_rows("keras.io convnet, digits 28x28", result, 8)
    lines = ["## Heads", "", "Loss before training: " + ", ".join(f"{k} {v:.3f}" for k, v in losses.items()), ""]
    return lines + _head() + rows + [""]


def run_residual(out):
    train, test, classes = datasets.load("photos32")
    lines, paired = ["## Residual blocks", ""] + _head(), []
    for batch_norm in (True, False):
        build = NetworkBuilder("resnet10", (32, 32, 3), classes, batch_norm, 0.25, 0.0, "adam", 1e-3, 0.0)
        # with batch norm every branch ends in a gamma: "zero_last" is "zero_gamma" there
        arms = {"default": DEFAULT, "zero": Initialize(residual="zero_last"), "keep": Initialize(residual="keep")}
        settings = {"experiment": "residual", "data": "photos32"}
        result = against_default(build, (train, test), arms, 6, 64, settings, out, "residual")
        title = f"ResNet-10 x0.25, BN {'on' if batch_norm else 'off'}"
        lines += summary_rows(title, result, 6)
        d = result.difference("zero", to="keep")
        paired.append(
            f"{title}: zero - keep {100 * d['mean']:+.1f} [{100 * d['low']:+.1f}, {100 * d['high']:+.1f}] points"
        )
    return lines + [""] + paired + [""]


def run_sample(out):
    (x_train, _), (x_test, _), _ = datasets.load("photos32")
    lines = [
        "## Sample size",
        "",
        "| images | relative error of the whitened covariance (mean over 5 draws) |",
        "|---|---|",
    ]
    kernel = 3
    for n in (32, 128, 512, 1024, 2048):
        errors = []
        for draw in range(5):
            images = x_train[np.random.default_rng(draw).choice(len(x_train), n, replace=False)]
            whitening = PatchWhitening.from_data(images, kernel, seed=draw)
            filters = whitening.filters[: 2 * 13]  # the top directions a 26-filter layer keeps, one sign each
            patches = keras.ops.convert_to_numpy(image_patches(x_test, (kernel, kernel))).reshape(-1, 27)
            covariance = np.cov((patches @ filters.T).T)
            errors.append(np.linalg.norm(covariance - np.eye(len(filters))) / np.sqrt(len(filters)))
        lines.append(f"| {n} | {np.mean(errors):.3f} |")
    return lines + [""]


def main(part, out):
    os.makedirs(out, exist_ok=True)
    lines = {"heads": run_heads, "residual": run_residual, "sample": run_sample}[part](out)
    path = os.path.join(out, f"{part}.md")
    with open(path, "w") as f:
        f.write(f"Backend {keras.backend.backend()}, Keras {keras.__version__}.\n\n" + "\n".join(lines) + "\n")
    print("\n".join(lines))


if __name__ == "__main__":
    main(*sys.argv[1:3])
