"""Benchmark for workload W1: a 1000-seed ensemble of tiny-init tanh nets.

Problem: $f(x) = \\sum_{k=1}^{2} a_k \\tanh(w_k \\cdot (x, 1))$ on $n = 6$ points evenly
spaced on $[-2, 2]$, target $\\tanh(x + 1)$, loss $\\tfrac12 \\sum_i (f(x_i) - y_i)^2$,
Gaussian init of scale $\\varepsilon = 10^{-8}$, integrated to $t_1 = 200$.

Compares, on the same seeds:

1. `gradflow.gradient_flow`, jitted and vmapped over the seeds: its defaults (`TwoPhase`
   for a net this small, rtol 1e-10), Tsit5 and Rodas5P alone, and `TwoPhase` at looser
   rtols, once with Diffrax's own Tsit5 in its explicit phase (the throughput targets:
   ≥2× faster than GD at η = 1e-2 while ≥100× more accurate; ≥300× faster than
   `solve_ivp` per seed);
   The first and the `TwoPhase` rtol 1e-8 runs again with `flow_ensemble` sharding the
   seeds over one XLA host device per CPU core (each device its own solver loop), in a
   child process, since the device count is fixed when JAX starts;
2. gradient descent written here with `jax.lax.scan` (jitted, vmapped), at two step
   sizes, with $t = k\\eta$;
3. `scipy.integrate.solve_ivp` (RK45 at rtol 1e-8, DOP853 at rtol 1e-10) one seed at a
   time with a NumPy gradient, timed on a subset of seeds and extrapolated;

against a reference `solve_ivp` DOP853 solve at tight tolerances on that subset.
Run `python benchmarks/w1.py --help` for the options.
"""

import argparse
import datetime
import json
import os
import platform
import subprocess
import sys
import time

import jax


jax.config.update("jax_enable_x64", True)

import diffrax  # noqa: E402
import equinox as eqx  # noqa: E402
import jax.numpy as jnp  # noqa: E402
import numpy as np  # noqa: E402
import scipy  # noqa: E402
from scipy.integrate import solve_ivp  # noqa: E402

import gradflow as gf  # noqa: E402


WIDTH = 2
DIM = 2  # (x, 1): the constant coordinate plays the part of a bias
NUM_POINTS = 6
SCALE = 1e-8
T1 = 200.0

GD_STEP_SIZES = (1e-2, 1e-3)

# solve_ivp as a researcher would call it: the default RK45 at a tight rtol, with an
# atol far below the init scale (a default-sized atol such as 1e-6 would let the solver
# step straight over the escape from a 1e-8 init).
IVP_METHOD, IVP_RTOL, IVP_ATOL = "RK45", 1e-8, 1e-10 * SCALE
# And at an accuracy like gradflow's default: an 8th-order method at rtol 1e-10.
IVP_TIGHT = ("DOP853", 1e-10, 1e-14 * SCALE)
# The reference: an 8th-order method at tolerances well past anything compared with it.
# (Tightening it to rtol=3e-14 moves the answer by ~1e-13 relative.)
REF_METHOD, REF_RTOL, REF_ATOL = "DOP853", 1e-12, 1e-14 * SCALE

# gradflow's default rtol is documented to give ~1e-9 global relative error.
GRADFLOW_MAX_ERROR = 1e-6


# ---------------------------------------------------------------------------- problem


def w1_data() -> tuple[jax.Array, jax.Array]:
    """Inputs `(n, 2)` = (x, 1) and targets tanh(x + 1)."""
    s = jnp.linspace(-2.0, 2.0, NUM_POINTS)
    x = jnp.stack([s, jnp.ones_like(s)], axis=1)
    return x, jnp.tanh(s + 1.0)


def initial_nets(seed: int, num_seeds: int) -> gf.TwoLayerNet:
    """`num_seeds` stacked nets, one per key of `jax.random.split(key(seed), num_seeds)`."""
    keys = jax.random.split(jax.random.key(seed), num_seeds)
    make = lambda key: gf.random_net(  # noqa: E731
        key, width=WIDTH, dim=DIM, scale=SCALE, activation="tanh"
    )
    return jax.vmap(make)(keys)


