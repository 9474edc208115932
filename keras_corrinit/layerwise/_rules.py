"""`initialize`'s rules: what each role does to a layer's weights.

A rule is `rule(layer, step) -> (what, scaled)`: it sets the layer's
kernels and says what it set and whether LSUV's pass then scales it. The
planner (`_plan.py`) gives every layer its role; `RULES` maps a role to its
rule. `step` carries what the rules need: the patch statistics, the
layer's seed and `initialize`'s arguments.
"""

import dataclasses
import math

import numpy as np
from keras import ops

from keras_corrinit._core.apply import layer_seeds as layer_seeds
from keras_corrinit._core.backend import attention_projections
from keras_corrinit._core.layers import kernel_slots
from keras_corrinit.initializers._whitening import PatchWhitening
from keras_corrinit.layerwise._mimetic import mimetic_kernels

# A patch direction whose variance is below this share of the largest is
# "constant" (a constant input channel, padding only): whitening it would
# amplify nothing but rounding.
_CONSTANT_DIRECTION = 1e-6
# `eps` at least this many times the largest patch variance whitens nothing.
_EPS_LIMIT = 100.0


def he_normal(shape, seed, fan_in=None):
    """An untruncated He-normal float32 kernel, drawn by numpy from `seed` (`fan_in` default: Keras's).

    Drawn on the host: the same values on every backend, and no per-shape
    compilation of a random kernel (on JAX that was 60% of the call).
    `assign` casts it to the variable's dtype.
    """
    fan_in = math.prod(shape[:-1]) if fan_in is None else fan_in
    kernel = np.random.default_rng(seed).standard_normal(shape, dtype=np.float32)
    kernel *= np.float32(math.sqrt(2.0 / fan_in))
    return kernel


def _whitening_kernel(layer, statistics, eps, seed):
    """The kernel: whitening filters of the varying directions, He-normal for the other filters."""
    whitening = PatchWhitening(statistics.covariance, statistics.kernel_size, statistics.in_channels, eps)
    largest = float(whitening.eigenvalues[0])
    if eps is not None and eps >= _EPS_LIMIT * largest:
        raise ValueError(
            f"`eps`={eps:g} is at least {_EPS_LIMIT:g} times the largest patch variance of layer "
            f"{layer.name!r} ({largest:.4g}): every whitening filter would be nearly zero. Pass an `eps` "
            f"well below it, or None (1e-3 x the mean eigenvalue)."
        )
    varying = int(np.sum(whitening.eigenvalues > _CONSTANT_DIRECTION * largest))
    shape = tuple(layer.kernel.shape)
    filters = shape[-1]
    kept = min(filters, 2 * varying)
    kernel = np.asarray(whitening.filters[:varying].T.reshape(*shape[:-1], varying))
    paired = np.stack([kernel, -kernel], axis=-1).reshape(*shape[:-1], 2 * varying)[..., :kept]
    what = f"PatchWhitening ({kept} filters)"
    constant = whitening.filters.shape[0] - varying
    if filters > kept:
        he = he_normal((*shape[:-1], filters - kept), seed)
        paired = np.concatenate([paired, he], axis=-1)
        what = f"PatchWhitening ({kept} of {filters} filters; {filters - kept} He-normal)"
    if constant:
        what += f"; {constant} constant patch directions left out"
    return paired.astype("float32"), what


def _zero_kernels(layer):
    for slot in kernel_slots(layer):
        variable = getattr(layer, slot.attribute)
        variable.assign(ops.zeros(variable.shape, variable.dtype))


