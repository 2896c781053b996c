"""The Rosenbrock solvers `Rodas5P` and `Rodas4` against independent answers: matrix
exponentials (`scipy.linalg.expm`), `scipy.integrate.solve_ivp` (DOP853, Radau) with
NumPy right-hand sides, and the stability function of each method computed from one step.

Orders are measured by regressing log(error) on log(h) at fixed step sizes chosen in the
asymptotic range (errors between ~1e-3 and ~1e-13, above rounding): an observed order is
accepted within 0.3 below the method's order. Above, the margin differs by problem:
Rodas5P's stability function agrees with e^z to one order more than required (its
z^6 error coefficient is below 1e-6), so on linear problems it is measured at ~5.8;
on the nonlinear, non-autonomous problem both show their order within ±0.1.

Flow tolerances follow `test_flow_reference.py`: the contract at the default `rtol=1e-10`
is ≤ 1e-8 relative to ‖θ‖; measured for Rodas5P on W1 it is ~1e-10 (and ≤ 1.2e-9 up to
t = 1e8, see `benchmarks/late_phase.py`).
"""

import diffrax as dfx
import jax
import jax.numpy as jnp
import numpy as np
import pytest
import scipy.linalg
from helpers import flatten, numpy_gradient, reference_flow, relative_error
from scipy.integrate import solve_ivp

import gradflow as gf
from gradflow._solver import Rodas4, Rodas5P
from gradflow._solver.base import inverse_matrix


SOLVERS = [pytest.param(Rodas5P(), id="Rodas5P"), pytest.param(Rodas4(), id="Rodas4")]
FLOW_TOLERANCE = 1e-8


def _observed_order(step_sizes, errors) -> float:
    return float(np.polyfit(np.log(step_sizes), np.log(errors), 1)[0])


def _fixed_step_solve(solver, term, y0, t1, step_sizes, saveat):
    """One compilation for all step sizes: `h` is passed as an array, not a Python float."""

    @jax.jit
    def solve(h):
        return dfx.diffeqsolve(
            term,
            solver,
            0.0,
            t1,
            h,
            y0,
            saveat=saveat,
            stepsize_controller=dfx.ConstantStepSize(),
            max_steps=4096,
        ).ys

    return [solve(jnp.asarray(h)) for h in step_sizes]


# --------------------------------------------------------------------------------------
# Order of accuracy.
# --------------------------------------------------------------------------------------

# Eigenvalues −1 ± 2i and ≈ −3: oscillating, decaying, non-normal.
_A = np.array([[-1.0, 2.0, 0.3], [-2.0, -1.0, 0.5], [0.1, 0.2, -3.0]])
_Y0 = np.array([1.0, 0.5, -1.0])
_T = 4.0


@pytest.mark.parametrize("solver", SOLVERS)
def test_order_linear_against_expm(solver):
    # The state is a PyTree (a dict of two arrays), which the solver flattens inside.
    A = jnp.asarray(_A)

    def field(t, y, args):
        full = A @ jnp.concatenate([y["p"], y["q"]])
        return {"p": full[:1], "q": full[1:]}

    y0 = {"p": jnp.asarray(_Y0[:1]), "q": jnp.asarray(_Y0[1:])}
    step_sizes = [0.2, 0.1, 0.05, 0.025]
    ts = np.linspace(0.05, _T - 0.05, 13)  # off the step grid: the dense output
    saveat = dfx.SaveAt(t1=True, ts=jnp.asarray(ts))
    results = _fixed_step_solve(solver, dfx.ODETerm(field), y0, _T, step_sizes, saveat)

    exact_end = scipy.linalg.expm(_A * _T) @ _Y0
    exact_dense = np.stack([scipy.linalg.expm(_A * t) @ _Y0 for t in ts])
    end_errors, dense_errors = [], []
    for ys in results:
        y = np.concatenate([np.asarray(ys["p"]), np.asarray(ys["q"])], axis=1)
        end_errors.append(np.max(np.abs(y[-1] - exact_end)))
        dense_errors.append(np.max(np.abs(y[:-1] - exact_dense)))

    order = solver.order(None)
    assert order - 0.3 <= _observed_order(step_sizes, end_errors) <= order + 1.0
    # Dense output: 4th-order polynomial for Rodas5P, 3rd-order for Rodas4; the global
    # error between steps is then of order min(p, q + 1).
    dense_order = {5: 4, 4: 3}[order]
    assert _observed_order(step_sizes, dense_errors) >= dense_order - 0.3
    assert max(dense_errors[-1], end_errors[-1]) < 1e-8


