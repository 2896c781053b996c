"""The exact ReLU flow at large n against gradient descent (issue 12).

Problem (the issue's): a ReLU net without bias, d = 2, m = 50 neurons, balanced init of scale
1e-6 (`gf.random_net(..., distribution="sphere")`: |a_k| = ‖w_k‖), x ~ N(0, I_d), a linear
teacher y = x·β + 0.3 ξ (β a random unit vector, ξ ~ N(0, 1)), ½·mean loss, t1 = 2000. Crossings
grow like n·m, so the cost per event decides the wall time.

For each n: the exact flow (`gf.gradient_flow(..., kinks="exact")`, defaults but for a larger
`max_steps`) and its peer, gradient descent `gf.gradient_descent` with η = 5e-3 (400,000 steps),
each compiled ahead of time for the same shapes, then timed (best of `--repeats`, with
`block_until_ready`). The answer is checked before a time is printed: the flow must succeed and
end within `--check` (relative, in ‖θ‖) of GD, whose distance to the flow is O(η).

Printed per n: wall times and their ratio (in the same run), events (crossings, pins), solver
steps (accepted, rejected), events per accepted step, vector-field evaluations per event, the
wall time per event, and ‖θ_flow(t1) − θ_GD(t1)‖ / ‖θ_flow(t1)‖.

    python benchmarks/relu_scaling.py --quick            # n = 64, 256
    python benchmarks/relu_scaling.py --n 64 256 1024 2048 4096 8192
    python benchmarks/relu_scaling.py --cpus 1 --solver bosh3 --rtol 1e-8

`--cpus k` runs the process on k CPUs (its affinity, as `taskset -c` does, set before JAX
starts): XLA sizes its thread pool by it and splits even small element-wise ops across
the pool, which an event-driven loop of ~10^4 small ops per event pays for in hand-offs
between threads (on a shared machine, in waits for a busy core).
"""

import argparse
import os
import sys
import time


if __name__ == "__main__" and "--cpus" in sys.argv:  # before JAX sizes its thread pool
    os.sched_setaffinity(
        0, sorted(os.sched_getaffinity(0))[: int(sys.argv[sys.argv.index("--cpus") + 1])]
    )

import diffrax as dfx  # noqa: E402
import jax  # noqa: E402
import jax.numpy as jnp  # noqa: E402
import numpy as np  # noqa: E402
from w1 import machine_info  # noqa: E402

import gradflow as gf  # noqa: E402


SOLVERS = {"tsit5": dfx.Tsit5, "bosh3": dfx.Bosh3, "dopri5": dfx.Dopri5}


def problem(n: int, *, d: int = 2, m: int = 50, seed: int = 0, scale: float = 1e-6):
    key_x, key_net, key_teacher, key_noise = jax.random.split(jax.random.key(seed), 4)
    x = jax.random.normal(key_x, (n, d))
    beta = jax.random.normal(key_teacher, (d,))
    y = x @ (beta / jnp.linalg.norm(beta)) + 0.3 * jax.random.normal(key_noise, (n,))
    net = gf.random_net(key_net, width=m, dim=d, scale=scale, distribution="sphere")
    return net, x, y


def flat(net) -> np.ndarray:
    return np.concatenate([np.ravel(net.a), np.ravel(net.W)])


def timed(fn, *args, repeats: int = 1):
    """Compile `jax.jit(fn)` for `args` ahead of time, then the best wall time of `repeats` calls.

    Compiling ahead of time (`lower(...).compile()`) rather than by a first call keeps a large-n
    flow from being run once more only to be compiled."""
    start = time.perf_counter()
    compiled = jax.jit(fn).lower(*args).compile()
    first = time.perf_counter() - start
    best = np.inf
    for _ in range(repeats):
        start = time.perf_counter()
        out = jax.block_until_ready(compiled(*args))
        best = min(best, time.perf_counter() - start)
    return out, best, first


