"""The comparison grids behind the README's numbers, one command each.

    python examples/grid.py NAME [--workers N] [--out DIR]

runs `compare.py` with the grid's arguments: first the source networks the
learned arms need (once), then the runs in N parallel worker processes
(shards, each in `DIR/shard-I`), then merges their results into `DIR` and
writes the report there (`results.md`, plots). Rerunning resumes: finished
runs are kept. `--list` prints the grids.
"""

import argparse
import os
import shutil
import subprocess
import sys

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

import compare  # noqa: E402

_SCALE_ARMS = ["uncorrelated", "correlated", "correlated~var", "correlated_weight", "correlated_weight~sum"]
_PAPER_ARMS = [*_SCALE_ARMS, "correlated_learned", "correlated_learned~var", "correlated_layerwise"]

# Sized for 2 CPU cores (TensorFlow, seconds per run: digits 3, digits32 10,
# VGG-8 at width 0.25 on digits32 13).
GRIDS = {
    # the paper's grid (Tables 2-4, Figures 4-6) with the small CNN: 320 runs
    "paper-digits": "--dataset digits --lr 0.005 0.1 --l2 0 0.001 --batch-norm off on --seeds 5 --init".split()
    + _PAPER_ARMS,
    # the same on spatially correlated inputs, without the L2 axis: 120 runs
    "paper-digits32": "--dataset digits32 --lr 0.005 0.1 --batch-norm off on --seeds 5 --init".split()
    + [*_SCALE_ARMS, "correlated_learned"],
    # Table 5: the strength factor alpha, at one setting: 45 runs
    "alpha-digits32": "--dataset digits32 --alpha 0.25 0.5 1 1.5 --seeds 5 --init".split()
    + ["uncorrelated", "correlated", "correlated~var"],
    # the NFM/AGOP poster's arms, EnhancedGamma and LSUV, at one setting: 55 runs
    "poster-digits": "--dataset digits --seeds 5 --init uncorrelated he_normal he_uniform random_normal".split()
    + "random_uniform nfm nfm_kaiming agop agop_kaiming enhanced_gamma lsuv".split(),
    # a deeper network on the spatially correlated digits: 50 runs
    "vgg8-digits32": "--dataset digits32 --network vgg8 --width 0.25 --batch-norm off on --seeds 5 --init".split()
    + _SCALE_ARMS,
    # depthwise covariance (Trockman et al. 2023): ConvMixer-6/k7, trained and with frozen depthwise filters,
    # learned covariances from a ConvMixer-4/k5 (other depth and kernel size): 60 runs
    "convmixer-digits32": "--dataset digits32 --network convmixer6k7 convmixer6k7_frozen --source-network convmixer4k5"
    " --batch-norm on --optimizer adam --lr 0.005 --epochs 3 --seeds 5 --baseline depthwise_default --init".split()
    + "depthwise_default depthwise_he covariance_closed_form covariance_closed_form~var covariance_learned".split()
    + ["covariance_learned~var"],
}


def merge(shards, out):
    """Concatenates the shards' results.csv and copies their histories."""
    rows = []
    for shard in shards:
        rows += compare.read_results(os.path.join(shard, "results.csv"))
        histories = os.path.join(shard, "histories")
        for name in os.listdir(histories) if os.path.isdir(histories) else []:
            shutil.copy(os.path.join(histories, name), os.path.join(out, "histories", name))
    done = {row["run_id"] for row in compare.read_results(os.path.join(out, "results.csv"))}
    for row in rows:
        if row["run_id"] not in done:
            compare.append_result(os.path.join(out, "results.csv"), row)
            done.add(row["run_id"])


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("name", nargs="?", choices=sorted(GRIDS))
    parser.add_argument("--workers", type=int, default=1)
    parser.add_argument("--out", help="default: runs/NAME")
    parser.add_argument("--list", action="store_true")
    args, extra = parser.parse_known_args(argv)
    if args.list or args.name is None:
        for name, grid in GRIDS.items():
            print(f"{name}: {' '.join(grid)}")
        return
    out = args.out or os.path.join("runs", args.name)
    grid = GRIDS[args.name] + extra
    script = os.path.join(os.path.dirname(os.path.abspath(__file__)), "compare.py")
    subprocess.run([sys.executable, script, *grid, "--out", out, "--sources-only"], check=True)
    shards = [os.path.join(out, f"shard-{i}") for i in range(args.workers)]
    for shard in shards:
        if os.path.isdir(os.path.join(out, "sources")):
            shutil.copytree(os.path.join(out, "sources"), os.path.join(shard, "sources"), dirs_exist_ok=True)
    workers = [
        subprocess.Popen(
            [sys.executable, script, *grid, "--out", shard, "--shard", f"{i}/{args.workers}"],
            stdout=open(os.path.join(out, f"shard-{i}.log"), "w"),
            stderr=subprocess.STDOUT,
        )
        for i, shard in enumerate(shards)
    ]
    failed = [i for i, worker in enumerate(workers) if worker.wait() != 0]
    os.makedirs(os.path.join(out, "histories"), exist_ok=True)
    merge(shards, out)
    if failed:
        raise SystemExit(f"shards {failed} failed; see {out}/shard-I.log (finished runs are merged)")
    compare.main([*grid, "--out", out])


if __name__ == "__main__":
    main()
