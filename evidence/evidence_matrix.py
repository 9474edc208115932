"""Issue 30's evidence matrix: `python evidence/evidence_matrix.py [OUT] [--only GRID...]`.

Runs the `matrix-*` grids of `keras-corrinit compare` (see
`keras_corrinit/experiments/_suite/grids.py`: photos32, and digits32 for the
keras.io convnet; the budget protocol with budgets 1, 2, 4, 5 paired seeds; arms
default, he, initialize, lsuv, anyinit and each family's controls) one
after the other, each into `OUT/<grid>` (default
`evidence/results/matrix`), resumable: an interrupted run picks up where it
stopped. Then writes `OUT/summary.md`: per grid, each arm's epochs to the
default's accuracy at the largest budget (the fraction of that budget), its
difference to the default at the largest budget with a 95% interval, the
mean seconds of its runs at that budget, and of those the seconds before
training (building the model and the arm's initialization).
"""

import argparse
import os
import sys

import keras_corrinit_cli
from keras_corrinit.experiments._comparison import Comparison
from keras_corrinit.experiments._store import read_runs
from keras_corrinit.experiments._suite.grids import BATCH_NORM, MATRIX

SETS = {"matrix": MATRIX, "batchnorm": BATCH_NORM}


def summary(out, grids=MATRIX):
    lines = [
        "| grid | arm | epochs to target (fraction of 4) | difference to default at 4 epochs | seconds at 4 epochs "
        "| of which build + initialization |",
        "|---|---|---|---|---|---|",
    ]
    for grid in grids:
        folder = os.path.join(out, grid)
        if not os.path.exists(os.path.join(folder, "runs.jsonl")):
            lines.append(f"| {grid} | (not run yet) | | | | |")
            continue
        # He's arm was called "uncorrelated" before 0.3.0: one name in the table
        rows = [{**r, "arm": "he" if r["arm"] == "uncorrelated" else r["arm"]} for r in read_runs(folder).values()]
        made_by = sorted({f"{r['backend']} {r['package_version']}" for r in rows})
        if len(made_by) > 1:  # never one table from two versions' runs: move the older folder away, rerun
            raise ValueError(f"{folder} holds runs of {made_by}: move one version's runs away and rerun the grid.")
        grid_label = f"{grid} ({made_by[0]})"
        budgets = sorted({r["epochs"] for r in rows})
        arms = list(dict.fromkeys(r["arm"] for r in rows))
        seeds_per = {arm: {(r["seed"], r["epochs"]) for r in rows if r["arm"] == arm} for arm in arms}
        complete = [arm for arm in arms if len(seeds_per[arm]) == len(seeds_per.get("default", ()))]
        if "default" not in complete:
            lines.append(f"| {grid_label} | (baseline incomplete) | | | | |")
            continue
        result = Comparison([r for r in rows if r["arm"] in complete], baseline="default", budgets=budgets)
        for arm in complete:
            reached = result.budget_to_target(arm)
            d = result.difference(arm)
            at_largest = [r for r in rows if r["arm"] == arm and r["epochs"] == budgets[-1]]
            seconds = sum(r["seconds"] for r in at_largest) / len(at_largest)
            # before fit's first epoch: building the model and the arm's initialization
            before_fit = sum(r["seconds"] - r["epoch_seconds"][-1] for r in at_largest) / len(at_largest)
            to_target = "never" if reached is None else f"{reached['budget']} ({reached['fraction']:.2f})"
            diff = "-" if arm == "default" else f"{d['mean']:+.4f} [{d['low']:+.4f}, {d['high']:+.4f}]"
            if arm != "default" and (d["low"] > 0 or d["high"] < 0):
                diff += " *"
            lines.append(f"| {grid_label} | {arm} | {to_target} | {diff} | {seconds:.1f} | {before_fit:.1f} |")
    return "\n".join(lines) + "\n"


