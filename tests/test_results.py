"""What a result says about how it ended and how it was made (issue 16, part 3), and the
messages that point the right way (part 4)."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from jax.flatten_util import ravel_pytree

import gradflow as gf


def _stationarity(net, x, y, reduction):
    """‖∇L(θ)‖/‖θ‖, computed here from the loss alone."""
    theta, unravel = ravel_pytree(net)
    gradient = jax.grad(lambda th: gf.squared_loss(unravel(th), x, y, reduction=reduction))(theta)
    return float(jnp.linalg.norm(gradient) / jnp.linalg.norm(theta))


def test_end_state_after_a_stop_rule(w1_data):
    x, y = w1_data
    net = gf.random_net(jax.random.key(0), width=2, dim=2, scale=1e-6, activation="tanh")
    sol = gf.gradient_flow(
        net, x, y, t1=1e4, ts=jnp.array([0.0, 10.0, 1e4]), reduction="sum", loss_tol=1e-6
    )
    assert sol.stop_reason == gf.StopReason.LOSS_TOLERANCE
    # The last save time lies past the stop: NaN there, the end state is in the fields.
    assert np.isnan(sol.loss[-1])
    end_loss = float(gf.squared_loss(sol.net, x, y, reduction="sum"))
    np.testing.assert_allclose(float(sol.final_loss), end_loss, rtol=1e-12)
    assert float(sol.final_loss) < 1e-6
    np.testing.assert_allclose(
        float(sol.stationarity), _stationarity(sol.net, x, y, "sum"), rtol=1e-10
    )


def test_solution_records_how_it_was_made(w1_data):
    x, y = w1_data
    net = gf.random_net(jax.random.key(0), width=2, dim=2, scale=1e-6, activation="tanh")
    # The options of test_end_state_after_a_stop_rule, so that both share one program.
    options = dict(t1=1e4, ts=jnp.array([0.0, 10.0, 1e4]), reduction="sum", loss_tol=1e-6)
    sol = gf.gradient_flow(net, x, y, **options)
    info = dict(sol.info)
    assert info["t1"] == "10000.0" and info["reduction"] == "sum"
    assert "TwoPhase" in info["solver"] and "jax" in info["versions"]
    assert len(info["data_sha256"]) == 16
    other = gf.gradient_flow(net, x, 2.0 * y, **options)
    assert dict(other.info)["data_sha256"] != info["data_sha256"]


@pytest.mark.slow  # test_solution_records_how_it_was_made is fast
def test_summary_flags_runs_that_did_not_converge(w1_data):
    x, y = w1_data
    keys = jax.random.split(jax.random.key(1), 3)
    nets = jax.vmap(lambda k: gf.random_net(k, width=2, dim=2, scale=1e-6, activation="tanh"))(
        keys
    )
    # To t = 40 the runs have fitted the data but are far from stationary.
    ens = gf.flow_ensemble(nets, x, y, t1=40.0, reduction="sum", progress=False)
    assert np.all(ens.stationarity > 1e-6)
    text = ens.summary()
    assert "not converged: 3" in text and "stationarity_tol" in text
    ds = gf.to_dataset(ens)
    np.testing.assert_array_equal(ds["stationarity"].values, ens.stationarity)
    # The ensemble records its concrete options and data, not the traced values
    # inside its compiled chunks.
    assert ds.attrs["reduction"] == "sum" and ds.attrs["t1"] == "40.0"
    assert len(ds.attrs["data_sha256"]) == 16


# Slow: tests/test_kinks.py::test_default_for_kinks_is_the_exact_flow is fast.
@pytest.mark.slow
def test_exact_relu_event_log_in_the_dataset():
    s = jnp.linspace(-1.0, 1.0, 8)
    x, y = jnp.stack([s, jnp.ones_like(s)], 1), jnp.abs(s)
    keys = jax.random.split(jax.random.key(2), 2)
    nets = jax.vmap(lambda k: gf.random_net(k, width=3, dim=2, scale=1e-3))(keys)
    ens = gf.flow_ensemble(nets, x, y, t1=20.0, progress=False)
    ds = gf.to_dataset(ens)
    counts = ds["num_events"].values
    assert counts.max() > 0 and ds.sizes["event"] == counts.max()
    # Every used record is a crossing or a pin; the unused tail of a shorter log is -1.
    kinds = ds["event_kind"].values
    for run, count in enumerate(counts):
        assert np.all(kinds[run, :count] >= 0) and np.all(kinds[run, count:] == -1)


@pytest.mark.slow  # tests/test_descent.py::test_descent_vmaps_over_nets is fast
def test_descent_reports_the_times_of_its_states(w1_data):
    x, y = w1_data
    net = gf.random_net(jax.random.key(0), width=2, dim=2, scale=1e-2, activation="tanh")
    gd = gf.gradient_descent(
        net, x, y, learning_rate=0.3, t1=1.0, ts=jnp.array([0.0, 0.5, 1.0])
    )
    # Rounded to the steps k = 0, 2, 3 (t1 = 1.0 is 3 steps of 0.3).
    np.testing.assert_allclose(gd.ts, [0.0, 0.6, 0.9], rtol=1e-15)
    flow = gf.gradient_flow(net, x, y, t1=1.0, ts=jnp.array([0.0, 0.5, 1.0]))
    with pytest.raises(ValueError, match="multiples of its learning rate"):
        gf.distance_to_flow(gd, flow)


@pytest.mark.slow  # the messages' texts are checked without a flow in tests/test_bad_input.py
def test_messages_point_the_right_way(w1_data):
    x, y = w1_data
    net = gf.random_net(jax.random.key(0), width=2, dim=2, scale=1e-2, activation="tanh")
    with pytest.raises(ValueError, match=r"y\[:, 0\]"):
        gf.gradient_flow(net, x, y[:, None], t1=1.0)
    bad = gf.TwoLayerNet(net.a.at[0].set(jnp.nan), net.W, None, net.activation)
    with pytest.raises(ValueError, match="initialisation"):
        gf.gradient_flow(bad, x, y, t1=1.0)
    # float32 cannot honour the default rtol = 1e-10 ...
    net32 = jax.tree_util.tree_map(
        lambda v: v.astype(jnp.float32) if eqx_is_array(v) else v, net
    )
    x32, y32 = x.astype(jnp.float32), y.astype(jnp.float32)
    with pytest.raises(ValueError, match="float32"):
        gf.gradient_flow(net32, x32, y32, t1=1.0)
    # ... but runs at a tolerance it can.
    assert gf.gradient_flow(net32, x32, y32, t1=1.0, rtol=1e-4).status == gf.Status.SUCCESS
    # A diverging descent is told to lower its learning rate, not `rtol`.
    gd = gf.gradient_descent(net, 10 * x, y, learning_rate=50.0, t1=5000.0)
    assert gd.status == gf.Status.NONFINITE and "learning_rate" in gd.message


def eqx_is_array(v):
    return isinstance(v, jax.Array)


def test_ensemble_keyword_typo_names_the_ensemble(w1_data):
    x, y = w1_data
    keys = jax.random.split(jax.random.key(1), 2)
    nets = jax.vmap(lambda k: gf.random_net(k, width=2, dim=2, scale=1e-6, activation="tanh"))(
        keys
    )
    with pytest.raises(TypeError, match=r"`flow_ensemble` got an unknown option `rtoll`.*`rtol`"):
        gf.flow_ensemble(nets, x, y, t1=1.0, rtoll=1e-8, progress=False)


@pytest.mark.slow  # test_exact_relu_event_log_in_the_dataset is fast
def test_exact_relu_stationarity_is_the_filippov_velocity():
    # A ReLU net fits |s| on 1-D data: at the end the breakplanes sit at data points,
    # where the loss has no gradient; the end stationarity is that of the Filippov flow,
    # checked against a finite difference of the state along the run's last stretch.
    s = jnp.linspace(-1.0, 1.0, 8)
    x, y = jnp.stack([s, jnp.ones_like(s)], 1), jnp.abs(s)
    net = gf.random_net(jax.random.key(3), width=3, dim=2, scale=1e-3)
    ts = jnp.array([0.0, 400.0 - 1e-3, 400.0])
    sol = gf.gradient_flow(net, x, y, t1=400.0, ts=ts)
    theta = [ravel_pytree(jax.tree_util.tree_map(lambda v: v[k], sol.nets))[0] for k in (1, 2)]
    difference = float(jnp.linalg.norm(theta[1] - theta[0]) / 1e-3 / jnp.linalg.norm(theta[1]))
    assert np.isfinite(float(sol.stationarity)) and np.isfinite(float(sol.final_loss))
    np.testing.assert_allclose(float(sol.stationarity), difference, rtol=1e-3, atol=1e-12)
