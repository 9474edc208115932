"""keras_corrinit.experiments: compare, Comparison, the arms, the store, executors."""

import concurrent.futures
import dataclasses
import json
import math
import multiprocessing
import os
import warnings

import keras
import numpy as np
import pytest
from scipy import stats

import keras_corrinit
from conftest import pre_activation_variance
from keras_corrinit import CorrelatedHeNormal, SpatialCorrelation
from keras_corrinit.experiments import BUILTIN_ARMS, Comparison, compare
from keras_corrinit.experiments._arms import resolve_arms
from keras_corrinit.experiments._statistics import paired_difference, t_quantile

LOSS = keras.losses.SparseCategoricalCrossentropy(from_logits=True)


def make_data():
    """64 + 32 8x8 images; the class is the sign of a smooth pattern's projection."""
    rng = np.random.default_rng(0)
    x = rng.normal(size=(96, 8, 8, 1)).astype("float32")
    pattern = np.outer(np.hanning(8), np.hanning(8))[None, :, :, None]
    y = ((x * pattern).sum(axis=(1, 2, 3)) > 0).astype("int32")
    return (x[:64], y[:64]), (x[64:], y[64:])


def functional(kernel_initializer, seed):
    inputs = keras.Input((8, 8, 1))
    h = keras.layers.Conv2D(4, 3, activation="relu", kernel_initializer=kernel_initializer)(inputs)
    h = keras.layers.Conv2D(4, 3, activation="relu", kernel_initializer=kernel_initializer)(h)
    outputs = keras.layers.Dense(2, kernel_initializer=kernel_initializer)(keras.layers.GlobalAveragePooling2D()(h))
    model = keras.Model(inputs, outputs)
    model.compile(keras.optimizers.SGD(0.1), LOSS, metrics=["accuracy"])
    return model


class Subclassed(keras.Model):
    def __init__(self, kernel_initializer):
        super().__init__()
        self.conv = keras.layers.Conv2D(4, 3, activation="relu", kernel_initializer=kernel_initializer)
        self.pool = keras.layers.GlobalAveragePooling2D()
        self.head = keras.layers.Dense(2, kernel_initializer=kernel_initializer)

    def call(self, x):
        return self.head(self.pool(self.conv(x)))


def subclassed(kernel_initializer, seed):
    model = Subclassed(kernel_initializer)
    model.compile(keras.optimizers.SGD(0.1), LOSS, metrics=["accuracy"])
    return model


BUILDS = []


def counting(kernel_initializer, seed):
    BUILDS.append(seed)
    return functional(kernel_initializer, seed)


def run_rows(result):
    return [(r["arm"], r["seed"], r["final"], r["curve"], r["key"]) for r in result.rows]


# --------------------------------------------------------------- statistics
@pytest.mark.parametrize("df", [1, 2, 3, 4, 7, 30, 200])
def test_t_quantile_matches_scipy(df):
    for p in (0.025, 0.6, 0.975, 0.999):
        assert t_quantile(p, df) == pytest.approx(stats.t.ppf(p, df), rel=1e-9, abs=1e-9)


def test_paired_difference_by_hand():
    arm = {0: 0.80, 1: 0.70, 2: 0.90, 3: 0.75, 9: 0.5}
    base = {0: 0.78, 1: 0.71, 2: 0.85, 3: 0.70}
    d = np.array([0.02, -0.01, 0.05, 0.05])  # seed 9 has no pair
    half = stats.t.ppf(0.975, 3) * d.std(ddof=1) / 2
    out = paired_difference(arm, base)
    assert out["n"] == 4
    assert out["mean"] == pytest.approx(d.mean(), abs=1e-15)
    assert (out["low"], out["high"]) == pytest.approx((d.mean() - half, d.mean() + half), abs=1e-12)
    assert math.isnan(paired_difference({0: 1.0}, {0: 0.5})["low"])


# ------------------------------------------------------------------ compare
@pytest.mark.slow
def test_functional_model_on_arrays_with_controls_and_statistics():
    result = compare(
        functional, make_data(), ["correlated", "correlated_weight"], seeds=2, epochs=1, baseline="he", verbose=0
    )
    assert result.arms() == ["he", "correlated", "correlated~var", "correlated_weight", "correlated_weight~sum"]
    assert result.controls == {"correlated": "correlated~var", "correlated_weight": "correlated_weight~sum"}
    assert [r["seed"] for r in result.rows] == [0, 1] * 5
    for row in result.rows:
        assert len(row["curve"]) == 1 and row["final"] == row["curve"][-1]
        assert len(row["sign_change"]) == 1 and 0 < row["sign_change"][0] < 1
        assert len(row["epoch_seconds"]) == 1
    # The result's statistics are the paired ones, computed by hand.
    arm = {r["seed"]: r["final"] for r in result.rows if r["arm"] == "correlated"}
    base = {r["seed"]: r["final"] for r in result.rows if r["arm"] == "he"}
    d = np.array([arm[s] - base[s] for s in range(2)])
    half = stats.t.ppf(0.975, 1) * d.std(ddof=1) / math.sqrt(2)
    got = result.difference("correlated")
    assert (got["mean"], got["low"], got["high"]) == pytest.approx((d.mean(), d.mean() - half, d.mean() + half))
    assert set(result.verdicts()) == {"correlated", "correlated_weight"}
    text = result.to_markdown()
    assert "| correlated~var |" in text and "Correlation or scale:" in text


@pytest.mark.slow
def test_the_same_seed_gives_the_same_run_and_the_arms_differ_in_weights_only():
    data = make_data()
    first = compare(functional, data, ["correlated"], seeds=[4], epochs=1, controls=False, verbose=0)
    again = compare(functional, data, ["correlated"], seeds=[4], epochs=1, controls=False, verbose=0)
    assert run_rows(first) == run_rows(again)


