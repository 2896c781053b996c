"""The linear escape phase, solved exactly.

Near the origin, for a smooth activation with $\\sigma(0) = 0 \\ne \\sigma'(0)$, the
network is bilinear to leading order, $f_\\theta(x_i) \\approx \\sigma'(0) \\sum_k a_k\\,
\\tilde w_k \\cdot \\tilde x_i$ with $\\tilde w_k = (w_k, b_k)$, $\\tilde x_i = (x_i, 1)$,
and the gradient flow of $L = \\tfrac12 \\sum_i c_i (f_\\theta(x_i) - y_i)^2$ is linear:

$$\\dot a_k = \\lambda\\, u \\cdot \\tilde w_k, \\qquad \\dot{\\tilde w}_k = \\lambda\\, a_k u,
\\qquad \\lambda u = \\sigma'(0) \\sum_i c_i y_i \\tilde x_i, \\; \\|u\\| = 1.$$

Each neuron's pair $(a_k, u \\cdot \\tilde w_k)$ splits into a mode growing like
$e^{\\lambda t}$ and one decaying like $e^{-\\lambda t}$; the part of $\\tilde w_k$
orthogonal to $u$ stays put. So the whole phase has a closed form, and a solver need
only start where the nonlinearity begins to matter. Why it is worth it: however
well-scaled the coordinates, a solver steps through the linear phase, whose length
grows like $\\log(1/\\varepsilon)/\\lambda$; with the jump, every init scale below the
hand-over radius costs the same.

The neglected terms are relatively $O(\\|\\theta\\|^p)$ with $p = 2$ when
$\\sigma''(0) = 0$ (tanh, erf, odd rationals, the identity) and $p = 1$ otherwise (GELU).
The hand-over radius $r$ is chosen so that the relative defect of the linear field,
integrated over the phase ($\\approx$ defect$(r)/p$, since it grows like $e^{p\\lambda t}$),
is at most `rtol`.
"""

import jax
import jax.numpy as jnp
from jaxtyping import Array, Float

from ._misc import ravel_net
from ._network import TwoLayerNet


def escape_order(net: TwoLayerNet) -> int:
    """The order $p$ of the neglected terms, or 0 when the flow near the origin is not
    the linear flow above (an activation with kinks, or $\\sigma(0) \\ne 0$, or
    $\\sigma'(0) = 0$, or a vector output). Decided at trace time from the static
    activation and the shape of `a`."""
    sigma = net.activation
    if not sigma.is_smooth:
        return 0
    if net.output_shape:
        # With k outputs the linear phase grows along the singular vectors of
        # Σ_i c_i y_i x̃_iᵀ (k × e), at up to min(k, e) rates, and the radius has no
        # closed-form inverse in time; the solver integrates that phase instead, its
        # cost growing like log(1/ε) (as with `linear_escape=False`).
        return 0
    # Constants are traced under an outer `jit`; the activation is static, so evaluate
    # it eagerly.
    with jax.ensure_compile_time_eval():
        zero = jnp.zeros((), net.dtype)
        value = float(sigma(zero))
        slope = float(jax.grad(sigma)(zero))
        curvature = float(jax.grad(jax.grad(sigma))(zero))
    if value != 0.0 or slope == 0.0:
        return 0
    return 2 if abs(curvature) <= 1e-12 * abs(slope) else 1


