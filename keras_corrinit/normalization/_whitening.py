"""`ZCAWhitening`: a fixed whitening layer to put in front of a model.

A stem too narrow to hold the whitening of its patches (ResNet-20's first
convolution has 16 filters for 3 x 3 x 3 = 27 patch dimensions) cannot be
whitened by its own kernel. This layer whitens the image itself, keeping its
shape: each pixel becomes the ZCA-whitened value of the patch centred on it,
x -> W_c (patch - mean), W = U (Lambda + eps)^-1/2 U^T the ZCA matrix of
the patch covariance U Lambda U^T and W_c its rows for the centre pixel.
ZCA (rather than PCA) keeps the output an image that looks like the input
(edges, in the input's channels), so the model after it needs no change.
Its weights do not train: it is data preprocessing, measured by `adapt` (as
`keras.layers.Normalization`) and saved with the model.

Reference:
    Coates, Lee and Ng, "An analysis of single-layer networks in
    unsupervised feature learning" (AISTATS 2011): ZCA-whitened patches;
    Page, "How to train your ResNet" (Myrtle, 2018) and Jordan (airbench,
    2024): a frozen whitening in front of a batch-norm network.
"""

import math

import keras
import numpy as np

from keras_corrinit._core import validation as check
from keras_corrinit._core.data import iter_samples
from keras_corrinit.correlation._patches import PatchAccumulator, image_patches

__all__ = ["ZCAWhitening"]


