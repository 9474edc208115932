"""Keras's own distribution engines with the initializers and the monitor.

The active backend's engine runs in fresh processes
(`tests/distributed_worker.py`), because devices must be set up before the
backend starts: JAX `DataParallel` and `ModelParallel` on 4 forced CPU
devices, TensorFlow `MirroredStrategy` on 2 logical CPUs, and on PyTorch,
where Keras has no distribution API, `DistributedDataParallel` over 2 gloo
processes. The worker writes kernels and monitor logs; the checks are here.
"""

import json
import math
import os
import socket
import subprocess
import sys
from pathlib import Path

import keras
import numpy as np
import pytest

from keras_corrinit import SpatialCorrelation

WORKER = Path(__file__).with_name("distributed_worker.py")
LAYERS = ["c1", "c2", "c3", "head"]
Z = 5.0


def _worker(out_dir, *args):
    env = {k: v for k, v in os.environ.items() if k not in ("KERAS_BACKEND", "XLA_FLAGS")}
    return subprocess.Popen(
        [sys.executable, str(WORKER), keras.backend.backend(), str(out_dir), *map(str, args)],
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
        env=env,
    )


def _wait(process, timeout=600):
    output, _ = process.communicate(timeout=timeout)
    assert process.returncode == 0, output[-4000:]


def _free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


# ------------------------------------------------ statistics of big kernels
def _check_correlated(w):
    """CorrelatedHeNormal(exponential_decay(0.6)) on (3, 3, 128, 128)."""
    r = SpatialCorrelation.exponential_decay(0.6).matrix_for((3, 3))
    filters = w.reshape(9, -1)
    n, fan_in = filters.shape[1], 9 * w.shape[2]
    np.testing.assert_allclose((filters**2).mean(axis=1), 2 * 9 / (r.sum() * fan_in), rtol=Z * math.sqrt(2 / n))
    assert np.abs(np.corrcoef(filters) - r).max() < Z / math.sqrt(n)


def _check_gamma(w):
    """EnhancedGamma(he_normal, spatial) on (3, 3, 64, 256): mean variance."""
    c = w.shape[2]
    groups = 9 * w.shape[3]
    base = 2 / (9 * c)
    # Each group's mean square is s^2 chi2_c / c with s^2 = base * z0^2:
    # variance base^2 (2 + 6 / c) per group.
    np.testing.assert_allclose((w**2).mean(), base, rtol=Z * math.sqrt((2 + 6 / c) / groups))


def _check_nfm(w, source):
    """NFMInit.from_kernel(source) on (3, 3, 16, 512): full transfer."""
    f = source.reshape(-1, source.shape[-1])
    columns = w.reshape(f.shape[0], -1)
    fan_in, n_out = columns.shape
    sigma = f @ f.T
    s2 = 2 / np.trace(sigma)
    # Each column is N(0, s2 Sigma): sum of squares has variance 2 s2^2 tr(Sigma^2).
    sd = math.sqrt(2 * s2**2 * np.trace(sigma @ sigma) / n_out) / fan_in
    assert abs((columns**2).mean() - 2 / fan_in) < Z * sd
    # Sigma has rank 32: every sampled column lies in the span of the source's.
    q, _ = np.linalg.qr(f)
    residual = columns - q @ (q.T @ columns)
    assert np.abs(residual).max() < 1e-5 * np.abs(columns).max()


def _check_big_kernels(kernels, prefix):
    _check_correlated(kernels[f"{prefix}/big_correlated"])
    _check_gamma(kernels[f"{prefix}/big_gamma"])
    _check_nfm(kernels[f"{prefix}/big_nfm"], kernels["nfm_source"])


# ----------------------------------------------------------------- backends
def _check_engine_runs(out_dir, engines):
    kernels = np.load(out_dir / "kernels.npz")
    with open(out_dir / "histories.json") as f:
        histories = json.load(f)
    single = histories["single"]
    # The worker's model's trainable parameter count, as it reports it.
    parameters = histories["parameters"]
    assert parameters == sum(kernels[f"single/{layer}"].size + kernels[f"single/{layer}"].shape[-1] for layer in LAYERS)
    for engine in engines:
        # int seeds: the same values as on one device
        for layer in LAYERS:
            np.testing.assert_array_equal(kernels[f"{engine}/{layer}"], kernels[f"single/{layer}"])
        _check_big_kernels(kernels, engine)
        # The monitor sees the global batch's gradient: the same values as
        # one device; reduction order may flip a sign of a few near-zero
        # gradients (2 of the model's 7540 parameters is 2.7e-4).
        history = histories[engine]
        assert set(history) - {"shardings"} == set(single)
        for key in single:
            if key.startswith("grad_sign_change"):
                np.testing.assert_allclose(history[key], single[key], atol=2 / parameters)
            elif key.startswith("grad_magnitude") or key == "loss":
                np.testing.assert_allclose(history[key], single[key], rtol=1e-4)
        assert single["grad_sign_change"][0] > 0.1  # something was measured
    return histories


