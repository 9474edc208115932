"""`PatchWhitening`: a first convolution that whitens its input patches.

Theorem 1 of the correlated-initialization paper: gradient descent is slow
along directions in which a layer's inputs have little variance, which is
what spatially correlated inputs (natural images) produce. Whitening the
patches a convolution sees removes that correlation at its source: the
filters are the eigenvectors v_i of the patch covariance scaled by
(lambda_i + eps)^-1/2, so the layer's outputs on the data have unit variance
and no correlation along the kept directions. They come in +/- pairs
(v_i, -v_i), so that a ReLU after the layer keeps both signs of every
direction (airbench's whitening layer does the same).

Reference:
    Jordan, "94% on CIFAR-10 in 3.29 seconds on a single GPU" (airbench,
    2024): patch-whitening initialization of the first convolution.
"""

import math

import keras
import numpy as np

from keras_corrinit._core import validation as check
from keras_corrinit.correlation._patches import PatchAccumulator, image_patches
from keras_corrinit.initializers._sampling import cast, kernel_shape

__all__ = ["PatchWhitening"]

# Images per chunk when measuring patches of an array (bounded memory).
_CHUNK = 256
# The covariance scales (largest eigenvalue) whose whitening filters float32
# represents: filters are about scale^-1/2, outputs about 1.
_SCALE = (1e-30, 1e30)


