import json
import textwrap

import keras
import numpy as np
import pytest

from conftest import run_in_fresh_process, to_numpy
from keras_corrinit import CorrelatedHeNormal, GradientSignMonitor
from keras_corrinit._core.backend import gradients

RNG = np.random.default_rng(0)
X = RNG.normal(size=(48, 8, 8, 3)).astype("float32")
Y = RNG.integers(0, 4, size=48)
BATCH, EPOCHS = 16, 3


def _conv_model(seed=0):
    return keras.Sequential(
        [
            keras.Input((8, 8, 3)),
            keras.layers.Conv2D(6, 3, activation="relu", kernel_initializer=CorrelatedHeNormal(seed=seed), name="conv"),
            keras.layers.Conv2D(
                6, 3, activation="relu", kernel_initializer=CorrelatedHeNormal(seed=seed + 1), name="conv2"
            ),
            keras.layers.Flatten(),
            keras.layers.Dense(4, name="head"),
        ]
    )


LOSS = keras.losses.SparseCategoricalCrossentropy(from_logits=True)
OPTIMIZERS = {
    "sgd": lambda: keras.optimizers.SGD(0.05),
    "sgd_momentum": lambda: keras.optimizers.SGD(0.05, momentum=0.9),
    "adam": lambda: keras.optimizers.Adam(0.01),
}


def _eager_replay(model, optimizer):
    """Per-epoch sign-change fraction and mean |g|, per layer too, by the formula."""
    optimizer.build(model.trainable_variables)
    paths = [v.path.split("/")[-2] for v in model.trainable_variables]  # layer names
    previous, epochs = None, []
    for _ in range(EPOCHS):
        flips, mags, steps, sign_steps = {}, {}, 0, 0
        for start in range(0, len(X), BATCH):
            x, y = X[start : start + BATCH], Y[start : start + BATCH]
            grads = gradients(model.trainable_variables, lambda: LOSS(y, model(x, training=True)))
            g = [to_numpy(t).astype(np.float64) for t in grads]
            signs = [np.sign(t) for t in g]
            for path, t in zip(paths, g):
                mags[path] = mags.get(path, 0.0) + np.abs(t).sum()
            if previous is not None:
                for path, s, p in zip(paths, signs, previous):
                    flips[path] = flips.get(path, 0.0) + np.abs(s - p).sum() / 2
                sign_steps += 1
            previous, steps = signs, steps + 1
            optimizer.apply(grads, model.trainable_variables)
        sizes = {}
        for path, v in zip(paths, model.trainable_variables):
            sizes[path] = sizes.get(path, 0) + int(np.prod(v.shape))
        d = sum(sizes.values())
        epoch = {
            "grad_sign_change": sum(flips.values()) / (d * sign_steps),
            "grad_magnitude": sum(mags.values()) / (d * steps),
        }
        for path in sizes:
            epoch[f"grad_sign_change/{path}"] = flips[path] / (sizes[path] * sign_steps)
            epoch[f"grad_magnitude/{path}"] = mags[path] / (sizes[path] * steps)
        epochs.append(epoch)
    return epochs


@pytest.mark.slow
@pytest.mark.parametrize("name", sorted(OPTIMIZERS))
def test_matches_independent_eager_reference(name):
    model = _conv_model()
    reference_model = _conv_model()
    reference_model.set_weights(model.get_weights())
    model.compile(OPTIMIZERS[name](), LOSS)
    history = model.fit(
        X,
        Y,
        batch_size=BATCH,
        epochs=EPOCHS,
        shuffle=False,
        verbose=0,
        callbacks=[GradientSignMonitor(per_layer=True)],
    ).history
    expected = _eager_replay(reference_model, OPTIMIZERS[name]())
    d = sum(int(np.prod(v.shape)) for v in model.trainable_variables)
    for epoch, reference in enumerate(expected):
        for key, value in reference.items():
            # float differences between the compiled and the eager step can
            # flip the sign of a gradient within rounding of zero: allow a
            # handful of the ~1000 parameters per epoch
            tol = 5 / d if "sign" in key else 1e-4 * value + 1e-7
            assert history[key][epoch] == pytest.approx(value, abs=tol), (key, epoch)
        assert history["grad_nonfinite_steps"][epoch] == 0
    for a, b in zip(model.get_weights(), reference_model.get_weights()):
        np.testing.assert_allclose(a, b, rtol=1e-3, atol=1e-4)  # same training


