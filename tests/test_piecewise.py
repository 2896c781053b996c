"""The exact flow of ReLU-type networks: crossings, Filippov sliding, and their log.

References are independent of `gradflow._piecewise`: closed-form flows of the scalar linear
network (`helpers.logistic_product`), sliding velocities derived by hand in the comments,
and gradient descent with a small step, whose distance to the flow is O(η)."""

import diffrax as dfx
import equinox as eqx
import jax
import jax.numpy as jnp
import numpy as np
import pytest
from helpers import flatten, logistic_product, relative_error

import gradflow as gf
from gradflow._piecewise import EventKind, piecewise_flow
from gradflow._piecewise.pattern import breakplanes_of, pin_kinks
from gradflow._piecewise.sliding import PiecewiseField, solve_gram


# --------------------------------------------------------------------------------------
# One neuron pinned at one point in 1-D.
#
# Data x̃_1 = (0, 1), x̃_2 = (1, 1) with targets y_1 = −1, y_2 = 1, loss ¼Σ r_i² (½·mean of
# two points), one neuron f(x) = a σ(w x + b) with b = 0: its breakplane sits on x_1. Then
# z_1 = b, z_2 = w + b, σ(z_1) = 0 and e_i = r_i / 2 with r_1 = −y_1 = 1, r_2 = aw − 1.
# With the effective slope s_1 on the breakplane,
#     ȧ = −e_2 w,   ẇ = −a e_2,   ḃ = −a (e_1 s_1 + e_2),
# and sliding (ḃ = 0) needs s_1 = −e_2 / e_1 = 1 − aw, i.e. α = (1 − aw − σ'(0⁻)) /
# (σ'(0⁺) − σ'(0⁻)), in [0, 1] while σ'(0⁻) ≤ 1 − aw ≤ 1: both one-sided fields point into
# the plane (ḃ = −a(e_1 σ'(0⁻) + e_2) > 0 below it, ḃ = −a(e_1 + e_2) < 0 above it). (a, w)
# then follow the scalar linear network u = aw with loss ¼(u − 1)²; balanced (a = w),
# u̇ = u(1 − u), the closed form `logistic_product(t / 2, u0, 1)`, and b stays 0. For ReLU
# (σ'(0⁻) = 0) the pin holds for ever as u → 1; a leaky ReLU of slope β releases it below
# the plane when u = 1 − β, at t = log((1 − β)(1 − u0) / (β u0)).
# --------------------------------------------------------------------------------------

ONE_D_X = jnp.array([[0.0], [1.0]])
ONE_D_Y = jnp.array([-1.0, 1.0])


def _one_neuron(a, w, b, activation):
    return gf.TwoLayerNet(jnp.array([a]), jnp.array([[w]]), jnp.array([b]), activation)


def test_pin_systems_solved_as_lapack_does():
    # `solve_gram` eliminates by hand (no LAPACK call) for up to 4 pins per neuron; against
    # NumPy on Gram matrices of random points with unused pins masked to identity rows, to
    # rounding times the condition number (< 1e4 here).
    rng = np.random.default_rng(0)
    for size in (1, 2, 3, 4):
        points = rng.normal(size=(20, size, size + 1))
        unused = rng.random((20, size)) < 0.3
        used = ~unused[:, :, None] & ~unused[:, None, :]
        gram = np.where(used, points @ np.swapaxes(points, 1, 2), np.eye(size)[None])
        rhs = np.where(unused, 0.0, rng.normal(size=(20, size)))
        expected = np.linalg.solve(gram, rhs[..., None])[..., 0]
        got = np.asarray(solve_gram(jnp.asarray(gram), jnp.asarray(rhs)))
        np.testing.assert_allclose(got, expected, rtol=0, atol=1e-11 * np.abs(expected).max())


