"""A refilling ensemble runner: many seeds, a fixed number of solver slots.

A vmapped `diffeqsolve` runs its seeds in lockstep: the batch takes as many loop
iterations as its slowest seed, and every other seed idles through the difference
(efficiency mean/max steps ≈ 0.6 on a mixed-scale W1 ensemble). Here one compiled
`lax.while_loop` advances `num_slots` seeds at once, each slot with its own time, step
size, controller and solver state; as soon as a slot's seed finishes (reaches `t1`,
meets a stop rule, fails or exhausts `max_steps`) its result is written at the seed's
index and the slot takes the next seed of the queue. Slots idle only once the queue is
empty.

Each step is Diffrax's own: `solver.step`, then the step-size controller's
`adapt_step_size`, the same clipping to `t1`, saving at `ts` on the step's dense
output, and the same boolean stop rules, in the order of `diffeqsolve`'s loop
(`diffrax/_integrate.py`, `loop`). So a seed takes the very steps that `gradient_flow`
takes and ends with the same status; values agree to the rounding by which XLA may
fuse the slot-batched program differently from the seed-batched one.
"""

import diffrax as dfx
import equinox as eqx
import jax
import jax.numpy as jnp
from jaxtyping import Array, ArrayLike, Bool, Float, Int, PyTree

from ._misc import check_positive_int, select
from ._network import TwoLayerNet
from ._options import describe, flow_options, FlowOptions
from ._problem import escape_of, FlowProblem, next_phase_first_step, start, stop_rules
from ._result import finish, is_okay, STEP_COUNTS
from ._solution import Solution
from ._solver import Phase, phases_of


class RefillStats(eqx.Module):
    """How busy the slots were, over all phases: `iterations` of the slot loop, each
    advancing every busy slot by one step, and `steps`, the steps all seeds took."""

    iterations: Int[Array, ""]
    steps: Int[Array, ""]
    num_slots: int = eqx.field(static=True)

    @property
    def efficiency(self) -> float:
        """`steps` / (`num_slots` × `iterations`): 1 means no slot ever idled."""
        return float(self.steps) / (self.num_slots * int(self.iterations))


class _Run(eqx.Module):
    """One seed's solver state, as `diffeqsolve`'s loop carries it, plus its counters.

    The same structure serves three purposes: stacked over all seeds it is first every
    seed's initial state and, once the seed is finished, its final state; stacked over
    the slots it is the state of the seeds in flight."""

    y: PyTree[Array]
    t0: Float[Array, ""]  # where the solver starts (after the linear escape)
    tprev: Float[Array, ""]
    tnext: Float[Array, ""]
    dtmin: Float[Array, ""]  # in absolute time
    solver_state: PyTree
    controller_state: PyTree
    result: dfx.RESULTS
    event_mask: dict[str, Bool[Array, ""]]
    num_steps: Int[Array, ""]
    num_accepted_steps: Int[Array, ""]
    num_rejected_steps: Int[Array, ""]
    save_index: Int[Array, ""]


class _Loop(eqx.Module):
    seeds: Int[Array, " S"]  # the seed in each slot; `num_seeds` for an idle slot
    slots: _Run
    runs: _Run  # every seed: initial state until it runs, final state after
    saved: PyTree[Array]
    queued: Int[Array, ""]  # the next seed to start
    iterations: Int[Array, ""]