def run(n, *, t1, eta, d, m, repeats, max_steps, check, gd, rtol, solver):
    net, x, y = problem(n, d=d, m=m)
    exact = lambda net, x, y: gf.gradient_flow(  # noqa: E731
        net, x, y, t1=t1, kinks="exact", max_steps=max_steps, rtol=rtol, solver=SOLVERS[solver]()
    )
    sol, wall, first = timed(exact, net, x, y, repeats=repeats)
    if not sol.succeeded:
        sys.exit(f"n={n}: the exact flow failed: {sol.message}")
    events = sol.observables["events"]
    num_events = int(events.num_events)
    accepted, steps = int(sol.num_accepted_steps), int(sol.num_steps)
    row = dict(
        n=n,
        exact_s=wall,
        exact_first_s=first,
        events=num_events,
        crossings=int(events.num_crossings),
        pins=int(events.num_pins),
        accepted=accepted,
        rejected=steps - accepted,
        events_per_step=num_events / max(accepted, 1),
        evals_per_event=int(sol.num_evaluations) / max(num_events, 1),
        ms_per_event=1e3 * wall / max(num_events, 1),
        final_loss=float(sol.final_loss),
    )
    if gd:
        descent = lambda net, x, y: gf.gradient_descent(  # noqa: E731
            net, x, y, learning_rate=eta, t1=t1
        )
        gd_sol, gd_wall, gd_first = timed(descent, net, x, y)
        theta, theta_gd = flat(sol.net), flat(gd_sol.net)
        distance = np.linalg.norm(theta - theta_gd) / np.linalg.norm(theta)
        if not distance < check:
            sys.exit(f"n={n}: the exact flow ends {distance:.2e} from GD (η={eta:g}), > {check:g}")
        row.update(gd_s=gd_wall, gd_first_s=gd_first, ratio=wall / gd_wall, distance=distance)
    return row


def main(ns, *, t1, eta, d, m, repeats, max_steps, check, gd, rtol, solver, cpus):
    print("# relu_scaling: exact ReLU flow vs gradient descent (issue 12)")
    for key, value in machine_info().items():
        print(f"# {key}: {value}")
    print(f"# command: python {' '.join(sys.argv)}")
    print(
        f"# d={d} m={m} t1={t1:g} GD η={eta:g}; exact flow ({solver}, rtol={rtol:g}) best of "
        f"{repeats}, GD one timed run; cpus={cpus or 'all'}"
    )
    print()
    print(
        "| n | exact flow (s) | GD (s) | exact/GD | events | crossings | pins | accepted | "
        "rejected | events/step | evals/event | ms/event | ‖θ−θ_GD‖/‖θ‖ | compile (s) |"
    )
    print("|" + "---|" * 14)
    for n in ns:
        r = run(n, t1=t1, eta=eta, d=d, m=m, repeats=repeats, max_steps=max_steps, check=check,
                gd=gd, rtol=rtol, solver=solver)  # fmt: skip
        gd_cols = f"{r['gd_s']:.2f} | {r['ratio']:.2f} |" if gd else "– | – |"
        print(
            f"| {n} | {r['exact_s']:.2f} | {gd_cols} {r['events']} | {r['crossings']} | "
            f"{r['pins']} | {r['accepted']} | {r['rejected']} | {r['events_per_step']:.2f} | "
            f"{r['evals_per_event']:.1f} | {r['ms_per_event']:.3f} | "
            f"{r.get('distance', float('nan')):.2e} | {r['exact_first_s']:.1f} |",
            flush=True,
        )


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--n", type=int, nargs="+", default=[64, 256, 1024, 2048, 4096, 8192])
    parser.add_argument("--quick", action="store_true", help="n = 64 and 256 only")
    parser.add_argument("--t1", type=float, default=2000.0)
    parser.add_argument("--eta", type=float, default=5e-3)
    parser.add_argument("--d", type=int, default=2)
    parser.add_argument("--m", type=int, default=50)
    parser.add_argument("--repeats", type=int, default=1)
    parser.add_argument("--max-steps", type=int, default=1_000_000)
    parser.add_argument("--check", type=float, default=1e-2, help="largest distance to GD")
    parser.add_argument("--no-gd", dest="gd", action="store_false", help="time the flow only")
    parser.add_argument("--rtol", type=float, default=1e-10, help="the exact flow's rtol")
    parser.add_argument("--solver", choices=sorted(SOLVERS), default="tsit5")
    parser.add_argument("--cpus", type=int, default=None, help="run on this many CPUs")
    args = vars(parser.parse_args())
    ns = [64, 256] if args.pop("quick") else args.pop("n")
    args.pop("n", None)
    main(ns, **args)
