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
3. **Refill.** The same ensemble through `flow_ensemble(schedule="refill")`: slots that
   take the next seed as soon as theirs ends. Efficiency = steps of all seeds /
   (slots × loop iterations), measured; wall time against `schedule="lockstep"` with
   chunks of the same size, both compiled first; the answers checked against the
   lockstep run (same steps and statuses, values to 1e-9).

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
    solver = type(gf.default_solver(jax.tree_util.tree_map(lambda v: v[0], nets))).__name__
    print(
        f"\n## Escape phase: W1 to t1=200, defaults ({solver}, ScaleFree, linear escape, "
        "rtol 1e-10)\n"
    )
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
    kwargs = dict(t1=T1, reduction="sum", schedule="lockstep", chunk_size=num_seeds, progress=False)
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
    return nets, sol


def timed(run):
    """(result, seconds) of the second of two calls: the first one compiles."""
    run()
    start = time.perf_counter()
    out = run()
    return out, time.perf_counter() - start


def refill(nets, reference, chunk):
    x, y = w1_data()
    num_seeds = nets.a.shape[0]
    kwargs = dict(t1=T1, reduction="sum")
    chunks, chunks_time = timed(
        lambda: gf.flow_ensemble(
            nets, x, y, schedule="lockstep", chunk_size=chunk, progress=False, **kwargs
        )
    )
    (sol, stats), refill_time = timed(
        lambda: jax.block_until_ready(gf.refill_flow(nets, x, y, num_slots=chunk, **kwargs))
    )
    # Both runs are `gradient_flow` to the last bit of their arithmetic, but XLA fuses a
    # batch of 128 differently from one of 1024, and step-size decisions rest on error
    # estimates (differences of nearly equal numbers): a rare seed takes one step more
    # or less, which moves its end point by about the tolerance, not more.
    for name, other in (("chunks", chunks), ("refill", sol)):
        np.testing.assert_array_equal(other.status, reference.status)
        moved = np.abs(np.asarray(other.num_steps) - np.asarray(reference.num_steps))
        error = np.max(relative_errors(flat_params(other.net), flat_params(reference.net)))
        print(
            f"{name} vs one batch: {np.sum(moved > 0)} seeds with other step counts "
            f"(max {moved.max()}), max relative difference of W {error:.1e}"
        )
        assert np.mean(moved > 0) < 0.01 and moved.max() <= 2 and error < 1e-8
    steps = np.asarray(sol.num_steps)
    chunk_efficiency = efficiency(steps, np.arange(num_seeds), chunk)
    print(f"\n## Refill vs chunks: the same {num_seeds} seeds, {chunk} seeds in flight\n")
    print("| schedule | efficiency | wall time (s, compiled) | loop iterations |")
    print("|---|---|---|---|")
    print(
        f"| chunks of {chunk} (lockstep) | {chunk_efficiency:.3f} | {chunks_time:.2f} | "
        f"{sum(c.max() for c in steps.reshape(-1, chunk))} |"
    )
    print(
        f"| refill, {chunk} slots | {stats.efficiency:.3f} | {refill_time:.2f} | "
        f"{int(stats.iterations)} |"
    )
    print(f"\nwall time chunks / refill: {chunks_time / refill_time:.2f}")


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seeds", type=int, default=64, help="seeds per init scale")
    parser.add_argument("--subset", type=int, default=8, help="seeds checked against DOP853")
    parser.add_argument("--lockstep-seeds", type=int, default=1024)
    parser.add_argument("--chunk", type=int, default=128)
    parser.add_argument("--quick", action="store_true")
    parser.add_argument("--skip-escape", action="store_true", help="only lockstep and refill")
    args = parser.parse_args()
    if args.quick:
        args.seeds, args.subset, args.lockstep_seeds, args.chunk = 8, 2, 128, 32
    print("command: python benchmarks/escape_lockstep.py " + " ".join(sys.argv[1:]))
    for key, value in machine_info().items():
        print(f"{key}: {value}")
    if not args.skip_escape:
        escape(args.seeds, args.subset)
    nets, reference = lockstep(args.lockstep_seeds, args.chunk)
    refill(nets, reference, args.chunk)


if __name__ == "__main__":
    main()
