"""Names every docstring example may use (`pytest --doctest-modules keras_corrinit`); JAX's compilation cache."""

import os

# Before JAX is imported (by Keras, here or in a test's subprocess): JAX compiles the steps of every new
# model, though most tests train the same programs (the same shapes, other weights). Its persistent
# cache compiles each program once per run, and once per machine for later runs. It is keyed by the
# program, the compile options and JAX's version, so it never hands one program another's code.
os.environ.setdefault("JAX_COMPILATION_CACHE_DIR", os.path.join(os.path.dirname(__file__), ".cache", "jax"))
os.environ.setdefault("JAX_PERSISTENT_CACHE_MIN_COMPILE_TIME_SECS", "0")
os.environ.setdefault("JAX_PERSISTENT_CACHE_MIN_ENTRY_SIZE_BYTES", "0")

import keras  # noqa: E402
import numpy as np  # noqa: E402
import pytest  # noqa: E402

import keras_corrinit  # noqa: E402


@pytest.fixture(autouse=True, scope="session")
def _doctest_names(doctest_namespace):
    doctest_namespace.update({"keras": keras, "np": np})
    for module in (keras_corrinit, *(getattr(keras_corrinit, name) for name in keras_corrinit.__all__)):
        if isinstance(module, type(keras_corrinit)):  # the package and its concept subpackages
            doctest_namespace.update({name: getattr(module, name) for name in module.__all__})
