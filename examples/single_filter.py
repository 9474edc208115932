"""The correlated-initialization paper's theory, reproduced (Sections 3 and 4).

    python examples/single_filter.py [--out runs/single_filter] [--seeds 10]

NumPy only, seconds on a CPU. Writes `table.md` and four plots to `--out`.

Section 3 (Theorem 1). One filter w with p weights, ReLU output
`max(w . X, 0)`, squared loss, optimum w* = (1, 0, ..., 0), the 2^p samples
X = (1 + a_0, a_1, ..., a_{p-1}) with a_i in {-d_i, +d_i}, y = w* . X, and
full-batch gradient descent with rate lambda (equation (1)):

    w <- w - lambda / |S| sum_X grad f(X, w),
    grad f(X, w) = -2 ((w* - w) . X) X  if w . X > 0, else 0      (2)

When every sample is active (assumption 4) the mean of X X^T over S is
diag(1 + d_0^2, d_1^2, ..., d_{p-1}^2) (the a_i are independent, symmetric
signs), so the exact update is, coordinate by coordinate,

    w_0 <- w_0 + 2 lambda (1 + d_0^2) (w*_0 - w_0)          (= equation (3))
    w_i <- w_i (1 - 2 lambda d_i^2)          for i > 0

The printed equation (4), `w_i - 2 lambda (2 (w*_0 - w_0) d_i + w_i d_i^2) w_i`,
is not this: the cross term 2 (w*_0 - w_0) d_i cancels between the samples
with a_i = +d_i and a_i = -d_i (the step from (8) to (9) keeps it), and the
update is linear in w_i, not quadratic. The conclusion survives: coordinate
i > 0 shrinks by the factor 1 - 2 lambda d_i^2 per step, so it takes about
1 / (2 lambda d_i^2) steps, many when d_i is small (strongly correlated
inputs), while w_0 converges at a rate that does not depend on d_0.

Section 4 (Table 1). A stack of single-channel k x k "valid" convolutions
with ReLU between them; inputs perfectly correlated (one value for every
pixel) or independent N(0, 1); weights perfectly correlated (one N(0, s^2)
value for the whole filter) or independent N(0, s^2). With x = ReLU(y) and y
symmetric around 0, E[x^2] = Var[y] / 2, and per layer

    (A) correlated inputs and weights:   Var[y_{l+1}] = k^4 s^2 / 2 Var[y_l]
    (B) correlated inputs only:          Var[y_{l+1}] = k^2 s^2 / 2 Var[y_l]
    (D) neither (He):                    Var[y_{l+1}] = k^2 s^2 / 2 Var[y_l]

exactly, with Var[y_1] = k^4 s^2, k^2 s^2 and k^2 s^2. These are equations
(14) and (16) (k^4 and k^2 per layer; from y_1 to y_l there are l - 1
layers, where (14) writes the exponent l). Table 1's k^{2l} for (A) and k^l
for (B)-(D) take k where k^2 belongs: each is the square root of the
equations'. Case (C), independent inputs and correlated weights, is not
"analogous" to (D) as the paper says: all weights of a filter are one
value w, so y_2 = w_1 sum_t ReLU(w_0 S_t) sums k^2 positive, overlapping
(hence correlated) ReLU outputs, and

    Var[y_2] = s^4 k^2 sum_{t, t'} J(rho_{t t'}),
    J(rho) = (sqrt(1 - rho^2) + (pi - arccos rho) rho) / (2 pi),

with rho_{t t'} the overlap of the two input windows over k^2. For k = 3
that is several times He's k^4 s^4 / 2. The simulation checks all of this
by Monte Carlo (`depth_variances`).
"""

import argparse
import itertools
import math
import os

import matplotlib
import numpy as np

matplotlib.use("Agg")  # files only, no display
import matplotlib.pyplot as plt  # noqa: E402


# ------------------------------------------------------------ Section 3
def symmetric_samples(d):
    """The 2^p samples of assumption 2: rows (1 + a_0, a_1, ..., a_{p-1})."""
    d = np.asarray(d, dtype=np.float64)
    signs = np.array(list(itertools.product([-1.0, 1.0], repeat=len(d))))
    x = signs * d
    x[:, 0] += 1.0
    return x


