import json
import math
import os
import textwrap
import zipfile

import keras
import numpy as np
import pytest

from conftest import run_in_fresh_process, to_numpy
from keras_corrinit import CorrelatedHeNormal, SpatialCorrelation, correlation_from_application, correlation_from_model
from keras_corrinit.correlation import matrix_profile
from keras_corrinit.extraction import CorrelationEstimate, correlation_from_kernels, spatial_kernels
from keras_corrinit.layerwise import apply_initializers
from keras_corrinit_cli import main as cli_main

Z = 5.0


def _planted_rho(i, n):
    return 0.1 + 0.7 * i / (n - 1)  # correlation rises with depth, as in the paper


@pytest.fixture(scope="module")
def planted_vgg16(tmp_path_factory):
    """VGG16 (no top) whose 13 3x3 kernels have known, layer-specific R."""
    keras.backend.clear_session()
    model = keras.applications.VGG16(weights=None, include_top=False, input_shape=(32, 32, 3))
    convs = [layer for layer in model.layers if isinstance(layer, keras.layers.Conv2D)]
    planted = {}
    for i, layer in enumerate(convs):
        r = SpatialCorrelation.exponential_decay(_planted_rho(i, len(convs)))
        layer.kernel.assign(CorrelatedHeNormal(r, seed=i)(tuple(layer.kernel.shape)))
        planted[layer.name] = (r.matrix_for((3, 3)), layer.kernel.shape[2] * layer.kernel.shape[3])
    path = tmp_path_factory.mktemp("weights") / "vgg16_planted.weights.h5"
    model.save_weights(str(path))
    return model, planted, str(path)


def _check_recovery(estimate, planted):
    assert estimate.layer_names == list(planted)
    for name, (r, n) in planted.items():
        assert estimate.counts[name] == n
        np.testing.assert_allclose(estimate.layer_matrices[name], r, atol=Z / math.sqrt(n))
        d, v, _ = estimate.profile(name)
        d_ref, v_ref, _ = matrix_profile(r, (3, 3))
        np.testing.assert_allclose(d, d_ref)
        np.testing.assert_allclose(v, v_ref, atol=Z / math.sqrt(n))
    total = sum(n for _, n in planted.values())
    pooled = sum(r * n for r, n in planted.values()) / total
    np.testing.assert_allclose(estimate.matrix, pooled, atol=Z / math.sqrt(total) + 1e-3)


@pytest.mark.slow
def test_correlation_from_model_recovers_planted_matrices(planted_vgg16):
    model, planted, _ = planted_vgg16
    _check_recovery(correlation_from_model(model), planted)


@pytest.mark.slow
def test_application_from_weights_file_and_cache(planted_vgg16, tmp_path, monkeypatch):
    _, planted, path = planted_vgg16
    cache = tmp_path / "cache"
    first = correlation_from_application("vgg16", weights=path, cache_dir=str(cache), verbose=0)
    assert not first.cached and first.source == "VGG16 (vgg16_planted.weights.h5)"
    _check_recovery(first, planted)
    assert len(os.listdir(cache)) == 1

    def no_model(*args, **kwargs):
        raise AssertionError("the cache should have answered without building a model")

    monkeypatch.setattr(keras.applications, "VGG16", no_model)
    second = correlation_from_application("VGG16", weights=path, cache_dir=str(cache), verbose=0)
    assert second.cached
    np.testing.assert_array_equal(second.matrix, first.matrix)
    assert second.layer_names == first.layer_names


def test_depth_groups_and_profiles_rise_with_depth(planted_vgg16):
    estimate = correlation_from_model(planted_vgg16[0])
    groups = estimate.depth_groups()
    assert list(groups) == ["early", "middle", "late"]
    assert sum(len(v) for v in groups.values()) == 13 and groups["early"][0] == "block1_conv1"
    adjacent = {g: p[1][0] for g, p in estimate.depth_profiles().items()}
    assert adjacent["early"] < adjacent["middle"] < adjacent["late"]
    assert estimate.depth("block1_conv1") == 0.0 and estimate.depth("block5_conv3") == 1.0


def test_conversions_and_json_round_trip(planted_vgg16, tmp_path):
    estimate = correlation_from_model(planted_vgg16[0])
    np.testing.assert_allclose(estimate.to_correlation().matrix_for((3, 3)), estimate.matrix, atol=1e-12)
    profile = estimate.to_correlation("profile")
    assert profile.matrix_for((5, 5)).shape == (25, 25)
    path = tmp_path / "r.json"
    estimate.save(path)
    loaded = CorrelationEstimate.load(path)
    assert loaded.get_config() == json.loads(path.read_text())
    np.testing.assert_array_equal(loaded.matrix, estimate.matrix)
    # the initializer takes the estimate directly (its pooled matrix)
    w = to_numpy(CorrelatedHeNormal(estimate, seed=1)((3, 3, 64, 64)))
    r_hat = np.corrcoef(w.reshape(9, -1))
    np.testing.assert_allclose(r_hat, estimate.matrix, atol=Z / 64)


