"""The built-in suite: `keras-corrinit compare` on keras_corrinit.experiments (keras_corrinit.experiments._suite)."""

import itertools
import json
import math
import os
import subprocess
import sys

import keras
import numpy as np
import pytest

import keras_corrinit_cli
from conftest import load_example, to_numpy
from keras_corrinit import CorrelatedHeNormal
from keras_corrinit.correlation import resample_covariance
from keras_corrinit.experiments import _registry as REGISTRY
from keras_corrinit.experiments._comparison import _verdict
from keras_corrinit.experiments._suite import arms, datasets, networks, options
from keras_corrinit.experiments._suite import command as compare
from keras_corrinit.initializers import ScaleControl

# The benchmarks need the `examples` extra; without it these tests are skipped, saying so.
pytest.importorskip("sklearn", reason="needs scikit-learn: pip install 'keras_corrinit[examples]'")
pytest.importorskip("matplotlib", reason="needs matplotlib: pip install 'keras_corrinit[examples]'")
pytest.importorskip("tensorflow_datasets", reason="needs tensorflow-datasets: pip install 'keras_corrinit[examples]'")


def he():
    return keras.initializers.HeNormal(seed=0)


def _weight_layers(model):
    return [layer for layer in model.layers if isinstance(layer, (keras.layers.Conv2D, keras.layers.Dense))]


@pytest.mark.parametrize(
    "name, expected",
    [("vgg8", 8), ("vgg16", 16), ("vgg19", 19), ("resnet10", 10), ("resnet18", 18), ("resnet34", 34)],
)
@pytest.mark.slow
def test_documented_weight_layer_counts(name, expected):
    model = networks.build(name, (32, 32, 3), 10, he, batch_norm=True, width=0.25)
    layers = _weight_layers(model)
    projections = [layer for layer in layers if isinstance(layer, keras.layers.Conv2D) and layer.kernel_size == (1, 1)]
    assert len(layers) - len(projections) == expected
    assert len(projections) == (3 if name.startswith("resnet") else 0)


@pytest.mark.slow
def test_vgg8_parameter_count_at_half_width_without_batch_norm():
    model = networks.build("vgg8", (32, 32, 3), 10, he, batch_norm=False, width=0.5)
    channels = [32, 64, 128, 128, 256, 256]
    convs = sum(9 * c_in * c_out + c_out for c_in, c_out in zip([3] + channels[:-1], channels))
    flat = 256 * 2 * 2  # 32x32 after four poolings
    dense = flat * 256 + 256 + 256 * 10 + 10
    assert model.count_params() == convs + dense


@pytest.mark.parametrize(
    "name, width, stem, stages",
    [("resnet10", 0.5, 32, [(32, 1), (64, 1), (128, 1), (256, 1)]), ("resnet20", 1.0, 16, [(16, 3), (32, 3), (64, 3)])],
)
@pytest.mark.slow
def test_resnet_parameter_counts_with_batch_norm(name, width, stem, stages):
    model = networks.build(name, (32, 32, 3), 10, he, batch_norm=True, width=width)
    bn = lambda c: 4 * c  # noqa: E731  (gamma, beta, moving mean and variance)
    total = 9 * 3 * stem + bn(stem)
    c_in = stem
    for c, blocks in stages:
        for _ in range(blocks):
            total += 9 * c_in * c + bn(c) + 9 * c * c + bn(c)
            if c != c_in:  # a 1x1 projection shortcut
                total += c_in * c + bn(c)
            c_in = c
    total += c_in * 10 + 10
    assert model.count_params() == total
    convolutions = sum(isinstance(layer, keras.layers.Conv2D) for layer in model.layers)
    assert convolutions == 1 + 2 * sum(blocks for _, blocks in stages) + len(stages) - (stem == stages[0][0])


@pytest.mark.slow
def test_keras_io_vit_and_mobilenet_are_built_as_documented():
    keras_io = networks.build("keras_io", (28, 28, 1), 10, he)
    assert keras_io.layers[-1].get_config()["activation"] == "softmax" and keras_io.count_params() == 34826
    assert "keras_io" in networks.SOFTMAX_HEADS
    vit = networks.build("vit", (32, 32, 3), 10, he)
    attention = [layer for layer in vit.layers if isinstance(layer, keras.layers.MultiHeadAttention)]
    assert len(attention) == 4 and vit.get_layer("patches").get_config()["strides"] == (4, 4)
    assert vit.get_layer("patches").output.shape == (None, 8, 8, 64)
    mobile = networks.build("mobilenet", (32, 32, 3), 10, he, width=0.5)
    separable = [layer for layer in mobile.layers if isinstance(layer, keras.layers.SeparableConv2D)]
    assert [layer.filters for layer in separable] == [32, 64, 64, 128]


@pytest.mark.slow
def test_keras_ios_image_classification_network_is_built_as_published():
    model = networks.build("keras_io_xception", (32, 32, 3), 10, he, width=1.0)
    kinds = [type(layer).__name__ for layer in model.layers]
    assert kinds.count("SeparableConv2D") == 7 and kinds.count("Add") == 3 and kinds.count("BatchNormalization") == 8
    assert [layer.filters for layer in model.layers if type(layer).__name__ == "SeparableConv2D"] == [
        256,
        256,
        512,
        512,
        728,
        728,
        1024,
    ]
    assert model.layers[-1].activation is keras.activations.linear and kinds[-2] == "Dropout"
    assert all(layer.momentum == 0.99 for layer in model.layers if type(layer).__name__ == "BatchNormalization")