def flat_params(nets: gf.TwoLayerNet) -> np.ndarray:
    """θ = (a_1, a_2, w_11, w_12, w_21, w_22) per seed, shape `(seeds, 6)`.

    Built here from the fields rather than with gradflow's own flattening, so the
    baselines below share nothing with gradflow but the initial values.
    """
    a = np.asarray(nets.a)
    W = np.asarray(nets.W)
    return np.concatenate([a, W.reshape(a.shape[0], -1)], axis=1)


def loss(theta, x, y):
    """½·sum of squared residuals, in plain JAX (used by the gradient-descent baseline)."""
    a = theta[:WIDTH]
    W = theta[WIDTH:].reshape(WIDTH, DIM)
    residual = jnp.tanh(x @ W.T) @ a - y
    return 0.5 * jnp.sum(residual**2)


def numpy_gradient(theta: np.ndarray, x: np.ndarray, y: np.ndarray) -> np.ndarray:
    """∇L by hand: with h = tanh(XWᵀ) and r = ha − y,
    ∂L/∂a = hᵀr and ∂L/∂W = ((r ⊗ 1)·(1 − h²)·a)ᵀ X."""
    a = theta[:WIDTH]
    W = theta[WIDTH:].reshape(WIDTH, DIM)
    h = np.tanh(x @ W.T)  # (n, m)
    r = h @ a - y  # (n,)
    grad_a = h.T @ r
    grad_W = ((r[:, None] * (1.0 - h**2)) * a).T @ x  # (m, d)
    return np.concatenate([grad_a, grad_W.ravel()])


def check_numpy_gradient(x: np.ndarray, y: np.ndarray) -> None:
    """The hand-written gradient must agree with autodiff of `loss` at a generic point."""
    theta = np.random.default_rng(0).normal(size=WIDTH + WIDTH * DIM)
    expected = np.asarray(jax.grad(loss)(jnp.asarray(theta), jnp.asarray(x), jnp.asarray(y)))
    np.testing.assert_allclose(numpy_gradient(theta, x, y), expected, rtol=1e-12, atol=1e-14)


def relative_errors(theta: np.ndarray, reference: np.ndarray) -> np.ndarray:
    """‖θ − θ_ref‖ / ‖θ_ref‖ per seed."""
    return np.linalg.norm(theta - reference, axis=1) / np.linalg.norm(reference, axis=1)


# ---------------------------------------------------------------------------- timing


def best_time(fn, *args, repeats: int) -> float:
    """Best wall time of `repeats` calls, each waited on with `block_until_ready`."""
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        jax.block_until_ready(fn(*args))
        times.append(time.perf_counter() - start)
    return min(times)


# gradflow runs: (label, solver, rtol); None = gradflow's default.
GRADFLOW_RUNS = (
    ("gradflow defaults", None, None),
    ("gradflow Tsit5", diffrax.Tsit5(), None),
    ("gradflow Rodas5P", gf.Rodas5P(), None),
    ("gradflow Rodas5P", gf.Rodas5P(), 1e-8),
    ("gradflow Rodas5P", gf.Rodas5P(), 1e-6),
    ("gradflow", gf.TwoPhase(), 1e-8),
    ("gradflow", gf.TwoPhase(), 1e-6),
    # The same with Diffrax's own Tsit5 (its stage loop) in the explicit phase.
    ("gradflow", gf.TwoPhase(explicit=diffrax.Tsit5()), 1e-8),
)


# Rows run on every CPU core: each core an XLA host device, and `flow_ensemble` shards
# the seeds over them, one solver loop per device. The device count must be set before
# JAX starts, so these rows run in a child process (`--sharded-worker`).
SHARDED_RUNS = (
    ("gradflow defaults", None, None),
    ("gradflow", gf.TwoPhase(), 1e-8),
)


def solver_name(solver) -> str:
    if isinstance(solver, gf.TwoPhase):
        return (
            f"TwoPhase: {solver_name(solver.explicit)} → {solver_name(solver.implicit)} "
            f"at ‖∇L‖≤{solver.switch_tol:g}‖θ‖"
        )
    if isinstance(solver, gf.Unrolled):
        return f"{type(solver.method).__name__} unrolled"
    return type(solver).__name__


