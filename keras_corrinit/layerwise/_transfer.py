"""Initializers for a whole model from another one's statistics.

Each target layer takes its initializer from its source counterpart: an
`NFMInit` from the source layer's feature matrix, a depthwise covariance
from the source layer at the same relative depth (or the closed form).
`CorrelationEstimate.layerwise_initializers` does the same with the
spatial correlation. The results go through `apply_initializers`, which
assigns all of them or none.
"""

from keras_corrinit._core.apply import apply_initializers, initializers_by_layer, layer_seeds, pair_layers
from keras_corrinit._core.layers import depthwise_kernels, kernel_layers
from keras_corrinit.correlation._features import NFM_KINDS
from keras_corrinit.extraction._estimates import DepthwiseCovariance
from keras_corrinit.initializers._depthwise import ConstructedFilterCovariance
from keras_corrinit.initializers._nfm import NFMInit

__all__ = ["depthwise_layerwise_initializers", "nfm_layerwise_initializers", "reinitialize_depthwise"]


def _kernel_layers(model):
    return [layer for layer, _ in kernel_layers(model, NFM_KINDS)]


def nfm_layerwise_initializers(source, target, mapping=None, scaling="kaiming", seed=None):
    """One `NFMInit` per target Conv/Dense layer from its source counterpart.

    Args:
        source: The pretrained model.
        target: The model to initialize.
        mapping: `{target layer name: source layer name}`; by default the
            Conv/Dense layers of both are paired in model order (they must
            be equally many).
        scaling: `"kaiming"` (default) or `"none"`, as in `NFMInit`.
        seed: An int, None (default) or a `keras.random.SeedGenerator`; each layer gets
            its own stream (see `layer_seeds`), so an int seed reproduces the
            model and no two layers share a draw.

    Returns:
        `{target layer name: NFMInit}`, for `apply_initializers(target, ...)`.
    """
    sources = {layer.name: layer for layer in _kernel_layers(source)}
    targets = [layer.name for layer in _kernel_layers(target)]
    pairs = pair_layers(targets, list(sources), mapping, what="Conv/Dense layers")
    return initializers_by_layer(
        pairs, lambda src, layer_seed: NFMInit.from_kernel(sources[src], scaling=scaling, seed=layer_seed), seed
    )


def depthwise_layerwise_initializers(target, covariance=None, seed=None, **construction):
    """One initializer per depthwise kernel of `target`, by relative depth.

    Args:
        target: A built Keras model.
        covariance: None (default) for `ConstructedFilterCovariance` at each
            layer's relative depth, or a `DepthwiseCovariance` measured on
            another model (transferred by relative depth and resampled to
            each layer's kernel size).
        seed: An int (per-layer seeds derived from it), None (default) or a
            `keras.random.SeedGenerator` shared by the layers.
        **construction: `sigma`, `envelope`, `gain` of the closed form.

    Returns:
        `{key: initializer}` for `apply_initializers`.
    """
    if covariance is not None and not isinstance(covariance, DepthwiseCovariance):
        raise TypeError(f"`covariance` must be None or a DepthwiseCovariance; received {type(covariance).__name__}.")
    if covariance is not None and construction:
        raise ValueError(f"{sorted(construction)} apply to the closed form only; pass `covariance=None`.")
    keys = [key for key, _ in depthwise_kernels(target)]
    if not keys:
        raise ValueError("`target` has no depthwise kernels to initialize.")
    initializers = {}
    for i, (key, s) in enumerate(zip(keys, layer_seeds(seed, len(keys)))):
        depth = i / (len(keys) - 1) if len(keys) > 1 else 0.0
        initializers[key] = (
            ConstructedFilterCovariance(depth, seed=s, **construction)
            if covariance is None
            else covariance.initializer(depth, seed=s)
        )
    return initializers


def reinitialize_depthwise(model, covariance=None, seed=None, **construction):
    """Re-initializes every depthwise kernel of `model` in place, in one call.

    Args:
        model: A built Keras model, e.g. `keras.applications.ConvNeXtTiny`.
        covariance: None (default) for the closed form, or a
            `DepthwiseCovariance` (see `depthwise_layerwise_initializers`).
        seed: An int, None (default) or a `keras.random.SeedGenerator`.
        **construction: `sigma`, `envelope`, `gain` of the closed form.

    Returns:
        The `{key: initializer}` applied.

    Examples:
        >>> model = keras.Sequential([keras.Input((16, 16, 8)), keras.layers.DepthwiseConv2D(7, name="dw")])
        >>> sorted(reinitialize_depthwise(model, seed=0))
        ['dw']
    """
    initializers = depthwise_layerwise_initializers(model, covariance, seed, **construction)
    apply_initializers(model, initializers)
    return initializers
