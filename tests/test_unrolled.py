"""`Unrolled`: the explicit Runge–Kutta methods of Diffrax with their stages written out.

It must be the same method as the one it wraps: on a nonlinear, non-autonomous problem
with adaptive steps it takes the same steps and its answers (end points and dense
output) agree with Diffrax's to 1e-11 relative: only the order of floating-point sums
differs (measured: ≤ 1e-13 for Tsit5, 1.1e-12 for Dopri8, whose 13 stages have
coefficients up to ~20, on this well-conditioned problem over 30–250 steps). Its
accuracy is checked independently against a matrix exponential.
"""

import diffrax as dfx
import jax
import jax.numpy as jnp
import numpy as np
import pytest
import scipy.linalg
from helpers import assert_relative_close, flatten

import gradflow as gf


METHODS = [
    pytest.param(dfx.Tsit5(), id="Tsit5"),
    pytest.param(dfx.Dopri5(), id="Dopri5"),
    pytest.param(dfx.Dopri8(), id="Dopri8"),
    pytest.param(dfx.Bosh3(), id="Bosh3"),
]


def _field(t, y, args):
    # Predator–prey with a periodic forcing: nonlinear and non-autonomous, so every
    # stage's node c_i and every tableau entry matter.
    prey, predator = y["prey"], y["predator"]
    return {
        "prey": prey * (1.5 - predator) + 0.1 * jnp.sin(t),
        "predator": predator * (prey - 1.0),
    }


def _solve(solver, stepsize_controller, vector_field=_field, t1=10.0):
    y0 = {"prey": jnp.array([2.0, 1.0]), "predator": jnp.array([1.0, 0.5])}
    return dfx.diffeqsolve(
        dfx.ODETerm(vector_field),
        solver,
        0.0,
        t1,
        0.1,
        y0,
        saveat=dfx.SaveAt(ts=jnp.linspace(0.0, t1, 37)),
        stepsize_controller=stepsize_controller,
        max_steps=10_000,
    )


def _assert_same(sol, reference):
    assert int(sol.stats["num_steps"]) == int(reference.stats["num_steps"])
    assert int(sol.stats["num_accepted_steps"]) == int(reference.stats["num_accepted_steps"])
    for name in ("prey", "predator"):
        np.testing.assert_allclose(sol.ys[name], reference.ys[name], rtol=1e-11, atol=1e-13)


@pytest.mark.parametrize("method", METHODS)
def test_same_steps_and_answers_as_diffrax(method):
    controller = dfx.PIDController(rtol=1e-8, atol=1e-10)
    _assert_same(_solve(gf.Unrolled(method), controller), _solve(method, controller))


def test_first_stage_is_recomputed_after_a_jump():
    # With a discontinuity in the field at t = 2.5, declared in `jump_ts`, the value of
    # f carried over from the last step (FSAL) belongs to the field before the jump.
    def field(t, y, args):
        out = _field(t, y, args)
        return {**out, "prey": out["prey"] + jnp.where(t >= 2.5, 1.0, 0.0)}

    controller = dfx.PIDController(rtol=1e-8, atol=1e-10, jump_ts=[2.5])
    sol = _solve(gf.Unrolled(dfx.Tsit5()), controller, field)
    _assert_same(sol, _solve(dfx.Tsit5(), controller, field))


def test_linear_system_against_expm():
    # Independent answer: y(t) = exp(tA) y0, to the accuracy of rtol=1e-11.
    A = np.array([[-0.5, 2.0, 0.0], [-2.0, -0.5, 0.3], [0.0, -0.3, -1.0]])
    y0 = np.array([1.0, -0.5, 0.25])
    t1 = 5.0
    sol = dfx.diffeqsolve(
        dfx.ODETerm(lambda t, y, args: jnp.asarray(A) @ y),
        gf.Unrolled(dfx.Tsit5()),
        0.0,
        t1,
        0.1,
        jnp.asarray(y0),
        stepsize_controller=dfx.PIDController(rtol=1e-11, atol=1e-13),
        max_steps=10_000,
    )
    expected = scipy.linalg.expm(t1 * A) @ y0
    np.testing.assert_allclose(sol.ys[-1], expected, rtol=1e-9, atol=1e-12)


def test_evaluation_count_is_exact(w1_data):
    # An FSAL method: 6 evaluations per step and 1 at the start (in `init`), plus the
    # flow's own setup evaluation; counted here by the vector field itself.
    x, y = w1_data
    net = gf.random_net(jax.random.key(0), width=2, dim=2, scale=1e-2, activation="tanh")
    counts = []

    def counting(t, state, args):
        jax.debug.callback(lambda: counts.append(1))
        return field(t, state, args)

    problem = gf._problem.FlowProblem(
        net, x, y, None, reduction="sum", coordinates=gf.ScaleFree(), observables={}
    )
    field = problem.field
    y0 = problem.to_state(problem.theta0)
    sol = dfx.diffeqsolve(
        dfx.ODETerm(counting),
        gf.Unrolled(dfx.Tsit5()),
        0.0,
        20.0,
        0.01,
        y0,
        stepsize_controller=gf.ScaleFree().controller(1e-8, 1e-12),
    )
    assert len(counts) == 6 * int(sol.stats["num_steps"]) + 1


@pytest.mark.mistyped
@pytest.mark.parametrize("method", [dfx.Kvaerno5(), gf.Rodas5P(), dfx.Euler()])
def test_refuses_what_is_not_an_explicit_runge_kutta_method(method):
    with pytest.raises(TypeError, match="explicit Runge–Kutta"):
        gf.Unrolled(method)


@pytest.mark.slow  # test_same_steps_and_answers_as_diffrax is fast
def test_steps_the_exact_relu_flow_between_kinks():
    # `gradient_flow(..., solver=TwoPhase())` on a ReLU net runs `piecewise_flow` with
    # the explicit solver, here `Unrolled(Tsit5())`: the same steps as Diffrax's Tsit5,
    # restarted (a jump) at every breakplane crossing.
    x = jax.random.normal(jax.random.key(0), (10, 2))
    y = jnp.maximum(x[:, 0], 0.0)
    net = gf.random_net(jax.random.key(1), width=3, dim=2, scale=0.3, activation="relu")
    sol = gf.gradient_flow(net, x, y, t1=20.0, solver=gf.TwoPhase())
    reference = gf.gradient_flow(net, x, y, t1=20.0, solver=dfx.Tsit5())
    assert int(sol.status) == gf.Status.SUCCESS
    assert int(sol.num_steps) == int(reference.num_steps)
    assert int(sol.observables["events"].num_crossings) > 0
    # The stage sums are ordered differently: 1e-11 relative to ‖θ‖.
    assert_relative_close(flatten(sol.net), flatten(reference.net), rtol=1e-11)
