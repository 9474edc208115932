import csv
import json
import math
import os
import sys

import keras
import numpy as np
import pytest

from conftest import to_numpy
from keras_corrinit import resample_covariance

# The examples need the `examples` extra; without it these tests are skipped, saying so.
stats = pytest.importorskip("scipy.stats", reason="needs scipy: pip install 'keras_corrinit[examples]'")
pytest.importorskip("sklearn", reason="needs scikit-learn: pip install 'keras_corrinit[examples]'")
pytest.importorskip("matplotlib", reason="needs matplotlib: pip install 'keras_corrinit[examples]'")
pytest.importorskip("tensorflow_datasets", reason="needs tensorflow-datasets: pip install 'keras_corrinit[examples]'")

sys.path.insert(0, os.path.join(os.path.dirname(__file__), "..", "examples"))
import arms  # noqa: E402
import compare  # noqa: E402
import datasets  # noqa: E402
import networks  # noqa: E402
import report  # noqa: E402


def he():
    return keras.initializers.HeNormal(seed=0)


def _weight_layers(model):
    return [layer for layer in model.layers if isinstance(layer, (keras.layers.Conv2D, keras.layers.Dense))]


@pytest.mark.parametrize(
    "name, expected",
    [("vgg8", 8), ("vgg16", 16), ("vgg19", 19), ("resnet10", 10), ("resnet18", 18), ("resnet34", 34)],
)
def test_documented_weight_layer_counts(name, expected):
    model = networks.build(name, (32, 32, 3), 10, he, batch_norm=True, width=0.25)
    layers = _weight_layers(model)
    projections = [layer for layer in layers if isinstance(layer, keras.layers.Conv2D) and layer.kernel_size == (1, 1)]
    assert len(layers) - len(projections) == expected
    assert len(projections) == (3 if name.startswith("resnet") else 0)


def test_vgg8_parameter_count_at_half_width_without_batch_norm():
    model = networks.build("vgg8", (32, 32, 3), 10, he, batch_norm=False, width=0.5)
    channels = [32, 64, 128, 128, 256, 256]
    convs = sum(9 * c_in * c_out + c_out for c_in, c_out in zip([3] + channels[:-1], channels))
    flat = 256 * 2 * 2  # 32x32 after four poolings
    dense = flat * 256 + 256 + 256 * 10 + 10
    assert model.count_params() == convs + dense


def test_resnet10_parameter_count_with_batch_norm():
    model = networks.build("resnet10", (32, 32, 3), 10, he, batch_norm=True, width=0.5)
    bn = lambda c: 4 * c  # gamma, beta, moving mean and variance
    total = 9 * 3 * 32 + bn(32)
    c_in = 32
    for c in [32, 64, 128, 256]:
        total += 9 * c_in * c + bn(c) + 9 * c * c + bn(c)
        if c != c_in:
            total += c_in * c + bn(c)
        c_in = c
    total += 256 * 10 + 10
    assert model.count_params() == total


def _read(out):
    with open(os.path.join(out, "results.csv")) as f:
        return list(csv.DictReader(f))


def test_main_job_end_to_end_and_resumable(tmp_path, capsys):
    out = str(tmp_path)
    args = ["--seeds", "2", "--epochs", "2", "--max-train", "256", "--out", out]
    compare.main(args)
    rows = _read(out)
    default_arms = ["uncorrelated", "correlated", "correlated~var", "correlated_weight", "correlated_weight~sum"]
    assert sorted((r["init"], r["seed"]) for r in rows) == sorted((a, s) for a in default_arms for s in ["0", "1"])
    assert {(r["backend"], r["lr"], r["epochs"], r["max_train"], r["batch_norm"]) for r in rows} == {
        (keras.backend.backend(), "0.005", "2", "256", "off")
    }
    assert {r["alpha"] for r in rows if r["init"] == "uncorrelated"} == {"-"}
    assert {r["correlation"] for r in rows if r["init"] != "uncorrelated"} == {"builtin"}
    saved = json.load(open(os.path.join(out, "histories", rows[0]["run_id"] + ".json")))
    assert saved["settings"] == {name: rows[0][name] for name in compare.SETTINGS}
    assert len(saved["history"]["grad_sign_change"]) == 2 and len(saved["history"]["val_accuracy"]) == 2
    table = open(os.path.join(out, "results.md")).read()
    assert "- digits: 8x8 inputs, mean correlation of adjacent pixels 0.54" in table
    assert "| uncorrelated | 2 |" in table and "(baseline)" in table
    assert "Correlation or scale:" in table and "- correlated (alpha 1.0, correlation builtin)" in table
    shared = {report.table_settings(r, compare.SETTINGS) for r in rows}
    assert len(shared) == 1
    assert os.path.getsize(os.path.join(out, report.plot_name(shared.pop()))) > 5000
    capsys.readouterr()
    compare.main(args)
    assert "10 runs planned, 10 already in" in capsys.readouterr().out
    assert len(_read(out)) == 10


