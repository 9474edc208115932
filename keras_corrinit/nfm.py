"""Neural Feature Matrix (NFM) and AGOP initialization.

A trained layer with kernel K, flattened to `F` of shape `(fan_in, out)`
(rows in Keras's `(*spatial, in_channels)` order), has the Neural Feature
Matrix `W^T W = F F^T` (`fan_in x fan_in`, with `W = F^T` the usual
`out x fan_in` weight matrix). The Average Gradient Outer Product (AGOP) of
the model output with respect to the layer's input patches is, by the Neural
Feature Ansatz, proportional to it. `NFMInit` draws new weights from
`N(0, Sigma)` with such a Sigma, scaled like Kaiming (mean per-weight
variance `2 / fan_in`).

Reference:
    "New Initialization Mechanisms for Convolutional Neural Networks" (the
    NFM/AGOP initialization poster); Beaglehole et al., "Mechanism of
    feature learning in convolutional neural networks" (2023,
    arXiv:2309.00570), the Convolutional Neural Feature Ansatz.
"""

import math

import keras
import numpy as np
from keras import ops

from keras_corrinit import _validation as check
from keras_corrinit._backend import gradients, intercepted_call
from keras_corrinit._base import CorrelatedSampler
from keras_corrinit._data import take_batches
from keras_corrinit._layers import kernel_layers, kernel_slots, walk_layers
from keras_corrinit.correlation import psd_factor
from keras_corrinit.layerwise import initializers_by_layer, pair_layers

__all__ = ["NFMInit", "agop_matrix", "nfm_layerwise_initializers", "nfm_matrix"]

# NFM and AGOP are defined for full convolutions and Dense layers.
_NFM_KINDS = ("conv", "dense")


def _kernel_array(layer_or_kernel, name="layer_or_kernel"):
    if isinstance(layer_or_kernel, keras.layers.Layer):
        if not hasattr(layer_or_kernel, "kernel"):
            raise ValueError(
                f"Layer {layer_or_kernel.name!r} ({type(layer_or_kernel).__name__}) "
                "has no `kernel`; pass a Conv or Dense layer or a kernel array."
            )
        layer_or_kernel = layer_or_kernel.kernel
    try:
        kernel = np.asarray(keras.ops.convert_to_numpy(layer_or_kernel), dtype=np.float64)
    except (TypeError, ValueError):
        raise TypeError(f"`{name}` must be a layer or a numeric kernel array.") from None
    if kernel.ndim < 2:
        raise ValueError(
            f"`{name}` must be a kernel of shape (*spatial, in, out) or (in, out); received shape {kernel.shape}."
        )
    if not np.all(np.isfinite(kernel)):
        raise ValueError(f"`{name}` contains NaN or Inf.")
    return kernel


def nfm_matrix(layer_or_kernel, reduce="full"):
    """The Neural Feature Matrix `W^T W` of a layer.

    Args:
        layer_or_kernel: A Conv/Dense layer or its kernel array.
        reduce: `"full"` (default): `(fan_in, fan_in)` over the flattened
            `(*spatial, in_channels)` inputs. `"spatial"`: `(P, P)`, the
            full NFM's entries between positions p and q for the same input
            channel, averaged over channels.

    Returns:
        A float64 numpy matrix.
    """
    kernel = _kernel_array(layer_or_kernel)
    flat = kernel.reshape(-1, kernel.shape[-1])
    if reduce == "full":
        return flat @ flat.T
    if reduce == "spatial":
        return _spatial_reduction(flat, math.prod(kernel.shape[:-2]), kernel.shape[-2])
    raise ValueError(f"`reduce` must be 'full' or 'spatial'; received {reduce!r}.")


def _spatial_reduction(factor, positions, in_channels):
    """(P, P) channel-averaged same-channel block of `factor @ factor.T`."""
    f = factor.reshape(positions, in_channels, -1)
    return np.einsum("pcr,qcr->pq", f, f) / in_channels


def _compact(values):
    # 7 significant digits keep configs small (float32 precision) and exact
    # on reload: the instance uses the same rounded values its config holds.
    return np.array([float(f"{v:.7g}") for v in np.ravel(values)]).reshape(np.shape(values))


