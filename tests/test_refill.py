import equinox as eqx
import jax
import jax.numpy as jnp
import numpy as np
import pytest
from helpers import assert_relative_close, flatten

import gradflow as gf
from gradflow import refill_flow


# The refilling loop takes the very steps of `gradient_flow` (Diffrax's `solver.step`
# and `adapt_step_size`, in `diffeqsolve`'s order), so step counts and statuses must
# be equal; values differ only by XLA fusing the slot-batched program differently from
# the seed-batched one. At fixed times (save times, t1) that is rounding, far below
# the 1e-9 promised. A stop rule ends a run at the end of a step, though, and where the
# steps end depends on the error estimates, differences of nearly equal numbers: at
# rtol 1e-10 their relative rounding is ~ulp/rtol ≈ 1e-6, which moves each step's end by
# ~2e-7 relative, and over a few hundred steps `t_stop` by up to ~1e-5. Measured: 2e-8
# with Diffrax's Tsit5 (the same dot kernels in both programs round alike), 2.5e-6 in
# `t_stop` with `Unrolled` (its fused stage sums round differently in the two programs).
# Such end points are compared to `RTOL_STOPPED`. Parameters are always compared relative
# to ‖θ‖, the accuracy the flow promises (an entry near zero may differ by a multiple of
# its own size), and losses relative to the initial loss.
RTOL = 1e-9
RTOL_STOPPED = 1e-5


def _nets(key, scales):
    keys = jax.random.split(key, len(scales))
    make = lambda k, s: gf.random_net(k, width=2, dim=2, scale=s, activation="tanh")  # noqa: E731
    return jax.vmap(make)(keys, jnp.asarray(scales))


def _assert_same(refill, reference):
    """Per seed: same statuses, stop reasons and steps; values to `RTOL` (the end point
    of a run ended by a stop rule to `RTOL_STOPPED`); NaN where the reference has NaN
    (save times after `t_stop`)."""
    for name in ("status", "stop_reason", "num_steps", "num_accepted_steps", "num_evaluations"):
        np.testing.assert_array_equal(getattr(refill, name), getattr(reference, name), name)
    by_rule = np.asarray(reference.stop_reason) != gf.StopReason.T1
    by_rule &= np.asarray(reference.status) == gf.Status.SUCCESS
    # The losses in units of each seed's initial loss.
    initial = np.asarray(reference.loss)[:, 0]
    # The end state: to `RTOL`, or to `RTOL_STOPPED` for a run ended by a stop rule. Its
    # stationarity ‖θ̇‖/‖θ‖ is a rate, of order one on W1.
    end = lambda sol: (  # noqa: E731
        flatten(sol.net),
        np.asarray(sol.t_stop),
        np.asarray(sol.final_loss) / initial,
        np.asarray(sol.stationarity),
    )
    for rows, rtol in ((~by_rule, RTOL), (by_rule, RTOL_STOPPED)):
        theta, t_stop, final_loss, stationarity = (value[rows] for value in end(refill))
        theta_ref, t_stop_ref, final_loss_ref, stationarity_ref = (
            value[rows] for value in end(reference)
        )
        assert_relative_close(theta, theta_ref, rtol=rtol)
        np.testing.assert_allclose(t_stop, t_stop_ref, rtol=rtol, atol=0)
        np.testing.assert_allclose(final_loss, final_loss_ref, rtol=rtol, atol=rtol)
        np.testing.assert_allclose(stationarity, stationarity_ref, rtol=rtol, atol=rtol)
    # The saves: to `RTOL`, NaN after `t_stop`.
    assert_relative_close(flatten(refill.nets), flatten(reference.nets), rtol=RTOL)
    np.testing.assert_allclose(
        refill.loss / initial[:, None],
        reference.loss / initial[:, None],
        rtol=RTOL,
        atol=RTOL,
        equal_nan=True,
    )
    compared = ("net", "t_stop", "final_loss", "stationarity", "nets", "loss")
    rest = lambda sol: eqx.tree_at(  # noqa: E731
        lambda s: tuple(getattr(s, name) for name in compared), sol, replace=(None,) * 6
    )
    leaves = jax.tree_util.tree_leaves
    for a, b in zip(leaves(rest(refill)), leaves(rest(reference))):
        a, b = np.asarray(a), np.asarray(b)
        assert a.shape == b.shape
        if np.issubdtype(a.dtype, np.floating):
            np.testing.assert_allclose(a, b, rtol=RTOL, atol=0, equal_nan=True)
        else:
            np.testing.assert_array_equal(a, b)


