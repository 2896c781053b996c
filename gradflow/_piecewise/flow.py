"""The exact flow of a piecewise-smooth two-layer net: events located on the dense output
of a Runge–Kutta solver, and the pattern updated at each.

One `lax.while_loop`, laid out as Diffrax's `_integrate.py`: each iteration attempts a
solver step on the current activation pattern (`_attempt`); a step that ends with entries
outside their piece has an event inside it, which the same iteration locates on the
step's dense output (`_locate`, an inner loop) and applies (`_apply_event`): a crossing, a
pin or a release. The flow then stands at the event, and the next iteration steps on from
there: past an event the field has changed, so the rest of the step (and any later events
in it) belong to the old field and are discarded. Every piece is a module-level function
of a `_Context`, what no iteration changes, and of the parts of the carry `_Loop` it
touches:

- `_Position`: the flow's state at `t` on its pattern, the margins there, and the
  solver's state and next step size. Moved by an accepted step or an event.
- `_Output`: the event log and the saves at `ts`.
- `_Counts`: solver steps, vector-field evaluations, and the status.

Within an iteration, `_Step` is the step just attempted (its dense output and the entries
that left their piece in it) and `_Bracket` the bracket of its first event.

What an event costs (issue 12, `benchmarks/relu_scaling.py`): the step that finds it (six
field evaluations with Tsit5), about ten refinements of the margins of the few neurons
whose candidates come first to locate it (O(n) each, not the O(m·n) field), and at it one
field evaluation and, for a kink, one neuron's row on the kink's other side: a crossing's
new field, which is also the next step's first stage.
"""

from functools import partial

import diffrax as dfx
import equinox as eqx
import equinox.internal as eqxi
import jax
import jax.numpy as jnp
from jaxtyping import Array, ArrayLike, Bool, Float, Int, PyTree

from .._activation import AbstractActivation
from .._loss import Reduction, squared_loss
from .._misc import select
from .._network import TwoLayerNet
from .._options import flow_options, FlowOptions, Observables
from .._problem import time_unit as initial_time_unit
from .._result import evaluations_per_step as solver_evaluations_per_step
from .._solution import assemble, observe, Solution
from .._solver import Unrolled
from .._status import Status, StopReason
from .events import EventKind, EventLog
from .pattern import Breakplanes, breakplanes_of, initial_pieces, pin_kinks
from .sliding import PiecewiseField, State


def piecewise_flow(
    net: TwoLayerNet,
    x: Float[ArrayLike, "n d"],
    y: Float[ArrayLike, " n *k"],
    *,
    t1: float | Float[ArrayLike, ""],
    ts: Float[ArrayLike, " T"] | None = None,
    weights: Float[ArrayLike, " n"] | None = None,
    reduction: Reduction = "mean",
    rtol: float = 1e-10,
    solver: dfx.AbstractERK | Unrolled = dfx.Tsit5(),
    observables: Observables | None = None,
    max_steps: int = 100_000,
    max_events: int = 4096,
    dtmin: float = 1e-12,
    loss_tol: float | None = None,
    stationarity_tol: float | None = None,
) -> Solution:
    """The exact gradient flow of a two-layer net with a piecewise-smooth activation (ReLU,
    leaky ReLU, or any `AbstractActivation` listing its `kinks`), breakplanes included.

    Between events the activation pattern is fixed, the field is smooth and `solver` steps
    it with the Diffrax solver's own dense output. An event is a pre-activation
    $z_{ki} = w_k \\cdot x_i + b_k$ reaching a kink $c$ (its breakplane $\\{w_k \\cdot x + b_k
    = c\\}$ reaching the data point $x_i$), located to rounding error on the dense output. There
    the two one-sided fields decide what happens:

    - both move $z_{ki}$ the same way: a **crossing**; the pattern flips and the solver
      restarts;
    - both point into the breakplane: a **pin**; the flow *slides* along it with the Filippov
      field $f^- + \\alpha (f^+ - f^-)$, $\\alpha \\in [0, 1]$ chosen to keep $z_{ki} = c$ (for
      several pins of one neuron, a small linear system; see `PiecewiseField`);
    - a pin is **released** when its $\\alpha$ leaves $[0, 1]$, to the side whose field then
      points away.

    This is the flow that gradient descent with a small step follows on average, where a
    smooth adaptive solver chatters across the breakplane with ever smaller steps.

    **Arguments:** as `gradient_flow`, and

    - `rtol`: local error per step relative to $\\|\\theta\\|$.
    - `solver`: an explicit Runge–Kutta Diffrax solver with an error estimate and dense
      output (`Tsit5()`, `Dopri5()`, `Dopri8()`, `Bosh3()`). Where events cut nearly every
      step (thousands of points, tens of neurons: `benchmarks/relu_scaling.py`) each event
      costs one step, and `Bosh3()` (three new stages, not six) is the cheaper choice;
      where long stretches pass without events, Tsit5's higher order takes fewer steps.
    - `max_steps`: solver step budget (accepted plus rejected; locating an event costs no
      steps); a run that exhausts it ends with status `MAX_STEPS_REACHED` and its last state.
    - `max_events`: length of the event log. The flow itself is not limited: events past it
      are counted but not logged (`gradient_flow` warns when that happens).
    - `dtmin`: the smallest step in units of the initial time scale; a run whose steps shrink
      below it ends with status `SOLVER_FAILURE` (`NONFINITE` if the state turned NaN).
    - `loss_tol`, `stationarity_tol`: stop once the loss is below `loss_tol`, or once the
      Filippov velocity (the gradient on the current pattern, sliding along held pins) has
      $\\|\\dot\\theta\\| \\le$ `stationarity_tol`$\\cdot\\|\\theta\\|$; checked after every
      step that moves the flow without an event. The run ends there with
      `Solution.stop_reason` saying which; saves after it are NaN.

    **Returns:** a `Solution`. Besides the requested `observables` (at `ts`), its
    `observables` hold `"num_pinned"` and `"num_crossings"` at `ts` (pins held; crossings so
    far) and `"events"`, an `EventLog` of the whole run (not per save time).
    """
    data, options = flow_options(
        net, x, y, weights, t1=t1, ts=ts, reduction=reduction, rtol=rtol, solver=solver,
        observables=observables, max_steps=max_steps, max_events=max_events, dtmin=dtmin,
        kinks="exact", loss_tol=loss_tol, stationarity_tol=stationarity_tol,
    )  # fmt: skip
    if not options.piecewise:
        breakplanes_of(net.activation)  # says that a smooth activation has no kinks
    return solve_piecewise(net, data, options)


