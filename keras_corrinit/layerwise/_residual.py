"""`residual="scaled"`: each residual branch's end scaled to a share of its shortcut's variance."""

import math

from keras import ops

from keras_corrinit._core.backend import intercepted_call
from keras_corrinit._core.layers import kernel_slots


class ResidualScaler:
    """At each residual merge, scales the branch's end so the branch adds `share` of its shortcut's variance.

    Run in a pass with batch normalization in training mode, after every
    other weight is set: the shortcut's variance is what training sees at
    the start, and each merge is set before the pass goes on, so later
    blocks see the earlier ones' final state. The end's scale variables
    (gamma and beta, or kernel and bias) are multiplied by one factor, which
    multiplies the branch's output by it exactly when nothing but a linear
    or ReLU activation stands between the end and the merge.
    """

    def __init__(self, ends, share):
        self.share, self.factors = share, {}
        self.by_merge = {}
        for end in ends:
            self.by_merge.setdefault(id(end.merge), []).append(end)

    def make(self, merge, original):
        def call(inputs, *args, **kwargs):
            inputs = list(inputs)
            for end in self.by_merge[id(merge)]:
                if id(end.layer) in self.factors:
                    continue  # a shared merge: set at its first call
                branch = inputs[end.side]
                shortcut = [x for i, x in enumerate(inputs) if i != end.side]
                factor = self._factor(branch, shortcut)
                self.factors[id(end.layer)] = factor
                if factor is None:
                    continue
                for variable in _end_variables(end):
                    variable.assign(variable * ops.cast(factor, variable.dtype))
                inputs[end.side] = branch * ops.cast(factor, branch.dtype)
            return original(inputs, *args, **kwargs)

        return call

    def _factor(self, branch, shortcut):
        shortcut_variance = _channel_variance(sum(shortcut[1:], shortcut[0]))
        branch_variance = _channel_variance(branch)
        if not (branch_variance > 0 and math.isfinite(branch_variance) and math.isfinite(shortcut_variance)):
            return None
        return math.sqrt(self.share * shortcut_variance / branch_variance)

    def intercept(self, stack, ends):
        """Enters, on `stack`, the interception of every merge of `ends` (a pass then scales them)."""
        merges = {id(end.merge): end.merge for end in ends}
        for merge in merges.values():
            stack.enter_context(intercepted_call(merge, lambda original, merge=merge: self.make(merge, original)))


def _channel_variance(x):
    """The mean over the last axis of each channel's variance (one number, read on the host)."""
    x = ops.cast(x, "float32")
    axes = tuple(range(len(x.shape) - 1))
    return float(ops.convert_to_numpy(ops.mean(ops.var(x, axis=axes))))


def _end_variables(end):
    """The variables that scale a branch end's output: gamma and beta, or the kernels and the bias."""
    layer = end.layer
    if end.kind == "gamma":
        names = ("gamma", "beta")
    else:
        names = (kernel_slots(layer)[-1].attribute, "bias")
    return [v for v in (getattr(layer, name, None) for name in names) if v is not None]
