import diffrax as dfx
import equinox as eqx

from .base import AbstractCoordinates


class Cartesian(AbstractCoordinates):
    """The parameters themselves as state, with Diffrax's usual mixed tolerance
    `atol + rtol·|θ_i|` per coordinate.

    Kept as the textbook baseline for comparisons. `atol` must sit far below the
    init scale (an `atol` of 1e-6 with a 1e-20 init lets the solver skip the escape
    phase entirely); prefer `ScaleFree`, the default.
    """

    atol: float = eqx.field(static=True, default=0.0)

    def __check_init__(self):
        if not self.atol >= 0:
            raise ValueError(f"`atol` must be non-negative, got {self.atol}.")

    def to_state(self, theta, layer_sizes):
        return theta

    def to_params(self, state, layer_sizes):
        return state

    def vector_field(self, gradient, layer_sizes):
        return lambda t, theta, args: -gradient(theta)

    def controller(self, rtol, dtmin):
        return dfx.PIDController(rtol=rtol, atol=self.atol, dtmin=dtmin, force_dtmin=False)
