"""Layer pairing, per-layer seeds and applying initializers to a model."""

import math

import keras
import numpy as np
import pytest

from conftest import InjectedFailure, assert_weights_equal, fail_on_nth_assign, to_numpy, weights_of
from keras_corrinit import CorrelatedHeNormal
from keras_corrinit.extraction import correlation_from_kernels
from keras_corrinit.layerwise import apply_initializers, layer_seeds, nfm_layerwise_initializers, pair_layers

Z = 5.0


def _target():
    # c2, c3 and c4 have the same kernel shape (3, 3, 16, 16).
    return keras.Sequential(
        [
            keras.Input((12, 12, 3)),
            keras.layers.Conv2D(16, 3, padding="same", name="c1"),
            keras.layers.Conv2D(16, 3, padding="same", name="c2"),
            keras.layers.Conv2D(16, 3, padding="same", name="c3"),
            keras.layers.Conv2D(16, 3, padding="same", name="c4"),
            keras.layers.GlobalAveragePooling2D(),
            keras.layers.Dense(4, name="head"),
        ]
    )


def _estimate():
    rng = np.random.default_rng(0)
    kernels = {f"s{i}": rng.normal(size=(3, 3, 8, 8)) for i in range(4)}
    return correlation_from_kernels(kernels, source="random")


def _kernels(model):
    return {layer.name: to_numpy(layer.kernel) for layer in model.layers if hasattr(layer, "kernel")}


def _assert_uncorrelated(a, b):
    # Independent zero-mean draws: the sample correlation of n pairs has
    # standard error 1 / sqrt(n).
    a, b = a.ravel(), b.ravel()
    assert abs(np.corrcoef(a, b)[0, 1]) < Z / math.sqrt(a.size)


def test_int_seeds_are_distinct_deterministic_and_stable_in_count():
    seeds = layer_seeds(3, 50)
    assert len(set(seeds)) == 50
    assert all(isinstance(s, int) and 0 <= s < 2**31 - 1 for s in seeds)
    assert seeds == layer_seeds(3, 50)
    assert layer_seeds(3, 5) == seeds[:5]  # adding layers keeps earlier seeds
    assert set(layer_seeds(4, 50)).isdisjoint(seeds)
    # the documented derivation
    words = np.random.SeedSequence(3).generate_state(58)
    assert seeds[:5] == [int(w) % (2**31 - 1) for w in words[:5]]


def test_none_and_seed_generator_seeds_and_errors():
    assert layer_seeds(None, 3) == [None, None, None]
    generator = keras.random.SeedGenerator(1)
    assert all(s is generator for s in layer_seeds(generator, 3))
    with pytest.raises(TypeError, match="`seed` must be an int, None or a keras.random.SeedGenerator; received 1.5"):
        layer_seeds(1.5, 2)
    with pytest.raises(ValueError, match="`seed` must be an int >= 0; received -1"):
        layer_seeds(-1, 2)


@pytest.mark.slow
def test_correlated_layerwise_same_shaped_layers_are_independent_and_reproducible():
    estimate = _estimate()
    first, second = _target(), _target()
    apply_initializers(first, estimate.layerwise_initializers(first, seed=3))
    apply_initializers(second, estimate.layerwise_initializers(second, seed=3))
    k1, k2 = _kernels(first), _kernels(second)
    for name in ["c1", "c2", "c3", "c4"]:
        np.testing.assert_array_equal(k1[name], k2[name])
    _assert_uncorrelated(k1["c2"], k1["c3"])
    _assert_uncorrelated(k1["c3"], k1["c4"])
    seeds = [first.get_layer(n).kernel_initializer.seed for n in ["c1", "c2", "c3", "c4"]]
    assert seeds == layer_seeds(3, 4)


def test_correlated_layerwise_with_a_seed_generator_draws_independently():
    estimate = _estimate()
    target = _target()
    apply_initializers(target, estimate.layerwise_initializers(target, seed=keras.random.SeedGenerator(5)))
    k = _kernels(target)
    _assert_uncorrelated(k["c2"], k["c3"])
    _assert_uncorrelated(k["c2"], k["c4"])


