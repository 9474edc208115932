"""Statistics measured on trained networks, as containers that initialize others.

* `CorrelationEstimate`: the spatial correlation of trained convolution
  filters (the correlated-initialization paper's Figure 1). Every (in, out)
  channel pair of a k x k kernel is one observation of a P-vector
  (P = k * k); the Pearson correlation of the P positions over all
  observations of a layer is that layer's correlation matrix. Pooling over
  layers: each layer's position covariance is divided by its mean position
  variance (so that layers with larger weights do not dominate), the
  normalized covariances are averaged with weights equal to the layers'
  observation counts, and the average is turned into a correlation matrix.
* `DepthwiseCovariance`: the filter covariance of every depthwise layer
  (Trockman et al. 2023), scale included, transferable by relative depth
  and kernel size.

Reference:
    Schneider, "Correlated Initialization for Correlated Data" (Figure 1,
    Table 4, footnote 2); Trockman, Willmott and Kolter, "Understanding the
    Covariance Structure of Convolutional Filters", ICLR 2023.
"""

import dataclasses
import math
import re
import warnings

import keras
import numpy as np

from keras_corrinit._core import validation as check
from keras_corrinit._core.apply import initializers_by_layer, pair_layers
from keras_corrinit._core.config import JsonFile
from keras_corrinit._core.figures import plot_correlation_profiles
from keras_corrinit._core.layers import CONV_KINDS, depthwise_kernels, kernel_layers
from keras_corrinit.correlation._covariance import filter_covariance, resampled, validated_covariance
from keras_corrinit.correlation._spatial import SpatialCorrelation, matrix_profile, pooled_correlation, to_correlation
from keras_corrinit.initializers._correlated import CorrelatedHeNormal
from keras_corrinit.initializers._depthwise import FilterCovariance

__all__ = [
    "CorrelationEstimate",
    "DepthwiseCovariance",
    "correlation_from_kernels",
    "correlation_from_model",
    "depthwise_covariance_from_model",
    "spatial_kernels",
]


_DEPTH_GROUPS = ("early", "middle", "late")


def _layer_filter(layer_filter):
    if layer_filter is None:
        return lambda name: True
    if isinstance(layer_filter, str):
        pattern = re.compile(layer_filter)
        return lambda name: pattern.search(name) is not None
    if callable(layer_filter):
        return layer_filter
    raise TypeError(
        "`layer_filter` must be None, a regular expression string or a "
        f"callable taking a layer name; received {type(layer_filter).__name__}."
    )


def checked_kernel_size(kernel_size):
    """A kernel size with at least the 2 positions a correlation needs."""
    return check.kernel_size(kernel_size, minimum_positions=2)


def spatial_kernels(model, kernel_size=(3, 3), include_depthwise=False, layer_filter=None):
    """`(layer name, numpy kernel)` of every conv layer with that kernel size.

    Args:
        model: A Keras model; nested models are searched too.
        kernel_size: Spatial kernel shape to select, e.g. `3`, `(3, 3)`
            (default), `(7, 7)`.
        include_depthwise: Also take depthwise kernels (default False):
            DepthwiseConv, the depthwise part of SeparableConv, and
            convolutions with one input channel per group (ConvNeXt's).
        layer_filter: None (default: every layer), a regular expression
            searched in layer names, or a callable `name -> bool`.
    """
    kernel_size = checked_kernel_size(kernel_size)
    keep = _layer_filter(layer_filter)
    kinds = CONV_KINDS + (("depthwise",) if include_depthwise else ())
    return [
        (layer.name, keras.ops.convert_to_numpy(getattr(layer, slot.attribute)))
        for layer, slot in kernel_layers(model, kinds)
        if tuple(layer.kernel_size) == kernel_size and keep(layer.name)
    ]


