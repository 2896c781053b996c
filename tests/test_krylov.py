"""`Krylov`, the matrix-free Rosenbrock solver, against independent answers: matrix
exponentials (`scipy.linalg.expm`) for a quadratic loss, whose gradient flow is linear;
`scipy.integrate.solve_ivp` (DOP853) with a NumPy gradient for a tanh net; and the dense
`Rodas5P`, whose steps it must reproduce (same tableau, the linear systems solved to
`tol` instead of by LU).

Tolerances: one step agrees with the dense step to ~1e-12 relative (GCR solves each stage
to 1e-12 of its right-hand side, and the dense inverse is accurate to cond(W)·1e-16);
flows keep the contract of `test_rosenbrock.py`, ≤ 1e-8 relative to ‖θ‖ at the default
`rtol=1e-10`.
"""

import diffrax as dfx
import jax
import jax.numpy as jnp
import numpy as np
import pytest
import scipy.linalg
from helpers import flatten, reference_flow, relative_error

import gradflow as gf
from gradflow._solver.krylov import _Basis, _gcr


FLOW_TOLERANCE = 1e-8


def _stiff_quadratic(seed: int, size: int = 12):
    """A loss ½ θᵀHθ with H symmetric positive semi-definite and a spectrum like a fitted
    net's: three stiff eigenvalues (1 to 30), a cluster of small ones and a flat one."""
    rng = np.random.default_rng(seed)
    basis, _ = np.linalg.qr(rng.standard_normal((size, size)))
    spectrum = np.concatenate([[30.0, 5.0, 1.0], np.full(size - 4, 1e-3), [0.0]])
    spectrum[3:-1] *= 1 + 0.1 * rng.random(size - 4)
    return (basis * spectrum) @ basis.T


def test_linear_flow_matches_expm_under_vmap():
    # θ' = −Hθ: θ(t) = expm(−tH) θ0, for three starts at once (vmap), through the stiff
    # transient to t = 1e3 where only the slow cluster still moves. The controller's
    # steps grow past the explicit limit 3.3/30 (which would take ~9000 steps): 532-622
    # steps, as dense Rodas4 (536 on the first start). With Rodas4, whose 6 stages
    # compile faster than Rodas5P's 8 (the step test below checks Rodas5P's tableau).
    hessian = _stiff_quadratic(0)
    theta0 = np.random.default_rng(1).standard_normal((3, hessian.shape[0]))
    times = np.array([0.1, 10.0, 1e3])
    term = dfx.ODETerm(lambda t, theta, args: -jnp.asarray(hessian) @ theta)

    def solve(y0):
        sol = dfx.diffeqsolve(
            term, gf.Krylov(gf.Rodas4()), t0=0.0, t1=1e3, dt0=1e-2, y0=y0,
            saveat=dfx.SaveAt(ts=jnp.asarray(times)),
            stepsize_controller=dfx.PIDController(rtol=0.0, atol=1e-10), max_steps=1000,
        )  # fmt: skip
        return sol.ys, sol.stats["num_steps"]

    ys, steps = jax.jit(jax.vmap(solve))(jnp.asarray(theta0))
    exact = np.stack([[scipy.linalg.expm(-t * hessian) @ th for t in times] for th in theta0])
    error = np.max(np.abs(np.asarray(ys) - exact)) / np.max(np.linalg.norm(theta0, axis=-1))
    assert error < FLOW_TOLERANCE, error
    assert np.all(np.asarray(steps) < 1000), steps


def _one_step(solver, hessian, theta0, h):
    term = dfx.ODETerm(lambda t, theta, args: -jnp.asarray(hessian) @ theta)
    y0 = jnp.asarray(theta0)
    state = solver.init(term, 0.0, h, y0, None)
    y1, error, _, state, _ = solver.step(term, 0.0, h, y0, None, state, False)
    return y1, error, state


def _exact_rosenbrock_step(tableau, hessian, theta0, h):
    """The step of `tableau` on θ' = −Hθ with every stage's system solved exactly in the
    eigenbasis of H (NumPy): `(y1, error estimate)`."""
    lam, basis = np.linalg.eigh(hessian)
    ks = []
    for i in range(tableau.num_stages):
        stage = theta0 + sum(tableau.a[i, j] * ks[j] for j in range(i))
        rhs = -h * hessian @ stage + sum(tableau.C[i, j] * ks[j] for j in range(i))
        ks.append(basis @ ((basis.T @ rhs) / (1 / tableau.gamma + h * lam)))
    weights = (tableau.b, tableau.b - tableau.b_embedded)
    y1, error = (sum(w[i] * ks[i] for i in range(tableau.num_stages)) for w in weights)
    return theta0 + y1, error