def test_nfm_layerwise_shares_the_seeding():
    source = _target()
    first, second = _target(), _target()
    apply_initializers(first, nfm_layerwise_initializers(source, first, seed=7))
    apply_initializers(second, nfm_layerwise_initializers(source, second, seed=7))
    k1, k2 = _kernels(first), _kernels(second)
    for name in k1:
        np.testing.assert_array_equal(k1[name], k2[name])
    _assert_uncorrelated(k1["c2"], k1["c3"])
    seeds = [first.get_layer(n).kernel_initializer.seed for n in ["c1", "c2", "c3", "c4", "head"]]
    assert seeds == layer_seeds(7, 5)


def test_pair_layers():
    assert pair_layers(["a", "b"], ["x", "y"]) == {"a": "x", "b": "y"}
    assert pair_layers(["a", "b"], ["x", "y"], mapping={"b": "x"}) == {"b": "x"}
    with pytest.raises(ValueError, match=r"The target has 1 conv layers but the source has 2; pass `mapping="):
        pair_layers(["a"], ["x", "y"], what="conv layers")
    with pytest.raises(ValueError, match=r"source layers that do not exist: \['z'\]"):
        pair_layers(["a"], ["x"], mapping={"a": "z"})
    with pytest.raises(TypeError, match="`mapping` must be None or a"):
        pair_layers(["a"], ["x"], mapping=[("a", "x")])


def test_apply_initializers_changes_nothing_when_one_fails():
    model = keras.Sequential(
        [
            keras.Input((8, 8, 3)),
            keras.layers.Conv2D(4, 3, name="a"),
            keras.layers.Conv2D(4, 5, name="b"),
            keras.layers.Flatten(name="flat"),
        ]
    )
    before = [to_numpy(w) for w in model.weights]
    nine = CorrelatedHeNormal(np.eye(9), seed=0)  # a 3x3 matrix cannot serve the 5x5 layer "b"
    with pytest.raises(ValueError, match="has 25 positions"):
        apply_initializers(model, {"a": nine, "b": nine})
    with pytest.raises(
        ValueError, match=r"names kernels the model does not have: 'flat': Flatten has no kernel to initialize\.$"
    ):
        apply_initializers(model, {"a": nine, "flat": nine})
    with pytest.raises(ValueError, match=r"names kernels the model does not have: 'c': the model has no layer 'c'\.$"):
        apply_initializers(model, {"c": nine})
    for w, b in zip(model.weights, before):
        np.testing.assert_array_equal(to_numpy(w), b)
    assert not isinstance(model.get_layer("a").kernel_initializer, CorrelatedHeNormal)


class _WrongShape(keras.initializers.Initializer):
    def __call__(self, shape, dtype=None):
        return keras.ops.zeros((2, 2), dtype=dtype)


def test_apply_initializers_refuses_a_wrong_shape_before_changing_anything():
    model = _target()
    before = weights_of(model)
    initializers = {"c1": keras.initializers.Zeros(), "c2": _WrongShape()}
    with pytest.raises(ValueError, match=r"The initializer for 'c2' returned shape \(2, 2\); the kernel's shape is"):
        apply_initializers(model, initializers)
    assert_weights_equal(model, before)
    assert not isinstance(model.get_layer("c1").kernel_initializer, keras.initializers.Zeros)


def test_apply_initializers_is_all_or_nothing_when_an_assignment_fails(monkeypatch):
    model = _target()
    before = weights_of(model)
    old_initializers = [layer.kernel_initializer for layer in model.layers[:3]]
    fail_on_nth_assign(monkeypatch, model.get_layer("c1").kernel, 3)  # c1, c2 assigned, then c3 fails
    with pytest.raises(InjectedFailure):
        apply_initializers(model, {name: keras.initializers.Ones() for name in ("c1", "c2", "c3", "c4")})
    assert_weights_equal(model, before)
    assert [layer.kernel_initializer for layer in model.layers[:3]] == old_initializers


def test_an_initializer_returning_nan_changes_nothing():
    model = keras.Sequential(
        [keras.Input((8, 8, 3)), keras.layers.Conv2D(4, 3, name="c"), keras.layers.Conv2D(4, 3, name="d")]
    )
    before = [keras.ops.convert_to_numpy(w).copy() for w in model.weights]
    with pytest.raises(
        ValueError, match=r"The initializers for \['d'\] returned NaN or Inf values. Nothing was changed."
    ):
        apply_initializers(model, {"c": keras.initializers.Zeros(), "d": keras.initializers.Constant(float("nan"))})
    for w, b in zip(model.weights, before):
        np.testing.assert_array_equal(keras.ops.convert_to_numpy(w), b)
