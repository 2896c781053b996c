import diffrax as dfx
import jax
import jax.numpy as jnp
import numpy as np
import pytest
from helpers import assert_relative_close

import gradflow as gf


def _flat(nets):
    a, W = np.asarray(nets.a), np.asarray(nets.W)
    return np.concatenate([a, W.reshape(a.shape[:-1] + (-1,))], axis=-1)


def _relative(u, v):
    return np.linalg.norm(u - v, axis=-1) / np.linalg.norm(v, axis=-1)


# Slow: tests/test_flow_reference.py::test_w1_matches_solve_ivp runs the default TwoPhase
# solver against DOP853 fast.
@pytest.mark.slow
def test_agrees_with_tight_rodas_through_the_switch(w1_data):
    # W1 from 1e-8 to t = 1e6 with 30 log-spaced saves: the escape and the fit by Tsit5,
    # the stiff late phase by Rodas5P. Every save, on both sides of the switch, within
    # 1e-9 of Rodas5P at rtol 1e-12 (both phases run at the default rtol 1e-10, whose
    # global error on W1 is ~1e-10), and far fewer steps than Tsit5 alone could take.
    x, y = w1_data
    net = gf.random_net(jax.random.key(0), width=2, dim=2, scale=1e-8, activation="tanh")
    kwargs = dict(t1=1e6, ts=gf.log_times(1e6, 30), reduction="sum")
    reference = gf.gradient_flow(net, x, y, rtol=1e-12, solver=gf.Rodas5P(), **kwargs)
    sol = gf.gradient_flow(net, x, y, solver=gf.TwoPhase(), **kwargs)
    assert sol.status == gf.Status.SUCCESS and sol.stop_reason == gf.StopReason.T1
    errors = _relative(_flat(sol.nets), _flat(reference.nets))
    assert np.max(errors) < 1e-9, errors
    assert sol.num_steps < 1000  # Tsit5 alone: over 50,000 steps to 1e6
    # (`num_evaluations` through the switch is counted independently, by the vector field
    # itself, in test_flow_properties.py.)


@pytest.mark.slow  # test_agrees_with_tight_rodas_through_the_switch is fast
def test_without_a_switch_it_is_the_explicit_solver(w1_data):
    # To t = 5 a 1e-8 run is still on its plateau: the switch never fires, and the run is
    # Tsit5's, step for step. Its values differ from Diffrax's only by the order of the
    # stage sums (`Unrolled`), by ulps of ‖θ‖ (see `assert_relative_close`).
    x, y = w1_data
    net = gf.random_net(jax.random.key(1), width=2, dim=2, scale=1e-8, activation="tanh")
    kwargs = dict(t1=5.0, ts=jnp.linspace(0.0, 5.0, 6), reduction="sum")
    sol = gf.gradient_flow(net, x, y, solver=gf.TwoPhase(), **kwargs)
    tsit5 = gf.gradient_flow(net, x, y, solver=dfx.Tsit5(), **kwargs)
    for name in ("status", "num_steps", "num_evaluations", "stop_reason"):
        assert int(getattr(sol, name)) == int(getattr(tsit5, name)), name
    assert_relative_close(_flat(sol.nets), _flat(tsit5.nets), rtol=1e-12)


@pytest.mark.slow  # tests/test_results.py::test_end_state_after_a_stop_rule is fast
@pytest.mark.parametrize("loss_tol", [1e-3, 1e-14])
def test_stop_rules_in_either_phase(w1_data, loss_tol):
    # 1e-3 is reached while fitting (before the switch), 1e-14 in the stiff phase.
    x, y = w1_data
    net = gf.random_net(jax.random.key(2), width=2, dim=2, scale=1e-8, activation="tanh")
    sol = gf.gradient_flow(
        net, x, y, t1=1e6, reduction="sum", solver=gf.TwoPhase(), loss_tol=loss_tol
    )
    assert sol.status == gf.Status.SUCCESS
    assert sol.stop_reason == gf.StopReason.LOSS_TOLERANCE
    assert gf.squared_loss(sol.net, x, y, reduction="sum") < loss_tol
    assert 0 < sol.t_stop < 1e6


# Slow: tests/test_refill.py::test_mixed_scales_stop_rules_and_saves_match_gradient_flow is fast.
@pytest.mark.slow
@pytest.mark.parametrize("schedule", ["refill", "lockstep"])
def test_ensembles_take_the_steps_of_gradient_flow(w1_data, schedule):
    # Mixed scales (so seeds switch at different times) and a stop rule that fires in
    # the second phase for some seeds: the refilling loop runs all seeds' explicit phase,
    # then the switched seeds' implicit phase, and must take gradient_flow's very steps.
    x, y = w1_data
    scales = jnp.array([1e-2, 1e-8, 1e-16, 1e-4, 1e-12])
    keys = jax.random.split(jax.random.key(3), 5)
    make = lambda k, s: gf.random_net(k, width=2, dim=2, scale=s, activation="tanh")  # noqa: E731
    nets = jax.vmap(make)(keys, scales)
    kwargs = dict(t1=1e4, ts=gf.log_times(1e4, 8), reduction="sum", solver=gf.TwoPhase())
    ensemble = gf.flow_ensemble(
        nets, x, y, schedule=schedule, num_slots=2, progress=False, loss_tol=1e-16, **kwargs
    )
    single = jax.vmap(lambda net: gf.gradient_flow(net, x, y, loss_tol=1e-16, **kwargs))(nets)
    np.testing.assert_array_equal(ensemble.status, gf.Status.SUCCESS)
    for name in ("num_steps", "num_accepted_steps", "num_evaluations", "stop_reason"):
        np.testing.assert_array_equal(getattr(ensemble, name), getattr(single, name), name)
    # Same steps; values agree to the rounding by which the slot-batched program sums in
    # another order than the seed-batched one. Compared relative to ‖θ‖ (the flow's
    # accuracy contract), not entry by entry: an entry near zero (a weight crossing it)
    # carries the absolute rounding of the whole vector (seen: 6e-12 on entries of 1e-7,
    # 2.7e-5 entry-wise, on a fresh clone).
    assert np.max(_relative(_flat(ensemble.net), _flat(single.net))) < 1e-9
    saved, reference = _flat(ensemble.nets), _flat(single.nets)
    np.testing.assert_array_equal(np.isnan(saved), np.isnan(reference))
    reached = ~np.isnan(reference).any(axis=-1)
    assert np.max(_relative(saved[reached], reference[reached])) < 1e-9


def test_bad_two_phase():
    with pytest.raises(ValueError, match="switch_tol"):
        gf.TwoPhase(switch_tol=0.0)
    with pytest.raises(TypeError, match="implicit"):
        gf.TwoPhase(implicit="rodas")
