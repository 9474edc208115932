"""keras_corrinit: correlated, data-aware and data-driven initialization for Keras 3.

Every public name is reached from here (initializers also from
`keras_corrinit.initializers`); the modules that implement them are private.
"""

from keras_corrinit import _moved_modules
from keras_corrinit._agop import agop_matrix, nfm_matrix
from keras_corrinit._applications import application_names, correlation_from_application
from keras_corrinit._correlated import DEFAULT_CORRELATION, CorrelatedHeNormal, EnhancedGamma
from keras_corrinit._correlation import (
    SpatialCorrelation,
    matrix_profile,
    nearest_correlation_matrix,
    position_distances,
    psd_factor,
)
from keras_corrinit._covariance import filter_covariance, resample_covariance
from keras_corrinit._data_correlation import correlation_from_data, patch_statistics
from keras_corrinit._depthwise import (
    DEFAULT_ENVELOPE,
    DEFAULT_SIGMA,
    ConstructedFilterCovariance,
    FilterCovariance,
)
from keras_corrinit._estimates import (
    CorrelationEstimate,
    DepthwiseCovariance,
    correlation_from_kernels,
    correlation_from_model,
    depthwise_covariance_from_model,
    spatial_kernels,
)
from keras_corrinit._initialize import InitializationReport, InitializedLayer, initialize
from keras_corrinit._layerwise import apply_initializers, layer_seeds, pair_layers
from keras_corrinit._lsuv import LayerReport, LSUVReport, lsuv_initialize
from keras_corrinit._monitor import GradientSignMonitor
from keras_corrinit._nfm import NFMInit
from keras_corrinit._patches import PatchStatistics
from keras_corrinit._plots import plot_correlation_profiles, plot_training_curves
from keras_corrinit._tracker import GradientSignTracker
from keras_corrinit._transfer import (
    depthwise_layerwise_initializers,
    nfm_layerwise_initializers,
    reinitialize_depthwise,
)
from keras_corrinit._version import __version__ as __version__
from keras_corrinit._whitening import PatchWhitening

__all__ = [
    "DEFAULT_CORRELATION",
    "DEFAULT_ENVELOPE",
    "DEFAULT_SIGMA",
    "ConstructedFilterCovariance",
    "CorrelatedHeNormal",
    "CorrelationEstimate",
    "DepthwiseCovariance",
    "EnhancedGamma",
    "FilterCovariance",
    "GradientSignMonitor",
    "GradientSignTracker",
    "InitializationReport",
    "InitializedLayer",
    "LSUVReport",
    "LayerReport",
    "NFMInit",
    "PatchStatistics",
    "PatchWhitening",
    "SpatialCorrelation",
    "agop_matrix",
    "application_names",
    "apply_initializers",
    "correlation_from_application",
    "correlation_from_data",
    "correlation_from_kernels",
    "correlation_from_model",
    "depthwise_covariance_from_model",
    "depthwise_layerwise_initializers",
    "filter_covariance",
    "initialize",
    "layer_seeds",
    "lsuv_initialize",
    "matrix_profile",
    "nearest_correlation_matrix",
    "nfm_layerwise_initializers",
    "nfm_matrix",
    "pair_layers",
    "patch_statistics",
    "plot_correlation_profiles",
    "plot_training_curves",
    "position_distances",
    "psd_factor",
    "reinitialize_depthwise",
    "resample_covariance",
    "spatial_kernels",
]


_moved_modules.register(__name__)


def __getattr__(name):
    # The 0.2.0 module paths (keras_corrinit.correlation, ...), deprecated.
    return _moved_modules.moved_module(__name__, name)
