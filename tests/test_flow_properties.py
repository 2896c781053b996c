"""Properties of the flow that hold without knowing the solution: conserved quantities,
monotone loss, equality of batched and single runs, evaluation counts, stop rules and
failure codes."""

import functools

import diffrax as dfx
import jax
import jax.numpy as jnp
import numpy as np
import pytest
from helpers import (
    flatten,
    logistic_product,
    numpy_gradient,
    numpy_loss,
    reference_flow,
    relative_error,
    tree_allclose,
)

import gradflow as gf
from gradflow._problem import FlowProblem


# `gradient_flow` at its default rtol is accurate to 1e-8 relative to ‖θ‖, as checked
# against independent references in test_flow_reference.py.
FLOW_TOLERANCE = 1e-8

_W1_T1 = 200.0
_W1_TS = gf.log_times(_W1_T1, 41)


def _w1_net(seed, eps):
    return gf.random_net(jax.random.key(seed), width=2, dim=2, scale=eps, activation="tanh")


def _w1_flow(net, x, y, **kwargs):
    return gf.gradient_flow(net, x, y, t1=_W1_T1, ts=_W1_TS, reduction="sum", **kwargs)


# --------------------------------------------------------------------------------------
# Conservation of the imbalance and monotone loss, on one small problem: six points in
# R², biases, three neurons. The runs are cached so both tests share them.
# --------------------------------------------------------------------------------------

_DENSE_TS = np.linspace(0.0, 1.0, 201)


def _small_problem():
    x = jax.random.normal(jax.random.key(7), (6, 2))
    return x, jnp.sin(2 * x[:, 0]) + 0.5 * x[:, 1]


@functools.cache
def _small_run(activation, seed, scale, t1):
    x, y = _small_problem()
    net = gf.random_net(
        jax.random.key(seed), width=3, dim=2, scale=scale, activation=activation, bias=True
    )
    return gf.gradient_flow(
        net, x, y, t1=t1, ts=_DENSE_TS * t1, observables={"C": gf.imbalance}, max_steps=5000
    )


# ReLU-type flows (`gradient_flow` runs them with `piecewise_flow`) are followed at init
# scale 0.5 for t ≤ 3: long enough for neurons' breakplanes to cross data points
# (asserted below). These seeds were chosen, before the exact integrator existed, so that
# no breakplane gets pinned; pinned runs are tested in `test_piecewise.py`.
_KINKED_RUNS = [(seed, 0.5, 3.0) for seed in (0, 15, 16)]
_SMOOTH_RUNS = [(0, 0.5, 3.0), (0, 1e-6, 60.0)]


# Each activation compiles its own program: ReLU (the exact flow) runs by default.
_SLOW = pytest.mark.slow


@pytest.mark.parametrize("seed, scale, t1", _KINKED_RUNS)
@pytest.mark.parametrize(
    "activation",
    ["relu", pytest.param("leaky_relu", marks=_SLOW), pytest.param("identity", marks=_SLOW)],
)
def test_imbalance_is_conserved(activation, seed, scale, t1):
    sol = _small_run(activation, seed, scale, t1)
    assert int(sol.status) == gf.Status.SUCCESS
    if activation != "identity":
        x, _ = _small_problem()
        pattern = np.asarray(jax.vmap(lambda net: net.preactivation(x) > 0)(sol.nets))
        assert np.any(pattern[1:] != pattern[:-1]), "no breakplane crossed a data point"
    # d/dt (a_k² − ‖w_k‖² − b_k²) = 0 exactly for positively 1-homogeneous σ (σ'(z)z = σ(z),
    # also at the kink). C_k is quadratic in θ, so a relative error δ in θ moves it by at
    # most 2δ‖θ‖²; with δ ≤ 1e-8 that bounds the drift (measured: ≤ 5e-11·‖θ‖²).
    C = np.asarray(sol.observables["C"])
    norm2 = np.sum(flatten(sol.nets) ** 2, axis=1)
    assert np.all(np.abs(C - C[0]) <= 2 * FLOW_TOLERANCE * norm2.max())