def test_a_transformer_built_by_compare_draws_each_attention_kernel_anew():
    """MultiHeadAttention clones its initializer per kernel: each clone must still draw its own layer seed."""
    from keras_corrinit.experiments._arms import resolve_arms

    (arm,) = resolve_arms(["he"], "he", controls=False)
    run_initializer = arm.make_initializer(0)
    model = networks.build("vit", (16, 16, 3), 4, lambda: run_initializer)
    layer = model.get_layer("attention_0")
    q, k, v = (to_numpy(getattr(layer, name).kernel) for name in ("query_dense", "key_dense", "value_dense"))
    assert not np.array_equal(q, k) and not np.array_equal(k, v)
    # He's std with Keras's fans of a (64, 4, 16) kernel: fan_in = 4 x 64; 4,096 draws: 5% is > 4 standard errors
    assert q.std() == pytest.approx(math.sqrt(2 / (4 * 64)), rel=0.05)
    rebuilt = arm.make_initializer(0)
    again = networks.build("vit", (16, 16, 3), 4, lambda: rebuilt)
    assert np.array_equal(to_numpy(again.get_layer("attention_0").query_dense.kernel), q)


def test_initialize_scale_keeps_initializes_filter_norms_in_random_directions():
    from keras_corrinit.experiments._arms import Then

    (x, y), _, classes = datasets.load("photos32", max_train=64)

    def kernels(model):
        return [to_numpy(layer.kernel) for layer in model.layers if hasattr(layer, "kernel")]

    initialized = networks.build("keras_io", x.shape[1:], classes, he)
    from keras_corrinit import initialize

    initialize(initialized, (x, y), seed=4, verbose=0)
    control = networks.build("keras_io", x.shape[1:], classes, he)
    Then("initialize_scale")(control, (x, y), 4)
    for reference, redrawn in zip(kernels(initialized), kernels(control)):
        norms = np.linalg.norm(reference.reshape(-1, reference.shape[-1]), axis=0)
        np.testing.assert_allclose(np.linalg.norm(redrawn.reshape(-1, redrawn.shape[-1]), axis=0), norms, rtol=1e-5)
    first, whitened = kernels(control)[0].reshape(-1, 32), kernels(initialized)[0].reshape(-1, 32)
    cosines = np.sum(first * whitened, axis=0) / (np.linalg.norm(first, axis=0) * np.linalg.norm(whitened, axis=0))
    # random directions in 27 dimensions: mean |cos| with any fixed filter 0.15, its sd over 32 filters 0.02
    assert np.abs(cosines).mean() < 0.3


def test_one_registry_names_every_arm_and_compare_resolves_them_by_name():
    from keras_corrinit.experiments._arms import resolve_arms
    from keras_corrinit.experiments._registry import ARMS

    # initialize's ablations start from the network as written and run initialize with one choice changed
    resolved = {arm.name: arm for arm in resolve_arms(list(ARMS.keys() - {"default"} - _SUITE_ONLY), "default", False)}
    for name in ("initialize_head_zero", "initialize_normalized_lsuv", "initialize_residual_scaled"):
        assert resolved[name].identity.startswith(resolved["default"].identity + " then initialize")
        assert resolved[name].prepare.options == ARMS[name].options
    assert resolved["mimetic"].prepare.then == "mimetic" and "CorrelatedHeNormal" in resolved["mimetic"].identity
    # the suite adds its settings only where an arm takes them; every other name is the registry's
    ctx = arms.Context()
    assert arms.comparison_arms("initialize_head_zero", ctx) is None
    assert arms.comparison_arms("he_normal", ctx) is None
    assert isinstance(arms.comparison_arms("nfm", ctx), arms.PostBuild)
    # one name per thing: Keras's He-normal is he_normal; its old compare name still works, with a note
    with pytest.warns(UserWarning, match="Arm 'keras_he' is now called 'he_normal'"):
        assert [a.name for a in resolve_arms(["keras_he"], "default", False)] == ["default", "he_normal"]
    # the command's own arms are refused in Python with the way to run them
    with pytest.raises(ValueError, match=r"Arm 'nfm' needs the command's context .*keras-corrinit compare --init nfm"):
        resolve_arms(["nfm"], "default", False)


_SUITE_ONLY = {name for name in REGISTRY.ARMS if REGISTRY.suite_only(name)}


@pytest.mark.slow
def test_a_registered_arm_runs_through_compare_by_name(tmp_path):
    from keras_corrinit.experiments import ArmSpec, register_arm
    from keras_corrinit.experiments._registry import ARMS

    register_arm("initialize_eps_large", ArmSpec("as_written", "initialize", (("eps", 0.1),), data=True))
    try:
        result = keras_corrinit_experiments_compare(["initialize_eps_large"])
        assert result.arms() == ["default", "initialize_eps_large"]
    finally:
        del ARMS["initialize_eps_large"]