def _identity_kernel(layer, seed):
    """Dirac (centre tap = identity) on the first in_channels filters, He-normal on the rest; None if it cannot."""
    if [slot.kind for slot in kernel_slots(layer)] != ["conv"]:
        return None
    shape = tuple(layer.kernel.shape)
    spatial, in_channels, filters = shape[:-2], shape[-2], shape[-1]
    if filters < in_channels or any(size % 2 == 0 for size in spatial):
        return None
    kernel = np.zeros(shape, "float32")
    kernel[tuple(size // 2 for size in spatial)][:, :in_channels] = np.eye(in_channels)
    if filters > in_channels:  # the other filters: He-normal with the layer's own fan-in
        kernel[..., in_channels:] = he_normal((*shape[:-1], filters - in_channels), seed)
    return kernel


def _rest_kernels(layer, rest, seed):
    """`({attribute: kernel}, what)` for a layer that is neither whitened, a head nor a branch end."""
    slots = kernel_slots(layer)
    kinds = [slot.kind for slot in slots]
    if rest == "keep" or kinds == ["einsum"]:
        return {}, "kept" if rest == "keep" else "kept (EinsumDense: fan-in depends on the equation)"
    if rest == "identity":
        kernel = _identity_kernel(layer, seed)
        if kernel is not None:
            shape = kernel.shape
            return {"kernel": kernel}, f"identity ({shape[-2]} of {shape[-1]} filters)"
    kernels, seeds = {}, layer_seeds(seed, len(slots))
    for slot, slot_seed in zip(slots, seeds):
        variable = getattr(layer, slot.attribute)
        shape = tuple(variable.shape)
        fan_in = math.prod(shape[:-2]) if slot.kind == "depthwise" else None
        kernels[slot.attribute] = he_normal(shape, slot_seed, fan_in)
    return kernels, "He-normal" if len(slots) == 1 else "He-normal (" + ", ".join(kernels) + ")"


def _at_built_norm(kernel, variable):
    """`kernel` rescaled to the Frobenius norm `variable` holds now, as built (a zero kernel stays zero)."""
    built, current = float(np.linalg.norm(ops.convert_to_numpy(variable))), float(np.linalg.norm(kernel))
    return kernel if current == 0.0 else (kernel * np.float32(built / current)).astype("float32")


def set_mimetic(layer, seed):
    projections = attention_projections(layer)
    shapes = [tuple(p.kernel.shape) for p in projections]
    for projection, kernel in zip(projections, mimetic_kernels(*shapes, seed)):
        projection.kernel.assign(ops.convert_to_tensor(kernel, projection.kernel.dtype))
        if projection.bias is not None:
            projection.bias.assign(ops.zeros(projection.bias.shape, projection.bias.dtype))
    return "mimetic attention (QK ~ 0.7 Z + 0.7 I, VO ~ 0.4 Z - 0.4 I)"


@dataclasses.dataclass
class Step:
    """What a rule needs for one layer: its patch statistics (whitened layers), its seed, the arguments."""

    statistics: object
    seed: int
    args: dict
    normalized: bool = False  # the layer's one consumer is a normalization


def _assign(layer, kernels, at_built_norm):
    for attribute, kernel in kernels.items():
        variable = getattr(layer, attribute)
        variable.assign(_at_built_norm(kernel, variable) if at_built_norm else kernel)


def _whiten(layer, step):
    normalized = step.normalized
    kernel, what = _whitening_kernel(layer, step.statistics, step.args["eps"], step.seed)
    if normalized:
        kernel = _at_built_norm(kernel, layer.kernel)
        what += "; at its built norm (before a normalization)"
    layer.kernel.assign(kernel)
    return what, not normalized


def _head(layer, step):
    if step.args["head"] == "zero":
        _zero_kernels(layer)
        return "zero (output layer)", False
    if step.args["head"] == "lsuv":
        kernels, kind = _rest_kernels(layer, "he", step.seed)
        _assign(layer, kernels, False)
        return f"{kind} (output layer)", True
    return "kept (output layer)", False


def _residual_end(layer, step):
    _zero_kernels(layer)
    return "zero (residual branch end)", False


def _normalized(layer, step):
    if step.args["normalized"] == "keep":
        return "kept (before a normalization)", False
    kernels, what = _rest_kernels(layer, step.args["rest"], step.seed)
    _assign(layer, kernels, True)
    return what + (
        "; at its built norm (before a normalization)" if kernels else " (before a normalization: not rescaled)"
    ), False


def _rest(layer, step):
    kernels, what = _rest_kernels(layer, step.args["rest"], step.seed)
    _assign(layer, kernels, False)
    return what, True


def _attention(layer, step):
    return set_mimetic(layer, step.seed), False


# role -> rule; the roles and why a layer gets one are the planner's (`_plan.py`).
RULES = {
    "whiten": _whiten,
    "head": _head,
    "residual_end": _residual_end,
    "normalized": _normalized,
    "rest": _rest,
    "attention": _attention,
}