@pytest.mark.parametrize("activation", ["relu", gf.LeakyReLU(0.2)])
def test_sliding_velocity_one_point_1d(activation):
    a, w = 0.7, 0.4
    net = _one_neuron(a, w, 0.0, activation)
    breakplanes = breakplanes_of(net.activation)
    field = PiecewiseField(
        jnp.concatenate([ONE_D_X, jnp.ones((2, 1))], axis=1), ONE_D_Y, jnp.full(2, 0.5), breakplanes
    )
    pieces = jnp.array([[1, 2]], jnp.int32)  # point 0 pinned, point 1 active
    pins = jnp.array([[0, -1]], jnp.int32)
    (a_dot, W_dot), alpha, _ = field.evaluate((net.a, jnp.array([[w, 0.0]])), pieces, pins)
    e2 = (a * w - 1) / 2
    below, above = breakplanes.slope_below[0], breakplanes.slope_above[0]
    np.testing.assert_allclose(a_dot, [-e2 * w], rtol=1e-14)
    np.testing.assert_allclose(W_dot, [[-a * e2, 0.0]], rtol=1e-14, atol=1e-16)
    np.testing.assert_allclose(alpha[0, 0], (1 - a * w - below) / (above - below), rtol=1e-13)


@pytest.mark.parametrize(
    "negative_slope",
    [pytest.param(0.0, marks=pytest.mark.slow), 0.2],  # one program each
)
def test_one_neuron_pinned_at_one_point_1d(negative_slope):
    u0 = 0.09
    activation = "relu" if negative_slope == 0 else gf.LeakyReLU(negative_slope)
    net = _one_neuron(np.sqrt(u0), np.sqrt(u0), 0.0, activation)
    ts = jnp.linspace(0.0, 3.6, 5)  # all before the leaky release at t = 3.70
    sol = piecewise_flow(net, ONE_D_X, ONE_D_Y, t1=8.0, ts=ts, rtol=1e-12)
    assert sol.succeeded
    u = np.asarray(sol.nets.a[:, 0] * sol.nets.W[:, 0, 0])
    # rtol 1e-12 per step gives ~1e-11 over the run; the closed form is exact to 1e-15.
    np.testing.assert_allclose(u, logistic_product(np.asarray(ts) / 2, u0, 1.0), rtol=1e-10)
    np.testing.assert_array_equal(np.asarray(sol.nets.b), 0.0)  # exactly on the breakplane
    # The pin is found at t = 0 by the first step, after the save at t = 0.
    np.testing.assert_array_equal(np.asarray(sol.observables["num_pinned"]), [0, 1, 1, 1, 1])
    events = sol.observables["events"]
    assert int(events.num_events) == 1 and int(events.kind[0]) == EventKind.PIN
    assert (int(events.neuron[0]), int(events.point[0])) == (0, 0)
    assert float(events.time_in[0]) == 0.0
    if negative_slope == 0:
        assert np.isnan(float(events.time_out[0])) and int(events.direction[0]) == 0
        assert float(sol.net.b[0]) == 0.0
    else:
        beta = negative_slope
        release = np.log((1 - beta) * (1 - u0) / (beta * u0))
        np.testing.assert_allclose(float(events.time_out[0]), release, rtol=1e-9)
        assert int(events.direction[0]) == -1 and float(sol.net.b[0]) < 0


def test_one_neuron_reaches_the_point_and_pins():
    # Starting above the point (b > 0) the breakplane moves onto x_1 and stays there; the
    # pin's time_in is when b reached 0, where b is exactly 0 from then on.
    net = _one_neuron(0.3, 0.3, 0.05, "relu")
    sol = piecewise_flow(net, ONE_D_X, ONE_D_Y, t1=8.0, ts=jnp.linspace(0.0, 8.0, 5), rtol=1e-12)
    events = sol.observables["events"]
    assert sol.succeeded
    assert int(events.num_pins) == 1 and int(events.num_crossings) == 0
    t_in = float(events.time_in[0])
    assert 0 < t_in < 8
    later = np.asarray(sol.ts) > t_in
    np.testing.assert_array_equal(np.asarray(sol.nets.b)[later], 0.0)
    # Sliding conserves the imbalance: each one-sided field does, so their combination does.
    drift = gf.imbalance(sol.nets) - gf.imbalance(net)[None, :]
    np.testing.assert_allclose(drift, 0.0, atol=1e-11)


