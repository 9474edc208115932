"""GradientSignMonitor: gradient sign changes ("zig-zag") during `fit`.

The correlated-initialization paper's measure (Section 6, (iii); Figures
4-6), the fraction of gradient sign changes between consecutive updates and
the mean |gradient|, computed by `GradientSignTracker`'s formula (see
`tracker.py`, which also serves custom training loops).

Design. Keras callbacks never see gradients, and overriding `train_step` is
not an option for users' models, so the monitor reaches the gradients where
every backend's trainer hands them over: the optimizer. At `on_train_begin`
the callback replaces `model.optimizer` by a thin wrapper optimizer around
the user's (as `keras.optimizers.LossScaleOptimizer` wraps another one):

* The wrapper's `apply` (TensorFlow, PyTorch) and `stateless_apply` (JAX)
  first record the step's statistics, then hand the same gradients to the
  user's optimizer, which updates the model exactly as without the monitor.
  `iterations`, `learning_rate`, `scale_loss` and everything a trainer or an
  LR schedule touches are the user's optimizer's own.
* The previous step's signs (int8, one per parameter) and running sums (per
  variable: sign-change counts, |g| sums; per fit: measured steps, steps
  with non-finite gradients) are optimizer variables of the wrapper, so the
  compiled step carries them on every backend, including JAX's stateless
  one, where optimizer variables travel in the jitted step's state.
* The train function is re-made after the swap so that compiled steps see
  the wrapper; at `on_train_end` the model gets back a train function for
  its own optimizer (so later `fit` calls without the monitor do not see the
  wrapper), and the monitor keeps the wrapper and its compiled train
  function: the next `fit` of the same model, optimizer, trainable variables
  and compilation reuses both, its state set back to zero, instead of
  tracing and compiling the step again (that was most of the monitor's cost
  per `fit`). On JAX the monitored step is jitted from a function of its
  own, so keeping it can lend no stale trace to another train function
  (`_core.backend.make_own_train_function`); the plain train function is
  kept and set back on TensorFlow only (`keeps_plain_train_function`).
* After training, `model.optimizer` is the user's optimizer again: saving
  the model saves the user's optimizer, nothing of the monitor.
* If `fit` ends with an exception (KeyboardInterrupt, out of memory), Keras
  calls no `on_train_end` and `model.optimizer` stays the wrapper. The
  wrapper saves and loads as the user's optimizer: the same config and
  exactly its variables, in the same places of a `.keras` file, so a model
  saved then resumes with its optimizer state. The next `fit` with a
  monitor unwraps it first.

Semantics:

* The first measured step of each `fit` has no predecessor: it counts for
  the gradient magnitude but not for sign changes. Each `fit` starts afresh;
  within a fit, the comparison runs across epoch boundaries.
* With `gradient_accumulation_steps=k` on the user's optimizer, the measured
  gradient is the one actually applied, the mean of k micro-batch gradients
  (as Keras applies it), once every k batches.
* With loss scaling (mixed precision's `LossScaleOptimizer`, or a
  `loss_scale_factor`), gradients are unscaled before |g| is taken; signs do
  not depend on the scale.
* A step with any non-finite gradient is not measured (and does not become
  the predecessor); such steps are counted in `grad_nonfinite_steps`.
"""

import keras
from keras import ops

from keras_corrinit._core.backend import (
    HiddenFromSaving,
    keeps_plain_train_function,
    make_own_train_function,
    optimizer_swapped,
    replica_sum,
    strategy_scope,
    sync_training_state,
)
from keras_corrinit.monitor._tracker import SUM_KEYS, GradientSignTracker, read_state, write_state

__all__ = ["GradientSignMonitor"]