def gradient_step(w, x, w_star, lam, gated=True):
    """One step of equation (1) with the ReLU-gated gradient (2).

    `w` may be a batch of filters, shape (n, p); returns the new weights and
    the fraction of active samples of each. `gated=False` counts every
    sample as active (plain least squares), to isolate equation (10).
    """
    w = np.atleast_2d(w)
    y = x @ w_star
    pre = w @ x.T  # (n, |S|)
    active = pre > 0
    residual = np.where(active | (not gated), y[None, :] - pre, 0.0)
    grad = -2.0 * residual @ x / len(x)
    return w - lam * grad, active.mean(axis=1)


def exact_update(w, d, lam, w0_star=1.0):
    """The update derived above (assumption 4: every sample active)."""
    w = np.array(w, dtype=np.float64)
    d = np.asarray(d, dtype=np.float64)
    new = w * (1.0 - 2.0 * lam * d**2)
    new[..., 0] = w[..., 0] + 2.0 * lam * (1.0 + d[0] ** 2) * (w0_star - w[..., 0])
    return new


def printed_update(w, d, lam, w0_star=1.0):
    """Equations (3) and (4) as printed in the paper."""
    w = np.array(w, dtype=np.float64)
    d = np.asarray(d, dtype=np.float64)
    gap = w0_star - w[..., :1]
    new = w - 2.0 * lam * (2.0 * gap * d + w * d**2) * w
    new[..., 0] = w[..., 0] + 2.0 * lam * (1.0 + d[0] ** 2) * (w0_star - w[..., 0])
    return new


def _sign(update):
    # Updates that are 0 in exact arithmetic come out as +-1e-17 rounding
    # noise; counted as signs they would flip at random. Below 1e-12 of the
    # update's largest entry, the sign is 0.
    scale = np.abs(update).max(axis=-1, keepdims=True)
    return np.where(np.abs(update) > 1e-12 * scale, np.sign(update), 0.0)


def sign_change_fraction(previous, current):
    """The paper's zig-zag measure between two updates: sum |sign - sign| / 2p."""
    return np.abs(_sign(previous) - _sign(current)).sum(axis=-1) / (2.0 * previous.shape[-1])


def initial_filters(kind, p, norm, seeds):
    """`aligned`: norm * w*/|w*|; `random`: norm * |z| / |z| (positive orthant)."""
    if kind == "aligned":
        w = np.zeros((len(seeds), p))
        w[:, 0] = norm
        return w
    z = np.abs(np.stack([np.random.default_rng(s).normal(size=p) for s in seeds]))
    return norm * z / np.linalg.norm(z, axis=1, keepdims=True)


def descend(w, x, w_star, lam, tol, max_steps, gated=True):
    """Runs gradient descent on a batch of filters until each is within tol.

    Returns per filter: steps to ||w - w*|| < tol (max_steps if never), steps
    until each coordinate is within tol of w* (for good), the mean sign-change
    fraction of consecutive updates before convergence, and the smallest
    active fraction seen.
    """
    n, p = w.shape
    converged = np.full(n, max_steps)
    per_coordinate = np.full((n, p), max_steps)
    flips, counted = np.zeros(n), np.zeros(n)
    least_active = np.ones(n)
    previous = None
    for step in range(max_steps):
        new, active = gradient_step(w, x, w_star, lam, gated)
        least_active = np.minimum(least_active, active)
        update = new - w
        running = converged == max_steps
        if previous is not None:
            flips += np.where(running, sign_change_fraction(previous, update), 0.0)
            counted += running
        previous, w = update, new
        close = np.abs(w - w_star) < tol
        per_coordinate = np.where(close, np.minimum(per_coordinate, step + 1), max_steps)
        done = (np.linalg.norm(w - w_star, axis=1) < tol) & running
        converged[done] = step + 1
        if not running.any():
            break
    return converged, per_coordinate, flips / np.maximum(counted, 1), least_active


