import jax
import jax.numpy as jnp
import numpy as np
import pytest
from helpers import pinning_net, pinning_problem

import gradflow as gf


@pytest.mark.slow  # test_default_for_kinks_is_the_exact_flow is fast
def test_pinned_relu_run_ends_with_status_and_last_state():
    # The problem of the exact-ReLU-flow issue: a biased ReLU net whose breakplanes
    # pin data points, where the vector field is discontinuous and the smooth solver
    # (`kinks="smooth"`) chatters. It must end such a run with a status and its last
    # state within its step budget (bounded work: counted in steps here, timed in
    # `benchmarks/`), and leave the other seeds of an ensemble alone.
    x, y, key_net = pinning_problem()
    nets = jax.vmap(pinning_net)(jax.random.split(key_net, 2))
    sol = jax.vmap(
        lambda n: gf.gradient_flow(n, x, y, t1=20.0, rtol=1e-8, max_steps=3000, kinks="smooth")
    )(nets)
    assert np.all(np.asarray(sol.num_steps) <= 3000)
    status = np.asarray(sol.status)
    assert set(status.tolist()) <= {gf.Status.SUCCESS, gf.Status.MAX_STEPS_REACHED}
    assert np.any(status == gf.Status.MAX_STEPS_REACHED)
    stuck = status == gf.Status.MAX_STEPS_REACHED
    assert np.all(np.asarray(sol.t_stop)[stuck] < 20.0)
    assert np.all(np.isfinite(np.asarray(sol.net.W)))
    # The last state is a genuine point of the flow: its loss is below the start.
    final_loss = jax.vmap(lambda n: gf.squared_loss(n, x, y))(sol.net)
    assert np.all(np.asarray(final_loss) < np.asarray(sol.loss[:, 0]))


def test_default_for_kinks_is_the_exact_flow():
    # The same problem with the defaults: `gradient_flow` hands ReLU nets to
    # `piecewise_flow`, which slides along the pins and reaches t1.
    x, y, key_net = pinning_problem()
    net = pinning_net(jax.random.split(key_net, 2)[0])
    sol = gf.gradient_flow(net, x, y, t1=20.0)
    assert sol.status == gf.Status.SUCCESS
    assert float(sol.t_stop) == 20.0
    assert int(sol.observables["num_pinned"][-1]) > 0


def test_coordinates_with_exact_kinks_are_refused():
    x = jnp.ones((3, 1))
    y = jnp.ones(3)
    net = gf.random_net(jax.random.key(0), width=2, dim=1, scale=0.1, activation="relu")
    with pytest.raises(ValueError, match="`coordinates`.*kinks='smooth'"):
        gf.gradient_flow(net, x, y, t1=1.0, coordinates=gf.Cartesian(atol=1e-9))