@pytest.mark.parametrize(
    "activation, seed, scale, t1",
    [("relu", *run) for run in _KINKED_RUNS]
    + [pytest.param("leaky_relu", *_KINKED_RUNS[0], marks=_SLOW)]
    + [
        pytest.param(name, *run, marks=_SLOW)
        for name in ("identity", "tanh", "gelu", "sinc")
        for run in _SMOOTH_RUNS
    ],
)
def test_loss_never_increases(activation, seed, scale, t1):
    sol = _small_run(activation, seed, scale, t1)
    assert int(sol.status) == gf.Status.SUCCESS
    loss = np.asarray(sol.loss)
    # dL/dt = −‖∇L‖² ≤ 0. What may show up is rounding: L is a sum of 6 squares evaluated
    # in float64 (≲ 6 ulp ≈ 1e-15 relative) at points where it is flat (plateaus, the
    # converged end of a linear net: measured increases ≤ 1.5e-16·L(0)).
    assert np.all(np.diff(loss) <= 1e-14 * loss[0])
    assert loss[-1] < loss[0]


# --------------------------------------------------------------------------------------
# vmap and jit.
# --------------------------------------------------------------------------------------


def _assert_same_run(batched, single):
    """A batched (or jitted) run against the same run alone.

    Batched XLA reductions sum in a different order than unbatched ones, so the two
    differ by ulps from the first step on (the ScaleFree field's per-layer sums differ
    in the last bit). While the step sequences coincide, those ulps are amplified only
    by the flow's own sensitivity to perturbations (largest through the escape from
    the origin and past saddles): measured up to 1.9e-10 on W1 after ~1000 steps (1e-9
    asserted). If an accept/reject decision that sits on the threshold flips (seen for
    one seed in four on W1), the two take different steps and differ by up to their
    integration error, ≤ 1e-8 each. The loss differs by at most ‖∇L‖·‖δθ‖ ≲ δ·L(0)."""
    assert int(batched.status) == int(single.status)
    assert int(batched.stop_reason) == int(single.stop_reason)
    same_steps = (int(batched.num_accepted_steps), int(batched.num_rejected_steps)) == (
        int(single.num_accepted_steps),
        int(single.num_rejected_steps),
    )
    tolerance = 1e-9 if same_steps else 2 * FLOW_TOLERANCE
    assert relative_error(flatten(batched.nets), flatten(single.nets)).max() <= tolerance
    loss = np.asarray(single.loss)
    np.testing.assert_allclose(batched.loss, loss, rtol=tolerance, atol=tolerance * loss[0])


def _index(tree, i):
    return jax.tree_util.tree_map(lambda leaf: leaf[i], tree)


# Slow: test_ensemble.py::test_ensemble_matches_single_runs checks vmapped runs against single ones.
@pytest.mark.slow
def test_vmap_over_nets_equals_single_runs(w1_data):
    x, y = w1_data
    scales = jnp.array([1e-2, 1e-8, 1e-14, 1e-20])
    keys = jax.random.split(jax.random.key(0), 4)
    make = lambda key, scale: gf.random_net(key, width=2, dim=2, scale=scale, activation="tanh")  # noqa: E731
    nets = jax.vmap(make)(keys, scales)
    batched = jax.vmap(lambda net: _w1_flow(net, x, y))(nets)
    assert batched.status.shape == (4,)
    for i in range(4):
        _assert_same_run(_index(batched, i), _w1_flow(_index(nets, i), x, y))


