from .base import AbstractActivation as AbstractActivation
from .piecewise import Identity as Identity, LeakyReLU as LeakyReLU, ReLU as ReLU
from .registry import (
    get_activation as get_activation,
    register_activation as register_activation,
)
from .smooth import (
    Erf as Erf,
    Gaussian as Gaussian,
    GELU as GELU,
    Rational as Rational,
    Sinc as Sinc,
    Sinc2 as Sinc2,
    Softplus as Softplus,
    Tanh as Tanh,
)
