import abc
from collections.abc import Callable

import diffrax as dfx
import equinox as eqx
from jaxtyping import Array, Float, PyTree


Gradient = Callable[[Float[Array, " P"]], Float[Array, " P"]]
# Sizes of the consecutive blocks of θ that form the layers: (outer, inner) = (m, m·d [+ m]).
LayerSizes = tuple[int, ...]


class AbstractCoordinates(eqx.Module):
    """How the flat parameter vector $\\theta \\in \\mathbb{R}^P$ is represented as the
    ODE state, and how the solver's local error is measured in that representation.

    The flow itself is always $\\dot\\theta = -\\nabla L(\\theta)$; coordinates only change
    which error the step-size controller sees, which decides whether a tiny init
    scale is resolved at all. `layer_sizes` splits $\\theta$ (in the order of
    `TwoLayerNet`'s leaves: `a`, then `W` and `b`) into its layers.
    """

    @abc.abstractmethod
    def to_state(self, theta: Float[Array, " P"], layer_sizes: LayerSizes) -> PyTree[Array]:
        """Maps parameters to the ODE state."""

    @abc.abstractmethod
    def to_params(self, state: PyTree[Array], layer_sizes: LayerSizes) -> Float[Array, " P"]:
        """Maps the ODE state back to parameters."""

    @abc.abstractmethod
    def vector_field(self, gradient: Gradient, layer_sizes: LayerSizes) -> Callable:
        """The ODE right-hand side `f(t, state, args)` equivalent to $-\\nabla L$."""

    @abc.abstractmethod
    def controller(self, rtol, dtmin) -> dfx.AbstractStepSizeController:
        """The step-size controller for relative tolerance `rtol` that fails (rather
        than shrinking further) below the step `dtmin`."""