def _jax(tmp_path):
    _wait(_worker(tmp_path))
    histories = _check_engine_runs(tmp_path, ["data_parallel", "model_parallel"])
    # ModelParallel really shards the kernel over "model", and the monitor's
    # per-parameter state is laid out like it.
    assert histories["model_parallel"]["shardings"] == ["P(None, None, None, 'model')"] * 2
    assert histories["data_parallel"]["shardings"] == ["P(None, None, None, None)"] * 2


def _tensorflow(tmp_path):
    _wait(_worker(tmp_path))
    _check_engine_runs(tmp_path, ["mirrored"])


def _torch(tmp_path):
    port = _free_port()
    ranks = [_worker(tmp_path, rank, 2, port) for rank in range(2)]
    for process in ranks:
        _wait(process)
    rank0, rank1 = (np.load(tmp_path / f"kernels_rank{r}.npz") for r in range(2))
    # int seeds: both processes draw the same weights without a broadcast
    for layer in LAYERS:
        np.testing.assert_array_equal(rank0[f"rank0/{layer}"], rank1[f"rank1/{layer}"])
    for kernels, rank in [(rank0, 0), (rank1, 1)]:
        _check_big_kernels(kernels, f"rank{rank}")
    # DDP's averaged gradient of the two half batches is the whole batch's.
    grads = sorted(k for k in rank0.files if k.startswith("single/grad/"))
    assert len(grads) == 2 * len(LAYERS)
    for key in grads:
        i = key.rsplit("/", 1)[1]
        np.testing.assert_allclose(rank0[f"rank0/grad/{i}"], rank0[key], rtol=1e-4, atol=1e-7)
        np.testing.assert_allclose(rank1[f"rank1/grad/{i}"], rank0[key], rtol=1e-4, atol=1e-7)
    # GradientSignTracker in a DDP loop: each rank measures the averaged
    # gradient, so both report what one process on the whole batch reports.
    tracked = {}
    for rank in range(2):
        with open(tmp_path / f"histories_rank{rank}.json") as f:
            tracked.update(json.load(f))
    single = tracked["single"]
    assert single["grad_sign_change"] > 0.05 and set(tracked["rank0"]) == set(single)
    # reduction order may flip the sign of a near-zero gradient or two
    parameters = sum(rank0[f"rank0/{layer}"].size + rank0[f"rank0/{layer}"].shape[-1] for layer in LAYERS)
    for rank in ("rank0", "rank1"):
        for key, value in single.items():
            tolerance = 2 / parameters if key.startswith("grad_sign_change") else 0
            np.testing.assert_allclose(tracked[rank][key], value, rtol=1e-4, atol=tolerance, err_msg=f"{rank} {key}")


@pytest.mark.slow
def test_distributed_engine_matches_one_device(tmp_path):
    {"jax": _jax, "tensorflow": _tensorflow, "torch": _torch}[keras.backend.backend()](tmp_path)


@pytest.mark.slow
def test_initialize_under_data_parallel_gives_the_one_device_weights(tmp_path):
    # Run in a JAX process of its own (8 forced CPU devices) whatever the suite's backend.
    env = {k: v for k, v in os.environ.items() if k not in ("KERAS_BACKEND", "XLA_FLAGS")}
    process = subprocess.Popen(
        [sys.executable, str(WORKER.with_name("initialize_worker.py")), str(tmp_path)],
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
        env=env,
    )
    _wait(process)
    weights = np.load(tmp_path / "initialize.npz")
    single = sorted(k for k in weights.files if k.startswith("single/"))
    assert len(single) == 2 + 2 + 4 + 2  # stem, branch, branch_bn, head
    for key in single:
        np.testing.assert_allclose(weights[key.replace("single/", "parallel/")], weights[key], rtol=1e-5, atol=1e-6)
    np.testing.assert_array_equal(
        weights["single/branch_bn/0"], 0.0
    )  # the residual branch's gamma (residual="zero_gamma")
    assert np.any(weights["single/head/0"] != 0.0)  # the output layer: kept as built (initialize's default)