def solve_piecewise(net: TwoLayerNet, data: tuple, options: FlowOptions) -> Solution:
    """`piecewise_flow` on checked data and options (what `gradient_flow` runs for an
    activation with kinks)."""
    return _piecewise_flow(net, data, options, breakplanes_of(net.activation))


# --------------------------------------------------------------------------------------
# The loop's carry, in the parts that change together.
# --------------------------------------------------------------------------------------


class _Position(eqx.Module):
    """Where the flow is: its state at `t` on the pattern `(pieces, pins)`, the margins
    there, and the solver's state and next step size."""

    t: Float[Array, ""]
    state: State
    pieces: Int[Array, "m n"]
    pins: Int[Array, "m D"]  # the data point each of a neuron's D pins holds; -1 if unused
    pin_record: Int[Array, "m D"]  # index in the event log of each pin's PIN event
    pin_since: Float[Array, "m D"]  # when each pin began (inf if unused)
    h_free: Float[Array, "m n"]  # margins at `state`
    h_pin: Float[Array, "m D"]
    solver_state: PyTree
    made_jump: Bool[Array, ""]  # the field changed at `t`: no first-same-as-last reuse
    dt: Float[Array, ""]
    # The last event, at the start of its step, changed nothing: an entry on its kink
    # whose one-sided rates there say it turns back, while the step carries it out — a
    # tangency (both rates ~ 0, e.g. at a fitted net's rest point), decided at a higher
    # order than the rates see. Left alone, the same event recurs at every step and the
    # flow stands still; instead the next step carries such entries past their kink, and
    # the event after it is decided where their rates are no longer tangent.
    grazing: Bool[Array, ""]


class _Step(eqx.Module):
    """A step attempted from `t0` to `t1`: its dense output, and the entries that ended it
    outside their piece (one of which has the step's first event)."""

    t0: Float[Array, ""]
    t1: Float[Array, ""]
    dense: PyTree
    candidates_free: Bool[Array, "m n"]
    candidates_pin: Bool[Array, "m D"]
    h_free_end: Float[Array, "m n"]  # the free margins at `t1`
    h_end: Float[Array, ""]  # the smallest candidate margin at `t1` (< 0 if any)


class _Bracket(eqx.Module):
    """`[lo, hi]` holds the first event of the step: the smallest candidate margin is ≥ 0
    at `lo` and < 0 at `hi`. The secant iterates `(t_last, h_last)` (the latest) and
    `(t_before, h_before)` need not be its ends (see `_refine`)."""

    lo: Float[Array, ""]
    hi: Float[Array, ""]
    t_before: Float[Array, ""]
    h_before: Float[Array, ""]
    t_last: Float[Array, ""]
    h_last: Float[Array, ""]
    stalls: Int[Array, ""]  # updates since the bracket last halved


class _Output(eqx.Module):
    """What the run hands back: the event log, and the saves at `ts` so far."""

    log: EventLog
    save_index: Int[Array, ""]  # the next save time to record
    saved: PyTree


class _Counts(eqx.Module):
    """Solver steps (an event costs none), vector-field evaluations, the status, and the
    stop rule that ended the run (`StopReason.T1` while none has)."""

    num_steps: Int[Array, ""]
    num_accepted_steps: Int[Array, ""]
    num_evaluations: Int[Array, ""]
    status: Int[Array, ""]
    stop_reason: Int[Array, ""]


class _Loop(eqx.Module):
    """The carry of the main loop: one solver step per iteration, and the event inside it,
    if any."""

    position: _Position
    output: _Output
    counts: _Counts


class _Context(eqx.Module):
    """What every piece of the loop reads and none changes.

    - `field`: the vector field on a pattern, with the data $\\tilde x_i$, the normalised
      sample weights and the activation's `breakplanes`.
    - `data`: `(x, y, weights)` as given, for the loss.
    - `activation`, `dim`, `bias`: how a state $(a, \\tilde W)$ is a `TwoLayerNet`.
    - `options`: `t1`, `ts`, `rtol`, the solver, observables, reduction, `max_steps`.
    - `time_unit`: the initial time scale; `dtmin` (absolute) is measured in it.
    """

    field: PiecewiseField
    data: tuple
    options: FlowOptions
    time_unit: Float[Array, ""]
    dtmin: Float[Array, ""]
    input_scale: Float[Array, ""]  # max_i ‖x̃_i‖
    activation: AbstractActivation = eqx.field(static=True)
    dim: int = eqx.field(static=True)
    bias: bool = eqx.field(static=True)

    @property
    def breakplanes(self) -> Breakplanes:
        return self.field.breakplanes

    @property
    def solver(self):
        return self.options.solver

    @property
    def term(self) -> dfx.ODETerm:
        return dfx.ODETerm(self.field)

    @property
    def t1(self) -> Float[Array, ""]:
        return self.options.t1

    @property
    def pins_per_neuron(self) -> int:
        # At most dim(x̃) affinely independent data points lie on one breakplane.
        return min(self.field.inputs.shape)

    @property
    def error_exponent(self) -> float:
        return -1.0 / self.solver.order(self.term)

    @property
    def evaluations_per_step(self) -> int:
        # The solver's stages, and one evaluation of the margins at the step's end.
        return solver_evaluations_per_step(self.solver)[0] + 1

    def to_net(self, state: State) -> TwoLayerNet:
        a, W = state
        d = self.dim
        return TwoLayerNet(a, W[:, :d], W[:, d] if self.bias else None, self.activation)

    def loss(self, state: State) -> Float[Array, ""]:
        x, y, weights = self.data
        return squared_loss(self.to_net(state), x, y, weights, self.options.reduction)

    def snapshot(self, state: State, pins, log: EventLog) -> dict:
        """What is saved at a save time: `observe`'s record, the pins held and the
        crossings so far."""
        record = observe(state, self.to_net, self.loss, self.options.observables)
        record["observables"] = dict(
            record["observables"],
            # Each pinned entry holds one pin: counted on the (m, D) pins, not the pattern.
            num_pinned=jnp.sum(pins >= 0).astype(jnp.int32),
            num_crossings=log.num_crossings,
        )
        return record

    def interpolation(self, step: _Step):
        return self.solver.interpolation_cls(t0=step.t0, t1=step.t1, **step.dense)


