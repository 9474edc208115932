"""`Comparison`: what `compare` found, as numbers, Markdown and plots.

Per arm: the final test metric over seeds; the paired difference to the
baseline on the same seeds with a 95% t interval; the epochs (and seconds)
each seed needed to reach the baseline's final mean metric, which is what a
user feels; and, for an arm run with its scale control, whether its gain is
the correlation or the scale.
"""

import dataclasses
import math

import numpy as np

from keras_corrinit._plots import plot_training_curves
from keras_corrinit._statistics import paired_difference

__all__ = ["Comparison"]


def _significance(diff):
    """+1 / -1 when the interval excludes 0, else 0."""
    if math.isnan(diff["low"]):
        return 0
    return 1 if diff["low"] > 0 else (-1 if diff["high"] < 0 else 0)


def _verdict(arm, baseline, against_baseline, against_control, control_against_baseline):
    """One sentence: what an arm's comparisons with the baseline and its scale control say."""
    base, control, scale = map(_significance, (against_baseline, against_control, control_against_baseline))
    if base != 0:
        word = "beats" if base > 0 else "is below"
        if control == base:
            cause = "the correlation" if base > 0 else "the correlation hurts here"
            return f"{arm} {word} {baseline} and its scale control: {cause}."
        if scale == base:
            return f"{arm} {word} {baseline}, and so {'does' if base > 0 else 'is'} its scale control: it is the scale."
        return (
            f"{arm} {word} {baseline}; against its scale control the difference is not significant: "
            "scale and correlation are not separated here."
        )
    if control != 0:
        return (
            f"{arm} does not differ significantly from {baseline}, but is "
            f"{'above' if control > 0 else 'below'} its scale control."
        )
    return f"{arm}: no significant difference from {baseline} or from its scale control."


@dataclasses.dataclass
class Comparison:
    """The result of `compare`.

    Attributes:
        rows: One dict per run (arm, seed, every setting, `final`, the
            per-epoch `curve` of the test metric, `sign_change` per epoch,
            `epoch_seconds`, `seconds`, `key`), in arm then seed order.
        baseline: The arm the others are compared with.
        metric: The compared metric (higher is better).
        controls: `{arm: its scale control's arm}`.
    """

    rows: list
    baseline: str
    metric: str = "accuracy"
    controls: dict = dataclasses.field(default_factory=dict)

    def arms(self):
        """Arm names in run order (the baseline first)."""
        return list(dict.fromkeys(row["arm"] for row in self.rows))

    def final(self, arm):
        """`{seed: final test metric}` of an arm."""
        found = {row["seed"]: row["final"] for row in self.rows if row["arm"] == arm}
        if not found:
            raise ValueError(f"No arm {arm!r}; the arms are {self.arms()}.")
        return found

    def difference(self, arm, to=None):
        """Paired difference of the final metric to `to` (default the baseline): mean, low, high, n."""
        return paired_difference(self.final(arm), self.final(to or self.baseline))

    def target(self):
        """The baseline's final mean metric: what the epochs-to-target count towards."""
        return float(np.mean(list(self.final(self.baseline).values())))

    def epochs_to_target(self, arm):
        """Epochs (and seconds) each seed of `arm` needed to reach `target()`.

        Seconds count from the run's start: building the model and the
        arm's preparation (a data-aware initialization's measuring and
        LSUV passes) are included, so an arm that costs time before its
        first epoch is charged for it.

        Returns:
            `{"per_seed": {seed: epoch or None}, "mean_epochs", "mean_seconds",
            "reached", "n"}`; the means are over the seeds that reached it
            (NaN if none did).
        """
        target, per_seed, seconds = self.target(), {}, []
        for row in self.rows:
            if row["arm"] != arm:
                continue
            epoch = next((i + 1 for i, v in enumerate(row["curve"]) if v >= target - 1e-12), None)
            per_seed[row["seed"]] = epoch
            if epoch is not None:
                # `epoch_seconds` count from fit's start; the run's other time (build, the arm's
                # preparation) is `seconds` less the last of them.
                before_fit = row["seconds"] - row["epoch_seconds"][-1]
                seconds.append(before_fit + row["epoch_seconds"][epoch - 1])
        reached = [e for e in per_seed.values() if e is not None]
        return {
            "per_seed": per_seed,
            "mean_epochs": float(np.mean(reached)) if reached else math.nan,
            "mean_seconds": float(np.mean(seconds)) if seconds else math.nan,
            "reached": len(reached),
            "n": len(per_seed),
        }

    def verdicts(self):
        """`{arm: sentence}` for every arm run with its scale control."""
        return {
            arm: _verdict(
                arm,
                self.baseline,
                self.difference(arm),
                self.difference(arm, to=control),
                self.difference(control),
            )
            for arm, control in self.controls.items()
            if arm != self.baseline
        }

    def to_markdown(self):
        """A table (one row per arm) and the verdicts, in Markdown."""
        target = self.target()
        lines = [
            f"Final test {self.metric} over seeds; paired difference to `{self.baseline}` on the same seeds "
            f"(95% t interval, `*`: excludes 0); epochs to reach `{self.baseline}`'s final mean "
            f'{self.metric} ({target:.4f}), mean over the seeds that reached it ("never": no seed did; '
            "`reached` says how many of the seeds the mean is over).",
            "",
            f"| arm | {self.metric} (mean +/- std) | difference to {self.baseline} | epochs to target | "
            "seconds to target | reached |",
            "|---|---|---|---|---|---|",
        ]
        for arm in self.arms():
            values = np.array(list(self.final(arm).values()))
            d = self.difference(arm)
            if arm == self.baseline or math.isnan(d["low"]):
                difference = "-" if arm == self.baseline else "n/a (one seed)"
            else:
                mark = " *" if _significance(d) else ""
                difference = f"{d['mean']:+.4f} [{d['low']:+.4f}, {d['high']:+.4f}]{mark}"
            e = self.epochs_to_target(arm)
            lines.append(
                f"| {arm} | {values.mean():.4f} +/- {values.std(ddof=1) if len(values) > 1 else 0:.4f} | "
                f"{difference} | {_or_never(e['mean_epochs'])} | {_or_never(e['mean_seconds'])} | "
                f"{e['reached']}/{e['n']} |"
            )
        verdicts = self.verdicts()
        if verdicts:
            lines += ["", "Correlation or scale:", ""] + [f"- {sentence}" for sentence in verdicts.values()]
        return "\n".join(lines)

    def _repr_markdown_(self):
        return self.to_markdown()

    def __str__(self):
        return self.to_markdown()

    def plot(self, path):
        """Per-epoch test metric (and sign changes, if recorded), mean +/- std per arm; returns `path`."""
        key = f"val_{self.metric}"
        runs = {}
        for row in self.rows:
            history = {key: row["curve"]}
            if row["sign_change"]:
                history["grad_sign_change"] = row["sign_change"]
            runs.setdefault(row["arm"], []).append(history)
        panels = (("grad_sign_change",) if all(row["sign_change"] for row in self.rows) else ()) + (key,)
        return plot_training_curves(runs, path, panels=panels)


def _or_never(value):
    """A mean over the seeds that reached the target, or "never" where none did (not `nan`)."""
    return "never" if math.isnan(value) else f"{value:.1f}"
