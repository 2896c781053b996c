"""Step and evaluation counts of the engine on fixed problems, as one JSON line: run it
at two commits to check that a refactor left the numerics alone (issue 11).

W1 (2 tanh neurons, 6 points, eps = 1e-12) to t = 400 and 1e8 with the default solver;
the escape at eps = 1e-2, 1e-8, 1e-20 with Rodas5P and Tsit5 to t = 200; a 1000-seed
refilling W1 ensemble with scales 1e-2 ... 1e-12 to t = 200; an exact ReLU run. Each
row: steps, evaluations, status, and sum |W| at the end as a fingerprint of the answer;
first-call times include compilation (noisy: compare counts, not times).

    python benchmarks/engine_counts.py > counts.json
"""

import json
import time

import diffrax
import jax
import jax.numpy as jnp
import numpy as np

import gradflow as gf


def _row(sol, seconds=None) -> dict:
    row = dict(
        steps=np.asarray(sol.num_steps).tolist(),
        evals=np.asarray(sol.num_evaluations).tolist(),
        status=np.asarray(sol.status).tolist(),
        theta=float(np.sum(np.abs(np.asarray(sol.net.W)))),
    )
    if seconds is not None:
        row["first_call_s"] = round(seconds, 2)
    return row


def _timed(fn):
    start = time.perf_counter()
    out = jax.block_until_ready(fn())
    return out, time.perf_counter() - start


def main() -> dict:
    s = jnp.linspace(-2.0, 2.0, 6)
    x = jnp.stack([s, jnp.ones_like(s)], axis=1)
    y = jnp.tanh(s + 1.0)
    net = gf.random_net(jax.random.key(0), width=2, dim=2, scale=1e-12, activation="tanh")
    out = {}
    sol, seconds = _timed(lambda: gf.gradient_flow(net, x, y, t1=400.0, reduction="sum"))
    out["w1_single_t400"] = _row(sol, seconds)
    out["w1_single_t1e8"] = _row(gf.gradient_flow(net, x, y, t1=1e8, reduction="sum"))
    for name, solver in (("Rodas5P", gf.Rodas5P()), ("Tsit5", diffrax.Tsit5())):
        for eps in (1e-2, 1e-8, 1e-20):
            start = gf.random_net(jax.random.key(1), width=2, dim=2, scale=eps, activation="tanh")
            sol = gf.gradient_flow(start, x, y, t1=200.0, reduction="sum", solver=solver)
            out[f"escape_{name}_{eps:g}"] = _row(sol)
    keys = jax.random.split(jax.random.key(2), 1000)
    scales = jnp.logspace(-2, -12, 1000)
    nets = jax.vmap(
        lambda k, e: gf.random_net(k, width=2, dim=2, scale=e, activation="tanh")
    )(keys, scales)
    ens, seconds = _timed(
        lambda: gf.flow_ensemble(nets, x, y, t1=200.0, reduction="sum", progress=False)
    )
    out["w1_refill_1000"] = dict(
        steps_total=int(np.sum(ens.num_steps)),
        evals_total=int(np.sum(ens.num_evaluations)),
        failed=int(np.sum(ens.status != 0)),
        first_call_s=round(seconds, 2),
    )
    relu = gf.random_net(jax.random.key(3), width=3, dim=2, scale=1e-3)
    sol, seconds = _timed(lambda: gf.gradient_flow(relu, x, jnp.abs(s) - 0.5, t1=100.0))
    out["relu_exact"] = _row(sol, seconds) | dict(
        events=int(sol.observables["events"].num_events)
    )
    return out


if __name__ == "__main__":
    print(json.dumps(main()))
