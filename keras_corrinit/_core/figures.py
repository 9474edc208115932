"""Plots of training curves like the correlated-initialization paper's Figures 4-6.

matplotlib is optional (`pip install "keras_corrinit[plot]"`); it is
imported only when a plot is made. Figures are made with
`matplotlib.figure.Figure` directly, not through pyplot: the user's plotting
backend and pyplot's current figure are left alone.
"""

import numpy as np

__all__ = ["plot_budgets", "plot_correlation_profiles", "plot_training_curves"]

_DEFAULT_PANELS = ("grad_sign_change", "grad_magnitude", "val_accuracy")
_TITLES = {
    "grad_sign_change": "gradient sign changes",
    "grad_magnitude": "gradient magnitude",
    "val_accuracy": "test accuracy",
    "accuracy": "training accuracy",
}


def _figure(**kwargs):
    """A matplotlib Figure outside pyplot's state (it draws with the Agg canvas when saved)."""
    try:
        from matplotlib.figure import Figure
    except ImportError:
        raise ImportError("Plotting needs matplotlib: pip install 'keras_corrinit[plot]'.") from None
    return Figure(**kwargs)


def plot_training_curves(runs, path, panels=_DEFAULT_PANELS):
    """Per-epoch curves, mean +/- one standard deviation over runs.

    Args:
        runs: `{label: [history, ...]}`, each history a `History.history`
            dict (e.g. from `fit` with `GradientSignMonitor`), one per seed.
        path: Image file to write (PNG, PDF, ... by extension).
        panels: Log keys to plot, one panel each. Default: sign changes,
            gradient magnitude and test accuracy.

    Returns:
        `path`.

    Reference:
        Schneider, "Correlated Initialization for Correlated Data"
        (Figures 4-6).
    """
    if not isinstance(runs, dict) or not runs:
        raise ValueError("`runs` must be a non-empty {label: [history, ...]} dict.")
    for label, histories in runs.items():
        for key in panels:
            if any(key not in h for h in histories):
                raise ValueError(
                    f"Run {label!r} has no {key!r} in its history; available: "
                    f"{sorted(histories[0])}. Pass `panels` with keys it logged."
                )
    rows = -(-len(runs) // 3)  # legend rows
    fig = _figure(figsize=(4.5 * len(panels), 3.5 + 0.3 * rows))
    axes = fig.subplots(1, len(panels), squeeze=False)
    for ax, key in zip(axes[0], panels):
        for label, histories in runs.items():
            length = min(len(h[key]) for h in histories)
            values = np.array([h[key][:length] for h in histories], dtype=float)
            epochs = np.arange(1, length + 1)
            mean, std = np.nanmean(values, axis=0), np.nanstd(values, axis=0)
            ax.plot(epochs, mean, label=label)
            ax.fill_between(epochs, mean - std, mean + std, alpha=0.25)
        ax.set_title(_TITLES.get(key, key))
        ax.set_xlabel("epoch")
    # One legend below the panels, where it hides no curve.
    handles, labels = axes[0][0].get_legend_handles_labels()
    fig.legend(handles, labels, loc="lower center", ncol=min(3, len(labels)), fontsize=8, frameon=False)
    fig.tight_layout(rect=(0, min(0.5, 0.07 * rows + 0.02), 1, 1))
    fig.savefig(path, dpi=100)
    return path


def plot_budgets(points, path, metric="accuracy", target=None):
    """Final test metric against the training budget, one line per arm, with 95% intervals.

    Args:
        points: `{arm: [(budget, mean, low, high), ...]}`.
        path: Image file to write.
        metric: The metric's name, for the axis. Default `"accuracy"`.
        target: A horizontal line (the baseline's mean at its largest
            budget); None for none.

    Returns:
        `path`.
    """
    fig = _figure(figsize=(6, 4.2))
    ax = fig.subplots()
    for arm, rows in points.items():
        budgets, mean, low, high = (np.array(column, dtype=float) for column in zip(*rows))
        ax.plot(budgets, mean, marker="o", label=arm)
        ax.fill_between(budgets, np.where(np.isnan(low), mean, low), np.where(np.isnan(high), mean, high), alpha=0.2)
    if target is not None:
        ax.axhline(target, color="gray", linestyle="--", linewidth=1, label="target")
    budgets = sorted({row[0] for rows in points.values() for row in rows})
    ax.set_xscale("log", base=2)
    ax.set_xticks(budgets, [f"{b:g}" for b in budgets])
    ax.set_xlabel("budget (epochs; learning rate decays to 0 at the budget)")
    ax.set_ylabel(f"final test {metric}")
    ax.legend(fontsize=8, frameon=False)
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    return path


def plot_correlation_profiles(curves, path, title=""):
    """Correlation vs distance between kernel positions, one line per curve.

    Args:
        curves: `{label: (distances, values)}`.
        path: Image file to write.
        title: Figure title. Default "".

    Returns:
        `path`.
    """
    fig = _figure(figsize=(5.5, 4))
    ax = fig.subplots()
    for label, (distances, values) in curves.items():
        ax.plot(distances, values, marker="o", label=label)
    ax.axhline(0.0, color="grey", linewidth=0.8)
    ax.set_xlabel("distance between kernel positions")
    ax.set_ylabel("mean correlation")
    ax.set_title(title or "spatial correlation of filter weights")
    ax.legend()
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    return path