@dataclasses.dataclass
class CorrelationEstimate(JsonFile):
    """Spatial correlation measured on a trained network.

    Attributes:
        spatial_shape: Kernel shape the matrices belong to, e.g. `(3, 3)`.
        layer_names: Layers used, in model order (= depth order).
        layer_matrices: `{layer name: (P, P) correlation matrix}` (files
            saved by 0.2.0 call it `per_layer`; they still load).
        counts: `{layer name: number of (in, out) observations}`.
        matrix: The pooled `(P, P)` correlation matrix.
        source: What it was measured on. Default "".
        cached: True when read from the cache instead of computed. Default
            False.

    Reference:
        Schneider, "Correlated Initialization for Correlated Data"
        (Figure 1, Table 4, footnote 2).
    """

    spatial_shape: tuple
    layer_names: list
    layer_matrices: dict
    counts: dict
    matrix: np.ndarray
    source: str = ""
    cached: bool = False

    @classmethod
    def pooled(cls, spatial_shape, layer_matrices, covariances, counts, source):
        """The estimate of several layers: their matrices, and one pooled from their covariances."""
        return cls(
            spatial_shape=spatial_shape,
            layer_names=list(layer_matrices),
            layer_matrices=layer_matrices,
            counts=counts,
            matrix=pooled_correlation(covariances, counts),
            source=source,
        )

    # ----------------------------------------------------------- profiles
    def profile(self, layer=None):
        """`(distances, mean correlations, pair counts)`, pooled or one layer's."""
        return matrix_profile(self._matrix_of(layer), self.spatial_shape)

    def _matrix_of(self, layer):
        if layer is None:
            return self.matrix
        if layer not in self.layer_matrices:
            raise ValueError(f"No layer {layer!r} in this estimate; layers are {self.layer_names}.")
        return self.layer_matrices[layer]

    def depth(self, layer):
        """Relative depth of a layer: 0 for the first, 1 for the last."""
        index = self.layer_names.index(layer)
        return index / max(1, len(self.layer_names) - 1)

    def depth_groups(self, n_groups=3):
        """Layers split into `n_groups` consecutive depth groups.

        Returns `{group name: [layer names]}` with names early/middle/late for
        three groups, else `depth 1/n` ... `depth n/n`.
        """
        if not (isinstance(n_groups, int) and 1 <= n_groups <= len(self.layer_names)):
            raise ValueError(
                f"`n_groups` must be an int between 1 and the number of layers "
                f"({len(self.layer_names)}); received {n_groups!r}."
            )
        names = _DEPTH_GROUPS if n_groups == 3 else [f"depth {i + 1}/{n_groups}" for i in range(n_groups)]
        chunks = np.array_split(np.arange(len(self.layer_names)), n_groups)
        return {name: [self.layer_names[i] for i in chunk] for name, chunk in zip(names, chunks)}

    def group_matrix(self, layers):
        """Count-weighted mean correlation matrix of some layers."""
        weights = np.array([self.counts[name] for name in layers], dtype=np.float64)
        stacked = np.stack([self.layer_matrices[name] for name in layers])
        return np.tensordot(weights / weights.sum(), stacked, axes=1)

    def depth_profiles(self, n_groups=3):
        """`{group: (distances, values, counts)}` for each depth group."""
        return {
            group: matrix_profile(self.group_matrix(layers), self.spatial_shape)
            for group, layers in self.depth_groups(n_groups).items()
        }

    # ---------------------------------------------------------- conversion
    def to_correlation(self, form="matrix", layer=None):
        """A `SpatialCorrelation`: the exact matrix or its distance profile.

        Args:
            form: `"matrix"` (only for kernels of `spatial_shape`) or
                `"profile"` (any kernel size).
            layer: None for the pooled matrix, else a layer name.
        """
        matrix = self._matrix_of(layer)
        if form == "matrix":
            return SpatialCorrelation.from_matrix(matrix, self.spatial_shape)
        if form == "profile":
            distances, values, _ = matrix_profile(matrix, self.spatial_shape)
            return SpatialCorrelation.from_profile(distances, np.clip(values, -1, 1))
        raise ValueError(f"`form` must be 'matrix' or 'profile'; received {form!r}.")

    def layerwise_initializers(self, target, mapping=None, seed=None, **initializer_kwargs):
        """One CorrelatedHeNormal per target layer, from its counterpart's R.

        The paper's footnote 2: correlation varies with depth, so each layer
        can be initialized with the R of the layer at the same depth.

        Args:
            target: The model to initialize. Its conv layers with this
                estimate's kernel size are matched, in order, with the source
                layers, unless `mapping` is given.
            mapping: Optional `{target layer name: source layer name}`.
            seed: An int, None or a `keras.random.SeedGenerator`; each layer
                gets its own stream (see `layer_seeds`), so same-shaped layers
                never share a draw and an int seed reproduces the model.
            **initializer_kwargs: Passed to `CorrelatedHeNormal` (alpha,
                variance_mode, strict).

        Returns:
            `{target layer name: CorrelatedHeNormal}`; apply it with
            `apply_initializers(target, ...)`.
        """
        targets = [name for name, _ in spatial_kernels(target, self.spatial_shape)]
        pairs = pair_layers(
            targets,
            self.layer_names,
            mapping,
            what=f"conv layers with kernel size {self.spatial_shape}",
        )
        return initializers_by_layer(
            pairs,
            lambda source, layer_seed: CorrelatedHeNormal(
                self.to_correlation("matrix", layer=source), seed=layer_seed, **initializer_kwargs
            ),
            seed,
        )

    # -------------------------------------------------------- persistence
    def get_config(self):
        return {
            "spatial_shape": list(self.spatial_shape),
            "layer_names": list(self.layer_names),
            "layer_matrices": {k: v.tolist() for k, v in self.layer_matrices.items()},
            "counts": dict(self.counts),
            "matrix": self.matrix.tolist(),
            "source": self.source,
        }

    @classmethod
    def from_config(cls, config):
        """The estimate a `get_config()` dict describes, checked: a config may come from a file."""
        if isinstance(config, dict) and "per_layer" in config and "layer_matrices" not in config:
            # A file written by 0.2.0, when the field was called per_layer.
            config = {("layer_matrices" if key == "per_layer" else key): value for key, value in config.items()}
        keys = {"spatial_shape", "layer_names", "layer_matrices", "counts", "matrix", "source"}
        if not isinstance(config, dict) or set(config) - keys or keys - {"source"} - set(config):
            raise ValueError(f"A CorrelationEstimate config is a dict with the keys {sorted(keys)}.")
        spatial_shape = check.spatial_shape(config["spatial_shape"], "spatial_shape")
        layer_names = list(config["layer_names"])
        matrices, counts = config["layer_matrices"], config["counts"]
        if not layer_names or not isinstance(matrices, dict) or not isinstance(counts, dict):
            raise ValueError(
                "A CorrelationEstimate config needs at least one layer, and dicts `layer_matrices`, `counts`."
            )
        if set(matrices) != set(layer_names) or set(counts) != set(layer_names):
            raise ValueError(
                "A CorrelationEstimate config's `layer_matrices` and `counts` must name exactly its layers."
            )
        p = math.prod(spatial_shape)
        return cls(
            spatial_shape=spatial_shape,
            layer_names=layer_names,
            layer_matrices={name: _correlation_matrix(matrices[name], p, "layer_matrices") for name in layer_names},
            counts={name: check.integer(counts[name], "counts", minimum=2) for name in layer_names},
            matrix=_correlation_matrix(config["matrix"], p, "matrix"),
            source=str(config.get("source", "")),
        )

    def plot(self, path, n_groups=3):
        """Correlation vs distance per depth group and pooled (Figure 1)."""
        curves = {
            f"{group} ({len(layers)} layers)": matrix_profile(self.group_matrix(layers), self.spatial_shape)[:2]
            for group, layers in self.depth_groups(min(n_groups, len(self.layer_names))).items()
        }
        curves["all layers"] = self.profile()[:2]
        return plot_correlation_profiles(curves, path, title=self.source)


