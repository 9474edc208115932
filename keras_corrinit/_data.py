"""Turning the data forms users pass (arrays, tuples, datasets) into batches."""

import itertools

import keras
import numpy as np

__all__ = ["first_batch", "take_batches"]


def _inputs(batch):
    if isinstance(batch, tuple) and 1 <= len(batch) <= 3:
        batch = batch[0]  # (x,), (x, y) or (x, y, sample_weight)
    x = keras.tree.map_structure(np.asarray, batch)
    if any(a.ndim == 0 for a in keras.tree.flatten(x)):
        raise ValueError("`data` must hold a batch of samples, not a scalar.")
    return x


def _is_in_memory(data):
    return isinstance(data, (np.ndarray, tuple, list, dict)) or hasattr(data, "__array__")


def take_batches(data, count, batch_size=None):
    """The inputs of up to `count` batches, as numpy arrays (nested for multi-input models).

    Args:
        data: An array (or list/dict of arrays), an `(x, y)` or
            `(x, y, sample_weight)` tuple, a `keras.utils.PyDataset`, or an
            iterable of batches such as a `tf.data.Dataset`.
        count: How many batches to take.
        batch_size: For in-memory arrays, the samples per batch (None: all
            samples form one batch); iterables give their batches as they are.

    Returns:
        A list of at most `count` batches (fewer when `data` has fewer).
    """
    if isinstance(data, keras.utils.PyDataset):
        return [_inputs(data[i]) for i in range(min(count, len(data)))]
    if _is_in_memory(data):
        x = _inputs(data)
        n = keras.tree.flatten(x)[0].shape[0]
        size = n if batch_size is None else batch_size
        starts = range(0, min(n, count * size), size)
        return [keras.tree.map_structure(lambda a, s=s: a[s : s + size], x) for s in starts]
    if hasattr(data, "__iter__") and not isinstance(data, (str, bytes)):
        return [_inputs(batch) for batch in itertools.islice(iter(data), count)]
    raise TypeError(
        "`data` must be an array, an (x, y) tuple, a tf.data.Dataset or a "
        f"keras.utils.PyDataset; received {type(data).__name__}."
    )


def first_batch(data, batch_size=None):
    """The inputs of one batch (see `take_batches`)."""
    batches = take_batches(data, 1, batch_size)
    if not batches:
        raise ValueError("`data` holds no batch of samples.")
    return batches[0]