# Slow: test_ensemble.py::test_ensemble_matches_single_runs checks vmapped runs against single ones.
@pytest.mark.slow
def test_vmap_over_data_equals_single_runs(w1_data):
    x, _ = w1_data
    s = x[:, 0]
    inputs = jnp.stack([x, 0.5 * x, x[::-1]])
    targets = jnp.stack([jnp.tanh(s + 1), jnp.sin(s), 0.5 * s])
    net = _w1_net(0, 1e-8)
    batched = jax.vmap(lambda inp, target: _w1_flow(net, inp, target))(inputs, targets)
    for i in range(3):
        _assert_same_run(_index(batched, i), _w1_flow(net, inputs[i], targets[i]))


@pytest.mark.slow  # tests/test_penalty.py runs gradient_flow under jit
def test_jit_equals_eager(w1_data):
    x, y = w1_data
    net = _w1_net(0, 1e-8)
    jitted = jax.jit(lambda net: _w1_flow(net, x, y))(net)
    eager = _w1_flow(net, x, y)
    # The same operations compiled twice (measured: bit-identical results).
    _assert_same_run(jitted, eager)
    assert tree_allclose(jitted.net, eager.net, rtol=1e-12, atol=0)


# (time, kind) of every evaluation of the vector field, and the kind of every evaluation
# of ∇L, wherever it is made: recorded on the host by the counting identities below.
_FIELD_EVALUATIONS = []
_GRADIENT_EVALUATIONS = []


def _counting_identity(records):
    """The identity on `value`, which appends `(t, kind)` to `records` on the host each
    time its result is used.

    A `jax.pure_callback`, so that XLA removes it along with an evaluation whose result
    is dead: Rodas5P's ∂f/∂t traces one evaluation of f per step, which nothing computes
    for gradflow's autonomous fields (a `jax.debug.callback` would keep it alive and count
    it). A `custom_jvp`, so that the field can be linearised (Rosenbrock steps): the
    tangent passes through, and the evaluation is recorded once, as "linearised"."""

    def call(kind, t, value):
        def record(t, value):
            records.append((float(t), kind))
            return value

        shapes = jax.tree_util.tree_map(lambda v: jax.ShapeDtypeStruct(v.shape, v.dtype), value)
        return jax.pure_callback(record, shapes, t, value, vmap_method="sequential")

    @jax.custom_jvp
    def identity(t, value):
        return call("plain", t, value)

    @identity.defjvp
    def _(primals, tangents):
        return call("linearised", *primals), tangents[1]

    return identity


class _CountingScaleFree(gf.AbstractCoordinates):
    """`ScaleFree`, whose vector field also records every evaluation on the host — an
    independent count of what the solver really does."""

    inner: gf.AbstractCoordinates = gf.ScaleFree()

    def to_state(self, theta, layer_sizes):
        return self.inner.to_state(theta, layer_sizes)

    def to_params(self, state, layer_sizes):
        return self.inner.to_params(state, layer_sizes)

    def vector_field(self, gradient, layer_sizes):
        field = self.inner.vector_field(gradient, layer_sizes)
        record = _counting_identity(_FIELD_EVALUATIONS)

        def counted(t, state, args):
            # The time is recorded, not differentiated: Rosenbrock steps differentiate f in
            # t, and a time that carried a tangent would run the `custom_jvp` rule.
            return field(t, record(jax.lax.stop_gradient(t), state), args)

        return counted

    def controller(self, rtol, dtmin):
        return self.inner.controller(rtol, dtmin)


@pytest.fixture
def counted_gradient(monkeypatch):
    """Records every evaluation of ∇L in `_GRADIENT_EVALUATIONS`: those of the vector
    field and those made elsewhere (stop rules, the escape's probe). The programs that
    trace it are those of `_CountingScaleFree`, so none is shared with other tests."""
    gradient = FlowProblem.gradient
    record = _counting_identity(_GRADIENT_EVALUATIONS)
    monkeypatch.setattr(
        FlowProblem, "gradient", lambda self, theta: gradient(self, record(0.0, theta))
    )