@keras.saving.register_keras_serializable(package="keras_corrinit")
class NFMInit(CorrelatedSampler):
    """Weights drawn from N(0, Sigma) with Sigma a (pretrained) feature matrix.

    Sigma is held as a factor `A` with `Sigma = A A^T` (`fan_in x rank`), so
    rank-deficient matrices such as an NFM (rank <= out_channels) need no
    Cholesky, and the config stays about the size of the source layer.

    * Full transfer (target `fan_in` equals the source's): each output unit's
      weight vector is `s A z`, `z ~ N(0, I)`, covariance `s^2 Sigma`, with
      `s^2 = 2 / trace(Sigma)`: mean per-weight variance `2 / fan_in`.
    * Spatial transfer (other channel counts, same number of kernel positions
      P): every (in, out) filter gets covariance proportional to the
      channel-averaged `(P, P)` block of Sigma (see `nfm_matrix(...,
      reduce="spatial")`), scaled to mean per-weight variance `2 / fan_in`.

    Examples:
        >>> trained_kernel = np.random.normal(size=(3, 3, 16, 64))  # e.g. a trained layer's
        >>> init = NFMInit.from_kernel(trained_kernel, seed=0)
        >>> layer = keras.layers.Conv2D(64, 3, kernel_initializer=init)
        >>> layer.build((None, 8, 8, 16))
        >>> tuple(layer.kernel.shape)
        (3, 3, 16, 64)

    Args:
        factor: `(fan_in, rank)` array A with `Sigma = A A^T`; use
            `from_kernel` or `from_covariance` rather than building it.
        spatial_shape: Kernel spatial shape of the source, e.g. `[3, 3]`
            (`[]` for Dense).
        in_channels: Input channels of the source.
        scaling: `"kaiming"` (default): scaled to mean per-weight variance
            `2 / fan_in` as above. `"none"`: Sigma (or its spatial block) is
            the covariance as it is, the unscaled "NFM"/"AGOP" arms of the
            NFM poster; the per-weight variance is then `trace(Sigma) /
            fan_in`, whatever scale the source had.
        seed: An int, None (default: a random int picked once) or a
            `keras.random.SeedGenerator`, as in Keras.

    Reference:
        "New Initialization Mechanisms for Convolutional Neural Networks"
        (the NFM/AGOP initialization poster); Beaglehole et al., "Mechanism
        of feature learning in convolutional neural networks" (2023,
        arXiv:2309.00570), the Convolutional Neural Feature Ansatz.
    """

    def __init__(self, factor, spatial_shape, in_channels, scaling="kaiming", seed=None):
        factor = check.float_matrix(factor, "factor", square=False)
        if not np.any(factor):
            raise ValueError("`factor` is all zeros: Sigma = 0 cannot be scaled to Kaiming variance.")
        spatial_shape = check.spatial_shape(spatial_shape)
        in_channels = check.integer(in_channels, "in_channels", minimum=1)
        if math.prod(spatial_shape) * in_channels != factor.shape[0]:
            raise ValueError(
                f"`spatial_shape` {spatial_shape} x `in_channels` {in_channels!r} must "
                f"equal the factor's fan_in {factor.shape[0]}."
            )
        if scaling not in ("kaiming", "none"):
            raise ValueError(
                "`scaling` must be 'kaiming' (mean per-weight variance 2 / fan_in) or "
                f"'none' (Sigma as it is); received {scaling!r}."
            )
        self.factor = _compact(factor)
        self.scaling = scaling
        self.spatial_shape = spatial_shape
        self.in_channels = in_channels
        # The factor divided by its largest entry: Kaiming scaling of any
        # kernel, 1e-200 or 1e200, neither underflows nor overflows.
        self._magnitude = float(np.abs(self.factor).max())
        self._unit = self.factor / self._magnitude
        if scaling == "none":
            largest = self._magnitude * float(np.sqrt(np.max(np.sum(np.square(self._unit), axis=1))))
            check.check_weight_scale(largest, "float32", self._scale_parameters)
        super().__init__(seed=seed)

    @property
    def _scale_parameters(self):
        return "`factor` (with scaling='none')" if self.scaling == "none" else "`factor`"

    @classmethod
    def from_kernel(cls, layer_or_kernel, scaling="kaiming", seed=None):
        """Sigma = the NFM `W^T W` of a (pretrained) layer or kernel."""
        kernel = _kernel_array(layer_or_kernel)
        return cls(
            kernel.reshape(-1, kernel.shape[-1]),
            kernel.shape[:-2],
            int(kernel.shape[-2]),
            scaling=scaling,
            seed=seed,
        )

    @classmethod
    def from_covariance(cls, covariance, spatial_shape, in_channels, scaling="kaiming", seed=None, rtol=1e-6):
        """Sigma = any PSD `(fan_in, fan_in)` matrix, e.g. an AGOP.

        Eigenvalues below `rtol` times the largest (and negative rounding
        noise) are dropped, so the stored factor has the matrix's numerical
        rank.
        """
        sigma = check.float_matrix(covariance, "covariance")
        check.symmetric(sigma, "covariance")
        values, vectors = np.linalg.eigh((sigma + sigma.T) / 2)
        if values[-1] <= 0:
            raise ValueError("`covariance` has no positive eigenvalue; it cannot be a covariance.")
        if values[0] < -1e-6 * values[-1]:
            raise ValueError(
                f"`covariance` is not positive semi-definite (smallest eigenvalue "
                f"{values[0]:.4g}, largest {values[-1]:.4g})."
            )
        keep = values > rtol * values[-1]
        return cls(vectors[:, keep] * np.sqrt(values[keep]), spatial_shape, in_channels, scaling=scaling, seed=seed)

    @property
    def covariance(self):
        """The stored Sigma (before Kaiming scaling)."""
        return self.factor @ self.factor.T

    def _factor_key(self, shape):
        return shape

    def _compute_factor(self, shape):
        """Full transfer: the scaled `(fan_in, rank)` factor; spatial: a `(P, P)` one."""
        fan_in, positions = math.prod(shape[:-1]), math.prod(shape[:-2])
        kaiming = self.scaling == "kaiming"
        if fan_in == self.factor.shape[0]:
            scale = 2.0 / np.sum(np.square(self._unit)) if kaiming else 1.0
            return self._unit * math.sqrt(scale)
        if positions == math.prod(self.spatial_shape):
            spatial = _spatial_reduction(self._unit, positions, self.in_channels)
            # mean per-weight variance 2 / fan_in
            scale = 2.0 / (fan_in * np.mean(np.diag(spatial))) if kaiming else 1.0
            return psd_factor(spatial * scale)
        raise ValueError(
            f"`shape` {shape} has fan_in {fan_in} and {positions} "
            f"positions; the source (spatial {self.spatial_shape}, "
            f"{self.in_channels} channels) has fan_in {self.factor.shape[0]} "
            f"and {math.prod(self.spatial_shape)} positions. NFMInit needs "
            "the same fan_in (full transfer) or the same kernel size "
            "(spatial transfer)."
        )

    def _scale(self, shape):
        return 1.0 if self.scaling == "kaiming" else self._magnitude

    def get_config(self):
        return {
            "factor": self.factor.tolist(),
            "spatial_shape": list(self.spatial_shape),
            "in_channels": self.in_channels,
            "scaling": self.scaling,
            **super().get_config(),
        }


