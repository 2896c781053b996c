"""Workload W2 on an accelerator: seed-steps per second and the memory-bandwidth roofline.

W2: $f(x) = \\sum_{k=1}^{100} a_k \\tanh(w_k \\cdot x)$, $d = 10$, $n = 100$ Gaussian inputs,
target a tanh teacher neuron $\\tanh(w^* \\cdot x)$ with $\\|w^*\\| = 1$, loss ½·mean,
Gaussian init of scale ε = 1e-6, 10^4 seeds, t1 = 50 (the escape and the fit).
P = m·d + m = 1100 parameters, so gradflow's default solver is Tsit5.

For float64 and float32 it runs `flow_ensemble` (refilling slots, all local devices),
compiled first, checks the answer (every seed's status; float64 against a 100× tighter
rtol on a few seeds; float32 against float64), then times a second run with
`block_until_ready` and reports:

- seed-steps per second: Σ_seeds num_steps / wall time;
- bytes one step must move, and the fraction of the device's memory bandwidth that
  the measured rate implies. Per vector-field evaluation and seed, the least traffic is
  reading θ and writing ∇L (2P numbers) and writing then re-reading the
  pre-activations for the backward pass (2·m·n numbers); the data x (n·d) are shared by
  all seeds and not counted. A Tsit5 step is 6 evaluations (FSAL) plus its stage
  combinations, which read and write ~s²/2 + 2s vectors of P numbers. Any step moves at
  least that; so fraction = seed-steps/s × bytes/step ÷ peak bandwidth is an upper
  bound on how well the loop uses memory.

`--peak-bandwidth` (bytes/s) defaults from the device kind (H100 SXM 3.35e12, H200
4.8e12, A100 80GB 2.0e12); on a CPU pass it explicitly or read the fraction as n/a.

Run: `python benchmarks/w2_device.py` on the device, `python benchmarks/w2_device.py
--quick` anywhere (256 seeds, t1 = 10: checks that the script works).
"""

import argparse
import sys
import time

import jax


jax.config.update("jax_enable_x64", True)

import equinox as eqx  # noqa: E402
import jax.numpy as jnp  # noqa: E402
import numpy as np  # noqa: E402
from w1 import flat_params, machine_info, relative_errors  # noqa: E402

import gradflow as gf  # noqa: E402


WIDTH, DIM, NUM_POINTS, SCALE = 100, 10, 100, 1e-6
TSIT5_STAGES = 6  # evaluations per step (7 stages, first same as last)
PEAK_BANDWIDTH = {"H100": 3.35e12, "H200": 4.8e12, "A100": 2.0e12}


# Drawn in float64 and rounded, so that float32 runs the same problem from the same inits.
def problem(dtype):
    key_x, key_w = jax.random.split(jax.random.key(0))
    x = jax.random.normal(key_x, (NUM_POINTS, DIM), jnp.float64)
    w_star = jax.random.normal(key_w, (DIM,), jnp.float64)
    y = jnp.tanh(x @ (w_star / jnp.linalg.norm(w_star)))
    return x.astype(dtype), y.astype(dtype)


def initial_nets(num_seeds, dtype):
    keys = jax.random.split(jax.random.key(1), num_seeds)
    make = lambda k: gf.random_net(k, width=WIDTH, dim=DIM, scale=SCALE, activation="tanh")  # noqa: E731
    nets = jax.vmap(make)(keys)
    return jax.tree_util.tree_map(lambda v: v.astype(dtype) if eqx.is_array(v) else v, nets)


def bytes_per_step(itemsize: int) -> float:
    """The least memory traffic of one Tsit5 step of one seed (see the module docstring)."""
    P = WIDTH * DIM + WIDTH
    per_evaluation = 2 * P + 2 * WIDTH * NUM_POINTS
    combinations = (7 * 7 / 2 + 2 * 7) * P
    return itemsize * (TSIT5_STAGES * per_evaluation + combinations)


