"""Compact tables of finished grids, for the README.

    python examples/summary.py runs/paper-digits runs/paper-digits32 ...

For every table (shared settings) of each folder's results.csv, the paired
difference over seeds (mean, 95% t interval, `*` when it excludes 0):

1. of each arm (at alpha 1) minus `uncorrelated` (`--arms`);
2. the comparisons behind CorrelatedHeNormal's defaults:
   `correlated_weight` minus `correlated` (variance_mode "weight" vs
   "filter") and `correlated_learned` minus `correlated` (R measured on a
   trained source network vs the built-in `exponential_decay(0.4)`), with a
   tally, and the runs that diverged (final test accuracy below 0.5).
"""

import argparse
import os
import sys

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

import compare  # noqa: E402
import report  # noqa: E402

COMPARISONS = [("correlated_weight", "correlated"), ("correlated_learned", "correlated")]


def _accuracies(rows, init):
    return {int(r["seed"]): float(r["test_accuracy"]) for r in rows if r["init"] == init and r["alpha"] in ("1.0", "-")}


def _tables(folders):
    for folder in folders:
        groups = {}
        for row in compare.read_results(os.path.join(folder, "results.csv")):
            groups.setdefault(report.table_settings(row, compare.SETTINGS), []).append(row)
        yield from sorted(groups.items())


def _cell(mean, half, n):
    if n < 2:
        return "-"
    return f"{mean:+.4f} [{mean - half:+.4f}, {mean + half:+.4f}]{' *' if abs(mean) > half else ''}"


def _row_head(shared):
    named = dict(shared)
    return f"| {named['dataset']} | {named['network']} | {named['batch_norm']} | {named['lr']} | {named['l2']} | "


def versus_baseline(folders, arms, baseline="uncorrelated"):
    """Markdown: each arm minus the baseline, per table."""
    lines = [
        "| data | network | batch norm | lr | l2 | " + " | ".join(arms) + " |",
        "|---|---|---|---|---|" + "---|" * len(arms),
    ]
    for shared, rows in _tables(folders):
        base = _accuracies(rows, baseline)
        cells = [_cell(*report.paired_difference(_accuracies(rows, arm), base)) for arm in arms]
        if any(c != "-" for c in cells):
            lines.append(_row_head(shared) + " | ".join(cells) + " |")
    return "\n".join(lines)


def comparisons(folders):
    """Markdown rows: one per table that has both arms of a comparison."""
    lines = [
        "| data | network | batch norm | lr | l2 | " + " | ".join(f"{a} - {b}" for a, b in COMPARISONS) + " |",
        "|---|---|---|---|---|" + "---|" * len(COMPARISONS),
    ]
    tallies = {pair: [0, 0, 0] for pair in COMPARISONS}  # significantly above, below, neither
    diverged = {}
    for shared, rows in _tables(folders):
        for r in rows:
            if float(r["test_accuracy"]) < 0.5:
                key = (dict(shared)["dataset"], dict(shared)["batch_norm"], dict(shared)["lr"], r["init"])
                diverged[key] = diverged.get(key, 0) + 1
        cells = []
        for a, b in COMPARISONS:
            mean, half, n = report.paired_difference(_accuracies(rows, a), _accuracies(rows, b))
            if n >= 2:
                significant = abs(mean) > half
                tallies[(a, b)][0 if significant and mean > 0 else 1 if significant else 2] += 1
            cells.append(_cell(mean, half, n))
        if any(c != "-" for c in cells):
            lines.append(_row_head(shared) + " | ".join(cells) + " |")
    lines.append("")
    for (a, b), (above, below, neither) in tallies.items():
        lines.append(f"{a} vs {b}: significantly above in {above} tables, below in {below}, neither in {neither}.")
    for (dataset, bn, lr, init), count in sorted(diverged.items()):
        lines.append(f"Diverged (test accuracy < 0.5): {init} on {dataset}, batch norm {bn}, lr {lr}: {count} runs.")
    return "\n".join(lines)


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("folders", nargs="+")
    parser.add_argument(
        "--arms",
        nargs="+",
        default=["correlated", "correlated~var", "correlated_weight", "correlated_weight~sum", "correlated_learned"],
    )
    args = parser.parse_args(argv)
    print(versus_baseline(args.folders, args.arms))
    print()
    print(comparisons(args.folders))


if __name__ == "__main__":
    main()
