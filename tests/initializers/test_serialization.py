import json
import textwrap
import zipfile

import keras
import numpy as np
import pytest

from conftest import run_in_fresh_process, to_numpy
from keras_corrinit import CorrelatedHeNormal, EnhancedGamma, NFMInit, PatchWhitening, SpatialCorrelation
from keras_corrinit.extraction import DepthwiseCovariance, correlation_from_kernels
from keras_corrinit.initializers import ConstructedFilterCovariance, FilterCovariance

INITIALIZERS = {
    "correlated_default": lambda: CorrelatedHeNormal(seed=3),
    "correlated_matrix": lambda: CorrelatedHeNormal(
        SpatialCorrelation.exponential_decay(0.3).matrix_for((3, 3)) * 0.9 + 0.1 * np.eye(9),
        alpha=0.5,
        variance_mode="weight",
        seed=3,
    ),
    "correlated_profile": lambda: CorrelatedHeNormal({1: 0.3, 2: 0.1}, strict=True, seed=3),
    "correlated_seedgen": lambda: CorrelatedHeNormal(seed=keras.random.SeedGenerator(5)),
    "gamma_filter": lambda: EnhancedGamma(seed=3),
    "gamma_spatial_uniform": lambda: EnhancedGamma("glorot_uniform", "spatial", seed=3),
    "nfm_kaiming": lambda: NFMInit.from_kernel(np.random.default_rng(0).normal(size=(3, 3, 4, 6)), seed=3),
    "nfm_none": lambda: NFMInit.from_kernel(np.random.default_rng(1).normal(size=(3, 3, 4, 6)), "none", seed=3),
    "filter_covariance": lambda: FilterCovariance(np.eye(9) * 0.1 + 0.02, seed=3),
    "constructed": lambda: ConstructedFilterCovariance(0.3, sigma=0.7, gain=2.0, seed=np.int64(3)),
    "patch_whitening": lambda: PatchWhitening.from_data(np.random.default_rng(2).normal(size=(8, 6, 6, 4)), 3),
}
PUBLIC_INITIALIZERS = [
    CorrelatedHeNormal,
    EnhancedGamma,
    NFMInit,
    FilterCovariance,
    ConstructedFilterCovariance,
    PatchWhitening,
]


@pytest.mark.parametrize("name", sorted(INITIALIZERS))
def test_config_is_json_and_reproduces_samples(name):
    init = INITIALIZERS[name]()
    config = init.get_config()
    assert json.loads(json.dumps(config)) == config
    clone = type(init).from_config(config)
    assert clone.get_config() == config
    np.testing.assert_array_equal(to_numpy(clone((3, 3, 4, 8))), to_numpy(init((3, 3, 4, 8))))


def test_every_public_initializer_is_covered():
    covered = {type(make()) for make in INITIALIZERS.values()}
    assert covered == set(PUBLIC_INITIALIZERS)


@pytest.mark.parametrize("name", sorted(INITIALIZERS))
def test_keras_file_round_trip_with_safe_mode(name, tmp_path):
    init = INITIALIZERS[name]()
    model = keras.Sequential([keras.Input((6, 6, 4)), keras.layers.Conv2D(6, 3, kernel_initializer=init, name="c")])
    path = tmp_path / "m.keras"
    model.save(path)
    loaded = keras.saving.load_model(path, safe_mode=True)
    restored = loaded.get_layer("c").kernel_initializer
    assert type(restored) is type(init) and restored.get_config() == init.get_config()
    np.testing.assert_array_equal(to_numpy(loaded.get_layer("c").kernel), to_numpy(model.get_layer("c").kernel))
    if not isinstance(getattr(init, "seed", None), keras.random.SeedGenerator):  # a generator moves on
        np.testing.assert_array_equal(to_numpy(restored((3, 3, 4, 6))), to_numpy(init((3, 3, 4, 6))))


