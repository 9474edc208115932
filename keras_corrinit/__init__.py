"""keras_corrinit: correlated, data-aware and data-driven initialization for Keras 3."""

from keras_corrinit.callbacks import GradientSignMonitor
from keras_corrinit.correlation import (
    SpatialCorrelation,
    filter_covariance,
    matrix_profile,
    nearest_correlation_matrix,
    position_distances,
    psd_factor,
)
from keras_corrinit.depthwise import (
    DEFAULT_ENVELOPE,
    DEFAULT_SIGMA,
    ConstructedFilterCovariance,
    DepthwiseCovariance,
    FilterCovariance,
    depthwise_covariance_from_model,
    depthwise_layerwise_initializers,
    reinitialize_depthwise,
    resample_covariance,
)
from keras_corrinit.extraction import (
    CorrelationEstimate,
    application_names,
    correlation_from_application,
    correlation_from_kernels,
    correlation_from_model,
    spatial_kernels,
)
from keras_corrinit.initializers import (
    DEFAULT_CORRELATION,
    CorrelatedHeNormal,
    EnhancedGamma,
)
from keras_corrinit.layerwise import apply_initializers, layer_seeds, pair_layers
from keras_corrinit.lsuv import LayerReport, LSUVReport, lsuv_initialize
from keras_corrinit.nfm import NFMInit, agop_matrix, nfm_layerwise_initializers, nfm_matrix
from keras_corrinit.plots import plot_correlation_profiles, plot_training_curves
from keras_corrinit.tracker import GradientSignTracker

__version__ = "0.2.0"

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
    "LSUVReport",
    "LayerReport",
    "NFMInit",
    "SpatialCorrelation",
    "agop_matrix",
    "application_names",
    "apply_initializers",
    "correlation_from_application",
    "correlation_from_kernels",
    "correlation_from_model",
    "depthwise_covariance_from_model",
    "depthwise_layerwise_initializers",
    "filter_covariance",
    "layer_seeds",
    "lsuv_initialize",
    "matrix_profile",
    "nearest_correlation_matrix",
    "nfm_layerwise_initializers",
    "nfm_matrix",
    "pair_layers",
    "plot_correlation_profiles",
    "plot_training_curves",
    "position_distances",
    "psd_factor",
    "reinitialize_depthwise",
    "resample_covariance",
    "spatial_kernels",
]
