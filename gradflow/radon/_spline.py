"""Radon-spline (RS) coordinates of a two-layer network (Sahs et al. 2020, 2025).

Neuron $i$ of $f(x) = \\sum_i a_i \\varphi(w_i \\cdot x + b_i)$ is written as
$a_i \\varphi(s_i(\\xi_i \\cdot x - \\gamma_i))$ with orientation $\\xi_i = w_i/\\|w_i\\|$,
offset $\\gamma_i = -b_i/\\|w_i\\|$ and scale $s_i = \\|w_i\\|$. Its *breakplane* (the zero
plane of the preactivation) is $\\{x : \\xi_i \\cdot x = \\gamma_i\\}$. For a positively
1-homogeneous $\\varphi$ the scale folds into the amplitude, $c_i = a_i s_i$, which removes
the rescaling symmetry $(a, w, b) \\to (a/\\alpha, \\alpha w, \\alpha b)$, $\\alpha > 0$.
"""

import equinox as eqx
import jax.numpy as jnp
from jaxtyping import Array, Float

from .._activation import AbstractActivation, get_activation, Identity, LeakyReLU, ReLU
from .._network import TwoLayerNet


# Activations with φ(αz) = αφ(z) for α > 0. A user activation with that property can be
# added here (see `register_homogeneous`); it then gets amplitudes without a scale.
_HOMOGENEOUS: set[type] = {ReLU, LeakyReLU, Identity}


def register_homogeneous(activation_type: type) -> None:
    """Declares that instances of `activation_type` are positively 1-homogeneous, so that
    their RS coordinates fold the scale into the amplitude."""
    if not (isinstance(activation_type, type) and issubclass(activation_type, AbstractActivation)):
        raise TypeError(
            "`activation_type` must be a subclass of `gradflow.AbstractActivation`, got "
            f"{activation_type!r}."
        )
    _HOMOGENEOUS.add(activation_type)


def is_homogeneous(activation: "str | AbstractActivation") -> bool:
    """Whether $\\varphi(\\alpha z) = \\alpha \\varphi(z)$ for all $\\alpha > 0$ (ReLU, leaky
    ReLU, identity, and what `register_homogeneous` added)."""
    return type(get_activation(activation)) in _HOMOGENEOUS


class RadonSpline(eqx.Module):
    """RS coordinates of a network's neurons (see the module docstring).

    **Fields:**

    - `orientation`: $\\xi$, shape `(m, d)`, unit rows (a zero row where $w_i = 0$).
    - `offset`: $\\gamma$, shape `(m,)` (0 where $w_i = 0$ or the net has no bias).
    - `amplitude`: $c$, shape `(m,)` or `(m, k)` like the net's `a`: $a_i s_i$ for a
      homogeneous activation, $a_i$ otherwise.
    - `scale`: $s = \\|w\\|$, shape `(m,)`, or `None` for a homogeneous activation (there
      it is not a function of the network's *function*).

    A neuron with $w_i = 0$ is the constant $a_i \\varphi(b_i)$; it has no breakplane, and
    its orientation and offset are reported as 0.
    """

    orientation: Float[Array, "m d"]
    offset: Float[Array, " m"]
    amplitude: Float[Array, " m *k"]
    scale: Float[Array, " m"] | None


def _per_neuron(v, like):
    """`v` of shape (m,) broadcast against `like` of shape (m,) or (m, k)."""
    return v.reshape(v.shape + (1,) * (like.ndim - 1))


def _safe_norm(W):
    # The norm's gradient at w = 0 is 0/0; the double `where` keeps it finite (0).
    squared = jnp.sum(W**2, axis=-1)
    positive = squared > 0
    return jnp.where(positive, jnp.sqrt(jnp.where(positive, squared, 1)), 0), positive


def radon_spline(net: TwoLayerNet) -> RadonSpline:
    """The RS coordinates of `net` (differentiable; works under `jit` and `vmap`, and as
    an observable: `observables={"rs": gradflow.radon.radon_spline}`, or see
    `rs_observables` for plain arrays)."""
    if not isinstance(net, TwoLayerNet):
        raise TypeError(f"`net` must be a `gradflow.TwoLayerNet`, got {type(net).__name__}.")
    scale, alive = _safe_norm(net.W)
    safe_scale = jnp.where(alive, scale, 1)
    orientation = jnp.where(alive[..., None], net.W / safe_scale[..., None], 0)
    if net.b is None:
        offset = jnp.zeros_like(scale)
    else:
        offset = jnp.where(alive, -net.b / safe_scale, 0)
    if is_homogeneous(net.activation):
        return RadonSpline(orientation, offset, net.a * _per_neuron(scale, net.a), None)
    return RadonSpline(orientation, offset, net.a, scale)


def network_of(
    rs: RadonSpline,
    activation: "str | AbstractActivation",
    *,
    bias: bool = True,
) -> TwoLayerNet:
    """The network with RS coordinates `rs` (the inverse of `radon_spline`).

    For a homogeneous activation (where `rs.scale` is `None`) the scale is free; we return
    the *balanced* representative, whose imbalance $a_i^2 - \\|w_i\\|^2 - b_i^2$ is zero:
    $s_i = (|c_i| / \\sqrt{1 + \\gamma_i^2})^{1/2}$, $a_i = c_i/s_i$ (and $s_i = a_i = 0$
    where $c_i = 0$: such a neuron is the zero function, whatever its breakplane).
    `bias=False` drops the offsets (a net without bias has $\\gamma = 0$).

    `radon_spline(network_of(rs, φ))` returns `rs` (up to rounding) for every `rs` whose
    orientations are unit vectors, except for the breakplanes of neurons with $c_i = 0$.
    """
    activation = get_activation(activation)
    homogeneous = is_homogeneous(activation)
    if homogeneous != (rs.scale is None):
        raise ValueError(
            f"`rs.scale` must be None for a homogeneous activation and an array otherwise; "
            f"got {'None' if rs.scale is None else 'an array'} for "
            f"{type(activation).__name__}. Build `rs` with `radon_spline` of a net with this "
            "activation."
        )
    gamma = rs.offset
    if homogeneous:
        c = rs.amplitude
        size = jnp.abs(c) if c.ndim == 1 else jnp.linalg.norm(c, axis=-1)
        scale = jnp.sqrt(size / jnp.sqrt(1 + gamma**2))
        safe = jnp.where(scale > 0, scale, 1)
        a = jnp.where(_per_neuron(scale > 0, c), c / _per_neuron(safe, c), 0)
    else:
        scale = rs.scale
        a = rs.amplitude
    W = rs.orientation * scale[:, None]
    b = -gamma * scale if bias else None
    return TwoLayerNet(a, W, b, activation)


def breakplane_offsets(net: TwoLayerNet) -> Float[Array, " m"]:
    """$\\gamma_i = -b_i/\\|w_i\\|$: where neuron $i$'s breakplane crosses its orientation."""
    return radon_spline(net).offset


def rs_observables() -> dict:
    """`{"orientation", "offset", "amplitude"}` as functions of the net, for
    `gradient_flow(..., observables=gradflow.radon.rs_observables())`: the breakplanes and
    amplitudes of the running flow at its save times, as arrays of shape `(T, m, ...)`."""
    return {
        "orientation": lambda net: radon_spline(net).orientation,
        "offset": lambda net: radon_spline(net).offset,
        "amplitude": lambda net: radon_spline(net).amplitude,
    }