@keras.saving.register_keras_serializable(package="keras_corrinit")
class PatchWhitening(keras.initializers.Initializer):
    """Whitening filters of a patch covariance, in +/- pairs (deterministic).

    For a kernel of shape `(kh, kw, in_channels, filters)` the filters are,
    in this order, `+w_1, -w_1, +w_2, -w_2, ...` with `w_i = v_i /
    sqrt(lambda_i + eps)` and `(lambda_i, v_i)` the eigenpairs of the patch
    covariance, largest eigenvalue first: `filters` = 2m keeps the top m
    directions; an odd `filters` ends with `+w_(m+1)` alone. `filters` may be
    at most twice the patch dimension D = kh * kw * in_channels. On the data
    the covariance came from, the layer's output (before its bias and
    activation) has covariance `lambda_i / (lambda_i + eps)` on the diagonal
    of each sign's half and 0 between directions.

    The layer's bias is not set: an initializer sets one weight. Patches are
    not centred by the filters; with a bias, `-w_i . mean` centres them.

    Args:
        covariance: The `(D, D)` patch covariance (e.g.
            `patch_statistics(...)[name].covariance` or from `from_data`).
        kernel_size: `(kh, kw)` or an int.
        in_channels: C.
        eps: Added to every eigenvalue: directions with less variance than
            about `eps` are not amplified. Default None: 1e-3 times the mean
            eigenvalue (so the default does not depend on the data's scale).

    Examples:
        >>> images = np.random.default_rng(0).normal(size=(16, 8, 8, 3))
        >>> whitening = PatchWhitening.from_data(images, kernel_size=3)
        >>> layer = keras.layers.Conv2D(12, 3, kernel_initializer=whitening, use_bias=False)
        >>> tuple(layer(images).shape)
        (16, 6, 6, 12)

    Reference:
        Jordan, "94% on CIFAR-10 in 3.29 seconds on a single GPU"
        (airbench, 2024).
    """

    def __init__(self, covariance, kernel_size, in_channels, eps=None):
        self.kernel_size = check.kernel_size(kernel_size, rank=2)
        self.in_channels = check.integer(in_channels, "in_channels", minimum=1)
        d = math.prod(self.kernel_size) * self.in_channels
        matrix = check.float_matrix(covariance, "covariance")
        if matrix.shape != (d, d):
            raise ValueError(
                f"`covariance` must be ({d}, {d}) for kernel_size {self.kernel_size} and in_channels "
                f"{self.in_channels}; received shape {matrix.shape}."
            )
        check.symmetric(matrix, "covariance", tolerance=1e-8)
        self.covariance = matrix
        values, vectors = np.linalg.eigh(matrix)
        largest = float(values.max())
        if largest <= 0:
            raise ValueError("`covariance` has no positive eigenvalue: the data does not vary.")
        if not _SCALE[0] <= largest <= _SCALE[1]:
            raise ValueError(
                f"`covariance`'s largest eigenvalue is {largest:.3g}, outside [{_SCALE[0]:g}, {_SCALE[1]:g}]: its "
                "whitening filters would overflow or vanish in float32. Rescale the data (e.g. to [0, 1])."
            )
        if float(values.min()) < -1e-6 * largest:
            raise ValueError(
                f"`covariance` is not positive semi-definite (smallest eigenvalue {float(values.min()):.3g}, "
                f"largest {largest:.3g}): pass a covariance, e.g. PatchStatistics.covariance."
            )
        self.eps = (
            1e-3 * float(np.clip(values, 0, None).mean())
            if eps is None
            else check.real(eps, "eps", low=0, low_open=True)
        )
        self._init_eps = eps
        order = np.argsort(values)[::-1]  # largest first
        values, vectors = np.clip(values[order], 0, None), vectors[:, order]
        # eigh's sign of each eigenvector is arbitrary: fix it (largest
        # entry positive) so that the filters do not depend on LAPACK's.
        signs = np.sign(vectors[np.abs(vectors).argmax(axis=0), np.arange(d)])
        self.eigenvalues = values
        self.filters = (vectors * signs / np.sqrt(values + self.eps)).T  # (D, D): row i is w_i

    @classmethod
    def from_data(cls, images, kernel_size, strides=1, padding="valid", max_patches_per_batch=4096, eps=None, seed=0):
        """Measures the patch covariance of `images` `(n, height, width, channels)` and whitens it."""
        kernel_size = check.kernel_size(kernel_size, rank=2)
        strides = (strides, strides) if isinstance(strides, int) and not isinstance(strides, bool) else strides
        if not (isinstance(strides, (tuple, list)) and len(strides) == 2 and all(isinstance(v, int) for v in strides)):
            raise TypeError(f"`strides` must be an int or a tuple of two ints; received {strides!r}.")
        if min(strides) < 1:
            raise ValueError(f"`strides` must be positive; received {tuple(strides)}.")
        if padding not in ("valid", "same"):
            raise ValueError(f"`padding` must be 'valid' or 'same' (as for Conv2D); received {padding!r}.")
        if max_patches_per_batch is not None:
            check.integer(max_patches_per_batch, "max_patches_per_batch", minimum=2)
        seed = check.seed(seed, "seed") or 0
        images = np.asarray(images)
        if images.ndim != 4:
            raise ValueError(f"`images` must be (n, height, width, channels); received shape {images.shape}.")
        if images.dtype.kind not in "fiub":
            raise TypeError(f"`images` must hold numbers; received dtype {images.dtype}.")
        images = images.astype("float32")  # uint8 pixels as numbers, on every backend
        if padding == "valid" and any(k > size for k, size in zip(kernel_size, images.shape[1:3])):
            raise ValueError(
                f"`kernel_size` {tuple(kernel_size)} is larger than the images ({images.shape[1]}x{images.shape[2]}): "
                "no patch fits. Pass a smaller kernel or padding='same'."
            )
        if not np.all(np.isfinite(images)):
            raise ValueError("`images` contain NaN or Inf; pass finite images.")
        accumulator = PatchAccumulator(kernel_size, images.shape[-1], max_patches_per_batch, seed)
        for start in range(0, len(images), _CHUNK):
            accumulator.add(image_patches(images[start : start + _CHUNK], kernel_size, strides, padding))
        return cls(accumulator.statistics().covariance, kernel_size, images.shape[-1], eps)

    def __call__(self, shape, dtype=None):
        shape, dtype = kernel_shape(shape), keras.backend.standardize_dtype(dtype)
        expected = (*self.kernel_size, self.in_channels)
        if tuple(shape[:-1]) != expected:
            raise ValueError(f"PatchWhitening was built for kernels {expected + ('filters',)}; received shape {shape}.")
        d, filters = self.filters.shape[0], shape[-1]
        if filters > 2 * d:
            raise ValueError(
                f"PatchWhitening gives at most 2 * {d} filters (+/- each of the {d} patch directions); "
                f"the layer asks for {filters}."
            )
        rows = np.repeat(self.filters, 2, axis=0) * np.tile([1.0, -1.0], d)[:, None]
        kernel = rows[:filters].T.reshape(shape)
        return cast(keras.ops.convert_to_tensor(kernel.astype("float32")), dtype)

    def get_config(self):
        return {
            "covariance": self.covariance.tolist(),
            "kernel_size": list(self.kernel_size),
            "in_channels": self.in_channels,
            "eps": self._init_eps,
        }