def ablation_tables(out, grids):
    """Per grid: each arm's paired difference at every budget (points, 95% interval), epochs to the baseline's
    accuracy at the largest budget, and its initialization seconds. The recalibrated arms (`+recalibrate`) are
    compared with the recalibrated network as written (`default+recalibrate`) as well: recalibration helps
    every arm, and the fair question is whether it changes which arm wins."""
    sections = []
    for grid in grids:
        folder = os.path.join(out, grid)
        if not os.path.exists(os.path.join(folder, "runs.jsonl")):
            continue
        rows = list(read_runs(folder).values())
        budgets = sorted({r["epochs"] for r in rows})
        arms = list(dict.fromkeys(r["arm"] for r in rows))
        complete = [
            a for a in arms if len({(r["seed"], r["epochs"]) for r in rows if r["arm"] == a}) == 5 * len(budgets)
        ]
        if "default" not in complete:
            sections.append(f"### {grid}\n\n(baseline incomplete)\n")
            continue
        result = Comparison([r for r in rows if r["arm"] in complete], baseline="default", budgets=budgets)
        made_by = sorted({f"{r['backend']} {r['package_version']}" for r in rows})
        head = "| arm | " + " | ".join(f"B={b}: accuracy, difference to default" for b in budgets)
        head += " | epochs to target | init s |"
        lines = [f"### {grid} ({', '.join(made_by)})", "", head, "|---" * (len(budgets) + 3) + "|"]
        for arm in complete:
            cells = []
            for b in budgets:
                mean = sum(result.final(arm, b).values()) / len(result.final(arm, b))
                if arm == "default":
                    cells.append(f"{mean:.3f}")
                    continue
                d = result.difference(arm, budget=b)
                star = " *" if d["low"] > 0 or d["high"] < 0 else ""
                cells.append(
                    f"{mean:.3f}, {100 * d['mean']:+.1f} [{100 * d['low']:+.1f}, {100 * d['high']:+.1f}]{star}"
                )
            reached = result.budget_to_target(arm)
            at_largest = [r for r in rows if r["arm"] == arm and r["epochs"] == budgets[-1]]
            init = sum(r["seconds"] - r["epoch_seconds"][-1] for r in at_largest) / len(at_largest)
            to_target = "never" if reached is None else f"{reached['budget']} of {budgets[-1]}"
            lines.append(f"| {arm} | " + " | ".join(cells) + f" | {to_target} | {init:.1f} |")
        recalibrated = [a for a in complete if a.endswith("+recalibrate") and a != "default+recalibrate"]
        if recalibrated and "default+recalibrate" in complete:
            lines += [
                "",
                "Against the recalibrated network as written (`default+recalibrate`), points [95% interval]:",
                "",
            ]
            for arm in recalibrated:
                diffs = []
                for b in budgets:
                    d = result.difference(arm, to="default+recalibrate", budget=b)
                    star = " *" if d["low"] > 0 or d["high"] < 0 else ""
                    diffs.append(f"B={b} {100 * d['mean']:+.1f} [{100 * d['low']:+.1f}, {100 * d['high']:+.1f}]{star}")
                lines.append(f"- {arm}: " + "; ".join(diffs))
        sections.append("\n".join(lines) + "\n")
    return "\n".join(sections)


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("out", nargs="?", help="default: evidence/results/matrix, or evidence/results/batchnorm")
    parser.add_argument("--set", default="matrix", choices=sorted(SETS), help="which grids (default: the matrix)")
    parser.add_argument("--only", nargs="+", choices=sorted(BATCH_NORM) + sorted(MATRIX), help="only these grids")
    parser.add_argument("--summary-only", action="store_true", help="write the summary of what has finished")
    args = parser.parse_args(argv)
    grids = SETS[args.set]
    if args.out is None:
        args.out = (
            os.path.join("evidence", "results", "matrix") if args.set == "matrix" else "evidence/results/batchnorm"
        )
    if not args.summary_only:
        for grid in args.only or grids:
            print(f"=== {grid}", flush=True)
            keras_corrinit_cli.main(["compare", "--grid", grid, "--out", os.path.join(args.out, grid)])
    text = summary(args.out, grids)
    os.makedirs(args.out, exist_ok=True)
    with open(os.path.join(args.out, "summary.md"), "w") as f:
        f.write(text)
    tables = ablation_tables(args.out, grids)
    with open(os.path.join(args.out, "tables.md"), "w") as f:
        f.write(tables)
    print(text)
    print(tables)
    return 0


if __name__ == "__main__":
    sys.exit(main())