def refill_flow(
    nets: TwoLayerNet,
    x: Float[ArrayLike, "... n d"],
    y: Float[ArrayLike, "..."],  # (..., n) or (..., n, k)
    *,
    weights: Float[ArrayLike, "... n"] | None = None,
    data_index: Int[ArrayLike, " seeds"] | None = None,
    num_slots: int = 128,
    **flow_kwargs,
) -> tuple[Solution, RefillStats]:
    """`gradient_flow` from every net of the stacked `nets`, with `num_slots` seeds in
    flight at once, each slot refilled from the queue as soon as its seed ends.

    **Arguments:**

    - `nets`: a `TwoLayerNet` whose arrays have a leading seed axis.
    - `x`, `y`, `weights`: the data `(n, d)`, `(n,)`, shared by all seeds; or, with
      `data_index`, a table of data sets `(K, n, d)`, `(K, n)` of which seed `i` uses
      the one at `data_index[i]`.
    - `num_slots`: seeds integrated side by side (at most the number of seeds).
    - `**flow_kwargs`: the options of `gradient_flow` (`t1`, `ts`, `rtol`, `solver`,
      ...), shared by all seeds. The slots step with a smooth solver, so an activation
      with kinks (ReLU, ...) needs `kinks="smooth"` here; its exact flow is
      `gradient_flow`'s (`flow_ensemble` runs those seeds in lockstep).

    Works under `jax.jit` and `shard_map` (each device then runs its own loop).

    **Returns:** `(solution, stats)`: a `Solution` with a leading seed axis, equal in
    meaning to `jax.vmap(gradient_flow)` over the seeds, and a `RefillStats`.
    """
    check_positive_int("num_slots", num_slots)
    num_seeds = nets.a.shape[0]
    x, y = jnp.asarray(x), jnp.asarray(y)
    weights = None if weights is None else jnp.asarray(weights)
    if data_index is not None:
        data_index = jnp.asarray(data_index)
        if data_index.shape != (num_seeds,):
            raise ValueError(
                f"`data_index` must have one entry per seed, shape ({num_seeds},), got "
                f"{data_index.shape}."
            )
    net = jax.tree_util.tree_map(lambda v: v[0], nets)
    pick = (lambda v: v) if data_index is None else (lambda v: None if v is None else v[0])
    # `gradient_flow`'s checks and messages, the first seed's problem standing for all.
    _, options = flow_options(net, pick(x), pick(y), pick(weights), **flow_kwargs)
    if options.piecewise:
        raise ValueError(
            f"`refill_flow` steps with a smooth solver, which cannot follow the kinks of "
            f"{type(nets.activation).__name__} exactly. Use `gradient_flow` (or "
            "`flow_ensemble(..., schedule='lockstep')`) for the exact piecewise flow, or "
            "pass `kinks='smooth'` to step over the kinks."
        )
    context = _Context((nets, data_index), (x, y, weights), options, _clip_floor(options.t1))
    solution, stats = _refill_flow(context, num_slots=min(num_slots, num_seeds))
    return solution.with_info(describe(options, (x, y, weights))), stats


def _clip_floor(t1: Float[Array, ""]) -> Float[Array, ""]:
    """As `diffeqsolve`: a step ending within 100 ulps of t1 ends at t1."""
    floor = t1
    for _ in range(100):
        floor = jnp.nextafter(floor, -jnp.inf)
    return floor


class _Context(eqx.Module):
    """What every piece of the refilling loop reads and none changes: the seeds' inputs
    `(nets, data index or None)`, the data (one set, or a table indexed per seed), the
    options, and the time past which a step is clipped to end at `t1`."""

    inputs: tuple
    data: tuple
    options: FlowOptions
    t1_clip_floor: Float[Array, ""]

    @property
    def num_seeds(self) -> int:
        return jax.tree_util.tree_leaves(self.inputs)[0].shape[0]

    @property
    def num_saves(self) -> int:
        return self.options.ts.shape[0]

    def problem_of(self, inp) -> FlowProblem:
        """One seed's problem, from its input `(net, data_index)`."""
        net, index = inp
        data = self.data if index is None else _rows(self.data, index)
        return FlowProblem.of(net, data, self.options)

    @property
    def term(self) -> dfx.ODETerm:
        # The seed's input is the ODE's `args`: one term serves every slot.
        return dfx.ODETerm(lambda t, state, inp: self.problem_of(inp).field(t, state, None))

    def record(self, inp, state) -> dict:
        problem = self.problem_of(inp)
        return problem.observe(problem.to_params(state))

    def controller(self, dtmin):
        return self.options.coordinates.controller(self.options.rtol, dtmin)

    def running(self, run: _Run) -> Bool[Array, ""]:
        return (
            (run.tprev < self.options.t1)
            & (run.result == dfx.RESULTS.successful)
            & (run.num_steps < self.options.max_steps)
        )


def _rows(tree, index):
    return jax.tree_util.tree_map(lambda v: v[index], tree)


def _scatter(tree, rows, values):
    """`tree[rows] = values` for the rows in range; a row index past the end is
    dropped (how a slot with nothing to write says so)."""
    return jax.tree_util.tree_map(lambda v, u: v.at[rows].set(u, mode="drop"), tree, values)