# --------------------------------------------------------------------------------------
# The run: start, loop, finish.
# --------------------------------------------------------------------------------------


@eqx.filter_jit
def _piecewise_flow(
    net: TwoLayerNet, data: tuple, options: FlowOptions, breakplanes: Breakplanes
) -> Solution:
    ctx, position = _start(net, data, options, breakplanes)
    loop = jax.lax.while_loop(
        partial(_running, ctx), partial(_iteration, ctx), _initial_loop(ctx, position)
    )
    return _finish(ctx, loop)


def _start(net, data, options, breakplanes) -> tuple[_Context, _Position]:
    """The run's context, and the flow's position at t = 0: the pattern of the initial
    pre-activations, no pins, and the solver initialised there."""
    x, y, weights = data
    dtype = x.dtype
    n, d = x.shape
    bias = net.b is not None
    inputs = jnp.concatenate([x, jnp.ones((n, 1), dtype)], axis=1) if bias else x
    omega = jnp.ones((n,), dtype) if weights is None else weights
    normaliser = jnp.sum(omega) if options.reduction == "mean" else jnp.ones((), dtype)
    field = PiecewiseField(inputs, y, omega / normaliser, breakplanes)

    state = (net.a, jnp.concatenate([net.W, net.b[:, None]], axis=1) if bias else net.W)
    pieces = initial_pieces(breakplanes, state[1] @ inputs.T)
    no_pins = jnp.full((net.width, min(n, inputs.shape[1])), -1, jnp.int32)
    velocity, alpha, z = field.evaluate(state, pieces, no_pins)
    h_free, h_pin = field.margins(z, alpha, pieces, no_pins)
    # The initial time scale, as in `gradient_flow`: the first step and `dtmin` are
    # measured in it. Its state is θ itself (no scale-free coordinates), so the rate is
    # made relative here.
    time_unit = initial_time_unit(_norm(velocity) / _norm(state))
    ctx = _Context(
        field=field,
        data=data,
        options=options,
        time_unit=time_unit,
        dtmin=options.dtmin * time_unit,
        input_scale=jnp.max(jnp.linalg.norm(inputs, axis=1)),
        activation=net.activation,
        dim=d,
        bias=bias,
    )
    t0 = jnp.zeros_like(ctx.t1)
    position = _Position(
        t=t0,
        state=state,
        pieces=pieces,
        pins=no_pins,
        pin_record=no_pins,
        pin_since=jnp.full(no_pins.shape, jnp.inf, dtype),
        h_free=h_free,
        h_pin=h_pin,
        solver_state=ctx.solver.init(ctx.term, t0, ctx.t1, state, (pieces, no_pins)),
        made_jump=jnp.asarray(False),
        dt=jnp.minimum(0.01 * time_unit, ctx.t1),
        grazing=jnp.asarray(False),
    )
    return ctx, position


def _initial_loop(ctx: _Context, position: _Position) -> _Loop:
    """The carry at t = 0: no step taken, the save at t = 0 (if asked) made."""
    p = position
    zero = jnp.zeros_like(p.t)
    log = EventLog.empty(ctx.options.max_events, zero.dtype)
    template = jax.eval_shape(ctx.snapshot, p.state, p.pins, log)
    unsaved = jax.tree_util.tree_map(
        lambda v: jnp.full(
            (ctx.options.ts.shape[0],) + v.shape,
            jnp.nan if jnp.issubdtype(v.dtype, jnp.floating) else -1,
            v.dtype,
        ),
        template,
    )
    output = _Output(log, save_index=jnp.zeros((), jnp.int32), saved=unsaved)
    output = _save_until(ctx, output, zero, lambda t: p.state, p.pins)
    counts = _Counts(
        num_steps=jnp.zeros((), jnp.int32),
        num_accepted_steps=jnp.zeros((), jnp.int32),
        num_evaluations=jnp.ones((), jnp.int32),  # the field at t = 0, in `_start`
        status=jnp.asarray(Status.SUCCESS, jnp.int32),
        stop_reason=jnp.asarray(StopReason.T1, jnp.int32),
    )
    return _Loop(p, output, counts)


def _running(ctx: _Context, c: _Loop) -> Bool[Array, ""]:
    return (
        (c.position.t < ctx.t1)
        & (c.counts.status == Status.SUCCESS)
        & (c.counts.stop_reason == StopReason.T1)
        & (c.counts.num_steps < ctx.options.max_steps)
    )


def _iteration(ctx: _Context, c: _Loop) -> _Loop:
    """A solver step, and the first event inside it, located and applied."""
    c, step, event = _attempt(ctx, c)
    return jax.lax.cond(event, partial(_handle_event, ctx, step), lambda c: c, c)