def test_stop_rules_on_a_pinned_flow():
    # The pinned flow above (ReLU, b = 0): u = aw = logistic_product(t / 2, u0, 1) with the
    # pin held, ‖θ̇‖/‖θ‖ = |e_2| = (1 − u)/2 and loss ¼(1 + (1 − u)²). So the stationarity
    # rule holds from u = 1 − 2·tol on, the loss rule from (1 − u)² = 4·loss_tol − 1; both
    # are checked at step ends, so the run stops at the first step end past that time.
    u0 = 0.09
    net = _one_neuron(np.sqrt(u0), np.sqrt(u0), 0.0, "relu")

    def run(loss_tol, stationarity_tol):
        return gf.gradient_flow(
            net, ONE_D_X, ONE_D_Y, t1=1e3, rtol=1e-12, loss_tol=loss_tol,
            stationarity_tol=stationarity_tol,
        )  # fmt: skip

    def time_of(u):  # inverse of logistic_product(t / 2, u0, 1)
        return np.log(u * (1 - u0) / (u0 * (1 - u)))

    for loss_tol, tol, reason, gap in [
        (1e-30, 1e-6, gf.StopReason.STATIONARY, 2e-6),
        (0.25 + 0.25 * 0.01**2, 1e-30, gf.StopReason.LOSS_TOLERANCE, 0.01),
    ]:
        sol = run(loss_tol, tol)  # the tolerances are traced: one program for both
        assert sol.succeeded and int(sol.stop_reason) == reason
        u = float(sol.net.a[0] * sol.net.W[0, 0])
        t_stop = float(sol.t_stop)
        assert 1 - u <= gap and t_stop >= time_of(1 - gap) * (1 - 1e-9)
        np.testing.assert_allclose(u, logistic_product(t_stop / 2, u0, 1.0), rtol=1e-10)
        assert float(sol.net.b[0]) == 0.0  # still pinned
        if reason == gf.StopReason.STATIONARY:
            assert float(sol.stationarity) <= tol
        else:
            assert float(sol.final_loss) < loss_tol


def test_flow_moves_on_past_a_tangent_release_at_rest():
    # Three points fitted to a loss of ~1e-21 by t = 36.7, where four pins on point 2 are
    # released: the released entries sit on their kink with one-sided rates ~ 0 that say
    # "turn back" while every step carries them out. That event changed nothing, recurred
    # at every step and the flow stood at t = 36.69 until max_steps (the adaptive-regime
    # experiment found it). Now it reaches t1 in about as many steps again as it took to
    # the release, still at rest.
    x = jnp.array([[-1.0, -0.5], [1.0, -0.5], [0.0, 1.0]])
    y = jnp.array([1.0, 1.0, -1.0])
    net = gf.random_net(
        jax.random.key(0), width=10, dim=2, scale=1e-2, bias=True, distribution="sphere"
    )
    sol = gf.gradient_flow(net, x, y, t1=100.0, max_steps=2000)
    assert sol.succeeded and float(sol.t_stop) == 100.0
    assert int(sol.num_steps) < 600
    events = sol.observables["events"]
    assert float(jnp.max(jnp.where(jnp.isnan(events.time_out), 0.0, events.time_out))) > 36
    assert float(sol.final_loss) < 1e-19


