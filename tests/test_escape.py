"""The exact linear escape (`gradflow._escape`) against independent answers.

The closed form is checked against `scipy.linalg.expm` of the Hessian at the origin
(to rounding, 1e-12), and the full run with the jump against DOP853 at the flow's
contract, 1e-8 relative (measured: ≤ 1e-10; the jump's own error is ~`rtol` by
construction of the hand-over radius).
"""

import jax
import jax.numpy as jnp
import numpy as np
import pytest
import scipy.linalg
from helpers import flatten, reference_flow, relative_error

import gradflow as gf
from gradflow._escape import escape_order, LinearEscape
from gradflow._misc import ravel_net


FLOW_TOLERANCE = 1e-8


@pytest.mark.parametrize(
    "activation, order",
    [("tanh", 2), ("erf", 2), ("identity", 2), ("rational", 2), ("gelu", 1), ("relu", 0)],
)
def test_escape_order(activation, order):
    net = gf.random_net(jax.random.key(0), width=2, dim=2, scale=1.0, activation=activation)
    assert escape_order(net) == order


@pytest.mark.parametrize("activation", ["sinc", "gaussian", "softplus", "leaky_relu"])
def test_no_jump_where_the_origin_is_not_linear(activation):
    net = gf.random_net(jax.random.key(0), width=2, dim=2, scale=1.0, activation=activation)
    assert escape_order(net) == 0


@pytest.mark.parametrize(
    "bias, reduction, outputs",
    [(False, "mean", None), (True, "mean", 3)]
    # Slow: the two above check the scalar and the several-rate closed forms fast.
    + [
        pytest.param(*case, marks=pytest.mark.slow)
        for case in [(True, "mean", None), (False, "sum", None), (True, "sum", None)]
        + [(False, "sum", 1), (False, "sum", 3)]
    ],
)
def test_closed_form_is_expm_of_the_hessian_at_zero(getkey, bias, reduction, outputs):
    # With k outputs the closed form is built from the SVD of M (several rates); the
    # reference, expm of the Hessian at 0, knows nothing of modes.
    x = jax.random.normal(getkey(), (7, 3))
    y = jax.random.normal(getkey(), (7,) if outputs is None else (7, outputs))
    weights = jax.random.uniform(getkey(), (7,))
    net = gf.random_net(
        getkey(), width=4, dim=3, scale=1e-3, activation="tanh", bias=bias, outputs=outputs
    )
    theta0, unravel = ravel_net(net)

    def loss(theta):
        return gf.squared_loss(unravel(theta), x, y, weights, reduction)

    hessian = np.asarray(jax.hessian(loss)(jnp.zeros_like(theta0)))
    escape = LinearEscape(
        net, 2, x, y, weights, reduction, jax.grad(loss), unravel, 1e-10, jnp.asarray(1e3)
    )
    for t in (0.0, 0.3, 2.0, 7.0):
        expected = scipy.linalg.expm(-t * hessian) @ np.asarray(theta0)
        got = np.asarray(escape.params(jnp.asarray(t)))
        np.testing.assert_allclose(got, expected, rtol=1e-11, atol=1e-12 * np.abs(expected).max())
    # The time at a radius inverts ‖θ(t)‖ (a quadratic for one rate, bisection for more).
    for radius in (2 * np.linalg.norm(theta0), 10 * np.linalg.norm(theta0)):
        t = escape._time_at_radius(jnp.asarray(radius))
        np.testing.assert_allclose(np.linalg.norm(escape.params(t)), radius, rtol=1e-12)


@pytest.mark.parametrize("scale", [1e-8, 1e-20])
@pytest.mark.parametrize(
    "activation, bias",
    [
        ("tanh", False),
        pytest.param("erf", True, marks=pytest.mark.slow),  # each compiles its own program
        pytest.param("identity", True, marks=pytest.mark.slow),
    ],
)
def test_jumped_flow_matches_reference(getkey, scale, activation, bias):
    x = jax.random.normal(getkey(), (8, 2))
    y = jnp.sin(x @ jnp.array([1.0, -0.5]))
    net = gf.random_net(getkey(), width=3, dim=2, scale=scale, activation=activation, bias=bias)
    # Save points inside the jumped phase (t = 2, 10) and after the hand-over.
    ts = jnp.array([0.0, 2.0, 10.0, 40.0, 60.0, 100.0])
    sol = gf.gradient_flow(net, x, y, t1=100.0, ts=ts)
    assert sol.status == gf.Status.SUCCESS
    reference = reference_flow(net, x, y, ts)
    for i in range(len(ts)):
        got = flatten(jax.tree_util.tree_map(lambda leaf: leaf[i], sol.nets))
        assert relative_error(got, reference[i]).max() <= FLOW_TOLERANCE


# Slow: benchmarks/escape_lockstep.py measures the same cost;
# test_jumped_flow_matches_reference[tanh] is fast.
@pytest.mark.slow
def test_cost_does_not_grow_with_log_inverse_scale(w1_data):
    x, y = w1_data

    def evaluations(scale):
        net = gf.random_net(jax.random.key(1), width=2, dim=2, scale=scale, activation="tanh")
        sol = gf.gradient_flow(net, x, y, t1=200.0, reduction="sum")
        assert sol.status == gf.Status.SUCCESS
        return int(sol.num_evaluations)

    without = gf.random_net(jax.random.key(1), width=2, dim=2, scale=1e-20, activation="tanh")
    plain = gf.gradient_flow(without, x, y, t1=200.0, reduction="sum", linear_escape=False)
    at_12, at_20 = evaluations(1e-12), evaluations(1e-20)
    # Both runs jump to the same radius along the same growing mode; what differs is
    # the decayed remainder, a relative 1e-16 at the hand-over.
    assert abs(at_20 - at_12) <= 0.02 * at_12
    # The solver no longer steps through the ~40 time units of the linear phase.
    assert at_20 < 0.95 * int(plain.num_evaluations)


@pytest.mark.slow  # test_closed_form_is_expm_of_the_hessian_at_zero is its fast sibling
def test_jump_past_t1_is_the_closed_form(w1_data):
    x, y = w1_data
    net = gf.random_net(jax.random.key(2), width=2, dim=2, scale=1e-20, activation="tanh")
    ts = jnp.array([0.0, 1.0, 3.0])
    sol = gf.gradient_flow(net, x, y, t1=3.0, ts=ts, reduction="sum")
    assert sol.status == gf.Status.SUCCESS
    assert float(sol.t_stop) == 3.0
    reference = reference_flow(net, x, y, ts, reduction="sum")
    assert relative_error(flatten(sol.net), reference[-1]).max() <= FLOW_TOLERANCE


@pytest.mark.slow  # test_jumped_flow_matches_reference[tanh] is its fast sibling
def test_vmapped_scales_hand_over_per_seed(w1_data):
    x, y = w1_data
    scales = jnp.array([1e-2, 1e-10, 1e-20])
    keys = jax.random.split(jax.random.key(3), 3)
    nets = jax.vmap(lambda k, s: gf.random_net(k, width=2, dim=2, scale=s, activation="tanh"))(
        keys, scales
    )
    batched = jax.vmap(lambda n: gf.gradient_flow(n, x, y, t1=100.0, reduction="sum"))(nets)
    for i in range(3):
        net = jax.tree_util.tree_map(lambda leaf: leaf[i], nets)
        single = gf.gradient_flow(net, x, y, t1=100.0, reduction="sum")
        got = flatten(jax.tree_util.tree_map(lambda leaf: leaf[i], batched.net))
        assert relative_error(got, flatten(single.net)).max() <= 1e-9