def _correlation_matrix(value, p, name):
    """A `(p, p)` correlation matrix from a config, checked."""
    m = check.float_matrix(value, name)
    if m.shape != (p, p):
        raise ValueError(f"`{name}` must be ({p}, {p}) for the estimate's spatial shape; received {m.shape}.")
    check.symmetric(m, name)
    if np.any(np.abs(m) > 1 + 1e-9) or not np.allclose(np.diag(m), 1.0):
        raise ValueError(f"`{name}` is not a correlation matrix (entries in [-1, 1], ones on the diagonal).")
    return m


def correlation_from_model(
    model, kernel_size=(3, 3), include_depthwise=False, layer_filter=None, source=None, verbose=0
):
    """Measures the spatial correlation of a trained model's filters.

    Args:
        model: A Keras model (nested models are searched).
        kernel_size: Which kernels to use, e.g. `3` or `(3, 3)` (default).
        include_depthwise: Also use depthwise kernels (see
            `spatial_kernels`). Default False.
        layer_filter: None (default: every layer), a regex searched in
            layer names, or a callable.
        source: Label stored in the result (default None: the model's name).
        verbose: 1 shows progress over layers; 0 (default) is silent.

    Returns:
        A `CorrelationEstimate`.
    """
    kernel_size = checked_kernel_size(kernel_size)
    kernels = spatial_kernels(model, kernel_size, include_depthwise, layer_filter)
    if not kernels:
        raise ValueError(
            f"{model.name!r} has no conv layer with kernel size {kernel_size}"
            f"{'' if include_depthwise else ' (depthwise layers excluded)'}"
            f"{'' if layer_filter is None else ' matching `layer_filter`'}; "
            "check `kernel_size`, `include_depthwise` and `layer_filter`."
        )
    return correlation_from_kernels(dict(kernels), source=source or model.name, verbose=verbose)