class _SignRecordingOptimizer(HiddenFromSaving, keras.optimizers.Optimizer):
    """Wraps an optimizer; records gradient statistics before each update."""

    # Saved as this optimizer's own variables (below), not a second time
    # under "optimizer/inner_optimizer".
    _hidden_from_saving = ("inner_optimizer", "monitor")

    def __init__(self, inner_optimizer, tracker, monitor):
        super().__init__(learning_rate=0.0, name="gradient_sign_monitor")
        self.inner_optimizer = inner_optimizer
        self.tracker = tracker
        self.monitor = monitor
        self.accumulation_steps = inner_optimizer.gradient_accumulation_steps or 1

    def build(self, var_list):
        if not self.inner_optimizer.built:
            self.inner_optimizer.build(var_list)
        distribution = keras.distribution.distribution()

        def variable(shape, dtype, name, like=None):
            # Every replica computes the same values from the summed
            # gradients (tf.distribute), and per-parameter state is laid out
            # like its parameter (a sharded kernel under JAX ModelParallel).
            layout = None
            if like is not None and distribution is not None:
                layout = distribution.get_variable_layout(like)
            return self.add_variable(
                shape, initializer="zeros", dtype=dtype, name=name, aggregation="only_first_replica", layout=layout
            )

        # The tracker's state, as optimizer variables: the compiled step
        # carries them on every backend (JAX: in the jitted step's state).
        # Per-parameter state is laid out like its parameter.
        def like(key, tensor, parameter=None):
            return variable(tuple(tensor.shape), keras.backend.standardize_dtype(tensor.dtype), key, parameter)

        self.state = {
            key: [like(key, t, p) for t, p in zip(value, var_list)] if isinstance(value, list) else like(key, value)
            for key, value in self.tracker.initial_state().items()
        }
        if self.accumulation_steps > 1:
            self.accumulated = [variable(tuple(v.shape), "float32", "accumulated_grad", v) for v in var_list]
            self.micro_steps = variable((), "int32", "micro_steps")
        super().build(var_list)

    @property
    def variables(self):
        return self._variables + self.inner_optimizer.variables

    def reset_state(self):
        """The tracker's state (and any accumulated gradient) back to zero: no predecessor, all sums 0."""
        own = [v for value in self.state.values() for v in (value if isinstance(value, list) else [value])]
        if self.accumulation_steps > 1:
            own += [*self.accumulated, self.micro_steps]
        for variable in own:
            variable.assign(ops.zeros(variable.shape, variable.dtype))

    # What trainers, schedules and callbacks read is the user's optimizer's.
    @property
    def learning_rate(self):
        return self.inner_optimizer.learning_rate

    @learning_rate.setter
    def learning_rate(self, value):
        self.inner_optimizer.learning_rate = value

    @property
    def iterations(self):
        return self.inner_optimizer.iterations

    def scale_loss(self, loss):
        return self.inner_optimizer.scale_loss(loss)

    def finalize_variable_values(self, var_list):
        self.inner_optimizer.finalize_variable_values(var_list)

    def _unscale(self, grads):
        inner = self.inner_optimizer
        if isinstance(inner, keras.optimizers.LossScaleOptimizer):
            return [g / ops.cast(inner.dynamic_scale, g.dtype) for g in grads]
        if inner.loss_scale_factor:
            return [g / inner.loss_scale_factor for g in grads]
        return grads

    def _record(self, grads):
        """Updates the tracker's state with one step's gradients (no control flow)."""
        # A variable the loss does not reach has no gradient (None), which
        # Keras's optimizers skip; it moves nothing, so it counts as zero.
        grads = [ops.zeros(shape, "float32") if g is None else g for g, shape in zip(grads, self.tracker.shapes)]
        grads = replica_sum([ops.cast(g, "float32") for g in self._unscale(grads)])
        applied = 1.0
        if self.accumulation_steps > 1:
            # The update Keras applies every k-th micro-step is the mean of
            # the k accumulated gradients; measure that one, then.
            micro = self.micro_steps.value + 1
            applied = ops.cast(ops.equal(micro % self.accumulation_steps, 0), "float32")
            totals = [a.value + g for a, g in zip(self.accumulated, grads)]
            grads = [t / self.accumulation_steps for t in totals]
            for a, t in zip(self.accumulated, totals):
                a.assign(t * (1.0 - applied))
            self.micro_steps.assign(micro)
        write_state(self.state, self.tracker.stateless_update(read_state(self.state), grads, applied))

    def apply(self, grads, trainable_variables=None):
        if not self.built:
            self.build(list(trainable_variables))
        self._record(list(grads))
        self.inner_optimizer.apply(grads, trainable_variables)

    def stateless_apply(self, optimizer_variables, grads, trainable_variables):
        own = len(self._variables)
        mapping = list(zip(self.variables, optimizer_variables))
        with keras.StatelessScope(state_mapping=mapping) as scope:
            self._record(list(grads))
        own_values = [scope.get_current_value(v) for v in self._variables]
        new_trainable, new_inner = self.inner_optimizer.stateless_apply(
            optimizer_variables[own:], grads, trainable_variables
        )
        return new_trainable, own_values + list(new_inner)

    # ---- saving, reached only when `fit` ended without on_train_end
    def get_config(self):
        return self.inner_optimizer.get_config()

    def save_own_variables(self, store):
        self.inner_optimizer.save_own_variables(store)

    def load_own_variables(self, store):
        self.inner_optimizer.load_own_variables(store)