def test_an_event_with_only_pins_as_candidates_releases_a_pin():
    # A step whose only candidates are pins holds a release, whatever the free entries'
    # margins. The free entry compared against the pins used to be (0, 0) — the argmin of
    # an all-inf mask — at its real margin: one a rounding error across its kink
    # (-5.6e-18 in a run of the threshold sweep, not a candidate) beat the pins and was
    # handled as reaching its kink; the flow stood still until max_steps. Here neuron 1 is
    # the pinned neuron above (leaky ReLU, so the pin may go), and neuron 0's pre-activation
    # at x_1 is put 1e-16 across its kink.
    from gradflow._options import flow_options
    from gradflow._piecewise import flow

    activation = gf.LeakyReLU(0.1)
    u0 = 0.09
    net = gf.TwoLayerNet(
        jnp.array([0.5, np.sqrt(u0)]), jnp.array([[1.0], [np.sqrt(u0)]]),
        jnp.array([-1e-16, 0.0]), activation,
    )  # fmt: skip
    data, options = flow_options(net, ONE_D_X, ONE_D_Y, None, t1=8.0, kinks="exact", rtol=1e-12)
    # Compiled: run op by op, these internals take seconds.
    ctx, position = flow._start(net, data, options, breakplanes_of(activation))
    loop = flow._initial_loop(ctx, position)
    loop = eqx.filter_jit(flow._iteration)(ctx, loop)  # the pin, at t = 0 (neuron 0 would pin next)
    np.testing.assert_array_equal(loop.position.pins, [[-1, -1], [0, -1]])
    loop = eqx.tree_at(lambda c: c.position.pieces, loop, loop.position.pieces.at[0, 0].set(2))
    h_free, _ = flow._margins(ctx.field, loop.position.state, loop.position.pieces,
                              loop.position.pins)  # fmt: skip
    assert -1e-15 < float(h_free[0, 0]) < 0  # across, by less than rounding
    _, step, _ = eqx.filter_jit(flow._attempt)(ctx, loop)
    step = eqx.tree_at(
        lambda s: (s.candidates_free, s.candidates_pin), step,
        (jnp.zeros_like(step.candidates_free), loop.position.pins >= 0),
    )  # fmt: skip
    after = eqx.filter_jit(flow._apply_event)(ctx, step, step.t0, loop)
    np.testing.assert_array_equal(after.position.pins, -1)  # released; neuron 0 not pinned
    np.testing.assert_array_equal(after.position.pieces[0], loop.position.pieces[0])


# --------------------------------------------------------------------------------------
# One breakplane pinned by two points in 2-D.
#
# x_1 = (−1, 0), x_2 = (1, 0) with y = −1; x_3 = (0, 1) with y = 1; x_4 = (0, −1) with y = 0.
# The breakplane w·x + b = 0 of the line x₂ = 0 (w = (0, ρ), b = 0) holds x_1 and x_2. With
# e_i = r_i / 4 (½·mean of four points), the pins' pulls u_1, u_2 must keep x̃_1·w̃̇ =
# x̃_2·w̃̇ = 0 for w̃̇ = −a(e_3 x̃_3 + u_1 x̃_1 + u_2 x̃_2): that gives u_1 = u_2 = −e_3 / 2 and
# w̃̇ = −a(0, e_3, 0), ȧ = −e_3 ρ. So (a, ρ) is again the scalar linear network, now with
# loss ⅛(u − 1)²: balanced, u(t) = logistic_product(t / 4, u0, 1). Each pin's slope is
# s = u_1 / e_1 = (1 − u)/2 ∈ [0, 1/2]: both pins hold.
# --------------------------------------------------------------------------------------