@pytest.mark.slow
def test_layerwise_initialization_and_self_contained_config(planted_vgg16, tmp_path):
    source, planted, _ = planted_vgg16
    estimate = correlation_from_model(source)
    target = keras.applications.VGG16(weights=None, include_top=False, input_shape=(32, 32, 3))
    initializers = estimate.layerwise_initializers(target, seed=3)
    apply_initializers(target, initializers)
    for name, (r, n) in planted.items():
        layer = target.get_layer(name)
        w = to_numpy(layer.kernel)
        # the sample estimates the source estimate: two sampling errors
        np.testing.assert_allclose(np.corrcoef(w.reshape(9, -1)), r, atol=2 * Z / math.sqrt(n))
        config = keras.initializers.serialize(layer.kernel_initializer)
        np.testing.assert_allclose(config["config"]["correlation"]["matrix"], estimate.layer_matrices[name], atol=1e-12)
    with pytest.raises(ValueError, match="has 2 conv layers with kernel size .* pass `mapping="):
        estimate.layerwise_initializers(
            keras.Sequential([keras.Input((8, 8, 3)), keras.layers.Conv2D(2, 3), keras.layers.Conv2D(2, 3)])
        )


def _dense_only():
    return keras.Sequential([keras.Input((4,)), keras.layers.Dense(2)])


@pytest.mark.parametrize(
    "call, error, message",
    [
        (
            lambda: correlation_from_application("ResNet51"),
            ValueError,
            r"Unknown application 'ResNet51'. Valid names: .*ResNet50.*VGG16",
        ),
        (
            lambda: correlation_from_application("VGG16", weights="/nonexistent/w.h5"),
            ValueError,
            r"`weights` file '/nonexistent/w.h5' does not exist",
        ),
        (lambda: correlation_from_model(_dense_only()), ValueError, r"no conv layer with kernel size \(3, 3\)"),
        (
            lambda: correlation_from_model(_dense_only(), kernel_size=1),
            ValueError,
            "`kernel_size` must have at least 2 positions",
        ),
        (lambda: correlation_from_model(_dense_only(), layer_filter=3), TypeError, "`layer_filter` must be None"),
    ],
    ids=["unknown-application", "missing-weights-file", "no-conv-layer", "one-position", "layer-filter-type"],
)
def test_errors(call, error, message):
    with pytest.raises(error, match=message):
        call()


@pytest.mark.slow
def test_layer_filter_and_depthwise():
    model = keras.Sequential(
        [
            keras.Input((8, 8, 3)),
            keras.layers.Conv2D(4, 3, name="keep_a"),
            keras.layers.DepthwiseConv2D(3, depth_multiplier=8, name="dw"),
            keras.layers.Conv2D(4, 3, name="drop_b"),
        ]
    )
    assert correlation_from_model(model, layer_filter="keep").layer_names == ["keep_a"]
    assert correlation_from_model(model).layer_names == ["keep_a", "drop_b"]
    assert correlation_from_model(model, include_depthwise=True).layer_names == ["keep_a", "dw", "drop_b"]


_OFFLINE = textwrap.dedent(
    """
    import sys
    import keras_corrinit
    try:
        keras_corrinit.correlation_from_application("VGG16", verbose=0)
    except ConnectionError as e:
        print(e)
    """
)


@pytest.mark.slow
def test_failed_download_says_which_file_to_place_where(tmp_path, monkeypatch):
    # a proxy on a closed local port makes the real download fail at once
    monkeypatch.setenv("KERAS_HOME", str(tmp_path))
    monkeypatch.setenv("HTTPS_PROXY", "http://127.0.0.1:9")
    monkeypatch.setenv("https_proxy", "http://127.0.0.1:9")
    message = run_in_fresh_process(_OFFLINE)
    expected = os.path.join(str(tmp_path), "models", "vgg16_weights_tf_dim_ordering_tf_kernels_notop.h5")
    assert "Could not download the ImageNet weights of VGG16" in message
    assert f"save it as {expected}" in message
    assert "https://storage.googleapis.com/" in message


def test_cli_writes_the_estimate_and_the_plot(planted_vgg16, tmp_path, capsys, monkeypatch):
    _, planted, path = planted_vgg16
    monkeypatch.setenv("KERAS_HOME", str(tmp_path / "home"))
    out, png = tmp_path / "r.json", tmp_path / "fig1.png"
    assert cli_main(["extract", path, "--application", "VGG16", "--out", str(out), "--plot", str(png)]) == 0
    _check_recovery(CorrelationEstimate.load(out), planted)
    assert png.read_bytes()[:4] == b"\x89PNG"
    printed = capsys.readouterr().out
    assert "13 layers with 3x3 kernels" in printed and "distance 1.000" in printed


