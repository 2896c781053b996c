"""The kernel regime, checked against the flow (issue 13, part 6).

A ReLU net on n = 8 points in 1-D with its hidden layer drawn from the density of
`gradflow.radon.Kernel("relu", RadonDensity(UniformOffsets(radius=R)), dim=1)` (ξ = ±1
with probability ½ each, offsets γ ~ U[−R, R]: w = ξ, b = −γ), frozen, and the outer
layer trained from a = 0 by `gradient_flow(..., trainable=("a",))` (`flow_ensemble` over
seeds) until converged. From a = 0 the flow converges to the minimum-norm a, whose
function is the minimum-norm interpolant of the width-m random-features kernel
K_m = ΦΦᵀ/m: f_m(x) = K_m(x, X) K_m(X, X)⁻¹ y, whatever the scale of a (it sets only
the time). As m grows K_m → K (E over the density), so f_m → f_∞, the kernel's
`minimum_norm_interpolant`. Measured: the sup-norm gap ‖f_m − f_∞‖ on a fine grid over
the data's range, ≥ 10 seeds per width, and its fitted rate in m (expected m^{-1/2}, the
Monte Carlo rate of K_m).

Checks before printing: each seed's flow against the closed-form limit pinv(Φ) y (the
flow's own error must sit far below the gap), and that f_∞ is a cubic between the data
points (the 1-D ReLU kernel with uniform offsets penalises ∫ f″²: a cubic spline).

    python benchmarks/kernel_regime.py                      # m = 100 ... 10000, 10 seeds
    python benchmarks/kernel_regime.py --widths 100 300     # quick
"""

import argparse
import datetime
import os
import platform
import sys
import time

import diffrax as dfx
import jax
import jax.numpy as jnp
import numpy as np

import gradflow as gf
import gradflow.radon as radon


RADIUS = 1.5  # offsets γ ~ U[−R, R]; the data lie in [−1, 1]


def data(n=8):
    """n fixed, slightly uneven points in [−1, 1] and a smooth target."""
    x = np.sort(np.linspace(-1.0, 1.0, n) + 0.05 * np.sin(7.0 * np.arange(n)))
    x = np.clip(x, -1.0, 1.0)
    return x[:, None], np.sin(3.0 * x) + 0.5 * x


def hidden_layers(key, width, seeds):
    """`seeds` stacked nets with a = 0 and (ξ, γ) from the kernel's density."""
    k_sign, k_offset = jax.random.split(key)
    xi = jnp.where(jax.random.bernoulli(k_sign, 0.5, (seeds, width)), 1.0, -1.0)
    gamma = jax.random.uniform(k_offset, (seeds, width), minval=-RADIUS, maxval=RADIUS)
    # relu(ξx − γ) = relu(wx + b) with w = ξ, b = −γ.
    return jax.vmap(lambda w, b: gf.TwoLayerNet(jnp.zeros(width), w, b, "relu"))(
        xi[..., None], -gamma
    )


def features(net, x):
    return np.maximum(x @ np.asarray(net.W).T + np.asarray(net.b)[None, :], 0.0)


def cubic_between_data(f_grid, grid, x):
    """Max over the intervals between consecutive data points of the residual of a
    least-squares cubic (and, for contrast, quadratic) fit to f there, relative to max|f|."""
    scale = np.max(np.abs(f_grid))
    worst = {2: 0.0, 3: 0.0}
    for lo, hi in zip(x[:-1], x[1:]):
        inside = (grid >= lo) & (grid <= hi)
        t = (grid[inside] - lo) / (hi - lo)
        for degree in worst:
            coef = np.polyfit(t, f_grid[inside], degree)
            residual = np.max(np.abs(np.polyval(coef, t) - f_grid[inside])) / scale
            worst[degree] = max(worst[degree], residual)
    return worst


