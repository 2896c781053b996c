"""One seed's flow problem, and the pieces of its solve that `gradient_flow` and the
refilling runner (`gradflow._refill`) share: the checks of the options, the start
(linear escape and initial time scale), the stop rules, and the `Solution` made from
the solver's end. Both runs must agree step for step, so each piece has one home."""

from collections.abc import Callable

import diffrax as dfx
import equinox as eqx
import jax
import jax.numpy as jnp
from jaxtyping import Array, Bool, Float, PyTree

from ._coordinates import AbstractCoordinates, ScaleFree
from ._escape import escape_order, LinearEscape
from ._loss import Reduction, squared_loss
from ._misc import all_concrete, check_positive, layer_sizes, ravel_net
from ._network import TwoLayerNet
from ._solution import assemble, observe, Solution
from ._solver import TwoPhase
from ._status import Status, StopReason
from ._validate import check_problem, check_times


def runs_piecewise(net: TwoLayerNet, kinks) -> bool:
    """Whether `gradient_flow` runs the exact, event-driven flow of `piecewise_flow`: an
    activation with kinks, and `kinks="exact"`."""
    return kinks == "exact" and not net.activation.is_smooth


def flow_options(
    net,
    x,
    y,
    weights,
    *,
    t1,
    ts,
    reduction,
    rtol,
    solver,
    coordinates,
    loss_tol,
    stationarity_tol,
    observables,
    max_steps,
    dtmin,
    linear_escape,
    kinks,
) -> tuple[tuple, dict, dict]:
    """Checks the problem and the options of `gradient_flow` at trace time.

    **Returns:** `(problem, arrays, statics)`: the data `(x, y, weights)` as arrays; the
    numbers `t1`, `ts`, `rtol`, `loss_tol`, `stationarity_tol` and `dtmin` as arrays of
    the data's dtype (traced by `jit`, so a new value does not recompile); and the static
    options of the solve (`reduction`, `solver`, `coordinates`, `observables`,
    `max_steps`, `escape_order`).
    """
    x, y, weights = check_problem(net, x, y, weights)
    t1, ts = check_times(t1, ts, x.dtype)
    check_positive("rtol", rtol)
    check_positive("dtmin", dtmin)
    check_positive("loss_tol", loss_tol, allow_none=True)
    check_positive("stationarity_tol", stationarity_tol, allow_none=True)
    if reduction not in ("mean", "sum"):
        raise ValueError(f"`reduction` must be 'mean' or 'sum', got {reduction!r}.")
    if not isinstance(max_steps, int) or max_steps < 1:
        raise ValueError(f"`max_steps` must be a positive integer, got {max_steps!r}.")
    if not isinstance(coordinates, AbstractCoordinates):
        raise TypeError("`coordinates` must be an `AbstractCoordinates`, e.g. `ScaleFree()`.")
    if isinstance(coordinates, ScaleFree) and coordinates.layerwise and all_concrete(net):
        for name in ("a", "W"):
            if not jnp.any(getattr(net, name) != 0):
                raise ValueError(
                    f"`net.{name}` is all zero, so its layer has no scale for "
                    "`ScaleFree(layerwise=True)` to be relative to. Pass "
                    "`coordinates=gradflow.ScaleFree(layerwise=False)`."
                )
    if solver is None:
        solver = default_solver(net)
    elif not isinstance(solver, dfx.AbstractAdaptiveSolver | TwoPhase):
        raise TypeError(
            "`solver` must be an adaptive Diffrax solver such as `diffrax.Tsit5()` or "
            "`gradflow.Rodas5P()`, a `gradflow.TwoPhase`, or None for the default; got "
            f"{type(solver).__name__}."
        )
    if kinks not in ("exact", "smooth"):
        raise ValueError(f"`kinks` must be 'exact' or 'smooth', got {kinks!r}.")
    if runs_piecewise(net, kinks):
        unsupported = [
            name
            for name, given in (
                ("loss_tol", loss_tol is not None),
                ("stationarity_tol", stationarity_tol is not None),
                ("coordinates", coordinates != ScaleFree()),
            )
            if given
        ]
        if unsupported:
            raise ValueError(
                f"{', '.join(f'`{name}`' for name in unsupported)} not supported by the exact "
                f"integrator for the kinks of {type(net.activation).__name__}. Drop them, or "
                "pass `kinks='smooth'` to step over the kinks with the smooth solver."
            )
    as_array = lambda v: None if v is None else jnp.asarray(v, x.dtype)  # noqa: E731
    arrays = dict(
        t1=t1,
        ts=ts,
        rtol=as_array(rtol),
        loss_tol=as_array(loss_tol),
        stationarity_tol=as_array(stationarity_tol),
        dtmin=as_array(dtmin),
    )
    statics = dict(
        reduction=reduction,
        solver=solver,
        coordinates=coordinates,
        observables=dict(observables or {}),
        max_steps=max_steps,
        escape_order=escape_order(net) if linear_escape else 0,
    )
    return (x, y, weights), arrays, statics