def _linear_model():
    return keras.Sequential([keras.Input((4,)), keras.layers.Dense(1, use_bias=False, name="w")])


def _mean_output(y_true, y_pred):
    # d loss / d w = mean of the batch's inputs, whatever w is
    return keras.ops.mean(y_pred)


def _fit_linear(x, optimizer=None, batch_size=1, epochs=1, **kwargs):
    model = _linear_model()
    model.compile(optimizer or keras.optimizers.SGD(0.1), _mean_output)
    monitor = GradientSignMonitor(**kwargs)
    history = model.fit(
        x, np.zeros(len(x)), batch_size=batch_size, epochs=epochs, shuffle=False, verbose=0, callbacks=[monitor]
    )
    return model, monitor, history.history


ONES = np.ones((1, 4), "float32")


def test_all_signs_flip_gives_one_and_none_gives_zero():
    _, _, flipping = _fit_linear(np.tile(np.concatenate([ONES, -ONES]), (4, 1)))
    assert flipping["grad_sign_change"] == [1.0]
    assert flipping["grad_magnitude"] == [pytest.approx(1.0)]
    _, _, steady = _fit_linear(np.tile(3 * ONES, (8, 1)))
    assert steady["grad_sign_change"] == [0.0]
    assert steady["grad_magnitude"] == [pytest.approx(3.0)]


def test_sign_of_zero_is_zero():
    # dims 0, 1 steady; dim 2 goes 0 -> 1 -> 0 (each 1/2); dim 3 flips (1)
    x = np.tile(np.array([[1, 1, 0, 1], [1, 1, 1, -1]], "float32"), (4, 1))
    _, _, history = _fit_linear(x)
    assert history["grad_sign_change"] == [pytest.approx((0.5 + 1) / 4)]


def test_every_n_steps_and_epoch_continuity():
    x = np.tile(np.concatenate([ONES, -ONES]), (3, 1))  # 6 steps per epoch
    _, monitor, history = _fit_linear(x, epochs=2, every_n_steps=3)
    assert [e["step"] for e in monitor.step_history] == [3, 6, 9, 12]
    assert all(e["grad_sign_change"] == 1.0 for e in monitor.step_history)
    # epoch 2's first step is compared with epoch 1's last: still all flips
    assert history["grad_sign_change"] == [1.0, 1.0]


def test_gradient_accumulation_measures_applied_updates():
    # micro-batches +1, +1, -1, -1: applied (mean of 2) gradients alternate
    x = np.tile(np.concatenate([ONES, ONES, -ONES, -ONES]), (2, 1))
    model, _, accumulated = _fit_linear(x, keras.optimizers.SGD(0.1, gradient_accumulation_steps=2))
    assert accumulated["grad_sign_change"] == [1.0]
    assert int(model.optimizer.iterations) == 4
    _, _, plain = _fit_linear(x)
    assert plain["grad_sign_change"] == [pytest.approx(3 / 7)]  # + + - - + + - -: 3 flips in 7


def test_loss_scaling_is_undone():
    x = np.tile(np.concatenate([2 * ONES, -2 * ONES]), (2, 1))
    scaled = keras.optimizers.LossScaleOptimizer(keras.optimizers.SGD(0.1), initial_scale=1024.0)
    model, _, history = _fit_linear(x, scaled)
    assert history["grad_magnitude"] == [pytest.approx(2.0)]
    assert history["grad_sign_change"] == [1.0]
    assert model.optimizer is scaled


def test_non_finite_gradients_are_counted_not_measured():
    x = np.tile(np.concatenate([ONES, -ONES]), (3, 1))
    x[2, 1] = np.nan
    model, _, history = _fit_linear(x)
    assert history["grad_nonfinite_steps"] == [1.0]
    # measured: steps 0, 1, 3, 4, 5 (+, -, -, +, -): 3 of 4 transitions flip
    assert history["grad_sign_change"] == [pytest.approx(3 / 4)]
    assert history["grad_magnitude"] == [pytest.approx(1.0)]


