"""The benchmarks' one harness (benchmarks/_harness.py): order, warm-up, medians, ratios, the backends loop."""

import subprocess
import sys

import pytest

from conftest import load_example

harness = load_example("_harness", folder="benchmarks")


def test_candidates_take_turns_in_abba_order_after_one_warm_up_each():
    assert "".join(harness.interleaved("AB", 4)) == "ABBAABBA"
    assert "".join(harness.interleaved("ABC", 2)) == "ABCCBA"
    calls = []
    seconds = harness.time_interleaved({"a": lambda: calls.append("a"), "b": lambda: calls.append("b")}, 3)
    assert "".join(calls) == "ab" + "abbaab"  # the warm-up, then the timed rounds
    assert set(seconds) == {"a", "b"} and all(value >= 0 for value in seconds.values())


def test_ratios_are_to_the_reference_measured_in_the_same_table():
    columns, rows = harness.ratio_table({"keras": 0.002, "ours": 0.003}, "keras", label="initializer")
    assert columns == ["initializer", "median ms", "ratio to keras"]
    assert rows == [["keras", "2.00", "1.000"], ["ours", "3.00", "1.500"]]
    assert harness.markdown(columns, rows).splitlines()[1] == "|---|---|---|"


@pytest.mark.slow
def test_all_backends_runs_the_script_once_per_backend(tmp_path):
    script = tmp_path / "bench_echo.py"
    script.write_text(
        "import os, sys\n"
        f"sys.path.insert(0, {str(harness.__file__.rsplit('/', 1)[0])!r})\n"
        "import _harness\n"
        "def run(args):\n"
        "    print('ran on', os.environ['KERAS_BACKEND'], args.repeats)\n"
        "_harness.main(run, 'Echo.', repeats=2)\n"
    )
    done = subprocess.run(
        [sys.executable, str(script), "--all-backends", "--repeats", "3"], capture_output=True, text=True
    )
    assert done.returncode == 0, done.stderr[-2000:]
    assert [line for line in done.stdout.splitlines() if line.startswith("ran on")] == [
        f"ran on {backend} 3" for backend in ("tensorflow", "jax", "torch")
    ]
