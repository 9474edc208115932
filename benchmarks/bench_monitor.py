"""Cost of GradientSignMonitor in `fit`: whole fits with it, as a ratio to fits without it.

Usage:

    KERAS_BACKEND=tensorflow python benchmarks/bench_monitor.py [--repeats 6] [--steps 20] [--epochs 2]
    python benchmarks/bench_monitor.py --all-backends

A small residual CNN (three residual stages, 32x32x3 inputs, batch 64) is
trained on random data with SGD + momentum and the default jit_compile, one
model per configuration, in one process. Each timed call is one whole
`fit` of `--epochs` epochs of `--steps` steps (what a user waits for: any
per-fit cost, such as re-making the train function, counts), and the
configurations take turns in ABBA order (monitored, plain, plain,
monitored, ...) so that a drift of the machine or of the backend over the
process's life falls on both alike; the first fit of each model (which
traces and compiles) is the warm-up. Reported: each configuration's median
fit time and its ratio to the plain one; a second plain model measures the
noise floor (an A/A ratio, 1 on a perfectly quiet machine). Goal: <= 1.05
for the monitor with per-epoch values.
"""

import _harness


def resnet_like(keras):
    inputs = keras.Input((32, 32, 3))
    x = keras.layers.Conv2D(32, 3, padding="same", activation="relu")(inputs)
    for filters in (32, 64, 128):
        shortcut = keras.layers.Conv2D(filters, 1, strides=2)(x)
        y = keras.layers.Conv2D(filters, 3, strides=2, padding="same", activation="relu")(x)
        y = keras.layers.BatchNormalization()(y)
        y = keras.layers.Conv2D(filters, 3, padding="same")(y)
        x = keras.layers.ReLU()(keras.layers.Add()([shortcut, y]))
    x = keras.layers.GlobalAveragePooling2D()(x)
    return keras.Model(inputs, keras.layers.Dense(10)(x))


def compiled_model(keras):
    keras.utils.set_random_seed(0)
    model = resnet_like(keras)
    model.compile(
        keras.optimizers.SGD(0.01, momentum=0.8), keras.losses.SparseCategoricalCrossentropy(from_logits=True)
    )
    return model


def run(args):
    import keras
    import numpy as np

    from keras_corrinit import GradientSignMonitor

    rng = np.random.default_rng(0)
    x = rng.normal(size=(64 * args.steps, 32, 32, 3)).astype("float32")
    y = rng.integers(0, 10, size=64 * args.steps)
    configurations = {
        "monitored": lambda: [GradientSignMonitor()],
        "plain": lambda: [],
        "plain, again (A/A)": lambda: [],
    }
    if args.per_layer:
        configurations["monitored per_layer"] = lambda: [GradientSignMonitor(per_layer=True)]
    fits = {}
    for name, callbacks in configurations.items():
        model, monitors = compiled_model(keras), callbacks()

        def fit(model=model, monitors=monitors):
            model.fit(x, y, batch_size=64, epochs=args.epochs, verbose=0, callbacks=monitors)

        fits[name] = fit
    seconds = _harness.time_interleaved(fits, args.repeats)
    print(f"whole fits of {args.epochs} epochs x {args.steps} steps, {args.repeats} each, ABBA order")
    return _harness.ratio_table(seconds, "plain", label="fit", unit=1, unit_name="s")


def add_arguments(parser):
    parser.add_argument("--steps", type=int, default=20, help="steps per epoch (default 20)")
    parser.add_argument("--epochs", type=int, default=2, help="epochs per fit (default 2)")
    parser.add_argument("--per-layer", action="store_true", help="also the monitor with per_layer=True")


if __name__ == "__main__":
    _harness.main(run, __doc__, add_arguments, repeats=6)
