import csv
import json
import os
import sys

import keras
import numpy as np
import pytest

sys.path.insert(0, os.path.join(os.path.dirname(__file__), "..", "examples"))
import compare  # noqa: E402
import networks  # noqa: E402


def he():
    return keras.initializers.HeNormal(seed=0)


def _weight_layers(model):
    return [l for l in model.layers if isinstance(l, (keras.layers.Conv2D, keras.layers.Dense))]


@pytest.mark.parametrize(
    "name, expected",
    [("vgg8", 8), ("vgg16", 16), ("vgg19", 19), ("resnet10", 10), ("resnet18", 18), ("resnet34", 34)],
)
def test_documented_weight_layer_counts(name, expected):
    model = networks.build(name, (32, 32, 3), 10, he, batch_norm=True, width=0.25)
    layers = _weight_layers(model)
    projections = [l for l in layers if isinstance(l, keras.layers.Conv2D) and l.kernel_size == (1, 1)]
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
    bn = lambda c: 4 * c  # noqa: E731  gamma, beta, moving mean and variance
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


def test_digits_comparison_end_to_end_and_resumable(tmp_path, capsys):
    out = str(tmp_path)
    args = ["--init", "correlated", "--seeds", "2", "--epochs", "2", "--max-train", "256", "--out", out]
    compare.main(args)
    rows = _read(out)
    assert len(rows) == 2 * 2  # batch norm x seeds
    assert {(r["init"], r["batch_norm"], r["seed"]) for r in rows} == {
        ("correlated", b, s) for b in ["off", "on"] for s in ["0", "1"]
    }
    assert all(0 <= float(r["test_accuracy"]) <= 1 for r in rows)
    history = json.load(open(os.path.join(out, "histories", compare.run_key(rows[0]) + ".json")))
    assert len(history["grad_sign_change"]) == 2 and len(history["val_accuracy"]) == 2
    table = open(os.path.join(out, "results.md")).read()
    assert "| digits | small_cnn | off | correlated | 2 |" in table
    for bn in ["off", "on"]:
        assert os.path.getsize(os.path.join(out, f"curves_digits_small_cnn_bn-{bn}.png")) > 5000
    capsys.readouterr()
    compare.main(args)
    assert "4 runs planned, 4 already in" in capsys.readouterr().out
    assert len(_read(out)) == 4


def test_tfds_datasets_with_mock_data(tmp_path):
    import tensorflow_datasets as tfds

    out = str(tmp_path)
    with tfds.testing.mock_data(num_examples=64):
        compare.main([
            "--dataset", "cifar10", "--network", "resnet10", "--width", "0.125",
            "--init", "correlated", "lsuv", "--batch-norm", "on", "--seeds", "1", "--epochs", "1",
            "--batch-size", "32", "--out", out,
        ])
    rows = _read(out)
    assert sorted((r["network"], r["init"]) for r in rows) == [("resnet10", "correlated"), ("resnet10", "lsuv")]
    assert os.path.exists(os.path.join(out, "curves_cifar10_resnet10_bn-on.png"))


def test_tfds_failure_says_what_to_download_and_where(tmp_path, monkeypatch):
    import tensorflow_datasets as tfds

    def offline(*args, **kwargs):
        raise ConnectionError("Failed to establish a new connection")

    monkeypatch.setattr(tfds, "load", offline)
    with pytest.raises(ValueError, match=r"could not load 'svhn_cropped'.*tfds.load\('svhn_cropped'\).*--data-dir"):
        compare.load("svhn", data_dir=str(tmp_path))


def test_digits_are_the_real_shipped_data():
    (x_train, y_train), (x_test, y_test), classes = compare.load_digits()
    assert x_train.shape[1:] == (8, 8, 1) and len(x_train) + len(x_test) == 1797 and classes == 10
    assert set(np.unique(y_train)) == set(range(10))


def test_unknown_names():
    with pytest.raises(ValueError, match="Unknown network 'vgg7'"):
        networks.build("vgg7", (8, 8, 1), 10, he)
    with pytest.raises(ValueError, match="Unknown initializer 'xavier'"):
        compare.initializer_factory("xavier", 0)
