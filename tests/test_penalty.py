"""An explicit penalty added to the flow's loss: `gradient_flow(..., penalty=R,
penalty_weight=λ)` descends $L + \\lambda R$."""

import diffrax as dfx
import jax
import jax.numpy as jnp
import numpy as np
import pytest
from scipy.integrate import solve_ivp

import gradflow as gf


def weight_decay(net):
    return 0.5 * gf.parameter_norm(net) ** 2


def test_weight_decay_limit_of_a_scalar_linear_network():
    # f = a w x on one point (x, y), loss ½(awx − y)² + (λ/2)(a² + w²). From a balanced
    # start a = w = u stays balanced, and the flow stops where (u²x − y)x + λ = 0:
    # f(x) = u²x = y − λ/x, the data fit shrunk by λ/x (closed form).
    x, y, lam = jnp.array([[2.0]]), jnp.array([3.0]), 0.5
    net = gf.TwoLayerNet(jnp.array([0.1]), jnp.array([[0.1]]), activation="identity")
    sol = gf.gradient_flow(
        net, x, y, t1=100.0, reduction="sum", penalty=weight_decay, penalty_weight=lam,
        solver=dfx.Tsit5(),
    )  # fmt: skip
    assert sol.status == gf.Status.SUCCESS
    end = sol.net(x)[0]
    # Converged: every mode decays at a rate of at least λ, and e^(-λ t1) = e^-50.
    np.testing.assert_allclose(end, 3.0 - lam / 2.0, rtol=1e-8)
    np.testing.assert_allclose(
        sol.final_loss, 0.5 * (lam / 2.0) ** 2 + lam * float(end) / 2.0, rtol=1e-8
    )
    assert dict(sol.info)["penalty"] == "weight_decay"
    assert float(sol.stationarity) < 1e-8


# The tanh tests share one compiled program: the weight is traced, the rest is equal.
_TANH_KWARGS = dict(t1=20.0, reduction="sum", solver=dfx.Tsit5(), linear_escape=False)


def _tanh_problem(w1_data):
    x, y = w1_data
    return gf.random_net(jax.random.key(3), width=2, dim=2, scale=0.3, activation="tanh"), x, y


# Slow: test_weight_decay_limit_of_a_scalar_linear_network checks against a closed form fast.
@pytest.mark.slow
def test_penalised_tanh_flow_matches_solve_ivp(w1_data):
    # An independent reference: SciPy's DOP853 on the penalised loss written out here
    # (jax.grad of it), rtol 1e-12 and atol far below the parameters' scale.
    net, x, y = _tanh_problem(w1_data)
    lam = 0.05
    sol = gf.gradient_flow(net, x, y, penalty=weight_decay, penalty_weight=lam, **_TANH_KWARGS)
    theta0, unravel = jax.flatten_util.ravel_pytree(net)

    def loss(theta):
        n = unravel(theta)
        return 0.5 * jnp.sum((jnp.tanh(x @ n.W.T) @ n.a - y) ** 2) + lam * 0.5 * theta @ theta

    grad = jax.jit(jax.grad(loss))
    ref = solve_ivp(
        lambda t, th: -np.asarray(grad(jnp.asarray(th))), (0.0, 20.0), np.asarray(theta0),
        method="DOP853", rtol=1e-12, atol=1e-14,
    )  # fmt: skip
    theta_end = jax.flatten_util.ravel_pytree(sol.net)[0]
    # Accuracy contract: global error ~ 10·rtol relative to ‖θ‖ (rtol = 1e-10).
    error = np.linalg.norm(np.asarray(theta_end) - ref.y[:, -1]) / np.linalg.norm(ref.y[:, -1])
    assert error < 1e-8, error


# Slow: test_weight_decay_limit_of_a_scalar_linear_network is fast.
@pytest.mark.slow
def test_penalty_weight_is_traced_and_zero_weight_is_the_plain_flow(w1_data):
    net, x, y = _tanh_problem(w1_data)
    traces = []

    def counted(net):
        traces.append(1)  # runs once per trace, never at run time
        return weight_decay(net)

    zero = gf.gradient_flow(net, x, y, penalty=counted, penalty_weight=0.0, **_TANH_KWARGS)
    first = len(traces)
    some = gf.gradient_flow(net, x, y, penalty=counted, penalty_weight=0.1, **_TANH_KWARGS)
    assert len(traces) == first  # a new weight reuses the compiled program
    plain = gf.gradient_flow(net, x, y, **_TANH_KWARGS)
    np.testing.assert_array_equal(zero.num_steps, plain.num_steps)
    np.testing.assert_allclose(zero.net.W, plain.net.W, rtol=1e-12)
    # Weight decay shrinks the parameters.
    assert gf.parameter_norm(some.net) < gf.parameter_norm(zero.net)


@pytest.mark.parametrize(
    "kwargs, match",
    [
        (dict(penalty="l2"), "`penalty` must be a function"),
        (dict(penalty=weight_decay, penalty_weight=-1.0), "`penalty_weight`"),
        (dict(penalty=weight_decay, penalty_weight=jnp.ones(2)), "`penalty_weight`"),
    ],
)
@pytest.mark.mistyped
def test_bad_penalty_is_refused(w1_data, kwargs, match):
    x, y = w1_data
    net = gf.random_net(jax.random.key(0), width=2, dim=2, scale=0.1, activation="tanh")
    with pytest.raises((TypeError, ValueError), match=match):
        gf.gradient_flow(net, x, y, t1=1.0, **kwargs)


def test_exact_kinked_flow_refuses_a_penalty(w1_data):
    x, y = w1_data
    net = gf.random_net(jax.random.key(0), width=2, dim=2, scale=0.1, activation="relu")
    with pytest.raises(ValueError, match="kinks='smooth'"):
        gf.gradient_flow(net, x, y, t1=1.0, penalty=gf.radon.radon_tv_norm)
