from .base import (
    AbstractRosenbrock as AbstractRosenbrock,
    RosenbrockInterpolation as RosenbrockInterpolation,
    RosenbrockTableau as RosenbrockTableau,
)
from .default import (
    default_solver as default_solver,
    KRYLOV_SWITCH_TOL as KRYLOV_SWITCH_TOL,
    ROSENBROCK_MAX_PARAMS as ROSENBROCK_MAX_PARAMS,
)
from .krylov import Krylov as Krylov
from .phased import (
    AbstractPhasedSolver as AbstractPhasedSolver,
    Phase as Phase,
    phases_of as phases_of,
)
from .rosenbrock import Rodas4 as Rodas4, Rodas5P as Rodas5P
from .two_phase import TwoPhase as TwoPhase
from .unrolled import Unrolled as Unrolled