class LinearEscape:
    """The exact linear flow from `net` and the time at which it is handed over.

    Built inside the compiled solve (all arrays may be traced); see the module notes.
    """

    def __init__(
        self, net: TwoLayerNet, order, x, y, weights, reduction, gradient, unravel, rtol, t1
    ):
        inputs = x if net.b is None else jnp.concatenate([x, jnp.ones_like(x[:, :1])], axis=1)
        c = jnp.ones_like(y) if weights is None else weights
        if reduction == "mean":
            c = c / jnp.sum(c)
        slope = jax.grad(net.activation)(jnp.zeros((), x.dtype))
        v = slope * (c * y) @ inputs
        self.rate = jnp.linalg.norm(v)
        # A zero rate (labels orthogonal to every input) has no escape to jump.
        safe_rate = jnp.where(self.rate > 0, self.rate, 1)
        self.direction = v / safe_rate
        self.has_bias = net.b is not None
        self.dtype = x.dtype
        w = _extended(net)
        along = w @ self.direction
        self.growing = (net.a + along) / 2
        self.decaying = (net.a - along) / 2
        self.across = w - along[:, None] * self.direction[None, :]
        self.unravel = unravel
        self.activation = net.activation

        # The defect of the linear field at a probe point on the linear path, scaled
        # to the radius where its integral is `rtol`.
        scale = jnp.max(jnp.linalg.norm(inputs, axis=1))
        probe_radius = jnp.sqrt(rtol) / scale if order == 2 else rtol / scale
        probe = self.params(self._time_at_radius(probe_radius))
        exact = -gradient(probe)
        linear = self._field(probe)
        norm = jnp.linalg.norm(probe)
        defect = jnp.linalg.norm(exact - linear) / jnp.maximum(jnp.linalg.norm(linear), 1e-300)
        # Relative defect is ~ (‖θ‖/r0)^p; solve defect(r)/p = rtol, capping the growth of
        # the radius at 10× the probe so that the estimate is used near where it holds.
        ratio = (order * rtol / jnp.maximum(defect, 1e-300)) ** (1 / order)
        radius = norm * jnp.minimum(ratio, 10.0)
        t_handover = self._time_at_radius(radius)
        ok = (self.rate > 0) & jnp.isfinite(t_handover)
        self.t_handover = jnp.where(ok, jnp.clip(t_handover, 0, t1), 0)

    def _time_at_radius(self, radius):
        """Smallest $t \\ge 0$ with $\\|\\theta(t)\\| = r$ ($\\infty$ if never reached).

        $\\|\\theta(t)\\|^2 = S q + D / q + Q$ with $q = e^{2\\lambda t}$, $S = 2\\sum s_k^2$,
        $D = 2\\sum d_k^2$ (growing and decaying amplitudes), $Q$ the part that stays put."""
        S = 2 * jnp.sum(self.growing**2)
        D = 2 * jnp.sum(self.decaying**2)
        Q = jnp.sum(self.across**2)
        excess = radius**2 - Q
        discriminant = excess**2 - 4 * S * D
        q = (excess + jnp.sqrt(jnp.maximum(discriminant, 0))) / (2 * jnp.where(S > 0, S, 1))
        reachable = (S > 0) & (excess > 0) & (discriminant >= 0)
        safe_rate = jnp.where(self.rate > 0, self.rate, 1)
        t = jnp.log(jnp.where(reachable, q, 1)) / (2 * safe_rate)
        return jnp.where(reachable, jnp.maximum(t, 0), jnp.inf)

    def _field(self, theta):
        net = self.unravel(theta)
        w = _extended(net)
        a_dot = self.rate * (w @ self.direction)
        w_dot = self.rate * net.a[:, None] * self.direction[None, :]
        return self._flatten(a_dot, w_dot)

    def _flatten(self, a, w):
        W, b = (w, None) if not self.has_bias else (w[:, :-1], w[:, -1])
        return ravel_net(TwoLayerNet(a, W, b, self.activation))[0]

    def params(self, t: Float[Array, ""]) -> Float[Array, " P"]:
        """θ(t) of the linear flow, flattened like `ravel_net`."""
        growth = jnp.exp(self.rate * t)
        decay = jnp.exp(-self.rate * t)
        a = self.growing * growth + self.decaying * decay
        along = self.growing * growth - self.decaying * decay
        w = self.across + along[:, None] * self.direction[None, :]
        return self._flatten(a, w)


def _extended(net: TwoLayerNet):
    """$\\tilde w_k = (w_k, b_k)$ as the rows of one matrix."""
    return net.W if net.b is None else jnp.concatenate([net.W, net.b[:, None]], axis=1)
