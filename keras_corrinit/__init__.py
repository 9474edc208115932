"""keras_corrinit: correlated, data-aware and data-driven initialization for Keras 3."""

from keras_corrinit.callbacks import GradientSignMonitor
from keras_corrinit.correlation import (
    SpatialCorrelation,
    matrix_profile,
    nearest_correlation_matrix,
    position_distances,
    psd_factor,
)
from keras_corrinit.initializers import (
    DEFAULT_CORRELATION,
    CorrelatedHeNormal,
    EnhancedGamma,
)
from keras_corrinit.plots import plot_training_curves
from keras_corrinit.lsuv import LayerReport, LSUVReport, lsuv_initialize

__version__ = "0.1.0"

__all__ = [
    "DEFAULT_CORRELATION",
    "CorrelatedHeNormal",
    "EnhancedGamma",
    "GradientSignMonitor",
    "LSUVReport",
    "LayerReport",
    "SpatialCorrelation",
    "matrix_profile",
    "nearest_correlation_matrix",
    "position_distances",
    "psd_factor",
    "lsuv_initialize",
    "plot_training_curves",
]