def run_gradflow(nets, x, y, *, rtol, repeats, solver=None):
    """Compiles, runs once (the result is returned for checking), then times."""
    kwargs = {} if rtol is None else {"rtol": rtol}
    if solver is not None:
        kwargs["solver"] = solver
    flow = eqx.filter_jit(
        jax.vmap(lambda net: gf.gradient_flow(net, x, y, t1=T1, reduction="sum", **kwargs))
    )
    start = time.perf_counter()
    compiled = flow.lower(nets).compile()
    compile_time = time.perf_counter() - start
    solution = jax.block_until_ready(compiled(nets))
    return solution, compiled, compile_time


def sharded_worker(*, seed: int, num_seeds: int, repeats: int) -> None:
    """The child process of `run_sharded`: prints one JSON list of results."""
    x, y = w1_data()
    nets = initial_nets(seed, num_seeds)
    results = []
    for label, solver, rtol in SHARDED_RUNS:
        kwargs = dict(t1=T1, reduction="sum", schedule="lockstep", chunk_size=num_seeds)
        kwargs.update({} if rtol is None else {"rtol": rtol})
        kwargs.update({} if solver is None else {"solver": solver})
        run = lambda: gf.flow_ensemble(nets, x, y, progress=False, **kwargs)  # noqa: E731
        start = time.perf_counter()
        solution = run()
        first_call = time.perf_counter() - start
        # Not timing a failed run (the parent checks the values against its reference).
        if not np.all(solution.status == gf.Status.SUCCESS):
            raise AssertionError(f"sharded run {len(results)}: not every seed succeeded.")
        results.append(
            dict(
                index=len(results),
                time=best_time(run, repeats=repeats),
                compile_time=first_call,
                theta=flat_params(solution.net).tolist(),
                evaluations=float(np.mean(solution.num_evaluations)),
            )
        )
    print(json.dumps(dict(devices=len(jax.devices()), results=results)))


def run_sharded(num_devices: int, *, seed: int, num_seeds: int, repeats: int) -> dict:
    """`SHARDED_RUNS` on `num_devices` XLA host devices, in a child process."""
    env = os.environ | {"XLA_FLAGS": f"--xla_force_host_platform_device_count={num_devices}"}
    command = [sys.executable, os.path.abspath(__file__), "--sharded-worker"]
    command += ["--seed", str(seed), "--seeds", str(num_seeds), "--repeats", str(repeats)]
    done = subprocess.run(command, env=env, capture_output=True, text=True)
    if done.returncode != 0:
        raise RuntimeError(f"the sharded runs failed:\n{done.stderr[-3000:]}")
    report = json.loads(done.stdout.strip().splitlines()[-1])
    if report["devices"] != num_devices:
        raise RuntimeError(f"asked for {num_devices} devices, the child had {report['devices']}.")
    return report


def make_gradient_descent(x, y, step_size: float, num_steps: int):
    """θ_{k+1} = θ_k − η ∇L(θ_k) for `num_steps` steps, vmapped over seeds."""
    gradient = jax.grad(loss)

    def descend(theta0):
        def step(theta, _):
            return theta - step_size * gradient(theta, x, y), None

        theta, _ = jax.lax.scan(step, theta0, None, length=num_steps)
        return theta

    return jax.jit(jax.vmap(descend))


def run_gradient_descent(theta0, x, y, *, step_size, repeats):
    num_steps = round(T1 / step_size)
    descend = make_gradient_descent(x, y, step_size, num_steps)
    start = time.perf_counter()
    compiled = descend.lower(theta0).compile()
    compile_time = time.perf_counter() - start
    theta = np.asarray(jax.block_until_ready(compiled(theta0)))
    return dict(
        theta=theta,
        compile_time=compile_time,
        time=best_time(compiled, theta0, repeats=repeats),
        evaluations=num_steps,
    )


def run_solve_ivp(theta0: np.ndarray, x, y, *, method, rtol, atol, repeats: int = 1):
    """One `solve_ivp` call per seed; returns θ(t1), the total time (best of `repeats`
    passes over the seeds, as for the JAX methods) and mean nfev."""
    field = lambda t, theta: -numpy_gradient(theta, x, y)  # noqa: E731
    times = []
    for _ in range(repeats):
        finals, nfev = [], []
        start = time.perf_counter()
        for theta in theta0:
            sol = solve_ivp(field, (0.0, T1), theta, method=method, rtol=rtol, atol=atol)
            if not sol.success:
                raise RuntimeError(f"solve_ivp {method} failed: {sol.message}")
            finals.append(sol.y[:, -1])
            nfev.append(sol.nfev)
        times.append(time.perf_counter() - start)
    return dict(theta=np.array(finals), time=min(times), evaluations=float(np.mean(nfev)))