def test_several_fits_restore_user_optimizer_and_start_afresh():
    model = _linear_model()
    optimizer = keras.optimizers.SGD(0.1)
    model.compile(optimizer, _mean_output)
    x = np.tile(np.concatenate([ONES, -ONES]), (2, 1))
    monitor = GradientSignMonitor(every_n_steps=1)
    model.fit(x, np.zeros(4), batch_size=1, shuffle=False, verbose=0, callbacks=[monitor])
    assert model.optimizer is optimizer and int(optimizer.iterations) == 4
    history = model.fit(x, np.zeros(4), batch_size=1, shuffle=False, verbose=0, callbacks=[monitor])
    assert model.optimizer is optimizer and int(optimizer.iterations) == 8
    # first step of the second fit has no predecessor: no sign value for that window
    assert np.isnan(monitor.step_history[0]["grad_sign_change"])
    assert history.history["grad_sign_change"] == [1.0]
    plain = model.fit(x, np.zeros(4), batch_size=1, shuffle=False, verbose=0)
    assert "grad_sign_change" not in plain.history and int(optimizer.iterations) == 12


def test_later_fits_reuse_the_compiled_step_but_start_afresh_and_a_recompile_compiles_anew():
    model = _linear_model()
    optimizer = keras.optimizers.SGD(0.1)
    model.compile(optimizer, _mean_output)
    x = np.concatenate([ONES, ONES, ONES, -ONES])  # + + + -: the last step's sign differs from the first's
    steps = []  # ids only: holding a JAX train function would itself keep a stale trace alive (see backend.py)

    class Steps(keras.callbacks.Callback):
        def on_train_batch_begin(self, batch, logs=None):
            steps.append((id(self.model.optimizer), id(self.model.train_function)))

    monitor = GradientSignMonitor()

    def fit(callbacks):
        return model.fit(x, np.zeros(4), batch_size=1, shuffle=False, verbose=0, callbacks=callbacks).history

    first = fit([monitor, Steps()])
    plain = fit([Steps()])
    second = fit([monitor, Steps()])
    wrapper, monitored_step = steps[0]
    assert steps[8] == (wrapper, monitored_step)  # no new wrapper, no new trace: the first fit's compiled step
    assert steps[4][0] == id(optimizer) and steps[4][1] != monitored_step  # the plain fit never sees the wrapper
    # each fit starts afresh: 1 flip in 3 transitions, not the 2 in 4 a carried-over last sign (-) would give
    assert first["grad_sign_change"] == second["grad_sign_change"] == [pytest.approx(1 / 3)]
    assert "grad_sign_change" not in plain and model.optimizer is optimizer and int(optimizer.iterations) == 12
    model.compile(optimizer, lambda y_true, y_pred: 2.0 * keras.ops.mean(y_pred))  # another loss
    third = fit([monitor, Steps()])
    assert steps[12][0] != wrapper
    assert third["grad_magnitude"] == [pytest.approx(2.0)]  # the new loss's gradients, so the new step


def test_a_kept_step_lends_no_stale_trace_to_a_recompiled_model():
    # On JAX, Keras jits the bound train_step and JAX caches traces by that function: a monitor that kept a
    # step jitted the same way would hand the old loss's trace to another monitor's, or a plain, fit after a
    # recompile with another loss. Each loss's gradient magnitude shows which step ran.
    model = _linear_model()
    optimizer = keras.optimizers.SGD(0.1)
    x = np.concatenate([ONES, ONES, ONES, -ONES])

    def fit(callbacks):
        return model.fit(x, np.zeros(4), batch_size=1, shuffle=False, verbose=0, callbacks=callbacks).history

    model.compile(optimizer, _mean_output)
    first_monitor = GradientSignMonitor()
    assert fit([first_monitor])["grad_magnitude"] == [pytest.approx(1.0)]
    model.compile(optimizer, lambda y_true, y_pred: 3.0 * keras.ops.mean(y_pred))
    assert fit([GradientSignMonitor()])["grad_magnitude"] == [pytest.approx(3.0)]  # first_monitor still alive
    before = to_numpy(model.weights[0])
    fit([])  # plain, after monitored fits: SGD(0.1) moves each weight by 0.1 * 3 * input per step
    np.testing.assert_allclose(to_numpy(model.weights[0]) - before, -0.3 * np.sum(x, axis=0)[:, None], atol=1e-5)
    assert fit([first_monitor])["grad_magnitude"] == [
        pytest.approx(3.0)
    ]  # its kept step is not reused: another compilation