def test_step_is_rodas5p_and_directions_are_bounded():
    # Rodas5P's step, at small and huge h (one compilation per solver: h is traced),
    # against the same step solved exactly in H's eigenbasis. At h = 1e4 the dense LU
    # is off by cond(W)·ε ≈ 3e-11 relative, and so may GCR be. H has 11 eigenvalue
    # clusters (3 stiff, the close small ones, 0), and the stages share their
    # directions, so a step needs few products with W however large h is.
    hessian = _stiff_quadratic(2)
    theta0 = np.random.default_rng(3).standard_normal(hessian.shape[0])
    steps = np.array([1e-2, 1.0, 1e4])

    def run(solver):
        one = lambda h: _one_step(solver, hessian, theta0, h)  # noqa: E731
        return jax.tree_util.tree_map(np.asarray, jax.jit(jax.vmap(one))(jnp.asarray(steps)))

    tableau = gf.Rodas5P().tableau
    exact = [_exact_rosenbrock_step(tableau, hessian, theta0, h) for h in steps]
    scale = np.linalg.norm(theta0)
    y1, error, directions = run(gf.Krylov())
    for i, (y1_exact, error_exact) in enumerate(exact):
        assert np.linalg.norm(y1[i] - y1_exact) <= 1e-10 * scale, steps[i]
        assert np.linalg.norm(error[i] - error_exact) <= 1e-10 * scale, steps[i]
    assert np.all((1 <= directions) & (directions <= hessian.shape[0])), directions


def test_a_step_over_its_budget_is_rejected():
    # Twenty distinct eigenvalues and a budget of three directions: GCR stops there, the
    # system counts as unsolved, and the step's error is infinite, so the controller
    # rejects it and retries a smaller step. (On the GCR iteration alone: a whole step
    # would compile the 8 stages once more.)
    matrix = jnp.diag(jnp.logspace(0.0, 3.0, 20))
    size = (3, 20)
    empty = _Basis(jnp.zeros(size), jnp.zeros(size), jnp.zeros((), jnp.int32), jnp.asarray(True))
    k, basis = jax.jit(lambda rhs: _gcr(lambda v: matrix @ v, empty, rhs, 1e-12, 0.2))(jnp.ones(20))
    assert int(basis.count) == 3 and not bool(basis.converged)


@pytest.mark.mistyped  # checks gradflow's own message for a wrongly typed argument
def test_bad_krylov():
    with pytest.raises(ValueError, match="max_directions"):
        gf.Krylov(max_directions=0)
    with pytest.raises(ValueError, match="max_directions"):
        gf.Krylov(max_directions=2.5)
    with pytest.raises(ValueError, match="`tol`"):
        gf.Krylov(tol=0.0)
    with pytest.raises(TypeError, match="Rosenbrock"):
        gf.Krylov(dfx.Tsit5())
    # In a phased solver, a non-solver is named by its field.
    with pytest.raises(TypeError, match="implicit"):
        gf.TwoPhase(implicit=gf.Krylov)


# Slow: test_linear_flow_matches_expm_under_vmap checks the accuracy contract fast.
@pytest.mark.slow
def test_tanh_net_matches_solve_ivp(w1_data):
    # A width-5 tanh net (P = 15) from 1e-4 through the escape and the fit into the stiff
    # phase, with `Krylov` as the implicit phase of `TwoPhase`, against DOP853.
    x, y = w1_data
    net = gf.random_net(jax.random.key(4), width=5, dim=2, scale=1e-4, activation="tanh")
    ts = jnp.array([5.0, 50.0, 400.0])
    sol = gf.gradient_flow(
        net, x, y, t1=400.0, ts=ts, reduction="sum", solver=gf.TwoPhase(implicit=gf.Krylov())
    )
    assert sol.status == gf.Status.SUCCESS
    assert int(sol.phase_steps[1]) > 0  # the implicit phase ran
    reference = reference_flow(net, x, y, np.asarray(ts), reduction="sum")
    errors = relative_error(flatten(sol.nets), reference)
    assert np.max(errors) < FLOW_TOLERANCE, errors


# Slow: test_linear_flow_matches_expm_under_vmap checks vmap fast, and
# tests/test_two_phase.py::test_ensembles_take_the_steps_of_gradient_flow (with
# tests/test_refill.py's fast tests) the refilling loop's bookkeeping of phased solvers.
@pytest.mark.slow
def test_refilling_ensemble_takes_the_steps_of_gradient_flow(w1_data):
    # Mixed scales, two slots for four seeds: every slot is refilled at least once, in
    # both phases; each seed must take the steps of its own vmapped `gradient_flow`.
    x, y = w1_data
    scales = jnp.array([1e-2, 1e-8, 1e-4, 1e-12])
    keys = jax.random.split(jax.random.key(5), 4)
    make = lambda k, s: gf.random_net(k, width=4, dim=2, scale=s, activation="tanh")  # noqa: E731
    nets = jax.vmap(make)(keys, scales)
    kwargs = dict(
        t1=1e6, reduction="sum", solver=gf.TwoPhase(implicit=gf.Krylov()),
        stationarity_tol=1e-10,
    )  # fmt: skip
    ensemble = gf.flow_ensemble(nets, x, y, num_slots=2, progress=False, **kwargs)
    single = jax.vmap(lambda net: gf.gradient_flow(net, x, y, **kwargs))(nets)
    np.testing.assert_array_equal(ensemble.status, gf.Status.SUCCESS)
    for name in ("num_steps", "num_accepted_steps", "stop_reason", "phase_steps"):
        np.testing.assert_array_equal(getattr(ensemble, name), getattr(single, name), name)
    assert np.max(relative_error(flatten(ensemble.net), flatten(single.net))) < 1e-9