# ---------------------------------------------------------------------------- report


def machine_info() -> dict[str, str]:
    cpu = platform.processor() or "unknown"
    try:
        with open("/proc/cpuinfo") as f:
            names = [line.split(":", 1)[1].strip() for line in f if line.startswith("model name")]
        cpu = names[0] if names else cpu
    except OSError:
        pass
    return {
        "date": datetime.datetime.now().astimezone().isoformat(timespec="seconds"),
        "platform": platform.platform(),
        "cpu": f"{cpu} ({os.cpu_count()} logical CPUs)",
        # XLA sizes its CPU thread pool by the process's affinity (`taskset`).
        "cpus this process may use": str(sorted(os.sched_getaffinity(0))),
        "python": platform.python_version(),
        "versions": (
            f"jax {jax.__version__}, diffrax {diffrax.__version__}, "
            f"equinox {eqx.__version__}, numpy {np.__version__}, scipy {scipy.__version__}, "
            f"gradflow {gf.__version__}"
        ),
        "jax backend": f"{jax.default_backend()} ({jax.devices()[0].device_kind})",
        "load average at start": load_average(),
    }


def load_average() -> str:
    """1/5/15-minute load: other work on the machine inflates every time below."""
    try:
        return "/".join(f"{v:.2f}" for v in os.getloadavg())
    except OSError:
        return "unknown"


def format_table(rows, num_seeds: int) -> str:
    header = (
        f"| method | wall time, {num_seeds} seeds (s) | per seed (ms) | × gradflow "
        "| rel. error median | rel. error max | gradient evals / seed | compile (s) |"
    )
    lines = [header, "|" + "---|" * 8]
    for row in rows:
        star = "*" if row.get("extrapolated") else ""
        compile_time = row.get("compile_time")
        lines.append(
            f"| {row['name']} | {row['total']:.3g}{star} | {1e3 * row['total'] / num_seeds:.3g}"
            f"{star} | {row['ratio']:.3g} | {row['error_median']} | {row['error_max']} "
            f"| {row['evaluations']:.0f} | "
            f"{'—' if compile_time is None else f'{compile_time:.2f}'} |"
        )
    return "\n".join(lines)


def ivp_row(name, result, median, largest, subset, num_seeds) -> dict:
    return dict(
        name=name,
        total=result["time"] / subset * num_seeds,
        extrapolated=subset < num_seeds,
        error_median=fmt_error(median),
        error_max=fmt_error(largest),
        max_error=largest,
        evaluations=result["evaluations"],
        compile_time=None,
    )


def throughput_summary(rows) -> list[str]:
    """The throughput target: ≥2× faster than GD at η = 1e-2 while ≥100× more accurate
    (max error over the checked seeds), and ≥300× faster than per-seed `solve_ivp`."""
    gd = next(row for row in rows if row.get("step_size") == 1e-2)
    ivps = [row for row in rows if row["name"].startswith("solve_ivp") and row["max_error"]]
    lines = [
        "throughput target: ≥2× faster than GD η=1e-2 at ≥100× its accuracy; "
        "≥300× faster than solve_ivp per seed"
    ]
    for row in rows:
        if not row["name"].startswith("gradflow"):
            continue
        speed = gd["total"] / row["total"]
        accuracy = gd["max_error"] / row["max_error"]
        met = speed >= 2 and accuracy >= 100
        peers = "; ".join(
            f"{ivp['total'] / row['total']:.0f}× faster than {ivp['name'].split(' atol')[0]}"
            f" ({'more' if row['max_error'] <= ivp['max_error'] else 'less'} accurate)"
            for ivp in ivps
        )
        lines.append(
            f"  {row['name']}: {speed:.2f}× GD's speed at {accuracy:.0f}× its accuracy "
            f"({'met' if met else 'not met'}); {peers}"
        )
    return lines


def fmt_error(value: float | None) -> str:
    return "—" if value is None else f"{value:.2e}"


# ---------------------------------------------------------------------------- main


