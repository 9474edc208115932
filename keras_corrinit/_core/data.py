"""Turning the data forms users pass (arrays, tuples, datasets) into batches."""

import itertools

import keras
import numpy as np

from keras_corrinit._core import validation as check

__all__ = ["batch_size_of", "describe", "iter_samples", "take_batches"]


def _inputs(batch):
    if isinstance(batch, tuple) and 1 <= len(batch) <= 3:
        batch = batch[0]  # (x,), (x, y) or (x, y, sample_weight)
    if isinstance(batch, list) and not all(hasattr(item, "shape") for item in batch):
        # A nested list of numbers is one input, not a list of inputs.
        try:
            batch = np.asarray(batch, dtype="float32")
        except (TypeError, ValueError):
            raise TypeError(
                "`data` is a list that is neither an array of numbers nor a list of arrays (one per model input)."
            ) from None
    try:
        x = keras.tree.map_structure(np.asarray, batch)
    except (TypeError, ValueError) as error:
        raise TypeError(f"`data` must hold arrays; {check.clipped(error, 200)}") from None
    if any(a.ndim == 0 for a in keras.tree.flatten(x)):
        raise ValueError(
            "`data` must hold a batch of samples (arrays with a batch axis); received "
            f"{describe(x)}. A tf.data.Dataset must be batched: dataset.batch(32)."
        )
    for a in keras.tree.flatten(x):
        if a.dtype.kind in "fc" and not np.all(np.isfinite(a)):
            raise ValueError(f"`data` contains NaN or Inf (in inputs of shape {a.shape}); pass finite inputs.")
    return x


def describe(x):
    """The shapes of a (nested) batch, for messages."""
    shapes = [tuple(a.shape) for a in keras.tree.flatten(x)]
    return f"inputs of shape {shapes[0]}" if len(shapes) == 1 else f"inputs of shapes {shapes}"


def _is_in_memory(data):
    return isinstance(data, (np.ndarray, tuple, list, dict)) or hasattr(data, "__array__")


def take_batches(data, count=None, batch_size=None):
    """The inputs of up to `count` batches, as finite numpy arrays (nested for multi-input models).

    Args:
        data: An array (or list/dict of arrays), an `(x, y)` or
            `(x, y, sample_weight)` tuple, a `keras.utils.PyDataset`, or an
            iterable of batches such as a `tf.data.Dataset` or a generator.
        count: How many batches to take; None for all of them (an endless
            iterable then never ends: pass a count).
        batch_size: For in-memory arrays, the samples per batch (None: all
            samples form one batch); iterables give their batches as they are.

    Returns:
        A list of at most `count` batches (fewer when `data` has fewer).

    Raises:
        ValueError: for non-finite inputs or unbatched samples.
    """
    if isinstance(data, keras.utils.PyDataset):
        return [_inputs(data[i]) for i in range(len(data) if count is None else min(count, len(data)))]
    if _is_in_memory(data):
        x = _inputs(data)
        n = keras.tree.flatten(x)[0].shape[0]
        size = n if batch_size is None else batch_size
        end = n if count is None else min(n, count * size)
        return [keras.tree.map_structure(lambda a, s=s: a[s : s + size], x) for s in range(0, end, size)]
    if hasattr(data, "__iter__") and not isinstance(data, (str, bytes)):
        return [_inputs(batch) for batch in itertools.islice(iter(data), count)]
    raise TypeError(
        "`data` must be an array, an (x, y) tuple, a tf.data.Dataset or a "
        f"keras.utils.PyDataset; received {type(data).__name__}."
    )


def batch_size_of(batch):
    """The number of samples in a (nested) batch."""
    return int(keras.tree.flatten(batch)[0].shape[0])


def iter_samples(data, samples, batch_size):
    """Batches of `data` (finite numpy arrays, nested for multi-input models) until `samples` samples.

    Streams: only one batch is held at a time (an in-memory array is sliced,
    not copied); the last batch is cut so that exactly `samples` are used,
    or all of them where `data` has fewer. `batch_size` applies to in-memory
    arrays; iterables give their batches as they are.
    """
    if isinstance(data, keras.utils.PyDataset):
        source = (data[i] for i in range(len(data)))
    elif _is_in_memory(data):
        x = _inputs(data)
        n = min(keras.tree.flatten(x)[0].shape[0], samples)
        source = (
            keras.tree.map_structure(lambda a, s=s: a[s : min(s + batch_size, n)], x) for s in range(0, n, batch_size)
        )
    elif hasattr(data, "__iter__") and not isinstance(data, (str, bytes)):
        source = iter(data)
    else:
        raise TypeError(
            "`data` must be an array, an (x, y) tuple, a tf.data.Dataset or a "
            f"keras.utils.PyDataset; received {type(data).__name__}."
        )
    taken = 0
    for batch in source:
        inputs = _inputs(batch)
        size = batch_size_of(inputs)
        if taken + size > samples:
            size = samples - taken
            inputs = keras.tree.map_structure(lambda a, size=size: a[:size], inputs)
        if size:
            yield inputs
        taken += size
        if taken >= samples:
            return