def _kernel_layers(model):
    return [layer for layer, _ in kernel_layers(model, _NFM_KINDS)]


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


def agop_matrix(model, layer, data, batch_size=32, max_outputs=32, seed=0, steps=None, verbose=0):
    """Average Gradient Outer Product with respect to a layer's input patches.

    For a Conv/Dense layer with pre-activation `h = K^T patch + b` at each
    position, the model output's Jacobian with respect to a patch is
    `J = (df/dh) K^T`, and the AGOP (Beaglehole et al. 2023) is the mean of
    `J^T J` over samples and positions: `K G K^T` with `G` the mean outer
    product of `df/dh`. `df/dh` is obtained with a zero perturbation added
    to the layer's pre-activation, differentiated by the active backend.

    Args:
        model: A Keras model containing `layer`.
        layer: The layer (or its name).
        data: Inputs as for `lsuv_initialize` (array, `(x, y)`, tf.data,
            PyDataset, a generator of batches); every sample is used (see
            `steps`). Arrays are processed in batches of `batch_size`;
            other forms in their own batches. NaN or Inf inputs raise
            `ValueError`.
        batch_size: Batch size for array data. Default 32.
        max_outputs: Models with at most this many output units get the
            exact AGOP (one gradient per output). Larger outputs (e.g. a
            1000-class head) use `max_outputs` random Gaussian projections
            `v ~ N(0, I)` per batch instead, averaged: since
            `E[J^T v v^T J] = J^T J`, the estimate is unbiased. Its variance
            falls as `1 / max_outputs`: for one batch, the trace has variance
            `2 tr(B^2) / max_outputs` with `B` the batch mean of `J J^T`
            (a relative standard error of at most `sqrt(2 / max_outputs)`,
            0.25 for 32, much less when many outputs contribute), and each
            batch draws new projections, so more batches reduce it further.
            Default 32.
        seed: Int seed of those projections. Default 0.
        steps: None (default) to use every batch of `data`, or the number
            of batches to use (needed for an endless dataset such as
            `dataset.repeat()`).
        verbose: 1 shows progress over batches; 0 (default) is silent.

    Returns:
        `(fan_in, fan_in)` float64 numpy AGOP, usable as
        `NFMInit.from_covariance(agop, spatial_shape, in_channels)`.
    """
    layer = _agop_layer(model, layer, batch_size, max_outputs)
    if steps is not None:
        steps = check.integer(steps, "steps", minimum=1)
    batches = take_batches(data, steps, batch_size)
    if not batches:
        raise ValueError("`data` holds no batch of samples.")
    flat_kernel = keras.ops.convert_to_numpy(layer.kernel).astype(np.float64)
    flat_kernel = flat_kernel.reshape(-1, flat_kernel.shape[-1])
    rng = np.random.default_rng(seed)
    perturbation = _PreactivationPerturbation(layer)
    outer, count = 0.0, 0
    bar = keras.utils.Progbar(len(batches), unit_name="batch") if verbose else None
    with intercepted_call(layer, perturbation.wrap):
        for batch in batches:
            batch_outer, positions = _batch_gradient_outer(model, batch, perturbation, rng, max_outputs)
            outer, count = outer + batch_outer, count + positions
            if bar:
                bar.add(1)
    return flat_kernel @ (outer / count) @ flat_kernel.T


