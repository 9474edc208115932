"""GradientSignTracker: custom loops give what `fit` with the monitor gives."""

import math

import keras
import numpy as np
import pytest

from keras_corrinit import CorrelatedHeNormal, GradientSignMonitor, GradientSignTracker
from keras_corrinit._core.backend import gradients

RNG = np.random.default_rng(0)
X = RNG.normal(size=(48, 8, 8, 3)).astype("float32")
Y = RNG.integers(0, 4, size=48)
BATCH, EPOCHS = 16, 2
LOSS = keras.losses.SparseCategoricalCrossentropy(from_logits=True)


def _model():
    return keras.Sequential(
        [
            keras.Input((8, 8, 3)),
            keras.layers.Conv2D(6, 3, activation="relu", kernel_initializer=CorrelatedHeNormal(seed=0), name="conv"),
            keras.layers.Flatten(),
            keras.layers.Dense(4, name="head"),
        ]
    )


def _fit_reference(weights):
    model = _model()
    model.set_weights(weights)
    model.compile(keras.optimizers.SGD(0.05), LOSS)
    history = model.fit(
        X, Y, batch_size=BATCH, epochs=EPOCHS, shuffle=False, verbose=0, callbacks=[GradientSignMonitor(per_layer=True)]
    )
    return history.history


def _assert_epoch_matches(result, history, epoch):
    for key, value in result.items():
        np.testing.assert_allclose(value, history[key][epoch], rtol=1e-5, atol=1e-7, err_msg=key)


def _setup():
    """A model, `fit`'s monitored history from its weights, an SGD and a tracker."""
    model = _model()
    history = _fit_reference(model.get_weights())
    optimizer = keras.optimizers.SGD(0.05)
    optimizer.build(model.trainable_variables)
    return model, history, optimizer, GradientSignTracker(model.trainable_variables, per_layer=True)


@pytest.mark.slow
def test_custom_loop_with_the_backends_autodiff_matches_fit():
    model, history, optimizer, tracker = _setup()
    for epoch in range(EPOCHS):
        tracker.reset()  # sums per epoch, the predecessor kept (as the monitor does)
        for start in range(0, len(X), BATCH):
            x, y = X[start : start + BATCH], Y[start : start + BATCH]
            grads = gradients(model.trainable_variables, lambda: LOSS(y, model(x, training=True)))
            tracker.update(grads)
            optimizer.apply(grads, model.trainable_variables)
        result = tracker.result()
        assert set(result) == {k for k in history if k.startswith("grad_")}
        _assert_epoch_matches(result, history, epoch)


def _compiled(fn):
    """The backend's compiler for a pure step: jax.jit, tf.function, or eager torch."""
    backend = keras.backend.backend()
    if backend == "jax":
        import jax

        return jax.jit(fn)
    if backend == "tensorflow":
        import tensorflow as tf

        return tf.function(fn)
    return fn


def test_stateless_update_compiled_alone_matches_fit():
    model, history, optimizer, tracker = _setup()
    update = _compiled(tracker.stateless_update)
    state = tracker.initial_state()
    for epoch in range(EPOCHS):
        state = tracker.reset_state(state)
        for start in range(0, len(X), BATCH):
            x, y = X[start : start + BATCH], Y[start : start + BATCH]
            grads = gradients(model.trainable_variables, lambda: LOSS(y, model(x, training=True)))
            state = update(state, grads)
            optimizer.apply(grads, model.trainable_variables)
        _assert_epoch_matches(tracker.stateless_result(state), history, epoch)


def _compiled_training_step(model, optimizer, tracker):
    """A whole training step compiled by the backend: jax.jit of a stateless
    step, tf.function with a GradientTape, or a PyTorch autograd step."""
    backend = keras.backend.backend()
    if backend == "jax":
        import jax

        non_trainable = [v.value for v in model.non_trainable_variables]

        @jax.jit
        def jax_step(carry, x, y):
            trainable, optimizer_state, state = carry

            def loss(values):
                return LOSS(y, model.stateless_call(values, non_trainable, x, training=True)[0])

            grads = jax.grad(loss)(trainable)
            trainable, optimizer_state = optimizer.stateless_apply(optimizer_state, grads, trainable)
            return trainable, optimizer_state, tracker.stateless_update(state, grads)

        return jax_step, ([v.value for v in model.trainable_variables], [v.value for v in optimizer.variables])
    if backend == "tensorflow":
        import tensorflow as tf

        @tf.function
        def tf_step(carry, x, y):
            with tf.GradientTape() as tape:
                loss = LOSS(y, model(x, training=True))
            grads = tape.gradient(loss, [v.value for v in model.trainable_variables])
            optimizer.apply(grads, model.trainable_variables)
            return carry[0], carry[1], tracker.stateless_update(carry[2], grads)

        return tf_step, (0, 0)
    import torch

    def torch_step(carry, x, y):
        loss = LOSS(torch.as_tensor(y), model(torch.as_tensor(x), training=True))
        grads = torch.autograd.grad(loss, [v.value for v in model.trainable_variables])
        with torch.no_grad():
            optimizer.apply(list(grads), model.trainable_variables)
        return carry[0], carry[1], tracker.stateless_update(carry[2], grads)

    return torch_step, (0, 0)


