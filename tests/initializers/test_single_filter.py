"""The paper's theory (examples/single_filter.py) against derived closed forms."""

import math

import numpy as np
import pytest

from conftest import load_example

pytest.importorskip("matplotlib", reason="the theory script plots: pip install 'keras_corrinit[examples]'")
sf = load_example("single_filter")

Z = 5.0
RNG = np.random.default_rng(0)


@pytest.mark.parametrize("d, lam", [([0.3, 0.1, 0.5, 0.05, 0.9], 0.1), ([0.8, 0.2, 0.2, 0.6, 0.4], 0.4)])
def test_simulated_update_is_the_derived_one_to_float_precision(d, lam):
    x = sf.symmetric_samples(d)
    assert x.shape == (32, 5)
    w_star = np.eye(5)[0]
    # starts near w*: every sample active (assumption 4)
    w = w_star + RNG.uniform(-0.1, 0.1, size=(20, 5))
    new, active = sf.gradient_step(w, x, w_star, lam)
    assert np.all(active == 1.0)
    np.testing.assert_allclose(new, sf.exact_update(w, d, lam), rtol=0, atol=1e-13)
    # k steps: w_i(k) = w_i(0) (1 - 2 lam d_i^2)^k, w_0 - 1 shrinks by 1 - 2 lam (1 + d_0^2)
    path = w
    for _ in range(25):
        path = sf.gradient_step(path, x, w_star, lam)[0]
    factors = 1 - 2 * lam * np.asarray(d) ** 2
    factors[0] = 1 - 2 * lam * (1 + d[0] ** 2)
    np.testing.assert_allclose(path - w_star, (w - w_star) * factors**25, rtol=0, atol=1e-13)


def test_printed_equation_4_is_not_the_update():
    d = [0.3, 0.2, 0.4]
    x = sf.symmetric_samples(d)
    w_star = np.eye(3)[0]
    w = np.array([[0.7, 0.1, -0.05]])
    simulated = sf.gradient_step(w, x, w_star, 0.1)[0]
    printed = sf.printed_update(w, d, 0.1)
    np.testing.assert_allclose(printed[:, 0], simulated[:, 0], atol=1e-14)  # equation (3) holds
    # the difference is the printed cross term and the quadratic w_i^2 d_i^2 term
    i = 1
    expected_gap = -2 * 0.1 * (2 * 0.3 * d[i] + w[0, i] * d[i] ** 2) * w[0, i] + 2 * 0.1 * d[i] ** 2 * w[0, i]
    assert printed[0, i] - simulated[0, i] == pytest.approx(expected_gap, abs=1e-15)
    assert abs(printed[0, i] - simulated[0, i]) > 1e-3


def test_inactive_samples_scale_the_update_by_the_active_share():
    d = [0.2] * 4
    x = sf.symmetric_samples(d)
    w_star = np.eye(4)[0]
    w = np.array([[0.05, -0.6, 0.0, 0.0]])
    new, active = sf.gradient_step(w, x, w_star, 0.1)
    live = (x @ w[0]) > 0
    assert active[0] == live.mean() == 0.5
    # equation (10): lambda / |S| times the sum over the active samples only
    y = x @ w_star
    grad = -2 * ((y - x @ w[0]) * live) @ x / len(x)
    np.testing.assert_allclose(new[0], w[0] - 0.1 * grad, atol=1e-15)


def test_zigzag_of_an_aligned_start_is_w0_alone():
    d = 0.2
    p = 9
    x = sf.symmetric_samples(np.full(p, d))
    w_star = np.eye(p)[0]
    lam = 0.75 / (1 + d**2)  # w_0's factor is -0.5: it overshoots every step
    steps, per_coordinate, flips, active = sf.descend(
        sf.initial_filters("aligned", p, 0.5, [0]), x, w_star, lam, 1e-3, 10_000
    )
    assert flips[0] == pytest.approx(1 / p)  # only w_0 changes sign, every step
    assert active[0] == 1.0
    # a random start's slow coordinates never change sign at a low rate
    w0 = sf.initial_filters("random", p, 0.5, [1])
    _, _, flips, _ = sf.descend(w0, x, w_star, 0.1, 1e-3, 100_000)
    assert flips[0] < 0.01


@pytest.mark.parametrize("rho", [-1.0, -0.5, 0.0, 1 / 3, 2 / 3, 1.0])
def test_relu_product_moment(rho):
    z = np.random.default_rng(3).normal(size=(2, 400_000))
    u, v = z[0], rho * z[0] + math.sqrt(1 - rho**2) * z[1]
    product = np.maximum(u, 0) * np.maximum(v, 0)
    assert abs(product.mean() - sf.relu_product_moment(rho)) <= Z * product.std() / math.sqrt(len(product)) + 1e-12
    assert sf.relu_product_moment(1.0) == pytest.approx(0.5)
    assert sf.relu_product_moment(0.0) == pytest.approx(1 / (2 * math.pi))


@pytest.mark.parametrize("case, layers", [("A", 3), ("B", 3), ("D", 3), ("C", 2)])
def test_monte_carlo_variances_match_the_derived_ones(case, layers):
    mc, se = sf.depth_variances(case, k=3, layers=layers, n=100_000, seed=1)
    derived = sf.derived_variances(case, k=3, layers=layers)
    for depth in range(min(layers, len(derived))):
        assert abs(mc[depth] - derived[depth]) < Z * se[depth], (case, depth + 1, mc[depth], derived[depth], se[depth])


def test_table1_as_printed_disagrees_with_the_simulation_and_case_c_is_not_he():
    mc, se = sf.depth_variances("D", k=3, layers=3, n=100_000, seed=2)
    paper = sf.table1(3, 3)
    assert abs(mc[2] - paper["D"][2]) > 20 * se[2]  # k^l per layer is not He's k^2
    # the equations' per-layer factors (k^4 s^2 / 2 and k^2 s^2 / 2) are right
    np.testing.assert_allclose(sf.derived_variances("A", 3, 3)[1:] / sf.derived_variances("A", 3, 3)[:-1], 81 / 2)
    np.testing.assert_allclose(sf.derived_variances("D", 3, 3)[1:] / sf.derived_variances("D", 3, 3)[:-1], 9 / 2)
    # (C): correlated weights on independent inputs grow faster than He
    assert sf.derived_variances("C")[1] > 5 * sf.derived_variances("D")[1]


@pytest.mark.slow
def test_script_writes_the_table_and_plots(tmp_path):
    sf.main(["--out", str(tmp_path), "--seeds", "2"])
    table = (tmp_path / "table.md").read_text()
    assert "## Section 3" in table and "## Section 4" in table and "| C | 2 |" in table
    for name in ["trajectories.png", "convergence.png", "depth_variance.png"]:
        assert (tmp_path / name).stat().st_size > 5000
