import diffrax as dfx
import equinox as eqx
import jax
import jax.numpy as jnp
from jaxtyping import Array, ArrayLike, Bool, Float, Int, PyTree

from .._loss import Reduction, squared_loss
from .._network import TwoLayerNet
from .._options import flow_options, FlowOptions, Observables
from .._problem import time_unit as initial_time_unit
from .._result import evaluations_per_step as solver_evaluations_per_step
from .._solution import assemble, observe, Solution
from .._solver import Unrolled
from .._status import Status, StopReason
from .events import EventKind, EventLog
from .pattern import breakplanes_of, initial_pieces, is_pinned
from .sliding import PiecewiseField


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
    x, y, weights = data
    return _piecewise_flow(
        net,
        x,
        y,
        weights,
        options.t1,
        options.ts,
        options.rtol,
        options.dtmin,
        reduction=options.reduction,
        solver=options.solver,
        observables=options.observables,
        max_steps=options.max_steps,
        max_events=options.max_events,
        breakplanes=breakplanes_of(net.activation),
    )


class _Loop(eqx.Module):
    """The carry of the main loop. An iteration either attempts a solver step or, while
    `locating`, refines the bracket `[lo, hi]` of the first event inside the last step."""

    t: Float[Array, ""]
    state: tuple
    pieces: Int[Array, "m n"]
    slots: Int[Array, "m D"]
    pin_record: Int[Array, "m D"]  # index in the event log of each slot's pin
    h_free: Float[Array, "m n"]  # margins at `state`
    h_pin: Float[Array, "m D"]
    solver_state: PyTree
    made_jump: Bool[Array, ""]
    dt: Float[Array, ""]
    # The step being searched for an event, and the search.
    locating: Bool[Array, ""]
    step_t0: Float[Array, ""]
    step_t1: Float[Array, ""]
    dense: PyTree
    candidates_free: Bool[Array, "m n"]
    candidates_pin: Bool[Array, "m D"]
    lo: Float[Array, ""]
    hi: Float[Array, ""]
    h_lo: Float[Array, ""]
    h_hi: Float[Array, ""]
    moved: Int[Array, ""]  # which end the last refinement moved: +1 lo, -1 hi
    use_secant: Bool[Array, ""]
    # Output.
    log: EventLog
    save_index: Int[Array, ""]
    saved: PyTree
    num_steps: Int[Array, ""]
    num_accepted_steps: Int[Array, ""]
    num_evaluations: Int[Array, ""]
    status: Int[Array, ""]


def _norm(tree) -> Float[Array, ""]:
    return jnp.sqrt(sum(jnp.sum(leaf**2) for leaf in jax.tree_util.tree_leaves(tree)))


def _all_finite(tree) -> Bool[Array, ""]:
    return jnp.all(jnp.stack([jnp.all(jnp.isfinite(v)) for v in jax.tree_util.tree_leaves(tree)]))


def _select(pred, on_true, on_false):
    return jax.tree_util.tree_map(lambda u, v: jnp.where(pred, u, v), on_true, on_false)


def _first_margin(h_free, h_pin, candidates_free, candidates_pin) -> Float[Array, ""]:
    """The smallest margin among the entries that left their piece in the step."""
    return jnp.minimum(
        jnp.min(jnp.where(candidates_free, h_free, jnp.inf)),
        jnp.min(jnp.where(candidates_pin, h_pin, jnp.inf)),
    )


