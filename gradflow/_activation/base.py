import abc
from typing import ClassVar

import equinox as eqx
from jaxtyping import Array, ArrayLike, Float


class AbstractActivation(eqx.Module):
    """An elementwise non-linearity $\\sigma$ of a two-layer network.

    Subclass it to add your own: implement `__call__`, and list the points where
    $\\sigma$ is not differentiable in `kinks` (empty for smooth activations). The
    kinks are what the ReLU-type integrators need to know; smooth activations leave
    the tuple empty. Hyperparameters must be `eqx.field(static=True)` so that they
    are never mistaken for trainable parameters.
    """

    kinks: ClassVar[tuple[float, ...]] = ()
    # σ is affine between its kinks (ReLU, leaky ReLU): the exact flow then evaluates σ and
    # σ' on an activation pattern from the one-sided slopes alone, without autodiff.
    piecewise_linear: ClassVar[bool] = False

    @abc.abstractmethod
    def __call__(self, z: Float[ArrayLike, "..."]) -> Float[Array, "..."]:
        """Applies the activation elementwise."""

    @property
    def is_smooth(self) -> bool:
        return len(self.kinks) == 0
