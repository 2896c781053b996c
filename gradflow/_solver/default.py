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
# Jacobian and factorisation per step cost more than the matrix-free `Krylov` steps of
# the same method (`benchmarks/krylov_crossover.py`, W1's problem at growing width, to
# t = 1e8, 2-core CPU): dense is 1.6x faster at P = 6 and 1.7x at P = 24 (32 seeds
# vmapped), Krylov 8.9x faster at P = 96 (one seed); the crossover lies in between.
ROSENBROCK_MAX_PARAMS = 32


# The switch of the default for wide nets. A `Krylov` step costs 6-8 explicit ones there
# (W3, P = 3000, `benchmarks/w3.py`), so the explicit phase should run through the fit:
# on W3, ‖∇L‖ ≤ 1e-2‖θ‖ already holds at t ≈ 3.8, on the saddle before the fit (loss
# 0.18), 1e-3 at t ≈ 100 once the data are fitted (loss 9e-5), and Krylov's steps from
# there are the stiff phase's. (Dense Rodas5P steps cost little more than explicit ones
# for small nets, which keep `TwoPhase`'s 1e-2.)
KRYLOV_SWITCH_TOL = 1e-3


def default_solver(net: TwoLayerNet) -> dfx.AbstractAdaptiveSolver | AbstractPhasedSolver:
    """The solver of `solver=None` for a smooth activation: `TwoPhase()` (Tsit5 through
    the escape and the fit, then the L-stable Rodas5P, which crosses the stiff late
    phase in a few hundred steps however long the horizon) for nets with at most
    `ROSENBROCK_MAX_PARAMS` parameters; for larger ones the same with Rodas5P's linear
    systems solved matrix-free and a later switch,
    `TwoPhase(implicit=Krylov(), switch_tol=KRYLOV_SWITCH_TOL)`."""
    if sum(layer_sizes(net)) <= ROSENBROCK_MAX_PARAMS:
        return TwoPhase()
    return TwoPhase(implicit=Krylov(), switch_tol=KRYLOV_SWITCH_TOL)