def main(*, seed: int, num_seeds: int, subset: int, repeats: int, rtol: float | None) -> None:
    if not 1 <= subset <= num_seeds:
        raise ValueError(f"`--subset` must be between 1 and `--seeds` ({num_seeds}).")
    info = machine_info()
    print("W1 benchmark: m=2 tanh, inputs (x, 1), n=6 on [-2, 2], target tanh(x+1),")
    print(f"loss ½·sum, Gaussian init ε={SCALE:g}, t1={T1:g}, {num_seeds} seeds (seed {seed})")
    print("command: python " + " ".join(sys.argv))
    for key, value in info.items():
        print(f"{key}: {value}")
    print()

    x, y = w1_data()
    x_np, y_np = np.asarray(x), np.asarray(y)
    check_numpy_gradient(x_np, y_np)
    nets = initial_nets(seed, num_seeds)
    theta0 = flat_params(nets)

    # Reference on the first `subset` seeds.
    print(f"reference: solve_ivp {REF_METHOD} rtol={REF_RTOL:g} atol={REF_ATOL:g} ...", flush=True)
    reference = run_solve_ivp(
        theta0[:subset], x_np, y_np, method=REF_METHOD, rtol=REF_RTOL, atol=REF_ATOL
    )
    theta_ref = reference["theta"]

    def errors(theta):
        e = relative_errors(theta[:subset], theta_ref)
        return float(np.median(e)), float(np.max(e))

    first_net = jax.tree_util.tree_map(lambda v: v[0], nets)

    def describe(label, solver, run_rtol) -> tuple[str, float]:
        """The row name of a gradflow run, and the rtol it runs at."""
        rtol_used = gf.gradient_flow.__kwdefaults__["rtol"] if run_rtol is None else run_rtol
        kind = solver_name(gf.default_solver(first_net) if solver is None else solver)
        return f"{label} ({kind}, rtol={rtol_used:g})", rtol_used

    def checked(name, theta, rtol_used) -> dict:
        """The error columns of a gradflow row; stops before a wrong answer is reported."""
        flow_median, flow_max = errors(theta)
        print(f"{name}: relative error vs reference: median {flow_median:.2e}, max {flow_max:.2e}")
        # Not timing a wrong answer: within 1e4× the rtol asked for.
        assert flow_max < max(GRADFLOW_MAX_ERROR, 1e4 * rtol_used), (
            f"{name}'s error {flow_max:.2e} is too large; not timing a wrong answer."
        )
        return dict(
            name=name,
            error_median=fmt_error(flow_median),
            error_max=fmt_error(flow_max),
            max_error=flow_max,
        )

    # 1. gradflow: compile, check the answer, then time.
    rows = []
    for label, solver, run_rtol in GRADFLOW_RUNS:
        run_rtol = rtol if (run_rtol is None and rtol is not None) else run_rtol
        name, rtol_used = describe(label, solver, run_rtol)
        print(f"{name}: compiling ...", flush=True)
        solution, flow, flow_compile = run_gradflow(
            nets, x, y, rtol=run_rtol, repeats=repeats, solver=solver
        )
        status = np.asarray(solution.status)
        if not np.all(status == gf.Status.SUCCESS):
            bad = np.flatnonzero(status != gf.Status.SUCCESS)
            raise AssertionError(f"{name} failed on seeds {bad[:10]}: {solution.message[bad[0]]}")
        row = checked(name, flat_params(solution.net), rtol_used)
        print(f"{name}: timing ...", flush=True)
        rows.append(
            row
            | dict(
                total=best_time(flow, nets, repeats=repeats),
                evaluations=float(np.asarray(solution.num_evaluations).mean()),
                compile_time=flow_compile,
                steps=np.asarray(solution.num_steps),
            )
        )
    flow_time = rows[0]["total"]

    # 1b. The same on every CPU core (one XLA host device per core), in a child process.
    num_devices = os.cpu_count() or 1
    if num_devices > 1:
        print(f"gradflow flow_ensemble on {num_devices} CPU devices ...", flush=True)
        report = run_sharded(num_devices, seed=seed, num_seeds=num_seeds, repeats=repeats)
        for result in report["results"]:
            name, rtol_used = describe(*SHARDED_RUNS[result["index"]])
            name = f"{name}, flow_ensemble over {num_devices} CPU devices"
            rows.append(
                checked(name, np.asarray(result["theta"]), rtol_used)
                | dict(
                    total=result["time"],
                    evaluations=result["evaluations"],
                    compile_time=result["compile_time"],
                )
            )

    # 2. gradient descent, hand-written lax.scan.
    theta0_jax = jnp.asarray(theta0)
    for step_size in GD_STEP_SIZES:
        num_steps = round(T1 / step_size)
        print(f"GD η={step_size:g} ({num_steps} steps): compiling and timing ...", flush=True)
        descent = run_gradient_descent(theta0_jax, x, y, step_size=step_size, repeats=repeats)
        if not np.all(np.isfinite(descent["theta"])):
            raise AssertionError(f"gradient descent with η={step_size:g} diverged.")
        median, largest = errors(descent["theta"])
        rows.append(
            dict(
                name=f"GD lax.scan η={step_size:g} ({num_steps} steps)",
                total=descent["time"],
                error_median=fmt_error(median),
                error_max=fmt_error(largest),
                evaluations=descent["evaluations"],
                compile_time=descent["compile_time"],
                max_error=largest,
                step_size=step_size,
            )
        )

    # 3. solve_ivp, timed on the subset and extrapolated.
    peers = [(IVP_METHOD, IVP_RTOL, IVP_ATOL), IVP_TIGHT]
    for method, ivp_rtol, ivp_atol in peers:
        print(f"solve_ivp {method} rtol={ivp_rtol:g} atol={ivp_atol:g} ...", flush=True)
        ivp = run_solve_ivp(
            theta0[:subset], x_np, y_np, method=method, rtol=ivp_rtol, atol=ivp_atol,
            repeats=repeats,
        )  # fmt: skip
        median, largest = errors(ivp["theta"])
        rows.append(ivp_row(f"solve_ivp {method} rtol={ivp_rtol:g} atol={ivp_atol:g}", ivp,
                            median, largest, subset, num_seeds))  # fmt: skip
    rows.append(
        ivp_row(
            f"solve_ivp {REF_METHOD} rtol={REF_RTOL:g} atol={REF_ATOL:g} (reference)",
            reference,
            None,
            None,
            subset,
            num_seeds,
        )
    )

    for row in rows:
        row["ratio"] = row["total"] / flow_time

    print()
    print(format_table(rows, num_seeds))
    print()
    notes = [
        f"Times: best of {repeats} (JAX methods after compiling; solve_ivp passes over the "
        "subset; the reference one pass).",
        f"Relative error ‖θ(200) − θ_ref(200)‖/‖θ_ref(200)‖ over the first {subset} seeds.",
    ]
    if subset < num_seeds:
        notes.append(f"* extrapolated: solve_ivp timed on {subset} seeds, scaled to {num_seeds}.")
    steps = rows[0]["steps"]
    notes.append(
        f"{rows[0]['name']}: num_steps mean {steps.mean():.1f}, max {steps.max()}; "
        f"all {num_seeds} seeds status SUCCESS (every gradflow run)."
    )
    notes.append(
        "Under vmap the solver's while loop runs until the slowest seed finishes, so the "
        f"batched cost follows max num_steps ({steps.max()})."
    )
    notes.append("")
    notes.extend(throughput_summary(rows))
    notes.append(f"load average at end: {load_average()}")
    print("\n".join(notes))


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--seeds", type=int, default=1000, help="ensemble size (default 1000)")
    parser.add_argument(
        "--subset",
        type=int,
        default=50,
        help="seeds for the reference and the timed solve_ivp runs (default 50)",
    )
    parser.add_argument("--repeats", type=int, default=3, help="timed repeats, best kept")
    parser.add_argument("--seed", type=int, default=0, help="base PRNG seed (default 0)")
    parser.add_argument(
        "--rtol", type=float, default=None, help="gradflow rtol (default: gradflow's default)"
    )
    parser.add_argument(
        "--quick", action="store_true", help="smoke test: 50 seeds, subset 5, 1 repeat"
    )
    parser.add_argument("--sharded-worker", action="store_true", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.sharded_worker:
        sharded_worker(seed=args.seed, num_seeds=args.seeds, repeats=args.repeats)
        sys.exit()
    if args.quick:
        args.seeds, args.subset, args.repeats = 50, 5, 1
    main(
        seed=args.seed,
        num_seeds=args.seeds,
        subset=args.subset,
        repeats=args.repeats,
        rtol=args.rtol,
    )