def keras_corrinit_experiments_compare(arm_names):
    from keras_corrinit.experiments import compare as compare_api

    (x, y), (xt, yt), classes = datasets.load("photos32", max_train=64, max_test=32)

    def build(kernel_initializer, seed):
        model = networks.build("keras_io", x.shape[1:], classes, lambda: kernel_initializer)
        model.compile("adam", "sparse_categorical_crossentropy", metrics=["accuracy"])
        return model

    return compare_api(build, ((x, y), (xt, yt)), arm_names, seeds=1, epochs=1, verbose=0)


def test_the_matrix_grids_run_the_budget_protocol_against_the_network_as_written():
    from keras_corrinit.experiments._suite.grids import MATRIX

    extra = {
        "matrix-mobilenet-bn09": ["lsuv", "initialize_normalized_lsuv"],
        "matrix-keras_io": ["lsuv", "initialize_scale", "initialize_head_zero"],
        "matrix-vit": ["lsuv", "initialize_head_zero"],
        "matrix-resnet20-adam-bn09": ["initialize_normalized_lsuv", "initialize_residual_zero_gamma"],
        "matrix-vgg8": ["initialize_scale"],
        "matrix-keras_io-digits32": ["lsuv", "initialize_scale", "initialize_head_zero"],
        "matrix-resnet20-sgd": ["initialize_residual_zero_gamma"],
        "matrix-resnet20-sgd-bn09": ["initialize_residual_zero_gamma"],
    }
    for name in MATRIX:
        args = compare.parse_args(["--grid", name, "--out", "x"])
        data = ["digits32"] if name.endswith("-digits32") else ["photos32"]
        assert (args.budgets, args.baseline, args.seeds, args.dataset) == ([1, 2, 4], "default", 5, data)
        assert args.bn_momentum == (0.9 if name.endswith("-bn09") else 0.99)
        assert args.init[:4] == ["default", "he", "initialize", "anyinit"]
        assert args.init[4:] == extra.get(name, [])
    assert (
        sum("lsuv" in compare.parse_args(["--grid", name, "--out", "x"]).init for name in MATRIX) == 4
    )  # three families, keras.io on both data sets
    assert compare.parse_args(["--grid", "matrix-keras_io", "--out", "x"]).batch_size == 128


def run(*args):
    """`keras-corrinit compare` on digits (8x8: fast) against `he`, unless `args` say otherwise."""
    return keras_corrinit_cli.main(["compare", "--dataset", "digits", "--baseline", "he", *args])


def run_main_job(*args):
    """`keras-corrinit compare` with its own defaults: the README's main job."""
    return keras_corrinit_cli.main(["compare", *args])


def _read(out):
    with open(os.path.join(out, "runs.jsonl")) as f:
        return [json.loads(line) for line in f]


@pytest.mark.parametrize(
    "argv, expected",
    [(["--help"], "extract"), (["compare", "--help"], "--max-train"), (["summary", "-h"], "folders")],
)
@pytest.mark.slow
def test_help_answers_without_importing_keras(argv, expected):
    code = (
        "import sys, keras_corrinit_cli\n"
        f"try:\n    keras_corrinit_cli.main({argv!r})\nexcept SystemExit:\n    pass\n"
        "print('keras imported:', 'keras' in sys.modules)"
    )
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert expected in done.stdout
    assert done.stdout.strip().endswith("keras imported: False") and done.stderr == ""


@pytest.mark.parametrize(
    "argv, message",
    [
        (
            ["compare", "--epochs", "3", "--budgets", "1"],
            "pass --epochs (runs at a constant learning rate) or --budgets",
        ),
        (["compare", "--grid", "matrix-vgg8", "--epochs", "2"], "pass --epochs (runs at a constant learning rate)"),
        (["compare", "--lr", "-0.005"], "argument --lr: must be a finite number > 0; received -0.005"),
        (["compare", "--lr", "nan"], "argument --lr: must be a finite number > 0; received nan"),
        (["compare", "--bn-momentum", "1.5"], "argument --bn-momentum: must be a finite number >= 0 and < 1"),
        (["compare", "--width", "0"], "argument --width: must be a finite number > 0; received 0"),
        (["compare", "--epoch", "2"], "unrecognized arguments: --epoch 2"),  # no abbreviations
        (["compare", "--grid", "nope"], "--grid 'nope' is not a grid"),
        (["summary", "runs", "--baseline", "defualt"], "argument --baseline: invalid choice: 'defualt'"),
        (["summary", "runs", "--arms", "corelated"], "argument --arms: invalid choice: 'corelated'"),
    ],
    ids=lambda value: " ".join(value) if isinstance(value, list) else None,
)
def test_usage_errors_answer_before_keras_is_imported(argv, message):
    code = (
        "import sys, keras_corrinit_cli\n"
        f"try:\n    keras_corrinit_cli.main({argv!r})\nexcept SystemExit as exit:\n    print('exit', exit.code)\n"
        "print('keras imported:', 'keras' in sys.modules)"
    )
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert message in done.stderr
    assert done.stdout.strip().splitlines() == ["exit 2", "keras imported: False"]


def test_help_names_the_networks_once():
    from keras_corrinit.experiments._suite import options

    text = options.compare_parser().format_help()
    assert text.count("convmixer8k9_frozen") == 1