def test_breakplane_pinned_by_two_points_2d():
    x = jnp.array([[-1.0, 0.0], [1.0, 0.0], [0.0, 1.0], [0.0, -1.0]])
    y = jnp.array([-1.0, -1.0, 1.0, 0.0])
    u0 = 0.04
    net = gf.TwoLayerNet(
        jnp.array([np.sqrt(u0)]), jnp.array([[0.0, np.sqrt(u0)]]), jnp.array([0.0]), "relu"
    )
    ts = jnp.linspace(0.0, 12.0, 4)
    sol = piecewise_flow(net, x, y, t1=12.0, ts=ts, rtol=1e-12)
    assert sol.succeeded
    u = np.asarray(sol.nets.a[:, 0] * sol.nets.W[:, 0, 1])
    np.testing.assert_allclose(u, logistic_product(np.asarray(ts) / 4, u0, 1.0), rtol=1e-10)
    np.testing.assert_allclose(np.asarray(sol.nets.W[:, 0, 0]), 0.0, atol=1e-15)
    np.testing.assert_allclose(np.asarray(sol.nets.b), 0.0, atol=1e-15)
    np.testing.assert_array_equal(np.asarray(sol.observables["num_pinned"])[1:], 2)
    events = sol.observables["events"]
    assert int(events.num_pins) == 2 and int(events.num_crossings) == 0
    assert sorted(np.asarray(events.point[:2]).tolist()) == [0, 1]


def test_full_event_log_warns_and_keeps_the_totals():
    # The two pins of the test above, with room in the log for one: the flow is the same,
    # the totals count both, and the user is told which `max_events` keeps every record.
    x = jnp.array([[-1.0, 0.0], [1.0, 0.0], [0.0, 1.0], [0.0, -1.0]])
    y = jnp.array([-1.0, -1.0, 1.0, 0.0])
    net = gf.TwoLayerNet(jnp.array([0.2]), jnp.array([[0.0, 0.2]]), jnp.array([0.0]), "relu")
    with pytest.warns(UserWarning, match=r"more than `max_events` = 1 .*`max_events=2`"):
        sol = gf.gradient_flow(net, x, y, t1=2.0, max_events=1)
    events = sol.observables["events"]
    assert int(events.num_pins) == 2 and events.neuron.shape == (1,)
    assert "event log full: 1 run(s)" in sol.summary()


# --------------------------------------------------------------------------------------
# Random small problems against gradient descent, all seeds in one vmapped call.
# --------------------------------------------------------------------------------------


def _random_problem():
    x = jax.random.normal(jax.random.key(1), (6, 2))
    y = jnp.sin(2 * x[:, 0]) + 0.5 * x[:, 1]
    keys = jax.random.split(jax.random.key(2), 8)
    nets = jax.vmap(
        lambda k: gf.random_net(k, width=3, dim=2, scale=0.5, activation="relu", bias=True)
    )(keys)
    return nets, x, y


@pytest.fixture(scope="module")
def random_flows():
    # One compiled, vmapped call for all tests below (compiling is most of their cost).
    # Two extra seeds test per-seed status: one with a NaN weight, one whose t1 = 1000
    # exhausts `max_steps`; the other eight run to t1 = 3 well within it.
    nets, x, y = _random_problem()
    bad = jax.tree_util.tree_map(lambda v: v[:2], nets)
    bad = eqx.tree_at(lambda n: n.a, bad, bad.a.at[0, 0].set(jnp.nan))
    batch = jax.tree_util.tree_map(lambda u, v: jnp.concatenate([u, v]), nets, bad)
    t1 = jnp.array([3.0] * 8 + [3.0, 1000.0])
    ts = jnp.linspace(0.0, 3.0, 4)
    sol = eqx.filter_jit(
        jax.vmap(lambda net, t: piecewise_flow(net, x, y, t1=t, ts=ts, max_steps=400))
    )(batch, t1)
    return nets, x, y, ts, sol


def _seed(tree, index):
    return jax.tree_util.tree_map(lambda v: v[index], tree)


