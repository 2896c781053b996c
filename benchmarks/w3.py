"""Workload W3: the wide rational student of Zhao, Bai & Zhang's Fig. 5, to its limit.

Problem (the `wide` runs of `gradflow.experiments.single_neuron`): $f(x) = \\sum_{k=1}^{1000}
a_k \\sigma(w_k \\cdot (s, 1))$ with $\\sigma(z) = z/(1 + z^2)$, $n = 6$ points $s$ evenly
spaced on $[-2, 2]$, labels $\\tanh(s + 1)$, loss $\\tfrac12 \\sum_i (f(x_i) - y_i)^2$,
$P = 3000$ parameters, init of scale $\\varepsilon = 10^{-8}$ with the prescribed
imbalances $C_k = \\varepsilon^2 (1.5 + 0.0015 k)$ (`gf.net_with_imbalance`), one key per
seed. Every run stops once $\\|\\nabla L\\| \\le 10^{-10} \\|\\theta\\|$ or at $t_1$.

It runs, each jitted and vmapped over the seeds with $t_1$ traced (one compilation per
method), for $t_1 \\in \\{400, 10^4, 10^8\\}$:

1. gradflow's default solver for this net (`gf.default_solver(net)`: `TwoPhase` with the
   matrix-free `Krylov` implicit phase);
2. its explicit phase alone (`Unrolled(Tsit5())` stopped at the switch rule), to split the
   default's time between the phases: implicit cost per step = (time of 1 − time of 2) /
   implicit steps, explicit cost per step = time of 2 / its steps;
3. Tsit5 alone (the default before `Krylov`) to 400 and 1e4, capped at `--tsit5-max-steps`:
   the late-phase cost of an explicit step;
4. (`--dense-step`) one dense `Rodas5P` step at the state reached at t = 400: the P × P
   Jacobian and LU that `Krylov` replaces.

Accuracy: against `solve_ivp(method="DOP853", rtol=1e-12)` with a NumPy gradient on the
first `--reference` seeds, atol 1e-14·ε through the escape (to t = 50), then 1e-14 (‖θ‖ ≈
1.8 by then), to t = 400, 1e4 and each seed's stop time of the t1 = 1e8 run: explicit, but
affordable, since the flow of W3 is stationary by t ≈ 2e4 (~3e5 gradient evaluations per
seed). Errors are ‖θ − θ_ref‖/‖θ_ref‖. Every answer is checked before any time is printed.

Run from the repository root: `python benchmarks/w3.py [--quick]`.
"""

import argparse
import sys
import time

import jax


jax.config.update("jax_enable_x64", True)

import diffrax as dfx  # noqa: E402
import equinox as eqx  # noqa: E402
import jax.numpy as jnp  # noqa: E402
import numpy as np  # noqa: E402
from scipy.integrate import solve_ivp  # noqa: E402
from w1 import best_time, load_average, machine_info  # noqa: E402

import gradflow as gf  # noqa: E402


WIDTH = 1000
DIM = 2  # (s, 1)
NUM_POINTS = 6
SCALE = 1e-8
T1S = (400.0, 1e4, 1e8)
RTOL = 1e-10  # gradflow's default
STATIONARITY_TOL = 1e-10
REF_SWITCH_TIME = 50.0
REF_EARLY = dict(method="DOP853", rtol=1e-12, atol=1e-14 * SCALE)
REF_LATE = dict(method="DOP853", rtol=1e-12, atol=1e-14)
MAX_ERROR = 1e-8  # the accuracy contract at rtol 1e-10, relative to ‖θ‖


# ---------------------------------------------------------------------------- problem


def w3_data() -> tuple[jax.Array, jax.Array]:
    s = jnp.linspace(-2.0, 2.0, NUM_POINTS)
    return jnp.stack([s, jnp.ones_like(s)], axis=1), jnp.tanh(s + 1.0)


def initial_nets(seed: int, num_seeds: int, width: int = WIDTH) -> gf.TwoLayerNet:
    imbalance = (1.5 + 0.0015 * jnp.arange(width)) * SCALE**2
    keys = jax.random.split(jax.random.key(seed), num_seeds)
    make = lambda key: gf.net_with_imbalance(  # noqa: E731
        key, imbalance, dim=DIM, scale=SCALE, activation="rational"
    )
    return jax.vmap(make)(keys)


