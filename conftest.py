"""Names every docstring example may use (`pytest --doctest-modules keras_corrinit`)."""

import keras
import numpy as np
import pytest

import keras_corrinit


@pytest.fixture(autouse=True, scope="session")
def _doctest_names(doctest_namespace):
    doctest_namespace.update({"keras": keras, "np": np})
    doctest_namespace.update({name: getattr(keras_corrinit, name) for name in keras_corrinit.__all__})
