"""Turning the data forms users pass (arrays, tuples, datasets) into one batch."""

import keras
import numpy as np

__all__ = ["first_batch"]


def first_batch(data, batch_size=None):
    """The inputs of one batch, as numpy arrays (nested for multi-input models).

    Args:
        data: An array (or list/dict of arrays), an `(x, y)` or
            `(x, y, sample_weight)` tuple, a `keras.utils.PyDataset`, or an
            iterable of batches such as a `tf.data.Dataset`.
        batch_size: For in-memory arrays, how many leading samples to take
            (None: all); iterables give their first batch as it is.
    """
    in_memory = False
    if isinstance(data, keras.utils.PyDataset):
        batch = data[0]
    elif isinstance(data, (np.ndarray, tuple, list, dict)) or hasattr(data, "__array__"):
        batch, in_memory = data, True
    elif hasattr(data, "__iter__") and not isinstance(data, (str, bytes)):
        batch = next(iter(data))
    else:
        raise TypeError(
            "`data` must be an array, an (x, y) tuple, a tf.data.Dataset or a "
            f"keras.utils.PyDataset; received {type(data).__name__}."
        )
    if isinstance(batch, tuple) and 1 <= len(batch) <= 3:
        batch = batch[0]  # (x,), (x, y) or (x, y, sample_weight)
    x = keras.tree.map_structure(np.asarray, batch)
    if any(a.ndim == 0 for a in keras.tree.flatten(x)):
        raise ValueError("`data` must hold a batch of samples, not a scalar.")
    if in_memory and batch_size is not None:
        x = keras.tree.map_structure(lambda a: a[:batch_size], x)
    return x
