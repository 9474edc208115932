"""`RecalibrateNormalization`: PreciseBN inside `fit`."""

import keras

from keras_corrinit._core import validation as check
from keras_corrinit._core.backend import sync_training_state
from keras_corrinit._core.data import iter_samples
from keras_corrinit.normalization._statistics import batch_normalizations, set_statistics

__all__ = ["RecalibrateNormalization"]


class RecalibrateNormalization(keras.callbacks.Callback):
    """Recomputes batch normalization's moving statistics on training data before each evaluation.

    Before every evaluation inside `fit` (the validation at each epoch's
    end) and once when `fit` ends, each trainable BatchNormalization's
    moving mean and variance are set to its input's statistics on
    `samples` training samples, measured with the current weights
    (`recalibrate_normalization`). The reported validation numbers are
    then those of the weights, not of moving averages that lag them: with
    Keras's momentum 0.99 a network tests near chance for its first few
    hundred steps although it trains. Training itself is unchanged (it
    normalizes by batch statistics); the moving averages go on from the
    recalibrated values.

    Args:
        data: Training inputs (arrays, `(x, y)`, a batched tf.data.Dataset,
            a PyDataset or a generator); the first `samples` are measured,
            the same ones each time (taken once, when the callback is made).
        samples: How many samples. Default 1024.
        batch_size: Samples per batch for array data (use the training
            batch size). Default 128.

    Examples:
        >>> model = keras.Sequential([keras.Input((4,)), keras.layers.Dense(8), keras.layers.BatchNormalization(),
        ...                           keras.layers.Dense(2)])
        >>> model.compile("sgd", "mse")
        >>> x, y = np.ones((64, 4), "float32"), np.zeros((64, 2), "float32")
        >>> _ = model.fit(x, y, validation_data=(x, y), epochs=1, verbose=0,
        ...               callbacks=[RecalibrateNormalization(x, batch_size=32)])

    Reference:
        Wu and Johnson, "Rethinking 'Batch' in BatchNorm" (2021), PreciseBN.
    """

    def __init__(self, data, samples=1024, batch_size=128):
        super().__init__()
        samples = check.integer(samples, "samples", minimum=1)
        batch_size = check.integer(batch_size, "batch_size", minimum=1)
        batches = list(iter_samples(data, samples, batch_size))
        if not batches:
            raise ValueError("`data` holds no batch of samples.")
        self.batches = batches
        self.recalibrations = 0

    def _recalibrate(self):
        if not batch_normalizations(self.model):
            return
        sync_training_state(self.model)
        set_statistics(self.model, self.batches)
        self.recalibrations += 1

    def on_test_begin(self, logs=None):
        self._recalibrate()

    def on_train_end(self, logs=None):
        self._recalibrate()
