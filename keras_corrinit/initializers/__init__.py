"""Keras initializers of keras_corrinit, in one namespace (as `keras.initializers`).

All of them follow Keras's conventions: `__call__(shape, dtype=None)`,
`seed` as an int, None or a `keras.random.SeedGenerator`, a JSON
`get_config()`, registered with `package="keras_corrinit"`. The headline
ones are also reachable from `keras_corrinit` itself.
"""

from keras_corrinit.initializers._controls import ScaleControl as ScaleControl
from keras_corrinit.initializers._correlated import DEFAULT_CORRELATION as DEFAULT_CORRELATION
from keras_corrinit.initializers._correlated import CorrelatedHeNormal as CorrelatedHeNormal
from keras_corrinit.initializers._depthwise import DEFAULT_ENVELOPE as DEFAULT_ENVELOPE
from keras_corrinit.initializers._depthwise import DEFAULT_SIGMA as DEFAULT_SIGMA
from keras_corrinit.initializers._depthwise import ConstructedFilterCovariance as ConstructedFilterCovariance
from keras_corrinit.initializers._depthwise import FilterCovariance as FilterCovariance
from keras_corrinit.initializers._gamma import EnhancedGamma as EnhancedGamma
from keras_corrinit.initializers._nfm import NFMInit as NFMInit
from keras_corrinit.initializers._whitening import PatchWhitening as PatchWhitening

__all__ = [
    "DEFAULT_CORRELATION",
    "DEFAULT_ENVELOPE",
    "DEFAULT_SIGMA",
    "ConstructedFilterCovariance",
    "CorrelatedHeNormal",
    "EnhancedGamma",
    "FilterCovariance",
    "NFMInit",
    "PatchWhitening",
    "ScaleControl",
]
