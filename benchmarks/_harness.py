"""The one harness of the speed and memory benchmarks in this folder.

Every benchmark script defines `run(args)`, which returns its table as
`(columns, rows)`, and ends with `harness.main(run, __doc__, add_arguments)`.
The harness gives them, in one place:

* `--all-backends`: the same script once per Keras backend, each in a fresh
  process (Keras picks its backend at import);
* `--repeats N` where the script times something;
* `time_interleaved`: a warm-up call of each candidate, then N rounds in an
  order that reverses every round (A B, B A, A B, ...: ABBA for two), so a
  drift of the machine or of the backend over the process's life falls on
  every candidate alike; the median of each;
* `ratio_table`: each candidate's median and its ratio to the reference,
  measured in the same process;
* the result as a Markdown table, headed by the backend and versions.

Speed and memory only: accuracy grids are `keras-corrinit compare` grids
and the scripts in `evidence/`.
"""

import argparse
import os
import statistics
import subprocess
import sys
import time

BACKENDS = ("tensorflow", "jax", "torch")


def interleaved(names, rounds):
    """The order of `rounds` rounds over `names`: forward, then backward, and so on (ABBA for two)."""
    names = list(names)
    for index in range(rounds):
        yield from names if index % 2 == 0 else names[::-1]


def time_interleaved(calls, repeats, warmup=1):
    """`{name: median seconds}` of each zero-argument call, timed in interleaved order after `warmup` calls."""
    for call in calls.values():
        for _ in range(warmup):
            call()  # compilation, tracing, caches
    times = {name: [] for name in calls}
    for name in interleaved(calls, repeats):
        start = time.perf_counter()
        calls[name]()
        times[name].append(time.perf_counter() - start)
    return {name: statistics.median(values) for name, values in times.items()}


def ratio_table(seconds, reference, label="candidate", unit=1e3, unit_name="ms"):
    """`(columns, rows)`: each candidate's median and its ratio to `reference`'s."""
    base = seconds[reference]
    rows = [[name, f"{value * unit:.2f}", f"{value / base:.3f}"] for name, value in seconds.items()]
    return [label, f"median {unit_name}", f"ratio to {reference}"], rows


def markdown(columns, rows):
    """A Markdown table."""
    lines = ["| " + " | ".join(columns) + " |", "|" + "---|" * len(columns)]
    return "\n".join(lines + ["| " + " | ".join(str(cell) for cell in row) + " |" for row in rows])


def main(run, doc, add_arguments=None, repeats=None, argv=None, script=None):
    """Parses the shared flags (and the script's own), runs `run(args)` here or once per backend, prints."""
    parser = argparse.ArgumentParser(description=doc.strip().splitlines()[0])
    parser.add_argument("--all-backends", action="store_true", help="run once per backend, each in a new process")
    if repeats is not None:
        parser.add_argument("--repeats", type=int, default=repeats, help=f"timed rounds (default {repeats})")
    if add_arguments is not None:
        add_arguments(parser)
    argv = sys.argv[1:] if argv is None else list(argv)
    args = parser.parse_args(argv)
    if args.all_backends:
        forwarded = [a for a in argv if a != "--all-backends"]
        for backend in BACKENDS:
            subprocess.run(
                [sys.executable, script or sys.argv[0], *forwarded],
                env={**os.environ, "KERAS_BACKEND": backend, "TF_CPP_MIN_LOG_LEVEL": "3"},
                check=True,
            )
        return 0
    import keras

    import keras_corrinit

    result = run(args)
    if result is not None:
        columns, rows = result
        versions = f"keras {keras.__version__}, keras_corrinit {keras_corrinit.__version__}"
        print(f"\nbackend {keras.backend.backend()}, {versions}")
        print(markdown(columns, rows), flush=True)
    return 0
