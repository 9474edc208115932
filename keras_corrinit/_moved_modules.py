"""The module paths of 0.2.0 (`keras_corrinit.correlation`, ...), deprecated (private).

Since 0.3.0 the implementation modules are private and every public name is
reached from `keras_corrinit` itself. Until 0.4.0 the old paths still work:
`from keras_corrinit.correlation import SpatialCorrelation` gives the same
object with a `DeprecationWarning` naming the new path. No file stands in
for an old module: each is a small module object registered in
`sys.modules` that forwards its 0.2.0 names to the package.
"""

import importlib
import sys
import types
import warnings

# Each 0.2.0 public module and the names it exported.
MOVED = {
    "callbacks": ("GradientSignMonitor",),
    "correlation": (
        "SpatialCorrelation",
        "filter_covariance",
        "matrix_profile",
        "nearest_correlation_matrix",
        "position_distances",
        "psd_factor",
    ),
    "depthwise": (
        "DEFAULT_ENVELOPE",
        "DEFAULT_SIGMA",
        "ConstructedFilterCovariance",
        "DepthwiseCovariance",
        "FilterCovariance",
        "depthwise_covariance_from_model",
        "depthwise_layerwise_initializers",
        "reinitialize_depthwise",
        "resample_covariance",
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
    "lsuv": ("LSUVReport", "LayerReport", "lsuv_initialize"),
    "nfm": ("NFMInit", "agop_matrix", "nfm_layerwise_initializers", "nfm_matrix"),
    "plots": ("plot_correlation_profiles", "plot_training_curves"),
    "tracker": ("GradientSignTracker",),
}


class _MovedModule(types.ModuleType):
    """A 0.2.0 module path whose names now live in the package."""

    def __init__(self, package, old, names):
        super().__init__(f"{package}.{old}", f"Deprecated since 0.3.0: use `{package}` directly.")
        self.__all__ = list(names)
        self._package = package

    def __getattr__(self, name):
        if name not in self.__all__:
            raise AttributeError(f"module {self.__name__!r} has no attribute {name!r}")
        warnings.warn(
            f"{self.__name__}.{name} is deprecated since 0.3.0 and will be removed in 0.4.0; "
            f"use {self._package}.{name}.",
            DeprecationWarning,
            stacklevel=2,
        )
        return getattr(importlib.import_module(self._package), name)

    def __dir__(self):
        return list(self.__all__)


def register(package):
    """Registers every moved module path of `package` in `sys.modules`."""
    for old, names in MOVED.items():
        sys.modules.setdefault(f"{package}.{old}", _MovedModule(package, old, names))


def moved_module(package, name):
    """`package.name` for an old module path, else AttributeError (a module `__getattr__`)."""
    if name in MOVED:
        return sys.modules[f"{package}.{name}"]
    raise AttributeError(f"module {package!r} has no attribute {name!r}")
