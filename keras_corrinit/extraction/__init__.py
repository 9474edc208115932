"""Correlation and covariance measured from trained kernels, Keras Applications, data and gradients.

`correlation_from_model`/`correlation_from_kernels`/`correlation_from_application`
estimate a network's pooled spatial correlation (the paper's Figure 1) as a
`CorrelationEstimate`; `depthwise_covariance_from_model` the per-layer
depthwise filter covariances; `correlation_from_data`/`patch_statistics`
the correlation and covariance of each convolution's input patches on
data; `agop_matrix` a layer's average gradient outer product.
"""

from keras_corrinit._core.figures import plot_correlation_profiles as plot_correlation_profiles
from keras_corrinit.extraction._agop import agop_matrix as agop_matrix
from keras_corrinit.extraction._applications import application_names as application_names
from keras_corrinit.extraction._applications import correlation_from_application as correlation_from_application
from keras_corrinit.extraction._estimates import CorrelationEstimate as CorrelationEstimate
from keras_corrinit.extraction._estimates import DepthwiseCovariance as DepthwiseCovariance
from keras_corrinit.extraction._estimates import correlation_from_kernels as correlation_from_kernels
from keras_corrinit.extraction._estimates import correlation_from_model as correlation_from_model
from keras_corrinit.extraction._estimates import depthwise_covariance_from_model as depthwise_covariance_from_model
from keras_corrinit.extraction._estimates import spatial_kernels as spatial_kernels
from keras_corrinit.extraction._from_data import correlation_from_data as correlation_from_data
from keras_corrinit.extraction._from_data import patch_statistics as patch_statistics

__all__ = [
    "CorrelationEstimate",
    "DepthwiseCovariance",
    "agop_matrix",
    "application_names",
    "correlation_from_application",
    "correlation_from_data",
    "correlation_from_kernels",
    "correlation_from_model",
    "depthwise_covariance_from_model",
    "patch_statistics",
    "plot_correlation_profiles",
    "spatial_kernels",
]
