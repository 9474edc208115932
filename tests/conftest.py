import os

import keras
import numpy as np
import pytest


def to_numpy(x):
    return keras.ops.convert_to_numpy(x)


@pytest.fixture(autouse=True)
def _fresh_keras_session():
    keras.backend.clear_session()
    yield


def pytest_report_header(config):
    return f"keras {keras.__version__}, backend {keras.backend.backend()} (KERAS_BACKEND={os.environ.get('KERAS_BACKEND')})"