@eqx.filter_jit
def _refill_flow(context: _Context, *, num_slots: int) -> tuple[Solution, RefillStats]:
    ctx = context
    first, *later = phases_of(ctx.options.solver)
    # Every seed runs the first phase; the seeds whose phase ended at its switch then
    # run the next one from there, each phase refilling its slots from its own queue
    # (as `_gradient_flow` runs one solve per phase).
    runs = jax.vmap(lambda inp: _initial_run(ctx, first, inp))(ctx.inputs)
    template = jax.eval_shape(ctx.record, _rows(ctx.inputs, 0), _rows(runs.y, 0))
    saved = jax.tree_util.tree_map(
        lambda v: jnp.full((ctx.num_seeds, ctx.num_saves) + v.shape, _unsaved(v.dtype), v.dtype),
        template,
    )
    everyone = jnp.arange(ctx.num_seeds)
    runs, saved, iterations = _run_queue(
        ctx, first, num_slots, runs, everyone, ctx.num_seeds, saved
    )
    phase_steps = [runs.num_steps]
    for previous, phase in zip([first, *later], later):
        runs, saved, more, steps = _next_phase(ctx, previous, phase, num_slots, runs, saved)
        iterations = iterations + more
        phase_steps.append(steps)
    phase_steps = jnp.stack(phase_steps, axis=1)
    solution = jax.vmap(lambda *args: _seed_solution(ctx, *args))(
        ctx.inputs, runs, saved, phase_steps
    )
    stats = RefillStats(iterations, jnp.sum(solution.num_steps), num_slots)
    return solution, stats


def _first_event(ctx: _Context, inp, state, switch_tol) -> tuple[dict, Bool[Array, ""]]:
    """The stop rules at `state` (with `switch_tol`, also the phase's switch) as
    Diffrax's event mask: only the first rule that holds, in the order of the dict's
    leaves; and whether any holds."""
    options = ctx.options
    rules = stop_rules(ctx.problem_of(inp), options.loss_tol, options.stationarity_tol, switch_tol)
    mask, happened = {}, jnp.asarray(False)
    for name in sorted(rules):
        holds = rules[name](state)
        mask[name] = holds & ~happened
        happened = happened | holds
    return mask, happened


def _new_run(ctx: _Context, phase: Phase, inp, *, t0, t_start, y0, dt0, dtmin) -> _Run:
    """A solver state at `t_start`, as `diffeqsolve` sets it up; `t0` is where the
    seed's first solve started (after the linear escape)."""
    t1, solver, term = ctx.options.t1, phase.solver, ctx.term
    tnext, controller_state = ctx.controller(dtmin).init(
        term, t_start, t1, y0, dt0, inp, solver.func, solver.error_order(term)
    )
    tnext = jnp.minimum(tnext, t1)
    mask, happened = _first_event(ctx, inp, y0, phase.switch_tol)
    zero = jnp.zeros((), jnp.int32)
    return _Run(
        y=y0,
        t0=t0,
        tprev=t_start,
        tnext=tnext,
        dtmin=dtmin,
        solver_state=solver.init(term, t_start, tnext, y0, inp),
        controller_state=jax.tree_util.tree_map(jnp.asarray, controller_state),
        result=dfx.RESULTS.where(happened, dfx.RESULTS.event_occurred, dfx.RESULTS.successful),
        event_mask=mask,
        num_steps=zero,
        num_accepted_steps=zero,
        num_rejected_steps=zero,
        save_index=zero,
    )


def _initial_run(ctx: _Context, phase: Phase, inp) -> _Run:
    """A seed's initial solver state, as `_gradient_flow` sets it up."""
    options = ctx.options
    problem = ctx.problem_of(inp)
    escape = escape_of(problem, options.escape_order, options.rtol, options.t1)
    t0, y0, time_unit = start(problem, escape, options.t1)
    return _new_run(
        ctx, phase, inp, t0=t0, t_start=t0, y0=y0, dt0=0.01 * time_unit,
        dtmin=options.dtmin * time_unit,
    )  # fmt: skip


def _run_queue(ctx: _Context, phase: Phase, num_slots: int, runs: _Run, order, count, saved):
    """Runs the seeds `order[:count]` from their states in `runs` to their ends, with
    `num_slots` in flight, each slot refilled from the queue as soon as its seed ends;
    writes their saves into `saved`. **Returns:** `(runs, saved, iterations)`."""
    num_seeds = ctx.num_seeds
    first = jnp.arange(num_slots)
    seeds = jnp.where(first < count, order[jnp.minimum(first, num_seeds - 1)], num_seeds)
    loop = jax.lax.while_loop(
        lambda c: jnp.any(c.seeds < num_seeds),
        lambda c: _refill_step(ctx, phase, order, count, c),
        _Loop(
            seeds=seeds,
            slots=_rows(runs, jnp.minimum(seeds, num_seeds - 1)),
            runs=runs,
            saved=saved,
            queued=jnp.minimum(num_slots, count),
            iterations=jnp.zeros((), jnp.int32),
        ),
    )
    return loop.runs, loop.saved, loop.iterations


