"""keras_corrinit: correlated, data-aware and data-driven initialization for Keras 3.

The headline names are here; each concept is a subpackage with its own
public face: `keras_corrinit.initializers` (every Keras initializer),
`keras_corrinit.correlation` (correlation and covariance as numbers),
`keras_corrinit.extraction` (measured from trained models, Applications,
data), `keras_corrinit.layerwise` (`initialize`, LSUV, applying and
transferring per layer), `keras_corrinit.monitor` (the gradient-sign
measure), `keras_corrinit.normalization` (batch normalization's statistics
from data) and `keras_corrinit.experiments` (`compare`).
"""

from keras_corrinit import (
    correlation,
    experiments,
    extraction,
    initializers,
    layerwise,
    monitor,
    normalization,
)
from keras_corrinit._version import __version__ as __version__
from keras_corrinit.correlation import SpatialCorrelation as SpatialCorrelation
from keras_corrinit.extraction import agop_matrix as agop_matrix
from keras_corrinit.extraction import correlation_from_application as correlation_from_application
from keras_corrinit.extraction import correlation_from_data as correlation_from_data
from keras_corrinit.extraction import correlation_from_model as correlation_from_model
from keras_corrinit.initializers import CorrelatedHeNormal as CorrelatedHeNormal
from keras_corrinit.initializers import EnhancedGamma as EnhancedGamma
from keras_corrinit.initializers import NFMInit as NFMInit
from keras_corrinit.initializers import PatchWhitening as PatchWhitening
from keras_corrinit.layerwise import initialize as initialize
from keras_corrinit.layerwise import lsuv_initialize as lsuv_initialize
from keras_corrinit.monitor import GradientSignMonitor as GradientSignMonitor
from keras_corrinit.monitor import GradientSignTracker as GradientSignTracker

__all__ = [
    "CorrelatedHeNormal",
    "EnhancedGamma",
    "GradientSignMonitor",
    "GradientSignTracker",
    "NFMInit",
    "PatchWhitening",
    "SpatialCorrelation",
    "agop_matrix",
    "correlation",
    "correlation_from_application",
    "correlation_from_data",
    "correlation_from_model",
    "experiments",
    "extraction",
    "initialize",
    "initializers",
    "layerwise",
    "lsuv_initialize",
    "monitor",
    "normalization",
]