def correlation_from_kernels(kernels, source="", verbose=0):
    """Spatial correlation of kernels given as arrays, e.g. from another framework.

    Args:
        kernels: `{layer name: kernel}` in depth order, each in Keras layout
            `(*spatial, in_channels, out_channels)` and all of one spatial
            shape (a PyTorch `(out, in, kh, kw)` weight becomes
            `w.transpose(2, 3, 1, 0)`).
        source: Label stored in the result. Default "".
        verbose: 1 shows progress over layers; 0 (default) is silent.

    Returns:
        A `CorrelationEstimate`.
    """
    if not isinstance(kernels, dict) or not kernels:
        raise ValueError("`kernels` must be a non-empty {layer name: kernel array} dict.")
    arrays = {name: np.asarray(k, dtype=np.float64) for name, k in kernels.items()}
    shapes = {a.shape[:-2] for a in arrays.values()}
    if len(shapes) != 1 or any(a.ndim < 3 for a in arrays.values()):
        raise ValueError(
            "All `kernels` must be (*spatial, in, out) arrays of one spatial shape; "
            f"received spatial shapes {sorted(shapes)}."
        )
    kernel_size = checked_kernel_size(shapes.pop())
    bar = keras.utils.Progbar(len(arrays), unit_name="layer") if verbose else None
    matrices, covariances, counts = {}, {}, {}
    for name, kernel in arrays.items():
        n = kernel.shape[-2] * kernel.shape[-1]
        cov = filter_covariance(kernel)[0] if n >= 2 else np.zeros((1, 1))
        if n < 2 or np.any(np.diag(cov) <= 0) or not np.all(np.isfinite(cov)):
            warnings.warn(
                f"Layer {name!r} is skipped: a kernel position has zero (or non-finite) variance over its {n} filters.",
                stacklevel=2,
            )
            continue
        matrices[name], covariances[name], counts[name] = to_correlation(cov), cov, n
        if bar:
            bar.add(1)
    if not matrices:
        raise ValueError(f"No usable kernel with spatial shape {kernel_size} in {source or 'the input'}.")
    return CorrelationEstimate.pooled(kernel_size, matrices, covariances, counts, source)