def _handle_event(ctx: _Context, step: _Step, c: _Loop) -> _Loop:
    """The first event inside `step`, located and applied."""
    t_event, evaluations = _locate(ctx, c.position, step)
    c = eqx.tree_at(lambda c: c.counts.num_evaluations, c, c.counts.num_evaluations + evaluations)
    return _apply_event(ctx, step, t_event, c)


def _converged(ctx: _Context, bracket: _Bracket) -> Bool[Array, ""]:
    """The bracket is down to a few ulps of the event time."""
    return bracket.hi - bracket.lo <= _resolution(ctx, bracket)


def _resolution(ctx: _Context, bracket: _Bracket) -> Float[Array, ""]:
    eps = jnp.finfo(ctx.field.inputs.dtype).eps
    return 16 * eps * jnp.maximum(jnp.abs(bracket.hi), ctx.time_unit)


def _finish(ctx: _Context, c: _Loop) -> Solution:
    p, counts = c.position, c.counts
    stopped = counts.stop_reason != StopReason.T1
    status = jnp.where(
        (counts.status == Status.SUCCESS) & (p.t < ctx.t1) & ~stopped,
        Status.MAX_STEPS_REACHED,
        counts.status,
    )
    finite = _all_finite(p.state) & jnp.isfinite(ctx.loss(p.state))
    status = jnp.where(finite, status, Status.NONFINITE).astype(jnp.int32)
    saved = c.output.saved
    saved = dict(saved, observables=dict(saved["observables"], events=c.output.log))
    return assemble(
        ctx.to_net,
        p.state,
        ctx.options.ts,
        saved,
        loss_of=ctx.loss,
        # The Filippov velocity of the current pattern and pins: zero at a pinned
        # stationary point, where the loss has no gradient.
        velocity=ctx.field.evaluate(p.state, p.pieces, p.pins)[0],
        t_stop=p.t,
        num_steps=counts.num_steps,
        num_accepted_steps=counts.num_accepted_steps,
        num_rejected_steps=counts.num_steps - counts.num_accepted_steps,
        num_evaluations=counts.num_evaluations,
        phase_steps=counts.num_steps[None],
        status=status,
        stop_reason=jnp.where(
            status == Status.SUCCESS, counts.stop_reason, StopReason.FAILED
        ).astype(jnp.int32),
    )


# --------------------------------------------------------------------------------------
# The pieces of an iteration.
# --------------------------------------------------------------------------------------


def _attempt(ctx: _Context, c: _Loop) -> tuple[_Loop, _Step, Bool[Array, ""]]:
    """One solver step on the current pattern, and a check for events at its end.

    A step that ends with every entry inside its piece moves the flow on, saving on the
    way; one that ends with some outside moves nothing: it holds an event, which
    `_handle_event` locates on its dense output.

    **Returns:** the carry after the step, the step, and whether it holds an event."""
    p = c.position
    t_next = jnp.minimum(p.t + p.dt, ctx.t1)
    y1, y_error, dense, solver_state, _ = ctx.solver.step(
        ctx.term, p.t, t_next, p.state, (p.pieces, p.pins), p.solver_state, p.made_jump
    )
    finite, accept, dt = _control(ctx, p.t, t_next, p.state, y1, y_error)
    h_free1, h_pin1 = _end_margins(ctx.field, y1, p.pieces, p.pins)
    # After an event that changed nothing at the step's start (see `_Position.grazing`),
    # the entries on their kink there are stepped past it once.
    on_kink = p.grazing & (p.h_free <= _rounding(ctx, p.state))
    candidates_free, candidates_pin = (h_free1 < 0) & ~on_kink, h_pin1 < 0
    step = _Step(
        p.t,
        t_next,
        dense,
        candidates_free=candidates_free,
        candidates_pin=candidates_pin,
        h_free_end=h_free1,
        h_end=_first_margin(h_free1, h_pin1, candidates_free, candidates_pin),
    )
    event = accept & (jnp.any(candidates_free) | jnp.any(candidates_pin))
    smooth = accept & ~event
    output = _save_until(
        ctx,
        c.output,
        jnp.where(smooth, t_next, -jnp.inf),
        ctx.interpolation(step).evaluate,
        p.pins,
    )
    position = _Position(
        t=jnp.where(smooth, t_next, p.t),
        state=select(smooth, y1, p.state),
        pieces=p.pieces,
        pins=p.pins,
        pin_record=p.pin_record,
        pin_since=p.pin_since,
        h_free=jnp.where(smooth, h_free1, p.h_free),
        h_pin=jnp.where(smooth, h_pin1, p.h_pin),
        solver_state=select(accept, solver_state, p.solver_state),
        made_jump=jnp.where(accept, ~smooth, p.made_jump),
        dt=dt,
        grazing=p.grazing & ~smooth,
    )
    failed = ~accept & (dt < ctx.dtmin)
    stop_reason, stop_evaluations = _stop_rules(ctx, y1, p.pieces, p.pins, solver_state)
    counts = _Counts(
        num_steps=c.counts.num_steps + 1,
        num_accepted_steps=c.counts.num_accepted_steps + accept.astype(jnp.int32),
        num_evaluations=c.counts.num_evaluations
        + ctx.evaluations_per_step
        + smooth.astype(jnp.int32) * stop_evaluations,
        status=jnp.where(
            failed, jnp.where(finite, Status.SOLVER_FAILURE, Status.NONFINITE), c.counts.status
        ).astype(jnp.int32),
        stop_reason=jnp.where(smooth, stop_reason, c.counts.stop_reason).astype(jnp.int32),
    )
    return _Loop(position, output, counts), step, event