@pytest.mark.slow
def test_layers_sharing_the_arms_initializer_get_different_weights():
    captured = {}

    def capture(model, train, seed):
        captured["kernels"] = [keras.ops.convert_to_numpy(layer.kernel) for layer in model.layers[1:3]]

    compare(functional, make_data(), {"he_capture": capture}, seeds=1, epochs=1, baseline="he", verbose=0)
    a, b = captured["kernels"]
    assert a.shape == (3, 3, 1, 4) and b.shape == (3, 3, 4, 4)

    def recording(init, seed):
        captured["init"] = init
        return functional(init, seed)

    compare(recording, make_data(), ["default"], seeds=1, epochs=1, verbose=0)
    first, second = captured["init"]((3, 3, 4, 4)), captured["init"]((3, 3, 4, 4))
    assert not np.array_equal(keras.ops.convert_to_numpy(first), keras.ops.convert_to_numpy(second))


@pytest.mark.slow
def test_subclassed_model_on_tf_data_with_a_users_own_arms():
    import tensorflow as tf

    (x, y), (xt, yt) = make_data()
    data = (
        tf.data.Dataset.from_tensor_slices((x, y)).batch(16),
        tf.data.Dataset.from_tensor_slices((xt, yt)).batch(16),
    )
    mine = CorrelatedHeNormal(SpatialCorrelation.exponential_decay(0.6), seed=1)
    result = compare(
        subclassed,
        data,
        {"mine": mine, "glorot": "glorot_uniform"},
        seeds=2,
        baseline="he",
        epochs=1,
        settings={"data": "make_data, batches of 16"},
        verbose=0,
    )
    assert result.arms() == ["he", "mine", "mine~var", "glorot"]
    assert result.rows[0]["data"].startswith("_TensorSliceDataset") or "not hashed" in result.rows[0]["data"]
    assert all(r["settings"] == {"data": "make_data, batches of 16"} for r in result.rows)


@pytest.mark.slow
def test_lsuv_arm_changes_the_model_after_it_is_built():
    result = compare(functional, make_data(), ["lsuv"], seeds=1, epochs=1, baseline="he", verbose=0)
    assert result.arms() == ["he", "lsuv"]
    # Its step after the build: LSUV on the first 32 training images, to unit pre-activation variance (tol 0.1).
    (arm,) = [a for a in resolve_arms(["lsuv"], "he", controls=False) if a.name == "lsuv"]
    model = functional(arm.make_initializer(0), 0)
    train = make_data()[0]
    arm.prepare(model, train, 0)
    assert abs(pre_activation_variance(model, model.layers[1].name, train[0][:32]) - 1.0) <= 0.1 + 1e-6


def _kernels(model):
    return [keras.ops.convert_to_numpy(layer.kernel) for layer in model.layers if hasattr(layer, "kernel")]


@pytest.mark.slow
def test_default_arm_is_the_model_as_written_and_initialize_starts_from_it():
    # No kernel_initializer default in the builder: Keras's own (glorot_uniform), one draw per layer.
    default, initialized = resolve_arms(["default", "initialize"], "default", controls=False)
    assert default.initializer["class_name"] == "GlorotUniform" and default.prepare is None
    assert initialized.initializer == default.initializer and initialized.prepare is not None
    kernels = _kernels(functional(default.make_initializer(3), 3))
    limit = math.sqrt(6 / (9 * 1 + 4))  # Glorot's uniform limit of the first 3x3x1x4 kernel
    assert np.abs(kernels[0]).max() <= limit and np.abs(kernels[0]).max() > 0.5 * limit
    assert not np.array_equal(kernels[0][..., :1, :], kernels[1][..., :1, :])  # each layer its own draw
    assert all(np.array_equal(a, b) for a, b in zip(kernels, _kernels(functional(default.make_initializer(3), 3))))
    # `initialize` on the training data: the model as written, then its whitened first convolution; the
    # head is the model as written's (head="keep", initialize's default)
    model = functional(initialized.make_initializer(3), 3)
    initialized.prepare(model, make_data()[0], 3)
    after = _kernels(model)
    assert np.array_equal(after[-1], kernels[-1]) and not np.array_equal(after[0], kernels[0])


def _zero_first_kernel(model, train, seed):
    model.layers[1].kernel.assign(keras.ops.zeros(model.layers[1].kernel.shape))


def test_a_pair_arm_starts_from_what_it_names_then_calls_its_callable():
    default, paired, from_he, plain = resolve_arms(
        {
            "default": None,
            "paired": ("default", _zero_first_kernel),
            "from_he": ("he_normal", _zero_first_kernel),
            "plain": _zero_first_kernel,
        },
        "default",
        controls=False,
    )
    # ("default", f): the model as written (as `initialize` starts), then f; its identity names both
    assert paired.initializer == default.initializer and paired.prepare is _zero_first_kernel
    assert paired.identity == f"{default.identity} then {plain.identity}"
    assert from_he.initializer["class_name"] == "HeNormal" and from_he.identity.endswith(f" then {plain.identity}")
    assert plain.initializer is None  # a bare callable: the He-built model, as before
    builder_default = resolve_arms({"paired": ("default", _zero_first_kernel)}, "paired", False, as_written="ones")
    assert builder_default[0].initializer == keras.saving.serialize_keras_object(keras.initializers.get("ones"))
    with pytest.raises(TypeError, match=r"Arm 'bad': in a pair \(start, callable\) the second item must be a callable"):
        resolve_arms({"bad": ("default", "he_normal")}, "bad", controls=False)
    with pytest.raises(TypeError, match=r"Arm 'bad': in a pair \(start, callable\) the first item must be 'default'"):
        resolve_arms({"bad": (_zero_first_kernel, _zero_first_kernel)}, "bad", controls=False)


