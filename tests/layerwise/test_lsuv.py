import re
import warnings

import keras
import numpy as np
import pytest

from conftest import (
    InjectedFailure,
    assert_weights_equal,
    fail_on_nth_assign,
    pre_activation,
    pre_activation_variance,
    to_numpy,
    weights_of,
)
from keras_corrinit import CorrelatedHeNormal, lsuv_initialize

RNG = np.random.default_rng(0)
X = RNG.normal(size=(32, 16, 16, 3)).astype("float32")
X_FRESH = RNG.normal(size=(32, 16, 16, 3)).astype("float32")


def _sequential():
    return keras.Sequential(
        [
            keras.Input((16, 16, 3)),
            keras.layers.Conv2D(16, 3, activation="relu", name="c1"),
            keras.layers.SeparableConv2D(16, 3, name="sep"),
            keras.layers.ReLU(),
            keras.layers.DepthwiseConv2D(3, activation="relu", name="dw"),
            keras.layers.Flatten(),
            keras.layers.Dense(32, activation="relu", name="d1"),
            keras.layers.Dense(10, name="d2"),
        ]
    )


def _residual():
    inputs = keras.Input((16, 16, 3))
    x = keras.layers.Conv2D(16, 3, padding="same", name="stem")(inputs)
    x = keras.layers.BatchNormalization()(x)
    x = keras.layers.ReLU()(x)
    y = keras.layers.Conv2D(16, 3, padding="same", name="branch")(x)
    y = keras.layers.BatchNormalization()(y)
    x = keras.layers.ReLU()(keras.layers.Add()([x, y]))
    x = keras.layers.GlobalAveragePooling2D()(x)
    return keras.Model(inputs, keras.layers.Dense(10, name="head")(x))


_output_variance = pre_activation_variance  # LSUV's output: before the layer's fused activation


@pytest.mark.slow
@pytest.mark.parametrize("build", [_sequential, _residual])
def test_every_layer_reaches_unit_variance(build):
    model = build()
    tol = 0.1
    report = lsuv_initialize(model, X, tol=tol, verbose=0)
    names = [e.name for e in report]
    expected = ["c1", "sep", "dw", "d1", "d2"] if build is _sequential else ["stem", "branch", "head"]
    assert names == expected
    for entry in report:
        assert entry.converged
        measured = _output_variance(model, entry.name, X)
        assert abs(measured - 1) < tol, (entry.name, measured)
        assert measured == pytest.approx(entry.final_variance, rel=1e-4)
        # a fresh batch of the same distribution: 32 * positions samples, close
        assert abs(_output_variance(model, entry.name, X_FRESH) - 1) < 0.3
    # one forward pass; only non-homogeneous layers (none here) cost extra calls
    assert report.layer_calls == 0 and report.forward_pass_equivalents == 1.0


def test_orthonormal_start_is_orthonormal_up_to_scale():
    model = _sequential()
    lsuv_initialize(model, X, verbose=0, seed=1)
    w = to_numpy(model.get_layer("c1").kernel).reshape(-1, 16)  # (27, 16): orthogonal columns
    gram = w.T @ w
    scale = np.mean(np.diag(gram))
    np.testing.assert_allclose(gram / scale, np.eye(16), atol=1e-5)
    w = to_numpy(model.get_layer("d1").kernel)  # (1024, 32)
    gram = w.T @ w
    np.testing.assert_allclose(gram / np.mean(np.diag(gram)), np.eye(32), atol=1e-5)


def test_orthogonal_false_keeps_correlated_start_and_only_scales():
    init = CorrelatedHeNormal(seed=3)
    model = keras.Sequential([keras.Input((16, 16, 3)), keras.layers.Conv2D(64, 3, kernel_initializer=init, name="c")])
    before = to_numpy(model.get_layer("c").kernel)
    report = lsuv_initialize(model, X, orthogonal=False, verbose=0)
    after = to_numpy(model.get_layer("c").kernel)
    ratio = after / before
    np.testing.assert_allclose(ratio, ratio.flat[0], rtol=1e-5)  # one common factor
    assert report["c"].converged and report["c"].iterations >= 1