def test_the_keras_free_options_name_what_the_suite_has():
    from keras_corrinit.experiments._suite import options, summary

    assert options.DATASETS == datasets.DATASETS
    assert options.NETWORKS == sorted(networks.NETWORKS)
    from keras_corrinit.experiments._registry import ARMS

    assert options.BASE_ARMS == sorted(ARMS)  # the command's names are the registry's
    assert options.GAMMA_BASES == sorted(arms.GAMMA_BASES)
    assert options.SUMMARY_ARMS == summary.DEFAULT_ARMS


def test_one_name_for_untruncated_he_and_the_old_one_still_parses(capsys):
    from keras_corrinit.experiments import BUILTIN_ARMS
    from keras_corrinit.experiments._suite import options

    # The suite's He is compare's built-in "he" (CorrelatedHeNormal with R = I), not an arm of its own.
    assert "he" in BUILTIN_ARMS and "he" in options.BASE_ARMS and "he" not in arms.PLAIN
    assert "uncorrelated" not in options.ARMS
    args = compare.parse_args(["--init", "uncorrelated", "correlated", "--baseline", "uncorrelated", "--out", "x"])
    assert (args.init, args.baseline) == (["he", "correlated"], "he")
    assert "arm 'uncorrelated' is now called 'he'" in capsys.readouterr().err


@pytest.mark.slow
def test_main_job_end_to_end_and_resumable(tmp_path, capsys):
    out = str(tmp_path)
    args = ["--seeds", "2", "--epochs", "2", "--max-train", "128", "--max-test", "64", "--out", out]
    assert run_main_job(*args) == 0
    rows = _read(out)
    main_arms = ["default", "he", "initialize", "correlated", "correlated~var"]
    assert [(r["arm"], r["seed"]) for r in rows] == [(a, s) for a in main_arms for s in [0, 1]]
    settings = rows[0]["settings"]
    assert (rows[0]["backend"], settings["lr"], rows[0]["epochs"], settings["max_train"], settings["batch_norm"]) == (
        keras.backend.backend(),
        0.005,
        2,
        128,
        "off",
    )
    assert (settings["dataset"], settings["network"]) == ("photos32", "small_cnn")
    assert {r["settings"]["correlation"] for r in rows} == {"builtin"}
    assert "GlorotUniform" in rows[0]["arm_identity"]
    # initialize starts from the network as written
    assert rows[4]["arm_identity"] == rows[0]["arm_identity"] + " then initialize"
    assert all(len(r["sign_change"]) == 2 and len(r["curve"]) == 2 for r in rows)
    table = open(os.path.join(out, "results.md")).read()
    assert "- photos32: 32x32 inputs, mean correlation of adjacent pixels" in table
    assert "## dataset photos32, network small_cnn, width 1.0, batch_norm off, lr 0.005, l2 0.0" in table
    assert "paired difference to `default`" in table
    assert "| initialize |" in table and "| correlated~var |" in table and "Correlation or scale:" in table
    assert os.path.getsize(os.path.join(out, "curves_photos32_small_cnn_1.0_off_0.005_0.0.png")) > 5000
    capsys.readouterr()
    run_main_job(*args)
    assert "10/10" in capsys.readouterr().out  # the progress bar starts full: nothing trained
    assert len(_read(out)) == 10


@pytest.mark.slow
def test_budgets_from_the_command_line(tmp_path):
    out = str(tmp_path)
    run(
        "--init",
        "initialize",
        "--budgets",
        "2",
        "1",
        "--seeds",
        "2",
        "--max-train",
        "96",
        "--max-test",
        "64",
        "--out",
        out,
    )
    rows = _read(out)
    assert sorted({(r["arm"], r["epochs"], r["schedule"]) for r in rows}) == [
        (arm, budget, "linear-to-zero") for arm in ("he", "initialize") for budget in (1, 2)
    ]
    table = open(os.path.join(out, "results.md")).read()
    assert "Budget protocol: each run trains B epochs" in table and "| arm | B=1 | B=2 |" in table
    assert os.path.getsize(os.path.join(out, "budgets_digits_small_cnn_1.0_off_0.005_0.0.png")) > 5000


def test_the_digits_grid_is_the_papers_algorithm_1_table():
    args = compare.parse_args(["--grid", "digits", "--out", "x"])
    assert (args.dataset, args.epochs, args.baseline, args.seeds) == (["digits"], 10, "he", 5)
    assert args.init == ["he", "correlated", "correlated~var", "correlated_weight", "correlated_weight~sum"]


@pytest.mark.slow
def test_a_changed_setting_is_a_new_run_reported_separately(tmp_path):
    out = str(tmp_path)
    base = ["--init", "he", "--seeds", "1", "--epochs", "1", "--max-train", "128", "--out", out]
    run(*base, "--lr", "0.005")
    run(*base, "--lr", "0.1", "--momentum", "0.9")
    rows = _read(out)
    assert [(r["settings"]["lr"], r["settings"]["momentum"]) for r in rows] == [(0.005, 0.8), (0.1, 0.9)]
    assert len({r["key"] for r in rows}) == 2 and rows[0]["final"] != rows[1]["final"]


