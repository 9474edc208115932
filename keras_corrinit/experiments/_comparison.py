"""`Comparison`: what `compare` found, as numbers, Markdown and plots.

Per arm: the final test metric over seeds; the paired difference to the
baseline on the same seeds with a 95% t interval; and, for an arm run with
its scale control, whether its gain is the correlation or the scale.

Time to accuracy, two ways. Under the budget protocol (`compare(...,
budgets=[...])`, every run annealed to a zero learning rate at its budget)
`budget_to_target` is the smallest budget whose mean final metric reaches
the baseline's at the largest budget: what a user with a schedule feels.
Without budgets, `epochs_to_target` counts the first epoch at which a
constant-rate run crosses the baseline's final mean; it flatters an arm
that starts fast, since the baseline is still rising at its last epoch.
"""

import dataclasses
import math

import numpy as np

from keras_corrinit._core.figures import plot_budgets, plot_training_curves
from keras_corrinit.experiments._statistics import mean_interval, paired_difference

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
        budgets: The budgets (epochs) of the budget protocol, ascending;
            None for constant-rate runs of one length.
    """

    rows: list
    baseline: str
    metric: str = "accuracy"
    controls: dict = dataclasses.field(default_factory=dict)
    budgets: list = None

    def arms(self):
        """Arm names in run order (the baseline first)."""
        return list(dict.fromkeys(row["arm"] for row in self.rows))

    def final(self, arm, budget=None):
        """`{seed: final test metric}` of an arm (under budgets: at `budget`, default the largest)."""
        if budget is None:
            budget = max(self.budgets) if self.budgets else None
        elif not self.budgets or budget not in self.budgets:
            raise ValueError(f"No budget {budget!r}; the budgets are {self.budgets}.")
        found = {
            row["seed"]: row["final"]
            for row in self.rows
            if row["arm"] == arm and (budget is None or row["epochs"] == budget)
        }
        if not found:
            raise ValueError(f"No arm {arm!r}; the arms are {self.arms()}.")
        return found

    def difference(self, arm, to=None, budget=None):
        """Paired difference of the final metric to `to` (default the baseline): mean, low, high, n.

        Under budgets: at `budget` (default the largest).
        """
        return paired_difference(self.final(arm, budget), self.final(to or self.baseline, budget))

    def target(self):
        """The baseline's final mean metric (under budgets: at the largest): what time-to-target counts towards."""
        return float(np.mean(list(self.final(self.baseline).values())))

    def budget_to_target(self, arm):
        """The budget protocol's time to accuracy of `arm` (needs `compare(..., budgets=...)`).

        Returns:
            `{"budget", "fraction", "mean", "low", "high", "n", "seconds"}`
            at the smallest budget whose mean final metric over the seeds
            reaches `target()`: `fraction` is that budget over the largest,
            `low`/`high` a 95% t interval of the mean there, `seconds` the
            mean wall time of its runs (building the model and the arm's
            preparation, e.g. a data-aware initialization, included). None
            when no budget reaches it.
        """
        if not self.budgets:
            raise ValueError("`budget_to_target` needs runs under the budget protocol: compare(..., budgets=[...]).")
        target = self.target()
        for budget in self.budgets:
            finals = self.final(arm, budget)
            interval = mean_interval(finals.values())
            if interval["mean"] >= target - 1e-12:
                seconds = [r["seconds"] for r in self.rows if r["arm"] == arm and r["epochs"] == budget]
                return {
                    **interval,
                    "budget": budget,
                    "fraction": budget / max(self.budgets),
                    "seconds": float(np.mean(seconds)),
                }
        return None

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
        if self.budgets:
            raise ValueError(
                "`epochs_to_target` reads constant-rate runs; under the budget protocol use `budget_to_target`."
            )
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
        lines = self._budget_table() if self.budgets else self._epoch_table()
        verdicts = self.verdicts()
        if verdicts:
            lines += ["", "Correlation or scale:", ""] + [f"- {sentence}" for sentence in verdicts.values()]
        return "\n".join(lines)

    def _difference_text(self, arm, budget=None):
        d = self.difference(arm, budget=budget)
        if arm == self.baseline:
            return "-"
        if math.isnan(d["low"]):
            return "n/a (one seed)"
        mark = " *" if _significance(d) else ""
        return f"{d['mean']:+.4f} [{d['low']:+.4f}, {d['high']:+.4f}]{mark}"

    def _budget_table(self):
        target, largest = self.target(), max(self.budgets)
        n = len(self.final(self.baseline))
        lines = [
            f"Budget protocol: each run trains B epochs, its learning rate decaying linearly from the compiled "
            f"rate to 0 at its last step. Final test {self.metric}, mean over {n} seeds, per budget B; paired "
            f"difference to `{self.baseline}` at B = {largest} (95% t interval, `*`: excludes 0); epochs to "
            f"target: the smallest B whose mean reaches `{self.baseline}`'s at B = {largest} ({target:.4f}), with "
            "the mean and 95% interval there, the fraction of the largest budget, and its runs' mean seconds "
            '(initialization included); "never": no budget reaches it.',
            "",
            "| arm | "
            + " | ".join(f"B={b}" for b in self.budgets)
            + f" | difference to {self.baseline} at B={largest} "
            "| epochs to target | fraction | accuracy there | seconds |",
            "|---|" + "---|" * len(self.budgets) + "---|---|---|---|---|",
        ]
        for arm in self.arms():
            means = [float(np.mean(list(self.final(arm, b).values()))) for b in self.budgets]
            reached = self.budget_to_target(arm)
            if reached is None:
                there = ["never", "-", "-", "-"]
            else:
                interval = (
                    f"{reached['mean']:.4f} [{reached['low']:.4f}, {reached['high']:.4f}]"
                    if not math.isnan(reached["low"])
                    else f"{reached['mean']:.4f}"
                )
                there = [str(reached["budget"]), f"{reached['fraction']:.2f}", interval, f"{reached['seconds']:.1f}"]
            lines.append(
                f"| {arm} | "
                + " | ".join(f"{m:.4f}" for m in means)
                + f" | {self._difference_text(arm)} | "
                + " | ".join(there)
                + " |"
            )
        return lines

    def _epoch_table(self):
        target = self.target()
        lines = [
            f"Final test {self.metric} over seeds (constant learning rate); paired difference to "
            f"`{self.baseline}` on the same seeds (95% t interval, `*`: excludes 0); epochs to target: the first "
            f"epoch at which a run crosses `{self.baseline}`'s final mean {self.metric} ({target:.4f}), mean over "
            'the seeds that reached it ("never": no seed did; `reached` says how many of the seeds the mean is '
            f"over). It flatters an arm that starts fast: `{self.baseline}` may still be rising at its last "
            "epoch (`compare(..., budgets=[...])` measures time to accuracy with annealed runs).",
            "",
            f"| arm | {self.metric} (mean +/- std) | difference to {self.baseline} | epochs to target | "
            "seconds to target | reached |",
            "|---|---|---|---|---|---|",
        ]
        for arm in self.arms():
            values = np.array(list(self.final(arm).values()))
            e = self.epochs_to_target(arm)
            lines.append(
                f"| {arm} | {values.mean():.4f} +/- {values.std(ddof=1) if len(values) > 1 else 0:.4f} | "
                f"{self._difference_text(arm)} | {_or_never(e['mean_epochs'])} | {_or_never(e['mean_seconds'])} | "
                f"{e['reached']}/{e['n']} |"
            )
        return lines

    def _repr_markdown_(self):
        return self.to_markdown()

    def __str__(self):
        return self.to_markdown()

    def plot(self, path):
        """Returns `path`, where it drew: under budgets, the final metric against the budget per arm (95%
        intervals, the target as a line); else the per-epoch test metric (and sign changes, if recorded),
        mean +/- std per arm."""
        if self.budgets:
            points = {
                arm: [
                    (b, interval["mean"], interval["low"], interval["high"])
                    for b in self.budgets
                    for interval in [mean_interval(self.final(arm, b).values())]
                ]
                for arm in self.arms()
            }
            return plot_budgets(points, path, self.metric, target=self.target())
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
