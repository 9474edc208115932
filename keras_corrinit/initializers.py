"""Keras initializers of keras_corrinit, in one namespace (as `keras.initializers`).

Every name here is also reachable from `keras_corrinit` itself; this module
gathers the initializers for code that reads like Keras's:
`keras_corrinit.initializers.CorrelatedHeNormal(...)`. All of them follow
Keras's conventions: `__call__(shape, dtype=None)`, `seed` as an int, None or
a `keras.random.SeedGenerator`, a JSON `get_config()`, registered with
`package="keras_corrinit"`.
"""

from keras_corrinit._correlated import DEFAULT_CORRELATION, CorrelatedHeNormal, EnhancedGamma
from keras_corrinit._depthwise import ConstructedFilterCovariance, FilterCovariance
from keras_corrinit._nfm import NFMInit
from keras_corrinit._whitening import PatchWhitening

__all__ = [
    "DEFAULT_CORRELATION",
    "ConstructedFilterCovariance",
    "CorrelatedHeNormal",
    "EnhancedGamma",
    "FilterCovariance",
    "NFMInit",
    "PatchWhitening",
]