@pytest.mark.parametrize(
    "solver, rtol, t1",
    [
        pytest.param(dfx.Tsit5(), 1e-6, 20.0, marks=pytest.mark.slow),
        pytest.param(dfx.Tsit5(), 1e-10, 20.0, marks=pytest.mark.slow),
        pytest.param(dfx.Heun(), 1e-6, 20.0, marks=pytest.mark.slow),
        pytest.param(dfx.Dopri8(), 1e-10, 20.0, marks=pytest.mark.slow),
        pytest.param(gf.Rodas5P(), 1e-10, 20.0, marks=pytest.mark.slow),
        (None, 1e-10, 5.0),
        (None, 1e-10, 20.0),
    ],
    ids=[
        "Tsit5-1e-6",
        "Tsit5-1e-10",
        "Heun-1e-6",
        "Dopri8-1e-10",
        "Rodas5P-1e-10",
        "default-before-switch",
        "default-through-switch",
    ],
)
def test_num_evaluations_is_the_true_count(w1_data, counted_gradient, solver, rtol, t1):
    x, y = w1_data
    _FIELD_EVALUATIONS.clear()
    _GRADIENT_EVALUATIONS.clear()
    sol = gf.gradient_flow(
        _w1_net(0, 1e-8),
        x,
        y,
        t1=t1,
        reduction="sum",
        rtol=rtol,
        solver=solver,
        coordinates=_CountingScaleFree(),
    )
    jax.block_until_ready(sol)
    jax.effects_barrier()
    times = np.array([t for t, _ in _FIELD_EVALUATIONS])
    assert int(sol.status) == gf.Status.SUCCESS
    two_phase = solver is None  # W1's 6 parameters: the default is `TwoPhase()`
    explicit = gf.TwoPhase().explicit if two_phase else solver
    # Rosenbrock steps (Rodas5P, the second phase of `TwoPhase`), rejected ones included:
    # each linearises f once, at the start of the step.
    rosenbrock_steps = sum(kind == "linearised" for _, kind in _FIELD_EVALUATIONS)
    if isinstance(solver, gf.Rodas5P):
        assert rosenbrock_steps == int(sol.num_steps)
    elif two_phase:
        # To t = 5 the W1 run is still on its plateau; by t = 20 it has fitted the data,
        # and switched.
        assert (rosenbrock_steps > 0) == (t1 > 5)
    else:
        assert rosenbrock_steps == 0
    # gradflow evaluates f(y0) once to set the initial time scale, and the solver once
    # per attempt at the first step (t = t0 exactly, the end of the jumped linear escape;
    # all other stages of these tableaux sit at t > t0). For FSAL methods
    # `num_evaluations` counts one such attempt (in the solver's `init`); a rejected first
    # attempt re-evaluates f(y0): true count = 1 + (stages − 1)·num_steps + 1 + (rejected
    # first attempts). Non-FSAL: 1 + stages·num_steps. The escape's defect probe calls
    # the gradient directly, unseen by the counting field, and is counted once more.
    probe = 1
    assert float(times.min()) > 0  # the escape was jumped
    fsal = int(explicit.tableau.fsal)
    first_step_retries = int(np.sum(times == times.min())) - 1 - fsal
    assert 0 <= first_step_retries <= int(sol.num_rejected_steps)
    assert len(times) + probe == int(sol.num_evaluations) + fsal * first_step_retries
    if rtol == 1e-6:
        # Here the first step is accepted (dt0 is small enough), and the count is exact.
        assert len(times) + probe == int(sol.num_evaluations)
    # Every evaluation of ∇L: the field's, the probe, and those of `TwoPhase`'s switch
    # rule, checked at the start of the explicit phase and after each of its steps,
    # rejected ones included. `num_evaluations` leaves the latter out.
    switch_checks = int(sol.num_steps) - rosenbrock_steps + 1 if two_phase else 0
    assert len(_GRADIENT_EVALUATIONS) == len(times) + probe + switch_checks


# --------------------------------------------------------------------------------------
# Stop rules.
# --------------------------------------------------------------------------------------