def test_anyinit_arm_redraws_the_model_as_written_and_needs_its_extra(monkeypatch):
    import importlib.util

    import anyinit

    (arm,) = [a for a in resolve_arms(["anyinit"], "anyinit", controls=False)]
    assert arm.identity.endswith(f" anyinit {anyinit.__version__}")  # its version is part of every run's key
    as_written = _kernels(functional(arm.make_initializer(2), 2))
    model = functional(arm.make_initializer(2), 2)
    (x, _), _ = make_data()
    arm.prepare(model, make_data()[0], 2)
    # What AnyInit's own call gives from the same model and samples (the first 256: all 64 here).
    reference = functional(arm.make_initializer(2), 2)
    anyinit.initialize(reference, "empirical", x, seed=2)
    assert all(np.array_equal(a, b) for a, b in zip(_kernels(model), _kernels(reference)))
    assert not np.array_equal(_kernels(model)[0], as_written[0])
    real = importlib.util.find_spec
    monkeypatch.setattr(importlib.util, "find_spec", lambda name, *a: None if name == "anyinit" else real(name, *a))
    with pytest.raises(ImportError, match=r"AnyInit .* not installed: pip install \"keras_corrinit\[anyinit\]\""):
        resolve_arms(["anyinit"], "default", controls=False)


@pytest.mark.slow
def test_default_arm_takes_the_builders_own_default():
    def with_default(kernel_initializer="he_uniform", seed=0):
        return functional(kernel_initializer, seed)

    def with_a_wrong_default(kernel_initializer=3, seed=0):
        return functional(kernel_initializer, seed)

    result = compare(with_default, make_data(), ["default", "initialize"], seeds=1, epochs=1, verbose=0)
    assert result.rows[1]["arm_identity"] == result.rows[0]["arm_identity"] + " then initialize"
    assert "HeUniform" in result.rows[0]["arm_identity"]
    with pytest.raises(ValueError, match="`build_model`'s first parameter defaults to 3, which is not a Keras"):
        compare(with_a_wrong_default, make_data(), ["default"], seeds=1, epochs=1, verbose=0)


# -------------------------------------------------------------------- store
@pytest.mark.slow
def test_a_store_resumes_and_a_changed_setting_is_a_new_run(tmp_path):
    BUILDS.clear()
    data = make_data()
    # Each call builds the model once per seed to read its identity, then once per run it trains.
    first = compare(counting, data, ["correlated"], seeds=2, epochs=1, controls=False, out=tmp_path, verbose=0)
    assert len(BUILDS) == 2 + 4
    again = compare(counting, data, ["correlated"], seeds=2, epochs=1, controls=False, out=tmp_path, verbose=0)
    assert len(BUILDS) == 6 + 2 and run_rows(again) == run_rows(first)  # nothing trained
    compare(
        counting, data, ["correlated"], seeds=[1], epochs=1, controls=False, out=tmp_path, settings={"lr": 1}, verbose=0
    )
    assert len(BUILDS) == 8 + 1 + 2
    with open(tmp_path / "runs.jsonl") as f:
        assert len(f.readlines()) == 6


@dataclasses.dataclass(frozen=True)
class LearningRateBuilder:
    lr: float

    def __call__(self, kernel_initializer, seed):
        model = functional(kernel_initializer, seed)
        model.compile(keras.optimizers.SGD(self.lr), LOSS, metrics=["accuracy"])
        return model


class ScaledKernels:
    """An arm object with settings (its get_config)."""

    def __init__(self, factor):
        self.factor = factor

    def __call__(self, model, train, seed):
        for layer in model.layers:
            if hasattr(layer, "kernel"):
                layer.kernel.assign(layer.kernel * self.factor)

    def get_config(self):
        return {"factor": self.factor}


@pytest.mark.slow
def test_a_callable_objects_settings_are_part_of_its_key(tmp_path):
    data = make_data()
    run = lambda lr, factor: (
        compare(
            LearningRateBuilder(lr), data, {"scaled": ScaledKernels(factor)}, seeds=1, epochs=1, out=tmp_path, verbose=0
        ).rows
    )
    first, same, other_lr, other_factor = run(0.1, 2.0), run(0.1, 2.0), run(0.01, 2.0), run(0.1, 0.5)
    keys = lambda rows: [r["key"] for r in rows]
    assert keys(first) == keys(same)
    assert not set(keys(first)) & set(keys(other_lr))  # both arms' runs: the builder changed
    assert keys(other_factor)[0] == keys(first)[0] and keys(other_factor)[1] != keys(first)[1]
    assert other_lr[0]["builder"].startswith('test_experiments.LearningRateBuilder{"lr": 0.01} model:')
    assert other_factor[1]["arm_identity"] == 'test_experiments.ScaledKernels{"factor": 0.5}'


@pytest.mark.slow
def test_a_store_of_another_version_or_without_a_column_is_refused(tmp_path):
    compare(functional, make_data(), ["default"], seeds=1, epochs=1, out=tmp_path, verbose=0)
    meta = json.loads((tmp_path / "store.json").read_text())
    (tmp_path / "store.json").write_text(json.dumps({**meta, "package_version": "0.1.0"}))
    message = (
        f"The results store {tmp_path} was written by keras_corrinit 0.1.0 (format 3); this is "
        f"{keras_corrinit.__version__} (format 3). Results of different versions are never mixed"
    )
    with pytest.raises(ValueError, match=message.replace("(", r"\(").replace(")", r"\)")):
        compare(functional, make_data(), ["default"], seeds=1, epochs=1, out=tmp_path, verbose=0)
    meta["columns"].remove("settings")
    (tmp_path / "store.json").write_text(json.dumps(meta))
    with pytest.raises(ValueError, match=r"lacks the columns \['settings'\]"):
        compare(functional, make_data(), ["default"], seeds=1, epochs=1, out=tmp_path, verbose=0)