@dataclasses.dataclass
class DepthwiseCovariance(JsonFile):
    """Per-layer filter covariances measured on a trained model.

    Attributes:
        layers: Depthwise layer names (`"name/depthwise_kernel"` for the
            depthwise part of a SeparableConv), in model order.
        spatial_shapes: Each layer's kernel spatial shape.
        covariances: Each layer's `(P, P)` filter covariance (float64).
        counts: Each layer's number of filters.
        source: Free text: where the covariances come from. Default "".

    Reference:
        Trockman, Willmott and Kolter, "Understanding the Covariance
        Structure of Convolutional Filters", ICLR 2023 (arXiv:2210.03651).
    """

    layers: list
    spatial_shapes: list
    covariances: list
    counts: list
    source: str = ""

    def covariance_at(self, relative_depth, spatial_shape=None):
        """The covariance at `relative_depth` in [0, 1], on `spatial_shape`.

        Source layer i sits at depth `i / (n - 1)`; between two layers the
        covariances (resampled to `spatial_shape`, default the first
        layer's) are interpolated linearly, which keeps them positive
        semi-definite.
        """
        relative_depth = check.real(relative_depth, "relative_depth", low=0, high=1)
        shape = check.spatial_shape(spatial_shape or self.spatial_shapes[0])
        where = relative_depth * (len(self.layers) - 1)
        low = min(int(math.floor(where)), max(len(self.layers) - 2, 0))
        high = min(low + 1, len(self.layers) - 1)
        frac = where - low
        at = lambda i: resampled(self.covariances[i], self.spatial_shapes[i], shape)
        return (1 - frac) * at(low) + frac * at(high) if high != low else at(low)

    def initializer(self, relative_depth=0.5, seed=None):
        """A `FilterCovariance` with the covariance at `relative_depth`."""
        shape = self.spatial_shapes[0]
        return FilterCovariance(self.covariance_at(relative_depth, shape), shape, seed=seed)

    def get_config(self):
        return {
            "layers": list(self.layers),
            "spatial_shapes": [list(s) for s in self.spatial_shapes],
            "covariances": [np.asarray(c).tolist() for c in self.covariances],
            "counts": [int(n) for n in self.counts],
            "source": self.source,
        }

    @classmethod
    def from_config(cls, config):
        fields = {f.name for f in dataclasses.fields(cls)}
        if not isinstance(config, dict) or set(config) - fields or fields - {"source"} - set(config):
            raise ValueError(f"A DepthwiseCovariance config is a dict with the keys {sorted(fields)}.")
        lengths = {len(config[name]) for name in ("layers", "spatial_shapes", "covariances", "counts")}
        if len(lengths) != 1 or 0 in lengths:
            raise ValueError(
                "A DepthwiseCovariance config needs `layers`, `spatial_shapes`, `covariances` and `counts` "
                "of one length, at least 1, one entry per layer."
            )
        shapes = [check.spatial_shape(s, "spatial_shapes") for s in config["spatial_shapes"]]
        covariances = [validated_covariance(c, s) for c, s in zip(config["covariances"], shapes)]
        return cls(list(config["layers"]), shapes, covariances, list(config["counts"]), config.get("source", ""))


def depthwise_covariance_from_model(model, source=""):
    """`DepthwiseCovariance` of every depthwise kernel of a trained model.

    Depthwise kernels are those of DepthwiseConv1D/2D, the depthwise part of
    SeparableConv1D/2D and convolutions with one input channel per group
    (ConvNeXt's), searched in nested models too.

    Args:
        model: A built Keras model.
        source: Free text stored with the result. Default "".
    """
    found = depthwise_kernels(model)
    if not found:
        raise ValueError("The model has no depthwise kernels (DepthwiseConv, SeparableConv, or groups == channels).")
    covariances, counts = zip(*(filter_covariance(keras.ops.convert_to_numpy(kernel)) for _, kernel in found))
    shapes = [tuple(int(d) for d in kernel.shape[:-2]) for _, kernel in found]
    return DepthwiseCovariance([key for key, _ in found], shapes, list(covariances), list(counts), source)