@pytest.mark.slow  # the one-neuron pins against closed forms are fast
def test_agrees_with_small_step_gradient_descent(random_flows):
    nets, x, y, ts, sol = random_flows
    sol = _seed(sol, slice(0, 8))
    assert np.all(np.asarray(sol.status) == gf.Status.SUCCESS)
    events = sol.observables["events"]
    assert np.sum(np.asarray(events.num_events) > 0) >= 6  # most seeds meet a breakplane...
    assert np.any(np.asarray(events.num_pins) > 0)  # ...and some slide along one
    for index in (0, 7):  # seed 0 only crosses, seed 7 also slides
        net = _seed(nets, index)
        flow = flatten(_seed(sol.nets, index))
        errors = [
            relative_error(
                flatten(gf.gradient_descent(net, x, y, learning_rate=eta, t1=3.0).net), flow[-1]
            )
            for eta in (4e-4, 1e-4, 2.5e-5)
        ]
        # GD's distance to the flow is O(η): quartering η quarters it. Only roughly, as the
        # step at which GD crosses a breakplane jitters with η (measured: ratios 0.22–0.26).
        assert errors[-1] < 1e-5
        for coarse, fine in zip(errors, errors[1:]):
            assert 0.15 < fine / coarse < 0.4


def test_imbalance_conserved_with_crossings_and_sliding(random_flows):
    nets, x, y, ts, sol = random_flows
    sol = _seed(sol, slice(0, 8))
    drift = gf.imbalance(sol.net) - gf.imbalance(nets)
    scale = jnp.sum(flatten(nets) ** 2, axis=-1, keepdims=True)
    # Local error 1e-10 relative per step, a few hundred steps.
    assert np.max(np.abs(np.asarray(drift / scale))) < 1e-8


def test_crossings_match_sign_changes_of_gradient_descent(random_flows):
    # Seed 0 has no pins, so every sign change of a pre-activation along small-step GD is a
    # crossing of the flow, at a time within a few η·(GD's drift) of the flow's event.
    nets, x, y, _, sol = random_flows
    net = _seed(nets, 0)
    events = _seed(sol.observables["events"], 0)
    assert int(events.num_pins) == 0 and int(events.num_crossings) >= 3
    eta = 1e-4
    dense = jnp.linspace(0.0, 3.0, 3001)
    gd = gf.gradient_descent(net, x, y, learning_rate=eta, t1=3.0, ts=dense)
    z = (
        np.einsum("tkd,nd->tkn", np.asarray(gd.nets.W), np.asarray(x))
        + np.asarray(gd.nets.b)[:, :, None]
    )
    flips = np.argwhere(np.diff(np.sign(z), axis=0) != 0)  # (time index, k, i)
    num = int(events.num_events)
    logged = sorted(
        zip(
            np.asarray(events.neuron[:num]).tolist(),
            np.asarray(events.point[:num]).tolist(),
        )
    )
    assert sorted((int(k), int(i)) for _, k, i in flips) == logged
    for step, k, i in flips:
        match = (np.asarray(events.neuron) == k) & (np.asarray(events.point) == i)
        time_in = np.asarray(events.time_in)[match]
        assert np.min(np.abs(time_in - float(dense[step]) - 0.0005)) < 2e-3
    np.testing.assert_array_equal(
        np.asarray(sol.observables["num_crossings"])[0, -1], int(events.num_crossings)
    )


def test_vmap_per_seed_status(random_flows):
    # A seed with a NaN weight fails alone; one with a long t1 runs out of steps alone.
    *_, sol = random_flows
    status = np.asarray(sol.status).tolist()
    assert status[:8] == [gf.Status.SUCCESS] * 8
    assert status[8] in (gf.Status.NONFINITE, gf.Status.SOLVER_FAILURE)
    assert status[9] == gf.Status.MAX_STEPS_REACHED
    assert 3.0 < float(sol.t_stop[9]) < 1000.0
    assert np.all(np.isfinite(np.asarray(sol.net.W[9])))
    # Saves past where a run stopped are NaN.
    assert np.all(np.isnan(np.asarray(sol.loss[8, 1:])))


# --------------------------------------------------------------------------------------
# Bad input.
# --------------------------------------------------------------------------------------


class _Step(gf.AbstractActivation):
    kinks = (0.0,)

    def __call__(self, z):
        return jnp.where(jnp.asarray(z) > 0, 1.0, 0.0)


