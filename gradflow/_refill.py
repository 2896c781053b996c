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

from ._coordinates import AbstractCoordinates, ScaleFree
from ._flow import Observables
from ._loss import Reduction
from ._network import TwoLayerNet
from ._problem import (
    finish,
    flow_options,
    FlowProblem,
    implicit_first_step,
    is_okay,
    linear_escape,
    runs_piecewise,
    start,
    STEP_COUNTS,
    stop_rules,
)
from ._solution import Solution
from ._solver import TwoPhase


class RefillStats(eqx.Module):
    """How busy the slots were: `efficiency` = steps taken by all seeds /
    (`num_slots` × `iterations`); 1 means no slot ever idled."""

    iterations: Int[Array, ""]
    num_slots: int = eqx.field(static=True)


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
    y: Float[ArrayLike, "... n"],
    *,
    weights: Float[ArrayLike, "... n"] | None = None,
    data_index: Int[ArrayLike, " seeds"] | None = None,
    num_slots: int = 128,
    t1: float | Float[ArrayLike, ""],
    ts: Float[ArrayLike, " T"] | None = None,
    reduction: Reduction = "mean",
    rtol: float = 1e-10,
    solver: dfx.AbstractAdaptiveSolver | None = None,
    coordinates: AbstractCoordinates = ScaleFree(),
    loss_tol: float | None = None,
    stationarity_tol: float | None = None,
    observables: Observables | None = None,
    max_steps: int = 100_000,
    dtmin: float = 1e-12,
    linear_escape: bool = True,
    kinks: str = "exact",
) -> tuple[Solution, RefillStats]:
    """`gradient_flow` from every net of the stacked `nets`, with `num_slots` seeds in
    flight at once, each slot refilled from the queue as soon as its seed ends.

    **Arguments:**

    - `nets`: a `TwoLayerNet` whose arrays have a leading seed axis.
    - `x`, `y`, `weights`: the data `(n, d)`, `(n,)`, shared by all seeds; or, with
      `data_index`, a table of data sets `(K, n, d)`, `(K, n)` of which seed `i` uses
      the one at `data_index[i]`.
    - `num_slots`: seeds integrated side by side (at most the number of seeds).
    - `kinks`: the slots step with a smooth solver, so an activation with kinks (ReLU,
      ...) needs `kinks="smooth"` here; its exact flow is `gradient_flow`'s
      (`flow_ensemble` runs those seeds with `schedule="chunks"`).
    - everything else: as `gradient_flow`, shared by all seeds.

    Works under `jax.jit` and `shard_map` (each device then runs its own loop).

    **Returns:** `(solution, stats)`: a `Solution` with a leading seed axis, equal in
    meaning to `jax.vmap(gradient_flow)` over the seeds, and a `RefillStats`.
    """
    if not isinstance(num_slots, int) or isinstance(num_slots, bool) or num_slots < 1:
        raise ValueError(f"`num_slots` must be a positive integer, got {num_slots!r}.")
    if runs_piecewise(nets, kinks):
        raise ValueError(
            f"`refill_flow` steps with a smooth solver, which cannot follow the kinks of "
            f"{type(nets.activation).__name__} exactly. Use `gradient_flow` (or "
            "`flow_ensemble(..., schedule='chunks')`) for the exact piecewise flow, or pass "
            "`kinks='smooth'` to step over the kinks."
        )
    num_seeds = nets.a.shape[0]
    options = dict(
        t1=t1,
        ts=ts,
        reduction=reduction,
        rtol=rtol,
        solver=solver,
        coordinates=coordinates,
        loss_tol=loss_tol,
        stationarity_tol=stationarity_tol,
        observables=observables,
        max_steps=max_steps,
        dtmin=dtmin,
        linear_escape=linear_escape,
    )
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
    _, arrays, statics = flow_options(net, pick(x), pick(y), pick(weights), **options, kinks=kinks)
    return _refill_flow(
        (nets, data_index),
        (x, y, weights),
        **arrays,
        **statics,
        num_slots=min(num_slots, num_seeds),
    )


def _select(pred, on_true, on_false):
    return jax.tree_util.tree_map(lambda u, v: jnp.where(pred, u, v), on_true, on_false)


def _rows(tree, index):
    return jax.tree_util.tree_map(lambda v: v[index], tree)


