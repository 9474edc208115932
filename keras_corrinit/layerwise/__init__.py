"""Operations on a built model, layer by layer: data-aware `initialize`, LSUV, applying and transferring.

`initialize(model, data)` (whitened first convolution, identities, zero
heads and residual ends, LSUV's scale), `lsuv_initialize`, and the pieces
they stand on: `apply_initializers` (set kernels from initializers, all or
nothing), `layer_seeds`, `pair_layers`, and the transfers of measured
structure onto a new model (`nfm_layerwise_initializers`,
`depthwise_layerwise_initializers`, `reinitialize_depthwise`).
"""

from keras_corrinit._core.apply import apply_initializers as apply_initializers
from keras_corrinit._core.apply import layer_seeds as layer_seeds
from keras_corrinit._core.apply import pair_layers as pair_layers
from keras_corrinit.layerwise._initialize import InitializationReport as InitializationReport
from keras_corrinit.layerwise._initialize import InitializedLayer as InitializedLayer
from keras_corrinit.layerwise._initialize import initialize as initialize
from keras_corrinit.layerwise._lsuv import LayerReport as LayerReport
from keras_corrinit.layerwise._lsuv import LSUVReport as LSUVReport
from keras_corrinit.layerwise._lsuv import lsuv_initialize as lsuv_initialize
from keras_corrinit.layerwise._transfer import depthwise_layerwise_initializers as depthwise_layerwise_initializers
from keras_corrinit.layerwise._transfer import nfm_layerwise_initializers as nfm_layerwise_initializers
from keras_corrinit.layerwise._transfer import reinitialize_depthwise as reinitialize_depthwise

__all__ = [
    "InitializationReport",
    "InitializedLayer",
    "LSUVReport",
    "LayerReport",
    "apply_initializers",
    "depthwise_layerwise_initializers",
    "initialize",
    "layer_seeds",
    "lsuv_initialize",
    "nfm_layerwise_initializers",
    "pair_layers",
    "reinitialize_depthwise",
]
