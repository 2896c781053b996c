import diffrax as dfx

from .._misc import layer_sizes
from .._network import TwoLayerNet
from .krylov import Krylov
from .phased import AbstractPhasedSolver
from .two_phase import TwoPhase


# Measured on W1-like problems (`benchmarks/late_phase.py`, `benchmarks/w1.py`,
# `benchmarks/RESULTS.md`): with P = 6 parameters Rodas5P takes 1.5-2x Tsit5's time to
# t = 200 but 13x less to t = 1e4, and is the only one of the two that reaches t = 1e8;
# `TwoPhase` (Tsit5, then Rodas5P once the flow turns stiff) keeps Rodas5P's step counts
# and accuracy at Tsit5's cost on the early phase. With P = 24 Rodas5P is 2.4x slower to
# t = 400 and 4.5x faster to t = 1e4. Past a few dozen parameters the dense P x P
# factorisation per step costs more than the stiff phase saves.
ROSENBROCK_MAX_PARAMS = 32


def default_solver(net: TwoLayerNet) -> dfx.AbstractAdaptiveSolver | AbstractPhasedSolver:
    """The solver of `solver=None` for a smooth activation: `TwoPhase()` (Tsit5 through
    the escape and the fit, then the L-stable Rodas5P, which crosses the stiff late
    phase in a few hundred steps however long the horizon) for nets with at most
    `ROSENBROCK_MAX_PARAMS` parameters; for larger ones the same with Rodas5P's linear
    systems solved matrix-free, `TwoPhase(implicit=Krylov())`."""
    if sum(layer_sizes(net)) <= ROSENBROCK_MAX_PARAMS:
        return TwoPhase()
    return TwoPhase(implicit=Krylov())