def _agop_layer(model, layer, batch_size, max_outputs):
    """`agop_matrix`'s arguments checked; the layer itself."""
    for name, value in (("batch_size", batch_size), ("max_outputs", max_outputs)):
        check.integer(value, name, minimum=1)
    if isinstance(layer, str):
        layer = model.get_layer(layer)
    if tuple(slot.kind for slot in kernel_slots(layer)) not in (("conv",), ("dense",)):
        raise ValueError(
            f"`layer` must be a Conv1D/2D/3D or Dense layer of the model; received {type(layer).__name__}."
        )
    if not any(candidate is layer for candidate in walk_layers(model)):
        raise ValueError(
            f"`layer` {layer.name!r} is not a layer of the model {model.name!r}; pass one of its layers or a name."
        )
    return layer


class _PreactivationPerturbation:
    """A layer call that adds `delta` to the pre-activation: `d output / d delta = df/dh`."""

    def __init__(self, layer):
        self.layer, self.delta, self.shape = layer, 0.0, None

    def wrap(self, original_call):
        layer, activation = self.layer, self.layer.activation

        def call(*args, **kwargs):
            layer.activation = keras.activations.linear
            try:
                pre = original_call(*args, **kwargs)
            finally:
                layer.activation = activation
            self.shape = tuple(pre.shape)
            return activation(pre + self.delta)

        return call


def _batch_gradient_outer(model, batch, perturbation, rng, max_outputs):
    """Sum over a batch's positions of `(df/dh)^T (df/dh)`, and the positions' count.

    Exact (one gradient per output unit) for at most `max_outputs` outputs,
    else the mean over `max_outputs` Gaussian projections of the output.
    """
    perturbation.delta = 0.0
    # a plain forward pass gives the pre-activation and output shapes
    out_dim = int(np.prod(model(batch, training=False).shape[1:]))
    shape = perturbation.shape
    delta = keras.Variable(np.zeros(shape, "float32"), trainable=True)
    perturbation.delta = delta
    if out_dim <= max_outputs:
        directions = np.eye(out_dim)
    else:
        # mean over projections: sum_k v_k v_k^T / m has expectation I
        directions = rng.normal(size=(max_outputs, out_dim)) / np.sqrt(max_outputs)
    outer = 0.0
    for v in directions:
        v_tensor = ops.convert_to_tensor(v.astype("float32"))

        def projected(v_tensor=v_tensor):
            out = ops.reshape(model(batch, training=False), (shape[0], -1))
            return ops.sum(out * v_tensor)

        (g,) = gradients([delta], projected)
        g = keras.ops.convert_to_numpy(g).astype(np.float64).reshape(-1, shape[-1])
        outer = outer + g.T @ g
    return outer, int(np.prod(shape[:-1]))
