import enum

import numpy as np


class Status(enum.IntEnum):
    """Per-run outcome code. `0` means success; every other code is a failure that
    leaves the run's last state in the solution instead of raising, so one bad seed
    never takes an ensemble down with it."""

    SUCCESS = 0
    MAX_STEPS_REACHED = 1
    NONFINITE = 2
    SOLVER_FAILURE = 3

    @property
    def message(self) -> str:
        return _STATUS_MESSAGES[self]


_STATUS_MESSAGES = {
    Status.SUCCESS: "The run reached `t1` or met a stop rule.",
    Status.MAX_STEPS_REACHED: (
        "The maximum number of solver steps was reached before `t1`; the solution "
        "holds the last state. Increase `max_steps`, loosen `rtol`, or (for ReLU-type "
        "activations whose breakplanes pin data points) use an integrator that "
        "handles the kinks."
    ),
    Status.NONFINITE: (
        "The state or the loss became NaN or inf. For gradient descent the step is "
        "too large for the curvature (lower `learning_rate`); for the flow check the "
        "data and the init scale."
    ),
    Status.SOLVER_FAILURE: (
        "The ODE solver failed: its step size fell below `dtmin` (the vector field is "
        "discontinuous or very stiff there, e.g. a ReLU breakplane pinned at a data "
        "point). The solution holds the last state."
    ),
}


class StopReason(enum.IntEnum):
    """Why a successful run stopped."""

    T1 = 0
    LOSS_TOLERANCE = 1
    STATIONARY = 2
    FAILED = 3

    @property
    def message(self) -> str:
        return _STOP_MESSAGES[self]


_STOP_MESSAGES = {
    StopReason.T1: "reached t1",
    StopReason.LOSS_TOLERANCE: "loss fell below `loss_tol`",
    StopReason.STATIONARY: "stationary: ‖∇L(θ)‖ ≤ `stationarity_tol`·‖θ‖",
    StopReason.FAILED: "stopped by a failure (see `status`)",
}


def status_messages(codes) -> "str | np.ndarray":
    """Readable message(s) for a status code or an array of them."""
    codes = np.asarray(codes)
    if codes.ndim == 0:
        return Status(int(codes)).message
    return np.vectorize(lambda c: Status(int(c)).message, otypes=[object])(codes)