@pytest.mark.slow
def test_a_store_from_another_version_is_refused(tmp_path):
    (tmp_path / "store.json").write_text(json.dumps({"format": 1, "package_version": "0.1.0", "columns": []}))
    with pytest.raises(ValueError, match="was written by keras_corrinit 0.1.0.*never mixed: pass another `out`"):
        run("--out", str(tmp_path), "--seeds", "1", "--epochs", "1", "--init", "he")


# One seed, one epoch, a few samples: enough to run every code path.
TINY_BUDGET = ["--seeds", "1", "--epochs", "1", "--max-train", "96", "--max-test", "64", "--source-epochs", "1"]
# One arm of each kind (a Keras initializer, a learned R and its control, layer-wise, NFM and AGOP
# transfer, EnhancedGamma, LSUV; the built-in R's arms and controls run in the main job's test): the
# others differ from these in a name only.
PLAIN_NETWORK_ARMS = [
    "he",
    "he_uniform",
    "correlated_learned",
    "correlated_learned~var",
    "correlated_layerwise",
    "correlated_layerwise~var",
    "nfm",
    "agop_kaiming",
    "enhanced_gamma",
    "lsuv",
]
DEPTHWISE_ARMS = [arm for arm in options.ARMS if arms.needs_depthwise(arm)]


def _ordered(names):
    """Controls after their arms, as --init wants them."""
    return sorted(names, key=lambda name: "~" in name)


@pytest.mark.slow
def test_every_kind_of_arm_and_the_source_trained_once(tmp_path):
    out = str(tmp_path)
    run("--init", *_ordered(PLAIN_NETWORK_ARMS), *TINY_BUDGET, "--out", out)
    rows = _read(out)
    assert sorted(r["arm"] for r in rows) == sorted(PLAIN_NETWORK_ARMS)
    (source,) = {r["settings"]["source"] for r in rows}
    saved = json.load(open(os.path.join(out, "sources", source.replace(".keras", ".json"))))
    assert saved["settings"]["epochs"] == "1" and saved["settings"]["network"] == "small_cnn"
    assert all(0 <= r["final"] <= 1 for r in rows)
    assert "EnhancedGamma (he_normal, filter) at initialization" in open(os.path.join(out, "results.md")).read()
    stamp = os.path.getmtime(os.path.join(out, "sources", source))
    run("--init", "correlated_learned", "--alpha", "0.5", *TINY_BUDGET, "--out", out)
    assert os.path.getmtime(os.path.join(out, "sources", source)) == stamp
    assert len(os.listdir(os.path.join(out, "sources"))) == 2  # .keras and .json of one source


@pytest.mark.slow
def test_learned_arms_use_the_source(tmp_path):
    seeds = iter(range(100))
    source_model = networks.build(
        "small_cnn", (8, 8, 1), 10, lambda: CorrelatedHeNormal(arms.IDENTITY, seed=next(seeds)), batch_norm=False
    )
    path = str(tmp_path / "source.keras")
    source_model.save(path)
    source = arms.load_source(path)
    data = datasets.load("digits", max_train=64)
    target = networks.build("small_cnn", (8, 8, 1), 10, he, batch_norm=False)
    arms.PostBuild("correlated_layerwise", source_path=path)(target, data[0], 0)
    convs = [layer for layer in target.layers if isinstance(layer, keras.layers.Conv2D)]
    for layer, name in zip(convs, source.estimate.layer_names):
        np.testing.assert_allclose(
            layer.kernel_initializer.correlation_matrix((3, 3)), source.estimate.layer_matrices[name], atol=1e-12
        )
    arms.PostBuild("nfm_kaiming", source_path=path)(target, data[0], 0)
    for layer, src in zip(arms._kernel_layers(target), arms._kernel_layers(source_model)):
        w = to_numpy(layer.kernel).reshape(-1, layer.kernel.shape[-1])
        basis, _ = np.linalg.qr(to_numpy(src.kernel).reshape(-1, src.kernel.shape[-1]))
        assert np.abs(w - basis @ (basis.T @ w)).max() < 1e-4 * np.abs(w).max()  # in the source's span


def _sample_variance_check(w, variance):
    # mean of n squared N(0, v) draws: standard error v sqrt(2 / n)
    assert abs((w**2).mean() - variance) < 5 * variance * math.sqrt(2 / w.size)


def test_scale_controls_have_the_formula_variances():
    r = CorrelatedHeNormal().correlation_matrix((3, 3))  # the built-in R
    shape, fan_in = (3, 3, 64, 128), 9 * 64
    # correlated (filter mode): per-weight variance 2 P / (sum(R) fan_in)
    filter_var = 2 * 9 / (r.sum() * fan_in)
    w = to_numpy(ScaleControl(CorrelatedHeNormal(), "var", 0)(shape))
    _sample_variance_check(w, filter_var)
    assert abs(np.corrcoef(w.reshape(9, -1))[0, 1]) < 5 / math.sqrt(64 * 128)  # uncorrelated
    # correlated_weight: filter sum variance sum(R) 2 / fan_in, so He scaled by sum(R) / P
    w = to_numpy(ScaleControl(CorrelatedHeNormal(variance_mode="weight"), "sum", 0)(shape)).reshape(9, -1)
    sums = w.sum(axis=0)
    assert abs(sums.var() - r.sum() * 2 / fan_in) < 5 * r.sum() * 2 / fan_in * math.sqrt(2 / sums.size)
    # Dense kernels have one position: every control is He there
    _sample_variance_check(to_numpy(ScaleControl(CorrelatedHeNormal(), "var", 0)((400, 100))), 2 / 400)