def test_center_bias_gives_exact_zero_mean_and_unit_variance():
    model = keras.Sequential([keras.Input((16, 16, 3)), keras.layers.Conv2D(8, 3, name="c")])
    shifted = X + 3.0  # inputs with a mean give outputs with a channel mean
    report = lsuv_initialize(model, shifted, center_bias=True, verbose=0)
    out = to_numpy(model(shifted)).astype(np.float64)
    # Exact up to float32 rounding: the bias cancels channel means of size
    # |bias|, each output carrying about 2^-24 |bias| of rounding per
    # operation of the 27-term sum; 64 unit roundoffs bound it.
    atol = 64 * 2.0**-24 * float(np.abs(to_numpy(model.get_layer("c").bias)).max())
    np.testing.assert_allclose(out.mean(axis=(0, 1, 2)), 0.0, atol=atol)
    assert out.var() == pytest.approx(1.0, rel=1e-5)  # exact: centred first, then scaled together
    assert report["c"].iterations == 1
    kept = keras.Sequential([keras.Input((16, 16, 3)), keras.layers.Conv2D(8, 3, name="c")])
    lsuv_initialize(kept, shifted, verbose=0)
    np.testing.assert_array_equal(to_numpy(kept.get_layer("c").bias), 0.0)


def test_a_dead_layer_is_reverted_with_a_warning_that_names_it():
    model = keras.Sequential(
        [
            keras.Input((16, 16, 3)),
            keras.layers.Conv2D(
                8, 3, activation="relu", bias_initializer=keras.initializers.Constant(-100.0), name="dead"
            ),
            keras.layers.Conv2D(8, 3, name="after"),
        ]
    )
    before = to_numpy(model.get_layer("after").kernel)
    with pytest.warns(UserWarning) as caught:
        report = lsuv_initialize(model, X, orthogonal=False, verbose=0)
    # "dead" itself is fine before its ReLU; everything it passes on is 0
    assert report["dead"].converged
    (message,) = [str(w.message) for w in caught if "did not converge" in str(w.message)]
    assert message == (
        "LSUV did not converge for layer 'after': its output is constant (dead units, e.g. a ReLU with no "
        "active input, or a zero kernel). Its weights were reverted to their scale before LSUV; check its "
        "inputs and its bias."
    )
    assert not report["after"].converged and report["after"].final_variance == 0.0
    np.testing.assert_array_equal(to_numpy(model.get_layer("after").kernel), before)


@pytest.mark.parametrize("activation", ["softmax", "sigmoid", "tanh"])
def test_bounded_activations_are_scaled_before_the_activation_never_saturated(activation):
    # Measured after the activation, no scale reaches variance 1 and LSUV
    # used to blow the kernel up by 1e5 or more; before it, one exact step.
    model = keras.Sequential(
        [
            keras.Input((16, 16, 3)),
            keras.layers.Conv2D(8, 3, activation="relu", name="c"),
            keras.layers.Flatten(),
            keras.layers.Dense(10, activation=activation, name="bounded"),
        ]
    )
    report = lsuv_initialize(model, X, verbose=0)
    assert report["bounded"].converged and report["bounded"].iterations == 1
    assert pre_activation_variance(model, "bounded", X) == pytest.approx(1.0, rel=1e-4)
    output = to_numpy(model(X))
    if activation == "softmax":
        assert output.max() < 0.99  # far from one-hot
    else:  # saturated: within 1% of the activation's bounds; under 1% of unit normal inputs get there for tanh
        low, high = (0.0, 1.0) if activation == "sigmoid" else (-1.0, 1.0)
        saturated = np.mean((output < low + 0.01 * (high - low)) | (output > high - 0.01 * (high - low)))
        assert saturated < 0.05