def _predator_prey(t, y, xp):
    """Lotka–Volterra with a third species whose logistic growth is modulated by cos t:
    nonlinear, non-autonomous, and (measured) free of the cancellations in the leading
    error term that make some textbook problems show orders 0.5 off at these steps."""
    stack = xp.stack if xp is jnp else np.array
    return stack(
        [
            y[0] * (1 - y[1]),
            y[1] * (y[0] - 1) - 0.2 * y[1] * y[2],
            y[2] * (0.5 - 0.1 * y[2]) * xp.cos(t),
        ]
    )


@pytest.mark.parametrize("solver", SOLVERS)
def test_order_nonlinear_nonautonomous(solver):
    # Exercises the nonlinear order conditions and the ∂f/∂t terms of the method.
    t1 = 3.0
    y0 = np.array([0.5, 1.5, 1.0])
    reference = solve_ivp(
        lambda t, y: _predator_prey(t, y, np),
        (0, t1),
        y0,
        method="DOP853",
        rtol=1e-13,
        atol=1e-16,
    ).y[:, -1]
    step_sizes = [0.1, 0.05, 0.025, 0.0125]
    term = dfx.ODETerm(lambda t, y, args: _predator_prey(t, y, jnp))
    results = _fixed_step_solve(solver, term, jnp.asarray(y0), t1, step_sizes, dfx.SaveAt(t1=True))
    errors = [np.max(np.abs(np.asarray(ys[-1]) - reference)) for ys in results]
    order = solver.order(None)
    # Measured: 4.99 (Rodas5P) and 4.10 (Rodas4), errors from 6e-8 down to 2e-12.
    assert abs(_observed_order(step_sizes, errors) - order) <= 0.2


# --------------------------------------------------------------------------------------
# Stability.
# --------------------------------------------------------------------------------------


def _stability_function(solver, z: complex) -> float:
    """|R(z)|: one step of size 1 on y' = λy with λ = z, written as a real 2×2 system."""
    M = jnp.asarray([[z.real, -z.imag], [z.imag, z.real]])
    term = dfx.ODETerm(lambda t, y, args: M @ y)
    y1, *_ = solver.step(term, 0.0, 1.0, jnp.array([1.0, 0.0]), None, None, False)
    return float(jnp.linalg.norm(y1))


@pytest.mark.parametrize("solver", SOLVERS)
def test_l_stable(solver):
    # A-stable: |R(z)| ≤ 1 on the imaginary axis and in the left half-plane ...
    for z in [1j * w for w in (0.1, 1.0, 10.0, 1e3, 1e6)] + [-1.0 + 5j, -30.0 + 1j, -1e3]:
        assert _stability_function(solver, z) <= 1 + 1e-12, z
    # ... and R(∞) = 0 (stiffly accurate): |R(z)| ~ 1/|z|.
    assert _stability_function(solver, -1e12 + 0j) < 1e-9


@pytest.mark.parametrize("solver", SOLVERS)
def test_stiff_linear_in_few_steps(solver):
    # Eigenvalues −1 and −1e6, coupled by a rotation. An explicit method is stable only
    # for h ≲ 3e-6 (≥ 6e5 steps to t = 2); an L-stable one follows the slow mode, in
    # 56 (Rodas5P) and 141 (Rodas4) steps with an error of 9e-11 and 1.5e-9 (measured).
    c, s = np.cos(0.3), np.sin(0.3)
    Q = np.array([[c, -s], [s, c]])
    A = Q @ np.diag([-1.0, -1e6]) @ Q.T
    y0 = np.array([1.0, 1.0])
    t1 = 2.0
    sol = dfx.diffeqsolve(
        dfx.ODETerm(lambda t, y, args: jnp.asarray(A) @ y),
        solver,
        0.0,
        t1,
        1e-3,
        jnp.asarray(y0),
        stepsize_controller=dfx.PIDController(rtol=1e-8, atol=1e-8),
        max_steps=1000,
    )
    exact = scipy.linalg.expm(A * t1) @ y0
    assert np.max(np.abs(np.asarray(sol.ys[-1]) - exact)) <= 1e-7
    assert int(sol.stats["num_steps"]) <= 200