# ---------------------------------------------------------------- bad input
@pytest.mark.parametrize(
    ("kwargs", "error", "message"),
    [
        ({"arms": "correlated"}, TypeError, "`arms` must be a list of built-in arm names"),
        ({"arms": ["nope"]}, ValueError, r"Unknown arm 'nope'; the registered arms are \["),
        ({"arms": {"x": 3}}, TypeError, "Arm 'x' must be a Keras initializer"),
        ({"arms": {"x": "not_an_init"}}, ValueError, "Arm 'x': 'not_an_init' is not a Keras initializer name"),
        ({"arms": ["he", "he"]}, ValueError, "Arm names must be unique"),
        ({"baseline": "mine"}, ValueError, "`baseline` 'mine' is neither one of the arms"),
        ({"seeds": 0}, ValueError, "`seeds`"),
        ({"seeds": [1, 1]}, ValueError, "`seeds` must hold distinct ints"),
        ({"epochs": 1.5}, TypeError, "`epochs`"),
        ({"settings": {"f": object()}}, TypeError, "`settings` must hold JSON values only"),
        ({"executor": "pool"}, TypeError, "`executor` must be a concurrent.futures.Executor"),
        ({"data": (1, 2, 3)}, ValueError, r"`data` must be `\(train, test\)`"),
        ({"arms": {}}, ValueError, r"`arms` is empty: name at least one arm to compare with the baseline"),
        ({"arms": []}, ValueError, r"`arms` is empty"),
        ({"metric": "val_accuracy"}, ValueError, r"pass metric='accuracy', not 'val_accuracy'"),
        (
            {"data": ((np.full((8, 8, 8, 1), np.nan, "float32"), np.zeros(8)), make_data()[1])},
            ValueError,
            "`data`'s train inputs contain NaN or Inf",
        ),
    ],
)
def test_bad_arguments_are_named(kwargs, error, message):
    arguments = {"build_model": functional, "data": make_data(), "arms": ["default"], "seeds": 1, "epochs": 1} | kwargs
    with pytest.raises(error, match=message):
        compare(**arguments, verbose=0)


@pytest.mark.slow
def test_a_model_without_the_metric_or_uncompiled_is_named():
    def without_metric(init, seed):
        model = keras.Sequential([keras.Input((8, 8, 1)), keras.layers.Flatten(), keras.layers.Dense(2)])
        model.compile("sgd", LOSS)
        return model

    with pytest.raises(ValueError, match=r"The model logs no 'val_accuracy' \(it logs \["):
        compare(without_metric, make_data(), ["default"], seeds=1, epochs=1, verbose=0)
    with pytest.raises(ValueError, match="`build_model` must return a compiled model"):
        compare(
            lambda init, seed: keras.Sequential([keras.layers.Dense(2)]),
            make_data(),
            ["he"],
            seeds=1,
            epochs=1,
            verbose=0,
        )


def test_builtin_arms_are_listed():
    from keras_corrinit.experiments._registry import ARMS, suite_only

    assert BUILTIN_ARMS == tuple(sorted(name for name in ARMS if not suite_only(name)))
    for name in ("anyinit", "correlated", "correlated_weight", "default", "enhanced_gamma", "he", "initialize"):
        assert name in BUILTIN_ARMS
    assert "he_normal" in BUILTIN_ARMS and "keras_he" not in BUILTIN_ARMS  # one name for Keras's He-normal


# ---------------------------------------------------------- result object
def test_epochs_to_target_and_the_plot(tmp_path):
    rows = [
        {
            "arm": "he",
            "seed": s,
            "final": f,
            "curve": c,
            "sign_change": [0.5, 0.4],
            "epoch_seconds": [1.0, 2.0],
            "seconds": 2.5,
        }
        for s, f, c in [(0, 0.6, [0.5, 0.6]), (1, 0.8, [0.7, 0.8])]
    ] + [
        {
            "arm": "x",
            "seed": s,
            "final": c[-1],
            "curve": c,
            "sign_change": [0.5, 0.4],
            "epoch_seconds": [1.5, 3.0],
            "seconds": 4.0,
        }
        for s, c in [(0, [0.75, 0.9]), (1, [0.6, 0.65])]
    ]
    result = Comparison(rows, baseline="he")
    assert result.target() == pytest.approx(0.7)
    e = result.epochs_to_target("x")
    # seconds from the run's start: the 1.0 s before fit (build, the arm's preparation) + 1.5 s of fit
    assert e["per_seed"] == {0: 1, 1: None} and e["mean_epochs"] == 1 and e["mean_seconds"] == 2.5
    assert (e["reached"], e["n"]) == (1, 2)
    assert result.epochs_to_target("he")["per_seed"] == {0: None, 1: 1}
    path = result.plot(str(tmp_path / "curves.png"))
    assert os.path.getsize(path) > 1000
    with pytest.raises(ValueError, match=r"No arm 'y'; the arms are \['he', 'x'\]"):
        result.final("y")


def _budget_rows():
    # (arm, seed, budget) -> final; `default` reaches 0.8 at B=4 (the target: its mean there).
    finals = {
        "default": {1: (0.5, 0.6), 2: (0.7, 0.7), 4: (0.8, 0.8)},
        "fast": {1: (0.7, 0.75), 2: (0.8, 0.82), 4: (0.86, 0.9)},
        "slow": {1: (0.4, 0.5), 2: (0.5, 0.5), 4: (0.6, 0.7)},
    }
    return [
        {"arm": arm, "seed": seed, "epochs": budget, "final": f, "curve": [f], "sign_change": [], "seconds": budget}
        for arm, by_budget in finals.items()
        for seed in (0, 1)
        for budget, pair in by_budget.items()
        for f in [pair[seed]]
    ]


def test_budget_to_target_by_hand_and_its_table(tmp_path):
    result = Comparison(_budget_rows(), baseline="default", budgets=[1, 2, 4])
    assert result.target() == pytest.approx(0.8)
    fast = result.budget_to_target("fast")
    half = stats.t.ppf(0.975, 1) * np.std([0.8, 0.82], ddof=1) / math.sqrt(2)
    assert (fast["budget"], fast["fraction"], fast["seconds"], fast["n"]) == (2, 0.5, 2.0, 2)
    assert (fast["mean"], fast["low"], fast["high"]) == pytest.approx((0.81, 0.81 - half, 0.81 + half))
    assert result.budget_to_target("default")["budget"] == 4 and result.budget_to_target("slow") is None
    assert result.final("fast") == {0: 0.86, 1: 0.9} and result.final("fast", 1) == {0: 0.7, 1: 0.75}
    assert result.difference("fast")["mean"] == pytest.approx(0.08)
    assert result.difference("fast", budget=1)["mean"] == pytest.approx(0.175)
    table = result.to_markdown()
    assert "| arm | B=1 | B=2 | B=4 | difference to default at B=4 | epochs to target |" in table
    assert "| slow | 0.4500 | 0.5000 | 0.6500 |" in table and "| never | - | - | - |" in table
    assert f"| 2 | 0.50 | 0.8100 [{0.81 - half:.4f}, {0.81 + half:.4f}] | 2.0 |" in table
    assert os.path.getsize(result.plot(str(tmp_path / "budgets.png"))) > 1000
    with pytest.raises(ValueError, match=r"No budget 3; the budgets are \[1, 2, 4\]"):
        result.final("fast", 3)
    with pytest.raises(ValueError, match="under the budget protocol use `budget_to_target`"):
        result.epochs_to_target("fast")
    with pytest.raises(ValueError, match=r"`budget_to_target` needs runs under the budget protocol"):
        Comparison(_budget_rows()[:3], baseline="default").budget_to_target("default")