def test_a_factor_beyond_the_bound_is_never_kept():
    # Inputs of 1e-4: unit variance would need a kernel thousands of times He's scale.
    model = keras.Sequential([keras.Input((16, 16, 3)), keras.layers.Conv2D(8, 3, name="tiny_input")])
    before = to_numpy(model.get_layer("tiny_input").kernel)
    with pytest.warns(UserWarning) as caught:
        report = lsuv_initialize(model, X * 1e-4, orthogonal=False, verbose=0)
    (message,) = [str(w.message) for w in caught if "did not converge" in str(w.message)]
    match = re.fullmatch(
        r"LSUV did not converge for layer 'tiny_input': reaching the target would make its kernel "
        r"([0-9.e+]+) times its He-normal scale, outside \[0.0001, 100\]\. Its weights were reverted to their "
        r"scale before LSUV; check its inputs and its bias\.",
        message,
    )
    assert match, message
    assert float(match.group(1)) > 1e3
    assert not report["tiny_input"].converged
    np.testing.assert_array_equal(to_numpy(model.get_layer("tiny_input").kernel), before)


def test_small_batch_warns():
    with pytest.warns(UserWarning, match="batch of 8 samples.*at least 16"):
        lsuv_initialize(_sequential(), X[:8], verbose=0)


class _Subclassed(keras.Model):
    def __init__(self):
        super().__init__()
        self.conv = keras.layers.Conv2D(8, 3, activation="relu", name="conv")
        self.shared = keras.layers.Conv2D(8, 3, padding="same", name="shared")
        self.head = keras.layers.Dense(4, name="head")

    def call(self, x):
        h = self.shared(self.shared(self.conv(x)))  # one layer called twice
        return self.head(keras.ops.mean(h, axis=(1, 2)))


def test_subclassed_model_with_a_shared_layer():
    net = _Subclassed()
    report = lsuv_initialize(net, X, verbose=0)
    assert [e.name for e in report] == ["conv", "shared", "head"]  # shared: once, at its first call
    assert abs(float(np.var(pre_activation(net.conv, X))) - 1) < 0.1
    h = net.conv(X)
    assert abs(float(np.var(to_numpy(net.shared(h)))) - 1) < 0.1  # linear
    assert "call" not in net.shared.__dict__  # the interception is undone


def _prefix_lsuv(model, x, tol=0.1, max_iter=10, seed=None):
    """The previous method: each layer's input from a prefix model, then iterate."""
    generator = keras.random.SeedGenerator(seed)
    layers = [layer for layer in model.layers if isinstance(layer, (keras.layers.Conv2D, keras.layers.Dense))]
    for layer in layers:
        layer.kernel.assign(keras.initializers.Orthogonal(seed=generator)(tuple(layer.kernel.shape)))
    statistics = [(v, to_numpy(v)) for v in model.non_trainable_weights]
    for layer in layers:
        # what training sees: batch norm by the batch's statistics (its moving ones put back after)
        layer_input = keras.Model(model.inputs, layer.input)(x, training=True)
        for variable, value in statistics:
            variable.assign(value)
        for _ in range(max_iter):
            variance = float(np.var(pre_activation(layer, layer_input)))
            if abs(variance - 1) < tol:
                break
            layer.kernel.assign(layer.kernel / np.sqrt(variance))


def test_same_result_as_the_prefix_method():
    one_pass, prefix = _residual(), _residual()
    prefix.set_weights(one_pass.get_weights())
    lsuv_initialize(one_pass, X, verbose=0, seed=7)
    _prefix_lsuv(prefix, X, tol=1e-6, seed=7)  # iterated to the exact step one_pass takes
    for a, b in zip(one_pass.weights, prefix.weights):
        np.testing.assert_allclose(to_numpy(a), to_numpy(b), rtol=1e-4, atol=1e-6)


def test_batch_norm_is_measured_as_training_sees_it_and_its_statistics_are_untouched():
    model = _residual()
    x = X * 20.0 + 50.0  # far from what moving statistics (0, 1) assume
    lsuv_initialize(model, x, verbose=0, seed=0)
    for layer in model.layers:
        if isinstance(layer, keras.layers.BatchNormalization):
            np.testing.assert_array_equal(to_numpy(layer.moving_mean), 0.0)
            np.testing.assert_array_equal(to_numpy(layer.moving_variance), 1.0)
    # the head's input as training computes it (batch statistics) gives it unit pre-activation variance
    head = model.get_layer("head")
    features = keras.Model(model.inputs, head.input)(x, training=True)
    assert abs(float(np.var(pre_activation(head, features))) - 1) < 0.1
    # (that the measurement is not in inference mode, where batch norm is the identity at the start, is
    # checked by `test_same_result_as_the_prefix_method`, whose reference measures in training mode)