def _stop_rules(ctx: _Context, state: State, pieces, pins, solver_state):
    """The user's stop rules at the end of a step that moved the flow smoothly to `state`:
    `StopReason.LOSS_TOLERANCE` if the loss is below `loss_tol`, else
    `StopReason.STATIONARY` if the Filippov velocity (the gradient on the pattern, with
    its pins' sliding) has $\\|\\dot\\theta\\| \\le$ `stationarity_tol`$\\cdot\\|\\theta\\|$, else
    `StopReason.T1` (none holds). Checked after smooth steps only: a run that converges ends
    with a run of them, on the pattern it converges on.

    **Returns:** the reason, and the field evaluations it cost (none with an FSAL solver,
    whose state after the step is the field at its end)."""
    options = ctx.options
    reason = jnp.asarray(StopReason.T1, jnp.int32)
    evaluations = 0
    if options.stationarity_tol is not None:
        velocity = _last_stage(ctx.solver, solver_state)
        if velocity is None:
            velocity = ctx.field.evaluate(state, pieces, pins)[0]
            evaluations = 1
        stationary = _norm(velocity) <= options.stationarity_tol * _norm(state)
        reason = jnp.where(stationary, StopReason.STATIONARY, reason)
    if options.loss_tol is not None:
        reason = jnp.where(ctx.loss(state) < options.loss_tol, StopReason.LOSS_TOLERANCE, reason)
    return reason.astype(jnp.int32), evaluations


def _rounding(ctx: _Context, state: State) -> Float[Array, "m 1"]:
    """How far from its kink rounding alone may put a pre-activation $z_{ki} = \\tilde w_k
    \\cdot \\tilde x_i$: a few ulps of $\\|\\tilde w_k\\| \\max_i \\|\\tilde x_i\\|$, its
    largest possible size."""
    eps = jnp.finfo(ctx.field.inputs.dtype).eps
    return 16 * eps * jnp.linalg.norm(state[1], axis=1, keepdims=True) * ctx.input_scale


def _control(ctx: _Context, t0, t1, y0: State, y1: State, y_error: State):
    """The step-size control of the step from `(t0, y0)` to `(t1, y1)`: its local error
    relative to `rtol`·‖θ‖ (the larger of its two ends), whether it is accepted, and the
    next step size.

    **Returns:** `(finite, accept, next_dt)`; a step with a non-finite error or state is
    rejected and the next one is 0.2 times as long."""
    error = _norm(y_error) / (ctx.options.rtol * jnp.maximum(_norm(y0), _norm(y1)))
    finite = jnp.isfinite(error) & _all_finite(y1)
    accept = finite & (error <= 1)
    factor = jnp.where(finite, jnp.clip(0.9 * error**ctx.error_exponent, 0.2, 5.0), 0.2)
    return finite, accept, (t1 - t0) * factor


# The neurons whose candidate entries are located on their own pre-activations: those
# with the entries whose margins, taken as linear in time across the step, reach their kink
# first. A refinement then costs O(this · n · e) flops instead of the O(m·n·e) of all
# pre-activations (in the early phase of `benchmarks/relu_scaling.py` a step holds tens to
# hundreds of candidates at n = 2048, and only its first event counts: the field changes
# there).
_GATHERED_NEURONS = 4


def _locate(ctx: _Context, p: _Position, step: _Step) -> tuple[Float[Array, ""], Int[Array, ""]]:
    """The time of the first event inside `step`: the bracket `[t0, t1]` of its smallest
    candidate margin, narrowed by `_refine` on the step's dense output until `_converged`.

    The margin narrowed is the field's own only when a pin is among the candidates (its
    margin is $\\alpha$, which needs the field). Otherwise it is that of the gathered
    candidates (`_gathered_margin`), checked at the end against every candidate's: if one
    was already past its kink at the bracket's lower end, the event is located again on
    all of them (their pre-activations, not the field).

    **Returns:** the event time (the bracket's upper end, where the margin is < 0) and
    the number of field evaluations spent."""
    interpolation = ctx.interpolation(step)
    h_lo = _first_margin(p.h_free, p.h_pin, step.candidates_free, step.candidates_pin)
    start = _Bracket(
        lo=step.t0,
        # An entry already on the wrong side at the start (h_lo ≤ 0) has its event now.
        hi=jnp.where(h_lo <= 0, step.t0, step.t1),
        t_before=step.t0,
        h_before=jnp.maximum(h_lo, 0),
        t_last=step.t1,
        h_last=step.h_end,
        stalls=jnp.zeros((), jnp.int32),
    )

    def narrow(margin, evaluations_each, bracket=start):
        def body(carry):
            b, evaluations = carry
            return _refine(b, margin, _resolution(ctx, b)), evaluations + evaluations_each

        carry = (bracket, jnp.zeros((), jnp.int32))
        return jax.lax.while_loop(lambda c: ~_converged(ctx, c[0]), body, carry)

    def on_field(t):
        h_free, h_pin = _margins(ctx.field, interpolation.evaluate(t), p.pieces, p.pins)
        return _first_margin(h_free, h_pin, step.candidates_free, step.candidates_pin)

    def on_candidates(t):
        z = interpolation.evaluate(t)[1] @ ctx.field.inputs.T
        h_free = ctx.breakplanes.margin(z, p.pieces)
        return jnp.min(jnp.where(step.candidates_free, h_free, jnp.inf))

    def gathered():
        margin, (h0, h1) = _gathered_margin(ctx, p, step, interpolation)
        # The first secant step is the linear estimate of the entry that comes first.
        first = eqx.tree_at(lambda b: (b.h_before, b.h_last), start, (jnp.maximum(h0, 0), h1))
        located = narrow(margin, 0, first)
        missed = on_candidates(located[0].lo) < 0
        return jax.lax.cond(
            eqxi.unvmap_any(missed), lambda: narrow(on_candidates, 0), lambda: located
        )

    # Unbatched: under `vmap` the whole field is used only when some seed needs it (it is
    # right for every seed), not evaluated for all at every refinement.
    b, evaluations = jax.lax.cond(
        eqxi.unvmap_any(jnp.any(step.candidates_pin)), lambda: narrow(on_field, 1), gathered
    )
    return b.hi, evaluations


