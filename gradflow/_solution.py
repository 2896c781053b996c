import equinox as eqx
import jax
import numpy as np
from jaxtyping import Array, Float, Int, PyTree

from ._network import TwoLayerNet
from ._status import Status, status_messages, StopReason


class Solution(eqx.Module):
    """The result of `gradient_flow` or `gradient_descent`.

    Under `jax.vmap` (or from `flow_ensemble`) every field gains a leading seed axis.

    **Fields:**

    - `net`: the network at the stop time `t_stop`.
    - `ts`: the save times, shape `(T,)`.
    - `nets`: the networks at `ts`, stacked along a leading axis of length `T`.
    - `loss`: the training loss at `ts`.
    - `observables`: `{name: value at ts}` for each requested observable.
    - `t_stop`: where the run ended (`t1`, or earlier if a stop rule fired or it failed).
      Saved values at times after `t_stop` are NaN.
    - `num_steps`: accepted plus rejected solver steps (gradient steps for descent).
    - `num_accepted_steps`, `num_rejected_steps`.
    - `num_evaluations`: gradient evaluations, counted from the solver's tableau.
    - `phase_steps`: the steps (accepted plus rejected) of each phase of a phased
      solver such as `TwoPhase`, shape `(phases,)`; one entry for any other solver.
    - `status`: integer code, `0` = success; see `Status` and `.message`.
    - `stop_reason`: integer code, see `StopReason`.
    """

    net: TwoLayerNet
    ts: Float[Array, " T"]
    nets: TwoLayerNet
    loss: Float[Array, " T"]
    observables: dict[str, PyTree[Array]]
    t_stop: Float[Array, ""]
    num_steps: Int[Array, ""]
    num_accepted_steps: Int[Array, ""]
    num_rejected_steps: Int[Array, ""]
    num_evaluations: Int[Array, ""]
    phase_steps: Int[Array, " phases"]
    status: Int[Array, ""]
    stop_reason: Int[Array, ""]

    @property
    def message(self) -> "str | np.ndarray":
        """Readable message for `status` (an array of them for an ensemble)."""
        return status_messages(self.status)

    @property
    def succeeded(self):
        return self.status == Status.SUCCESS

    def summary(self) -> str:
        """A few lines describing the run or ensemble, for notebooks and logs."""
        status = np.atleast_1d(np.asarray(self.status))
        reason = np.atleast_1d(np.asarray(self.stop_reason))
        steps = np.atleast_1d(np.asarray(self.num_steps))
        final_loss = np.atleast_2d(np.asarray(self.final_loss()))
        lines = [f"{status.size} run(s); steps: mean {steps.mean():.0f}, max {steps.max()}"]
        for code in Status:
            count = int(np.sum(status == code))
            if count:
                lines.append(f"  {code.name.lower()}: {count}")
        for code in StopReason:
            count = int(np.sum((reason == code) & (status == Status.SUCCESS)))
            if count and code != StopReason.FAILED:
                lines.append(f"  stopped because it {code.message}: {count}")
        lines.append(f"  final loss: median {np.nanmedian(final_loss):.3e}")
        return "\n".join(lines)

    def final_loss(self) -> np.ndarray:
        """The last finite saved loss of each run."""
        loss = np.asarray(self.loss)
        finite = np.isfinite(loss)
        last = np.maximum(finite.shape[-1] - 1 - np.argmax(finite[..., ::-1], axis=-1), 0)
        return np.take_along_axis(loss, last[..., None], axis=-1)[..., 0]


def observe(theta, unravel, loss_of, observables) -> dict:
    """What is saved at a save time: θ, the loss and every observable."""
    model = unravel(theta)
    return dict(
        theta=theta,
        loss=loss_of(theta),
        observables={name: fn(model) for name, fn in observables.items()},
    )


def assemble(unravel, theta_end, ts, saved, **counts) -> Solution:
    """A `Solution` from the final θ, the `observe` records at `ts`, and the run's
    `t_stop`, step counts, `status` and `stop_reason`."""
    return Solution(
        net=unravel(theta_end),
        ts=ts,
        nets=jax.vmap(unravel)(saved["theta"]),
        loss=saved["loss"],
        observables=saved["observables"],
        **counts,
    )