def _assert_nan_after_stop(sol):
    after = np.asarray(sol.ts) > float(sol.t_stop)
    assert after.any() and not after.all()
    assert np.all(np.isnan(np.asarray(sol.loss)[after]))
    assert np.all(np.isnan(flatten(sol.nets)[after]))
    assert np.all(np.isfinite(np.asarray(sol.loss)[~after]))
    assert np.all(np.isfinite(flatten(sol.nets)[~after]))


# Slow: tests/test_results.py::test_end_state_after_a_stop_rule is fast.
@pytest.mark.slow
@pytest.mark.parametrize("eps", [1e-2, 1e-20])
def test_loss_tol(w1_data, eps):
    x, y = w1_data
    tol = 1e-3
    net = _w1_net(0, eps)
    sol = _w1_flow(net, x, y, loss_tol=tol)
    assert int(sol.status) == gf.Status.SUCCESS
    assert int(sol.stop_reason) == gf.StopReason.LOSS_TOLERANCE
    t_stop = float(sol.t_stop)
    assert 0 < t_stop < _W1_T1
    numpy_args = dict(m=2, bias=False, activation="tanh", reduction="sum")
    final_loss = numpy_loss(flatten(sol.net), np.asarray(x), np.asarray(y), **numpy_args)
    # The rule is checked after every accepted step; one step of a run resolved to 1e-10
    # changes the loss by far less than a factor 2 (measured: it stops at 0.93·tol–tol).
    assert tol / 2 < final_loss < tol
    # The state it stops in is the flow's state at t_stop.
    reference = reference_flow(net, x, y, np.array([0.0, t_stop]), reduction="sum")
    assert relative_error(flatten(sol.net), reference[-1]) <= FLOW_TOLERANCE
    _assert_nan_after_stop(sol)


@pytest.mark.slow  # test_stationarity_tol_at_convergence_of_a_linear_network is its fast sibling
def test_stationarity_tol_ignores_the_plateau_of_a_tiny_init(w1_data):
    x, y = w1_data
    tol = 1e-2
    sol = _w1_flow(_w1_net(0, 1e-20), x, y, stationarity_tol=tol)
    assert int(sol.status) == gf.Status.SUCCESS
    assert int(sol.stop_reason) == gf.StopReason.STATIONARY
    numpy_args = dict(m=2, bias=False, activation="tanh", reduction="sum")

    def ratio(theta):
        g = numpy_gradient(theta, np.asarray(x), np.asarray(y), **numpy_args)
        return np.linalg.norm(g) / np.linalg.norm(theta)

    # On the plateau ‖∇L‖/‖θ‖ stays near the growth rate of the linearisation (≈ 4 here),
    # far above the tolerance: the rule only fires after the escape ...
    loss = np.asarray(sol.loss)
    plateau = np.isfinite(loss) & (loss > 0.99 * loss[0])
    assert plateau.sum() >= 10
    assert min(ratio(theta) for theta in flatten(sol.nets)[plateau]) > 100 * tol
    final = flatten(sol.net)
    assert numpy_loss(final, np.asarray(x), np.asarray(y), **numpy_args) < 1e-2 * loss[0]
    # ... and when it fires, the point is stationary in the rule's sense.
    assert ratio(final) <= tol
    _assert_nan_after_stop(sol)


