import equinox as eqx
import jax.numpy as jnp
from jaxtyping import Array, ArrayLike, Float

from .base import AbstractActivation


class ReLU(AbstractActivation):
    """$\\sigma(z) = \\max(z, 0)$, positively 1-homogeneous with a kink at 0."""

    kinks = (0.0,)
    piecewise_linear = True

    def __call__(self, z: Float[ArrayLike, "..."]) -> Float[Array, "..."]:
        return jnp.maximum(z, 0)


class LeakyReLU(AbstractActivation):
    """$\\sigma(z) = \\max(z, \\alpha z)$ for a slope $0 \\le \\alpha < 1$."""

    negative_slope: float = eqx.field(static=True, default=0.01)
    kinks = (0.0,)
    piecewise_linear = True

    def __check_init__(self):
        if not 0 <= self.negative_slope < 1:
            raise ValueError(f"`negative_slope` must lie in [0, 1), got {self.negative_slope}.")

    def __call__(self, z: Float[ArrayLike, "..."]) -> Float[Array, "..."]:
        z = jnp.asarray(z)
        return jnp.where(z > 0, z, self.negative_slope * z)


class Identity(AbstractActivation):
    """$\\sigma(z) = z$: the two-layer *linear* network, whose flow has closed forms."""

    def __call__(self, z: Float[ArrayLike, "..."]) -> Float[Array, "..."]:
        return jnp.asarray(z)
