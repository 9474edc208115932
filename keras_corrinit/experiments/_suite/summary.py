"""`keras-corrinit summary FOLDER...`: compact tables of finished grids, for the README.

For every cell (shared settings) of each folder's results store, the paired
difference over seeds (mean, 95% t interval, `*` when it excludes 0):

1. of each arm minus `he` (`--arms`);
2. the comparisons behind CorrelatedHeNormal's defaults:
   `correlated_weight` minus `correlated` (variance_mode "weight" vs
   "filter") and `correlated_learned` minus `correlated` (R measured on a
   trained source network vs the built-in `exponential_decay(0.4)`), with a
   tally, and the runs that diverged (final test accuracy below 0.5).
"""

import json
import math
import sys

from keras_corrinit.experiments._statistics import paired_difference
from keras_corrinit.experiments._store import read_runs
from keras_corrinit.experiments._suite import options

COMPARISONS = [("correlated_weight", "correlated"), ("correlated_learned", "correlated")]
DEFAULT_ARMS = options.SUMMARY_ARMS


def cells(folders):
    """`(settings, rows)` of every cell of the stores in `folders`, in a stable order.

    Any store this package writes is read (`keras-corrinit compare`'s and
    `keras_corrinit.experiments.compare`'s), through the store's own reader:
    a run stored twice (two writers) counts once, across folders too.
    """
    groups, seen = {}, set()
    for folder in folders:
        for key, row in read_runs(folder).items():
            if key in seen:
                continue
            missing = [field for field in ("arm", "seed", "final") if field not in row]
            if missing:
                raise ValueError(f"{folder}: the run {key} has no {missing}: not a finished run of this package.")
            seen.add(key)
            # Everything a run's key holds besides arm and seed: rows that differ in any of it (another backend,
            # package version or schedule in the same folder) are other cells, never averaged together.
            identity = {
                **row.get("settings", {}),
                **{field: row.get(field) for field in RUN_FIELDS},
            }
            if "dataset" not in identity:  # a store of experiments.compare: the data and model identify the cell
                identity.update(data=row.get("data"), builder=row.get("builder"))
            groups.setdefault(json.dumps(identity, sort_keys=True, default=str), []).append(row)
    for key in sorted(groups):
        yield json.loads(key), groups[key]


RUN_FIELDS = ("epochs", "batch_size", "schedule", "metric", "monitor", "backend", "keras_version", "package_version")


def _finals(rows, arm):
    return {r["seed"]: r["final"] for r in rows if r["arm"] == arm}


def _cell(d):
    if d["n"] < 2 or math.isnan(d["low"]):
        return "-"
    mark = " *" if d["low"] > 0 or d["high"] < 0 else ""
    return f"{d['mean']:+.4f} [{d['low']:+.4f}, {d['high']:+.4f}]{mark}"


def _made_by(s):
    return f"{s.get('backend')} {s.get('package_version')}, {s.get('epochs')} epochs {s.get('schedule') or 'constant'}"


def _row_head(s):
    if "dataset" not in s:
        return f"| {s.get('data', '-')} | {s.get('builder', '-')} | - | - | - | {_made_by(s)} | "
    return f"| {s['dataset']} | {s['network']} | {s['batch_norm']} | {s['lr']} | {s['l2']} | {_made_by(s)} | "


AUTO_BASELINES = ("he", "uncorrelated", "default")  # "uncorrelated": He's name in stores before 0.3.0


def versus_baseline(folders, arms, baseline=None):
    """Markdown: each arm minus the baseline, per cell (default: the first of `he`, `uncorrelated` (He's
    name before 0.3.0), `default` that the cell has)."""
    lines = [
        "| data | network | batch norm | lr | l2 | run | " + " | ".join(arms) + " |",
        "|---|---|---|---|---|---|" + "---|" * len(arms),
    ]
    for settings, rows in cells(folders):
        present = {r["arm"] for r in rows}
        base = _finals(rows, baseline or next((a for a in AUTO_BASELINES if a in present), AUTO_BASELINES[0]))
        row_cells = [_cell(paired_difference(_finals(rows, arm), base)) for arm in arms]
        if any(c != "-" for c in row_cells):
            lines.append(_row_head(settings) + " | ".join(row_cells) + " |")
    return "\n".join(lines)


def comparisons(folders):
    """Markdown rows: one per cell that has both arms of a comparison; tallies; diverged runs."""
    lines = [
        "| data | network | batch norm | lr | l2 | run | " + " | ".join(f"{a} - {b}" for a, b in COMPARISONS) + " |",
        "|---|---|---|---|---|---|" + "---|" * len(COMPARISONS),
    ]
    tallies = {pair: [0, 0, 0] for pair in COMPARISONS}  # significantly above, below, neither
    diverged = {}
    for s, rows in cells(folders):
        for r in rows:
            if r["final"] < 0.5:
                key = (s.get("dataset", s.get("data")), s.get("batch_norm", "-"), s.get("lr", "-"), r["arm"])
                diverged[key] = diverged.get(key, 0) + 1
        row_cells = []
        for a, b in COMPARISONS:
            d = paired_difference(_finals(rows, a), _finals(rows, b))
            if d["n"] >= 2 and not math.isnan(d["low"]):
                significant = d["low"] > 0 or d["high"] < 0
                tallies[(a, b)][0 if significant and d["mean"] > 0 else 1 if significant else 2] += 1
            row_cells.append(_cell(d))
        if any(c != "-" for c in row_cells):
            lines.append(_row_head(s) + " | ".join(row_cells) + " |")
    lines.append("")
    for (a, b), (above, below, neither) in tallies.items():
        lines.append(f"{a} vs {b}: significantly above in {above} tables, below in {below}, neither in {neither}.")
    for (dataset, bn, lr, arm), count in sorted(diverged.items()):
        lines.append(f"Diverged (test accuracy < 0.5): {arm} on {dataset}, batch norm {bn}, lr {lr}: {count} runs.")
    return "\n".join(lines)


def main(argv=None):
    args = options.summary_parser().parse_args(argv)
    try:
        print(versus_baseline(args.folders, args.arms, args.baseline))
        print()
        print(comparisons(args.folders))
    except (OSError, ValueError) as error:
        print(f"keras-corrinit summary: {error}", file=sys.stderr)
        return 2
    return 0