def test_stateless_form_inside_a_compiled_training_step():
    model, history, optimizer, tracker = _setup()
    step, (params, optimizer_state) = _compiled_training_step(model, optimizer, tracker)
    state = tracker.initial_state()
    for epoch in range(EPOCHS):
        state = tracker.reset_state(state)
        for start in range(0, len(X), BATCH):
            params, optimizer_state, state = step(
                (params, optimizer_state, state), X[start : start + BATCH], Y[start : start + BATCH]
            )
        _assert_epoch_matches(tracker.stateless_result(state), history, epoch)


class _Variable:
    def __init__(self, shape, path):
        self.shape, self.path = shape, path


def test_semantics_first_step_zero_signs_and_nonfinite_steps():
    tracker = GradientSignTracker([_Variable((2,), "net/a/kernel"), _Variable((2,), "net/b/kernel")], per_layer=True)
    tracker.update([np.array([1.0, -1.0]), np.array([0.0, 2.0])])
    first = tracker.result()
    assert math.isnan(first["grad_sign_change"])  # no predecessor
    assert first["grad_magnitude"] == pytest.approx(4 / 4)
    tracker.update([np.array([-1.0, -1.0]), np.array([0.0, np.nan])])  # non-finite: counted, not measured
    tracker.update([np.array([-1.0, 1.0]), np.array([0.0, 2.0])])
    result = tracker.result()
    assert result["grad_nonfinite_steps"] == 1.0
    # against the first step (the non-finite one is no predecessor): both of a's
    # entries flip; b's 0 -> 0 is no change (sign(0) = 0) and 2 -> 2 is kept
    assert result["grad_sign_change"] == pytest.approx(2 / 4)
    assert result["grad_sign_change/a"] == 1.0 and result["grad_sign_change/b"] == 0.0
    tracker.reset(keep_previous=False)
    tracker.update([np.array([1.0, 1.0]), np.array([1.0, 1.0])])
    assert math.isnan(tracker.result()["grad_sign_change"])


def test_errors():
    with pytest.raises(ValueError, match="`variables` must hold at least one variable"):
        GradientSignTracker([])
    with pytest.raises(TypeError, match="`per_layer` must be a bool"):
        GradientSignTracker([_Variable((1,), "a/b")], per_layer=1)
    tracker = GradientSignTracker([_Variable((1,), "a/b")])
    with pytest.raises(ValueError, match="Expected 1 gradients .*received 2"):
        tracker.update([np.ones(1), np.ones(1)])


def _dense_tracker():
    layer = keras.layers.Dense(2)
    layer.build((None, 3))
    return layer, GradientSignTracker(layer.trainable_variables)


def test_a_none_gradient_counts_as_zero():
    layer, tracker = _dense_tracker()
    for sign in (1.0, -1.0):
        tracker.update([sign * keras.ops.ones((3, 2)), None])
    result = tracker.result()
    assert result["grad_sign_change"] == pytest.approx(6 / 8)  # the kernel's 6 flip, the bias's 2 stay 0
    assert result["grad_magnitude"] == pytest.approx(6 / 8)


def test_a_gradient_of_the_wrong_shape_is_refused():
    layer, tracker = _dense_tracker()
    with pytest.raises(ValueError, match=r"Gradient 1 \(.*bias\) has shape \(1,\); its variable has shape \(2,\)"):
        tracker.update([keras.ops.ones((3, 2)), keras.ops.ones((1,))])
    with pytest.raises(
        ValueError, match=r"Gradient 0 \(.*kernel\) has shape \(2, 3\); its variable has shape \(3, 2\)"
    ):
        tracker.update([keras.ops.ones((2, 3)), keras.ops.ones((2,))])