@eqx.filter_jit
def _piecewise_flow(
    net,
    x,
    y,
    weights,
    t1,
    ts,
    rtol,
    dtmin,
    *,
    reduction,
    solver,
    observables,
    max_steps,
    max_events,
    breakplanes,
):
    dtype = x.dtype
    n, d = x.shape
    m = net.width
    bias = net.b is not None
    inputs = jnp.concatenate([x, jnp.ones((n, 1), dtype)], axis=1) if bias else x
    omega = jnp.ones((n,), dtype) if weights is None else weights
    normaliser = jnp.sum(omega) if reduction == "mean" else jnp.ones((), dtype)
    field = PiecewiseField(inputs, y, omega / normaliser, breakplanes)
    # At most dim(x̃) affinely independent data points lie on one breakplane.
    num_slots = min(n, inputs.shape[1])

    state0 = (net.a, jnp.concatenate([net.W, net.b[:, None]], axis=1) if bias else net.W)

    def to_net(state):
        a, W = state
        return TwoLayerNet(a, W[:, :d], W[:, d] if bias else None, net.activation)

    def loss_of(state):
        return squared_loss(to_net(state), x, y, weights, reduction)

    def snapshot(state, pieces, log):
        record = observe(state, to_net, loss_of, observables)
        record["observables"] = dict(
            record["observables"],
            num_pinned=jnp.sum(is_pinned(pieces)).astype(jnp.int32),
            num_crossings=log.num_crossings,
        )
        return record

    def save_until(t_end, state_at, loop, pieces, log):
        """Records every save time in `(t_last, t_end]`, interpolated by `state_at`."""
        last = ts.shape[0] - 1

        def more(carry):
            index, _ = carry
            return (index <= last) & (ts[jnp.minimum(index, last)] <= t_end)

        def save(carry):
            index, saved = carry
            record = snapshot(state_at(ts[index]), pieces, log)
            saved = jax.tree_util.tree_map(lambda s, r: s.at[index].set(r), saved, record)
            return index + 1, saved

        return jax.lax.while_loop(more, save, (loop.save_index, loop.saved))

    term = dfx.ODETerm(field)
    pieces0 = initial_pieces(breakplanes, state0[1] @ inputs.T)
    slots0 = jnp.full((m, num_slots), -1, jnp.int32)
    velocity0, alpha0, z0 = field.evaluate(state0, pieces0, slots0)
    h_free0, h_pin0 = field.margins(z0, alpha0, pieces0, slots0)
    # The initial time scale, as in `gradient_flow`: the first step and `dtmin` are
    # measured in it.
    # Its state is θ itself (no scale-free coordinates), so the rate is made relative
    # here.
    time_unit = initial_time_unit(_norm(velocity0) / _norm(state0))
    dtmin = dtmin * time_unit
    args0 = (pieces0, slots0)
    solver_state0 = solver.init(term, jnp.zeros_like(t1), t1, state0, args0)
    step_shape = jax.eval_shape(
        lambda: solver.step(term, jnp.zeros_like(t1), t1, state0, args0, solver_state0, True)
    )
    dense0 = jax.tree_util.tree_map(lambda s: jnp.zeros(s.shape, s.dtype), step_shape[2])
    error_exponent = -1.0 / solver.order(term)
    # The solver's stages, and one evaluation of the margins at the step's end.
    evaluations_per_step = solver_evaluations_per_step(solver)[0] + 1

    log0 = EventLog.empty(max_events, dtype)
    template = snapshot(state0, pieces0, log0)
    empty = jax.tree_util.tree_map(
        lambda v: jnp.full(
            (ts.shape[0],) + v.shape,
            jnp.nan if jnp.issubdtype(v.dtype, jnp.floating) else -1,
            v.dtype,
        ),
        template,
    )
    scalar = lambda v, kind=dtype: jnp.asarray(v, kind)  # noqa: E731
    zero = scalar(0, jnp.int32)
    loop0 = _Loop(
        t=jnp.zeros_like(t1),
        state=state0,
        pieces=pieces0,
        slots=slots0,
        pin_record=jnp.full((m, num_slots), -1, jnp.int32),
        h_free=h_free0,
        h_pin=h_pin0,
        solver_state=solver_state0,
        made_jump=scalar(False, bool),
        dt=jnp.minimum(0.01 * time_unit, t1),
        locating=scalar(False, bool),
        step_t0=jnp.zeros_like(t1),
        step_t1=jnp.zeros_like(t1),
        dense=dense0,
        candidates_free=jnp.zeros((m, n), bool),
        candidates_pin=jnp.zeros((m, num_slots), bool),
        lo=jnp.zeros_like(t1),
        hi=jnp.zeros_like(t1),
        h_lo=jnp.zeros_like(t1),
        h_hi=jnp.zeros_like(t1),
        moved=zero,
        use_secant=scalar(True, bool),
        log=log0,
        save_index=zero,
        saved=empty,
        num_steps=zero,
        num_accepted_steps=zero,
        num_evaluations=scalar(1, jnp.int32),
        status=scalar(Status.SUCCESS, jnp.int32),
    )
    save_index, saved = save_until(jnp.zeros_like(t1), lambda t: state0, loop0, pieces0, log0)
    loop0 = eqx.tree_at(lambda c: (c.save_index, c.saved), loop0, (save_index, saved))

    def interpolation(c):
        return solver.interpolation_cls(t0=c.step_t0, t1=c.step_t1, **c.dense)

    def attempt(c: _Loop) -> _Loop:
        """One solver step on the current pattern, and a check for events at its end."""
        t_next = jnp.minimum(c.t + c.dt, t1)
        args = (c.pieces, c.slots)
        y1, y_error, dense, solver_state, _ = solver.step(
            term, c.t, t_next, c.state, args, c.solver_state, c.made_jump
        )
        error = _norm(y_error) / (rtol * jnp.maximum(_norm(c.state), _norm(y1)))
        finite = jnp.isfinite(error) & _all_finite(y1)
        accept = finite & (error <= 1)
        factor = jnp.where(finite, jnp.clip(0.9 * error**error_exponent, 0.2, 5.0), 0.2)
        dt = (t_next - c.t) * factor

        _, alpha1, z1 = field.evaluate(y1, c.pieces, c.slots)
        h_free1, h_pin1 = field.margins(z1, alpha1, c.pieces, c.slots)
        candidates_free = h_free1 < 0
        candidates_pin = h_pin1 < 0
        event = accept & (jnp.any(candidates_free) | jnp.any(candidates_pin))
        smooth = accept & ~event

        c = eqx.tree_at(lambda c: (c.step_t0, c.step_t1, c.dense), c, (c.t, t_next, dense))
        save_index, saved = save_until(
            jnp.where(smooth, t_next, -jnp.inf), interpolation(c).evaluate, c, c.pieces, c.log
        )
        h_lo = _first_margin(c.h_free, c.h_pin, candidates_free, candidates_pin)
        h_hi = _first_margin(h_free1, h_pin1, candidates_free, candidates_pin)
        # An entry already on the wrong side at the start (h_lo ≤ 0) has its event now.
        hi = jnp.where(h_lo <= 0, c.t, t_next)

        failed = ~accept & (dt < dtmin)
        status = jnp.where(
            failed, jnp.where(finite, Status.SOLVER_FAILURE, Status.NONFINITE), c.status
        ).astype(jnp.int32)
        return eqx.tree_at(
            lambda c: (
                c.t, c.state, c.h_free, c.h_pin, c.solver_state, c.made_jump, c.dt,
                c.locating, c.candidates_free, c.candidates_pin, c.lo, c.hi, c.h_lo,
                c.h_hi, c.moved, c.use_secant, c.save_index, c.saved, c.num_steps,
                c.num_accepted_steps, c.num_evaluations, c.status,
            ),
            c,
            (
                jnp.where(smooth, t_next, c.t),
                _select(smooth, y1, c.state),
                jnp.where(smooth, h_free1, c.h_free),
                jnp.where(smooth, h_pin1, c.h_pin),
                _select(accept, solver_state, c.solver_state),
                jnp.where(accept, ~smooth, c.made_jump),
                dt,
                event,
                candidates_free,
                candidates_pin,
                c.t,
                hi,
                jnp.maximum(h_lo, 0),
                h_hi,
                zero,
                scalar(True, bool),
                save_index,
                saved,
                c.num_steps + 1,
                c.num_accepted_steps + accept.astype(jnp.int32),
                c.num_evaluations + evaluations_per_step,
                status,
            ),
        )  # fmt: skip

    def refine(c: _Loop) -> _Loop:
        """One Illinois (modified regula falsi) update of the event bracket; a bisection
        whenever the previous update failed to halve it, so the bracket at least halves
        every two updates."""
        width = c.hi - c.lo
        secant = c.hi - c.h_hi * width / (c.h_hi - c.h_lo)
        inside = jnp.isfinite(secant) & (secant > c.lo) & (secant < c.hi)
        t_mid = jnp.where(c.use_secant & inside, secant, c.lo + 0.5 * width)
        _, alpha, z = field.evaluate(interpolation(c).evaluate(t_mid), c.pieces, c.slots)
        h_free, h_pin = field.margins(z, alpha, c.pieces, c.slots)
        h_mid = _first_margin(h_free, h_pin, c.candidates_free, c.candidates_pin)
        crossed = h_mid < 0
        lo = jnp.where(crossed, c.lo, t_mid)
        hi = jnp.where(crossed, t_mid, c.hi)
        # Illinois: an end kept twice in a row has its value halved, so the secant cannot
        # creep up on the root from one side only.
        h_lo = jnp.where(crossed, jnp.where(c.moved == -1, 0.5 * c.h_lo, c.h_lo), h_mid)
        h_hi = jnp.where(crossed, h_mid, jnp.where(c.moved == 1, 0.5 * c.h_hi, c.h_hi))
        return eqx.tree_at(
            lambda c: (c.lo, c.hi, c.h_lo, c.h_hi, c.moved, c.use_secant, c.num_evaluations),
            c,
            (
                lo,
                hi,
                jnp.maximum(h_lo, 0),
                h_hi,
                jnp.where(crossed, -1, 1).astype(jnp.int32),
                hi - lo <= 0.5 * width,
                c.num_evaluations + 1,
            ),
        )

    def apply_event(c: _Loop) -> _Loop:
        """At the located time `hi`: decide crossing, pin or release, update the pattern,
        log it, and restart the solver there."""
        t_event = c.hi
        state_at = interpolation(c).evaluate
        save_index, saved = save_until(t_event, state_at, c, c.pieces, c.log)
        state = state_at(t_event)
        _, alpha, z = field.evaluate(state, c.pieces, c.slots)
        h_free, h_pin = field.margins(z, alpha, c.pieces, c.slots)
        h_free = jnp.where(c.candidates_free, h_free, jnp.inf)
        h_pin = jnp.where(c.candidates_pin, h_pin, jnp.inf)
        at_kink = (jnp.min(h_free) < 0) | (jnp.min(h_free) <= jnp.min(h_pin))

        def reach_kink(_):
            k, i = jnp.divmod(jnp.argmin(h_free).astype(jnp.int32), n)
            piece = c.pieces[k, i]
            lower, upper = breakplanes.bounds(piece)
            upward = upper - z[k, i] < z[k, i] - lower
            kink = jnp.where(upward, piece // 2, piece // 2 - 1)
            slot_free = c.slots[k] < 0
            slot = jnp.argmax(slot_free).astype(jnp.int32)
            has_slot = jnp.any(slot_free)

            def rate_of_z(side_piece):
                """$\\dot z_{ki}$ with $z_{ki}$ on the side `side_piece` of the kink, the other
                pins of neuron k still held."""
                (_, W_dot), _, _ = field.evaluate(state, c.pieces.at[k, i].set(side_piece), c.slots)
                return W_dot[k] @ inputs[i]

            rate_below = rate_of_z(2 * kink)
            rate_above = rate_of_z(2 * kink + 2)
            slides = (rate_below > 0) & (rate_above < 0)
            # Both one-sided fields move z the same way: cross (or go back) that way. In the
            # non-generic repelling case (both point away) keep going the way it came.
            go_up = jnp.where(
                (rate_below >= 0) & (rate_above >= 0),
                True,
                jnp.where((rate_below <= 0) & (rate_above <= 0), False, upward),
            )
            crosses = ~slides & (go_up == upward)
            pin = slides & has_slot
            pin_pieces = c.pieces.at[k, i].set(2 * kink + 1)
            pin_slots = c.slots.at[k, slot].set(jnp.where(has_slot, i, c.slots[k, slot]))
            crossed_pieces = c.pieces.at[k, i].set(2 * kink + 1 + jnp.where(go_up, 1, -1))
            pieces = jnp.where(pin, pin_pieces, jnp.where(crosses, crossed_pieces, c.pieces))
            slots = jnp.where(pin, pin_slots, c.slots)
            # A pin starts exactly on its breakplane; an entry that turned back (it only
            # grazed the kink, or rounding put it across) returns onto it.
            new_state = _select(crosses, state, field.project(state, pin_pieces, pin_slots))
            logged = pin | crosses
            log = jax.lax.cond(
                logged,
                lambda log: log.record(
                    jnp.where(pin, EventKind.PIN, EventKind.CROSSING),
                    k, i, kink, t_event, jnp.where(pin, 0, jnp.where(go_up, 1, -1)),
                ),
                lambda log: log,
                c.log,
            )  # fmt: skip
            pin_record = jnp.where(
                pin, c.pin_record.at[k, slot].set(c.log.num_events), c.pin_record
            )
            status = jnp.where(slides & ~has_slot, Status.SOLVER_FAILURE, c.status)
            return new_state, pieces, slots, pin_record, log, status.astype(jnp.int32)

        def release(_):
            k, slot = jnp.divmod(jnp.argmin(h_pin).astype(jnp.int32), num_slots)
            i = c.slots[k, slot]
            kink = (c.pieces[k, i] - 1) // 2
            above = alpha[k, slot] > 0.5
            pieces = c.pieces.at[k, i].set(jnp.where(above, 2 * kink + 2, 2 * kink))
            slots = c.slots.at[k, slot].set(-1)
            log = c.log.release(c.pin_record[k, slot], t_event, jnp.where(above, 1, -1))
            pin_record = c.pin_record.at[k, slot].set(-1)
            return state, pieces, slots, pin_record, log, c.status

        state, pieces, slots, pin_record, log, status = jax.lax.cond(
            at_kink, reach_kink, release, None
        )
        _, alpha, z = field.evaluate(state, pieces, slots)
        h_free, h_pin = field.margins(z, alpha, pieces, slots)
        return eqx.tree_at(
            lambda c: (
                c.t, c.state, c.pieces, c.slots, c.pin_record, c.h_free, c.h_pin,
                c.made_jump, c.locating, c.log, c.save_index, c.saved, c.status,
                c.num_evaluations,
            ),
            c,
            (
                t_event, state, pieces, slots, pin_record, h_free, h_pin,
                scalar(True, bool), scalar(False, bool), log, save_index, saved, status,
                c.num_evaluations + 4,
            ),
        )  # fmt: skip

    def body(c: _Loop) -> _Loop:
        def locate(c):
            # The bracket is converged to a few ulps of the event time.
            eps = jnp.finfo(dtype).eps
            done = c.hi - c.lo <= 16 * eps * jnp.maximum(jnp.abs(c.hi), time_unit)
            return jax.lax.cond(done, apply_event, refine, c)

        return jax.lax.cond(c.locating, locate, attempt, c)

    def running(c: _Loop):
        return (c.t < t1) & (c.status == Status.SUCCESS) & (c.num_steps < max_steps)

    c = jax.lax.while_loop(running, body, loop0)

    status = jnp.where(
        (c.status == Status.SUCCESS) & (c.t < t1), Status.MAX_STEPS_REACHED, c.status
    )
    finite = _all_finite(c.state) & jnp.isfinite(loss_of(c.state))
    status = jnp.where(finite, status, Status.NONFINITE).astype(jnp.int32)
    saved = dict(c.saved, observables=dict(c.saved["observables"], events=c.log))
    num_steps = c.num_steps
    return assemble(
        to_net,
        c.state,
        ts,
        saved,
        t_stop=c.t,
        num_steps=num_steps,
        num_accepted_steps=c.num_accepted_steps,
        num_rejected_steps=num_steps - c.num_accepted_steps,
        num_evaluations=c.num_evaluations,
        phase_steps=num_steps[None],
        status=status,
        stop_reason=jnp.where(status == Status.SUCCESS, StopReason.T1, StopReason.FAILED).astype(
            jnp.int32
        ),
    )