def convergence_table(distances, seeds, p=9, norm=0.5, tol=1e-3, max_steps=200_000):
    """Aligned vs random initial filters of the same norm, per d and rate.

    Rates: 0.1 (every coordinate moves monotonically) and 0.75 / (1 + d^2),
    where w_0's factor 1 - 2 lambda (1 + d^2) is -0.5: w_0 overshoots and
    its update changes sign every step (the zig-zag), while staying stable.
    """
    w_star = np.zeros(p)
    w_star[0] = 1.0
    rows = []
    for d, high in itertools.product(distances, (False, True)):
        lam = round(0.75 / (1 + d**2), 4) if high else 0.1
        x = symmetric_samples(np.full(p, d))
        for kind in ("aligned", "random"):
            w0 = initial_filters(kind, p, norm, seeds)
            steps, per_coord, flips, active = descend(w0, x, w_star, lam, tol, max_steps)
            rows.append(
                dict(
                    d=d,
                    lam=lam,
                    init=kind,
                    steps=steps,
                    w0_steps=per_coord[:, 0],
                    other_steps=per_coord[:, 1:].max(axis=1),
                    sign_changes=flips,
                    least_active=active,
                )
            )
    return rows


def trajectory(w0, x, w_star, lam, steps):
    path = [np.asarray(w0, dtype=np.float64)]
    for _ in range(steps):
        path.append(gradient_step(path[-1], x, w_star, lam)[0][0])
    return np.array(path)


def inactive_slowdown(p=9, d=0.2, lam=0.1, tol=1e-3, max_steps=200_000):
    """Steps to converge with the ReLU gate and without it (equation (10)).

    Starts w = (0.05, -t, 0, ..., 0): sample X is active when
    0.05 (1 + a_0) - t a_1 > 0, so t > 0.0375 leaves the samples with
    a_1 = +d inactive. The same start without the gate (every sample
    counted) isolates the cost of the inactive samples from that of the
    slow coordinate w_1.
    """
    w_star = np.zeros(p)
    w_star[0] = 1.0
    x = symmetric_samples(np.full(p, d))
    rows = []
    for tilt in (0.0, 0.1, 0.3, 0.6, 1.0):
        w0 = np.zeros((1, p))
        w0[0, :2] = 0.05, -tilt
        first_gated, active = gradient_step(w0, x, w_star, lam)
        first_ungated, _ = gradient_step(w0, x, w_star, lam, gated=False)
        gated = descend(w0, x, w_star, lam, tol, max_steps)[0][0]
        ungated = descend(w0, x, w_star, lam, tol, max_steps, gated=False)[0][0]
        rows.append(
            dict(
                tilt=tilt,
                initially_active=float(active[0]),
                steps=int(gated),
                ungated_steps=int(ungated),
                first_update_ratio=float(np.linalg.norm(first_gated - w0) / np.linalg.norm(first_ungated - w0)),
            )
        )
    return rows


FIGURE3_SAMPLES = np.array([[1.0, 0.5], [0.9, -0.3]])


def figure3_zigzag(seeds, lam=0.75, tol=1e-3, max_steps=100_000):
    """The two-sample setting of Figure 3: aligned vs random starts of norm 0.4."""
    w_star = np.array([1.0, 0.0])
    rows = []
    for kind in ("aligned", "random"):
        w0 = initial_filters(kind, 2, 0.4, seeds)
        steps, _, flips, _ = descend(w0, FIGURE3_SAMPLES, w_star, lam, tol, max_steps)
        rows.append(dict(init=kind, steps=steps, sign_changes=flips))
    return rows


# ------------------------------------------------------------ Section 4
def _valid_conv(images, filters):
    """(n, H, W) images, (n, k, k) filters -> (n, H-k+1, W-k+1), one filter per image."""
    k = filters.shape[-1]
    windows = np.lib.stride_tricks.sliding_window_view(images, (k, k), axis=(1, 2))
    return np.einsum("nhwij,nij->nhw", windows, filters)


