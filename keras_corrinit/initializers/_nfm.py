"""`NFMInit`: weights drawn from a (pretrained) feature matrix.

The feature matrix (`nfm_matrix` of a trained layer, or an AGOP measured on
data, see `_agop`) is a covariance over a layer's flattened inputs;
`NFMInit` draws new weights from `N(0, Sigma)` with it, scaled like Kaiming
(mean per-weight variance `2 / fan_in`).

Reference:
    "New Initialization Mechanisms for Convolutional Neural Networks" (the
    NFM/AGOP initialization poster).
"""

import math

import keras
import numpy as np

from keras_corrinit._core import validation as check
from keras_corrinit.correlation._features import kernel_array, spatial_reduction
from keras_corrinit.correlation._spatial import psd_factor
from keras_corrinit.initializers._sampling import CorrelatedSampler

__all__ = ["NFMInit"]


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
        kernel = kernel_array(layer_or_kernel)
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
        # Shapes first: the eigendecomposition below is O(fan_in^3).
        spatial_shape = check.spatial_shape(spatial_shape)
        in_channels = check.integer(in_channels, "in_channels", minimum=1)
        sigma = check.float_matrix(covariance, "covariance")
        if math.prod(spatial_shape) * in_channels != sigma.shape[0]:
            raise ValueError(
                f"`spatial_shape` {spatial_shape} x `in_channels` {in_channels!r} must equal the covariance's "
                f"size {sigma.shape[0]}."
            )
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
            spatial = spatial_reduction(self._unit, positions, self.in_channels)
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
