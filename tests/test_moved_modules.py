"""The package's public paths: `keras_corrinit`, `keras_corrinit.initializers`, the deprecated 0.2.0 modules."""

import importlib
import inspect
import sys

import keras
import pytest

import keras_corrinit
from keras_corrinit import initializers
from keras_corrinit._moved_modules import MOVED

OLD_NAMES = sorted((module, name) for module, names in MOVED.items() for name in names)


def test_each_public_name_is_listed_once_and_defined_in_a_private_module():
    # (ruff's RUF022 keeps __all__ sorted.)
    assert len(set(keras_corrinit.__all__)) == len(keras_corrinit.__all__)
    for name in keras_corrinit.__all__:
        obj = getattr(keras_corrinit, name)
        module = getattr(obj, "__module__", None)
        if module is not None and (inspect.isclass(obj) or inspect.isfunction(obj)):
            assert module.startswith("keras_corrinit._"), (name, module)


def test_the_initializers_namespace_holds_every_registered_initializer():
    registered = {
        obj
        for key, obj in keras.saving.get_custom_objects().items()
        if key.startswith("keras_corrinit>") and issubclass(obj, keras.initializers.Initializer)
    }
    offered = {
        getattr(initializers, name) for name in initializers.__all__ if inspect.isclass(getattr(initializers, name))
    }
    assert registered <= offered
    assert all(getattr(initializers, name) is getattr(keras_corrinit, name) for name in initializers.__all__)


@pytest.mark.parametrize(("module", "name"), OLD_NAMES)
def test_an_old_path_gives_the_same_object_with_a_deprecation_warning(module, name):
    old = importlib.import_module(f"keras_corrinit.{module}")
    with pytest.warns(
        DeprecationWarning,
        match=rf"keras_corrinit\.{module}\.{name} is deprecated since 0\.3\.0.*"
        rf"use keras_corrinit\.{name}\.",
    ):
        assert getattr(old, name) is getattr(keras_corrinit, name)


def test_from_import_of_an_old_path_warns():
    with pytest.warns(DeprecationWarning, match="keras_corrinit.correlation.SpatialCorrelation is deprecated"):
        from keras_corrinit.correlation import SpatialCorrelation
    assert SpatialCorrelation is keras_corrinit.SpatialCorrelation


def test_an_old_module_is_an_attribute_of_the_package_and_lists_its_names():
    assert keras_corrinit.lsuv is sys.modules["keras_corrinit.lsuv"]
    assert dir(keras_corrinit.lsuv) == list(MOVED["lsuv"])


def test_a_name_an_old_module_never_had_is_an_attribute_error():
    with pytest.raises(AttributeError, match="module 'keras_corrinit.correlation' has no attribute 'to_correlation'"):
        keras_corrinit.correlation.to_correlation  # noqa: B018
    with pytest.raises(AttributeError, match="module 'keras_corrinit' has no attribute 'no_such_module'"):
        keras_corrinit.no_such_module  # noqa: B018
