"""The layer-kind table and the walker (keras_corrinit._core.layers)."""

import keras
import numpy as np
import pytest

from conftest import InjectedFailure, assert_weights_equal, weights_of
from keras_corrinit._core.layers import frozen_layers, kernel_layers, kernel_slots, unchanged_on_error, walk_layers


def built(layer, input_shape):
    layer.build(input_shape)
    return layer


@pytest.mark.slow
def test_every_kernel_kind():
    cases = [
        (built(keras.layers.Conv2D(4, 3), (None, 8, 8, 6)), [("kernel", "kernel_initializer", "conv")]),
        (built(keras.layers.Conv2D(6, 3, groups=6), (None, 8, 8, 6)), [("kernel", "kernel_initializer", "depthwise")]),
        (built(keras.layers.Conv2D(6, 3, groups=3), (None, 8, 8, 6)), [("kernel", "kernel_initializer", "grouped")]),
        (built(keras.layers.DepthwiseConv2D(3), (None, 8, 8, 6)), [("kernel", "depthwise_initializer", "depthwise")]),
        (
            built(keras.layers.SeparableConv2D(4, 3), (None, 8, 8, 6)),
            [
                ("depthwise_kernel", "depthwise_initializer", "depthwise"),
                ("pointwise_kernel", "pointwise_initializer", "pointwise"),
            ],
        ),
        (built(keras.layers.Conv2DTranspose(4, 3), (None, 8, 8, 6)), [("kernel", "kernel_initializer", "transpose")]),
        (built(keras.layers.Conv1D(4, 3), (None, 8, 6)), [("kernel", "kernel_initializer", "conv")]),
        (built(keras.layers.Dense(4), (None, 6)), [("kernel", "kernel_initializer", "dense")]),
        (keras.layers.Flatten(), []),
        (keras.layers.BatchNormalization(), []),
    ]
    for layer, expected in cases:
        slots = [(s.attribute, s.initializer, s.kind) for s in kernel_slots(layer)]
        assert slots == expected, (type(layer).__name__, slots)
        for slot in kernel_slots(layer):
            assert hasattr(layer, slot.attribute) and hasattr(layer, slot.initializer)


def test_walker_flattens_nested_models_in_order():
    inner = keras.Sequential([keras.Input((8, 8, 3)), keras.layers.Conv2D(4, 3, name="inner_conv")], name="inner")
    inputs = keras.Input((8, 8, 3))
    x = keras.layers.DepthwiseConv2D(3, padding="same", name="dw")(inputs)
    x = inner(x)
    outputs = keras.layers.Dense(2, name="head")(keras.layers.Flatten(name="flat")(x))
    model = keras.Model(inputs, outputs)
    names = [layer.name for layer in walk_layers(model)]
    assert names.index("dw") < names.index("inner") < names.index("inner_conv") < names.index("head")
    assert [(layer.name, slot.kind) for layer, slot in kernel_layers(model)] == [
        ("dw", "depthwise"),
        ("inner_conv", "conv"),
        ("head", "dense"),
    ]
    assert [layer.name for layer, _ in kernel_layers(model, ("depthwise",))] == ["dw"]


def _two_convs():
    return keras.Sequential(
        [keras.Input((8, 8, 3)), keras.layers.Conv2D(4, 3, name="a"), keras.layers.Conv2D(4, 3, name="b")]
    )


def test_unchanged_on_error_restores_weights_and_initializers():
    model = _two_convs()
    before, initializer = weights_of(model), model.get_layer("a").kernel_initializer
    with pytest.raises(InjectedFailure):
        with unchanged_on_error(model.layers):
            for layer in model.layers:
                layer.kernel.assign(np.ones(layer.kernel.shape))
                layer.bias.assign(np.ones(layer.bias.shape))
            model.get_layer("a").kernel_initializer = keras.initializers.Zeros()
            raise InjectedFailure("half-way")
    assert_weights_equal(model, before)
    assert model.get_layer("a").kernel_initializer is initializer


def test_unchanged_on_error_keeps_changes_that_finish():
    model = _two_convs()
    with unchanged_on_error(model.layers):
        model.get_layer("a").kernel.assign(np.ones((3, 3, 3, 4)))
    np.testing.assert_array_equal(keras.ops.convert_to_numpy(model.get_layer("a").kernel), np.ones((3, 3, 3, 4)))


def test_frozen_layers_include_children_of_frozen_parents():
    backbone = keras.Sequential([keras.Input((8, 8, 3)), keras.layers.Conv2D(4, 3, name="inner")], name="backbone")
    model = keras.Sequential([keras.Input((8, 8, 3)), backbone, keras.layers.Conv2D(2, 3, name="top")])
    assert frozen_layers(model) == set()
    backbone.trainable = False
    assert frozen_layers(model) == {id(backbone), id(backbone.get_layer("inner"))}
    model.trainable = False
    assert frozen_layers(model) == {id(layer) for layer in walk_layers(model)}
