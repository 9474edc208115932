import pytest

from keras_corrinit.monitor import plot_training_curves

pytest.importorskip("matplotlib", reason="plots need matplotlib: pip install 'keras_corrinit[plot]'")


def _history(offset):
    return {
        "grad_sign_change": [0.3 + offset, 0.4, 0.45],
        "grad_magnitude": [0.1, 0.08 + offset, 0.05],
        "val_accuracy": [0.5, 0.6, 0.7 + offset],
    }


def test_writes_png_with_bands(tmp_path):
    path = tmp_path / "curves.png"
    runs = {"he": [_history(0.0), _history(0.02)], "correlated": [_history(-0.01), _history(0.01)]}
    assert plot_training_curves(runs, str(path)) == str(path)
    assert path.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n" and path.stat().st_size > 5000


def test_missing_key_names_the_run_and_the_fix(tmp_path):
    with pytest.raises(ValueError, match=r"Run 'he' has no 'grad_magnitude'.*Pass `panels`"):
        plot_training_curves({"he": [{"grad_sign_change": [0.1]}]}, str(tmp_path / "x.png"))
    with pytest.raises(ValueError, match="non-empty"):
        plot_training_curves({}, str(tmp_path / "x.png"))


def test_the_users_plotting_backend_and_figures_are_left_alone(tmp_path):
    import matplotlib
    import matplotlib.pyplot as plt

    original = matplotlib.get_backend()
    plt.close("all")
    matplotlib.use("svg")  # the user's choice, not Agg
    try:
        figure = plt.figure()
        plot_training_curves({"he": [_history(0.0)]}, str(tmp_path / "c.png"))
        assert matplotlib.get_backend() == "svg"
        assert plt.get_fignums() == [figure.number] and plt.gcf() is figure
        assert (tmp_path / "c.png").read_bytes()[:4] == b"\x89PNG"
    finally:
        plt.close("all")
        matplotlib.use(original)
