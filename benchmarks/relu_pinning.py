"""Exact ReLU flow with breakplane pinning vs small-step gradient descent (issue 3).

Problem: a biased ReLU net of width 16 at init scale 0.3 on n = 40 Gaussian points in d = 3,
target sin(x·(1, −2, 0.5)), loss ½·mean, to t = 20. Breakplanes reach data points and stay
there, so a smooth adaptive solver chatters (`tests/test_kinks.py`); `piecewise_flow` slides
along them. The reference is plain gradient descent (a jitted `lax.scan` written here, sharing
no code with gradflow's flow) at η = 1e-5 (2,000,000 steps) and η = 2e-5; GD's error against the
flow is O(η), so ‖GD(η) − GD(2η)‖ estimates it.

    python benchmarks/relu_pinning.py [--rtol 1e-10]
"""

import argparse
import datetime
import platform
import sys
import time

import jax
import jax.numpy as jnp
import numpy as np

import gradflow as gf


def problem():
    key_x, key_net = jax.random.split(jax.random.key(0))
    x = jax.random.normal(key_x, (40, 3))
    y = jnp.sin(x @ jnp.array([1.0, -2.0, 0.5]))
    net = gf.random_net(
        jax.random.split(key_net, 2)[0], width=16, dim=3, scale=0.3, activation="relu", bias=True
    )
    return net, x, y


def flat(net) -> np.ndarray:
    return np.concatenate([np.asarray(net.a), np.asarray(net.W).ravel(), np.asarray(net.b)])


def gradient_descent(theta0, x, y, *, learning_rate, num_steps, m, d):
    """θ ← θ − η∇L(θ) for `num_steps` steps, L = ½·mean (Σ_k a_k relu(w_k·x + b_k) − y)²."""

    def loss(theta):
        a, W, b = theta[:m], theta[m : m + m * d].reshape(m, d), theta[m + m * d :]
        residual = jnp.maximum(x @ W.T + b, 0) @ a - y
        return 0.5 * jnp.mean(residual**2)

    gradient = jax.grad(loss)

    @jax.jit
    def run(theta):
        step = lambda th, _: (th - learning_rate * gradient(th), None)  # noqa: E731
        return jax.lax.scan(step, theta, None, length=num_steps)[0]

    return run


def timed(fn, *args, repeats=1):
    """Best wall time of `repeats` calls of an already compiled `fn`."""
    best = np.inf
    for _ in range(repeats):
        start = time.perf_counter()
        out = jax.block_until_ready(fn(*args))
        best = min(best, time.perf_counter() - start)
    return out, best


def main(rtol: float = 1e-10, t1: float = 20.0):
    net, x, y = problem()
    m, d = net.width, net.dim
    print(f"# relu_pinning  {datetime.date.today()}  {platform.node()}  {platform.processor()}")
    print(f"# command: {' '.join(sys.argv)}  devices: {jax.devices()}")

    flow = jax.jit(lambda net: gf.piecewise_flow(net, x, y, t1=t1, rtol=rtol, max_steps=100_000))
    start = time.perf_counter()
    jax.block_until_ready(flow(net))
    compile_flow = time.perf_counter() - start
    sol, time_flow = timed(flow, net, repeats=3)
    events = sol.observables["events"]

    theta0 = jnp.asarray(flat(net))
    runs = {}
    for eta in (1e-5, 2e-5):
        steps = int(round(t1 / eta))
        gd = gradient_descent(theta0, x, y, learning_rate=eta, num_steps=steps, m=m, d=d)
        start = time.perf_counter()
        gd = gd.lower(theta0).compile()
        compile_gd = time.perf_counter() - start
        theta, seconds = timed(gd, theta0)
        runs[eta] = (np.asarray(theta), seconds, compile_gd, steps)

    theta_flow = flat(sol.net)

    def distance(p, q):
        return np.linalg.norm(p - q) / np.linalg.norm(q)

    gd1, gd2 = runs[1e-5][0], runs[2e-5][0]
    print(f"status: {gf.Status(int(sol.status)).name} ({sol.message})")
    print(
        f"exact flow (piecewise_flow, Tsit5, rtol={rtol:g}): {int(sol.num_steps)} steps "
        f"({int(sol.num_accepted_steps)} accepted), {int(sol.num_evaluations)} field "
        f"evaluations, {int(events.num_events)} events: {int(events.num_crossings)} crossings, "
        f"{int(events.num_pins)} pins, {int(sol.observables['num_pinned'][-1])} pins held at t1"
    )
    print(f"loss: {float(sol.loss[0]):.6e} -> {float(sol.loss[-1]):.6e}")
    print(f"‖exact − GD(η=1e-5)‖/‖exact‖       = {distance(gd1, theta_flow):.3e}")
    print(f"‖exact − GD(η=2e-5)‖/‖exact‖       = {distance(gd2, theta_flow):.3e}")
    print(f"‖GD(η=1e-5) − GD(η=2e-5)‖/‖GD(1e-5)‖ = {distance(gd2, gd1):.3e}")
    imbalance_drift = np.max(np.abs(np.asarray(gf.imbalance(sol.net) - gf.imbalance(net))))
    print(f"max |Δ imbalance| along the exact flow = {imbalance_drift:.2e}")
    print("wall times (compiled; best of 3 for the flow, 1 run for GD):")
    print(f"  exact flow        {time_flow:9.3f} s   (compile {compile_flow:.1f} s)")
    for eta, (_, seconds, compile_gd, steps) in runs.items():
        print(
            f"  GD η={eta:g} ({steps:,} steps) {seconds:9.3f} s   (compile {compile_gd:.1f} s)"
            f"   ratio GD/exact = {seconds / time_flow:.1f}"
        )
    ok = sol.succeeded and distance(gd1, theta_flow) < 1e-5 and time_flow < runs[1e-5][1]
    print(
        "targets (success, within 1e-5 of GD η=1e-5, faster than it):", "met" if ok else "NOT met"
    )


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rtol", type=float, default=1e-10)
    parser.add_argument("--t1", type=float, default=20.0)
    main(**vars(parser.parse_args()))