def test_fresh_batch_per_iteration():
    model = keras.Sequential([keras.Input((16, 16, 3)), keras.layers.Conv2D(8, 3, name="c")])
    # batch 2 is batch 1 times 1.02: after the rescaling measured on batch 1,
    # the next iteration measures batch 2, with variance 1.02^2.
    data = np.concatenate([X[:16], 1.02 * X[:16]])
    report = lsuv_initialize(model, data, batches=2, batch_size=16, orthogonal=False, verbose=0)
    assert report["c"].iterations == 1 and report["c"].converged
    assert report["c"].final_variance == pytest.approx(1.02**2, rel=1e-4)
    # a linear layer: every measurement is the cached output times the factor
    assert report.layer_calls == 0 and report.forward_pass_equivalents == 1.0
    # a bias makes it non-homogeneous: the next batch is called again
    biased = keras.Sequential(
        [
            keras.Input((16, 16, 3)),
            keras.layers.Conv2D(8, 3, bias_initializer=keras.initializers.Constant(0.01), name="c"),
        ]
    )
    report = lsuv_initialize(biased, data, batches=2, batch_size=16, orthogonal=False, verbose=0)
    assert report["c"].iterations == 1
    assert report.layer_calls == 2  # batch 2 after the rescaling, then the final output
    assert report.forward_pass_equivalents == pytest.approx(1 + 0.5 + 1)


def test_include_exclude_and_target_variance():
    model = _sequential()
    before = {
        layer.name: to_numpy(layer.kernel if hasattr(layer, "kernel") else layer.pointwise_kernel)
        for layer in model.layers
        if layer.name in ("c1", "sep", "d2")
    }
    report = lsuv_initialize(model, X, include=["^c", r"^d\d"], exclude="d2", target_variance=2.0, verbose=0)
    assert [e.name for e in report] == ["c1", "d1"]
    np.testing.assert_array_equal(to_numpy(model.get_layer("d2").kernel), before["d2"])
    np.testing.assert_array_equal(to_numpy(model.get_layer("sep").pointwise_kernel), before["sep"])
    for entry in report:
        assert abs(entry.final_variance - 2.0) < 0.2
    with pytest.raises(TypeError, match="`include` must be None, a regular expression or a list"):
        lsuv_initialize(model, X, include=3, verbose=0)


class _WithStrayLayer(keras.Model):
    """A subclassed model whose `call` never reaches its Dense layer `stray` (built or not)."""

    def __init__(self, build_stray):
        super().__init__()
        self.used = keras.layers.Conv2D(4, 3, name="used")
        self.stray = keras.layers.Dense(3, name="stray")
        self.build_stray = build_stray

    def build(self, input_shape):
        if self.build_stray:
            self.stray.build((None, 5))

    def call(self, x):
        return self.used(x)


def test_unreached_layers_are_named_and_left_as_they_were():
    model = _WithStrayLayer(build_stray=True)
    model(X[:1])
    stray = to_numpy(model.stray.kernel).copy()
    with pytest.warns(UserWarning, match=r"never called the layers \['stray'\]; they were left as they were"):
        report = lsuv_initialize(model, X, verbose=0)
    assert [e.name for e in report] == ["used"]
    assert report.skipped == {"stray": "never called by the forward pass"}
    np.testing.assert_array_equal(to_numpy(model.stray.kernel), stray)


def test_an_unbuilt_layer_is_skipped_with_a_warning_not_an_error():
    model = _WithStrayLayer(build_stray=False)
    with pytest.warns(UserWarning, match=r"never called the layers \['stray'\]"):
        report = lsuv_initialize(model, X, verbose=0)
    assert [e.name for e in report] == ["used"]
    assert report.skipped == {"stray": "never called by the forward pass"}
    assert not model.stray.built


