"""Exact-ReLU ensembles: how seeds should share the machine (issue 15, performance).

Each exact flow is its own event loop: one solver step per iteration, and the event in it
(located on the step's dense output, then applied). Seeds can share one loop in
**lockstep** (`jax.vmap` of the flow: every seed takes as many iterations as the slowest
one, and every iteration does what any seed's event needs), or run **one after another**
in one compiled loop (`jax.lax.map`, what `flow_ensemble` does for kinked activations), or
with `--devices k`, one after another on each of k simulated host CPU devices
(`flow_ensemble(..., devices=...)`, a share of the seeds each, against the same on one).

Printed per schedule: wall time of a second call (the first compiles), the loop iterations
each seed needed, the **lockstep efficiency** Σ_i iterations_i / (S · max_i iterations_i)
(the fraction of slot-iterations that advance a seed that is still running: 1 for one
seed after another), and the cost of one slot-iteration relative to one iteration of a
single seed's loop. All schedules must give each seed the same steps and events (checked
before any time is printed).

Problems: `three-point` (the adaptive regime's 3-point 2-D example: ReLU with bias, m = 10,
init 1e-3, t1 = 200) and `relu-scaling` (the issue-12 problem at n = 64, t1 = 100).

    python benchmarks/exact_ensemble.py --seeds 16
    python benchmarks/exact_ensemble.py --problem relu-scaling --seeds 4 --cpus 1
    python benchmarks/exact_ensemble.py --devices 2 --seeds 32
"""

import argparse
import os
import sys
import time


def _preset_environment(argv) -> None:
    """The host device count and the CPU affinity are read when JAX starts."""
    if "--devices" in argv:
        count = argv[argv.index("--devices") + 1]
        flags = os.environ.get("XLA_FLAGS", "")
        os.environ["XLA_FLAGS"] = f"{flags} --xla_force_host_platform_device_count={count}"
    if "--cpus" in argv:
        cpus = sorted(os.sched_getaffinity(0))[: int(argv[argv.index("--cpus") + 1])]
        os.sched_setaffinity(0, cpus)


if __name__ == "__main__":
    _preset_environment(sys.argv)

import jax  # noqa: E402
import jax.numpy as jnp  # noqa: E402
import numpy as np  # noqa: E402
from w1 import machine_info  # noqa: E402

import gradflow as gf  # noqa: E402


def three_point(seeds: int):
    x = jnp.array([[-1.0, 0.0], [1.0, 0.2], [0.1, 1.0]])
    y = jnp.array([0.5, -0.3, 1.0])
    keys = jax.random.split(jax.random.key(0), seeds)
    nets = jax.vmap(lambda k: gf.random_net(k, width=10, dim=2, scale=1e-3, bias=True))(keys)
    return nets, x, y, 200.0


def relu_scaling(seeds: int):
    from relu_scaling import problem

    _, x, y = problem(64)
    keys = jax.random.split(jax.random.key(5), seeds)
    nets = jax.vmap(lambda k: gf.random_net(k, width=50, dim=2, scale=1e-6, distribution="sphere"))(
        keys
    )
    return nets, x, y, 100.0


PROBLEMS = {"three-point": three_point, "relu-scaling": relu_scaling}


def timed(f, *args):
    jax.block_until_ready(f(*args))  # compile
    start = time.perf_counter()
    out = jax.block_until_ready(f(*args))
    return out, time.perf_counter() - start


def main(problem: str, seeds: int, devices: int | None, cpus: int | None) -> None:
    print("# exact_ensemble: how exact-ReLU seeds share the machine (issue 15)")
    for key, value in machine_info().items():
        print(f"# {key}: {value}")
    print(f"# command: python {' '.join(sys.argv)}")
    nets, x, y, t1 = PROBLEMS[problem](seeds)
    kwargs = dict(t1=t1, max_steps=1_000_000)
    print(f"# problem {problem}: {seeds} seeds, n = {x.shape[0]}, m = {nets.W.shape[1]}, t1 = {t1}")

    def flow(net):
        return gf.piecewise_flow(net, x, y, **kwargs)

    runs = {
        "one seed alone (seed 0)": (
            jax.jit(flow),
            jax.tree_util.tree_map(lambda v: v[0], nets),
        ),
        "lockstep (vmap)": (jax.jit(jax.vmap(flow)), nets),
        "one after another (lax.map)": (jax.jit(lambda ns: jax.lax.map(flow, ns)), nets),
    }
    results = {name: timed(f, arg) for name, (f, arg) in runs.items()}
    if devices:
        kw = dict(progress=False, **kwargs)
        for devs in (jax.devices()[:1], jax.devices()):
            name = f"flow_ensemble on {len(devs)} host device(s)"
            results[name] = timed(lambda ns: gf.flow_ensemble(ns, x, y, devices=devs, **kw), nets)

    reference = results["one after another (lax.map)"][0]
    iterations = np.asarray(reference.num_steps)
    width = nets.W.shape[1]

    def flat(net):  # one row (a, W) per seed; a single seed's net is one row
        return np.concatenate(
            [np.reshape(net.a, (-1, width)), np.reshape(net.W, (-1, width * net.W.shape[-1]))],
            axis=1,
        )

    theta = flat(reference.net)
    for name, (sol, _) in results.items():
        other = flat(sol.net)
        ref = theta[: other.shape[0]]
        gap = np.max(np.linalg.norm(other - ref, axis=1) / np.linalg.norm(ref, axis=1))
        events = np.atleast_1d(np.asarray(sol.observables["events"].num_events))
        ref_events = np.asarray(reference.observables["events"].num_events)[: events.size]
        # Under vmap a bracket is narrowed on the field when any seed's step holds a pin, so
        # event times differ at rounding, and decisions taken at rounding level (a release at
        # a rest point) may differ too: the end states may not.
        if not gap < 1e-6:
            sys.exit(f"{name}: end states {gap:.1e} apart from one seed after another")
        print(f"# {name}: end state within {gap:.1e} of one after another; events per seed "
              f"differ in {np.sum(events != ref_events)} seeds, by at most "
              f"{np.max(np.abs(events - ref_events))}")  # fmt: skip

    alone_wall = results["one seed alone (seed 0)"][1]
    per_iteration_alone = alone_wall / iterations[0]
    print(f"# iterations per seed: min {iterations.min()}, max {iterations.max()}, total "
          f"{iterations.sum()}; events per seed: mean "
          f"{np.mean(np.asarray(reference.observables['events'].num_events)):.0f}")  # fmt: skip
    print()
    print("| schedule | wall (s) | seeds/s | lockstep efficiency | cost of a slot-iteration "
          "/ an iteration alone |")  # fmt: skip
    print("|---|---|---|---|---|")
    for name, (sol, wall) in results.items():
        steps = np.atleast_1d(np.asarray(sol.num_steps))
        if name.startswith("lockstep"):
            efficiency = steps.sum() / (steps.size * steps.max())
            slot_iteration = wall / (steps.size * steps.max())
        else:
            efficiency = 1.0
            slot_iteration = wall / steps.sum()
        print(f"| {name} | {wall:.2f} | {steps.size / wall:.2f} | {efficiency:.2f} | "
              f"{slot_iteration / per_iteration_alone:.2f} |")  # fmt: skip


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--problem", choices=sorted(PROBLEMS), default="three-point")
    parser.add_argument("--seeds", type=int, default=16)
    parser.add_argument("--devices", type=int, default=None, help="simulated CPU devices")
    parser.add_argument("--cpus", type=int, default=None, help="run on this many CPUs")
    args = parser.parse_args()
    main(args.problem, args.seeds, args.devices, args.cpus)