def _gathered_margin(ctx: _Context, p: _Position, step: _Step, interpolation):
    """The smallest margin among the free candidates of the `_GATHERED_NEURONS` neurons
    whose candidates reach their kink first on a linear estimate, as a function of time:
    from their own pre-activations $z_{ki} = \\tilde w_k(t) \\cdot \\tilde x_i$ (the same
    values as the field's margins); and the margins at the step's ends of the entry that
    comes first on that estimate."""
    m, _ = p.pieces.shape
    h0, h1 = p.h_free, step.h_free_end
    fraction = jnp.where(step.candidates_free, h0 / (h0 - h1), jnp.inf)
    _, neurons = jax.lax.top_k(-jnp.min(fraction, axis=1), min(_GATHERED_NEURONS, m))
    k = neurons[0]
    i = jnp.argmin(fraction[k])
    used, piece = step.candidates_free[neurons], p.pieces[neurons]
    inputs = ctx.field.inputs

    def margin(t):
        _, W = interpolation.evaluate(t)
        z = W[neurons] @ inputs.T
        return jnp.min(jnp.where(used, ctx.breakplanes.margin(z, piece), jnp.inf))

    return margin, (h0[k, i], h1[k, i])


def _refine(b: _Bracket, margin, resolution) -> _Bracket:
    """One update of the event bracket on the function `margin` of time: a secant step
    through the last two iterates, safeguarded by the bracket.

    - The secant runs through the iterates, not the bracket's ends: regula falsi (and
      Illinois) approach the root from one side while the far end stays put, and the
      bracket then closes by bisections only (about 25 updates per event on
      `benchmarks/relu_scaling.py`).
    - A secant step shorter than half the `resolution` (the converged width) is lengthened
      to it, so once the root is found the next point lands past it and closes the
      bracket (Dekker's tolerance step).
    - A point outside the bracket, or a bracket that has not halved in three updates,
      falls back to bisection, so the bracket at least halves every four updates.
    """
    width = b.hi - b.lo
    secant = b.t_last - b.h_last * (b.t_last - b.t_before) / (b.h_last - b.h_before)
    step = secant - b.t_last
    secant = b.t_last + jnp.where(
        jnp.abs(step) < 0.5 * resolution, jnp.where(step < 0, -0.5, 0.5) * resolution, step
    )
    inside = jnp.isfinite(secant) & (secant > b.lo) & (secant < b.hi)
    t_mid = jnp.where(inside & (b.stalls < 3), secant, b.lo + 0.5 * width)
    t_mid = jnp.clip(t_mid, b.lo + 0.25 * resolution, b.hi - 0.25 * resolution)
    h_mid = margin(t_mid)
    crossed = h_mid < 0
    lo = jnp.where(crossed, b.lo, t_mid)
    hi = jnp.where(crossed, t_mid, b.hi)
    halved = hi - lo <= 0.5 * width
    return _Bracket(
        lo=lo,
        hi=hi,
        t_before=b.t_last,
        h_before=b.h_last,
        t_last=t_mid,
        h_last=h_mid,
        stalls=jnp.where(halved, 0, b.stalls + 1).astype(jnp.int32),
    )


class _Outcome(eqx.Module):
    """What an event did: the new state and pattern, the log, whether a pin was wanted
    but neuron k had none unused, and, for a crossing, the field on the new pattern there
    (`velocity`, `alpha`), which is the next step's first stage."""

    state: State
    pieces: Int[Array, "m n"]
    pins: Int[Array, "m D"]
    pin_record: Int[Array, "m D"]
    pin_since: Float[Array, "m D"]
    log: EventLog
    out_of_pins: Bool[Array, ""]
    crossed: Bool[Array, ""]
    changed: Bool[Array, ""]  # the pattern changed (not an entry turned back)
    velocity: State
    alpha: Float[Array, "m D"]


def _apply_event(ctx: _Context, step: _Step, t_event, c: _Loop) -> _Loop:
    """At the located time `t_event`: save up to it, decide crossing, pin or release,
    update the pattern, log it, and restart the solver there (keeping its first stage
    after a crossing)."""
    p = c.position
    state_at = ctx.interpolation(step).evaluate
    output = _save_until(ctx, c.output, t_event, state_at, p.pins)
    state = state_at(t_event)
    velocity, alpha, z, error = ctx.field.evaluate_with_error(state, p.pieces, p.pins)
    h_free, h_pin = ctx.field.margins(z, alpha, p.pieces, p.pins)
    entry = _argmin_entry(jnp.where(step.candidates_free, h_free, jnp.inf))
    # With no free candidate `entry` is (0, 0), whatever its margin: it must not compete
    # with the pins (it did, and a non-candidate "turned back" at every step from then on).
    h_first = jnp.where(jnp.any(step.candidates_free), h_free[entry], jnp.inf)
    h_pin_candidates = jnp.where(step.candidates_pin, h_pin, jnp.inf)
    # The first event is a free entry reaching a kink unless a pin's α left [0, 1] first.
    at_kink = (h_first < 0) | (h_first <= jnp.min(h_pin_candidates))
    out = jax.lax.cond(
        at_kink,
        lambda: _reach_kink(ctx, p, output.log, t_event, state, velocity, alpha, z, error, entry),
        lambda: _release(ctx, p, output.log, t_event, state, velocity, alpha, h_pin_candidates),
    )
    # After a crossing the state is unchanged and the field on the new pattern is known:
    # its margins differ only at the entry that crossed, and an FSAL solver's first stage
    # is that field.
    h_free, h_pin = jax.lax.cond(
        eqxi.unvmap_all(out.crossed),
        lambda: _crossed_margins(ctx.field, z, h_free, entry, out),
        lambda: _margins(ctx.field, out.state, out.pieces, out.pins),
    )
    first_stage = _first_stage(ctx.solver, p.solver_state, out.velocity)
    if first_stage is None:
        solver_state, made_jump = p.solver_state, jnp.asarray(True)
    else:
        solver_state = select(out.crossed, first_stage, p.solver_state)
        made_jump = ~out.crossed
    position = _Position(
        t=t_event,
        state=out.state,
        pieces=out.pieces,
        pins=out.pins,
        pin_record=out.pin_record,
        pin_since=out.pin_since,
        h_free=h_free,
        h_pin=h_pin,
        solver_state=solver_state,
        made_jump=made_jump,
        dt=p.dt,
        grazing=(t_event <= step.t0) & ~out.changed,
    )
    # The field at the event (the other side's at a kink costs one neuron's row); when
    # not a crossing, the margins on the new pattern and the solver's first stage there.
    evaluations = 1 + 2 * (~out.crossed).astype(jnp.int32)
    counts = eqx.tree_at(
        lambda k: (k.num_evaluations, k.status),
        c.counts,
        (
            c.counts.num_evaluations + evaluations,
            jnp.where(out.out_of_pins, Status.SOLVER_FAILURE, c.counts.status).astype(jnp.int32),
        ),
    )
    output = eqx.tree_at(lambda o: o.log, output, out.log)
    return _Loop(position, output, counts)


