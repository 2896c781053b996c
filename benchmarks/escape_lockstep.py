"""Escape-phase cost and lockstep efficiency of gradflow on workload W1.

Two figures of the numerics issue, measured in one run:

1. **Escape phase.** Vector-field evaluations of `gradient_flow` (defaults) from
   init scales 1e-2 … 1e-20, each against a `solve_ivp` DOP853 reference (rtol 1e-12,
   atol 1e-14·ε) on a subset of seeds, and the ratio evals(1e-20) / evals(1e-2).
2. **Lockstep.** A vmapped batch runs until its slowest seed finishes, so its
   efficiency is mean(steps)/max(steps). Measured on an ensemble whose init scales are
   log-uniform on [1e-20, 1e-2], for chunks in random order, for chunks sorted by a
   cheap pilot run (rtol 1e-5), and for chunks sorted by the true step counts (the
   best any re-batching by predicted duration can do).

Run from the repository root: `python benchmarks/escape_lockstep.py [--quick]`.
"""

import argparse
import sys
import time

import jax
import numpy as np
from scipy.integrate import solve_ivp
from w1 import (
    flat_params,
    machine_info,
    numpy_gradient,
    REF_METHOD,
    REF_RTOL,
    relative_errors,
    T1,
    w1_data,
)

import gradflow as gf


SCALES = (1e-2, 1e-5, 1e-8, 1e-12, 1e-16, 1e-20)


def nets_at(scales, seed=0):
    keys = jax.random.split(jax.random.key(seed), len(scales))
    make = lambda k, s: gf.random_net(k, width=2, dim=2, scale=s, activation="tanh")  # noqa: E731
    return jax.vmap(make)(keys, jax.numpy.asarray(scales))


def reference(theta0, x, y, scale):
    field = lambda t, theta: -numpy_gradient(theta, x, y)  # noqa: E731
    out = []
    for theta in theta0:
        sol = solve_ivp(
            field, (0.0, T1), theta, method=REF_METHOD, rtol=REF_RTOL, atol=1e-14 * scale
        )
        out.append(sol.y[:, -1])
    return np.array(out)


def escape(num_seeds, subset):
    x, y = w1_data()
    xn, yn = np.asarray(x), np.asarray(y)
    rows = []
    for scale in SCALES:
        nets = nets_at([scale] * num_seeds)
        sol = gf.flow_ensemble(nets, x, y, t1=T1, reduction="sum", progress=False)
        assert np.all(sol.status == 0)
        theta = flat_params(sol.net)[:subset]
        ref = reference(flat_params(nets)[:subset], xn, yn, scale)
        err = relative_errors(theta, ref)
        assert err.max() < 1e-8, f"gradflow error {err.max():.1e} at scale {scale}"
        rows.append((scale, float(np.mean(sol.num_evaluations)), float(err.max())))
    print("\n## Escape phase: W1 to t1=200, defaults (Tsit5, ScaleFree, rtol 1e-10)\n")
    print("| init scale | mean evaluations / seed | × at 1e-2 | max rel. error vs DOP853 |")
    print("|---|---|---|---|")
    for scale, evals, err in rows:
        print(f"| {scale:.0e} | {evals:.0f} | {evals / rows[0][1]:.3f} | {err:.1e} |")
    return rows


def efficiency(steps, order, chunk):
    s = steps[order]
    return float(np.mean([c.mean() / c.max() for c in s.reshape(-1, chunk)]))


def lockstep(num_seeds, chunk):
    x, y = w1_data()
    rng = np.random.default_rng(1)
    scales = 10.0 ** -rng.uniform(2, 20, num_seeds)
    nets = nets_at(scales, seed=1)
    kwargs = dict(t1=T1, reduction="sum", chunk_size=num_seeds, progress=False)
    start = time.perf_counter()
    sol = gf.flow_ensemble(nets, x, y, **kwargs)
    run_time = time.perf_counter() - start
    start = time.perf_counter()
    pilot = gf.flow_ensemble(nets, x, y, rtol=1e-5, **kwargs)
    pilot_time = time.perf_counter() - start
    steps = np.asarray(sol.num_steps)
    pilot_steps = np.asarray(pilot.num_steps)
    print(
        f"\n## Lockstep: {num_seeds} seeds, scales log-uniform on [1e-20, 1e-2], "
        f"chunks of {chunk}\n"
    )
    print("| chunk order | efficiency mean/max steps |")
    print("|---|---|")
    print(f"| one batch of all seeds | {steps.mean() / steps.max():.3f} |")
    print(f"| random | {efficiency(steps, np.arange(num_seeds), chunk):.3f} |")
    print(
        f"| sorted by pilot (rtol 1e-5) | {efficiency(steps, np.argsort(pilot_steps), chunk):.3f} |"
    )
    print(f"| sorted by true steps (oracle) | {efficiency(steps, np.argsort(steps), chunk):.3f} |")
    print(
        f"\npilot: mean {pilot_steps.mean():.0f} steps vs {steps.mean():.0f} for the run "
        f"(wall {pilot_time:.1f} s vs {run_time:.1f} s, compilation included); "
        f"correlation of step counts {np.corrcoef(pilot_steps, steps)[0, 1]:.3f}"
    )


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seeds", type=int, default=64, help="seeds per init scale")
    parser.add_argument("--subset", type=int, default=8, help="seeds checked against DOP853")
    parser.add_argument("--lockstep-seeds", type=int, default=1024)
    parser.add_argument("--chunk", type=int, default=128)
    parser.add_argument("--quick", action="store_true")
    args = parser.parse_args()
    if args.quick:
        args.seeds, args.subset, args.lockstep_seeds, args.chunk = 8, 2, 128, 32
    print("command: python benchmarks/escape_lockstep.py " + " ".join(sys.argv[1:]))
    for key, value in machine_info().items():
        print(f"{key}: {value}")
    escape(args.seeds, args.subset)
    lockstep(args.lockstep_seeds, args.chunk)


if __name__ == "__main__":
    main()
