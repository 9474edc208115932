"""Batch normalization's statistics, measured the way training sees them (PreciseBN).

`recalibrate_normalization(model, data)` sets every BatchNormalization's
moving statistics from data; `RecalibrateNormalization` does it inside
`fit` before each evaluation. `initialize` sets them at the start.
`ZCAWhitening` is a fixed whitening of the image, adapted on data, to put in
front of a model whose stem is too narrow to whiten its own patches.
"""

from keras_corrinit.normalization._callback import RecalibrateNormalization as RecalibrateNormalization
from keras_corrinit.normalization._statistics import NormalizationStatistics as NormalizationStatistics
from keras_corrinit.normalization._statistics import recalibrate_normalization as recalibrate_normalization
from keras_corrinit.normalization._whitening import ZCAWhitening as ZCAWhitening

__all__ = ["NormalizationStatistics", "RecalibrateNormalization", "ZCAWhitening", "recalibrate_normalization"]
