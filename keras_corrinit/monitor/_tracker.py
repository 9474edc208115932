"""GradientSignTracker: the paper's zig-zag measure in any training loop.

The correlated-initialization paper (Section 6, (iii); Figures 4-6) measures
how often gradients change sign between consecutive updates,

    GradientSignChanges_i = sum_j |sign(g_j^(i)) - sign(g_j^(i+1))| / (2 d)

over all d trainable parameters, with sign(0) = 0, and the mean |gradient|.
This module holds that formula once: `GradientSignTracker` applies it in
custom training loops (a `tf.GradientTape` loop, a PyTorch loop, PyTorch
DDP around a Keras model, a jitted JAX step), and `GradientSignMonitor`
applies it inside `fit` through the same `stateless_update`.

Semantics (the same in both): the first update after a start (or a
`reset(keep_previous=False)`) has no predecessor, so it counts for the
magnitude only; an update with any non-finite gradient (or a variable
whose sum of |g| exceeds float32's range, about 3.4e38) is counted in
`grad_nonfinite_steps` and not measured (nor does it become the
predecessor).
"""

import keras
import numpy as np
from keras import ops

__all__ = ["SUM_KEYS", "GradientSignTracker", "read_state", "write_state"]

# A state is a dict of tensors (or lists of tensors, one per tracked variable); the monitor keeps the same
# structure in Keras variables so that its compiled training step can carry it.
# The running sums (restarted by `reset`); the rest of the state is the predecessor.
SUM_KEYS = ("sign_changes", "magnitude_sums", "sign_steps", "measured_steps", "nonfinite_steps")


def read_state(variables):
    """The state of tensors held by a state of variables.

    Key by key rather than with `keras.tree`: Keras wraps a dict of
    variables held by a layer or optimizer in its own tracked containers.
    """
    return {key: [v.value for v in vs] if isinstance(vs, list) else vs.value for key, vs in variables.items()}


def write_state(variables, values):
    """Assigns a state of tensors to a state of variables (see `read_state`)."""
    for key, vs in variables.items():
        if isinstance(vs, list):
            for variable, value in zip(vs, values[key]):
                variable.assign(value)
        else:
            vs.assign(values[key])


def _layer_of(path, prefix):
    path = path[len(prefix) :] if prefix and path.startswith(prefix) else path
    return path.rsplit("/", 1)[0]