def _same(a, b):
    """Whether two (model, optimizer, variable ids, train function) identities are of the same compiled step."""
    return a[0] is b[0] and a[1] is b[1] and a[2] == b[2] and a[3] is b[3]


class GradientSignMonitor(keras.callbacks.Callback):
    """Logs gradient sign changes and magnitude during `fit`, on every backend.

    Adds to the epoch `logs` (so `History`, `CSVLogger` and `TensorBoard`
    pick them up):

    * `grad_sign_change`: fraction of sign changes between consecutive
      updates over all trainable parameters, the paper's formula, averaged
      over the epoch's steps;
    * `grad_magnitude`: mean |gradient| over all parameters and steps;
    * `grad_nonfinite_steps`: steps skipped for NaN/Inf gradients;
    * with `per_layer=True`, `grad_sign_change/<layer>` and
      `grad_magnitude/<layer>` for each layer (by variable path).

    With `every_n_steps=N`, the same overall values over the last N steps
    are appended to `step_history` (a list of dicts with `step`).

    See the module docstring for how it works and for its semantics (first
    step, gradient accumulation, loss scaling, several `fit` calls).

    Examples:
        >>> model = keras.Sequential([
        ...     keras.Input((8, 8, 1)), keras.layers.Conv2D(4, 3, activation="relu"),
        ...     keras.layers.Flatten(), keras.layers.Dense(3)])
        >>> model.compile("sgd", keras.losses.SparseCategoricalCrossentropy(from_logits=True))
        >>> x, y = np.random.rand(64, 8, 8, 1), np.random.randint(0, 3, 64)
        >>> monitor = GradientSignMonitor(per_layer=True)
        >>> history = model.fit(x, y, epochs=2, callbacks=[monitor], verbose=0)
        >>> len(history.history["grad_sign_change"])
        2

    Args:
        per_layer: Also log per-layer values. Default False.
        every_n_steps: If set, record values every this many batches.
            Default None.

    Reference:
        Schneider, "Correlated Initialization for Correlated Data"
        (the zig-zag measure, Section 4 and Figures 4-6).
    """

    def __init__(self, per_layer=False, every_n_steps=None):
        super().__init__()
        if not isinstance(per_layer, bool):
            raise TypeError(f"`per_layer` must be a bool; received {per_layer!r}.")
        if every_n_steps is not None and not (isinstance(every_n_steps, int) and every_n_steps >= 1):
            raise ValueError(f"`every_n_steps` must be None or an int >= 1; received {every_n_steps!r}.")
        self.per_layer = per_layer
        self.every_n_steps = every_n_steps
        self.step_history = []
        self._wrapper = None
        # The last fit's (model, its optimizer and trainable variables, wrapper, tracker, monitored train
        # function): reused by the next fit of the same model, which then compiles nothing again.
        self._compiled = None

    # ------------------------------------------------------------ swapping
    def on_train_begin(self, logs=None):
        model = self.model
        if getattr(model, "optimizer", None) is None:
            raise ValueError("GradientSignMonitor needs a compiled model (call model.compile first).")
        if isinstance(model.optimizer, _SignRecordingOptimizer):
            if model.optimizer.monitor.params is self.params:
                # Callbacks of one fit share its params dict. The first
                # monitor's swap is undone: nothing of it outlives the error.
                model.optimizer = model.optimizer.inner_optimizer
                optimizer_swapped(model)
                model.make_train_function(force=True)
                raise ValueError(
                    "Two GradientSignMonitors in one fit: the second would replace the first's measurements. "
                    "Pass one; it can log per-layer values (per_layer=True) and step values (every_n_steps)."
                )
            # Left by a fit that ended with an exception.
            model.optimizer = model.optimizer.inner_optimizer
        if not model.trainable_variables:
            raise ValueError(
                f"GradientSignMonitor: the model {model.name!r} has no trainable weights, so there are no "
                "gradients to monitor. Unfreeze some layers or remove the callback."
            )
        self._user_optimizer = model.optimizer
        self._plain_train_function = model.train_function if keeps_plain_train_function() else None
        # What the compiled step depends on: the model, its optimizer, the variables it trains and its
        # compilation. `compile` drops the train function, so a recompile (another loss, jit_compile)
        # shows as a train function other than the one this monitor gave back at the end of the last fit.
        identity = (model, model.optimizer, [id(v) for v in model.trainable_variables], model.train_function)
        compiled = self._compiled
        if compiled is not None and _same(compiled[0], identity):
            _, self._wrapper, self._tracker, train_function = compiled
            self._wrapper.reset_state()  # each fit starts afresh
            model.optimizer = self._wrapper
            optimizer_swapped(model)
            model.train_function = train_function
        else:
            self._tracker = GradientSignTracker(model.trainable_variables, per_layer=self.per_layer)
            with strategy_scope(model):
                wrapper = _SignRecordingOptimizer(model.optimizer, self._tracker, self)
                wrapper.build(model.trainable_variables)
            self._wrapper = wrapper
            model.optimizer = wrapper
            optimizer_swapped(model)
            self._compiled = None  # the last fit's step is not reused: let it go before making the new one
            make_own_train_function(model)
            self._compiled = (identity, wrapper, self._tracker, None)
        self._global_step = 0
        self._snapshot = None

    def on_train_end(self, logs=None):
        model = self.model
        monitored_train_function = model.train_function
        model.optimizer = self._user_optimizer
        optimizer_swapped(model)
        if self._plain_train_function is not None:
            model.train_function = self._plain_train_function  # compiled for the user's optimizer
        else:
            model.make_train_function(force=True)
        if self._compiled is not None:
            identity, wrapper, tracker, _ = self._compiled
            self._compiled = ((*identity[:3], model.train_function), wrapper, tracker, monitored_train_function)

    # ------------------------------------------------------------- reading
    def _read(self):
        # The sums only, read from the variables themselves (under
        # tf.distribute their `.value` is a per-replica object).
        return {key: ops.convert_to_numpy(self._wrapper.state[key]) for key in SUM_KEYS}

    def on_epoch_begin(self, epoch, logs=None):
        # Sums restart each epoch; the previous step's signs are kept.
        for key in SUM_KEYS:
            variable = self._wrapper.state[key]
            variable.assign(ops.zeros(variable.shape, variable.dtype))
        self._snapshot = None

    def on_train_batch_end(self, batch, logs=None):
        self._global_step += 1
        if self.every_n_steps and self._global_step % self.every_n_steps == 0:
            # JAX keeps the training state outside the variables during an
            # epoch; pull it in before reading (a no-op elsewhere).
            sync_training_state(self.model)
            stats = self._read()
            entry = self._tracker.stateless_result(stats, since=self._snapshot)
            entry["step"] = self._global_step
            self.step_history.append(entry)
            self._snapshot = stats

    def on_epoch_end(self, epoch, logs=None):
        if logs is not None:
            logs.update(self._tracker.stateless_result(self._read()))