def _crossed_margins(field: PiecewiseField, z, h_free, entry, out: "_Outcome"):
    """The margins after a crossing of `entry` (or an entry that turned back), from those
    before it, `h_free` at the same state: only that entry's piece changed, and neuron k's
    pins' α."""
    k, i = entry
    h_ki = field.breakplanes.margin(z[k, i], out.pieces[k, i])
    return h_free.at[k, i].set(h_ki), field.pin_margins(out.alpha, out.pins)


def _first_stage(solver, solver_state, velocity):
    """The state of an FSAL `solver` whose next step starts where the field is `velocity`,
    or None for a solver that carries no first stage."""
    f0 = _last_stage(solver, solver_state)
    if f0 is None or jax.tree_util.tree_structure(f0) != jax.tree_util.tree_structure(velocity):
        return None
    if isinstance(solver, Unrolled):
        return velocity
    first_step, _ = solver_state
    return jnp.zeros_like(first_step), velocity


def _last_stage(solver, solver_state):
    """The field at the end of an accepted step, as an FSAL `solver` keeps it for the next
    step's first stage; None for a solver that does not."""
    tableau = getattr(solver, "tableau", None)
    if tableau is None or not tableau.fsal or solver_state is None:
        return None
    if isinstance(solver, Unrolled):
        return solver_state
    _, f0 = solver_state  # Diffrax's Runge–Kutta state (diffrax 0.7, `_SolverState`)
    return f0


