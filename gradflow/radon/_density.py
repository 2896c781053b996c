"""Densities of hidden units $(\\xi, \\gamma)$ or $(w, b)$ that define the kernels."""

import math

import equinox as eqx
import jax.numpy as jnp
from jaxtyping import Array, ArrayLike, Float


def _check_positive(name, value, *, allow_none=False):
    if value is None and allow_none:
        return
    if isinstance(value, bool) or not isinstance(value, int | float) or not value > 0:
        raise ValueError(f"`{name}` must be a positive number, got {value!r}.")
    if not math.isfinite(value):
        raise ValueError(f"`{name}` must be finite, got {value!r}.")


class AbstractOffsets(eqx.Module):
    """A density $p(\\gamma)$ of breakplane offsets."""

    def density(self, gamma: Float[ArrayLike, "..."]) -> Float[Array, "..."]:
        raise NotImplementedError


class UniformOffsets(AbstractOffsets):
    """Offsets uniform on $[-R, R]$ (`radius` $R$, probability density $1/2R$), or, with
    `radius=None`, Lebesgue measure on the whole line ($p \\equiv 1$, not a probability).

    The whole line is the density of the Radon picture: its kernel is translation
    invariant and its RKHS norm is exactly the spectral seminorm (see
    `gradflow.radon.seminorm_constant`). It needs a square-integrable activation
    (Gaussian, sinc, sinc², $z/(1+z^2)$); for the others use a finite `radius`.
    """

    radius: float | None = eqx.field(static=True, default=None)

    def __check_init__(self):
        _check_positive("radius", self.radius, allow_none=True)

    def density(self, gamma):
        gamma = jnp.asarray(gamma)
        if self.radius is None:
            return jnp.ones_like(gamma)
        return jnp.where(jnp.abs(gamma) <= self.radius, 0.5 / self.radius, 0.0)


class GaussianOffsets(AbstractOffsets):
    """Offsets $\\gamma \\sim N(0, \\tau^2)$ (`scale` $\\tau$)."""

    scale: float = eqx.field(static=True, default=1.0)

    def __check_init__(self):
        _check_positive("scale", self.scale)

    def density(self, gamma):
        gamma = jnp.asarray(gamma)
        tau = self.scale
        return jnp.exp(-0.5 * (gamma / tau) ** 2) / (math.sqrt(2 * math.pi) * tau)


class AbstractDensity(eqx.Module):
    """The distribution of hidden units that a kernel averages over."""


class RadonDensity(AbstractDensity):
    """Orientations $\\xi$ uniform on $S^{d-1}$ (a probability) and offsets $\\gamma$ from
    `offsets`, independently: the units $\\varphi(\\xi\\cdot x - \\gamma)$ of the RS picture."""

    offsets: AbstractOffsets = UniformOffsets()

    def __check_init__(self):
        if not isinstance(self.offsets, AbstractOffsets):
            raise TypeError(
                "`offsets` must be `UniformOffsets(...)` or `GaussianOffsets(...)`, got "
                f"{type(self.offsets).__name__}."
            )


class GaussianWeights(AbstractDensity):
    """Weights $w \\sim N(0, \\sigma_w^2 I_d)$ and biases $b \\sim N(0, \\sigma_b^2)$ (the
    standard infinite-width / NTK initialisation); `bias_std=0` drops the bias."""

    weight_std: float = eqx.field(static=True, default=1.0)
    bias_std: float = eqx.field(static=True, default=1.0)

    def __check_init__(self):
        _check_positive("weight_std", self.weight_std)
        if isinstance(self.bias_std, bool) or not (
            isinstance(self.bias_std, int | float) and 0 <= self.bias_std < math.inf
        ):
            raise ValueError(f"`bias_std` must be a finite number >= 0, got {self.bias_std!r}.")