def _with_frozen_backbone():
    backbone = keras.Sequential(
        [keras.Input((16, 16, 3)), keras.layers.Conv2D(8, 3, name="b1"), keras.layers.Conv2D(8, 3, name="b2")],
        name="backbone",
    )
    model = keras.Sequential(
        [keras.Input((16, 16, 3)), backbone, keras.layers.Flatten(), keras.layers.Dense(4, name="head")]
    )
    backbone.trainable = False
    return model, backbone


def test_frozen_layers_are_left_alone_and_reported():
    model, backbone = _with_frozen_backbone()
    before = [to_numpy(w).copy() for w in backbone.weights]
    report = lsuv_initialize(model, X, verbose=0)
    assert [e.name for e in report] == ["head"]
    assert report.skipped == {"b1": "frozen (trainable=False)", "b2": "frozen (trainable=False)"}
    for w, b in zip(backbone.weights, before):
        np.testing.assert_array_equal(to_numpy(w), b)


def test_include_frozen_initializes_frozen_layers_too():
    model, _ = _with_frozen_backbone()
    report = lsuv_initialize(model, X, include_frozen=True, verbose=0)
    assert [e.name for e in report] == ["b1", "b2", "head"]
    assert report.skipped == {}


def test_a_model_with_nothing_to_initialize_warns():
    model, backbone = _with_frozen_backbone()
    model.trainable = False
    before = weights_of(model)
    with pytest.warns(UserWarning, match="LSUV changed nothing: the model has no layer to initialize"):
        report = lsuv_initialize(model, X, verbose=0)
    assert len(report) == 0 and set(report.skipped) == {"b1", "b2", "head"}
    assert_weights_equal(model, before)


def test_include_that_matches_nothing_warns():
    with pytest.warns(UserWarning, match="LSUV changed nothing: no layer matches `include`/`exclude`"):
        report = lsuv_initialize(_sequential(), X, include="^nothing", verbose=0)
    assert len(report) == 0


class _Raising(keras.layers.Layer):
    """Identity, until `armed`: then its call fails (a layer half-way through the pass)."""

    armed = False

    def call(self, x):
        if self.armed:
            raise InjectedFailure("a layer in the middle of the forward pass fails")
        return x


def test_a_failure_half_way_through_the_pass_leaves_every_weight_as_before():
    raising = _Raising()
    model = keras.Sequential(
        [
            keras.Input((16, 16, 3)),
            keras.layers.Conv2D(8, 3, name="c1", bias_initializer="ones"),
            raising,
            keras.layers.Conv2D(8, 3, name="c2"),
        ]
    )
    before = weights_of(model)
    raising.armed = True
    with pytest.raises(InjectedFailure):
        lsuv_initialize(model, X, center_bias=True, verbose=0)  # c1's kernel and bias are changed first
    assert_weights_equal(model, before)
    assert "call" not in model.get_layer("c1").__dict__  # the interception is undone


def test_a_failing_assignment_leaves_every_weight_as_before(monkeypatch):
    model = _residual()
    before = weights_of(model)
    calls = fail_on_nth_assign(monkeypatch, model.get_layer("stem").kernel, 4)
    with pytest.raises(InjectedFailure):
        lsuv_initialize(model, X, verbose=0)
    assert calls["count"] > 4  # the restore assigned after the failure
    assert_weights_equal(model, before)


@pytest.mark.parametrize(
    "make_data, error, message",
    [
        (lambda: {"images": X}, ValueError, r"`data` does not fit the model 'sequential.*': calling it on inputs"),
        (
            lambda: __import__("tensorflow").data.Dataset.from_tensor_slices(X),
            ValueError,
            r"`data` does not fit the model .*: calling it on inputs of shape \(16, 16, 3\)",
        ),
        (lambda: np.full((32, 16, 16, 3), np.nan, "float32"), ValueError, "`data` contains NaN or Inf"),
        (lambda: RNG.normal(size=(32, 8, 8, 3)).astype("float32"), ValueError, "`data` does not fit the model"),
        (lambda: [[1, 2], [3]], TypeError, "`data` is a list that is neither an array of numbers nor a list of arrays"),
    ],
    ids=["dict", "unbatched-tf.data", "nan", "wrong-shape", "ragged-list"],
)
def test_data_that_does_not_fit_gets_a_short_clear_error(make_data, error, message):
    model = _sequential()
    before = weights_of(model)
    with pytest.raises(error, match=message) as raised:
        lsuv_initialize(model, make_data(), verbose=0)
    assert len(str(raised.value)) < 1500  # shapes, never the array
    assert_weights_equal(model, before)


