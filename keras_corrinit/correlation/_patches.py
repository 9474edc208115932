"""Covariance of a convolution's input patches, measured on data.

A k x k convolution over C input channels sees patches of D = k * k * C
values (in Keras's kernel order: row, column, channel). Their covariance is
what gradient descent on that layer's weights is slow or fast along (the
correlated-initialization paper's Theorem 1: slow along directions of
little input variance), and its eigenvectors are the whitening filters of
`PatchWhitening`.

Memory is bounded by the patch dimension, not the data: patches are
streamed batch by batch into running sums (a D-vector and a D x D matrix in
float64), and from each batch at most `max_patches_per_batch` patches are
used, drawn uniformly without replacement (a fixed `seed`).
"""

import dataclasses
import math
import warnings

import keras
import numpy as np

from keras_corrinit.correlation._spatial import to_correlation

__all__ = ["PatchAccumulator", "PatchStatistics", "image_patches", "layer_patches"]


@dataclasses.dataclass
class PatchStatistics:
    """Mean and covariance of the patches a k x k convolution sees (what `patch_statistics` returns).

    Attributes:
        kernel_size: `(kh, kw)`.
        in_channels: C.
        mean: `(D,)` float64, D = kh * kw * C, in Keras's kernel order.
        covariance: `(D, D)` float64 sample covariance (divisor n - 1).
        count: The number of patches used.
    """

    kernel_size: tuple
    in_channels: int
    mean: np.ndarray
    covariance: np.ndarray
    count: int

    @property
    def dimension(self):
        """D = kh * kw * C, the patch dimension."""
        return self.covariance.shape[0]

    def spatial_covariance(self):
        """`(P, P)`, P = kh * kw: covariance between positions for the same channel, averaged over channels."""
        p, c = math.prod(self.kernel_size), self.in_channels
        blocks = self.covariance.reshape(p, c, p, c)
        return np.einsum("icjc->ij", blocks) / c

    def correlation(self):
        """The `(P, P)` spatial correlation matrix R of the data (positions' correlation, channels averaged)."""
        return to_correlation(self.spatial_covariance())


class PatchAccumulator:
    """Streamed sums of patches: `add(patches)` batch by batch, then `statistics()`."""

    def __init__(self, kernel_size, in_channels, max_patches_per_batch=4096, seed=0):
        self.kernel_size, self.in_channels = tuple(kernel_size), int(in_channels)
        self.max_patches_per_batch = max_patches_per_batch
        self.rng = np.random.default_rng(seed)
        d = math.prod(self.kernel_size) * self.in_channels
        self.total, self.outer, self.count = np.zeros(d), np.zeros((d, d)), 0

    def add(self, patches):
        """Adds `(..., D)` patches (any leading shape), sampling at most `max_patches_per_batch`."""
        rows = np.asarray(keras.ops.convert_to_numpy(patches)).reshape(-1, self.total.shape[0])
        if self.max_patches_per_batch is not None and len(rows) > self.max_patches_per_batch:
            rows = rows[self.rng.choice(len(rows), self.max_patches_per_batch, replace=False)]
        rows = rows.astype(np.float64)  # after the draw: only the patches used are widened
        if not np.all(np.isfinite(rows)):
            raise ValueError("The data holds NaN or Inf (in a convolution's input patches); pass finite data.")
        self.total += rows.sum(axis=0)
        self.outer += rows.T @ rows
        self.count += len(rows)

    def statistics(self):
        if self.count < 2:
            raise ValueError(f"A patch covariance needs at least 2 patches; the data gave {self.count}.")
        d = len(self.total)
        if self.count < d:
            # Refusing would make small samples of wide layers unusable; the
            # eigenvalues of the missing directions are 0, which whitening's
            # eps keeps from being amplified without bound.
            warnings.warn(
                f"{self.count} patches for a {d}-dimensional patch covariance: it is singular (rank at most "
                f"{self.count - 1}); more data (or a larger `max_patches_per_batch`) estimates it fully.",
                stacklevel=3,
            )
        mean = self.total / self.count
        covariance = (self.outer - self.count * np.outer(mean, mean)) / (self.count - 1)
        covariance = (covariance + covariance.T) / 2
        return PatchStatistics(self.kernel_size, self.in_channels, mean, covariance, self.count)


def image_patches(images, kernel_size, strides=1, padding="valid", dilation_rate=1):
    """`(N, D)` patches of a batch of images `(batch, height, width, channels)`, in Keras's kernel order."""
    kernel_size = tuple(kernel_size)
    if len(keras.ops.shape(images)) != 4:
        raise ValueError(
            f"Patches are taken from images of shape (batch, height, width, channels); received shape "
            f"{tuple(keras.ops.shape(images))}."
        )
    patches = keras.ops.image.extract_patches(
        images, kernel_size, strides=strides, dilation_rate=dilation_rate, padding=padding
    )
    return keras.ops.reshape(patches, (-1, patches.shape[-1]))


def layer_patches(layer, inputs):
    """The patches a Conv2D `layer` sees in `inputs`, in its kernel's (row, column, channel) order, either format."""
    if getattr(layer, "data_format", "channels_last") == "channels_first":
        inputs = keras.ops.transpose(inputs, (0, 2, 3, 1))
    return image_patches(inputs, layer.kernel_size, layer.strides, layer.padding, layer.dilation_rate)