def run(nets, x, y, *, t1, rtol, num_slots):
    return gf.flow_ensemble(
        nets, x, y, t1=t1, rtol=rtol, num_slots=num_slots, chunk_size=nets.a.shape[0],
        progress=False,
    )  # fmt: skip


def main(*, num_seeds, t1, num_slots, check, peak_bandwidth):
    device = jax.devices()[0]
    kind = device.device_kind
    if peak_bandwidth is None:
        peak_bandwidth = next((v for k, v in PEAK_BANDWIDTH.items() if k in kind), None)
    print(f"W2: m={WIDTH} tanh, d={DIM}, n={NUM_POINTS}, ε={SCALE:g}, t1={t1:g}, {num_seeds} seeds")
    print("command: python " + " ".join(sys.argv))
    for key, value in machine_info().items():
        print(f"{key}: {value}")
    print(f"devices: {jax.device_count()} × {kind}")
    print()

    results = {}
    for dtype, rtol in ((jnp.float64, 1e-10), (jnp.float32, 1e-5)):
        name = jnp.dtype(dtype).name
        x, y = problem(dtype)
        nets = initial_nets(num_seeds, dtype)
        start = time.perf_counter()
        solution = run(nets, x, y, t1=t1, rtol=rtol, num_slots=num_slots)
        first = time.perf_counter() - start
        status = np.asarray(solution.status)
        if not np.all(status == gf.Status.SUCCESS):
            raise AssertionError(f"{name}: {np.sum(status != 0)} seeds failed; not timing.")
        start = time.perf_counter()
        solution = jax.block_until_ready(run(nets, x, y, t1=t1, rtol=rtol, num_slots=num_slots))
        wall = time.perf_counter() - start
        steps = np.asarray(solution.num_steps)
        rate = steps.sum() / wall
        traffic = bytes_per_step(jnp.dtype(dtype).itemsize)
        results[name] = (solution, rtol, x, y, nets)
        fraction = "n/a" if peak_bandwidth is None else f"{rate * traffic / peak_bandwidth:.3f}"
        print(
            f"{name} (rtol {rtol:g}): {wall:.2f} s (first call, compile included: {first:.1f} s); "
            f"steps mean {steps.mean():.0f} max {steps.max()}; {rate:.3g} seed-steps/s; "
            f"≥{traffic / 1e3:.0f} kB/step → {rate * traffic / 1e9:.1f} GB/s, "
            f"roofline fraction {fraction}"
        )

    # Answers: float64 against itself at 100× tighter rtol, float32 against float64.
    solution, rtol, x, y, nets = results["float64"]
    few = jax.tree_util.tree_map(lambda v: v[:check], nets)
    tight = run(few, x, y, t1=t1, rtol=1e-2 * rtol, num_slots=check)
    error64 = relative_errors(flat_params(solution.net)[:check], flat_params(tight.net))
    error32 = relative_errors(flat_params(results["float32"][0].net), flat_params(solution.net))
    print(
        f"float64 vs rtol {1e-2 * rtol:g} ({check} seeds): "
        f"max relative difference {error64.max():.1e}"
    )
    print(
        f"float32 vs float64 (all seeds): median {np.median(error32):.1e}, max {error32.max():.1e}"
    )


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--seeds", type=int, default=10_000)
    parser.add_argument("--t1", type=float, default=50.0)
    parser.add_argument("--num-slots", type=int, default=2048, help="seeds in flight per device")
    parser.add_argument("--check", type=int, default=8, help="seeds checked at tighter rtol")
    parser.add_argument("--peak-bandwidth", type=float, default=None, help="bytes/s")
    parser.add_argument("--quick", action="store_true", help="256 seeds, t1 = 10, 64 slots")
    args = parser.parse_args()
    if args.quick:
        args.seeds, args.t1, args.num_slots = 256, 10.0, 64
    main(
        num_seeds=args.seeds,
        t1=args.t1,
        num_slots=args.num_slots,
        check=args.check,
        peak_bandwidth=args.peak_bandwidth,
    )
