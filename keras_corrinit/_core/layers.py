"""Which layer kinds carry which kernels, and one walk over (nested) models.

Extraction, LSUV, NFM and layer-wise initialization all ask the same two
questions: which layers of a model hold kernels, and what kind of kernel
each is. They are answered here, once.

Kinds:

* `"conv"`: Conv1D/2D/3D with `groups=1`, kernel `(*spatial, in, out)`.
* `"grouped"`: a grouped convolution with more than one input channel per
  group.
* `"depthwise"`: one spatial filter per channel: DepthwiseConv1D/2D
  (`(*spatial, channels, multiplier)`), the depthwise part of
  SeparableConv1D/2D, and a Conv with one input channel per group (as
  ConvNeXt builds its depthwise convolutions: `(*spatial, 1, channels)`).
* `"pointwise"`: the pointwise part of SeparableConv1D/2D.
* `"transpose"`: Conv1D/2D/3DTranspose, `(*spatial, filters, in)`.
* `"dense"`: Dense, `(in, out)`.
* `"einsum"`: EinsumDense, any kernel shape (its fan-in depends on the
  equation); not among `KINDS`, so extraction and layer-wise
  initialization leave it alone; LSUV and `initialize` scale it.
"""

import contextlib
import dataclasses

import keras

from keras_corrinit._core.backend import sublayers

CONV_KINDS = ("conv", "grouped")
KINDS = ("conv", "grouped", "depthwise", "pointwise", "transpose", "dense")


@dataclasses.dataclass(frozen=True)
class KernelSlot:
    """One kernel of a layer: where it is, its initializer attribute, its kind."""

    attribute: str
    initializer: str
    kind: str


_KERNEL = KernelSlot("kernel", "kernel_initializer", "conv")
_DEPTHWISE = KernelSlot("kernel", "depthwise_initializer", "depthwise")
_SEPARABLE = (
    KernelSlot("depthwise_kernel", "depthwise_initializer", "depthwise"),
    KernelSlot("pointwise_kernel", "pointwise_initializer", "pointwise"),
)

# Checked in order: the transposed and depthwise classes first, the plain
# convolutions (whose subclasses some of them may be) after.
_TABLE = (
    ((keras.layers.SeparableConv1D, keras.layers.SeparableConv2D), _SEPARABLE),
    ((keras.layers.DepthwiseConv1D, keras.layers.DepthwiseConv2D), (_DEPTHWISE,)),
    (
        (keras.layers.Conv1DTranspose, keras.layers.Conv2DTranspose, keras.layers.Conv3DTranspose),
        (dataclasses.replace(_KERNEL, kind="transpose"),),
    ),
    ((keras.layers.Conv1D, keras.layers.Conv2D, keras.layers.Conv3D), (_KERNEL,)),
    ((keras.layers.Dense,), (dataclasses.replace(_KERNEL, kind="dense"),)),
    ((keras.layers.EinsumDense,), (dataclasses.replace(_KERNEL, kind="einsum"),)),
)


def kernel_slots(layer):
    """The `KernelSlot`s of `layer`, or `()` for layers without kernels."""
    for classes, slots in _TABLE:
        if isinstance(layer, classes):
            if slots == (_KERNEL,) and getattr(layer, "groups", 1) > 1:
                per_group = layer.kernel.shape[-2] if layer.built else None
                kind = "depthwise" if per_group == 1 else "grouped"
                return (dataclasses.replace(_KERNEL, kind=kind),)
            return slots
    return ()


def walk_layers(model):
    """All layers below `model`, nested models and users' Layer subclasses entered, in model order."""
    for sub in sublayers(model):
        yield sub
        yield from walk_layers(sub)


def kernel_layers(model, kinds=KINDS):
    """`(layer, slot)` for every kernel of one of `kinds`, in model order."""
    return [(layer, slot) for layer in walk_layers(model) for slot in kernel_slots(layer) if slot.kind in kinds]


def frozen_layers(model):
    """Ids of the layers below `model` that are frozen: `trainable=False`, or inside a frozen layer."""
    frozen = set()

    def visit(layer, parent_frozen):
        for sub in sublayers(layer):
            is_frozen = parent_frozen or not sub.trainable
            if is_frozen:
                frozen.add(id(sub))
            visit(sub, is_frozen)

    visit(model, not model.trainable)
    return frozen


@contextlib.contextmanager
def unchanged_on_error(layers):
    """All or nothing: if the block raises, `layers` are left exactly as before it.

    Every function that changes a model in place runs its changes inside
    this block: the weights of `layers` (values copied before) and their
    kernel initializer attributes are restored when anything in the block
    raises, KeyboardInterrupt included, and the error propagates.
    """
    layers = list({id(layer): layer for layer in layers}.values())
    variables = list({id(v): v for layer in layers for v in layer.weights}.values())
    values = [keras.ops.convert_to_numpy(v) for v in variables]
    attributes = [
        (layer, slot.initializer, getattr(layer, slot.initializer))
        for layer in layers
        for slot in kernel_slots(layer)
        if hasattr(layer, slot.initializer)
    ]
    try:
        yield
    except BaseException:
        for variable, value in zip(variables, values):
            variable.assign(value)
        for layer, name, value in attributes:
            setattr(layer, name, value)
        raise


def depthwise_kernels(model):
    """`(key, layer)` of each depthwise kernel, keyed as `apply_initializers` expects."""
    found = []
    for layer, slot in kernel_layers(model, ("depthwise",)):
        key = layer.name if slot.attribute == "kernel" else f"{layer.name}/{slot.attribute}"
        found.append((key, getattr(layer, slot.attribute)))
    return found