@pytest.mark.parametrize(
    "against_he, against_control, control_against_he, expected",
    [
        ((0.05, 0.01, 0.09, 5), (0.04, 0.01, 0.07, 5), (0.01, -0.02, 0.04, 5), "the correlation"),
        ((0.05, 0.01, 0.09, 5), (0.0, -0.02, 0.02, 5), (0.05, 0.02, 0.08, 5), "and so does its scale control"),
        ((-0.05, -0.09, -0.01, 5), (0.0, -0.02, 0.02, 5), (-0.05, -0.08, -0.02, 5), "and so is its scale control"),
        ((0.0, -0.02, 0.02, 5), (0.0, -0.02, 0.02, 5), (0.0, -0.02, 0.02, 5), "no significant difference"),
    ],
)
def test_verdicts(against_he, against_control, control_against_he, expected):
    as_dict = lambda t: dict(zip(("mean", "low", "high", "n"), t))
    sentence = _verdict("correlated", "he", *map(as_dict, (against_he, against_control, control_against_he)))
    assert expected in sentence


def test_digits32_is_the_digits_resized_shifted_and_spatially_correlated():
    (x8, y8), (t8, _), _ = datasets.load_digits()
    (x32, y32), (t32, _), classes = datasets.load_digits32()
    assert x32.shape == (len(x8), 32, 32, 1) and t32.shape == (len(t8), 32, 32, 1) and classes == 10
    np.testing.assert_array_equal(y32, y8)
    assert 0 <= x32.min() and x32.max() <= 1
    # each image is its 8x8 scan, resized, shifted by at most 2 pixels
    resized = datasets.resize_bilinear(x8[:5], 32)
    for image, reference in zip(x32[:5], resized):
        errors = [
            np.abs(np.roll(np.pad(reference, ((2, 2), (2, 2), (0, 0))), (dy, dx), (0, 1))[2:-2, 2:-2] - image).max()
            for dy in range(-2, 3)
            for dx in range(-2, 3)
        ]
        assert min(errors) == 0.0
    assert datasets.adjacent_pixel_correlation(x32) > 0.9 > 0.6 > datasets.adjacent_pixel_correlation(x8)


def test_bilinear_resize_is_exact_on_linear_images():
    ramp = np.arange(8, dtype="float32")[None, :, None, None] * np.ones((1, 1, 8, 1), "float32")
    resized = datasets.resize_bilinear(ramp, 32)[0, :, 0, 0]
    centres = (np.arange(32) + 0.5) * 8 / 32 - 0.5
    np.testing.assert_allclose(resized[2:-2], centres[2:-2], atol=1e-6)  # away from the clamped edges


def test_earth_movers_distance_over_std():
    rng = np.random.default_rng(0)
    a = rng.normal(size=20000)
    assert compare._emd_over_std(a + 0.5, a, a.std()) == pytest.approx(0.5 / a.std())
    assert compare._emd_over_std(a[::-1].copy(), a, 1.0) == 0.0


@pytest.mark.slow
def test_tfds_datasets_with_mock_data(tmp_path):
    import tensorflow_datasets as tfds

    out = str(tmp_path)
    with tfds.testing.mock_data(num_examples=64):
        run(
            *("--dataset", "cifar10", "--network", "resnet10", "--width", "0.125", "--init", "lsuv"),
            "--baseline",
            "lsuv",
            *("--batch-norm", "on", "--seeds", "1", "--epochs", "1", "--out", out),
        )
    rows = _read(out)
    assert [(r["settings"]["dataset"], r["settings"]["network"], r["arm"]) for r in rows] == [
        ("cifar10", "resnet10", "lsuv")
    ]


def test_a_cut_data_set_is_a_random_subset_not_its_first_samples():
    (x, y), (xt, yt), _ = datasets.load("photos32", max_train=1500, max_test=64)
    counts = np.bincount(y, minlength=10)
    # photos32 is stored class by class (300 crops each): the first 1,500 would be 5 classes. A random
    # 1,500 of 3,000 has 150 per class on average (hypergeometric sd 8.7): all within 5 sd.
    assert len(y) == 1500 and np.all(np.abs(counts - 150) < 45)
    assert len(yt) == 64 and len(np.unique(yt)) >= 8
    (x2, y2), _, _ = datasets.load("photos32", max_train=1500)
    assert np.array_equal(x2, x) and np.array_equal(y2, y)


def test_tfds_failure_says_what_to_download_and_where(tmp_path, monkeypatch):
    import tensorflow_datasets as tfds

    def offline(*args, **kwargs):
        raise ConnectionError("Failed to establish a new connection")

    monkeypatch.setattr(tfds, "load", offline)
    with pytest.raises(ValueError, match=r"could not load 'svhn_cropped'.*tfds.load\('svhn_cropped'\).*--data-dir"):
        datasets.load("svhn", data_dir=str(tmp_path))


def test_digits_are_the_real_shipped_data():
    (x_train, y_train), (x_test, y_test), classes = datasets.load_digits()
    assert x_train.shape[1:] == (8, 8, 1) and len(x_train) + len(x_test) == 1797 and classes == 10
    assert set(np.unique(y_train)) == set(range(10))


