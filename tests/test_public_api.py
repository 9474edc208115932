"""The package's public face: headline names, one home per name in a concept subpackage, what moved."""

import importlib
import inspect
import sys
import warnings

import keras
import pytest

import keras_corrinit
from keras_corrinit import initializers

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
# 0.2.0's module paths that no subpackage took: removed in 0.4.0 (deprecated in 0.3).
OLD_MODULES = ("lsuv", "nfm", "depthwise", "callbacks", "tracker", "plots")


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


def _homes():
    return {
        name: subpackage
        for subpackage in SUBPACKAGES
        for name in importlib.import_module(f"keras_corrinit.{subpackage}").__all__
    }


@pytest.mark.parametrize("name", NAMES_0_2_0)
def test_a_0_2_0_top_level_name_is_a_headline_name_or_lives_in_its_subpackage_only(name):
    # 0.3 kept the moved names working with a DeprecationWarning; 0.4.0 removed them, as announced.
    if name in keras_corrinit.__all__:
        with warnings.catch_warnings():
            warnings.simplefilter("error")
            getattr(keras_corrinit, name)
        return
    if name in ("plot_training_curves",):  # 0.2.0's plotting helper became part of the monitor's figures
        assert not hasattr(keras_corrinit, name)
        return
    assert name in _homes(), f"{name} has no home"
    assert not hasattr(keras_corrinit, name)


@pytest.mark.parametrize("module", OLD_MODULES)
def test_the_0_2_0_module_paths_are_gone(module):
    with pytest.raises(ModuleNotFoundError):
        importlib.import_module(f"keras_corrinit.{module}")


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


def test_a_name_that_never_existed_is_an_attribute_error():
    with pytest.raises(AttributeError, match="module 'keras_corrinit' has no attribute 'no_such_module'"):
        keras_corrinit.no_such_module  # noqa: B018
