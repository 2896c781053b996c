"""Where the matrix-free implicit phase (`Krylov`) overtakes the dense one (`Rodas5P`).

Both are Rodas5P: the same steps, up to the linear solves (GCR to 1e-12 against LU), so
the comparison is the cost of a step. For W1's problem (inputs (x, 1) at 6 points on
[-2, 2], target tanh(x + 1), loss ½·sum, Gaussian init ε = 1e-8) at growing width m
(P = 3m), it runs `TwoPhase()` (dense) and `TwoPhase(implicit=Krylov())` to t1 = 1e8 with
the stop rule ‖∇L‖ ≤ 1e-10‖θ‖, jitted and vmapped over `--seeds` seeds (and, with
`--single`, one seed alone), and prints wall times (best of `--repeats`, compilation
excluded), steps, and the largest difference between the two end states relative to ‖θ‖
(two answers at rtol 1e-10 after ~1e8 time units along nearly flat directions: up to a
few 1e-8 apart).
The tanh student's late phase, unlike W3's, still moves at t = 1e8 for small m.

Run from the repository root: `python benchmarks/krylov_crossover.py [--widths 2 4 8 ...]`.
"""

import argparse
import sys
import time

import jax


jax.config.update("jax_enable_x64", True)

import equinox as eqx  # noqa: E402
import jax.numpy as jnp  # noqa: E402
import numpy as np  # noqa: E402
from w1 import best_time, load_average, machine_info, SCALE, w1_data  # noqa: E402

import gradflow as gf  # noqa: E402


T1 = 1e8


def nets_of(width: int, num_seeds: int, seed: int) -> gf.TwoLayerNet:
    keys = jax.random.split(jax.random.key(seed), num_seeds)
    make = lambda k: gf.random_net(k, width=width, dim=2, scale=SCALE, activation="tanh")  # noqa: E731
    return jax.vmap(make)(keys)


def method(x, y, solver):
    def run(net):
        sol = gf.gradient_flow(
            net, x, y, t1=T1, reduction="sum", solver=solver, stationarity_tol=1e-10
        )
        theta = jnp.concatenate([sol.net.a, sol.net.W.ravel()])
        return dict(theta=theta, status=sol.status, steps=sol.num_steps)

    return eqx.filter_jit(jax.vmap(run))


def main(*, widths, num_seeds, repeats, seed):
    print("Dense Rodas5P against Krylov (matrix-free Rodas5P) in the late phase of TwoPhase:")
    print(f"W1's problem at width m (P = 3m), ε={SCALE:g}, t1={T1:g}, stop at ‖∇L‖ ≤ 1e-10‖θ‖")
    print("command: python " + " ".join(sys.argv))
    for key, value in machine_info().items():
        print(f"{key}: {value}")
    print()
    x, y = w1_data()
    solvers = {"dense": gf.TwoPhase(), "krylov": gf.TwoPhase(implicit=gf.Krylov())}
    print("| P | seeds | dense (s) | Krylov (s) | dense / Krylov | steps mean dense / Krylov "
          "| max ‖Δθ‖/‖θ‖ | compile dense / Krylov (s) | load |")  # fmt: skip
    print("|" + "---|" * 9)
    for width in widths:
        for batch in num_seeds:
            nets = nets_of(width, batch, seed)
            out, wall, compile_time = {}, {}, {}
            for name, solver in solvers.items():
                start = time.perf_counter()
                compiled = method(x, y, solver).lower(nets).compile()
                compile_time[name] = time.perf_counter() - start
                out[name] = jax.tree_util.tree_map(np.asarray, compiled(nets))
                if not np.all(out[name]["status"] == gf.Status.SUCCESS):
                    raise AssertionError(f"{name} at m={width}: status {out[name]['status']}")
                wall[name] = best_time(compiled, nets, repeats=repeats)
            d, k = out["dense"]["theta"], out["krylov"]["theta"]
            diff = np.max(np.linalg.norm(d - k, axis=1) / np.linalg.norm(d, axis=1))
            # Two solutions of rtol 1e-10 to t ~ 1e8 along nearly flat directions: a
            # sanity check, not the accuracy test (that is `w3.py`'s, against DOP853).
            if diff > 1e-6:
                raise AssertionError(f"m={width}: dense and Krylov differ by {diff:.1e}")
            print(
                f"| {3 * width} | {batch} | {wall['dense']:.3g} | {wall['krylov']:.3g} "
                f"| {wall['dense'] / wall['krylov']:.2f} "
                f"| {out['dense']['steps'].mean():.0f} / {out['krylov']['steps'].mean():.0f} "
                f"| {diff:.1e} | {compile_time['dense']:.0f} / {compile_time['krylov']:.0f} "
                f"| {load_average()} |",
                flush=True,
            )


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--widths", type=int, nargs="+", default=[2, 4, 8, 16, 32, 64, 128])
    parser.add_argument("--seeds", type=int, nargs="+", default=[1, 64], help="batch sizes")
    parser.add_argument("--repeats", type=int, default=2)
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()
    main(widths=args.widths, num_seeds=args.seeds, repeats=args.repeats, seed=args.seed)
