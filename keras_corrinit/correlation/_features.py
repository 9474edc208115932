"""Feature matrices of a kernel: the Neural Feature Matrix W^T W and its spatial reduction."""

import math

import keras
import numpy as np

# NFM and AGOP are defined for full convolutions and Dense layers.
NFM_KINDS = ("conv", "dense")


def kernel_array(layer_or_kernel, name="layer_or_kernel"):
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
    kernel = kernel_array(layer_or_kernel)
    flat = kernel.reshape(-1, kernel.shape[-1])
    if reduce == "full":
        return flat @ flat.T
    if reduce == "spatial":
        return spatial_reduction(flat, math.prod(kernel.shape[:-2]), kernel.shape[-2])
    raise ValueError(f"`reduce` must be 'full' or 'spatial'; received {reduce!r}.")


def spatial_reduction(factor, positions, in_channels):
    """(P, P) channel-averaged same-channel block of `factor @ factor.T`."""
    f = factor.reshape(positions, in_channels, -1)
    return np.einsum("pcr,qcr->pq", f, f) / in_channels