@pytest.mark.slow
def test_budgets_train_each_budget_annealed_to_zero():
    from keras_corrinit.experiments._runs import decay_to_zero

    result = compare(functional, make_data(), ["he"], seeds=2, budgets=[2, 1], controls=False, verbose=0)
    assert result.budgets == [1, 2]
    assert [(r["arm"], r["seed"], r["epochs"], r["schedule"]) for r in result.rows] == [
        (arm, seed, budget, "linear-to-zero") for arm in ("default", "he") for seed in (0, 1) for budget in (1, 2)
    ]
    assert len({r["key"] for r in result.rows}) == 8
    constant = compare(functional, make_data(), ["default"], seeds=[0], epochs=1, verbose=0).rows[0]
    annealed = result.rows[0]
    assert constant["schedule"] == "constant" and constant["key"] != annealed["key"]
    # The schedule itself: from the compiled rate (0.1) down to 0 at the last of 2 epochs x 2 steps.
    model = functional("he_normal", 0)
    decay_to_zero(model, 4)
    (x, y), _ = make_data()
    assert float(keras.ops.convert_to_numpy(model.optimizer.learning_rate)) == pytest.approx(0.1)
    model.fit(x, y, batch_size=32, epochs=1, verbose=0)
    assert float(keras.ops.convert_to_numpy(model.optimizer.learning_rate)) == pytest.approx(0.05)
    model.fit(x, y, batch_size=32, epochs=1, verbose=0)
    assert float(keras.ops.convert_to_numpy(model.optimizer.learning_rate)) == pytest.approx(0.0, abs=1e-9)


def test_budgets_refuse_what_they_cannot_anneal():
    def scheduled(kernel_initializer, seed):
        model = functional(kernel_initializer, seed)
        schedule = keras.optimizers.schedules.ExponentialDecay(0.1, 10, 0.5)
        model.compile(keras.optimizers.SGD(schedule), LOSS, metrics=["accuracy"])
        return model

    with pytest.raises(ValueError, match="Pass `epochs` .* or `budgets` .*, not both"):
        compare(functional, make_data(), ["he"], epochs=2, budgets=[1, 2], verbose=0)
    with pytest.raises(ValueError, match=r"`budgets` must hold distinct epoch counts >= 1.*\[1, 1\]"):
        compare(functional, make_data(), ["he"], budgets=[1, 1], verbose=0)
    with pytest.raises(ValueError, match="`budgets` must be an int >= 1"):
        compare(functional, make_data(), ["he"], budgets=[0, 2], verbose=0)
    with pytest.raises(TypeError, match="`budgets` must be a list of epoch counts"):
        compare(functional, make_data(), ["he"], budgets=4, verbose=0)
    with pytest.raises(ValueError, match="needs a constant float learning rate; its learning_rate is"):
        compare(scheduled, make_data(), ["he"], budgets=[1], seeds=1, verbose=0)


# ---------------------------------------------------------------- executors
GRID = {"arms": ["correlated"], "seeds": 2, "epochs": 1, "controls": False, "verbose": 0}


@pytest.mark.slow
def test_a_process_pool_and_a_dask_cluster_give_the_serial_rows(monkeypatch):
    serial = run_rows(compare(functional, make_data, **GRID))
    context = multiprocessing.get_context("spawn")
    with concurrent.futures.ProcessPoolExecutor(2, mp_context=context) as pool:
        pooled = run_rows(compare(functional, make_data, executor=pool, **GRID))
    print("\nserial:", [(arm, seed, final) for arm, seed, final, _, _ in serial])
    print("process pool (2 workers):", [(arm, seed, final) for arm, seed, final, _, _ in pooled])
    assert pooled == serial

    from dask.distributed import Client, LocalCluster

    # Dask's workers import this module by name, as the pool's do (and the tests' conftest, which it imports).
    here = os.path.dirname(__file__)
    folders = [here, os.path.dirname(here), os.environ.get("PYTHONPATH")]
    monkeypatch.setenv("PYTHONPATH", os.pathsep.join(filter(None, folders)))
    with LocalCluster(n_workers=2, threads_per_worker=1, processes=True, dashboard_address=None) as cluster:
        with Client(cluster) as client:
            with client.get_executor() as executor:
                on_dask = run_rows(compare(functional, make_data, executor=executor, **GRID))
    print("dask LocalCluster (2 workers):", [(arm, seed, final) for arm, seed, final, _, _ in on_dask])
    assert on_dask == serial


@pytest.mark.slow
def test_a_scale_control_named_explicitly_and_one_without_its_arm():
    mine = CorrelatedHeNormal(variance_mode="weight")
    result = compare(
        functional,
        make_data(),
        {"mine": mine, "mine~var": None},
        seeds=1,
        epochs=1,
        controls=False,
        baseline="he",
        verbose=0,
    )
    assert result.arms() == ["he", "mine", "mine~var"] and result.controls == {"mine": "mine~var"}
    with pytest.raises(ValueError, match=r"`<arm>~var` or `<arm>~sum` names the scale control of an arm listed before"):
        compare(functional, make_data(), {"other~var": None}, seeds=1, epochs=1, verbose=0)
    with pytest.raises(ValueError, match="Arm 'glorot~var': a scale control needs 'glorot' to be a CorrelatedHeNormal"):
        compare(functional, make_data(), {"glorot": "glorot_uniform", "glorot~var": None}, seeds=1, epochs=1, verbose=0)


