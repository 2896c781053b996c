"""gradflow: exact gradient flow of two-layer neural networks in JAX."""

import jax


# Tiny init scales (1e-8 ... 1e-20) need float64; gradflow's constructors default to it.
jax.config.update("jax_enable_x64", True)

from . import radon as radon  # noqa: E402  (the Radon toolkit, `gradflow.radon`)
from ._activation import (  # noqa: E402
    AbstractActivation as AbstractActivation,
    Erf as Erf,
    Gaussian as Gaussian,
    GELU as GELU,
    get_activation as get_activation,
    Identity as Identity,
    LeakyReLU as LeakyReLU,
    Rational as Rational,
    register_activation as register_activation,
    ReLU as ReLU,
    Sinc as Sinc,
    Sinc2 as Sinc2,
    Softplus as Softplus,
    Tanh as Tanh,
)
from ._chunks import run_chunks as run_chunks  # noqa: E402
from ._coordinates import (  # noqa: E402
    AbstractCoordinates as AbstractCoordinates,
    Cartesian as Cartesian,
    ScaleFree as ScaleFree,
)
from ._descent import (  # noqa: E402
    distance_to_flow as distance_to_flow,
    gradient_descent as gradient_descent,
)
from ._ensemble import flow_ensemble as flow_ensemble  # noqa: E402
from ._flow import gradient_flow as gradient_flow  # noqa: E402
from ._grid import Grid as Grid, pad_samples as pad_samples  # noqa: E402
from ._init import net_with_imbalance as net_with_imbalance, random_net as random_net  # noqa: E402
from ._labels import to_dataset as to_dataset  # noqa: E402
from ._loss import squared_loss as squared_loss  # noqa: E402
from ._network import (  # noqa: E402
    imbalance as imbalance,
    parameter_norm as parameter_norm,
    TwoLayerNet as TwoLayerNet,
)
from ._piecewise import (  # noqa: E402
    EventKind as EventKind,
    EventLog as EventLog,
    piecewise_flow as piecewise_flow,
)
from ._refill import refill_flow as refill_flow, RefillStats as RefillStats  # noqa: E402
from ._solution import Solution as Solution  # noqa: E402
from ._solver import (  # noqa: E402
    AbstractRosenbrock as AbstractRosenbrock,
    default_solver as default_solver,
    Krylov as Krylov,
    Rodas4 as Rodas4,
    Rodas5P as Rodas5P,
    TwoPhase as TwoPhase,
    Unrolled as Unrolled,
)
from ._status import (  # noqa: E402
    Status as Status,
    status_messages as status_messages,  # noqa: E402
    StopReason as StopReason,
)
from ._sweep import sweep as sweep  # noqa: E402
from ._times import log_times as log_times  # noqa: E402


__version__ = "0.1.0"