def test_a_changed_setting_is_a_new_run_reported_separately(tmp_path, capsys):
    out = str(tmp_path)
    base = ["--init", "uncorrelated", "--seeds", "1", "--epochs", "1", "--max-train", "128", "--out", out]
    compare.main(base + ["--lr", "0.005"])
    capsys.readouterr()
    compare.main(base + ["--lr", "0.1"])
    assert "1 runs planned, 0 already in" in capsys.readouterr().out
    rows = _read(out)
    assert sorted(r["lr"] for r in rows) == ["0.005", "0.1"]
    assert len({r["run_id"] for r in rows}) == 2
    assert rows[0]["test_accuracy"] != rows[1]["test_accuracy"]
    sections = open(os.path.join(out, "results.md")).read().split("### ")[1:]
    assert len(sections) == 2
    for section, lr, row in zip(sections, ["0.005", "0.1"], rows):
        assert f"lr {lr}," in section.splitlines()[0]
        assert f"| uncorrelated | 1 | {float(row['test_accuracy']):.4f} +/- 0.0000 |" in section
    # every setting is part of the identity
    run = compare.plan(compare.parse_args(base))[0]
    for name, other in [
        ("epochs", 2),
        ("l2", 0.001),
        ("alpha", 0.5),
        ("width", 0.5),
        ("batch_size", 64),
        ("correlation", "r.json#0123456789ab"),
        ("momentum", 0.9),
        ("backend", "other"),
        ("max_train", None),
        ("source", "abc"),
        ("gamma", "he_uniform/filter"),
        ("optimizer", "adam"),
    ]:
        assert compare.run_id({**run, name: other}) != compare.run_id(run), name
    pngs = sorted(f for f in os.listdir(out) if f.endswith(".png"))
    assert len(pngs) == 2 and all(f.startswith("curves_digits_small_cnn_bn-off_") for f in pngs)


def test_results_from_an_older_version_are_refused(tmp_path):
    with open(tmp_path / "results.csv", "w") as f:
        f.write("dataset,network,batch_norm,init,seed,test_accuracy,seconds\n")
        f.write("digits,small_cnn,off,he_normal,0,0.97,3.0\n")
    with pytest.raises(
        ValueError,
        match=r"results.csv was written by another version of this script.*"
        r"missing: \['backend', 'max_train'.*Pass a new --out",
    ):
        compare.main(["--out", str(tmp_path), "--seeds", "1", "--epochs", "1"])


# One seed, one epoch, a few samples: enough to run every code path.
TINY_BUDGET = ["--seeds", "1", "--epochs", "1", "--max-train", "96", "--max-test", "64", "--source-epochs", "1"]
PLAIN_NETWORK_ARMS = [arm for arm in arms.ARMS if not arms.needs_depthwise(arm)]
DEPTHWISE_ARMS = [arm for arm in arms.ARMS if arms.needs_depthwise(arm)]


