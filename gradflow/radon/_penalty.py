"""Radon-domain penalties of networks: RS amplitudes weighed against the offset density,
and the Radon total variation (path norm) of ReLU networks. Differentiable, jit-able;
usable as (part of) a loss."""

import jax.numpy as jnp
from jaxtyping import Array, Float

from .._activation import LeakyReLU, ReLU
from .._network import TwoLayerNet
from ._density import AbstractOffsets, UniformOffsets
from ._spline import radon_spline


def _neuron_sizes(amplitude, power):
    if amplitude.ndim == 1:
        return jnp.abs(amplitude) ** power
    squared = jnp.sum(amplitude**2, axis=tuple(range(1, amplitude.ndim)))
    return squared if power == 2 else jnp.sqrt(squared)


def network_penalty(
    net: TwoLayerNet, offsets: AbstractOffsets = UniformOffsets()
) -> Float[Array, ""]:
    """$\\sum_i |c_i|^2 / p(\\gamma_i)$: the RS amplitudes $c_i$ weighed against the offset
    density $p$ (`offsets`).

    This is the finite-width form of $\\int |c(\\xi, \\gamma)|^2 / p(\\gamma)$, the cost that the
    kernel regime minimises for $f = \\int c\\,\\varphi(\\xi\\cdot x - \\gamma)$: a width-$m$ net
    puts one atom per neuron. With `UniformOffsets()` (the whole line, $p \\equiv 1$) it is
    $\\sum_i |c_i|^2$ — for ReLU $\\sum_i a_i^2\\|w_i\\|^2$, invariant under the rescaling
    symmetry; `GaussianOffsets(τ)` charges far breakplanes $e^{\\gamma^2/2\\tau^2}$ more, and
    `UniformOffsets(R)` is infinite for a breakplane beyond $R$ (not differentiable there:
    prefer Gaussian offsets inside a flow). For smooth, non-homogeneous activations the
    amplitude is $a_i$ and the scale $\\|w_i\\|$ is not charged. Vector outputs use
    $\\|c_i\\|^2$.
    """
    if not isinstance(offsets, AbstractOffsets):
        raise TypeError(
            "`offsets` must be `UniformOffsets(...)` or `GaussianOffsets(...)`, got "
            f"{type(offsets).__name__}."
        )
    rs = radon_spline(net)
    return jnp.sum(_neuron_sizes(rs.amplitude, 2) / offsets.density(rs.offset))


def radon_tv_norm(net: TwoLayerNet) -> Float[Array, ""]:
    """The Radon total variation (path norm) of a ReLU network, $\\sum_i |a_i|\\,\\|w_i\\|$
    ($(1-\\alpha)\\sum_i |a_i|\\|w_i\\|$ for leaky ReLU of slope $\\alpha$, whose linear part
    costs nothing).

    It bounds the $\\mathcal R$-norm of the function (Ongie et al. 2020) from above, with
    equality when no two neurons share a breakplane and orientation; in 1-D it is
    $\\int |f''|$ without the affine part. Vector outputs use $\\|a_i\\|$.
    """
    activation = net.activation
    if isinstance(activation, ReLU):
        factor = 1.0
    elif isinstance(activation, LeakyReLU):
        factor = 1.0 - activation.negative_slope
    else:
        raise ValueError(
            f"`net` has activation {type(activation).__name__}; the Radon total variation "
            "norm is defined here for ReLU and leaky ReLU networks. For other activations use "
            "`gradflow.radon.network_penalty`."
        )
    return factor * jnp.sum(_neuron_sizes(radon_spline(net).amplitude, 1))