def flat_params(nets: gf.TwoLayerNet) -> np.ndarray:
    """θ = (a, W row by row) per seed, built from the fields, not gradflow's ravelling."""
    a, W = np.asarray(nets.a), np.asarray(nets.W)
    return np.concatenate([a, W.reshape(a.shape[0], -1)], axis=1)


def numpy_gradient(theta: np.ndarray, x: np.ndarray, y: np.ndarray) -> np.ndarray:
    """∇L by hand: z = XWᵀ, h = σ(z), r = ha − y, ∂L/∂a = hᵀr,
    ∂L/∂W = ((r ⊗ 1)·σ'(z)·a)ᵀ X with σ'(z) = (1 − z²)/(1 + z²)²."""
    m = theta.size // (1 + DIM)
    a, W = theta[:m], theta[m:].reshape(m, DIM)
    z = x @ W.T
    h = z / (1 + z**2)
    r = h @ a - y
    slope = (1 - z**2) / (1 + z**2) ** 2
    return np.concatenate([h.T @ r, ((r[:, None] * slope) * a).T.dot(x).ravel()])


def check_numpy_gradient(x, y) -> None:
    theta = np.random.default_rng(0).normal(size=WIDTH * (1 + DIM))
    net = gf.TwoLayerNet(
        jnp.asarray(theta[:WIDTH]), jnp.asarray(theta[WIDTH:].reshape(WIDTH, DIM)), None,
        "rational",
    )  # fmt: skip
    grad = jax.grad(lambda n: gf.squared_loss(n, x, y, reduction="sum"))(net)
    expected = np.concatenate([np.asarray(grad.a), np.asarray(grad.W).ravel()])
    actual = numpy_gradient(theta, np.asarray(x), np.asarray(y))
    np.testing.assert_allclose(actual, expected, rtol=1e-10, atol=1e-12)


def reference(theta0: np.ndarray, x, y, stop_times) -> tuple[np.ndarray, float]:
    """θ at (400, 1e4, the seed's stop time) per seed, `(seeds, 3, P)`, and the time."""
    x, y = np.asarray(x), np.asarray(y)
    field = lambda t, theta: -numpy_gradient(theta, x, y)  # noqa: E731
    start = time.perf_counter()
    out = []
    for theta, t_stop in zip(theta0, stop_times):
        early = solve_ivp(field, (0.0, REF_SWITCH_TIME), theta, **REF_EARLY)
        if not early.success or np.linalg.norm(early.y[:, -1]) < 0.1:
            raise RuntimeError("reference: the escape did not finish by t = 50.")
        state, t0, finals = early.y[:, -1], REF_SWITCH_TIME, []
        for t1 in (T1S[0], T1S[1], t_stop):
            if t1 > t0:
                late = solve_ivp(field, (t0, t1), state, **REF_LATE)
                if not late.success:
                    raise RuntimeError(f"reference DOP853 failed: {late.message}")
                state, t0 = late.y[:, -1], t1
            finals.append(state)
        out.append(finals)
        print(".", end="", flush=True)
    print()
    return np.array(out), time.perf_counter() - start


# ---------------------------------------------------------------------------- methods


def flow_method(x, y, solver, *, max_steps, stationarity_tol=STATIONARITY_TOL):
    def run(net, t1):
        sol = gf.gradient_flow(
            net, x, y, t1=t1, reduction="sum", rtol=RTOL, solver=solver,
            stationarity_tol=stationarity_tol, max_steps=max_steps,
        )  # fmt: skip
        return dict(
            net=sol.net,
            status=sol.status,
            stop_reason=sol.stop_reason,
            steps=sol.num_steps,
            phase_steps=sol.phase_steps,
            t_stop=sol.t_stop,
            stationarity=sol.stationarity,
            loss=sol.final_loss,
        )

    return eqx.filter_jit(jax.vmap(run, in_axes=(0, None)))