def _refill_step(ctx: _Context, phase: Phase, order, count, c: _Loop) -> _Loop:
    """One iteration of the loop: every slot takes a step and saves; the slots whose
    seed ended write it back and take the next seeds of the queue, in order."""
    num_seeds = ctx.num_seeds
    inputs_in_slots = _rows(ctx.inputs, jnp.minimum(c.seeds, num_seeds - 1))
    slots, step = jax.vmap(lambda inp, run: _advance(ctx, phase, inp, run))(
        inputs_in_slots, c.slots
    )
    slots, saved = _save(ctx, phase, inputs_in_slots, c.seeds, slots, step, c.saved)
    done = (c.seeds < num_seeds) & ~jax.vmap(ctx.running)(slots)
    runs = _scatter(c.runs, jnp.where(done, c.seeds, num_seeds), slots)
    position = c.queued + jnp.cumsum(done) - 1
    following = jnp.where(position < count, order[jnp.minimum(position, num_seeds - 1)], num_seeds)
    seeds = jnp.where(done, following, c.seeds)
    slots = jax.vmap(select)(done, _rows(runs, jnp.minimum(seeds, num_seeds - 1)), slots)
    return _Loop(
        seeds=seeds,
        slots=slots,
        runs=runs,
        saved=saved,
        queued=c.queued + jnp.sum(done),
        iterations=c.iterations + 1,
    )


def _advance(ctx: _Context, phase: Phase, inp, run: _Run):
    """One iteration of `diffeqsolve`'s loop for one seed; a seed that is not running
    keeps its state. Also returns what saving needs from the step: whether it was
    accepted, its interval and its dense output."""
    t1, solver, term = ctx.options.t1, phase.solver, ctx.term
    y1, y_error, dense, solver_state, solver_result = solver.step(
        term, run.tprev, run.tnext, run.y, inp, run.solver_state, False
    )
    y_error = jax.tree_util.tree_map(lambda v: jnp.where(jnp.isnan(v), jnp.inf, v), y_error)
    keep, tprev, tnext, _, controller_state, controller_result = ctx.controller(
        run.dtmin
    ).adapt_step_size(
        run.tprev, run.tnext, run.y, y1, inp, y_error, solver.error_order(term),
        run.controller_state,
    )  # fmt: skip
    tprev = jnp.minimum(tprev, t1)
    clipped = jnp.where(keep, t1, tprev + 0.5 * (t1 - tprev))
    tnext = jnp.where(tnext > ctx.t1_clip_floor, clipped, tnext)
    y = select(keep, y1, run.y)
    solver_result = dfx.RESULTS.where(keep, solver_result, dfx.RESULTS.successful)
    result = dfx.RESULTS.where(is_okay(run.result), solver_result, run.result)
    result = dfx.RESULTS.where(is_okay(result), controller_result, result)
    mask, happened = _first_event(ctx, inp, y, phase.switch_tol)
    result = dfx.RESULTS.where(happened, dfx.RESULTS.event_occurred, result)
    new = _Run(
        y=y,
        t0=run.t0,
        tprev=tprev,
        tnext=tnext,
        dtmin=run.dtmin,
        solver_state=select(keep, solver_state, run.solver_state),
        controller_state=controller_state,
        result=result,
        event_mask=mask,
        num_steps=run.num_steps + 1,
        num_accepted_steps=run.num_accepted_steps + keep.astype(jnp.int32),
        num_rejected_steps=run.num_rejected_steps + (~keep).astype(jnp.int32),
        save_index=run.save_index,
    )
    go = ctx.running(run)
    return select(go, new, run), (go & keep, run.tprev, run.tnext, dense)


def _save(ctx: _Context, phase: Phase, inputs_in_slots, seeds, slots: _Run, step, saved):
    """Records every save time inside each slot's accepted step, interpolating the
    step's dense output, straight into the seed's row of `saved`."""
    ts = ctx.options.ts
    accepted, t_lo, t_hi, dense = step
    last = ctx.num_saves - 1

    def pending(index):
        return accepted & (index <= last) & (ts[jnp.minimum(index, last)] <= t_hi)

    def interpolate(lo, hi, info, t):
        return phase.solver.interpolation_cls(t0=lo, t1=hi, **info).evaluate(t)

    def body(carry):
        index, saved = carry
        write = pending(index)
        k = jnp.minimum(index, last)
        t_save = jnp.maximum(ts[k], slots.t0)  # as `_gradient_flow`'s `max(ts, t0)`
        y_save = jax.vmap(interpolate)(t_lo, t_hi, dense, t_save)
        values = jax.vmap(ctx.record)(inputs_in_slots, y_save)
        rows = jnp.where(write, seeds, ctx.num_seeds)
        saved = jax.tree_util.tree_map(
            lambda v, u: v.at[rows, k].set(u, mode="drop"), saved, values
        )
        return index + write.astype(jnp.int32), saved

    index, saved = jax.lax.while_loop(
        lambda carry: jnp.any(pending(carry[0])), body, (slots.save_index, saved)
    )
    return eqx.tree_at(lambda r: r.save_index, slots, index), saved