# Slow: tests/test_ensemble.py::test_ensemble_matches_single_runs runs the refilling
# schedule (the default) fast.
@pytest.mark.slow
def test_mixed_scales_stop_rules_and_saves_match_gradient_flow(getkey, w1_data):
    # Scales 1e-2 … 1e-20 (different escape times and step counts), 3 slots for 7 seeds
    # (every slot is refilled at least once), save times and an observable, and both
    # stop rules: at loss_tol 1e-4 some seeds stop before t1 = 30 and some do not.
    x, y = w1_data
    scales = [1e-2, 1e-5, 1e-10, 1e-15, 1e-20, 1e-3, 1e-8]
    nets = _nets(getkey(), scales)
    kwargs = dict(
        t1=30.0,
        ts=jnp.array([0.0, 0.5, 5.0, 20.0, 25.0, 30.0]),
        reduction="sum",
        loss_tol=1e-4,
        stationarity_tol=1e-7,
        observables={"norm": gf.parameter_norm},
    )
    sol, stats = refill_flow(nets, x, y, num_slots=3, **kwargs)
    reference = jax.vmap(lambda net: gf.gradient_flow(net, x, y, **kwargs))(nets)
    _assert_same(sol, reference)
    reasons = set(np.asarray(sol.stop_reason).tolist())
    assert {gf.StopReason.T1, gf.StopReason.LOSS_TOLERANCE} <= reasons, sol.loss
    assert np.all(sol.status == gf.Status.SUCCESS)
    # Every iteration advances at most one step per slot, and the queue kept the slots
    # busier than a lockstep batch of 3 would be.
    steps = np.asarray(sol.num_steps)
    assert int(np.sum(steps)) <= 3 * int(stats.iterations)
    lockstep = np.sum(steps) / (3 * sum(steps[i : i + 3].max() for i in range(0, 7, 3)))
    assert stats.efficiency > lockstep


@pytest.mark.slow  # tests/test_ensemble.py::test_failed_seed_does_not_stop_the_others is fast
def test_failures_stay_with_their_seed(getkey, w1_data):
    # Per-seed data: seed 1's inputs scaled up 300× (stiff: it exhausts max_steps),
    # seed 2 with a NaN target (every step rejected: NONFINITE after a few steps).
    x, y = w1_data
    nets = _nets(getkey(), [1e-6, 1e-6, 1e-6, 1e-12])
    xs = jnp.stack([x, 300 * x, x, x])
    ys = jnp.stack([y, y, y.at[2].set(jnp.nan), y])
    kwargs = dict(t1=40.0, reduction="sum", max_steps=3000)
    # (`flow_ensemble` refuses a NaN in concrete data up front; the engine must still
    # confine one that arises inside a run.)
    sol, _ = refill_flow(nets, xs, ys, data_index=jnp.arange(4), num_slots=2, **kwargs)
    reference = jax.vmap(lambda *p: gf.gradient_flow(*p, **kwargs))(nets, xs, ys)
    _assert_same(sol, reference)
    ok, stiff, nan = gf.Status.SUCCESS, gf.Status.MAX_STEPS_REACHED, gf.Status.NONFINITE
    np.testing.assert_array_equal(sol.status, [ok, stiff, nan, ok])
    assert sol.num_steps[1] == 3000 and sol.t_stop[1] < 40.0
    assert sol.num_steps[2] < 50
    np.testing.assert_array_equal(sol.stop_reason[1:3], gf.StopReason.FAILED)