class _FakeKink(gf.AbstractActivation):
    kinks = (0.0,)

    def __call__(self, z):
        return jnp.tanh(z)


@pytest.mark.mistyped
def test_bad_input():
    x, y = ONE_D_X, ONE_D_Y
    relu = _one_neuron(0.5, 0.5, 0.1, "relu")
    with pytest.raises(ValueError, match="smooth.*gradient_flow"):
        piecewise_flow(_one_neuron(0.5, 0.5, 0.1, "tanh"), x, y, t1=1.0)
    with pytest.raises(ValueError, match="jumps"):
        piecewise_flow(_one_neuron(0.5, 0.5, 0.1, _Step()), x, y, t1=1.0)
    with pytest.raises(ValueError, match="slopes"):
        piecewise_flow(_one_neuron(0.5, 0.5, 0.1, _FakeKink()), x, y, t1=1.0)
    with pytest.raises(ValueError, match="reserved"):
        piecewise_flow(relu, x, y, t1=1.0, observables={"events": lambda net: net.a})
    with pytest.raises(ValueError, match="`max_events`"):
        piecewise_flow(relu, x, y, t1=1.0, max_events=0)
    with pytest.raises(TypeError, match="`solver`"):
        piecewise_flow(relu, x, y, t1=1.0, solver=dfx.Euler())
    with pytest.raises(ValueError, match="`rtol`"):
        piecewise_flow(relu, x, y, t1=1.0, rtol=-1.0)
    with pytest.raises(ValueError, match="`x`"):
        piecewise_flow(relu, x[:, 0], y, t1=1.0)


class _HardTanh(gf.AbstractActivation):
    """clip(z, −1, 1): two kinks, affine between them."""

    kinks = (-1.0, 1.0)
    piecewise_linear = True

    def __call__(self, z):
        return jnp.clip(z, -1.0, 1.0)


class _HardTanhByAutodiff(_HardTanh):
    piecewise_linear = False


class _LeakyByAutodiff(gf.LeakyReLU):
    piecewise_linear = False


# Each piecewise-linear activation beside the same σ evaluated by the generic path.
_LINEAR_AND_GENERIC = [
    (gf.ReLU(), _LeakyByAutodiff(0.0)),
    (gf.LeakyReLU(0.2), _LeakyByAutodiff(0.2)),
    (_HardTanh(), _HardTanhByAutodiff()),
]


@pytest.mark.parametrize("linear, generic", _LINEAR_AND_GENERIC)
def test_piecewise_linear_pattern_values_match_autodiff(linear, generic):
    # σ and σ' on a pattern from the slope tables of a piecewise-linear σ equal (σ' exactly,
    # σ to rounding) the generic path (autodiff of σ clamped into the piece, continued by its
    # tangent) on every piece, entries off their piece's side and on kinks included.
    fast, slow = breakplanes_of(linear), breakplanes_of(generic)
    z = 3 * jax.random.normal(jax.random.key(0), (40, 50))
    num_pieces = fast.num_pieces
    piece = jax.random.randint(jax.random.key(1), z.shape, 0, num_pieces)
    # σ(c) + s·(z − c) against σ(z̄) + s·(z − z̄), z̄ = z clamped: two roundings of |z|, |c|.
    bound = 4 * np.finfo(np.float64).eps * (np.abs(z) + 1)
    assert np.all(np.abs(fast.value(z, piece) - slow.value(z, piece)) <= bound)
    free = piece % 2 == 0
    np.testing.assert_array_equal(
        jnp.where(free, fast.slope(z, piece), 0), jnp.where(free, slow.slope(z, piece), 0)
    )