def test_a_nested_list_of_numbers_is_one_input():
    model = keras.Sequential([keras.Input((4,)), keras.layers.Dense(3, name="d")])
    data = RNG.normal(size=(32, 4)).tolist()
    report = lsuv_initialize(model, data, verbose=0)
    assert report["d"].converged


class _Batches(keras.utils.PyDataset):
    def __len__(self):
        return 2

    def __getitem__(self, i):
        return X[16 * i : 16 * (i + 1)] * 0 + X[:16], np.zeros(16)


@pytest.mark.parametrize(
    "make_data",
    [
        lambda: X,
        lambda: (X, np.zeros(32)),
        lambda: _Batches(),
        lambda: __import__("tensorflow").data.Dataset.from_tensor_slices((X, np.zeros(32))).batch(16),
    ],
    ids=["array", "tuple", "pydataset", "tf.data"],
)
def test_data_types_give_the_same_result(make_data):
    model = _sequential()
    lsuv_initialize(model, X[:16], verbose=0, seed=5)
    expected = [to_numpy(w) for w in model.weights]
    model = _sequential()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        lsuv_initialize(model, make_data(), batch_size=16, verbose=0, seed=5)
    for w, e in zip(model.weights, expected):
        np.testing.assert_allclose(to_numpy(w), e, rtol=1e-5, atol=1e-6)


def test_numpy_integers_are_ints():
    report = lsuv_initialize(_sequential(), X, batch_size=np.int64(32), max_iter=np.int32(5), verbose=0)
    assert len(report) == 5


@pytest.mark.parametrize(
    "kwargs, error, message",
    [
        ({"tol": 0}, ValueError, r"`tol` must be a number in \(0, 1\)"),
        ({"max_iter": 0}, ValueError, "`max_iter` must be an int >= 1"),
        ({"max_iter": 2.5}, TypeError, "`max_iter` must be an int; received 2.5"),
        ({"batch_size": 0}, ValueError, "`batch_size` must be an int >= 1; received 0"),
        ({"batch_size": -5}, ValueError, "`batch_size` must be an int >= 1; received -5"),
        ({"batch_size": 2.5}, TypeError, "`batch_size` must be an int; received 2.5"),
        ({"batches": 0}, ValueError, "`batches` must be an int >= 1; received 0"),
        ({"include_frozen": "yes"}, TypeError, "`include_frozen` must be a bool"),
        ({"data": "images"}, TypeError, "`data` must be an array"),
        ({"model": "resnet"}, TypeError, "`model` must be a keras.Model"),
    ],
)
def test_bad_arguments(kwargs, error, message):
    args = {"model": _sequential(), "data": X, "verbose": 0, **kwargs}
    with pytest.raises(error, match=message):
        lsuv_initialize(**args)


@pytest.mark.slow
def test_resnet50_nested_in_a_model():
    resnet = keras.applications.ResNet50(weights=None, include_top=False, input_shape=(32, 32, 3))
    inputs = keras.Input((32, 32, 3))
    outputs = keras.layers.Dense(10, name="head")(keras.layers.GlobalAveragePooling2D()(resnet(inputs)))
    model = keras.Model(inputs, outputs)
    x = RNG.normal(size=(16, 32, 32, 3)).astype("float32")
    report = lsuv_initialize(model, x, verbose=0)
    assert len(report) == 53 + 1  # ResNet50's convolutions, then the head
    assert report.layers[-1].name == "head"
    assert all(e.converged for e in report)
    assert report.forward_pass_equivalents <= 2.0
    # measured as training runs it (batch norm by batch statistics; its moving statistics put back)
    probe = keras.Model(resnet.inputs[0], resnet.get_layer("conv5_block3_3_conv").output)
    saved = [(v, to_numpy(v)) for v in model.non_trainable_weights]
    assert abs(float(np.var(to_numpy(probe(x, training=True)))) - 1) < 0.1
    for variable, value in saved:
        variable.assign(value)