# ------------------------------------------------------- a store that survives
def _store_lines(path):
    return (path / "runs.jsonl").read_text().splitlines(keepends=True)


@pytest.mark.slow
def test_a_half_written_last_line_is_skipped_with_a_warning_and_its_run_redone(tmp_path):
    BUILDS.clear()
    compare(counting, make_data(), ["default"], seeds=2, epochs=1, out=tmp_path, verbose=0)
    lines = lines_before = _store_lines(tmp_path)
    (tmp_path / "runs.jsonl").write_text(lines[0] + lines[1][:40])  # a writer stopped mid-row
    with pytest.warns(UserWarning, match=rf"{tmp_path / 'runs.jsonl'}: line 2 is not a complete row .* will be redone"):
        again = compare(counting, make_data(), ["default"], seeds=2, epochs=1, out=tmp_path, verbose=0)
    assert len(BUILDS) == (2 + 2) + (2 + 1)  # identity builds, and only the lost run trained again
    # the open line was closed, not cut: the redone run's row has a line of its own
    lines = _store_lines(tmp_path)
    assert lines[1] == lines_before[1][:40] + "\n"
    assert [json.loads(line)["key"] for line in lines[:1] + lines[2:]] == [r["key"] for r in again.rows]


@pytest.mark.parametrize(
    "damage, message",
    [
        (lambda lines: '{"final": 1}\n' + "".join(lines), r"runs.jsonl: line 1 is not a run \(a JSON object"),
        (lambda lines: "[1, 2]\n" + "".join(lines), r"runs.jsonl: line 1 is not a run"),
    ],
    ids=["no-key", "a-list"],
)
@pytest.mark.slow
def test_a_damaged_store_is_named(tmp_path, damage, message):
    compare(functional, make_data(), ["default"], seeds=1, epochs=1, out=tmp_path, verbose=0)
    (tmp_path / "runs.jsonl").write_text(damage(_store_lines(tmp_path)))
    with pytest.raises(ValueError, match=message):
        compare(functional, make_data(), ["default"], seeds=1, epochs=1, out=tmp_path, verbose=0)


@pytest.mark.slow
def test_store_metadata_that_is_not_an_object_is_named(tmp_path):
    compare(functional, make_data(), ["default"], seeds=1, epochs=1, out=tmp_path, verbose=0)
    (tmp_path / "store.json").write_text("[1, 2]")
    with pytest.raises(ValueError, match=r"store.json must hold a JSON object; it holds a list"):
        compare(functional, make_data(), ["default"], seeds=1, epochs=1, out=tmp_path, verbose=0)


class _FinishedFutures(concurrent.futures.Executor):
    """Runs each task at submission: every future is finished when `compare` looks (any order)."""

    def submit(self, fn, *args, **kwargs):
        future = concurrent.futures.Future()
        try:
            future.set_result(fn(*args, **kwargs))
        except Exception as error:
            future.set_exception(error)
        return future


def failing_on_seed_1(model, train, seed):
    if seed == 1:
        raise RuntimeError("seed 1 fails")


@pytest.mark.slow
@pytest.mark.parametrize("executor", [None, _FinishedFutures()], ids=["here", "executor"])
def test_a_failing_arm_is_left_out_with_its_error_and_the_others_compared(tmp_path, executor):
    with pytest.warns(
        UserWarning, match=r"Arm 'failing' failed \(seed 1: RuntimeError: seed 1 fails\); it is left out"
    ):
        result = compare(
            functional,
            make_data(),
            {"he": None, "failing": failing_on_seed_1, "mine": "glorot_normal"},
            seeds=3,
            baseline="he",
            epochs=1,
            out=tmp_path,
            executor=executor,
            verbose=0,
        )
    assert result.arms() == ["he", "mine"]  # the partial table: every arm that finished
    stored = sorted((row["arm"], row["seed"]) for row in map(json.loads, _store_lines(tmp_path)))
    assert stored == [("failing", 0), ("failing", 2)] + [(arm, s) for arm in ("he", "mine") for s in range(3)]
    # a failing baseline leaves nothing to compare with: its error, naming the run
    with pytest.raises(RuntimeError, match="seed 1 fails") as caught:
        compare(functional, make_data(), {"failing": failing_on_seed_1}, seeds=2, baseline="failing", epochs=1)
    assert "(in the run of arm 'failing', seed 1)" in str(caught.value.__notes__)


def test_an_arm_that_never_reaches_the_target_reads_never():
    result = Comparison(
        rows=[
            {
                "arm": arm,
                "seed": seed,
                "final": final,
                "curve": [final],
                "sign_change": [],
                "seconds": 1.0,
                "epoch_seconds": [1.0],
            }
            for arm, finals in (("he", (0.8, 0.9)), ("slow", (0.5, 0.6)))
            for seed, final in enumerate(finals)
        ],
        baseline="he",
        metric="accuracy",
        controls={},
    )
    row = [line for line in result.to_markdown().splitlines() if line.startswith("| slow |")][0]
    assert "| never | never | 0/2 |" in row and "nan" not in result.to_markdown()


# ----------------------------------------------------------- identity by content
def sized(kernel_initializer, seed, filters=2):
    inputs = keras.Input((8, 8, 1))
    h = keras.layers.Conv2D(filters, 3, activation="relu", kernel_initializer=kernel_initializer)(inputs)
    outputs = keras.layers.Dense(2, kernel_initializer=kernel_initializer)(keras.layers.GlobalAveragePooling2D()(h))
    model = keras.Model(inputs, outputs)
    model.compile(keras.optimizers.SGD(0.1), LOSS, metrics=["accuracy"])
    BUILDS.append(seed)
    return model


def _keys(result):
    return {row["key"] for row in result.rows}