def test_unknown_names_and_incompatible_arguments(capsys):
    with pytest.raises(ValueError, match="Unknown network 'vgg7'"):
        networks.build("vgg7", (8, 8, 1), 10, he)
    with pytest.raises(SystemExit):
        compare.parse_args(["--init", "xavier"])
    with pytest.raises(SystemExit):
        compare.parse_args(["--init", "covariance_closed_form"])
    assert "set depthwise convolutions, which ['the default networks'] do not have" in capsys.readouterr().err
    with pytest.raises(SystemExit):
        compare.parse_args(
            ["--network", "convmixer2k3", "--init", "covariance_learned", "--source-network", "small_cnn"]
        )
    assert "covariance_learned needs a ConvMixer source" in capsys.readouterr().err
    with pytest.raises(SystemExit):
        compare.parse_args(["--init", "correlated~var"])
    assert "the scale control correlated~var needs its arm correlated in --init" in capsys.readouterr().err


def test_the_main_job_is_a_quarter_of_photos32_and_other_data_sets_are_whole():
    args = compare.parse_args([])
    assert (args.dataset, args.max_train, args.epochs, args.seeds) == (["photos32"], 750, 4, 5)
    assert compare.parse_args(["--dataset", "digits"]).max_train is None
    assert compare.parse_args(["--max-train", "3000"]).max_train == 3000
    assert compare.parse_args(["--budgets", "1", "2"]).epochs is None


def test_grids_are_listed_and_expand_to_their_arguments(capsys):
    with pytest.raises(SystemExit):
        compare.parse_args(["--grid", "list"])
    assert "paper-digits: --epochs 10 --baseline he --dataset digits" in capsys.readouterr().out
    args = compare.parse_args(["--grid", "alpha-digits32", "--seeds", "2"])
    assert (args.dataset, args.alpha, args.seeds, args.out) == (
        ["digits32"],
        [0.25, 0.5, 1.0, 1.5],
        2,
        "runs/alpha-digits32",
    )


@pytest.mark.slow
def test_depthwise_arms_on_convmixer(tmp_path):
    out = str(tmp_path)
    common = [
        "--network",
        "convmixer2k3_frozen",
        "--source-network",
        "convmixer2k5",
        "--batch-norm",
        "on",
    ]
    run(*common, "--init", *_ordered(DEPTHWISE_ARMS), *TINY_BUDGET, "--baseline", "depthwise_default", "--out", out)
    rows = _read(out)
    assert sorted((r["settings"]["network"], r["arm"]) for r in rows) == sorted(
        ("convmixer2k3_frozen", arm) for arm in DEPTHWISE_ARMS
    )
    (source,) = {r["settings"]["source"] for r in rows}
    saved = json.load(open(os.path.join(out, "sources", source.replace(".keras", ".json"))))
    assert saved["settings"]["network"] == "convmixer2k5"
    # the learned arm draws each layer from the source's covariance, resampled 5x5 -> 3x3
    model = networks.build("convmixer2k3", (32, 32, 1), 10, he, batch_norm=True)
    path = os.path.join(out, "sources", source)
    arms.PostBuild("covariance_learned", source_path=path)(model, None, 0)
    learned = arms.load_source(path).depthwise
    assert learned.spatial_shapes == [(5, 5), (5, 5)]
    for depth, name in ((0.0, "depthwise_0"), (1.0, "depthwise_1")):
        init = model.get_layer(name).depthwise_initializer
        np.testing.assert_allclose(
            init.covariance_matrix((3, 3)),
            resample_covariance(learned.covariance_at(depth), (5, 5), (3, 3)),
            atol=1e-12,
        )
    # the control has the arm's per-position variances, independent positions
    control = arms._DiagonalOf(model.get_layer("depthwise_0").depthwise_initializer, seed=0)
    draws = keras.ops.convert_to_numpy(control((3, 3, 4096, 1))).reshape(9, -1)
    expected = np.diag(model.get_layer("depthwise_0").depthwise_initializer.covariance_matrix((3, 3)))
    np.testing.assert_allclose(draws.var(axis=1), expected, rtol=5 * np.sqrt(2 / 4096))
    assert np.max(np.abs(np.corrcoef(draws)[~np.eye(9, dtype=bool)])) < 5 / np.sqrt(4096)


@pytest.mark.slow
def test_the_paper_experiment_example_runs_on_the_public_api(tmp_path, capsys):
    example = load_example("paper_experiment")
    example.main(["--seeds", "1", "--epochs", "1", "--out", str(tmp_path)])
    out = capsys.readouterr().out
    assert "| correlated~var |" in out and os.path.getsize(tmp_path / "curves.png") > 5000
    assert len(_read(str(tmp_path))) == 3