def depth_variances(case, k=3, layers=4, s2=1.0, n=100_000, seed=0):
    """Monte Carlo E[y_l^2] (= Var, by symmetry) and its standard error, l = 1..layers.

    `case`: "A" (inputs and weights perfectly correlated), "B" (inputs),
    "C" (weights), "D" (neither).
    """
    rng = np.random.default_rng(seed)
    size = 1 + layers * (k - 1)
    inputs_correlated, weights_correlated = case in "AB", case in "AC"
    x = (
        np.repeat(rng.normal(size=(n, 1, 1)), size, 1).repeat(size, 2)
        if inputs_correlated
        else rng.normal(size=(n, size, size))
    )
    means, errors = [], []
    for _ in range(layers):
        if weights_correlated:
            w = np.broadcast_to(rng.normal(scale=math.sqrt(s2), size=(n, 1, 1)), (n, k, k))
        else:
            w = rng.normal(scale=math.sqrt(s2), size=(n, k, k))
        y = _valid_conv(x, w)
        centre = y[:, y.shape[1] // 2, y.shape[2] // 2] ** 2
        means.append(centre.mean())
        errors.append(centre.std(ddof=1) / math.sqrt(n))
        x = np.maximum(y, 0.0)
    return np.array(means), np.array(errors)


def derived_variances(case, k=3, layers=4, s2=1.0):
    """The exact Var[y_l] for cases A, B, D; for C the exact layers 1 and 2."""
    if case == "C":
        first = k**2 * s2
        total = 0.0
        for (dy1, dx1), (dy2, dx2) in itertools.product(itertools.product(range(k), repeat=2), repeat=2):
            dy, dx = abs(dy1 - dy2), abs(dx1 - dx2)
            rho = (k - dy) * (k - dx) / k**2 if dy < k and dx < k else 0.0
            total += relu_product_moment(rho)
        return np.array([first, s2 * k**2 * s2 * total])
    first = (k**4 if case == "A" else k**2) * s2
    factor = (k**4 if case == "A" else k**2) * s2 / 2.0
    return first * factor ** np.arange(layers)


def relu_product_moment(rho):
    """E[ReLU(U) ReLU(V)] for standard normals with correlation rho."""
    rho = min(1.0, max(-1.0, rho))
    return (math.sqrt(1.0 - rho**2) + (math.pi - math.acos(rho)) * rho) / (2.0 * math.pi)


def table1(k, layers, s2=1.0):
    """The paper's Table 1: eta k^{2l} (A) and eta k^l (B, C, D), eta = Var[y_1] (s^2 / 2)^l."""
    first = {"A": k**4 * s2, "B": k**2 * s2, "C": k**2 * s2, "D": k**2 * s2}
    out = {}
    for case, var1 in first.items():
        power = 2 if case == "A" else 1
        out[case] = np.array([var1 * (s2 / 2.0) ** depth * k ** (power * depth) for depth in range(1, layers + 1)])
    return out


# --------------------------------------------------------------- output
def _summary(values):
    values = np.asarray(values, dtype=np.float64)
    return f"{values.mean():.1f} +/- {values.std(ddof=1) if len(values) > 1 else 0.0:.1f}"


def write_report(out, seeds):
    """Runs everything; writes table.md and the plots; returns the markdown."""
    lines = [
        "## Section 3: one filter, gradient descent (p = 9, |w(0)| = 0.5, tol 1e-3)",
        "",
        f"Mean +/- std over {len(seeds)} random starts (aligned starts are all alike).",
        "",
        "| d | lambda | start | steps to converge | steps of w_0 | steps of slowest w_i, i > 0 | "
        "sign changes per step | least active fraction |",
        "|---|---|---|---|---|---|---|---|",
    ]
    rows = convergence_table([0.05, 0.1, 0.2, 0.4, 0.8], seeds)
    for r in rows:
        lines.append(
            f"| {r['d']} | {r['lam']} | {r['init']} | {_summary(r['steps'])} | {_summary(r['w0_steps'])} | "
            f"{_summary(r['other_steps'])} | {np.mean(r['sign_changes']):.3f} | {np.min(r['least_active']):.2f} |"
        )
    lines += [
        "",
        f"Figure 3's two samples {FIGURE3_SAMPLES.tolist()}, lambda 0.75, |w(0)| = 0.4:",
        "",
        "| start | steps to converge | sign changes per step |",
        "|---|---|---|",
    ]
    for r in figure3_zigzag(seeds):
        lines.append(f"| {r['init']} | {_summary(r['steps'])} | {np.mean(r['sign_changes']):.3f} |")
    lines += [
        "",
        "Inactive samples (assumption 4 broken, equation (10)), d = 0.2, lambda = 0.1:",
        "",
        "| start w = (0.05, -t, 0, ...), t | initially active | first update, gated / every sample | "
        "steps, ReLU-gated | steps, every sample counted |",
        "|---|---|---|---|---|",
    ]
    for r in inactive_slowdown():
        lines.append(
            f"| {r['tilt']} | {r['initially_active']:.2f} | {r['first_update_ratio']:.3f} | {r['steps']} | "
            f"{r['ungated_steps']} |"
        )
    lines += [
        "",
        "## Section 4: Var[y_l] through depth (k = 3, s^2 = 1, 100,000 Monte Carlo draws)",
        "",
        "| case | l | Monte Carlo | 5 standard errors | derived here | paper's Table 1 |",
        "|---|---|---|---|---|---|",
    ]
    paper = table1(3, 4)
    for case in "ABCD":
        mc, se = depth_variances(case)
        derived = derived_variances(case)
        for depth in range(4):
            exact = f"{derived[depth]:.4g}" if depth < len(derived) else "-"
            lines.append(
                f"| {case} | {depth + 1} | {mc[depth]:.4g} | {5 * se[depth]:.2g} | {exact} | {paper[case][depth]:.4g} |"
            )
    table = "\n".join(lines) + "\n"
    os.makedirs(out, exist_ok=True)
    with open(os.path.join(out, "table.md"), "w") as f:
        f.write(table)
    _plots(out, rows)
    return table


def _plots(out, rows):
    w_star = np.array([1.0, 0.0])
    fig, axes = plt.subplots(1, 2, figsize=(10, 4.5))
    # Figure 2: one sample, under-determined: w moves along X only.
    x_one = np.array([[1.0, 0.6]])
    for start, label in [((0.4, 0.0), "aligned start"), ((0.0, 0.4), "random start")]:
        path = trajectory(start, x_one, w_star, 0.2, 60)
        axes[0].plot(
            path[:, 0], path[:, 1], ".-", ms=3, label=f"{label}: ends at ({path[-1, 0]:.2f}, {path[-1, 1]:.2f})"
        )
    axes[0].set_title("one sample (under-determined)")
    # Figure 3: two samples, over-determined: zig-zag once the path crosses.
    for start, label in [((0.4, 0.0), "aligned start"), ((0.0, 0.4), "random start")]:
        path = trajectory(start, FIGURE3_SAMPLES, w_star, 0.75, 40)
        axes[1].plot(path[:, 0], path[:, 1], ".-", ms=3, label=label)
    axes[1].set_title("two samples (over-determined), lambda 0.75")
    for ax in axes:
        ax.plot(*w_star, "k*", ms=12, label="w*")
        ax.set_xlabel("w_0")
        ax.set_ylabel("w_1")
        ax.legend(fontsize=7)
        ax.set_aspect("equal", adjustable="datalim")
    fig.tight_layout()
    fig.savefig(os.path.join(out, "trajectories.png"), dpi=100)
    plt.close(fig)

    fig, ax = plt.subplots(figsize=(6, 4))
    for lam in sorted({r["lam"] for r in rows}):
        for kind, style in [("aligned", "-"), ("random", "--")]:
            sel = [r for r in rows if r["lam"] == lam and r["init"] == kind]
            ax.plot(
                [r["d"] for r in sel],
                [np.mean(r["steps"]) for r in sel],
                style,
                marker="o",
                label=f"{kind}, lambda {lam}",
            )
    ax.set_xscale("log")
    ax.set_yscale("log")
    ax.set_xlabel("d (small: strongly correlated inputs)")
    ax.set_ylabel("steps until ||w - w*|| < 1e-3")
    ax.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(os.path.join(out, "convergence.png"), dpi=100)
    plt.close(fig)

    fig, ax = plt.subplots(figsize=(6, 4))
    paper = table1(3, 4)
    for case, color in zip("ABCD", ["C0", "C1", "C2", "C3"]):
        mc, se = depth_variances(case)
        layers = np.arange(1, 5)
        ax.errorbar(layers, mc, yerr=5 * se, fmt="o-", color=color, label=f"({case}) Monte Carlo")
        ax.plot(layers, paper[case], ":", color=color, label=f"({case}) Table 1")
    ax.set_yscale("log")
    ax.set_xlabel("layer l")
    ax.set_ylabel("Var[y_l]")
    ax.legend(fontsize=7, ncol=2)
    fig.tight_layout()
    fig.savefig(os.path.join(out, "depth_variance.png"), dpi=100)
    plt.close(fig)


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", default=os.path.join("runs", "single_filter"))
    parser.add_argument("--seeds", type=int, default=10)
    args = parser.parse_args(argv)
    print(write_report(args.out, list(range(args.seeds))))


if __name__ == "__main__":
    main()