@pytest.mark.slow
def test_partials_and_lambdas_of_other_settings_never_share_a_key(tmp_path):
    import functools

    BUILDS.clear()
    run = functools.partial(compare, data=make_data(), arms=["default"], seeds=1, epochs=1, out=tmp_path, verbose=0)
    two = run(functools.partial(sized, filters=2))
    sixteen = run(functools.partial(sized, filters=16))
    assert _keys(two).isdisjoint(_keys(sixteen))
    assert "partial(test_experiments.sized" in two.rows[0]["builder"]
    builds = len(BUILDS)
    assert _keys(run(functools.partial(sized, filters=2))) == _keys(two)  # the same partial resumes
    assert len(BUILDS) == builds + 1  # one build to read the model's identity, no training
    lambdas = [lambda init, seed, f=f: sized(init, seed, filters=f) for f in (3, 5)]
    assert _keys(run(lambdas[0])).isdisjoint(_keys(run(lambdas[1])))


WIDTH = {"filters": 2}


def widened(kernel_initializer, seed):
    return sized(kernel_initializer, seed, filters=WIDTH["filters"])


@pytest.mark.slow
def test_a_model_widened_under_the_same_builder_is_a_new_run(tmp_path, monkeypatch):
    first = compare(widened, make_data(), ["default"], seeds=1, epochs=1, out=tmp_path, verbose=0)
    monkeypatch.setitem(WIDTH, "filters", 8)
    second = compare(widened, make_data(), ["default"], seeds=1, epochs=1, out=tmp_path, verbose=0)
    assert _keys(first).isdisjoint(_keys(second))
    assert first.rows[0]["builder"].split(" model:")[0] == second.rows[0]["builder"].split(" model:")[0]


@pytest.mark.slow
def test_data_factories_with_other_arguments_never_share_a_key():
    import functools

    def data(n):
        (x, y), test = make_data()
        return (x[:n], y[:n]), test

    small = compare(functional, functools.partial(data, 32), ["default"], seeds=1, epochs=1, verbose=0)
    large = compare(functional, functools.partial(data, 64), ["default"], seeds=1, epochs=1, verbose=0)
    assert _keys(small).isdisjoint(_keys(large))
    assert small.rows[0]["data"].startswith("factory partial(") and "arrays sha256:" in small.rows[0]["data"]


def test_what_cannot_be_identified_is_refused_with_the_fix():
    thing = object()

    def builder(init, seed):
        assert thing is not None
        return functional(init, seed)

    with pytest.raises(TypeError, match=r"`build_model` cannot be identified .* holds a object .* Pass `settings=`"):
        compare(builder, make_data(), ["default"], seeds=1, epochs=1, verbose=0)
    result = compare(builder, make_data(), ["default"], seeds=1, epochs=1, settings={"builder": "v1"}, verbose=0)
    assert "(named by `settings`)" in result.rows[0]["builder"]

    def arm(model, train, seed):
        assert thing is not None

    with pytest.raises(TypeError, match=r"Arm 'mine' cannot be identified for the results store: it holds a object"):
        compare(functional, make_data(), {"mine": arm}, seeds=1, epochs=1, verbose=0)


# ---------------------------------------------------------------- summary
@pytest.mark.slow
def test_summary_reads_a_compare_store_once_per_run_and_names_a_damaged_one(tmp_path, capsys):
    from keras_corrinit.experiments._suite.summary import cells, main

    compare(functional, make_data(), ["correlated"], seeds=2, epochs=1, out=tmp_path, verbose=0)
    lines = _store_lines(tmp_path)
    (tmp_path / "runs.jsonl").write_text("".join(lines + lines))  # two writers stored every run twice
    ((settings, rows),) = list(cells([tmp_path]))
    assert len(rows) == len(lines) == 6  # default, correlated, correlated~var on 2 seeds: each once
    assert main([str(tmp_path), "--arms", "correlated"]) == 0
    assert "| arrays sha256:" in capsys.readouterr().out  # one row: the cell, named by its data
    (tmp_path / "runs.jsonl").write_text("[1, 2]\n" + "".join(lines))
    assert main([str(tmp_path)]) == 2
    assert "runs.jsonl: line 1 is not a run" in capsys.readouterr().err


@pytest.mark.slow
def test_summary_never_averages_runs_of_another_version_backend_or_schedule(tmp_path, capsys):
    from keras_corrinit.experiments._suite.summary import cells, main

    compare(functional, make_data(), ["correlated"], seeds=2, epochs=1, out=tmp_path, verbose=0)
    rows = [json.loads(line) for line in _store_lines(tmp_path)]
    changes = [("package_version", "0.0.1"), ("backend", "other"), ("schedule", "linear-to-zero")]
    rows += [
        {**row, field: value, "key": row["key"] + field, "final": row["final"] * (0.5 + 0.1 * row["seed"])}
        for field, value in changes
        for row in rows
    ]
    (tmp_path / "runs.jsonl").write_text("".join(json.dumps(row) + "\n" for row in rows))
    found = list(cells([tmp_path]))
    assert len(found) == 4 and all(len(cell_rows) == 6 for _, cell_rows in found)
    assert main([str(tmp_path), "--arms", "correlated"]) == 0
    out = capsys.readouterr().out
    backend, version = keras.backend.backend(), keras_corrinit.__version__
    for made_by in ("0.0.1, 1 epochs constant", f"{version}, 1 epochs linear-to-zero", f"{version}, 1 epochs constant"):
        assert f"| {backend} {made_by} |" in out  # each cell says what made it
    assert f"| other {version}, 1 epochs constant |" in out