class FlowProblem(eqx.Module):
    """The loss of one seed's data as a function of the flat parameters $\\theta$ (as
    `ravel_net` lays them out), and $\\theta$ as the solver's state in `coordinates`."""

    net: TwoLayerNet
    x: Float[Array, "n d"]
    y: Float[Array, " n"]
    weights: Float[Array, " n"] | None
    reduction: Reduction = eqx.field(static=True)
    coordinates: AbstractCoordinates
    observables: dict[str, Callable]
    theta0: Float[Array, " P"]
    unravel: Callable[[Float[Array, " P"]], TwoLayerNet]
    layers: tuple[int, int] = eqx.field(static=True)

    def __init__(self, net, x, y, weights, *, reduction, coordinates, observables):
        self.net, self.x, self.y, self.weights = net, x, y, weights
        self.reduction = reduction
        self.coordinates = coordinates
        self.observables = observables
        self.theta0, self.unravel = ravel_net(net)
        self.layers = layer_sizes(net)

    def loss(self, theta: Float[Array, " P"]) -> Float[Array, ""]:
        return squared_loss(self.unravel(theta), self.x, self.y, self.weights, self.reduction)

    def gradient(self, theta: Float[Array, " P"]) -> Float[Array, " P"]:
        return jax.grad(self.loss)(theta)

    @property
    def field(self) -> Callable:
        """The ODE right-hand side `f(t, state, args)`, $-\\nabla L$ in `coordinates`."""
        return self.coordinates.vector_field(self.gradient, self.layers)

    def to_state(self, theta: Float[Array, " P"]) -> PyTree[Array]:
        return self.coordinates.to_state(theta, self.layers)

    def to_params(self, state: PyTree[Array]) -> Float[Array, " P"]:
        return self.coordinates.to_params(state, self.layers)

    def observe(self, theta: Float[Array, " P"]) -> dict:
        """The record of a save time (see `gradflow._solution.observe`)."""
        return observe(theta, self.unravel, self.loss, self.observables)


def linear_escape(problem: FlowProblem, order: int, rtol, t1) -> LinearEscape | None:
    """The closed form of the linear phase, or `None` where there is none to jump
    (`order` 0, see `escape_order`)."""
    if not order:
        return None
    p = problem
    return LinearEscape(
        p.net, order, p.x, p.y, p.weights, p.reduction, p.gradient, p.unravel, rtol, t1
    )


def start(problem: FlowProblem, escape: LinearEscape | None, t1):
    """Where the solver takes over: `(t0, y0, time_unit)`, with `t0 > 0` where `escape`
    jumped the linear phase."""
    t0 = jnp.zeros_like(t1)
    theta0 = problem.theta0
    if escape is not None:
        t0 = escape.t_handover
        theta0 = jnp.where(t0 > 0, escape.params(t0), theta0)
    y0 = problem.to_state(theta0)
    # The initial time scale: 1 for a flow that starts slowly (σ(0) = 0, where ∇L ∝ θ
    # near 0), but as small as ε/‖∇L‖ when ∇L(0) ≠ 0 (σ(0) ≠ 0, e.g. sinc at ε = 1e-20,
    # whose outer layer leaves the origin at a relative rate 1e20). The first step and
    # `dtmin` are measured in it, so neither a fast start fails at the floor nor a slow
    # one pays for a tiny first step.
    rate = jnp.max(
        jnp.stack(
            [jnp.max(jnp.abs(v)) for v in jax.tree_util.tree_leaves(problem.field(t0, y0, None))]
        )
    )
    time_unit = jnp.where(jnp.isfinite(rate), 1 / jnp.maximum(rate, 1), 1)
    return t0, y0, time_unit


