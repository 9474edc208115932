"""Spatial correlation of trained convolution filters (the paper's Figure 1).

Every (in, out) channel pair of a k x k convolution kernel is one observation
of a P-vector (P = k * k); the Pearson correlation of the P positions over
all observations of a layer is that layer's spatial correlation matrix.

Pooling over layers: each layer's position covariance is divided by its mean
position variance (so that layers with larger weights do not dominate), the
normalized covariances are averaged with weights equal to the layers'
observation counts, and the average is turned into a correlation matrix.

Reference:
    Schneider, "Correlated Initialization for Correlated Data" (Figure 1,
    Table 4, footnote 2).
"""

import dataclasses
import hashlib
import math
import os
import re
import tempfile
import warnings

import keras
import numpy as np

from keras_corrinit import _validation as check
from keras_corrinit._base import JsonFile
from keras_corrinit._layers import CONV_KINDS, kernel_layers
from keras_corrinit.correlation import SpatialCorrelation, filter_covariance, matrix_profile, to_correlation
from keras_corrinit.initializers import CorrelatedHeNormal
from keras_corrinit.layerwise import initializers_by_layer, pair_layers
from keras_corrinit.plots import plot_correlation_profiles

__all__ = [
    "CorrelationEstimate",
    "application_names",
    "correlation_from_application",
    "correlation_from_kernels",
    "correlation_from_model",
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


def _kernel_size(kernel_size):
    if isinstance(kernel_size, int):
        kernel_size = (kernel_size, kernel_size)
    try:
        shape = tuple(int(k) for k in kernel_size)
    except (TypeError, ValueError):
        raise TypeError(
            f"`kernel_size` must be an int or a tuple of ints such as (3, 3); received {kernel_size!r}."
        ) from None
    if math.prod(shape) < 2 or any(k < 1 for k in shape):
        raise ValueError(f"`kernel_size` must have at least 2 positions (e.g. 3 or (3, 3)); received {shape}.")
    return shape


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
    kernel_size = _kernel_size(kernel_size)
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
        layer_matrices: `{layer name: (P, P) correlation matrix}` (called
            `per_layer` before 0.3.0; that name still reads it, deprecated).
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

    @property
    def per_layer(self):
        """Deprecated since 0.3.0: `layer_matrices` (`per_layer` is the monitor's flag)."""
        warnings.warn(
            "CorrelationEstimate.per_layer is deprecated since 0.3.0 and will be removed in 0.4.0; use layer_matrices.",
            DeprecationWarning,
            stacklevel=2,
        )
        return self.layer_matrices

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
    kernel_size = _kernel_size(kernel_size)
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
    kernel_size = _kernel_size(shapes.pop())
    bar = keras.utils.Progbar(len(arrays), unit_name="layer") if verbose else None
    matrices, counts, pooled, total = {}, {}, 0.0, 0
    for name, kernel in arrays.items():
        n = kernel.shape[-2] * kernel.shape[-1]
        cov = filter_covariance(kernel)[0] if n >= 2 else np.zeros((1, 1))
        if n < 2 or np.any(np.diag(cov) <= 0) or not np.all(np.isfinite(cov)):
            warnings.warn(
                f"Layer {name!r} is skipped: a kernel position has zero (or non-finite) variance over its {n} filters.",
                stacklevel=2,
            )
            continue
        matrices[name], counts[name] = to_correlation(cov), n
        pooled = pooled + cov / np.diag(cov).mean() * n
        total += n
        if bar:
            bar.add(1)
    if not matrices:
        raise ValueError(f"No usable kernel with spatial shape {kernel_size} in {source or 'the input'}.")
    return CorrelationEstimate(
        spatial_shape=kernel_size,
        layer_names=list(matrices),
        layer_matrices=matrices,
        counts=counts,
        matrix=to_correlation(pooled / total),
        source=source,
    )


def application_names():
    """Names of the `keras.applications` model constructors."""
    return sorted(n for n in dir(keras.applications) if n[0].isupper() and callable(getattr(keras.applications, n)))


def _resolve_application(name):
    if not isinstance(name, str):
        raise TypeError(f"`name` must be a string such as 'ResNet50'; received {name!r}.")
    by_lower = {n.lower(): n for n in application_names()}
    if name.lower() not in by_lower:
        raise ValueError(f"Unknown application {name!r}. Valid names: {', '.join(application_names())}.")
    return by_lower[name.lower()]


def _keras_home():
    # Keras's own rule for its cache directory.
    return os.path.expanduser(os.environ.get("KERAS_HOME", os.path.join("~", ".keras")))


def _weights_id(weights):
    if weights == "imagenet":
        return "imagenet"
    if not isinstance(weights, (str, os.PathLike)):
        raise TypeError(f"`weights` must be 'imagenet' or a file path; received {weights!r}.")
    if not os.path.isfile(weights):
        raise ValueError(
            f"`weights` file {os.fspath(weights)!r} does not exist; pass the path "
            "of a weights file saved from the same application with "
            "include_top=False, or 'imagenet'."
        )
    digest = hashlib.sha256()
    with open(weights, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()[:16]


def _download_failure_message(application, error):
    """Says which file to download and where Keras looks for it."""
    url = re.search(r"https?://\S+?\.h5", str(error))
    target = os.path.join(_keras_home(), "models")
    if url is None:
        return (
            f"Could not load the ImageNet weights of {application}: {error}. Place "
            f"the weights file in {target} (Keras's cache), or pass "
            "weights='/path/to/weights.h5'."
        )
    url = url.group(0)
    return (
        f"Could not download the ImageNet weights of {application} ({error}). "
        f"Download {url} and save it as {os.path.join(target, url.rsplit('/', 1)[-1])}; "
        "Keras then loads it from there without a network. Or pass "
        "weights='/path/to/that/file.h5'."
    )


def correlation_from_application(
    name,
    weights="imagenet",
    kernel_size=(3, 3),
    include_depthwise=False,
    use_cache=True,
    cache_dir=None,
    verbose=1,
):
    """Spatial correlation of a `keras.applications` model's filters.

    ResNet50, VGG16 and DenseNet121 (the paper's Figure 1), or any other
    constructor by name (case-insensitive), built with `include_top=False`.
    The small result is cached as JSON under Keras's cache directory, so a
    second call needs neither the network nor the model.

    Args:
        name: e.g. `"ResNet50"`, `"vgg16"`, `"DenseNet121"`.
        weights: `"imagenet"` (default) or the path of a weights file for
            the model with `include_top=False`.
        kernel_size: As in `correlation_from_model`. Default `(3, 3)`.
        include_depthwise: As in `correlation_from_model`. Default False.
        use_cache: Read and write the cache. Default True.
        cache_dir: Cache directory; default `$KERAS_HOME/corrinit` or
            `~/.keras/corrinit`.
        verbose: 1 (default) reports progress, 0 is silent.

    Returns:
        A `CorrelationEstimate` (`cached=True` when read from the cache).
    """
    application = _resolve_application(name)
    kernel_size = _kernel_size(kernel_size)
    cache_dir = cache_dir or os.path.join(_keras_home(), "corrinit")
    depthwise = "-depthwise" if include_depthwise else ""
    cache_file = os.path.join(
        cache_dir, f"{application}-{_weights_id(weights)}-{'x'.join(map(str, kernel_size))}{depthwise}.json"
    )
    if use_cache:
        estimate = _read_cache(cache_file)
        if estimate is not None:
            return estimate
        use_cache = _writable(cache_dir)
    model = _build_application(application, weights, verbose)
    source = f"{application} ({'imagenet' if weights == 'imagenet' else os.path.basename(weights)})"
    estimate = correlation_from_model(model, kernel_size, include_depthwise, source=source, verbose=verbose)
    if use_cache:
        _write_cache(estimate, cache_file)
    return estimate


def _build_application(application, weights, verbose):
    """The application with `include_top=False`; a failed load says what to do."""
    if verbose:
        print(f"Building {application} (weights={os.fspath(weights)}, include_top=False)...", flush=True)
    try:
        return getattr(keras.applications, application)(weights=weights, include_top=False)
    except Exception as error:  # Keras raises a bare Exception for failed downloads
        if weights == "imagenet" and "URL fetch failure" in str(error):
            raise ConnectionError(_download_failure_message(application, error)) from error
        if weights != "imagenet":
            raise ValueError(
                f"Could not load `weights` {os.fspath(weights)!r} into {application}(include_top=False): "
                f"{type(error).__name__}: {check.clipped(error, 300)}"
            ) from error
        raise


def _write_cache(estimate, cache_file):
    try:
        estimate.save(cache_file)
    except OSError as error:
        warnings.warn(
            f"Could not write the cache file {cache_file!r} ({error}); the result is not cached.", stacklevel=3
        )


def _read_cache(cache_file):
    """The cached estimate, or None (with a warning when the file is unusable)."""
    if not os.path.isfile(cache_file):
        return None
    try:
        estimate = CorrelationEstimate.load(cache_file)
    except (OSError, ValueError, TypeError, KeyError) as error:  # JSONDecodeError is a ValueError
        warnings.warn(
            f"Ignoring the cache file {cache_file!r}: {check.clipped(error, 300)}. It is computed again "
            "and the file replaced.",
            stacklevel=3,
        )
        return None
    estimate.cached = True
    return estimate


def _writable(cache_dir):
    """Whether results can be cached in `cache_dir` (created if needed); warns if not."""
    try:
        os.makedirs(cache_dir, exist_ok=True)
        with tempfile.TemporaryFile(dir=cache_dir):
            pass
        return True
    except OSError as error:
        warnings.warn(
            f"The cache directory {cache_dir!r} is not writable ({error}); the result will not be cached. "
            "Pass a writable `cache_dir` or use_cache=False.",
            stacklevel=3,
        )
        return False