# Slow: tests/test_results.py::test_end_state_after_a_stop_rule is fast.
@pytest.mark.slow
@pytest.mark.parametrize("eps", [1e-2, 1e-8, 1e-20])
def test_stationarity_tol_at_convergence_of_a_linear_network(eps):
    # f = a·w·x on x = 1, target c, balanced start a = w = ε: with u = aw = a², ‖∇L‖ =
    # (c − u)·√(a² + w²) = (c − u)·‖θ‖, so the rule ‖∇L‖ ≤ τ‖θ‖ holds exactly once
    # u ≥ c − τ, i.e. from t* = log((c − τ)(c − u0)/(τ u0))/(2c) on (logistic u(t)).
    c, tau = 2.0, 1e-2
    u0 = eps**2
    t_star = np.log((c - tau) * (c - u0) / (tau * u0)) / (2 * c)
    net = gf.TwoLayerNet(jnp.array([eps]), jnp.array([[eps]]), activation="identity")
    t1 = 3 * t_star
    ts = np.linspace(0.0, t1, 31)
    sol = gf.gradient_flow(
        net, jnp.ones((1, 1)), jnp.array([c]), t1=t1, ts=ts, stationarity_tol=tau
    )
    assert int(sol.status) == gf.Status.SUCCESS
    assert int(sol.stop_reason) == gf.StopReason.STATIONARY
    t_stop = float(sol.t_stop)
    # Never early. At most one step late: the rule is checked at the end of each step,
    # and a step longer than 1/(2c), the decay time of c − u, would have a local error of
    # ~ (c − u)·(2c·h)⁶/6! ≥ 1e-5 ≫ rtol, so it is never accepted.
    assert t_star * (1 - 1e-9) <= t_stop <= t_star + 1 / (2 * c)
    # At t_stop the net is on the closed-form trajectory, within τ/(2√c) of the end
    # point a = w = √c.
    theta = flatten(sol.net)
    expected = np.sqrt(logistic_product(t_stop, u0, c)) * np.ones(2)
    assert relative_error(theta, expected) <= FLOW_TOLERANCE
    assert np.all(np.abs(theta - np.sqrt(c)) <= tau / (2 * np.sqrt(c)))
    _assert_nan_after_stop(sol)


# --------------------------------------------------------------------------------------
# The step budget: a failure code, never an exception.
# --------------------------------------------------------------------------------------


# Slow: tests/test_ensemble.py::test_failed_seed_does_not_stop_the_others checks a
# failure status fast.
@pytest.mark.slow
def test_max_steps_reached(w1_data):
    x, y = w1_data
    sol = _w1_flow(_w1_net(0, 1e-8), x, y, max_steps=10)
    assert int(sol.status) == gf.Status.MAX_STEPS_REACHED == 1
    assert int(sol.stop_reason) == gf.StopReason.FAILED
    assert "max_steps" in sol.message
    assert int(sol.num_steps) == 10
    assert 0 < float(sol.t_stop) < _W1_T1
    assert np.all(np.isfinite(flatten(sol.net)))
    assert not bool(sol.succeeded)
    _assert_nan_after_stop(sol)


@pytest.mark.slow  # test_max_steps_reached is its fast sibling
def test_max_steps_in_a_vmapped_ensemble(w1_data):
    x, y = w1_data
    net = _w1_net(0, 1e-8)

    def flow(t1, **kwargs):
        # Save times scaled with t1, so that the single run below shares the compiled
        # solve of `_w1_flow`.
        ts = _W1_TS * (t1 / _W1_T1)
        return gf.gradient_flow(net, x, y, t1=t1, ts=ts, reduction="sum", **kwargs)

    short = flow(5.0)
    budget = int(short.num_steps) + 20
    # The same net to t1 = 5 (fits the budget) and to t1 = 200 (needs ~4x more steps).
    t1s = jnp.array([5.0, _W1_T1, 5.0])
    ensemble = jax.vmap(lambda t1: flow(t1, max_steps=budget))(t1s)
    np.testing.assert_array_equal(ensemble.status, [0, 1, 0])
    assert "max_steps" in ensemble.message[1]
    assert np.all(np.isfinite(flatten(ensemble.net)))
    np.testing.assert_array_equal(np.asarray(ensemble.t_stop)[[0, 2]], [5.0, 5.0])
    assert float(ensemble.t_stop[1]) < _W1_T1
    for i in (0, 2):
        _assert_same_run(_index(ensemble, i), short)
