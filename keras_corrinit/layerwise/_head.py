"""`head="keep"`: the output layer as built, its scale capped where the features in front of it grew.

A head is kept as built (its gradient reaches the body from the first
step; a zero head passes none until it has grown). But a head built for
features of about unit size meets, after batch normalization's statistics
and the body's rules, features whose size depends on the network: on
EfficientNetB0 as built its outputs (before the softmax) have a standard
deviation of about 4 on data, a starting loss 1.6 times a uniform
prediction's. So once every other weight is set, a kept head whose outputs
(before its activation, its bias taken off) have a standard deviation above
max(1.5, sqrt(ln C)) (C its units) on the first batch, measured as training
sees it, has its kernel scaled down to it (its bias, a class prior where the
author set one, is kept): a softmax over C classes of independent logits of variance s^2
starts at a loss of at most ln C + s^2 / 2 on average, so sqrt(ln C) keeps
it below 1.5 ln C; the floor 1.5 leaves the heads of small outputs as built
where their usual 1.2-1.3 would otherwise be touched. A head at or below it
is left exactly as built (ResNet-20's 1.25 and VGG-8's are; keras.io's
convnet's 1.57 is scaled by 0.97).
"""

import math

from keras import ops

from keras_corrinit._core.layers import kernel_slots


def head_std_cap(units):
    """The largest standard deviation a kept head's outputs start with: max(1.5, sqrt(ln C)), C its units."""
    return max(1.5, math.sqrt(math.log(max(int(units), 2))))


class HeadCap:
    """Inside a pass (`watching(heads, cap.handler)`), scales each head whose pre-activation standard
    deviation on the batch exceeds `head_std_cap` down to it; `scaled` is `{id(head): (std, factor, cap)}`."""

    def __init__(self):
        self.scaled, self.seen = {}, set()

    def handler(self, layer, inputs, forward):
        output = forward(inputs)
        if id(layer) in self.seen:
            return output
        self.seen.add(id(layer))
        bias = getattr(layer, "bias", None)
        std = _spread(output, bias)
        cap = head_std_cap(output.shape[-1])
        if not (math.isfinite(std) and std > cap):
            return output
        factor = cap / std
        kernel = getattr(layer, kernel_slots(layer)[-1].attribute)
        kernel.assign(kernel * ops.cast(factor, kernel.dtype))
        self.scaled[id(layer)] = (std, factor, cap)
        # the bias (a class prior, where the author set one) is kept: only the data's part is scaled
        if bias is None:
            return output * ops.cast(factor, output.dtype)
        bias = ops.cast(bias, output.dtype)
        return (output - bias) * ops.cast(factor, output.dtype) + bias


def _spread(output, bias):
    """The standard deviation of the outputs' data part (the bias taken off, not the data's mean): what
    the features put into the logits, per-class offsets included; a bias (a prior) is not counted."""
    output = ops.cast(output, "float32")
    if bias is not None:
        output = output - ops.cast(bias, "float32")
    return math.sqrt(float(ops.convert_to_numpy(ops.var(output))))