def test_csv_logger_gets_the_values(tmp_path):
    model = _linear_model()
    model.compile(keras.optimizers.SGD(0.1), _mean_output)
    x = np.tile(np.concatenate([ONES, -ONES]), (2, 1))
    path = tmp_path / "log.csv"
    model.fit(
        x,
        np.zeros(4),
        batch_size=1,
        epochs=2,
        shuffle=False,
        verbose=0,
        callbacks=[GradientSignMonitor(), keras.callbacks.CSVLogger(str(path))],
    )
    header, *rows = path.read_text().strip().splitlines()
    assert "grad_sign_change" in header.split(",") and len(rows) == 2


_LOAD = textwrap.dedent(
    """
    import json, sys
    import keras
    import keras_corrinit
    model = keras.models.load_model(sys.argv[1], safe_mode=True)
    print(json.dumps(keras.optimizers.serialize(model.optimizer)))
    print(json.dumps([len(model.optimizer.variables), int(model.optimizer.iterations)]))
    """
)


@pytest.mark.slow
def test_trained_model_saves_and_loads_in_fresh_process(tmp_path):
    model = _conv_model()
    optimizer = keras.optimizers.Adam(0.01)
    model.compile(optimizer, LOSS)
    model.fit(X, Y, batch_size=BATCH, epochs=1, verbose=0, callbacks=[GradientSignMonitor(per_layer=True)])
    path = tmp_path / "trained.keras"
    model.save(str(path))
    lines = run_in_fresh_process(_LOAD, path).strip().splitlines()
    config, (n_variables, iterations) = json.loads(lines[-2]), json.loads(lines[-1])
    assert config["class_name"] == "Adam"
    assert config == json.loads(json.dumps(keras.optimizers.serialize(optimizer)))
    assert n_variables == len(optimizer.variables) and iterations == 3


_LOAD_STATE = textwrap.dedent(
    """
    import json, sys, warnings
    import keras
    import numpy as np
    import keras_corrinit
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        model = keras.models.load_model(sys.argv[1], safe_mode=True)
    np.savez(sys.argv[2], *[keras.ops.convert_to_numpy(v) for v in model.optimizer.variables])
    print(json.dumps([str(w.message) for w in caught]))
    print(json.dumps(keras.optimizers.serialize(model.optimizer)))
    """
)


class _InterruptAtBatch(keras.callbacks.Callback):
    def __init__(self, batch):
        super().__init__()
        self.batch = batch

    def on_train_batch_end(self, batch, logs=None):
        if batch == self.batch:
            raise KeyboardInterrupt


def _weights_file(path):
    """{dataset path: array} of a .keras file's weights."""
    import io
    import zipfile

    import h5py

    with zipfile.ZipFile(path) as archive:
        data = io.BytesIO(archive.read("model.weights.h5"))
    found = {}
    with h5py.File(data, "r") as f:
        f.visititems(lambda name, obj: found.__setitem__(name, obj[()]) if isinstance(obj, h5py.Dataset) else None)
    return found


@pytest.mark.slow
def test_model_saved_after_an_interrupted_fit_keeps_the_optimizer_state(tmp_path):
    model = _conv_model()
    adam = keras.optimizers.Adam(0.01)
    model.compile(adam, LOSS)
    with pytest.raises(KeyboardInterrupt):
        model.fit(
            X,
            Y,
            batch_size=4,
            epochs=2,
            verbose=0,
            callbacks=[GradientSignMonitor(per_layer=True), _InterruptAtBatch(3)],
        )
    assert int(adam.iterations) == 4
    interrupted = tmp_path / "interrupted.keras"
    model.save(str(interrupted))
    # The same model and state saved with the user's optimizer in place:
    # the interrupted save must be this file, entry for entry.
    monitor_left = model.optimizer
    model.optimizer = adam
    reference = tmp_path / "reference.keras"
    model.save(str(reference))
    saved, expected = _weights_file(interrupted), _weights_file(reference)
    assert sorted(saved) == sorted(expected)
    for name in expected:
        np.testing.assert_array_equal(saved[name], expected[name])
    # Loaded in a fresh process: the user's optimizer, config and variables.
    lines = run_in_fresh_process(_LOAD_STATE, interrupted, tmp_path / "state.npz").strip().splitlines()
    messages, config = json.loads(lines[-2]), json.loads(lines[-1])
    assert not [m for m in messages if "Skipping variable loading" in m], messages
    assert config == json.loads(json.dumps(keras.optimizers.serialize(adam)))
    state = np.load(tmp_path / "state.npz")
    assert len(state.files) == len(adam.variables) == 2 + 2 * len(model.trainable_variables)  # iterations, lr, m and v
    for i, variable in enumerate(adam.variables):
        np.testing.assert_array_equal(state[f"arr_{i}"], to_numpy(variable))
    # The next monitored fit unwraps what the interrupted one left.
    model.optimizer = monitor_left
    model.fit(X, Y, batch_size=16, epochs=1, verbose=0, callbacks=[GradientSignMonitor()])
    assert model.optimizer is adam and int(adam.iterations) == 7


