import dataclasses
import warnings

import equinox as eqx
import jax
import jax.numpy as jnp
import numpy as np
from jaxtyping import Array, ArrayLike, Float, Int, PyTree

from ._network import TwoLayerNet
from ._status import Status, status_messages, StopReason


class Solution(eqx.Module):
    """The result of `gradient_flow` or `gradient_descent`.

    Under `jax.vmap` (or from `flow_ensemble`) every array field gains a leading seed
    axis.

    **Fields:**

    - `net`: the network at the stop time `t_stop`.
    - `final_loss`: the training loss at `t_stop`.
    - `stationarity`: $\\|\\dot\\theta\\| / \\|\\theta\\|$ at `t_stop`, the scale-free
      measure of how far the run is from a stationary point ($\\|\\nabla L\\| /
      \\|\\theta\\|$ for a smooth activation; with the exact flow of an activation with
      kinks, the velocity of the Filippov flow, which is zero at a pinned minimum where
      no gradient exists). Compare it with `stationarity_tol` to judge whether the run
      converged.
    - `ts`: the times the saved states belong to, shape `(T,)` (for descent, the
      multiples of the learning rate nearest to the requested ones).
    - `nets`: the networks at `ts`, stacked along a leading axis of length `T`.
    - `loss`: the training loss at `ts`.
    - `observables`: `{name: value at ts}` for each requested observable.
    - `t_stop`: where the run ended (`t1`, or earlier if a stop rule fired or it failed).
      Saved values at times after `t_stop` are NaN: read the end state from `net`,
      `final_loss` and `stationarity`.
    - `num_steps`: accepted plus rejected solver steps (gradient steps for descent).
    - `num_accepted_steps`, `num_rejected_steps`.
    - `num_evaluations`: gradient evaluations, counted from the solver's tableau.
    - `phase_steps`: the steps (accepted plus rejected) of each phase of a phased
      solver such as `TwoPhase`, shape `(phases,)`; one entry for any other solver.
    - `status`: integer code, `0` = success; see `Status` and `.message`.
    - `stop_reason`: integer code, see `StopReason`.
    - `info`: how the run was made, `(name, value)` strings: options, versions and a
      fingerprint of the data; `to_dataset` stores them as attributes.
    """

    # Leading axes (seeds, grid points) where the solution is a batch; NumPy arrays
    # where it was read back from a checkpoint.
    net: TwoLayerNet
    final_loss: Float[ArrayLike, "..."]
    stationarity: Float[ArrayLike, "..."]
    ts: Float[ArrayLike, "... T"]
    nets: TwoLayerNet
    loss: Float[ArrayLike, "... T"]
    observables: dict[str, PyTree]
    t_stop: Float[ArrayLike, "..."]
    num_steps: Int[ArrayLike, "..."]
    num_accepted_steps: Int[ArrayLike, "..."]
    num_rejected_steps: Int[ArrayLike, "..."]
    num_evaluations: Int[ArrayLike, "..."]
    phase_steps: Int[ArrayLike, "... phases"]
    status: Int[ArrayLike, "..."]
    stop_reason: Int[ArrayLike, "..."]
    info: tuple[tuple[str, str], ...] = eqx.field(static=True, default=())

    @property
    def message(self) -> "str | np.ndarray":
        """Readable message for `status` (an array of them for an ensemble)."""
        return status_messages(self.status)

    @property
    def succeeded(self):
        return self.status == Status.SUCCESS

    def with_info(self, info: tuple[tuple[str, str], ...]) -> "Solution":
        """This solution, its `info` replaced."""
        return dataclasses.replace(self, info=tuple(info))

    def summary(self, converged_tol: float = 1e-6) -> str:
        """A few lines describing the run or ensemble, for notebooks and logs.

        A successful run counts as converged if its `stationarity` is at most
        `converged_tol`; the others are flagged, with what to change.
        """
        status = np.atleast_1d(np.asarray(self.status))
        reason = np.atleast_1d(np.asarray(self.stop_reason))
        steps = np.atleast_1d(np.asarray(self.num_steps))
        final_loss = np.atleast_1d(np.asarray(self.final_loss))
        stationarity = np.atleast_1d(np.asarray(self.stationarity))
        lines = [f"{status.size} run(s); steps: mean {steps.mean():.0f}, max {steps.max()}"]
        for code in Status:
            count = int(np.sum(status == code))
            if count:
                lines.append(f"  {code.name.lower()}: {count}")
        for code in StopReason:
            count = int(np.sum((reason == code) & (status == Status.SUCCESS)))
            if count and code != StopReason.FAILED:
                lines.append(f"  stopped: {code.message}: {count}")
        lines.append(f"  final loss: median {np.nanmedian(final_loss):.3e}")
        ok = status == Status.SUCCESS
        unconverged = ok & ~(stationarity <= converged_tol)
        if np.any(unconverged):
            worst = float(np.nanmax(stationarity[unconverged]))
            lines.append(
                f"  not converged: {int(np.sum(unconverged))} successful run(s) end with "
                f"‖θ̇‖/‖θ‖ > {converged_tol:g} (largest {worst:.1e}). Raise `t1` (the "
                "late phase of a flow is slow), or pass a large `t1` with "
                f"`stationarity_tol={converged_tol:g}` so each run stops once it converges."
            )
        full = event_log_full(self)
        if full:
            lines.append(f"  event log full: {full}")
        return "\n".join(lines)