def stop_rules(
    problem: FlowProblem, loss_tol, stationarity_tol, switch_tol=None
) -> dict[str, Callable[[PyTree[Array]], Bool[Array, ""]]]:
    """`{name: rule(state)}` for the stop rules that are set; a run ends once one holds.
    Diffrax orders them (and so picks the first that holds) by name. `switch_tol` adds
    the end of a `TwoPhase` solver's explicit phase, `"switch"`, which sorts last: a
    run that meets a user's rule at the same step stops rather than switches."""

    def stationary(tol):
        def rule(state):
            theta = problem.to_params(state)
            gradient_norm = jnp.linalg.norm(problem.gradient(theta))
            return gradient_norm <= tol * jnp.linalg.norm(theta)

        return rule

    rules = {}
    if loss_tol is not None:
        rules["loss"] = lambda state: problem.loss(problem.to_params(state)) < loss_tol
    if stationarity_tol is not None:
        rules["stationary"] = stationary(stationarity_tol)
    if switch_tol is not None:
        rules["switch"] = stationary(switch_tol)
    return rules


def implicit_first_step(t_switch, t0, num_accepted_steps):
    """The first step of a `TwoPhase` solver's implicit phase: the explicit phase's mean
    accepted step, from its start `t0` to the switch."""
    accepted = jnp.maximum(num_accepted_steps, 1).astype(t_switch.dtype)
    return (t_switch - t0) / accepted


def is_okay(result: dfx.RESULTS) -> Bool[Array, ""]:
    """A run that reached `t1` or met a stop rule."""
    return (result == dfx.RESULTS.successful) | (result == dfx.RESULTS.event_occurred)


def finish(
    problem: FlowProblem,
    escape: LinearEscape | None,
    solver,
    ts,
    saved,
    *,
    t0,
    y,
    t_stop,
    result: dfx.RESULTS,
    event_mask: dict[str, Bool[Array, ""]],
    num_steps,
    num_accepted_steps,
    num_rejected_steps,
    implicit_steps=None,
) -> Solution:
    """The `Solution` from the solver's end: its state `y` at `t_stop`, its `result`,
    the `event_mask` of its stop rules and its step counts (of which `implicit_steps` in
    the second phase of a `TwoPhase` solver), and `saved`, the `observe` records at the
    save times `max(ts, t0)`."""
    if escape is not None:
        # Save times inside the jumped phase come from the closed form.
        early = jax.vmap(lambda t: problem.observe(escape.params(t)))(ts)
        saved = jax.tree_util.tree_map(
            lambda lin, ode: jnp.where(per_save(ts < t0, lin), lin, ode), early, saved
        )
    theta_end = problem.to_params(y)
    loss_end = problem.loss(theta_end)
    reached = ts <= t_stop
    saved = jax.tree_util.tree_map(lambda v: jnp.where(per_save(reached, v), v, jnp.nan), saved)

    status = jnp.where(
        is_okay(result),
        Status.SUCCESS,
        jnp.where(
            result == dfx.RESULTS.max_steps_reached,
            Status.MAX_STEPS_REACHED,
            Status.SOLVER_FAILURE,
        ),
    )
    finite = jnp.all(jnp.isfinite(theta_end)) & jnp.isfinite(loss_end)
    status = jnp.where(finite, status, Status.NONFINITE).astype(jnp.int32)

    stop_reason = jnp.asarray(StopReason.T1)
    event = result == dfx.RESULTS.event_occurred
    reasons = {"stationary": StopReason.STATIONARY, "loss": StopReason.LOSS_TOLERANCE}
    for name, reason in reasons.items():
        if name in event_mask:
            stop_reason = jnp.where(event & event_mask[name], reason, stop_reason)
    stop_reason = jnp.where(status == Status.SUCCESS, stop_reason, StopReason.FAILED)

    # +1: the evaluation that set `time_unit`; +1 more for the escape's defect probe.
    setup = 1 + (escape is not None)
    # (solver, its steps, whether it ran): one phase, or a `TwoPhase` solver's two.
    if isinstance(solver, TwoPhase):
        phases = [
            (solver.explicit, num_steps - implicit_steps, True),
            (solver.implicit, implicit_steps, implicit_steps > 0),
        ]
    else:
        phases = [(solver, num_steps, True)]
    counts = [evaluations_per_step(phase_solver) for phase_solver, _, _ in phases]
    if any(count is None for count in counts):
        num_evaluations = jnp.asarray(-1)
    else:
        num_evaluations = setup + sum(
            per_step * steps + jnp.where(ran, at_start, 0)
            for (per_step, at_start), (_, steps, ran) in zip(counts, phases)
        )
    return assemble(
        problem.unravel,
        theta_end,
        ts,
        saved,
        t_stop=t_stop,
        num_steps=num_steps,
        num_accepted_steps=num_accepted_steps,
        num_rejected_steps=num_rejected_steps,
        num_evaluations=num_evaluations,
        status=status,
        stop_reason=stop_reason.astype(jnp.int32),
    )


