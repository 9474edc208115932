"""Names every docstring example may use (`pytest --doctest-modules keras_corrinit`)."""

import keras
import numpy as np
import pytest

import keras_corrinit


@pytest.fixture(autouse=True, scope="session")
def _doctest_names(doctest_namespace):
    doctest_namespace.update({"keras": keras, "np": np})
    for module in (keras_corrinit, *(getattr(keras_corrinit, name) for name in keras_corrinit.__all__)):
        if isinstance(module, type(keras_corrinit)):  # the package and its concept subpackages
            doctest_namespace.update({name: getattr(module, name) for name in module.__all__})
