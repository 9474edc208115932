import importlib.util
import os

import keras
import numpy as np
import pytest


def to_numpy(x):
    return keras.ops.convert_to_numpy(x)


@pytest.fixture(autouse=True)
def _fresh_keras_session():
    # Every test starts from the same global seed, so that layers built with
    # Keras's unseeded default initializers are reproducible too. Python's own
    # collector frees the earlier tests' models: a full collection per test
    # (clear_session's default) cost 0.5 s each, a third of the suite's time.
    keras.backend.clear_session(free_memory=False)
    keras.utils.set_random_seed(1234)
    yield


def pytest_report_header(config):
    backend = keras.backend.backend()
    return f"keras {keras.__version__}, backend {backend} (KERAS_BACKEND={os.environ.get('KERAS_BACKEND')})"


def pytest_sessionfinish(session, exitstatus):
    # CI installs every extra, so nothing may be skipped there.
    reporter = session.config.pluginmanager.get_plugin("terminalreporter")
    skipped = len(reporter.stats.get("skipped", [])) if reporter else 0
    if os.environ.get("KERAS_CORRINIT_FAIL_ON_SKIP") == "1" and skipped:
        print(f"\n{skipped} tests were skipped; KERAS_CORRINIT_FAIL_ON_SKIP=1 fails the run.")
        session.exitstatus = pytest.ExitCode.TESTS_FAILED


def load_example(name, folder="examples"):
    """The script `<folder>/<name>.py` as a module (examples and benchmarks are scripts, not a package)."""
    path = os.path.join(os.path.dirname(__file__), "..", folder, f"{name}.py")
    spec = importlib.util.spec_from_file_location(f"{folder}_{name}", path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def run_in_fresh_process(code, *args):
    """Runs `code` in a new Python with the same backend; returns its stdout."""
    import subprocess
    import sys

    result = subprocess.run(
        [sys.executable, "-c", code, *map(str, args)],
        capture_output=True,
        text=True,
        env=dict(os.environ),
    )
    assert result.returncode == 0, result.stderr[-3000:]
    return result.stdout


def pre_activation(layer, x):
    """`layer(x)` with its fused activation switched off: the output LSUV measures."""
    activation = layer.activation
    layer.activation = keras.activations.linear
    try:
        return to_numpy(layer(x, training=False))
    finally:
        layer.activation = activation


def pre_activation_variance(model, layer_name, x):
    """The variance of a layer's pre-activation output when `model` runs on `x` as training runs it.

    Batch norm normalizes by the batch's statistics (`training=True`; its
    moving statistics are put back after). The models measured this way
    have no dropout, which `training=True` would switch on.
    """
    layer = model.get_layer(layer_name)
    saved = [(v, to_numpy(v)) for v in model.non_trainable_weights]
    layer_input = keras.Model(model.inputs, layer.input)(x, training=True)
    for variable, value in saved:
        variable.assign(value)
    return float(np.var(pre_activation(layer, layer_input)))


def weights_of(model):
    """Every weight of `model` as numpy, to compare before and after."""
    return [to_numpy(v).copy() for v in model.weights]


def assert_weights_equal(model, before):
    after = weights_of(model)
    assert len(after) == len(before)
    for a, b in zip(after, before):
        np.testing.assert_array_equal(a, b)


class InjectedFailure(RuntimeError):
    """The failure tests inject half-way through an in-place change."""


def fail_on_nth_assign(monkeypatch, variable, n):
    """Makes the `n`-th `assign` of any variable of `variable`'s class raise `InjectedFailure`.

    Only that one call fails, so restoring the weights afterwards works.
    """
    cls = type(variable)
    original = cls.assign
    calls = {"count": 0}

    def assign(self, value):
        calls["count"] += 1
        if calls["count"] == n:
            raise InjectedFailure(f"assign number {n} fails")
        return original(self, value)

    monkeypatch.setattr(cls, "assign", assign)
    return calls