def _scatter(tree, rows, values):
    """`tree[rows] = values` for the rows in range; a row index past the end is
    dropped (how a slot with nothing to write says so)."""
    return jax.tree_util.tree_map(lambda v, u: v.at[rows].set(u, mode="drop"), tree, values)


@eqx.filter_jit
def _refill_flow(
    inputs,
    data,
    t1,
    ts,
    rtol,
    loss_tol,
    stationarity_tol,
    dtmin,
    *,
    reduction,
    solver,
    coordinates,
    observables,
    max_steps,
    escape_order,
    num_slots,
):
    num_seeds = jax.tree_util.tree_leaves(inputs)[0].shape[0]
    num_saves = ts.shape[0]

    def problem_of(inp) -> FlowProblem:
        """One seed's problem, from its input `(net, data_index)`."""
        net, index = inp
        x, y, weights = data if index is None else _rows(data, index)
        return FlowProblem(
            net,
            x,
            y,
            weights,
            reduction=reduction,
            coordinates=coordinates,
            observables=observables,
        )

    # The seed's input is the ODE's `args`: one term serves every slot.
    term = dfx.ODETerm(lambda t, state, inp: problem_of(inp).field(t, state, None))
    # A `TwoPhase` solver: a first queue of every seed with the explicit solver and the
    # switch as one more stop rule, then a second queue of the seeds that switched, with
    # the implicit solver from where they stopped (as `_gradient_flow` runs two solves).
    two_phase = isinstance(solver, TwoPhase)
    first_solver = solver.explicit if two_phase else solver

    def record(inp, state):
        problem = problem_of(inp)
        return problem.observe(problem.to_params(state))

    def first_event(inp, state, switch) -> tuple[dict[str, Bool[Array, ""]], Bool[Array, ""]]:
        """The stop rules at `state` (with `switch`, also a `TwoPhase` solver's switch)
        as Diffrax's event mask: only the first rule that holds, in the order of the
        dict's leaves; and whether any holds."""
        switch_tol = solver.switch_tol if switch else None
        rules = stop_rules(problem_of(inp), loss_tol, stationarity_tol, switch_tol)
        mask, happened = {}, jnp.asarray(False)
        for name in sorted(rules):
            holds = rules[name](state)
            mask[name] = holds & ~happened
            happened = happened | holds
        return mask, happened

    def new_run(inp, solver, *, t0, t_start, y0, dt0, dtmin, switch) -> _Run:
        """A solver state at `t_start`, as `diffeqsolve` sets it up; `t0` is where the
        seed's first solve started (after the linear escape)."""
        controller = coordinates.controller(rtol, dtmin)
        tnext, controller_state = controller.init(
            term, t_start, t1, y0, dt0, inp, solver.func, solver.error_order(term)
        )
        tnext = jnp.minimum(tnext, t1)
        mask, happened = first_event(inp, y0, switch)
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

    def initial_run(inp) -> _Run:
        """A seed's initial solver state, as `_gradient_flow` sets it up."""
        problem = problem_of(inp)
        escape = linear_escape(problem, escape_order, rtol, t1)
        t0, y0, time_unit = start(problem, escape, t1)
        return new_run(
            inp, first_solver, t0=t0, t_start=t0, y0=y0, dt0=0.01 * time_unit,
            dtmin=dtmin * time_unit, switch=two_phase,
        )  # fmt: skip

    t1_clip_floor = t1
    for _ in range(100):  # as `diffeqsolve`: a step ending this close to t1 ends at t1
        t1_clip_floor = jnp.nextafter(t1_clip_floor, -jnp.inf)

    def running(run: _Run) -> Bool[Array, ""]:
        return (
            (run.tprev < t1) & (run.result == dfx.RESULTS.successful) & (run.num_steps < max_steps)
        )

    def run_queue(phase_solver, switch, runs: _Run, order, count, saved):
        """Runs the seeds `order[:count]` from their states in `runs` to their ends, with
        `num_slots` in flight, each slot refilled from the queue as soon as its seed
        ends; writes their saves into `saved`. **Returns:** `(runs, saved, iterations)`."""
        error_order = phase_solver.error_order(term)

        def advance(inp, run: _Run):
            """One iteration of `diffeqsolve`'s loop for one seed; a seed that is not
            running keeps its state. Also returns what saving needs from the step."""
            y1, y_error, dense, solver_state, solver_result = phase_solver.step(
                term, run.tprev, run.tnext, run.y, inp, run.solver_state, False
            )
            y_error = jax.tree_util.tree_map(lambda v: jnp.where(jnp.isnan(v), jnp.inf, v), y_error)
            controller = coordinates.controller(rtol, run.dtmin)
            keep, tprev, tnext, _, controller_state, controller_result = controller.adapt_step_size(
                run.tprev, run.tnext, run.y, y1, inp, y_error, error_order, run.controller_state
            )
            tprev = jnp.minimum(tprev, t1)
            clipped = jnp.where(keep, t1, tprev + 0.5 * (t1 - tprev))
            tnext = jnp.where(tnext > t1_clip_floor, clipped, tnext)
            y = _select(keep, y1, run.y)
            solver_result = dfx.RESULTS.where(keep, solver_result, dfx.RESULTS.successful)
            result = dfx.RESULTS.where(is_okay(run.result), solver_result, run.result)
            result = dfx.RESULTS.where(is_okay(result), controller_result, result)
            mask, happened = first_event(inp, y, switch)
            result = dfx.RESULTS.where(happened, dfx.RESULTS.event_occurred, result)
            new = _Run(
                y=y,
                t0=run.t0,
                tprev=tprev,
                tnext=tnext,
                dtmin=run.dtmin,
                solver_state=_select(keep, solver_state, run.solver_state),
                controller_state=controller_state,
                result=result,
                event_mask=mask,
                num_steps=run.num_steps + 1,
                num_accepted_steps=run.num_accepted_steps + keep.astype(jnp.int32),
                num_rejected_steps=run.num_rejected_steps + (~keep).astype(jnp.int32),
                save_index=run.save_index,
            )
            go = running(run)
            return _select(go, new, run), (go & keep, run.tprev, run.tnext, dense)

        def save(inputs_in_slots, seeds, slots: _Run, step, saved):
            """Records every save time inside each slot's accepted step, interpolating the
            step's dense output, straight into the seed's row of `saved`."""
            accepted, t_lo, t_hi, dense = step
            last = num_saves - 1

            def pending(index):
                return accepted & (index <= last) & (ts[jnp.minimum(index, last)] <= t_hi)

            def body(carry):
                index, saved = carry
                write = pending(index)
                k = jnp.minimum(index, last)
                t_save = jnp.maximum(ts[k], slots.t0)  # as `_gradient_flow`'s `max(ts, t0)`
                y_save = jax.vmap(
                    lambda lo, hi, info, t: phase_solver.interpolation_cls(
                        t0=lo, t1=hi, **info
                    ).evaluate(t)
                )(t_lo, t_hi, dense, t_save)
                values = jax.vmap(record)(inputs_in_slots, y_save)
                rows = jnp.where(write, seeds, num_seeds)
                saved = jax.tree_util.tree_map(
                    lambda v, u: v.at[rows, k].set(u, mode="drop"), saved, values
                )
                return index + write.astype(jnp.int32), saved

            index, saved = jax.lax.while_loop(
                lambda carry: jnp.any(pending(carry[0])), body, (slots.save_index, saved)
            )
            return eqx.tree_at(lambda r: r.save_index, slots, index), saved

        def body(c: _Loop) -> _Loop:
            inputs_in_slots = _rows(inputs, jnp.minimum(c.seeds, num_seeds - 1))
            slots, step = jax.vmap(advance)(inputs_in_slots, c.slots)
            slots, saved = save(inputs_in_slots, c.seeds, slots, step, c.saved)
            done = (c.seeds < num_seeds) & ~jax.vmap(running)(slots)
            runs = _scatter(c.runs, jnp.where(done, c.seeds, num_seeds), slots)
            # Refill: the finished slots take the next seeds of the queue, in order.
            position = c.queued + jnp.cumsum(done) - 1
            following = jnp.where(
                position < count, order[jnp.minimum(position, num_seeds - 1)], num_seeds
            )
            seeds = jnp.where(done, following, c.seeds)
            slots = jax.vmap(_select)(done, _rows(runs, jnp.minimum(seeds, num_seeds - 1)), slots)
            return _Loop(
                seeds=seeds,
                slots=slots,
                runs=runs,
                saved=saved,
                queued=c.queued + jnp.sum(done),
                iterations=c.iterations + 1,
            )

        first = jnp.arange(num_slots)
        seeds = jnp.where(first < count, order[jnp.minimum(first, num_seeds - 1)], num_seeds)
        loop = jax.lax.while_loop(
            lambda c: jnp.any(c.seeds < num_seeds),
            body,
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

    def second_phase(runs: _Run, saved, iterations):
        """The implicit phase of a `TwoPhase` solver, for the seeds whose first phase
        ended at the switch: from there to `t1`, starting with the first phase's mean
        step and fresh counters and stop-rule masks. **Returns:** `(runs, saved,
        iterations, implicit_steps)` with every seed's end and its counts summed over
        both phases."""
        switched = (runs.result == dfx.RESULTS.event_occurred) & runs.event_mask["switch"]

        def resume(inp, run: _Run) -> _Run:
            dt0 = implicit_first_step(run.tprev, run.t0, run.num_accepted_steps)
            new = new_run(
                inp, solver.implicit, t0=run.t0, t_start=run.tprev, y0=run.y, dt0=dt0,
                dtmin=run.dtmin, switch=False,
            )  # fmt: skip
            return eqx.tree_at(lambda r: r.save_index, new, run.save_index)

        order = jnp.argsort(~switched, stable=True)  # the seeds that switched, in order
        late, saved, more = run_queue(
            solver.implicit, False, jax.vmap(resume)(inputs, runs), order, jnp.sum(switched),
            saved,
        )  # fmt: skip
        implicit_steps = jnp.where(switched, late.num_steps, 0)
        # One structure for both ends: the solver states differ and are not needed after.
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
        ends = jax.vmap(_select)(switched, late, early)
        return ends, saved, iterations + more, implicit_steps

    runs = jax.vmap(initial_run)(inputs)
    template = jax.eval_shape(record, _rows(inputs, 0), _rows(runs.y, 0))
    saved = jax.tree_util.tree_map(
        lambda v: jnp.full((num_seeds, num_saves) + v.shape, _unsaved(v.dtype), v.dtype),
        template,
    )
    everyone = jnp.arange(num_seeds)
    runs, saved, iterations = run_queue(first_solver, two_phase, runs, everyone, num_seeds, saved)
    implicit_steps = None
    if two_phase:
        runs, saved, iterations, implicit_steps = second_phase(runs, saved, iterations)

    def seed_solution(inp, run: _Run, saved, implicit_steps) -> Solution:
        """The `Solution` of one seed, from its final state, as `_gradient_flow` makes
        it from `diffeqsolve`'s."""
        problem = problem_of(inp)
        escape = linear_escape(problem, escape_order, rtol, t1)
        if escape is not None:
            # A seed whose escape jumped straight to t1 never entered the solver, and
            # `diffeqsolve` saves its start at every save time.
            never = (run.t0 == t1) & (run.num_steps == 0)
            at_end = problem.observe(problem.to_params(run.y))
            saved = _select(never, jax.tree_util.tree_map(lambda v: v[None], at_end), saved)
        # `diffeqsolve` ends with `max_steps_reached` when its loop would go on.
        result = dfx.RESULTS.where(
            (run.tprev < t1) & (run.result == dfx.RESULTS.successful),
            dfx.RESULTS.max_steps_reached,
            run.result,
        )
        return finish(
            problem,
            escape,
            solver,
            ts,
            saved,
            t0=run.t0,
            y=run.y,
            t_stop=run.tprev,
            result=result,
            event_mask=run.event_mask,
            num_steps=run.num_steps,
            num_accepted_steps=run.num_accepted_steps,
            num_rejected_steps=run.num_rejected_steps,
            implicit_steps=implicit_steps,
        )

    solution = jax.vmap(seed_solution)(inputs, runs, saved, implicit_steps)
    return solution, RefillStats(iterations=iterations, num_slots=num_slots)


def _unsaved(dtype):
    """What an unwritten save holds before `finish` masks it: inf, as `diffeqsolve`."""
    return jnp.inf if jnp.issubdtype(dtype, jnp.inexact) else 0


def efficiency(solution: Solution, stats: RefillStats) -> float:
    """Steps taken by all seeds / (slots × loop iterations)."""
    return float(jnp.sum(solution.num_steps)) / (stats.num_slots * int(stats.iterations))
