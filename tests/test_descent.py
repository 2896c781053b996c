import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest
from helpers import assert_relative_close, flatten

import gradflow as gf


def _problem(getkey, scale=1e-3):
    x = jax.random.normal(getkey(), (8, 3))
    y = jnp.sin(x[:, 0]) + 0.5 * x[:, 1]
    net = gf.random_net(getkey(), width=4, dim=3, scale=scale, activation="tanh", bias=True)
    return net, x, y


def test_one_step_is_explicit_euler(getkey):
    # Independent answer: θ1 = θ0 − η∇L(θ0) with the gradient taken by jax.grad here.
    net, x, y = _problem(getkey, scale=0.3)
    lr = 0.05
    sol = gf.gradient_descent(net, x, y, learning_rate=lr, t1=lr)
    grads = jax.grad(lambda n: gf.squared_loss(n, x, y))(net)
    expected = jax.tree_util.tree_map(lambda p, g: p - lr * g, net, grads)
    for got, want in zip(jax.tree_util.tree_leaves(sol.net), jax.tree_util.tree_leaves(expected)):
        np.testing.assert_allclose(got, want, rtol=1e-14, atol=1e-16)
    assert int(sol.num_steps) == 1 and int(sol.status) == 0


def test_descent_converges_to_flow_at_first_order(getkey):
    # Explicit Euler has global error O(η): halving η should halve the distance to
    # the flow (ratio 2 up to O(η) corrections, checked to ±15%).
    net, x, y = _problem(getkey)
    ts = jnp.linspace(0.0, 20.0, 5)
    flow = gf.gradient_flow(net, x, y, t1=20.0, ts=ts, rtol=1e-12)
    gaps = []
    for lr in (4e-3, 2e-3, 1e-3):
        gd = gf.gradient_descent(net, x, y, learning_rate=lr, t1=20.0, ts=ts)
        gaps.append(float(gf.distance_to_flow(gd, flow)[-1]))
    assert gaps[-1] < 1e-2
    ratios = np.array(gaps[:-1]) / np.array(gaps[1:])
    np.testing.assert_allclose(ratios, 2.0, rtol=0.15)


def test_saved_steps_and_optax_optimizer(getkey):
    net, x, y = _problem(getkey, scale=0.1)
    ts = jnp.array([0.0, 0.5, 1.0])
    # Optax's Adam mixes Python floats with its int32 step count; gradient_descent traces it
    # under standard promotion, so it runs under the test suite's strict promotion too.
    assert jax.config.jax_numpy_dtype_promotion == "strict"
    sol = gf.gradient_descent(
        net, x, y, learning_rate=0.1, t1=1.0, ts=ts, optimizer=optax.adam(1e-2)
    )
    assert sol.loss.shape == (3,)
    np.testing.assert_allclose(sol.loss[0], gf.squared_loss(net, x, y), rtol=1e-14)
    np.testing.assert_allclose(sol.loss[-1], gf.squared_loss(sol.net, x, y), rtol=1e-14)
    assert sol.net.a.dtype == jnp.float64  # Optax keeps float64 as float64
    assert sol.loss[-1] < sol.loss[0]


def test_descent_vmaps_over_nets(getkey):
    _, x, y = _problem(getkey)
    nets = jax.vmap(lambda k: gf.random_net(k, width=3, dim=3, scale=0.1, activation="gelu"))(
        jax.random.split(getkey(), 3)
    )
    run = lambda n: gf.gradient_descent(n, x, y, learning_rate=0.01, t1=1.0)  # noqa: E731
    # Under `jit` too: `t1` (a Python number) still sets the number of steps.
    batched = jax.jit(jax.vmap(run))(nets)
    single = run(jax.tree_util.tree_map(lambda v: v[1], nets))
    # The same arithmetic per seed, up to XLA ordering batched sums differently: 1e-13
    # relative to ‖θ‖.
    second = jax.tree_util.tree_map(lambda v: v[1], batched.net)
    assert_relative_close(flatten(second), flatten(single.net), rtol=1e-13)


def test_divergent_descent_gets_nonfinite_status(getkey):
    # A linear network with a step far beyond 2/λ_max: the iterates blow up to inf/NaN.
    x = jax.random.normal(getkey(), (8, 3))
    net = gf.random_net(getkey(), width=2, dim=3, scale=1.0, activation="identity")
    sol = gf.gradient_descent(net, 10 * x, x[:, 0], learning_rate=10.0, t1=1000.0)
    assert int(sol.status) == gf.Status.NONFINITE
    assert "NaN" in sol.message


@pytest.mark.slow  # tests/test_bad_input.py checks the shared argument errors fast
def test_bad_descent_input(getkey):
    net, x, y = _problem(getkey)
    with pytest.raises(ValueError, match="learning_rate"):
        gf.gradient_descent(net, x, y, learning_rate=-1.0, t1=1.0)
    with pytest.raises(ValueError, match="t1"):
        gf.gradient_descent(net, x, y, learning_rate=0.1, t1=0.0)
    flow = gf.gradient_flow(net, x, y, t1=1.0, ts=jnp.array([0.0, 1.0]))
    gd = gf.gradient_descent(net, x, y, learning_rate=0.1, t1=1.0, ts=jnp.array([0.0, 0.5]))
    with pytest.raises(ValueError, match="same `ts`"):
        gf.distance_to_flow(gd, flow)