@keras.saving.register_keras_serializable(package="keras_corrinit")
class ZCAWhitening(keras.layers.Layer):
    """Whitens each pixel's k x k patch (ZCA), keeping the image's shape; fixed once adapted.

    Until `adapt` (or `from_data`) the layer passes its input unchanged
    (`is_adapted` is False; `initialize` warns about such a layer). After it,
    on the data it was adapted on, the output's channels at each pixel have
    the covariance of the centre block of `U diag(lambda / (lambda + eps))
    U^T` (the identity where every eigenvalue is well above `eps`). Borders
    are padded with the data's mean (what the whitening maps to 0).

    Args:
        kernel_size: The patch, an odd int or a tuple of two odd ints.
            Default 3.
        eps: Added to every eigenvalue of the patch covariance, so that
            directions with less variance than about `eps` are not
            amplified. Default None: 1e-2 times the mean eigenvalue (the
            output keeps a little of the image's smoothness, as in
            Coates et al.).
        data_format: `"channels_last"` or `"channels_first"`. Default None:
            `keras.config.image_data_format()`.
        **kwargs: Keras layer arguments (`name`, `dtype`...).

    Examples:
        >>> images = np.random.default_rng(0).uniform(size=(64, 16, 16, 3)).astype("float32")
        >>> whitening = ZCAWhitening.from_data(images, kernel_size=3)
        >>> model = keras.Sequential([keras.Input((16, 16, 3)), whitening, keras.layers.Conv2D(8, 3)])
        >>> tuple(model(images[:2]).shape), whitening.is_adapted
        ((2, 14, 14, 8), True)

    Reference:
        Coates, Lee and Ng, "An analysis of single-layer networks in
        unsupervised feature learning" (AISTATS 2011).
    """

    def __init__(self, kernel_size=3, eps=None, data_format=None, **kwargs):
        super().__init__(**kwargs)
        self.kernel_size = check.kernel_size(kernel_size, rank=2)
        if any(k % 2 == 0 for k in self.kernel_size):
            raise ValueError(
                f"`kernel_size` must be odd (a patch has a centre pixel); received {tuple(self.kernel_size)}."
            )
        self.eps = None if eps is None else check.real(eps, "eps", low=0, low_open=True)
        if data_format is None:
            data_format = keras.config.image_data_format()
        if data_format not in ("channels_last", "channels_first"):
            raise ValueError(f"`data_format` must be 'channels_last' or 'channels_first'; received {data_format!r}.")
        self.data_format = data_format
        self.input_spec = keras.layers.InputSpec(ndim=4)

    def build(self, input_shape):
        channels = input_shape[1] if self.data_format == "channels_first" else input_shape[-1]
        if channels is None:
            raise ValueError("ZCAWhitening needs the number of channels of its input; received None.")
        self.channels = int(channels)
        identity = np.zeros((*self.kernel_size, self.channels, self.channels), "float32")
        identity[self.kernel_size[0] // 2, self.kernel_size[1] // 2] = np.eye(self.channels)
        self.kernel = self.add_weight(
            shape=identity.shape, initializer=keras.initializers.Constant(identity), trainable=False, name="kernel"
        )
        self.mean = self.add_weight(shape=(self.channels,), initializer="zeros", trainable=False, name="mean")
        # How many patches it was adapted on (0: not adapted); saved with the model.
        self.patches = self.add_weight(shape=(), initializer="zeros", trainable=False, name="patches")

    @property
    def is_adapted(self):
        """Whether `adapt` has set the whitening (saved with the model)."""
        return self.built and float(keras.ops.convert_to_numpy(self.patches)) > 0

    @classmethod
    def from_data(cls, data, kernel_size=3, eps=None, data_format=None, samples=50_000, **kwargs):
        """A layer adapted on `data` (see `adapt`)."""
        layer = cls(kernel_size=kernel_size, eps=eps, data_format=data_format, **kwargs)
        layer.adapt(data, samples=samples)
        return layer

    def adapt(self, data, samples=50_000, batch_size=256, max_patches_per_batch=4096, seed=0):
        """Measures the patch covariance of `data` and sets the whitening.

        Args:
            data: Images `(n, height, width, channels)` (in the layer's
                `data_format`), an `(x, y)` tuple, a batched
                `tf.data.Dataset`, a `keras.utils.PyDataset` or an iterable
                of batches.
            samples: How many images are measured at most. Default 50000.
            batch_size: Images per batch taken from arrays. Default 256.
            max_patches_per_batch: Patches sampled per batch (the rest are
                not read). Default 4096.
            seed: The patch sampling's seed (an int). Default 0.
        """
        check.integer(samples, "samples", minimum=1)
        check.integer(batch_size, "batch_size", minimum=1)
        check.integer(max_patches_per_batch, "max_patches_per_batch", minimum=2)
        seed = check.seed(seed, "seed") or 0
        accumulator, count = None, 0
        for batch in iter_samples(data, samples, batch_size):
            images = np.asarray(batch)
            if images.ndim != 4:
                raise ValueError(
                    f"ZCAWhitening adapts on images (n, height, width, channels) or (n, channels, height, width); "
                    f"received a batch of shape {images.shape}."
                )
            images = images.astype("float32")
            if self.data_format == "channels_first":
                images = np.transpose(images, (0, 2, 3, 1))
            if not self.built:
                height, width, channels = images.shape[1:]
                last = self.data_format == "channels_last"
                self.build((None, height, width, channels) if last else (None, channels, height, width))
            if images.shape[-1] != self.channels:
                raise ValueError(
                    f"ZCAWhitening was built for {self.channels} channels; the data has {images.shape[-1]}."
                )
            if accumulator is None:
                accumulator = PatchAccumulator(self.kernel_size, self.channels, max_patches_per_batch, seed)
            accumulator.add(image_patches(images, self.kernel_size, padding="valid"))
            count += len(images)
        if accumulator is None:
            raise ValueError("`data` holds no image to adapt ZCAWhitening on.")
        statistics = accumulator.statistics()
        kernel, mean = self._whitening(statistics.covariance, statistics.mean)
        self.kernel.assign(kernel)
        self.mean.assign(mean)
        self.patches.assign(float(statistics.count))

    def _whitening(self, covariance, patch_mean):
        values, vectors = np.linalg.eigh(covariance)
        values = np.clip(values, 0, None)
        if values.max() <= 0:
            raise ValueError("The data does not vary: there is nothing to whiten (constant images).")
        eps = 1e-2 * float(values.mean()) if self.eps is None else self.eps
        zca = (vectors / np.sqrt(values + eps)) @ vectors.T  # (D, D), symmetric
        p, c = math.prod(self.kernel_size), self.channels
        centre = (self.kernel_size[0] // 2) * self.kernel_size[1] + self.kernel_size[1] // 2
        rows = zca[centre * c : (centre + 1) * c]  # (C, D): the centre pixel's outputs
        kernel = rows.T.reshape(*self.kernel_size, c, c)
        # Patches in the image's interior have the same mean at every position: the per-channel mean.
        mean = patch_mean.reshape(p, c).mean(axis=0)
        return kernel.astype("float32"), mean.astype("float32")

    def call(self, inputs):
        mean = keras.ops.cast(self.mean, inputs.dtype)
        if self.data_format == "channels_first":
            mean = mean[:, None, None]
        # Zero padding of the centred image: the borders are padded with the data's mean.
        kernel = keras.ops.cast(self.kernel, inputs.dtype)
        return keras.ops.conv(inputs - mean, kernel, padding="same", data_format=self.data_format)

    def compute_output_shape(self, input_shape):
        return tuple(input_shape)

    def get_config(self):
        return {
            **super().get_config(),
            "kernel_size": list(self.kernel_size),
            "eps": self.eps,
            "data_format": self.data_format,
        }