def _next_phase(ctx: _Context, previous: Phase, phase: Phase, num_slots: int, runs: _Run, saved):
    """The next phase, for the seeds whose `previous` phase ended at its switch: from
    there to `t1`, starting with the previous phase's mean accepted step and fresh
    counters and stop-rule masks. **Returns:** `(runs, saved, iterations, steps)` with
    every seed's end, its counts summed over the phases so far, and its steps in this
    phase."""
    switched = (runs.result == dfx.RESULTS.event_occurred) & runs.event_mask["switch"]

    def resume(inp, run: _Run) -> _Run:
        dt0 = next_phase_first_step(run.tprev, run.t0, run.num_accepted_steps)
        new = _new_run(
            ctx, phase, inp, t0=run.t0, t_start=run.tprev, y0=run.y, dt0=dt0, dtmin=run.dtmin
        )
        return eqx.tree_at(lambda r: r.save_index, new, run.save_index)

    order = jnp.argsort(~switched, stable=True)  # the seeds that switched, in order
    late, saved, iterations = _run_queue(
        ctx, phase, num_slots, jax.vmap(resume)(ctx.inputs, runs), order, jnp.sum(switched),
        saved,
    )  # fmt: skip
    steps = jnp.where(switched, late.num_steps, 0)
    # One structure for both ends: the solver states differ and are not needed after;
    # the earlier phase's switch is not a stop rule of the run.
    late = eqx.tree_at(
        lambda r: [r.solver_state] + [getattr(r, name) for name in STEP_COUNTS],
        late,
        [None] + [getattr(late, name) + getattr(runs, name) for name in STEP_COUNTS],
        is_leaf=lambda v: v is None,
    )
    early = eqx.tree_at(
        lambda r: (r.solver_state, r.event_mask),
        runs,
        (None, {k: v for k, v in runs.event_mask.items() if k != "switch"}),
        is_leaf=lambda v: v is None,
    )
    if phase.switch_tol is not None:  # a middle phase: its switch ends the run here
        early = eqx.tree_at(
            lambda r: r.event_mask, early, dict(early.event_mask, switch=jnp.zeros_like(switched))
        )
    ends = jax.vmap(select)(switched, late, early)
    return ends, saved, iterations, steps


def _seed_solution(ctx: _Context, inp, run: _Run, saved, phase_steps) -> Solution:
    """The `Solution` of one seed, from its final state, as `_gradient_flow` makes it
    from `diffeqsolve`'s."""
    options = ctx.options
    t1 = options.t1
    problem = ctx.problem_of(inp)
    escape = escape_of(problem, options.escape_order, options.rtol, t1)
    if escape is not None:
        # A seed whose escape jumped straight to t1 never entered the solver, and
        # `diffeqsolve` saves its start at every save time.
        never = (run.t0 == t1) & (run.num_steps == 0)
        at_end = problem.observe(problem.to_params(run.y))
        saved = select(never, jax.tree_util.tree_map(lambda v: v[None], at_end), saved)
    # `diffeqsolve` ends with `max_steps_reached` when its loop would go on.
    result = dfx.RESULTS.where(
        (run.tprev < t1) & (run.result == dfx.RESULTS.successful),
        dfx.RESULTS.max_steps_reached,
        run.result,
    )
    return finish(
        problem,
        escape,
        options.solver,
        options.ts,
        saved,
        t0=run.t0,
        y=run.y,
        t_stop=run.tprev,
        result=result,
        event_mask=run.event_mask,
        phase_steps=list(phase_steps),
        num_accepted_steps=run.num_accepted_steps,
        num_rejected_steps=run.num_rejected_steps,
    )


def _unsaved(dtype):
    """What an unwritten save holds before `finish` masks it: inf, as `diffeqsolve`."""
    return jnp.inf if jnp.issubdtype(dtype, jnp.inexact) else 0
