"""The package's public face: headline names, one home per name in a concept subpackage, what moved."""

import importlib
import inspect
import sys
import warnings

import keras
import pytest

import keras_corrinit
from keras_corrinit import initializers
from keras_corrinit._moved_modules import MOVED, NEW_HOME

SUBPACKAGES = ("correlation", "initializers", "extraction", "layerwise", "monitor", "normalization", "experiments")
# 0.2.0's keras_corrinit.__all__ (as released), and the 0.2.0 modules that are subpackages now.
NAMES_0_2_0 = """
DEFAULT_CORRELATION DEFAULT_ENVELOPE DEFAULT_SIGMA ConstructedFilterCovariance CorrelatedHeNormal
CorrelationEstimate DepthwiseCovariance EnhancedGamma FilterCovariance GradientSignMonitor GradientSignTracker
LSUVReport LayerReport NFMInit SpatialCorrelation agop_matrix application_names apply_initializers
correlation_from_application correlation_from_kernels correlation_from_model depthwise_covariance_from_model
depthwise_layerwise_initializers filter_covariance layer_seeds lsuv_initialize matrix_profile
nearest_correlation_matrix nfm_layerwise_initializers nfm_matrix pair_layers plot_correlation_profiles
plot_training_curves position_distances psd_factor reinitialize_depthwise resample_covariance spatial_kernels
""".split()
MODULES_0_2_0 = {
    "correlation": (
        "SpatialCorrelation",
        "filter_covariance",
        "matrix_profile",
        "nearest_correlation_matrix",
        "position_distances",
        "psd_factor",
    ),
    "extraction": (
        "CorrelationEstimate",
        "application_names",
        "correlation_from_application",
        "correlation_from_kernels",
        "correlation_from_model",
        "spatial_kernels",
    ),
    "layerwise": ("apply_initializers", "layer_seeds", "pair_layers"),
}
OLD_NAMES = sorted((module, name) for module, names in MOVED.items() for name in names)


def _public(module):
    return {name: getattr(module, name) for name in module.__all__}


@pytest.mark.parametrize("subpackage", SUBPACKAGES)
def test_each_subpackage_lists_its_names_once_and_defines_them_in_private_modules(subpackage):
    module = importlib.import_module(f"keras_corrinit.{subpackage}")
    assert len(set(module.__all__)) == len(module.__all__)  # (ruff's RUF022 keeps __all__ sorted)
    for name, obj in _public(module).items():
        if inspect.isclass(obj) or inspect.isfunction(obj):
            assert obj.__module__.startswith((f"keras_corrinit.{subpackage}._", "keras_corrinit._core.")), name


def test_each_public_name_has_one_home_and_the_top_level_holds_the_headline():
    homes = {}
    for subpackage in SUBPACKAGES:
        for name in importlib.import_module(f"keras_corrinit.{subpackage}").__all__:
            assert name not in homes, f"{name} is public in both {homes.get(name)} and {subpackage}"
            homes[name] = subpackage
    for name, obj in _public(keras_corrinit).items():
        if name in SUBPACKAGES:
            assert obj is sys.modules[f"keras_corrinit.{name}"]
        else:  # a headline name is its home's object
            assert obj is getattr(importlib.import_module(f"keras_corrinit.{homes[name]}"), name)
    assert len(keras_corrinit.__all__) <= 20  # Keras's initializers module: about 16 names
    assert set(NEW_HOME) <= set(homes) and all(homes[name] == home for name, home in NEW_HOME.items())


@pytest.mark.parametrize("name", NAMES_0_2_0)
def test_every_0_2_0_top_level_name_still_works(name):
    if name in keras_corrinit.__all__:
        with warnings.catch_warnings():
            warnings.simplefilter("error")
            getattr(keras_corrinit, name)
        return
    home = importlib.import_module(f"keras_corrinit.{NEW_HOME[name]}")
    message = rf"keras_corrinit\.{name} is deprecated since 0\.3\.0 and will be removed in 0\.4\.0; "
    with pytest.warns(DeprecationWarning, match=message + rf"use keras_corrinit\.{NEW_HOME[name]}\.{name}\."):
        assert getattr(keras_corrinit, name) is getattr(home, name)


@pytest.mark.parametrize(("module", "name"), OLD_NAMES)
def test_an_old_module_path_gives_the_same_object_with_a_warning_naming_its_home(module, name):
    old = importlib.import_module(f"keras_corrinit.{module}")
    new = f"keras_corrinit.{NEW_HOME[name]}.{name}" if name in NEW_HOME else f"keras_corrinit.{name}"
    with pytest.warns(
        DeprecationWarning, match=rf"keras_corrinit\.{module}\.{name} is deprecated since 0\.3\.0.*use {new}\."
    ):
        found = getattr(old, name)
    path, _, attribute = new.rpartition(".")
    assert found is getattr(importlib.import_module(path), attribute)


@pytest.mark.parametrize("module", sorted(MODULES_0_2_0))
def test_a_0_2_0_module_that_is_a_subpackage_now_serves_its_names_without_warning(module):
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        subpackage = importlib.import_module(f"keras_corrinit.{module}")
        assert all(hasattr(subpackage, name) for name in MODULES_0_2_0[module])


def test_the_initializers_namespace_holds_every_registered_initializer():
    registered = {
        obj
        for key, obj in keras.saving.get_custom_objects().items()
        if key.startswith("keras_corrinit>") and issubclass(obj, keras.initializers.Initializer)
    }
    offered = {obj for obj in _public(initializers).values() if inspect.isclass(obj)}
    assert registered <= offered


def test_an_old_module_is_an_attribute_of_the_package_and_lists_its_names():
    assert keras_corrinit.lsuv is sys.modules["keras_corrinit.lsuv"]
    assert dir(keras_corrinit.lsuv) == list(MOVED["lsuv"])


def test_a_name_that_never_existed_is_an_attribute_error():
    with pytest.raises(AttributeError, match="module 'keras_corrinit.lsuv' has no attribute 'initialize'"):
        keras_corrinit.lsuv.initialize  # noqa: B018
    with pytest.raises(AttributeError, match="module 'keras_corrinit' has no attribute 'no_such_module'"):
        keras_corrinit.no_such_module  # noqa: B018
