"""Correlation of Keras Applications' pretrained filters, cached (the paper's Figure 1).

`correlation_from_application` builds a `keras.applications` model with its
pretrained weights (downloaded by Keras into `KERAS_HOME`), measures its
filters' spatial correlation once and caches the estimate as JSON, keyed by
the application, the weights file's identity and the estimate's settings.
"""

import hashlib
import os
import re
import tempfile
import warnings

import keras

from keras_corrinit._core import validation as check
from keras_corrinit.extraction._estimates import CorrelationEstimate, checked_kernel_size, correlation_from_model

__all__ = ["application_names", "correlation_from_application"]


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
    kernel_size = checked_kernel_size(kernel_size)
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
