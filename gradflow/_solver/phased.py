import abc

import diffrax as dfx
import equinox as eqx


class Phase(eqx.Module):
    """One phase of a phased solver: a Diffrax solver, and the rule that ends the phase
    early and hands the flow to the next one.

    - `solver`: an adaptive Diffrax solver.
    - `switch_tol`: the phase ends once $\\|\\nabla L(\\theta)\\| \\le$ `switch_tol`
      $\\cdot \\|\\theta\\|$ (the scale-free stationarity measure); `None` for the last
      phase, which runs to the end.
    """

    solver: dfx.AbstractAdaptiveSolver
    switch_tol: float | None = eqx.field(static=True, default=None)


class AbstractPhasedSolver(eqx.Module):
    """A solver made of Diffrax solvers run one after the other, each until its own
    switch rule holds: what every driver (`gradient_flow`, the refilling ensemble)
    runs through `phases_of`, so a new composite solver touches only its own file.

    A later phase starts where the previous one switched, with the previous phase's
    mean accepted step as its first step; a run whose phase ended for another reason
    (it reached `t1`, met a stop rule or failed) takes no step in the later phases.
    `max_steps` bounds each phase; `Solution.phase_steps` reports the steps of each.
    """

    @abc.abstractmethod
    def phases(self) -> tuple[Phase, ...]:
        """The phases, in order; every one but the last has a `switch_tol`."""


def phases_of(solver: "dfx.AbstractAdaptiveSolver | AbstractPhasedSolver") -> tuple[Phase, ...]:
    """The phases of any solver: a plain Diffrax solver is one phase to the end."""
    if isinstance(solver, AbstractPhasedSolver):
        return solver.phases()
    return (Phase(solver),)