def run_width(width, seeds, x, y, grid, f_inf, gram, key, rtol, flow):
    nets = hidden_layers(key, width, seeds)
    phis = [features(jax.tree_util.tree_map(lambda v: v[s], nets), x) for s in range(seeds)]
    n = x.shape[0]
    lam_min = min(np.linalg.eigvalsh(p @ p.T / n)[0] for p in phis)
    # Converged to e^{-20} ≈ 2e-9 of the start's distance in the slowest mode.
    t1 = 20.0 / lam_min
    kwargs = dict(
        t1=t1, trainable=("a",), coordinates=gf.ScaleFree(layerwise=False),
        solver=dfx.Tsit5(), rtol=rtol, max_steps=2_000_000, schedule="lockstep",
        progress=False,
    )  # fmt: skip
    start = time.perf_counter()
    sol = gf.flow_ensemble(nets, x, y, **kwargs) if flow else None
    wall = time.perf_counter() - start
    if flow:
        assert np.all(sol.status == gf.Status.SUCCESS), sol.status
    gaps, limit_gaps, flow_errors, kernel_errors = [], [], [], []
    for s in range(seeds):
        start_net = jax.tree_util.tree_map(lambda v: v[s], nets)
        # The closed-form limit of the flow from a = 0: the minimum-norm a.
        a_limit = np.linalg.pinv(phis[s]) @ y
        f_limit = features(start_net, grid[:, None]) @ a_limit
        limit_gaps.append(np.max(np.abs(f_limit - f_inf)))
        kernel_errors.append(np.max(np.abs(phis[s] @ phis[s].T / width - gram)))
        if flow:
            net = jax.tree_util.tree_map(lambda v: v[s], sol.net)
            f_flow = np.asarray(net(grid[:, None]))
            flow_errors.append(np.max(np.abs(f_flow - f_limit)))
            gaps.append(np.max(np.abs(f_flow - f_inf)))
    return dict(
        width=width,
        gaps=np.array(gaps) if flow else None,
        limit_gaps=np.array(limit_gaps),
        flow_error=max(flow_errors) if flow else None,
        kernel_error=np.median(kernel_errors),
        steps=int(np.max(sol.num_steps)) if flow else None,
        t1=t1,
        wall=wall,
    )


