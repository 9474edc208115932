"""
Title: Does it help on my model?
Author: keras_corrinit developers
Date created: 2026/11/29
Last modified: 2026/11/30
Description: Initializations compared on your model and data: paired seeds, intervals, time to accuracy.
"""

"""
## Introduction

Whether an initialization helps depends on the network and the data. The
package's own evidence (the "Does it help?" page) is for its toy networks;
`keras_corrinit.experiments.compare` gives the same answer for yours:

* the baseline is **your model as written** (the `default` arm: your
  builder's own initializers, Keras's `glorot_uniform` unless it says
  otherwise);
* every arm is trained on the same seeds, so differences are **paired** (the
  seed fixes the data order and every other random choice) and come with a
  95% t interval;
* **time to accuracy under budgets**: each run trains for a budget of
  epochs with the learning rate annealed to zero at its end (what a user
  with a schedule does), and an arm's epochs to target are the smallest
  budget whose mean accuracy reaches the baseline's at the largest budget;
* a correlated arm changes both the correlation and the scale of the
  weights: its **scale control** (independent weights with the same
  variance) says which of the two made the difference;
* a results folder makes it **resumable**, and any
  `concurrent.futures.Executor` spreads the runs over processes or machines.

## Setup
"""

import tempfile

import keras
import numpy as np
from sklearn.datasets import load_digits

from keras_corrinit.experiments import compare

"""
## Your model: a builder

`compare` builds the model once per run through a function of yours. It gets
the arm's `kernel_initializer` (pass it to every layer the arm should set; it
draws new values at every call, so same-shaped layers differ) and the run's
seed, and returns a compiled model. Any Sequential, Functional or subclassed
model works. It is a module-level function, so that a process pool can send it
to its workers.
"""


def build_model(kernel_initializer, seed):
    inputs = keras.Input((8, 8, 1))
    x = keras.layers.Conv2D(16, 3, padding="same", activation="relu", kernel_initializer=kernel_initializer)(inputs)
    x = keras.layers.Conv2D(16, 3, padding="same", activation="relu", kernel_initializer=kernel_initializer)(x)
    x = keras.layers.GlobalAveragePooling2D()(x)
    outputs = keras.layers.Dense(10, kernel_initializer=kernel_initializer)(x)
    model = keras.Model(inputs, outputs)
    model.compile(
        keras.optimizers.SGD(0.1, momentum=0.9),
        keras.losses.SparseCategoricalCrossentropy(from_logits=True),
        metrics=["accuracy"],
    )
    return model


"""
## Your data

`(train, test)`: each `(x, y)` arrays, a `tf.data.Dataset` or a
`keras.utils.PyDataset`. Here scikit-learn's 8x8 digits, split once. Arrays
are fingerprinted into each run's identity; for other data, name them in
`settings`. A function returning `(train, test)` works too: with an executor,
each worker then loads the data itself.
"""


def load_data():
    digits = load_digits()
    x = (digits.images / 16.0).astype("float32")[..., None]
    y = digits.target.astype("int32")
    order = np.random.default_rng(0).permutation(len(x))
    train, test = order[:1200], order[1200:]
    return (x[train], y[train]), (x[test], y[test])


"""
## Compare under budgets

The arms are built-in names or your own `{name: initializer}` and
`{name: callable(model, train, seed)}`. Built in: `default` (your model as
written: the baseline, added if missing), `initialize`
(`keras_corrinit.initialize` on the training data, starting from your model
as written), `lsuv`, `he` (untruncated He-normal), Keras's `he_normal`,
`correlated` (with its scale control `correlated~var` added),
`correlated_weight`, `enhanced_gamma`. `budgets=[1, 2, 4]` trains every arm
and seed once per budget, the compiled learning rate (a float) decaying
linearly to zero at the budget's last step. `settings` records what
`compare` cannot see (here the optimizer) in every run's identity, so a
changed rate is a new run, never a resumed one.
"""

out = tempfile.mkdtemp()
grid = dict(seeds=3, budgets=[1, 2, 4], settings={"optimizer": "SGD(0.1, momentum=0.9)"}, out=out)
result = compare(build_model, load_data(), ["initialize", "lsuv", "he"], **grid)
print(result.to_markdown())

"""
Read the table before believing a number: an interval that contains 0 (no
`*`) is no evidence either way, and three seeds give wide intervals. Use 5 or
more for a decision. "fraction" is the arm's epochs to target over the
largest budget: 0.5 means it reaches your model's best in half the epochs.
The seconds include the initialization's own cost.

## Resume, and what the numbers are

Running the same call again trains nothing: every run's key (backend, Keras
and package versions, builder, data fingerprint, arm, seed, epochs and
schedule, batch size, metric, `settings`) is found in the store. A store
written by another package version is refused instead of mixed.
"""

again = compare(build_model, load_data(), ["initialize", "lsuv", "he"], **grid, verbose=0)
assert [r["final"] for r in again.rows] == [r["final"] for r in result.rows]
print(result.difference("initialize"))  # at the largest budget
print(result.budget_to_target("initialize"))

"""
`result.plot("budgets.png")` draws the final accuracy against the budget per
arm, with 95% intervals and the target. Without `budgets`, `compare(...,
epochs=10)` trains each arm once at the compiled rate and
`result.epochs_to_target(arm)` counts the first epoch that crosses the
baseline's final accuracy; that flatters an arm that starts fast while the
baseline is still rising, which the budget protocol does not.

## Your own arm, with arguments

An arm is any picklable callable `(model, train, seed)` that changes the
built model in place. Give it arguments with `functools.partial` of a
module-level function (or a dataclass): the arguments are part of the
arm's identity in the store, and a process pool can send it to its
workers. A lambda works in-process, identified by its code and closure.
A bare callable gets the model built with He-normal; a pair `("default",
callable)` gets the model as written, the start of the built-in
`"initialize"` arm, so that the comparison below changes one thing only.
"""

import functools

from keras_corrinit import initialize


def initialize_with(model, train, seed, whiten=1, head="keep"):
    initialize(model, train, whiten=whiten, head=head, seed=seed, verbose=0)


arms = {"initialize": None, "zero_head": ("default", functools.partial(initialize_with, head="zero"))}
print(compare(build_model, load_data(), arms, seeds=2, budgets=[2], out=out, verbose=0).to_markdown())

"""

## More machines

Each run is an independent, picklable task; only the caller writes results.
Any `concurrent.futures.Executor` runs them: a process pool on one machine,
and across machines a Dask cluster's `client.get_executor()`, Ray's executor
or `mpi4py.futures.MPIPoolExecutor()`, with no code of ours for any of them.
Put the builder in a module the workers can import and pass the data as a
function, so each worker loads it itself:

```python
import concurrent.futures, multiprocessing
from my_project import build_model, load_data  # importable by the workers

# "spawn" starts clean workers: forking a process that runs TensorFlow or JAX is unsafe.
context = multiprocessing.get_context("spawn")
with concurrent.futures.ProcessPoolExecutor(4, mp_context=context) as pool:
    result = compare(build_model, load_data, ["correlated"], seeds=5, epochs=10, executor=pool)

# On a Dask cluster:
from dask.distributed import Client
with Client("scheduler-address:8786") as client, client.get_executor() as executor:
    result = compare(build_model, load_data, ["correlated"], seeds=5, epochs=10, executor=executor)
```

The rows are the same, seed for seed, whichever executor ran them (the
package's tests check it with a 2-process pool and a 2-worker Dask cluster).
"""