def test_every_arm_and_the_two_stage_path(tmp_path, capsys):
    out = str(tmp_path)
    args = ["--init", *PLAIN_NETWORK_ARMS, *TINY_BUDGET, "--out", out]
    compare.main(args)
    rows = _read(out)
    assert sorted(r["init"] for r in rows) == sorted(PLAIN_NETWORK_ARMS)
    sources = {r["source"] for r in rows if arms.uses_source(r["init"])}
    assert len(sources) == 1 and {r["source"] for r in rows if not arms.uses_source(r["init"])} == {"-"}
    (source,) = sources
    saved = json.load(open(os.path.join(out, "sources", source + ".json")))
    assert saved["settings"]["epochs"] == "1" and saved["settings"]["network"] == "small_cnn"
    assert {r["gamma"] for r in rows if r["init"] == "enhanced_gamma"} == {"he_normal/filter"}
    assert all(0 <= float(r["test_accuracy"]) <= 1 for r in rows)
    table = open(os.path.join(out, "results.md")).read()
    assert "EnhancedGamma (he_normal, filter) at initialization" in table
    assert any(f.startswith("gamma-ratio_") for f in os.listdir(out))
    # the source is trained once: a second sweep of learned arms reuses it
    stamp = os.path.getmtime(os.path.join(out, "sources", source + ".keras"))
    compare.main(
        [
            "--init",
            "correlated_learned",
            "--alpha",
            "0.5",
            "--seeds",
            "1",
            "--epochs",
            "1",
            "--max-train",
            "96",
            "--max-test",
            "64",
            "--source-epochs",
            "1",
            "--out",
            out,
        ]
    )
    assert os.path.getmtime(os.path.join(out, "sources", source + ".keras")) == stamp
    assert len(os.listdir(os.path.join(out, "sources"))) == 2  # .keras and .json of one source


def test_learned_arms_use_the_source(tmp_path):
    source_model = networks.build(
        "small_cnn", (8, 8, 1), 10, arms.layer_factory("uncorrelated", 3, arms.Context()), batch_norm=False
    )
    source = arms.Source(source_model, "test")
    data = datasets.load("digits", max_train=64)
    context = arms.Context(source=source)
    run = dict(network="small_cnn", width=1.0, batch_norm="off", l2=0.0, seed=0)
    learned = compare.build_model({**run, "init": "correlated_learned"}, data, context)
    assert learned.layers[1].kernel_initializer.correlation == source.estimate.to_correlation("matrix")
    layerwise = compare.build_model({**run, "init": "correlated_layerwise"}, data, context)
    convs = [layer for layer in layerwise.layers if isinstance(layer, keras.layers.Conv2D)]
    for layer, name in zip(convs, source.estimate.layer_names):
        np.testing.assert_allclose(
            layer.kernel_initializer.correlation_matrix((3, 3)), source.estimate.layer_matrices[name], atol=1e-12
        )
    nfm = compare.build_model({**run, "init": "nfm_kaiming"}, data, context)
    for layer, src in zip(arms._kernel_layers(nfm), arms._kernel_layers(source_model)):
        w = to_numpy(layer.kernel).reshape(-1, layer.kernel.shape[-1])
        basis, _ = np.linalg.qr(to_numpy(src.kernel).reshape(-1, src.kernel.shape[-1]))
        assert np.abs(w - basis @ (basis.T @ w)).max() < 1e-4 * np.abs(w).max()  # in the source's span


def _sample_variance_check(w, variance):
    # mean of n squared N(0, v) draws: standard error v sqrt(2 / n)
    assert abs((w**2).mean() - variance) < 5 * variance * math.sqrt(2 / w.size)


def test_scale_controls_have_the_formula_variances():
    r = arms.CorrelatedHeNormal().correlation_matrix((3, 3))  # the built-in R
    shape, fan_in = (3, 3, 64, 128), 9 * 64
    context = arms.Context()
    factory = lambda name: arms.layer_factory(name, 0, context)()
    # correlated (filter mode): per-weight variance 2 P / (sum(R) fan_in)
    filter_var = 2 * 9 / (r.sum() * fan_in)
    _sample_variance_check(to_numpy(factory("correlated")(shape)), filter_var)
    control = factory("correlated~var")
    assert control.variance(shape) == pytest.approx(filter_var, rel=1e-12)
    w = to_numpy(control(shape))
    _sample_variance_check(w, filter_var)
    assert abs(np.corrcoef(w.reshape(9, -1))[0, 1]) < 5 / math.sqrt(64 * 128)  # uncorrelated
    # correlated_weight: filter sum variance sum(R) 2 / fan_in, so He scaled by sum(R) / P
    control = factory("correlated_weight~sum")
    assert control.variance(shape) == pytest.approx(2 / fan_in * r.sum() / 9, rel=1e-12)
    w = to_numpy(control(shape)).reshape(9, -1)
    sums = w.sum(axis=0)
    assert abs(sums.var() - r.sum() * 2 / fan_in) < 5 * r.sum() * 2 / fan_in * math.sqrt(2 / sums.size)
    # Dense kernels have one position: every control is He there
    assert factory("correlated~var").variance((100, 10)) == pytest.approx(2 / 100)