def test_cli_answers_a_second_call_from_the_cache(planted_vgg16, tmp_path, capsys, monkeypatch):
    _, _, path = planted_vgg16
    monkeypatch.setenv("KERAS_HOME", str(tmp_path / "home"))
    out = tmp_path / "r.json"
    assert cli_main(["extract", path, "--application", "VGG16", "--out", str(out)]) == 0
    assert "(cached)" not in capsys.readouterr().out
    assert cli_main(["extract", "VGG16", "--weights", path, "--out", str(out)]) == 0
    assert "(cached)" in capsys.readouterr().out


def test_cli_reads_a_keras_file(planted_vgg16, tmp_path):
    model, _, _ = planted_vgg16
    keras_file, out = tmp_path / "m.keras", tmp_path / "r.json"
    model.save(str(keras_file))
    assert cli_main(["extract", str(keras_file), "--out", str(out)]) == 0
    np.testing.assert_allclose(CorrelationEstimate.load(out).matrix, correlation_from_model(model).matrix, atol=1e-12)


@pytest.mark.parametrize(
    "source, extra, message",
    [
        ("ResNet51", [], "Unknown application 'ResNet51'"),
        ("weights.h5", [], "holds weights only; name the architecture with --application"),
    ],
)
def test_cli_errors_exit_2_with_the_reason(tmp_path, capsys, source, extra, message):
    assert cli_main(["extract", source, "--out", str(tmp_path / "r.json"), *extra]) == 2
    assert message in capsys.readouterr().err


def _cache_file(cache):
    [name] = os.listdir(cache)
    return cache / name


def test_a_cache_that_is_not_an_estimate_is_recomputed_with_a_warning(planted_vgg16, tmp_path):
    _, planted, path = planted_vgg16
    cache = tmp_path / "cache"
    correlation_from_application("vgg16", weights=path, cache_dir=str(cache), verbose=0)
    config = json.loads(_cache_file(cache).read_text())
    config["matrix"] = np.full((9, 9), 5.0).tolist()
    _cache_file(cache).write_text(json.dumps(config))
    with pytest.warns(
        UserWarning, match=r"Ignoring the cache file .*VGG16.*json': `matrix` is not a correlation matrix"
    ):
        estimate = correlation_from_application("vgg16", weights=path, cache_dir=str(cache), verbose=0)
    assert not estimate.cached
    _check_recovery(estimate, planted)
    assert correlation_from_application("vgg16", weights=path, cache_dir=str(cache), verbose=0).cached  # replaced


def test_a_corrupt_cache_names_the_file(planted_vgg16, tmp_path):
    _, _, path = planted_vgg16
    cache = tmp_path / "cache"
    correlation_from_application("vgg16", weights=path, cache_dir=str(cache), verbose=0)
    _cache_file(cache).write_text("{not json")
    with pytest.warns(UserWarning, match=r"Ignoring the cache file '.*VGG16-.*\.json': Expecting property name"):
        assert not correlation_from_application("vgg16", weights=path, cache_dir=str(cache), verbose=0).cached


def test_an_unusable_cache_dir_warns_before_the_work_and_keeps_the_result(planted_vgg16, tmp_path):
    _, planted, path = planted_vgg16
    blocked = tmp_path / "a_file"
    blocked.write_text("")  # a file where the folder should be: not writable, even for root
    with pytest.warns(UserWarning, match=r"The cache directory '.*a_file' is not writable"):
        estimate = correlation_from_application("vgg16", weights=path, cache_dir=str(blocked), verbose=0)
    _check_recovery(estimate, planted)


def test_an_estimate_saved_by_0_2_0_still_loads(tmp_path):
    estimate = correlation_from_kernels({"a": RNG_KERNEL})
    old = {("per_layer" if key == "layer_matrices" else key): value for key, value in estimate.get_config().items()}
    (tmp_path / "old.json").write_text(json.dumps(old))
    loaded = CorrelationEstimate.load(tmp_path / "old.json")
    np.testing.assert_array_equal(loaded.layer_matrices["a"], estimate.layer_matrices["a"])
    assert not hasattr(loaded, "per_layer")  # the deprecated attribute: removed in 0.4.0