def compile_and_run(method, nets, t1s, repeats):
    start = time.perf_counter()
    compiled = method.lower(nets, jnp.asarray(t1s[0])).compile()
    compile_time = time.perf_counter() - start
    rows = {}
    for t1 in t1s:
        out = jax.tree_util.tree_map(np.asarray, compiled(nets, jnp.asarray(t1)))
        out["wall"] = best_time(compiled, nets, jnp.asarray(t1), repeats=repeats)
        out["theta"] = flat_params(out["net"])
        rows[t1] = out
    return rows, compile_time


def dense_step_time(x, y, theta) -> float:
    """Wall time of one dense Rodas5P step (P-column Jacobian and LU) at `theta`."""
    from gradflow._problem import FlowProblem  # the problem as the drivers build it

    problem = FlowProblem(
        gf.TwoLayerNet(jnp.asarray(theta[:WIDTH]), jnp.asarray(theta[WIDTH:].reshape(WIDTH, DIM)),
                       None, "rational"),
        x, y, None, reduction="sum", coordinates=gf.ScaleFree(), observables={},
    )  # fmt: skip
    term = dfx.ODETerm(problem.field)
    y0 = problem.to_state(problem.theta0)
    solver = gf.Rodas5P()
    step = jax.jit(lambda h: solver.step(term, 400.0, 400.0 + h, y0, None, None, False)[0])
    jax.block_until_ready(step(jnp.asarray(1.0)))
    return best_time(step, jnp.asarray(1.0), repeats=2)


# ---------------------------------------------------------------------------- main


