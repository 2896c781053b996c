"""The `Solution` of one seed from where its solver ended: status, stop reason,
evaluation counts, and the save times that lie outside the solver's run."""

import diffrax as dfx
import jax
import jax.numpy as jnp
from jaxtyping import Array, Bool, Int

from ._escape import LinearEscape
from ._problem import FlowProblem
from ._solution import assemble, Solution
from ._solver import phases_of
from ._status import Status, StopReason


# The step counts of a solve, as Diffrax's `stats` and `Solution` name them.
STEP_COUNTS = ("num_steps", "num_accepted_steps", "num_rejected_steps")


def is_okay(result: dfx.RESULTS) -> Bool[Array, ""]:
    """A run that reached `t1` or met a stop rule."""
    return (result == dfx.RESULTS.successful) | (result == dfx.RESULTS.event_occurred)


def per_save(mask: Bool[Array, " T"], value: Array) -> Bool[Array, "T ..."]:
    """`mask` over the save times, shaped to broadcast against `value`, saved at each."""
    return mask.reshape((-1,) + (1,) * (value.ndim - 1))


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
    phase_steps: list[Int[Array, ""]],
    num_accepted_steps,
    num_rejected_steps,
) -> Solution:
    """The `Solution` from the solver's end: its state `y` at `t_stop`, its `result`,
    the `event_mask` of its stop rules, its accepted and rejected steps and the steps of
    each phase of `solver`, and `saved`, the `observe` records at the save times
    `max(ts, t0)`."""
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

    phase_steps = jnp.stack([jnp.asarray(steps, jnp.int32) for steps in phase_steps])
    return assemble(
        problem.unravel,
        theta_end,
        ts,
        saved,
        loss_of=problem.loss,
        t_stop=t_stop,
        num_steps=jnp.sum(phase_steps, dtype=jnp.int32),
        num_accepted_steps=num_accepted_steps,
        num_rejected_steps=num_rejected_steps,
        num_evaluations=num_evaluations(solver, phase_steps, escape is not None),
        phase_steps=phase_steps,
        status=status,
        stop_reason=stop_reason.astype(jnp.int32),
    )


def num_evaluations(solver, phase_steps: Int[Array, " phases"], escaped: bool) -> Int[Array, ""]:
    """Vector-field evaluations of a run: one that set the initial time scale, one more
    for the linear escape's defect probe, and each phase's per-step count (a phase that
    took no step costs nothing); -1 where a phase's solver has no known count."""
    counts = [evaluations_per_step(phase.solver) for phase in phases_of(solver)]
    if any(count is None for count in counts):
        return jnp.asarray(-1, jnp.int32)
    total = jnp.asarray(1 + int(escaped), jnp.int32)
    for i, (per_step, at_start) in enumerate(counts):
        # The first phase always starts (its FSAL evaluation); a later one only if
        # the run switched into it.
        ran = True if i == 0 else phase_steps[i] > 0
        total = total + per_step * phase_steps[i] + jnp.where(ran, at_start, 0)
    return total


def evaluations_per_step(solver) -> tuple[int, int] | None:
    """`(per step, at start)` vector-field evaluations of a Runge–Kutta solver.

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