@pytest.mark.slow
def test_a_run_claimed_by_another_writer_is_waited_for_not_trained_twice(tmp_path):
    import shutil
    import socket
    import subprocess
    import sys
    from unittest import mock

    source = tmp_path / "source"
    compare(counting, make_data(), ["default"], seeds=2, epochs=1, out=source, verbose=0)
    rows = _store_lines(source)
    target = tmp_path / "target"
    target.mkdir()
    shutil.copy(source / "store.json", target / "store.json")
    key = json.loads(rows[0])["key"]
    (target / "claims").mkdir()
    other = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(30)"])  # the other writer, alive
    try:
        (target / "claims" / key).write_text(json.dumps({"host": socket.gethostname(), "pid": other.pid}))

        from keras_corrinit.experiments import _compare

        def other_writer_finishes(seconds):  # the other writer's row arrives while this one waits
            with open(target / "runs.jsonl", "a") as f:
                f.write(rows[0])
            (target / "claims" / key).unlink()

        BUILDS.clear()
        with mock.patch.object(_compare, "_wait", other_writer_finishes):
            with pytest.warns(UserWarning, match=rf"Waiting for 1 run\(s\) .*{target / 'claims' / key} \(host "):
                result = compare(counting, make_data(), ["default"], seeds=2, epochs=1, out=target, verbose=0)
    finally:
        other.kill()
        other.wait()
    assert len(BUILDS) == 2 + 1  # identity builds; only the unclaimed run trained here
    assert sorted(json.loads(line)["key"] for line in _store_lines(target)) == sorted(r["key"] for r in result.rows)
    assert not list((target / "claims").iterdir())


@pytest.mark.slow
def test_a_dead_writers_claim_is_taken_over(tmp_path):
    import socket
    import subprocess
    import sys

    compare(functional, make_data(), ["default"], seeds=1, epochs=1, out=tmp_path, verbose=0)
    key = json.loads(_store_lines(tmp_path)[0])["key"]
    (tmp_path / "runs.jsonl").write_text("")
    dead = subprocess.Popen([sys.executable, "-c", "pass"])
    dead.wait()
    (tmp_path / "claims" / key).write_text(json.dumps({"host": socket.gethostname(), "pid": dead.pid}))
    result = compare(functional, make_data(), ["default"], seeds=1, epochs=1, out=tmp_path, verbose=0)
    assert [r["key"] for r in result.rows] == [key]
    assert len(_store_lines(tmp_path)) == 1


# ------------------------------------------------- compare for real users
def ignores_initializer(kernel_initializer, seed):
    """A published model: it takes no initializer, so every arm would train it as written."""
    return functional("glorot_uniform", seed)


def test_data_and_builders_that_cannot_work_are_refused_before_any_training():
    (x, y), _ = make_data()
    with pytest.raises(ValueError, match=r"`data` is one pair of arrays \(x, y\); .*\(\(x_train, y_train\), \(x_test"):
        compare(functional, (x, y), ["he"], seeds=1, epochs=1, verbose=0)
    with pytest.raises(TypeError, match=r"`build_model` must take \(kernel_initializer, seed\); its signature is \(s"):
        compare(lambda seed: functional("he_normal", seed), make_data(), ["he"], seeds=1, epochs=1, verbose=0)
    with pytest.raises(TypeError, match="`build_model` must return a keras.Model; it returned str"):
        compare(lambda kernel_initializer, seed: "model", make_data(), ["he"], seeds=1, epochs=1, verbose=0)


@pytest.mark.slow
def test_a_builder_that_ignores_the_initializer_is_said(tmp_path):
    with pytest.warns(UserWarning, match="Arms 'default' and 'he' started from identical weights on every seed"):
        compare(ignores_initializer, make_data(), ["he"], seeds=2, epochs=1, verbose=0)


def test_an_arm_and_its_recalibrated_twin_start_alike_without_a_warning():
    from keras_corrinit.experiments._compare import _warn_identical_starts

    rows = [
        {"arm": arm, "seed": seed, "epochs": 1, "start": f"digest{seed}"}
        for arm in ("default", "default+recalibrate")
        for seed in (0, 1)
    ]
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        _warn_identical_starts(rows)
    rows += [{"arm": "he", "seed": seed, "epochs": 1, "start": f"digest{seed}"} for seed in (0, 1)]
    with pytest.warns(UserWarning, match="Arms 'default' and 'he' started from identical weights on every seed"):
        _warn_identical_starts(rows)


@pytest.mark.slow
def test_more_seeds_reuse_the_finished_runs_and_training_curves_are_stored(tmp_path):
    BUILDS.clear()
    first = compare(counting, make_data(), ["he"], seeds=2, epochs=2, out=tmp_path, verbose=0)
    trained = len(BUILDS)
    BUILDS.clear()
    more = compare(counting, make_data(), ["he"], seeds=3, epochs=2, out=tmp_path, verbose=0)
    assert len(BUILDS) == 3 + 2  # identity builds for 3 seeds, then only seed 2's two runs
    assert [r["key"] for r in more.rows if r["seed"] < 2] == [r["key"] for r in first.rows]
    assert trained == 2 + 4
    row = more.rows[0]
    assert sorted(row["train"]) == ["accuracy", "loss"] and len(row["train"]["loss"]) == 2
    assert len(row["start"]) == 16


def at_chance_data():
    rng = np.random.default_rng(0)
    x = rng.normal(size=(96, 8, 8, 1)).astype("float32")
    y = rng.integers(0, 2, 96).astype("int32")  # labels unrelated to the images
    return (x[:64], y[:64]), (x[64:], np.zeros(32, "int32"))


@pytest.mark.slow
def test_a_baseline_at_chance_is_said():
    def frozen(kernel_initializer, seed):
        model = functional(kernel_initializer, seed)
        model.compile(keras.optimizers.SGD(0.0), LOSS, metrics=["accuracy"])  # learns nothing
        return model

    with pytest.warns(UserWarning, match=r"The baseline 'default' ends at accuracy .*chance level .*\+recalibrate"):
        compare(frozen, make_data(), ["he"], seeds=2, epochs=1, verbose=0)


@pytest.mark.slow
def test_unbatched_training_data_is_told_to_batch():
    import tensorflow as tf

    (x, y), test = make_data()
    unbatched = tf.data.Dataset.from_tensor_slices((x, y))
    with pytest.raises(ValueError, match=r"gives single samples \(rank 3; the model takes rank 4.*dataset.batch\(32\)"):
        compare(functional, (unbatched, test), ["he"], seeds=1, epochs=1, verbose=0)
