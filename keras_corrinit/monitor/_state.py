"""The gradient-sign tracker's state structure, shared by the tracker and the monitor (private).

A state is a dict of tensors (or lists of tensors, one per tracked
variable); the monitor keeps the same structure in Keras variables so that
its compiled training step can carry it.
"""

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