@pytest.mark.parametrize(
    "make",
    [
        lambda: SpatialCorrelation.exponential_decay(0.3),
        lambda: SpatialCorrelation.from_profile([1, 2], [0.4, 0.1]),
        lambda: SpatialCorrelation.from_matrix(np.eye(9) * 0.5 + 0.5),
        lambda: correlation_from_kernels({"a": np.random.default_rng(0).normal(size=(3, 3, 4, 4))}, source="s"),
        lambda: DepthwiseCovariance(["a", "b"], [(3, 3), (5, 5)], [np.eye(9), np.eye(25) * 2], [4, 8], "s"),
    ],
    ids=["exponential", "profile", "matrix", "estimate", "depthwise"],
)
def test_every_container_round_trips_through_json(make):
    container = make()
    config = container.get_config()
    assert json.loads(json.dumps(config)) == config
    clone = type(container).from_config(json.loads(json.dumps(config)))
    assert clone.get_config() == config
    assert not hasattr(container, "to_config")  # deprecated in 0.3, removed in 0.4.0
    with pytest.raises((ValueError, TypeError)):
        type(container).from_config({**config, "unknown_key": 1})


@pytest.mark.parametrize("cls", PUBLIC_INITIALIZERS)
def test_keras_initializers_get(cls):
    make = next(make for make in INITIALIZERS.values() if type(make()) is cls)
    init = make()
    serialized = keras.initializers.serialize(init)
    assert serialized["registered_name"] == f"keras_corrinit>{cls.__name__}"
    restored = keras.initializers.get(json.loads(json.dumps(serialized)))
    assert type(restored) is cls and restored.get_config() == init.get_config()
    np.testing.assert_array_equal(to_numpy(restored((3, 3, 4, 2))), to_numpy(init((3, 3, 4, 2))))


def _model():
    inputs = keras.Input((12, 12, 3))
    x = keras.layers.Conv2D(8, 3, kernel_initializer=INITIALIZERS["correlated_matrix"](), name="c1")(inputs)
    x = keras.layers.Conv2D(8, 5, kernel_initializer=INITIALIZERS["correlated_profile"](), name="c2")(x)
    x = keras.layers.Conv2D(8, 3, kernel_initializer=INITIALIZERS["gamma_spatial_uniform"](), name="c3")(x)
    x = keras.layers.GlobalAveragePooling2D()(x)
    outputs = keras.layers.Dense(3, kernel_initializer=INITIALIZERS["gamma_filter"](), name="d")(x)
    return keras.Model(inputs, outputs)


_LOAD_SCRIPT = textwrap.dedent(
    """
    import json, sys
    import numpy as np
    import keras
    import keras_corrinit  # registers the initializers
    model = keras.models.load_model(sys.argv[1], safe_mode=True)
    np.savez(sys.argv[2], *[keras.ops.convert_to_numpy(w) for w in model.weights])
    configs = {l.name: keras.initializers.serialize(getattr(l, "kernel_initializer"))
               for l in model.layers if hasattr(l, "kernel_initializer")}
    print(json.dumps(configs))
    """
)


@pytest.mark.slow
def test_keras_file_round_trip_in_fresh_process(tmp_path):
    model = _model()
    model.compile("sgd", "mse")
    path = str(tmp_path / "model.keras")
    model.save(path)
    out = run_in_fresh_process(_LOAD_SCRIPT, path, tmp_path / "w.npz")
    configs = json.loads(out.strip().splitlines()[-1])
    loaded = np.load(tmp_path / "w.npz")
    for i, weight in enumerate(model.weights):
        np.testing.assert_array_equal(loaded[f"arr_{i}"], to_numpy(weight))
    for layer in model.layers:
        if hasattr(layer, "kernel_initializer"):
            expected = json.loads(json.dumps(keras.initializers.serialize(layer.kernel_initializer)))
            assert configs[layer.name] == expected
    assert configs["c1"]["class_name"] == "CorrelatedHeNormal"
    assert configs["c1"]["config"]["alpha"] == 0.5