def test_estimate_configs_are_checked():
    estimate = correlation_from_kernels({"a": RNG_KERNEL})
    config = estimate.get_config()
    assert CorrelationEstimate.from_config(config).get_config() == config
    bad = [
        ({**config, "evil": 1}, ValueError, "A CorrelationEstimate config is a dict with the keys"),
        ({**config, "spatial_shape": [33, 33]}, ValueError, "has 1089 spatial positions"),
        (
            {**config, "layer_matrices": {"b": config["layer_matrices"]["a"]}},
            ValueError,
            "must name exactly its layers",
        ),
        ({**config, "matrix": [[1.0]]}, ValueError, r"`matrix` must be \(9, 9\)"),
        ({**config, "counts": {"a": "many"}}, TypeError, "`counts` must be an int"),
    ]
    for tampered, error, message in bad:
        with pytest.raises(error, match=message):
            CorrelationEstimate.from_config(tampered)


def test_correlation_from_kernels_matches_model_and_checks_shapes(planted_vgg16):
    model = planted_vgg16[0]
    kernels = dict(spatial_kernels(model))
    direct = correlation_from_kernels(kernels, source="arrays")
    np.testing.assert_array_equal(direct.matrix, correlation_from_model(model).matrix)
    with pytest.raises(ValueError, match=r"one spatial shape; received spatial shapes \[\(3, 3\), \(5, 5\)\]"):
        correlation_from_kernels({"a": np.ones((3, 3, 2, 2)), "b": np.ones((5, 5, 2, 2))})
    with pytest.raises(ValueError, match="non-empty"):
        correlation_from_kernels({})
    constant = {"flat": np.ones((3, 3, 4, 4)), "ok": RNG_KERNEL}
    with pytest.warns(UserWarning, match="Layer 'flat' is skipped"):
        assert correlation_from_kernels(constant).layer_names == ["ok"]


RNG_KERNEL = np.random.default_rng(1).normal(size=(3, 3, 4, 4))


def _refuse_work(*args, **kwargs):
    raise AssertionError("the CLI should have refused before any work")


@pytest.mark.parametrize(
    "extra, message",
    [
        (["--out", "/no/such/folder/r.json"], "--out '/no/such/folder/r.json': the folder '/no/such/folder' does not"),
        (["--plot", "fig.xyz"], "--plot 'fig.xyz': use one of the extensions"),
    ],
)
def test_cli_checks_its_outputs_before_any_work(tmp_path, capsys, monkeypatch, extra, message):
    monkeypatch.setattr(keras.applications, "VGG16", _refuse_work)
    args = ["extract", "VGG16", "--out", str(tmp_path / "r.json"), "--no-cache", *extra]
    assert cli_main(args) == 2
    assert message in capsys.readouterr().err


def test_cli_names_a_corrupt_weights_file(tmp_path, capsys):
    corrupt = tmp_path / "broken.weights.h5"
    corrupt.write_bytes(os.urandom(4096))
    assert cli_main(["extract", str(corrupt), "--application", "VGG16", "--out", str(tmp_path / "r.json")]) == 2
    err = capsys.readouterr().err
    assert f"Could not load `weights` {str(corrupt)!r} into VGG16(include_top=False)" in err
    assert "Traceback" not in err


def test_cli_says_a_random_file_is_not_a_keras_file(tmp_path, capsys):
    junk = tmp_path / "junk.keras"
    junk.write_bytes(os.urandom(4096))
    assert cli_main(["extract", str(junk), "--out", str(tmp_path / "r.json")]) == 2
    err = capsys.readouterr().err
    assert f"Could not load the model file {str(junk)!r}: it is not a .keras file (not a zip archive)" in err
    assert "File not found" not in err


def test_cli_errors_are_short_even_when_keras_quotes_a_huge_config(tmp_path, capsys):
    # A tampered file whose initializer config holds a 1089 x 1089 matrix:
    # Keras's error quotes the whole config (megabytes); the CLI prints 2000
    # characters of it at most.
    init = CorrelatedHeNormal(np.eye(9) * 0.5 + 0.5, seed=1)
    model = keras.Sequential([keras.Input((8, 8, 2)), keras.layers.Conv2D(2, 3, kernel_initializer=init)])
    original, tampered = tmp_path / "m.keras", tmp_path / "tampered.keras"
    model.save(original)
    with zipfile.ZipFile(original) as archive:
        files = {name: archive.read(name) for name in archive.namelist()}
    config = json.loads(files["config.json"])
    layer = config["config"]["layers"][-1]["config"]
    layer["kernel_initializer"]["config"]["correlation"] = {
        "kind": "matrix",
        "matrix": np.eye(1089).tolist(),
        "spatial_shape": [33, 33],
    }
    files["config.json"] = json.dumps(config).encode()
    with zipfile.ZipFile(tampered, "w") as archive:
        for name, data in files.items():
            archive.writestr(name, data)
    assert cli_main(["extract", str(tampered), "--out", str(tmp_path / "r.json")]) == 2
    err = capsys.readouterr().err
    assert "Could not load the model file" in err
    assert len(err) < 2600