@pytest.mark.parametrize(
    "kwargs, error, message",
    [
        ({"per_layer": "yes"}, TypeError, "`per_layer` must be a bool"),
        ({"every_n_steps": 0}, ValueError, "`every_n_steps` must be None or an int >= 1"),
    ],
)
def test_bad_arguments(kwargs, error, message):
    with pytest.raises(error, match=message):
        GradientSignMonitor(**kwargs)


def test_uncompiled_model_is_a_clear_error():
    monitor = GradientSignMonitor()
    monitor.set_model(_linear_model())
    with pytest.raises(ValueError, match="needs a compiled model"):
        monitor.on_train_begin()


@pytest.mark.parametrize("policy", ["mixed_float16", "mixed_bfloat16"])
def test_mixed_precision_gradients_are_measured_unscaled(policy):
    # Keras wraps the optimizer in a LossScaleOptimizer for mixed_float16
    # (not for bfloat16); either way the monitor sees unscaled gradients.
    keras.config.set_dtype_policy(policy)
    try:
        x = np.tile(np.concatenate([ONES, -ONES]), (2, 1))
        model, _, history = _fit_linear(x)
        scaled = isinstance(model.optimizer, keras.optimizers.LossScaleOptimizer)
    finally:
        keras.config.set_dtype_policy("float32")
    assert scaled == (policy == "mixed_float16")
    assert history["grad_magnitude"] == [pytest.approx(1.0, rel=1e-3)]
    assert history["grad_sign_change"] == [1.0]


def test_two_monitors_in_one_fit_are_a_clear_error_and_leave_the_optimizer():
    model = _linear_model()
    optimizer = keras.optimizers.SGD(0.1)
    model.compile(optimizer, _mean_output)
    with pytest.raises(ValueError, match="Two GradientSignMonitors in one fit"):
        model.fit(ONES, np.zeros(1), verbose=0, callbacks=[GradientSignMonitor(), GradientSignMonitor()])
    assert model.optimizer is optimizer
    history = model.fit(ONES, np.zeros(1), verbose=0, callbacks=[GradientSignMonitor()])
    assert history.history["grad_magnitude"] == [pytest.approx(1.0)]


def test_a_model_without_trainable_weights_names_the_monitor():
    model = _linear_model()
    model.trainable = False
    model.compile(keras.optimizers.SGD(0.1), _mean_output)
    with pytest.raises(ValueError, match="GradientSignMonitor: the model .* has no trainable weights"):
        model.fit(ONES, np.zeros(1), verbose=0, callbacks=[GradientSignMonitor()])


class _WithUnusedVariable(keras.Model):
    """The loss never reaches `unused`: its gradient is None (TensorFlow, PyTorch) or 0 (JAX)."""

    def __init__(self):
        super().__init__(name="with_unused_variable")
        self.used = keras.layers.Dense(1, use_bias=False, name="used")
        self.unused = keras.layers.Dense(3, name="unused")

    def build(self, input_shape):
        self.used.build(input_shape)
        self.unused.build(input_shape)

    def call(self, x):
        return self.used(x)


def test_a_variable_without_gradient_counts_as_zero():
    model = _WithUnusedVariable()
    model.build((None, 4))
    model.compile(keras.optimizers.SGD(0.1), _mean_output)
    x = np.tile(np.concatenate([ONES, -ONES]), (2, 1))
    history = model.fit(x, np.zeros(4), batch_size=1, shuffle=False, verbose=0, callbacks=[GradientSignMonitor()])
    # 4 used weights flip every step and have |g| = 1; 15 unused ones are 0
    assert history.history["grad_sign_change"] == [pytest.approx(4 / 19)]
    assert history.history["grad_magnitude"] == [pytest.approx(4 / 19)]
