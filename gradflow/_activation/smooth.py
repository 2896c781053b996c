import math

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


# Maclaurin coefficients of sin(z)/z = Σ_k (−1)^k z^{2k} / (2k+1)!, k = 0, ..., 7.
_SINC_SERIES = tuple((-1) ** k / math.factorial(2 * k + 1) for k in range(8))
_SINC_SERIES_RADIUS = 0.5


def _sinc(z: Float[ArrayLike, "..."]) -> Float[Array, "..."]:
    """$\\sin(z)/z$ with derivatives that stay accurate *relative to their size* near 0.

    `jnp.sinc(z / π)` is exact *at* 0, but elsewhere its derivative is autodiff of
    $\\sin y / y$, i.e. $\\cos y / y - \\sin y / y^2$, two terms of size $1/y$ that cancel
    to $-y/3$: relative error $\\approx 3\\epsilon_{\\mathrm{mach}} / y^2$, which is 100% (the
    derivative comes out as exactly 0) for $|y| < 10^{-8}$. The preactivations of a
    net at init scale $\\varepsilon$ are of size $\\varepsilon$, so that froze the inner
    weights of sinc networks at small init. Below $|z| = 0.5$ we sum the series (the
    first omitted term changes the derivative by < 1e-17 relative there); above it
    $\\sin(z)/z$ differentiates with cancellation error below 3e-15.
    """
    z = jnp.asarray(z)
    small = jnp.abs(z) < _SINC_SERIES_RADIUS
    z2 = jnp.where(small, z, 0) ** 2
    series = 0.0
    for coefficient in reversed(_SINC_SERIES):
        series = series * z2 + coefficient
    # `safe` keeps the masked-out branch free of 0/0, whose NaN gradient would leak.
    safe = jnp.where(small, 1, z)
    return jnp.where(small, series, jnp.sin(safe) / safe)


class Sinc(AbstractActivation):
    """$\\sigma(z) = \\sin(z)/z$ with $\\sigma(0) = 1$, $\\sigma'(0) = 0$, $\\sigma''(0) = -1/3$.

    Derivatives are accurate near 0 too (see `_sinc`), which a tiny init scale needs.
    """

    def __call__(self, z: Float[ArrayLike, "..."]) -> Float[Array, "..."]:
        return _sinc(z)


class Sinc2(AbstractActivation):
    """$\\sigma(z) = (\\sin(z)/z)^2$, whose spectrum is a triangle on $(-2, 2)$."""

    def __call__(self, z: Float[ArrayLike, "..."]) -> Float[Array, "..."]:
        return _sinc(z) ** 2


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