@pytest.mark.slow
def test_model_export(tmp_path):
    model = _model()
    x = np.random.default_rng(0).normal(size=(2, 12, 12, 3)).astype("float32")
    expected = to_numpy(model(x))
    if keras.backend.backend() == "torch":
        # Keras's SavedModel export from torch needs torch_xla; torch's own
        # export (what Keras builds on) is the backend-native artifact.
        import torch

        program = torch.export.export(model, (torch.from_numpy(x),))
        torch.export.save(program, str(tmp_path / "model.pt2"))
        exported = torch.export.load(str(tmp_path / "model.pt2")).module()
        got = exported(torch.from_numpy(x)).detach().numpy()
    else:
        model.export(str(tmp_path / "saved"), format="tf_saved_model")
        import tensorflow as tf

        reloaded = tf.saved_model.load(str(tmp_path / "saved"))  # keep alive while serving
        got = reloaded.serve(x).numpy()
    np.testing.assert_allclose(got, expected, rtol=1e-5, atol=1e-5)


@pytest.mark.slow
def test_clone_model_reinitializes_resnet50_convs():
    base = keras.applications.ResNet50(weights=None, include_top=False, input_shape=(32, 32, 3))

    def reinit(layer):
        config = layer.get_config()
        if isinstance(layer, keras.layers.Conv2D) and max(layer.kernel_size) > 1:
            config["kernel_initializer"] = CorrelatedHeNormal(seed=1)
        return layer.__class__.from_config(config)

    clone = keras.models.clone_model(base, clone_function=reinit)
    spatial = [layer for layer in clone.layers if isinstance(layer, keras.layers.Conv2D) and max(layer.kernel_size) > 1]
    assert len(spatial) == 17  # the 7x7 stem and 16 bottleneck 3x3 convs
    for layer in spatial:
        assert isinstance(layer.kernel_initializer, CorrelatedHeNormal)
        w = to_numpy(layer.kernel)
        k = layer.kernel_size
        r = layer.kernel_initializer.correlation_matrix(k)
        fan_in = k[0] * k[1] * w.shape[2]
        expected_var = 2 * len(r) / (r.sum() * fan_in)
        n = w.shape[2] * w.shape[3]
        assert abs(w.var() / expected_var - 1) < 5 * np.sqrt(2 / n)


# ------------------------------------------------------- tampered .keras files
def _tampered_model_file(tmp_path, layer, change):
    """Saves a model, edits `layer`'s kernel_initializer config, returns the path."""
    inputs = keras.Input((8, 8, 4))
    x = keras.layers.Conv2D(
        4, 3, name="correlated", kernel_initializer=CorrelatedHeNormal(np.eye(9) * 0.5 + 0.5, seed=1)
    )(inputs)
    x = keras.layers.Conv2D(4, 3, name="gamma", kernel_initializer=EnhancedGamma(seed=1))(x)
    outputs = keras.layers.Conv2D(
        2, 3, name="nfm", kernel_initializer=NFMInit.from_kernel(np.arange(72.0).reshape(3, 3, 4, 2), seed=1)
    )(x)
    original, tampered = tmp_path / "original.keras", tmp_path / "tampered.keras"
    keras.Model(inputs, outputs).save(original)
    with zipfile.ZipFile(original) as archive:
        files = {name: archive.read(name) for name in archive.namelist()}
    config = json.loads(files["config.json"])
    [layer_config] = [c for c in config["config"]["layers"] if c["config"]["name"] == layer]
    change(layer_config["config"]["kernel_initializer"]["config"])
    files["config.json"] = json.dumps(config).encode()
    with zipfile.ZipFile(tampered, "w") as archive:
        for name, data in files.items():
            archive.writestr(name, data)
    return tampered


def _set(key, value):
    return lambda config: config.__setitem__(key, value)


def _set_matrix_entry(config):
    config["correlation"]["matrix"][0][1] = config["correlation"]["matrix"][1][0] = float("nan")