class GradientSignTracker:
    """Gradient sign changes and magnitude, updated once per optimizer step.

    Stateful use (eager loops, `tf.function`, PyTorch, DDP): `update(grads)`
    after each step, `result()` when wanted. Stateless use (jitted JAX
    steps, `keras.StatelessScope`): the state is a pytree of arrays, passed
    in and returned by the step function, as
    `state = tracker.stateless_update(state, grads)` inside `jax.jit`.

    `result()` has the keys of `GradientSignMonitor`'s logs:
    `grad_sign_change`, `grad_magnitude`, `grad_nonfinite_steps`, and with
    `per_layer=True` `grad_sign_change/<layer>` and `grad_magnitude/<layer>`
    (layer = the variable's path without its last part and without a first
    part that all variables share, such as the model's name).

    Examples:
        Stateful:

        >>> layer = keras.layers.Dense(2)
        >>> layer.build((None, 3))
        >>> tracker = GradientSignTracker(layer.trainable_variables, per_layer=True)
        >>> for sign in (1.0, -1.0):  # in a loop: the gradients the optimizer applies
        ...     grads = [sign * keras.ops.ones(v.shape) for v in layer.trainable_variables]
        ...     tracker.update(grads)
        >>> float(tracker.result()["grad_sign_change"])  # every sign flipped once
        1.0

        Stateless:

        >>> state = tracker.initial_state()
        >>> for sign in (1.0, 1.0):
        ...     grads = [sign * keras.ops.ones(v.shape) for v in layer.trainable_variables]
        ...     state = tracker.stateless_update(state, grads)
        >>> float(tracker.stateless_result(state)["grad_sign_change"])
        0.0

    Args:
        variables: The trainable variables whose gradients are passed, in
            the same order (`keras.Variable`s, or anything with `.shape`;
            `.path` names the layers).
        per_layer: Also report per-layer values. Default False.

    Reference:
        Schneider, "Correlated Initialization for Correlated Data"
        (the zig-zag measure, Section 4 and Figures 4-6).
    """

    def __init__(self, variables, per_layer=False):
        if not isinstance(per_layer, bool):
            raise TypeError(f"`per_layer` must be a bool; received {per_layer!r}.")
        variables = list(variables)
        if not variables:
            raise ValueError("`variables` must hold at least one variable.")
        self.per_layer = per_layer
        self.shapes = [tuple(int(d) for d in v.shape) for v in variables]
        sizes = [int(np.prod(s)) for s in self.shapes]
        self.total_size = float(sum(sizes))
        paths = self.paths = [getattr(v, "path", None) or f"variable_{i}/value" for i, v in enumerate(variables)]
        firsts = {p.split("/", 1)[0] for p in paths}
        prefix = f"{firsts.pop()}/" if len(firsts) == 1 and all(p.count("/") >= 2 for p in paths) else ""
        groups = {}
        for i, path in enumerate(paths):
            groups.setdefault(_layer_of(path, prefix), []).append(i)
        self.layer_groups = {layer: (np.array(idx), float(sum(sizes[i] for i in idx))) for layer, idx in groups.items()}
        self._state = None

    # ------------------------------------------------------------ stateless
    def initial_state(self):
        """A fresh state: no predecessor, all sums 0 (a dict of backend tensors)."""
        n = len(self.shapes)
        return {
            "previous_signs": [ops.zeros(s, "int8") for s in self.shapes],
            "has_previous": ops.zeros((), "float32"),
            "sign_changes": ops.zeros((n,), "float32"),
            "magnitude_sums": ops.zeros((n,), "float32"),
            "sign_steps": ops.zeros((), "float32"),
            "measured_steps": ops.zeros((), "float32"),
            "nonfinite_steps": ops.zeros((), "float32"),
        }

    def stateless_update(self, state, gradients, applied=1.0):
        """The state after one update; pure backend ops, so it can be jitted.

        Args:
            state: From `initial_state()` or a previous `stateless_update`.
            gradients: One gradient per variable, in order, each of its
                variable's shape. None (what `tape.gradient` gives for a
                variable the loss does not depend on) counts as a zero
                gradient, as it moves nothing.
            applied: 1.0, or a 0/1 tensor: 0 for a step whose gradient is
                not applied (gradient accumulation's micro-steps).
        """
        gradients = list(gradients)
        if len(gradients) != len(self.shapes):
            raise ValueError(f"Expected {len(self.shapes)} gradients (one per variable); received {len(gradients)}.")
        grads = []
        for i, (g, shape) in enumerate(zip(gradients, self.shapes)):
            if g is None:
                grads.append(ops.zeros(shape, "float32"))
                continue
            given = tuple(g.shape)
            # A dimension unknown at trace time (None) is not compared.
            if len(given) != len(shape) or any(d is not None and d != s for d, s in zip(given, shape)):
                raise ValueError(
                    f"Gradient {i} ({self.paths[i]}) has shape {given}; its variable has shape {shape}. "
                    "Pass one gradient per variable, in the order of `variables`."
                )
            grads.append(ops.cast(g, "float32"))
        # Few ops per variable (eager PyTorch pays for each one): the step's
        # finiteness is read from the per-variable sums of |g| (a NaN or Inf
        # entry makes its sum non-finite, as does a sum past float32's
        # range), and what a non-finite step computes is discarded below
        # with one `where` per statistic instead of masking every gradient.
        signs, changes, magnitudes = [], [], []
        for previous, g in zip(state["previous_signs"], grads):
            sign = ops.sign(g)
            changes.append(ops.sum(ops.abs(sign - ops.cast(previous, "float32"))))
            magnitudes.append(ops.sum(ops.abs(g)))
            signs.append(sign)
        changes, magnitudes = ops.stack(changes), ops.stack(magnitudes)
        finite = ops.cast(ops.all(ops.isfinite(magnitudes)), "float32")
        valid = applied * finite
        keep = valid > 0
        counted = valid * state["has_previous"]
        return {
            "previous_signs": [
                ops.where(keep, ops.cast(sign, "int8"), previous)
                for sign, previous in zip(signs, state["previous_signs"])
            ],
            "has_previous": ops.maximum(state["has_previous"], valid),
            "sign_changes": state["sign_changes"] + counted * ops.where(keep, changes, 0.0) / 2.0,
            "magnitude_sums": state["magnitude_sums"] + valid * ops.where(keep, magnitudes, 0.0),
            "sign_steps": state["sign_steps"] + counted,
            "measured_steps": state["measured_steps"] + valid,
            "nonfinite_steps": state["nonfinite_steps"] + applied * (1.0 - finite),
        }

    def stateless_result(self, state, since=None):
        """`result()` of a state; `since`, an earlier state, gives the window between.

        Only the `SUM_KEYS` entries of `state` (and `since`) are read.
        """
        sums = [np.asarray(ops.convert_to_numpy(state[k]), dtype=np.float64) for k in SUM_KEYS]
        if since is not None:
            sums = [s - np.asarray(ops.convert_to_numpy(since[k]), dtype=np.float64) for s, k in zip(sums, SUM_KEYS)]
        changes, magnitudes, sign_steps, measured, nonfinite = sums
        d = self.total_size
        out = {
            "grad_sign_change": float(changes.sum() / (d * sign_steps)) if sign_steps else float("nan"),
            "grad_magnitude": float(magnitudes.sum() / (d * measured)) if measured else float("nan"),
            "grad_nonfinite_steps": float(nonfinite),
        }
        if self.per_layer:
            for layer, (idx, size) in self.layer_groups.items():
                out[f"grad_sign_change/{layer}"] = (
                    float(changes[idx].sum() / (size * sign_steps)) if sign_steps else float("nan")
                )
                out[f"grad_magnitude/{layer}"] = (
                    float(magnitudes[idx].sum() / (size * measured)) if measured else float("nan")
                )
        return out

    def reset_state(self, state, keep_previous=True):
        """The state with its sums at 0; the predecessor kept unless `keep_previous=False`."""
        fresh = self.initial_state()
        if keep_previous:
            fresh["previous_signs"] = state["previous_signs"]
            fresh["has_previous"] = state["has_previous"]
        return fresh

    # -------------------------------------------------------------- stateful
    def _variables(self):
        if self._state is None:
            self._state = keras.tree.map_structure(
                lambda t: keras.Variable(t, trainable=False, dtype=t.dtype), self.initial_state()
            )
        return self._state

    def update(self, gradients):
        """Records one optimizer step's gradients (one per variable, in order)."""
        write_state(self._variables(), self.stateless_update(read_state(self._variables()), gradients))

    def result(self):
        """The values since the start or the last `reset()` (see class docstring)."""
        return self.stateless_result(read_state(self._variables()))

    def reset(self, keep_previous=True):
        """Restarts the sums. With `keep_previous=True` (default) the next
        update is still compared with the last one, as the monitor does
        across epochs; False forgets it, as at the start of a `fit`."""
        write_state(self._variables(), self.reset_state(read_state(self._variables()), keep_previous))
