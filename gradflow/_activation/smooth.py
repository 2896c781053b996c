import jax
import jax.numpy as jnp
from jaxtyping import Array, ArrayLike, Float

from .base import AbstractActivation


class Tanh(AbstractActivation):
    """$\\sigma(z) = \\tanh z$."""

    def __call__(self, z: Float[ArrayLike, "..."]) -> Float[Array, "..."]:
        return jnp.tanh(z)


class Rational(AbstractActivation):
    """$\\sigma(z) = z / (1 + z^2)$, the activation of Zhao, Bai & Zhang's Fig. 5."""

    def __call__(self, z: Float[ArrayLike, "..."]) -> Float[Array, "..."]:
        z = jnp.asarray(z)
        return z / (1 + z**2)


class Sinc(AbstractActivation):
    """$\\sigma(z) = \\sin(z)/z$ with $\\sigma(0) = 1$.

    `jnp.sinc` is the normalised $\\sin(\\pi z)/(\\pi z)$ with a custom derivative
    rule that is exact at 0, so we rescale its argument rather than dividing here
    (a naive `sin(z)/z` has a NaN gradient at 0).
    """

    def __call__(self, z: Float[ArrayLike, "..."]) -> Float[Array, "..."]:
        return jnp.sinc(jnp.asarray(z) / jnp.pi)


class Sinc2(AbstractActivation):
    """$\\sigma(z) = (\\sin(z)/z)^2$, whose spectrum is a triangle on $(-2, 2)$."""

    def __call__(self, z: Float[ArrayLike, "..."]) -> Float[Array, "..."]:
        return jnp.sinc(jnp.asarray(z) / jnp.pi) ** 2


class Gaussian(AbstractActivation):
    """$\\sigma(z) = e^{-z^2/2}$."""

    def __call__(self, z: Float[ArrayLike, "..."]) -> Float[Array, "..."]:
        return jnp.exp(-0.5 * jnp.asarray(z) ** 2)


class Erf(AbstractActivation):
    """$\\sigma(z) = \\operatorname{erf}(z)$."""

    def __call__(self, z: Float[ArrayLike, "..."]) -> Float[Array, "..."]:
        return jax.scipy.special.erf(z)


class Softplus(AbstractActivation):
    """$\\sigma(z) = \\log(1 + e^z)$, computed without overflow."""

    def __call__(self, z: Float[ArrayLike, "..."]) -> Float[Array, "..."]:
        return jax.nn.softplus(z)


class GELU(AbstractActivation):
    """$\\sigma(z) = z\\,\\Phi(z)$ with the exact Gaussian CDF (not the tanh approximation)."""

    def __call__(self, z: Float[ArrayLike, "..."]) -> Float[Array, "..."]:
        return jax.nn.gelu(z, approximate=False)