def test_paired_difference_against_a_hand_computation():
    values = {0: 0.90, 1: 0.80, 2: 0.85, 7: 0.5}
    baseline = {0: 0.85, 1: 0.80, 2: 0.80}
    mean, half, n = report.paired_difference(values, baseline)
    # differences 0.05, 0, 0.05: mean 1/30, sd 0.0288675, t(0.975, 2) = 4.302653
    assert n == 3
    assert mean == pytest.approx(1 / 30)
    assert half == pytest.approx(4.302653 * 0.0288675 / math.sqrt(3), rel=1e-5)
    assert stats.t.ppf(0.975, 2) == pytest.approx(4.302653, rel=1e-6)
    assert math.isnan(report.paired_difference({0: 1.0}, {0: 0.5})[1])


UP, DOWN, FLAT = (0.02, 0.01, 5), (-0.02, 0.01, 5), (0.005, 0.01, 5)


@pytest.mark.parametrize(
    "against_he, against_control, control_against_he, expected",
    [
        (UP, UP, FLAT, "the gain is the correlation"),
        (UP, FLAT, UP, "and so does its scale control: the gain is the scale"),
        (UP, FLAT, FLAT, "scale and correlation are not separated here"),
        (DOWN, DOWN, FLAT, "the correlation hurts here"),
        (DOWN, FLAT, DOWN, "and so is its scale control: the loss is the scale"),
        (DOWN, FLAT, FLAT, "scale and correlation are not separated here"),
        (FLAT, UP, DOWN, "does not differ significantly from He, but is above its scale control"),
        (FLAT, FLAT, FLAT, "no significant difference"),
    ],
)
def test_verdicts(against_he, against_control, control_against_he, expected):
    assert expected in report.verdict("correlated", against_he, against_control, control_against_he)


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


def test_weight_distances():
    rng = np.random.default_rng(0)
    base = {"a": rng.normal(size=20000)}
    rows = report.weight_distances({"a": base["a"] + 0.5}, base, {"a": base["a"]})
    ((name, distance, floor),) = rows
    assert name == "a" and distance == pytest.approx(0.5 / base["a"].std()) and floor == 0.0


def test_tfds_datasets_with_mock_data(tmp_path):
    import tensorflow_datasets as tfds

    out = str(tmp_path)
    with tfds.testing.mock_data(num_examples=64):
        compare.main(
            [
                "--dataset",
                "cifar10",
                "--network",
                "resnet10",
                "--width",
                "0.125",
                "--init",
                "correlated",
                "lsuv",
                "--batch-norm",
                "on",
                "--seeds",
                "1",
                "--epochs",
                "1",
                "--batch-size",
                "32",
                "--out",
                out,
            ]
        )
    rows = _read(out)
    assert sorted((r["network"], r["init"]) for r in rows) == [("resnet10", "correlated"), ("resnet10", "lsuv")]
    assert os.path.exists(os.path.join(out, report.plot_name(report.table_settings(rows[0], compare.SETTINGS))))


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


def test_unknown_names():
    with pytest.raises(ValueError, match="Unknown network 'vgg7'"):
        networks.build("vgg7", (8, 8, 1), 10, he)
    with pytest.raises(SystemExit):
        compare.parse_args(["--init", "xavier"])


