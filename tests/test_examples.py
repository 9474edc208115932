import csv
import os
import sys

import numpy as np

sys.path.insert(0, os.path.join(os.path.dirname(__file__), "..", "examples"))
import quickstart  # noqa: E402


def test_digits_are_the_real_shipped_data():
    (x_train, y_train), (x_test, y_test) = quickstart.load_digits()
    assert x_train.shape[1:] == (8, 8, 1) and len(x_train) + len(x_test) == 1797
    assert set(np.unique(y_train)) == set(range(10))
    assert 0.0 <= x_train.min() and x_train.max() == 1.0


def test_quickstart_writes_table_and_plot(tmp_path, capsys):
    quickstart.main(["--seeds", "2", "--epochs", "1", "--out", str(tmp_path)])
    with open(tmp_path / "results.csv") as f:
        rows = list(csv.DictReader(f))
    assert [(r["initializer"], r["seed"]) for r in rows] == [
        (name, str(seed)) for name in quickstart.INITIALIZERS for seed in range(2)
    ]
    assert all(0.0 <= float(r["test_accuracy"]) <= 1.0 for r in rows)
    assert (tmp_path / "curves.png").stat().st_size > 1000
    printed = capsys.readouterr().out
    for name in quickstart.INITIALIZERS:
        assert f"| {name} | " in printed
