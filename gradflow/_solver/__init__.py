from .base import (
    AbstractRosenbrock as AbstractRosenbrock,
    RosenbrockInterpolation as RosenbrockInterpolation,
    RosenbrockTableau as RosenbrockTableau,
)
from .rosenbrock import Rodas4 as Rodas4, Rodas5P as Rodas5P
from .two_phase import TwoPhase as TwoPhase
from .unrolled import Unrolled as Unrolled