@pytest.mark.parametrize("linear, generic", _LINEAR_AND_GENERIC)
def test_piecewise_linear_field_matches_the_pre_activation_path(linear, generic):
    # The field of a piecewise-linear σ from two products with its slope matrix S (no z)
    # equals the generic path through z = W̃ x̃ᵀ (σ on the pattern, then its slopes): ȧ, Ẇ,
    # the residuals and the pins' α, with pins held on two kinks (hard tanh: intercepts
    # ±1 on its outer pieces); one output (nets with k outputs take the z path). Sums of
    # ~30 products of O(1) terms: a few ulps; α divides by a residual, so 1e-13.
    n, m, e = 30, 7, 3
    keys = jax.random.split(jax.random.key(0), 6)
    x = jax.random.normal(keys[0], (n, e))
    y = jax.random.normal(keys[1], (n,))
    weights = jax.random.uniform(keys[2], (n,)) / n
    a = jax.random.normal(keys[3], (m,))
    W = jax.random.normal(keys[4], (m, e))
    fast, slow = (PiecewiseField(x, y, weights, breakplanes_of(act)) for act in (linear, generic))
    num_open = (fast.breakplanes.num_pieces + 1) // 2
    pieces = 2 * jax.random.randint(keys[5], (m, n), 0, num_open)
    last = 2 * len(fast.breakplanes.kinks) - 1
    pins = jnp.full((m, e), -1, jnp.int32).at[0, 0].set(0).at[0, 1].set(1).at[2, 0].set(3)
    pieces = pieces.at[0, 0].set(1).at[0, 1].set(1).at[2, 3].set(last)
    state = fast.project((a, W), pins, pin_kinks(pieces, pins))
    (a_fast, W_fast), alpha_fast, _, error_fast = fast.evaluate_with_error(state, pieces, pins)
    (a_slow, W_slow), alpha_slow, _, error_slow = slow.evaluate_with_error(state, pieces, pins)
    assert float(jnp.max(jnp.abs(W_slow))) > 0.1 and bool(jnp.all(alpha_slow[0, :2] != 0.5))
    np.testing.assert_allclose(a_fast, a_slow, rtol=0, atol=1e-14)
    np.testing.assert_allclose(W_fast, W_slow, rtol=0, atol=1e-14)
    np.testing.assert_allclose(error_fast, error_slow, rtol=0, atol=1e-15)
    np.testing.assert_allclose(alpha_fast, alpha_slow, rtol=0, atol=1e-13)


def test_pin_systems_solved_on_the_leading_slots_that_hold_the_pins():
    # With more pin slots than are solved whole (dim x̃ = 40 here), the field solves each
    # neuron's pin system on the fewest leading slots that hold every neuron's pins; the
    # same velocity and α as on all slots, for 0, 1, 5 and 9 pins held (sizes 0, 2, 8 and
    # 16 of 40).
    n, m, e = 60, 5, 40
    keys = jax.random.split(jax.random.key(1), 5)
    x = jax.random.normal(keys[0], (n, e))
    field = PiecewiseField(
        x, jax.random.normal(keys[1], (n,)), jnp.full((n,), 1.0 / n), breakplanes_of(gf.ReLU())
    )
    state = (jax.random.normal(keys[2], (m,)), jax.random.normal(keys[3], (m, e)))
    for held in (0, 1, 5, 9):
        pins = jnp.full((m, e), -1, jnp.int32).at[1, :held].set(jnp.arange(held, dtype=jnp.int32))
        pieces = 2 * (state[1] @ x.T > 0).astype(jnp.int32)
        pieces = pieces.at[1, :held].set(1)
        on_kink = field.project(state, pins, pin_kinks(pieces, pins))
        _, free_pull, error = field._linear_pieces(*on_kink, pieces)
        W_dot, alpha = field._slide(on_kink[0], free_pull, error, pieces, pins)
        W_all, alpha_all = field._slide_on(on_kink[0], free_pull, error, pieces, pins)
        np.testing.assert_allclose(W_dot, W_all, rtol=0, atol=1e-13)
        np.testing.assert_allclose(alpha, alpha_all, rtol=0, atol=1e-12)
        if held:
            assert bool(jnp.all(alpha[1, :held] != 0.5))