def _reach_kink(
    ctx: _Context, p: _Position, log: EventLog, t_event, state, velocity, alpha, z, error, entry
):
    """The free entry $z_{ki}$ (`entry`, the candidate with the smallest margin) has reached
    a kink at `t_event`:
    it slides (taking neuron k's first unused pin), crosses, or turns back,
    as the two one-sided fields there say: `velocity` (with `alpha`, `z` and the residuals
    `error`) on its side, the pattern `p`'s, and the field with $z_{ki}$ on the other side
    of the kink, the other pins of neuron k still held. The two differ in neuron k's
    $\\dot{\\tilde w}_k$ and pins only: σ is continuous at its kinks, so the residuals, and
    with them every other neuron's velocity, are the same on both sides."""
    k, i = entry
    piece = p.pieces[k, i]
    lower, upper = ctx.breakplanes.bounds(piece)
    upward = upper - z[k, i] < z[k, i] - lower
    kink = jnp.where(upward, piece // 2, piece // 2 - 1)
    pin_unused = p.pins[k] < 0
    free_pin = jnp.argmax(pin_unused).astype(jnp.int32)
    has_free_pin = jnp.any(pin_unused)

    other_piece = jnp.where(upward, piece + 2, piece - 2)
    row_velocity, row_alpha = ctx.field.hidden_velocity(
        state[0][k][None], z[k][None], error, p.pieces[k].at[i].set(other_piece)[None],
        p.pins[k][None],
    )  # fmt: skip
    other_velocity = (velocity[0], velocity[1].at[k].set(row_velocity[0]))
    other_alpha = alpha.at[k].set(row_alpha[0])
    rate_here = velocity[1][k] @ ctx.field.inputs[i]
    rate_there = row_velocity[0] @ ctx.field.inputs[i]
    rate_below = jnp.where(upward, rate_here, rate_there)
    rate_above = jnp.where(upward, rate_there, rate_here)
    slides = (rate_below > 0) & (rate_above < 0)
    # Both one-sided fields move z the same way: cross (or go back) that way. In the
    # non-generic repelling case (both point away) keep going the way it came.
    go_up = jnp.where(
        (rate_below >= 0) & (rate_above >= 0),
        True,
        jnp.where((rate_below <= 0) & (rate_above <= 0), False, upward),
    )
    crosses = ~slides & (go_up == upward)
    pin = slides & has_free_pin
    # A crossing moves z_ki to the other side; a pin puts it on the kink (an odd piece).
    pieces = p.pieces.at[k, i].set(
        jnp.where(pin, 2 * kink + 1, jnp.where(crosses, other_piece, piece))
    )
    with_pin = p.pins.at[k, free_pin].set(jnp.where(has_free_pin, i, p.pins[k, free_pin]))
    pins = jnp.where(pin, with_pin, p.pins)
    # A pin starts exactly on its breakplane; an entry that turned back (it only grazed
    # the kink, or rounding put it across) returns onto it.
    held_kinks = pin_kinks(p.pieces, p.pins)
    projected = ctx.field.project(
        state,
        with_pin,
        held_kinks.at[k, free_pin].set(jnp.where(has_free_pin, kink, held_kinks[k, free_pin])),
    )
    new_state = select(crosses, state, projected)
    new_log = jax.lax.cond(
        pin | crosses,
        lambda log: log.record(
            jnp.where(pin, EventKind.PIN, EventKind.CROSSING),
            k, i, kink, t_event, jnp.where(pin, 0, jnp.where(go_up, 1, -1)),
        ),
        lambda log: log,
        log,
    )  # fmt: skip
    pin_record = jnp.where(pin, p.pin_record.at[k, free_pin].set(log.num_events), p.pin_record)
    pin_since = jnp.where(pin, p.pin_since.at[k, free_pin].set(t_event), p.pin_since)
    return _Outcome(
        new_state, pieces, pins, pin_record, pin_since, new_log, out_of_pins=slides & ~has_free_pin,
        crossed=crosses, changed=pin | crosses, velocity=other_velocity, alpha=other_alpha,
    )  # fmt: skip


def _release(ctx: _Context, p: _Position, log: EventLog, t_event, state, velocity, alpha, h_pin):
    """The pin whose $\\alpha$ first left $[0, 1]$ (the smallest of the candidates' pin
    margins `h_pin`) is released at `t_event`, to the side whose field now points away:
    $\\alpha > 1$ above the kink, $\\alpha < 0$ below."""
    k, j = _argmin_entry(h_pin)
    i = p.pins[k, j]
    kink = (p.pieces[k, i] - 1) // 2
    above = alpha[k, j] > 0.5
    pieces = p.pieces.at[k, i].set(jnp.where(above, 2 * kink + 2, 2 * kink))
    log = log.release(p.pin_record[k, j], t_event, jnp.where(above, 1, -1))
    # A neuron's pins stay in its leading slots (a new pin takes the first unused one):
    # the last is moved into the freed slot, so the pin systems can be solved on the
    # leading slots only (`PiecewiseField._slide`).
    last = jnp.sum(p.pins[k] >= 0) - 1

    def compact(slots, unused):
        return slots.at[k, j].set(slots[k, last]).at[k, last].set(unused)

    pins, pin_record = compact(p.pins, -1), compact(p.pin_record, -1)
    # A pin released at the instant it began changed nothing: the one-sided rates there
    # are tangent (e.g. at a fitted net's rest point, residuals ~ 1e-11), where the pin and
    # the α of its sliding are decided by rounding and may disagree; treated as a grazing
    # event, not a pin and release at every step from then on.
    began_now = p.pin_since[k, j] >= t_event
    pin_since = compact(p.pin_since, jnp.inf)
    no = jnp.asarray(False)
    return _Outcome(
        state, pieces, pins, pin_record, pin_since, log, out_of_pins=no, crossed=no,
        changed=~began_now,
        velocity=velocity, alpha=alpha,
    )  # fmt: skip


def _save_until(ctx: _Context, output: _Output, t_end, state_at, pins) -> _Output:
    """Records every save time in `(t_last, t_end]`, interpolated by `state_at`, with the
    pins `pins` held."""
    ts = ctx.options.ts
    last = ts.shape[0] - 1

    def more(carry):
        index, _ = carry
        return (index <= last) & (ts[jnp.minimum(index, last)] <= t_end)

    def save(carry):
        index, saved = carry
        record = ctx.snapshot(state_at(ts[index]), pins, output.log)
        saved = jax.tree_util.tree_map(lambda s, r: s.at[index].set(r), saved, record)
        return index + 1, saved

    save_index, saved = jax.lax.while_loop(more, save, (output.save_index, output.saved))
    return _Output(output.log, save_index, saved)


# --------------------------------------------------------------------------------------
# Small helpers.
# --------------------------------------------------------------------------------------


def _margins(field: PiecewiseField, state: State, pieces, pins):
    """`(h_free, h_pin)` at `state` on the pattern `(pieces, pins)`."""
    _, alpha, z = field.evaluate(state, pieces, pins)
    return field.margins(z, alpha, pieces, pins)


def _end_margins(field: PiecewiseField, state: State, pieces, pins):
    """`_margins` at the end of a step. While no pin is held the pin margins are all `inf`
    and the free ones need only $z = \tilde W \tilde x^\top$, not the field."""

    def without_pins():
        z = state[1] @ field.inputs.T
        return field.margins(z, jnp.full(pins.shape, 0.5, z.dtype), pieces, pins)

    return jax.lax.cond(
        eqxi.unvmap_any(jnp.any(pins >= 0)),
        lambda: _margins(field, state, pieces, pins),
        without_pins,
    )


def _argmin_entry(h: Float[Array, "m n"]) -> tuple[Int[Array, ""], Int[Array, ""]]:
    """The row and column of the smallest entry (the first such in row-major order, as
    `argmin` of the flattened array), found row by row: XLA's CPU `argmin` of an m·n array
    is a reduction over (value, index) pairs, 0.5 ms at m·n = 10⁵ against ~20 µs for `min`
    and an `argmin` of one row."""
    k = jnp.argmin(jnp.min(h, axis=1)).astype(jnp.int32)
    return k, jnp.argmin(h[k]).astype(jnp.int32)


def _first_margin(h_free, h_pin, candidates_free, candidates_pin) -> Float[Array, ""]:
    """The smallest margin among the candidates: the entries that left their piece in a
    step."""
    return jnp.minimum(
        jnp.min(jnp.where(candidates_free, h_free, jnp.inf)),
        jnp.min(jnp.where(candidates_pin, h_pin, jnp.inf)),
    )


def _norm(tree) -> Float[Array, ""]:
    return jnp.sqrt(sum(jnp.sum(leaf**2) for leaf in jax.tree_util.tree_leaves(tree)))


def _all_finite(tree) -> Bool[Array, ""]:
    return jnp.all(jnp.stack([jnp.all(jnp.isfinite(v)) for v in jax.tree_util.tree_leaves(tree)]))