def _coordinate_photograph(height, width):
    """A photograph whose pixels hold their own (row, column)."""
    rows, columns = np.meshgrid(np.arange(height), np.arange(width), indexing="ij")
    return np.stack([rows % 256, columns % 256, rows // 256 * 16 + columns // 256], axis=-1).astype(np.uint8)


def _coordinates(crops):
    crops = crops.astype(np.int64)
    rows = crops[..., 2] // 16 * 256 + crops[..., 0]
    columns = crops[..., 2] % 16 * 256 + crops[..., 1]
    return {(int(r), int(c)) for r, c in zip(rows.ravel(), columns.ravel())}


def test_photo_crops_never_share_a_pixel_between_train_and_test():
    photo = _coordinate_photograph(384, 448)  # shorter side 384: the resize keeps every pixel
    (train, test), (train_corners, test_corners) = datasets.photo_crops([photo, photo], 60, 20, seed=3)
    assert train[0].shape == (120, 32, 32, 3) and test[0].shape == (40, 32, 32, 3)
    np.testing.assert_array_equal(train[1], [0] * 60 + [1] * 60)
    np.testing.assert_array_equal(test[1], [0] * 20 + [1] * 20)
    for crops, corners in ((train[0], train_corners), (test[0], test_corners)):
        for crop, (top, left) in zip(crops, corners):
            np.testing.assert_array_equal(crop, photo[top : top + 32, left : left + 32])
            block = (top // 64, left // 64)
            assert (top + 31) // 64 == block[0] and (left + 31) // 64 == block[1]  # inside one block
    assert not _coordinates(train[0]) & _coordinates(test[0])
    test_blocks = {(top // 64, left // 64) for top, left in test_corners}
    assert all((i + 2 * j) % 4 == 0 for i, j in test_blocks)
    train_blocks, held_out = datasets.photo_blocks(photo.shape)
    # 6 x 7 blocks; (i + 2j) % 4 == 0 holds for i in {0, 4} at even j (4 columns), i = 2 at odd j (3)
    assert len(held_out) == 4 * 2 + 3 * 1 and len(train_blocks) == 6 * 7 - 11


@pytest.mark.slow
def test_photos32_is_ten_shipped_photographs_balanced_and_spatially_correlated():
    (x, y), (x_test, y_test), classes = datasets.load("photos32")
    assert classes == 10 and x.shape == (3000, 32, 32, 3) and x_test.shape == (1000, 32, 32, 3)
    assert np.bincount(y).tolist() == [300] * 10 and np.bincount(y_test).tolist() == [100] * 10
    assert x.dtype == np.float32 and 0.0 <= x.min() and x.max() <= 1.0
    assert datasets.adjacent_pixel_correlation(x) > 0.9


@pytest.mark.slow
def test_the_evidence_arms_set_what_they_say():
    evidence = load_example("evidence_initialize", folder="evidence")
    (x, y), _, classes = datasets.load("digits32")
    builder = compare.NetworkBuilder("small_cnn", (32, 32, 1), classes, False, 0.5, 0.0, "sgd", 0.005, 0.8)

    def prepared(arm):
        model = builder(keras.initializers.HeNormal(seed=0), 0)
        evidence.ARMS[arm](model, (x, y), 0)
        return model

    stem = lambda model: to_numpy(model.layers[1].kernel).reshape(9, 16)  # 3x3x1 patches, 16 filters
    whitened, control = stem(prepared("initialize")), stem(prepared("whitening_control"))
    # The control keeps the whitened filters' norms (up to LSUV's one factor) in random orthonormal +/- pairs.
    ratio = np.linalg.norm(control, axis=0) / np.linalg.norm(whitened, axis=0)
    np.testing.assert_allclose(ratio, ratio[0], rtol=1e-4)
    directions = control / np.linalg.norm(control, axis=0)
    np.testing.assert_allclose(directions[:, 1::2], -directions[:, 0::2], atol=1e-6)
    np.testing.assert_allclose(directions[:, 0::2].T @ directions[:, 0::2], np.eye(8), atol=1e-5)
    assert np.abs(directions[:, 0::2].T @ (whitened / np.linalg.norm(whitened, axis=0))[:, 0::2]).max() < 0.99
    # R = I, the built-in R and the data's R at LSUV scale: three different draws of every convolution.
    kernels = {arm: stem(prepared(arm)) for arm in ("identity_r_lsuv", "builtin_r_lsuv", "data_r_lsuv")}
    for a, b in itertools.combinations(kernels.values(), 2):
        assert not np.allclose(a, b)


@pytest.mark.parametrize("option", ["--max-train", "--max-test", "--seeds", "--epochs", "--batch-size"])
def test_compare_counts_must_be_positive(option, capsys):
    with pytest.raises(SystemExit):
        compare.parser().parse_args([option, "0"])
    assert f"argument {option}: must be an int >= 1; received 0" in capsys.readouterr().err


def test_the_batch_norm_momentum_reaches_every_normalization_and_the_model_digest():
    from keras_corrinit.experiments._identity import model_digest

    def built(bn_momentum):
        builder = compare.NetworkBuilder("mobilenet", (32, 32, 3), 10, True, 0.25, 0.0, "adam", 0.001, 0.0, bn_momentum)
        return builder(keras.initializers.HeNormal(seed=0), 0)

    settled, keras_default = built(0.9), built(0.99)
    norms = [layer for layer in settled.layers if isinstance(layer, keras.layers.BatchNormalization)]
    assert norms and all(layer.get_config()["momentum"] == 0.9 for layer in norms)
    assert model_digest(settled) != model_digest(keras_default)  # part of a run's identity