def fit_rate(widths, gaps, rng, boots=2000):
    """Least squares of log gap on log m over every seed: slope, its standard error, and
    a bootstrap 95% interval (seeds resampled within each width)."""
    logm = np.concatenate([np.full(len(g), np.log(m)) for m, g in zip(widths, gaps)])
    logg = np.concatenate([np.log(g) for g in gaps])
    design = np.stack([np.ones_like(logm), logm], 1)
    coef, res, *_ = np.linalg.lstsq(design, logg, rcond=None)
    sigma2 = np.sum((logg - design @ coef) ** 2) / (len(logg) - 2)
    stderr = np.sqrt(sigma2 * np.linalg.inv(design.T @ design)[1, 1])
    slopes = []
    for _ in range(boots):
        sample = [g[rng.integers(0, len(g), len(g))] for g in gaps]
        lg = np.concatenate([np.log(g) for g in sample])
        slopes.append(np.linalg.lstsq(design, lg, rcond=None)[0][1])
    return coef[1], stderr, np.percentile(slopes, [2.5, 97.5])


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--widths", type=int, nargs="+", default=[100, 300, 1000, 3000, 10000])
    parser.add_argument("--seeds", type=int, default=10)
    # The flow is stiff (κ(K) ≈ 2e4 on these points: Tsit5 takes 2-3e5 steps per run,
    # ~1 ms each for 10 seeds at m = 100 on 2 CPUs); wider nets get the closed-form
    # limit pinv(Φ) y only, which the flow matches where both run.
    parser.add_argument("--flow-widths", type=int, nargs="*", default=[100, 300])
    parser.add_argument("--rtol", type=float, default=1e-10)
    args = parser.parse_args()

    x, y = data()
    grid = np.linspace(-1.0, 1.0, 4001)
    kernel = radon.Kernel("relu", radon.RadonDensity(radon.UniformOffsets(radius=RADIUS)), dim=1)
    gram = np.asarray(kernel.gram(x))
    interpolant = radon.minimum_norm_interpolant(kernel, x, y)
    f_inf = np.asarray(interpolant(grid[:, None]))
    spline = cubic_between_data(f_inf, grid, x[:, 0])
    assert spline[3] < 1e-9, spline  # a cubic between the data, to rounding

    rows = []
    for i, width in enumerate(args.widths):
        flow = width in args.flow_widths
        key = jax.random.key(1000 + i)
        row = run_width(width, args.seeds, x, y, grid, f_inf, gram, key, args.rtol, flow)
        if flow:
            # The flow's own error must be far below the gap it measures.
            assert row["flow_error"] < 1e-3 * np.min(row["gaps"]), row
            print(
                f"m={width}: flow gap median {np.median(row['gaps']):.3e}, flow vs pinv "
                f"{row['flow_error']:.1e}, {row['steps']} steps, {row['wall']:.1f} s",
                flush=True,
            )
        rows.append(row)
    rng = np.random.default_rng(0)
    widths = [r["width"] for r in rows]
    fits = {"limit": fit_rate(widths, [r["limit_gaps"] for r in rows], rng)}
    flowed = [r for r in rows if r["gaps"] is not None]
    if len(flowed) >= 2:
        fits["flow"] = fit_rate([r["width"] for r in flowed], [r["gaps"] for r in flowed], rng)

    print()
    print(f"### Kernel regime: flow vs minimum-norm interpolant ({datetime.date.today()})")
    print()
    print(
        f"Machine: {platform.processor() or platform.machine()}, {os.cpu_count()} CPUs, "
        f"jax {jax.__version__} ({jax.default_backend()}), Python {sys.version.split()[0]}"
    )
    print(
        f"Command: `python benchmarks/{' '.join([os.path.basename(sys.argv[0])] + sys.argv[1:])}`"
    )
    print()
    print(
        f"n = {len(y)} points in [−1, 1], y = sin 3x + x/2; ReLU, ξ = ±1, γ ~ U[−{RADIUS}, "
        f"{RADIUS}], a from 0, `trainable=('a',)`, Tsit5, rtol {args.rtol:g}, "
        f"{args.seeds} seeds per width; gap = max over {len(grid)} grid points in [−1, 1]."
    )
    print()
    print(
        "| m | flow gap median (mean ± sd) | limit gap median (mean ± sd; min … max) "
        "| flow − limit (max) | max\\|K_m − K\\| (median) | steps | t1 | wall (s) |"
    )
    print("|---|---|---|---|---|---|---|---|")
    for r in rows:
        g, lg = r["gaps"], r["limit_gaps"]
        flow_cell = "not run" if g is None else (
            f"{np.median(g):.3e} ({g.mean():.3e} ± {g.std(ddof=1):.1e})"
        )  # fmt: skip
        print(
            f"| {r['width']} | {flow_cell} | {np.median(lg):.3e} ({lg.mean():.3e} ± "
            f"{lg.std(ddof=1):.1e}; {lg.min():.2e} … {lg.max():.2e}) | "
            f"{'—' if g is None else format(r['flow_error'], '.1e')} | "
            f"{r['kernel_error']:.2e} | {'—' if g is None else r['steps']} | "
            f"{r['t1']:.3g} | {r['wall']:.1f} |"
        )
    print()
    for name, (slope, stderr, interval) in fits.items():
        print(
            f"Fitted rate ({name} gaps): gap ∝ m^{slope:.3f} ± {stderr:.3f} (least squares "
            f"of log gap on log m over all seeds, standard error); bootstrap 95% interval "
            f"[{interval[0]:.3f}, {interval[1]:.3f}]."
        )
    print(
        f"f_∞ between the data: max relative residual of a cubic fit {spline[3]:.1e} "
        f"(of a quadratic {spline[2]:.1e}): a cubic spline."
    )