def main(*, num_seeds, num_reference, repeats, tsit5_max_steps, seed, dense_step):
    print("W3: width-1000 rational student (σ(z) = z/(1+z²)), inputs (s, 1), n=6 on [-2, 2],")
    print(f"labels tanh(s+1), loss ½·sum, ε={SCALE:g} with imbalances ε²(1.5 + 0.0015k),")
    print(f"P = {WIDTH * (1 + DIM)}, t1 ∈ {T1S}, stop at ‖∇L‖ ≤ {STATIONARITY_TOL:g}‖θ‖, "
          f"{num_seeds} seeds (seed {seed}), rtol {RTOL:g}")  # fmt: skip
    print("command: python " + " ".join(sys.argv))
    for key, value in machine_info().items():
        print(f"{key}: {value}")
    print()
    x, y = w3_data()
    check_numpy_gradient(x, y)
    nets = initial_nets(seed, num_seeds)
    net0 = jax.tree_util.tree_map(lambda v: v[0], nets)
    default = gf.default_solver(net0)
    switch_tol = default.switch_tol
    print(f"default solver: {default}")

    methods = {
        "default": (flow_method(x, y, default, max_steps=100_000), T1S),
        "explicit phase alone": (
            flow_method(x, y, default.explicit, max_steps=100_000, stationarity_tol=switch_tol),
            T1S[-1:],
        ),
        "Tsit5 (capped)": (flow_method(x, y, dfx.Tsit5(), max_steps=tsit5_max_steps), T1S[:2]),
    }
    results = {}
    for name, (method, t1s) in methods.items():
        print(f"{name}: compiling and running ...", flush=True)
        results[name], compile_time = compile_and_run(method, nets, t1s, repeats)
        print(f"  compile {compile_time:.1f} s; load {load_average()}", flush=True)

    d = results["default"]
    final = d[T1S[-1]]
    if num_reference:
        print(f"reference on {num_reference} seed(s), to t = 400, 1e4 and t_stop ", end="")
        theta_ref, ref_time = reference(
            flat_params(nets)[:num_reference], x, y, final["t_stop"][:num_reference]
        )
        print(f"reference: {ref_time:.0f} s")
    else:  # `--reference 0`: steps and times only, no accuracy check
        theta_ref = np.zeros((0, len(T1S), WIDTH * (1 + DIM)))

    # Checks before any time is printed.
    for t1 in T1S:
        out = d[t1]
        ok = out["status"] == gf.Status.SUCCESS
        ended = (out["t_stop"] == t1) | (out["stationarity"] <= STATIONARITY_TOL)
        if not (ok.all() and ended.all()):
            raise AssertionError(f"default at t1={t1:g}: status {out['status']}, "
                                 f"stationarity {out['stationarity']}")  # fmt: skip
    errors = {}
    for name, rows in (("default", d), ("Tsit5 (capped)", results["Tsit5 (capped)"])):
        for i, t1 in enumerate(T1S):
            if t1 not in rows:
                continue
            ok = rows[t1]["status"][:num_reference] == gf.Status.SUCCESS
            e = np.linalg.norm(rows[t1]["theta"][:num_reference] - theta_ref[:, i], axis=1)
            e = e / np.linalg.norm(theta_ref[:, i], axis=1)
            errors[(name, t1)] = np.where(ok, e, np.nan)
            if name == "default" and e.size and e.max() > MAX_ERROR:
                raise AssertionError(f"default at t1={t1:g}: error {e.max():.2e}.")
    explicit = results["explicit phase alone"][T1S[-1]]
    if not np.array_equal(explicit["steps"], final["phase_steps"][:, 0]):
        raise AssertionError("the explicit phase alone took other steps than the default's.")

    print()
    print(
        "| method | t1 | status | stop | steps mean / max | phase steps (mean) | t_stop "
        "(median) | ‖∇L‖/‖θ‖ max | loss max | rel. error vs DOP853 | wall (s) |"
    )
    print("|" + "---|" * 11)
    for name, rows in results.items():
        for t1, out in rows.items():
            e = errors.get((name, t1))
            error = "—" if e is None or not e.size else f"{np.nanmax(e):.1e}"
            print(
                f"| {name} | {t1:g} | {sorted(set(out['status'].tolist()))} "
                f"| {sorted(set(out['stop_reason'].tolist()))} "
                f"| {out['steps'].mean():.0f} / {out['steps'].max()} "
                f"| {np.round(out['phase_steps'].mean(axis=0)).astype(int).tolist()} "
                f"| {np.median(out['t_stop']):.4g} | {out['stationarity'].max():.1e} "
                f"| {out['loss'].max():.1e} | {error} | {out['wall']:.3g} |"
            )
    print()
    per_seed = final["steps"] / d[T1S[0]]["steps"]
    print(
        f"steps(t1=1e8) / steps(t1=400), default: per seed {np.round(per_seed, 2).tolist()} "
        f"(target ≤ 5: {'met' if per_seed.max() <= 5 else 'NOT met'})"
    )
    tsit5 = results["Tsit5 (capped)"][T1S[1]]
    tsit5_cost = tsit5["wall"] / tsit5["steps"].max()
    # Under vmap a batch takes as many loop iterations as its slowest seed.
    implicit_cost = (final["wall"] - explicit["wall"]) / final["phase_steps"][:, 1].max()
    explicit_cost = explicit["wall"] / explicit["steps"].max()
    print(
        f"wall per loop iteration ({num_seeds} seeds in lockstep): implicit (Krylov) phase "
        f"{1e3 * implicit_cost:.2f} ms, explicit phase (Unrolled Tsit5) "
        f"{1e3 * explicit_cost:.2f} ms, Tsit5 to t=1e4 {1e3 * tsit5_cost:.2f} ms; ratio "
        f"implicit / Tsit5 late {implicit_cost / tsit5_cost:.1f}, implicit / explicit phase "
        f"{implicit_cost / explicit_cost:.1f} (target ≤ 10)"
    )
    if dense_step:
        seconds = dense_step_time(x, y, d[T1S[0]]["theta"][0])
        print(f"one dense Rodas5P step at P = 3000 (one seed): {seconds:.2f} s")
    print(f"load average at end: {load_average()}")


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--seeds", type=int, default=3, help="vmapped seeds (default 3)")
    parser.add_argument("--reference", type=int, default=1, help="seeds with a reference")
    parser.add_argument("--repeats", type=int, default=2, help="timed repeats, best kept")
    parser.add_argument("--tsit5-max-steps", type=int, default=100_000)
    parser.add_argument("--seed", type=int, default=10, help="base PRNG seed (default 10)")
    parser.add_argument("--dense-step", action="store_true", help="time one dense step")
    parser.add_argument("--quick", action="store_true", help="1 seed, 1 repeat")
    args = parser.parse_args()
    if args.quick:
        args.seeds, args.reference, args.repeats = 1, 1, 1
    main(
        num_seeds=args.seeds,
        num_reference=args.reference,
        repeats=args.repeats,
        tsit5_max_steps=args.tsit5_max_steps,
        seed=args.seed,
        dense_step=args.dense_step,
    )
