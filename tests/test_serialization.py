import json
import textwrap

import keras
import numpy as np
import pytest

from conftest import run_in_fresh_process, to_numpy
from keras_corrinit import CorrelatedHeNormal, EnhancedGamma, SpatialCorrelation

INITIALIZERS = {
    "correlated_default": lambda: CorrelatedHeNormal(seed=3),
    "correlated_matrix": lambda: CorrelatedHeNormal(
        SpatialCorrelation.exponential_decay(0.3).matrix_for((3, 3)) * 0.9 + 0.1 * np.eye(9),
        alpha=0.5, variance_mode="weight", seed=3,
    ),
    "correlated_profile": lambda: CorrelatedHeNormal({1: 0.3, 2: 0.1}, strict=True, seed=3),
    "correlated_seedgen": lambda: CorrelatedHeNormal(seed=keras.random.SeedGenerator(5)),
    "gamma_filter": lambda: EnhancedGamma(seed=3),
    "gamma_spatial_uniform": lambda: EnhancedGamma("glorot_uniform", "spatial", seed=3),
}


@pytest.mark.parametrize("name", sorted(INITIALIZERS))
def test_config_is_json_and_reproduces_samples(name):
    init = INITIALIZERS[name]()
    config = init.get_config()
    assert json.loads(json.dumps(config)) == config
    clone = type(init).from_config(config)
    assert clone.get_config() == config
    np.testing.assert_array_equal(to_numpy(clone((3, 3, 4, 8))), to_numpy(init((3, 3, 4, 8))))


@pytest.mark.parametrize("cls", [CorrelatedHeNormal, EnhancedGamma])
def test_keras_initializers_get(cls):
    by_name = keras.initializers.get(f"keras_corrinit>{cls.__name__}")
    assert type(by_name) is cls
    init = cls(seed=4)
    serialized = keras.initializers.serialize(init)
    assert serialized["registered_name"] == f"keras_corrinit>{cls.__name__}"
    restored = keras.initializers.get(json.loads(json.dumps(serialized)))
    assert type(restored) is cls and restored.get_config() == init.get_config()
    np.testing.assert_array_equal(to_numpy(restored((3, 3, 2, 2))), to_numpy(init((3, 3, 2, 2))))


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


def test_clone_model_reinitializes_resnet50_convs():
    base = keras.applications.ResNet50(weights=None, include_top=False, input_shape=(32, 32, 3))

    def reinit(layer):
        config = layer.get_config()
        if isinstance(layer, keras.layers.Conv2D) and max(layer.kernel_size) > 1:
            config["kernel_initializer"] = CorrelatedHeNormal(seed=1)
        return layer.__class__.from_config(config)

    clone = keras.models.clone_model(base, clone_function=reinit)
    spatial = [l for l in clone.layers if isinstance(l, keras.layers.Conv2D) and max(l.kernel_size) > 1]
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