@pytest.mark.parametrize(
    "layer, change, message",
    [
        (
            "correlated",
            _set(
                "correlation", {"kind": "matrix", "matrix": np.eye(1100, dtype=int).tolist(), "spatial_shape": [1100]}
            ),
            "`matrix` has 1100 spatial positions; this package supports at most 1024",
        ),
        ("correlated", _set_matrix_entry, "`matrix` contains NaN or Inf entries"),
        ("correlated", _set("alpha", "abc"), "`alpha` must be a finite number >= 0; received 'abc'"),
        ("correlated", _set("strict", "no"), "`strict` must be a bool"),
        ("correlated", _set("correlation", "rho=0.5"), "`correlation` must be a SpatialCorrelation"),
        (
            "correlated",
            _set("correlation", {"kind": "exponential", "rho": 0.5, "extra": 1}),
            r"A 'exponential' SpatialCorrelation config needs exactly the keys \['rho'\]",
        ),
        (
            "correlated",
            _set("correlation", {"kind": "__import__", "name": "os"}),
            "Unknown SpatialCorrelation kind '__import__'",
        ),
        ("correlated", _set("evil", 1), r"Unknown keys \['evil'\] in a CorrelatedHeNormal config"),
        ("gamma", _set("base", 3), "`base` must be one of"),
        ("gamma", _set("seed", 1.5), "`seed` must be an int, None or a keras.random.SeedGenerator"),
        ("nfm", _set("spatial_shape", "ab"), "`spatial_shape` must be a tuple of positive ints"),
        ("nfm", _set("in_channels", "4"), "`in_channels` must be an int"),
        ("nfm", _set("factor", [[float("inf")] * 2] * 36), "`factor` contains NaN or Inf"),
        (
            "nfm",
            lambda config: config.update(factor=np.ones((4096, 1)).tolist(), spatial_shape=[4096], in_channels=1),
            r"`spatial_shape` \(4096,\) has 4096 spatial positions; this package supports at most 1024",
        ),
        (
            "nfm",
            lambda config: config.update(factor=(np.ones((36, 2)) * 1e200).tolist(), scaling="none"),
            r"`factor` \(with scaling='none'\) give weights with a standard deviation of 1.41e\+200, "
            "beyond what float32 holds",
        ),
        ("nfm", _set("in_channels", np.int64(4).item() + 0.5), "`in_channels` must be an int"),
    ],
)
def test_tampered_initializer_config_fails_to_load_clearly(tmp_path, layer, change, message):
    path = _tampered_model_file(tmp_path, layer, change)
    # Keras wraps the initializer's error in a TypeError that ends with it.
    with pytest.raises(TypeError, match=f"Exception encountered: {message}"):
        keras.saving.load_model(path, safe_mode=True)


def test_tampered_alpha_fails_when_the_layer_is_built(tmp_path):
    # alpha's valid range depends on the kernel's correlation matrix, known
    # once the layer builds: the error comes from there, unwrapped.
    path = _tampered_model_file(tmp_path, "correlated", _set("alpha", 1e300))
    with pytest.raises(
        ValueError,
        match=r"`alpha`=1e\+300 scales off-diagonal correlations up to 5e\+299, outside \[-1, 1\]\. "
        r"For this correlation use alpha <= 2",
    ):
        keras.saving.load_model(path, safe_mode=True)


@pytest.mark.parametrize(
    "seed",
    [
        {"module": "os", "class_name": "system", "config": {"command": "touch {marker}"}, "registered_name": None},
        {"module": "keras.random", "class_name": "SeedGenerator", "config": {"seed": 1, "state": "touch {marker}"}},
        {"module": "builtins", "class_name": "SeedGenerator", "config": "touch {marker}"},
    ],
)
def test_config_cannot_make_loading_import_or_call_anything(tmp_path, seed):
    marker = tmp_path / "executed"
    seed = json.loads(json.dumps(seed).replace("{marker}", str(marker)))
    path = _tampered_model_file(tmp_path, "correlated", _set("seed", seed))
    with pytest.raises(TypeError, match="A dict `seed` must be a serialized keras.random.SeedGenerator"):
        keras.saving.load_model(path, safe_mode=True)
    assert not marker.exists()


def test_untampered_file_loads_with_safe_mode(tmp_path):
    path = _tampered_model_file(tmp_path, "gamma", lambda config: None)
    model = keras.saving.load_model(path, safe_mode=True)
    assert type(model.get_layer("nfm").kernel_initializer) is NFMInit
