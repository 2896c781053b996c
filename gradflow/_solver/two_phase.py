import diffrax as dfx
import equinox as eqx

from .phased import AbstractPhasedSolver, Phase
from .rosenbrock import Rodas5P
from .unrolled import Unrolled


class TwoPhase(AbstractPhasedSolver):
    """An explicit solver while the flow is not stiff, an implicit one after.

    A gradient flow from a small init is not stiff while it escapes and fits the data
    (the Hessian's eigenvalues are of the order of the motion), and stiff from then on
    (large eigenvalues next to slow motion). `gradient_flow` runs `explicit` until
    $\\|\\nabla L(\\theta)\\| \\le$ `switch_tol` $\\cdot \\|\\theta\\|$ (the scale-free
    stationarity measure of its `stationarity_tol`; it stays at the linearised growth
    rate on the initial plateau, so it does not fire there), then `implicit` from that
    point to `t1`: cheap explicit steps where they are enough, L-stable ones where they
    are not. Measured on W1 to t = 200 (`benchmarks/w1.py`): 1.8-1.9x faster than
    `Rodas5P` throughout, as fast as Tsit5, and as accurate as Rodas5P; to t = 1e8
    (`benchmarks/late_phase.py`): 5 % fewer steps than `Rodas5P`, 16 % fewer
    evaluations.

    ```python
    sol = gf.gradient_flow(net, x, y, t1=1e8, solver=gf.TwoPhase())
    sol.phase_steps  # steps of the explicit and of the implicit phase
    ```

    `max_steps` bounds each phase (so a run takes at most twice `max_steps`), and
    `Solution.phase_steps` gives the steps of each. In `flow_ensemble` and `sweep`
    (refilling schedule) all seeds first run the explicit phase, then the seeds that
    switched run the implicit one, each phase refilling its slots from its own queue.
    The exact flow of an activation with kinks steps with `explicit` between its
    events. For wide nets pass `implicit=gradflow.Krylov()` (Rodas5P with its systems
    solved matrix-free), as the default solver does above 32 parameters.
    """

    explicit: dfx.AbstractAdaptiveSolver = Unrolled(dfx.Tsit5())
    implicit: dfx.AbstractAdaptiveSolver = Rodas5P()
    switch_tol: float = eqx.field(static=True, default=1e-2)

    def __check_init__(self):
        for name in ("explicit", "implicit"):
            if not isinstance(getattr(self, name), dfx.AbstractAdaptiveSolver):
                raise TypeError(f"`TwoPhase.{name}` must be an adaptive Diffrax solver.")
        if not self.switch_tol > 0:
            raise ValueError(f"`switch_tol` must be positive, got {self.switch_tol!r}.")

    def phases(self) -> tuple[Phase, ...]:
        return (Phase(self.explicit, self.switch_tol), Phase(self.implicit))