def event_log_full(solution: Solution) -> str:
    """What an exact kinked flow's event log dropped, or "" if it held every event (or
    the solution has no log, or is being traced)."""
    events = solution.observables.get("events") if isinstance(solution.observables, dict) else None
    if events is None or isinstance(events.num_events, jax.core.Tracer):
        return ""
    logged = np.asarray(events.neuron).shape[-1]
    total = np.atleast_1d(np.asarray(events.num_events))
    if not np.any(total > logged):
        return ""
    # A power of two, so that a rerun with it hits the compilation cache of the next one.
    needed = 1 << int(total.max() - 1).bit_length()
    return (
        f"{int(np.sum(total > logged))} run(s) had more than `max_events` = {logged} events "
        f"(up to {int(total.max())}); the totals are exact, the records past the log's end "
        f"were dropped. Pass `max_events={needed}` to keep them all."
    )


def warn_if_log_full(solution: Solution) -> Solution:
    """Warn when the event log of an exact kinked flow dropped records: the flow itself
    is exact, but a user reading the log would otherwise miss the end of the run."""
    full = event_log_full(solution)
    if full:
        warnings.warn(f"Event log full: {full}", stacklevel=3)
    return solution


def observe(theta, unravel, loss_of, observables) -> dict:
    """What is saved at a save time: θ, the loss and every observable."""
    model = unravel(theta)
    return dict(
        theta=theta,
        loss=loss_of(theta),
        observables={name: fn(model) for name, fn in observables.items()},
    )


def assemble(unravel, theta_end, ts, saved, *, loss_of=None, velocity=None, **counts) -> Solution:
    """A `Solution` from the final θ (any PyTree of arrays), the `observe` records at
    `ts`, and the run's `t_stop`, step counts, `status` and `stop_reason`. `loss_of(θ)`
    gives the final loss; `velocity` is $\\dot\\theta$ at the end (default
    $-\\nabla$ `loss_of`)."""
    if loss_of is None:
        final_loss = stationarity = jnp.full((), jnp.nan, ts.dtype)
    else:
        final_loss = loss_of(theta_end)
        if velocity is None:
            velocity = jax.grad(loss_of)(theta_end)
        stationarity = _norm(velocity) / _norm(theta_end)
    return Solution(
        net=unravel(theta_end),
        final_loss=final_loss,
        stationarity=stationarity,
        ts=ts,
        nets=jax.vmap(unravel)(saved["theta"]),
        loss=saved["loss"],
        observables=saved["observables"],
        **counts,
    )


def _norm(tree) -> Float[Array, ""]:
    return jnp.sqrt(sum(jnp.sum(leaf**2) for leaf in jax.tree_util.tree_leaves(tree)))
