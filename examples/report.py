"""results.md and the plots: per-configuration statistics over seeds.

Each table holds the runs that share every setting except the arm's own
(initializer, alpha, R, source, EnhancedGamma base) and the seed. Per arm:
mean +/- std of the final test accuracy over seeds, and the paired
difference to the `--baseline` arm on the same seeds: mean of
`acc(arm, seed) - acc(baseline, seed)` with a 95% confidence interval from
the t distribution with n - 1 degrees of freedom; `*` marks intervals that
exclude 0. Below each table, every correlated arm run with its scale
controls gets a verdict: correlation, scale, or neither.
"""

import hashlib
import json
import math
import os
import statistics

import matplotlib
import numpy as np
from arms import GAMMA_BASES, split_control
from scipy import stats

from keras_corrinit import plot_training_curves

matplotlib.use("Agg")  # files only, no display
import matplotlib.pyplot as plt  # noqa: E402

# Settings that belong to an arm (they label its row); the rest, but the
# seed, are the table's.
ARM_SETTINGS = ("init", "alpha", "correlation", "source", "gamma")


def table_settings(row, settings):
    return tuple((name, row[name]) for name in settings if name not in ARM_SETTINGS + ("seed",))


def arm_label(row):
    label = row["init"]
    extras = [f"{name} {row[name]}" for name in ARM_SETTINGS[1:] if row[name] != "-"]
    return f"{label} ({', '.join(extras)})" if extras else label


def paired_difference(values, baseline):
    """`(mean, half width of the 95% CI, n)` of paired differences.

    `values` and `baseline` are `{seed: accuracy}`; only common seeds count.
    With fewer than 2 pairs the interval is undefined (NaN).
    """
    seeds = sorted(set(values) & set(baseline))
    d = np.array([values[s] - baseline[s] for s in seeds], dtype=np.float64)
    if len(d) < 2:
        return (float(d.mean()) if len(d) else math.nan), math.nan, len(d)
    half = stats.t.ppf(0.975, len(d) - 1) * d.std(ddof=1) / math.sqrt(len(d))
    return float(d.mean()), float(half), len(d)


def _format_difference(mean, half, n):
    if math.isnan(half):
        return "n/a"
    mark = " *" if abs(mean) > half else ""
    return f"{mean:+.4f} [{mean - half:+.4f}, {mean + half:+.4f}]{mark}"


def _by_seed(rows):
    return {int(r["seed"]): float(r["test_accuracy"]) for r in rows}


def verdict(arm, against_he, against_control, control_against_he, base="He"):
    """What a correlated arm's comparisons with He and its scale control say.

    Each argument after `arm` is `(mean, half width, n)` of a paired
    difference: the arm minus uncorrelated He, the arm minus its scale
    control, the control minus He. `base` names the baseline in the
    sentence. Returns a sentence.
    """

    def sign(diff):  # +1 / -1 when the interval excludes 0, else 0
        return 0 if math.isnan(diff[1]) or abs(diff[0]) <= diff[1] else (1 if diff[0] > 0 else -1)

    he, control, scale = sign(against_he), sign(against_control), sign(control_against_he)
    if he > 0:
        if control > 0:
            return f"{arm} beats {base} and its scale control: the gain is the correlation."
        if scale > 0:
            return f"{arm} beats {base}, and so does its scale control: the gain is the scale."
        return (
            f"{arm} beats {base}; against its scale control the difference is not significant: "
            "scale and correlation are not separated here."
        )
    if he < 0:
        if control < 0:
            return f"{arm} is below {base} and below its scale control: the correlation hurts here."
        if scale < 0:
            return f"{arm} is below {base}, and so is its scale control: the loss is the scale."
        return (
            f"{arm} is below {base}; against its scale control the difference is not significant: "
            "scale and correlation are not separated here."
        )
    if control != 0:
        better = "above" if control > 0 else "below"
        return f"{arm} does not differ significantly from {base}, but is {better} its scale control."
    return f"{arm}: no significant difference from {base} or from its scale control."


def _controls_section(table, baseline):
    """A verdict for each arm whose scale control is in the table, against `baseline`."""
    lines = []
    base = "He" if baseline == "uncorrelated" else baseline
    for label, rows in sorted(table.items()):
        name = label.split(" (")[0]
        arm, match = split_control(name)
        if match:
            continue
        control_name = f"{arm}~{'sum' if arm == 'correlated_weight' else 'var'}"
        controls = [
            row_label
            for row_label in table
            if row_label.split(" (")[0] == control_name and row_label.replace(control_name, arm, 1) == label
        ]
        baselines = [row_label for row_label in table if row_label.split(" (")[0] == baseline]
        if not controls or not baselines:
            continue
        values, he_values, control_values = _by_seed(rows), _by_seed(table[baselines[0]]), _by_seed(table[controls[0]])
        against_he = paired_difference(values, he_values)
        against_control = paired_difference(values, control_values)
        control_against_he = paired_difference(control_values, he_values)
        lines.append(
            f"- {verdict(label, against_he, against_control, control_against_he, base)} "
            f"(vs {baseline} {_format_difference(*against_he)}; "
            f"vs {controls[0]} {_format_difference(*against_control)}; "
            f"control vs {baseline} {_format_difference(*control_against_he)})"
        )
    return lines