@pytest.mark.parametrize("size", [1, 2, 6, 8, 12, 13])
def test_inverse_matrix_against_numpy(size):
    # Gauss–Jordan up to GAUSS_JORDAN_MAX_SIZE = 12, LU above. With partial pivoting the
    # error is a few ulps times cond(A) relative to ‖A⁻¹‖; the matrices include one whose
    # diagonal is zero (no inverse without row swaps), and a batch goes through vmap.
    rng = np.random.default_rng(size)
    permutation = np.eye(size)[rng.permutation(size)]
    zero_diagonal = rng.normal(size=(size, size))
    np.fill_diagonal(zero_diagonal, 0.0)
    matrices = np.stack([rng.normal(size=(size, size)), permutation, zero_diagonal])
    if size == 1:
        matrices = matrices[:2]  # a 1 × 1 matrix with a zero diagonal has no inverse
    inverses = np.asarray(jax.vmap(inverse_matrix)(jnp.asarray(matrices)))
    for matrix, inverse in zip(matrices, inverses):
        expected = np.linalg.inv(matrix)
        tolerance = 1e-14 * np.linalg.cond(matrix)
        np.testing.assert_allclose(
            inverse, expected, rtol=0, atol=tolerance * np.abs(expected).max()
        )


def test_nonfinite_step_reports_infinite_error():
    # A NaN error estimate would turn Diffrax's next step size into NaN; an infinite one
    # makes the controller reject the step and shrink it.
    term = dfx.ODETerm(lambda t, y, args: jnp.log(y - 1.0))
    y1, error, *_ = Rodas5P().step(term, 0.0, 0.1, jnp.array([0.5, 2.0]), None, None, False)
    assert np.all(np.isinf(np.asarray(error)))


# --------------------------------------------------------------------------------------
# The gradient flow of workload W1.
# --------------------------------------------------------------------------------------


def _w1_nets(num_seeds, scale=1e-8):
    keys = jax.random.split(jax.random.key(0), num_seeds)
    return jax.vmap(lambda key: gf.random_net(key, width=2, dim=2, scale=scale, activation="tanh"))(
        keys
    )


def _index(nets, i):
    return jax.tree_util.tree_map(lambda leaf: leaf[i], nets)


# Slow: tests/test_two_phase.py::test_agrees_with_tight_rodas_through_the_switch is fast.
@pytest.mark.slow
def test_w1_flow_matches_dop853_under_vmap(w1_data):
    x, y = w1_data
    num_seeds = 3
    nets = _w1_nets(num_seeds)
    ts = gf.log_times(200.0, 12)
    flow = jax.jit(
        jax.vmap(
            lambda net: gf.gradient_flow(
                net, x, y, t1=200.0, ts=ts, reduction="sum", solver=Rodas5P()
            )
        )
    )
    sol = flow(nets)
    assert np.all(np.asarray(sol.status) == gf.Status.SUCCESS)
    for i in range(num_seeds):
        reference = reference_flow(_index(nets, i), x, y, ts, reduction="sum")
        theta = flatten(_index(sol.nets, i))
        # At every save time (dense output), not only at t1; t = 0 is exact.
        assert np.max(relative_error(theta[1:], reference[1:])) <= FLOW_TOLERANCE


def _late_reference(theta0, x, y, t1):
    """DOP853 through the escape from the 1e-8 init (atol 14 orders below it), then
    Radau — implicit, so the stiff late phase costs it few steps — with an absolute
    tolerance near 1e-14·‖θ‖ once ‖θ‖ is of order one."""
    kwargs = dict(m=2, bias=False, activation="tanh", reduction="sum")
    field = lambda t, th: -numpy_gradient(th, x, y, **kwargs)  # noqa: E731
    early = solve_ivp(field, (0.0, 50.0), theta0, method="DOP853", rtol=1e-13, atol=1e-22)
    assert early.success and np.linalg.norm(early.y[:, -1]) > 0.1
    late = solve_ivp(field, (50.0, t1), early.y[:, -1], method="Radau", rtol=1e-12, atol=1e-14)
    assert late.success
    return late.y[:, -1]


@pytest.mark.slow
def test_w1_late_phase_steps_and_accuracy(w1_data):
    # The target: t1 = 1e8 in at most 5× the steps to t1 = 400, at ~1e-9 accuracy.
    x, y = w1_data
    num_seeds = 4
    nets = _w1_nets(num_seeds)

    def run(t1):
        return jax.vmap(
            lambda net: gf.gradient_flow(net, x, y, t1=t1, reduction="sum", solver=Rodas5P())
        )(nets)

    early, late, mid = run(400.0), run(1e8), run(1e4)
    for sol in (early, late, mid):
        assert np.all(np.asarray(sol.status) == gf.Status.SUCCESS)
    steps_early = np.asarray(early.num_steps)
    steps_late = np.asarray(late.num_steps)
    assert np.all(steps_late <= 5 * steps_early)

    theta = flatten(mid.net)
    x_np, y_np = np.asarray(x), np.asarray(y)
    for i in range(num_seeds):
        reference = _late_reference(flatten(_index(nets, i)), x_np, y_np, 1e4)
        assert relative_error(theta[i], reference) <= FLOW_TOLERANCE
