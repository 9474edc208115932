"""Spatial correlation and covariance of filters and patches, as numbers (numpy).

`SpatialCorrelation` is the R of a filter's positions (Algorithm 1's input);
`filter_covariance`/`resample_covariance` treat per-layer filter
covariances; `PatchStatistics` holds the covariance of a layer's input
patches (what whitening reads); `nfm_matrix` is a kernel's Neural Feature
Matrix W^T W. Nothing here trains or runs a model (the Keras touches are
reading a layer's kernel and cutting patches).
"""

from keras_corrinit.correlation._covariance import filter_covariance as filter_covariance
from keras_corrinit.correlation._covariance import resample_covariance as resample_covariance
from keras_corrinit.correlation._features import nfm_matrix as nfm_matrix
from keras_corrinit.correlation._patches import PatchStatistics as PatchStatistics
from keras_corrinit.correlation._spatial import SpatialCorrelation as SpatialCorrelation
from keras_corrinit.correlation._spatial import matrix_profile as matrix_profile
from keras_corrinit.correlation._spatial import nearest_correlation_matrix as nearest_correlation_matrix
from keras_corrinit.correlation._spatial import position_distances as position_distances
from keras_corrinit.correlation._spatial import psd_factor as psd_factor

__all__ = [
    "PatchStatistics",
    "SpatialCorrelation",
    "filter_covariance",
    "matrix_profile",
    "nearest_correlation_matrix",
    "nfm_matrix",
    "position_distances",
    "psd_factor",
    "resample_covariance",
]