def summarize(rows, settings, baseline, notes=()):
    """results.md: one table per group of shared settings."""
    groups = {}
    for row in rows:
        groups.setdefault(table_settings(row, settings), {}).setdefault(arm_label(row), []).append(row)
    sections = list(notes)
    for shared, table in sorted(groups.items()):
        heading = ", ".join(f"{name} {value}" for name, value in shared)
        base = [label for label in table if label == baseline]
        base_values = _by_seed(table[base[0]]) if base else {}
        lines = [
            f"### {heading}",
            "",
            f"Curves: `{plot_name(shared)}`",
            "",
            f"| arm | seeds | test accuracy | minus {baseline}, paired, 95% CI | sign changes, epoch 1 |",
            "|---|---|---|---|---|",
        ]
        for label, runs in sorted(table.items()):
            accs = [float(r["test_accuracy"]) for r in runs]
            spread = statistics.stdev(accs) if len(accs) > 1 else 0.0
            diff = (
                "(baseline)"
                if label == baseline
                else (
                    _format_difference(*paired_difference(_by_seed(runs), base_values)) if base else "no baseline runs"
                )
            )
            sign = statistics.mean(float(r["sign_change_epoch1"]) for r in runs)
            lines.append(
                f"| {label} | {len(runs)} | {statistics.mean(accs):.4f} +/- {spread:.4f} | {diff} | {sign:.3f} |"
            )
        verdicts = _controls_section(table, baseline)
        if verdicts:
            lines += ["", "Correlation or scale:", *verdicts]
        sections.append("\n".join(lines))
    return "\n\n".join(sections)


def plot_name(shared, kind="curves"):
    """A table's plot file: data set, network, batch norm and a settings hash."""
    named = dict(shared)
    digest = hashlib.sha256(repr(shared).encode()).hexdigest()[:8]
    return f"{kind}_{named['dataset']}_{named['network']}_bn-{named['batch_norm']}_{digest}.png"


def _histories(rows, out):
    found = {}
    for row in rows:
        found.setdefault(arm_label(row), []).append(_history(row, out))
    return found


def write_plots(rows, settings, out):
    """Figures 4-6 per table, and EnhancedGamma's accuracy ratio to its base."""

    groups = {}
    for row in rows:
        groups.setdefault(table_settings(row, settings), []).append(row)
    written = []
    for shared, group in sorted(groups.items()):
        path = os.path.join(out, plot_name(shared))
        plot_training_curves(_histories(group, out), path)
        written.append(path)
        ratio = _gamma_ratio_plot(group, out, os.path.join(out, plot_name(shared, "gamma-ratio")))
        if ratio:
            written.append(ratio)
    return written


def gamma_ratios(group, out):
    """`{label: (mean, std) per epoch}` of val accuracy enhanced / base, paired by seed."""
    ratios = {}
    by_label = {}
    for row in group:
        by_label.setdefault(arm_label(row), {})[int(row["seed"])] = row
    for label, runs in by_label.items():
        if not label.startswith("enhanced_gamma"):
            continue
        base_arm = GAMMA_BASES[next(iter(runs.values()))["gamma"].split("/")[0]]
        base = by_label.get(base_arm, {})
        seeds = sorted(set(runs) & set(base))
        if not seeds:
            continue
        curves = []
        for seed in seeds:
            enhanced = _history(runs[seed], out)["val_accuracy"]
            reference = _history(base[seed], out)["val_accuracy"]
            curves.append(np.array(enhanced) / np.array(reference))
        curves = np.array(curves)
        ratios[f"{label} / {base_arm}"] = (curves.mean(axis=0), curves.std(axis=0))
    return ratios


def _history(row, out):
    with open(os.path.join(out, "histories", row["run_id"] + ".json")) as f:
        return json.load(f)["history"]


def _gamma_ratio_plot(group, out, path):
    ratios = gamma_ratios(group, out)
    if not ratios:
        return None
    fig, ax = plt.subplots(figsize=(6, 4))
    for label, (mean, std) in ratios.items():
        epochs = np.arange(1, len(mean) + 1)
        ax.plot(epochs, mean, label=label)
        ax.fill_between(epochs, mean - std, mean + std, alpha=0.2)
    ax.axhline(1.0, color="grey", lw=0.8)
    ax.set_xlabel("epoch")
    ax.set_ylabel("test accuracy, enhanced / base")
    ax.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)
    return path


def weight_distances(enhanced, base, base_again):
    """Per layer: Earth mover's distance of EnhancedGamma's weights from the base's.

    Each argument is `{layer: kernel array}` of one model. Returns rows
    `(layer, EMD(enhanced, base) / std(base), EMD(base, base_again) / std(base))`:
    the second is the distance between two independent base draws, the
    sampling noise floor.
    """
    rows = []
    for name in enhanced:
        scale = float(np.std(base[name]))
        rows.append(
            (
                name,
                stats.wasserstein_distance(enhanced[name].ravel(), base[name].ravel()) / scale,
                stats.wasserstein_distance(base_again[name].ravel(), base[name].ravel()) / scale,
            )
        )
    return rows
