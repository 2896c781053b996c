"""The exact flow of a piecewise-smooth two-layer net: events located on the dense output
of a Runge–Kutta solver, and the pattern updated at each.

One `lax.while_loop`, laid out as Diffrax's `_integrate.py`: each iteration either
attempts a solver step on the current activation pattern (`_attempt`) or, while an event
found in the last step is being located, narrows its bracket (`_refine`) until it is
converged, and then applies it (`_apply_event`): a crossing, a pin or a release. Every
piece is a module-level function of a `_Context`, what no iteration changes, and of the
parts of the carry `_Loop` it touches:

- `_Position`: the flow's state at `t` on its pattern, the margins there, and the
  solver's state and next step size. Moved by an accepted step or an event.
- `_Step`: the last step attempted: its interval, dense output, and the entries that left
  their piece in it. Set by every attempt, read while locating.
- `_Bracket`: the bracket of the first event inside that step. Narrowed by `_refine`.
- `_Output`: the event log and the saves at `ts`.
- `_Counts`: solver steps, vector-field evaluations, and the status.
"""

from functools import partial

import diffrax as dfx
import equinox as eqx
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
from .pattern import Breakplanes, breakplanes_of, initial_pieces, is_pinned
from .sliding import PiecewiseField, State


def piecewise_flow(
    net: TwoLayerNet,
    x: Float[ArrayLike, "n d"],
    y: Float[ArrayLike, " n"],
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
      output (`Tsit5()`, `Dopri5()`, `Dopri8()`).
    - `max_steps`: solver step budget (accepted plus rejected; locating an event costs no
      steps); a run that exhausts it ends with status `MAX_STEPS_REACHED` and its last state.
    - `max_events`: length of the event log. The flow itself is not limited: events past it
      are counted but not logged.
    - `dtmin`: the smallest step in units of the initial time scale; a run whose steps shrink
      below it ends with status `SOLVER_FAILURE` (`NONFINITE` if the state turned NaN).

    **Returns:** a `Solution`. Besides the requested `observables` (at `ts`), its
    `observables` hold `"num_pinned"` and `"num_crossings"` at `ts` (pins held; crossings so
    far) and `"events"`, an `EventLog` of the whole run (not per save time).
    """
    data, options = flow_options(
        net, x, y, weights, t1=t1, ts=ts, reduction=reduction, rtol=rtol, solver=solver,
        observables=observables, max_steps=max_steps, max_events=max_events, dtmin=dtmin,
        kinks="exact",
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
    h_free: Float[Array, "m n"]  # margins at `state`
    h_pin: Float[Array, "m D"]
    solver_state: PyTree
    made_jump: Bool[Array, ""]  # the field changed at `t`: no first-same-as-last reuse
    dt: Float[Array, ""]


class _Step(eqx.Module):
    """The last step attempted, from `t0` to `t1`: its dense output, and the entries that
    ended it outside their piece (one of which has the step's first event)."""

    t0: Float[Array, ""]
    t1: Float[Array, ""]
    dense: PyTree
    candidates_free: Bool[Array, "m n"]
    candidates_pin: Bool[Array, "m D"]


class _Bracket(eqx.Module):
    """`[lo, hi]` holds the first event of the step, with the smallest candidate margin
    `h_lo` ≥ 0 at `lo` and `h_hi` < 0 at `hi` (Illinois-scaled, see `_refine`)."""

    lo: Float[Array, ""]
    hi: Float[Array, ""]
    h_lo: Float[Array, ""]
    h_hi: Float[Array, ""]
    moved: Int[Array, ""]  # which end the last refinement moved: +1 lo, -1 hi, 0 none yet
    use_secant: Bool[Array, ""]  # the last refinement at least halved the bracket


class _Output(eqx.Module):
    """What the run hands back: the event log, and the saves at `ts` so far."""

    log: EventLog
    save_index: Int[Array, ""]  # the next save time to record
    saved: PyTree


class _Counts(eqx.Module):
    """Solver steps (an event costs none), vector-field evaluations, and the status."""

    num_steps: Int[Array, ""]
    num_accepted_steps: Int[Array, ""]
    num_evaluations: Int[Array, ""]
    status: Int[Array, ""]


class _Loop(eqx.Module):
    """The carry of the main loop. An iteration either attempts a solver step or, while
    `locating`, refines the bracket of the first event inside the last step."""

    position: _Position
    locating: Bool[Array, ""]
    step: _Step
    bracket: _Bracket
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

    def snapshot(self, state: State, pieces, log: EventLog) -> dict:
        """What is saved at a save time: `observe`'s record, the pins held and the
        crossings so far."""
        record = observe(state, self.to_net, self.loss, self.options.observables)
        record["observables"] = dict(
            record["observables"],
            num_pinned=jnp.sum(is_pinned(pieces)).astype(jnp.int32),
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
        h_free=h_free,
        h_pin=h_pin,
        solver_state=ctx.solver.init(ctx.term, t0, ctx.t1, state, (pieces, no_pins)),
        made_jump=jnp.asarray(False),
        dt=jnp.minimum(0.01 * time_unit, ctx.t1),
    )
    return ctx, position


def _initial_loop(ctx: _Context, position: _Position) -> _Loop:
    """The carry at t = 0: no step taken, the save at t = 0 (if asked) made."""
    p = position
    m, n = p.pieces.shape
    zero = jnp.zeros_like(p.t)
    step_shape = jax.eval_shape(
        lambda: ctx.solver.step(
            ctx.term, zero, ctx.t1, p.state, (p.pieces, p.pins), p.solver_state, True
        )
    )
    step = _Step(
        t0=zero,
        t1=zero,
        dense=jax.tree_util.tree_map(lambda s: jnp.zeros(s.shape, s.dtype), step_shape[2]),
        candidates_free=jnp.zeros((m, n), bool),
        candidates_pin=jnp.zeros((m, ctx.pins_per_neuron), bool),
    )
    no_moves = jnp.zeros((), jnp.int32)
    bracket = _Bracket(zero, zero, zero, zero, moved=no_moves, use_secant=jnp.asarray(True))
    log = EventLog.empty(ctx.options.max_events, zero.dtype)
    template = jax.eval_shape(ctx.snapshot, p.state, p.pieces, log)
    unsaved = jax.tree_util.tree_map(
        lambda v: jnp.full(
            (ctx.options.ts.shape[0],) + v.shape,
            jnp.nan if jnp.issubdtype(v.dtype, jnp.floating) else -1,
            v.dtype,
        ),
        template,
    )
    output = _Output(log, save_index=jnp.zeros((), jnp.int32), saved=unsaved)
    output = _save_until(ctx, output, zero, lambda t: p.state, p.pieces)
    counts = _Counts(
        num_steps=jnp.zeros((), jnp.int32),
        num_accepted_steps=jnp.zeros((), jnp.int32),
        num_evaluations=jnp.ones((), jnp.int32),  # the field at t = 0, in `_start`
        status=jnp.asarray(Status.SUCCESS, jnp.int32),
    )
    return _Loop(p, jnp.asarray(False), step, bracket, output, counts)


def _running(ctx: _Context, c: _Loop) -> Bool[Array, ""]:
    return (
        (c.position.t < ctx.t1)
        & (c.counts.status == Status.SUCCESS)
        & (c.counts.num_steps < ctx.options.max_steps)
    )


def _iteration(ctx: _Context, c: _Loop) -> _Loop:
    """A solver step; or, while locating an event, one refinement of its bracket, and once
    the bracket is converged, the event."""

    def locate(c: _Loop) -> _Loop:
        return jax.lax.cond(
            _converged(ctx, c.bracket), partial(_apply_event, ctx), partial(_refine, ctx), c
        )

    return jax.lax.cond(c.locating, locate, partial(_attempt, ctx), c)


def _converged(ctx: _Context, bracket: _Bracket) -> Bool[Array, ""]:
    """The bracket is down to a few ulps of the event time."""
    eps = jnp.finfo(ctx.field.inputs.dtype).eps
    return bracket.hi - bracket.lo <= 16 * eps * jnp.maximum(jnp.abs(bracket.hi), ctx.time_unit)


def _finish(ctx: _Context, c: _Loop) -> Solution:
    p, counts = c.position, c.counts
    status = jnp.where(
        (counts.status == Status.SUCCESS) & (p.t < ctx.t1), Status.MAX_STEPS_REACHED, counts.status
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
        stop_reason=jnp.where(status == Status.SUCCESS, StopReason.T1, StopReason.FAILED).astype(
            jnp.int32
        ),
    )


# --------------------------------------------------------------------------------------
# The pieces of an iteration.
# --------------------------------------------------------------------------------------


def _attempt(ctx: _Context, c: _Loop) -> _Loop:
    """One solver step on the current pattern, and a check for events at its end.

    A step that ends with every entry inside its piece moves the flow on, saving on the
    way; one that ends with some outside moves nothing and starts the search for the
    first of those events (`locating`) on the step's dense output."""
    p = c.position
    t_next = jnp.minimum(p.t + p.dt, ctx.t1)
    y1, y_error, dense, solver_state, _ = ctx.solver.step(
        ctx.term, p.t, t_next, p.state, (p.pieces, p.pins), p.solver_state, p.made_jump
    )
    finite, accept, dt = _control(ctx, p.t, t_next, p.state, y1, y_error)
    h_free1, h_pin1 = _margins(ctx.field, y1, p.pieces, p.pins)
    step = _Step(p.t, t_next, dense, candidates_free=h_free1 < 0, candidates_pin=h_pin1 < 0)
    event = accept & (jnp.any(step.candidates_free) | jnp.any(step.candidates_pin))
    smooth = accept & ~event

    h_lo = _first_margin(p.h_free, p.h_pin, step)
    bracket = _Bracket(
        lo=p.t,
        # An entry already on the wrong side at the start (h_lo ≤ 0) has its event now.
        hi=jnp.where(h_lo <= 0, p.t, t_next),
        h_lo=jnp.maximum(h_lo, 0),
        h_hi=_first_margin(h_free1, h_pin1, step),
        moved=jnp.zeros((), jnp.int32),
        use_secant=jnp.asarray(True),
    )
    output = _save_until(
        ctx,
        c.output,
        jnp.where(smooth, t_next, -jnp.inf),
        ctx.interpolation(step).evaluate,
        p.pieces,
    )
    position = _Position(
        t=jnp.where(smooth, t_next, p.t),
        state=select(smooth, y1, p.state),
        pieces=p.pieces,
        pins=p.pins,
        pin_record=p.pin_record,
        h_free=jnp.where(smooth, h_free1, p.h_free),
        h_pin=jnp.where(smooth, h_pin1, p.h_pin),
        solver_state=select(accept, solver_state, p.solver_state),
        made_jump=jnp.where(accept, ~smooth, p.made_jump),
        dt=dt,
    )
    failed = ~accept & (dt < ctx.dtmin)
    counts = _Counts(
        num_steps=c.counts.num_steps + 1,
        num_accepted_steps=c.counts.num_accepted_steps + accept.astype(jnp.int32),
        num_evaluations=c.counts.num_evaluations + ctx.evaluations_per_step,
        status=jnp.where(
            failed, jnp.where(finite, Status.SOLVER_FAILURE, Status.NONFINITE), c.counts.status
        ).astype(jnp.int32),
    )
    return _Loop(position, event, step, bracket, output, counts)


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


def _refine(ctx: _Context, c: _Loop) -> _Loop:
    """One Illinois (modified regula falsi) update of the event bracket; a bisection
    whenever the previous update failed to halve it, so the bracket at least halves
    every two updates."""
    b = c.bracket
    width = b.hi - b.lo
    secant = b.hi - b.h_hi * width / (b.h_hi - b.h_lo)
    inside = jnp.isfinite(secant) & (secant > b.lo) & (secant < b.hi)
    t_mid = jnp.where(b.use_secant & inside, secant, b.lo + 0.5 * width)
    state = ctx.interpolation(c.step).evaluate(t_mid)
    h_free, h_pin = _margins(ctx.field, state, c.position.pieces, c.position.pins)
    h_mid = _first_margin(h_free, h_pin, c.step)
    crossed = h_mid < 0
    lo = jnp.where(crossed, b.lo, t_mid)
    hi = jnp.where(crossed, t_mid, b.hi)
    # Illinois: an end kept twice in a row has its value halved, so the secant cannot
    # creep up on the root from one side only.
    h_lo = jnp.where(crossed, jnp.where(b.moved == -1, 0.5 * b.h_lo, b.h_lo), h_mid)
    h_hi = jnp.where(crossed, h_mid, jnp.where(b.moved == 1, 0.5 * b.h_hi, b.h_hi))
    bracket = _Bracket(
        lo=lo,
        hi=hi,
        h_lo=jnp.maximum(h_lo, 0),
        h_hi=h_hi,
        moved=jnp.where(crossed, -1, 1).astype(jnp.int32),
        use_secant=hi - lo <= 0.5 * width,
    )
    counts = eqx.tree_at(lambda k: k.num_evaluations, c.counts, c.counts.num_evaluations + 1)
    return eqx.tree_at(lambda c: (c.bracket, c.counts), c, (bracket, counts))


def _apply_event(ctx: _Context, c: _Loop) -> _Loop:
    """At the located time `hi`: save up to it, decide crossing, pin or release, update
    the pattern, log it, and restart the solver there."""
    p = c.position
    t_event = c.bracket.hi
    state_at = ctx.interpolation(c.step).evaluate
    output = _save_until(ctx, c.output, t_event, state_at, p.pieces)
    state = state_at(t_event)
    _, alpha, z = ctx.field.evaluate(state, p.pieces, p.pins)
    h_free, h_pin = ctx.field.margins(z, alpha, p.pieces, p.pins)
    h_free = jnp.where(c.step.candidates_free, h_free, jnp.inf)
    h_pin = jnp.where(c.step.candidates_pin, h_pin, jnp.inf)
    # The first event is a free entry reaching a kink unless a pin's α left [0, 1] first.
    at_kink = (jnp.min(h_free) < 0) | (jnp.min(h_free) <= jnp.min(h_pin))
    state, pieces, pins, pin_record, log, out_of_pins = jax.lax.cond(
        at_kink,
        lambda _: _reach_kink(ctx, p, output.log, t_event, state, z, h_free),
        lambda _: _release(ctx, p, output.log, t_event, state, alpha, h_pin),
        None,
    )
    h_free, h_pin = _margins(ctx.field, state, pieces, pins)
    position = _Position(
        t=t_event,
        state=state,
        pieces=pieces,
        pins=pins,
        pin_record=pin_record,
        h_free=h_free,
        h_pin=h_pin,
        solver_state=p.solver_state,
        made_jump=jnp.asarray(True),
        dt=p.dt,
    )
    counts = c.counts
    counts = eqx.tree_at(
        lambda k: (k.num_evaluations, k.status),
        counts,
        (
            # The field at the event, the two one-sided rates of `_reach_kink`, and the
            # margins on the new pattern (the same count for either branch).
            counts.num_evaluations + 4,
            jnp.where(out_of_pins, Status.SOLVER_FAILURE, counts.status).astype(jnp.int32),
        ),
    )
    output = eqx.tree_at(lambda o: o.log, output, log)
    return _Loop(position, jnp.asarray(False), c.step, c.bracket, output, counts)


def _reach_kink(ctx: _Context, p: _Position, log: EventLog, t_event, state, z, h_free):
    """The free entry $z_{ki}$ with the smallest margin has reached a kink at `t_event`:
    it slides (taking neuron k's first unused pin), crosses, or turns back,
    as the two one-sided fields there say.

    **Returns:** the new `(state, pieces, pins, pin_record, log)`, and whether it should
    have pinned but neuron k had no unused pin."""
    k, i = jnp.divmod(jnp.argmin(h_free).astype(jnp.int32), h_free.shape[1])
    piece = p.pieces[k, i]
    lower, upper = ctx.breakplanes.bounds(piece)
    upward = upper - z[k, i] < z[k, i] - lower
    kink = jnp.where(upward, piece // 2, piece // 2 - 1)
    pin_unused = p.pins[k] < 0
    free_pin = jnp.argmax(pin_unused).astype(jnp.int32)
    has_free_pin = jnp.any(pin_unused)

    rate_below, rate_above = _one_sided_rates(ctx, state, p, k, i, kink)
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
    pin_pieces = p.pieces.at[k, i].set(2 * kink + 1)
    with_pin = p.pins.at[k, free_pin].set(jnp.where(has_free_pin, i, p.pins[k, free_pin]))
    crossed_pieces = p.pieces.at[k, i].set(2 * kink + 1 + jnp.where(go_up, 1, -1))
    pieces = jnp.where(pin, pin_pieces, jnp.where(crosses, crossed_pieces, p.pieces))
    pins = jnp.where(pin, with_pin, p.pins)
    # A pin starts exactly on its breakplane; an entry that turned back (it only grazed
    # the kink, or rounding put it across) returns onto it.
    new_state = select(crosses, state, ctx.field.project(state, pin_pieces, with_pin))
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
    return new_state, pieces, pins, pin_record, new_log, slides & ~has_free_pin


def _one_sided_rates(ctx: _Context, state, p: _Position, k, i, kink):
    """$\\dot z_{ki}$ with $z_{ki}$ just below and just above `kink`, the other pins of
    neuron k still held."""

    def rate(side_piece):
        pieces = p.pieces.at[k, i].set(side_piece)
        (_, W_dot), _, _ = ctx.field.evaluate(state, pieces, p.pins)
        return W_dot[k] @ ctx.field.inputs[i]

    return rate(2 * kink), rate(2 * kink + 2)


def _release(ctx: _Context, p: _Position, log: EventLog, t_event, state, alpha, h_pin):
    """The pin whose $\\alpha$ first left $[0, 1]$ is released at `t_event`, to the side
    whose field now points away: $\\alpha > 1$ above the kink, $\\alpha < 0$ below.

    **Returns:** as `_reach_kink`."""
    k, j = jnp.divmod(jnp.argmin(h_pin).astype(jnp.int32), h_pin.shape[1])
    i = p.pins[k, j]
    kink = (p.pieces[k, i] - 1) // 2
    above = alpha[k, j] > 0.5
    pieces = p.pieces.at[k, i].set(jnp.where(above, 2 * kink + 2, 2 * kink))
    pins = p.pins.at[k, j].set(-1)
    log = log.release(p.pin_record[k, j], t_event, jnp.where(above, 1, -1))
    pin_record = p.pin_record.at[k, j].set(-1)
    return state, pieces, pins, pin_record, log, jnp.asarray(False)


def _save_until(ctx: _Context, output: _Output, t_end, state_at, pieces) -> _Output:
    """Records every save time in `(t_last, t_end]`, interpolated by `state_at`, on the
    pattern `pieces`."""
    ts = ctx.options.ts
    last = ts.shape[0] - 1

    def more(carry):
        index, _ = carry
        return (index <= last) & (ts[jnp.minimum(index, last)] <= t_end)

    def save(carry):
        index, saved = carry
        record = ctx.snapshot(state_at(ts[index]), pieces, output.log)
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


def _first_margin(h_free, h_pin, step: _Step) -> Float[Array, ""]:
    """The smallest margin among the entries that left their piece in the step."""
    return jnp.minimum(
        jnp.min(jnp.where(step.candidates_free, h_free, jnp.inf)),
        jnp.min(jnp.where(step.candidates_pin, h_pin, jnp.inf)),
    )


def _norm(tree) -> Float[Array, ""]:
    return jnp.sqrt(sum(jnp.sum(leaf**2) for leaf in jax.tree_util.tree_leaves(tree)))


def _all_finite(tree) -> Bool[Array, ""]:
    return jnp.all(jnp.stack([jnp.all(jnp.isfinite(v)) for v in jax.tree_util.tree_leaves(tree)]))