# The step counts of a solve, as Diffrax's `stats` and `Solution` name them.
STEP_COUNTS = ("num_steps", "num_accepted_steps", "num_rejected_steps")


def per_save(mask: Bool[Array, " T"], value: Array) -> Bool[Array, "T ..."]:
    """`mask` over the save times, shaped to broadcast against `value`, saved at each."""
    return mask.reshape((-1,) + (1,) * (value.ndim - 1))


# Measured on W1-like problems (`benchmarks/late_phase.py`, `benchmarks/w1.py`,
# `benchmarks/RESULTS.md`): with P = 6 parameters Rodas5P takes 1.5-2x Tsit5's time to
# t = 200 but 13x less to t = 1e4, and is the only one of the two that reaches t = 1e8;
# `TwoPhase` (Tsit5, then Rodas5P once the flow turns stiff) keeps Rodas5P's step counts
# and accuracy at Tsit5's cost on the early phase. With P = 24 Rodas5P is 2.4x slower to
# t = 400 and 4.5x faster to t = 1e4. Past a few dozen parameters the dense P x P
# factorisation per step (batched LU on XLA:CPU) costs more than the stiff phase saves.
ROSENBROCK_MAX_PARAMS = 32


def default_solver(net: TwoLayerNet) -> dfx.AbstractAdaptiveSolver | TwoPhase:
    """The solver of `solver=None`: `TwoPhase()` (Tsit5 through the escape and the fit,
    then the L-stable Rodas5P, which crosses the stiff late phase in a few hundred steps
    however long the horizon) for nets with at most `ROSENBROCK_MAX_PARAMS` parameters;
    `Tsit5` for larger ones."""
    return TwoPhase() if sum(layer_sizes(net)) <= ROSENBROCK_MAX_PARAMS else dfx.Tsit5()


def evaluations_per_step(solver) -> tuple[int, int] | None:
    """`(per step, at start)` vector-field evaluations of an explicit Runge–Kutta solver.

    FSAL methods reuse their last stage as the next step's first, so only the first
    step evaluates $f(y_0)$ as well. Diffrax (0.7) spends no evaluation on choosing
    `dt0`: its initial-step heuristic is skipped for the direction-wrapped terms of
    `diffeqsolve`, which starts from `dt0 = 0.01`. Measured with a counting vector
    field in `tests/test_flow_properties.py`; the count is exact unless the very first
    step of an FSAL method is rejected, each such retry evaluating $f(y_0)$ once more.
    """
    tableau = getattr(solver, "tableau", None)
    if tableau is None or not hasattr(tableau, "c"):
        return None
    stages = len(tableau.c) + 1
    return stages - int(tableau.fsal), int(tableau.fsal)
