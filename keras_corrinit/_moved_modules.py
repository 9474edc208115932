"""What moved in 0.3.0 and still works, with a `DeprecationWarning`, until 0.4.0 (private).

* Helper names that 0.2.0 exported from `keras_corrinit` itself now live in
  their concept's subpackage (`keras_corrinit.correlation.psd_factor`, ...);
  `keras_corrinit` + `.psd_factor` gives the same object and a warning naming
  the new path.
* 0.2.0 module paths that no subpackage took (`keras_corrinit.lsuv`,
  `.nfm`, `.depthwise`, `.callbacks`, `.tracker`, `.plots`) are small module
  objects in `sys.modules` forwarding their names to the new homes.
  `keras_corrinit.correlation`, `.extraction` and `.layerwise` are real
  subpackages now and export all of their 0.2.0 names.
"""

import importlib
import sys
import types
import warnings

REMOVAL = "0.4.0"

# Each name that left the top level -> its subpackage.
NEW_HOME = {
    **dict.fromkeys(
        ("filter_covariance", "matrix_profile", "nearest_correlation_matrix", "nfm_matrix", "position_distances")
        + ("psd_factor", "resample_covariance", "PatchStatistics"),
        "correlation",
    ),
    **dict.fromkeys(
        ("DEFAULT_CORRELATION", "DEFAULT_ENVELOPE", "DEFAULT_SIGMA", "ConstructedFilterCovariance", "FilterCovariance"),
        "initializers",
    ),
    **dict.fromkeys(
        ("CorrelationEstimate", "DepthwiseCovariance", "application_names", "correlation_from_kernels")
        + ("depthwise_covariance_from_model", "patch_statistics", "spatial_kernels", "plot_correlation_profiles"),
        "extraction",
    ),
    **dict.fromkeys(
        ("InitializationReport", "InitializedLayer", "LSUVReport", "LayerReport", "apply_initializers")
        + ("depthwise_layerwise_initializers", "layer_seeds", "nfm_layerwise_initializers", "pair_layers")
        + ("reinitialize_depthwise",),
        "layerwise",
    ),
    "plot_training_curves": "monitor",
}

# Each 0.2.0 module path that is not a subpackage now, and the names it exported.
MOVED = {
    "callbacks": ("GradientSignMonitor",),
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
    "lsuv": ("LSUVReport", "LayerReport", "lsuv_initialize"),
    "nfm": ("NFMInit", "agop_matrix", "nfm_layerwise_initializers", "nfm_matrix"),
    "plots": ("plot_correlation_profiles", "plot_training_curves"),
    "tracker": ("GradientSignTracker",),
}


def home(package, name):
    """The public path of `name` in 0.3.0: `package.name` for a headline name, else its subpackage's."""
    return f"{package}.{NEW_HOME[name]}.{name}" if name in NEW_HOME else f"{package}.{name}"


def _resolve(package, name, old):
    warnings.warn(
        f"{old} is deprecated since 0.3.0 and will be removed in {REMOVAL}; use {home(package, name)}.",
        DeprecationWarning,
        stacklevel=3,
    )
    path, _, attribute = home(package, name).rpartition(".")
    return getattr(importlib.import_module(path), attribute)


class _MovedModule(types.ModuleType):
    """A 0.2.0 module path whose names now live in subpackages."""

    def __init__(self, package, old, names):
        super().__init__(f"{package}.{old}", f"Deprecated since 0.3.0 (removed in {REMOVAL}).")
        self.__all__ = list(names)
        self._package = package

    def __getattr__(self, name):
        if name not in self.__all__:
            raise AttributeError(f"module {self.__name__!r} has no attribute {name!r}")
        return _resolve(self._package, name, f"{self.__name__}.{name}")

    def __dir__(self):
        return list(self.__all__)


def register(package):
    """Registers every moved module path of `package` in `sys.modules`."""
    for old, names in MOVED.items():
        sys.modules.setdefault(f"{package}.{old}", _MovedModule(package, old, names))


def moved(package, name):
    """A module `__getattr__` for `package`: moved names and old module paths, else AttributeError."""
    if name in NEW_HOME:
        return _resolve(package, name, f"{package}.{name}")
    if name in MOVED:
        return sys.modules[f"{package}.{name}"]
    raise AttributeError(f"module {package!r} has no attribute {name!r}")