def test_summary_tables_from_a_results_file(tmp_path):
    import summary

    base = compare.plan(compare.parse_args(["--init", "uncorrelated", "--seeds", "3"]))
    accuracies = {
        "uncorrelated": [0.90, 0.80, 0.85],
        "correlated": [0.95, 0.80, 0.90],
        "correlated_weight": [0.40, 0.90, 0.95],
    }
    for init, values in accuracies.items():
        for run, accuracy in zip(base, values):
            row = {**run, "init": init, "alpha": 1.0 if init != "uncorrelated" else "-"}
            compare.append_result(
                str(tmp_path / "results.csv"),
                {
                    **row,
                    "run_id": compare.run_id(row),
                    "test_accuracy": accuracy,
                    "sign_change_epoch1": 0.3,
                    "seconds": 1.0,
                },
            )
    table = summary.versus_baseline([str(tmp_path)], ["correlated", "correlated_weight"])
    # correlated - uncorrelated: 0.05, 0, 0.05 (mean 1/30, as in the hand computation above)
    half = 4.302653 * 0.0288675 / math.sqrt(3)
    assert f"| +0.0333 [{1 / 30 - half:+.4f}, {1 / 30 + half:+.4f}] |" in table
    text = summary.comparisons([str(tmp_path)])
    assert "correlated_weight vs correlated: significantly above in 0 tables, below in 0, neither in 1." in text
    assert "Diverged (test accuracy < 0.5): correlated_weight on digits, batch norm off, lr 0.005: 1 runs." in text


def test_depthwise_arms_on_convmixer(tmp_path):
    out = str(tmp_path)
    common = [
        "--network",
        "convmixer2k3",
        "convmixer2k3_frozen",
        "--source-network",
        "convmixer2k5",
        "--batch-norm",
        "on",
    ]
    compare.main([*common, "--init", *DEPTHWISE_ARMS, *TINY_BUDGET, "--baseline", "depthwise_default", "--out", out])
    rows = _read(out)
    assert sorted((r["network"], r["init"]) for r in rows) == sorted(
        (network, arm) for network in ("convmixer2k3", "convmixer2k3_frozen") for arm in DEPTHWISE_ARMS
    )
    (source_id,) = {r["source"] for r in rows if r["init"].startswith("covariance_learned")}
    saved = json.load(open(os.path.join(out, "sources", source_id + ".json")))
    assert saved["settings"]["network"] == "convmixer2k5"
    # the learned arm draws each layer from the source's covariance, resampled 5x5 -> 3x3
    runner = compare.Runner(
        compare.parse_args(
            [
                *common,
                "--init",
                "covariance_learned",
                "--out",
                out,
                "--source-epochs",
                "1",
                "--max-train",
                "96",
                "--max-test",
                "64",
            ]
        )
    )
    run = [r for r in compare.plan(runner.args) if r["network"] == "convmixer2k3"][0]
    context = runner.context(run)
    model = compare.build_model(run, runner.dataset(run["dataset"]), context)
    learned = context.source.depthwise
    assert learned.spatial_shapes == [(5, 5), (5, 5)]
    for depth, name in ((0.0, "depthwise_0"), (1.0, "depthwise_1")):
        init = model.get_layer(name).depthwise_initializer
        np.testing.assert_allclose(
            init.covariance_matrix((3, 3)),
            resample_covariance(learned.covariance_at(depth), (5, 5), (3, 3)),
            atol=1e-12,
        )
    # the control has the arm's per-position variances, independent positions
    control = arms.DiagonalOf(model.get_layer("depthwise_0").depthwise_initializer, seed=0)
    draws = keras.ops.convert_to_numpy(control((3, 3, 4096, 1))).reshape(9, -1)
    expected = np.diag(model.get_layer("depthwise_0").depthwise_initializer.covariance_matrix((3, 3)))
    np.testing.assert_allclose(draws.var(axis=1), expected, rtol=5 * np.sqrt(2 / 4096))
    assert np.max(np.abs(np.corrcoef(draws)[~np.eye(9, dtype=bool)])) < 5 / np.sqrt(4096)


def test_depthwise_arms_need_a_convmixer(capsys):
    with pytest.raises(SystemExit):
        compare.parse_args(["--init", "covariance_closed_form"])
    assert "set depthwise convolutions, which ['the default networks'] do not have" in capsys.readouterr().err
    with pytest.raises(SystemExit):
        compare.parse_args(
            ["--network", "convmixer2k3", "--init", "covariance_learned", "--source-network", "small_cnn"]
        )
    assert "covariance_learned needs a ConvMixer source" in capsys.readouterr().err