@pytest.mark.slow
def test_escape_to_t1_and_without_escape(getkey, w1_data):
    # At 1e-20 and t1 = 2 the closed-form escape reaches t1: the solver never starts,
    # and every save time comes from the closed form or the end point.
    x, y = w1_data
    nets = _nets(getkey(), [1e-20, 1e-3, 1e-20])
    for kwargs in (
        dict(t1=2.0, ts=jnp.array([0.0, 1.0, 2.0])),
        dict(t1=20.0, linear_escape=False),
    ):
        sol, _ = refill_flow(nets, x, y, num_slots=2, reduction="sum", **kwargs)
        reference = jax.vmap(lambda net: gf.gradient_flow(net, x, y, reduction="sum", **kwargs))(
            nets
        )
        _assert_same(sol, reference)
    assert np.all(np.isfinite(sol.loss))


@pytest.mark.slow
def test_sweep_refill_matches_lockstep():
    def data(n):
        s = np.linspace(-2.0, 2.0, n)
        return np.stack([s, np.ones(n)], axis=1), np.tanh(s + 1.0)

    def init(key, scale):
        return gf.random_net(key, width=2, dim=2, scale=scale, activation="tanh")

    kwargs = dict(
        sizes=[3, 6], scales=[1e-3, 1e-15], num_seeds=2, t1=25.0, reduction="sum", progress=False
    )
    refill = gf.sweep(init, data, schedule="refill", num_slots=3, **kwargs)
    lockstep = gf.sweep(init, data, schedule="lockstep", **kwargs)
    np.testing.assert_array_equal(refill["status"].values, lockstep["status"].values)
    np.testing.assert_array_equal(refill["num_steps"].values, lockstep["num_steps"].values)
    np.testing.assert_allclose(refill["loss"].values, lockstep["loss"].values, rtol=RTOL)


@pytest.mark.mistyped
def test_bad_schedule(getkey, w1_data):
    x, y = w1_data
    nets = _nets(getkey(), [1e-3, 1e-3])
    with pytest.raises(ValueError, match="schedule"):
        gf.flow_ensemble(nets, x, y, t1=1.0, schedule="serial")
    with pytest.raises(ValueError, match="num_slots"):
        gf.flow_ensemble(nets, x, y, t1=1.0, num_slots=0)
    with pytest.raises(ValueError, match="data_index"):
        refill_flow(nets, jnp.stack([x, x]), jnp.stack([y, y]), t1=1.0, data_index=jnp.zeros(3))
    # Options are checked by `gradient_flow`'s own rules.
    with pytest.raises(ValueError, match="max_steps"):
        refill_flow(nets, x, y, t1=1.0, max_steps=0)


@pytest.mark.slow  # tests/test_kinks.py::test_default_for_kinks_is_the_exact_flow is fast
def test_kinks_run_the_exact_flow(getkey):
    # The refilling slots step with a smooth solver, so an activation with kinks runs
    # the exact (event-driven) flow of `gradient_flow` seed by seed instead: the
    # ensemble must equal the vmapped flow, and `refill_flow` itself must refuse.
    x = jax.random.normal(getkey(), (6, 2))
    y = jnp.sin(x[:, 0] - x[:, 1])
    keys = jax.random.split(getkey(), 3)
    make = lambda k: gf.random_net(k, width=3, dim=2, scale=0.5, activation="relu", bias=True)  # noqa: E731
    nets = jax.vmap(make)(keys)
    ensemble = gf.flow_ensemble(nets, x, y, t1=2.0, progress=False)
    single = jax.vmap(lambda net: gf.gradient_flow(net, x, y, t1=2.0))(nets)
    np.testing.assert_array_equal(ensemble.status, single.status)
    assert_relative_close(flatten(ensemble.net), flatten(single.net), rtol=1e-9)
    with pytest.raises(ValueError, match="kinks='smooth'"):
        refill_flow(nets, x, y, t1=1.0)
    smooth, _ = refill_flow(nets, x, y, t1=1.0, kinks="smooth")
    assert np.all(np.asarray(smooth.status) == gf.Status.SUCCESS)
